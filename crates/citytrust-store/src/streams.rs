//! Stream rows (issue 26): NGSI-LD entities' latest state, the readings
//! kept as history, and the streams' write credentials (hashes only).
//!
//! A write (`write_stream`) is one transaction: it first moves each stream's
//! revision (in a fixed order, so writers to one stream queue there and two
//! writes never deadlock), then creates entities (a create that finds the id
//! taken fails the whole write), updates and deletes them at the revision
//! they were read at (a lost race fails the whole write, and the service
//! reads again), appends every reading to the history and the write's log
//! entry. Nothing of a failed write remains.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Backend, NewLogEntry, Result, Store, StoreError, append_entry};

/// A stream's write credential, as kept (its token only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredStreamCredential {
    pub id: String,
    pub dataset_id: String,
    pub label: String,
    pub created_by: String,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

/// An entity's row: its stream, the revision it was read at, and its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityRow {
    pub entity_id: String,
    pub dataset_id: String,
    pub revision: i64,
    pub modified_at: String,
    pub body: String,
}

/// One reading kept: an attribute instance as written.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    pub entity_id: String,
    pub attribute: String,
    pub observed_at: String,
    pub dataset_id: String,
    pub instance: String,
    /// The value, when it is a finite number (what temporal aggregates sum
    /// in SQL); kept beside the instance on write, not read back.
    pub num: Option<f64>,
    /// A deletion (the instance is stamped `deletedAt`).
    pub deleted: bool,
}

/// One attribute's readings in a time range, summed per period bucket in
/// SQL (deletions left out): what `aggregatedValues` needs for counts,
/// sums and extremes.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryBucket {
    /// The bucket's index from the start given.
    pub bucket: i64,
    pub readings: i64,
    /// How many of them are numbers, their sum, sum of squares, minimum
    /// and maximum.
    pub numbers: i64,
    pub sum: Option<f64>,
    pub sumsq: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// Everything one write request changes, applied all or nothing.
#[derive(Debug, Default)]
pub struct StreamWrite<'a> {
    /// The streams written (their revisions move on).
    pub streams: Vec<String>,
    pub creates: Vec<EntityRow>,
    /// Rows to replace, each at the revision it was read at.
    pub updates: Vec<EntityRow>,
    /// Entities to delete: (id, the revision read).
    pub deletes: Vec<(String, i64)>,
    pub history: Vec<HistoryRow>,
    /// Entities whose kept readings go (deleted entities).
    pub history_deletes: Vec<String>,
    /// Readings replaced by one of `history` (the same attribute, instant
    /// and datasetId, written again through the temporal API).
    pub history_replaced: Vec<HistoryRow>,
    /// Notifications owed: (subscription, entity, the changed attributes as JSON).
    pub notifications: Vec<(String, String, String)>,
    /// When they are first due.
    pub now: String,
    /// Personal streams' subjects the write holds: (stream, subject key),
    /// kept in the subject index at [`STREAM_VERSION`] so a resident can be
    /// linked to them and an erasure finds them.
    pub subjects: Vec<(String, String)>,
    pub entry: Option<NewLogEntry<'a>>,
}

/// What an erasure takes from a personal stream: the entities holding the
/// subject, found with the stream at `revision`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamErasure {
    pub revision: i64,
    pub entities: Vec<EntityRow>,
}

/// Erase a personal stream's entities, their kept readings and the
/// notifications they still owe, if the stream is still at the revision
/// they were found at; moving it on, so no cached state outlives them.
pub(crate) async fn erase_entities(
    tx: &mut crate::Tx,
    dataset_id: &str,
    stream: Option<&StreamErasure>,
) -> Result<()> {
    let Some(StreamErasure { revision, entities }) = stream else {
        return Ok(());
    };
    // The stream as a whole is still as it was read: no write came between
    // (one that did may hold the subject again), else the service reads again.
    let moved = sqlx::query(
        "UPDATE stream_revisions SET revision = revision + 1 WHERE dataset_id = $1 AND revision = $2",
    )
    .bind(dataset_id)
    .bind(revision)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if moved == 0 {
        return Err(StoreError::StaleRevision(format!("stream '{dataset_id}'")));
    }
    for e in entities {
        let done = sqlx::query(
            "DELETE FROM ngsi_entities WHERE entity_id = $1 AND dataset_id = $2 AND revision = $3",
        )
        .bind(&e.entity_id)
        .bind(dataset_id)
        .bind(e.revision)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::StaleRevision(format!(
                "entity '{}'",
                e.entity_id
            )));
        }
        for sql in [
            "DELETE FROM ngsi_history WHERE entity_id = $1",
            "DELETE FROM ngsi_notifications WHERE entity_id = $1",
        ] {
            sqlx::query(sql)
                .bind(&e.entity_id)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// The subject index's version for a stream's live entities and history
/// (published versions are numbered from 1).
pub const STREAM_VERSION: i64 = 0;

/// A subscription's row: its document, owner, status and revision, and the
/// streams it was decided for (JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: String,
    pub owner: String,
    pub status: String,
    pub revision: i64,
    pub grants: String,
    pub body: String,
}

/// A notification owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedNotification {
    pub seq: i64,
    pub subscription_id: String,
    pub entity_id: String,
    pub changed: String,
    pub attempts: i64,
}

