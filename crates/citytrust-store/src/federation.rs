//! Federation rows: remote catalogues and the entries harvested from them,
//! and the Dataspace Protocol negotiations and transfers this trust is the
//! provider in (each its model document, written at a revision with its
//! log entries in one transaction).
//!
//! A harvest stages what it reads, a batch per transaction, under its own
//! id; only when the feed was read to its end does [`Store::finish_harvest`]
//! replace the catalogue's entries with the staged ones — counting what was
//! added, changed, unchanged and removed, recording the report and appending
//! the log entry, all in one transaction. A harvest that fails drops its
//! staging and leaves the entries as the last good harvest left them. Each
//! harvest holds a lease on its catalogue's row, so two nodes (or the
//! scheduler and an administrator) never harvest one catalogue at once.

use citytrust_model::federation::{
    ConsumerNegotiation, FederatedEntry, Negotiation, RemoteCatalogue, TransferProcess,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{
    NewLogEntry, Result, Store, StoreError, append_entry, bump_catalogue_revision, conflict,
    from_json, json,
};

/// One record a harvest read, ready to stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedEntry {
    pub id: String,
    pub remote_id: String,
    /// SHA-256 (hex) of `body`.
    pub digest: String,
    /// The entry's JSON document; empty for a kept record.
    pub body: String,
    /// A rejected record whose earlier version stays.
    pub kept: bool,
}

/// What a finished harvest changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HarvestCounts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub removed: u64,
}

fn catalogue_from_row(row: &AnyRow) -> Result<RemoteCatalogue> {
    let mut c: RemoteCatalogue = from_json(&row.try_get::<String, _>("body")?)?;
    c.next_harvest_at = row.try_get("next_harvest_at")?;
    c.entries = u64::try_from(row.try_get::<i64, _>("entries")?).unwrap_or(0);
    Ok(c)
}

const CATALOGUE_COLUMNS: &str = "c.body, c.next_harvest_at, \
     (SELECT COUNT(*) FROM federated_entries e WHERE e.catalogue_id = c.id) AS entries";

