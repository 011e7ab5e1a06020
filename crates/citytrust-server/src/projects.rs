//! Sharing projects over HTTP: start, read, fill in (`PATCH` at a
//! revision), keep documents (the raw body, at most 10 MiB), sign off a
//! stage, make the Share stage's access request, renew at review, retire.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::ProblemCode;
use citytrust_model::projects::{NewProject, Project, ProjectDocument, ProjectUpdate};
use citytrust_service::projects::{MAX_DOCUMENT_BYTES, RenewBody, RetireProjectBody, SignOffBody};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/projects", get(list_projects).post(create_project))
        .route(
            "/api/v1/projects/{id}",
            get(get_project).patch(update_project),
        )
        .route(
            "/api/v1/projects/{id}/documents",
            post(add_document).layer(DefaultBodyLimit::max(MAX_DOCUMENT_BYTES + 1)),
        )
        .route("/api/v1/projects/{id}/documents/{doc}", get(get_document))
        .route("/api/v1/projects/{id}/sign-off", post(sign_off))
        .route("/api/v1/projects/{id}/share", post(share))
        .route("/api/v1/projects/{id}/renew", post(renew))
        .route("/api/v1/projects/{id}/retire", post(retire))
}

#[derive(Debug, Deserialize)]
pub struct IdPath {
    id: String,
}

#[derive(Debug, Deserialize)]
pub struct DocPath {
    id: String,
    doc: String,
}

/// A project with what its current stage still lacks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    #[serde(flatten)]
    pub project: Project,
    /// The current stage's checklist items not yet done: (field, what is wanted).
    pub missing: Vec<MissingItem>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MissingItem {
    pub field: String,
    pub what: String,
}

async fn view(state: &AppState, project: Project) -> Result<ProjectView, ApiError> {
    let missing = state
        .service
        .project_missing(&project)
        .await?
        .into_iter()
        .map(|(field, what)| MissingItem { field, what })
        .collect();
    Ok(ProjectView { project, missing })
}

/// Start a sharing project (members of its lead organisation). It begins at Discover.
#[utoipa::path(post, path = "/api/v1/projects", tag = "participation", security(("bearer" = [])), request_body = NewProject,
    responses(
        CommonProblems,
        (status = 201, description = "Started", body = ProjectView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the lead organisation", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create_project(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(body): ApiJson<NewProject>,
) -> Result<Response, ApiError> {
    let p = state.service.create_project(&actor, body).await?;
    Ok((StatusCode::CREATED, Json(view(&state, p).await?)).into_response())
}

/// Every sharing project, newest first. Public (documents' contents are not).
#[utoipa::path(get, path = "/api/v1/projects", tag = "participation",
    responses(CommonProblems, (status = 200, description = "The projects", body = Vec<Project>)))]
pub(crate) async fn list_projects(
    State(state): State<AppState>,
) -> Result<Json<Vec<Project>>, ApiError> {
    Ok(Json(state.service.projects().await?))
}

/// One project, with what its current stage still lacks. Public.
#[utoipa::path(get, path = "/api/v1/projects/{id}", tag = "participation",
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The project", body = ProjectView),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_project(
    State(state): State<AppState>,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.project(&id).await?;
    Ok(Json(view(&state, p).await?))
}

/// Fill in sections of a project (its organisations' members) at the revision read; after Share, a new version.
#[utoipa::path(patch, path = "/api/v1/projects/{id}", tag = "participation", security(("bearer" = [])), request_body = ProjectUpdate,
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Saved", body = ProjectView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the project's organisations", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed meanwhile (another revision), or retired", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (unknown datasets, organisations, screening questions …)", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn update_project(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<ProjectUpdate>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.update_project(&actor, &id, body).await?;
    Ok(Json(view(&state, p).await?))
}

/// Where a document goes: its kind and file name.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DocumentParams {
    /// mou, data_sharing_agreement, service_level_agreement, licence, dpia or other.
    pub kind: String,
    /// The file's name (a new version when the project has one of this name).
    pub name: String,
}

