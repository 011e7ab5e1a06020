//! A CKAN-compatible read API (R-PLT-3) under `/api/3/action/` (and CKAN's
//! unversioned `/api/action/`), so tools built for CKAN — the `ckanapi`
//! client, CKAN harvesters — read the catalogue unchanged.
//!
//! Actions: `status_show`, `package_list`, `package_search`, `package_show`,
//! `resource_show`, `organization_list`, `organization_show`, `group_list`,
//! `tag_list`, `help_show`. Parameters come from the query string (GET) or a
//! JSON or form body (POST), as in CKAN. Answers use CKAN's envelope
//! (`help`, `success`, `result` / `error`) and field names; errors use
//! CKAN's types and statuses: an unknown action is a 400 `Bad request`
//! string, bad parameters a 409 `Validation Error` naming the field, a
//! malformed `q`/`fq`/`sort` a 400 `Search Query Error`, a missing entry a
//! 404 `Not Found Error`.
//!
//! Mapping: a package is a catalogue entry (`name` = `id` = the dataset id),
//! an organisation is an organisation, a group is a catalogue theme, a tag is
//! a keyword. Resources are the formats the latest version is served in;
//! their URL is the governed download path — open data downloads directly,
//! anything else answers with how to ask for access. Closed entries are
//! listed (their existence is public) with no resources.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use citytrust_model::Dataset;
use citytrust_model::account::Organization;
use citytrust_model::catalogue::{Spectrum, Theme, ValueChainRole};
use citytrust_service::interop::ContentSummary;
use citytrust_service::search::{FacetCount, MAX_WINDOW};
use citytrust_service::{SearchQuery, ServiceError, SortOrder};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::dcat::{FORMATS, access_right, download_url, formats_of};

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/3/action/{action}", get(action).post(action))
        .route("/api/action/{action}", get(action).post(action))
        .route("/api/3", get(api_version))
}

/// The version of CKAN's action API this answers as.
const CKAN_API_VERSION: &str = "2.10.4";

async fn api_version() -> Response {
    json_response(StatusCode::OK, &json!({ "version": 3 }))
}

/// A failure, in CKAN's terms.
#[derive(Debug)]
enum CkanError {
    /// 409 `Validation Error`: messages by field.
    Validation(Vec<(String, String)>),
    /// 400 `Search Query Error`.
    SearchQuery(String),
    /// 404 `Not Found Error`.
    NotFound(String),
    /// 500 `Internal Server Error` (the cause is logged, never shown).
    Internal,
}

impl From<ServiceError> for CkanError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => CkanError::NotFound(what),
            other => {
                tracing::error!(error = %other, "CKAN API action failed");
                CkanError::Internal
            }
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> CkanError {
    CkanError::Validation(vec![(field.to_string(), message.into())])
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=utf-8"),
    );
    res
}

const ACTIONS: [&str; 10] = [
    "status_show",
    "package_list",
    "package_search",
    "package_show",
    "resource_show",
    "organization_list",
    "organization_show",
    "group_list",
    "tag_list",
    "help_show",
];

/// One CKAN action (GET with query parameters; POST with a JSON body works the same).
#[utoipa::path(get, path = "/api/3/action/{action}", tag = "ckan",
    params(
        ("action" = String, Path, description = "The action", example = "package_search",
            pattern = "^(status_show|package_list|package_search|package_show|resource_show|organization_list|organization_show|group_list|tag_list|help_show)$"),
        ("q" = Option<String>, Query, description = "package_search: words, and field:value filters"),
        ("fq" = Option<String>, Query, description = "package_search: field:value filters (organization, owner_org, groups, tags, license_id, name, id, spectrum, personal_data)"),
        ("rows" = Option<i64>, Query, description = "package_search: results per answer (at most 1000)"),
        ("start" = Option<i64>, Query, description = "package_search: results to skip"),
        ("sort" = Option<String>, Query, description = "package_search: score desc | title_string asc | metadata_modified desc"),
        ("id" = Option<String>, Query, description = "package_show, resource_show, organization_show: what to show"),
        ("all_fields" = Option<bool>, Query, description = "organization_list, group_list, tag_list: whole records instead of names"),
    ),
    responses(
        (status = 200, description = "CKAN's envelope: help, success (true), result", body = serde_json::Value, content_type = "application/json"),
        (status = 400, description = "Unknown action (a 'Bad request' string), unreadable data, or a Search Query Error", body = serde_json::Value, content_type = "application/json"),
        (status = 404, description = "Not Found Error", body = serde_json::Value, content_type = "application/json"),
        (status = 409, description = "Validation Error: messages by field", body = serde_json::Value, content_type = "application/json"),
    ))]
