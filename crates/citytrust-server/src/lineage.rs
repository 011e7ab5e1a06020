//! Derived datasets and changes to how a dataset is protected, over HTTP:
//! `POST /api/v1/derived-datasets`, `POST /api/v1/datasets/{id}/reassessment`
//! and the trustees' `POST /api/v1/datasets/{id}/classification`.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use citytrust_model::Spectrum;
use citytrust_model::catalogue::{Dataset, DatasetInput};
use citytrust_service::content::VersionInfo;
use citytrust_service::lineage::{DeriveRequest, Reassessment};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiJson, SignedIn};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/derived-datasets", post(derive))
        .route("/api/v1/datasets/{id}/reassessment", post(reassess))
        .route("/api/v1/datasets/{id}/classification", post(reclassify))
}

/// A dataset to make from a query over others.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeriveBody {
    /// The new dataset's catalogue entry. Its class is raised to the most
    /// stringent of its inputs', and it is personal data if any input is.
    pub dataset: DatasetInput,
    /// One read-only SELECT over datasets the caller may read (tables as in `/api/v1/query`).
    #[schema(min_length = 1, max_length = 100000)]
    pub sql: String,
    /// What the derived data is for: a purpose id of the trust's taxonomy
    /// (every input is read for it; recorded in the transparency log).
    #[schema(min_length = 1, max_length = 300)]
    pub purpose: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Derived {
    pub dataset: Dataset,
    #[schema(value_type = Object)]
    pub version: VersionInfo,
}

/// Make a dataset from a query. It records its inputs and their versions,
/// inherits their most stringent class, and needs its owner's re-assessment
/// before anyone outside the owner may read it.
#[utoipa::path(post, path = "/api/v1/derived-datasets", tag = "content", security(("bearer" = [])), request_body = DeriveBody,
    responses(
        CommonProblems,
        (status = 201, description = "The derived dataset and its first version", body = Derived),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the owning organisation, or an input the caller may not read", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "A table names no dataset, or a version that does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, not a single SELECT, or the query failed", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn derive(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(body): ApiJson<DeriveBody>,
) -> Result<Response, ApiError> {
    let (dataset, version) = state
        .service
        .derive_dataset(
            &actor,
            DeriveRequest {
                dataset: body.dataset,
                sql: body.sql,
                purpose: body.purpose,
            },
        )
        .await?;
    let location = format!("/api/v1/datasets/{}", dataset.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Derived { dataset, version }),
    )
        .into_response())
}

/// A maintainer's choice of class for a derived dataset.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReassessBody {
    pub spectrum: Spectrum,
    /// Whether the derived data is personal data (unchanged when absent).
    #[serde(default)]
    pub personal_data: Option<bool>,
    /// The reasons: what the derived data could reveal, and to whom.
    #[schema(min_length = 1, max_length = 2000)]
    pub note: String,
    /// The revision this choice was made on (refused if the dataset has changed since).
    #[serde(default)]
    pub revision: Option<i64>,
}

/// Re-assess a derived dataset: choose its class, with reasons. Until then
/// only its owner may read it.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/reassessment", tag = "content", security(("bearer" = [])), request_body = ReassessBody,
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The dataset, re-assessed", body = Dataset),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a maintainer of this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The dataset changed since that revision", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a derived dataset, or no reasons given", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reassess(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReassessBody>,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(
        state
            .service
            .reassess_dataset(
                &actor,
                &id,
                Reassessment {
                    spectrum: body.spectrum,
                    personal_data: body.personal_data,
                    note: body.note,
                    expected_revision: body.revision,
                },
            )
            .await?,
    ))
}

/// The trustees' change to how a dataset is protected. Fields left out stay
/// as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReclassifyBody {
    #[serde(default)]
    pub spectrum: Option<Spectrum>,
    #[serde(default)]
    pub personal_data: Option<bool>,
    /// The personal terms in full (subject key, lawful basis per purpose, …).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub personal_terms: Option<citytrust_model::residents::PersonalTerms>,
    /// The column classes in full.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub column_classes: Option<citytrust_model::catalogue::ColumnClasses>,
    /// The trustees' reasons (public: they are in the log).
    #[schema(min_length = 1, max_length = 2000)]
    pub reason: String,
    /// The revision this change was made on (refused if the dataset has changed since).
    #[serde(default)]
    pub revision: Option<i64>,
}

/// Change how a dataset is protected: its class, whether it is personal
/// data, its personal terms and lawful bases, its column classes (trustees
/// only; editors may only make these stricter). Logged with the reasons as
/// `dataset.reclassified`. A derived dataset so assessed no longer carries
/// its inputs' terms.
#[utoipa::path(post, path = "/api/v1/datasets/{id}/classification", tag = "content", security(("bearer" = [])), request_body = ReclassifyBody,
    params(("id" = String, Path, description = "The dataset's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The dataset, reclassified", body = Dataset),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a trustee", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The dataset changed since that revision", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, or no reasons given", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn reclassify(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReclassifyBody>,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(
        state
            .service
            .reclassify_dataset(
                &actor,
                &id,
                citytrust_service::catalogue::Reclassification {
                    spectrum: body.spectrum,
                    personal_data: body.personal_data,
                    personal_terms: body.personal_terms,
                    column_classes: body.column_classes,
                    reason: body.reason,
                    expected_revision: body.revision,
                },
            )
            .await?,
    ))
}
