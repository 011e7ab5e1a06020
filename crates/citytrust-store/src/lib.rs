//! CityTrust's persistence: the `Store`, its connection and the row types
//! and helpers every area shares here; the rows of each area in its own
//! module (accounts, the log, the catalogue, governance, residents, privacy
//! budgets, identity, the witness, participation, projects, streams). In SQLite (the embedded default) or PostgreSQL (to scale out),
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

mod accounts;
mod catalogue;
mod federation;
mod governance;
mod identity;
mod ledger;
mod migrate;
mod participation;
mod privacy;
mod projects;
mod residents;
mod streams;
mod witness;

pub use federation::{HarvestCounts, StagedEntry};
pub use governance::{StoredCharter, UNGOVERNED_TABLES};
pub use identity::PendingLogin;
pub use participation::{StoredDataRequest, StoredTerm, SupportChange};
pub use privacy::{Budget, Charge};
pub use residents::{Commitment, ErasedVersion, PersonalRead, StoredConsent};
pub use streams::{
    CommittedNotifications, EntityRow, HistoryBucket, HistoryRow, NotificationCommit,
    NotificationLease, OwedNotification, STREAM_VERSION, StoredStreamCredential, StreamErasure,
    StreamPages, StreamWrite, SubscriptionRow,
};
pub use witness::{Advance, ForkEvidence, LogWitness, Witnessed};

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The `n`th (from 1) parameter of a statement whose parameters appear
    /// in the order they are bound: `$n` on PostgreSQL, an anonymous `?` on
    /// SQLite. SQLite finds a named parameter's name by walking a list, and
    /// sqlx asks it for every parameter's: a statement of 700 `$n` spent
    /// longer naming its parameters than writing its rows. A statement
    /// uses one kind throughout.
    pub(crate) fn param(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".into(),
            Backend::Postgres => format!("${n}"),
        }
    }

    /// `n` parameters from the `first`, `…, …` (numbered in order).
    pub(crate) fn params(self, first: usize, n: usize) -> String {
        (first..first + n)
            .map(|i| self.param(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `rows` groups of `cols` parameters, `(…), (…)`, numbered from 1 in
    /// order (the values of a multi-row insert).
    pub(crate) fn value_rows(self, rows: usize, cols: usize) -> String {
        (0..rows)
            .map(|r| format!("({})", self.params(r * cols + 1, cols)))
            .collect::<Vec<_>>()
            .join(", ")
    }
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

impl StoreError {
    /// The database could not be reached (down, restarting, the network, or
    /// every connection busy past the pool's wait), as opposed to refusing
    /// or failing a statement: nothing was done, and a retry may succeed.
    pub fn is_unreachable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Tls(_),
            ) => true,
            // PostgreSQL's connection exceptions (08…) and its shutting
            // down or restarting (57P01–57P03).
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        }
    }
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
    /// When the version was removed (its file deleted), and why; `None`
    /// while it can be read.
    pub removed: Option<(String, String)>,
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

/// A tile of the log's tree as stored (`citytrust_ledger::hashtile` encodes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTile {
    pub level: i64,
    pub idx: i64,
    /// Hashes in its bottom row.
    pub width: i64,
    pub hashes: Vec<u8>,
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
    /// SQLite: the one connection transactions write through (see `Tx`).
    writer: Option<AnyPool>,
    /// SQLite: the write-ahead log's checkpoints, run beside the writer.
    checkpoints: std::sync::Arc<Checkpoints>,
}

/// A transaction of the store. On SQLite every transaction goes through
/// one writer connection, in turn, first come first served: SQLite lets
/// one writer in at a time, and a connection it turns away sleeps in
/// growing steps (up to 100 ms) before asking again, however short the
/// other's transaction (under load, writers that met waited tens of
/// milliseconds for locks held for one or two); and the one writer's page
/// cache stays valid from one transaction to the next. Reads, and
/// statements outside a transaction, use the other connections; PostgreSQL
/// has one pool. A transaction must not begin another: it would wait for
/// its own turn.
pub(crate) struct Tx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    backend: Backend,
    since: std::time::Instant,
    waited: std::time::Duration,
    /// SQLite: where the commit's checkpoint is run (see `Checkpoints`).
    after: Option<(AnyPool, AnyPool, std::sync::Arc<Checkpoints>)>,
}

