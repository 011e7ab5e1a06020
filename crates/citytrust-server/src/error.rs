//! Every error the HTTP layer answers with, in one place. The JSON API answers
//! RFC 9457 `application/problem+json` with a stable `code`; the portal
//! answers an HTML page. Internal details are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use citytrust_model::FieldError;
use citytrust_model::ProblemCode;
use citytrust_service::ServiceError;
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:citytrust:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, e.g. `validation_failed`.
    pub code: String,
    /// For input errors: each field (or line and column) that was wrong.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemItem>,
    /// For rejected uploads: how many rows were bad (`errors` lists the first ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_errors: Option<u64>,
    /// For reads and requests the charter refused: the `@id` of the rule that refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// The problems any JSON operation may answer about its input or its caller,
/// documented once: an operation lists `CommonProblems` first in its
/// `responses(…)`, then any status it describes more closely (a later entry
/// for the same status replaces the common one).
pub(crate) struct CommonProblems;

impl utoipa::IntoResponses for CommonProblems {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        [
            ("400", "Malformed JSON or parameters"),
            ("401", "No valid token"),
            ("403", "Refused"),
            ("404", "Not found"),
            ("413", "Body too large"),
            ("415", "Not JSON"),
            ("422", "Invalid fields"),
            (
                "429",
                "Too many requests at once, or too many failed sign-ins",
            ),
        ]
        .into_iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            let response = ResponseBuilder::new()
                .description(description)
                .content("application/problem+json", content)
                .build();
            (status.to_string(), response.into())
        })
        .collect()
    }
}

/// One thing wrong with the input: a field, or a line and column of an uploaded file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// 1-based line of the uploaded file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// 1-based column number of the uploaded file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    pub message: String,
}

/// An error answered as problem+json.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ProblemCode,
    pub detail: String,
    pub errors: Vec<FieldError>,
    pub rows: Vec<citytrust_query::RowError>,
    /// For rejected uploads: how many rows were bad (0: not a rejected upload).
    pub total_errors: u32,
    /// The charter rule that refused (boxed: keeps `ApiError` small).
    pub rule: Option<Box<str>>,
    /// For 429 and 503: seconds to wait before trying again (`Retry-After`).
    pub retry_after: Option<std::num::NonZeroU16>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ProblemCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            rows: Vec::new(),
            total_errors: 0,
            rule: None,
            retry_after: None,
        }
    }
    pub fn field(
        status: StatusCode,
        code: ProblemCode,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> ApiError {
        let (field, message) = (field.into(), message.into());
        let detail = if field.is_empty() {
            message.clone()
        } else {
            format!("{field}: {message}")
        };
        ApiError {
            status,
            code,
            detail,
            errors: vec![FieldError { field, message }],
            rows: Vec::new(),
            total_errors: 0,
            rule: None,
            retry_after: None,
        }
    }
    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            format!("{what} not found"),
        )
    }
    fn title(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "Bad request",
            StatusCode::UNAUTHORIZED => "Sign-in required",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::GONE => "Removed",
            StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "Request body too large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
            StatusCode::UNPROCESSABLE_ENTITY => "Invalid input",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            StatusCode::SERVICE_UNAVAILABLE => "Service unavailable",
            _ => "Internal error",
        }
    }
    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!("urn:citytrust:problem:{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_string(),
            errors: self
                .errors
                .iter()
                .map(|e| ProblemItem {
                    field: Some(e.field.clone()),
                    line: None,
                    column: None,
                    message: e.message.clone(),
                })
                .chain(self.rows.iter().map(|e| ProblemItem {
                    field: e.field.clone(),
                    line: Some(e.line),
                    column: e.column,
                    message: e.message.clone(),
                }))
                .collect(),
            total_errors: (self.total_errors > 0).then_some(u64::from(self.total_errors)),
            rule: self.rule.as_deref().map(str::to_string),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(v) => {
                let detail = v.to_string();
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: ProblemCode::ValidationFailed,
                    detail,
                    errors: v.0,
                    rows: Vec::new(),
                    total_errors: 0,
                    rule: None,
                    retry_after: None,
                }
            }
            ServiceError::Unprocessable { code, message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            ServiceError::RowErrors { errors, total } => {
                let first = errors.first().map(|e| {
                    let place = match (&e.field, e.column) {
                        (Some(f), Some(c)) => format!("line {}, column {c} ('{f}')", e.line),
                        _ => format!("line {}", e.line),
                    };
                    format!("; first at {place}: {}", e.message)
                });
                ApiError {
                    status: StatusCode::UNPROCESSABLE_ENTITY,
                    code: ProblemCode::RowsRejected,
                    detail: format!(
                        "{total} row(s) could not be read, so nothing was stored{} (send ?on_error=quarantine to keep the good rows)",
                        first.unwrap_or_default()
                    ),
                    errors: Vec::new(),
                    rows: errors,
                    total_errors: u32::try_from(total).unwrap_or(u32::MAX),
                    rule: None,
                    retry_after: None,
                }
            }
            ServiceError::NotFound(what) => ApiError::not_found(what),
            ServiceError::Gone(why) => ApiError::new(StatusCode::GONE, ProblemCode::Removed, why),
            ServiceError::TooLarge(why) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::BodyTooLarge,
                why,
            ),
            ServiceError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ProblemCode::Unauthenticated,
                "sign in: send Authorization: Bearer <token>",
            ),
            ServiceError::SignInToRead { message, dataset } => {
                let ask = match dataset {
                    Some(d) => format!("; ask for access at /requests/new?dataset={d}"),
                    None => String::new(),
                };
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ProblemCode::Unauthenticated,
                    format!("{message} (sign in: send Authorization: Bearer <token>{ask})"),
                )
            }
            ServiceError::BadCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ProblemCode::BadCredentials,
                "the username or password is wrong",
            ),
            ServiceError::ExpiredCredentials => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ProblemCode::InvalidToken,
                "the token has expired or is not known; ask for a new one at /api/v1/auth/token",
            ),
            ServiceError::Forbidden(why) => {
                ApiError::new(StatusCode::FORBIDDEN, ProblemCode::Forbidden, why)
            }
            ServiceError::Refused { rule, message } => ApiError {
                rule: rule.map(String::into_boxed_str),
                ..ApiError::new(StatusCode::FORBIDDEN, ProblemCode::Refused, message)
            },
            ServiceError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                ProblemCode::Conflict,
                format!("{what} already exists"),
            ),
            ServiceError::Stale(why) => {
                ApiError::new(StatusCode::CONFLICT, ProblemCode::StaleRevision, why)
            }
            ServiceError::TooMany {
                retry_after_seconds,
                message,
            } => ApiError {
                retry_after: std::num::NonZeroU16::new(
                    u16::try_from(retry_after_seconds.max(1)).unwrap_or(u16::MAX),
                ),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ProblemCode::TooManyRequests,
                    message,
                )
            },
            ServiceError::Unavailable { code, message } => {
                tracing::warn!(code = %code, "{message}");
                ApiError {
                    retry_after: std::num::NonZeroU16::new(5),
                    ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
                }
            }
            ServiceError::Ngsi(n) => ApiError::new(
                StatusCode::from_u16(n.kind.status()).unwrap_or(StatusCode::BAD_REQUEST),
                ProblemCode::NgsiLdError,
                n.detail,
            ),
            ServiceError::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ProblemCode::Internal,
                    "something went wrong on our side; it has been logged",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut res = (self.status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&seconds.to_string())
        {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"citytrust\""),
            );
        }
        res
    }
}
