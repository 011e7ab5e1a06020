//! Request extractors for the JSON API. Each refuses bad input with a
//! problem+json that names the field (or line and column) at fault, so a
//! client never sees axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use citytrust_model::Actor;
use citytrust_model::ProblemCode;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// Largest JSON body the API reads.
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// A JSON body, parsed strictly.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Read a body that must be JSON (`application/json`, or any `+json` type).
pub async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !(essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json")))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemCode::UnsupportedMediaType,
            format!("send JSON with Content-Type: application/json (got '{content_type}')"),
        ));
    }
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::BodyTooLarge,
                format!("the request body is larger than the limit of {MAX_JSON_BODY} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::UnreadableBody,
                "the request body could not be read",
            )
        }
    })
}

/// Parse JSON into `T`, naming the field on error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::MalformedJson,
                "",
                format!("the body is not valid JSON: {inner}"),
            ),
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                ApiError::field(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ProblemCode::ValidationFailed,
                    field_of(&path, &message),
                    message,
                )
            }
        }
    })?;
    de.end().map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            ProblemCode::MalformedJson,
            "",
            format!("unexpected data after the JSON value: {e}"),
        )
    })?;
    Ok(value)
}

/// The query string, parsed strictly into `T`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|err| {
                let path = err.path().to_string();
                let message = err.into_inner().to_string();
                ApiError::field(
                    StatusCode::BAD_REQUEST,
                    ProblemCode::InvalidParameter,
                    field_of(&path, &message),
                    message,
                )
            })
    }
}

/// The field an error is about: the path where it happened, plus the name of an unknown or missing field.
fn field_of(path: &str, message: &str) -> String {
    let base = if path == "." || path == "?" { "" } else { path };
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|prefix| {
            message
                .strip_prefix(prefix)
                .and_then(|rest| rest.split('`').next())
        });
    match (base, named) {
        ("", Some(name)) => name.to_string(),
        (base, Some(name)) if base == name || base.ends_with(&format!(".{name}")) => {
            base.to_string()
        }
        (base, Some(name)) => format!("{base}.{name}"),
        (base, None) => base.to_string(),
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Who the API request acts as: a bearer token's owner, or nobody.
/// A token that is present but unknown or expired is refused, never treated as anonymous.
///
/// With an `On-Behalf-Of: USERNAME` header the token's owner acts for that
/// person, and only under an authority in force that an administrator checked
/// (otherwise 403, rule `no-authority`); records then show both.
pub struct ApiActor(pub Actor);

/// The header an agent names the person they act for in.
pub const ON_BEHALF_OF: &str = "on-behalf-of";

impl FromRequestParts<AppState> for ApiActor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            if parts.headers.contains_key(ON_BEHALF_OF) {
                return Err(citytrust_service::ServiceError::Unauthenticated.into());
            }
            return Ok(ApiActor(Actor::Anonymous));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 200)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    ProblemCode::InvalidToken,
                    "the Authorization header must be 'Bearer <token>'",
                )
            })?;
        let actor = state.service.actor_for_token(token).await?;
        match parts.headers.get(ON_BEHALF_OF) {
            None => Ok(ApiActor(actor)),
            Some(v) => {
                let principal = v
                    .to_str()
                    .ok()
                    .map(str::trim)
                    .filter(|p| !p.is_empty() && p.len() <= 64)
                    .ok_or_else(|| {
                        ApiError::field(
                            StatusCode::BAD_REQUEST,
                            ProblemCode::InvalidParameter,
                            "On-Behalf-Of",
                            "the On-Behalf-Of header must be the username of the person you act for",
                        )
                    })?;
                let Some(area) = authority_area(parts.uri.path()) else {
                    return Err(citytrust_service::ServiceError::Refused {
                        rule: Some("outside-authority".into()),
                        message: "an agent acts for another person only to make their choices \
                                  as a resident (/api/v1/me/…), to ask for access \
                                  (/api/v1/access-requests, /api/v1/agreements/…) or to read data \
                                  under their agreements — not here"
                            .into(),
                    }
                    .into());
                };
                Ok(ApiActor(
                    state.service.act_for(&actor, principal, area).await?,
                ))
            }
        }
    }
}

