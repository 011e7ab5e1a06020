//! Dataset content over HTTP: uploads of new versions, version metadata and
//! quality, governed downloads, and SQL. Bodies stream both ways: an upload
//! is written to disk as it arrives, a download is read from the service's
//! spooled (already logged) file.

use citytrust_model::ProblemCode;
use std::collections::BTreeMap;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use citytrust_query::export::{OutputFormat, Slice};
use citytrust_query::ingest::OnError;
use citytrust_query::quality::QualityRules;
use citytrust_query::version::InvalidVersion;
use citytrust_query::{InputFormat, VersionChoice};
use citytrust_service::content::{
    QueryRequest, ReadRequest, RefreshState, Served, UploadOptions, VersionInfo,
};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiActor, ApiJson, ApiPath, ApiQuery, SignedIn};

/// Largest upload accepted (after any gzip transfer encoding is undone, the
/// file may be larger).
pub const MAX_UPLOAD_BYTES: u64 = 4 * 1024 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/datasets/{id}/versions",
            get(list_versions)
                .post(upload_version)
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/datasets/{id}/versions/{version}", get(get_version))
        .route(
            "/api/v1/datasets/{id}/versions/{version}/rejects",
            get(get_rejects),
        )
        .route("/api/v1/datasets/{id}/data", get(get_data))
        .route("/api/v1/datasets/{id}/timeliness", get(get_timeliness))
        .route(
            "/api/v1/datasets/{id}/quality-rules",
            get(get_quality_rules).put(put_quality_rules),
        )
        .route("/api/v1/query", post(run_query))
        .route("/api/v1/datasets/{id}/aggregate", post(aggregate))
        .route("/api/v1/datasets/{id}/dp-statistics", post(dp_statistic))
        .route("/api/v1/datasets/{id}/lookup", post(lookup))
        .route("/api/v1/privacy-budgets/{account}", get(get_privacy_budget))
}

/// Options of an upload.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// `reject` (default): any bad row rejects the upload. `quarantine`: bad rows go to a rejects file.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(reject|quarantine)$")]
    pub on_error: Option<OnError>,
    /// Declared column types, comma-separated `column:type` pairs; a date or
    /// timestamp may add a chrono format: `starttime:timestamp:%m/%d/%y %H:%M`.
    #[serde(default)]
    #[param(max_length = 4000)]
    pub types: Option<String>,
}

fn parse_types(types: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in types
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let Some((column, spec)) = pair.split_once(':') else {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidParameter,
                "types",
                format!("'{pair}' is not column:type"),
            ));
        };
        out.insert(column.trim().to_string(), spec.trim().to_string());
    }
    Ok(out)
}

/// Upload a new version of a dataset's content. The body is the file.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/versions", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id"), UploadParams),
    request_body(content = String, description = "The file: CSV, TSV, JSON array, NDJSON, GeoJSON FeatureCollection or Parquet (may be sent with Content-Encoding: gzip)",
        content_type = "text/csv"),
    responses(
        CommonProblems,
        (status = 201, description = "The new version, with its quality statement", body = Object),
        (status = 400, description = "Unknown or malformed parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to publish versions of this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Upload too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad rows (errors list line, column and message) or an unreadable file", body = Problem, content_type = "application/problem+json"),
    ))]
async fn upload_version(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<UploadParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let info = receive_version(&state, &actor, &id, params, request).await?;
    let location = format!(
        "/api/v1/datasets/{}/versions/{}",
        info.dataset_id, info.version
    );
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(info),
    )
        .into_response())
}