/// One notification a pass commits to before sending it
/// (`Store::commit_notifications`).
pub struct NotificationCommit<'a> {
    /// The outbox rows it settles.
    pub seqs: &'a [i64],
    /// Its `stream.notified` entry.
    pub entry: NewLogEntry<'a>,
    /// Its subscription's row, the delivery counters moved on.
    pub counted: SubscriptionRow,
}

/// A pass's claim on the outbox rows it commits to: `token` (the pass's
/// own, random) is kept on each row, and the row is not due again until
/// `until` — past the time the pass's sending can take, so that no other
/// pass takes it meanwhile; if the node stops first, the row is due again
/// then and sent again (at least once). Settling the row (dropped when
/// delivered, put off when not) ends the lease.
pub struct NotificationLease<'a> {
    pub now: &'a str,
    pub until: &'a str,
    pub token: &'a str,
}

/// What `Store::commit_notifications` committed.
#[derive(Debug)]
pub struct CommittedNotifications {
    /// The index of the first entry appended (the others follow in order).
    pub first: i64,
    /// Per notification, whether its rows were claimed (and so its entry
    /// appended and its counters written).
    pub claimed: Vec<bool>,
    /// The ids of subscriptions whose rows had moved on (read them again
    /// and count them then).
    pub stale: Vec<String>,
}

fn subscription_from_row(r: &AnyRow) -> Result<SubscriptionRow> {
    Ok(SubscriptionRow {
        id: r.try_get("id")?,
        owner: r.try_get("owner")?,
        status: r.try_get("status")?,
        revision: r.try_get("revision")?,
        grants: r.try_get("grants")?,
        body: r.try_get("body")?,
    })
}