pub(crate) async fn action(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if !ACTIONS.contains(&name.as_str()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &Value::String(format!("Bad request - Action name not known: {name}")),
        );
    }
    let base = crate::base_url(&state);
    let help = format!("{base}/api/3/action/help_show?name={name}");
    let params = match request_data(&method, &headers, query.as_deref(), &body) {
        Ok(p) => p,
        Err(message) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &Value::String(format!("Bad request - JSON Error: {message}")),
            );
        }
    };
    let cx = Cx {
        state: &state,
        base: &base,
        params: Params(params),
    };
    let result = match name.as_str() {
        "status_show" => cx.status_show(),
        "package_list" => cx.package_list().await,
        "package_search" => cx.package_search().await,
        "package_show" => cx.package_show().await,
        "resource_show" => cx.resource_show().await,
        "organization_list" => cx.organization_list().await,
        "organization_show" => cx.organization_show().await,
        "group_list" => cx.group_list(),
        "tag_list" => cx.tag_list(),
        _ => cx.help_show(),
    };
    match result {
        Ok(result) => json_response(
            StatusCode::OK,
            &json!({ "help": help, "success": true, "result": result }),
        ),
        Err(e) => {
            let (status, error) = match e {
                CkanError::Validation(fields) => {
                    let mut error = Map::new();
                    for (field, message) in fields {
                        match error.get_mut(&field) {
                            Some(Value::Array(list)) => list.push(Value::String(message)),
                            _ => {
                                error.insert(field, json!([message]));
                            }
                        }
                    }
                    error.insert("__type".into(), json!("Validation Error"));
                    (StatusCode::CONFLICT, Value::Object(error))
                }
                CkanError::SearchQuery(message) => (
                    StatusCode::BAD_REQUEST,
                    json!({ "__type": "Search Query Error", "message": format!("Search Query is invalid: {message}") }),
                ),
                CkanError::NotFound(what) => (
                    StatusCode::NOT_FOUND,
                    json!({ "__type": "Not Found Error", "message": format!("Not found: {what}") }),
                ),
                CkanError::Internal => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "__type": "Internal Server Error", "message": "Internal Server Error" }),
                ),
            };
            json_response(
                status,
                &json!({ "help": help, "success": false, "error": error }),
            )
        }
    }
}

/// The action's parameters: the query string for GET; for POST a JSON
/// object, or a form (CKAN accepts both). `callback` (JSONP) is dropped.
fn request_data(
    method: &Method,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    let mut add_pairs = |text: &[u8]| {
        for (k, v) in form_urlencoded::parse(text) {
            let v = Value::String(v.into_owned());
            match map.get_mut(k.as_ref()) {
                Some(Value::Array(list)) => list.push(v),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, v]);
                }
                None => {
                    map.insert(k.into_owned(), v);
                }
            }
        }
    };
    if *method == Method::GET || body.iter().all(u8::is_ascii_whitespace) {
        add_pairs(query.unwrap_or("").as_bytes());
    } else {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if form {
            add_pairs(body);
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(obj)) => map = obj,
                Ok(other) => {
                    return Err(format!(
                        "Request data JSON decoded to {other} but it needs to be a dictionary."
                    ));
                }
                Err(e) => return Err(format!("Error decoding JSON data: {e}")),
            }
        }
    }
    map.remove("callback");
    Ok(map)
}

struct Params(Map<String, Value>);

impl Params {
    /// Refuse parameters the action does not know (CKAN clients send only known ones).
    fn only(&self, known: &[&str]) -> Result<(), CkanError> {
        let unknown: Vec<(String, String)> = self
            .0
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                (
                    k.clone(),
                    format!("Unknown parameter; this action takes: {}", known.join(", ")),
                )
            })
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(CkanError::Validation(unknown))
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, CkanError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(invalid(name, "Must be a string")),
        }
    }

    fn required(&self, name: &str) -> Result<String, CkanError> {
        match self.text(name)? {
            Some(s) if !s.trim().is_empty() => Ok(s),
            _ => Err(invalid(name, "Missing value")),
        }
    }

    /// A natural number (CKAN's `natural_number_validator`), or the default.
    fn natural(&self, name: &str, default: usize) -> Result<usize, CkanError> {
        let n: i64 = match self.0.get(name) {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| invalid(name, "Invalid integer"))?,
            Some(Value::String(s)) if s.trim().is_empty() => return Ok(default),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map_err(|_| invalid(name, "Invalid integer"))?,
            Some(_) => return Err(invalid(name, "Invalid integer")),
        };
        usize::try_from(n).map_err(|_| invalid(name, "Must be a natural number"))
    }

    fn boolean(&self, name: &str) -> Result<bool, CkanError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" | "" => Ok(false),
                _ => Err(invalid(name, "Must be true or false")),
            },
            Some(Value::Number(n)) => Ok(n.as_i64() == Some(1)),
            Some(_) => Err(invalid(name, "Must be true or false")),
        }
    }
}

struct Cx<'a> {
    state: &'a AppState,
    base: &'a str,
    params: Params,
}

/// CKAN's timestamps: UTC without a zone suffix.
fn ckan_time(t: &str) -> String {
    t.trim_end_matches('Z').to_string()
}

