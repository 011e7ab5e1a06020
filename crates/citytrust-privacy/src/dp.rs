//! Differentially private statistics (R-PRV-5), by OpenDP's vetted
//! mechanisms: nothing here draws noise itself.
//!
//! Every release is ε-differentially private under adding or removing one
//! record (OpenDP's `SymmetricDistance`, distance 1): counts and histograms
//! by the discrete Laplace mechanism on integers, sums by the Laplace
//! mechanism on a clamped floating-point sum (OpenDP accounts for the
//! rounding of float arithmetic), means as a noisy sum over a noisy count,
//! each with half the ε. The ε charged is the one OpenDP's privacy map
//! reports for the mechanism built, never more than the ε asked for.

use opendp::{
    combinators::make_chain_mt,
    domains::{AtomDomain, VectorDomain},
    measurements::make_laplace,
    measures::MaxDivergence,
    metrics::{L1Distance, SymmetricDistance},
    transformations::{make_count, make_count_by_categories, make_sum},
};

/// The most ε one statistic may spend (more is not a privacy guarantee).
pub const MAX_EPSILON: f64 = 10.0;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DpError {
    /// The request is malformed (the caller's to fix).
    #[error("{0}")]
    Invalid(String),
    /// OpenDP refused to build or run the mechanism.
    #[error("the differential privacy library refused: {0}")]
    Library(String),
}

fn lib(e: opendp::error::Error) -> DpError {
    DpError::Library(format!(
        "{:?}: {}",
        e.variant,
        e.message.unwrap_or_default()
    ))
}

/// One released statistic.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Release<T> {
    pub value: T,
    /// The privacy loss of this release (ε, pure DP).
    pub epsilon: f64,
    /// The noise scale of each mechanism used.
    pub scale: Vec<f64>,
    pub mechanism: &'static str,
}

fn check_epsilon(epsilon: f64) -> Result<(), DpError> {
    if !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_EPSILON) {
        return Err(DpError::Invalid(format!(
            "epsilon must be a number above 0 and at most {MAX_EPSILON} (got {epsilon})"
        )));
    }
    Ok(())
}

/// Build a mechanism at the smallest noise scale whose privacy loss is at
/// most `epsilon`, starting from `sensitivity / epsilon` and widening when
/// OpenDP's map (which includes float rounding slack) reports more.
fn calibrate<M>(
    epsilon: f64,
    sensitivity: f64,
    build: impl Fn(f64) -> Result<M, DpError>,
    loss: impl Fn(&M) -> Result<f64, DpError>,
) -> Result<(M, f64, f64), DpError> {
    let mut scale = sensitivity / epsilon;
    for _ in 0..40 {
        let m = build(scale)?;
        let spent = loss(&m)?;
        if spent <= epsilon {
            return Ok((m, scale, spent));
        }
        scale *= (spent / epsilon) * (1.0 + 1e-9);
    }
    Err(DpError::Library(format!(
        "no noise scale reached epsilon {epsilon}"
    )))
}

/// A noisy count of `rows` records.
pub fn count(rows: usize, epsilon: f64) -> Result<Release<i64>, DpError> {
    check_epsilon(epsilon)?;
    let (m, scale, spent) = calibrate(
        epsilon,
        1.0,
        |scale| {
            let t = make_count::<bool, i64>(
                VectorDomain::new(AtomDomain::default()),
                SymmetricDistance,
            )
            .map_err(lib)?;
            let noise = make_laplace::<_, _, MaxDivergence>(
                AtomDomain::<i64>::new_non_nan(),
                opendp::metrics::AbsoluteDistance::<i64>::default(),
                scale,
                None,
            )
            .map_err(lib)?;
            make_chain_mt(&noise, &t).map_err(lib)
        },
        |m| m.map(&1).map_err(lib),
    )?;
    let value = m.invoke(&vec![true; rows]).map_err(lib)?;
    Ok(Release {
        value,
        epsilon: spent,
        scale: vec![scale],
        mechanism: "discrete Laplace",
    })
}

fn check_bounds((lower, upper): (f64, f64)) -> Result<(), DpError> {
    if !(lower.is_finite() && upper.is_finite() && lower < upper) {
        return Err(DpError::Invalid(format!(
            "bounds must be two finite numbers, lower below upper (got {lower} and {upper})"
        )));
    }
    Ok(())
}

/// A noisy sum of `values`, each first clamped to `bounds` (the caller's
/// declared range: values outside it count as the nearer bound).
pub fn sum(values: &[f64], bounds: (f64, f64), epsilon: f64) -> Result<Release<f64>, DpError> {
    check_epsilon(epsilon)?;
    check_bounds(bounds)?;
    let clamped: Vec<f64> = values
        .iter()
        .filter(|v| !v.is_nan())
        .map(|v| v.clamp(bounds.0, bounds.1))
        .collect();
    let sensitivity = bounds.0.abs().max(bounds.1.abs());
    let (m, scale, spent) = calibrate(
        epsilon,
        sensitivity,
        |scale| {
            let domain = VectorDomain::new(AtomDomain::new_closed(bounds).map_err(lib)?);
            let t = make_sum::<SymmetricDistance, f64>(domain, SymmetricDistance).map_err(lib)?;
            let noise = make_laplace::<_, _, MaxDivergence>(
                AtomDomain::<f64>::new_non_nan(),
                opendp::metrics::AbsoluteDistance::<f64>::default(),
                scale,
                None,
            )
            .map_err(lib)?;
            make_chain_mt(&noise, &t).map_err(lib)
        },
        |m| m.map(&1).map_err(lib),
    )?;
    let value = m.invoke(&clamped).map_err(lib)?;
    Ok(Release {
        value,
        epsilon: spent,
        scale: vec![scale],
        mechanism: "Laplace",
    })
}

