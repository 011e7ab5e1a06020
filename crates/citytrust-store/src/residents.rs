//! Residents' rows (R-CIT-1 … R-CIT-8): the subject index of personal
//! datasets, link codes and links, consents, reads of personal data, subject
//! requests, commitments, dates of birth, the inbox and breaches. Documents
//! are the model's JSON beside the columns lookups need.

use citytrust_model::residents::{Breach, Consent, InboxMessage, SubjectLink, SubjectRequest};
use sqlx::Row;

use crate::{NewLogEntry, Result, Store, StoreError, StoredVersion, append_entry, conflict, json};

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Put messages (each for its username) in the inbox, inside the
/// transaction of the change that sends them.
pub(crate) async fn insert_inbox(
    tx: &mut crate::Tx,
    messages: &[(String, InboxMessage)],
) -> Result<()> {
    for (username, message) in messages {
        sqlx::query("INSERT INTO inbox (id, username, created_at, body) VALUES ($1, $2, $3, $4)")
            .bind(&message.id)
            .bind(username)
            .bind(&message.at)
            .bind(json(message)?)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Rows per multi-row INSERT (3 values each: well under either backend's bind limit).
const CHUNK: usize = 1000;

/// A consent row: the document, its owner, and the subjects revisions its changes made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConsent {
    pub username: String,
    pub given_rev: i64,
    pub withdrawn_rev: Option<i64>,
    pub consent: Consent,
}

/// A read of a personal dataset, as kept for "who used my data".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalRead {
    pub log_index: i64,
    pub dataset_id: String,
    pub version: i64,
    /// The subject rule the read applied (`only_consenting`, `all_but_objecting`, `all`).
    pub rule: String,
    pub purpose: Option<String>,
    /// The reader's organisations, comma-separated (for matching a consent's recipient).
    pub recipients: String,
    /// The subjects revision the read's filter was computed at.
    pub rev: i64,
    /// RFC 3339.
    pub at: String,
    /// JSON: what the resident is shown (who, level, agreement, kind).
    pub body: String,
}

/// A commitment the public log carries for a resident, with its salt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    pub commitment: String,
    pub salt: String,
    pub kind: String,
    pub created_at: String,
}

/// What an erasure changes in one version's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedVersion {
    pub version: i64,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    pub quality: String,
}

pub(crate) async fn insert_subjects(
    tx: &mut crate::Tx,
    dataset_id: &str,
    version: i64,
    keys: &[String],
) -> Result<()> {
    for chunk in keys.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO subject_index (dataset_id, version, subject_key) VALUES {}",
            tx.backend.value_rows(chunk.len(), 3)
        );
        let mut q = sqlx::query(&sql);
        for k in chunk {
            q = q.bind(dataset_id).bind(version).bind(k);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn bump_subjects_revision(tx: &mut crate::Tx) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE counters SET value = value + 1 WHERE name = 'subjects_revision' RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get("value")?)
}

const REV: &str = "(SELECT value FROM counters WHERE name = 'subjects_revision')";

/// A query for the keys that `inner` (one text column `k`) selects, packed
/// into one row — each key as `<length in characters>:<key>` — with the
/// subjects revision: one statement (one snapshot), and one row to decode
/// instead of one per key (90,000 rows through the driver cost 0.3 s).
fn packed_keys_sql(backend: crate::Backend, inner: &str) -> String {
    let concat = match backend {
        crate::Backend::Sqlite => "group_concat",
        crate::Backend::Postgres => "string_agg",
    };
    format!(
        "SELECT {concat}(CAST(length(k) AS TEXT) || ':' || k, '') AS keys, {REV} AS rev FROM ({inner}) packed"
    )
}

/// The keys and revision of a [`packed_keys_sql`] row.
fn unpack_keys(row: &sqlx::any::AnyRow) -> Result<(Vec<String>, i64)> {
    let rev: i64 = row.try_get("rev")?;
    let packed: Option<String> = row.try_get("keys")?;
    Ok((unpack(packed.as_deref().unwrap_or(""))?, rev))
}