/// Receive a request whose body is a file and publish it as a new version
/// (the API and the portal's upload form both come here).
pub(crate) async fn receive_version(
    state: &AppState,
    actor: &citytrust_model::Actor,
    id: &str,
    params: UploadParams,
    request: Request,
) -> Result<VersionInfo, ApiError> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let format = InputFormat::from_media_type(&content_type).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProblemCode::UnsupportedMediaType,
            format!(
                "send the file with Content-Type text/csv, text/tab-separated-values, application/json, \
                 application/x-ndjson, application/geo+json or application/vnd.apache.parquet (got '{content_type}')"
            ),
        )
    })?;
    let gzip = match request
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
    {
        None => false,
        Some(v) if v == "identity" => false,
        Some(v) if v == "gzip" => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ProblemCode::UnsupportedEncoding,
                format!("Content-Encoding '{other}' is not supported (use gzip or none)"),
            ));
        }
    };
    let declared = parse_types(params.types.as_deref())?;
    let upload = match state.service.begin_upload(actor, id).await {
        Ok(upload) => upload,
        Err(e) => {
            // Read (and drop) a small body before refusing, so a client still
            // sending it gets the answer rather than a reset connection.
            drain(request.into_body(), 1 << 20).await;
            return Err(e.into());
        }
    };
    receive(request.into_body(), &upload.body_path()).await?;
    Ok(state
        .service
        .finish_upload(
            upload,
            UploadOptions {
                format,
                on_error: params.on_error.unwrap_or_default(),
                declared,
                gzip,
            },
            None,
        )
        .await?)
}

/// Read and discard up to `limit` bytes of a body.
async fn drain(body: Body, limit: u64) {
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        total += chunk.len() as u64;
        if total > limit {
            break;
        }
    }
}

/// Write a request body to `path` as it arrives, within the size limit.
async fn receive(body: Body, path: &std::path::Path) -> Result<(), ApiError> {
    // A full disk is this node's `503 node_disk_full` (retryable elsewhere);
    // any other failure to write is internal.
    let io = |e: std::io::Error| ApiError::from(citytrust_service::ServiceError::from(e));
    let mut file = tokio::fs::File::create_new(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut total: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::UploadInterrupted,
                "the upload was interrupted before the body was complete; nothing was stored",
            )
        })?;
        total += chunk.len() as u64;
        if total > MAX_UPLOAD_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::BodyTooLarge,
                format!("uploads are limited to {MAX_UPLOAD_BYTES} bytes; nothing was stored"),
            ));
        }
        if let Err(e) = file.write_all(&chunk).await {
            // Read (and drop) the rest of a modest body, so the client gets
            // the answer rather than a reset connection.
            drop(file);
            let rest = axum::body::Body::from_stream(stream);
            drain(rest, 64 << 20).await;
            return Err(io(e));
        }
    }
    file.flush().await.map_err(io)?;
    if total == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::UnreadableContent,
            "the body is empty: send the file as the request body",
        ));
    }
    Ok(())
}

/// A dataset's versions, newest first, with their quality statements.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/versions", tag = "content",
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The versions", body = Vec<Object>),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_versions(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    Ok(Json(state.service.list_versions(&actor, &id).await?))
}

/// A version's path: `/datasets/{id}/versions/{version}`.
#[derive(Debug, Deserialize)]
pub struct VersionPath {
    id: String,
    version: i64,
}

