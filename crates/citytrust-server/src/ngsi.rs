//! The NGSI-LD API at `/ngsi-ld/v1` (issue 26): entities (create,
//! retrieve, replace, merge, delete; append, update, partial update and
//! delete of attributes), the batch operations, queries (with geo-queries)
//! the temporal API (`/temporal/entities`) and subscriptions
//! (`/subscriptions`, made for a purpose like a read) — over the
//! streams of the catalogue, through `citytrust-service::streams`. Also a
//! stream's write credentials under `/api/v1/datasets/{id}/stream-credentials`.
//!
//! The `@context` comes from a `Link` header (`application/json`) or the
//! body (`application/ld+json`), never both; only contexts built in are used
//! (an unknown remote one is `503 LdContextNotAvailable`). Errors are
//! NGSI-LD problem details (`type` = the specification's error type URI),
//! with CityTrust's `code` and, for refused reads, the charter `rule`.
//! Collection paths answer with or without a trailing slash. A write
//! credential comes as `Bearer ctw_…`, or as HTTP Basic's password. A read names
//! its purpose in `purpose` or the `CityTrust-Purpose` header; every answer
//! carries `CityTrust-Log-Entry`, `CityTrust-Log-Nonce` and `Repr-Digest`;
//! a query answers from the streams the reader may read and names the
//! others in `CityTrust-Withheld-Streams` (refused outright when none may be).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use citytrust_model::ngsi::query::EntityQuery;
use citytrust_model::ngsi::temporal::TemporalQuery;
use citytrust_model::ngsi::{CORE_CONTEXT, Context, ErrorType, NgsiError, Outcome, Rendering};
use citytrust_service::ServiceError;
use citytrust_service::streams::{
    BatchOp, CREDENTIAL_PREFIX, IssuedStreamCredential, NgsiAnswer, StreamCaller, StreamCredential,
    TemporalTarget,
};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiActor, ApiJson};

/// The largest body the NGSI-LD API takes (a full batch of entities).
pub const MAX_NGSI_BODY: usize = 8 * 1024 * 1024;
const LD_CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";

pub fn routes() -> Router<AppState> {
    let entities = get(query)
        .post(create)
        .put(no_entity_id)
        .patch(no_entity_id);
    let attrs = post(append).patch(update);
    let ngsi = Router::new()
        .route("/ngsi-ld/v1/entities", entities.clone())
        .route("/ngsi-ld/v1/entities/", entities)
        .route(
            "/ngsi-ld/v1/entities/{id}",
            get(retrieve).delete(delete).put(replace).patch(merge),
        )
        .route("/ngsi-ld/v1/entities/{id}/attrs", attrs.clone())
        .route("/ngsi-ld/v1/entities/{id}/attrs/", attrs)
        .route(
            "/ngsi-ld/v1/entities/{id}/attrs/{attr}",
            patch(patch_attribute)
                .put(replace_attribute)
                .delete(delete_attribute),
        )
        .route(
            "/ngsi-ld/v1/temporal/entities",
            get(temporal_query).post(temporal_upsert),
        )
        .route(
            "/ngsi-ld/v1/temporal/entities/",
            get(temporal_query).post(temporal_upsert),
        )
        .route(
            "/ngsi-ld/v1/temporal/entities/{id}",
            get(temporal_retrieve).delete(delete),
        )
        .route(
            "/ngsi-ld/v1/temporal/entities/{id}/attrs",
            post(temporal_append),
        )
        .route(
            "/ngsi-ld/v1/temporal/entities/{id}/attrs/",
            post(temporal_append),
        )
        .route(
            "/ngsi-ld/v1/subscriptions",
            get(subscriptions).post(subscribe),
        )
        .route(
            "/ngsi-ld/v1/subscriptions/",
            get(subscriptions).post(subscribe),
        )
        .route(
            "/ngsi-ld/v1/subscriptions/{id}",
            get(subscription)
                .patch(update_subscription)
                .delete(unsubscribe),
        )
        .route(
            "/ngsi-ld/v1/temporal/entityOperations/query",
            post(post_temporal_query),
        )
        .route(
            "/ngsi-ld/v1/temporal/entityOperations/query/",
            post(post_temporal_query),
        )
        .route("/ngsi-ld/v1/entityOperations/{op}", post(batch))
        .route("/ngsi-ld/v1/entityOperations/{op}/", post(batch))
        .layer(axum::middleware::from_fn(version_preference))
        .layer(DefaultBodyLimit::max(MAX_NGSI_BODY));
    ngsi.route(
        "/api/v1/datasets/{id}/stream-credentials",
        get(list_credentials).post(issue_credential),
    )
    .route(
        "/api/v1/datasets/{id}/stream-credentials/{credential}",
        axum::routing::delete(revoke_credential),
    )
}

/// `Prefer: ngsi-ld=<version>` (RFC 7240): `Preference-Applied` says the
/// answer is in the version asked for when it is. Entities are rendered as
/// in 1.8 (which added VocabProperty and more), so only 1.8 and later are
/// honoured for them; a subscription reads the same in every version.
async fn version_preference(req: Request, next: axum::middleware::Next) -> Response {
    let subscriptions = req.uri().path().starts_with("/ngsi-ld/v1/subscriptions");
    let asked = req
        .headers()
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| {
            let p = p.split(';').next()?.trim();
            let (name, value) = p.split_once('=')?;
            let value = value.trim().trim_matches('"');
            let mut parts = value.split('.').map(|n| n.parse::<u32>().ok());
            let (major, minor) = (parts.next()??, parts.next().flatten().unwrap_or(0));
            (name.trim().eq_ignore_ascii_case("ngsi-ld")
                && value.chars().all(|c| c.is_ascii_digit() || c == '.')
                && (subscriptions || (major, minor) >= (1, 8)))
                .then(|| value.to_string())
        });
    let mut res = next.run(req).await;
    if let Some(v) = asked
        && let Ok(h) = HeaderValue::from_str(&format!("ngsi-ld={v}"))
    {
        res.headers_mut().insert("preference-applied", h);
    }
    res
}