fn unpack(mut text: &str) -> Result<Vec<String>> {
    let bad = || StoreError::Corrupt("packed subject keys".into());
    let mut keys = Vec::new();
    while !text.is_empty() {
        let (n, rest) = text.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().map_err(|_| bad())?;
        let end = rest
            .char_indices()
            .nth(n)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        if rest[..end].chars().count() != n {
            return Err(bad());
        }
        keys.push(rest[..end].to_string());
        text = &rest[end..];
    }
    Ok(keys)
}

fn in_list(first: usize, n: usize) -> String {
    (0..n)
        .map(|i| format!("${}", first + i))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Moves on with every change to consents, links or erased subjects.
    pub async fn subjects_revision(&self) -> Result<i64> {
        self.counter("subjects_revision").await
    }

    /// Subject keys with a consent or donation in force for `purpose` whose
    /// recipient is any or one of `recipients` (erased subjects never), and
    /// the subjects revision they were read at.
    pub async fn consenting_keys(
        &self,
        dataset_id: &str,
        purpose: &str,
        recipients: &[String],
    ) -> Result<(Vec<String>, i64)> {
        let inner = format!(
            "SELECT DISTINCT l.subject_key AS k FROM consents c JOIN subject_links l \
             ON l.username = c.username AND l.dataset_id = c.dataset_id \
             WHERE c.dataset_id = $1 AND c.purpose = $2 AND c.withdrawn_rev IS NULL \
             AND c.kind IN ('consent', 'donation') \
             AND l.subject_key NOT IN (SELECT subject_key FROM erased_subjects WHERE dataset_id = $1) \
             AND (c.recipient IS NULL{})",
            if recipients.is_empty() {
                String::new()
            } else {
                format!(" OR c.recipient IN ({})", in_list(3, recipients.len()))
            }
        );
        let sql = packed_keys_sql(self.backend, &inner);
        let mut q = sqlx::query(&sql).bind(dataset_id).bind(purpose);
        for r in recipients {
            q = q.bind(r);
        }
        unpack_keys(&q.fetch_one(&self.pool).await?)
    }

    /// Subject keys with an objection in force to `purpose` (when given), plus
    /// every erased subject, and the revision they were read at.
    pub async fn excluded_keys(
        &self,
        dataset_id: &str,
        purpose: Option<&str>,
    ) -> Result<(Vec<String>, i64)> {
        let inner = "SELECT l.subject_key AS k FROM consents c JOIN subject_links l \
             ON l.username = c.username AND l.dataset_id = c.dataset_id \
             WHERE c.dataset_id = $1 AND c.purpose = $2 AND c.withdrawn_rev IS NULL \
             AND c.kind = 'objection' \
             UNION SELECT subject_key FROM erased_subjects WHERE dataset_id = $1";
        let sql = packed_keys_sql(self.backend, inner);
        let row = sqlx::query(&sql)
            .bind(dataset_id)
            .bind(purpose.unwrap_or(""))
            .fetch_one(&self.pool)
            .await?;
        unpack_keys(&row)
    }

    pub async fn erased_keys(&self, dataset_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT subject_key FROM erased_subjects WHERE dataset_id = $1")
            .bind(dataset_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("subject_key")?))
            .collect()
    }

    /// The revision at which `key` was erased from `dataset_id`, if it was.
    pub async fn erased_rev(&self, dataset_id: &str, key: &str) -> Result<Option<i64>> {
        let row = sqlx::query(
            "SELECT erased_rev FROM erased_subjects WHERE dataset_id = $1 AND subject_key = $2",
        )
        .bind(dataset_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("erased_rev")).transpose()?)
    }

    /// Whether `key` appears in any version of `dataset_id` (erased or not).
    pub async fn subject_known(&self, dataset_id: &str, key: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM subject_index WHERE dataset_id = $1 AND subject_key = $2",
        )
        .bind(dataset_id)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The published versions still holding `key`'s rows (not a stream's
    /// live entities, which are found by reading them).
    pub async fn versions_holding(&self, dataset_id: &str, key: &str) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT version FROM subject_index WHERE dataset_id = $1 AND subject_key = $2 \
             AND erased = 0 AND version <> $3 ORDER BY version",
        )
        .bind(dataset_id)
        .bind(key)
        .bind(crate::STREAM_VERSION)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<i64, _>("version")?))
            .collect()
    }

    // ---- link codes and links -------------------------------------------

    pub async fn insert_link_code(
        &self,
        code_hash: &str,
        dataset_id: &str,
        subject_key: &str,
        issued_by: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO link_codes (code_hash, dataset_id, subject_key, issued_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(code_hash)
        .bind(dataset_id)
        .bind(subject_key)
        .bind(issued_by)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, "link code".into()))?;
        Ok(())
    }

    /// Use a code once: link `username` to the subject it names, with the log
    /// entry, in one transaction. `None`: no such unused, unexpired code.
    /// `Err(Conflict)`: the subject is already linked to an account.
    pub async fn redeem_link_code(
        &self,
        code_hash: &str,
        username: &str,
        now: i64,
        linked_at: &str,
        via: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<Option<SubjectLink>> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE link_codes SET used_by = $2, used_at = $3 \
             WHERE code_hash = $1 AND used_by IS NULL AND expires_at > $4 \
             RETURNING dataset_id, subject_key",
        )
        .bind(code_hash)
        .bind(username)
        .bind(linked_at)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let link = SubjectLink {
            dataset_id: row.try_get("dataset_id")?,
            subject_key: row.try_get("subject_key")?,
            via: via.to_string(),
            linked_at: linked_at.to_string(),
        };
        insert_link_row(&mut tx, username, &link).await?;
        bump_subjects_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(Some(link))
    }

    /// Link directly (an identity provider's verified claim; the demo loader).
    pub async fn insert_link(
        &self,
        username: &str,
        link: &SubjectLink,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_link_row(&mut tx, username, link).await?;
        bump_subjects_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn links_of(&self, username: &str) -> Result<Vec<SubjectLink>> {
        let rows = sqlx::query(
            "SELECT dataset_id, subject_key, via, linked_at FROM subject_links \
             WHERE username = $1 ORDER BY dataset_id, subject_key",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SubjectLink {
                    dataset_id: r.try_get("dataset_id")?,
                    subject_key: r.try_get("subject_key")?,
                    via: r.try_get("via")?,
                    linked_at: r.try_get("linked_at")?,
                })
            })
            .collect()
    }

    /// Who is linked to `key` in `dataset_id`, if anyone.
    pub async fn holder_of(&self, dataset_id: &str, key: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT username FROM subject_links WHERE dataset_id = $1 AND subject_key = $2",
        )
        .bind(dataset_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("username")).transpose()?)
    }

    // ---- consents ---------------------------------------------------------

    /// Record a consent (with its commitment and log entry) in one transaction.
    pub async fn insert_consent(
        &self,
        c: &StoredConsent,
        commitment: &Commitment,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO consents (id, username, kind, dataset_id, purpose, recipient, given_at, given_rev, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8)",
        )
        .bind(&c.consent.id)
        .bind(&c.username)
        .bind(c.consent.kind.as_str())
        .bind(&c.consent.dataset_id)
        .bind(&c.consent.purpose)
        .bind(&c.consent.recipient_organization_id)
        .bind(&c.consent.given_at)
        .bind(json(&c.consent)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("consent '{}'", c.consent.id)))?;
        insert_commitment(&mut tx, &c.username, commitment).await?;
        let rev = bump_subjects_revision(&mut tx).await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = c.consent.clone();
        doc.log_entries.push(idx);
        sqlx::query("UPDATE consents SET body = $2, given_rev = $3 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .bind(rev)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mark a consent withdrawn (if it still is in force), in one transaction
    /// with its commitment and log entry. `false`: it was already withdrawn.
    pub async fn withdraw_consent(
        &self,
        c: &StoredConsent,
        commitment: &Commitment,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let rev = bump_subjects_revision(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE consents SET withdrawn_at = $2, withdrawn_rev = $3 WHERE id = $1 AND withdrawn_rev IS NULL",
        )
        .bind(&c.consent.id)
        .bind(&c.consent.withdrawn_at)
        .bind(rev)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        insert_commitment(&mut tx, &c.username, commitment).await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = c.consent.clone();
        doc.log_entries.push(idx);
        sqlx::query("UPDATE consents SET body = $2 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn consents_of(&self, username: &str) -> Result<Vec<StoredConsent>> {
        let rows = sqlx::query(
            "SELECT username, given_rev, withdrawn_rev, body FROM consents WHERE username = $1 \
             ORDER BY given_rev DESC, id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(consent_from_row).collect()
    }

    pub async fn get_consent(&self, id: &str) -> Result<Option<StoredConsent>> {
        let row = sqlx::query(
            "SELECT username, given_rev, withdrawn_rev, body FROM consents WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(consent_from_row).transpose()
    }

    // ---- reads of personal data --------------------------------------------

    pub async fn insert_personal_read(&self, r: &PersonalRead) -> Result<()> {
        sqlx::query(
            "INSERT INTO personal_reads (log_index, dataset_id, version, rule, purpose, recipients, rev, at, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(r.log_index)
        .bind(&r.dataset_id)
        .bind(r.version)
        .bind(&r.rule)
        .bind(&r.purpose)
        .bind(&r.recipients)
        .bind(r.rev)
        .bind(&r.at)
        .bind(&r.body)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reads whose scope included `username`'s records (newest first, those
    /// below `before` when given, at most `limit`), with the subject key each
    /// concerned: the version read held the key, the subject was not erased
    /// before the read, and the read's subject rule admitted them at the
    /// subjects revision it was decided at — a consent (or donation) in force
    /// for its purpose and one of its recipients, or no objection in force,
    /// or a rule that admits everyone.
    ///
    /// Each (version, rule) — and for consent-based reads each consent — is
    /// one walk down an index in log order that stops at `limit` matches, so
    /// a resident read every day is answered from the newest entries alone. A
    /// consent-based walk stops, too, at the entry that recorded the consent:
    /// a read decided after it was logged after it.
    pub async fn reads_touching(
        &self,
        username: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<(PersonalRead, String)>> {
        const COLUMNS: &str = "r.log_index, r.dataset_id, r.version, r.rule, r.purpose, r.recipients, r.rev, r.at, r.body";
        let before = before.unwrap_or(i64::MAX);
        let held = sqlx::query(
            "SELECT l.dataset_id, l.subject_key, s.version, e.erased_rev FROM subject_links l \
             JOIN subject_index s ON s.dataset_id = l.dataset_id AND s.subject_key = l.subject_key \
             LEFT JOIN erased_subjects e ON e.dataset_id = l.dataset_id AND e.subject_key = l.subject_key \
             WHERE l.username = $1",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        let consents = self.consents_of(username).await?;
        let mut found: Vec<(PersonalRead, String)> = Vec::new();
        for row in &held {
            let dataset: String = row.try_get("dataset_id")?;
            let key: String = row.try_get("subject_key")?;
            let version: i64 = row.try_get("version")?;
            let erased: Option<i64> = row.try_get("erased_rev")?;
            let mut rows = Vec::new();
            // Reads whose rule admits everyone, or everyone who had not objected.
            for rule in ["all", "all_but_objecting"] {
                let objection = if rule == "all_but_objecting" {
                    " AND NOT EXISTS (SELECT 1 FROM consents c WHERE c.username = $5 \
                       AND c.dataset_id = r.dataset_id AND c.purpose = r.purpose AND c.kind = 'objection' \
                       AND c.given_rev <= r.rev AND (c.withdrawn_rev IS NULL OR c.withdrawn_rev > r.rev))"
                } else {
                    ""
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM personal_reads r WHERE r.dataset_id = $1 AND r.version = $2 \
                     AND r.rule = '{rule}' AND r.log_index < $3{objection} \
                     ORDER BY r.log_index DESC LIMIT $4"
                );
                let mut q = sqlx::query(&sql)
                    .bind(&dataset)
                    .bind(version)
                    .bind(before)
                    .bind(limit);
                if !objection.is_empty() {
                    q = q.bind(username);
                }
                rows.extend(q.fetch_all(&self.pool).await?);
            }
            // Consent-based reads, each consent's window of revisions.
            for c in consents.iter().filter(|c| {
                c.consent.dataset_id == dataset
                    && matches!(
                        c.consent.kind,
                        citytrust_model::residents::ChoiceKind::Consent
                            | citytrust_model::residents::ChoiceKind::Donation
                    )
            }) {
                let after = c.consent.log_entries.first().copied().unwrap_or(-1);
                let mut next = 8;
                let recipient = if c.consent.recipient_organization_id.is_some() {
                    next += 1;
                    " AND (',' || r.recipients || ',') LIKE ('%,' || $8 || ',%')"
                } else {
                    ""
                };
                // A consent in force: walk down from the newest read. A
                // withdrawn one: the reads decided in its window of revisions
                // (by the rev index), however long ago it ended.
                let open = c.withdrawn_rev.is_none();
                let order = if open {
                    format!(" ORDER BY r.log_index DESC LIMIT ${next}")
                } else {
                    String::new()
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM personal_reads r WHERE r.dataset_id = $1 AND r.version = $2 \
                     AND r.rule = 'only_consenting' AND r.purpose = $3 AND r.log_index < $4 AND r.log_index > $5 \
                     AND r.rev >= $6 AND r.rev < $7{recipient}{order}"
                );
                let mut q = sqlx::query(&sql)
                    .bind(&dataset)
                    .bind(version)
                    .bind(&c.consent.purpose)
                    .bind(before)
                    .bind(after)
                    .bind(c.given_rev)
                    .bind(c.withdrawn_rev.unwrap_or(i64::MAX));
                if let Some(r) = &c.consent.recipient_organization_id {
                    q = q.bind(r);
                }
                if open {
                    q = q.bind(limit);
                }
                rows.extend(q.fetch_all(&self.pool).await?);
            }
            for r in &rows {
                let read = personal_read_from_row(r)?;
                if erased.is_none_or(|g| g > read.rev) {
                    found.push((read, key.clone()));
                }
            }
        }
        found.sort_by(|a, b| {
            (b.0.log_index, &b.0.dataset_id).cmp(&(a.0.log_index, &a.0.dataset_id))
        });
        found.dedup_by(|a, b| a.0.log_index == b.0.log_index && a.0.dataset_id == b.0.dataset_id);
        found.truncate(usize::try_from(limit).unwrap_or(0));
        Ok(found)
    }

    // ---- subject requests ---------------------------------------------------

    pub async fn insert_subject_request(
        &self,
        r: &SubjectRequest,
        due_on: i64,
        commitment: &Commitment,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO subject_requests (id, username, dataset_id, status, due_on, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&r.id)
        .bind(&r.username)
        .bind(&r.dataset_id)
        .bind(r.status.as_str())
        .bind(due_on)
        .bind(json(r)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("request '{}'", r.id)))?;
        insert_commitment(&mut tx, &r.username, commitment).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Save an answered request (with its log entry); `false` if it was no longer open.
    pub async fn answer_subject_request(
        &self,
        r: &SubjectRequest,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE subject_requests SET status = $2, body = $3 WHERE id = $1 AND status = 'open'",
        )
        .bind(&r.id)
        .bind(r.status.as_str())
        .bind(json(r)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn subject_requests_of(&self, username: &str) -> Result<Vec<SubjectRequest>> {
        let rows = sqlx::query(
            "SELECT body FROM subject_requests WHERE username = $1 ORDER BY due_on DESC, id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "subject request"))
            .collect()
    }

    /// Requests about the given datasets (an owner's queue), open ones first by deadline.
    pub async fn subject_requests_for(&self, datasets: &[String]) -> Result<Vec<SubjectRequest>> {
        if datasets.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT body FROM subject_requests WHERE dataset_id IN ({}) \
             ORDER BY CASE WHEN status = 'open' THEN 0 ELSE 1 END, due_on, id",
            in_list(1, datasets.len())
        );
        let mut q = sqlx::query(&sql);
        for d in datasets {
            q = q.bind(d);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "subject request"))
            .collect()
    }

    pub async fn get_subject_request(&self, id: &str) -> Result<Option<SubjectRequest>> {
        let row = sqlx::query("SELECT body FROM subject_requests WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(&r.try_get::<String, _>("body")?, "subject request"))
            .transpose()
    }

    // ---- erasure --------------------------------------------------------------

    /// After the files were rewritten: the versions' new sizes and digests, the
    /// subject marked erased (kept in the index for "who used my data"), the
    /// request answered, and the log entry, in one transaction.
    pub async fn record_erasure(
        &self,
        dataset_id: &str,
        subject_key: &str,
        versions: &[ErasedVersion],
        stream: Option<&crate::StreamErasure>,
        request: Option<&SubjectRequest>,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        crate::streams::erase_entities(&mut tx, dataset_id, stream).await?;
        for v in versions {
            sqlx::query(
                "UPDATE dataset_versions SET row_count = $3, bytes = $4, sha256 = $5, quality = $6 \
                 WHERE dataset_id = $1 AND version = $2",
            )
            .bind(dataset_id)
            .bind(v.version)
            .bind(v.rows)
            .bind(v.bytes)
            .bind(&v.sha256)
            .bind(&v.quality)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE subject_index SET erased = 1 WHERE dataset_id = $1 AND subject_key = $2",
        )
        .bind(dataset_id)
        .bind(subject_key)
        .execute(&mut *tx)
        .await?;
        let rev = bump_subjects_revision(&mut tx).await?;
        sqlx::query(
            "INSERT INTO erased_subjects (dataset_id, subject_key, erased_rev) VALUES ($1, $2, $3) \
             ON CONFLICT (dataset_id, subject_key) DO NOTHING",
        )
        .bind(dataset_id)
        .bind(subject_key)
        .bind(rev)
        .execute(&mut *tx)
        .await?;
        if let Some(r) = request {
            sqlx::query("UPDATE subject_requests SET status = $2, body = $3 WHERE id = $1")
                .bind(&r.id)
                .bind(r.status.as_str())
                .bind(json(r)?)
                .execute(&mut *tx)
                .await?;
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn version_row(&self, dataset_id: &str, version: i64) -> Result<StoredVersion> {
        self.get_version(dataset_id, Some(version))
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("no version {version} of {dataset_id}")))
    }

    // ---- commitments, birth dates, inbox, breaches ---------------------------

    /// Keep a commitment's salt for its resident (entries appended outside a
    /// store transaction: reads, exports).
    pub async fn insert_commitment(&self, username: &str, c: &Commitment) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_commitment(&mut tx, username, c).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The ids of the datasets an organisation owns.
    pub async fn dataset_ids_owned_by(&self, organization_id: &str) -> Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT id FROM datasets WHERE owner_organization_id = $1 ORDER BY id")
                .bind(organization_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("id")?))
            .collect()
    }

    pub async fn commitments_of(&self, username: &str) -> Result<Vec<Commitment>> {
        let rows = sqlx::query(
            "SELECT commitment, salt, kind, created_at FROM subject_commitments WHERE username = $1 \
             ORDER BY created_at DESC, commitment",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Commitment {
                    commitment: r.try_get("commitment")?,
                    salt: r.try_get("salt")?,
                    kind: r.try_get("kind")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn set_birth_day(&self, username: &str, day: i64, checked_by: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO birth_dates (username, birth_day, checked_by) VALUES ($1, $2, $3) \
             ON CONFLICT (username) DO UPDATE SET birth_day = $2, checked_by = $3",
        )
        .bind(username)
        .bind(day)
        .bind(checked_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn birth_day(&self, username: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT birth_day FROM birth_dates WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("birth_day")).transpose()?)
    }

    /// A breach, the notices to the people it reached and its log entry, in
    /// one transaction; the entry's index is kept in the breach's document.
    pub async fn insert_breach(
        &self,
        breach: &Breach,
        messages: &[(String, InboxMessage)],
        entry: &NewLogEntry<'_>,
    ) -> Result<Breach> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = breach.clone();
        doc.log_entries.push(idx);
        sqlx::query("INSERT INTO breaches (id, created_at, body) VALUES ($1, $2, $3)")
            .bind(&doc.id)
            .bind(&doc.registered_at)
            .bind(json(&doc)?)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("breach '{}'", doc.id)))?;
        insert_inbox(&mut tx, messages).await?;
        tx.commit().await?;
        Ok(doc)
    }

    /// Save a breach's new state with its log entry, only if it is still at
    /// `expected` regulator state (`None`: not yet notified). `None` back: it moved on.
    pub async fn update_breach(
        &self,
        breach: &Breach,
        entry: &NewLogEntry<'_>,
    ) -> Result<Option<Breach>> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query("SELECT body FROM breaches WHERE id = $1")
            .bind(&breach.id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let stored: Breach = parse(&row.try_get::<String, _>("body")?, "breach")?;
        if stored.regulator_notified_at.is_some() {
            return Ok(None);
        }
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = breach.clone();
        doc.log_entries = stored.log_entries;
        doc.log_entries.push(idx);
        sqlx::query("UPDATE breaches SET body = $2 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(doc))
    }

    pub async fn breaches(&self) -> Result<Vec<Breach>> {
        let rows = sqlx::query("SELECT body FROM breaches ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "breach"))
            .collect()
    }

    pub async fn get_breach(&self, id: &str) -> Result<Option<Breach>> {
        let row = sqlx::query("SELECT body FROM breaches WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(&r.try_get::<String, _>("body")?, "breach"))
            .transpose()
    }

    /// A person's messages, newest first (at most 200).
    pub async fn inbox_of(&self, username: &str) -> Result<Vec<InboxMessage>> {
        let rows = sqlx::query(
            "SELECT body FROM inbox WHERE username = $1 ORDER BY created_at DESC, id LIMIT 200",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?, "message"))
            .collect()
    }

    /// Logged reads of personal data in `dataset_id` at or after `from` and
    /// before `until` (RFC 3339 strings; either open), oldest first.
    pub async fn personal_reads_of(
        &self,
        dataset_id: &str,
        from: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<PersonalRead>> {
        let rows = sqlx::query(
            "SELECT log_index, dataset_id, version, rule, purpose, recipients, rev, at, body \
             FROM personal_reads WHERE dataset_id = $1 AND at >= $2 AND at < $3 ORDER BY log_index",
        )
        .bind(dataset_id)
        .bind(from.unwrap_or(""))
        .bind(until.unwrap_or("9999-12-31T23:59:59Z"))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(personal_read_from_row).collect()
    }

    /// The people linked to records in `dataset_id`, with the key of each.
    pub async fn links_in(&self, dataset_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT username, subject_key FROM subject_links WHERE dataset_id = $1 ORDER BY username",
        )
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("username")?, r.try_get("subject_key")?)))
            .collect()
    }

    /// The distinct subject keys the given versions of `dataset_id` held (every
    /// version: `None`), erased ones included: a breach before the erasure reached them.
    pub async fn subjects_in(
        &self,
        dataset_id: &str,
        versions: Option<&[i64]>,
    ) -> Result<Vec<String>> {
        let sql = match versions {
            Some([]) => return Ok(Vec::new()),
            Some(v) => format!(
                "SELECT DISTINCT subject_key FROM subject_index WHERE dataset_id = $1 AND version IN ({}) \
                 ORDER BY subject_key",
                in_list(2, v.len())
            ),
            None => "SELECT DISTINCT subject_key FROM subject_index WHERE dataset_id = $1 ORDER BY subject_key".into(),
        };
        let mut q = sqlx::query(&sql).bind(dataset_id);
        for v in versions.unwrap_or_default() {
            q = q.bind(*v);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("subject_key")?))
            .collect()
    }

    /// The signed log entries carrying one of `username`'s commitments, newest
    /// first: `(index, type, day, commitment)`.
    pub async fn entries_about(
        &self,
        username: &str,
    ) -> Result<Vec<(i64, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT DISTINCT i.idx, i.kind, i.day, i.subject FROM subject_commitments c \
             JOIN ledger_index i ON i.subject = c.commitment WHERE c.username = $1 \
             ORDER BY i.idx DESC LIMIT 500",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("idx")?,
                    r.try_get("kind")?,
                    r.try_get("day")?,
                    r.try_get("subject")?,
                ))
            })
            .collect()
    }
}

