//! `ServiceError`: why a use case did not happen, one variant per kind of
//! answer (the server maps each to one HTTP status and problem code), and the
//! conversions from the store's and the query engine's errors.

use citytrust_model::ProblemCode;
use citytrust_model::{Refusal, ValidationErrors};
use citytrust_store::StoreError;

/// Why a use case did not happen. The server maps each to one HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
    #[error("{0} not found")]
    NotFound(String),
    #[error("sign-in required")]
    Unauthenticated,
    /// Sign-in required to read `dataset`, with why (the HTTP layer adds
    /// where to sign in and to ask for access).
    #[error("sign-in required: {message}")]
    SignInToRead {
        message: String,
        dataset: Option<String>,
    },
    #[error("the username or password is wrong")]
    BadCredentials,
    #[error("the session or token has expired or is unknown; sign in again")]
    ExpiredCredentials,
    #[error("{0}")]
    Forbidden(String),
    /// Refused by the charter (or by a rule the code enforces before it):
    /// `rule` names the rule when one refused, rather than none permitting.
    #[error("{message}")]
    Refused {
        rule: Option<String>,
        message: String,
    },
    #[error("{0} already exists")]
    Conflict(String),
    /// It existed and was removed for good (a version past retention): the
    /// message says when and why.
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Stale(String),
    /// Content that cannot be used as sent (`code` names the kind of problem).
    #[error("{message}")]
    Unprocessable { code: ProblemCode, message: String },
    /// A body larger than the trust takes (for a gzip body: once
    /// decompressed); nothing was stored.
    #[error("{0}")]
    TooLarge(String),
    /// An upload with bad rows, rejected whole: the first errors, and how many there were.
    #[error("{total} row(s) could not be read")]
    RowErrors {
        errors: Vec<citytrust_query::RowError>,
        total: u64,
    },
    /// The caller (or the node) is doing as much as it may at once, or has
    /// failed to sign in too often: try again after a while.
    #[error("{message}")]
    TooMany {
        retry_after_seconds: u64,
        message: String,
    },
    /// This node cannot serve it now (a store away, or a node set up for
    /// another shape): the message says what, for the caller and the
    /// operator; retrying later, or at another node, may succeed.
    #[error("{message}")]
    Unavailable { code: ProblemCode, message: String },
    /// An NGSI-LD request the broker cannot take as sent, with the
    /// specification's error type (issue 26).
    #[error(transparent)]
    Ngsi(#[from] citytrust_model::ngsi::NgsiError),
    /// A failure inside the system; the text is logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Refusal> for ServiceError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotSignedIn => ServiceError::Unauthenticated,
            Refusal::NotAllowed(why) => ServiceError::Forbidden(why),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ServiceError::Conflict(what),
            e @ StoreError::StaleRevision(_) => ServiceError::Stale(e.to_string()),
            // The database away (restarting, unreachable, every connection
            // busy past the wait): nothing was done — a read is not served
            // unlogged — and trying again shortly may succeed.
            e if e.is_unreachable() => {
                tracing::warn!(error = %e, "the database cannot be reached");
                database_unreachable()
            }
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

impl From<tantivy::TantivyError> for ServiceError {
    fn from(e: tantivy::TantivyError) -> Self {
        ServiceError::Internal(format!("search index: {e}"))
    }
}

impl From<citytrust_query::QueryError> for ServiceError {
    fn from(e: citytrust_query::QueryError) -> Self {
        use citytrust_query::QueryError as Q;
        match e {
            Q::Unreadable(message) => ServiceError::Unprocessable {
                code: ProblemCode::UnreadableContent,
                message,
            },
            Q::Rejected { errors, total } => ServiceError::RowErrors { errors, total },
            Q::Sql(message) => ServiceError::Unprocessable {
                code: ProblemCode::InvalidQuery,
                message,
            },
            Q::Refused { code, message } => ServiceError::Unprocessable { code, message },
            Q::StoreUnavailable(detail) => store_unavailable(&detail),
            Q::Failed(f) if f.code == ProblemCode::StoreUnavailable => store_unavailable(&f.detail),
            // An engine failure outside a caller's own query is ours: logged, never shown.
            Q::Failed(f) => ServiceError::Internal(f.detail),
            Q::Unsupported(message) => ServiceError::Unprocessable {
                code: ProblemCode::UnsupportedFormat,
                message,
            },
            e @ Q::Timeout(_) => ServiceError::Unprocessable {
                code: ProblemCode::QueryTimeout,
                message: e.to_string(),
            },
            other => ServiceError::Internal(other.to_string()),
        }
    }
}

/// The database away (restarting, unreachable, every connection busy past
/// the wait): nothing was done — a read is not served unlogged — and trying
/// again shortly may succeed.
pub(crate) fn database_unreachable() -> ServiceError {
    ServiceError::Unavailable {
        code: ProblemCode::StoreUnavailable,
        message: "the trust's database cannot be reached just now; nothing was done. Try again \
                  shortly"
            .into(),
    }
}

/// The object store holding versions away: nothing was done; the detail
/// (which may name the bucket) goes to the server log only.
fn store_unavailable(detail: &str) -> ServiceError {
    tracing::warn!(error = %detail, "the object store cannot be reached");
    ServiceError::Unavailable {
        code: ProblemCode::StoreUnavailable,
        message: "the store holding dataset versions cannot be reached just now; nothing was \
                  done. Try again shortly"
            .into(),
    }
}

impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return node_disk_full();
        }
        ServiceError::Internal(format!("storage: {e}"))
    }
}

/// This node's disk is full: nothing was stored (the spool's files are
/// removed as their handles drop); retryable, on another node or later.
pub(crate) fn node_disk_full() -> ServiceError {
    tracing::error!(
        "this node's disk is full: uploads and large answers fail until space is freed"
    );
    ServiceError::Unavailable {
        code: ProblemCode::NodeDiskFull,
        message: "this server's disk is full just now; nothing was stored. Try again shortly"
            .into(),
    }
}
