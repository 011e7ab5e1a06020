//! Streams (issue 26): catalogue entries whose content is NGSI-LD entities,
//! written by their owner's members or by write-only credentials scoped to
//! one stream, and read through the same decision as a download.
//!
//! - **Writes** (create, append, update, partial update, replace, delete,
//!   and the four batch operations) parse and check everything first, then
//!   apply all of one request in one store transaction: the entities' new
//!   state, every reading as history, and one `stream.written` log entry.
//!   A lost race (another writer changed an entity since it was read, or
//!   created it) re-reads and re-plans, so a batch's answer is exact.
//! - **Reads** (retrieve and query) are decided per stream by
//!   `Service::authorize_read` — purpose, level, agreements in force, the
//!   charter — with the agreement's columns as attribute limits and, for a
//!   personal stream, the subject scope decided now (a withdrawal reaches the
//!   very next answer). The answer is rendered, committed to in a
//!   `stream.read` log entry (SHA-256 of a tag, a nonce and the bytes), and
//!   only then returned. A write credential never reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use citytrust_model::catalogue::{Dataset, PublicationStatus};
use citytrust_model::ngsi::TemporalFragment;
use citytrust_model::ngsi::query::EntityQuery;
use citytrust_model::ngsi::temporal::{self, TemporalQuery, instant};
use citytrust_model::ngsi::{
    Context, Entity, ErrorType, Fragment, MAX_BATCH, Merge, NgsiError, Outcome, Rendering,
};
use citytrust_model::{AccessLevel, Actor, authz};
use citytrust_store::{EntityRow, HistoryRow, NewLogEntry, StreamWrite};
use serde_json::Value;

use crate::accounts::{random_hex, sha256_hex};
use crate::content::{commitment, new_nonce, reader_label};
use crate::read::ReadGrant;
use crate::residents::SubjectScope;
use crate::{Result, Service, ServiceError, rfc3339};

/// How a write credential's token starts (API tokens start `ct_`).
pub const CREDENTIAL_PREFIX: &str = "ctw_";
/// The most readings of one entity a temporal answer reads (the newest).
const HISTORY_CAP: i64 = 100_000;
/// The most linked entities one answer's `join` reaches.
const MAX_LINKED: usize = 5_000;
/// How many times a write is planned again after losing a race.
const RETRIES: usize = 8;

/// A stream's write credential, as its owner sees it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct StreamCredential {
    pub id: String,
    pub dataset_id: String,
    pub label: String,
    pub created_by: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
}

/// A credential just issued: the token is shown this once.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct IssuedStreamCredential {
    #[serde(flatten)]
    pub credential: StreamCredential,
    /// Send as `Authorization: Bearer <token>` to `/ngsi-ld/v1`; kept only as its SHA-256.
    pub token: String,
}

/// Who calls the NGSI-LD API: an actor (anonymous, or signed in), or a
/// stream's write credential (which writes to that stream and nothing else).
#[derive(Debug, Clone)]
pub enum StreamCaller {
    Actor(Actor),
    Credential { id: String, dataset_id: String },
}

/// An answer, rendered and logged: the bytes are what the log committed to.
#[derive(Debug, Clone)]
pub struct NgsiAnswer {
    pub body: Vec<u8>,
    pub sha256: String,
    pub log_index: i64,
    pub nonce: String,
    /// The number of matching entities (for `count=true`).
    pub count: Option<usize>,
    /// Streams that may hold what was asked but that this reader may not
    /// read (their ids; that a stream exists is public).
    pub withheld: Vec<String>,
    /// A temporal answer cut to a page: its `Content-Range` (a 206).
    pub content_range: Option<String>,
    /// A query's matches in all (for its pagination links).
    pub matched: Option<usize>,
}

/// A batch operation's outcome: the ids done, and each one not done with why.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub success: Vec<String>,
    /// Ids created (for upsert's 201).
    pub created: Vec<String>,
    pub errors: Vec<(String, NgsiError)>,
}

/// What a temporal request reads: one entity, or those a query matches.
#[derive(Debug, Clone, Copy)]
pub enum TemporalTarget<'a> {
    One(&'a str),
    Query(&'a EntityQuery),
}

/// The four batch operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp {
    Create,
    /// `replace == false`: merge the attributes (`options=update`).
    Upsert {
        replace: bool,
    },
    Update {
        overwrite: bool,
    },
    /// Merge into existing entities (`urn:ngsi-ld:null` deletes).
    Merge,
    Delete,
}

/// A write, planned: the rows to change, with what it changed.
#[derive(Default)]
struct Plan {
    creates: Vec<(Entity, String)>,
    updates: Vec<(Entity, EntityRow)>,
    deletes: Vec<EntityRow>,
    /// Readings written as such (temporal writes): (entity, stream, attribute, instance).
    readings: Vec<(String, String, String, citytrust_model::ngsi::Instance)>,
}

impl From<StreamCredential> for citytrust_store::StoredStreamCredential {
    fn from(c: StreamCredential) -> Self {
        citytrust_store::StoredStreamCredential {
            id: c.id,
            dataset_id: c.dataset_id,
            label: c.label,
            created_by: c.created_by,
            created_at: c.created_at,
            revoked_at: c.revoked_at,
        }
    }
}

fn credential_view(c: citytrust_store::StoredStreamCredential) -> StreamCredential {
    StreamCredential {
        id: c.id,
        dataset_id: c.dataset_id,
        label: c.label,
        created_by: c.created_by,
        created_at: c.created_at,
        revoked_at: c.revoked_at,
    }
}

pub(crate) fn decode(row: &EntityRow) -> Result<Entity> {
    serde_json::from_str(&row.body)
        .map_err(|e| ServiceError::Internal(format!("stored entity '{}': {e}", row.entity_id)))
}

