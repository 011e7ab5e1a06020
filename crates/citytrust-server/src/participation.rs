//! Participation over HTTP: demand-led data requests (ask, support,
//! withdraw, assign, answer) and the public roadmap; consultations (open,
//! respond, results); the board in public (trustees' terms) and what each
//! charter version changed; agreements' outcome reports.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use citytrust_model::participation::{
    Consultation, ConsultationResponse, DataRequest, DataRequestAnswer, DataRequestAssignment,
    NewConsultation, NewDataRequest, NewOutcomeReport, OutcomeDue, OutcomeReport,
};
use citytrust_service::governance::CharterChanges;
use citytrust_service::participation::{
    AgreementOutcomes, DataRequestPage, DataRequestQuery, OutcomeSummary, Roadmap, TermInput,
    Trustee,
};
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
        .route(
            "/api/v1/consultations",
            get(list_consultations).post(open_consultation),
        )
        .route("/api/v1/consultations/{id}", get(get_consultation))
        .route("/api/v1/consultations/{id}/close", post(close_consultation))
        .route(
            "/api/v1/consultations/{id}/response",
            get(my_response).put(respond),
        )
        .route("/api/v1/trustees", get(trustees))
        .route("/api/v1/trustees/{username}/term", put(set_term))
        .route(
            "/api/v1/charter/versions/{version}/changes",
            get(charter_changes),
        )
        .route(
            "/api/v1/agreements/{id}/outcomes",
            get(agreement_outcomes).post(report_outcome),
        )
        .route("/api/v1/outcomes", get(outcome_reports))
        .route("/api/v1/outcomes/summary", get(outcome_summary))
        .route("/api/v1/outcomes/overdue", get(overdue_outcomes))
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

/// Open a consultation of residents (trustees).
#[utoipa::path(post, path = "/api/v1/consultations", tag = "participation", security(("bearer" = [])), request_body = NewConsultation,
    responses(
        CommonProblems,
        (status = 201, description = "Opened (answers are taken from `opens_on` to `closes_on`)", body = Consultation),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (no questions, a choice question without choices, dates in the past or reversed, an unknown dataset)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn open_consultation(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(body): ApiJson<NewConsultation>,
) -> Result<Response, ApiError> {
    let c = state.service.open_consultation(&actor, body).await?;
    Ok((StatusCode::CREATED, Json(c)).into_response())
}

/// Every consultation, the latest to close first; closed ones with their published results. Public.
#[utoipa::path(get, path = "/api/v1/consultations", tag = "participation",
    responses(
        CommonProblems,
        (status = 200, description = "The consultations", body = Vec<Consultation>),
    ))]
pub(crate) async fn list_consultations(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
) -> Result<Json<Vec<Consultation>>, ApiError> {
    Ok(Json(state.service.list_consultations(&actor).await?))
}

/// One consultation: its questions, its state, and once closed its results (small numbers suppressed).
#[utoipa::path(get, path = "/api/v1/consultations/{id}", tag = "participation",
    params(("id" = String, Path, description = "The consultation's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The consultation", body = Consultation),
        (status = 404, description = "No such consultation", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_consultation(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<Consultation>, ApiError> {
    Ok(Json(state.service.get_consultation(&actor, &id).await?))
}

/// Close a consultation before its date (trustees): it closes today and its results are published.
#[utoipa::path(post, path = "/api/v1/consultations/{id}/close", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The consultation's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Closed, with its results", body = Consultation),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such consultation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Closed already", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn close_consultation(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<Consultation>, ApiError> {
    Ok(Json(state.service.close_consultation(&actor, &id).await?))
}

/// Answer a consultation, or change your answer, while it is open (residents it asks).
#[utoipa::path(put, path = "/api/v1/consultations/{id}/response", tag = "participation", security(("bearer" = [])), request_body = ConsultationResponse,
    params(("id" = String, Path, description = "The consultation's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Recorded (replacing your earlier response)", body = Consultation),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not among those it asks", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such consultation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not open yet, or closed", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An answer that does not fit its question", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn respond(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<ConsultationResponse>,
) -> Result<Json<Consultation>, ApiError> {
    Ok(Json(
        state
            .service
            .respond_to_consultation(&actor, &id, body)
            .await?,
    ))
}

/// Your own response to a consultation (nobody else's is ever shown).
#[utoipa::path(get, path = "/api/v1/consultations/{id}/response", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The consultation's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Your response", body = ConsultationResponse),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "You have not answered (or no such consultation)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn my_response(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<ConsultationResponse>, ApiError> {
    Ok(Json(
        state.service.my_consultation_response(&actor, &id).await?,
    ))
}

/// The board: every trustee, their term, how they were appointed, their declarations of interest. Public.
#[utoipa::path(get, path = "/api/v1/trustees", tag = "participation",
    responses(
        CommonProblems,
        (status = 200, description = "The trustees", body = Vec<Trustee>),
    ))]