fn theme_title(t: Theme) -> String {
    let s = t.as_str();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

impl Cx<'_> {
    async fn organizations(&self) -> Result<HashMap<String, Organization>, CkanError> {
        Ok(self.state.service.organizations_by_id().await?)
    }

    fn organization_dict(&self, o: &Organization, package_count: Option<usize>) -> Value {
        let mut v = json!({
            "id": o.id,
            "name": o.id,
            "title": o.name,
            "display_name": o.name,
            "description": o.description,
            "type": "organization",
            "is_organization": true,
            "state": "active",
            "approval_status": "approved",
            "image_url": "",
            "image_display_url": "",
            "created": ckan_time(&o.created_at),
        });
        if let Some(n) = package_count {
            v["package_count"] = json!(n);
        }
        v
    }

    fn group_dict(&self, t: Theme, package_count: Option<usize>) -> Value {
        let title = theme_title(t);
        let mut v = json!({
            "id": t.as_str(),
            "name": t.as_str(),
            "title": title,
            "display_name": title,
            "description": format!("Datasets on the theme '{title}'."),
            "type": "group",
            "is_organization": false,
            "state": "active",
            "approval_status": "approved",
            "image_url": "",
            "image_display_url": "",
        });
        if let Some(n) = package_count {
            v["package_count"] = json!(n);
        }
        v
    }

    fn resource_dicts(&self, d: &Dataset, content: Option<&ContentSummary>) -> Vec<Value> {
        let m = &d.metadata;
        let Some(c) = content.filter(|_| m.spectrum != Spectrum::Closed) else {
            return Vec::new();
        };
        let open = m.spectrum == Spectrum::Open;
        formats_of(c)
            .enumerate()
            .map(|(position, (format, _, media_type, title))| {
                let description = if open {
                    format!("Version {} of the data as {title}: open data, downloads directly.", c.version)
                } else {
                    format!(
                        "Version {} of the data as {title}. Not open data: reads need a sign-in, a stated \
                         purpose and an agreement; ask for access at {}/requests/new?dataset={}",
                        c.version, self.base, d.id
                    )
                };
                let parquet = *format == "parquet";
                json!({
                    "id": format!("{}.{format}", d.id),
                    "package_id": d.id,
                    "name": format!("{} ({title})", m.title),
                    "description": description,
                    "format": title,
                    "mimetype": media_type,
                    "url": download_url(self.base, &d.id, format),
                    "url_type": Value::Null,
                    "size": if parquet { json!(c.bytes) } else { Value::Null },
                    "hash": if parquet { format!("sha256:{}", c.sha256) } else { String::new() },
                    "created": ckan_time(&c.published_at),
                    "last_modified": ckan_time(&c.published_at),
                    "metadata_modified": ckan_time(&c.published_at),
                    "position": position,
                    "state": "active",
                    "datastore_active": false,
                    "cache_url": Value::Null,
                    "access_rights": access_right(m.spectrum).1,
                })
            })
            .collect()
    }

    fn package_dict(
        &self,
        d: &Dataset,
        organizations: &HashMap<String, Organization>,
        content: Option<&ContentSummary>,
    ) -> Value {
        let m = &d.metadata;
        let resources = self.resource_dicts(d, content);
        let tags: Vec<Value> = m
            .keywords
            .iter()
            .map(|k| {
                json!({ "id": k, "name": k, "display_name": k, "state": "active", "vocabulary_id": Value::Null })
            })
            .collect();
        let groups: Vec<Value> = m.themes.iter().map(|t| self.group_dict(*t, None)).collect();
        let organization = organizations
            .get(&m.owner_organization_id)
            .map(|o| self.organization_dict(o, None))
            .unwrap_or(Value::Null);
        let author = m
            .roles
            .iter()
            .find(|r| r.role == ValueChainRole::Creator)
            .and_then(|r| organizations.get(&r.organization_id))
            .map(|o| o.name.clone());
        let (right, right_label) = access_right(m.spectrum);
        let mut extras = vec![
            ("spectrum", m.spectrum.as_str().to_string()),
            (
                "access_rights",
                format!("http://publications.europa.eu/resource/authority/access-right/{right}"),
            ),
            ("personal_data", m.personal_data.to_string()),
            ("update_frequency", json_str(&m.update_frequency)),
            ("framework_class", json_str(&m.framework_class)),
            ("publication_status", json_str(&m.publication_status)),
            ("dcat_ap", format!("{}/datasets/{}.ttl", self.base, d.id)),
        ];
        if let Some(p) = &m.temporal_coverage {
            extras.push(("temporal_start", p.start.clone()));
            if let Some(end) = &p.end {
                extras.push(("temporal_end", end.clone()));
            }
        }
        if let Some(c) = &m.spatial_coverage {
            // ckanext-spatial's conventions: the area in words, and as GeoJSON.
            extras.push(("spatial_text", c.name.clone()));
            if let Some(uri) = &c.uri {
                extras.push(("spatial_uri", uri.clone()));
            }
            if let Some([w, s, e, n]) = c.bounds() {
                extras.push((
                    "spatial",
                    json!({"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]})
                        .to_string(),
                ));
            }
        }
        if let Some(derivation) = &m.derivation {
            let inputs: Vec<&str> = derivation
                .inputs
                .iter()
                .map(|i| i.dataset_id.as_str())
                .collect();
            extras.push(("derived_from", inputs.join(",")));
        }
        json!({
            "id": d.id,
            "name": d.id,
            "title": m.title,
            "notes": m.description,
            "type": "dataset",
            "state": "active",
            "private": false,
            "isopen": m.spectrum == Spectrum::Open,
            "access_rights": right_label,
            "url": m.location.as_ref().and_then(|l| l.url.clone()).unwrap_or_default(),
            "author": author,
            "author_email": Value::Null,
            "maintainer": m.contact.as_ref().map(|c| c.name.clone()),
            "maintainer_email": m.contact.as_ref().and_then(|c| c.email.clone()),
            "license_id": m.licence.as_ref().map(|l| l.id.clone()),
            "license_title": m.licence.as_ref().map(|l| l.title.clone()),
            "license_url": m.licence.as_ref().and_then(|l| l.url.clone()),
            "owner_org": m.owner_organization_id,
            "organization": organization,
            "groups": groups,
            "tags": tags,
            "num_tags": m.keywords.len(),
            "resources": resources,
            "num_resources": resources.len(),
            "extras": extras.into_iter().map(|(k, v)| json!({ "key": k, "value": v })).collect::<Vec<_>>(),
            "version": content.filter(|_| m.spectrum != Spectrum::Closed).map(|c| c.version.to_string()),
            "metadata_created": ckan_time(&d.created_at),
            "metadata_modified": ckan_time(&d.updated_at),
            "relationships_as_subject": [],
            "relationships_as_object": [],
        })
    }

    async fn packages(&self, datasets: &[Dataset]) -> Result<Vec<Value>, CkanError> {
        let organizations = self.organizations().await?;
        let ids: Vec<String> = datasets.iter().map(|d| d.id.clone()).collect();
        let content = self.state.service.content_summaries(&ids).await?;
        Ok(datasets
            .iter()
            .map(|d| self.package_dict(d, &organizations, content.get(&d.id)))
            .collect())
    }

    fn status_show(&self) -> Result<Value, CkanError> {
        self.params.only(&[])?;
        Ok(json!({
            "site_title": "CityTrust",
            "site_description": "A civic data trust: the city's data catalogue, governed sharing and a public transparency log.",
            "site_url": self.base,
            "ckan_version": CKAN_API_VERSION,
            "citytrust_version": env!("CARGO_PKG_VERSION"),
            "locale_default": "en",
            "extensions": [],
            "dcat_catalog": format!("{}/catalog.ttl", self.base),
        }))
    }

    fn search(&self, q: &SearchQuery) -> Result<citytrust_service::SearchResults, CkanError> {
        Ok(self.state.service.search(q)?)
    }

    async fn package_list(&self) -> Result<Value, CkanError> {
        self.params.only(&["limit", "offset"])?;
        let offset = self.params.natural("offset", 0)?;
        let limit = self.params.natural("limit", MAX_WINDOW)?.min(MAX_WINDOW);
        let r = self.search(&SearchQuery {
            sort: SortOrder::Title,
            window: Some((offset, limit)),
            ..SearchQuery::default()
        })?;
        let mut ids: Vec<String> = r.items.into_iter().map(|d| d.id).collect();
        ids.sort();
        Ok(json!(ids))
    }

    async fn package_search(&self) -> Result<Value, CkanError> {
        self.params.only(&[
            "q",
            "fq",
            "fq_list",
            "rows",
            "start",
            "sort",
            "facet",
            "facet.field",
            "facet.limit",
            "facet.mincount",
            "include_private",
            "include_drafts",
            "include_deleted",
            "use_default_schema",
        ])?;
        let rows = self.params.natural("rows", 10)?.min(MAX_WINDOW);
        let start = self.params.natural("start", 0)?;
        let facet_limit = match self.params.0.get("facet.limit") {
            Some(Value::String(s)) if s.trim() == "-1" => usize::MAX,
            Some(Value::Number(n)) if n.as_i64() == Some(-1) => usize::MAX,
            _ => self.params.natural("facet.limit", 50)?,
        };
        let mincount = self.params.natural("facet.mincount", 1)?.max(1);
        let facet_on = match self.params.0.get("facet") {
            None => true,
            Some(_) => self.params.boolean("facet")?,
        };
        let fields: Vec<String> = match self.params.text("facet.field")? {
            None => Vec::new(),
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Array(list)) => list
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(invalid("facet.field", "Must be a JSON list of field names")),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(invalid(
                        "facet.field",
                        "Must be a JSON list of field names, e.g. [\"organization\",\"tags\"]",
                    ));
                }
            },
        };
        for f in &fields {
            if !FACET_FIELDS.contains(&f.as_str()) {
                return Err(invalid(
                    "facet.field",
                    format!(
                        "'{f}' cannot be faceted; use one of: {}",
                        FACET_FIELDS.join(", ")
                    ),
                ));
            }
        }
        let mut query = SearchQuery {
            count_keywords: fields.iter().any(|f| f == "tags" || f == "license_id"),
            window: Some((start, rows)),
            ..SearchQuery::default()
        };
        let mut filters = Filters::default();
        let mut text = Vec::new();
        if let Some(q) = self.params.text("q")? {
            for clause in parse_clauses(&q, "q")? {
                match clause {
                    Clause::Text(t) => text.push(t),
                    Clause::Field(field, value) => filters.add(&field, value, "q")?,
                }
            }
        }
        let mut fq_texts: Vec<String> = self.params.text("fq")?.into_iter().collect();
        match self.params.0.get("fq_list") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for v in list {
                    match v {
                        Value::String(s) => fq_texts.push(s.clone()),
                        _ => return Err(invalid("fq_list", "Must be a list of strings")),
                    }
                }
            }
            Some(Value::String(s)) => fq_texts.push(s.clone()),
            Some(_) => return Err(invalid("fq_list", "Must be a list of strings")),
        }
        for fq in &fq_texts {
            for clause in parse_clauses(fq, "fq")? {
                match clause {
                    Clause::Field(field, value) => filters.add(&field, value, "fq")?,
                    Clause::Text(t) => {
                        return Err(CkanError::SearchQuery(format!(
                            "fq takes field:value filters, and '{t}' is not one"
                        )));
                    }
                }
            }
        }
        query.text = text.join(" ");
        filters.apply(&mut query)?;
        let sort_text = self.params.text("sort")?;
        query.sort = match sort_text.as_deref().map(str::trim) {
            None | Some("") => SortOrder::Relevance,
            Some(s) => parse_sort(s)?,
        };
        let results = if filters.impossible {
            citytrust_service::SearchResults {
                items: Vec::new(),
                total: 0,
                facets: Default::default(),
            }
        } else {
            self.search(&query)?
        };
        let packages = self.packages(&results.items).await?;
        let mut facets = Map::new();
        let mut search_facets = Map::new();
        if facet_on {
            for f in &fields {
                let counts: &[FacetCount] = match f.as_str() {
                    "organization" => &results.facets.organization,
                    "groups" => &results.facets.theme,
                    "tags" => &results.facets.keyword,
                    "license_id" => &results.facets.licence,
                    _ => &results.facets.spectrum,
                };
                let items: Vec<&FacetCount> = counts
                    .iter()
                    .filter(|c| c.count >= mincount)
                    .take(facet_limit)
                    .collect();
                facets.insert(
                    f.clone(),
                    Value::Object(
                        items
                            .iter()
                            .map(|c| (c.value.clone(), json!(c.count)))
                            .collect(),
                    ),
                );
                search_facets.insert(
                    f.clone(),
                    json!({
                        "title": f,
                        "items": items.iter().map(|c| json!({
                            "name": c.value, "display_name": c.label, "count": c.count
                        })).collect::<Vec<_>>(),
                    }),
                );
            }
        }
        Ok(json!({
            "count": results.total,
            "sort": sort_text.unwrap_or_else(|| "score desc, metadata_modified desc".into()),
            "facets": facets,
            "search_facets": search_facets,
            "results": packages,
        }))
    }

    async fn package_show(&self) -> Result<Value, CkanError> {
        self.params.only(&[
            "id",
            "name_or_id",
            "use_default_schema",
            "include_tracking",
            "include_plugin_data",
        ])?;
        let id = match self.params.text("id")? {
            Some(id) if !id.trim().is_empty() => id,
            _ => self
                .params
                .required("name_or_id")
                .map_err(|_| invalid("id", "Missing value"))?,
        };
        let d = self.state.service.get_dataset(id.trim()).await?;
        let mut packages = self.packages(std::slice::from_ref(&d)).await?;
        Ok(packages.pop().unwrap_or(Value::Null))
    }

    async fn resource_show(&self) -> Result<Value, CkanError> {
        self.params.only(&["id", "include_tracking"])?;
        let id = self.params.required("id")?;
        let not_found = || CkanError::NotFound(format!("resource '{id}'"));
        let (dataset_id, format) = id.rsplit_once('.').ok_or_else(not_found)?;
        if !FORMATS.iter().any(|f| f.0 == format) {
            return Err(not_found());
        }
        let d = match self.state.service.get_dataset(dataset_id).await {
            Ok(d) => d,
            Err(ServiceError::NotFound(_)) => return Err(not_found()),
            Err(e) => return Err(e.into()),
        };
        let content = self
            .state
            .service
            .content_summaries(std::slice::from_ref(&d.id))
            .await?;
        self.resource_dicts(&d, content.get(&d.id))
            .into_iter()
            .find(|r| r["id"] == id.as_str())
            .ok_or_else(not_found)
    }

    async fn organization_list(&self) -> Result<Value, CkanError> {
        self.params.only(&[
            "all_fields",
            "sort",
            "limit",
            "offset",
            "organizations",
            "include_dataset_count",
            "include_extras",
            "include_tags",
            "include_groups",
            "include_users",
            "type",
        ])?;
        let all_fields = self.params.boolean("all_fields")?;
        let offset = self.params.natural("offset", 0)?;
        let limit = self.params.natural("limit", MAX_WINDOW)?;
        let wanted: Option<Vec<String>> = match self.params.0.get("organizations") {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            Some(Value::String(s)) => Some(s.split(',').map(|s| s.trim().to_string()).collect()),
            Some(_) => return Err(invalid("organizations", "Must be a list of names")),
        };
        let counts = self.counts_by(|f| &f.organization)?;
        let mut orgs: Vec<Organization> = self.organizations().await?.into_values().collect();
        if let Some(w) = &wanted {
            orgs.retain(|o| w.contains(&o.id));
        }
        sort_named(
            &mut orgs,
            self.params.text("sort")?.as_deref(),
            |o| (o.id.clone(), o.name.clone()),
            &counts,
        )?;
        let page = orgs.into_iter().skip(offset).take(limit);
        Ok(if all_fields {
            json!(
                page.map(
                    |o| self.organization_dict(&o, Some(counts.get(&o.id).copied().unwrap_or(0)))
                )
                .collect::<Vec<_>>()
            )
        } else {
            json!(page.map(|o| o.id).collect::<Vec<_>>())
        })
    }

    async fn organization_show(&self) -> Result<Value, CkanError> {
        self.params.only(&[
            "id",
            "include_datasets",
            "include_dataset_count",
            "include_extras",
            "include_users",
            "include_groups",
            "include_tags",
            "include_followers",
        ])?;
        let id = self.params.required("id")?;
        let organizations = self.organizations().await?;
        let o = organizations
            .get(id.trim())
            .ok_or_else(|| CkanError::NotFound(format!("organization '{id}'")))?;
        let r = self.search(&SearchQuery {
            organization: Some(o.id.clone()),
            sort: SortOrder::Title,
            window: Some((0, MAX_WINDOW)),
            ..SearchQuery::default()
        })?;
        let mut dict = self.organization_dict(o, Some(r.total));
        if self.params.boolean("include_datasets")? {
            dict["packages"] = json!(self.packages(&r.items).await?);
        }
        Ok(dict)
    }

    fn group_list(&self) -> Result<Value, CkanError> {
        self.params.only(&[
            "all_fields",
            "sort",
            "limit",
            "offset",
            "groups",
            "include_dataset_count",
            "type",
        ])?;
        let all_fields = self.params.boolean("all_fields")?;
        let offset = self.params.natural("offset", 0)?;
        let limit = self.params.natural("limit", MAX_WINDOW)?;
        let counts = self.counts_by(|f| &f.theme)?;
        let mut themes: Vec<Theme> = Theme::ALL.to_vec();
        let titles: Vec<(String, String)> = themes
            .iter()
            .map(|t| (t.as_str().to_string(), theme_title(*t)))
            .collect();
        let mut order: Vec<usize> = (0..themes.len()).collect();
        sort_named(
            &mut order,
            self.params.text("sort")?.as_deref(),
            |i| titles[*i].clone(),
            &counts,
        )?;
        themes = order.into_iter().map(|i| themes[i]).collect();
        let page = themes.into_iter().skip(offset).take(limit);
        Ok(if all_fields {
            json!(page
                .map(|t| self.group_dict(t, Some(counts.get(t.as_str()).copied().unwrap_or(0))))
                .collect::<Vec<_>>())
        } else {
            json!(page.map(|t| t.as_str()).collect::<Vec<_>>())
        })
    }

    fn tag_list(&self) -> Result<Value, CkanError> {
        self.params
            .only(&["query", "all_fields", "vocabulary_id"])?;
        let all_fields = self.params.boolean("all_fields")?;
        let query = self.params.text("query")?.map(|q| q.to_lowercase());
        let r = self.search(&SearchQuery {
            count_keywords: true,
            window: Some((0, 0)),
            ..SearchQuery::default()
        })?;
        let mut tags: Vec<String> = r
            .facets
            .keyword
            .into_iter()
            .map(|c| c.value)
            .filter(|t| {
                query
                    .as_deref()
                    .is_none_or(|q| t.to_lowercase().contains(q))
            })
            .collect();
        tags.sort();
        Ok(if all_fields {
            json!(tags
                .iter()
                .map(|t| json!({ "id": t, "name": t, "display_name": t, "vocabulary_id": Value::Null }))
                .collect::<Vec<_>>())
        } else {
            json!(tags)
        })
    }

    fn help_show(&self) -> Result<Value, CkanError> {
        self.params.only(&["name"])?;
        let name = self.params.required("name")?;
        let text = match name.as_str() {
            "status_show" => {
                "Return the site's title, URL and the CKAN API version this answers as."
            }
            "package_list" => "Return the ids of all datasets. Parameters: limit, offset.",
            "package_search" => {
                "Search datasets. Parameters: q (words, and field:value filters), fq (field:value filters \
                 on organization, owner_org, groups, tags, license_id, name, id, spectrum, personal_data), \
                 rows (at most 1000), start, sort (score desc | title_string asc | metadata_modified desc), \
                 facet.field (a JSON list of organization, groups, tags, license_id, spectrum), \
                 facet.limit, facet.mincount."
            }
            "package_show" => "Return one dataset. Parameter: id.",
            "resource_show" => "Return one resource. Parameter: id (<dataset>.<format>).",
            "organization_list" => {
                "Return the organisations. Parameters: all_fields, sort, limit, offset."
            }
            "organization_show" => "Return one organisation. Parameters: id, include_datasets.",
            "group_list" => {
                "Return the groups (catalogue themes). Parameters: all_fields, sort, limit, offset."
            }
            "tag_list" => "Return the tags (keywords). Parameters: query, all_fields.",
            "help_show" => "Return the documentation of an action. Parameter: name.",
            _ => return Err(CkanError::NotFound(format!("action '{name}'"))),
        };
        Ok(Value::String(text.into()))
    }

    /// Entries per facet value over the whole catalogue.
    fn counts_by(
        &self,
        facet: impl Fn(&citytrust_service::search::Facets) -> &Vec<FacetCount>,
    ) -> Result<HashMap<String, usize>, CkanError> {
        let r = self.search(&SearchQuery {
            window: Some((0, 0)),
            ..SearchQuery::default()
        })?;
        Ok(facet(&r.facets)
            .iter()
            .map(|c| (c.value.clone(), c.count))
            .collect())
    }
}