fn credential_from_row(r: &AnyRow) -> Result<StoredStreamCredential> {
    Ok(StoredStreamCredential {
        id: r.try_get("id")?,
        dataset_id: r.try_get("dataset_id")?,
        label: r.try_get("label")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

fn entity_from_row(r: &AnyRow) -> Result<EntityRow> {
    Ok(EntityRow {
        entity_id: r.try_get("entity_id")?,
        dataset_id: r.try_get("dataset_id")?,
        revision: r.try_get("revision")?,
        modified_at: r.try_get("modified_at")?,
        body: r.try_get("body")?,
    })
}

/// Entities read by id, this many to a statement.
const IDS_CHUNK: usize = 500;

/// Readings inserted per statement (7 parameters each; `Backend::param`
/// keeps binding them to SQLite linear in their number).
const READINGS_CHUNK: usize = 500;

/// Entity updates a statement (seven parameters each).
const UPDATES_CHUNK: usize = 100;

/// Any subscription made, deleted, or with its terms or status changed:
/// the `subscriptions_revision` counter moves in the same transaction, so a
/// node's compiled set of active subscriptions is rebuilt only after one.
async fn subscriptions_changed(tx: &mut crate::Tx) -> Result<()> {
    sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'subscriptions_revision'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Owed notifications dropped or put off per statement.
const SEQS_CHUNK: usize = 100;

impl Store {
    pub async fn insert_stream_credential(
        &self,
        credential: &StoredStreamCredential,
        token_hash: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO stream_credentials (id, dataset_id, label, token_hash, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&credential.id)
        .bind(&credential.dataset_id)
        .bind(&credential.label)
        .bind(token_hash)
        .bind(&credential.created_by)
        .bind(&credential.created_at)
        .execute(&mut *tx)
        .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_stream_credentials(
        &self,
        dataset_id: &str,
    ) -> Result<Vec<StoredStreamCredential>> {
        let rows = sqlx::query(
            "SELECT id, dataset_id, label, created_by, created_at, revoked_at FROM stream_credentials \
             WHERE dataset_id = $1 ORDER BY created_at, id",
        )
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// A credential by its id, revoked or not.
    pub async fn stream_credential(&self, id: &str) -> Result<Option<StoredStreamCredential>> {
        let row = sqlx::query(
            "SELECT id, dataset_id, label, created_by, created_at, revoked_at FROM stream_credentials \
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// The credential a token's hash names, revoked or not.
    pub async fn stream_credential_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<StoredStreamCredential>> {
        let row = sqlx::query(
            "SELECT id, dataset_id, label, created_by, created_at, revoked_at FROM stream_credentials \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// Revoke a credential (once), with its log entry; `false` if there was
    /// none in force by that id on that stream.
    pub async fn revoke_stream_credential(
        &self,
        dataset_id: &str,
        id: &str,
        at: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE stream_credentials SET revoked_at = $1 \
             WHERE dataset_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(dataset_id)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The entities with these ids (those that exist).
    pub async fn get_entities(&self, ids: &[String]) -> Result<Vec<EntityRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_CHUNK) {
            let sql = format!(
                "SELECT entity_id, dataset_id, revision, modified_at, body FROM ngsi_entities \
                 WHERE entity_id IN ({})",
                self.backend.params(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(entity_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// The revision each of these streams is at (a stream never written is absent).
    pub async fn stream_revisions(
        &self,
        dataset_ids: &[String],
    ) -> Result<std::collections::HashMap<String, i64>> {
        let mut out = std::collections::HashMap::new();
        if dataset_ids.is_empty() {
            return Ok(out);
        }
        let params: Vec<String> = (1..=dataset_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT dataset_id, revision FROM stream_revisions WHERE dataset_id IN ({})",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in dataset_ids {
            q = q.bind(id);
        }
        for r in q.fetch_all(&self.pool).await? {
            out.insert(r.try_get("dataset_id")?, r.try_get("revision")?);
        }
        Ok(out)
    }

    /// Delete at most about `limit` of a stream's readings observed before
    /// `before` (the oldest first), with the log entry `entry` makes of how
    /// many went and the instant they were all before, in one transaction;
    /// returns how many went (0: nothing was past it, and nothing logged).
    pub async fn expire_history(
        &self,
        dataset_id: &str,
        before: &str,
        limit: i64,
        entry: impl FnOnce(u64, &str) -> Result<(String, String)>,
    ) -> Result<u64> {
        // Bounded: up to the `limit`-th oldest reading's instant. Read
        // before the transaction, which then starts with its write (SQLite
        // would refuse to turn a read transaction into a writing one while
        // another writer works, rather than wait).
        let upto: Option<String> = sqlx::query(
            "SELECT observed_at FROM ngsi_history WHERE dataset_id = $1 AND observed_at < $2 \
             ORDER BY observed_at LIMIT 1 OFFSET $3",
        )
        .bind(dataset_id)
        .bind(before)
        .bind(limit)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.try_get("observed_at"))
        .transpose()?;
        let upto = upto.as_deref().unwrap_or(before);
        let mut tx = self.begin().await?;
        let mut n =
            sqlx::query("DELETE FROM ngsi_history WHERE dataset_id = $1 AND observed_at < $2")
                .bind(dataset_id)
                .bind(upto)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        if n == 0 && upto != before {
            // More than `limit` readings at the oldest instant: that instant whole.
            n = sqlx::query("DELETE FROM ngsi_history WHERE dataset_id = $1 AND observed_at = $2")
                .bind(dataset_id)
                .bind(upto)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        if n == 0 {
            return Ok(0);
        }
        let (body, at) = entry(n, upto)?;
        append_entry(
            &mut tx,
            &NewLogEntry {
                kind: "stream.history_expired",
                body: &body,
                at: &at,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// The attributes of a stream's readings observed before `before`.
    pub async fn history_attributes(&self, dataset_id: &str, before: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT DISTINCT attribute FROM ngsi_history WHERE dataset_id = $1 AND observed_at < $2 \
             ORDER BY attribute",
        )
        .bind(dataset_id)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("attribute")?))
            .collect()
    }

    /// Every entity of these streams, in id order.
    pub async fn stream_entities(&self, dataset_ids: &[String]) -> Result<Vec<EntityRow>> {
        if dataset_ids.is_empty() {
            return Ok(Vec::new());
        }
        let params: Vec<String> = (1..=dataset_ids.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT entity_id, dataset_id, revision, modified_at, body FROM ngsi_entities \
             WHERE dataset_id IN ({}) ORDER BY entity_id",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in dataset_ids {
            q = q.bind(id);
        }
        q.fetch_all(&self.pool)
            .await?
            .iter()
            .map(entity_from_row)
            .collect()
    }

    /// One stream's entities in id order, `page` at a time: walking a
    /// stream holds one page, not the stream.
    pub fn stream_pages(&self, dataset_id: &str, page: i64) -> StreamPages<'_> {
        StreamPages {
            store: self,
            dataset_id: dataset_id.to_string(),
            after: None,
            page,
        }
    }

    /// The readings kept of one entity, by attribute, oldest first; with
    /// `from` / `to`, only those at or after `from` and before `to`; with
    /// `attrs`, only those attributes' (at most 100); at most `cap`, the
    /// newest.
    pub async fn entity_history(
        &self,
        entity_id: &str,
        attrs: Option<&[String]>,
        from: Option<&str>,
        to: Option<&str>,
        cap: i64,
    ) -> Result<Vec<HistoryRow>> {
        let attrs = attrs.filter(|a| !a.is_empty() && a.len() <= 100);
        let only = match attrs {
            Some(a) => format!(
                "AND attribute IN ({})",
                (0..a.len())
                    .map(|i| format!("${}", i + 5))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => String::new(),
        };
        let sql = format!(
            "SELECT entity_id, attribute, observed_at, dataset_id, instance FROM ( \
               SELECT entity_id, attribute, observed_at, dataset_id, instance FROM ngsi_history \
               WHERE entity_id = $1 AND observed_at >= $2 AND observed_at < $3 {only} \
               ORDER BY observed_at DESC LIMIT $4) newest \
             ORDER BY attribute, observed_at"
        );
        let mut q = sqlx::query(&sql)
            .bind(entity_id)
            .bind(from.unwrap_or(""))
            .bind(to.unwrap_or("~"))
            .bind(cap);
        for a in attrs.unwrap_or_default() {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(history_from_row).collect()
    }

    /// The attributes of one entity (those of `attrs`, or every one) with
    /// readings (not deletions) at or after `from` and before `to`: each
    /// with its first and last instant and the first reading's instance.
    ///
    /// Each answer is a walk down the history index, never a scan of the
    /// readings: the attributes are found by skipping from one to the next,
    /// and each one's first and last reading are the ends of its range.
    pub async fn history_span(
        &self,
        entity_id: &str,
        attrs: Option<&[String]>,
        from: Option<&str>,
        to: Option<&str>,
    ) -> Result<Vec<(String, String, String, String)>> {
        let attributes: Vec<String> = match attrs.filter(|a| !a.is_empty()) {
            Some(a) => {
                let mut a = a.to_vec();
                a.sort();
                a.dedup();
                a
            }
            None => sqlx::query(
                "WITH RECURSIVE a(x) AS ( \
                   SELECT MIN(attribute) FROM ngsi_history WHERE entity_id = $1 \
                   UNION ALL \
                   SELECT (SELECT MIN(attribute) FROM ngsi_history \
                           WHERE entity_id = $1 AND attribute > a.x) \
                   FROM a WHERE a.x IS NOT NULL) \
                 SELECT x FROM a WHERE x IS NOT NULL",
            )
            .bind(entity_id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("x"))
            .collect::<std::result::Result<_, _>>()?,
        };
        let mut out = Vec::with_capacity(attributes.len());
        for attribute in attributes {
            let end = |order: &str| {
                format!(
                    "SELECT observed_at, instance FROM ngsi_history \
                     WHERE entity_id = $1 AND attribute = $2 AND observed_at >= $3 \
                     AND observed_at < $4 AND deleted = 0 ORDER BY observed_at {order} LIMIT 1"
                )
            };
            let Some(first) = sqlx::query(&end("ASC"))
                .bind(entity_id)
                .bind(&attribute)
                .bind(from.unwrap_or(""))
                .bind(to.unwrap_or("~"))
                .fetch_optional(&self.pool)
                .await?
            else {
                continue;
            };
            let last = sqlx::query(&end("DESC"))
                .bind(entity_id)
                .bind(&attribute)
                .bind(from.unwrap_or(""))
                .bind(to.unwrap_or("~"))
                .fetch_one(&self.pool)
                .await?;
            out.push((
                attribute,
                first.try_get("observed_at")?,
                last.try_get("observed_at")?,
                first.try_get("instance")?,
            ));
        }
        Ok(out)
    }

    /// One attribute's readings (not deletions) at or after `from` and
    /// before `to`, summed per bucket of `period` seconds from `start`
    /// (seconds since the epoch, at or before the first reading), in bucket
    /// order. Only buckets with readings are answered.
    pub async fn history_buckets(
        &self,
        entity_id: &str,
        attribute: &str,
        from: Option<&str>,
        to: Option<&str>,
        start: i64,
        period: i64,
    ) -> Result<Vec<HistoryBucket>> {
        let seconds = match self.backend {
            Backend::Sqlite => "unixepoch(observed_at)",
            Backend::Postgres => "FLOOR(EXTRACT(EPOCH FROM observed_at::timestamptz))::bigint",
        };
        let rows = sqlx::query(&format!(
            "SELECT ({seconds} - $5) / $6 AS bucket, COUNT(*) AS readings, COUNT(num) AS numbers, \
             SUM(num) AS total, SUM(num * num) AS sumsq, MIN(num) AS lo, MAX(num) AS hi FROM ngsi_history \
             WHERE entity_id = $1 AND attribute = $2 AND observed_at >= $3 AND observed_at < $4 AND deleted = 0 \
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(entity_id)
        .bind(attribute)
        .bind(from.unwrap_or(""))
        .bind(to.unwrap_or("~"))
        .bind(start)
        .bind(period.max(1))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HistoryBucket {
                    bucket: r.try_get("bucket")?,
                    readings: r.try_get("readings")?,
                    numbers: r.try_get("numbers")?,
                    sum: r.try_get("total")?,
                    sumsq: r.try_get("sumsq")?,
                    min: r.try_get("lo")?,
                    max: r.try_get("hi")?,
                })
            })
            .collect()
    }

    /// The readings kept of one entity's attribute at one instant.
    pub async fn readings_at(
        &self,
        entity_id: &str,
        attribute: &str,
        observed_at: &str,
    ) -> Result<Vec<HistoryRow>> {
        let rows = sqlx::query(
            "SELECT entity_id, attribute, observed_at, dataset_id, instance FROM ngsi_history \
             WHERE entity_id = $1 AND attribute = $2 AND observed_at = $3",
        )
        .bind(entity_id)
        .bind(attribute)
        .bind(observed_at)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(history_from_row).collect()
    }

    /// Apply one write request, all or nothing (see the module's header).
    pub async fn write_stream(&self, write: StreamWrite<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        let mut streams = write.streams.clone();
        streams.sort();
        streams.dedup();
        for s in &streams {
            sqlx::query(
                "INSERT INTO stream_revisions (dataset_id, revision) VALUES ($1, 1) \
                 ON CONFLICT (dataset_id) DO UPDATE SET revision = stream_revisions.revision + 1",
            )
            .bind(s)
            .execute(&mut *tx)
            .await?;
        }
        for e in &write.creates {
            let added = sqlx::query(
                "INSERT INTO ngsi_entities (entity_id, dataset_id, revision, modified_at, body) \
                 VALUES ($1, $2, 1, $3, $4) ON CONFLICT (entity_id) DO NOTHING",
            )
            .bind(&e.entity_id)
            .bind(&e.dataset_id)
            .bind(&e.modified_at)
            .bind(&e.body)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if added == 0 {
                return Err(StoreError::Conflict(format!("entity '{}'", e.entity_id)));
            }
        }
        // Each update only if the entity is still at the revision it was
        // read at, many to a statement (see `keyed_update`); a row not at
        // its revision is not updated, and the count says so.
        for chunk in write.updates.chunks(UPDATES_CHUNK) {
            let sql = keyed_update(
                self.backend,
                "ngsi_entities",
                "entity_id",
                &["body", "modified_at"],
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q.bind(&e.entity_id).bind(&e.body);
            }
            for e in chunk {
                q = q.bind(&e.entity_id).bind(&e.modified_at);
            }
            for e in chunk {
                q = q.bind(&e.entity_id).bind(e.revision);
            }
            for e in chunk {
                q = q.bind(&e.entity_id);
            }
            let done = q.execute(&mut *tx).await?.rows_affected();
            if done != chunk.len() as u64 {
                // Which (the transaction is given up): one not as this
                // update would have left it (another's write at the next
                // revision has the same number, but not this body).
                let mut stale = "an entity of this write".to_string();
                for e in chunk {
                    let at: Option<(i64, String)> = sqlx::query(
                        "SELECT revision, body FROM ngsi_entities WHERE entity_id = $1",
                    )
                    .bind(&e.entity_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| Ok::<_, sqlx::Error>((r.try_get("revision")?, r.try_get("body")?)))
                    .transpose()?;
                    if at.as_ref() != Some(&(e.revision + 1, e.body.clone())) {
                        stale = format!("entity '{}'", e.entity_id);
                        break;
                    }
                }
                return Err(StoreError::StaleRevision(stale));
            }
        }
        for (id, revision) in &write.deletes {
            let done =
                sqlx::query("DELETE FROM ngsi_entities WHERE entity_id = $1 AND revision = $2")
                    .bind(id)
                    .bind(revision)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if done == 0 {
                return Err(StoreError::StaleRevision(format!("entity '{id}'")));
            }
        }
        for id in &write.history_deletes {
            sqlx::query("DELETE FROM ngsi_history WHERE entity_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for h in &write.history_replaced {
            sqlx::query(
                "DELETE FROM ngsi_history WHERE entity_id = $1 AND attribute = $2 \
                 AND observed_at = $3 AND instance = $4",
            )
            .bind(&h.entity_id)
            .bind(&h.attribute)
            .bind(&h.observed_at)
            .bind(&h.instance)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in write.history.chunks(READINGS_CHUNK) {
            // The number is always bound as one, NaN standing for none:
            // sqlx's Any driver declares a missing f64 to PostgreSQL as a
            // float4, and a statement it then caches refuses the next real
            // f64. SQLite stores a NaN as NULL; PostgreSQL is told to.
            let p = |n: usize| self.backend.param(n);
            let num = |n: usize| match self.backend {
                Backend::Sqlite => p(n),
                Backend::Postgres => format!("NULLIF({}, 'NaN'::float8)", p(n)),
            };
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = i * 7;
                    format!(
                        "({}, {}, {})",
                        self.backend.params(b + 1, 5),
                        num(b + 6),
                        p(b + 7)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO ngsi_history (entity_id, attribute, observed_at, dataset_id, instance, num, deleted) \
                 VALUES {}",
                rows.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for h in chunk {
                q = q
                    .bind(&h.entity_id)
                    .bind(&h.attribute)
                    .bind(&h.observed_at)
                    .bind(&h.dataset_id)
                    .bind(&h.instance)
                    .bind(h.num.unwrap_or(f64::NAN))
                    .bind(i64::from(h.deleted));
            }
            q.execute(&mut *tx).await?;
        }
        // A subject erased since the service checked (an erasure commits
        // between): the write is planned again, and refused there.
        for chunk in write.subjects.chunks(400) {
            let marks: Vec<String> = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(dataset_id = {} AND subject_key = {})",
                        self.backend.param(2 * i + 1),
                        self.backend.param(2 * i + 2)
                    )
                })
                .collect();
            let sql = format!(
                "SELECT COUNT(*) AS n FROM erased_subjects WHERE {}",
                marks.join(" OR ")
            );
            let mut q = sqlx::query(&sql);
            for (dataset, key) in chunk {
                q = q.bind(dataset).bind(key);
            }
            let n: i64 = q.fetch_one(&mut *tx).await?.try_get("n")?;
            if n > 0 {
                return Err(StoreError::StaleRevision(
                    "a subject erased meanwhile".into(),
                ));
            }
        }
        for (dataset, key) in &write.subjects {
            sqlx::query(
                "INSERT INTO subject_index (dataset_id, version, subject_key) VALUES ($1, $2, $3) \
                 ON CONFLICT (dataset_id, subject_key, version) DO NOTHING",
            )
            .bind(dataset)
            .bind(STREAM_VERSION)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        }
        // Many rows a statement, in the order owed (their `seq` is that order).
        for chunk in write.notifications.chunks(200) {
            let sql = format!(
                "INSERT INTO ngsi_notifications (subscription_id, entity_id, changed, created_at, next_attempt_at, attempts) \
                 VALUES {}",
                (0..chunk.len())
                    .map(|i| format!("({}, 0)", self.backend.params(i * 5 + 1, 5)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let mut q = sqlx::query(&sql);
            for (sub, entity, changed) in chunk {
                q = q
                    .bind(sub)
                    .bind(entity)
                    .bind(changed)
                    .bind(&write.now)
                    .bind(&write.now);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(entry) = &write.entry {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    // ---- subscriptions ---------------------------------------------------------------------

    pub async fn insert_subscription(
        &self,
        row: &SubscriptionRow,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let added = sqlx::query(
            "INSERT INTO ngsi_subscriptions (id, owner, status, revision, grants, body) \
             VALUES ($1, $2, $3, 1, $4, $5) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.owner)
        .bind(&row.status)
        .bind(&row.grants)
        .bind(&row.body)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added == 0 {
            return Err(StoreError::Conflict(format!("subscription '{}'", row.id)));
        }
        subscriptions_changed(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The `subscriptions_revision` counter: it moves with every change to
    /// the set of active subscriptions or to one's terms (not with delivery
    /// counters).
    pub async fn subscriptions_revision(&self) -> Result<i64> {
        self.counter("subscriptions_revision").await
    }

    /// Each active subscription's id and the revision of its terms (every
    /// change but to its delivery counters), in id order.
    pub async fn active_subscription_revisions(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT id, terms_revision AS revision FROM ngsi_subscriptions \
             WHERE status = 'active' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revision")?)))
            .collect()
    }

    pub async fn get_subscription(&self, id: &str) -> Result<Option<SubscriptionRow>> {
        let row = sqlx::query("SELECT id, owner, status, revision, grants, body FROM ngsi_subscriptions WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(subscription_from_row).transpose()
    }

    /// The subscriptions with these ids (those that exist).
    pub async fn get_subscriptions(&self, ids: &[String]) -> Result<Vec<SubscriptionRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_CHUNK) {
            let sql = format!(
                "SELECT id, owner, status, revision, grants, body FROM ngsi_subscriptions \
                 WHERE id IN ({})",
                self.backend.params(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(subscription_from_row(&r)?);
            }
        }
        Ok(out)
    }

    /// Subscriptions made by `owner`, or (`None`) those in a status.
    pub async fn list_subscriptions(
        &self,
        owner: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<SubscriptionRow>> {
        let rows = sqlx::query(
            "SELECT id, owner, status, revision, grants, body FROM ngsi_subscriptions \
             WHERE ($1 = '' OR owner = $1) AND ($2 = '' OR status = $2) ORDER BY id",
        )
        .bind(owner.unwrap_or(""))
        .bind(status.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(subscription_from_row).collect()
    }

    /// Replace a subscription read at `row.revision`, with an entry if one is given;
    /// an ended one (`drop_owed`) loses the notifications it was owed.
    pub async fn update_subscription(
        &self,
        row: &SubscriptionRow,
        drop_owed: bool,
        entry: Option<&NewLogEntry<'_>>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE ngsi_subscriptions SET status = $1, grants = $2, body = $3, revision = revision + 1, \
             terms_revision = terms_revision + 1 WHERE id = $4 AND revision = $5",
        )
        .bind(&row.status)
        .bind(&row.grants)
        .bind(&row.body)
        .bind(&row.id)
        .bind(row.revision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::StaleRevision(format!(
                "subscription '{}'",
                row.id
            )));
        }
        subscriptions_changed(&mut tx).await?;
        if drop_owed {
            sqlx::query("DELETE FROM ngsi_notifications WHERE subscription_id = $1")
                .bind(&row.id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(entry) = entry {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replace a subscription read at `row.revision` and owe it notifications
    /// of these (entity, changed attributes as JSON), due at `now`, together.
    pub async fn owe_subscription(
        &self,
        row: &SubscriptionRow,
        owed: &[(String, String)],
        now: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE ngsi_subscriptions SET body = $1, revision = revision + 1, \
             terms_revision = terms_revision + 1 WHERE id = $2 AND revision = $3",
        )
        .bind(&row.body)
        .bind(&row.id)
        .bind(row.revision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Err(StoreError::StaleRevision(format!(
                "subscription '{}'",
                row.id
            )));
        }
        for (entity, changed) in owed {
            sqlx::query(
                "INSERT INTO ngsi_notifications (subscription_id, entity_id, changed, created_at, next_attempt_at, attempts) \
                 VALUES ($1, $2, $3, $4, $4, 0)",
            )
            .bind(&row.id)
            .bind(entity)
            .bind(changed)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_subscription(&self, id: &str, entry: &NewLogEntry<'_>) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM ngsi_subscriptions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        subscriptions_changed(&mut tx).await?;
        sqlx::query("DELETE FROM ngsi_notifications WHERE subscription_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Notifications due by `now`, oldest first.
    pub async fn due_notifications(&self, now: &str, limit: i64) -> Result<Vec<OwedNotification>> {
        let rows = sqlx::query(
            "SELECT seq, subscription_id, entity_id, changed, attempts FROM ngsi_notifications \
             WHERE next_attempt_at <= $1 ORDER BY seq LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OwedNotification {
                    seq: r.try_get("seq")?,
                    subscription_id: r.try_get("subscription_id")?,
                    entity_id: r.try_get("entity_id")?,
                    changed: r.try_get("changed")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Notifications delivered (or no longer owed): gone, in one transaction.
    pub async fn drop_notifications(&self, seqs: &[i64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in seqs.chunks(SEQS_CHUNK) {
            let sql = format!(
                "DELETE FROM ngsi_notifications WHERE seq IN ({})",
                self.backend.params(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for s in chunk {
                q = q.bind(s);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notifications to try again at `at` (one attempt more each), in one
    /// transaction: those unclaimed or claimed under `lease` (the pass's
    /// own token; its claim ends). A row another pass has claimed is its.
    pub async fn retry_notifications(&self, seqs: &[i64], at: &str, lease: &str) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in seqs.chunks(SEQS_CHUNK) {
            let sql = format!(
                "UPDATE ngsi_notifications SET attempts = attempts + 1, next_attempt_at = {}, \
                 lease = NULL WHERE (lease IS NULL OR lease = {}) AND seq IN ({})",
                self.backend.param(1),
                self.backend.param(2),
                self.backend.params(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(at).bind(lease);
            for s in chunk {
                q = q.bind(s);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notifications held back until `at` (a subscription's `throttling`),
    /// those still due by `now` only (a row another pass has claimed
    /// meanwhile is its), and not counted as an attempt.
    pub async fn defer_notifications(&self, seqs: &[i64], now: &str, at: &str) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for chunk in seqs.chunks(SEQS_CHUNK) {
            let sql = format!(
                "UPDATE ngsi_notifications SET next_attempt_at = {}, lease = NULL \
                 WHERE next_attempt_at <= {} AND seq IN ({})",
                self.backend.param(1),
                self.backend.param(2),
                self.backend.params(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(at).bind(now);
            for s in chunk {
                q = q.bind(s);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// What a notification pass commits to before it sends, in one
    /// transaction. Each notification's outbox rows are claimed first (see
    /// `NotificationLease`); for those claimed, its log entry is appended
    /// (in order) and its subscription's delivery counters written
    /// (`counted`: bodies changed in their counters only, each written only
    /// if still at the revision it was read at). A notification not claimed
    /// — another pass, on this node or another, has its rows or an older
    /// row of its subscription — is neither logged nor counted, and its
    /// rows are left as they were.
    pub async fn commit_notifications(
        &self,
        notes: &[NotificationCommit<'_>],
        lease: &NotificationLease<'_>,
    ) -> Result<CommittedNotifications> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // One pass at a time per subscription across nodes: its row is
            // locked (in id order, so two passes cannot deadlock) until the
            // claim commits, and a later claim then sees the earlier lease.
            let mut ids: Vec<&str> = notes.iter().map(|n| n.counted.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            for chunk in ids.chunks(SEQS_CHUNK) {
                let sql = format!(
                    "SELECT id FROM ngsi_subscriptions WHERE id IN ({}) ORDER BY id FOR UPDATE",
                    self.backend.params(1, chunk.len())
                );
                let mut q = sqlx::query(&sql);
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(&mut *tx).await?;
            }
        }
        let claimed = claim_notifications(&mut tx, notes, lease).await?;
        let stale = update_subscription_bodies(
            &mut tx,
            notes
                .iter()
                .zip(&claimed)
                .filter(|(_, c)| **c)
                .map(|(n, _)| &n.counted),
        )
        .await?;
        let entries: Vec<NewLogEntry<'_>> = notes
            .iter()
            .zip(&claimed)
            .filter(|(_, c)| **c)
            .map(|(n, _)| n.entry)
            .collect();
        let first = if entries.is_empty() {
            0
        } else {
            crate::append_entries(&mut tx, &entries).await?
        };
        tx.commit().await?;
        Ok(CommittedNotifications {
            first,
            claimed,
            stale,
        })
    }

    /// Subscription rows rewritten (their bodies: delivery counters only,
    /// so the terms' revision stays), each only if still at the revision it
    /// was read at, all in one transaction. Returns the ids of those that were not (read again and
    /// retry them).
    pub async fn update_subscriptions(&self, rows: &[SubscriptionRow]) -> Result<Vec<String>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let stale = update_subscription_bodies(&mut tx, rows.iter()).await?;
        tx.commit().await?;
        Ok(stale)
    }

    /// How many notifications are owed (all subscriptions).
    pub async fn owed_notifications(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM ngsi_notifications")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

/// Subscription bodies rewritten in `tx` (delivery counters only: the
/// terms' revision stays), each only if still at the revision it was read
/// at; returns the ids of those that were not. One statement for up to
/// `UPDATES_CHUNK` rows (see `keyed_update`); a subscription named twice
/// starts a new statement, so its second row meets the revision its first
/// left, as one after the other would.
async fn update_subscription_bodies(
    tx: &mut crate::Tx,
    rows: impl Iterator<Item = &SubscriptionRow>,
) -> Result<Vec<String>> {
    // Collected first: the iterator is not held across an await.
    let rows: Vec<&SubscriptionRow> = rows.collect();
    let mut stale = Vec::new();
    let mut chunk: Vec<&SubscriptionRow> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        chunk.push(row);
        let full = chunk.len() == UPDATES_CHUNK
            || rows
                .get(i + 1)
                .is_none_or(|next| chunk.iter().any(|r| r.id == next.id));
        if !full {
            continue;
        }
        let sql = keyed_update(
            tx.backend,
            "ngsi_subscriptions",
            "id",
            &["body"],
            chunk.len(),
            " RETURNING id",
        );
        let mut q = sqlx::query(&sql);
        for r in &chunk {
            q = q.bind(&r.id).bind(&r.body);
        }
        for r in &chunk {
            q = q.bind(&r.id).bind(r.revision);
        }
        for r in &chunk {
            q = q.bind(&r.id);
        }
        let mut done = std::collections::HashSet::with_capacity(chunk.len());
        for r in q.fetch_all(&mut **tx).await? {
            done.insert(r.try_get::<String, _>("id")?);
        }
        stale.extend(
            chunk
                .drain(..)
                .filter(|r| !done.contains(&r.id))
                .map(|r| r.id.clone()),
        );
    }
    Ok(stale)
}

/// One statement updating `n` rows of `table` by their `key`, each only if
/// still at the revision it was read at, moving it on by one: `SET col =
/// CASE key WHEN … THEN … END, …, revision = revision + 1 WHERE revision =
/// CASE key … END AND key IN (…)` followed by `tail`. The new values are
/// picked by key with `CASE` because SQLite plans a multi-row `UPDATE …
/// FROM (VALUES …)` as a scan of the table, but this as a lookup of each
/// key. Parameters are numbered in the order they appear (SQLite binds `?`
/// by position): (key, value)… for each of `sets`, then (key, revision)…,
/// then key….
fn keyed_update(
    backend: Backend,
    table: &str,
    key: &str,
    sets: &[&str],
    n: usize,
    tail: &str,
) -> String {
    let mut p = 0;
    let mut next = || {
        p += 1;
        backend.param(p)
    };
    let mut case = || {
        let whens: Vec<String> = (0..n)
            .map(|_| format!("WHEN {} THEN {}", next(), next()))
            .collect();
        format!("CASE {key} {} END", whens.join(" "))
    };
    let assignments: Vec<String> = sets.iter().map(|c| format!("{c} = {}", case())).collect();
    let revision = case();
    let keys: Vec<String> = (0..n).map(|_| next()).collect();
    format!(
        "UPDATE {table} SET {}, revision = revision + 1 WHERE revision = {revision} \
         AND {key} IN ({}){tail}",
        assignments.join(", "),
        keys.join(", ")
    )
}

/// Claim notifications' outbox rows for a pass (see `NotificationLease`):
/// for each, all its rows or none. A row is claimed only if it is still
/// due, and only while no other pass holds a lease on a row of the same
/// subscription (so its notifications go out in order). Returns, per
/// notification, whether it was claimed.
async fn claim_notifications(
    tx: &mut crate::Tx,
    notes: &[NotificationCommit<'_>],
    lease: &NotificationLease<'_>,
) -> Result<Vec<bool>> {
    let b = tx.backend;
    let all: Vec<i64> = notes.iter().flat_map(|n| n.seqs.iter().copied()).collect();
    let mut got = std::collections::HashSet::with_capacity(all.len());
    for chunk in all.chunks(SEQS_CHUNK) {
        // Parameters numbered, and bound, in the order they appear (on
        // SQLite `?` is bound by position).
        let sql = format!(
            "UPDATE ngsi_notifications SET next_attempt_at = {}, lease = {} \
             WHERE next_attempt_at <= {} AND NOT EXISTS (SELECT 1 FROM ngsi_notifications o \
             WHERE o.subscription_id = ngsi_notifications.subscription_id \
             AND o.lease IS NOT NULL AND o.lease <> {} AND o.next_attempt_at > {}) \
             AND seq IN ({}) RETURNING seq",
            b.param(1),
            b.param(2),
            b.param(3),
            b.param(4),
            b.param(5),
            b.params(6, chunk.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(lease.until)
            .bind(lease.token)
            .bind(lease.now)
            .bind(lease.token)
            .bind(lease.now);
        for s in chunk {
            q = q.bind(s);
        }
        for r in q.fetch_all(&mut **tx).await? {
            got.insert(r.try_get::<i64, _>("seq")?);
        }
    }
    let claimed: Vec<bool> = notes
        .iter()
        .map(|n| n.seqs.iter().all(|s| got.contains(s)))
        .collect();
    // A notification some of whose rows were settled or claimed meanwhile
    // gives back those it took (they were due, so they are due again).
    let back: Vec<i64> = notes
        .iter()
        .zip(&claimed)
        .filter(|(_, c)| !**c)
        .flat_map(|(n, _)| n.seqs.iter().copied())
        .filter(|s| got.contains(s))
        .collect();
    for chunk in back.chunks(SEQS_CHUNK) {
        let sql = format!(
            "UPDATE ngsi_notifications SET next_attempt_at = {}, lease = NULL \
             WHERE lease = {} AND seq IN ({})",
            b.param(1),
            b.param(2),
            b.params(3, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(lease.now).bind(lease.token);
        for s in chunk {
            q = q.bind(s);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(claimed)
}

fn history_from_row(r: &AnyRow) -> Result<HistoryRow> {
    Ok(HistoryRow {
        entity_id: r.try_get("entity_id")?,
        attribute: r.try_get("attribute")?,
        observed_at: r.try_get("observed_at")?,
        dataset_id: r.try_get("dataset_id")?,
        instance: r.try_get("instance")?,
        num: None,
        deleted: false,
    })
}

/// A cursor over one stream's entities (`Store::stream_pages`): each page
/// starts after the last id of the one before (keyset, on the index
/// `(dataset_id, entity_id)`), so an entity made meanwhile is met if its
/// id sorts after the cursor.
pub struct StreamPages<'a> {
    store: &'a Store,
    dataset_id: String,
    after: Option<String>,
    page: i64,
}

impl StreamPages<'_> {
    /// The next page; `None` once the stream is walked.
    pub async fn next(&mut self) -> Result<Option<Vec<EntityRow>>> {
        let rows = sqlx::query(
            "SELECT entity_id, dataset_id, revision, modified_at, body FROM ngsi_entities \
             WHERE dataset_id = $1 AND entity_id > $2 ORDER BY entity_id LIMIT $3",
        )
        .bind(&self.dataset_id)
        .bind(self.after.as_deref().unwrap_or(""))
        .bind(self.page)
        .fetch_all(&self.store.pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        self.after = Some(last.try_get("entity_id")?);
        rows.iter()
            .map(entity_from_row)
            .collect::<Result<_>>()
            .map(Some)
    }
}