/// One version: its columns and its data quality statement.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/versions/{version}", tag = "content",
    params(("id" = String, Path, description = "The dataset's id"), ("version" = i64, Path, minimum = 1, description = "The version number")),
    responses(
        CommonProblems,
        (status = 200, description = "The version", body = Object),
        (status = 400, description = "The version is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset or version", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_version(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiPath(VersionPath { id, version }): ApiPath<VersionPath>,
) -> Result<Json<VersionInfo>, ApiError> {
    Ok(Json(
        state
            .service
            .get_version(&actor, &id, Some(version))
            .await?,
    ))
}

/// What a rejects file is read for.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RejectsParams {
    /// A purpose id of the trust's taxonomy (required unless the data is open).
    #[serde(default)]
    #[param(max_length = 300)]
    pub purpose: Option<String>,
}

/// The rows a quarantine upload set aside, as CSV (line, column, field,
/// message, record). They are content: read under the same rules as the
/// rows (identified level, a purpose, an agreement or the owner's own use)
/// and logged; never to a reader whom only some residents' rows or some
/// columns may reach.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/versions/{version}/rejects", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id"), ("version" = i64, Path, minimum = 1, description = "The version number"), RejectsParams),
    responses(
        CommonProblems,
        (status = 200, description = "The rejected rows", body = String, content_type = "text/csv"),
        (status = 400, description = "The version is not a number", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version, or no rows set aside", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a purpose of the trust", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_rejects(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(VersionPath { id, version }): ApiPath<VersionPath>,
    ApiQuery(params): ApiQuery<RejectsParams>,
) -> Result<Response, ApiError> {
    let served = state
        .service
        .rejects_file(&actor, &id, version, params.purpose.as_deref())
        .await?;
    Ok(served_response(served, HeaderMap::new()))
}

/// How to read content.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DataParams {
    /// csv (default), json, ndjson, geojson or parquet.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(csv|json|ndjson|geojson|parquet)$")]
    pub format: Option<OutputFormat>,
    /// A version number; the latest when absent.
    #[serde(default)]
    #[param(minimum = 1)]
    pub version: Option<i64>,
    /// Instead of a number, the version in force at a time: a date
    /// (`2026-03-01`, as that day ended, UTC) or an RFC 3339 instant.
    #[serde(default)]
    #[param(max_length = 40)]
    pub as_of: Option<String>,
    /// Rows to skip.
    #[serde(default)]
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub offset: Option<u64>,
    /// Rows to serve at most (JSON: 1000 by default, 100000 at most).
    #[serde(default)]
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    pub limit: Option<u64>,
    /// What the data will be used for: a purpose id of the trust's taxonomy
    /// (required unless the data is open; recorded in the transparency log).
    #[serde(default)]
    #[param(max_length = 300)]
    pub purpose: Option<String>,
    /// The access level read at (identified rows by default). Rows are
    /// served at identified, pseudonymised (direct identifiers replaced by
    /// keyed pseudonyms that differ per agreement) and anonymised
    /// (k-anonymous) levels; the aggregate levels are tables, asked for at
    /// `/aggregate` and `/dp-statistics`.
    #[serde(default)]
    #[param(value_type = Option<String>, pattern = "^(metadata|index|aggregate|dp_aggregate|anonymised|pseudonymised|identified)$")]
    pub level: Option<citytrust_model::AccessLevel>,
}

const JSON_PAGE: u64 = 1000;
const MAX_PAGE: u64 = 100_000;
/// 2^53 − 1: past any real row count, and safe for the engine to add to.
const MAX_ROW_INDEX: u64 = 9_007_199_254_740_991;

/// A dataset's content, streamed. Every read is recorded in the transparency log before the first byte is sent.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/data", tag = "content",
    params(("id" = String, Path, description = "The dataset's id"), DataParams),
    responses(
        (status = 410, description = "The version named was removed (a stream version past retention)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
        (status = 200, description = "The content; `CityTrust-Log-Entry` names the log entry recording this read", content(
            (String = "text/csv"),
            (Vec<Object> = "application/json"),
            (String = "application/x-ndjson"),
            (Object = "application/geo+json"),
            (String = "application/vnd.apache.parquet"),
        )),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign-in needed for this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to read this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset, or no content yet", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Cannot be served in that format", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_data(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DataParams>,
) -> Result<Response, ApiError> {
    let path = format!("/api/v1/datasets/{id}/data");
    serve_data(&state, &actor, &id, params, &path).await
}

/// Serve dataset `id`'s content to `actor` through the governed read path;
/// the next page's link names `path` (where this read was asked at).
pub(crate) async fn serve_data(
    state: &AppState,
    actor: &citytrust_model::Actor,
    id: &str,
    params: DataParams,
    path: &str,
) -> Result<Response, ApiError> {
    let format = params.format.unwrap_or_default();
    let version = VersionChoice::from_parts(params.version, params.as_of.as_deref())
        .map_err(|e| version_problem(StatusCode::BAD_REQUEST, e))?;
    for (field, value) in [("offset", params.offset), ("limit", params.limit)] {
        if value.is_some_and(|v| v > MAX_ROW_INDEX) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidParameter,
                field,
                format!("{field} may be at most {MAX_ROW_INDEX}"),
            ));
        }
    }
    let paged = matches!(format, OutputFormat::Json);
    let offset = params.offset.unwrap_or(0);
    let limit = match (params.limit, paged) {
        (Some(0), _) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidParameter,
                "limit",
                "limit must be at least 1",
            ));
        }
        (Some(l), true) => Some(l.min(MAX_PAGE)),
        (Some(l), false) => Some(l),
        (None, true) => Some(JSON_PAGE),
        (None, false) => None,
    };
    let served = state
        .service
        .read_content(
            actor,
            id,
            ReadRequest {
                version,
                format,
                slice: Slice {
                    offset: usize::try_from(offset).unwrap_or(usize::MAX),
                    limit: limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)),
                },
                purpose: params.purpose.clone(),
                level: params.level,
            },
        )
        .await?;
    let mut headers = HeaderMap::new();
    if let Some(limit) = limit
        && served.rows == limit
        && paged
    {
        let mut next = format!("{path}?format=json&offset={}&limit={limit}", offset + limit);
        if let Some(v) = params.version {
            next.push_str(&format!("&version={v}"));
        }
        for (name, value) in [("as_of", &params.as_of), ("purpose", &params.purpose)] {
            if let Some(value) = value {
                next.push_str(&format!(
                    "&{name}={}",
                    form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
                ));
            }
        }
        if let Ok(v) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            headers.insert(header::LINK, v);
        }
    }
    Ok(served_response(served, headers))
}

