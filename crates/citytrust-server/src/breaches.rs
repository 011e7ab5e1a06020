//! The breach register's API (R-CIT-8): trustees register a breach, see the
//! register and record that the regulator was told; residents read the
//! notices in their inbox (`/api/v1/me/inbox`, in `residents.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::residents::{Breach, NewBreach, RegulatorNotice};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiJson, ApiPath, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/breaches", get(list_breaches).post(register_breach))
        .route("/api/v1/breaches/{id}", get(get_breach))
        .route(
            "/api/v1/breaches/{id}/regulator-notified",
            post(regulator_notified),
        )
}

/// Register a breach (trustees): the people whose records it reached are
/// computed from the log and the subject index, and each one linked to an
/// account gets the notice in their inbox at once. The regulator's deadline starts.
#[utoipa::path(post, path = "/api/v1/breaches", tag = "residents", security(("bearer" = [])), request_body = NewBreach,
    responses(
        CommonProblems,
        (status = 201, description = "Registered, logged and the people reached notified", body = Breach),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Conflict", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn register_breach(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewBreach>,
) -> Result<(StatusCode, Json<Breach>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.register_breach(&actor, new).await?),
    ))
}

/// The breach register, newest first (trustees).
#[utoipa::path(get, path = "/api/v1/breaches", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Every breach, with its reach and the regulator's deadline", body = Vec<Breach>),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_breaches(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<Breach>>, ApiError> {
    Ok(Json(state.service.breaches(&actor).await?))
}

/// One breach (trustees).
#[utoipa::path(get, path = "/api/v1/breaches/{id}", tag = "residents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The breach's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The breach", body = Breach),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such breach", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_breach(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Breach>, ApiError> {
    Ok(Json(state.service.breach(&actor, &id).await?))
}

/// Record that the regulator was told about a breach (once; trustees).
#[utoipa::path(post, path = "/api/v1/breaches/{id}/regulator-notified", tag = "residents", security(("bearer" = [])), request_body = RegulatorNotice,
    params(("id" = String, Path, description = "The breach's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Recorded and logged", body = Breach),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such breach", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already recorded", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn regulator_notified(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(notice): ApiJson<RegulatorNotice>,
) -> Result<Json<Breach>, ApiError> {
    Ok(Json(
        state
            .service
            .regulator_notified(&actor, &id, notice)
            .await?,
    ))
}