fn encode(e: &Entity) -> Result<String> {
    serde_json::to_string(e).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// The readings a write adds: every instance it stamped now.
fn readings(e: &Entity, dataset_id: &str, now: &str) -> Vec<HistoryRow> {
    let mut out = Vec::new();
    for (attr, instances) in e.attrs.iter().filter(|(a, _)| e.touched.contains(*a)) {
        for i in instances {
            if i.get("modifiedAt").and_then(Value::as_str) != Some(now) {
                continue;
            }
            // Kept normalised (UTC, microseconds): text order is time order.
            let observed = i
                .get("observedAt")
                .and_then(Value::as_str)
                .and_then(instant)
                .or_else(|| instant(now))
                .unwrap_or_else(|| now.to_string());
            out.push(history_row(&e.id, attr, observed, dataset_id, i));
        }
    }
    // A deletion is kept too: NGSI-LD Null, stamped `deletedAt` (what
    // `timeproperty=deletedAt` reads).
    for (attr, null) in &e.deleted {
        let mut i = null.clone();
        i.insert("deletedAt".into(), Value::String(now.to_string()));
        let observed = instant(now).unwrap_or_else(|| now.to_string());
        out.push(history_row(&e.id, attr, observed, dataset_id, &i));
    }
    out
}

/// A reading as kept: the instance, and beside it its value when that is a
/// finite number (what temporal aggregates sum in SQL) and whether it is a
/// deletion.
fn history_row(
    entity_id: &str,
    attribute: &str,
    observed_at: String,
    dataset_id: &str,
    i: &citytrust_model::ngsi::Instance,
) -> HistoryRow {
    let deleted = i.contains_key("deletedAt");
    HistoryRow {
        entity_id: entity_id.to_string(),
        attribute: attribute.to_string(),
        observed_at,
        dataset_id: dataset_id.to_string(),
        instance: serde_json::to_string(i).unwrap_or_default(),
        num: citytrust_model::ngsi::instance_value(i)
            .and_then(Value::as_f64)
            .filter(|f| f.is_finite() && !deleted),
        deleted,
    }
}

pub(crate) fn not_a_stream(id: &str) -> ServiceError {
    NgsiError::bad(format!("'{id}' is not a stream of this trust")).into()
}

impl Service {
    // ---- credentials ---------------------------------------------------------------------

    /// The stream `dataset_id`, for its owner's members to manage.
    async fn owned_stream(&self, actor: &Actor, dataset_id: &str) -> Result<Dataset> {
        let dataset = self.get_dataset(dataset_id).await?;
        authz::may_write_stream(actor, &dataset.metadata)?;
        if dataset.metadata.stream.is_none() {
            return Err(ServiceError::Forbidden(format!(
                "'{dataset_id}' is not a stream: make it one (its entry's `stream`) first"
            )));
        }
        Ok(dataset)
    }

    /// Issue a write-only credential for one stream (its owner's members).
    pub async fn issue_stream_credential(
        &self,
        actor: &Actor,
        dataset_id: &str,
        label: &str,
    ) -> Result<IssuedStreamCredential> {
        let dataset = self.owned_stream(actor, dataset_id).await?;
        let label = label.trim();
        let mut e = citytrust_model::ValidationErrors::default();
        e.required_text("label", label, 200);
        e.into_result()?;
        let token = format!("{CREDENTIAL_PREFIX}{}", random_hex::<32>()?);
        let credential = StreamCredential {
            id: format!("swc-{}", random_hex::<8>()?),
            dataset_id: dataset.id.clone(),
            label: label.to_string(),
            created_by: actor.username().unwrap_or_default().to_string(),
            created_at: rfc3339(self.now()),
            revoked_at: None,
        };
        let (body, at) = self.log_entry(
            "stream.credential_issued",
            serde_json::json!({
                "dataset": dataset.id,
                "credential": credential.id,
                "by": format!("organization:{}", dataset.metadata.owner_organization_id),
            }),
        )?;
        self.store
            .insert_stream_credential(
                &credential.clone().into(),
                &sha256_hex(&token),
                &NewLogEntry {
                    kind: "stream.credential_issued",
                    body: &body,
                    at: &at,
                },
            )
            .await?;
        Ok(IssuedStreamCredential { credential, token })
    }

    pub async fn stream_credentials(
        &self,
        actor: &Actor,
        dataset_id: &str,
    ) -> Result<Vec<StreamCredential>> {
        self.owned_stream(actor, dataset_id).await?;
        Ok(self
            .store
            .list_stream_credentials(dataset_id)
            .await?
            .into_iter()
            .map(credential_view)
            .collect())
    }

    pub async fn revoke_stream_credential(
        &self,
        actor: &Actor,
        dataset_id: &str,
        credential_id: &str,
    ) -> Result<()> {
        let dataset = self.owned_stream(actor, dataset_id).await?;
        let now = rfc3339(self.now());
        let (body, at) = self.log_entry(
            "stream.credential_revoked",
            serde_json::json!({
                "dataset": dataset.id,
                "credential": credential_id.chars().take(40).collect::<String>(),
                "by": format!("organization:{}", dataset.metadata.owner_organization_id),
            }),
        )?;
        let done = self
            .store
            .revoke_stream_credential(
                dataset_id,
                credential_id,
                &now,
                &NewLogEntry {
                    kind: "stream.credential_revoked",
                    body: &body,
                    at: &at,
                },
            )
            .await?;
        if !done {
            return Err(ServiceError::NotFound(format!(
                "a credential '{credential_id}' in force on stream '{dataset_id}'"
            )));
        }
        Ok(())
    }

    /// The caller a credential token stands for; an unknown or revoked one is refused.
    pub async fn stream_caller_for_token(&self, token: &str) -> Result<StreamCaller> {
        match self
            .store
            .stream_credential_by_hash(&sha256_hex(token))
            .await?
        {
            Some(c) if c.revoked_at.is_none() => Ok(StreamCaller::Credential {
                id: c.id,
                dataset_id: c.dataset_id,
            }),
            _ => Err(ServiceError::ExpiredCredentials),
        }
    }

    // ---- writing -------------------------------------------------------------------------

    /// Every stream of the trust.
    pub async fn streams(&self) -> Result<Vec<Dataset>> {
        Ok(self
            .store
            .list_datasets()
            .await?
            .into_iter()
            .filter(|d| d.metadata.stream.is_some())
            .collect())
    }

    /// Whether `caller` may write to `dataset` (a stream not withdrawn).
    fn check_writer(&self, caller: &StreamCaller, dataset: &Dataset) -> Result<()> {
        if dataset.metadata.stream.is_none() {
            return Err(not_a_stream(&dataset.id));
        }
        match caller {
            StreamCaller::Credential { dataset_id, .. } if *dataset_id == dataset.id => {}
            StreamCaller::Credential { .. } => {
                return Err(ServiceError::Forbidden(format!(
                    "this credential writes to its own stream only, not to '{}'",
                    dataset.id
                )));
            }
            StreamCaller::Actor(actor) => authz::may_write_stream(actor, &dataset.metadata)?,
        }
        if matches!(
            dataset.metadata.publication_status,
            PublicationStatus::Withdrawn | PublicationStatus::Archived
        ) {
            return Err(ServiceError::Forbidden(format!(
                "stream '{}' is {}: it takes no more readings",
                dataset.id,
                match dataset.metadata.publication_status {
                    PublicationStatus::Withdrawn => "withdrawn",
                    _ => "archived",
                }
            )));
        }
        Ok(())
    }

    /// The stream a new entity goes to: the credential's, the one named, or
    /// the one stream of the writer's organisations that holds its types.
    fn stream_for_new(
        &self,
        caller: &StreamCaller,
        named: Option<&str>,
        types: &[String],
        streams: &[Dataset],
    ) -> std::result::Result<Dataset, NgsiError> {
        let find = |id: &str| streams.iter().find(|d| d.id == id).cloned();
        let pick = match (caller, named) {
            (StreamCaller::Credential { dataset_id, .. }, _) => find(dataset_id),
            (_, Some(id)) => Some(find(id).ok_or_else(|| {
                NgsiError::bad(format!(
                    "'{id}' (CityTrust-Stream) is not a stream of this trust"
                ))
            })?),
            (StreamCaller::Actor(actor), None) => {
                let mine: Vec<&Dataset> = streams
                    .iter()
                    .filter(|d| authz::may_write_stream(actor, &d.metadata).is_ok())
                    .filter(|d| d.metadata.stream.as_ref().is_some_and(|s| s.holds(types)))
                    .collect();
                match mine.as_slice() {
                    [one] => Some((*one).clone()),
                    [] => None,
                    many => {
                        return Err(NgsiError::bad(format!(
                            "several of your streams hold this type ({}): name one in the \
                             CityTrust-Stream header",
                            many.iter()
                                .map(|d| d.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
        };
        let d = pick.ok_or_else(|| {
            NgsiError::bad(
                "no stream you write to holds entities of this type (a stream declares its \
                 entity types in its catalogue entry)",
            )
        })?;
        if !d.metadata.stream.as_ref().is_some_and(|s| s.holds(types)) {
            return Err(NgsiError::bad(format!(
                "stream '{}' does not hold entities of type {}",
                d.id,
                types.join(", ")
            )));
        }
        Ok(d)
    }

    /// Apply a plan as one transaction with its log entry.
    async fn apply_plan(&self, caller: &StreamCaller, plan: &Plan) -> Result<()> {
        let started = std::time::Instant::now();
        let now = rfc3339(self.now());
        let mut write = StreamWrite::default();
        let mut per_stream: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (e, dataset_id) in &plan.creates {
            let h = readings(e, dataset_id, &e.modified_at);
            let s = per_stream.entry(dataset_id.clone()).or_default();
            s.0 += 1;
            s.1 += h.len() as u64;
            write.history.extend(h);
            write.creates.push(EntityRow {
                entity_id: e.id.clone(),
                dataset_id: dataset_id.clone(),
                revision: 1,
                modified_at: e.modified_at.clone(),
                body: encode(e)?,
            });
        }
        for (e, row) in &plan.updates {
            // The instances stamped by this change carry its time.
            let h = readings(e, &row.dataset_id, &e.modified_at);
            let s = per_stream.entry(row.dataset_id.clone()).or_default();
            s.0 += 1;
            s.1 += h.len() as u64;
            write.history.extend(h);
            write.updates.push(EntityRow {
                body: encode(e)?,
                modified_at: e.modified_at.clone(),
                ..row.clone()
            });
        }
        for row in &plan.deletes {
            per_stream.entry(row.dataset_id.clone()).or_default().0 += 1;
            write.deletes.push((row.entity_id.clone(), row.revision));
            // An entity deleted takes its history with it.
            write.history_deletes.push(row.entity_id.clone());
        }
        for (entity, dataset, attr, i) in &plan.readings {
            per_stream.entry(dataset.clone()).or_default().1 += 1;
            let observed = i
                .get("observedAt")
                .and_then(Value::as_str)
                .and_then(instant)
                .or_else(|| instant(&now))
                .unwrap_or_else(|| now.clone());
            let row = history_row(entity, attr, observed, dataset, i);
            // A reading at an instant held (same attribute and datasetId) replaces it.
            let dataset_of = |inst: &str| {
                serde_json::from_str::<Value>(inst).ok().and_then(|v| {
                    v.get("datasetId")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
            };
            let mine = i
                .get("datasetId")
                .and_then(Value::as_str)
                .map(str::to_string);
            for held in self
                .store
                .readings_at(entity, attr, &row.observed_at)
                .await?
            {
                if dataset_of(&held.instance) == mine {
                    write.history_replaced.push(held);
                }
            }
            write.history.push(row);
        }
        if per_stream.is_empty() {
            return Ok(());
        }
        write.streams = per_stream.keys().cloned().collect();
        write.subjects = self.subjects_written(plan, &write.streams).await?;
        let mut digest = sha2::Sha256::default();
        for r in write.creates.iter().chain(&write.updates) {
            sha2::Digest::update(&mut digest, r.body.as_bytes());
            sha2::Digest::update(&mut digest, b"\n");
        }
        let by = match caller {
            StreamCaller::Credential { id, .. } => format!("credential:{id}"),
            // Only the owner's members write: the entry names the owner.
            StreamCaller::Actor(_) => match self.store.get_dataset(&write.streams[0]).await? {
                Some(d) => format!("organization:{}", d.metadata.owner_organization_id),
                None => "individual".into(),
            },
        };
        let (body, at) = self.log_entry(
            "stream.written",
            serde_json::json!({
                "streams": per_stream.iter().map(|(d, (entities, readings))| serde_json::json!({
                    "dataset": d, "entities": entities, "readings": readings,
                })).collect::<Vec<_>>(),
                "deleted": write.deletes.len(),
                "sha256": hex::encode(sha2::Digest::finalize(digest)),
                "by": by,
            }),
        )?;
        write.entry = Some(NewLogEntry {
            kind: "stream.written",
            body: &body,
            at: &at,
        });
        // What the change owes subscribers goes in with it (the states
        // before the change are decoded only when someone wants them).
        let planned = started.elapsed();
        let active = self.active_subscriptions().await?;
        if !active.is_empty() {
            write.notifications = self.owed_to(&active, plan).await?;
        }
        let matched = started.elapsed();
        write.now = now.clone();
        let owes = write.notifications.len();
        let rows = write.history.len();
        self.store.write_stream(write).await?;
        tracing::debug!(
            readings = rows,
            owed = owes,
            planned_ms = planned.as_secs_f64() * 1e3,
            matched_ms = matched.as_secs_f64() * 1e3,
            committed_ms = started.elapsed().as_secs_f64() * 1e3,
            "stream write"
        );
        if owes > 0 {
            self.wake_notifier();
        }
        Ok(())
    }

    /// The notifications a plan's changes owe the active subscriptions.
    async fn owed_to(
        &self,
        active: &crate::subscriptions::ActiveSet,
        plan: &Plan,
    ) -> Result<Vec<(String, String, String)>> {
        // The states before the change matter only to `showChanges`.
        let before: Vec<Entity> = if active.show_changes() {
            plan.updates
                .iter()
                .map(|(_, row)| decode(row))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let gone: Vec<Entity> = plan.deletes.iter().map(decode).collect::<Result<_>>()?;
        use crate::subscriptions::Change;
        let changes: Vec<(&Entity, &str, Change, Option<&Entity>)> =
            plan.creates
                .iter()
                .map(|(e, d)| (e, d.as_str(), Change::Created, None))
                .chain(plan.updates.iter().enumerate().map(|(i, (e, row))| {
                    (e, row.dataset_id.as_str(), Change::Updated, before.get(i))
                }))
                .chain(
                    plan.deletes
                        .iter()
                        .zip(&gone)
                        .map(|(row, e)| (e, row.dataset_id.as_str(), Change::Deleted, None)),
                )
                .collect();
        self.owed_by(active, &changes).await
    }

    /// Delete every stream's readings observed longer ago than its
    /// retention, a bounded batch at a time, each batch logged
    /// (`stream.history_expired`: the stream, how many readings, the instant
    /// they were all before); returns how many went. The latest values stay:
    /// they are the stream's present state, not its history.
    pub async fn expire_stream_history(&self) -> Result<u64> {
        const BATCH: i64 = 50_000;
        let mut total = 0;
        for d in self.streams().await? {
            let Some(terms) = d.metadata.stream.as_ref() else {
                continue;
            };
            let cutoff = self.now() - time::Duration::days(i64::from(terms.retention_days));
            let before = temporal::format_instant(cutoff);
            loop {
                let n = self
                    .store
                    .expire_history(&d.id, &before, BATCH, |n, upto| {
                        self.log_entry(
                            "stream.history_expired",
                            serde_json::json!({
                                "dataset": d.id,
                                "readings": n,
                                "observed_before": upto,
                                "retention_days": terms.retention_days,
                            }),
                        )
                        .map_err(|e| citytrust_store::StoreError::Corrupt(e.to_string()))
                    })
                    .await?;
                total += n;
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        Ok(total)
    }

    /// The subjects of personal streams that a plan's new entity states
    /// hold. An erased subject is not taken again: the write is refused,
    /// naming the entity, and nothing of it is kept.
    async fn subjects_written(
        &self,
        plan: &Plan,
        streams: &[String],
    ) -> Result<Vec<(String, String)>> {
        let mut subjects = Vec::new();
        for id in streams {
            let Some(dataset) = self.store.get_dataset(id).await? else {
                continue;
            };
            let Some(terms) = dataset.metadata.personal_terms.as_ref() else {
                continue;
            };
            let erased = self.store.erased_keys(id).await?;
            let states = plan
                .creates
                .iter()
                .filter(|(_, d)| d == id)
                .map(|(e, _)| e)
                .chain(
                    plan.updates
                        .iter()
                        .filter(|(_, r)| &r.dataset_id == id)
                        .map(|(e, _)| e),
                );
            for e in states {
                for key in subject_keys(e, &terms.subject_key).unwrap_or_default() {
                    if erased.contains(&key) {
                        return Err(NgsiError::new(
                            ErrorType::OperationNotSupported,
                            format!(
                                "entity '{}' holds a subject that was erased from stream '{id}' at \
                                 their request ('{}'): their data is not taken again",
                                e.id, terms.subject_key
                            ),
                        )
                        .into());
                    }
                    subjects.push((id.clone(), key));
                }
            }
        }
        subjects.sort();
        subjects.dedup();
        Ok(subjects)
    }

    /// Run `plan` against the entities `ids` as stored now, and apply it;
    /// plan again when another writer got there first.
    async fn write_entities<T>(
        &self,
        caller: &StreamCaller,
        ids: &[String],
        plan: impl FnMut(&mut HashMap<String, (Entity, EntityRow)>, &mut Plan) -> Result<T>,
    ) -> Result<T> {
        self.write_entities_read(caller, ids, None, plan).await
    }

    /// [`Service::write_entities`], the first plan made against `read`
    /// (the entities `ids` as the caller just read them; a lost race reads
    /// them again).
    async fn write_entities_read<T>(
        &self,
        caller: &StreamCaller,
        ids: &[String],
        mut read: Option<Vec<EntityRow>>,
        mut plan: impl FnMut(&mut HashMap<String, (Entity, EntityRow)>, &mut Plan) -> Result<T>,
    ) -> Result<T> {
        for attempt in 0.. {
            let mut loaded = HashMap::new();
            let rows = match read.take() {
                Some(rows) => rows,
                None => self.store.get_entities(ids).await?,
            };
            for row in rows {
                loaded.insert(row.entity_id.clone(), (decode(&row)?, row));
            }
            let mut p = Plan::default();
            let answer = plan(&mut loaded, &mut p)?;
            match self.apply_plan(caller, &p).await {
                Ok(()) => return Ok(answer),
                Err(ServiceError::Stale(_) | ServiceError::Conflict(_)) if attempt < RETRIES => {
                    continue;
                }
                Err(ServiceError::Conflict(what)) => {
                    return Err(NgsiError::new(
                        ErrorType::AlreadyExists,
                        format!("{what} exists already"),
                    )
                    .into());
                }
                Err(e) => return Err(e),
            }
        }
        Err(ServiceError::Internal("unreachable".into()))
    }

    /// The datasets of the streams named, by id.
    async fn stream_datasets(&self, rows: &[EntityRow]) -> Result<HashMap<String, Dataset>> {
        let mut out = HashMap::new();
        for row in rows {
            let id = &row.dataset_id;
            if !out.contains_key(id)
                && let Some(d) = self.store.get_dataset(id).await?
            {
                out.insert(id.clone(), d);
            }
        }
        Ok(out)
    }

    /// `POST /entities`: create one entity.
    pub async fn ngsi_create(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        body: &Value,
        stream: Option<&str>,
    ) -> Result<String> {
        let fragment = Fragment::parse(ctx, body, true)?;
        let streams = self.streams().await?;
        let dataset = self.stream_for_new(caller, stream, &fragment.types, &streams)?;
        self.check_writer(caller, &dataset)?;
        let now = temporal::format_millis(self.now());
        let entity = Entity::create(fragment, &now)?;
        let id = entity.id.clone();
        self.write_entities(caller, std::slice::from_ref(&id), |loaded, plan| {
            if loaded.contains_key(&id) {
                return Err(NgsiError::new(
                    ErrorType::AlreadyExists,
                    format!("entity '{id}' exists already"),
                )
                .into());
            }
            plan.creates.push((entity.clone(), dataset.id.clone()));
            Ok(())
        })
        .await?;
        Ok(id)
    }

    /// The entity `id` for a write by `caller`, with its row.
    fn writable<'a>(
        &self,
        caller: &StreamCaller,
        loaded: &'a HashMap<String, (Entity, EntityRow)>,
        datasets: &HashMap<String, Dataset>,
        id: &str,
    ) -> Result<&'a (Entity, EntityRow)> {
        let found = loaded
            .get(id)
            .ok_or_else(|| NgsiError::not_found(format!("no entity '{id}'")))?;
        let dataset = datasets
            .get(&found.1.dataset_id)
            .ok_or_else(|| not_a_stream(&found.1.dataset_id))?;
        self.check_writer(caller, dataset)?;
        Ok(found)
    }

    /// One entity changed by `change` (append, update, patch, replace,
    /// delete an attribute), all or nothing.
    async fn change_entity<T>(
        &self,
        caller: &StreamCaller,
        id: &str,
        mut change: impl FnMut(&mut Entity, &str) -> Result<T>,
    ) -> Result<T> {
        citytrust_model::ngsi::check_uri("the entity id", id)?;
        let ids = [id.to_string()];
        let rows = self.store.get_entities(&ids).await?;
        let datasets = self.stream_datasets(&rows).await?;
        let now = temporal::format_millis(self.now());
        self.write_entities(caller, &ids, |loaded, plan| {
            let (entity, row) = self.writable(caller, loaded, &datasets, id)?;
            let mut entity = entity.clone();
            let answer = change(&mut entity, &now)?;
            hold_types(&datasets, row, &entity)?;
            plan.updates.push((entity, row.clone()));
            Ok(answer)
        })
        .await
    }

    /// `POST /entities/{id}/attrs` (append; `overwrite == false`: `noOverwrite`).
    pub async fn ngsi_append(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
        overwrite: bool,
    ) -> Result<Outcome> {
        let fragment = Fragment::parse(ctx, body, false)?;
        check_fragment_id(&fragment, id)?;
        self.change_entity(caller, id, |e, now| {
            Ok(e.merge(fragment.clone(), Merge::Append { overwrite }, now))
        })
        .await
    }

    /// `PATCH /entities/{id}` (merge): attributes added or replaced, and
    /// those given as `urn:ngsi-ld:null` deleted, in one change.
    pub async fn ngsi_merge(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        let (kept, dropped) = split_nulls(body)?;
        // Checked as given first (a bad body is refused before any entity is read).
        let fragment = Fragment::parse(ctx, &Value::Object(without_nested_nulls(&kept)), false)?;
        check_fragment_id(&fragment, id)?;
        self.change_entity(caller, id, |e, now| {
            let fragment = Fragment::parse(ctx, &Value::Object(e.merge_body(ctx, &kept)), false)?;
            e.merge(fragment, Merge::Append { overwrite: true }, now);
            for (name, dataset) in &dropped {
                let iri = ctx.expand(name);
                if e.attrs.contains_key(&iri) {
                    e.delete_attribute(&iri, name, dataset.as_deref(), false, now)?;
                }
            }
            Ok(())
        })
        .await
    }

    /// `PATCH /entities/{id}/attrs`: attributes updated (or added), those
    /// given as NGSI-LD Null deleted.
    pub async fn ngsi_update(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<Outcome> {
        let (kept, dropped) = split_nulls(body)?;
        let fragment = Fragment::parse(ctx, &Value::Object(kept), false)?;
        check_fragment_id(&fragment, id)?;
        if fragment.attrs.is_empty()
            && dropped.is_empty()
            && fragment.scope.is_none()
            && fragment.types.is_empty()
        {
            return Err(NgsiError::bad("the fragment names no attribute").into());
        }
        self.change_entity(caller, id, |e, now| {
            // Attributes are updated or added (as the conformance suite has
            // it); a scope replaces one the entity has, and is not added.
            let mut f = fragment.clone();
            let scope = f.scope.take();
            let mut o = e.merge(f, Merge::Append { overwrite: true }, now);
            match scope {
                Some(s) if e.scope.is_some() => {
                    e.scope = Some(s);
                    e.modified_at = now.to_string();
                    o.updated.push("scope".into());
                }
                Some(_) => o.not_updated.push(citytrust_model::ngsi::NotUpdated {
                    attribute: "scope".into(),
                    reason: "the entity has no scope to update (append it instead)".into(),
                }),
                None => {}
            }
            for (name, dataset) in &dropped {
                let iri = ctx.expand(name);
                match e.delete_attribute(&iri, name, dataset.as_deref(), false, now) {
                    Ok(()) => o.updated.push(iri),
                    Err(why) => o.not_updated.push(citytrust_model::ngsi::NotUpdated {
                        attribute: iri,
                        reason: why.detail,
                    }),
                }
            }
            Ok(o)
        })
        .await
    }

    /// `PATCH /entities/{id}/attrs/{attr}` (partial update of one attribute).
    pub async fn ngsi_patch_attribute(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        attr: &str,
        body: &Value,
    ) -> Result<()> {
        citytrust_model::ngsi::check_attribute_name(attr)?;
        if attr == "scope" {
            return Err(NgsiError::bad(
                "scope is not an attribute: change it with PATCH /entities/{id}/attrs or a merge",
            )
            .into());
        }
        let iri = ctx.expand(attr);
        if is_ngsi_null(body) {
            let dataset = body.get("datasetId").and_then(Value::as_str);
            return self
                .change_entity(caller, id, |e, now| {
                    Ok(e.delete_attribute(&iri, attr, dataset, false, now)?)
                })
                .await;
        }
        self.change_entity(caller, id, |e, now| {
            Ok(e.patch_attribute(&iri, attr, body, ctx, now)?)
        })
        .await
    }

    /// `PUT /entities/{id}/attrs/{attr}` (replace one attribute).
    pub async fn ngsi_replace_attribute(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        attr: &str,
        body: &Value,
    ) -> Result<()> {
        citytrust_model::ngsi::check_attribute_name(attr)?;
        let mut wrapped = serde_json::Map::new();
        // The body's own `@context` is the request's, not the attribute's.
        let mut body = body.clone();
        if let Some(m) = body.as_object_mut() {
            m.remove("@context");
        }
        wrapped.insert(attr.to_string(), body);
        let fragment = Fragment::parse(ctx, &Value::Object(wrapped), false)?;
        self.change_entity(caller, id, |e, now| {
            let o = e.merge(fragment.clone(), Merge::Update, now);
            match o.not_updated.first() {
                Some(n) => Err(NgsiError::not_found(format!(
                    "attribute '{}': {}",
                    n.attribute, n.reason
                ))
                .into()),
                None => Ok(()),
            }
        })
        .await
    }

    /// `DELETE /entities/{id}/attrs/{attr}`.
    pub async fn ngsi_delete_attribute(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        attr: &str,
        dataset_id: Option<&str>,
        all: bool,
    ) -> Result<()> {
        citytrust_model::ngsi::check_attribute_name(attr)?;
        let iri = ctx.expand(attr);
        self.change_entity(caller, id, |e, now| {
            if attr == "scope" {
                // Scope is the entity's own member, deleted whole.
                if e.scope.take().is_none() {
                    return Err(NgsiError::not_found(format!("entity '{id}' has no scope")).into());
                }
                e.modified_at = now.to_string();
                return Ok(());
            }
            Ok(e.delete_attribute(&iri, attr, dataset_id, all, now)?)
        })
        .await
    }

    /// `PUT /entities/{id}`: replace the entity's attributes.
    pub async fn ngsi_replace(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        let fragment = Fragment::parse(ctx, body, false)?;
        check_fragment_id(&fragment, id)?;
        self.change_entity(caller, id, |e, now| {
            e.replace(fragment.clone(), now);
            Ok(())
        })
        .await
    }

    /// `DELETE /entities/{id}`.
    pub async fn ngsi_delete(&self, caller: &StreamCaller, id: &str) -> Result<()> {
        citytrust_model::ngsi::check_uri("the entity id", id)?;
        let ids = [id.to_string()];
        let rows = self.store.get_entities(&ids).await?;
        let datasets = self.stream_datasets(&rows).await?;
        self.write_entities(caller, &ids, |loaded, plan| {
            let (_, row) = self.writable(caller, loaded, &datasets, id)?;
            plan.deletes.push(row.clone());
            Ok(())
        })
        .await
    }

    /// `POST /temporal/entities`: create an entity from its temporal
    /// representation, or add the instances to one that exists. Every
    /// instance is kept as a reading; each attribute's latest becomes its
    /// value. `true`: created.
    pub async fn ngsi_temporal_upsert(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        body: &Value,
        stream: Option<&str>,
    ) -> Result<bool> {
        let f = TemporalFragment::parse(ctx, body, true)?;
        let id =
            f.id.clone()
                .ok_or_else(|| NgsiError::bad("an entity has an id"))?;
        let ids = [id.clone()];
        let rows = self.store.get_entities(&ids).await?;
        let datasets = self.stream_datasets(&rows).await?;
        let streams = if rows.is_empty() {
            self.streams().await?
        } else {
            Vec::new()
        };
        let now = temporal::format_millis(self.now());
        self.write_entities(caller, &ids, |loaded, plan| match loaded.get(&id) {
            Some(_) => {
                let (entity, row) = self.writable(caller, loaded, &datasets, &id)?;
                let mut entity = entity.clone();
                for (attr, i) in entity.absorb(f.clone(), &now) {
                    plan.readings
                        .push((id.clone(), row.dataset_id.clone(), attr, i));
                }
                entity.touched.clear();
                hold_types(&datasets, row, &entity)?;
                plan.updates.push((entity, row.clone()));
                Ok(false)
            }
            None => {
                let d = self.stream_for_new(caller, stream, &f.types, &streams)?;
                self.check_writer(caller, &d)?;
                let mut entity = Entity::create(
                    citytrust_model::ngsi::Fragment {
                        id: Some(id.clone()),
                        types: f.types.clone(),
                        scope: None,
                        attrs: Vec::new(),
                    },
                    &now,
                )?;
                for (attr, i) in entity.absorb(f.clone(), &now) {
                    plan.readings.push((id.clone(), d.id.clone(), attr, i));
                }
                entity.touched.clear();
                plan.creates.push((entity, d.id.clone()));
                Ok(true)
            }
        })
        .await
    }

    /// `POST /temporal/entities/{id}/attrs`: add instances to an entity's history.
    pub async fn ngsi_temporal_append(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        body: &Value,
    ) -> Result<()> {
        citytrust_model::ngsi::check_uri("the entity id", id)?;
        let f = TemporalFragment::parse(ctx, body, false)?;
        let ids = [id.to_string()];
        let rows = self.store.get_entities(&ids).await?;
        let datasets = self.stream_datasets(&rows).await?;
        let now = temporal::format_millis(self.now());
        self.write_entities(caller, &ids, |loaded, plan| {
            let (entity, row) = self.writable(caller, loaded, &datasets, id)?;
            let mut entity = entity.clone();
            for (attr, i) in entity.absorb(f.clone(), &now) {
                plan.readings
                    .push((id.to_string(), row.dataset_id.clone(), attr, i));
            }
            entity.touched.clear();
            hold_types(&datasets, row, &entity)?;
            plan.updates.push((entity, row.clone()));
            Ok(())
        })
        .await
    }

    /// A `type` selector on a write to one entity: the writer may write it,
    /// and it has one of the types (else 404, nothing changed).
    pub async fn ngsi_type_gate(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        types: &str,
    ) -> Result<()> {
        citytrust_model::ngsi::check_uri("the entity id", id)?;
        let wanted: Vec<String> = types
            .split([',', '|'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|t| ctx.expand(t))
            .collect();
        let rows = self.store.get_entities(&[id.to_string()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| NgsiError::not_found(format!("no entity '{id}'")))?;
        let datasets = self.stream_datasets(&rows).await?;
        let d = datasets
            .get(&row.dataset_id)
            .ok_or_else(|| not_a_stream(&row.dataset_id))?;
        self.check_writer(caller, d)?;
        if !decode(row)?.types.iter().any(|t| wanted.contains(t)) {
            return Err(NgsiError::not_found(format!(
                "entity '{id}' is of none of the types {types}"
            ))
            .into());
        }
        Ok(())
    }

    /// `POST /entityOperations/{create,upsert,update,merge,delete}`: each
    /// entity checked on its own; those that pass are applied together, in
    /// the order given (an id given twice: the later entry is applied to
    /// what the earlier made). `contexts` holds each entry's context.
    pub async fn ngsi_batch(
        &self,
        caller: &StreamCaller,
        contexts: &[std::result::Result<Arc<Context>, NgsiError>],
        op: BatchOp,
        body: &Value,
        stream: Option<&str>,
    ) -> Result<BatchOutcome> {
        let items = body
            .as_array()
            .ok_or_else(|| NgsiError::bad("a batch operation's body is a JSON array"))?;
        if items.is_empty() {
            return Err(NgsiError::bad("the batch is empty").into());
        }
        if items.len() > MAX_BATCH {
            return Err(NgsiError::bad(format!(
                "a batch holds at most {MAX_BATCH} entities; this one has {}",
                items.len()
            ))
            .into());
        }
        if let Some(i) = items.iter().position(Value::is_null) {
            return Err(NgsiError::bad(format!(
                "entry {i} of the batch is null: a batch lists entities{}",
                if op == BatchOp::Delete { " ids" } else { "" }
            ))
            .into());
        }
        let mut outcome = BatchOutcome::default();
        // Parse first: a bad entity is an error of its own, never the batch's.
        // Each entry: its id, its fragment, and the attributes it deletes (merge).
        type Deleted = Vec<(String, String, Option<String>)>;
        let mut parsed: Vec<(String, Option<Fragment>, Deleted)> = Vec::new();
        // A merge's entries as given (laid over the entity held when applied), by id.
        let mut merge_bodies: HashMap<String, (Arc<Context>, serde_json::Map<String, Value>)> =
            HashMap::new();
        let core = Context::shared_core();
        for (i, item) in items.iter().enumerate() {
            if op == BatchOp::Delete {
                match item.as_str() {
                    Some(id) => match citytrust_model::ngsi::check_uri("the entity id", id) {
                        Ok(()) => parsed.push((id.to_string(), None, Vec::new())),
                        Err(e) => outcome.errors.push((id.to_string(), e)),
                    },
                    None => outcome.errors.push((
                        item.to_string(),
                        NgsiError::bad("a batch delete lists entity ids"),
                    )),
                }
                continue;
            }
            let id = item
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ctx: &Arc<Context> = match contexts.get(i) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    outcome.errors.push((id, e.clone()));
                    continue;
                }
                None => &core,
            };
            let (item, deleted) = if op == BatchOp::Merge && item.is_object() {
                match split_nulls(item) {
                    Ok((kept, deleted)) => (
                        {
                            let checked = Value::Object(without_nested_nulls(&kept));
                            merge_bodies.insert(id.clone(), (ctx.clone(), kept));
                            checked
                        },
                        deleted
                            .into_iter()
                            .map(|(n, d)| (ctx.expand(&n), n, d))
                            .collect(),
                    ),
                    Err(e) => {
                        outcome.errors.push((id, ngsi_error_of(e)?));
                        continue;
                    }
                }
            } else {
                (item.clone(), Vec::new())
            };
            match Fragment::parse(ctx, &item, true) {
                Ok(f) => parsed.push((id, Some(f), deleted)),
                Err(e) => outcome.errors.push((id, e)),
            }
        }
        let mut ids: Vec<String> = parsed.iter().map(|(id, _, _)| id.clone()).collect();
        ids.sort();
        // The ids the batch names more than once.
        let repeated: std::collections::HashSet<String> = ids
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0].clone())
            .collect();
        ids.dedup();
        let rows = self.store.get_entities(&ids).await?;
        let datasets = self.stream_datasets(&rows).await?;
        let streams = match op {
            BatchOp::Create | BatchOp::Upsert { .. } => self.streams().await?,
            _ => Vec::new(),
        };
        let now = temporal::format_millis(self.now());
        let errors_before = outcome.errors.clone();
        let (success, created, errors) = self
            .write_entities_read(caller, &ids, Some(rows), |loaded, plan| {
                let mut success: Vec<String> = Vec::new();
                let mut created = Vec::new();
                let mut errors: Vec<(String, NgsiError)> = Vec::new();
                // The state each id has reached in this batch: the entity
                // (None: deleted) and the stream a new one goes to.
                let mut work: BTreeMap<String, (Option<Entity>, Option<String>)> = BTreeMap::new();
                for (id, fragment, deleted) in &parsed {
                    let result: Result<bool> = (|| {
                        let existing: Option<Entity> = match work.get(id) {
                            Some((e, _)) => e.clone(),
                            None => match loaded.get(id) {
                                Some(_) => {
                                    self.writable(caller, loaded, &datasets, id)?;
                                    // An id met once in the batch is read once:
                                    // its entity is taken, not copied (only the
                                    // row is used after).
                                    match (repeated.contains(id), loaded.get_mut(id)) {
                                        (false, Some((e, _))) => Some(std::mem::take(e)),
                                        (_, found) => found.map(|(e, _)| e.clone()),
                                    }
                                }
                                None => None,
                            },
                        };
                        let stream_of =
                            |work: &BTreeMap<String, (Option<Entity>, Option<String>)>| {
                                work.get(id).and_then(|(_, d)| d.clone())
                            };
                        match (op, existing, fragment) {
                            (BatchOp::Delete, Some(_), _) => {
                                let d = stream_of(&work);
                                work.insert(id.clone(), (None, d));
                                Ok(false)
                            }
                            (
                                BatchOp::Delete | BatchOp::Update { .. } | BatchOp::Merge,
                                None,
                                _,
                            ) => Err(NgsiError::not_found(format!("no entity '{id}'")).into()),
                            (BatchOp::Create, Some(_), _) => Err(NgsiError::new(
                                ErrorType::AlreadyExists,
                                format!("entity '{id}' exists already"),
                            )
                            .into()),
                            (BatchOp::Create | BatchOp::Upsert { .. }, None, Some(f)) => {
                                let d = match (loaded.get(id), stream_of(&work)) {
                                    (Some((_, row)), _) => row.dataset_id.clone(),
                                    (None, Some(d)) => d,
                                    (None, None) => {
                                        let d = self
                                            .stream_for_new(caller, stream, &f.types, &streams)?;
                                        self.check_writer(caller, &d)?;
                                        d.id
                                    }
                                };
                                work.insert(
                                    id.clone(),
                                    (Some(Entity::create(f.clone(), &now)?), Some(d)),
                                );
                                Ok(loaded.get(id).is_none())
                            }
                            (
                                BatchOp::Upsert { .. } | BatchOp::Update { .. } | BatchOp::Merge,
                                Some(mut entity),
                                Some(f),
                            ) => {
                                // Attributes left as they were (noOverwrite), said after the rest is applied.
                                let mut kept_back: Option<NgsiError> = None;
                                match op {
                                    BatchOp::Upsert { replace: true } => {
                                        entity.replace(f.clone(), &now)
                                    }
                                    BatchOp::Upsert { replace: false } | BatchOp::Merge => {
                                        let f = match merge_bodies.get(id) {
                                            Some((ctx, kept)) if op == BatchOp::Merge => {
                                                Fragment::parse(
                                                    ctx,
                                                    &Value::Object(entity.merge_body(ctx, kept)),
                                                    true,
                                                )?
                                            }
                                            _ => f.clone(),
                                        };
                                        entity.merge(f, Merge::Append { overwrite: true }, &now);
                                        for (iri, name, dataset) in deleted {
                                            if entity.attrs.contains_key(iri) {
                                                entity.delete_attribute(
                                                    iri,
                                                    name,
                                                    dataset.as_deref(),
                                                    false,
                                                    &now,
                                                )?;
                                            }
                                        }
                                    }
                                    BatchOp::Update { overwrite } => {
                                        let o = entity.merge(
                                            f.clone(),
                                            Merge::Append { overwrite },
                                            &now,
                                        );
                                        if !o.not_updated.is_empty() {
                                            let e = NgsiError::bad(format!(
                                                "{}: {}",
                                                if o.updated.is_empty() {
                                                    "no attribute updated"
                                                } else {
                                                    "not updated"
                                                },
                                                o.not_updated
                                                    .iter()
                                                    .map(|n| format!(
                                                        "{} ({})",
                                                        n.attribute, n.reason
                                                    ))
                                                    .collect::<Vec<_>>()
                                                    .join("; ")
                                            ));
                                            if o.updated.is_empty() {
                                                return Err(e.into());
                                            }
                                            kept_back = Some(e);
                                        }
                                    }
                                    _ => {}
                                }
                                if let Some((_, row)) = loaded.get(id) {
                                    hold_types(&datasets, row, &entity)?;
                                }
                                let d = stream_of(&work);
                                work.insert(id.clone(), (Some(entity), d));
                                if let Some(e) = kept_back {
                                    return Err(e.into());
                                }
                                Ok(false)
                            }
                            (_, _, None) => {
                                Err(NgsiError::bad("the batch entry is not an entity").into())
                            }
                        }
                    })();
                    match result {
                        Ok(was_created) => {
                            if !success.contains(id) {
                                success.push(id.clone());
                            }
                            if was_created && !created.contains(id) {
                                created.push(id.clone());
                            }
                        }
                        Err(e) => errors.push((id.clone(), ngsi_error_of(e)?)),
                    }
                }
                for (id, (entity, new_stream)) in work {
                    match (loaded.get(&id), entity) {
                        (Some((_, row)), Some(entity)) => {
                            hold_types(&datasets, row, &entity)?;
                            plan.updates.push((entity, row.clone()));
                        }
                        (Some((_, row)), None) => plan.deletes.push(row.clone()),
                        (None, Some(entity)) => {
                            let d = new_stream.ok_or_else(|| {
                                ServiceError::Internal("a new entity without its stream".into())
                            })?;
                            plan.creates.push((entity, d));
                        }
                        (None, None) => {}
                    }
                }
                Ok((success, created, errors))
            })
            .await?;
        outcome.errors = errors_before;
        outcome.errors.extend(errors);
        outcome.success = success;
        outcome.created = created;
        Ok(outcome)
    }

    // ---- reading -------------------------------------------------------------------------

    /// The actor of a read, and whether it came with a write credential:
    /// a credential carries no right to read, so its caller reads only what
    /// anyone may (open streams), and is refused the rest by its own rule.
    pub(crate) fn reader(caller: &StreamCaller) -> Result<(&Actor, bool)> {
        static ANONYMOUS: Actor = Actor::Anonymous;
        Ok(match caller {
            StreamCaller::Actor(a) => (a, false),
            StreamCaller::Credential { .. } => (&ANONYMOUS, true),
        })
    }

    /// A write credential's refusal to read a stream that is not open.
    pub(crate) fn credential_refusal(dataset: &Dataset) -> ServiceError {
        ServiceError::Refused {
            rule: Some("write-credential-only-writes".into()),
            message: format!(
                "a stream's write credential writes readings and reads nothing beyond open data: \
                 '{}' is read by a signed-in reader, for a purpose, under an agreement",
                dataset.id
            ),
        }
    }

    /// Decide a read of one stream: the grant, and whose entities.
    async fn decide_stream_read(
        &self,
        actor: &Actor,
        dataset: &Dataset,
        purpose: Option<&str>,
        credential: bool,
    ) -> Result<(ReadGrant, Option<SubjectScope>)> {
        if credential && dataset.metadata.spectrum != citytrust_model::catalogue::Spectrum::Open {
            return Err(Self::credential_refusal(dataset));
        }
        let purpose = crate::content::clean_purpose(purpose)?;
        let grant = self
            .authorize_read(actor, dataset, purpose.as_deref(), AccessLevel::Identified)
            .await?;
        let scope = self.subject_scope(actor, dataset, &grant).await?;
        Ok((grant, scope))
    }

    /// `GET /entities/{id}`.
    pub async fn ngsi_retrieve(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        id: &str,
        purpose: Option<&str>,
        rendering: &Rendering,
    ) -> Result<NgsiAnswer> {
        let (actor, credential) = Self::reader(caller)?;
        citytrust_model::ngsi::check_uri("the entity id", id)?;
        let _slot = self.read_slot(actor).await?;
        let rows = self.store.get_entities(&[id.to_string()]).await?;
        let row = rows
            .first()
            .ok_or_else(|| NgsiError::not_found(format!("no entity '{id}'")))?;
        let dataset = self
            .store
            .get_dataset(&row.dataset_id)
            .await?
            .ok_or_else(|| not_a_stream(&row.dataset_id))?;
        let (grant, scope) = self
            .decide_stream_read(actor, &dataset, purpose, credential)
            .await?;
        let entity = decode(row)?;
        if !admitted(&entity, &dataset, scope.as_ref()) {
            return Err(NgsiError::not_found(format!("no entity '{id}'")).into());
        }
        if let Some(types) = &rendering.type_selector
            && !entity.types.iter().any(|t| types.contains(t))
        {
            return Err(NgsiError::not_found(format!(
                "entity '{id}' is of none of the types asked for"
            ))
            .into());
        }
        // Judged on what the reader may see: a hidden attribute is not there.
        let visible = limited(&entity, &grant);
        if let Some(a) = &rendering.attrs
            && !a.iter().any(|a| visible.attrs.contains_key(a))
        {
            return Err(NgsiError::not_found(format!(
                "entity '{id}' has none of the attributes asked for"
            ))
            .into());
        }
        let v = render_limited(&entity, ctx, rendering, &grant);
        if (rendering.pick.is_some() || rendering.omit.is_some())
            && v.as_object()
                .is_some_and(|m| m.keys().all(|k| k == "@context"))
        {
            return Err(NgsiError::not_found(format!(
                "entity '{id}' has none of the members pick and omit leave"
            ))
            .into());
        }
        let linked = self
            .linked_entities(actor, purpose, credential, &[&visible], rendering)
            .await?;
        let mut reads: Vec<(&Dataset, &ReadGrant, Option<&SubjectScope>)> =
            vec![(&dataset, &grant, scope.as_ref())];
        for (d, g, sc) in &linked.reads {
            if !reads.iter().any(|(x, _, _)| x.id == d.id) {
                reads.push((d, g, sc.as_ref()));
            }
        }
        let mut answer = with_linked(vec![(&visible, v)], ctx, rendering, &linked);
        // Flat: the entity and those it links to (alone, when none is reached).
        let v = match rendering.join {
            Some(j) if j.flat && answer.len() > 1 => Value::Array(answer),
            _ => answer.pop().unwrap_or(Value::Null),
        };
        self.log_stream_answer(actor, "retrieve", &reads, 1 + linked.order.len(), v, None)
            .await
    }

    /// Linked entity retrieval (4.5.23): the entities `roots`' relationships
    /// name, to `join.level` hops, following only what `pick` and `omit`
    /// leave. Each is read as any read is: its stream decided for this
    /// reader and purpose, its subject scope applied, its columns limited;
    /// what may not be read is simply not reached. Returns the entities
    /// reached (as the reader may see them) in the order reached, with the
    /// rendering each is given, and the stream reads they took.
    pub(crate) async fn linked_entities(
        &self,
        actor: &Actor,
        purpose: Option<&str>,
        credential: bool,
        roots: &[&Entity],
        r: &Rendering,
    ) -> Result<Linked> {
        let mut out = Linked::default();
        let Some(join) = r.join else {
            return Ok(out);
        };
        let mut decided: HashMap<String, Option<usize>> = HashMap::new();
        let mut frontier: Vec<(Entity, Rendering)> =
            roots.iter().map(|e| ((*e).clone(), r.clone())).collect();
        for _ in 0..join.level {
            // The ids this level's relationships name, with how each is rendered.
            let mut wanted: Vec<(String, Rendering)> = Vec::new();
            for (e, er) in &frontier {
                for (iri, instances) in &e.attrs {
                    if !er.follows(iri) {
                        continue;
                    }
                    for i in instances {
                        if !matches!(
                            i.get("type").and_then(Value::as_str),
                            Some("Relationship" | "ListRelationship")
                        ) {
                            continue;
                        }
                        let objects: Vec<&str> = match citytrust_model::ngsi::instance_value(i) {
                            Some(Value::String(o)) => vec![o.as_str()],
                            Some(Value::Array(a)) => a
                                .iter()
                                .filter_map(|o| {
                                    o.as_str()
                                        .or_else(|| o.get("object").and_then(Value::as_str))
                                })
                                .collect(),
                            _ => Vec::new(),
                        };
                        for o in objects {
                            if !out.entities.contains_key(o) && !wanted.iter().any(|(w, _)| w == o)
                            {
                                wanted.push((o.to_string(), er.linked(iri)));
                            }
                        }
                    }
                }
            }
            if wanted.is_empty() {
                break;
            }
            // A join reaches at most so many entities: a graph is no reason
            // to read a stream whole.
            wanted.truncate(MAX_LINKED.saturating_sub(out.entities.len()));
            if wanted.is_empty() {
                break;
            }
            let ids: Vec<String> = wanted.iter().map(|(id, _)| id.clone()).collect();
            let rows = self.store.get_entities(&ids).await?;
            let mut next = Vec::new();
            for (id, er) in wanted {
                let Some(row) = rows.iter().find(|row| row.entity_id == id) else {
                    continue;
                };
                if !decided.contains_key(&row.dataset_id) {
                    let read = match self.store.get_dataset(&row.dataset_id).await? {
                        Some(d) => match self
                            .decide_stream_read(actor, &d, purpose, credential)
                            .await
                        {
                            Ok((grant, scope)) => {
                                out.reads.push((d, grant, scope));
                                Some(out.reads.len() - 1)
                            }
                            Err(ServiceError::Unavailable { code, message }) => {
                                return Err(ServiceError::Unavailable { code, message });
                            }
                            Err(ServiceError::Internal(e)) => {
                                return Err(ServiceError::Internal(e));
                            }
                            // Not this reader's to read: not reached.
                            Err(_) => None,
                        },
                        None => None,
                    };
                    decided.insert(row.dataset_id.clone(), read);
                }
                let Some(Some(at)) = decided.get(&row.dataset_id).copied() else {
                    continue;
                };
                let (d, grant, scope) = &out.reads[at];
                let entity = decode(row)?;
                if !admitted(&entity, d, scope.as_ref()) {
                    continue;
                }
                let visible = limited(&entity, grant);
                out.order.push((id.clone(), er.clone()));
                out.entities.insert(id, visible.clone());
                next.push((visible, er));
            }
            frontier = next;
        }
        Ok(out)
    }

    /// `GET /entities`: every readable stream that may hold the types asked.
    pub async fn ngsi_query(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        query: &EntityQuery,
        purpose: Option<&str>,
        rendering: &Rendering,
    ) -> Result<NgsiAnswer> {
        let (actor, credential) = Self::reader(caller)?;
        if !query.is_bounded() {
            return Err(NgsiError::bad(
                "a query names at least one of type, attrs, q or a geo-query (ids alone do not bound it)",
            )
            .into());
        }
        let _slot = self.read_slot(actor).await?;
        let streams = self.streams().await?;
        let named_types = !query.types.is_empty();
        let candidates: Vec<&Dataset> = streams
            .iter()
            .filter(|d| {
                let terms = d.metadata.stream.as_ref();
                query.stream.as_ref().is_none_or(|s| *s == d.id)
                    && (!named_types
                        || query
                            .types
                            .iter()
                            .any(|t| terms.is_some_and(|s| s.may_hold(t))))
            })
            .collect();
        // Each stream that may hold what is asked answers if this reader
        // may read it; the others are named in the answer (`withheld`). When
        // none may be read, the first refusal is the answer (naming its rule).
        let mut decided = Vec::new();
        let mut refusals: Vec<(String, ServiceError)> = Vec::new();
        for d in candidates {
            match self.decide_stream_read(actor, d, purpose, credential).await {
                Ok((grant, scope)) => decided.push((d, grant, scope)),
                Err(e @ ServiceError::Unprocessable { .. }) => return Err(e),
                Err(e) => refusals.push((d.id.clone(), e)),
            }
        }
        if decided.is_empty()
            && let Some((_, e)) = refusals.drain(..).next()
        {
            return Err(e);
        }
        let ids: Vec<String> = decided.iter().map(|(d, _, _)| d.id.clone()).collect();
        let by_id: HashMap<&str, usize> = decided
            .iter()
            .enumerate()
            .map(|(i, (d, _, _))| (d.id.as_str(), i))
            .collect();
        let latest = self.latest_entities(&ids).await?;
        // A geo-query on `location` with a box skips, unread, the entities outside it.
        let bound = query
            .geo
            .as_ref()
            .filter(|g| g.property() == Context::core().expand("location"))
            .and_then(|g| g.bounds());
        let mut matched: Vec<(std::borrow::Cow<'_, Entity>, usize)> = Vec::new();
        for (sid, list) in &latest {
            let Some(&i) = by_id.get(sid.as_str()) else {
                continue;
            };
            let (d, grant, scope) = &decided[i];
            for (entity, b) in list.entities.iter().zip(&list.boxes) {
                if let (Some(q), Some(b)) = (&bound, b)
                    && !citytrust_model::ngsi::geo::boxes_meet(q, b)
                {
                    continue;
                }
                if !admitted(entity, d, scope.as_ref()) {
                    continue;
                }
                // Attribute limits apply before the filter: a hidden attribute matches nothing.
                let visible = limited_cow(entity, grant);
                if query.matches(&visible) {
                    matched.push((visible, i));
                }
            }
        }
        // Streams' entities together in id order, as one stream's are.
        if latest.len() > 1 {
            matched.sort_by(|(a, _), (b, _)| a.id.cmp(&b.id));
        }
        if !query.order.is_empty() {
            matched.sort_by(|(a, _), (b, _)| query.order(a, b));
        }
        let count = matched.len();
        let page: Vec<(&Entity, Value)> = matched
            .iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|(e, i)| (&**e, render_limited(e, ctx, rendering, &decided[*i].1)))
            // An entity pick and omit leave nothing of is not listed.
            .filter(|(_, v)| {
                v.as_object()
                    .is_none_or(|m| m.keys().any(|k| k != "@context"))
            })
            .collect();
        let roots: Vec<&Entity> = page.iter().map(|(e, _)| *e).collect();
        let linked = self
            .linked_entities(actor, purpose, credential, &roots, rendering)
            .await?;
        let page = with_linked(page, ctx, rendering, &linked);
        let mut reads: Vec<(&Dataset, &ReadGrant, Option<&SubjectScope>)> = decided
            .iter()
            .map(|(d, g, s)| (*d, g, s.as_ref()))
            .collect();
        for (d, g, sc) in &linked.reads {
            if !reads.iter().any(|(x, _, _)| x.id == d.id) {
                reads.push((d, g, sc.as_ref()));
            }
        }
        let n = page.len();
        let body = if rendering.geo_json {
            citytrust_model::ngsi::feature_collection(page, ctx)
        } else {
            Value::Array(page)
        };
        let mut answer = self
            .log_stream_answer(
                actor,
                "query",
                &reads,
                n,
                body,
                query.count.then_some(count),
            )
            .await?;
        answer.withheld = refusals.into_iter().map(|(id, _)| id).collect();
        answer.matched = Some(count);
        Ok(answer)
    }

    /// `GET /temporal/entities/{id}` (`id` alone) and `GET /temporal/entities`
    /// (`query`): each entity's kept readings, decided per stream like any read.
    pub async fn ngsi_temporal(
        &self,
        caller: &StreamCaller,
        ctx: &Context,
        target: TemporalTarget<'_>,
        tq: &TemporalQuery,
        purpose: Option<&str>,
        with_context: bool,
    ) -> Result<NgsiAnswer> {
        let (actor, credential) = Self::reader(caller)?;
        let _slot = self.read_slot(actor).await?;
        let mut decided: HashMap<String, Option<(Dataset, ReadGrant, Option<SubjectScope>)>> =
            HashMap::new();
        let mut pending: Vec<(String, Vec<String>)> = Vec::new();
        let mut pages: temporal::AnswerReadings = Vec::new();
        let mut sums: Vec<BTreeMap<String, temporal::Summary>> = Vec::new();
        let mut used: Vec<String> = Vec::new();
        let mut refusals: Vec<(String, ServiceError)> = Vec::new();
        let (rows, _named_types) = match target {
            TemporalTarget::One(id) => {
                citytrust_model::ngsi::check_uri("the entity id", id)?;
                let rows = self.store.get_entities(&[id.to_string()]).await?;
                if rows.is_empty() {
                    return Err(NgsiError::not_found(format!("no entity '{id}'")).into());
                }
                (rows, true)
            }
            TemporalTarget::Query(q) => {
                if !q.is_bounded() {
                    return Err(NgsiError::bad(
                        "a temporal query names at least one of type, attrs, q or a geo-query",
                    )
                    .into());
                }
                // Each stream is decided first; only the allowed ones are read.
                let streams = self.streams().await?;
                let mut allowed = Vec::new();
                for d in streams
                    .into_iter()
                    .filter(|d| q.stream.as_ref().is_none_or(|s| *s == d.id))
                    .filter(|d| {
                        q.types.is_empty()
                            || q.types
                                .iter()
                                .any(|t| d.metadata.stream.as_ref().is_some_and(|s| s.may_hold(t)))
                    })
                {
                    match self
                        .decide_stream_read(actor, &d, purpose, credential)
                        .await
                    {
                        Ok((g, sc)) => {
                            allowed.push(d.id.clone());
                            decided.insert(d.id.clone(), Some((d, g, sc)));
                        }
                        Err(e @ ServiceError::Unprocessable { .. }) => return Err(e),
                        Err(e) => {
                            refusals.push((d.id.clone(), e));
                            decided.insert(d.id.clone(), None);
                        }
                    }
                }
                (
                    self.store.stream_entities(&allowed).await?,
                    !q.types.is_empty(),
                )
            }
        };
        let mut rows = rows;
        if let TemporalTarget::Query(q) = target
            && q.by_id_descending()
        {
            rows.reverse();
        }
        let one = matches!(target, TemporalTarget::One(_));
        let (offset, limit) = match target {
            TemporalTarget::Query(q) => (q.offset, q.limit),
            TemporalTarget::One(_) => (0, 1),
        };
        let mut matched = 0usize;
        for row in &rows {
            if !decided.contains_key(&row.dataset_id) {
                let Some(d) = self.store.get_dataset(&row.dataset_id).await? else {
                    continue;
                };
                let decision = match self
                    .decide_stream_read(actor, &d, purpose, credential)
                    .await
                {
                    Ok((g, s)) => Some((d, g, s)),
                    Err(e @ ServiceError::Unprocessable { .. }) => return Err(e),
                    Err(e) if one => return Err(e),
                    Err(e) => {
                        refusals.push((row.dataset_id.clone(), e));
                        None
                    }
                };
                decided.insert(row.dataset_id.clone(), decision);
            }
            let Some(Some((d, grant, scope))) = decided.get(&row.dataset_id) else {
                continue;
            };
            let whole = decode(row)?;
            if !admitted(&whole, d, scope.as_ref()) {
                if let TemporalTarget::One(id) = target {
                    return Err(NgsiError::not_found(format!("no entity '{id}'")).into());
                }
                continue;
            }
            let entity = limited(&whole, grant);
            if let TemporalTarget::Query(q) = target
                && !q.matches(&entity)
            {
                continue;
            }
            // A full page stops the reading, unless the matches are counted.
            let counting = matches!(target, TemporalTarget::Query(q) if q.count);
            if pending.len() >= limit && !counting {
                break;
            }
            let mut readings: BTreeMap<String, temporal::Readings> = BTreeMap::new();
            let mut summed: BTreeMap<String, temporal::Summary> = BTreeMap::new();
            let history = match tq.summable() {
                // Counts, sums and extremes per period: summed by the store,
                // no reading decoded.
                Some(period) => {
                    for (attr, first, last, instance) in self
                        .store
                        .history_span(
                            &entity.id,
                            tq.attrs.as_deref(),
                            tq.from.as_deref(),
                            tq.to.as_deref(),
                        )
                        .await?
                    {
                        if grant.columns.is_some() && !entity.attrs.contains_key(&attr) {
                            continue;
                        }
                        let start = tq.bucket_start(&first)?;
                        let buckets = self
                            .store
                            .history_buckets(
                                &entity.id,
                                &attr,
                                tq.from.as_deref(),
                                tq.to.as_deref(),
                                start.unix_timestamp(),
                                period,
                            )
                            .await?;
                        let ty = serde_json::from_str::<Value>(&instance)
                            .ok()
                            .and_then(|i| i.get("type").cloned())
                            .unwrap_or_else(|| "Property".into());
                        let buckets = buckets
                            .into_iter()
                            .map(|b| temporal::BucketSums {
                                index: b.bucket,
                                readings: u64::try_from(b.readings).unwrap_or(0),
                                numbers: u64::try_from(b.numbers).unwrap_or(0),
                                sum: b.sum.unwrap_or(0.0),
                                sumsq: b.sumsq.unwrap_or(0.0),
                                min: b.min,
                                max: b.max,
                            })
                            .collect();
                        readings.insert(attr.clone(), Vec::new());
                        summed.insert(
                            attr,
                            temporal::Summary {
                                ty,
                                first,
                                last,
                                buckets,
                            },
                        );
                    }
                    Vec::new()
                }
                None => {
                    self.store
                        .entity_history(
                            &entity.id,
                            tq.attrs.as_deref(),
                            tq.from.as_deref(),
                            tq.to.as_deref(),
                            HISTORY_CAP,
                        )
                        .await?
                }
            };
            for h in history {
                // Only what the agreement's columns allow, as for the latest values.
                if grant.columns.is_some() && !entity.attrs.contains_key(&h.attribute) {
                    continue;
                }
                let inst: citytrust_model::ngsi::Instance = serde_json::from_str(&h.instance)
                    .map_err(|e| ServiceError::Internal(format!("stored reading: {e}")))?;
                // Deletions answer `timeproperty=deletedAt`, and only it.
                if inst.contains_key("deletedAt") != tq.deleted {
                    continue;
                }
                if let Some(ds) = &tq.datasets {
                    let d = inst
                        .get("datasetId")
                        .and_then(Value::as_str)
                        .unwrap_or("@none");
                    if !ds.iter().any(|x| x == d) {
                        continue;
                    }
                }
                readings
                    .entry(h.attribute)
                    .or_default()
                    .push((h.observed_at, inst));
            }
            // A query lists the entities with readings in its window; a page
            // at a time (`limit`, `offset`).
            if !one
                && !readings.iter().any(|(a, r)| {
                    (!r.is_empty() || summed.contains_key(a))
                        && tq.attrs.as_ref().is_none_or(|x| x.contains(a))
                })
            {
                continue;
            }
            matched += 1;
            if matched <= offset || pending.len() >= limit {
                continue;
            }
            pending.push((entity.id.clone(), entity.types.clone()));
            pages.push(readings);
            sums.push(summed);
            if !used.contains(&d.id) {
                used.push(d.id.clone());
            }
        }
        let reads: Vec<(&Dataset, &ReadGrant, Option<&SubjectScope>)> = used
            .iter()
            .filter_map(|id| decided.get(id).and_then(|d| d.as_ref()))
            .map(|(d, g, s)| (d, g, s.as_ref()))
            .collect();
        // Refused outright only when no stream that may hold it may be read.
        if decided.values().all(Option::is_none)
            && let Some((_, e)) = refusals.drain(..).next()
        {
            return Err(e);
        }
        if let (TemporalTarget::One(id), Some(attrs), Some(first)) =
            (target, &tq.attrs, pages.first())
            && !first.keys().any(|a| attrs.contains(a))
        {
            return Err(NgsiError::not_found(format!(
                "entity '{id}' has no history of the attributes asked for"
            ))
            .into());
        }
        // At most a page of instances per attribute (a 206 says where it was cut).
        let content_range = if tq.aggregate.is_none() {
            temporal::paginate(&mut pages, tq, self.settings.temporal_page)
        } else {
            None
        };
        let mut answers = Vec::with_capacity(pending.len());
        let projected = tq.pick.is_some() || tq.omit.is_some();
        for (((id, types), readings), summed) in pending.iter().zip(&pages).zip(&sums) {
            let v = temporal::render(id, types, readings, summed, tq, ctx, with_context)?;
            // What pick and omit leave nothing of is not answered.
            if projected
                && v.as_object()
                    .is_some_and(|m| m.keys().all(|k| k == "@context"))
            {
                if let TemporalTarget::One(id) = target {
                    return Err(NgsiError::not_found(format!(
                        "entity '{id}' has none of the members pick and omit leave"
                    ))
                    .into());
                }
                continue;
            }
            answers.push(v);
        }
        let n = answers.len();
        let body = match target {
            TemporalTarget::One(_) => answers.into_iter().next().unwrap_or(Value::Null),
            TemporalTarget::Query(_) => Value::Array(answers),
        };
        let mut answer = self
            .log_stream_answer(actor, "temporal", &reads, n, body, None)
            .await?;
        answer.withheld = refusals.into_iter().map(|(id, _)| id).collect();
        answer.content_range = content_range;
        if let TemporalTarget::Query(q) = target
            && q.count
        {
            answer.count = Some(matched);
        }
        Ok(answer)
    }

    /// Commit to an answer in the log, then hand it back.
    async fn log_stream_answer(
        &self,
        actor: &Actor,
        operation: &str,
        reads: &[(&Dataset, &ReadGrant, Option<&SubjectScope>)],
        entities: usize,
        answer: Value,
        count: Option<usize>,
    ) -> Result<NgsiAnswer> {
        let body =
            serde_json::to_vec(&answer).map_err(|e| ServiceError::Internal(e.to_string()))?;
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
        let nonce = new_nonce()?;
        let by = reads
            .first()
            .map(|(d, _, _)| reader_label(actor, d))
            .unwrap_or_else(|| {
                if matches!(actor, Actor::Anonymous) {
                    "public".into()
                } else {
                    "individual".into()
                }
            });
        let fields = serde_json::json!({
            "operation": operation,
            "streams": reads.iter().map(|(d, g, s)| {
                let mut v = serde_json::json!({
                    "dataset": d.id,
                    "purpose": g.purpose,
                    "level": g.level.as_str(),
                    "rule": g.rule,
                    "agreement": g.agreement_id,
                    "charter_version": g.charter_version,
                });
                if let (Some(s), Some(m)) = (s, v.as_object_mut()) {
                    m.insert("subjects".into(), s.rule.as_str().into());
                }
                v
            }).collect::<Vec<_>>(),
            "entities": entities,
            "bytes": body.len(),
            "commitment": commitment("served", &nonce, &sha256),
            "by": by,
        });
        let (entry, at) = self.log_entry_by(actor, "stream.read", fields)?;
        // Committed (group commit) before a byte is served.
        let log_index = self.appender.append("stream.read", entry, at).await?;
        // Personal streams: kept for "who used my data".
        for (d, g, scope) in reads {
            self.record_read_of_subjects(
                actor,
                d,
                g,
                *scope,
                citytrust_store::STREAM_VERSION,
                log_index,
                &format!("stream_{operation}"),
            )
            .await?;
        }
        Ok(NgsiAnswer {
            body,
            sha256,
            log_index,
            nonce,
            count,
            withheld: Vec::new(),
            content_range: None,
            matched: None,
        })
    }
}

/// An entity stays of types its stream holds.
fn hold_types(datasets: &HashMap<String, Dataset>, row: &EntityRow, e: &Entity) -> Result<()> {
    let dataset = datasets
        .get(&row.dataset_id)
        .ok_or_else(|| not_a_stream(&row.dataset_id))?;
    if !dataset
        .metadata
        .stream
        .as_ref()
        .is_some_and(|s| s.holds(&e.types))
    {
        return Err(NgsiError::bad(format!(
            "stream '{}' does not hold entities of these types",
            dataset.id
        ))
        .into());
    }
    Ok(())
}

/// A fragment's id, when it has one, is the entity's.
fn check_fragment_id(f: &Fragment, id: &str) -> Result<()> {
    match &f.id {
        Some(other) if other != id => Err(NgsiError::bad(format!(
            "the body's id '{other}' is not the entity's '{id}'"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// The NGSI-LD error a per-entity failure of a batch is reported as.
fn ngsi_error_of(e: ServiceError) -> Result<NgsiError> {
    Ok(match e {
        ServiceError::Ngsi(n) => n,
        ServiceError::Forbidden(why) => NgsiError::new(ErrorType::OperationNotSupported, why),
        ServiceError::Unauthenticated => {
            NgsiError::new(ErrorType::OperationNotSupported, "sign in first")
        }
        // Anything else (the store away, an internal failure) fails the batch.
        other => return Err(other),
    })
}

/// Whether a personal stream's subject scope admits the entity.
pub(crate) fn admitted(e: &Entity, dataset: &Dataset, scope: Option<&SubjectScope>) -> bool {
    let Some(filter) = scope.and_then(|s| s.filter.as_deref()) else {
        return true;
    };
    let _ = dataset;
    // Decided on the whole entity (before any column limit), over every
    // instance of the subject-key attribute; an entity whose key cannot be
    // read is nobody's the filter could admit: it is left out (fail closed).
    let Some(keys) = subject_keys(e, &filter.column) else {
        return false;
    };
    !keys.is_empty() && keys.iter().all(|k| filter.keys.contains(k) == filter.keep)
}

/// The subject keys an entity holds in its subject-key attribute (a term of
/// the core context), one per instance; `None` when an instance's value is
/// not a string or a number.
pub(crate) fn subject_keys(e: &Entity, attribute: &str) -> Option<Vec<String>> {
    let column = Context::core().expand(attribute);
    let Some(instances) = e.attrs.get(&column) else {
        return Some(Vec::new());
    };
    instances
        .iter()
        .map(|i| match citytrust_model::ngsi::instance_value(i) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// The entity as `limited` leaves it, borrowed when nothing is taken away.
fn limited_cow<'a>(e: &'a Entity, grant: &ReadGrant) -> std::borrow::Cow<'a, Entity> {
    match grant.columns {
        None => std::borrow::Cow::Borrowed(e),
        Some(_) => std::borrow::Cow::Owned(limited(e, grant)),
    }
}

/// The most the latest-state cache holds (over all streams), counted in
/// bytes of the entities as stored (decoded, they take several times as
/// much): a stream that would take it past this is decoded per query
/// instead. 24 MiB holds the bench's 10,000 sensors; 100,000 are not held
/// (the broker's memory stays under 300 MB with them).
const LATEST_CACHE_BYTES: usize = 24 << 20;

/// Each stream's entities, decoded, at the revision they were read at. A
/// query uses a stream's list only while the stream is still at that
/// revision (every write moves it in its own transaction), so what is
/// answered is always a state the store held; deciding, the consent filter
/// and column limits are applied per query, as before.
#[derive(Default)]
pub(crate) struct LatestCache(std::sync::Mutex<HashMap<String, (i64, Arc<Latest>)>>);

/// One stream's entities, in id order, each with the box of its `location`.
pub(crate) struct Latest {
    entities: Vec<Entity>,
    boxes: Vec<Option<[f64; 4]>>,
    /// The entities' size as stored.
    bytes: usize,
}

impl Latest {
    fn new(entities: Vec<Entity>, bytes: usize) -> Latest {
        let location = Context::core().expand("location");
        let boxes = entities
            .iter()
            .map(|e| {
                e.value_of(&location)
                    .and_then(citytrust_model::ngsi::geo::bbox)
            })
            .collect();
        Latest {
            entities,
            boxes,
            bytes,
        }
    }
}

impl Service {
    /// The entities of `ids` (streams), each stream's in id order.
    async fn latest_entities(&self, ids: &[String]) -> Result<Vec<(String, Arc<Latest>)>> {
        let before = self.store.stream_revisions(ids).await?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        if let Ok(cache) = self.latest.0.lock() {
            for id in ids {
                let at = before.get(id).copied().unwrap_or(0);
                match cache.get(id) {
                    Some((r, list)) if *r == at => out.push((id.clone(), list.clone())),
                    _ => missing.push(id.clone()),
                }
            }
        } else {
            missing = ids.to_vec();
        }
        for id in missing {
            let rows = self
                .store
                .stream_entities(std::slice::from_ref(&id))
                .await?;
            let list = Arc::new(Latest::new(
                rows.iter().map(decode).collect::<Result<Vec<_>>>()?,
                rows.iter().map(|r| r.body.len()).sum(),
            ));
            drop(rows);
            let at = before.get(&id).copied().unwrap_or(0);
            let after = self
                .store
                .stream_revisions(std::slice::from_ref(&id))
                .await?;
            // Kept only when no write came between the two readings of the revision.
            if after.get(&id).copied().unwrap_or(0) == at
                && let Ok(mut cache) = self.latest.0.lock()
            {
                let held: usize = cache
                    .iter()
                    .filter(|(k, _)| **k != id)
                    .map(|(_, (_, l))| l.bytes)
                    .sum();
                if held + list.bytes > LATEST_CACHE_BYTES {
                    cache.clear();
                }
                if list.bytes <= LATEST_CACHE_BYTES {
                    cache.insert(id.clone(), (at, list.clone()));
                }
            }
            out.push((id, list));
        }
        Ok(out)
    }
}

/// The entity with only the attributes the agreement's columns allow.
pub(crate) fn limited(e: &Entity, grant: &ReadGrant) -> Entity {
    limit(e.clone(), grant)
}

/// `limited`, of an entity given (not copied).
pub(crate) fn limit(mut e: Entity, grant: &ReadGrant) -> Entity {
    if let Some(columns) = &grant.columns {
        let core = Context::core();
        let allowed: Vec<String> = columns.iter().map(|c| core.expand(c)).collect();
        e.attrs.retain(|k, _| allowed.contains(k));
    }
    e
}

fn render_limited(e: &Entity, ctx: &Context, r: &Rendering, grant: &ReadGrant) -> Value {
    limited(e, grant).render(ctx, r)
}

/// What a linked entity retrieval reached (see `linked_entities`).
#[derive(Default)]
pub(crate) struct Linked {
    /// By id, as the reader may see each.
    entities: HashMap<String, Entity>,
    /// In the order reached, with the rendering each is given.
    order: Vec<(String, Rendering)>,
    /// The stream reads they took.
    pub(crate) reads: Vec<(Dataset, ReadGrant, Option<SubjectScope>)>,
}

/// An entity rendered with the entities its relationships link to inside
/// each relationship (`join=inline`): in `entity`, or (simplified) in place
/// of the relationship's object.
fn render_inline(e: &Entity, ctx: &Context, r: &Rendering, linked: &Linked, hops: u32) -> Value {
    let mut v = e.render(ctx, r);
    if hops == 0 {
        return v;
    }
    let Some(m) = v.as_object_mut() else {
        return v;
    };
    for (iri, instances) in &e.attrs {
        if !r.follows(iri) {
            continue;
        }
        let name = ctx.compact(iri);
        let Some(rendered) = m.get_mut(&name) else {
            continue;
        };
        let child = r.linked(iri);
        let inline = |object: &str| {
            linked
                .entities
                .get(object)
                .map(|le| render_inline(le, ctx, &child, linked, hops - 1))
        };
        let mut slots: Vec<&mut Value> = match rendered {
            Value::Array(items) if !r.key_values => items.iter_mut().collect(),
            one => vec![one],
        };
        for (slot, i) in slots.iter_mut().zip(instances) {
            if i.get("type").and_then(Value::as_str) != Some("Relationship") {
                continue;
            }
            let Some(object) = i.get("object").and_then(Value::as_str) else {
                continue;
            };
            let Some(entity) = inline(object) else {
                continue;
            };
            if r.key_values {
                **slot = entity;
            } else if let Some(o) = slot.as_object_mut() {
                o.insert("entity".into(), entity);
            }
        }
    }
    v
}

/// Answers with their linked entities: inline, or (flat) listed after the
/// answers, each once.
pub(crate) fn with_linked(
    answers: Vec<(&Entity, Value)>,
    ctx: &Context,
    r: &Rendering,
    linked: &Linked,
) -> Vec<Value> {
    match r.join {
        None => answers.into_iter().map(|(_, v)| v).collect(),
        Some(j) if !j.flat => answers
            .into_iter()
            .map(|(e, v)| {
                let mut inl = render_inline(e, ctx, r, linked, j.level);
                if let (Some(c), Some(m)) = (v.get("@context"), inl.as_object_mut()) {
                    m.insert("@context".into(), c.clone());
                }
                inl
            })
            .collect(),
        Some(_) => {
            let mut seen: std::collections::HashSet<String> =
                answers.iter().map(|(e, _)| e.id.clone()).collect();
            let mut out: Vec<Value> = answers.into_iter().map(|(_, v)| v).collect();
            for (id, er) in &linked.order {
                if seen.insert(id.clone())
                    && let Some(e) = linked.entities.get(id)
                {
                    out.push(e.render(ctx, er));
                }
            }
            out
        }
    }
}

/// Whether an attribute (or instance) given in a request is NGSI-LD Null,
/// `urn:ngsi-ld:null` in its value member: a deletion, not a value.
fn is_ngsi_null(v: &Value) -> bool {
    const NULL: &str = citytrust_model::ngsi::NGSI_NULL;
    v == NULL
        || ["value", "object", "vocab", "json"]
            .iter()
            .any(|m| v.get(m).is_some_and(|x| x == NULL))
        || v.get("languageMap")
            .and_then(|l| l.get("@none"))
            .is_some_and(|x| x == NULL)
}

/// The attributes a fragment sets to NGSI-LD Null: (name, datasetId).
type Nulls = Vec<(String, Option<String>)>;

/// A fragment's members, less the attributes it sets to NGSI-LD Null, and
/// those (name, datasetId) to delete.
/// A merge body with the NGSI-LD Nulls inside compound values taken out
/// (they remove keys of the value held; the rest is checked as given).
fn without_nested_nulls(map: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    fn strip(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, x)| !is_ngsi_null(x) && !x.is_null())
                    .map(|(k, x)| (k.clone(), strip(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    map.iter()
        .map(|(k, v)| match v.get("value") {
            Some(inner @ Value::Object(_)) => {
                let mut a = v.as_object().cloned().unwrap_or_default();
                a.insert("value".into(), strip(inner));
                (k.clone(), Value::Object(a))
            }
            _ => (k.clone(), v.clone()),
        })
        .collect()
}

fn split_nulls(body: &Value) -> Result<(serde_json::Map<String, Value>, Nulls)> {
    let map = body
        .as_object()
        .ok_or_else(|| NgsiError::bad("an attribute fragment is a JSON object"))?;
    let mut kept = serde_json::Map::new();
    let mut dropped = Vec::new();
    for (k, v) in map {
        if !k.starts_with('@') && !matches!(k.as_str(), "id" | "type" | "scope") && is_ngsi_null(v)
        {
            let dataset = v
                .get("datasetId")
                .and_then(Value::as_str)
                .map(str::to_string);
            dropped.push((k.clone(), dataset));
        } else {
            kept.insert(k.clone(), v.clone());
        }
    }
    Ok((kept, dropped))
}
