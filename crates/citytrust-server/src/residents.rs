//! The resident's API (`/api/v1/me/…`: links, consents, who used my data,
//! subject requests, the export bundle) and the owner's side of it (link
//! codes, the queue of subject requests, erasure). Every `/me` route serves
//! the signed-in person only, or the person an agent acts for under a checked
//! authority (`On-Behalf-Of`).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::residents::InboxMessage;
use citytrust_model::residents::{
    Consent, NewConsent, NewLink, NewLinkCode, NewSubjectRequest, SubjectLink, SubjectRequest,
};
use citytrust_service::residents::{
    AccessView, CommitmentView, EntryAboutMe, IssuedLinkCode, SharedItem,
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/me/consents", get(my_consents).post(give_consent))
        .route("/api/v1/me/consents/{id}/withdraw", post(withdraw_consent))
        .route("/api/v1/me/links", get(my_links).post(link))
        .route("/api/v1/me/accesses", get(my_accesses))
        .route("/api/v1/me/commitments", get(my_commitments))
        .route("/api/v1/me/entries", get(my_entries))
        .route("/api/v1/me/inbox", get(my_inbox))
        .route("/api/v1/me/sharing", get(my_sharing))
        .route(
            "/api/v1/me/subject-access-requests",
            get(my_requests).post(make_request),
        )
        .route("/api/v1/me/export", get(export))
        .route("/api/v1/datasets/{id}/link-codes", post(issue_link_code))
        .route("/api/v1/subject-requests", get(request_queue))
        .route("/api/v1/subject-requests/{id}/answer", post(answer_request))
        .route("/api/v1/subject-requests/{id}/erase", post(erase))
        .route("/api/v1/users/{username}/birth-date", post(set_birth_date))
}

/// Your consents, objections and donations, with their history, 27560 records and signed receipts.
#[utoipa::path(get, path = "/api/v1/me/consents", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first", body = Vec<Consent>),
    ))]
pub(crate) async fn my_consents(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<Consent>>, ApiError> {
    Ok(Json(state.service.my_consents(&actor).await?))
}

/// Consent to a use of your records (or object to one, or donate them to a
/// public-interest purpose). Your account must be linked to records in the dataset.
#[utoipa::path(post, path = "/api/v1/me/consents", tag = "residents", security(("bearer" = [])), request_body = NewConsent,
    responses(
        CommonProblems,
        (status = 201, description = "Recorded and logged; the body holds the ISO/IEC TS 27560 record and the signed receipt", body = Consent),
        (status = 403, description = "Refused (not linked; a minor without their guardian)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same consent is already in force", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn give_consent(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewConsent>,
) -> Result<(StatusCode, Json<Consent>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.give_consent(&actor, new).await?),
    ))
}

/// Withdraw a consent (objection, donation). The very next read no longer includes your records.
#[utoipa::path(post, path = "/api/v1/me/consents/{id}/withdraw", tag = "residents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The consent's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Withdrawn and logged, with a new signed receipt", body = Consent),
        (status = 404, description = "You have no such consent", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn withdraw_consent(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Consent>, ApiError> {
    Ok(Json(state.service.withdraw_consent(&actor, &id).await?))
}

/// The records your account is linked to, each verified by a route the trust checked.
#[utoipa::path(get, path = "/api/v1/me/links", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Your links", body = Vec<SubjectLink>),
    ))]
pub(crate) async fn my_links(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<SubjectLink>>, ApiError> {
    Ok(Json(state.service.my_links(&actor).await?))
}

/// Link your account to your records with the one-time code the data owner gave you.
#[utoipa::path(post, path = "/api/v1/me/links", tag = "residents", security(("bearer" = [])), request_body = NewLink,
    responses(
        CommonProblems,
        (status = 201, description = "Linked (and logged under a commitment)", body = SubjectLink),
        (status = 403, description = "Unknown, used or expired code", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The records are linked to an account already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a code", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn link(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewLink>,
) -> Result<(StatusCode, Json<SubjectLink>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.link_with_code(&actor, new).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AccessParams {
    /// Only reads logged before this entry (for the next page).
    before: Option<i64>,
    /// At most this many (default 100, at most 500).
    limit: Option<usize>,
}

/// Who used my data: every logged read whose scope included your records.
#[utoipa::path(get, path = "/api/v1/me/accesses", tag = "residents", security(("bearer" = [])), params(AccessParams),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first; each names its log entry", body = Vec<AccessView>),
    ))]
pub(crate) async fn my_accesses(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiQuery(p): ApiQuery<AccessParams>,
) -> Result<Json<Vec<AccessView>>, ApiError> {
    Ok(Json(
        state
            .service
            .my_accesses(&actor, p.before, p.limit.unwrap_or(100))
            .await?,
    ))
}

/// The commitments the public log carries for you, with the salts that open them.
#[utoipa::path(get, path = "/api/v1/me/commitments", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first", body = Vec<CommitmentView>),
    ))]
pub(crate) async fn my_commitments(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<CommitmentView>>, ApiError> {
    Ok(Json(state.service.my_commitments(&actor).await?))
}

/// The signed log entries about you, each with the salt that shows it is
/// yours: `SHA-256("citytrust-subject-v1\n" ‖ salt ‖ "\n" ‖ username)` equals its `subject`.
#[utoipa::path(get, path = "/api/v1/me/entries", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first (entries appear once their checkpoint is signed)", body = Vec<EntryAboutMe>),
    ))]
pub(crate) async fn my_entries(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<EntryAboutMe>>, ApiError> {
    Ok(Json(state.service.entries_about_me(&actor).await?))
}

/// Your messages from the trust: breach notices.
#[utoipa::path(get, path = "/api/v1/me/inbox", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first", body = Vec<InboxMessage>),
    ))]