/// A SQL query.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only SELECT. A dataset is the table named by its id with `-`
    /// replaced by `_` (its latest version); `"<table>@<N>"` (quoted) is version N and
    /// `"<table>@2026-03-01"` or `"<table>@2026-03-01T12:00:00Z"` the version in force then.
    #[schema(
        min_length = 1,
        max_length = 100000,
        example = "SELECT \"NOM\" FROM barcelona_districts"
    )]
    pub sql: String,
    /// What the result will be used for (recorded in the transparency log).
    #[schema(min_length = 1, max_length = 300)]
    pub purpose: String,
    /// json (default), csv, ndjson, geojson or parquet.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(csv|json|ndjson|geojson|parquet)$")]
    pub format: Option<OutputFormat>,
    /// Rows at most (default 10000, at most 100000); a cut result says so in `CityTrust-Truncated: true`.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub max_rows: Option<u64>,
    /// The access level read at (identified rows by default); every input must be granted it.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(metadata|index|aggregate|dp_aggregate|anonymised|pseudonymised|identified)$")]
    pub level: Option<citytrust_model::AccessLevel>,
}

/// Run one read-only SELECT over the datasets the caller may read.
#[utoipa::path(post, path = "/api/v1/query", tag = "content", request_body = QueryBody,
    responses(
        (status = 410, description = "The version named was removed (a stream version past retention)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
        (status = 200, description = "The result rows (JSON array of objects by default)", content(
            (String = "text/csv"),
            (Vec<Object> = "application/json"),
            (String = "application/x-ndjson"),
            (Object = "application/geo+json"),
            (String = "application/vnd.apache.parquet"),
        )),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Token expired or unknown", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The query reads a dataset the caller may not read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A table names no dataset, or a version that does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a single SELECT, fails to plan, no purpose, or took too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn run_query(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiJson(body): ApiJson<QueryBody>,
) -> Result<Response, ApiError> {
    if body.max_rows == Some(0) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::ValidationFailed,
            "max_rows",
            "max_rows must be at least 1",
        ));
    }
    let served = state
        .service
        .run_query(
            &actor,
            QueryRequest {
                sql: body.sql,
                purpose: body.purpose,
                format: body.format.unwrap_or(OutputFormat::Json),
                max_rows: body
                    .max_rows
                    .map(|m| usize::try_from(m).unwrap_or(usize::MAX)),
                level: body.level,
            },
        )
        .await?;
    Ok(served_response(served, HeaderMap::new()))
}

