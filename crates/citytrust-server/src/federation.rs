//! Federation over HTTP: administrators register, harvest and remove other
//! catalogues; anyone searches and reads the entries harvested from them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::federation::{
    AskRemote, ConsumerNegotiation, FederatedEntry, HarvestReport, NewRemoteCatalogue,
    RemoteCatalogue,
};
use citytrust_service::federation::{FederatedPage, FederatedQuery};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiActor, ApiJson, ApiPath, ApiQuery, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/remote-catalogues",
            get(list_remote_catalogues).post(register_remote_catalogue),
        )
        .route(
            "/api/v1/remote-catalogues/{id}",
            get(get_remote_catalogue).delete(remove_remote_catalogue),
        )
        .route("/api/v1/remote-catalogues/{id}/harvest", post(harvest))
        .route("/api/v1/federated-entries", get(search_federated))
        .route("/api/v1/federated-entries/{id}", get(get_federated_entry))
        .route(
            "/api/v1/federated-entries/{id}/negotiations",
            post(ask_remote),
        )
        .route("/api/v1/me/remote-requests", get(my_remote_requests))
        .route("/api/v1/remote-requests/{pid}/data", get(remote_data))
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    id: String,
}

#[derive(Debug, Deserialize)]
pub struct PidPath {
    pid: String,
}

/// Register another catalogue to harvest: another CityTrust's `/catalog.ttl`, a DCAT-AP feed or a CKAN site. Administrators.
#[utoipa::path(post, path = "/api/v1/remote-catalogues", tag = "federation", security(("bearer" = [])), request_body = NewRemoteCatalogue,
    responses(
        CommonProblems,
        (status = 201, description = "Registered and harvested once: `last_harvest` says how the feed read (a feed that fails is still registered, and tried again within the hour)", body = RemoteCatalogue),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (id, name, URL, interval)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn register_remote_catalogue(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewRemoteCatalogue>,
) -> Result<Response, ApiError> {
    let c = state.service.register_remote_catalogue(&actor, new).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// The registered catalogues, each with its last harvest's report. Administrators.
#[utoipa::path(get, path = "/api/v1/remote-catalogues", tag = "federation", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "The catalogues", body = Vec<RemoteCatalogue>),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_remote_catalogues(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<RemoteCatalogue>>, ApiError> {
    Ok(Json(state.service.remote_catalogues(&actor).await?))
}

/// One registered catalogue. Administrators.
#[utoipa::path(get, path = "/api/v1/remote-catalogues/{id}", tag = "federation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The catalogue's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The catalogue", body = RemoteCatalogue),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such catalogue", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_remote_catalogue(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<RemoteCatalogue>, ApiError> {
    Ok(Json(state.service.remote_catalogue(&actor, &id).await?))
}

