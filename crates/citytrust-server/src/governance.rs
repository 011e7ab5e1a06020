//! Access governance over HTTP: purposes, the charter, access requests and
//! votes, agreements and their ODRL export.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::ProblemCode;
use citytrust_model::access::{
    AccessRequest, Agreement, NewAccessRequest, NewVote, Purpose, RequestStatus,
};
use citytrust_service::governance::{CharterChange, CharterView};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiActor, ApiJson, ApiPath, ApiQuery, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/purposes", get(list_purposes).post(add_purpose))
        .route("/api/v1/charter", get(get_charter).put(put_charter))
        .route("/api/v1/charter/versions", get(charter_history))
        .route(
            "/api/v1/access-requests",
            get(list_requests).post(create_request),
        )
        .route("/api/v1/access-requests/{id}", get(get_request))
        .route("/api/v1/access-requests/{id}/submit", post(submit_request))
        .route("/api/v1/access-requests/{id}/votes", post(vote))
        .route("/api/v1/access-requests/{id}/comments", post(comment))
        .route("/api/v1/agreements", get(list_agreements))
        .route("/api/v1/agreements/{id}", get(get_agreement))
        .route("/api/v1/agreements/{id}/odrl", get(get_odrl))
        .route("/api/v1/agreements/{id}/retire", post(retire))
        .route(
            "/api/v1/agreements/{id}/attest-deletion",
            post(attest_deletion),
        )
        .route(
            "/api/v1/agreements/overdue-attestations",
            get(overdue_attestations),
        )
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    pub(crate) id: String,
}

/// The purpose taxonomy: every purpose a read or a request may name.
#[utoipa::path(get, path = "/api/v1/purposes", tag = "governance",
    responses(
        CommonProblems,(status = 200, description = "The taxonomy", body = Vec<Purpose>)))]
pub(crate) async fn list_purposes(
    State(state): State<AppState>,
) -> Result<Json<Vec<Purpose>>, ApiError> {
    Ok(Json(state.service.purposes().await?))
}

/// Add a purpose (administrators and trustees).
#[utoipa::path(post, path = "/api/v1/purposes", tag = "governance", security(("bearer" = [])), request_body = Purpose,
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Added", body = Purpose),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator or trustee", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn add_purpose(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(purpose): ApiJson<Purpose>,
) -> Result<Response, ApiError> {
    let p = state.service.add_purpose(&actor, purpose).await?;
    Ok((StatusCode::CREATED, Json(p)).into_response())
}

/// The charter in force: its Cedar text and its rules.
#[utoipa::path(get, path = "/api/v1/charter", tag = "governance",
    responses(
        CommonProblems,(status = 200, description = "The charter in force", body = CharterView)))]
pub(crate) async fn get_charter(
    State(state): State<AppState>,
) -> Result<Json<CharterView>, ApiError> {
    Ok(Json(state.service.charter().await?))
}

/// Every version of the charter, newest first.
#[utoipa::path(get, path = "/api/v1/charter/versions", tag = "governance",
    responses(
        CommonProblems,(status = 200, description = "Charter versions", body = Vec<CharterView>)))]
pub(crate) async fn charter_history(
    State(state): State<AppState>,
) -> Result<Json<Vec<CharterView>>, ApiError> {
    Ok(Json(state.service.charter_history().await?))
}

/// Replace the charter (trustees). It is validated against the schema first;
/// a charter that does not validate is refused with every problem.
#[utoipa::path(put, path = "/api/v1/charter", tag = "governance", security(("bearer" = [])), request_body = CharterChange,
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The new version, in force now", body = CharterView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The charter does not parse or validate", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn put_charter(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(body): ApiJson<CharterChange>,
) -> Result<Json<CharterView>, ApiError> {
    Ok(Json(state.service.set_charter(&actor, body).await?))
}

