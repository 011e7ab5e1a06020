//! Re-identification risk of a table on its quasi-identifiers.
//!
//! Three attacker models (El Emam's):
//! * **prosecutor** — knows the target is in the table: a record's risk is
//!   1 ÷ the size of its equivalence class;
//! * **journalist** — knows only that the target is in the population the
//!   table was sampled from: 1 ÷ the class's estimated size in the population
//!   (the class size ÷ the sampling fraction; the same as the prosecutor's
//!   when the table is the whole population);
//! * **marketer** — re-identifies as many records as possible: the expected
//!   share of records re-identified (classes ÷ records for a whole population).

use ahash::AHashMap;
use serde::{Deserialize, Serialize};

/// A record is at risk when its risk exceeds this (a class of fewer than 5).
pub const DEFAULT_THRESHOLD: f64 = 0.2;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RiskReport {
    pub records: usize,
    pub equivalence_classes: usize,
    pub smallest_class: usize,
    pub average_class_size: f64,
    /// Records alone in their class.
    pub unique_records: usize,
    /// Unique records ÷ records.
    pub uniqueness: f64,
    /// A record is "at risk" when its risk exceeds this.
    pub threshold: f64,
    /// The share of the population the table holds (1 = all of it).
    pub sampling_fraction: f64,
    pub prosecutor: ModelRisk,
    pub journalist: ModelRisk,
    /// Expected share of records a marketer re-identifies.
    pub marketer: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelRisk {
    /// The highest risk of any record.
    pub highest: f64,
    /// The average risk over records.
    pub average: f64,
    pub records_at_risk: usize,
    /// Records at risk ÷ records.
    pub share_at_risk: f64,
}

/// The risk of a table whose equivalence classes have these sizes.
pub fn risk_of_sizes(sizes: &[u32], records: usize, sampling_fraction: f64) -> RiskReport {
    risk_with(sizes, records, sampling_fraction, DEFAULT_THRESHOLD)
}

/// As [`risk_of_sizes`], with a chosen threshold.
pub fn risk_with(
    sizes: &[u32],
    records: usize,
    sampling_fraction: f64,
    threshold: f64,
) -> RiskReport {
    let fraction = if sampling_fraction > 0.0 && sampling_fraction <= 1.0 {
        sampling_fraction
    } else {
        1.0
    };
    let n = records.max(1) as f64;
    let mut prosecutor = Accumulator::default();
    let mut journalist = Accumulator::default();
    let mut uniques = 0usize;
    for size in sizes.iter().copied().filter(|s| *s > 0) {
        let f = f64::from(size);
        if size == 1 {
            uniques += 1;
        }
        prosecutor.add(f, 1.0 / f, threshold);
        let population = (f / fraction).round().max(f);
        journalist.add(f, 1.0 / population, threshold);
    }
    let classes = sizes.iter().filter(|s| **s > 0).count();
    RiskReport {
        records,
        equivalence_classes: classes,
        smallest_class: sizes.iter().copied().filter(|s| *s > 0).min().unwrap_or(0) as usize,
        average_class_size: if classes > 0 {
            records as f64 / classes as f64
        } else {
            0.0
        },
        unique_records: uniques,
        uniqueness: uniques as f64 / n,
        threshold,
        sampling_fraction: fraction,
        marketer: journalist.weighted / n,
        prosecutor: prosecutor.finish(n),
        journalist: journalist.finish(n),
    }
}

#[derive(Default)]
struct Accumulator {
    highest: f64,
    weighted: f64,
    at_risk: usize,
}

impl Accumulator {
    fn add(&mut self, size: f64, risk: f64, threshold: f64) {
        self.highest = self.highest.max(risk);
        self.weighted += size * risk;
        if risk > threshold {
            self.at_risk += size as usize;
        }
    }
    fn finish(self, n: f64) -> ModelRisk {
        ModelRisk {
            highest: self.highest,
            average: self.weighted / n,
            records_at_risk: self.at_risk,
            share_at_risk: self.at_risk as f64 / n,
        }
    }
}

/// The risk of a table given its quasi-identifier columns (each one value per record).
pub fn risk_of_columns(
    columns: &[Vec<&str>],
    sampling_fraction: f64,
    threshold: f64,
) -> RiskReport {
    let records = columns.first().map_or(0, Vec::len);
    let mut classes: AHashMap<Vec<&str>, u32> = AHashMap::new();
    for record in 0..records {
        let key: Vec<&str> = columns.iter().map(|c| c[record]).collect();
        *classes.entry(key).or_insert(0) += 1;
    }
    let sizes: Vec<u32> = classes.into_values().collect();
    risk_with(&sizes, records, sampling_fraction, threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_small_table() {
        // classes of 1, 1, 2 and 6 records
        let r = risk_of_sizes(&[1, 1, 2, 6], 10, 1.0);
        assert_eq!(r.equivalence_classes, 4);
        assert_eq!(r.unique_records, 2);
        assert!((r.uniqueness - 0.2).abs() < 1e-12);
        assert_eq!(r.prosecutor.highest, 1.0);
        // (1 + 1 + 2·½ + 6·⅙) / 10
        assert!((r.prosecutor.average - 0.4).abs() < 1e-12);
        assert_eq!(r.prosecutor.records_at_risk, 4);
        assert_eq!(r.journalist, r.prosecutor);
        assert!((r.marketer - 0.4).abs() < 1e-12);

        // a 10% sample: every class is ten times larger in the population
        let r = risk_of_sizes(&[1, 1, 2, 6], 10, 0.1);
        assert!((r.journalist.highest - 0.1).abs() < 1e-12);
        assert_eq!(r.journalist.records_at_risk, 0);
        assert_eq!(r.prosecutor.highest, 1.0);
    }

    #[test]
    fn columns_are_grouped_on_every_quasi_identifier() {
        let a = vec!["1990", "1990", "1991"];
        let b = vec!["F", "F", "F"];
        let r = risk_of_columns(&[a, b], 1.0, DEFAULT_THRESHOLD);
        assert_eq!(r.equivalence_classes, 2);
        assert_eq!(r.smallest_class, 1);
    }
}
