//! The JSON API under `/api/v1`, and the OpenAPI document that describes it.

use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_model::ProblemCode;
use citytrust_model::account::{
    Authority, Group, NewAuthority, NewGroup, NewOrganization, NewUser, Organization, User,
};
use citytrust_model::catalogue::{Dataset, DatasetInput, Spectrum, Theme};
use citytrust_service::search::{Facets, MAX_PER_PAGE};
use citytrust_service::{SearchQuery, SortOrder};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiActor, ApiJson, ApiPath, ApiQuery, SignedIn, json_body, parse_json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/token", post(issue_token))
        .route("/api/v1/me", get(me))
        .route(
            "/api/v1/datasets",
            get(search_datasets).post(create_dataset),
        )
        .route(
            "/api/v1/datasets/{id}",
            get(get_dataset).patch(patch_dataset),
        )
        .route(
            "/api/v1/organizations",
            get(list_organizations).post(create_organization),
        )
        .route("/api/v1/organizations/{id}", get(get_organization))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route(
            "/api/v1/authorities",
            get(list_authorities).post(create_authority),
        )
        .route("/api/v1/authorities/{id}/revoke", post(revoke_authority))
        .route("/api/openapi.json", get(openapi_json))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CityTrust API",
        description = "The civic data trust's catalogue, accounts and governance. Errors are RFC 9457 problem+json with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    paths(
        crate::health::healthz,
        issue_token, me, search_datasets, create_dataset, get_dataset, patch_dataset,
        list_organizations, create_organization, get_organization,
        list_users, create_user, list_groups, create_group,
        list_authorities, create_authority, revoke_authority,
        crate::ledger::entry, crate::ledger::proof, crate::ledger::consistency, crate::ledger::analytics, crate::ledger::agreement_log,
        crate::content::upload_version, crate::content::list_versions, crate::content::get_version,
        crate::content::get_rejects, crate::content::get_data, crate::content::run_query,
        crate::content::get_quality_rules, crate::content::put_quality_rules,
        crate::content::get_timeliness, crate::content::aggregate, crate::content::dp_statistic, crate::content::lookup,
        crate::content::get_privacy_budget, crate::lineage::derive, crate::lineage::reassess, crate::lineage::reclassify,
        crate::feedback::report_feedback, crate::feedback::list_feedback, crate::feedback::answer_feedback,
        crate::governance::list_purposes, crate::governance::add_purpose, crate::governance::get_charter,
        crate::governance::put_charter, crate::governance::charter_history, crate::governance::create_request,
        crate::governance::list_requests, crate::governance::get_request, crate::governance::submit_request,
        crate::governance::vote, crate::governance::comment, crate::governance::list_agreements,
        crate::governance::get_agreement, crate::governance::get_odrl, crate::governance::retire,
        crate::governance::attest_deletion, crate::governance::overdue_attestations,
        crate::dcat::catalog_turtle, crate::dcat::catalog_jsonld, crate::ckan::action,
        crate::residents::my_consents, crate::residents::give_consent, crate::residents::withdraw_consent,
        crate::residents::my_links, crate::residents::link, crate::residents::my_accesses,
        crate::residents::my_commitments, crate::residents::my_requests, crate::residents::make_request,
        crate::residents::export, crate::residents::issue_link_code, crate::residents::request_queue,
        crate::residents::answer_request, crate::residents::erase, crate::residents::set_birth_date,
        crate::residents::my_entries, crate::residents::my_inbox, crate::residents::my_sharing,
        crate::breaches::register_breach, crate::breaches::list_breaches, crate::breaches::get_breach,
        crate::breaches::regulator_notified,
        crate::participation::ask_for_data, crate::participation::list_data_requests,
        crate::participation::get_data_request, crate::participation::support,
        crate::participation::withdraw_support, crate::participation::answer,
        crate::participation::assign, crate::participation::roadmap,
        crate::participation::open_consultation, crate::participation::list_consultations,
        crate::participation::get_consultation, crate::participation::close_consultation, crate::participation::respond,
        crate::participation::my_response, crate::participation::trustees,
        crate::participation::set_term, crate::participation::charter_changes,
        crate::participation::agreement_outcomes, crate::participation::report_outcome,
        crate::participation::outcome_reports, crate::participation::outcome_summary,
        crate::participation::overdue_outcomes,
        crate::projects::create_project, crate::projects::list_projects, crate::projects::get_project,
        crate::projects::update_project, crate::projects::add_document, crate::projects::get_document,
        crate::projects::sign_off, crate::projects::share, crate::projects::renew, crate::projects::retire,
        crate::federation::register_remote_catalogue, crate::federation::list_remote_catalogues,
        crate::federation::get_remote_catalogue, crate::federation::remove_remote_catalogue,
        crate::federation::harvest, crate::federation::search_federated, crate::federation::get_federated_entry,
        crate::federation::ask_remote, crate::federation::my_remote_requests, crate::federation::remote_data
    ),
    components(schemas(Problem, crate::content::QueryBody, crate::content::AggregateBody, crate::content::DpBody, crate::content::LookupBody, citytrust_service::content::RefreshState,
        crate::lineage::DeriveBody, crate::lineage::ReassessBody, crate::lineage::Derived,
        citytrust_service::feedback::Feedback, citytrust_service::feedback::FeedbackInput, citytrust_service::feedback::FeedbackAnswer,
        citytrust_service::governance::CharterChange, crate::governance::CommentBody, crate::governance::RetireBody,
        crate::governance::AttestationBody, crate::residents::AnswerBody, crate::residents::BirthDateBody,
        citytrust_model::residents::PersonalTerms, citytrust_model::residents::PurposeBasis,
        citytrust_model::residents::LawfulBasis, citytrust_model::residents::BreachScope)),
    modifiers(&BearerAuth),
    tags((name = "catalogue"), (name = "content"), (name = "accounts"), (name = "ledger"), (name = "governance"), (name = "residents", description = "Residents in control: links, consent, who used my data, subject requests, erasure"), (name = "operations"), (name = "participation", description = "Residents shape the trust: demand-led data requests and the roadmap, consultations, the board in public, outcomes of agreements, sharing projects"),
        (name = "federation", description = "Other catalogues harvested into this one (DCAT-AP, CKAN), their entries, and asking their nodes for data through the Dataspace Protocol"),
        (name = "ckan", description = "A CKAN-compatible read API (CKAN's envelope and errors, not problem+json)"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("opaque")
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> Response {
    match ApiDoc::openapi().to_json() {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => {
            ApiError::from(citytrust_service::ServiceError::Internal(e.to_string())).into_response()
        }
    }
}

// ---- auth -------------------------------------------------------------------

/// Credentials for `POST /api/v1/auth/token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(max_length = 64)]
    pub username: String,
    #[schema(format = Password, max_length = 1024)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub token_type: String,
}

/// Exchange a username and password for a bearer token.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "accounts", request_body = TokenRequest,
    responses(
        CommonProblems,
        (status = 200, description = "A new token", body = TokenResponse),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed sign-ins for this account lately (Retry-After says when to try again)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn issue_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    if req.username.len() > 64 || req.password.len() > 1024 {
        return Err(citytrust_service::ServiceError::BadCredentials.into());
    }
    let issued = state
        .service
        .issue_api_token(&req.username, &req.password)
        .await?;
    Ok(Json(TokenResponse {
        token: issued.secret,
        expires_at: citytrust_service::rfc3339(issued.expires_at),
        token_type: "Bearer".into(),
    }))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "The account the token belongs to", body = User),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<User>, ApiError> {
    let username = actor.username().unwrap_or_default();
    Ok(Json(state.service.get_user(username).await?))
}

// ---- catalogue ----------------------------------------------------------------

/// Query parameters of the catalogue search. Empty values mean "no filter".
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words to look for in titles, keywords, descriptions and organisation names.
    #[param(max_length = 500)]
    pub q: Option<String>,
    /// A theme id such as `energy`.
    #[param(inline, value_type = Option<Theme>)]
    pub theme: Option<String>,
    #[param(inline, value_type = Option<Spectrum>)]
    pub spectrum: Option<String>,
    /// An organisation id: datasets it owns.
    pub organization: Option<String>,
    /// A format such as `CSV` (case does not matter).
    pub format: Option<String>,
    /// Only datasets with (`true`) or without (`false`) personal data.
    #[param(value_type = Option<bool>)]
    pub personal_data: Option<String>,
    #[param(inline, value_type = Option<SortOrder>)]
    pub sort: Option<String>,
    /// 1-based page number.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub page: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub per_page: Option<String>,
    /// `local`, this trust's own entries (the only ones this endpoint
    /// answers); entries harvested from other catalogues are searched at
    /// `/api/v1/federated-entries`.
    pub source: Option<String>,
}

