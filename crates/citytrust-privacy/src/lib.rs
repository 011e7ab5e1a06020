//! Disclosure control for the trust's releases, on plain values: no IO and
//! no clock. Keys come from the caller; noise only from OpenDP (in [`dp`]).
//!
//! * [`hierarchy`]: generalisation hierarchies, from ARX-format CSV or built
//!   from the values (intervals, dates, redaction, grids).
//! * [`kanon`]: k-anonymity by optimal full-domain generalisation with
//!   suppression, l-diversity and t-closeness, with information-loss measures.
//! * [`risk`]: prosecutor, journalist and marketer re-identification risk.
//! * [`cells`]: small-number suppression of aggregates with secondary
//!   suppression over margins.
//! * [`pseudonym`]: keyed pseudonyms particular to one agreement.
//! * [`dp`]: differentially private counts, sums, means and histograms.

pub mod cells;
pub mod dp;
pub mod hierarchy;
pub mod kanon;
pub mod pseudonym;
pub mod risk;

pub use hierarchy::{Hierarchy, HierarchyError, HierarchyKind};
pub use kanon::{
    AnonymiseError, Anonymised, Criteria, LDiversity, QuasiIdentifier, Report, Sensitive, anonymise,
};
pub use risk::{RiskReport, risk_of_columns, risk_of_sizes};
