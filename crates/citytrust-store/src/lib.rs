//! CityTrust's persistence: organisations, accounts, sessions and tokens, the
//! transparency log's rows and index, the catalogue, versions, feedback and
//! quality rules here; governance, residents, privacy budgets and identity in
//! their own modules. In SQLite (the embedded default) or PostgreSQL (to scale out),
//! through one sqlx `Any` pool. Each backend has its own migrations under
//! `migrations/<backend>/`; the SQL in this file is written to run unchanged
//! on both (`$n` parameters, integers for flags, text for JSON).
//!
//! This is the only crate that knows SQL. It enforces no business rule beyond
//! the schema's constraints: callers (the service crate) decide who may do what.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use citytrust_model::account::{Group, Organization, OrganizationKind, Role, User};
use citytrust_model::catalogue::{Dataset, DatasetMetadata};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

mod governance;
mod identity;
mod migrate;
mod privacy;
mod residents;

pub use governance::StoredCharter;
pub use identity::PendingLogin;
pub use privacy::{Budget, Charge};
pub use residents::{Commitment, ErasedVersion, PersonalRead, StoredConsent};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// Someone else changed the row since it was read.
    #[error("{0} was changed by someone else; reload and try again")]
    StaleRevision(String),
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A user as stored, with the password hash that only authentication may see.
#[derive(Clone)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: Option<String>,
}

/// A browser session or an API token, looked up by the hash of its secret.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    pub username: String,
    /// Only for sessions: the token forms must echo.
    pub csrf_token: Option<String>,
    pub expires_at: i64,
}

/// A transparency-log entry to append with a change: its type, canonical body and time.
#[derive(Debug, Clone, Copy)]
pub struct NewLogEntry<'a> {
    pub kind: &'a str,
    /// The canonical encoding (UTF-8 JSON).
    pub body: &'a str,
    pub at: &'a str,
}

/// One immutable version of a dataset's content, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    pub dataset_id: String,
    pub version: i64,
    pub input_format: String,
    pub rows: i64,
    pub rejected: i64,
    pub bytes: i64,
    pub sha256: String,
    pub source_sha256: String,
    /// JSON: the columns and their types.
    pub columns: String,
    /// JSON: the quality statement.
    pub quality: String,
    pub created_by: String,
    pub created_at: String,
}

/// A report of an error in a dataset, and its answer (the feedback loop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFeedback {
    pub id: String,
    pub dataset_id: String,
    pub version: Option<i64>,
    pub column_name: Option<String>,
    pub row_number: Option<i64>,
    pub description: String,
    pub reported_by: String,
    pub reported_at: String,
    /// `open`, `accepted` or `rejected`.
    pub status: String,
    pub response: Option<String>,
    pub resolved_version: Option<i64>,
    pub answered_by: Option<String>,
    pub answered_at: Option<String>,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: i64,
    /// Lower-case hex.
    pub root: String,
    pub note: String,
    pub created_at: String,
}

/// What one signed log entry is about (one row per dataset it names), for
/// analytics and the register. Derived from the public entry alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerIndexRow {
    pub idx: i64,
    pub kind: String,
    /// `YYYY-MM-DD` (UTC) of the entry's `at`.
    pub day: String,
    pub dataset: Option<String>,
    pub purpose: Option<String>,
    /// Who acted or received: `organization:<id>`, `group:<id>`, `individual`, `public`.
    pub party: Option<String>,
    pub agreement: Option<String>,
    pub request: Option<String>,
    /// The resident commitment the entry carries, if any.
    pub subject: Option<String>,
}

/// A column of `ledger_index` to count entries by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerFacet {
    Day,
    Month,
    Dataset,
    Purpose,
    Party,
}

impl LedgerFacet {
    fn expr(self) -> &'static str {
        match self {
            LedgerFacet::Day => "day",
            LedgerFacet::Month => "SUBSTR(day, 1, 7)",
            LedgerFacet::Dataset => "dataset",
            LedgerFacet::Purpose => "purpose",
            LedgerFacet::Party => "party",
        }
    }
}

