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
    let entities = get(query).post(create);
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
async fn body_and_context(req: Request) -> NgsiResult<(Value, Context, HeaderMap)> {
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
    let inline = body_context(&body);
    let ctx = match (ld, link, inline) {
        (true, Some(_), _) => {
            return Err(NgsiError::bad(
                "application/ld+json carries its @context in the body, not in a Link header",
            )
            .into());
        }
        (true, None, None) => {
            return Err(
                NgsiError::bad("application/ld+json must carry an @context in the body").into(),
            );
        }
        (true, None, Some(c)) => Context::resolve(Some(&c))?,
        (false, _, Some(_)) => {
            return Err(NgsiError::bad(
                "application/json carries no @context in the body: send it in a Link header, or \
                 send application/ld+json",
            )
            .into());
        }
        (false, link, None) => Context::resolve(link.map(Value::String).as_ref())?,
    };
    Ok((body, ctx, headers))
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

/// A `pick` or `omit` list (`None`: not given).
type Projection = Option<Vec<String>>;

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
fn check_read(params: &[(String, String)], ctx: &Context) -> NgsiResult<(Projection, Projection)> {
    if let Some(f) = param(params, "format")
        && !OPTIONS.contains(&f)
    {
        return Err(
            NgsiError::bad(format!("format '{f}' is not one of {}", OPTIONS.join(", "))).into(),
        );
    }
    for o in options(params) {
        if !OPTIONS.contains(&o.as_str()) {
            return Err(NgsiError::bad(format!(
                "option '{o}' is not one of {}",
                OPTIONS.join(", ")
            ))
            .into());
        }
    }
    let (attrs, pick, omit) = (
        projection(params, "attrs", ctx)?,
        projection(params, "pick", ctx)?,
        projection(params, "omit", ctx)?,
    );
    if attrs.is_some() && (pick.is_some() || omit.is_some()) {
        return Err(NgsiError::bad("attrs is not given with pick or omit").into());
    }
    if let (Some(p), Some(o)) = (&pick, &omit)
        && p.iter().any(|x| o.contains(x))
    {
        return Err(NgsiError::bad("a member is both picked and omitted").into());
    }
    Ok((pick, omit))
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
    (StatusCode::OK, headers, a.body).into_response()
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
    r.pick = pick;
    r.omit = omit;
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
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let q = EntityQuery::from_params(&params, &ctx)?;
    let (pick, omit) = check_read(&params, &ctx)?;
    let mut r = rendering(&params, &ctx, ld);
    r.geo_json = wants_geo(&headers);
    r.pick = pick;
    r.omit = omit;
    let a = state
        .service
        .ngsi_query(&caller, &ctx, &q, purpose(&params, &headers).as_deref(), &r)
        .await?;
    Ok(geo_answer(answer(a, &ctx, ld), r.geo_json))
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
    check_read(&params, &ctx)?;
    let tq = TemporalQuery::from_params(&params, &ctx)?;
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

async fn temporal_query(
    State(state): State<AppState>,
    Caller(caller): Caller,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> NgsiResult {
    let params = params(&uri);
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    check_read(&params, &ctx)?;
    let q = EntityQuery::from_params(&params, &ctx)?;
    let tq = TemporalQuery::from_params(&params, &ctx)?;
    let a = state
        .service
        .ngsi_temporal(
            &caller,
            &ctx,
            TemporalTarget::Query(&q),
            &tq,
            purpose(&params, &headers).as_deref(),
            ld,
        )
        .await?;
    Ok(answer(a, &ctx, ld))
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
) -> NgsiResult {
    let ld = wants_ld(&headers)?;
    let ctx = request_context(&headers)?;
    let all = state.service.ngsi_subscriptions(&caller, &ctx, ld).await?;
    Ok(plain(Value::Array(all), &ctx, ld))
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

async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> NgsiResult {
    state.service.ngsi_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn replace(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(id): Path<String>,
    req: Request,
) -> NgsiResult {
    let (body, ctx, _) = body_and_context(req).await?;
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
    let (body, ctx, _) = body_and_context(req).await?;
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
    let (body, ctx, _) = body_and_context(req).await?;
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
    let (body, ctx, _) = body_and_context(req).await?;
    let o = state.service.ngsi_update(&caller, &ctx, &id, &body).await?;
    Ok(outcome(o))
}

async fn patch_attribute(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((id, attr)): Path<(String, String)>,
    req: Request,
) -> NgsiResult {
    let (body, ctx, _) = body_and_context(req).await?;
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
    let (body, ctx, _) = body_and_context(req).await?;
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
                    _ => return Err(NgsiError::bad(format!("temporalQ.{k} is not valid")).into()),
                };
                if !matches!(
                    k.as_str(),
                    "timerel" | "timeAt" | "endTimeAt" | "lastN" | "timeproperty"
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
    check_read(&query_params, &ctx)?;
    let q = EntityQuery::from_params(&query_params, &ctx)?;
    let tq = TemporalQuery::from_params(&query_params, &ctx)?;
    let a = state
        .service
        .ngsi_temporal(
            &caller,
            &ctx,
            TemporalTarget::Query(&q),
            &tq,
            purpose(&query_params, &headers).as_deref(),
            ld,
        )
        .await?;
    Ok(answer(a, &ctx, ld))
}

/// `POST /entityOperations/query`: a query in the body (`entities`, `attrs`,
/// `q`, `geoQ`), paged and rendered by the query string, answered as `GET /entities`.
async fn post_query(state: AppState, caller: StreamCaller, req: Request) -> NgsiResult {
    let mut query_params = params(req.uri());
    let headers = req.headers().clone();
    let ld = wants_ld(&headers)?;
    let (body, ctx, _) = body_and_context(req).await?;
    query_params.extend(body_params(&body, false)?);
    check_read(&query_params, &ctx)?;
    let q = EntityQuery::from_params(&query_params, &ctx)?;
    let r = rendering(&query_params, &ctx, ld);
    let a = state
        .service
        .ngsi_query(
            &caller,
            &ctx,
            &q,
            purpose(&query_params, &headers).as_deref(),
            &r,
        )
        .await?;
    Ok(answer(a, &ctx, ld))
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
        other => {
            return Err(NgsiError::not_found(format!(
                "'{other}' is not a batch operation (create, upsert, update, delete)"
            ))
            .into());
        }
    };
    let (body, ctx, headers) = body_and_context(req).await?;
    let o = state
        .service
        .ngsi_batch(&caller, &ctx, op, &body, stream_header(&headers).as_deref())
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
