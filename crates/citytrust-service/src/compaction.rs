//! Compaction (issue 26): a stream's kept history, up to the start of the
//! current period (`StreamTerms::compaction`: hour or day, UTC), becomes a
//! version of the stream's dataset, so `POST /api/v1/query` (the table is the
//! stream's id), downloads, quality statements, risk, the privacy levels and
//! erasure work on it unchanged.
//!
//! - One row per entity and instant: `id`, `type`, `observedAt`, then a
//!   column per attribute (its name under the core context), the value of
//!   the instance observed then (a relationship's object; a geometry, a
//!   language map or a compound value as JSON text). Each column's type is
//!   declared from every value it holds (integer, float, boolean, else text).
//! - A personal stream's subject-key column holds, on every row, the subject
//!   of the entity as it is now: the subject index, consent filters and
//!   erasure find the resident in every row.
//! - The rows go through the upload pipeline itself (`finish_upload`):
//!   quality, risk, erased subjects stripped, the subject index, and a
//!   `version.published` log entry naming the owner's organisation.
//! - Each version holds the whole history kept (readings past retention are
//!   gone from the store, so from the next version too), and there is at
//!   most one per period: a version published since the period began means
//!   the period is done.
//! - Retention reaches the versions too, to within one period: a version
//!   whose oldest reading (its `observedAt` minimum) is older than the
//!   retention plus one period is removed — its files deleted, its row marked
//!   with when and why, a `version.removed` entry logged — and a read of it
//!   is answered 410 Gone. By then the next period's version, made from the
//!   history kept, has taken its place (compaction runs first), so a stream
//!   that still has readings always has a version to read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use citytrust_model::Dataset;
use citytrust_model::ngsi::{Context, instance_value, temporal};
use citytrust_query::InputFormat;
use citytrust_query::ingest::OnError;
use serde_json::{Map, Value};

use crate::content::{REMOVED_PAST_RETENTION, UploadOptions, VersionInfo};
use crate::{Result, Service, ServiceError, rfc3339};

/// How many of a stream's entities compaction holds at once.
const ENTITY_PAGE: i64 = 500;

/// The columns every compacted row has, before its attributes.
const FIXED: [&str; 3] = ["id", "type", "observedAt"];

/// What a column's values have been so far.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    integer: bool,
    float: bool,
    boolean: bool,
    text: bool,
}

impl Seen {
    fn observe(&mut self, v: &Value) {
        match v {
            Value::Number(n) if n.is_i64() || n.is_u64() => self.integer = true,
            Value::Number(_) => self.float = true,
            Value::Bool(_) => self.boolean = true,
            Value::Null => {}
            _ => self.text = true,
        }
    }

    fn declared(self) -> &'static str {
        match self {
            Seen {
                text: false,
                boolean: false,
                float: false,
                integer: true,
            } => "integer",
            Seen {
                text: false,
                boolean: false,
                ..
            } if self.float => "float",
            Seen {
                text: false,
                boolean: true,
                float: false,
                integer: false,
            } => "boolean",
            _ => "text",
        }
    }
}