async fn insert_link_row(tx: &mut crate::Tx, username: &str, link: &SubjectLink) -> Result<()> {
    sqlx::query(
        "INSERT INTO subject_links (username, dataset_id, subject_key, via, linked_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(username)
    .bind(&link.dataset_id)
    .bind(&link.subject_key)
    .bind(&link.via)
    .bind(&link.linked_at)
    .execute(&mut **tx)
    .await
    .map_err(|e| conflict(e, "a link to these records".into()))?;
    Ok(())
}

async fn insert_commitment(tx: &mut crate::Tx, username: &str, c: &Commitment) -> Result<()> {
    sqlx::query(
        "INSERT INTO subject_commitments (commitment, username, salt, kind, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&c.commitment)
    .bind(username)
    .bind(&c.salt)
    .bind(&c.kind)
    .bind(&c.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn consent_from_row(r: &sqlx::any::AnyRow) -> Result<StoredConsent> {
    Ok(StoredConsent {
        username: r.try_get("username")?,
        given_rev: r.try_get("given_rev")?,
        withdrawn_rev: r.try_get("withdrawn_rev")?,
        consent: parse(&r.try_get::<String, _>("body")?, "consent")?,
    })
}

fn personal_read_from_row(r: &sqlx::any::AnyRow) -> Result<PersonalRead> {
    Ok(PersonalRead {
        log_index: r.try_get("log_index")?,
        dataset_id: r.try_get("dataset_id")?,
        version: r.try_get("version")?,
        rule: r.try_get("rule")?,
        purpose: r.try_get("purpose")?,
        recipients: r.try_get("recipients")?,
        rev: r.try_get("rev")?,
        at: r.try_get("at")?,
        body: r.try_get("body")?,
    })
}

#[cfg(test)]
mod tests {
    use super::unpack;

    #[test]
    fn packed_keys_come_back_exactly() {
        assert_eq!(unpack("").unwrap(), Vec::<String>::new());
        assert_eq!(
            unpack("5:H00017:a:b,c:d0:3:çé€").unwrap(),
            ["H0001", "a:b,c:d", "", "çé€"]
        );
        for bad in ["5:H00", "x:abc", "3abc", "2:é"] {
            assert!(unpack(bad).is_err(), "{bad}");
        }
    }
}