/// A noisy mean: a noisy clamped sum over a noisy count, ε split evenly.
/// `None` when the noisy count is not positive (nothing to divide by).
pub fn mean(
    values: &[f64],
    bounds: (f64, f64),
    epsilon: f64,
) -> Result<Release<Option<f64>>, DpError> {
    check_epsilon(epsilon)?;
    let total = sum(values, bounds, epsilon / 2.0)?;
    let n = count(values.iter().filter(|v| !v.is_nan()).count(), epsilon / 2.0)?;
    let value = (n.value > 0).then(|| (total.value / n.value as f64).clamp(bounds.0, bounds.1));
    Ok(Release {
        value,
        epsilon: total.epsilon + n.epsilon,
        scale: vec![total.scale[0], n.scale[0]],
        mechanism: "Laplace (sum) and discrete Laplace (count)",
    })
}

/// Noisy counts of each of `categories` (given by the caller, not read from
/// the data: the set of categories present would itself disclose), plus
/// the count of values in none of them, last.
pub fn histogram(
    values: &[String],
    categories: &[String],
    epsilon: f64,
) -> Result<Release<Vec<i64>>, DpError> {
    check_epsilon(epsilon)?;
    if categories.is_empty() {
        return Err(DpError::Invalid(
            "name the categories to count: a histogram's categories are not read from the data"
                .into(),
        ));
    }
    let (m, scale, spent) = calibrate(
        epsilon,
        1.0,
        |scale| {
            let t = make_count_by_categories::<L1Distance<i64>, String, i64>(
                VectorDomain::new(AtomDomain::default()),
                SymmetricDistance,
                categories.to_vec(),
                true,
            )
            .map_err(|e| match e.variant {
                opendp::error::ErrorVariant::MakeTransformation => DpError::Invalid(format!(
                    "categories: {}",
                    e.message.clone().unwrap_or_default()
                )),
                _ => lib(e),
            })?;
            let noise = make_laplace::<_, _, MaxDivergence>(
                VectorDomain::new(AtomDomain::<i64>::new_non_nan()),
                L1Distance::<i64>::default(),
                scale,
                None,
            )
            .map_err(lib)?;
            make_chain_mt(&noise, &t).map_err(lib)
        },
        |m| m.map(&1).map_err(lib),
    )?;
    let value = m.invoke(&values.to_vec()).map_err(lib)?;
    Ok(Release {
        value,
        epsilon: spent,
        scale: vec![scale],
        mechanism: "discrete Laplace",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_noisy_and_charge_at_most_epsilon() {
        let r = count(1000, 1.0).unwrap();
        assert!(r.epsilon <= 1.0 && r.epsilon > 0.99, "{r:?}");
        // Discrete Laplace at scale 1: |noise| > 40 has probability ~ e^-40.
        assert!((r.value - 1000).abs() < 40, "{r:?}");
        let draws: std::collections::BTreeSet<i64> =
            (0..30).map(|_| count(1000, 1.0).unwrap().value).collect();
        assert!(draws.len() > 1, "the count is not noisy: {draws:?}");
    }

    #[test]
    fn sums_clamp_and_means_split_epsilon() {
        let values: Vec<f64> = (0..10_000).map(|i| (i % 100) as f64).collect();
        let s = sum(&values, (0.0, 100.0), 1.0).unwrap();
        assert!(s.epsilon <= 1.0, "{s:?}");
        assert!((s.value - 495_000.0).abs() < 100.0 * 40.0, "{s:?}");
        let m = mean(&values, (0.0, 100.0), 1.0).unwrap();
        assert!(m.epsilon <= 1.0 + 1e-12, "{m:?}");
        let v = m.value.unwrap();
        assert!((v - 49.5).abs() < 2.0, "{m:?}");
        // A value far outside the bounds counts as the bound.
        let s = sum(&[1e12], (0.0, 10.0), 5.0).unwrap();
        assert!(s.value < 10.0 + 10.0 * 40.0 / 5.0, "{s:?}");
    }

    #[test]
    fn histograms_count_named_categories_and_the_rest() {
        let values: Vec<String> = ["a", "b", "b", "c"]
            .iter()
            .cycle()
            .take(4000)
            .map(|s| s.to_string())
            .collect();
        let cats = vec!["a".to_string(), "b".to_string()];
        let h = histogram(&values, &cats, 2.0).unwrap();
        assert_eq!(h.value.len(), 3);
        for (got, want) in h.value.iter().zip([1000, 2000, 1000]) {
            assert!((got - want).abs() < 40, "{h:?}");
        }
        assert!(histogram(&values, &[], 1.0).is_err());
        let dup = vec!["a".to_string(), "a".to_string()];
        assert!(matches!(
            histogram(&values, &dup, 1.0),
            Err(DpError::Invalid(_))
        ));
    }

    #[test]
    fn bad_epsilon_and_bounds_are_refused() {
        for e in [0.0, -1.0, f64::NAN, f64::INFINITY, 11.0] {
            assert!(matches!(count(1, e), Err(DpError::Invalid(_))), "{e}");
        }
        assert!(matches!(
            sum(&[1.0], (5.0, 1.0), 1.0),
            Err(DpError::Invalid(_))
        ));
        assert!(matches!(
            sum(&[1.0], (0.0, f64::NAN), 1.0),
            Err(DpError::Invalid(_))
        ));
    }
}
