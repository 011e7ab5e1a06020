//! The access levels below identified rows (R-ACC-3), served through the
//! privacy engine: thresholded aggregates, differentially private
//! statistics against a budget, pseudonymised and anonymised rows. Each
//! read is authorised at its level like any other (deny by default), and
//! its log entry names the transform applied.

use citytrust_model::ProblemCode;
use std::io::{Seek, Write};
use std::path::Path;
use std::sync::Arc;

use citytrust_model::catalogue::Dataset;
use citytrust_model::{AccessLevel, Actor};
use citytrust_privacy::pseudonym::PseudonymSecret;
use citytrust_query::VersionChoice;
use citytrust_query::export::{OutputFormat, Slice};
use citytrust_query::levels::GroupKey;
use serde::Serialize;
use sha2::Digest;

use crate::content::{Served, clean_purpose, reader_label};
use crate::read::{ReadGrant, ReadPlan};
use crate::{Result, Service, ServiceError};
use citytrust_query::DigestWriter;

/// The smallest count a thresholded table shows (R-PRV-3); a release may
/// ask for a higher threshold, never a lower one.
pub const MIN_THRESHOLD: u64 = 10;
/// Anonymised rows on the read path: every released combination of
/// quasi-identifiers is shared by at least this many rows …
pub const READ_K: usize = 5;
/// … with at most this share of rows left out to get there.
pub const READ_SUPPRESSION_PERCENT: f64 = 5.0;

/// A thresholded table asked for.
#[derive(Debug, Clone)]
pub struct AggregateRequest {
    /// Which version: the latest, a number, or the one in force at a time.
    pub version: VersionChoice,
    pub purpose: Option<String>,
    pub by: Vec<GroupKey>,
    pub sum: Option<String>,
    pub threshold: Option<u64>,
    pub format: OutputFormat,
}

/// The statistics a DP release can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DpStatistic {
    Count,
    Sum,
    Mean,
    Histogram,
}

impl DpStatistic {
    pub fn as_str(self) -> &'static str {
        match self {
            DpStatistic::Count => "count",
            DpStatistic::Sum => "sum",
            DpStatistic::Mean => "mean",
            DpStatistic::Histogram => "histogram",
        }
    }
}

/// A differentially private statistic asked for.
#[derive(Debug, Clone)]
pub struct DpRequest {
    /// Which version: the latest, a number, or the one in force at a time.
    pub version: VersionChoice,
    pub purpose: Option<String>,
    pub statistic: DpStatistic,
    pub column: Option<String>,
    pub bounds: Option<(f64, f64)>,
    pub categories: Vec<String>,
    pub epsilon: f64,
}

/// The longest value an index look-up takes.
pub const MAX_LOOKUP_VALUE: usize = 1000;

/// An index look-up asked for: whether a record holding `value` in `column` exists.
#[derive(Debug, Clone, Default)]
pub struct LookupRequest {
    pub version: VersionChoice,
    pub purpose: Option<String>,
    pub column: String,
    pub value: String,
}

/// The answer of an index look-up.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LookupAnswer {
    pub dataset: String,
    pub version: i64,
    pub column: String,
    /// Whether a record holding the value exists (among those the reader may see).
    pub exists: bool,
    /// Random, so the logged digest of this answer cannot be guessed.
    pub nonce: String,
    /// SHA-256 of `dataset\nversion\ncolumn\nexists\nnonce` (one line each,
    /// `true`/`false`), as the log entry records it.
    pub sha256: String,
    /// The transparency-log entry recording this look-up.
    pub log_index: i64,
}

fn lookup_digest_text(
    dataset: &str,
    version: i64,
    column: &str,
    exists: bool,
    nonce: &str,
) -> String {
    format!("{dataset}\n{version}\n{column}\n{exists}\n{nonce}")
}

/// A data user's privacy budget under one account.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct BudgetView {
    /// The agreement it belongs to, or `dataset:<id>` when none was needed.
    pub account: String,
    pub total_epsilon: f64,
    pub spent_epsilon: f64,
    pub remaining_epsilon: f64,
    pub releases: i64,
}