/// The database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    /// Open (creating if needed) the SQLite database `citytrust.sqlite` in `data_dir`.
    pub async fn open_data_dir(data_dir: &Path) -> Result<Store> {
        let path = data_dir.join("citytrust.sqlite");
        Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connect to `sqlite://…` or `postgres://…` and bring the schema up to date.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let options = AnyConnectOptions::from_str(url)?;
        let pool_options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                pool_options
                    .max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                // Every commit reaches the disk before it is acknowledged: a
                                // read's log entry must survive a power cut too. Reads'
                                // entries are group-committed, so this costs one fsync per batch.
                                "PRAGMA synchronous = FULL",
                                "PRAGMA foreign_keys = ON",
                                "PRAGMA busy_timeout = 10000",
                            ] {
                                conn.execute(pragma).await?;
                            }
                            Ok(())
                        })
                    })
                    .connect_with(options)
                    .await?
            }
            Backend::Postgres => {
                pool_options
                    .max_connections(16)
                    .connect_with(options)
                    .await?
            }
        };
        let store = Store { pool, backend };
        migrate::run(&store.pool, backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- organisations -------------------------------------------------

    pub async fn insert_organization(
        &self,
        org: &Organization,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, kind, description, url, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.kind.as_str())
        .bind(&org.description)
        .bind(&org.url)
        .bind(&org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("organisation '{}'", org.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_organization(&self, id: &str) -> Result<Option<Organization>> {
        let row = sqlx::query(
            "SELECT id, name, kind, description, url, created_at FROM organizations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| organization_from_row(&r)).transpose()
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query("SELECT id, name, kind, description, url, created_at FROM organizations ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(organization_from_row).collect()
    }

    // ---- users -----------------------------------------------------------

    pub async fn insert_user(&self, user: &User, password_hash: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO users (username, display_name, email, password_hash, is_administrator, is_trustee, \
             is_resident, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(password_hash)
        .bind(flag(user.roles.contains(&Role::Administrator)))
        .bind(flag(user.roles.contains(&Role::Trustee)))
        .bind(flag(user.roles.contains(&Role::Resident)))
        .bind(flag(user.disabled))
        .bind(&user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("user '{}'", user.username)))?;
        for org in &user.organization_ids {
            sqlx::query("INSERT INTO memberships (username, organization_id) VALUES ($1, $2)")
                .bind(&user.username)
                .bind(org)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Active trustees other than `except` (who may not vote on their own request).
    pub async fn count_trustees_except(&self, except: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users WHERE is_trustee = 1 AND disabled = 0 AND username <> $1",
        )
        .bind(except)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    pub async fn get_user(&self, username: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query(
            "SELECT username, display_name, email, password_hash, is_administrator, is_trustee, is_resident, \
             disabled, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let orgs = sqlx::query(
            "SELECT organization_id FROM memberships WHERE username = $1 ORDER BY organization_id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("organization_id"))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(StoredUser {
            password_hash: row.try_get("password_hash")?,
            user: user_from_row(&row, orgs)?,
        }))
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT username, display_name, email, is_administrator, is_trustee, is_resident, disabled, created_at \
             FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        let memberships = sqlx::query(
            "SELECT username, organization_id FROM memberships ORDER BY organization_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let username: String = row.try_get("username")?;
            let mut orgs = Vec::new();
            for m in &memberships {
                if m.try_get::<String, _>("username")? == username {
                    orgs.push(m.try_get("organization_id")?);
                }
            }
            out.push(user_from_row(row, orgs)?);
        }
        Ok(out)
    }

    /// Add a person to an organisation (idempotent).
    pub async fn add_membership(&self, username: &str, organization_id: &str) -> Result<()> {
        let exists = sqlx::query(
            "SELECT 1 AS one FROM memberships WHERE username = $1 AND organization_id = $2",
        )
        .bind(username)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            sqlx::query("INSERT INTO memberships (username, organization_id) VALUES ($1, $2)")
                .bind(username)
                .bind(organization_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The members of one organisation.
    pub async fn organization_members(&self, organization_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT username FROM memberships WHERE organization_id = $1 ORDER BY username",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("username"))
            .collect::<Result<_, _>>()?)
    }

    // ---- groups ------------------------------------------------------------

    pub async fn insert_group(&self, group: &Group, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO org_groups (id, name, description, criteria, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&group.id)
            .bind(&group.name)
            .bind(&group.description)
            .bind(&group.criteria)
            .bind(&group.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("group '{}'", group.id)))?;
        for org in &group.member_organization_ids {
            sqlx::query("INSERT INTO group_members (group_id, organization_id) VALUES ($1, $2)")
                .bind(&group.id)
                .bind(org)
                .execute(&mut *tx)
                .await?;
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT id, name, description, criteria, created_at FROM org_groups ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let members = sqlx::query(
            "SELECT group_id, organization_id FROM group_members ORDER BY organization_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let mut member_organization_ids = Vec::new();
            for m in &members {
                if m.try_get::<String, _>("group_id")? == id {
                    member_organization_ids.push(m.try_get("organization_id")?);
                }
            }
            out.push(Group {
                id,
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                criteria: r.try_get("criteria")?,
                member_organization_ids,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    // ---- sessions and API tokens -------------------------------------------

    pub async fn insert_session(
        &self,
        token_hash: &str,
        username: &str,
        csrf_token: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, username, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(username)
        .bind(csrf_token)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_session(&self, token_hash: &str) -> Result<Option<StoredCredential>> {
        let row = sqlx::query(
            "SELECT username, csrf_token, expires_at FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredCredential {
                username: r.try_get("username")?,
                csrf_token: Some(r.try_get("csrf_token")?),
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_api_token(
        &self,
        token_hash: &str,
        username: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (token_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(username)
            .bind(created_at)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_api_token(&self, token_hash: &str) -> Result<Option<StoredCredential>> {
        let row = sqlx::query("SELECT username, expires_at FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredCredential {
                username: r.try_get("username")?,
                csrf_token: None,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Remove expired sessions and tokens; returns how many went.
    pub async fn purge_expired_credentials(&self, now_unix: i64) -> Result<u64> {
        let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query("DELETE FROM api_tokens WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        let c = self.purge_pending_logins(now_unix).await?;
        Ok(a.rows_affected() + b.rows_affected() + c)
    }

    // ---- the transparency log --------------------------------------------------

    /// How many entries have been appended (committed or not yet integrated).
    pub async fn ledger_size(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM counters WHERE name = 'ledger_size'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    /// Entries `from..` in index order, at most `limit`.
    pub async fn ledger_entries(&self, from: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT idx, body FROM ledger_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
        )
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("idx")?, r.try_get("body")?)))
            .collect()
    }

    pub async fn ledger_entry(&self, idx: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT body FROM ledger_entries WHERE idx = $1")
            .bind(idx)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("body")?)).transpose()
    }

    /// Every stored tree hash, in stored-hash-index order (hex).
    pub async fn ledger_hashes(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT id, hash FROM ledger_hashes ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("hash")?)))
            .collect()
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query("SELECT size, root, note, created_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }

    pub async fn checkpoint_at(&self, size: i64) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, root, note, created_at FROM ledger_checkpoints WHERE size = $1",
        )
        .bind(size)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }

    /// Store the tree hashes of newly integrated entries and the checkpoint that
    /// covers them, together. Another node having done it first is a `Conflict`.
    pub async fn record_integration(
        &self,
        hashes: &[(i64, String)],
        checkpoint: &StoredCheckpoint,
        index: &[LedgerIndexRow],
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        // Multi-row inserts: a checkpoint of 4,096 entries stores ~8,200 hashes.
        const ROWS: usize = 400;
        for chunk in hashes.chunks(ROWS) {
            let mut sql = String::from("INSERT INTO ledger_hashes (id, hash) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
            }
            let mut q = sqlx::query(&sql);
            for (id, hash) in chunk {
                q = q.bind(id).bind(hash);
            }
            q.execute(&mut *tx).await.map_err(|e| {
                conflict(
                    e,
                    format!("tree hash {}", chunk.first().map(|c| c.0).unwrap_or(0)),
                )
            })?;
        }
        sqlx::query(
            "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(checkpoint.size)
        .bind(&checkpoint.root)
        .bind(&checkpoint.note)
        .bind(&checkpoint.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("checkpoint {}", checkpoint.size)))?;
        insert_ledger_index(&mut tx, index, checkpoint.size).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries below this index are in `ledger_index`.
    pub async fn ledger_indexed(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM counters WHERE name = 'ledger_indexed'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Index entries already signed (a log kept before `ledger_index`
    /// existed): `rows` cover the entries up to `upto` (exclusive).
    pub async fn add_ledger_index(&self, rows: &[LedgerIndexRow], upto: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_ledger_index(&mut tx, rows, upto).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Distinct entries of the given kinds counted by `facet` (rows where it is
    /// set), largest first, then by name.
    pub async fn ledger_counts(
        &self,
        facet: LedgerFacet,
        kinds: &[&str],
    ) -> Result<Vec<(String, i64)>> {
        let expr = facet.expr();
        let placeholders: Vec<String> = (1..=kinds.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {expr} AS k, COUNT(DISTINCT idx) AS n FROM ledger_index \
             WHERE kind IN ({}) AND {expr} IS NOT NULL GROUP BY {expr} ORDER BY n DESC, k",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// For each dataset named in more than one entry of `kind`: how many
    /// entries, and how many distinct parties made them.
    pub async fn ledger_repeats(&self, kind: &str) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT dataset, COUNT(DISTINCT idx) AS n, COUNT(DISTINCT party) AS p FROM ledger_index \
             WHERE kind = $1 AND dataset IS NOT NULL GROUP BY dataset HAVING COUNT(DISTINCT idx) > 1 \
             ORDER BY n DESC, dataset",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The signed entries about agreement `id`: those naming it, and those
    /// naming a request that made or amended it. Oldest first, at most `limit`
    /// from index `from`; with the total count.
    pub async fn ledger_entries_of_agreement(
        &self,
        id: &str,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<(i64, String, String)>, i64)> {
        const MATCH: &str = "(agreement = $1 OR request IN \
             (SELECT request FROM ledger_index WHERE agreement = $1 AND request IS NOT NULL))";
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(DISTINCT idx) FROM ledger_index WHERE {MATCH}"
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT idx, kind, day FROM ledger_index WHERE {MATCH} AND idx >= $2 \
             ORDER BY idx LIMIT $3"
        ))
        .bind(id)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, total))
    }

    // ---- the catalogue -------------------------------------------------------

    /// Insert a new catalogue entry (revision 1) and bump the catalogue revision.
    pub async fn insert_dataset(
        &self,
        dataset: &Dataset,
        created_by: Option<&str>,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let metadata = serde_json::to_string(&dataset.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO datasets (id, owner_organization_id, spectrum, title, metadata, created_by, created_at, \
             updated_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&dataset.id)
        .bind(&dataset.metadata.owner_organization_id)
        .bind(dataset.metadata.spectrum.as_str())
        .bind(&dataset.metadata.title)
        .bind(&metadata)
        .bind(created_by)
        .bind(&dataset.created_at)
        .bind(&dataset.updated_at)
        .bind(dataset.revision)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("dataset '{}'", dataset.id)))?;
        write_roles(&mut tx, dataset).await?;
        bump_catalogue_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace a catalogue entry if it is still at `expected_revision`.
    pub async fn update_dataset(
        &self,
        dataset: &Dataset,
        expected_revision: i64,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let metadata = serde_json::to_string(&dataset.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE datasets SET owner_organization_id = $1, spectrum = $2, title = $3, metadata = $4, updated_at = $5, \
             revision = $6 WHERE id = $7 AND revision = $8",
        )
        .bind(&dataset.metadata.owner_organization_id)
        .bind(dataset.metadata.spectrum.as_str())
        .bind(&dataset.metadata.title)
        .bind(&metadata)
        .bind(&dataset.updated_at)
        .bind(dataset.revision)
        .bind(&dataset.id)
        .bind(expected_revision)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::StaleRevision(format!(
                "dataset '{}'",
                dataset.id
            )));
        }
        sqlx::query("DELETE FROM dataset_roles WHERE dataset_id = $1")
            .bind(&dataset.id)
            .execute(&mut *tx)
            .await?;
        write_roles(&mut tx, dataset).await?;
        bump_catalogue_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>> {
        let row = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| dataset_from_row(&r)).transpose()
    }

    /// Every catalogue entry, for building the search index.
    pub async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }

    /// Up to `limit` catalogue entries after `after` in id order: a page for
    /// exports that stream the whole catalogue without holding it.
    pub async fn datasets_after(&self, after: &str, limit: i64) -> Result<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }

    /// How many changes the catalogue has seen; search indexes compare it to know they are current.
    pub async fn catalogue_revision(&self) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM counters WHERE name = 'catalogue_revision'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }
}

impl Store {
    /// Record a new version and its log entry in one transaction. The version
    /// number must be the next one: a concurrent upload that took it first
    /// makes this a `Conflict`.
    /// Record a version (with the subjects it holds, for a personal dataset)
    /// and its log entry in one transaction.
    pub async fn insert_version(
        &self,
        v: &StoredVersion,
        subjects: &[String],
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dataset_versions (dataset_id, version, input_format, row_count, rejected, bytes, sha256, \
             source_sha256, columns, quality, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&v.dataset_id)
        .bind(v.version)
        .bind(&v.input_format)
        .bind(v.rows)
        .bind(v.rejected)
        .bind(v.bytes)
        .bind(&v.sha256)
        .bind(&v.source_sha256)
        .bind(&v.columns)
        .bind(&v.quality)
        .bind(&v.created_by)
        .bind(&v.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("version {} of dataset '{}'", v.version, v.dataset_id)))?;
        residents::insert_subjects(&mut tx, &v.dataset_id, v.version, subjects).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a report, with its log entry, in one transaction.
    pub async fn insert_feedback(&self, f: &StoredFeedback, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO dataset_feedback (id, dataset_id, version, column_name, row_number, description, \
             reported_by, reported_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.id)
        .bind(&f.dataset_id)
        .bind(f.version)
        .bind(&f.column_name)
        .bind(f.row_number)
        .bind(&f.description)
        .bind(&f.reported_by)
        .bind(&f.reported_at)
        .bind(&f.status)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("feedback '{}'", f.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Answer an open report (with its log entry); `false` when it was no longer open.
    pub async fn answer_feedback(
        &self,
        f: &StoredFeedback,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE dataset_feedback SET status = $1, response = $2, resolved_version = $3, answered_by = $4, \
             answered_at = $5 WHERE id = $6 AND status = 'open'",
        )
        .bind(&f.status)
        .bind(&f.response)
        .bind(f.resolved_version)
        .bind(&f.answered_by)
        .bind(&f.answered_at)
        .bind(&f.id)
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

    /// A dataset's reports, oldest first.
    pub async fn list_feedback(&self, dataset_id: &str) -> Result<Vec<StoredFeedback>> {
        let rows = sqlx::query(
            "SELECT id, dataset_id, version, column_name, row_number, description, reported_by, reported_at, \
             status, response, resolved_version, answered_by, answered_at FROM dataset_feedback \
             WHERE dataset_id = $1 ORDER BY reported_at, id",
        )
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(feedback_from_row).collect()
    }

    /// A dataset's versions, newest first.
    pub async fn list_versions(&self, dataset_id: &str) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(
            "SELECT dataset_id, version, input_format, row_count, rejected, bytes, sha256, source_sha256, columns, \
             quality, created_by, created_at FROM dataset_versions WHERE dataset_id = $1 ORDER BY version DESC",
        )
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// One version, or the latest when `version` is `None`.
    pub async fn get_version(
        &self,
        dataset_id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredVersion>> {
        let row = sqlx::query(
            "SELECT dataset_id, version, input_format, row_count, rejected, bytes, sha256, source_sha256, columns, \
             quality, created_by, created_at FROM dataset_versions WHERE dataset_id = $1 AND ($2 < 0 OR version = $2) \
             ORDER BY version DESC LIMIT 1",
        )
        .bind(dataset_id)
        .bind(version.unwrap_or(-1))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| version_from_row(&r)).transpose()
    }

    /// The latest version of each of `dataset_ids` that has one (any order).
    pub async fn latest_versions(&self, dataset_ids: &[String]) -> Result<Vec<StoredVersion>> {
        let mut out = Vec::new();
        for chunk in dataset_ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT dataset_id, version, input_format, row_count, rejected, bytes, sha256, source_sha256, columns, \
                 quality, created_by, created_at FROM dataset_versions v WHERE dataset_id IN ({}) \
                 AND version = (SELECT MAX(version) FROM dataset_versions w WHERE w.dataset_id = v.dataset_id)",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(version_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Every (dataset, version) pair that exists, for sweeping orphan files.
    pub async fn all_version_keys(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT dataset_id, version FROM dataset_versions")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("dataset_id")?, r.try_get("version")?)))
            .collect()
    }

    pub async fn quality_rules(&self, dataset_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT rules FROM dataset_quality_rules WHERE dataset_id = $1")
            .bind(dataset_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("rules").map_err(StoreError::from))
            .transpose()
    }

    /// Replace a dataset's quality rules, logging the change.
    pub async fn set_quality_rules(
        &self,
        dataset_id: &str,
        rules: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM dataset_quality_rules WHERE dataset_id = $1")
            .bind(dataset_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dataset_quality_rules (dataset_id, rules, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(dataset_id)
        .bind(rules)
        .bind(entry.at)
        .execute(&mut *tx)
        .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Append a log entry on its own (a read of content: nothing else changes).
    /// Returns the entry's index once committed.
    /// Append entries in one transaction (a group commit): indexes are
    /// taken in one step and the rows written in multi-row inserts. Returns
    /// the index of the first; the others follow in order.
    pub async fn append_log_batch(&self, entries: &[NewLogEntry<'_>]) -> Result<i64> {
        let n = i64::try_from(entries.len())
            .map_err(|_| StoreError::Corrupt("batch too large".into()))?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE counters SET value = value + $1 WHERE name = 'ledger_size' RETURNING value",
        )
        .bind(n)
        .fetch_one(&mut *tx)
        .await?;
        let first: i64 = row.try_get::<i64, _>("value")? - n;
        const ROWS: usize = 200;
        let mut idx = first;
        for chunk in entries.chunks(ROWS) {
            let mut sql =
                String::from("INSERT INTO ledger_entries (idx, kind, body, created_at) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 4;
                sql.push_str(&format!("(${}, ${}, ${}, ${})", b + 1, b + 2, b + 3, b + 4));
            }
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q.bind(idx).bind(e.kind).bind(e.body).bind(e.at);
                idx += 1;
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(first)
    }

    pub async fn append_log(&self, entry: &NewLogEntry<'_>) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(idx)
    }
}

fn feedback_from_row(r: &AnyRow) -> Result<StoredFeedback> {
    Ok(StoredFeedback {
        id: r.try_get("id")?,
        dataset_id: r.try_get("dataset_id")?,
        version: r.try_get("version")?,
        column_name: r.try_get("column_name")?,
        row_number: r.try_get("row_number")?,
        description: r.try_get("description")?,
        reported_by: r.try_get("reported_by")?,
        reported_at: r.try_get("reported_at")?,
        status: r.try_get("status")?,
        response: r.try_get("response")?,
        resolved_version: r.try_get("resolved_version")?,
        answered_by: r.try_get("answered_by")?,
        answered_at: r.try_get("answered_at")?,
    })
}

fn version_from_row(r: &AnyRow) -> Result<StoredVersion> {
    Ok(StoredVersion {
        dataset_id: r.try_get("dataset_id")?,
        version: r.try_get("version")?,
        input_format: r.try_get("input_format")?,
        rows: r.try_get("row_count")?,
        rejected: r.try_get("rejected")?,
        bytes: r.try_get("bytes")?,
        sha256: r.try_get("sha256")?,
        source_sha256: r.try_get("source_sha256")?,
        columns: r.try_get("columns")?,
        quality: r.try_get("quality")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
    })
}

async fn write_roles(tx: &mut sqlx::Transaction<'_, sqlx::Any>, dataset: &Dataset) -> Result<()> {
    for r in &dataset.metadata.roles {
        let role = serde_json::to_value(r.role).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO dataset_roles (dataset_id, organization_id, role) VALUES ($1, $2, $3)",
        )
        .bind(&dataset.id)
        .bind(&r.organization_id)
        .bind(role.as_str().unwrap_or("unknown"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Append a log entry inside the transaction of the change it records; returns its index.
/// The counter row serialises appenders (a row lock on PostgreSQL, the write lock on
/// SQLite), so indexes are dense and commit in order.
async fn append_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    entry: &NewLogEntry<'_>,
) -> Result<i64> {
    let row = sqlx::query(
        "UPDATE counters SET value = value + 1 WHERE name = 'ledger_size' RETURNING value",
    )
    .fetch_one(&mut **tx)
    .await?;
    let idx: i64 = row.try_get::<i64, _>("value")? - 1;
    sqlx::query("INSERT INTO ledger_entries (idx, kind, body, created_at) VALUES ($1, $2, $3, $4)")
        .bind(idx)
        .bind(entry.kind)
        .bind(entry.body)
        .bind(entry.at)
        .execute(&mut **tx)
        .await?;
    Ok(idx)
}

async fn bump_catalogue_revision(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query("UPDATE counters SET value = value + 1 WHERE name = 'catalogue_revision'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

fn conflict(e: sqlx::Error, what: String) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(e),
    }
}

fn organization_from_row(r: &AnyRow) -> Result<Organization> {
    let kind: String = r.try_get("kind")?;
    Ok(Organization {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        kind: OrganizationKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("organisation kind {kind}")))?,
        description: r.try_get("description")?,
        url: r.try_get("url")?,
        created_at: r.try_get("created_at")?,
    })
}

fn user_from_row(r: &AnyRow, organization_ids: Vec<String>) -> Result<User> {
    let mut roles = Vec::new();
    for (column, role) in [
        ("is_administrator", Role::Administrator),
        ("is_trustee", Role::Trustee),
        ("is_resident", Role::Resident),
    ] {
        if r.try_get::<i64, _>(column)? != 0 {
            roles.push(role);
        }
    }
    Ok(User {
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        email: r.try_get("email")?,
        roles,
        organization_ids,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
    })
}

fn dataset_from_row(r: &AnyRow) -> Result<Dataset> {
    let id: String = r.try_get("id")?;
    let metadata: String = r.try_get("metadata")?;
    let metadata: DatasetMetadata = serde_json::from_str(&metadata)
        .map_err(|e| StoreError::Corrupt(format!("dataset {id}: {e}")))?;
    Ok(Dataset {
        id,
        metadata,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        revision: r.try_get("revision")?,
    })
}

fn checkpoint_from_row(r: &AnyRow) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.try_get("size")?,
        root: r.try_get("root")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Add `rows` to `ledger_index` and move its high-water mark to `upto`
/// (multi-row inserts, in the caller's transaction).
async fn insert_ledger_index(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[LedgerIndexRow],
    upto: i64,
) -> Result<()> {
    const ROWS: usize = 100;
    for chunk in rows.chunks(ROWS) {
        let mut sql = String::from(
            "INSERT INTO ledger_index (idx, kind, day, dataset, purpose, party, agreement, request, subject) VALUES ",
        );
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            let b = 9 * i;
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8,
                b + 9
            ));
        }
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(r.idx)
                .bind(&r.kind)
                .bind(&r.day)
                .bind(r.dataset.as_deref())
                .bind(r.purpose.as_deref())
                .bind(r.party.as_deref())
                .bind(r.agreement.as_deref())
                .bind(r.request.as_deref())
                .bind(r.subject.as_deref());
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE counters SET value = $1 WHERE name = 'ledger_indexed' AND value < $1")
        .bind(upto)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