/// Go on only while `harvest_id` holds the catalogue's lease. A write, so
/// SQLite takes its write lock here and PostgreSQL the catalogue's row.
async fn hold_lease(tx: &mut crate::Tx, catalogue_id: &str, harvest_id: &str) -> Result<()> {
    let held = sqlx::query(
        "UPDATE remote_catalogues SET harvesting_by = harvesting_by WHERE id = $1 AND harvesting_by = $2",
    )
    .bind(catalogue_id)
    .bind(harvest_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if held == 0 {
        return Err(StoreError::StaleRevision(format!(
            "the harvest of remote catalogue '{catalogue_id}' (it lost its lease, or the catalogue was removed)"
        )));
    }
    Ok(())
}

/// Keep a harvest's report (naming its log entry), set the next harvest and release the lease.
async fn record_report(
    tx: &mut crate::Tx,
    catalogue_id: &str,
    mut catalogue: RemoteCatalogue,
    log_index: i64,
    next_harvest_at: &str,
) -> Result<()> {
    if let Some(report) = catalogue.last_harvest.as_mut() {
        report.log_index = u64::try_from(log_index).ok();
    }
    sqlx::query(
        "UPDATE remote_catalogues SET body = $2, next_harvest_at = $3, harvesting_until = NULL, \
         harvesting_by = NULL WHERE id = $1",
    )
    .bind(catalogue_id)
    .bind(json(&catalogue)?)
    .bind(next_harvest_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    pub async fn insert_remote_catalogue(
        &self,
        catalogue: &RemoteCatalogue,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO remote_catalogues (id, created_at, next_harvest_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(&catalogue.id)
        .bind(&catalogue.created_at)
        .bind(&catalogue.next_harvest_at)
        .bind(json(catalogue)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("remote catalogue '{}'", catalogue.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_remote_catalogue(&self, id: &str) -> Result<Option<RemoteCatalogue>> {
        let row = sqlx::query(&format!(
            "SELECT {CATALOGUE_COLUMNS} FROM remote_catalogues c WHERE c.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(catalogue_from_row).transpose()
    }

    pub async fn list_remote_catalogues(&self) -> Result<Vec<RemoteCatalogue>> {
        let rows = sqlx::query(&format!(
            "SELECT {CATALOGUE_COLUMNS} FROM remote_catalogues c ORDER BY c.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(catalogue_from_row).collect()
    }

    /// Remove a catalogue and every entry harvested from it.
    pub async fn delete_remote_catalogue(&self, id: &str, entry: &NewLogEntry<'_>) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM federated_staging WHERE catalogue_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM federated_entries WHERE catalogue_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM remote_catalogues WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        bump_catalogue_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The catalogues whose scheduled harvest is due at `now` and that no
    /// harvest holds.
    pub async fn due_remote_catalogues(&self, now: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM remote_catalogues WHERE next_harvest_at <= $1 \
             AND (harvesting_until IS NULL OR harvesting_until < $1) ORDER BY next_harvest_at",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("id")?))
            .collect()
    }

    /// Take the catalogue's harvest lease for `harvest_id` until `until`,
    /// unless a harvest holds it at `now`. False when it is held (or there
    /// is no such catalogue).
    pub async fn claim_harvest(
        &self,
        id: &str,
        harvest_id: &str,
        now: &str,
        until: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE remote_catalogues SET harvesting_until = $2, harvesting_by = $4 WHERE id = $1 \
             AND (harvesting_until IS NULL OR harvesting_until < $3)",
        )
        .bind(id)
        .bind(until)
        .bind(now)
        .bind(harvest_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Stage a batch of a harvest's records (one transaction).
    pub async fn stage_federated(
        &self,
        harvest_id: &str,
        catalogue_id: &str,
        batch: &[StagedEntry],
    ) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // One row per id in a statement (PostgreSQL refuses an upsert that
        // touches a row twice): a feed that lists a dataset twice, the last wins.
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, e) in batch.iter().enumerate() {
            last.insert(e.id.as_str(), i);
        }
        let batch: Vec<&StagedEntry> = batch
            .iter()
            .enumerate()
            .filter(|(i, e)| last.get(e.id.as_str()) == Some(i))
            .map(|(_, e)| e)
            .collect();
        let mut tx = self.begin().await?;
        // Seven parameters a row; SQLite allows 32,766 in a statement.
        for chunk in batch.chunks(1000) {
            let mut sql = format!(
                "INSERT INTO federated_staging (harvest_id, id, catalogue_id, remote_id, digest, body, kept) VALUES {}",
                tx.backend.value_rows(chunk.len(), 7)
            );
            // A feed that lists a dataset twice: the last record wins.
            sql.push_str(
                " ON CONFLICT (harvest_id, id) DO UPDATE SET digest = excluded.digest, \
                 body = excluded.body, kept = excluded.kept",
            );
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(harvest_id)
                    .bind(&e.id)
                    .bind(catalogue_id)
                    .bind(&e.remote_id)
                    .bind(&e.digest)
                    .bind(&e.body)
                    .bind(i32::from(e.kept));
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether an earlier harvest of the catalogue brought this record.
    pub async fn federated_entry_exists(
        &self,
        catalogue_id: &str,
        remote_id: &str,
    ) -> Result<bool> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM federated_entries WHERE catalogue_id = $1 AND remote_id = $2",
        )
        .bind(catalogue_id)
        .bind(remote_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Replace the catalogue's entries with the harvest's staged records,
    /// record the report `finish` makes from the counts (with the log entry
    /// it makes), release the lease and set the next harvest — one
    /// transaction. Returns the log entry's index.
    pub async fn finish_harvest<F>(
        &self,
        catalogue_id: &str,
        harvest_id: &str,
        next_harvest_at: &str,
        finish: F,
    ) -> Result<(HarvestCounts, i64)>
    where
        F: FnOnce(HarvestCounts) -> Result<(String, String, String, RemoteCatalogue)>,
    {
        let mut tx = self.begin().await?;
        // A write first: SQLite takes its write lock now (waiting its busy
        // timeout), rather than failing to upgrade a read transaction after
        // another writer committed; PostgreSQL locks the catalogue's row.
        // And only the harvest holding the lease may go on.
        hold_lease(&mut tx, catalogue_id, harvest_id).await?;
        let mut counts = HarvestCounts::default();
        for (slot, sql) in [
            (
                0,
                "SELECT COUNT(*) AS n FROM federated_staging s WHERE s.harvest_id = $1 AND s.kept = 0 \
                 AND NOT EXISTS (SELECT 1 FROM federated_entries e WHERE e.id = s.id)",
            ),
            (
                1,
                "SELECT COUNT(*) AS n FROM federated_staging s JOIN federated_entries e ON e.id = s.id \
                 WHERE s.harvest_id = $1 AND s.kept = 0 AND e.digest <> s.digest",
            ),
            (
                2,
                "SELECT COUNT(*) AS n FROM federated_staging s JOIN federated_entries e ON e.id = s.id \
                 WHERE s.harvest_id = $1 AND s.kept = 0 AND e.digest = s.digest",
            ),
        ] {
            let n: i64 = sqlx::query(sql)
                .bind(harvest_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
            let n = u64::try_from(n).unwrap_or(0);
            match slot {
                0 => counts.added = n,
                1 => counts.updated = n,
                _ => counts.unchanged = n,
            }
        }
        counts.removed = sqlx::query(
            "DELETE FROM federated_entries WHERE catalogue_id = $1 AND NOT EXISTS \
             (SELECT 1 FROM federated_staging s WHERE s.harvest_id = $2 AND s.id = federated_entries.id)",
        )
        .bind(catalogue_id)
        .bind(harvest_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "INSERT INTO federated_entries (id, catalogue_id, remote_id, digest, body) \
             SELECT id, catalogue_id, remote_id, digest, body FROM federated_staging \
             WHERE harvest_id = $1 AND kept = 0 \
             ON CONFLICT (id) DO UPDATE SET digest = excluded.digest, body = excluded.body \
             WHERE federated_entries.digest <> excluded.digest",
        )
        .bind(harvest_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM federated_staging WHERE harvest_id = $1")
            .bind(harvest_id)
            .execute(&mut *tx)
            .await?;
        let (kind, body, at, catalogue) = finish(counts)?;
        let idx = append_entry(
            &mut tx,
            &NewLogEntry {
                kind: &kind,
                body: &body,
                at: &at,
            },
        )
        .await?;
        record_report(&mut tx, catalogue_id, catalogue, idx, next_harvest_at).await?;
        if counts.added + counts.updated + counts.removed > 0 {
            bump_catalogue_revision(&mut tx).await?;
        }
        tx.commit().await?;
        Ok((counts, idx))
    }

    /// A harvest that failed: drop its staging, record the report and its
    /// log entry, release the lease. The entries stay as they were.
    pub async fn fail_harvest(
        &self,
        catalogue_id: &str,
        harvest_id: &str,
        next_harvest_at: &str,
        catalogue: &RemoteCatalogue,
        entry: &NewLogEntry<'_>,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM federated_staging WHERE harvest_id = $1")
            .bind(harvest_id)
            .execute(&mut *tx)
            .await?;
        if let Err(lost) = hold_lease(&mut tx, catalogue_id, harvest_id).await {
            // Another harvest holds the catalogue now (or it was removed): drop the staging only.
            tx.commit().await?;
            return Err(lost);
        }
        let idx = append_entry(&mut tx, entry).await?;
        record_report(
            &mut tx,
            catalogue_id,
            catalogue.clone(),
            idx,
            next_harvest_at,
        )
        .await?;
        tx.commit().await?;
        Ok(idx)
    }

    /// Give up a harvest the database failed under: drop its staging and
    /// release its lease (if it still holds it). The entries stay.
    pub async fn abandon_harvest(&self, catalogue_id: &str, harvest_id: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM federated_staging WHERE harvest_id = $1")
            .bind(harvest_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE remote_catalogues SET harvesting_until = NULL, harvesting_by = NULL \
             WHERE id = $1 AND harvesting_by = $2",
        )
        .bind(catalogue_id)
        .bind(harvest_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every federated entry (for the search index), in id order.
    pub async fn list_federated_entries(&self) -> Result<Vec<FederatedEntry>> {
        let rows = sqlx::query("SELECT body FROM federated_entries ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| from_json(&r.try_get::<String, _>("body")?))
            .collect()
    }

    pub async fn get_federated_entry(&self, id: &str) -> Result<Option<FederatedEntry>> {
        let row = sqlx::query("SELECT body FROM federated_entries WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_json(&r.try_get::<String, _>("body")?))
            .transpose()
    }
}

/// A row kept as a document at a revision: where it is, and what to call it.
struct Versioned<'a> {
    table: &'static str,
    key_column: &'static str,
    key: &'a str,
    what: &'static str,
}

/// A transfer and the revision it was read at.
fn transfer_from_row(row: &AnyRow) -> Result<(TransferProcess, i64)> {
    let t: TransferProcess = from_json(&row.try_get::<String, _>("body")?)?;
    Ok((t, row.try_get("revision")?))
}

/// A negotiation and the revision it was read at.
fn negotiation_from_row(row: &AnyRow) -> Result<(Negotiation, i64)> {
    let n: Negotiation = from_json(&row.try_get::<String, _>("body")?)?;
    Ok((n, row.try_get("revision")?))
}

impl Store {
    /// Record a new negotiation (and its log entries) in one transaction.
    pub async fn insert_negotiation(
        &self,
        n: &Negotiation,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dsp_negotiations (provider_pid, catalogue_id, access_request_id, agreement_id, \
             state, next_attempt_at, revision, body) VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
        )
        .bind(&n.provider_pid)
        .bind(&n.catalogue_id)
        .bind(&n.access_request_id)
        .bind(&n.agreement_id)
        .bind(n.state.as_str())
        .bind(&n.next_attempt_at)
        .bind(json(n)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("negotiation '{}'", n.provider_pid)))?;
        for entry in entries {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_negotiation(&self, provider_pid: &str) -> Result<Option<(Negotiation, i64)>> {
        let row =
            sqlx::query("SELECT body, revision FROM dsp_negotiations WHERE provider_pid = $1")
                .bind(provider_pid)
                .fetch_optional(&self.pool)
                .await?;
        row.as_ref().map(negotiation_from_row).transpose()
    }

    /// Write a negotiation read at `revision`, with its log entries, in one
    /// transaction; [`StoreError::StaleRevision`] if another change came first.
    pub async fn update_negotiation(
        &self,
        n: &Negotiation,
        revision: i64,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        self.write_at_revision(
            Versioned {
                table: "dsp_negotiations",
                key_column: "provider_pid",
                key: &n.provider_pid,
                what: "negotiation",
            },
            revision,
            json(n)?,
            &[
                ("state", Some(n.state.as_str().to_string())),
                ("next_attempt_at", n.next_attempt_at.clone()),
                ("agreement_id", n.agreement_id.clone()),
            ],
            entries,
        )
        .await
    }

    /// Negotiations the worker may have something to do for at `now`: not
    /// in a terminal state, and not waiting to retry a delivery.
    pub async fn negotiations_to_advance(&self, now: &str) -> Result<Vec<(Negotiation, i64)>> {
        let rows = sqlx::query(
            "SELECT body, revision FROM dsp_negotiations \
             WHERE state NOT IN ('FINALIZED', 'TERMINATED') \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY provider_pid LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(negotiation_from_row).collect()
    }

    /// The negotiation that made agreement `agreement_id`, if one did.
    pub async fn negotiation_for_agreement(
        &self,
        agreement_id: &str,
    ) -> Result<Option<Negotiation>> {
        let row =
            sqlx::query("SELECT body, revision FROM dsp_negotiations WHERE agreement_id = $1")
                .bind(agreement_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row
            .as_ref()
            .map(negotiation_from_row)
            .transpose()?
            .map(|(n, _)| n))
    }

    /// Record a new transfer process (and its log entries) in one transaction.
    pub async fn insert_transfer(
        &self,
        t: &TransferProcess,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dsp_transfers (provider_pid, catalogue_id, agreement_id, state, next_attempt_at, \
             token_hash, revision, body) VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
        )
        .bind(&t.provider_pid)
        .bind(&t.catalogue_id)
        .bind(&t.agreement_id)
        .bind(t.state.as_str())
        .bind(&t.next_attempt_at)
        .bind(&t.token_hash)
        .bind(json(t)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("transfer '{}'", t.provider_pid)))?;
        for entry in entries {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_transfer(&self, provider_pid: &str) -> Result<Option<(TransferProcess, i64)>> {
        let row = sqlx::query("SELECT body, revision FROM dsp_transfers WHERE provider_pid = $1")
            .bind(provider_pid)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(transfer_from_row).transpose()
    }

    /// Write a transfer read at `revision`, with its log entries;
    /// [`StoreError::StaleRevision`] if another change came first.
    pub async fn update_transfer(
        &self,
        t: &TransferProcess,
        revision: i64,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        self.write_at_revision(
            Versioned {
                table: "dsp_transfers",
                key_column: "provider_pid",
                key: &t.provider_pid,
                what: "transfer",
            },
            revision,
            json(t)?,
            &[
                ("state", Some(t.state.as_str().to_string())),
                ("next_attempt_at", t.next_attempt_at.clone()),
                ("token_hash", t.token_hash.clone()),
            ],
            entries,
        )
        .await
    }

    /// Transfers the worker may have something to do for at `now`: those
    /// owing the consumer a message, and those started (whose agreement may
    /// have ended).
    pub async fn transfers_to_advance(&self, now: &str) -> Result<Vec<(TransferProcess, i64)>> {
        let rows = sqlx::query(
            "SELECT body, revision FROM dsp_transfers WHERE state IN ('REQUESTED', 'STARTED', 'SUSPENDED') \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY provider_pid LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(transfer_from_row).collect()
    }

    /// How many negotiations of the participant pinned in `catalogue_id` are open.
    pub async fn open_negotiations_of(&self, catalogue_id: &str) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dsp_negotiations WHERE catalogue_id = $1 \
             AND state NOT IN ('FINALIZED', 'TERMINATED')",
        )
        .bind(catalogue_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// How many transfers under agreement `agreement_id` are not over.
    pub async fn open_transfers_under(&self, agreement_id: &str) -> Result<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM dsp_transfers WHERE agreement_id = $1 \
             AND state IN ('REQUESTED', 'STARTED', 'SUSPENDED')",
        )
        .bind(agreement_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Every negotiation, newest first.
    pub async fn list_negotiations(&self) -> Result<Vec<Negotiation>> {
        let rows = sqlx::query("SELECT body, revision FROM dsp_negotiations")
            .fetch_all(&self.pool)
            .await?;
        let mut all = rows
            .iter()
            .map(|r| negotiation_from_row(r).map(|(n, _)| n))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(all)
    }
}

fn consumer_from_row(row: &AnyRow) -> Result<(ConsumerNegotiation, i64)> {
    let n: ConsumerNegotiation = from_json(&row.try_get::<String, _>("body")?)?;
    Ok((n, row.try_get("revision")?))
}

impl Store {
    /// Record a negotiation this trust is the consumer in, with its log entries.
    pub async fn insert_consumer_negotiation(
        &self,
        n: &ConsumerNegotiation,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dsp_consumer_negotiations (consumer_pid, requester, organization_id, \
             transfer_pid, state, next_attempt_at, revision, body) VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
        )
        .bind(&n.consumer_pid)
        .bind(&n.requester)
        .bind(&n.organization_id)
        .bind(n.transfer.as_ref().map(|t| t.consumer_pid.clone()))
        .bind(n.state.as_str())
        .bind(&n.next_attempt_at)
        .bind(json(n)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("negotiation '{}'", n.consumer_pid)))?;
        for entry in entries {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A consumer negotiation by its id, or by its transfer's.
    pub async fn get_consumer_negotiation(
        &self,
        pid: &str,
    ) -> Result<Option<(ConsumerNegotiation, i64)>> {
        let row = sqlx::query(
            "SELECT body, revision FROM dsp_consumer_negotiations WHERE consumer_pid = $1 OR transfer_pid = $1",
        )
        .bind(pid)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(consumer_from_row).transpose()
    }

    /// Write a consumer negotiation read at `revision`, with its log entries.
    pub async fn update_consumer_negotiation(
        &self,
        n: &ConsumerNegotiation,
        revision: i64,
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        self.write_at_revision(
            Versioned {
                table: "dsp_consumer_negotiations",
                key_column: "consumer_pid",
                key: &n.consumer_pid,
                what: "negotiation",
            },
            revision,
            json(n)?,
            &[
                ("state", Some(n.state.as_str().to_string())),
                ("next_attempt_at", n.next_attempt_at.clone()),
                (
                    "transfer_pid",
                    n.transfer.as_ref().map(|t| t.consumer_pid.clone()),
                ),
            ],
            entries,
        )
        .await
    }

    /// Write a row's document read at `revision` (and the columns kept
    /// beside it), with its log entries, in one transaction — the update
    /// is the transaction's first statement, so SQLite takes its write lock
    /// at once; [`StoreError::StaleRevision`] if another change came first.
    async fn write_at_revision(
        &self,
        row: Versioned<'_>,
        revision: i64,
        body: String,
        columns: &[(&str, Option<String>)],
        entries: &[NewLogEntry<'_>],
    ) -> Result<()> {
        let n = columns.len();
        let sets: String = columns
            .iter()
            .enumerate()
            .map(|(i, (c, _))| format!("{c} = ${}, ", i + 1))
            .collect();
        let sql = format!(
            "UPDATE {} SET {sets}revision = ${}, body = ${} WHERE {} = ${} AND revision = ${}",
            row.table,
            n + 1,
            n + 2,
            row.key_column,
            n + 3,
            n + 4
        );
        let mut tx = self.begin().await?;
        let mut query = sqlx::query(&sql);
        for (_, value) in columns {
            query = query.bind(value.clone());
        }
        let changed = query
            .bind(revision + 1)
            .bind(body)
            .bind(row.key)
            .bind(revision)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::StaleRevision(format!(
                "{} '{}'",
                row.what, row.key
            )));
        }
        for entry in entries {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Consumer negotiations with something for this trust to send: an
    /// agreement to verify, a finalised one to transfer under.
    pub async fn consumer_negotiations_to_advance(
        &self,
        now: &str,
    ) -> Result<Vec<(ConsumerNegotiation, i64)>> {
        let rows = sqlx::query(
            "SELECT body, revision FROM dsp_consumer_negotiations \
             WHERE (state = 'AGREED' OR (state = 'FINALIZED' AND transfer_pid IS NULL)) \
             AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY consumer_pid LIMIT 500",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consumer_from_row).collect()
    }

    /// Every consumer negotiation, newest first.
    pub async fn list_consumer_negotiations(&self) -> Result<Vec<ConsumerNegotiation>> {
        let rows = sqlx::query("SELECT body, revision FROM dsp_consumer_negotiations")
            .fetch_all(&self.pool)
            .await?;
        let mut all = rows
            .iter()
            .map(|r| consumer_from_row(r).map(|(n, _)| n))
            .collect::<Result<Vec<_>>>()?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(all)
    }
}
