//! k-anonymity by full-domain generalisation, with record suppression and
//! optional l-diversity and t-closeness on one sensitive column.
//!
//! The search space is the generalisation lattice: one level per
//! quasi-identifier, a node per combination. The search is exact for the
//! information-loss measure it minimises (loss, also called granularity: the
//! share of each original value's domain its label covers, averaged over every
//! quasi-identifier cell, a suppressed record counting 1):
//!
//! * the loss of a node without suppression is a sum of per-column terms, so
//!   it is known for every node before any is checked, and it is a lower
//!   bound of the node's loss with suppression. Nodes are visited in order of
//!   that bound; the search stops as soon as the bound reaches the best loss
//!   found.
//! * k-anonymity with a suppression limit is monotone (a node's successors
//!   are anonymous when it is; its predecessors are not when it is not), and
//!   so are distinct and entropy l-diversity and t-closeness without
//!   suppression. For an unchecked node the search walks a path upwards
//!   through unchecked nodes and binary-searches it (Flash's strategy), each
//!   check classifying a whole cone of the lattice at once.
//! * A node is checked by rolling up the equivalence classes of the most
//!   specific node already checked below it, not the records.

use ahash::AHashMap;
use serde::Serialize;
use std::hash::Hash;

use crate::hierarchy::Hierarchy;
use crate::risk::{RiskReport, risk_of_sizes};

/// A quasi-identifier: its name, its values (one per record) and its hierarchy.
pub struct QuasiIdentifier<'a> {
    pub name: &'a str,
    pub values: Vec<&'a str>,
    pub hierarchy: &'a Hierarchy,
}

/// The sensitive column the l-diversity and t-closeness options protect.
pub struct Sensitive<'a> {
    pub name: &'a str,
    pub values: Vec<&'a str>,
}

/// l-diversity of the sensitive column within every released class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "variant", rename_all = "kebab-case")]
pub enum LDiversity {
    /// At least `l` distinct sensitive values.
    Distinct { l: usize },
    /// The entropy of the sensitive values at least `ln l`.
    Entropy { l: f64 },
}

/// What the release must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Criteria {
    pub k: usize,
    /// The most records that may be suppressed, as a percentage of all records.
    pub suppression_percent: f64,
    pub l_diversity: Option<LDiversity>,
    /// The most a class's sensitive distribution may differ from the table's
    /// (earth mover's distance: ordered distance for numbers, equal distance otherwise).
    pub t_closeness: Option<f64>,
}

/// Why no release could be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnonymiseError {
    #[error("k must be at least 1")]
    BadK,
    #[error("the suppression limit must be a percentage from 0 to 100, not {0}")]
    BadSuppression(f64),
    #[error("l-diversity needs l of at least 1, not {0}")]
    BadL(f64),
    #[error("t-closeness needs t from 0 to 1, not {0}")]
    BadT(f64),
    #[error("l-diversity and t-closeness need a sensitive column")]
    NoSensitive,
    #[error("at least one quasi-identifier is needed")]
    NoQuasiIdentifiers,
    #[error("column {column:?} has {got} values where the table has {expected} records")]
    Length {
        column: String,
        expected: usize,
        got: usize,
    },
    #[error("record {record}, column {column:?}: value {value:?} is not in the column's hierarchy")]
    NotInHierarchy {
        record: usize,
        column: String,
        value: String,
    },
    #[error("the quasi-identifiers have too many distinct combinations to index")]
    TooManyValues,
    #[error("{0} quasi-identifiers: at most 32 can be generalised together")]
    TooManyQuasiIdentifiers(usize),
    #[error(
        "the generalisation lattice has more than 4,194,304 nodes: use fewer quasi-identifiers or shallower hierarchies"
    )]
    LatticeTooLarge,
    #[error(
        "no generalisation satisfies the criteria within the suppression limit: even the most general one suppresses {suppressed} of {records} records ({limit} allowed)"
    )]
    NoSolution {
        records: usize,
        suppressed: usize,
        limit: usize,
    },
}

/// The chosen transformation and what it costs.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub records: usize,
    pub criteria: Criteria,
    /// Level per quasi-identifier (0 = original values).
    pub transformation: Vec<ChosenLevel>,
    pub suppressed_records: usize,
    pub released_records: usize,
    pub equivalence_classes: usize,
    pub smallest_class: usize,
    pub information_loss: InformationLoss,
    pub search: SearchStats,
    pub risk_before: RiskReport,
    pub risk_after: RiskReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChosenLevel {
    pub column: String,
    pub level: usize,
    pub levels: usize,
}

/// Information-loss measures of the released table.
#[derive(Debug, Clone, Serialize)]
pub struct InformationLoss {
    /// Loss (granularity): 0 = nothing generalised, 1 = everything suppressed.
    pub loss: f64,
    /// Non-uniform entropy in bits, summed over records and quasi-identifiers.
    pub non_uniform_entropy: f64,
    /// Non-uniform entropy as a share of its value when everything is suppressed.
    pub non_uniform_entropy_share: f64,
    /// Average equivalence class size ÷ k (1 is the ideal).
    pub average_class_size_ratio: f64,
    /// Discernibility: Σ class size² over released classes + suppressed × records.
    pub discernibility: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SearchStats {
    pub lattice_nodes: usize,
    pub nodes_checked: usize,
    pub monotone: bool,
}

/// The result: the report, and each record's labels or its suppression.
pub struct Anonymised<'h> {
    pub report: Report,
    levels: Vec<usize>,
    hierarchies: Vec<&'h Hierarchy>,
    /// Per record: the leaf id of each quasi-identifier, or `None` when suppressed.
    records: Vec<Option<u32>>,
    tuples: Vec<u32>,
    width: usize,
}

