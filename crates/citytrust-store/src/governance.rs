//! Access governance rows: the purpose taxonomy, charter versions, access
//! requests and data sharing agreements. Requests and agreements are stored
//! as the model's JSON documents beside the columns lookups need.

use citytrust_model::access::{AccessRequest, Agreement, Purpose, parse_day};
use sqlx::Row;

use crate::{NewLogEntry, Result, Store, StoreError, append_entry, conflict, json};

/// One version of the charter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCharter {
    pub version: i64,
    pub text: String,
    pub note: String,
    pub created_by: String,
    pub created_at: String,
    /// The plain-language digital ethics code published with this version (R-PAR-1).
    pub ethics_code: String,
    /// The consultation that informed this version, if any (R-PAR-3).
    pub consultation_id: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn day(text: &str, what: &str) -> Result<i64> {
    parse_day(text).ok_or_else(|| StoreError::Corrupt(format!("{what}: not a date: {text}")))
}

/// The tables whose changes do not move the governance revision
/// (migration 27 says why each is left out): written at every read, write
/// or notification, and read by no read decision. Every other table moves
/// it, and the store does not open if one does not.
pub const UNGOVERNED_TABLES: &[&str] = &[
    "sqlite_sequence",
    "citytrust_migrations",
    "counters",
    "ngsi_entities",
    "ngsi_history",
    "ngsi_notifications",
    "ngsi_subscriptions",
    "stream_revisions",
    "ledger_checkpoints",
    "ledger_entries",
    "ledger_index",
    "ledger_tiles",
    "checkpoint_cosignatures",
    "witnessed_checkpoints",
    "witness_evidence",
    "personal_reads",
    "subject_index",
    "sessions",
    "api_tokens",
    "oidc_logins",
];

impl Store {
    /// The governance revision: moved, in the same transaction, by every
    /// change to a table a read decision may read (all but
    /// [`UNGOVERNED_TABLES`]). A decision made after reading it stands
    /// while it does not move (and the day does not change).
    pub async fn governance_revision(&self) -> Result<i64> {
        self.counter("governance_revision").await
    }