pub(crate) async fn trustees(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
) -> Result<Json<Vec<Trustee>>, ApiError> {
    Ok(Json(state.service.trustees(&actor).await?))
}

#[derive(Debug, Deserialize)]
pub struct UsernamePath {
    username: String,
}

/// Record a trustee's term, appointment and declarations (administrators). Outside the term, the trustee does not vote.
#[utoipa::path(put, path = "/api/v1/trustees/{username}/term", tag = "participation", security(("bearer" = [])), request_body = TermInput,
    params(("username" = String, Path, description = "The trustee's username")),
    responses(
        CommonProblems,
        (status = 200, description = "Recorded", body = Trustee),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a trustee, or invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn set_term(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(UsernamePath { username }): ApiPath<UsernamePath>,
    ApiJson(body): ApiJson<TermInput>,
) -> Result<Json<Trustee>, ApiError> {
    Ok(Json(
        state
            .service
            .set_trustee_term(&actor, &username, body)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
pub struct VersionPath {
    version: i64,
}

/// What a charter version changed from the one before: the rules and the ethics code line by line, why, and the consultation that informed it. Public.
#[utoipa::path(get, path = "/api/v1/charter/versions/{version}/changes", tag = "governance",
    params(("version" = i64, Path, description = "The charter version")),
    responses(
        CommonProblems,
        (status = 200, description = "The changes", body = CharterChanges),
        (status = 400, description = "Not a number", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn charter_changes(
    State(state): State<AppState>,
    ApiPath(VersionPath { version }): ApiPath<VersionPath>,
) -> Result<Json<CharterChanges>, ApiError> {
    Ok(Json(state.service.charter_changes(version).await?))
}

/// An agreement's outcome reports, and the reports it owes (yearly, and after its end). Public.
#[utoipa::path(get, path = "/api/v1/agreements/{id}/outcomes", tag = "participation",
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Reports and what is owed", body = AgreementOutcomes),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn agreement_outcomes(
    State(state): State<AppState>,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<AgreementOutcomes>, ApiError> {
    Ok(Json(state.service.agreement_outcomes(&id).await?))
}

/// Report what an agreement's share achieved (its recipient), for the earliest period owed or the one named.
#[utoipa::path(post, path = "/api/v1/agreements/{id}/outcomes", tag = "participation", security(("bearer" = [])), request_body = NewOutcomeReport,
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 201, description = "Filed, public and logged", body = OutcomeReport),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the agreement's recipient", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "That period is reported already", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or no report owed yet", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn report_outcome(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<NewOutcomeReport>,
) -> Result<Response, ApiError> {
    let r = state.service.report_outcome(&actor, &id, body).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

/// Every outcome report, newest first. Public.
#[utoipa::path(get, path = "/api/v1/outcomes", tag = "participation",
    responses(CommonProblems, (status = 200, description = "The reports", body = Vec<OutcomeReport>)))]
pub(crate) async fn outcome_reports(
    State(state): State<AppState>,
) -> Result<Json<Vec<OutcomeReport>>, ApiError> {
    Ok(Json(state.service.outcome_reports().await?))
}

/// Outcomes by purpose and by year: how many reports and their mean ratings. Public.
#[utoipa::path(get, path = "/api/v1/outcomes/summary", tag = "participation",
    responses(CommonProblems, (status = 200, description = "The summary", body = OutcomeSummary)))]
pub(crate) async fn outcome_summary(
    State(state): State<AppState>,
) -> Result<Json<OutcomeSummary>, ApiError> {
    Ok(Json(state.service.outcome_summary().await?))
}

/// Outcome reports past their date and not filed (trustees and administrators).
#[utoipa::path(get, path = "/api/v1/outcomes/overdue", tag = "participation", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "What is overdue", body = Vec<OutcomeDue>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee or an administrator", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn overdue_outcomes(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<OutcomeDue>>, ApiError> {
    Ok(Json(state.service.overdue_outcomes(&actor).await?))
}