/// A released DP statistic.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DpRelease {
    pub dataset: String,
    pub version: i64,
    pub statistic: DpStatistic,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The noisy value: a number (count, sum), a number or null (mean), or
    /// one count per category with the rest last (histogram).
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// The privacy loss charged (at most the epsilon asked for).
    pub epsilon: f64,
    pub mechanism: &'static str,
    /// The noise scale of each mechanism used.
    pub scale: Vec<f64>,
    pub budget: BudgetView,
    /// The transparency-log entry recording this release.
    pub log_index: i64,
    /// The nonce of the entry's commitment to `value` (as JSON text):
    /// `commitment("dp", nonce, value)` — see the log's documentation.
    pub nonce: String,
}

fn nano(epsilon: f64) -> i64 {
    // Rounded up: a charge is never less than the loss.
    (epsilon * 1e9).ceil() as i64
}

/// A number for a log entry, which holds integers only (its canonical
/// form): written out as a decimal string.
fn decimal(x: f64) -> String {
    format!("{x}")
}

fn epsilon_of(nano: i64) -> f64 {
    nano as f64 / 1e9
}

fn budget_view(account: &str, b: citytrust_store::Budget) -> BudgetView {
    BudgetView {
        account: account.to_string(),
        total_epsilon: epsilon_of(b.total_nano),
        spent_epsilon: epsilon_of(b.spent_nano),
        remaining_epsilon: epsilon_of((b.total_nano - b.spent_nano).max(0)),
        releases: b.releases,
    }
}

/// Read the pseudonym secrets file: the last line's secret is in use.
fn read_keys(path: &Path) -> Result<Option<Vec<PseudonymSecret>>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line.split_once(' ').and_then(|(id, hex_key)| {
            let bytes = hex::decode(hex_key.trim()).ok()?;
            let secret = <[u8; 32]>::try_from(bytes).ok()?;
            (!id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()))
                .then(|| PseudonymSecret::new(id, secret))
        });
        keys.push(parsed.ok_or_else(|| {
            ServiceError::Internal(format!(
                "{}, line {}: not `<id> <64 hex digits>`",
                path.display(),
                n + 1
            ))
        })?);
    }
    Ok(Some(keys))
}

fn append_key(path: &Path, id: &str) -> Result<()> {
    let secret = crate::accounts::random_bytes::<32>()?;
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    writeln!(f, "{id} {}", hex::encode(secret))?;
    f.sync_all()?;
    Ok(())
}

/// Start using a new pseudonym secret (the old ones stay in the file, for
/// the record): every pseudonym served from now on changes. Returns its id.
pub fn rotate_pseudonym_key(path: &Path) -> Result<String> {
    let keys = read_keys(path)?.unwrap_or_default();
    let next = keys
        .iter()
        .filter_map(|k| k.id.strip_prefix('k').and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0)
        + 1;
    let id = format!("k{next}");
    append_key(path, &id)?;
    Ok(id)
}

impl Service {
    /// The pseudonym secret in use (made on first use).
    pub(crate) fn pseudonym_secret(&self) -> Result<PseudonymSecret> {
        let Some(path) = &self.settings.pseudonym_keys else {
            return Ok(self.pseudonym_fallback.clone());
        };
        if read_keys(path)?.is_none_or(|k| k.is_empty()) {
            append_key(path, "k1")?;
            tracing::info!(path = %path.display(), "created the pseudonym secret");
        }
        read_keys(path)?
            .and_then(|mut k| k.pop())
            .ok_or_else(|| ServiceError::Internal("no pseudonym secret".into()))
    }

    /// The first pseudonym secret (it stays in the file when the key is
    /// rotated): the root of keys that must not change with a rotation.
    fn first_secret(&self) -> Result<PseudonymSecret> {
        let Some(path) = &self.settings.pseudonym_keys else {
            return Ok(self.pseudonym_fallback.clone());
        };
        self.pseudonym_secret()?;
        read_keys(path)?
            .and_then(|k| k.into_iter().next())
            .ok_or_else(|| ServiceError::Internal("no pseudonym secret".into()))
    }