impl SearchParams {
    pub fn to_query(&self) -> Result<SearchQuery, ApiError> {
        fn some(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        fn bad(field: &str, message: String) -> ApiError {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                ProblemCode::InvalidParameter,
                field,
                message,
            )
        }
        let number = |field: &str,
                      v: &Option<String>,
                      default: usize,
                      max: usize|
         -> Result<usize, ApiError> {
            match some(v) {
                None => Ok(default),
                Some(s) => match s.parse::<usize>() {
                    Ok(n) if (1..=max).contains(&n) => Ok(n),
                    _ => Err(bad(
                        field,
                        format!("must be a whole number from 1 to {max}"),
                    )),
                },
            }
        };
        if let Some(source) = some(&self.source)
            && source != "local"
        {
            return Err(bad(
                "source",
                format!(
                    "'{source}' is not this trust's own catalogue: search /api/v1/federated-entries?source={source}"
                ),
            ));
        }
        let text = self.q.clone().unwrap_or_default();
        if text.chars().count() > 500 {
            return Err(bad("q", "is longer than 500 characters".into()));
        }
        Ok(SearchQuery {
            text,
            theme: some(&self.theme)
                .map(|t| {
                    Theme::parse(t).ok_or_else(|| bad("theme", format!("'{t}' is not a theme")))
                })
                .transpose()?,
            spectrum: some(&self.spectrum)
                .map(|s| {
                    Spectrum::parse(s)
                        .ok_or_else(|| bad("spectrum", format!("'{s}' is not a spectrum class")))
                })
                .transpose()?,
            organization: some(&self.organization).map(str::to_string),
            format: some(&self.format).map(str::to_string),
            personal_data: some(&self.personal_data)
                .map(|p| match p {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(bad(
                        "personal_data",
                        format!("must be true or false, not '{other}'"),
                    )),
                })
                .transpose()?,
            sort: match some(&self.sort) {
                None | Some("relevance") => SortOrder::Relevance,
                Some("title") => SortOrder::Title,
                Some("updated") => SortOrder::Updated,
                Some(other) => {
                    return Err(bad(
                        "sort",
                        format!("must be relevance, title or updated, not '{other}'"),
                    ));
                }
            },
            page: number("page", &self.page, 1, 1_000_000)?,
            per_page: number("per_page", &self.per_page, 20, MAX_PER_PAGE)?,
            ..SearchQuery::default()
        })
    }
}