/// A cell as written to the NDJSON body: scalars as text (each column's
/// declared type parses them back), anything nested as JSON text.
fn cell(v: &Value) -> Value {
    match v {
        Value::Null => Value::Null,
        Value::String(s) if s == citytrust_model::ngsi::NGSI_NULL => Value::Null,
        Value::String(s) => Value::String(s.clone()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        nested => Value::String(nested.to_string()),
    }
}

impl Service {
    /// Compact every stream whose period has turned since its last version;
    /// how many versions were published. A stream that fails is named in the
    /// log and the others go on.
    pub async fn compact_streams(&self) -> Result<usize> {
        let mut n = 0;
        for d in self.streams().await? {
            match self.compact_stream(&d).await {
                Ok(Some(_)) => n += 1,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(stream = %d.id, error = %e, "compacting a stream's history failed")
                }
            }
        }
        Ok(n)
    }

    /// Publish the stream's history up to the start of the current period as
    /// a new version, unless one was published since the period began or no
    /// reading is that old.
    pub async fn compact_stream(&self, dataset: &Dataset) -> Result<Option<VersionInfo>> {
        let Some(terms) = dataset.metadata.stream.as_ref() else {
            return Err(crate::streams::not_a_stream(&dataset.id));
        };
        let start = terms.compaction.period_start(self.now());
        let versions = self.store.list_versions(&dataset.id).await?;
        if versions
            .first()
            .is_some_and(|v| v.created_at >= rfc3339(start))
        {
            return Ok(None);
        }
        let before = temporal::format_instant(start);
        let attributes = self.store.history_attributes(&dataset.id, &before).await?;
        if attributes.is_empty() {
            return Ok(None);
        }
        let core = Context::core();
        let subject = dataset
            .metadata
            .personal_terms
            .as_ref()
            .map(|t| t.subject_key.clone());
        // Column names: the fixed ones, then each attribute's term (an IRI
        // no term compacts stays whole), the subject key among them.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for iri in &attributes {
            names.insert(iri.clone(), core.compact(iri));
        }
        let mut columns: BTreeSet<String> = names
            .values()
            .filter(|n| !FIXED.contains(&n.as_str()))
            .cloned()
            .collect();
        if let Some(s) = &subject {
            columns.insert(s.clone());
        }
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let upload = self.owner_upload(dataset)?;
        let mut out = std::io::BufWriter::new(std::fs::File::create_new(upload.body_path())?);
        let mut rows = 0u64;
        // A page of entities at a time: a stream of 100,000 is not held whole.
        let mut pages = self.store.stream_pages(&dataset.id, ENTITY_PAGE);
        while let Some(page) = pages.next().await? {
            for row in page {
                let entity = crate::streams::decode(&row)?;
                let kind = entity
                    .types
                    .iter()
                    .map(|t| core.compact(t))
                    .collect::<Vec<_>>()
                    .join(",");
                let key = subject.as_deref().and_then(|s| {
                    crate::streams::subject_keys(&entity, s).and_then(|k| k.into_iter().next())
                });
                // The entity's readings, one row per instant (a default instance
                // before one with a datasetId).
                let mut at: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
                for h in self
                    .store
                    .entity_history(&row.entity_id, None, None, Some(&before), i64::MAX)
                    .await?
                {
                    let instance: Map<String, Value> = serde_json::from_str(&h.instance)
                        .map_err(|e| ServiceError::Internal(format!("stored reading: {e}")))?;
                    let Some(value) = instance_value(&instance) else {
                        continue;
                    };
                    let Some(name) = names.get(&h.attribute) else {
                        continue;
                    };
                    if FIXED.contains(&name.as_str()) {
                        continue;
                    }
                    let cells = at.entry(h.observed_at.clone()).or_default();
                    if cells.contains_key(name) && instance.contains_key("datasetId") {
                        continue;
                    }
                    seen.entry(name.clone()).or_default().observe(value);
                    cells.insert(name.clone(), cell(value));
                }
                for (instant, mut cells) in at {
                    if let (Some(s), Some(k)) = (&subject, &key) {
                        cells.insert(s.clone(), Value::String(k.clone()));
                        seen.entry(s.clone())
                            .or_default()
                            .observe(&Value::String(k.clone()));
                    }
                    let mut line = Map::new();
                    line.insert("id".into(), Value::String(entity.id.clone()));
                    line.insert("type".into(), Value::String(kind.clone()));
                    line.insert("observedAt".into(), Value::String(instant));
                    for c in &columns {
                        line.insert(c.clone(), cells.remove(c).unwrap_or(Value::Null));
                    }
                    serde_json::to_writer(&mut out, &Value::Object(line))
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    out.write_all(b"\n")?;
                    rows += 1;
                }
            }
        }
        out.flush()?;
        drop(out);
        if rows == 0 {
            return Ok(None);
        }
        let mut declared: BTreeMap<String, String> = columns
            .iter()
            .map(|c| {
                let ty = seen.get(c).copied().unwrap_or_default().declared();
                (c.clone(), ty.to_string())
            })
            .collect();
        declared.insert("id".into(), "text".into());
        declared.insert("type".into(), "text".into());
        declared.insert("observedAt".into(), "timestamp".into());
        let info = self
            .finish_upload(
                upload,
                UploadOptions {
                    format: InputFormat::Ndjson,
                    on_error: OnError::Reject,
                    declared,
                    gzip: false,
                },
                None,
            )
            .await?;
        tracing::info!(stream = %dataset.id, version = info.version, rows, "stream history compacted");
        Ok(Some(info))
    }

    /// Remove every stream version holding a reading older than the
    /// stream's retention plus one compaction period (see the module's
    /// notes); how many were removed. Versions without an `observedAt`
    /// timestamp column (uploaded by hand) are not judged.
    pub async fn remove_expired_versions(&self) -> Result<usize> {
        let mut n = 0;
        for d in self.streams().await? {
            let Some(terms) = d.metadata.stream.as_ref() else {
                continue;
            };
            let cutoff = self.now()
                - time::Duration::days(i64::from(terms.retention_days))
                - terms.compaction.length();
            for stored in self.store.list_versions(&d.id).await? {
                let v = VersionInfo::from_stored(stored)?;
                if v.removed.is_some() {
                    continue;
                }
                let Some(oldest) = oldest_reading(&v) else {
                    continue;
                };
                if oldest >= cutoff {
                    continue;
                }
                let (body, at) = self.log_entry(
                    "version.removed",
                    serde_json::json!({
                        "dataset": d.id,
                        "version": v.version,
                        "reason": REMOVED_PAST_RETENTION,
                        "sha256": v.sha256,
                        "rows": v.rows,
                        "oldest_reading": temporal::format_instant(oldest),
                        "retention_days": terms.retention_days,
                    }),
                )?;
                let removed = self
                    .store
                    .remove_version(
                        &d.id,
                        v.version,
                        &at,
                        REMOVED_PAST_RETENTION,
                        &crate::ledger::new_entry("version.removed", &body, &at),
                    )
                    .await?;
                if removed {
                    // After the commit: a crash before this leaves files the
                    // sweep at start removes (their version is not kept).
                    self.remove_version_files(&d.id, v.version).await?;
                    tracing::info!(stream = %d.id, version = v.version, "version past retention removed");
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// The oldest reading a compacted version holds: its `observedAt` column's
/// minimum, from the quality statement.
fn oldest_reading(v: &VersionInfo) -> Option<time::OffsetDateTime> {
    let min = v
        .quality
        .columns
        .iter()
        .find(|c| {
            c.name == "observedAt" && c.column_type == citytrust_query::ColumnType::Timestamp
        })?
        .min
        .as_deref()?;
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(min, rfc3339) {
        return Some(t);
    }
    // Shown without its zone: the column is kept in UTC.
    let naive = min.get(..19)?.replace(' ', "T");
    time::OffsetDateTime::parse(&format!("{naive}Z"), rfc3339).ok()
}