pub(crate) async fn my_inbox(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<InboxMessage>>, ApiError> {
    Ok(Json(state.service.my_inbox(&actor).await?))
}

/// What you shared (consents, donations), what you were offered for it, and how often it was used.
#[utoipa::path(get, path = "/api/v1/me/sharing", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first", body = Vec<SharedItem>),
    ))]
pub(crate) async fn my_sharing(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<SharedItem>>, ApiError> {
    Ok(Json(state.service.my_sharing(&actor).await?))
}

/// Your requests (access, rectification, erasure) and their deadlines.
#[utoipa::path(get, path = "/api/v1/me/subject-access-requests", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Your requests", body = Vec<SubjectRequest>),
    ))]
pub(crate) async fn my_requests(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<SubjectRequest>>, ApiError> {
    Ok(Json(state.service.my_subject_requests(&actor).await?))
}

/// Ask for a copy of your data, a correction or an erasure. The deadline
/// (one month unless the trust says otherwise) is tracked and shown to the owner.
#[utoipa::path(post, path = "/api/v1/me/subject-access-requests", tag = "residents", security(("bearer" = [])), request_body = NewSubjectRequest,
    responses(
        CommonProblems,
        (status = 201, description = "Made, logged, deadline set", body = SubjectRequest),
        (status = 403, description = "Your account is linked to no records", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn make_request(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewSubjectRequest>,
) -> Result<(StatusCode, Json<SubjectRequest>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.make_subject_request(&actor, new).await?),
    ))
}

/// Your export bundle: your rows in every linked dataset (JSON and CSV), who
/// received them for what, your consents and requests, the retention periods.
#[utoipa::path(get, path = "/api/v1/me/export", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "The bundle (logged; `CityTrust-Log-Entry` names the entry)", content_type = "application/json", body = Object),
    ))]
pub(crate) async fn export(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Response, ApiError> {
    let bundle = state.service.my_export(&actor).await?;
    Ok(bundle_response(bundle))
}

pub(crate) fn bundle_response(bundle: citytrust_service::residents::Bundle) -> Response {
    use base64::Engine;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"my-citytrust-data.json\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&bundle.log_index.to_string()) {
        headers.insert("citytrust-log-entry", v);
    }
    let digest = base64::engine::general_purpose::STANDARD
        .encode(hex::decode(&bundle.sha256).unwrap_or_default());
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{digest}:")) {
        headers.insert("repr-digest", v);
    }
    (headers, bundle.body).into_response()
}

/// Issue a one-time link code for the person whose records carry a subject
/// key (members of the owning organisation). The code is shown once.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/link-codes", tag = "residents", security(("bearer" = [])), request_body = NewLinkCode,
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 201, description = "Issued", body = IssuedLinkCode),
        (status = 403, description = "Not a member of the owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No records with that key; not personal data", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn issue_link_code(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(new): ApiJson<NewLinkCode>,
) -> Result<(StatusCode, Json<IssuedLinkCode>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.issue_link_code(&actor, &id, new).await?),
    ))
}

/// Subject requests about the datasets your organisations own, open ones first by deadline.
#[utoipa::path(get, path = "/api/v1/subject-requests", tag = "residents", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "The owner's queue", body = Vec<SubjectRequest>),
    ))]
pub(crate) async fn request_queue(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<SubjectRequest>>, ApiError> {
    Ok(Json(state.service.subject_request_queue(&actor).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    /// What was done, or why it is refused.
    answer: String,
    /// Refuse the request (with the reason in `answer`).
    #[serde(default)]
    refuse: bool,
}

/// Answer a rectification, or refuse a request with the reason (the dataset's owner).
#[utoipa::path(post, path = "/api/v1/subject-requests/{id}/answer", tag = "residents", security(("bearer" = [])), request_body = AnswerBody,
    params(("id" = String, Path, description = "The request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Answered and logged", body = SubjectRequest),
        (status = 404, description = "No such request for your organisation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn answer_request(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AnswerBody>,
) -> Result<Json<SubjectRequest>, ApiError> {
    Ok(Json(
        state
            .service
            .answer_subject_request(&actor, &id, body.refuse, &body.answer)
            .await?,
    ))
}

/// Carry out an erasure: every version holding the person's rows is written
/// again without them and the old files destroyed; digests before and after are logged.
#[utoipa::path(post, path = "/api/v1/subject-requests/{id}/erase", tag = "residents", security(("bearer" = [])),
    params(("id" = String, Path, description = "The erasure request's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Erased and logged", body = SubjectRequest),
        (status = 404, description = "No such request for your organisation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already answered", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn erase(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SubjectRequest>, ApiError> {
    Ok(Json(state.service.carry_out_erasure(&actor, &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BirthDateBody {
    /// `YYYY-MM-DD`, as checked against a document.
    #[schema(format = Date)]
    birth_date: String,
}

/// Record a person's date of birth (administrators, after checking it): below
/// the age threshold their guardian decides for them.
#[utoipa::path(post, path = "/api/v1/users/{username}/birth-date", tag = "residents", security(("bearer" = [])), request_body = BirthDateBody,
    params(("username" = String, Path, description = "The account")),
    responses(
        CommonProblems,
        (status = 204, description = "Recorded"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a date, or in the future", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn set_birth_date(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(username): ApiPath<String>,
    ApiJson(body): ApiJson<BirthDateBody>,
) -> Result<StatusCode, ApiError> {
    state
        .service
        .set_birth_date(&actor, &username, &body.birth_date)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