/// A version named in a JSON body (`version` or `as_of`).
fn parse_version_choice(
    version: Option<i64>,
    as_of: Option<&str>,
) -> Result<VersionChoice, ApiError> {
    VersionChoice::from_parts(version, as_of)
        .map_err(|e| version_problem(StatusCode::UNPROCESSABLE_ENTITY, e))
}

/// A version choice that names no version: `invalid_version`, naming the
/// field (400 for a URL's parameters, 422 for a body's fields).
fn version_problem(status: StatusCode, e: InvalidVersion) -> ApiError {
    ApiError::field(status, ProblemCode::InvalidVersion, e.field, e.message)
}

/// A thresholded table asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateBody {
    /// What the table will be used for: a purpose id of the trust's taxonomy
    /// (required unless the data is open; recorded in the transparency log).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 300)]
    pub purpose: Option<String>,
    /// The table's dimensions, one to four: `{"column": "NAME"}` groups by a
    /// column's values, `{"grid": {"latitude": "LAT", "longitude": "LON",
    /// "degrees": 0.01}}` by the grid cell a pair of coordinate columns falls
    /// in (origin–destination counts are two grids), `{"time": {"column":
    /// "NAME", "unit": "day"}}` by a time truncated to an hour, day, week,
    /// month or year, `{"bins": {"column": "NAME", "width": 5}}` by a number
    /// in intervals. A reader who may not read the rows gets places only on a
    /// grid, times only truncated, each no finer than the owner declared
    /// (`column_classes.table_bins`; a day and 0.01° when undeclared).
    #[schema(value_type = Vec<Object>, min_items = 1, max_items = 4)]
    pub by: Vec<citytrust_query::levels::GroupKey>,
    /// A number column to total per cell besides the count.
    #[serde(default)]
    #[schema(max_length = 300)]
    pub sum: Option<String>,
    /// Cells counting fewer rows are suppressed (10 by default, never less).
    #[serde(default)]
    #[schema(minimum = 10, maximum = 1000000)]
    pub threshold: Option<u64>,
    /// csv (default) or json.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(csv|json)$")]
    pub format: Option<OutputFormat>,
    /// A version number; the latest when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// Instead of a number, the version in force at a time.
    #[serde(default)]
    #[schema(max_length = 40)]
    pub as_of: Option<String>,
}