// ---- errors ------------------------------------------------------------------------------

/// An error as NGSI-LD problem details (or, for what is not NGSI-LD's —
/// a sign-in, a refusal by the charter, a body too large — CityTrust's
/// problem with its code and rule).
pub enum NgsiProblem {
    Service(ServiceError),
    Api(ApiError),
}

impl From<ServiceError> for NgsiProblem {
    fn from(e: ServiceError) -> Self {
        NgsiProblem::Service(e)
    }
}

impl From<NgsiError> for NgsiProblem {
    fn from(e: NgsiError) -> Self {
        NgsiProblem::Service(e.into())
    }
}

impl From<ApiError> for NgsiProblem {
    fn from(e: ApiError) -> Self {
        NgsiProblem::Api(e)
    }
}

impl IntoResponse for NgsiProblem {
    fn into_response(self) -> Response {
        match self {
            NgsiProblem::Service(ServiceError::Ngsi(n)) => {
                let detail = if n.kind == ErrorType::InternalError {
                    tracing::error!(error = %n.detail, "NGSI-LD internal error");
                    "something went wrong on our side; it has been logged".to_string()
                } else {
                    n.detail
                };
                let status =
                    StatusCode::from_u16(n.kind.status()).unwrap_or(StatusCode::BAD_REQUEST);
                let body = json!({
                    "type": n.kind.uri(),
                    "title": n.kind.name(),
                    "status": n.kind.status(),
                    "detail": detail,
                    "code": citytrust_model::ProblemCode::NgsiLdError.as_str(),
                });
                (status, Json(body)).into_response()
            }
            NgsiProblem::Service(other) => ApiError::from(other).into_response(),
            NgsiProblem::Api(e) => e.into_response(),
        }
    }
}

type NgsiResult<T = Response> = Result<T, NgsiProblem>;

// ---- the caller --------------------------------------------------------------------------

/// Who calls: a stream's write credential (`Bearer ctw_…`), or an API actor.
pub struct Caller(pub StreamCaller);

impl FromRequestParts<AppState> for Caller {
    type Rejection = NgsiProblem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, NgsiProblem> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        // A credential in HTTP Basic (any user name, the token as the
        // password): what clients that take a broker URL with user info send.
        let basic = value
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            })
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|up| up.split_once(':').map(|(_, p)| p.to_string()));
        if let Some(password) = basic {
            if password.starts_with(CREDENTIAL_PREFIX) && password.len() <= 200 {
                return Ok(Caller(
                    state.service.stream_caller_for_token(&password).await?,
                ));
            }
            return Err(ServiceError::ExpiredCredentials.into());
        }
        let token = value
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if let Some(t) = token
            && t.starts_with(CREDENTIAL_PREFIX)
            && t.len() <= 200
        {
            return Ok(Caller(state.service.stream_caller_for_token(t).await?));
        }
        let ApiActor(actor) = ApiActor::from_request_parts(parts, state).await?;
        Ok(Caller(StreamCaller::Actor(actor)))
    }
}

// ---- contexts, bodies and answers --------------------------------------------------------

/// The context a `Link` header names, if any.
fn link_context(headers: &HeaderMap) -> NgsiResult<Option<String>> {
    let mut found = None;
    for v in headers.get_all(header::LINK) {
        let v = v
            .to_str()
            .map_err(|_| NgsiError::bad("the Link header is not text"))?;
        for link in v.split(',') {
            let mut parts = link.split(';').map(str::trim);
            let target = parts.next().unwrap_or("");
            let is_context = parts.any(|p| {
                p.strip_prefix("rel=")
                    .is_some_and(|r| r.trim_matches('"') == LD_CONTEXT_REL)
            });
            if is_context {
                let url = target
                    .strip_prefix('<')
                    .and_then(|t| t.strip_suffix('>'))
                    .ok_or_else(|| NgsiError::bad("the Link header's context is not <URL>"))?;
                if found.is_some() {
                    return Err(
                        NgsiError::bad("the Link header names more than one @context").into(),
                    );
                }
                found = Some(url.to_string());
            }
        }
    }
    Ok(found)
}

fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The context of a request without a body (from `Link`, else the core).
fn request_context(headers: &HeaderMap) -> NgsiResult<Context> {
    let link = link_context(headers)?;
    Ok(Context::resolve(link.map(Value::String).as_ref())?)
}