/// The area of an agent's authority a request falls in (`None`: none,
/// so no agent may make it for someone else).
pub fn authority_area(path: &str) -> Option<citytrust_model::AuthorityArea> {
    use citytrust_model::AuthorityArea as A;
    if path == "/api/v1/me" || path.starts_with("/api/v1/me/") {
        return Some(A::ResidentsChoices);
    }
    // An agreement's outcome report is its recipient's own account of what
    // the share achieved: no authority covers it.
    if path.starts_with("/api/v1/agreements/") && path.ends_with("/outcomes") {
        return None;
    }
    if path.starts_with("/api/v1/access-requests") || path.starts_with("/api/v1/agreements/") {
        return Some(A::AccessRequests);
    }
    let reads = path == "/api/v1/query"
        || path.starts_with("/api/v1/privacy-budgets/")
        || (path.starts_with("/api/v1/datasets/")
            && [
                "/data",
                "/aggregate",
                "/dp-statistics",
                "/lookup",
                "/rejects",
            ]
            .iter()
            .any(|end| path.ends_with(end)));
    reads.then_some(A::Reads)
}

/// Like `ApiActor` but refuses anonymous requests.
pub struct SignedIn(pub Actor);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match ApiActor::from_request_parts(parts, state).await?.0 {
            Actor::Anonymous => Err(citytrust_service::ServiceError::Unauthenticated.into()),
            actor => Ok(SignedIn(actor)),
        }
    }
}

/// Path parameters, with a problem document (naming the parameter) when one does not parse.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => {
                use axum::extract::path::ErrorKind;
                let field = match &rejection {
                    axum::extract::rejection::PathRejection::FailedToDeserializePathParams(e) => {
                        match e.kind() {
                            ErrorKind::ParseErrorAtKey { key, .. }
                            | ErrorKind::InvalidUtf8InPathParam { key } => key.clone(),
                            _ => String::new(),
                        }
                    }
                    _ => String::new(),
                };
                Err(ApiError::field(
                    StatusCode::BAD_REQUEST,
                    ProblemCode::InvalidParameter,
                    field,
                    rejection.body_text(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_authority_lets_an_agent_report_outcomes_or_take_part_for_someone() {
        use citytrust_model::AuthorityArea as A;
        for path in [
            "/api/v1/agreements/dsa-1/outcomes",
            "/api/v1/data-requests",
            "/api/v1/data-requests/dr-1/support",
            "/api/v1/consultations/cn-1/response",
            "/api/v1/trustees/t/term",
        ] {
            assert_eq!(authority_area(path), None, "{path}");
        }
        assert_eq!(
            authority_area("/api/v1/agreements/dsa-1/attest-deletion"),
            Some(A::AccessRequests)
        );
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Vec<Inner>,
    }

    fn check(body: &str, status: u16, field: &str) {
        let err = parse_json::<Outer>(body.as_bytes()).expect_err("must fail");
        assert_eq!(err.status.as_u16(), status, "{body}: {err:?}");
        assert_eq!(
            err.errors.first().map(|e| e.field.as_str()),
            Some(field),
            "{body}: {err:?}"
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        check(r#"{"name": 1, "inner": []}"#, 422, "name");
        check(
            r#"{"name": "x", "inner": [{"n": "two"}]}"#,
            422,
            "inner[0].n",
        );
        check(r#"{"name": "x", "inner": [], "extra": 1}"#, 422, "extra");
        check(
            r#"{"name": "x", "inner": [{"n": 1, "m": 2}]}"#,
            422,
            "inner[0].m",
        );
        check(r#"{"inner": []}"#, 422, "name");
        check(r#"{"name": "x", "inner": [{"n": -1}]}"#, 422, "inner[0].n");
        check(r#"{"name": "x""#, 400, "");
        check(r#"{"name": "x", "inner": []} trailing"#, 400, "");
    }
}