impl Anonymised<'_> {
    /// Whether record `record` is suppressed (left out of the release).
    pub fn suppressed(&self, record: usize) -> bool {
        self.records[record].is_none()
    }

    /// The released label of quasi-identifier `qi` in record `record`.
    pub fn label(&self, record: usize, qi: usize) -> Option<&str> {
        let tuple = self.records[record]? as usize;
        let leaf = self.tuples[tuple * self.width + qi];
        let hierarchy = self.hierarchies[qi];
        let level = self.levels[qi];
        Some(hierarchy.label(level, hierarchy.generalise(level, leaf)))
    }

    pub fn levels(&self) -> &[usize] {
        &self.levels
    }
}

/// Equivalence classes at one lattice node.
struct Classes {
    levels: Vec<u8>,
    /// `ids[c * width + q]`: class c's id at quasi-identifier q's level.
    ids: Vec<u32>,
    counts: Vec<u32>,
    /// `hist[c * s + v]`: class c's records with sensitive value v (empty without a sensitive column).
    hist: Vec<u32>,
}

impl Classes {
    fn len(&self) -> usize {
        self.counts.len()
    }
}

/// What a check of one node found.
#[derive(Clone, Copy)]
struct Verdict {
    /// Records in classes smaller than k.
    k_suppressed: usize,
    /// Records in classes failing any criterion.
    suppressed: usize,
    /// Loss with suppression (meaningful when the node is feasible).
    loss: f64,
}

struct Search<'a> {
    width: usize,
    records: usize,
    criteria: Criteria,
    limit: usize,
    /// `jump[q][from][to][id]`
    jump: Vec<Vec<Vec<Vec<u32>>>>,
    cards: Vec<Vec<u64>>,
    /// `granularity[q][level][id]`: (leaves under the label − 1) / (leaves − 1).
    granularity: Vec<Vec<Vec<f64>>>,
    sensitive_values: usize,
    /// The table's sensitive distribution, and whether the values are numbers (ordered distance).
    global: Vec<f64>,
    numeric_sensitive: bool,
    bottom: &'a Classes,
    cache: Vec<Classes>,
    checked: usize,
    wide_keys: bool,
}

const UNKNOWN: u8 = 0;
const ANONYMOUS: u8 = 1;
const NOT_ANONYMOUS: u8 = 2;
/// How many checked nodes' classes are kept for rolling up.
const CACHE: usize = 24;

trait PackedKey: Copy + Eq + Hash {
    const ZERO: Self;
    fn push(self, radix: u64, digit: u32) -> Self;
}
impl PackedKey for u64 {
    const ZERO: Self = 0;
    #[inline]
    fn push(self, radix: u64, digit: u32) -> Self {
        self * radix + u64::from(digit)
    }
}
impl PackedKey for u128 {
    const ZERO: Self = 0;
    #[inline]
    fn push(self, radix: u64, digit: u32) -> Self {
        self * u128::from(radix) + u128::from(digit)
    }
}