/// Fields `facet.field` may name.
const FACET_FIELDS: [&str; 5] = ["organization", "groups", "tags", "license_id", "spectrum"];

/// Fields `q` and `fq` may filter on.
const FILTER_FIELDS: [&str; 9] = [
    "organization",
    "owner_org",
    "groups",
    "tags",
    "license_id",
    "name",
    "id",
    "spectrum",
    "personal_data",
];

/// CKAN's sort strings, as far as the catalogue can order.
fn parse_sort(s: &str) -> Result<SortOrder, CkanError> {
    let first = s.split(',').next().unwrap_or("").trim();
    let mut words = first.split_whitespace();
    let field = words.next().unwrap_or("");
    let dir = words.next().unwrap_or("asc").to_ascii_lowercase();
    match (field, dir.as_str(), words.next()) {
        ("score" | "rank", "desc", None) => Ok(SortOrder::Relevance),
        ("title_string" | "title" | "name", "asc", None) => Ok(SortOrder::Title),
        ("metadata_modified", "desc", None) => Ok(SortOrder::Updated),
        _ => Err(CkanError::SearchQuery(format!(
            "Invalid \"sort\" parameter '{s}': use score desc, title_string asc, name asc or metadata_modified desc"
        ))),
    }
}

#[derive(Debug, PartialEq)]
enum Clause {
    Text(String),
    Field(String, String),
}