/// A request's JSON body and its context (see the module's header).
/// A request's JSON body, its headers, whether it is JSON-LD, and the
/// context its Link header names.
async fn read_json(req: Request) -> NgsiResult<(Value, HeaderMap, bool, Option<String>)> {
    let headers = req.headers().clone();
    let essence = media_type(&headers);
    let ld = essence == "application/ld+json";
    if !(ld || essence == "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            citytrust_model::ProblemCode::UnsupportedMediaType,
            format!("send application/json or application/ld+json (got '{essence}')"),
        )
        .into());
    }
    let bytes = axum::body::to_bytes(req.into_body(), MAX_NGSI_BODY)
        .await
        .map_err(|_| {
            ServiceError::TooLarge(format!(
                "the request body is larger than the NGSI-LD API's limit of {MAX_NGSI_BODY} bytes \
                 (a batch holds at most {} entities)",
                citytrust_model::ngsi::MAX_BATCH
            ))
        })?;
    let body: Value = serde_json::from_slice(&bytes).map_err(|e| {
        NgsiError::invalid(format!(
            "the body is not JSON: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let link = link_context(&headers)?;
    if ld && link.is_some() {
        return Err(NgsiError::bad(
            "application/ld+json carries its @context in the body, not in a Link header",
        )
        .into());
    }
    Ok((body, headers, ld, link))
}

/// The context of one JSON document: its own `@context` (JSON-LD), or the
/// Link header's (JSON, which may not carry one).
fn document_context(
    ld: bool,
    link: Option<&str>,
    inline: Option<&Value>,
) -> Result<Context, NgsiError> {
    match (ld, inline) {
        (true, None) => Err(NgsiError::bad(
            "application/ld+json must carry an @context in the body",
        )),
        (true, Some(c)) => Context::resolve(Some(c)),
        (false, Some(_)) => Err(NgsiError::bad(
            "application/json carries no @context in the body: send it in a Link header, or \
             send application/ld+json",
        )),
        (false, None) => Context::resolve(link.map(|l| Value::String(l.to_string())).as_ref()),
    }
}

async fn body_and_context(req: Request) -> NgsiResult<(Value, Context, HeaderMap)> {
    let (body, headers, ld, link) = read_json(req).await?;
    if !body.is_object() {
        return Err(NgsiError::invalid("the body is a JSON object").into());
    }
    let inline = body_context(&body);
    let ctx = document_context(ld, link.as_deref(), inline.as_ref())?;
    Ok((body, ctx, headers))
}

/// A batch entry's context, or why it has none.
type EntryContext = Result<Arc<Context>, NgsiError>;

/// A batch's body and each entry's context: in JSON-LD each entity carries
/// its own `@context`; in JSON none may, and the Link header's applies.
/// An entry's bad context is that entry's error, not the batch's. Entries
/// with the same context share one copy of it (a context is a table of
/// hundreds of terms; a copy per entry made a 1,000-entity batch hold
/// ~40 MB of them).
async fn batch_body(req: Request) -> NgsiResult<(Value, Vec<EntryContext>, HeaderMap)> {
    let (body, headers, ld, link) = read_json(req).await?;
    let items = body
        .as_array()
        .ok_or_else(|| NgsiError::bad("a batch operation's body is a JSON array"))?;
    let mut known: Vec<(Option<Value>, EntryContext)> = Vec::new();
    let mut contexts = Vec::with_capacity(items.len());
    for item in items {
        let inline = item.get("@context").cloned();
        if let Some((_, c)) = known.iter().find(|(k, _)| *k == inline) {
            contexts.push(c.clone());
            continue;
        }
        // An id to delete names no term (any context will do), and JSON
        // without a Link header is under the core context: shared.
        let c = if inline.is_none() && (item.is_string() || (!ld && link.is_none())) {
            Ok(Context::shared_core())
        } else {
            document_context(ld, link.as_deref(), inline.as_ref()).map(Arc::new)
        };
        if known.len() < 8 {
            known.push((inline, c.clone()));
        }
        contexts.push(c);
    }
    Ok((body, contexts, headers))
}

/// The `@context` of a body (of its first entity, for a batch).
fn body_context(body: &Value) -> Option<Value> {
    match body {
        Value::Object(m) => m.get("@context").cloned(),
        Value::Array(items) => items.iter().find_map(|i| i.get("@context").cloned()),
        _ => None,
    }
}

/// The query string's parameters, decoded.
fn params(parts: &axum::http::Uri) -> Vec<(String, String)> {
    url::form_urlencoded::parse(parts.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The purpose a read names: `purpose`, else `CityTrust-Purpose`.
fn purpose(params: &[(String, String)], headers: &HeaderMap) -> Option<String> {
    param(params, "purpose").map(str::to_string).or_else(|| {
        headers
            .get("citytrust-purpose")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

fn options(params: &[(String, String)]) -> Vec<String> {
    param(params, "options")
        .map(|o| o.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Whether the reader asked for `application/geo+json` (and takes nothing plainer).
fn wants_geo(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    types.contains(&"application/geo+json")
        && !types
            .iter()
            .any(|t| *t == "application/json" || *t == "application/ld+json")
}

/// Whether the reader asked for `application/ld+json`.
fn wants_ld(headers: &HeaderMap) -> NgsiResult<bool> {
    if wants_geo(headers) {
        return Ok(false);
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*")
        .to_ascii_lowercase();
    let types: Vec<&str> = accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .collect();
    if types
        .iter()
        .any(|t| *t == "application/json" || *t == "*/*" || *t == "application/*")
    {
        return Ok(false);
    }
    if types.contains(&"application/ld+json") {
        return Ok(true);
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        citytrust_model::ProblemCode::UnsupportedMediaType,
        "this API answers application/json or application/ld+json",
    )
    .into())
}

/// The options and formats a read takes.
const OPTIONS: &[&str] = &[
    "keyValues",
    "simplified",
    "normalized",
    "concise",
    "sysAttrs",
    "temporalValues",
    "aggregatedValues",
    "noOverwrite",
    "replace",
    "update",
];

/// A projection list (`attrs`, `pick`, `omit`): names separated by commas,
/// none empty, none with a character a name may not hold.
fn projection(
    params: &[(String, String)],
    name: &str,
    ctx: &Context,
) -> NgsiResult<Option<Vec<String>>> {
    let Some(v) = param(params, name) else {
        return Ok(None);
    };
    let items: Vec<&str> = v.split(',').map(str::trim).collect();
    if items.iter().any(|i| {
        i.is_empty()
            || !i
                .chars()
                .all(|c| c.is_alphanumeric() || "_:/#.@-".contains(c))
    }) {
        return Err(NgsiError::bad(format!(
            "{name} '{v}' is not a list of names (nested projections and joins are not supported)"
        ))
        .into());
    }
    Ok(Some(
        items
            .iter()
            .map(|i| {
                if matches!(*i, "id" | "type" | "scope" | "createdAt" | "modifiedAt")
                    && name != "attrs"
                {
                    (*i).to_string()
                } else {
                    ctx.expand(i)
                }
            })
            .collect(),
    ))
}

/// Check a read's parameters: known `format` and `options`, and projections
/// that make sense together. The answer names what was wrong.
fn check_read(
    params: &[(String, String)],
    ctx: &Context,
) -> NgsiResult<(
    Option<citytrust_model::ngsi::Projection>,
    Option<citytrust_model::ngsi::Projection>,
)> {
    if let Some(f) = param(params, "format")
        && !OPTIONS.contains(&f)
    {
        return Err(NgsiError::invalid(format!(
            "format '{f}' is not one of {}",
            OPTIONS.join(", ")
        ))
        .into());
    }
    for o in options(params) {
        if !OPTIONS.contains(&o.as_str()) {
            return Err(NgsiError::invalid(format!(
                "option '{o}' is not one of {}",
                OPTIONS.join(", ")
            ))
            .into());
        }
    }
    let attrs = projection(params, "attrs", ctx)?;
    let tree = |name: &str| -> NgsiResult<Option<citytrust_model::ngsi::Projection>> {
        match param(params, name) {
            None => Ok(None),
            Some(v) => Ok(Some(
                citytrust_model::ngsi::Projection::parse(v, ctx)
                    .map_err(|e| NgsiError::bad(format!("{name}: {}", e.detail)))?,
            )),
        }
    };
    let (pick, omit) = (tree("pick")?, tree("omit")?);
    if attrs.is_some() && (pick.is_some() || omit.is_some()) {
        return Err(NgsiError::bad("attrs is not given with pick or omit").into());
    }
    if let (Some(p), Some(o)) = (&pick, &omit)
        && p.members
            .iter()
            .any(|(x, _)| o.members.iter().any(|(y, c)| y == x && c.is_none()))
    {
        return Err(NgsiError::bad("a member is both picked and omitted").into());
    }
    Ok((pick, omit))
}

/// Set a rendering's `pick` and `omit`: what they keep of the entity
/// itself (an `omit` member with `{…}` speaks of the linked entity only).
/// What they say of linked entities needs a join that reaches that deep.
fn project(
    r: &mut Rendering,
    pick: Option<citytrust_model::ngsi::Projection>,
    omit: Option<citytrust_model::ngsi::Projection>,
    join: Option<citytrust_model::ngsi::Join>,
) -> NgsiResult<()> {
    let depth = pick
        .iter()
        .chain(omit.iter())
        .map(|p| p.depth())
        .max()
        .unwrap_or(0);
    let reach = join.map_or(0, |j| j.level);
    if depth > reach {
        return Err(NgsiError::bad(format!(
            "pick or omit speaks of linked entities {depth} level(s) deep; join reaches {reach}"
        ))
        .into());
    }
    r.join = join;
    r.pick = pick.as_ref().map(|p| p.names());
    r.omit = omit.as_ref().map(|o| {
        o.members
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    });
    r.pick_tree = pick;
    r.omit_tree = omit;
    Ok(())
}

/// `pick` and `omit` on a temporal answer: its own members only (the
/// temporal API joins no linked entities).
fn temporal_projection(
    tq: &mut TemporalQuery,
    pick: Option<citytrust_model::ngsi::Projection>,
    omit: Option<citytrust_model::ngsi::Projection>,
) -> NgsiResult<()> {
    if pick.iter().chain(omit.iter()).any(|p| p.depth() > 0) {
        return Err(NgsiError::bad(
            "the temporal API joins no linked entities: pick and omit name its own members",
        )
        .into());
    }
    tq.pick = pick.map(|p| p.names());
    tq.omit = omit.map(|o| o.names());
    Ok(())
}

/// `join` and `joinLevel` (linked entity retrieval).
fn join(params: &[(String, String)]) -> NgsiResult<Option<citytrust_model::ngsi::Join>> {
    let level = match param(params, "joinLevel") {
        None => 1,
        Some(l) => match l.parse::<u32>() {
            Ok(n) if (1..=citytrust_model::ngsi::MAX_JOIN_LEVEL).contains(&n) => n,
            _ => {
                return Err(NgsiError::bad(format!(
                    "joinLevel '{l}' is not a whole number from 1 to {}",
                    citytrust_model::ngsi::MAX_JOIN_LEVEL
                ))
                .into());
            }
        },
    };
    Ok(match param(params, "join") {
        None | Some("@none") => None,
        Some("inline") => Some(citytrust_model::ngsi::Join { flat: false, level }),
        Some("flat") => Some(citytrust_model::ngsi::Join { flat: true, level }),
        Some(other) => {
            return Err(
                NgsiError::bad(format!("join '{other}' is not inline, flat or @none")).into(),
            );
        }
    })
}

fn rendering(params: &[(String, String)], ctx: &Context, ld: bool) -> Rendering {
    let opts = options(params);
    let attrs = param(params, "attrs").map(|a| {
        a.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| ctx.expand(s))
            .collect()
    });
    Rendering {
        key_values: opts.iter().any(|o| o == "keyValues" || o == "simplified")
            || param(params, "format").is_some_and(|f| f == "keyValues" || f == "simplified"),
        sys_attrs: opts.iter().any(|o| o == "sysAttrs"),
        attrs,
        with_context: ld,
        geo_json: false,
        geometry_property: param(params, "geometryProperty").map(str::to_string),
        pick: None,
        omit: None,
        lang: param(params, "lang").map(str::to_string),
        pick_tree: None,
        omit_tree: None,
        join: None,
        type_selector: None,
        datasets: param(params, "datasetId").map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }),
    }
}

/// A GeoJSON answer is labelled as one.
fn geo_answer(mut res: Response, geo: bool) -> Response {
    if geo {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/geo+json"),
        );
    }
    res
}

/// An answer with its log headers, and the context's `Link` for plain JSON.
fn answer(a: NgsiAnswer, ctx: &Context, ld: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if ld {
            "application/ld+json"
        } else {
            "application/json"
        }),
    );
    if !ld {
        let url = match &ctx.source {
            Some(Value::String(u)) => u.clone(),
            _ => CORE_CONTEXT.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&format!(
            "<{url}>; rel=\"{LD_CONTEXT_REL}\"; type=\"application/ld+json\""
        )) {
            headers.insert(header::LINK, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&a.log_index.to_string()) {
        headers.insert("citytrust-log-entry", v);
    }
    if let Ok(v) = HeaderValue::from_str(&a.nonce) {
        headers.insert("citytrust-log-nonce", v);
    }
    use base64::Engine;
    let digest = base64::engine::general_purpose::STANDARD
        .encode(hex::decode(&a.sha256).unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{digest}:")) {
        headers.insert("repr-digest", v);
    }
    if let Some(n) = a.count
        && let Ok(v) = HeaderValue::from_str(&n.to_string())
    {
        headers.insert("ngsild-results-count", v);
    }
    if !a.withheld.is_empty()
        && let Ok(v) = HeaderValue::from_str(&a.withheld.join(", "))
    {
        headers.insert("citytrust-withheld-streams", v);
    }
    let status = match &a.content_range {
        Some(range) => {
            if let Ok(v) = HeaderValue::from_str(range) {
                headers.insert(header::CONTENT_RANGE, v);
            }
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    (status, headers, a.body).into_response()
}

fn stream_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("citytrust-stream")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

/// 204, or 207 with what was not updated.
fn outcome(o: Outcome) -> Response {
    if o.not_updated.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        StatusCode::MULTI_STATUS,
        Json(json!({
            "updated": o.updated,
            "notUpdated": o.not_updated.iter().map(|n| json!({
                "attributeName": n.attribute, "reason": n.reason,
            })).collect::<Vec<_>>(),
        })),
    )
        .into_response()
}

// ---- handlers ----------------------------------------------------------------------------

async fn create(State(state): State<AppState>, Caller(caller): Caller, req: Request) -> NgsiResult {
    let (body, ctx, headers) = body_and_context(req).await?;
    let id = state
        .service
        .ngsi_create(&caller, &ctx, &body, stream_header(&headers).as_deref())
        .await?;
    let location = format!("/ngsi-ld/v1/entities/{}", urlencoding(&id));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// An id as a path segment: what RFC 3986 allows in one (`:` included, as
/// other brokers send URNs) kept, anything else percent-encoded.
fn urlencoding(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn retrieve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let (pick, omit) = check_read(&params, &ctx)?;
    let mut r = rendering(&params, &ctx, ld);
    r.geo_json = wants_geo(&headers);
    if r.geometry_property.is_some() && !r.geo_json {
        return Err(NgsiError::bad(
            "geometryProperty is for GeoJSON answers: send Accept: application/geo+json",
        )
        .into());
    }
    project(&mut r, pick, omit, join(&params)?)?;
    r.type_selector = param(&params, "type").map(|t| {
        t.split([',', '|'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| ctx.expand(s))
            .collect()
    });
    let a = state
        .service
        .ngsi_retrieve(
            &caller,
            &ctx,
            &id,
            purpose(&params, &headers).as_deref(),
            &r,
        )
        .await?;
    Ok(geo_answer(answer(a, &ctx, ld), r.geo_json))
}

async fn query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ctx = request_context(&headers)?;
    let q = EntityQuery::from_params(&params, &ctx)?;
    query_answer(
        &state,
        &caller,
        &params,
        &headers,
        &ctx,
        &q,
        Some(uri.path()),
    )
    .await
}

/// An entity query's answer (`GET /entities`, `POST /entityOperations/query`),
/// with pagination links to `path` when given.
async fn query_answer(
    state: &AppState,
    caller: &StreamCaller,
    params: &[(String, String)],
    headers: &HeaderMap,
    ctx: &Context,
    q: &EntityQuery,
    path: Option<&str>,
) -> NgsiResult {
    let ld = wants_ld(headers)?;
    let (pick, omit) = check_read(params, ctx)?;
    let mut r = rendering(params, ctx, ld);
    r.geo_json = wants_geo(headers);
    if r.geometry_property.is_some() && !r.geo_json {
        return Err(NgsiError::bad(
            "geometryProperty is for GeoJSON answers: send Accept: application/geo+json",
        )
        .into());
    }
    project(&mut r, pick, omit, join(params)?)?;
    let a = state
        .service
        .ngsi_query(caller, ctx, q, purpose(params, headers).as_deref(), &r)
        .await?;
    let links = match path {
        Some(path) => page_links(
            path.trim_end_matches('/'),
            params,
            q.limit,
            q.offset,
            a.matched,
            ld,
        ),
        None => Vec::new(),
    };
    let mut res = geo_answer(answer(a, ctx, ld), r.geo_json);
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            res.headers_mut().append(header::LINK, v);
        }
    }
    Ok(res)
}

async fn temporal_retrieve(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let (pick, omit) = check_read(&params, &ctx)?;
    let mut tq = TemporalQuery::from_params(&params, &ctx)?;
    temporal_projection(&mut tq, pick, omit)?;
    let a = state
        .service
        .ngsi_temporal(
            &caller,
            &ctx,
            TemporalTarget::One(&id),
            &tq,
            purpose(&params, &headers).as_deref(),
            ld,
        )
        .await?;
    Ok(answer(a, &ctx, ld))
}

/// The entities a temporal query selects; it orders by id alone.
fn temporal_entity_query(params: &[(String, String)], ctx: &Context) -> NgsiResult<EntityQuery> {
    let q = EntityQuery::from_params(params, ctx)?;
    if q.orders_by_more_than_id() {
        return Err(NgsiError::bad(
            "the temporal API orders entities by id alone (orderBy=id or id;desc)",
        )
        .into());
    }
    Ok(q)
}

async fn temporal_query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    temporal_query_answer(&state, &caller, &params, &headers, &ctx, ld).await
}

/// A temporal query, from its parameters (the query string's, and a
/// POSTed query's body's), answered.
async fn temporal_query_answer(
    state: &AppState,
    caller: &StreamCaller,
    params: &[(String, String)],
    headers: &HeaderMap,
    ctx: &Context,
    ld: bool,
) -> NgsiResult {
    let (pick, omit) = check_read(params, ctx)?;
    let q = temporal_entity_query(params, ctx)?;
    let mut tq = TemporalQuery::from_params(params, ctx)?;
    temporal_projection(&mut tq, pick, omit)?;
    let a = state
        .service
        .ngsi_temporal(
            caller,
            ctx,
            TemporalTarget::Query(&q),
            &tq,
            purpose(params, headers).as_deref(),
            ld,
        )
        .await?;
    Ok(answer(a, ctx, ld))
}

async fn subscribe(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> NgsiResult {
    let params = params(req.uri());
    let purpose = purpose(&params, req.headers());
    let (body, ctx, _) = body_and_context(req).await?;
    let id = state
        .service
        .ngsi_subscribe(&caller, &ctx, &body, purpose.as_deref())
        .await?;
    let location = format!("/ngsi-ld/v1/subscriptions/{}", urlencoding(&id));
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// A JSON answer that is not content (subscriptions): with the context's `Link`.
fn plain(v: Value, ctx: &Context, ld: bool) -> Response {
    let mut res = (StatusCode::OK, Json(v)).into_response();
    if ld {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/ld+json"),
        );
    } else if let Ok(link) = HeaderValue::from_str(&format!(
        "<{}>; rel=\"{LD_CONTEXT_REL}\"; type=\"application/ld+json\"",
        match &ctx.source {
            Some(Value::String(u)) => u.clone(),
            _ => CORE_CONTEXT.to_string(),
        }
    )) {
        res.headers_mut().insert(header::LINK, link);
    }
    res
}

async fn subscriptions(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let params = params(&uri);
    let number = |name: &str, default: usize| -> NgsiResult<usize> {
        match param(&params, name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| NgsiError::bad(format!("{name} '{v}' is not a number")).into()),
        }
    };
    let (limit, offset) = (number("limit", 20)?, number("offset", 0)?);
    if limit > citytrust_model::ngsi::MAX_LIMIT {
        return Err(NgsiError::new(
            citytrust_model::ngsi::ErrorType::TooManyResults,
            format!("limit is at most {}", citytrust_model::ngsi::MAX_LIMIT),
        )
        .into());
    }
    let all = state.service.ngsi_subscriptions(&caller, &ctx, ld).await?;
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(offset).take(limit).collect();
    let mut res = plain(Value::Array(page), &ctx, ld);
    if param(&params, "count") == Some("true")
        && let Ok(v) = HeaderValue::from_str(&total.to_string())
    {
        res.headers_mut().insert("ngsild-results-count", v);
    }
    let links = page_links(
        uri.path().trim_end_matches('/'),
        &params,
        limit,
        offset,
        Some(total),
        ld,
    );
    for l in links {
        if let Ok(v) = HeaderValue::from_str(&l) {
            res.headers_mut().append(header::LINK, v);
        }
    }
    Ok(res)
}

async fn subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> NgsiResult {
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let s = state
        .service
        .ngsi_subscription(&caller, &ctx, &id, ld)
        .await?;
    Ok(plain(s, &ctx, ld))
}

async fn update_subscription(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let (body, ctx, _) = body_and_context(req).await?;
    state
        .service
        .ngsi_update_subscription(&caller, &ctx, &id, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn unsubscribe(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> NgsiResult {
    state.service.ngsi_unsubscribe(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn temporal_upsert(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> NgsiResult {
    let (body, ctx, headers) = body_and_context(req).await?;
    let created = state
        .service
        .ngsi_temporal_upsert(&caller, &ctx, &body, stream_header(&headers).as_deref())
        .await?;
    if created {
        let id = body.get("id").and_then(Value::as_str).unwrap_or("");
        let location = format!("/ngsi-ld/v1/temporal/entities/{}", urlencoding(id));
        Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

async fn temporal_append(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let (body, ctx, _) = body_and_context(req).await?;
    state
        .service
        .ngsi_temporal_append(&caller, &ctx, &id, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Pagination links (4.12): `prev` and `next` pages of a query, as the
/// request with another `offset` (parameters in name order).
fn page_links(
    path: &str,
    params: &[(String, String)],
    limit: usize,
    offset: usize,
    matched: Option<usize>,
    ld: bool,
) -> Vec<String> {
    let kind = if ld {
        "application/ld+json"
    } else {
        "application/json"
    };
    let Some(total) = matched else {
        return Vec::new();
    };
    if limit == 0 {
        return Vec::new();
    }
    let link = |to: usize, rel: &str| {
        let mut ps: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "offset" && k != "limit")
            .cloned()
            .collect();
        ps.push(("limit".into(), limit.to_string()));
        ps.push(("offset".into(), to.to_string()));
        ps.sort();
        let query: Vec<String> = ps
            .iter()
            .map(|(k, v)| {
                // Kept as sent, but what would break the header is escaped.
                let v: String = v
                    .chars()
                    .map(|c| match c {
                        '>' | '<' | '"' | ' ' | ',' | '&' | '#' => format!("%{:02X}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                format!("{k}={v}")
            })
            .collect();
        format!(
            "<{path}?{}>; rel=\"{rel}\";type=\"{kind}\"",
            query.join("&")
        )
    };
    let mut out = Vec::new();
    if offset > 0 {
        out.push(link(offset.saturating_sub(limit), "prev"));
    }
    if offset + limit < total {
        out.push(link(offset + limit, "next"));
    }
    out
}

/// `PUT` / `PATCH` on the collection: an entity is named in the path.
async fn no_entity_id() -> NgsiResult {
    Err(NgsiError::bad("name the entity to replace or merge: /entities/{id}").into())
}

/// A `type` selector on an operation on one entity: the entity has one of
/// the types, or the operation answers 404 and changes nothing.
async fn type_gate(
    state: &AppState,
    caller: &StreamCaller,
    ctx: &Context,
    id: &str,
    selector: Option<&str>,
) -> NgsiResult<()> {
    if let Some(types) = selector {
        state.service.ngsi_type_gate(caller, ctx, id, types).await?;
    }
    Ok(())
}

async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let ctx = request_context(&headers)?;
    type_gate(&state, &caller, &ctx, &id, param(&params(&uri), "type")).await?;
    state.service.ngsi_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    state
        .service
        .ngsi_replace(&caller, &ctx, &id, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn merge(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    state.service.ngsi_merge(&caller, &ctx, &id, &body).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn append(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let overwrite = !params(req.uri())
        .iter()
        .any(|(k, v)| k == "options" && v.split(',').any(|o| o == "noOverwrite"));
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    let o = state
        .service
        .ngsi_append(&caller, &ctx, &id, &body, overwrite)
        .await?;
    Ok(outcome(o))
}

async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    let o = state.service.ngsi_update(&caller, &ctx, &id, &body).await?;
    Ok(outcome(o))
}

async fn patch_attribute(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, attr)): Path<(String, String)>,
    req: Request,
) -> NgsiResult {
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    state
        .service
        .ngsi_patch_attribute(&caller, &ctx, &id, &attr, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn replace_attribute(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, attr)): Path<(String, String)>,
    req: Request,
) -> NgsiResult {
    let selector = param(&params(req.uri()), "type").map(str::to_string);
    let (body, ctx, _) = body_and_context(req).await?;
    type_gate(&state, &caller, &ctx, &id, selector.as_deref()).await?;
    state
        .service
        .ngsi_replace_attribute(&caller, &ctx, &id, &attr, &body)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete_attribute(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, attr)): Path<(String, String)>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ctx = request_context(&headers)?;
    let all = param(&params, "deleteAll") == Some("true");
    type_gate(&state, &caller, &ctx, &id, param(&params, "type")).await?;
    state
        .service
        .ngsi_delete_attribute(&caller, &ctx, &id, &attr, param(&params, "datasetId"), all)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query-string form of a POSTed query's body: `entities`, `attrs`,
/// `q`, `geoQ`, and for the temporal API `temporalQ` and `aggrParams`.
fn body_params(body: &Value, temporal: bool) -> NgsiResult<Vec<(String, String)>> {
    let m = body
        .as_object()
        .ok_or_else(|| NgsiError::bad("a query is a JSON object"))?;
    if m.get("type").is_some_and(|t| t != "Query") {
        return Err(NgsiError::bad("a query's type is Query").into());
    }
    let join = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => Ok(a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(",")),
        _ => Err(NgsiError::bad(
            "a list of names is a non-empty array of strings",
        )),
    };
    let mut out = Vec::new();
    if let Some(entities) = m.get("entities") {
        let entities = entities
            .as_array()
            .ok_or_else(|| NgsiError::bad("entities is an array of selectors"))?;
        let mut types = Vec::new();
        let mut ids = Vec::new();
        for e in entities {
            let t = e
                .get("type")
                .ok_or_else(|| NgsiError::bad("each entities selector names a type"))?;
            types.push(join(t)?);
            if let Some(id) = e.get("id") {
                ids.push(join(id)?);
            }
            if let Some(p) = e.get("idPattern").and_then(Value::as_str) {
                out.push(("idPattern".to_string(), p.to_string()));
            }
        }
        out.push(("type".into(), types.join(",")));
        if !ids.is_empty() {
            out.push(("id".into(), ids.join(",")));
        }
    }
    if let Some(a) = m.get("attrs") {
        out.push(("attrs".into(), join(a)?));
    }
    for k in ["pick", "omit"] {
        if let Some(v) = m.get(k) {
            out.push((k.into(), join(v)?));
        }
    }
    for k in ["join", "lang", "scopeQ"] {
        match m.get(k) {
            Some(Value::String(v)) => out.push((k.into(), v.clone())),
            Some(_) => return Err(NgsiError::bad(format!("{k} is a string")).into()),
            None => {}
        }
    }
    if let Some(v) = m.get("joinLevel") {
        out.push((
            "joinLevel".into(),
            v.as_u64().map_or_else(|| v.to_string(), |n| n.to_string()),
        ));
    }
    match m.get("q") {
        Some(Value::String(q)) => out.push(("q".into(), q.clone())),
        Some(_) => return Err(NgsiError::bad("q is a string").into()),
        None => {}
    }
    if let Some(g) = m.get("geoQ") {
        out.push(("geoQ".into(), g.to_string()));
    }
    match (temporal, m.get("temporalQ")) {
        (false, Some(_)) => {
            return Err(NgsiError::bad("temporalQ belongs to the temporal API's query").into());
        }
        (true, Some(Value::Object(t))) => {
            for (k, v) in t {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) if k == "lastN" => n.to_string(),
                    Value::Array(_) if k == "aggrMethods" => join(v)?,
                    _ => return Err(NgsiError::bad(format!("temporalQ.{k} is not valid")).into()),
                };
                if k == "aggrMethods" {
                    out.push(("options".into(), "aggregatedValues".into()));
                }
                if !matches!(
                    k.as_str(),
                    "timerel"
                        | "timeAt"
                        | "endTimeAt"
                        | "lastN"
                        | "timeproperty"
                        | "aggrMethods"
                        | "aggrPeriodDuration"
                ) {
                    return Err(
                        NgsiError::bad(format!("'{k}' is not a member of temporalQ")).into(),
                    );
                }
                out.push((k.clone(), text));
            }
        }
        (true, Some(_)) => return Err(NgsiError::bad("temporalQ is an object").into()),
        _ => {}
    }
    match (temporal, m.get("ordering")) {
        (_, None) => {}
        (false, Some(Value::Object(o))) => {
            for (k, v) in o {
                let text = match (k.as_str(), v) {
                    ("orderBy", v) => join(v)?,
                    ("coordinates", Value::Array(a)) => Value::Array(a.clone()).to_string(),
                    ("coordinates", _) => {
                        return Err(
                            NgsiError::bad("ordering.coordinates is an array [lon,lat]").into()
                        );
                    }
                    ("geometry", Value::String(g)) if g == "Point" => continue,
                    ("geometry", _) => {
                        return Err(NgsiError::bad("ordering.geometry is \"Point\"").into());
                    }
                    ("collation", Value::String(c)) => c.clone(),
                    _ => {
                        return Err(
                            NgsiError::bad(format!("'{k}' is not a member of ordering")).into()
                        );
                    }
                };
                let name = match k.as_str() {
                    "coordinates" => "orderFrom",
                    other => other,
                };
                out.push((name.to_string(), text));
            }
        }
        (false, Some(_)) => return Err(NgsiError::bad("ordering is an object").into()),
        (true, Some(_)) => {
            return Err(NgsiError::bad(
                "ordering belongs to the entity query, not the temporal one",
            )
            .into());
        }
    }
    if let Some(a) = m.get("aggrParams") {
        if let Some(methods) = a.get("aggrMethods") {
            out.push(("aggrMethods".into(), join(methods)?));
            out.push(("options".into(), "aggregatedValues".into()));
        }
        if let Some(d) = a.get("aggrPeriodDuration").and_then(Value::as_str) {
            out.push(("aggrPeriodDuration".into(), d.to_string()));
        }
    }
    Ok(out)
}

/// `POST /temporal/entityOperations/query`.
async fn post_temporal_query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    req: Request,
) -> NgsiResult {
    let mut query_params = params(req.uri());
    let headers = req.headers().clone();
    let ld = wants_ld(&headers)?;
    let (body, ctx, _) = body_and_context(req).await?;
    query_params.extend(body_params(&body, true)?);
    temporal_query_answer(&state, &caller, &query_params, &headers, &ctx, ld).await
}

/// `POST /entityOperations/query`: a query in the body (`entities`, `attrs`,
/// `q`, `geoQ`), paged and rendered by the query string, answered as `GET /entities`.
async fn post_query(state: AppState, caller: StreamCaller, req: Request) -> NgsiResult {
    let mut query_params = params(req.uri());
    let headers = req.headers().clone();
    wants_ld(&headers)?;
    let (body, ctx, _) = body_and_context(req).await?;
    query_params.extend(body_params(&body, false)?);
    check_read(&query_params, &ctx)?;
    let q = EntityQuery::from_params(&query_params, &ctx)?;
    query_answer(&state, &caller, &query_params, &headers, &ctx, &q, None).await
}

async fn batch(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(op): Path<String>,
    req: Request,
) -> NgsiResult {
    if op == "query" {
        return post_query(state, caller, req).await;
    }
    let opts: Vec<String> = params(req.uri())
        .into_iter()
        .filter(|(k, _)| k == "options")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let op = match op.as_str() {
        "create" => BatchOp::Create,
        "upsert" => BatchOp::Upsert {
            replace: !opts.iter().any(|o| o == "update"),
        },
        "update" => BatchOp::Update {
            overwrite: !opts.iter().any(|o| o == "noOverwrite"),
        },
        "delete" => BatchOp::Delete,
        "merge" => BatchOp::Merge,
        other => {
            return Err(NgsiError::not_found(format!(
                "'{other}' is not a batch operation (create, upsert, update, merge, delete)"
            ))
            .into());
        }
    };
    let (body, contexts, headers) = batch_body(req).await?;
    let o = state
        .service
        .ngsi_batch(
            &caller,
            &contexts,
            op,
            &body,
            stream_header(&headers).as_deref(),
        )
        .await?;
    if !o.errors.is_empty() {
        return Ok((
            StatusCode::MULTI_STATUS,
            Json(json!({
                "success": o.success,
                "errors": o.errors.iter().map(|(id, e)| json!({
                    "entityId": id,
                    "error": {
                        "type": e.kind.uri(),
                        "title": e.kind.name(),
                        "status": e.kind.status(),
                        "detail": e.detail,
                    },
                })).collect::<Vec<_>>(),
            })),
        )
            .into_response());
    }
    Ok(match op {
        BatchOp::Create => (StatusCode::CREATED, Json(json!(o.success))).into_response(),
        BatchOp::Upsert { .. } if !o.created.is_empty() => {
            (StatusCode::CREATED, Json(json!(o.created))).into_response()
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    })
}

// ---- write credentials -------------------------------------------------------------------

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewStreamCredential {
    /// What the credential is for (a device, a gateway).
    pub label: String,
}

async fn issue_credential(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<NewStreamCredential>,
) -> Result<(StatusCode, Json<IssuedStreamCredential>), ApiError> {
    let issued = state
        .service
        .issue_stream_credential(&actor, &id, &new.label)
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

async fn list_credentials(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Json<Vec<StreamCredential>>, ApiError> {
    Ok(Json(state.service.stream_credentials(&actor, &id).await?))
}

async fn revoke_credential(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path((id, credential)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .revoke_stream_credential(&actor, &id, &credential)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
