//! The stable problem codes: the `code` of every RFC 9457 problem the API
//! answers (and its type, `urn:citytrust:problem:<code>`), and the error code
//! a refused or failed query leaves in the log. Clients branch on these, so a
//! published code keeps its meaning. This enum is the only place a code is
//! spelled (the tidy test holds it).

use serde::Serialize;

macro_rules! problem_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal,)*) => {
        /// A stable problem code; see each variant for what it means.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        pub enum ProblemCode {
            $($(#[doc = $doc])* #[serde(rename = $code)] $variant,)*
        }

        impl ProblemCode {
            /// Every code, in the order declared.
            pub const ALL: &'static [ProblemCode] = &[$(ProblemCode::$variant,)*];

            /// The code as it is sent.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ProblemCode::$variant => $code,)*
                }
            }
        }
    };
}

problem_codes! {
    // ---- the request itself --------------------------------------------------
    /// The JSON body could not be parsed.
    MalformedJson = "malformed_json",
    /// A query-string parameter is unknown or has a bad value (`errors` names it).
    InvalidParameter = "invalid_parameter",
    /// Fields of the body are wrong (`errors` names each field).
    ValidationFailed = "validation_failed",
    /// The body is larger than the route accepts.
    BodyTooLarge = "body_too_large",
    /// The body could not be read (broken connection, bad chunking).
    UnreadableBody = "unreadable_body",
    /// The `Content-Type` is not one the route takes.
    UnsupportedMediaType = "unsupported_media_type",
    /// An NGSI-LD request the broker cannot take as sent; the problem's
    /// `type` is the NGSI-LD error type (`…/errors/BadRequestData`, …).
    NgsiLdError = "ngsi_ld_error",
    /// The `Content-Encoding` is not one the route takes.
    UnsupportedEncoding = "unsupported_encoding",
    /// The upload stopped before its declared length arrived.
    UploadInterrupted = "upload_interrupted",

    // ---- who is asking --------------------------------------------------------
    /// Sign in first.
    Unauthenticated = "unauthenticated",
    /// The username or password is wrong.
    BadCredentials = "bad_credentials",
    /// The token or session has expired or is not known.
    InvalidToken = "invalid_token",
    /// The form's CSRF token is missing or wrong.
    Csrf = "csrf",
    /// The caller may not do this (a role or membership rule).
    Forbidden = "forbidden",
    /// The charter (or a rule the code enforces with it) refused; `rule` names it.
    Refused = "refused",
    /// Too many requests at once, or too many failed sign-ins; see `Retry-After`.
    TooManyRequests = "too_many_requests",

    // ---- the state of things ---------------------------------------------------
    /// No such thing (or not one the caller may know of).
    NotFound = "not_found",
    /// It existed and was removed for good (a version past its stream's
    /// retention); `detail` says when and why.
    Removed = "removed",
    /// It exists already.
    Conflict = "conflict",
    /// Someone changed it since it was read; read it again.
    StaleRevision = "stale_revision",
    /// The request is not a draft any more.
    NotADraft = "not_a_draft",
    /// The trustees have already decided the request.
    AlreadyDecided = "already_decided",
    /// The request's public comment period is still open.
    CommentPeriodOpen = "comment_period_open",
    /// The request's public comment period has closed.
    CommentPeriodClosed = "comment_period_closed",
    /// The agreement is not active.
    NotActive = "not_active",
    /// The agreement is still in force.
    AgreementInForce = "agreement_in_force",
    /// The dataset is not derived from others.
    NotDerived = "not_derived",
    /// The dataset holds no personal data (no subject key).
    NotPersonal = "not_personal",

    // ---- content: uploads and versions ------------------------------------------
    /// Rows of the upload could not be read (`errors` gives line and column).
    RowsRejected = "rows_rejected",
    /// The file could not be read as the format it claims.
    UnreadableContent = "unreadable_content",
    /// A declared column type or format is wrong.
    InvalidDeclaration = "invalid_declaration",
    /// The version asked for (`version`, `as_of`, `table@…`) is not valid.
    InvalidVersion = "invalid_version",
    /// The output format is not served for this read.
    UnsupportedFormat = "unsupported_format",
    /// More rows than the operation takes.
    TooManyRows = "too_many_rows",

    // ---- reads: purpose and level -----------------------------------------------
    /// A read of anything but open data names its purpose.
    PurposeRequired = "purpose_required",
    /// The purpose is not in the trust's taxonomy.
    UnknownPurpose = "unknown_purpose",
    /// The purpose is malformed.
    InvalidPurpose = "invalid_purpose",
    /// SQL reads rows: the level granted does not allow it.
    LevelNotForSql = "level_not_for_sql",
    /// Only look-ups are granted at the index level.
    IndexLevel = "index_level",
    /// Only tables are granted at the aggregate levels.
    AggregateLevel = "aggregate_level",
    /// Anonymised rows need declared quasi-identifiers.
    NoQuasiIdentifiers = "no_quasi_identifiers",
    /// Anonymised rows are served whole, not in pages.
    NoPaging = "no_paging",
    /// A table may not be broken down by a personal column.
    PersonalDimension = "personal_dimension",
    /// A table's threshold is below the trust's minimum.
    ThresholdTooLow = "threshold_too_low",
    /// The table would be mostly small cells.
    TableTooSparse = "table_too_sparse",
    /// The look-up is malformed.
    InvalidLookup = "invalid_lookup",
    /// The DP statistic is malformed.
    InvalidStatistic = "invalid_statistic",

    // ---- the Dataspace Protocol, as a consumer ------------------------------------------
    /// The entry's catalogue is not a pinned dataspace participant, or does not offer it.
    NotOffered = "not_offered",
    /// The other node refused or failed; `detail` gives its reason.
    RemoteRefused = "remote_refused",
    /// No transfer is started under the agreement yet.
    TransferNotStarted = "transfer_not_started",

    // ---- the witness (C2SP tlog-witness) ---------------------------------------------
    /// The `add-checkpoint` body is not an `old` line, proof lines, an empty line and a checkpoint, or its old size is beyond the checkpoint.
    MalformedAddCheckpoint = "malformed_add_checkpoint",
    /// This witness does not witness a log of that origin.
    UnknownLog = "unknown_log",
    /// The checkpoint carries no valid signature of the log's key.
    CheckpointNotSigned = "checkpoint_not_signed",
    /// The checkpoint does not extend the one the witness last cosigned.
    InconsistentCheckpoint = "inconsistent_checkpoint",

    // ---- queries ------------------------------------------------------------------
    /// Not exactly one SELECT statement.
    NotASelect = "not_a_select",
    /// The SQL is longer than the limit.
    SqlTooLong = "sql_too_long",
    /// The SQL nests deeper than the limit.
    SqlTooDeep = "sql_too_deep",
    /// The SQL could not be parsed.
    SqlSyntax = "sql_syntax",
    /// The SQL uses a construct the engine does not support.
    SqlUnsupported = "sql_unsupported",
    /// A table the query names is not one the caller may read.
    UnknownTable = "unknown_table",
    /// A column the query names is not one the caller may read.
    UnknownColumn = "unknown_column",
    /// A column name is in more than one of the query's tables.
    AmbiguousColumn = "ambiguous_column",
    /// The query calls a function that does not exist (with those arguments).
    UnknownFunction = "unknown_function",
    /// The query could not be planned.
    InvalidQuery = "invalid_query",
    /// A value could not be cast to the type asked.
    CastFailed = "cast_failed",
    /// Division by zero.
    DivisionByZero = "division_by_zero",
    /// Arithmetic overflowed its type.
    ArithmeticOverflow = "arithmetic_overflow",
    /// A value, a batch or the answer grew past its limit.
    ResultTooLarge = "result_too_large",
    /// The query needs more memory or work than a read may take.
    QueryTooLarge = "query_too_large",
    /// The query ran past the time limit.
    QueryTimeout = "query_timeout",
    /// The query failed while it ran.
    QueryFailed = "query_failed",

    // ---- the server ---------------------------------------------------------------
    /// The database or object store cannot be reached.
    StoreUnavailable = "store_unavailable",
    /// A version's files are on another node's disk: nodes sharing a
    /// database must share one object store (a misconfiguration).
    VersionsNotShared = "versions_not_shared",
    /// This node's own disk (its spool for uploads and results) is full:
    /// nothing was stored; another node, or this one later, can take it.
    NodeDiskFull = "node_disk_full",
    /// Something went wrong on the trust's side; it is logged.
    Internal = "internal",
}

impl std::fmt::Display for ProblemCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case_and_serialise_as_sent() {
        let mut seen = std::collections::BTreeSet::new();
        for code in ProblemCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{s} is not snake_case"
            );
            assert_eq!(
                serde_json::to_value(code).unwrap_or_default(),
                serde_json::Value::from(s)
            );
        }
    }
}