/// Splits `q` or `fq` into words and `field:value` / `field:"quoted value"`
/// clauses (a leading `+` is allowed; `AND` is implied). Anything it cannot
/// read is a Search Query Error naming the position.
fn parse_clauses(input: &str, param: &str) -> Result<Vec<Clause>, CkanError> {
    let bad = |at: usize, what: &str| {
        CkanError::SearchQuery(format!("{param} at character {}: {what}", at + 1))
    };
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '-' || c == '!' {
            return Err(bad(at, "negative filters are not supported"));
        }
        if c == '(' || c == ')' || c == '{' || c == '[' {
            return Err(bad(
                at,
                "grouping and ranges are not supported; use field:value",
            ));
        }
        let start = if c == '+' { i + 1 } else { i };
        // A word, possibly field:value.
        let mut j = start;
        let mut field_end = None;
        while j < chars.len() && !chars[j].1.is_whitespace() {
            if chars[j].1 == ':' && field_end.is_none() {
                field_end = Some(j);
                break;
            }
            if chars[j].1 == '"' {
                return Err(bad(chars[j].0, "a quote must follow field:"));
            }
            j += 1;
        }
        let word: String = chars[start..j].iter().map(|(_, c)| c).collect();
        match field_end {
            None => {
                i = j;
                if word.is_empty() {
                    return Err(bad(at, "'+' must be followed by a filter"));
                }
                if word == "AND" || word == "&&" {
                    continue;
                }
                if word == "OR" || word == "||" || word == "NOT" {
                    return Err(bad(
                        at,
                        "OR and NOT are not supported; clauses are combined with AND",
                    ));
                }
                if word == "*:*" {
                    continue;
                }
                out.push(Clause::Text(word));
            }
            Some(colon) => {
                if word.is_empty() {
                    return Err(bad(chars[colon].0, "a field name must come before ':'"));
                }
                let mut k = colon + 1;
                let value: String = if k < chars.len() && chars[k].1 == '"' {
                    let open = chars[k].0;
                    k += 1;
                    let mut v = String::new();
                    loop {
                        match chars.get(k) {
                            None => return Err(bad(open, "this quote is never closed")),
                            Some((_, '\\')) => {
                                if let Some((_, next)) = chars.get(k + 1) {
                                    v.push(*next);
                                }
                                k += 2;
                            }
                            Some((_, '"')) => {
                                k += 1;
                                break;
                            }
                            Some((_, ch)) => {
                                v.push(*ch);
                                k += 1;
                            }
                        }
                    }
                    v
                } else {
                    let vstart = k;
                    while k < chars.len() && !chars[k].1.is_whitespace() {
                        if chars[k].1 == '"' || chars[k].1 == ':' {
                            return Err(bad(
                                chars[k].0,
                                "put a value with this character in quotes",
                            ));
                        }
                        k += 1;
                    }
                    chars[vstart..k].iter().map(|(_, c)| c).collect()
                };
                if value.is_empty() {
                    return Err(bad(chars[colon].0, &format!("'{word}:' has no value")));
                }
                if word == "*" && value == "*" {
                    i = k;
                    continue;
                }
                out.push(Clause::Field(word, value));
                i = k;
            }
        }
    }
    Ok(out)
}

