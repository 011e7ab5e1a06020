//! CityTrust's use cases: one function per thing a person can do, each of the
//! shape validate → decide who may → change state → answer. The HTTP layer and
//! the CLI call these and nothing below them.
//!
//! Time comes from the `Clock` given at construction, so tests control it.
//! This crate knows neither HTTP nor SQL.

pub mod accounts;
pub mod analytics;
pub mod breaches;
pub mod catalogue;
pub mod clock;
pub mod compaction;
pub mod consumer;
pub mod content;
pub mod cosigning;
pub mod dataspace;
pub mod endpoints;
mod error;
pub mod federation;
pub mod feedback;
pub mod governance;
pub mod harvest;
pub mod identity;
pub mod interop;
pub mod ledger;
pub mod levels;
pub mod lineage;
pub mod negotiation;
pub mod participation;
pub mod projects;
mod read;
pub mod residents;
pub mod search;
pub mod streams;
pub mod subscriptions;
mod throttle;
pub mod transfer;
pub mod witness;

use std::sync::Arc;

use citytrust_store::Store;

pub use clock::{Clock, ManualClock, ShiftedClock, SystemClock};
pub use error::ServiceError;
pub use search::{SearchQuery, SearchResults, SortOrder};

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How long credentials live, and the transparency log's identity.
#[derive(Debug, Clone)]
pub struct Settings {
    pub session_seconds: i64,
    pub api_token_seconds: i64,
    /// The log's origin line and key name, e.g. `citytrust.example.org/ledger`.
    pub ledger_origin: String,
    /// The log's signing key; `None` makes a throw-away key (tests, trials).
    pub ledger_seed: Option<ledger::LedgerSeed>,
    /// Where dataset content lives; `None` uses a temporary directory (tests, trials).
    pub content_dir: Option<std::path::PathBuf>,
    /// A file, outside the database, holding the newest checkpoint this node
    /// signed (`DATA/ledger-witness`). At start the log in the database must
    /// extend it, and no checkpoint is signed that does not: a database
    /// restored from an old backup, or a log rewritten in it, stops the node
    /// instead of being signed over. `None`: no such file (tests, trials).
    pub ledger_witness: Option<std::path::PathBuf>,
    /// Where full entry bundles are kept once written (`DATA/ledger-tiles`,
    /// the C2SP tlog-tiles layout under it): a full bundle never changes, so
    /// it is read from the database once, checked against the signed tree,
    /// and served from this file afterwards. `None`: always from the database.
    pub ledger_tiles: Option<std::path::PathBuf>,
    /// Keep version files in this S3-compatible bucket (`s3://bucket[/prefix]`,
    /// credentials from the `AWS_*` environment) instead of under `content_dir`,
    /// which then holds only uploads in progress and read spools.
    pub object_store: Option<String>,
    /// Counting votes (no declared conflict) needed before the majority decides a request.
    pub quorum: usize,
    /// Days a high-risk request stays open for public comment before the vote.
    pub comment_days: i64,
    /// Days the trust has to answer a subject request (default: one month).
    pub subject_request_days: i64,
    /// Below this age a guardian decides for a resident (R-CIT-5).
    pub minor_age: u8,
    /// Hours after a breach is registered within which the regulator must be told.
    pub breach_notify_hours: i64,
    /// The file of pseudonym secrets (`DATA/pseudonym-keys`: one `id hex`
    /// line per secret, the last in use; readable by the owner only). `None`:
    /// one throw-away secret for the life of the service (tests, trials).
    pub pseudonym_keys: Option<std::path::PathBuf>,
    /// The privacy budget (epsilon) each data user has under each agreement
    /// for differentially private statistics.
    pub dp_budget_epsilon: f64,
    /// This trust as a witness of other logs: its name, its own key and the
    /// logs it witnesses. `None`: a throw-away key, no logs (every
    /// `add-checkpoint` is answered 404).
    pub witnessing: Option<witness::Witnessing>,
    /// The C2SP tlog-policy this trust's own log is witnessed under: the
    /// witnesses asked to cosign each checkpoint (those with a URL) and the
    /// quorum a checkpoint needs to be published. `None`: the newest signed
    /// checkpoint is published, unwitnessed.
    pub witness_policy: Option<citytrust_ledger::policy::Policy>,
    /// The most instances of one attribute a temporal answer holds before
    /// it is cut to a page (206 Partial Content).
    pub temporal_page: usize,
    /// Let subscriptions notify endpoints on loopback and private networks
    /// (a trust whose subscribers are inside its own network; tests). Off:
    /// such endpoints are refused, when a subscription is made and at every
    /// connection, so no subscriber turns the trust against its own network
    /// (see `endpoints`).
    pub private_notifications: bool,
    /// How notification endpoints' host names are resolved: the system's
    /// resolver (tests give their own).
    pub names: Arc<dyn endpoints::Names>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            session_seconds: 12 * 3600,
            api_token_seconds: 24 * 3600,
            ledger_origin: "citytrust.localhost/ledger".to_string(),
            ledger_seed: None,
            content_dir: None,
            ledger_witness: None,
            ledger_tiles: None,
            object_store: None,
            quorum: 3,
            comment_days: 14,
            subject_request_days: 30,
            minor_age: 16,
            breach_notify_hours: 72,
            pseudonym_keys: None,
            dp_budget_epsilon: 1.0,
            witnessing: None,
            witness_policy: None,
            private_notifications: false,
            temporal_page: citytrust_model::ngsi::temporal::MAX_VALUES,
            names: Arc::new(endpoints::SystemNames),
        }
    }
}