/// A thresholded table of counts (and sums) over a dataset: cells counting
/// fewer rows than the threshold are suppressed, and enough others with
/// them that no margin or total gives a suppressed cell back. Read at the
/// aggregate level; recorded in the transparency log with the suppression
/// applied.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/aggregate", tag = "content",
    params(("id" = String, Path, description = "The dataset's id")),
    request_body = AggregateBody,
    responses(
        (status = 410, description = "The version named was removed (a stream version past retention)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
        (status = 200, description = "The table: one row per shown cell, margins included (`(total)` in CSV, null in JSON). A cell not listed counts zero or fewer than the threshold, and nothing says which. For a reader who may not read the rows, counts and sums are perturbed (`perturbed: true`): each by a small amount fixed by the records in the cell", content(
            (String = "text/csv"),
            (Object = "application/json"),
        )),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign-in needed for this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to read this dataset at the aggregate level", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset, or no content yet", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown column, bad grid, threshold below 10, a dimension finer than its owner allows, or a table of mostly small cells (`table_too_sparse`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn aggregate(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AggregateBody>,
) -> Result<Response, ApiError> {
    let version = parse_version_choice(body.version, body.as_of.as_deref())?;
    let served = state
        .service
        .aggregate(
            &actor,
            &id,
            citytrust_service::levels::AggregateRequest {
                version,
                purpose: body.purpose,
                by: body.by,
                sum: body.sum,
                threshold: body.threshold,
                format: body.format.unwrap_or(OutputFormat::Csv),
            },
        )
        .await?;
    Ok(served_response(served, HeaderMap::new()))
}

/// A differentially private statistic asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DpBody {
    /// What the statistic will be used for (recorded in the transparency log).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 300)]
    pub purpose: Option<String>,
    /// count (rows), sum or mean (of a number column, within bounds), or
    /// histogram (counts of a column's given categories, and the rest).
    pub statistic: citytrust_service::levels::DpStatistic,
    /// The column (not for a count).
    #[serde(default)]
    #[schema(max_length = 300)]
    pub column: Option<String>,
    /// Sum and mean: `[lower, upper]`; values are clamped to them.
    #[serde(default)]
    #[schema(min_items = 2, max_items = 2)]
    pub bounds: Option<Vec<f64>>,
    /// Histogram: the categories to count, at most 1000.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub categories: Vec<String>,
    /// The privacy loss to spend, above 0 and at most 10; charged to the
    /// caller's budget under the agreement they read by.
    pub epsilon: f64,
    /// A version number; the latest when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// Instead of a number, the version in force at a time.
    #[serde(default)]
    #[schema(max_length = 40)]
    pub as_of: Option<String>,
}

/// A differentially private count, sum, mean or histogram (OpenDP, Laplace
/// noise), charged to the caller's privacy budget under their agreement
/// and recorded in the transparency log. A statistic the budget cannot pay
/// for is refused and says how much is left.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/dp-statistics", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id")),
    request_body = DpBody,
    responses(
        (status = 410, description = "The version named was removed (a stream version past retention)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
        (status = 200, description = "The released statistic, its noise and the budget left", body = citytrust_service::levels::DpRelease),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed at the DP level, or over budget (rule `privacy-budget`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset, or no content yet", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad column, bounds, categories or epsilon", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn dp_statistic(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DpBody>,
) -> Result<Json<citytrust_service::levels::DpRelease>, ApiError> {
    let version = parse_version_choice(body.version, body.as_of.as_deref())?;
    let bounds = match body.bounds.as_deref() {
        None => None,
        Some([lower, upper]) => Some((*lower, *upper)),
        Some(_) => {
            return Err(ApiError::field(
                StatusCode::UNPROCESSABLE_ENTITY,
                ProblemCode::ValidationFailed,
                "bounds",
                "bounds are two numbers, [lower, upper]",
            ));
        }
    };
    if body.categories.len() > 1000 {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::ValidationFailed,
            "categories",
            "at most 1000 categories",
        ));
    }
    Ok(Json(
        state
            .service
            .dp_statistic(
                &actor,
                &id,
                citytrust_service::levels::DpRequest {
                    version,
                    purpose: body.purpose,
                    statistic: body.statistic,
                    column: body.column,
                    bounds,
                    categories: body.categories,
                    epsilon: body.epsilon,
                },
            )
            .await?,
    ))
}

/// An index look-up asked for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupBody {
    /// What the answer will be used for (recorded in the transparency log).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 300)]
    pub purpose: Option<String>,
    /// The column to look in.
    #[schema(min_length = 1, max_length = 300)]
    pub column: String,
    /// The value looked for, compared as text (never logged).
    #[schema(max_length = 1000)]
    pub value: String,
    /// A version number; the latest when absent.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub version: Option<i64>,
    /// Instead of a number, the version in force at a time.
    #[serde(default)]
    #[schema(max_length = 40)]
    pub as_of: Option<String>,
}

/// Whether a record exists: the index level (e.g. "is this person in the
/// register?"). Answers yes or no and nothing more; the look-up is recorded
/// in the transparency log with its column, never its value.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/lookup", tag = "content",
    params(("id" = String, Path, description = "The dataset's id")),
    request_body = LookupBody,
    responses(
        (status = 410, description = "The version named was removed (a stream version past retention)", body = Problem, content_type = "application/problem+json"),
        CommonProblems,
        (status = 200, description = "Whether a record holds the value", body = citytrust_service::levels::LookupAnswer),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign-in needed for this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed at the index level", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset, or no content yet", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown column, value too long", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many reads at once", body = Problem, content_type = "application/problem+json"),
    ))]
async fn lookup(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<LookupBody>,
) -> Result<Json<citytrust_service::levels::LookupAnswer>, ApiError> {
    let version = parse_version_choice(body.version, body.as_of.as_deref())?;
    Ok(Json(
        state
            .service
            .lookup(
                &actor,
                &id,
                citytrust_service::levels::LookupRequest {
                    version,
                    purpose: body.purpose,
                    column: body.column,
                    value: body.value,
                },
            )
            .await?,
    ))
}