    /// How a table of `dataset` is protected from a reader who may not
    /// read its rows: the owner's bins and column classes, and the seeds of
    /// the dataset's record keys (stable: rotating the pseudonym key does
    /// not change them, so perturbation cannot be averaged over rotations).
    fn table_protection(
        &self,
        dataset: &Dataset,
    ) -> Result<citytrust_query::levels::TableProtection> {
        use citytrust_model::catalogue::TableBin;
        use citytrust_query::levels::{Bin, TIME_UNITS};
        let key = self
            .first_secret()?
            .derive(&format!("record keys of dataset {}", dataset.id));
        let mut seeds = [0u64; 4];
        for (i, chunk) in key.chunks_exact(8).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            seeds[i] = u64::from_le_bytes(b);
        }
        let classes = &dataset.metadata.column_classes;
        Ok(citytrust_query::levels::TableProtection {
            record_seeds: seeds,
            spatial: classes.spatial.clone(),
            temporal: classes.temporal.clone(),
            bins: classes
                .table_bins
                .iter()
                .map(|(c, b)| {
                    let bin = match b {
                        TableBin::Time(u) => Bin::Time(
                            TIME_UNITS
                                .iter()
                                .position(|x| *x == u.as_str())
                                .unwrap_or(0),
                        ),
                        TableBin::Width(w) => Bin::Width(*w as f64),
                        TableBin::GridMillidegrees(m) => Bin::Grid(f64::from(*m) / 1000.0),
                    };
                    (c.clone(), bin)
                })
                .collect(),
        })
    }

    /// Rows at a row level below identified, with the transform that made
    /// them (for the log entry).
    pub(crate) async fn export_rows_at_level(
        &self,
        plan: &ReadPlan,
        slice: Slice,
        format: OutputFormat,
        out: &mut (dyn Write + Send),
    ) -> Result<(u64, Option<serde_json::Value>)> {
        let (actor, dataset, grant) = (&plan.actor, &plan.dataset, &plan.grant);
        let source = plan.source(&self.versions);
        let classes = &dataset.metadata.column_classes;
        match grant.level {
            AccessLevel::Pseudonymised => {
                let secret = self.pseudonym_secret()?;
                let scope = match &grant.agreement_id {
                    Some(a) => format!("agreement:{a}"),
                    None => format!("reader:{}", reader_label(actor, dataset)),
                };
                let p = Arc::new(secret.for_scope(&scope));
                let rows = citytrust_query::levels::export_pseudonymised(
                    source,
                    &classes.personal,
                    p,
                    slice,
                    format,
                    out,
                )
                .await?;
                Ok((
                    rows,
                    Some(serde_json::json!({
                        "kind": "pseudonymised",
                        "columns": classes.personal,
                        "key": secret.id,
                        "scope": if grant.agreement_id.is_some() { "agreement" } else { "reader" },
                    })),
                ))
            }
            AccessLevel::Anonymised => {
                if dataset.metadata.personal_data && classes.quasi_identifying.is_empty() {
                    return Err(ServiceError::Unprocessable {
                        code: ProblemCode::NoQuasiIdentifiers,
                        message: format!(
                            "dataset '{}' is personal data but its owner has declared no \
                             quasi-identifying columns (column_classes.quasi_identifying), so \
                             anonymised rows cannot be made",
                            dataset.id
                        ),
                    });
                }
                if slice.offset > 0 || slice.limit.is_some() {
                    return Err(ServiceError::Unprocessable {
                        code: ProblemCode::NoPaging,
                        message: "anonymised rows are released whole (generalisation depends on \
                                  every row): ask without offset and limit, in CSV"
                            .into(),
                    });
                }
                let subject = dataset
                    .metadata
                    .personal_terms
                    .as_ref()
                    .map(|t| t.subject_key.as_str());
                let (rows, read) = citytrust_query::levels::export_anonymised(
                    source,
                    citytrust_query::levels::Anonymisation {
                        quasi: &classes.quasi_identifying,
                        non_identifying: &classes.non_identifying,
                        subject,
                        k: READ_K,
                        suppression_percent: READ_SUPPRESSION_PERCENT,
                    },
                    format,
                    out,
                )
                .await?;
                let mut t = serde_json::json!({
                    "kind": "k-anonymity",
                    "k": READ_K,
                    "k_counts": if subject.is_some() { "people" } else { "rows" },
                    "suppression_limit_percent": decimal(READ_SUPPRESSION_PERCENT),
                    "quasi_identifiers": read.quasi_identifiers,
                    "dropped": read.dropped,
                });
                if let (Some(r), Some(map)) = (&read.report, t.as_object_mut()) {
                    map.insert(
                        "levels".into(),
                        r.transformation
                            .iter()
                            .map(|l| serde_json::json!({"column": l.column, "level": l.level}))
                            .collect(),
                    );
                    map.insert("suppressed".into(), r.suppressed_records.into());
                    map.insert("smallest_class".into(), r.smallest_class.into());
                    map.insert(
                        "loss".into(),
                        serde_json::json!({
                            "loss": decimal(r.information_loss.loss),
                            "non_uniform_entropy_share":
                                decimal(r.information_loss.non_uniform_entropy_share),
                        }),
                    );
                }
                Ok((rows, Some(t)))
            }
            AccessLevel::Identified => {
                let rows =
                    citytrust_query::export::export_version(source, slice, format, out).await?;
                Ok((rows, None))
            }
            AccessLevel::Index => Err(ServiceError::Unprocessable {
                code: ProblemCode::IndexLevel,
                message: format!(
                    "the index level answers whether a record exists in dataset '{}', not with \
                     rows: ask with a look-up",
                    dataset.id
                ),
            }),
            other => Err(ServiceError::Unprocessable {
                code: ProblemCode::AggregateLevel,
                message: format!(
                    "{} are tables, not rows: ask dataset '{}' for a table of thresholded \
                     counts or a differentially private statistic",
                    other.label().to_lowercase(),
                    dataset.id
                ),
            }),
        }
    }

    /// A thresholded table of counts (R-PRV-3, R-PRV-4): permitted at the
    /// aggregate level → counted → small cells suppressed → logged → served.
    pub async fn aggregate(
        &self,
        actor: &Actor,
        dataset_id: &str,
        request: AggregateRequest,
    ) -> Result<Served> {
        let _slot = self.read_slot(actor).await?;
        let dataset = self.get_dataset(dataset_id).await?;
        let purpose = clean_purpose(request.purpose.as_deref())?;
        // Rows that would answer it are not looked at until it is permitted.
        let grant = self
            .authorize_read(actor, &dataset, purpose.as_deref(), AccessLevel::Aggregate)
            .await?;
        let personal = &dataset.metadata.column_classes.personal;
        if let Some(c) = request
            .by
            .iter()
            .flat_map(|k| k.columns())
            .find(|c| personal.iter().any(|p| p == c))
        {
            // A table's labels are shown even where its counts are not.
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::PersonalDimension,
                message: format!(
                    "column {c:?} directly identifies people: a table may not be broken down by it"
                ),
            });
        }
        let threshold = request.threshold.unwrap_or(MIN_THRESHOLD);
        if threshold < MIN_THRESHOLD {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::ThresholdTooLow,
                message: format!(
                    "the trust shows no count below {MIN_THRESHOLD}: a release may use a higher \
                     threshold, not {threshold}"
                ),
            });
        }
        if !matches!(request.format, OutputFormat::Csv | OutputFormat::Json) {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::UnsupportedFormat,
                message: format!(
                    "a thresholded table is served as csv or json, not {}",
                    request.format.extension()
                ),
            });
        }
        // A reader who may read the rows gets exact (thresholded) counts;
        // one who may not gets a table that cannot give rows back.
        let rows_allowed = self
            .authorize_read(actor, &dataset, purpose.as_deref(), AccessLevel::Identified)
            .await
            .is_ok();
        let protection = if rows_allowed {
            None
        } else {
            Some(self.table_protection(&dataset)?)
        };
        let plan = self
            .plan_read_under(actor, dataset, grant, request.version)
            .await?;
        let agg = citytrust_query::levels::aggregate(
            plan.source(&self.versions),
            &request.by,
            request.sum.as_deref(),
            threshold,
            protection.as_ref(),
        )
        .await?;
        let written = std::time::Instant::now();
        let mut spool = DigestWriter::new(std::io::BufWriter::new(tempfile::tempfile_in(
            self.spool_dir(),
        )?));
        let rows = citytrust_query::levels::write_aggregate(&agg, request.format, &mut spool)?;
        tracing::info!(
            dataset = %plan.dataset.id,
            cells = agg.cells.len(),
            suppressed = agg.suppressed.0 + agg.suppressed.1,
            count_ms = agg.timings_ms.0,
            protect_ms = agg.timings_ms.1,
            write_ms = written.elapsed().as_millis(),
            "thresholded table"
        );
        let (buffered, bytes, sha256) = spool.finish()?;
        let mut file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.rewind()?;
        let nonce = crate::content::new_nonce()?;
        let transform = serde_json::json!({
            "kind": "thresholded_aggregate",
            "by": agg.dimensions,
            "sum": agg.measure,
            "threshold": threshold,
            // Cells shown only: how many were held back is not public (it
            // would tell small cells from empty ones).
            "cells": agg.cells.len(),
            "perturbed": agg.perturbed,
        });
        let log_index = self
            .log_read(
                &plan,
                serde_json::json!({
                    "format": request.format.extension(),
                    "rows": rows,
                    "bytes": bytes,
                    "commitment": crate::content::commitment("served", &nonce, &sha256),
                    "transform": transform,
                }),
                "aggregate",
            )
            .await?;
        Ok(Served {
            file,
            bytes,
            rows,
            sha256,
            media_type: request.format.media_type(),
            file_name: format!(
                "{}-v{}-aggregate.{}",
                plan.dataset.id,
                plan.version.version,
                request.format.extension()
            ),
            log_index,
            truncated: false,
            nonce,
        })
    }

    /// An index look-up (R-ACC-3's "index only"): whether a record holding
    /// `value` in `column` exists in the dataset, and nothing else about it.
    /// Permitted at the index level → answered → logged (the column, never
    /// the value) → returned.
    pub async fn lookup(
        &self,
        actor: &Actor,
        dataset_id: &str,
        request: LookupRequest,
    ) -> Result<LookupAnswer> {
        let LookupRequest {
            version,
            purpose,
            column,
            value,
        } = request;
        let (column, value) = (column.as_str(), value.as_str());
        let _slot = self.read_slot(actor).await?;
        let dataset = self.get_dataset(dataset_id).await?;
        let purpose = clean_purpose(purpose.as_deref())?;
        let grant = self
            .authorize_read(actor, &dataset, purpose.as_deref(), AccessLevel::Index)
            .await?;
        if value.len() > MAX_LOOKUP_VALUE {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::InvalidLookup,
                message: format!("a value looked up is at most {MAX_LOOKUP_VALUE} bytes"),
            });
        }
        let plan = self.plan_read_under(actor, dataset, grant, version).await?;
        let exists =
            citytrust_query::levels::exists(plan.source(&self.versions), column, value).await?;
        let (dataset, version) = (&plan.dataset, &plan.version);
        let nonce = hex::encode(crate::accounts::random_bytes::<16>()?);
        let digest = hex::encode(sha2::Sha256::digest(
            lookup_digest_text(&dataset.id, version.version, column, exists, &nonce).as_bytes(),
        ));
        let log_index = self
            .log_read(
                &plan,
                serde_json::json!({
                    "format": "json",
                    "rows": 1,
                    "sha256": digest,
                    "transform": {"kind": "index_lookup", "column": column},
                }),
                "index_lookup",
            )
            .await?;
        Ok(LookupAnswer {
            dataset: dataset.id.clone(),
            version: version.version,
            column: column.to_string(),
            exists,
            nonce,
            sha256: digest,
            log_index,
        })
    }

    /// The budget account of a DP read: its agreement, or the dataset.
    fn budget_account(grant: &ReadGrant, dataset: &Dataset) -> String {
        match &grant.agreement_id {
            Some(a) => a.clone(),
            None => format!("dataset:{}", dataset.id),
        }
    }

    /// A differentially private statistic (R-PRV-5): permitted at the DP
    /// level → within the reader's budget → released with OpenDP → charged
    /// and logged in one transaction → returned. Over budget: refused, with
    /// what is left.
    pub async fn dp_statistic(
        &self,
        actor: &Actor,
        dataset_id: &str,
        request: DpRequest,
    ) -> Result<DpRelease> {
        let Actor::User { username, .. } = actor else {
            return Err(ServiceError::SignInToRead {
                message: "differentially private statistics spend a privacy budget kept per \
                          data user: sign in"
                    .into(),
                dataset: Some(dataset_id.to_string()),
            });
        };
        let _slot = self.read_slot(actor).await?;
        let dataset = self.get_dataset(dataset_id).await?;
        let purpose = clean_purpose(request.purpose.as_deref())?;
        let grant = self
            .authorize_read(
                actor,
                &dataset,
                purpose.as_deref(),
                AccessLevel::DpAggregate,
            )
            .await?;
        let invalid = |message: String| ServiceError::Unprocessable {
            code: ProblemCode::InvalidStatistic,
            message,
        };
        let numeric = match request.statistic {
            DpStatistic::Count => {
                if request.column.is_some() {
                    return Err(invalid("a count counts rows: leave out column".into()));
                }
                false
            }
            DpStatistic::Sum | DpStatistic::Mean => {
                if request.column.is_none() || request.bounds.is_none() {
                    return Err(invalid(format!(
                        "a {} needs a number column and its bounds [lower, upper]",
                        request.statistic.as_str()
                    )));
                }
                true
            }
            DpStatistic::Histogram => {
                if request.column.is_none() || request.categories.is_empty() {
                    return Err(invalid(
                        "a histogram needs a column and the categories to count (they are not \
                         read from the data: which categories exist would itself disclose)"
                            .into(),
                    ));
                }
                false
            }
        };
        if !(request.epsilon.is_finite()
            && request.epsilon > 0.0
            && request.epsilon <= citytrust_privacy::dp::MAX_EPSILON)
        {
            return Err(invalid(format!(
                "epsilon must be above 0 and at most {}",
                citytrust_privacy::dp::MAX_EPSILON
            )));
        }
        let account = Self::budget_account(&grant, &dataset);
        let total_nano = nano(self.settings.dp_budget_epsilon);
        let before = self
            .store
            .privacy_budget(username, &account)
            .await?
            .unwrap_or(citytrust_store::Budget {
                total_nano,
                spent_nano: 0,
                releases: 0,
            });
        let refusal = |b: citytrust_store::Budget| {
            let view = budget_view(&account, b);
            ServiceError::Refused {
                rule: Some("privacy-budget".into()),
                message: format!(
                    "this statistic would spend epsilon {} but only {} of your privacy budget of \
                     {} under {} is left ({} spent on {} release(s)); nothing was released",
                    request.epsilon,
                    view.remaining_epsilon,
                    view.total_epsilon,
                    account,
                    view.spent_epsilon,
                    view.releases
                ),
            }
        };
        if before.spent_nano + nano(request.epsilon) > before.total_nano {
            return Err(refusal(before));
        }
        let plan = self
            .plan_read_under(actor, dataset, grant, request.version)
            .await?;
        let input = citytrust_query::levels::dp_input(
            plan.source(&self.versions),
            request.column.as_deref(),
            numeric,
        )
        .await?;
        let dp_err = |e: citytrust_privacy::dp::DpError| match e {
            citytrust_privacy::dp::DpError::Invalid(m) => invalid(m),
            // OpenDP refuses what it cannot make safely (bounds whose sums
            // could overflow, …): the asker's to change, nothing released.
            citytrust_privacy::dp::DpError::Library(m) => {
                tracing::warn!(error = %m, "OpenDP refused a statistic");
                invalid(format!("this statistic cannot be released as asked: {m}"))
            }
        };
        use citytrust_privacy::dp;
        use citytrust_query::levels::DpInput;
        let bounds = request.bounds.unwrap_or((0.0, 0.0));
        let (value, epsilon, scale, mechanism) = match (request.statistic, input) {
            (DpStatistic::Count, DpInput::Rows(n)) => {
                let r = dp::count(n, request.epsilon).map_err(dp_err)?;
                (serde_json::json!(r.value), r.epsilon, r.scale, r.mechanism)
            }
            (DpStatistic::Sum, DpInput::Numbers(v)) => {
                let r = dp::sum(&v, bounds, request.epsilon).map_err(dp_err)?;
                (serde_json::json!(r.value), r.epsilon, r.scale, r.mechanism)
            }
            (DpStatistic::Mean, DpInput::Numbers(v)) => {
                let r = dp::mean(&v, bounds, request.epsilon).map_err(dp_err)?;
                (serde_json::json!(r.value), r.epsilon, r.scale, r.mechanism)
            }
            (DpStatistic::Histogram, DpInput::Categories(v)) => {
                let r = dp::histogram(&v, &request.categories, request.epsilon).map_err(dp_err)?;
                (serde_json::json!(r.value), r.epsilon, r.scale, r.mechanism)
            }
            _ => return Err(ServiceError::Internal("statistic and input differ".into())),
        };
        // A committed digest: a plain one of a small count could be guessed.
        let nonce = crate::content::new_nonce()?;
        let value_commitment = crate::content::commitment("dp", &nonce, &value.to_string());
        let cost = nano(epsilon);
        let fields = self.read_entry(
            &plan,
            serde_json::json!({
                "format": "json",
                "rows": 1,
                "commitment": value_commitment,
                "transform": {
                    "kind": "differential_privacy",
                    "statistic": request.statistic.as_str(),
                    "column": request.column,
                    "bounds": request.bounds.map(|(a, b)| [decimal(a), decimal(b)]),
                    "categories": request.categories.len(),
                    "mechanism": mechanism,
                    "epsilon": decimal(epsilon),
                    "epsilon_nano": cost,
                    "budget_account": account,
                },
            }),
        );
        let (body, at) = self.log_entry_by(actor, "content.read", fields)?;
        let charge = self
            .store
            .charge_privacy_budget(
                username,
                &account,
                total_nano,
                cost,
                &crate::ledger::new_entry("content.read", &body, &at),
            )
            .await?;
        let (budget, log_index) = match charge {
            citytrust_store::Charge::Spent { budget, log_index } => (budget, log_index),
            // Another release spent the rest meanwhile: this one is discarded unseen.
            citytrust_store::Charge::Refused { budget } => return Err(refusal(budget)),
        };
        self.record_personal_read(&plan, log_index, "dp_statistic")
            .await?;
        Ok(DpRelease {
            dataset: plan.dataset.id.clone(),
            version: plan.version.version,
            statistic: request.statistic,
            column: request.column,
            value,
            categories: request.categories,
            epsilon,
            mechanism,
            scale,
            budget: budget_view(&account, budget),
            log_index,
            nonce,
        })
    }

    /// The caller's privacy budgets on a dataset's agreements they read under.
    pub async fn privacy_budget(&self, actor: &Actor, account: &str) -> Result<BudgetView> {
        let Actor::User { username, .. } = actor else {
            return Err(ServiceError::Unauthenticated);
        };
        let b = self
            .store
            .privacy_budget(username, account)
            .await?
            .unwrap_or(citytrust_store::Budget {
                total_nano: nano(self.settings.dp_budget_epsilon),
                spent_nano: 0,
                releases: 0,
            });
        Ok(budget_view(account, b))
    }
}
