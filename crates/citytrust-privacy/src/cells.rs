//! Small numbers in aggregates (R-PRV-3): a GROUP BY result with its margins
//! (every subtotal and the grand total), in which cells counting fewer than
//! the threshold are suppressed (primary suppression), and further cells are
//! suppressed (secondary suppression) until no suppressed small cell can be
//! worked out from the published cells and margins.
//!
//! Secondary suppression works in three passes, repeated until none changes
//! anything:
//! 1. every line of the table (all coordinates fixed but one, its total
//!    included) holding exactly one suppressed cell gets a second one — the
//!    smallest non-zero inner cell of that line;
//! 2. a line whose total is shown and whose suppressed cells share a
//!    remainder no larger than their number gets one more: shown zeros say
//!    a suppressed cell counts at least one, so `k` cells sharing `k` are all 1;
//! 3. the table's equations (each line sums to its total) are solved for the
//!    suppressed cells: a small cell the equations determine exactly gets a
//!    partner in one of its lines.

use ahash::AHashMap;
use serde::Serialize;

/// The most cells (margins included) a table may have.
pub const MAX_CELLS: usize = 1 << 20;
/// Above this many suppressed cells the exact check (pass 2) is not run; pass 1 still is.
pub const MAX_EXACT: usize = 1200;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CellError {
    #[error("a table needs at least one dimension")]
    NoDimensions,
    #[error("row {row} has {got} dimension values where the table has {expected}")]
    Width {
        row: usize,
        expected: usize,
        got: usize,
    },
    #[error("row {row} has {got} measures where the first row has {expected}")]
    Measures {
        row: usize,
        expected: usize,
        got: usize,
    },
    #[error("the table with its margins would have more than {MAX_CELLS} cells")]
    TooLarge,
}

/// Why a cell is not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Shown,
    /// It counts fewer than the threshold.
    Primary,
    /// It would let a suppressed cell be worked out.
    Secondary,
}

/// One cell of the protected table.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// The cell's value per dimension; `None` is that dimension's total.
    pub key: Vec<Option<String>>,
    /// The count, when shown.
    pub count: Option<u64>,
    /// The measures' sums, when shown.
    pub sums: Option<Vec<f64>>,
    pub status: Status,
}

/// A protected table.
#[derive(Debug, Clone, Serialize)]
pub struct Protected {
    pub threshold: u64,
    pub cells: Vec<Cell>,
    pub primary: usize,
    pub secondary: usize,
    /// Whether the exact check (pass 2) ran (it does not above [`MAX_EXACT`] suppressed cells).
    pub exact_check: bool,
}

/// The dense table: counts and sums per cell, margins at index `cardinality` of each dimension.
struct Cube {
    shape: Vec<usize>,
    strides: Vec<usize>,
    counts: Vec<u64>,
    sums: Vec<f64>,
    status: Vec<Status>,
}

impl Cube {
    fn coords(&self, index: usize) -> Vec<usize> {
        self.strides
            .iter()
            .zip(&self.shape)
            .map(|(s, n)| (index / s) % n)
            .collect()
    }

    fn is_total(&self, index: usize, dim: usize) -> bool {
        (index / self.strides[dim]) % self.shape[dim] == self.shape[dim] - 1
    }

    /// The cells of the line through `index` along `dim`, its total last.
    fn line(&self, index: usize, dim: usize) -> impl Iterator<Item = usize> + '_ {
        let at = (index / self.strides[dim]) % self.shape[dim];
        let base = index - at * self.strides[dim];
        (0..self.shape[dim]).map(move |i| base + i * self.strides[dim])
    }

    fn suppressed(&self, index: usize) -> bool {
        self.status[index] != Status::Shown
    }

    /// The best partner for a suppressed cell among `candidates`: an inner
    /// (not total) cell first, non-zero first, then the smallest.
    fn partner(&self, candidates: impl Iterator<Item = usize>, dim: usize) -> Option<usize> {
        candidates.filter(|c| !self.suppressed(*c)).min_by_key(|c| {
            (
                self.is_total(*c, dim),
                self.counts[*c] == 0,
                self.counts[*c],
            )
        })
    }
}

/// Cell-key perturbation (the method of the Australian Bureau of
/// Statistics' TableBuilder, also used by the ONS): a shown count moves by
/// −2 … +2, chosen by the cell's key — a number in [0, 1) fixed by exactly
/// the records in the cell (the sum of their record keys, modulo 1). The
/// same records always give the same change, so asking again, or in another
/// table, or by another route to the same cell gives the same value: noise
/// cannot be averaged away, and a cell worked out by subtracting tables
/// carries the sum of several cells' changes. Zero on average, variance 0.8.
pub fn perturbation(cell_key: f64) -> i64 {
    match cell_key {
        k if k < 0.05 => -2,
        k if k < 0.25 => -1,
        k if k < 0.75 => 0,
        k if k < 0.95 => 1,
        _ => 2,
    }
}

