//! The feedback loop over HTTP: report an error, see reports and outcomes, answer.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_service::feedback::{Feedback, FeedbackAnswer, FeedbackInput};
use serde::Deserialize;

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiJson, ApiPath, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/datasets/{id}/feedback",
            get(list_feedback).post(report_feedback),
        )
        .route(
            "/api/v1/datasets/{id}/feedback/{feedback}/answer",
            post(answer_feedback),
        )
}

/// Report an error in a dataset: the whole of it, a version, a column or one cell.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/feedback", tag = "content", security(("bearer" = [])), request_body = FeedbackInput,
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 201, description = "Recorded; its maintainers will answer", body = Feedback),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Sign in to report", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset or version", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (unknown column, row out of range, no description)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn report_feedback(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<FeedbackInput>,
) -> Result<Response, ApiError> {
    let f = state.service.report_feedback(&actor, &id, input).await?;
    Ok((StatusCode::CREATED, Json(f)).into_response())
}

/// The reports on a dataset: all of them for its maintainers, your own otherwise.
#[utoipa::path(get, path = "/api/v1/datasets/{id}/feedback", tag = "content", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Reports and their outcomes, oldest first", body = Vec<Feedback>),
        (status = 401, description = "Sign in to see reports", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_feedback(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
) -> Result<Json<Vec<Feedback>>, ApiError> {
    Ok(Json(state.service.list_feedback(&actor, &id).await?))
}

#[derive(Debug, Deserialize)]
pub struct FeedbackPath {
    id: String,
    feedback: String,
}

/// Accept a report (naming the correcting version, or saying what measure was corrected) or reject it with a reason.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/feedback/{feedback}/answer", tag = "content", security(("bearer" = [])), request_body = FeedbackAnswer,
    params(("id" = String, Path, description = "The dataset's id"), ("feedback" = String, Path, description = "The report's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Answered", body = Feedback),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a maintainer of this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset, report or version", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn answer_feedback(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(FeedbackPath { id, feedback }): ApiPath<FeedbackPath>,
    ApiJson(answer): ApiJson<FeedbackAnswer>,
) -> Result<Json<Feedback>, ApiError> {
    Ok(Json(
        state
            .service
            .answer_feedback(&actor, &id, &feedback, answer)
            .await?,
    ))
}