/// SQLite copies the write-ahead log back into the database (a checkpoint)
/// when a commit has made the log long, in that commit, so the committing
/// connection waits for it. The writer does not (`wal_autocheckpoint = 0`):
/// after its commits a checkpoint that does not hold up writers (`PASSIVE`)
/// runs on another connection, one at a time and at most every
/// `CHECKPOINT_EVERY`, while the writer goes on to the next transaction.
/// Under a steady stream of writes such a checkpoint never finds the log
/// all copied, and the log would grow without end: once it holds
/// `RESTART_FRAMES` pages, the writer (in its turn) finishes the copy and
/// starts the log again from its beginning (`RESTART`; little is left to
/// copy by then), and its file is cut back to `journal_size_limit`.
#[derive(Debug, Default)]
struct Checkpoints {
    state: std::sync::Mutex<(bool, Option<std::time::Instant>)>,
}

const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// 64 MiB of 4 KiB pages.
const RESTART_FRAMES: i64 = 16_384;

impl Checkpoints {
    fn after_commit(self: std::sync::Arc<Self>, pool: AnyPool, writer: AnyPool) {
        {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let (running, last) = &mut *state;
            if *running || last.is_some_and(|t| t.elapsed() < CHECKPOINT_EVERY) {
                return;
            }
            *running = true;
        }
        tokio::spawn(async move {
            // The flag is put down however the task ends (a panic included:
            // left up, no checkpoint would run again and the log would grow).
            let _done = CheckpointDone(self);
            // (busy, pages in the log, pages copied)
            let passive = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await
                .and_then(|r| r.try_get::<i64, _>(1));
            let restart = match passive {
                Ok(pages) => pages >= RESTART_FRAMES,
                Err(e) => {
                    tracing::warn!(error = %e, "write-ahead log checkpoint");
                    false
                }
            };
            if restart
                && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(RESTART)")
                    .execute(&writer)
                    .await
            {
                tracing::warn!(error = %e, "write-ahead log restart");
            }
        });
    }
}

/// Marks a checkpoint finished when dropped.
struct CheckpointDone(std::sync::Arc<Checkpoints>);

impl Drop for CheckpointDone {
    fn drop(&mut self) {
        let mut state = match self.0.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        *state = (false, Some(std::time::Instant::now()));
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> std::result::Result<(), sqlx::Error> {
        let r = self.tx.commit().await;
        if r.is_ok()
            && let Some((pool, writer, checkpoints)) = self.after
        {
            checkpoints.after_commit(pool, writer);
        }
        tracing::trace!(
            waited_ms = self.waited.as_secs_f64() * 1e3,
            held_ms = self.since.elapsed().as_secs_f64() * 1e3,
            "tx"
        );
        r
    }

    pub(crate) async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl Store {
    /// One of the `counters` (revisions and sizes, each moved in the
    /// transactions that change what it counts).
    pub(crate) async fn counter(&self, name: &str) -> Result<i64> {
        let row = sqlx::query("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

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
        let (pool, writer) = match backend {
            Backend::Sqlite => {
                let pool = sqlite_pool(pool_options, 8, &[], options.clone()).await?;
                // Transactions wait their turn here rather than in SQLite's
                // busy handler (see `Tx`); its cache is the one kept warm.
                let writer = AnyPoolOptions::new()
                    .acquire_timeout(Duration::from_secs(30))
                    .min_connections(1);
                let writer = sqlite_pool(
                    writer,
                    1,
                    &[
                        "PRAGMA cache_size = -16384",
                        // Checkpoints beside it (`Checkpoints`).
                        "PRAGMA wal_autocheckpoint = 0",
                        "PRAGMA journal_size_limit = 67108864",
                    ],
                    options,
                )
                .await?;
                (pool, Some(writer))
            }
            Backend::Postgres => {
                let pool = pool_options
                    .max_connections(16)
                    .connect_with(options)
                    .await?;
                (pool, None)
            }
        };
        let store = Store {
            pool,
            backend,
            writer,
            checkpoints: Default::default(),
        };
        migrate::run(&store.pool, backend).await?;
        Ok(store)
    }

    /// Begin a transaction, once it is this one's turn (see `Tx`).
    pub(crate) async fn begin(&self) -> Result<Tx> {
        let t = std::time::Instant::now();
        Ok(Tx {
            tx: self.writer.as_ref().unwrap_or(&self.pool).begin().await?,
            backend: self.backend,
            after: self
                .writer
                .as_ref()
                .map(|w| (self.pool.clone(), w.clone(), self.checkpoints.clone())),
            since: std::time::Instant::now(),
            waited: t.elapsed(),
        })
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
        if let Some(w) = &self.writer {
            w.close().await;
        }
        self.pool.close().await;
    }
}

/// A pool of `n` SQLite connections, each set up alike (and with `extra`).
async fn sqlite_pool(
    pool_options: AnyPoolOptions,
    n: u32,
    extra: &'static [&'static str],
    options: AnyConnectOptions,
) -> Result<AnyPool> {
    Ok(pool_options
        .max_connections(n)
        // A connection to a file in this process does not go stale: the
        // ping sqlx sends before handing one out by default is a round trip
        // to the connection's thread for every query, for nothing.
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    // Every commit reaches the disk before it is acknowledged: a
                    // read's log entry must survive a power cut too. Reads'
                    // entries are group-committed, so this costs one fsync per batch.
                    "PRAGMA synchronous = FULL",
                    "PRAGMA foreign_keys = ON",
                    "PRAGMA busy_timeout = 10000",
                ]
                .iter()
                .chain(extra)
                {
                    conn.execute(*pragma).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?)
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
        removed: match r.try_get::<Option<String>, _>("removed_at")? {
            Some(at) => Some((at, r.try_get("removed_reason")?)),
            None => None,
        },
    })
}