/// Everything the use cases need. Cheap to share behind an `Arc`.
pub struct Service {
    store: Store,
    index: search::CatalogueIndex,
    /// Entries harvested from other catalogues, for search.
    federated: federation::FederatedIndex,
    /// The DSP catalogue last made, under the key it was made for.
    dsp_catalog_cache: std::sync::Mutex<Option<(String, Arc<serde_json::Value>)>>,
    /// Each stream's entities as last decoded, at the stream's revision then.
    latest: streams::LatestCache,
    /// Active subscriptions compiled, at their rows' revisions.
    subscription_cache: subscriptions::SubscriptionCache,
    /// This trust's key as a Dataspace Protocol participant.
    dsp_key: dataspace::ParticipantKey,
    /// Wakes the negotiations' worker (a decision may owe a consumer a message).
    dsp_wake: tokio::sync::Notify,
    /// Wakes the notification worker after a write owed notifications.
    notify_wake: tokio::sync::Notify,
    /// Subscriptions a notification pass has taken rows of, until they are
    /// settled (sent and dropped, or put back): no other pass serves them
    /// meanwhile, so each one's notifications stay in order.
    notifying: subscriptions::InFlight,
    /// The HTTP client for other trusts (made once: making one loads the
    /// system's root certificates, which cost a read through DSP 45 ms).
    dsp_client: std::sync::OnceLock<reqwest::Client>,
    /// The HTTP client for notifications (see `endpoints`).
    notify_client: std::sync::OnceLock<reqwest::Client>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    ledger: ledger::Ledger,
    /// Group commits of read entries.
    appender: ledger::Appender,
    content_dir: std::path::PathBuf,
    /// Where versions' files are kept.
    versions: citytrust_query::VersionStore,
    /// Keeps a temporary content directory alive as long as the service.
    _content_tmp: Option<tempfile::TempDir>,
    /// One version commit at a time on this node.
    upload_lock: tokio::sync::Mutex<()>,
    /// The charter in force, parsed once per version.
    charter: governance::CharterCache,
    /// Who each personal read may include, checked against the subjects revision on every read.
    subjects: residents::SubjectCache,
    /// The pseudonym secret used when `settings.pseudonym_keys` is `None`.
    pseudonym_fallback: citytrust_privacy::pseudonym::PseudonymSecret,
    /// Reads and sign-ins in flight on this node.
    throttle: Arc<throttle::Throttle>,
    /// The threads readers' SQL runs on.
    query_runtime: QueryRuntime,
    /// This trust as a witness of other logs.
    witness: witness::Witness,
    /// The policy this trust's own log is witnessed under (from the
    /// settings, or made from its peers).
    policy: std::sync::RwLock<Option<Arc<citytrust_ledger::policy::Policy>>>,
    /// Peers' witnesses (their keys and submission prefixes), for `add_peer`.
    peers: std::sync::RwLock<Vec<(citytrust_ledger::witness::CosignerKey, String)>>,
}

