//! Federation over HTTP: administrators register, harvest and remove other
//! catalogues; anyone searches and reads the entries harvested from them.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::federation::{
    FederatedEntry, HarvestReport, NewRemoteCatalogue, RemoteCatalogue,
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
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    id: String,
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