/// The caller's privacy budget under an account: an agreement's id, or
/// `dataset:<id>` for DP reads that needed no agreement.
#[utoipa::path(get, path = "/api/v1/privacy-budgets/{account}", tag = "content", security(("bearer" = [])),
    params(("account" = String, Path, description = "An agreement id, or dataset:<id>")),
    responses(
        CommonProblems,
        (status = 200, description = "Total, spent and remaining epsilon", body = citytrust_service::levels::BudgetView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_privacy_budget(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(account): Path<String>,
) -> Result<Json<citytrust_service::levels::BudgetView>, ApiError> {
    Ok(Json(state.service.privacy_budget(&actor, &account).await?))
}

/// Whether the dataset is refreshed on its declared timetable (its update frequency).
#[utoipa::path(get, path = "/api/v1/datasets/{id}/timeliness", tag = "content",
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "On time, overdue, awaiting its first version, or without a timetable", body = RefreshState),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_timeliness(
    State(state): State<AppState>,
    _caller: ApiActor,
    Path(id): Path<String>,
) -> Result<Json<RefreshState>, ApiError> {
    Ok(Json(state.service.timeliness(&id).await?))
}

/// A dataset's quality rules.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/quality-rules", tag = "content",
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The rules every upload is measured against", body = Object),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_quality_rules(
    State(state): State<AppState>,
    _caller: ApiActor,
    Path(id): Path<String>,
) -> Result<Json<QualityRules>, ApiError> {
    state.service.get_dataset(&id).await?;
    Ok(Json(state.service.quality_rules(&id).await?))
}

/// Set a dataset's quality rules: key columns, valid ranges, the period the data should cover.
#[utoipa::path(put, path = "/api/v1/datasets/{id}/quality-rules", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id")),
    request_body(content = Object, description = "{\"key_columns\": [..], \"ranges\": {\"col\": {\"min\": .., \"max\": ..}}, \"period_start\": \"YYYY-MM-DD\", \"period_end\": \"YYYY-MM-DD\"}"),
    responses(
        CommonProblems,
        (status = 200, description = "The rules as stored", body = Object),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the dataset's maintainer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_quality_rules(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    ApiJson(rules): ApiJson<QualityRules>,
) -> Result<Json<QualityRules>, ApiError> {
    Ok(Json(
        state.service.set_quality_rules(&actor, &id, rules).await?,
    ))
}

pub(crate) fn served_response(served: Served, mut headers: HeaderMap) -> Response {
    if let Ok(v) = HeaderValue::from_str(&served.log_index.to_string()) {
        headers.insert("citytrust-log-entry", v);
    }
    if let Ok(v) = HeaderValue::from_str(&served.rows.to_string()) {
        headers.insert("citytrust-rows", v);
    }
    if served.truncated {
        headers.insert("citytrust-truncated", HeaderValue::from_static("true"));
    }
    // With it the reader checks that the entry's commitment is to these bytes.
    if let Ok(v) = HeaderValue::from_str(&served.nonce) {
        headers.insert("citytrust-log-nonce", v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{}:", base64_of_hex(&served.sha256))) {
        headers.insert("repr-digest", v);
    }
    if let Ok(v) = HeaderValue::from_str(&served.bytes.to_string()) {
        headers.insert(header::CONTENT_LENGTH, v);
    }
    stream_file(served.file, served.media_type, &served.file_name, headers)
}

fn base64_of_hex(hex_digest: &str) -> String {
    use base64::Engine;
    let bytes = hex::decode(hex_digest).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Stream a file in 64 KiB chunks.
fn stream_file(
    file: std::fs::File,
    media_type: &'static str,
    file_name: &str,
    mut headers: HeaderMap,
) -> Response {
    let file = tokio::fs::File::from_std(file);
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (headers, Body::from_stream(stream)).into_response()
}