/// A runtime of its own for readers' SQL: a costly query never holds the
/// threads that answer requests (`/healthz` included), and a query past its
/// time is aborted from outside it.
pub(crate) struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new() -> Result<QueryRuntime> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 8);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("citytrust-query")
            .enable_all()
            .build()?;
        Ok(QueryRuntime(Some(runtime)))
    }

    pub(crate) fn spawn<F>(&self, future: F) -> Result<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(r) => Ok(r.spawn(future)),
            None => Err(ServiceError::Internal("the query runtime is gone".into())),
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Not a blocking shutdown: the service may be dropped on a runtime.
        if let Some(r) = self.0.take() {
            r.shutdown_background();
        }
    }
}

impl Service {
    /// Build the service over an open store and load the catalogue's search index.
    pub async fn new(store: Store, clock: Arc<dyn Clock>, settings: Settings) -> Result<Service> {
        let index = search::CatalogueIndex::new()?;
        let seed = match &settings.ledger_seed {
            Some(seed) => seed.clone(),
            None => ledger::LedgerSeed(accounts::random_bytes::<32>()?),
        };
        let ledger = ledger::Ledger::new(&settings.ledger_origin, &seed)?;
        if let Some(policy) = &settings.witness_policy
            && !policy.logs.is_empty()
            && !policy
                .logs
                .iter()
                .any(|l| l.vkey == ledger.signer.verifier_key())
        {
            return Err(ServiceError::Internal(format!(
                "the witness policy lists no log with this trust's key ({}): a verifier \
                 holding it would accept none of this log's checkpoints",
                ledger.signer.verifier_key()
            )));
        }
        let (content_dir, content_tmp) = match &settings.content_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let tmp = tempfile::tempdir()?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        let versions = match &settings.object_store {
            Some(url) => citytrust_query::VersionStore::s3(url)?,
            None => citytrust_query::VersionStore::local(&content_dir),
        };
        tracing::info!(versions = %versions.describe(), "dataset versions are kept here");
        let appender = ledger::Appender::spawn(store.clone());
        let witness = witness::Witness::new(&match &settings.witnessing {
            Some(w) => w.clone(),
            None => witness::Witnessing {
                name: witness::default_name(&settings.ledger_origin),
                seed: ledger::LedgerSeed(accounts::random_bytes::<32>()?),
                logs: Vec::new(),
            },
        })?;
        let policy = std::sync::RwLock::new(settings.witness_policy.clone().map(Arc::new));
        let service = Service {
            witness,
            policy,
            peers: std::sync::RwLock::default(),
            appender,
            versions,
            store,
            index,
            federated: federation::FederatedIndex::default(),
            dsp_catalog_cache: std::sync::Mutex::default(),
            latest: streams::LatestCache::default(),
            subscription_cache: subscriptions::SubscriptionCache::default(),
            dsp_key: dataspace::ParticipantKey::derive(&seed),
            dsp_wake: tokio::sync::Notify::new(),
            notify_wake: tokio::sync::Notify::new(),
            notifying: Default::default(),
            dsp_client: std::sync::OnceLock::new(),
            notify_client: std::sync::OnceLock::new(),
            clock,
            settings,
            ledger,
            content_dir,
            _content_tmp: content_tmp,
            upload_lock: tokio::sync::Mutex::new(()),
            charter: governance::CharterCache::default(),
            subjects: residents::SubjectCache::default(),
            pseudonym_fallback: citytrust_privacy::pseudonym::PseudonymSecret::new(
                "t1",
                accounts::random_bytes::<32>()?,
            ),
            throttle: Arc::new(throttle::Throttle::default()),
            query_runtime: QueryRuntime::new()?,
        };
        service.refresh_search_index().await?;
        service.load_ledger().await?;
        service.sweep_content().await?;
        service.seed_governance().await?;
        Ok(service)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Whether the database answers (for `/healthz`).
    pub async fn health(&self) -> Result<()> {
        Ok(self.store.ping().await?)
    }

    /// Rebuild the search index if another node (or a direct database change)
    /// moved the catalogue on since it was built. Cheap when nothing changed.
    pub async fn refresh_search_index(&self) -> Result<bool> {
        let revision = self.store.catalogue_revision().await?;
        if self.index.revision() == Some(revision) {
            return Ok(false);
        }
        let datasets = self.store.list_datasets().await?;
        let organizations = self.store.list_organizations().await?;
        self.index.rebuild(datasets, &organizations, revision)?;
        self.reload_federated().await?;
        Ok(true)
    }
}

/// RFC 3339 UTC text for a point in time, as stored and as the API speaks it.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}