/// The filters of a search, gathered from `q` and `fq`.
#[derive(Default)]
struct Filters {
    organization: Option<String>,
    theme: Option<Theme>,
    keywords: Vec<String>,
    licence: Option<String>,
    id: Option<String>,
    spectrum: Option<Spectrum>,
    personal_data: Option<bool>,
    /// Two different values for a field that has one: nothing can match.
    impossible: bool,
}

impl Filters {
    fn add(&mut self, field: &str, value: String, param: &str) -> Result<(), CkanError> {
        fn set<T: PartialEq>(slot: &mut Option<T>, v: T, impossible: &mut bool) {
            match slot {
                Some(existing) if *existing != v => *impossible = true,
                _ => *slot = Some(v),
            }
        }
        match field {
            "organization" | "owner_org" => {
                set(&mut self.organization, value, &mut self.impossible)
            }
            "groups" => match Theme::parse(&value) {
                Some(t) => set(&mut self.theme, t, &mut self.impossible),
                None => self.impossible = true,
            },
            "tags" => self.keywords.push(value),
            "license_id" => set(&mut self.licence, value, &mut self.impossible),
            "name" | "id" => set(&mut self.id, value, &mut self.impossible),
            "spectrum" => match Spectrum::parse(&value) {
                Some(s) => set(&mut self.spectrum, s, &mut self.impossible),
                None => {
                    return Err(CkanError::SearchQuery(format!(
                        "{param}: '{value}' is not a spectrum class (open, shared_public, shared_group, shared_specific, closed)"
                    )));
                }
            },
            "personal_data" => match value.as_str() {
                "true" => set(&mut self.personal_data, true, &mut self.impossible),
                "false" => set(&mut self.personal_data, false, &mut self.impossible),
                _ => {
                    return Err(CkanError::SearchQuery(format!(
                        "{param}: personal_data is true or false, not '{value}'"
                    )));
                }
            },
            other => {
                return Err(CkanError::SearchQuery(format!(
                    "{param}: cannot filter on '{other}'; use one of: {}",
                    FILTER_FIELDS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Fill in the search.
    fn apply(&self, q: &mut SearchQuery) -> Result<(), CkanError> {
        q.organization = self.organization.clone();
        q.theme = self.theme;
        q.keywords = self.keywords.clone();
        q.licence = self.licence.clone();
        q.id = self.id.clone();
        q.spectrum = self.spectrum;
        q.personal_data = self.personal_data;
        Ok(())
    }
}

/// CKAN's list sorts: `name`, `title` or `package_count`, each `asc` or `desc`.
fn sort_named<T>(
    items: &mut [T],
    sort: Option<&str>,
    key: impl Fn(&T) -> (String, String),
    counts: &HashMap<String, usize>,
) -> Result<(), CkanError> {
    let sort = sort
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("title asc");
    let mut words = sort.split_whitespace();
    let field = words.next().unwrap_or("title");
    let desc = match words.next().map(str::to_ascii_lowercase).as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(_) => {
            return Err(invalid(
                "sort",
                "Use name, title or package_count, then asc or desc",
            ));
        }
    };
    match field {
        "name" => items.sort_by(|a, b| key(a).0.cmp(&key(b).0)),
        "title" => items.sort_by_key(|a| key(a).1.to_lowercase()),
        "package_count" => items.sort_by(|a, b| {
            counts
                .get(&key(a).0)
                .copied()
                .unwrap_or(0)
                .cmp(&counts.get(&key(b).0).copied().unwrap_or(0))
                .then_with(|| key(a).0.cmp(&key(b).0))
        }),
        _ => {
            return Err(invalid(
                "sort",
                "Use name, title or package_count, then asc or desc",
            ));
        }
    }
    if desc {
        items.reverse();
    }
    Ok(())
}

fn json_str<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(input: &str) -> Vec<Clause> {
        match parse_clauses(input, "fq") {
            Ok(c) => c,
            Err(e) => panic!("{input}: {e:?}"),
        }
    }

    fn error(input: &str) -> String {
        match parse_clauses(input, "fq") {
            Err(CkanError::SearchQuery(m)) => m,
            other => panic!("{input}: expected a search query error, got {other:?}"),
        }
    }

    #[test]
    fn clauses_are_words_and_field_values() {
        assert_eq!(
            fields(
                r#"air +organization:city-data-office tags:"air quality" AND license_id:CC-BY-4.0"#
            ),
            vec![
                Clause::Text("air".into()),
                Clause::Field("organization".into(), "city-data-office".into()),
                Clause::Field("tags".into(), "air quality".into()),
                Clause::Field("license_id".into(), "CC-BY-4.0".into()),
            ]
        );
        assert_eq!(fields("*:*"), vec![]);
        assert_eq!(
            fields(r#"tags:"say \"hi\"""#),
            vec![Clause::Field("tags".into(), "say \"hi\"".into())]
        );
    }

    #[test]
    fn malformed_clauses_name_the_place() {
        assert!(
            error(r#"tags:"open"#).contains("character 6: this quote is never closed"),
            "{}",
            error(r#"tags:"open"#)
        );
        assert!(error("organization:").contains("has no value"));
        assert!(error(":x").contains("field name must come before"));
        assert!(error("-tags:x").contains("negative filters"));
        assert!(error("(tags:x OR tags:y)").contains("grouping"));
        assert!(error("tags:x OR tags:y").contains("OR and NOT"));
        assert!(error("a:b:c").contains("in quotes"));
    }

    #[test]
    fn sorts_ckan_knows() {
        assert!(matches!(
            parse_sort("score desc, metadata_modified desc"),
            Ok(SortOrder::Relevance)
        ));
        assert!(matches!(
            parse_sort("title_string asc"),
            Ok(SortOrder::Title)
        ));
        assert!(matches!(
            parse_sort("metadata_modified desc"),
            Ok(SortOrder::Updated)
        ));
        assert!(matches!(
            parse_sort("popularity desc"),
            Err(CkanError::SearchQuery(_))
        ));
    }
}