/// One page of catalogue search results.
#[derive(Serialize, ToSchema)]
pub struct DatasetPage {
    pub items: Vec<Dataset>,
    /// How many datasets match in all.
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub facets: Facets,
}

/// Search the catalogue. Every dataset's metadata is public, closed ones included.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "catalogue", params(SearchParams),
    responses(
        CommonProblems,
        (status = 200, description = "Matching datasets, best first", body = DatasetPage),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    ))]
async fn search_datasets(
    State(state): State<AppState>,
    _caller: ApiActor,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<Json<DatasetPage>, ApiError> {
    let query = params.to_query()?;
    let results = state.service.search(&query)?;
    Ok(Json(DatasetPage {
        items: results.items,
        total: results.total,
        page: query.page,
        per_page: query.per_page,
        facets: results.facets,
    }))
}

/// Register a dataset.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "catalogue", security(("bearer" = [])), request_body = DatasetInput,
    responses(
        CommonProblems,
        (status = 201, description = "Registered", body = Dataset),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of the owning organisation", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_dataset(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(input): ApiJson<DatasetInput>,
) -> Result<Response, ApiError> {
    let dataset = state.service.create_dataset(&actor, input).await?;
    let location = format!("/api/v1/datasets/{}", dataset.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(dataset),
    )
        .into_response())
}

