//! Participation over HTTP: demand-led data requests (ask, support,
//! withdraw, assign, answer) and the public roadmap.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::participation::{
    DataRequest, DataRequestAnswer, DataRequestAssignment, NewDataRequest,
};
use citytrust_service::participation::{DataRequestPage, DataRequestQuery, Roadmap};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiActor, ApiJson, ApiPath, ApiQuery, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/data-requests",
            get(list_data_requests).post(ask_for_data),
        )
        .route("/api/v1/data-requests/{id}", get(get_data_request))
        .route(
            "/api/v1/data-requests/{id}/support",
            post(support).delete(withdraw_support),
        )
        .route("/api/v1/data-requests/{id}/answer", post(answer))
        .route("/api/v1/data-requests/{id}/assign", post(assign))
        .route("/api/v1/roadmap", get(roadmap))
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    id: String,
}

/// Ask for data that is not in the catalogue, or for a closed or shared entry to be opened.
#[utoipa::path(post, path = "/api/v1/data-requests", tag = "participation", security(("bearer" = [])), request_body = NewDataRequest,
    responses(
        CommonProblems,
        (status = 201, description = "Asked; the request is public (who asked is not)", body = DataRequest),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign in to ask", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (missing text, unknown dataset or organisation, a dataset open already)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn ask_for_data(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewDataRequest>,
) -> Result<Response, ApiError> {
    let r = state.service.ask_for_data(&actor, new).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

/// Data requests: search, filter by status, most supported or newest first. Public.
#[utoipa::path(get, path = "/api/v1/data-requests", tag = "participation", params(DataRequestQuery),
    responses(
        CommonProblems,
        (status = 200, description = "A page of requests", body = DataRequestPage),
        (status = 400, description = "Unknown parameter or value", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_data_requests(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(query): ApiQuery<DataRequestQuery>,
) -> Result<Json<DataRequestPage>, ApiError> {
    Ok(Json(
        state.service.list_data_requests(&actor, &query).await?,
    ))
}

/// One data request, with its history.
#[utoipa::path(get, path = "/api/v1/data-requests/{id}", tag = "participation",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The request", body = DataRequest),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_data_request(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<DataRequest>, ApiError> {
    Ok(Json(state.service.get_data_request(&actor, &id).await?))
}

/// Support a request that is still waiting (once; not your own).
#[utoipa::path(post, path = "/api/v1/data-requests/{id}/support", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Supported", body = DataRequest),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Your own request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "You support it already, or it was answered", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn support(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<DataRequest>, ApiError> {
    Ok(Json(state.service.support_data_request(&actor, &id).await?))
}

/// Withdraw your support of a request that is still waiting.
#[utoipa::path(delete, path = "/api/v1/data-requests/{id}/support", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Withdrawn", body = DataRequest),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request, or you do not support it", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Answered already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn withdraw_support(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<DataRequest>, ApiError> {
    Ok(Json(
        state
            .service
            .withdraw_data_request_support(&actor, &id)
            .await?,
    ))
}

/// Answer a request: planned (by a date), published or exists (naming the entry), declined (with the reason).
#[utoipa::path(post, path = "/api/v1/data-requests/{id}/answer", tag = "participation", security(("bearer" = [])), request_body = DataRequestAnswer,
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Answered; for published and exists, the requester and supporters are told in their inbox", body = DataRequest),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the organisation it is assigned to (administrators, while unassigned)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Answered already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (a plan without a date, a published answer without an entry, a decline without a reason)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn answer(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<DataRequestAnswer>,
) -> Result<Json<DataRequest>, ApiError> {
    Ok(Json(
        state.service.answer_data_request(&actor, &id, body).await?,
    ))
}

/// Assign a request to the organisation that is to answer it (administrators).
#[utoipa::path(post, path = "/api/v1/data-requests/{id}/assign", tag = "participation", security(("bearer" = [])), request_body = DataRequestAssignment,
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Assigned", body = DataRequest),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Answered already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such organisation, or a request to open a dataset (its owner answers)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn assign(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<DataRequestAssignment>,
) -> Result<Json<DataRequest>, ApiError> {
    Ok(Json(
        state.service.assign_data_request(&actor, &id, body).await?,
    ))
}

/// The public roadmap: planned data by target date (overdue plans flagged), and what was published.
#[utoipa::path(get, path = "/api/v1/roadmap", tag = "participation",
    responses(
        CommonProblems,
        (status = 200, description = "The roadmap", body = Roadmap),
    ))]
pub(crate) async fn roadmap(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
) -> Result<Json<Roadmap>, ApiError> {
    Ok(Json(state.service.roadmap(&actor).await?))
}