/// Ask for access to datasets for a purpose, at a level, for a period.
#[utoipa::path(post, path = "/api/v1/access-requests", tag = "governance", security(("bearer" = [])), request_body = NewAccessRequest,
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Saved (a draft) or submitted; `status` says where it stands", body = AccessRequest),
        (status = 403, description = "New requests blocked: a deletion attestation is overdue", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (unknown purpose or level, unanswered checklist question …)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_request(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(body): ApiJson<NewAccessRequest>,
) -> Result<Response, ApiError> {
    let r = state.service.create_access_request(&actor, body).await?;
    Ok((StatusCode::CREATED, Json(r)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `true`: only your own requests, drafts included.
    #[serde(default)]
    pub mine: Option<bool>,
    /// Only requests in this state (draft, public_comment, under_review, approved, denied, refused, withdrawn).
    #[serde(default)]
    pub status: Option<String>,
}

/// Access requests: your own (`mine=true`), or the public register (everything submitted).
#[utoipa::path(get, path = "/api/v1/access-requests", tag = "governance", params(ListParams),
    responses(
        CommonProblems,
        (status = 200, description = "Requests, newest first", body = Vec<AccessRequest>),
        (status = 400, description = "Unknown status", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "mine=true without signing in", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn list_requests(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<Vec<AccessRequest>>, ApiError> {
    let statuses = match params.status.as_deref() {
        None => vec![],
        Some(s) => vec![RequestStatus::parse(s).ok_or_else(|| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidParameter,
                "status",
                "one of: draft, public_comment, under_review, approved, denied, refused, withdrawn",
            )
        })?],
    };
    Ok(Json(
        state
            .service
            .list_access_requests(&actor, params.mine.unwrap_or(false), &statuses)
            .await?,
    ))
}

/// One request, with its votes, comments and decision.
#[utoipa::path(get, path = "/api/v1/access-requests/{id}", tag = "governance",
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The request", body = AccessRequest),
        (status = 404, description = "No such request (or someone else's draft)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_request(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<AccessRequest>, ApiError> {
    Ok(Json(state.service.get_access_request(&actor, &id).await?))
}

/// Submit a saved draft.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/submit", tag = "governance", security(("bearer" = [])),
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Submitted; `status` says where it stands", body = AccessRequest),
        (status = 403, description = "Not your request, or new requests blocked by an overdue deletion attestation", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such draft of yours", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a draft, or not complete", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn submit_request(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<AccessRequest>, ApiError> {
    Ok(Json(
        state.service.submit_access_request(&actor, &id).await?,
    ))
}

/// A trustee's vote, with a reason and any conflict of interest.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/votes", tag = "governance", security(("bearer" = [])), request_body = NewVote,
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Recorded; once the quorum is reached the request is decided", body = AccessRequest),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee, or your own request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "You voted already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, decided already, or still open for comment", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn vote(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<NewVote>,
) -> Result<Json<AccessRequest>, ApiError> {
    Ok(Json(state.service.vote(&actor, &id, body).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommentBody {
    pub text: String,
}

/// Comment on a request open for public comment.
#[utoipa::path(post, path = "/api/v1/access-requests/{id}/comments", tag = "governance", security(("bearer" = [])), request_body = CommentBody,
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Recorded", body = AccessRequest),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not open for comment, or no text", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn comment(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<CommentBody>,
) -> Result<Json<AccessRequest>, ApiError> {
    Ok(Json(
        state
            .service
            .comment_on_request(&actor, &id, &body.text)
            .await?,
    ))
}

/// The public register of data sharing agreements (latest version of each).
#[utoipa::path(get, path = "/api/v1/agreements", tag = "governance",
    responses(
        CommonProblems,(status = 200, description = "Agreements, newest first", body = Vec<Agreement>)))]
pub(crate) async fn list_agreements(
    State(state): State<AppState>,
) -> Result<Json<Vec<Agreement>>, ApiError> {
    Ok(Json(state.service.agreements().await?))
}

/// One agreement, every term listed.
#[utoipa::path(get, path = "/api/v1/agreements/{id}", tag = "governance",
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The agreement", body = Agreement),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_agreement(
    State(state): State<AppState>,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<Agreement>, ApiError> {
    Ok(Json(state.service.agreement(&id).await?))
}

/// The agreement as an ODRL 2.2 `Agreement` policy in JSON-LD.
#[utoipa::path(get, path = "/api/v1/agreements/{id}/odrl", tag = "governance",
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 200, description = "ODRL 2.2 JSON-LD", content_type = "application/ld+json"),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_odrl(
    State(state): State<AppState>,
    _headers: HeaderMap,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Response, ApiError> {
    let policy = state
        .service
        .agreement_odrl(&id, &crate::base_url(&state))
        .await?;
    let mut res = Json(policy).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/ld+json"),
    );
    Ok(res)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireBody {
    pub reason: String,
}

/// Retire an agreement before its end (trustees): reads under it stop at once.
#[utoipa::path(post, path = "/api/v1/agreements/{id}/retire", tag = "governance", security(("bearer" = [])), request_body = RetireBody,
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "Retired (a new version)", body = Agreement),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not active, or no reason", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn retire(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<RetireBody>,
) -> Result<Json<Agreement>, ApiError> {
    Ok(Json(
        state
            .service
            .retire_agreement(&actor, &id, &body.reason)
            .await?,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttestationBody {
    /// How and when the data was deleted.
    pub statement: String,
}

/// The recipient attests that the data shared under an ended agreement was deleted.
#[utoipa::path(post, path = "/api/v1/agreements/{id}/attest-deletion", tag = "governance", security(("bearer" = [])), request_body = AttestationBody,
    params(("id" = String, Path, description = "The agreement's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Recorded (a new version of the agreement)", body = Agreement),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the recipient", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Attested already", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Still in force, or no statement", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn attest_deletion(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<AttestationBody>,
) -> Result<Json<Agreement>, ApiError> {
    Ok(Json(
        state
            .service
            .attest_deletion(&actor, &id, &body.statement)
            .await?,
    ))
}

/// Ended agreements whose recipients have not attested deletion in time (trustees and administrators).
#[utoipa::path(get, path = "/api/v1/agreements/overdue-attestations", tag = "governance", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Overdue attestations", body = Vec<Agreement>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee or administrator", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn overdue_attestations(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<Agreement>>, ApiError> {
    Ok(Json(state.service.overdue_attestations(&actor).await?))
}