/// Keep a document with a project (its organisations' members): the body is the file (at most 10 MiB); its digest is logged.
#[utoipa::path(post, path = "/api/v1/projects/{id}/documents", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The project's id"), DocumentParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The document"),
    responses(
        CommonProblems,
        (status = 201, description = "Kept", body = ProjectDocument),
        (status = 400, description = "Unknown parameter, or an unreadable body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the project's organisations", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed meanwhile, or retired", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 10 MiB", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown kind, no name, or an empty document", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn add_document(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiQuery(params): ApiQuery<DocumentParams>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::BodyTooLarge,
                format!("a project document is at most {MAX_DOCUMENT_BYTES} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::UnreadableBody,
                "the request body could not be read",
            )
        }
    })?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let doc = state
        .service
        .add_project_document(&actor, &id, &params.kind, &params.name, media_type, &body)
        .await?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

/// A project's document (its organisations, the trustees and administrators).
#[utoipa::path(get, path = "/api/v1/projects/{id}/documents/{doc}", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The project's id"), ("doc" = String, Path, description = "The document's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The document's bytes", content_type = "application/octet-stream"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the project's organisations, a trustee or an administrator", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project or document", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn get_document(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(DocPath { id, doc }): ApiPath<DocPath>,
) -> Result<Response, ApiError> {
    let (meta, bytes) = state.service.project_document(&actor, &id, &doc).await?;
    let disposition = format!(
        "attachment; filename=\"{}\"",
        meta.name.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
            "_"
        )
    );
    let mut res = bytes.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("sha-256=:{}:", meta.sha256)) {
        res.headers_mut().insert("x-content-sha256", v);
    }
    Ok(res)
}

/// Sign off the project's current stage (trustees; the owner when all its data is open), if its checklist is complete.
#[utoipa::path(post, path = "/api/v1/projects/{id}/sign-off", tag = "participation", security(("bearer" = [])), request_body = SignOffBody,
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Signed off: the project is in the next stage", body = ProjectView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee (nor, for open data, its owner)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not the current stage, or changed meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The stage's checklist is not complete: each missing item named", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn sign_off(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<SignOffBody>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.sign_off_stage(&actor, &id, body).await?;
    Ok(Json(view(&state, p).await?))
}

/// In the Share stage, make the project's access request through the ordinary request path (members of the lead organisation).
#[utoipa::path(post, path = "/api/v1/projects/{id}/share", tag = "participation", security(("bearer" = [])),
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The request is made; the trustees decide it as any other", body = ProjectView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the lead organisation, or refused by the charter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not in the Share stage, or shared already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The request is not valid", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn share(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.share_project(&actor, &id).await?;
    Ok(Json(view(&state, p).await?))
}

/// At review, renew the project with a new review date.
#[utoipa::path(post, path = "/api/v1/projects/{id}/renew", tag = "participation", security(("bearer" = [])), request_body = RenewBody,
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Renewed", body = ProjectView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the project's organisations or a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not at review", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a later date", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn renew(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<RenewBody>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.renew_project(&actor, &id, body).await?;
    Ok(Json(view(&state, p).await?))
}

/// Retire a project (trustees): its agreements are retired and their recipients asked to attest the data's deletion.
#[utoipa::path(post, path = "/api/v1/projects/{id}/retire", tag = "participation", security(("bearer" = [])), request_body = RetireProjectBody,
    params(("id" = String, Path, description = "The project's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Retired", body = ProjectView),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Retired already, or changed meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn retire(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(IdPath { id }): ApiPath<IdPath>,
    ApiJson(body): ApiJson<RetireProjectBody>,
) -> Result<Json<ProjectView>, ApiError> {
    let p = state.service.retire_project(&actor, &id, body).await?;
    Ok(Json(view(&state, p).await?))
}