/// One dataset's catalogue entry.
#[utoipa::path(get, path = "/api/v1/datasets/{id}", tag = "catalogue",
    params(("id" = String, Path, description = "The dataset's id (slug)")),
    responses(
        CommonProblems,
        (status = 200, description = "The entry", body = Dataset),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_dataset(
    State(state): State<AppState>,
    _caller: ApiActor,
    Path(id): Path<String>,
) -> Result<Json<Dataset>, ApiError> {
    Ok(Json(state.service.get_dataset(&id).await?))
}

/// Change a dataset's metadata with a JSON merge patch (RFC 7396): fields present replace, `null` clears.
#[utoipa::path(patch, path = "/api/v1/datasets/{id}", tag = "catalogue", security(("bearer" = [])),
    params(("id" = String, Path, description = "The dataset's id (slug)"),
        ("If-Match" = Option<String>, Header, description = "The revision the change is based on, e.g. \"3\"; a different current revision is refused with 409")),
    request_body(content = Object, description = "A JSON merge patch of the fields of DatasetInput",
        content_type = "application/merge-patch+json"),
    responses(
        CommonProblems,
        (status = 200, description = "The changed entry", body = Dataset),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not allowed to edit this dataset", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dataset", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed by someone else meanwhile", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn patch_dataset(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<Dataset>, ApiError> {
    let expected = match request.headers().get(header::IF_MATCH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::field(
                        StatusCode::BAD_REQUEST,
                        ProblemCode::InvalidParameter,
                        "If-Match",
                        "must be the dataset's revision as an entity tag, e.g. \"3\"",
                    )
                })?,
        ),
    };
    let body = json_body(request, &state).await?;
    let patch: serde_json::Value = parse_json(&body)?;
    if !patch.is_object() {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            ProblemCode::ValidationFailed,
            "",
            "a merge patch must be a JSON object",
        ));
    }
    let current = state.service.get_dataset(&id).await?;
    let mut doc = serde_json::to_value(current.metadata.to_input())
        .map_err(|e| citytrust_service::ServiceError::Internal(e.to_string()))?;
    merge_patch(&mut doc, &patch);
    let merged = serde_json::to_vec(&doc)
        .map_err(|e| citytrust_service::ServiceError::Internal(e.to_string()))?;
    let input: DatasetInput = parse_json(&merged)?;
    Ok(Json(
        state
            .service
            .update_dataset(
                &actor,
                &id,
                input,
                Some(expected.unwrap_or(current.revision)),
            )
            .await?,
    ))
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (t, p) => {
            if let serde_json::Value::Object(p) = p {
                let mut fresh = serde_json::Value::Object(Default::default());
                merge_patch(&mut fresh, &serde_json::Value::Object(p.clone()));
                *t = fresh;
            } else {
                *t = p.clone();
            }
        }
    }
}

// ---- organisations, users, groups -------------------------------------------------

/// Every organisation.
#[utoipa::path(get, path = "/api/v1/organizations", tag = "accounts",
    responses(
        CommonProblems,(status = 200, description = "Organisations by name", body = Vec<Organization>)))]
async fn list_organizations(
    State(state): State<AppState>,
) -> Result<Json<Vec<Organization>>, ApiError> {
    Ok(Json(state.service.list_organizations().await?))
}

/// One organisation.
#[utoipa::path(get, path = "/api/v1/organizations/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The organisation's id")),
    responses(
        CommonProblems,
        (status = 200, description = "The organisation", body = Organization),
        (status = 404, description = "No such organisation", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_organization(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Organization>, ApiError> {
    Ok(Json(state.service.get_organization(&id).await?))
}

/// Add an organisation (administrators).
#[utoipa::path(post, path = "/api/v1/organizations", tag = "accounts", security(("bearer" = [])), request_body = NewOrganization,
    responses(
        CommonProblems,
        (status = 201, description = "Created", body = Organization),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_organization(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewOrganization>,
) -> Result<(StatusCode, Json<Organization>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.create_organization(&actor, new).await?),
    ))
}

/// Every account (administrators).
#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Accounts by username", body = Vec<User>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    ApiActor(actor): ApiActor,
) -> Result<Json<Vec<User>>, ApiError> {
    Ok(Json(state.service.list_users(&actor).await?))
}