/// Remove a catalogue and every entry harvested from it. Administrators.
#[utoipa::path(delete, path = "/api/v1/remote-catalogues/{id}", tag = "federation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The catalogue's id")),
    responses(
        CommonProblems,
        (status = 204, description = "Removed, with its entries"),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such catalogue", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn remove_remote_catalogue(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<StatusCode, ApiError> {
    state.service.remove_remote_catalogue(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Harvest a catalogue now and answer its report. A feed that cannot be read
/// to its end changes nothing: the report says why (`outcome: failed`).
/// Administrators.
#[utoipa::path(post, path = "/api/v1/remote-catalogues/{id}/harvest", tag = "federation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The catalogue's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The harvest's report, succeeded or failed", body = HarvestReport),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such catalogue", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A harvest of it is running", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn harvest(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<HarvestReport>, ApiError> {
    Ok(Json(state.service.harvest(&actor, &id, &|_| {}).await?))
}

/// Search the entries harvested from other catalogues, with counts per source. Public.
#[utoipa::path(get, path = "/api/v1/federated-entries", tag = "federation", params(FederatedQuery),
    responses(
        CommonProblems,
        (status = 200, description = "A page of entries", body = FederatedPage),
        (status = 400, description = "Unknown parameter or value", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "per_page out of range, or words too long", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn search_federated(
    State(state): State<AppState>,
    ApiActor(_actor): ApiActor,
    ApiQuery(query): ApiQuery<FederatedQuery>,
) -> Result<Json<FederatedPage>, ApiError> {
    Ok(Json(state.service.search_federated(&query)?))
}

/// One harvested entry, with its source. Public.
#[utoipa::path(get, path = "/api/v1/federated-entries/{id}", tag = "federation",
    params(("id" = String, Path, description = "The entry's id here (`{catalogue}:{hash}`)")),
    responses(
        CommonProblems,
        (status = 200, description = "The entry", body = FederatedEntry),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_federated_entry(
    State(state): State<AppState>,
    ApiActor(_actor): ApiActor,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<FederatedEntry>, ApiError> {
    Ok(Json(state.service.federated_entry(&id).await?))
}

/// Ask the node an entry came from for access, through the Dataspace
/// Protocol, for one of your organisations: the other node's trustees
/// decide; the answer is the negotiation as it stands (REQUESTED).
#[utoipa::path(post, path = "/api/v1/federated-entries/{id}/negotiations", tag = "federation", security(("bearer" = [])), request_body = AskRemote,
    params(("id" = String, Path, description = "The entry's id here")),
    responses(
        CommonProblems,
        (status = 201, description = "Asked: the negotiation, REQUESTED", body = ConsumerNegotiation),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such entry", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (an organisation not yours, a level or purpose not offered), an entry not offered (`not_offered`), or the other node refused (`remote_refused`, with its reason)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn ask_remote(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(ask): ApiJson<AskRemote>,
) -> Result<Response, ApiError> {
    let n = state
        .service
        .ask_remote(&actor, &id, ask, &crate::base_url(&state))
        .await?;
    Ok((StatusCode::CREATED, Json(n)).into_response())
}

/// Your requests to other nodes (and your organisations'), newest first.
#[utoipa::path(get, path = "/api/v1/me/remote-requests", tag = "federation", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "The negotiations", body = Vec<ConsumerNegotiation>),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn my_remote_requests(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<ConsumerNegotiation>>, ApiError> {
    Ok(Json(state.service.my_remote_requests(&actor).await?))
}

/// How a read through another node is asked for: the other node's
/// download parameters, and the organisation read for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RemoteDataParams {
    /// One of your organisations (the negotiation's by default).
    #[serde(default)]
    #[param(max_length = 100)]
    pub organization_id: Option<String>,
    /// A purpose of the other node's taxonomy (the agreement's by default).
    #[serde(default)]
    #[param(max_length = 300)]
    pub purpose: Option<String>,
    /// csv (default), json, ndjson, geojson or parquet.
    #[serde(default)]
    #[param(max_length = 20)]
    pub format: Option<String>,
    #[serde(default)]
    #[param(max_length = 40)]
    pub level: Option<String>,
    #[serde(default)]
    #[param(minimum = 0, maximum = 9007199254740991_u64)]
    pub offset: Option<u64>,
    #[serde(default)]
    #[param(minimum = 1, maximum = 9007199254740991_u64)]
    pub limit: Option<u64>,
}

/// Read data another node agreed to share, through this trust: the other
/// node decides and logs the read (as it would a download); this trust
/// logs it too (`dsp.remote_read`) and keeps nothing of it. Its answer is
/// relayed as it came, refusals included.
#[utoipa::path(get, path = "/api/v1/remote-requests/{pid}/data", tag = "federation", security(("bearer" = [])),
    params(("pid" = String, Path, description = "The negotiation's id here (`consumer_pid`)"), RemoteDataParams),
    responses(
        CommonProblems,
        (status = 200, description = "The data, as the other node served it; `CityTrust-Provider-Log-Entry` names its log entry", content(
            (String = "text/csv"),
            (Vec<Object> = "application/json"),
        )),
        (status = 400, description = "Bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The other node refused the read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such negotiation", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No transfer started yet (`transfer_not_started`), or not your organisation", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn remote_data(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(PidPath { pid }): ApiPath<PidPath>,
    ApiQuery(params): ApiQuery<RemoteDataParams>,
) -> Result<Response, ApiError> {
    let mut query = Vec::new();
    for (k, v) in [
        ("purpose", params.purpose),
        ("format", params.format),
        ("level", params.level),
        ("offset", params.offset.map(|o| o.to_string())),
        ("limit", params.limit.map(|l| l.to_string())),
    ] {
        if let Some(v) = v {
            query.push((k.to_string(), v));
        }
    }
    let res = state
        .service
        .remote_read(&actor, &pid, params.organization_id.as_deref(), &query)
        .await?;
    let mut out = axum::http::HeaderMap::new();
    for (from, to) in [
        ("content-type", "content-type"),
        ("citytrust-log-entry", "citytrust-provider-log-entry"),
        ("content-disposition", "content-disposition"),
    ] {
        if let Some(v) = res.headers().get(from) {
            out.insert(to, v.clone());
        }
    }
    let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    Ok((
        status,
        out,
        axum::body::Body::from_stream(res.bytes_stream()),
    )
        .into_response())
}