async fn write_roles(tx: &mut Tx, dataset: &Dataset) -> Result<()> {
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
async fn append_entry(tx: &mut Tx, entry: &NewLogEntry<'_>) -> Result<i64> {
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

/// Append entries in the transaction `tx`: their indexes are taken in one
/// step and the rows written in multi-row inserts. Returns the index of the
/// first; the others follow in order.
async fn append_entries(tx: &mut Tx, entries: &[NewLogEntry<'_>]) -> Result<i64> {
    let n =
        i64::try_from(entries.len()).map_err(|_| StoreError::Corrupt("batch too large".into()))?;
    let row = sqlx::query(
        "UPDATE counters SET value = value + $1 WHERE name = 'ledger_size' RETURNING value",
    )
    .bind(n)
    .fetch_one(&mut **tx)
    .await?;
    let first: i64 = row.try_get::<i64, _>("value")? - n;
    const ROWS: usize = 200;
    let mut idx = first;
    for chunk in entries.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO ledger_entries (idx, kind, body, created_at) VALUES {}",
            tx.backend.value_rows(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for e in chunk {
            q = q.bind(idx).bind(e.kind).bind(e.body).bind(e.at);
            idx += 1;
        }
        q.execute(&mut **tx).await?;
    }
    Ok(first)
}

/// A model document as a JSON column holds it.
fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A JSON column's model document.
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn bump_catalogue_revision(tx: &mut Tx) -> Result<()> {
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

pub(crate) fn checkpoint_from_row(r: &AnyRow) -> Result<StoredCheckpoint> {
    Ok(StoredCheckpoint {
        size: r.try_get("size")?,
        root: r.try_get("root")?,
        note: r.try_get("note")?,
        created_at: r.try_get("created_at")?,
    })
}

/// Add `rows` to `ledger_index` and move its high-water mark to `upto`
/// (multi-row inserts, in the caller's transaction).
async fn insert_ledger_index(tx: &mut Tx, rows: &[LedgerIndexRow], upto: i64) -> Result<()> {
    const ROWS: usize = 100;
    for chunk in rows.chunks(ROWS) {
        let sql = format!(
            "INSERT INTO ledger_index (idx, kind, day, dataset, purpose, party, agreement, request, subject) VALUES {}",
            tx.backend.value_rows(chunk.len(), 9)
        );
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