/// Create an account (administrators).
#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", security(("bearer" = [])), request_body = NewUser,
    responses(
        CommonProblems,
        (status = 201, description = "Created", body = User),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_user(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.create_user(&actor, new).await?),
    ))
}

/// Every group of organisations.
#[utoipa::path(get, path = "/api/v1/groups", tag = "accounts",
    responses(
        CommonProblems,(status = 200, description = "Groups by name", body = Vec<Group>)))]
async fn list_groups(State(state): State<AppState>) -> Result<Json<Vec<Group>>, ApiError> {
    Ok(Json(state.service.list_groups().await?))
}

/// Create a group of organisations (administrators).
#[utoipa::path(post, path = "/api/v1/groups", tag = "accounts", security(("bearer" = [])), request_body = NewGroup,
    responses(
        CommonProblems,
        (status = 201, description = "Created", body = Group),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_group(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewGroup>,
) -> Result<(StatusCode, Json<Group>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.create_group(&actor, new).await?),
    ))
}

// ---- agents' authority ------------------------------------------------------

/// Authorities to act for another person: every one for an administrator,
/// else those the caller holds or is subject to.
#[utoipa::path(get, path = "/api/v1/authorities", tag = "accounts", security(("bearer" = [])),
    responses(
        CommonProblems,
        (status = 200, description = "Newest first", body = Vec<Authority>),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_authorities(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<Json<Vec<Authority>>, ApiError> {
    Ok(Json(state.service.list_authorities(&actor).await?))
}

/// Record an authority to act for another person, after checking its
/// evidence (administrators, in person). Agents then send
/// `On-Behalf-Of: <principal>` with their own token.
#[utoipa::path(post, path = "/api/v1/authorities", tag = "accounts", security(("bearer" = [])), request_body = NewAuthority,
    responses(
        CommonProblems,
        (status = 201, description = "Recorded (and logged)", body = Authority),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_authority(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiJson(new): ApiJson<NewAuthority>,
) -> Result<(StatusCode, Json<Authority>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(state.service.create_authority(&actor, new).await?),
    ))
}

/// Withdraw an authority (administrators, in person); it stops counting at once.
#[utoipa::path(post, path = "/api/v1/authorities/{id}/revoke", tag = "accounts", security(("bearer" = [])),
    params(("id" = String, Path, description = "The authority's id")),
    responses(
        CommonProblems,
        (status = 200, description = "Withdrawn", body = Authority),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Administrators only", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such authority", body = Problem, content_type = "application/problem+json"),
    ))]
async fn revoke_authority(
    State(state): State<AppState>,
    SignedIn(actor): SignedIn,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Authority>, ApiError> {
    Ok(Json(state.service.revoke_authority(&actor, &id).await?))
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    fn check(target: serde_json::Value, patch: serde_json::Value, expect: serde_json::Value) {
        let mut t = target;
        merge_patch(&mut t, &patch);
        assert_eq!(t, expect);
    }

    #[test]
    fn rfc7396_examples() {
        check(json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"}));
        check(
            json!({"a": "b"}),
            json!({"b": "c"}),
            json!({"a": "b", "b": "c"}),
        );
        check(json!({"a": "b"}), json!({"a": null}), json!({}));
        check(
            json!({"a": {"b": "c"}}),
            json!({"a": {"b": "d", "c": null}}),
            json!({"a": {"b": "d"}}),
        );
        check(
            json!({"a": [{"b": "c"}]}),
            json!({"a": [1]}),
            json!({"a": [1]}),
        );
        check(
            json!({"e": null}),
            json!({"a": 1}),
            json!({"e": null, "a": 1}),
        );
        check(
            json!({"a": "foo"}),
            json!({"a": {"bb": {"ccc": null}}}),
            json!({"a": {"bb": {}}}),
        );
    }
}