    /// The `subscriptions_revision` and the governance revision, in one
    /// read (a notification pass needs both at its start).
    pub async fn pass_revisions(&self) -> Result<(i64, i64)> {
        let rows = sqlx::query(
            "SELECT name, value FROM counters \
             WHERE name IN ('subscriptions_revision', 'governance_revision')",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = (None, None);
        for r in &rows {
            let value: i64 = r.try_get("value")?;
            match r.try_get::<String, _>("name")?.as_str() {
                "subscriptions_revision" => out.0 = Some(value),
                _ => out.1 = Some(value),
            }
        }
        match out {
            (Some(s), Some(g)) => Ok((s, g)),
            _ => Err(StoreError::Corrupt(
                "the subscriptions or governance revision counter is missing".into(),
            )),
        }
    }

    /// The taxonomy, in the order purposes were added.
    pub async fn list_purposes(&self) -> Result<Vec<Purpose>> {
        let rows = sqlx::query("SELECT body FROM purposes ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "purpose"))
            .collect()
    }

    /// Add a purpose (with its log entry); an existing id is a `Conflict`.
    pub async fn insert_purpose(
        &self,
        purpose: &Purpose,
        at: &str,
        entry: Option<&NewLogEntry<'_>>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO purposes (id, body, created_at) VALUES ($1, $2, $3)")
            .bind(&purpose.id)
            .bind(json(purpose)?)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("purpose '{}'", purpose.id)))?;
        if let Some(entry) = entry {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The charter in force (the highest version), if any was stored.
    pub async fn current_charter(&self) -> Result<Option<StoredCharter>> {
        let row = sqlx::query(
            "SELECT version, text, note, created_by, created_at, ethics_code, consultation_id FROM charters ORDER BY version DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| charter_from_row(&r)).transpose()
    }

    /// The number of the charter in force (cheap: asked before every decision).
    pub async fn current_charter_version(&self) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT MAX(version) AS v FROM charters")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("v")?)
    }

    /// Every version, newest first.
    pub async fn list_charters(&self) -> Result<Vec<StoredCharter>> {
        let rows = sqlx::query(
            "SELECT version, text, note, created_by, created_at, ethics_code, consultation_id FROM charters ORDER BY version DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(charter_from_row).collect()
    }

    /// Store a new charter version; its number must be the next one (another
    /// node having stored it first is a `Conflict`).
    pub async fn insert_charter(
        &self,
        charter: &StoredCharter,
        entry: Option<&NewLogEntry<'_>>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO charters (version, text, note, created_by, created_at, ethics_code, consultation_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(charter.version)
        .bind(&charter.text)
        .bind(&charter.note)
        .bind(&charter.created_by)
        .bind(&charter.created_at)
        .bind(&charter.ethics_code)
        .bind(&charter.consultation_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("charter version {}", charter.version)))?;
        if let Some(entry) = entry {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_access_request(&self, id: &str) -> Result<Option<(AccessRequest, i64)>> {
        let row = sqlx::query("SELECT body, revision FROM access_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                parse(&r.try_get::<String, _>("body")?, "access request")?,
                r.try_get("revision")?,
            ))
        })
        .transpose()
    }

    /// Requests by one person, or in some states, newest first.
    pub async fn list_access_requests(
        &self,
        requester: Option<&str>,
        statuses: &[&str],
        limit: i64,
    ) -> Result<Vec<AccessRequest>> {
        let mut sql = String::from("SELECT body FROM access_requests WHERE 1 = 1");
        if requester.is_some() {
            sql.push_str(" AND requester = $1");
        }
        if !statuses.is_empty() {
            let first = if requester.is_some() { 2 } else { 1 };
            let marks: Vec<String> = (0..statuses.len())
                .map(|i| format!("${}", first + i))
                .collect();
            sql.push_str(&format!(" AND status IN ({})", marks.join(", ")));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT {}",
            limit.max(1)
        ));
        let mut q = sqlx::query(&sql);
        if let Some(r) = requester {
            q = q.bind(r);
        }
        for s in statuses {
            q = q.bind(*s);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "access request"))
            .collect()
    }

    /// Save a request: a new one (`expected_revision` `None`) or a change to
    /// the revision read; with the agreement it made, if any, and its log
    /// entries, all in one transaction.
    pub async fn save_access_request(
        &self,
        request: &AccessRequest,
        expected_revision: Option<i64>,
        agreement: Option<&Agreement>,
        entries: &[NewLogEntry<'_>],
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let revision = match expected_revision {
            None => {
                sqlx::query(
                    "INSERT INTO access_requests (id, requester, status, revision, body, created_at, updated_at) \
                     VALUES ($1, $2, $3, 1, $4, $5, $6)",
                )
                .bind(&request.id)
                .bind(&request.requester)
                .bind(request.status.as_str())
                .bind(json(request)?)
                .bind(&request.created_at)
                .bind(&request.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| conflict(e, format!("access request '{}'", request.id)))?;
                1
            }
            Some(expected) => {
                let done = sqlx::query(
                    "UPDATE access_requests SET status = $1, revision = $2, body = $3, updated_at = $4 \
                     WHERE id = $5 AND revision = $6",
                )
                .bind(request.status.as_str())
                .bind(expected + 1)
                .bind(json(request)?)
                .bind(&request.updated_at)
                .bind(&request.id)
                .bind(expected)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    return Err(StoreError::StaleRevision(format!(
                        "access request '{}'",
                        request.id
                    )));
                }
                expected + 1
            }
        };
        if let Some(agreement) = agreement {
            // A renewal or amendment supersedes the version in force.
            sqlx::query("UPDATE agreements SET status = 'superseded' WHERE id = $1 AND version < $2 AND status = 'active'")
                .bind(&agreement.id)
                .bind(agreement.version)
                .execute(&mut *tx)
                .await?;
            insert_agreement(&mut tx, agreement).await?;
        }
        for entry in entries {
            append_entry(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(revision)
    }

    /// The latest version of an agreement.
    pub async fn get_agreement(&self, id: &str) -> Result<Option<Agreement>> {
        let row =
            sqlx::query("SELECT body FROM agreements WHERE id = $1 ORDER BY version DESC LIMIT 1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| parse(&r.try_get::<String, _>("body")?, "agreement"))
            .transpose()
    }

    /// The latest version of every agreement, newest first.
    pub async fn list_agreements(&self, limit: i64) -> Result<Vec<Agreement>> {
        let rows = sqlx::query(&format!(
            "SELECT a.body FROM agreements a WHERE a.version = \
             (SELECT MAX(b.version) FROM agreements b WHERE b.id = a.id) \
             ORDER BY a.created_at DESC, a.id DESC LIMIT {}",
            limit.max(1)
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "agreement"))
            .collect()
    }

    /// Active agreements naming `dataset_id` for `purpose`, in force on `day`,
    /// whose recipient is one of `recipients` (`organization:…`, `group:…`, `user:…`).
    pub async fn agreements_in_force(
        &self,
        dataset_id: &str,
        purpose: &str,
        recipients: &[String],
        day: i64,
    ) -> Result<Vec<Agreement>> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        let marks: Vec<String> = (0..recipients.len())
            .map(|i| format!("${}", i + 4))
            .collect();
        let sql = format!(
            "SELECT a.body FROM agreements a JOIN agreement_datasets d \
             ON d.agreement_id = a.id AND d.version = a.version \
             WHERE d.dataset_id = $1 AND a.purpose = $2 AND a.status = 'active' \
             AND a.starts_on <= $3 AND a.ends_on >= $3 AND a.recipient IN ({})",
            marks.join(", ")
        );
        let mut q = sqlx::query(&sql).bind(dataset_id).bind(purpose).bind(day);
        for r in recipients {
            q = q.bind(r);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "agreement"))
            .collect()
    }

    /// Record a change of an agreement's state (retired, say) as a new
    /// version, with its log entry; the version read must still be the latest.
    pub async fn save_agreement_version(
        &self,
        agreement: &Agreement,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        // The previous version stops being active (superseded or retired alike).
        sqlx::query("UPDATE agreements SET status = 'superseded' WHERE id = $1 AND version < $2 AND status = 'active'")
            .bind(&agreement.id)
            .bind(agreement.version)
            .execute(&mut *tx)
            .await?;
        insert_agreement(&mut tx, agreement).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_agreement(tx: &mut crate::Tx, agreement: &Agreement) -> Result<()> {
    sqlx::query(
        "INSERT INTO agreements (id, version, status, recipient, purpose, starts_on, ends_on, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&agreement.id)
    .bind(agreement.version)
    .bind(agreement.status.as_str())
    .bind(&agreement.recipient)
    .bind(&agreement.purpose)
    .bind(day(&agreement.starts_on, "agreement start")?)
    .bind(day(&agreement.ends_on, "agreement end")?)
    .bind(json(agreement)?)
    .bind(&agreement.created_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| {
        conflict(
            e,
            format!("agreement '{}' version {}", agreement.id, agreement.version),
        )
    })?;
    for d in &agreement.dataset_ids {
        sqlx::query(
            "INSERT INTO agreement_datasets (agreement_id, version, dataset_id) VALUES ($1, $2, $3)",
        )
        .bind(&agreement.id)
        .bind(agreement.version)
        .bind(d)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn charter_from_row(r: &sqlx::any::AnyRow) -> Result<StoredCharter> {
    Ok(StoredCharter {
        version: r.try_get("version")?,
        text: r.try_get("text")?,
        note: r.try_get("note")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        ethics_code: r.try_get("ethics_code")?,
        consultation_id: r.try_get("consultation_id")?,
    })
}