/// The factor a shown sum is multiplied by: 0.9 … 1.1, from a second draw
/// of the same cell key (so a sum and its count move independently).
pub fn sum_factor(cell_key: f64) -> f64 {
    let second = (cell_key * 7919.0).fract();
    1.0 + 0.1 * (2.0 * second - 1.0)
}

/// Protects a GROUP BY result: `rows` are (the value of each dimension, the
/// count, the measures' sums). Groups missing from `rows` count zero.
pub fn protect(
    dimensions: usize,
    rows: &[(Vec<String>, u64, Vec<f64>)],
    threshold: u64,
) -> Result<Protected, CellError> {
    if dimensions == 0 {
        return Err(CellError::NoDimensions);
    }
    let measures = rows.first().map_or(0, |r| r.2.len());
    // The distinct values of each dimension, sorted.
    let mut values: Vec<Vec<&str>> = vec![Vec::new(); dimensions];
    for (i, (key, _, sums)) in rows.iter().enumerate() {
        if key.len() != dimensions {
            return Err(CellError::Width {
                row: i + 1,
                expected: dimensions,
                got: key.len(),
            });
        }
        if sums.len() != measures {
            return Err(CellError::Measures {
                row: i + 1,
                expected: measures,
                got: sums.len(),
            });
        }
        for (d, v) in key.iter().enumerate() {
            values[d].push(v);
        }
    }
    for v in &mut values {
        v.sort_unstable();
        v.dedup();
    }
    let index_of: Vec<AHashMap<&str, usize>> = values
        .iter()
        .map(|v| v.iter().enumerate().map(|(i, s)| (*s, i)).collect())
        .collect();
    let shape: Vec<usize> = values.iter().map(|v| v.len() + 1).collect();
    let size = shape
        .iter()
        .try_fold(1usize, |acc, n| acc.checked_mul(*n))
        .filter(|n| *n <= MAX_CELLS)
        .ok_or(CellError::TooLarge)?;
    let mut strides = vec![1usize; dimensions];
    for d in (0..dimensions.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let mut cube = Cube {
        shape,
        strides,
        counts: vec![0; size],
        sums: vec![0.0; size * measures],
        status: vec![Status::Shown; size],
    };
    for (key, count, sums) in rows {
        let index: usize = key
            .iter()
            .enumerate()
            .map(|(d, v)| index_of[d][v.as_str()] * cube.strides[d])
            .sum();
        cube.counts[index] += count;
        for (m, s) in sums.iter().enumerate() {
            cube.sums[index * measures + m] += s;
        }
    }
    // Margins: along each dimension in turn, so later totals include earlier ones.
    for d in 0..dimensions {
        let total_at = cube.shape[d] - 1;
        for index in 0..size {
            let at = (index / cube.strides[d]) % cube.shape[d];
            if at == total_at {
                continue;
            }
            let target = index + (total_at - at) * cube.strides[d];
            cube.counts[target] += cube.counts[index];
            for m in 0..measures {
                let v = cube.sums[index * measures + m];
                cube.sums[target * measures + m] += v;
            }
        }
    }
    // Primary suppression.
    let mut primary = 0;
    for index in 0..size {
        let count = cube.counts[index];
        if count > 0 && count < threshold {
            cube.status[index] = Status::Primary;
            primary += 1;
        }
    }
    let exact_check = secondary(&mut cube, dimensions);
    let secondary = cube
        .status
        .iter()
        .filter(|s| **s == Status::Secondary)
        .count();

    let cells = (0..size)
        .map(|index| {
            let coords = cube.coords(index);
            let key = coords
                .iter()
                .enumerate()
                .map(|(d, c)| values[d].get(*c).map(|v| (*v).to_owned()))
                .collect();
            let shown = cube.status[index] == Status::Shown;
            Cell {
                key,
                count: shown.then_some(cube.counts[index]),
                sums: shown.then(|| cube.sums[index * measures..(index + 1) * measures].to_vec()),
                status: cube.status[index],
            }
        })
        .collect();
    Ok(Protected {
        threshold,
        cells,
        primary,
        secondary,
        exact_check,
    })
}

/// Secondary suppression; returns whether the exact check ran throughout.
fn secondary(cube: &mut Cube, dimensions: usize) -> bool {
    let size = cube.counts.len();
    let mut exact = true;
    loop {
        // Pass 1: no line with exactly one suppressed cell.
        let mut changed = true;
        while changed {
            changed = false;
            for dim in 0..dimensions {
                for index in 0..size {
                    // visit each line once: from its first cell
                    if !(index / cube.strides[dim]).is_multiple_of(cube.shape[dim]) {
                        continue;
                    }
                    let suppressed = cube
                        .line(index, dim)
                        .filter(|c| cube.suppressed(*c))
                        .count();
                    if suppressed == 1
                        && let Some(p) = cube.partner(cube.line(index, dim), dim)
                    {
                        cube.status[p] = Status::Secondary;
                        changed = true;
                    }
                }
            }
        }
        // Pass 2: no line whose suppressed cells the bounds pin down.
        if bounded_lines(cube, dimensions) {
            continue;
        }
        // Pass 3: no small cell the equations determine.
        let unknowns: Vec<usize> = (0..size).filter(|i| cube.suppressed(*i)).collect();
        if unknowns.is_empty() {
            return exact;
        }
        if unknowns.len() > MAX_EXACT {
            return false;
        }
        let determined = determined_cells(cube, dimensions, &unknowns);
        let exposed: Vec<usize> = determined
            .into_iter()
            .filter(|i| cube.status[*i] == Status::Primary)
            .collect();
        let Some(&cell) = exposed.first() else {
            return exact;
        };
        // Give it a partner in the line with the cheapest one.
        let best = (0..dimensions)
            .filter_map(|dim| cube.partner(cube.line(cell, dim), dim).map(|p| (p, dim)))
            .min_by_key(|(p, dim)| {
                (
                    cube.is_total(*p, *dim),
                    cube.counts[*p] == 0,
                    cube.counts[*p],
                )
            });
        match best {
            Some((p, _)) => cube.status[p] = Status::Secondary,
            None => {
                // every cell in its lines is suppressed already and it is still determined: cannot happen
                // for a consistent table, but never publish a determined small cell
                exact = false;
                return exact;
            }
        }
    }
}

/// Shown zeros tell a reader that every suppressed cell counts at least
/// one. So in a line whose total is shown, `k` suppressed inner cells that
/// share a remainder of `k` (total minus the shown cells) must each be 1 —
/// determined, though no equation alone fixes them. Such a line gets one
/// more suppressed cell (its smallest non-zero shown inner cell; its total
/// when there is none). Returns whether anything changed.
fn bounded_lines(cube: &mut Cube, dimensions: usize) -> bool {
    let size = cube.counts.len();
    let mut changed = false;
    for dim in 0..dimensions {
        for index in 0..size {
            if !(index / cube.strides[dim]).is_multiple_of(cube.shape[dim]) {
                continue;
            }
            let cells: Vec<usize> = cube.line(index, dim).collect();
            let Some((&total, inner)) = cells.split_last() else {
                continue;
            };
            if cube.suppressed(total) {
                continue;
            }
            let hidden = inner.iter().filter(|c| cube.suppressed(**c)).count() as u64;
            if hidden == 0 {
                continue;
            }
            let shown: u64 = inner
                .iter()
                .filter(|c| !cube.suppressed(**c))
                .map(|c| cube.counts[*c])
                .sum();
            let remainder = cube.counts[total].saturating_sub(shown);
            if remainder > hidden {
                continue;
            }
            let partner = inner
                .iter()
                .copied()
                .filter(|c| !cube.suppressed(*c) && cube.counts[*c] > 0)
                .min_by_key(|c| cube.counts[*c])
                .unwrap_or(total);
            cube.status[partner] = Status::Secondary;
            changed = true;
        }
    }
    changed
}

/// The suppressed cells whose value the table's equations fix exactly.
fn determined_cells(cube: &Cube, dimensions: usize, unknowns: &[usize]) -> Vec<usize> {
    let position: AHashMap<usize, usize> =
        unknowns.iter().enumerate().map(|(i, c)| (*c, i)).collect();
    let n = unknowns.len();
    // One equation per line holding an unknown: Σ inner cells − total = 0, over unknowns only.
    let mut rows: Vec<Vec<f64>> = Vec::new();
    let mut seen: AHashMap<(usize, usize), ()> = AHashMap::new();
    for &cell in unknowns {
        for dim in 0..dimensions {
            let at = (cell / cube.strides[dim]) % cube.shape[dim];
            let first = cell - at * cube.strides[dim];
            if seen.insert((dim, first), ()).is_some() {
                continue;
            }
            let mut row = vec![0.0; n];
            let total_at = cube.shape[dim] - 1;
            for (i, c) in cube.line(cell, dim).enumerate() {
                if let Some(p) = position.get(&c) {
                    row[*p] = if i == total_at { -1.0 } else { 1.0 };
                }
            }
            rows.push(row);
        }
    }
    // Reduced row echelon form.
    let mut pivots: Vec<(usize, usize)> = Vec::new(); // (row, column)
    let mut r = 0;
    for col in 0..n {
        let Some(pivot) =
            (r..rows.len()).max_by(|a, b| rows[*a][col].abs().total_cmp(&rows[*b][col].abs()))
        else {
            break;
        };
        if rows[pivot][col].abs() < 1e-9 {
            continue;
        }
        rows.swap(r, pivot);
        let lead = rows[r][col];
        for v in rows[r].iter_mut() {
            *v /= lead;
        }
        let pivot_row = rows[r].clone();
        for (i, row) in rows.iter_mut().enumerate() {
            if i != r && row[col].abs() > 1e-12 {
                let factor = row[col];
                for (v, p) in row.iter_mut().zip(&pivot_row) {
                    *v -= factor * p;
                }
            }
        }
        pivots.push((r, col));
        r += 1;
        if r == rows.len() {
            break;
        }
    }
    // A pivot variable whose row has no free variable in it is fixed.
    let pivot_columns: ahash::AHashSet<usize> = pivots.iter().map(|(_, c)| *c).collect();
    pivots
        .iter()
        .filter(|(row, col)| {
            rows[*row]
                .iter()
                .enumerate()
                .all(|(j, v)| j == *col || pivot_columns.contains(&j) || v.abs() < 1e-9)
        })
        .map(|(_, col)| unknowns[*col])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: &[(&str, &str, u64)]) -> Vec<(Vec<String>, u64, Vec<f64>)> {
        rows.iter()
            .map(|(a, b, n)| {
                (
                    vec![(*a).to_owned(), (*b).to_owned()],
                    *n,
                    vec![*n as f64 * 2.0],
                )
            })
            .collect()
    }

    #[test]
    fn small_cells_whose_sum_pins_each_to_one_get_a_partner() {
        // Two cells of 1 beside 20 and 0: the total (22) less the shown
        // cells (20 + 0) leaves 2 for two suppressed cells, each at least 1
        // (the zero is shown): both would be known to be 1.
        let rows: Vec<(Vec<String>, u64, Vec<f64>)> = [("a", 1), ("b", 1), ("c", 20), ("d", 0)]
            .iter()
            .map(|(k, n)| (vec![(*k).to_owned()], *n, vec![]))
            .collect();
        let p = protect(1, &rows, 10).unwrap();
        let count = |k: &str| {
            p.cells
                .iter()
                .find(|c| c.key[0].as_deref() == Some(k))
                .unwrap()
                .count
        };
        assert_eq!((count("a"), count("b")), (None, None));
        assert_eq!(
            count("c"),
            None,
            "the remainder must not pin the small cells"
        );
        // Three cells sharing a remainder of 22: none is determined.
        let wider: Vec<(Vec<String>, u64, Vec<f64>)> = [("a", 1), ("b", 2), ("c", 20)]
            .iter()
            .map(|(k, n)| (vec![(*k).to_owned()], *n, vec![]))
            .collect();
        let q = protect(1, &wider, 10).unwrap();
        let shown: Vec<Option<u64>> = q.cells.iter().map(|c| c.count).collect();
        assert_eq!(
            shown,
            vec![None, None, Some(20), Some(23)],
            "1 + 2 = 3 leaves (1,2) or (2,1)"
        );
    }

    #[test]
    fn one_small_cell_gets_partners_in_its_row_and_column() {
        let rows = table(&[
            ("a", "x", 3),
            ("a", "y", 20),
            ("a", "z", 30),
            ("b", "x", 40),
            ("b", "y", 50),
            ("b", "z", 60),
        ]);
        let p = protect(2, &rows, 10).unwrap();
        assert_eq!(p.primary, 1);
        assert!(p.secondary >= 3, "{p:?}");
        let cell = |a: Option<&str>, b: Option<&str>| {
            p.cells
                .iter()
                .find(|c| c.key[0].as_deref() == a && c.key[1].as_deref() == b)
                .unwrap()
        };
        assert_eq!(cell(Some("a"), Some("x")).status, Status::Primary);
        assert_eq!(cell(Some("a"), Some("x")).sums, None);
        assert_eq!(cell(None, None).count, Some(203));
        assert!(p.exact_check);
    }

    #[test]
    fn refuses_ragged_rows() {
        let rows = vec![(vec!["a".to_owned()], 1, vec![]), (vec![], 2, vec![])];
        assert_eq!(
            protect(1, &rows, 10).unwrap_err(),
            CellError::Width {
                row: 2,
                expected: 1,
                got: 0
            }
        );
    }
}