fn validate(
    quasi: &[QuasiIdentifier<'_>],
    sensitive: Option<&Sensitive<'_>>,
    criteria: &Criteria,
) -> Result<usize, AnonymiseError> {
    if criteria.k < 1 {
        return Err(AnonymiseError::BadK);
    }
    if !(0.0..=100.0).contains(&criteria.suppression_percent) {
        return Err(AnonymiseError::BadSuppression(criteria.suppression_percent));
    }
    match criteria.l_diversity {
        Some(LDiversity::Distinct { l }) if l < 1 => return Err(AnonymiseError::BadL(l as f64)),
        Some(LDiversity::Entropy { l }) if l.is_nan() || l < 1.0 => {
            return Err(AnonymiseError::BadL(l));
        }
        _ => {}
    }
    if let Some(t) = criteria.t_closeness
        && !(0.0..=1.0).contains(&t)
    {
        return Err(AnonymiseError::BadT(t));
    }
    if (criteria.l_diversity.is_some() || criteria.t_closeness.is_some()) && sensitive.is_none() {
        return Err(AnonymiseError::NoSensitive);
    }
    let first = quasi.first().ok_or(AnonymiseError::NoQuasiIdentifiers)?;
    let records = first.values.len();
    let lengths = quasi
        .iter()
        .map(|q| (q.name, q.values.len()))
        .chain(sensitive.map(|s| (s.name, s.values.len())));
    for (name, got) in lengths {
        if got != records {
            return Err(AnonymiseError::Length {
                column: name.to_owned(),
                expected: records,
                got,
            });
        }
    }
    Ok(records)
}

/// Finds the least-loss full-domain generalisation of the quasi-identifiers
/// that meets the criteria, and applies it.
pub fn anonymise<'a>(
    quasi: &[QuasiIdentifier<'a>],
    sensitive: Option<&Sensitive<'_>>,
    criteria: Criteria,
) -> Result<Anonymised<'a>, AnonymiseError> {
    let records = validate(quasi, sensitive, &criteria)?;
    let width = quasi.len();
    if width > MAX_QUASI {
        return Err(AnonymiseError::TooManyQuasiIdentifiers(width));
    }
    let hierarchies: Vec<&'a Hierarchy> = quasi.iter().map(|q| q.hierarchy).collect();

    // Each record's leaf ids.
    let mut leaves: Vec<Vec<u32>> = Vec::with_capacity(width);
    for q in quasi {
        let mut column = Vec::with_capacity(records);
        for (record, value) in q.values.iter().enumerate() {
            let id = q
                .hierarchy
                .leaf_id(value)
                .ok_or_else(|| AnonymiseError::NotInHierarchy {
                    record: record + 1,
                    column: q.name.to_owned(),
                    value: (*value).to_owned(),
                })?;
            column.push(id);
        }
        leaves.push(column);
    }

    // The sensitive column's values, numbered in order (numeric order when all are numbers).
    let (sensitive_ids, sensitive_values, numeric_sensitive) = match sensitive {
        Some(s) => number_sensitive(&s.values),
        None => (Vec::new(), 0, false),
    };

    let mut cards: Vec<Vec<u64>> = Vec::with_capacity(width);
    for h in &hierarchies {
        cards.push((0..h.levels()).map(|l| h.cardinality(l) as u64).collect());
    }
    let bottom_space = cards
        .iter()
        .try_fold(1u128, |acc, c| acc.checked_mul(u128::from(c[0])));
    let wide_keys = match bottom_space {
        None => return Err(AnonymiseError::TooManyValues),
        Some(space) => space > u128::from(u64::MAX),
    };

    // The distinct tuples of leaves: the classes of the lattice's bottom node.
    let mut record_tuple = Vec::with_capacity(records);
    let bottom = if wide_keys {
        intern::<u128>(
            &leaves,
            &cards,
            &sensitive_ids,
            sensitive_values,
            records,
            &mut record_tuple,
        )
    } else {
        intern::<u64>(
            &leaves,
            &cards,
            &sensitive_ids,
            sensitive_values,
            records,
            &mut record_tuple,
        )
    };

    let jump = hierarchies
        .iter()
        .map(|h| {
            (0..h.levels())
                .map(|from| {
                    (0..h.levels())
                        .map(|to| {
                            if to < from {
                                return Vec::new();
                            }
                            // the label at `from` of any leaf → its label at `to`
                            let mut map = vec![0u32; h.cardinality(from)];
                            for leaf in 0..h.leaves() as u32 {
                                map[h.generalise(from, leaf) as usize] = h.generalise(to, leaf);
                            }
                            map
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let granularity: Vec<Vec<Vec<f64>>> = hierarchies
        .iter()
        .map(|h| {
            let leaves = h.leaves();
            (0..h.levels())
                .map(|level| {
                    let mut under = vec![0usize; h.cardinality(level)];
                    for leaf in 0..leaves as u32 {
                        under[h.generalise(level, leaf) as usize] += 1;
                    }
                    under
                        .into_iter()
                        .map(|n| {
                            if leaves > 1 {
                                (n - 1) as f64 / (leaves - 1) as f64
                            } else {
                                0.0
                            }
                        })
                        .collect()
                })
                .collect()
        })
        .collect();

    let mut global = vec![0f64; sensitive_values];
    for id in &sensitive_ids {
        global[*id as usize] += 1.0;
    }
    for p in &mut global {
        *p /= records.max(1) as f64;
    }

    let limit = ((criteria.suppression_percent / 100.0) * records as f64 + 1e-9).floor() as usize;
    let mut search = Search {
        width,
        records,
        criteria,
        limit,
        jump,
        cards,
        granularity,
        sensitive_values,
        global,
        numeric_sensitive,
        bottom: &bottom,
        cache: Vec::new(),
        checked: 0,
        wide_keys,
    };
    let dims: Vec<usize> = hierarchies.iter().map(|h| h.levels()).collect();
    let (node_levels, lattice_nodes, monotone) = search.find(&dims, &leaves)?;

    // Apply the chosen node.
    let (classes, assign) = search.rollup_bottom(&node_levels);
    let passes: Vec<bool> = (0..classes.len())
        .map(|c| search.passes(&classes, c))
        .collect();
    let mut released_tuple = vec![false; bottom.len()];
    for (tuple, class) in assign.iter().enumerate() {
        released_tuple[tuple] = passes[*class as usize];
    }
    let out_records: Vec<Option<u32>> = record_tuple
        .iter()
        .map(|t| released_tuple[*t as usize].then_some(*t))
        .collect();
    let suppressed_records = out_records.iter().filter(|r| r.is_none()).count();
    let released_sizes: Vec<u32> = (0..classes.len())
        .filter(|c| passes[*c])
        .map(|c| classes.counts[c])
        .collect();
    let verdict = search.verdict(&classes);

    let information_loss = information_loss(
        &hierarchies,
        &leaves,
        &node_levels,
        &out_records,
        &released_sizes,
        suppressed_records,
        criteria.k,
        verdict.loss,
    );
    let levels: Vec<usize> = node_levels.iter().map(|l| *l as usize).collect();
    let report = Report {
        records,
        criteria,
        transformation: quasi
            .iter()
            .zip(&levels)
            .map(|(q, level)| ChosenLevel {
                column: q.name.to_owned(),
                level: *level,
                levels: q.hierarchy.levels(),
            })
            .collect(),
        suppressed_records,
        released_records: records - suppressed_records,
        equivalence_classes: released_sizes.len(),
        smallest_class: released_sizes.iter().copied().min().unwrap_or(0) as usize,
        information_loss,
        search: SearchStats {
            lattice_nodes,
            nodes_checked: search.checked,
            monotone,
        },
        risk_before: risk_of_sizes(&bottom.counts, records, 1.0),
        risk_after: risk_of_sizes(&released_sizes, records - suppressed_records, 1.0),
    };
    let tuples = bottom.ids;
    Ok(Anonymised {
        report,
        levels,
        hierarchies,
        records: out_records,
        tuples,
        width,
    })
}

/// Quasi-identifiers one release may have.
const MAX_QUASI: usize = 32;
/// Lattice nodes a search may have.
const MAX_NODES: usize = 1 << 22;

fn number_sensitive(values: &[&str]) -> (Vec<u32>, usize, bool) {
    let mut distinct: Vec<&str> = values.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let numbers: Option<Vec<f64>> = distinct
        .iter()
        .map(|v| v.trim().parse::<f64>().ok().filter(|x| x.is_finite()))
        .collect();
    let numeric = numbers.is_some();
    if let Some(numbers) = numbers {
        let mut order: Vec<usize> = (0..distinct.len()).collect();
        order.sort_by(|a, b| numbers[*a].total_cmp(&numbers[*b]));
        distinct = order.into_iter().map(|i| distinct[i]).collect();
    }
    let index: AHashMap<&str, u32> = distinct
        .iter()
        .enumerate()
        .map(|(i, v)| (*v, i as u32))
        .collect();
    let ids = values.iter().map(|v| index[v]).collect();
    (ids, distinct.len(), numeric)
}

fn intern<K: PackedKey>(
    leaves: &[Vec<u32>],
    cards: &[Vec<u64>],
    sensitive: &[u32],
    sensitive_values: usize,
    records: usize,
    record_tuple: &mut Vec<u32>,
) -> Classes {
    let width = leaves.len();
    let mut map: AHashMap<K, u32> = AHashMap::with_capacity(records / 2);
    let mut out = Classes {
        levels: vec![0; width],
        ids: Vec::new(),
        counts: Vec::new(),
        hist: Vec::new(),
    };
    for record in 0..records {
        let mut key = K::ZERO;
        for q in 0..width {
            key = key.push(cards[q][0], leaves[q][record]);
        }
        let next = out.counts.len() as u32;
        let class = *map.entry(key).or_insert_with(|| {
            out.ids.extend(leaves.iter().map(|column| column[record]));
            out.counts.push(0);
            out.hist.extend(std::iter::repeat_n(0, sensitive_values));
            next
        });
        out.counts[class as usize] += 1;
        if sensitive_values > 0 {
            out.hist[class as usize * sensitive_values + sensitive[record] as usize] += 1;
        }
        record_tuple.push(class);
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn information_loss(
    hierarchies: &[&Hierarchy],
    leaves: &[Vec<u32>],
    levels: &[u8],
    out: &[Option<u32>],
    released_sizes: &[u32],
    suppressed: usize,
    k: usize,
    loss: f64,
) -> InformationLoss {
    let records = out.len();
    let mut entropy = 0.0;
    let mut entropy_max = 0.0;
    for (q, h) in hierarchies.iter().enumerate() {
        let level = levels[q] as usize;
        let mut leaf_freq = vec![0u32; h.leaves()];
        for leaf in &leaves[q] {
            leaf_freq[*leaf as usize] += 1;
        }
        let mut label_freq = vec![0u32; h.cardinality(level)];
        for (leaf, n) in leaf_freq.iter().enumerate() {
            label_freq[h.generalise(level, leaf as u32) as usize] += n;
        }
        for (record, leaf) in leaves[q].iter().enumerate() {
            let own = f64::from(leaf_freq[*leaf as usize]);
            let all = records as f64;
            entropy_max -= (own / all).log2();
            entropy -= match out[record] {
                Some(_) => {
                    (own / f64::from(label_freq[h.generalise(level, *leaf) as usize])).log2()
                }
                None => (own / all).log2(),
            };
        }
    }
    let released: f64 = released_sizes.iter().map(|s| f64::from(*s)).sum();
    InformationLoss {
        loss,
        non_uniform_entropy: entropy,
        non_uniform_entropy_share: if entropy_max > 0.0 {
            entropy / entropy_max
        } else {
            0.0
        },
        average_class_size_ratio: if released_sizes.is_empty() {
            0.0
        } else {
            released / released_sizes.len() as f64 / k as f64
        },
        discernibility: released_sizes
            .iter()
            .map(|s| f64::from(*s) * f64::from(*s))
            .sum::<f64>()
            + (suppressed * records) as f64,
    }
}

impl Search<'_> {
    /// Does class `c` meet the criteria?
    fn passes(&self, classes: &Classes, c: usize) -> bool {
        let count = classes.counts[c] as usize;
        if count < self.criteria.k {
            return false;
        }
        let s = self.sensitive_values;
        if s == 0 {
            return true;
        }
        let hist = &classes.hist[c * s..(c + 1) * s];
        match self.criteria.l_diversity {
            Some(LDiversity::Distinct { l }) if hist.iter().filter(|h| **h > 0).count() < l => {
                return false;
            }
            Some(LDiversity::Entropy { l }) => {
                let n = count as f64;
                let entropy: f64 = hist
                    .iter()
                    .filter(|h| **h > 0)
                    .map(|h| {
                        let p = f64::from(*h) / n;
                        -p * p.ln()
                    })
                    .sum();
                // a hair stricter than the definition, so float rounding never passes a class that fails
                if entropy.exp() < l * (1.0 + 1e-12) {
                    return false;
                }
            }
            _ => {}
        }
        if let Some(t) = self.criteria.t_closeness {
            let n = count as f64;
            let distance = if self.numeric_sensitive {
                if s < 2 {
                    0.0
                } else {
                    let mut running = 0.0;
                    let mut total = 0.0;
                    for (h, p) in hist.iter().zip(&self.global) {
                        running += f64::from(*h) / n - p;
                        total += running.abs();
                    }
                    total / (s - 1) as f64
                }
            } else {
                0.5 * hist
                    .iter()
                    .zip(&self.global)
                    .map(|(h, p)| (f64::from(*h) / n - p).abs())
                    .sum::<f64>()
            };
            if distance > t - 1e-12 && distance > 0.0 {
                return false;
            }
        }
        true
    }

    fn verdict(&self, classes: &Classes) -> Verdict {
        let mut k_suppressed = 0usize;
        let mut suppressed = 0usize;
        let mut kept_loss = 0.0;
        let extra = self.criteria.l_diversity.is_some() || self.criteria.t_closeness.is_some();
        for c in 0..classes.len() {
            let count = classes.counts[c] as usize;
            if count < self.criteria.k {
                k_suppressed += count;
                suppressed += count;
                continue;
            }
            if extra && !self.passes(classes, c) {
                suppressed += count;
                continue;
            }
            let ids = &classes.ids[c * self.width..(c + 1) * self.width];
            let mut cell = 0.0;
            for (q, id) in ids.iter().enumerate() {
                cell += self.granularity[q][classes.levels[q] as usize][*id as usize];
            }
            kept_loss += cell * count as f64;
        }
        let cells = (self.records * self.width).max(1) as f64;
        Verdict {
            k_suppressed,
            suppressed,
            loss: (kept_loss + (suppressed * self.width) as f64) / cells,
        }
    }

    fn rollup_bottom(&self, target: &[u8]) -> (Classes, Vec<u32>) {
        let mut assign = Vec::with_capacity(self.bottom.len());
        let classes = if self.wide_keys {
            self.rollup::<u128>(self.bottom, target, Some(&mut assign))
        } else {
            self.rollup::<u64>(self.bottom, target, Some(&mut assign))
        };
        (classes, assign)
    }

    /// The classes at `target` from the classes of a node below it.
    fn rollup<K: PackedKey>(
        &self,
        src: &Classes,
        target: &[u8],
        mut assign: Option<&mut Vec<u32>>,
    ) -> Classes {
        let width = self.width;
        let s = self.sensitive_values;
        let maps: Vec<&[u32]> = (0..width)
            .map(|q| self.jump[q][src.levels[q] as usize][target[q] as usize].as_slice())
            .collect();
        let radix: Vec<u64> = (0..width)
            .map(|q| self.cards[q][target[q] as usize])
            .collect();
        let mut map: AHashMap<K, u32> = AHashMap::with_capacity(src.len().min(1 << 16));
        let mut out = Classes {
            levels: target.to_vec(),
            ids: Vec::new(),
            counts: Vec::new(),
            hist: Vec::new(),
        };
        let mut buf = [0u32; MAX_QUASI];
        for c in 0..src.len() {
            let mut key = K::ZERO;
            let ids = &src.ids[c * width..(c + 1) * width];
            for q in 0..width {
                let id = maps[q][ids[q] as usize];
                buf[q] = id;
                key = key.push(radix[q], id);
            }
            let next = out.counts.len() as u32;
            let class = *map.entry(key).or_insert_with(|| {
                out.ids.extend_from_slice(&buf[..width]);
                out.counts.push(0);
                out.hist.extend(std::iter::repeat_n(0, s));
                next
            });
            out.counts[class as usize] += src.counts[c];
            if s > 0 {
                let (from, to) = (c * s, class as usize * s);
                for v in 0..s {
                    out.hist[to + v] += src.hist[from + v];
                }
            }
            if let Some(assign) = assign.as_deref_mut() {
                assign.push(class);
            }
        }
        out
    }

    /// Checks one node: rolls up the classes of the most specific checked node below it.
    fn check(&mut self, target: &[u8]) -> Verdict {
        self.checked += 1;
        let below = |levels: &[u8]| levels.iter().zip(target).all(|(a, b)| a <= b);
        let source = self
            .cache
            .iter()
            .filter(|c| below(&c.levels))
            .min_by_key(|c| c.len())
            .unwrap_or(self.bottom);
        let classes = if self.wide_keys {
            self.rollup::<u128>(source, target, None)
        } else {
            self.rollup::<u64>(source, target, None)
        };
        let verdict = self.verdict(&classes);
        if self.cache.len() == CACHE {
            self.cache.remove(0);
        }
        self.cache.push(classes);
        verdict
    }

    /// The search: returns the chosen node's levels, the lattice's size and whether pruning by monotonicity was used.
    fn find(
        &mut self,
        dims: &[usize],
        leaves: &[Vec<u32>],
    ) -> Result<(Vec<u8>, usize, bool), AnonymiseError> {
        let width = self.width;
        let nodes = dims
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(*d))
            .filter(|n| *n <= MAX_NODES)
            .ok_or(AnonymiseError::LatticeTooLarge)?;
        let mut strides = vec![1usize; width];
        for q in 1..width {
            strides[q] = strides[q - 1] * dims[q - 1];
        }
        let decode = |node: usize, out: &mut [u8]| {
            for q in 0..width {
                out[q] = ((node / strides[q]) % dims[q]) as u8;
            }
        };
        // The loss without suppression, per column and level: a lower bound of every node's loss.
        let cells = (self.records * width).max(1) as f64;
        let per_level: Vec<Vec<f64>> = (0..width)
            .map(|q| {
                (0..dims[q])
                    .map(|level| {
                        let mut freq = vec![0u32; self.granularity[q][0].len()];
                        for leaf in &leaves[q] {
                            freq[*leaf as usize] += 1;
                        }
                        let to = &self.jump[q][0][level];
                        freq.iter()
                            .enumerate()
                            .map(|(leaf, n)| {
                                f64::from(*n) * self.granularity[q][level][to[leaf] as usize]
                            })
                            .sum::<f64>()
                            / cells
                    })
                    .collect()
            })
            .collect();
        let mut levels = vec![0u8; width];
        let mut bound = vec![0f64; nodes];
        let mut height = vec![0u16; nodes];
        for node in 0..nodes {
            decode(node, &mut levels);
            bound[node] = levels
                .iter()
                .enumerate()
                .map(|(q, l)| per_level[q][*l as usize])
                .sum();
            height[node] = levels.iter().map(|l| u16::from(*l)).sum();
        }
        let mut order: Vec<usize> = (0..nodes).collect();
        order.sort_by(|a, b| {
            bound[*a]
                .total_cmp(&bound[*b])
                .then(height[*a].cmp(&height[*b]))
        });

        let monotone = self.criteria.suppression_percent == 0.0
            || (self.criteria.l_diversity.is_none() && self.criteria.t_closeness.is_none());
        let mut status = vec![UNKNOWN; nodes];
        let mut verdicts: AHashMap<usize, Verdict> = AHashMap::new();
        let mut best: Option<(usize, f64)> = None;
        let top = nodes - 1;
        let mut top_verdict = None;

        for &node in &order {
            if let Some((_, loss)) = best
                && bound[node] >= loss - 1e-12
            {
                break;
            }
            if status[node] == NOT_ANONYMOUS {
                continue;
            }
            if monotone && status[node] == UNKNOWN {
                self.resolve(node, dims, &strides, &bound, &mut status, &mut verdicts);
            }
            if status[node] == NOT_ANONYMOUS {
                continue;
            }
            let verdict = match verdicts.get(&node) {
                Some(v) => *v,
                None => {
                    decode(node, &mut levels);
                    let v = self.check(&levels);
                    verdicts.insert(node, v);
                    if v.k_suppressed > self.limit {
                        mark_below(node, dims, &strides, &mut status);
                    }
                    v
                }
            };
            if node == top {
                top_verdict = Some(verdict);
            }
            if verdict.suppressed <= self.limit && best.is_none_or(|(_, loss)| verdict.loss < loss)
            {
                best = Some((node, verdict.loss));
            }
        }
        match best {
            Some((node, _)) => {
                decode(node, &mut levels);
                Ok((levels, nodes, monotone))
            }
            None => {
                let verdict = match top_verdict {
                    Some(v) => v,
                    None => {
                        decode(top, &mut levels);
                        self.check(&levels)
                    }
                };
                Err(AnonymiseError::NoSolution {
                    records: self.records,
                    suppressed: verdict.suppressed,
                    limit: self.limit,
                })
            }
        }
    }

    /// Classifies `start` (and every node a check on the way classifies) by
    /// binary search along a path upwards through unclassified nodes.
    fn resolve(
        &mut self,
        start: usize,
        dims: &[usize],
        strides: &[usize],
        bound: &[f64],
        status: &mut [u8],
        verdicts: &mut AHashMap<usize, Verdict>,
    ) {
        let width = self.width;
        let mut path = vec![start];
        let mut current = start;
        loop {
            let mut next: Option<usize> = None;
            for q in 0..width {
                let level = (current / strides[q]) % dims[q];
                if level + 1 < dims[q] {
                    let successor = current + strides[q];
                    if status[successor] == UNKNOWN
                        && next.is_none_or(|n| bound[successor] < bound[n])
                    {
                        next = Some(successor);
                    }
                }
            }
            match next {
                Some(n) => {
                    path.push(n);
                    current = n;
                }
                None => break,
            }
        }
        let mut levels = vec![0u8; width];
        let (mut lo, mut hi) = (0usize, path.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let node = path[mid];
            let anonymous = match status[node] {
                ANONYMOUS => true,
                NOT_ANONYMOUS => false,
                _ => {
                    for q in 0..width {
                        levels[q] = ((node / strides[q]) % dims[q]) as u8;
                    }
                    let verdict = self.check(&levels);
                    verdicts.insert(node, verdict);
                    let anonymous = verdict.suppressed <= self.limit;
                    if anonymous {
                        mark_above(node, dims, strides, status);
                    } else {
                        mark_below(node, dims, strides, status);
                    }
                    anonymous
                }
            };
            if anonymous {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
    }
}

/// Marks `node` and every node below it not anonymous.
fn mark_below(node: usize, dims: &[usize], strides: &[usize], status: &mut [u8]) {
    let width = dims.len();
    let top: Vec<usize> = (0..width).map(|q| (node / strides[q]) % dims[q]).collect();
    let mut at = vec![0usize; width];
    loop {
        let index: usize = at.iter().zip(strides).map(|(l, s)| l * s).sum();
        status[index] = NOT_ANONYMOUS;
        let mut q = 0;
        loop {
            if q == width {
                return;
            }
            if at[q] < top[q] {
                at[q] += 1;
                break;
            }
            at[q] = 0;
            q += 1;
        }
    }
}

/// Marks `node` and every node above it anonymous.
fn mark_above(node: usize, dims: &[usize], strides: &[usize], status: &mut [u8]) {
    let width = dims.len();
    let bottom: Vec<usize> = (0..width).map(|q| (node / strides[q]) % dims[q]).collect();
    let mut at = bottom.clone();
    loop {
        let index: usize = at.iter().zip(strides).map(|(l, s)| l * s).sum();
        status[index] = ANONYMOUS;
        let mut q = 0;
        loop {
            if q == width {
                return;
            }
            if at[q] + 1 < dims[q] {
                at[q] += 1;
                break;
            }
            at[q] = bottom[q];
            q += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn adult_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/adult")
    }

    pub(crate) const ADULT_QIS: [&str; 8] = [
        "sex",
        "age",
        "race",
        "marital-status",
        "education",
        "native-country",
        "workclass",
        "occupation",
    ];

    struct Adult {
        qis: Vec<&'static str>,
        header: Vec<String>,
        rows: Vec<Vec<String>>,
        hierarchies: Vec<Hierarchy>,
    }

    fn adult() -> Adult {
        adult_with(&ADULT_QIS)
    }

    fn adult_with(qis: &[&'static str]) -> Adult {
        let dir = adult_dir();
        let text = std::fs::read_to_string(dir.join("adult.csv")).unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap()
            .split(';')
            .map(str::to_owned)
            .collect();
        let rows = lines
            .map(|l| l.split(';').map(str::to_owned).collect())
            .collect();
        let hierarchies = qis
            .iter()
            .map(|q| {
                let bytes = std::fs::read(dir.join(format!("adult_hierarchy_{q}.csv"))).unwrap();
                Hierarchy::from_csv(&bytes, b';').unwrap()
            })
            .collect();
        Adult {
            qis: qis.to_vec(),
            header,
            rows,
            hierarchies,
        }
    }

    fn run(
        adult: &Adult,
        criteria: Criteria,
        sensitive: Option<&str>,
    ) -> Result<(Report, Vec<Vec<String>>), AnonymiseError> {
        let col = |name: &str| adult.header.iter().position(|h| h == name).unwrap();
        let quasi: Vec<QuasiIdentifier<'_>> = adult
            .qis
            .iter()
            .zip(&adult.hierarchies)
            .map(|(name, hierarchy)| QuasiIdentifier {
                name,
                values: adult.rows.iter().map(|r| r[col(name)].as_str()).collect(),
                hierarchy,
            })
            .collect();
        let sensitive = sensitive.map(|name| Sensitive {
            name,
            values: adult.rows.iter().map(|r| r[col(name)].as_str()).collect(),
        });
        let result = anonymise(&quasi, sensitive.as_ref(), criteria)?;
        let released = (0..adult.rows.len())
            .filter(|r| !result.suppressed(*r))
            .map(|r| {
                let mut row: Vec<String> = (0..adult.qis.len())
                    .map(|q| result.label(r, q).unwrap().to_owned())
                    .collect();
                if let Some(s) = &sensitive {
                    row.push(s.values[r].to_owned());
                }
                row
            })
            .collect();
        Ok((result.report, released))
    }

    /// An independent check: group the released rows and count.
    fn classes(rows: &[Vec<String>], qis: usize) -> AHashMap<Vec<String>, Vec<String>> {
        let mut out: AHashMap<Vec<String>, Vec<String>> = AHashMap::new();
        for row in rows {
            out.entry(row[..qis].to_vec())
                .or_default()
                .push(row.get(qis).cloned().unwrap_or_default());
        }
        out
    }

    fn criteria(k: usize, suppression_percent: f64) -> Criteria {
        Criteria {
            k,
            suppression_percent,
            l_diversity: None,
            t_closeness: None,
        }
    }

    /// Every node of the lattice, checked by brute force: the least loss among the anonymous ones.
    fn brute_force_best(adult: &Adult, c: Criteria) -> f64 {
        let dims: Vec<usize> = adult.hierarchies.iter().map(Hierarchy::levels).collect();
        let total: usize = dims.iter().product();
        let col = |name: &str| adult.header.iter().position(|h| h == name).unwrap();
        let leaves: Vec<Vec<u32>> = adult
            .qis
            .iter()
            .zip(&adult.hierarchies)
            .map(|(q, h)| {
                adult
                    .rows
                    .iter()
                    .map(|r| h.leaf_id(&r[col(q)]).unwrap())
                    .collect()
            })
            .collect();
        let n = adult.rows.len();
        let limit = (c.suppression_percent / 100.0 * n as f64 + 1e-9).floor() as usize;
        // under[q][level][id]: how many original values the label covers
        let under: Vec<Vec<Vec<usize>>> = adult
            .hierarchies
            .iter()
            .map(|h| {
                (0..h.levels())
                    .map(|level| {
                        let mut n = vec![0; h.cardinality(level)];
                        for leaf in 0..h.leaves() as u32 {
                            n[h.generalise(level, leaf) as usize] += 1;
                        }
                        n
                    })
                    .collect()
            })
            .collect();
        let mut best = f64::INFINITY;
        let mut levels = vec![0usize; dims.len()];
        for node in 0..total {
            let mut rest = node;
            for (q, d) in dims.iter().enumerate() {
                levels[q] = rest % d;
                rest /= d;
            }
            let mut groups: AHashMap<Vec<u32>, usize> = AHashMap::new();
            #[allow(clippy::needless_range_loop)] // r indexes every column's leaves
            for r in 0..n {
                let key = (0..dims.len())
                    .map(|q| adult.hierarchies[q].generalise(levels[q], leaves[q][r]))
                    .collect();
                *groups.entry(key).or_default() += 1;
            }
            let suppressed: usize = groups.values().filter(|s| **s < c.k).sum();
            if suppressed > limit {
                continue;
            }
            let mut loss = suppressed as f64 * dims.len() as f64;
            for (key, size) in &groups {
                if *size < c.k {
                    continue;
                }
                for (q, id) in key.iter().enumerate() {
                    let h = &adult.hierarchies[q];
                    let covered = under[q][levels[q]][*id as usize];
                    loss += *size as f64 * (covered - 1) as f64 / (h.leaves() - 1) as f64;
                }
            }
            best = best.min(loss / (n * dims.len()) as f64);
        }
        best
    }

    #[test]
    fn five_anonymity_on_adult_is_anonymous_and_optimal() {
        let adult = adult();
        for suppression in [0.0, 5.0] {
            let (report, rows) = run(&adult, criteria(5, suppression), None).unwrap();
            let groups = classes(&rows, adult.qis.len());
            assert!(
                groups.values().all(|g| g.len() >= 5),
                "a released class is smaller than 5"
            );
            assert_eq!(rows.len() + report.suppressed_records, adult.rows.len());
            assert!(
                report.suppressed_records as f64 <= suppression / 100.0 * adult.rows.len() as f64
            );
            assert_eq!(report.equivalence_classes, groups.len());
            assert!(
                report.search.nodes_checked < report.search.lattice_nodes / 10,
                "{:?}",
                report.search
            );
            assert!(report.risk_after.prosecutor.highest <= 0.2 + 1e-12);
            assert!(report.risk_before.unique_records > 0);
        }
    }

    #[test]
    fn the_search_finds_what_an_exhaustive_one_finds() {
        // every node of a smaller lattice (5·4·3·3·2 = 360 nodes) checked one by one
        let adult = adult_with(&[
            "age",
            "education",
            "marital-status",
            "native-country",
            "sex",
        ]);
        for (k, suppression) in [(5, 0.0), (5, 1.0), (20, 0.0), (20, 5.0), (100, 2.0)] {
            let (report, _) = run(&adult, criteria(k, suppression), None).unwrap();
            let best = brute_force_best(&adult, criteria(k, suppression));
            assert!(
                (report.information_loss.loss - best).abs() < 1e-9,
                "k={k} suppression={suppression}: {} vs {best}",
                report.information_loss.loss
            );
        }
    }

    #[test]
    fn l_diversity_and_t_closeness_on_adult() {
        let adult = adult();
        let mut c = criteria(5, 0.0);
        c.l_diversity = Some(LDiversity::Distinct { l: 2 });
        let (_, rows) = run(&adult, c, Some("salary-class")).unwrap();
        for group in classes(&rows, ADULT_QIS.len()).values() {
            let mut distinct = group.clone();
            distinct.sort();
            distinct.dedup();
            assert!(distinct.len() >= 2 && group.len() >= 5);
        }
        let mut c = criteria(5, 0.0);
        c.t_closeness = Some(0.15);
        let (report, rows) = run(&adult, c, Some("salary-class")).unwrap();
        let overall = rows.iter().filter(|r| r[8] == ">50K").count() as f64 / rows.len() as f64;
        for group in classes(&rows, ADULT_QIS.len()).values() {
            let share = group.iter().filter(|v| *v == ">50K").count() as f64 / group.len() as f64;
            // equal-distance EMD over two values is |difference of shares|
            assert!((share - overall).abs() <= 0.15, "{share} vs {overall}");
        }
        assert!(report.information_loss.loss > 0.0);
    }

    #[test]
    fn refuses_what_cannot_be_done() {
        let adult = adult();
        // more than the table
        let err = run(&adult, criteria(40_000, 0.0), None).unwrap_err();
        assert!(matches!(err, AnonymiseError::NoSolution { .. }), "{err}");
        assert_eq!(
            run(&adult, criteria(0, 0.0), None).unwrap_err(),
            AnonymiseError::BadK
        );
        assert!(matches!(
            run(&adult, criteria(5, 101.0), None),
            Err(AnonymiseError::BadSuppression(_))
        ));
        let mut c = criteria(5, 0.0);
        c.t_closeness = Some(0.1);
        assert_eq!(
            run(&adult, c, None).unwrap_err(),
            AnonymiseError::NoSensitive
        );

        let h = Hierarchy::from_csv(b"a;*\nb;*\n", b';').unwrap();
        let quasi = [QuasiIdentifier {
            name: "x",
            values: vec!["a", "c"],
            hierarchy: &h,
        }];
        let err = anonymise(&quasi, None, criteria(1, 0.0)).err().unwrap();
        assert_eq!(
            err,
            AnonymiseError::NotInHierarchy {
                record: 2,
                column: "x".into(),
                value: "c".into()
            }
        );
    }
}
