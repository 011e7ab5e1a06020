//! The server-rendered web portal: what every page shares — the router, the
//! viewer's session, page errors, forms and the `SignedForm` extractor that
//! checks every state-changing form's CSRF token — and sign-in/out. The
//! pages are in `web/` by area (catalogue, content, governance, residents,
//! participation, the log, administration).
//!
//! Pages work without JavaScript. Browser sessions ride on the `ct_session`
//! cookie (HttpOnly, SameSite=Lax, Secure unless serving plain HTTP in
//! development); every state-changing form carries the session's CSRF token,
//! and the sign-in form a double-submit token in the `ct_csrf` cookie.

mod admin_pages;
mod catalogue_pages;
pub(crate) mod charts;
mod content_pages;
mod governance_pages;
mod log_pages;
mod participation_pages;
mod project_pages;
mod resident_pages;
mod stream_pages;

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use citytrust_model::authz;
use citytrust_model::catalogue::{
    Accuracy, Completeness, Contact, Dataset, DatasetInput, FrameworkClass, Licence, Location,
    Period, PublicationStatus, Structure, UpdateFrequency,
};
use citytrust_model::federation::FederatedEntry;
use citytrust_model::{
    Actor, FieldError, NewGroup, NewOrganization, NewUser, Organization, OrganizationKind, Role,
    Spectrum, Theme, User,
};
use citytrust_service::accounts::{Session, new_form_token};
use citytrust_service::federation::FederatedQuery;
use citytrust_service::search::FacetCount;
use citytrust_service::{SearchQuery, ServiceError};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::api::SearchParams;
use crate::error::ApiError;

const SESSION_COOKIE: &str = "ct_session";
const SIGNIN_COOKIE: &str = "ct_csrf";
/// Largest form body the portal reads.
const MAX_FORM_BODY: usize = 256 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/static/style.css", get(stylesheet))
        .merge(catalogue_pages::routes())
        .merge(content_pages::routes())
        .merge(admin_pages::routes())
        .merge(governance_pages::routes())
        .merge(log_pages::routes())
        .merge(resident_pages::routes())
        .merge(participation_pages::routes())
        .merge(project_pages::routes())
        .merge(stream_pages::routes())
}

// ---- sessions -------------------------------------------------------------------

/// Who is looking at a page: a live browser session, or nobody.
pub struct Viewer(Option<Session>);

impl Viewer {
    pub(crate) fn session(&self) -> Option<&Session> {
        self.0.as_ref()
    }
    fn actor(&self) -> Actor {
        self.0
            .as_ref()
            .map(|s| s.actor.clone())
            .unwrap_or(Actor::Anonymous)
    }
    fn nav(&self, current: &'static str) -> Nav {
        match &self.0 {
            None => Nav {
                current,
                ..Nav::default()
            },
            Some(s) => Nav {
                signed_in: true,
                display_name: s.user.display_name.clone(),
                is_admin: authz::is_administrator(&s.actor),
                is_trustee: authz::may_vote(&s.actor).is_ok(),
                csrf: s.csrf_token.clone(),
                current,
            },
        }
    }
    /// The signed-in session, if the form's CSRF token matches it.
    pub(crate) fn check_form(&self, form: &Form) -> Result<&Session, PageError> {
        let Some(session) = &self.0 else {
            return Err(PageError::SignIn);
        };
        let sent = form.one("csrf");
        if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(session.csrf_token.as_bytes())) {
            return Err(PageError::page(
                StatusCode::FORBIDDEN,
                "The form had expired or did not come from this site. Go back, reload the page and try again.",
            ));
        }
        Ok(session)
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(secret) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Ok(Viewer(None));
        };
        if secret.len() > 200 {
            return Ok(Viewer(None));
        }
        Ok(Viewer(state.service.session(&secret).await.ok()))
    }
}

pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub(crate) fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("ct_invalid=; Max-Age=0"))
}

// ---- errors ---------------------------------------------------------------------

/// Why a page could not be shown.
pub enum PageError {
    /// Sign in first (redirects to the sign-in page).
    SignIn,
    Page {
        status: StatusCode,
        message: String,
    },
}

impl PageError {
    pub(crate) fn page(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError::Page {
            status,
            message: message.into(),
        }
    }
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unauthenticated
            | ServiceError::SignInToRead { .. }
            | ServiceError::ExpiredCredentials => PageError::SignIn,
            other => {
                let api = ApiError::from(other);
                PageError::Page {
                    status: api.status,
                    message: api.detail,
                }
            }
        }
    }
}

impl From<askama::Error> for PageError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "template failed");
        PageError::page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The page could not be drawn; the error has been logged.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::SignIn => Redirect::to("/signin").into_response(),
            PageError::Page { status, message } => error_page(status, message, Nav::default()),
        }
    }
}

fn error_page(status: StatusCode, message: String, nav: Nav) -> Response {
    let title = match status {
        StatusCode::NOT_FOUND => "Page not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Sign-in required",
        s if s.is_client_error() => "That did not work",
        _ => "Something went wrong",
    };
    let page = ErrorPage {
        nav,
        title: title.to_string(),
        message,
        status: status.as_u16(),
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, title).into_response(),
    }
}

/// The fallback for unknown paths: problem+json under `/api/`, a page elsewhere.
pub async fn not_found(uri: Uri, viewer: Viewer) -> Response {
    if uri.path().starts_with("/api/") {
        return ApiError::not_found(format!("'{}'", uri.path())).into_response();
    }
    error_page(
        StatusCode::NOT_FOUND,
        format!("There is no page at {}.", uri.path()),
        viewer.nav(""),
    )
}

pub(crate) type PageResult = Result<Response, PageError>;

/// A page that may carry a form's errors: 422 when it does, so clients and
/// tests can tell a refused form from a shown page.
fn render_form_page(page: &impl Template, failed: bool) -> PageResult {
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Html(page.render()?)).into_response())
}

fn render(t: &impl Template) -> PageResult {
    Ok(Html(t.render()?).into_response())
}

// ---- forms ----------------------------------------------------------------------

/// A state-changing portal form: URL-encoded, from a signed-in session, and
/// carrying that session's CSRF token (compared in constant time). The one
/// way a portal handler that changes anything gets its input, so no handler
/// can forget the check. (Sign-in, which has no session yet, checks its own
/// double-submit token; sign-out accepts a form without a session.)
pub(crate) struct SignedForm {
    viewer: Viewer,
    session: Session,
    pub(crate) form: Form,
}

impl SignedForm {
    /// The session the form came from (its token checked).
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }
    pub(crate) fn viewer(&self) -> &Viewer {
        &self.viewer
    }
}

impl axum::extract::FromRequest<AppState> for SignedForm {
    type Rejection = PageError;

    async fn from_request(
        req: axum::extract::Request,
        state: &AppState,
    ) -> Result<Self, PageError> {
        let (mut parts, body) = req.into_parts();
        let Ok(viewer) = Viewer::from_request_parts(&mut parts, state).await;
        let multipart = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("multipart/form-data"));
        let limit = if multipart {
            MAX_UPLOAD_FORM_BODY
        } else {
            MAX_FORM_BODY
        };
        let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
            PageError::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large, or did not arrive whole.",
            )
        })?;
        let form = Form::parse(&parts.headers, &body)?;
        let session = viewer.check_form(&form)?.clone();
        Ok(SignedForm {
            viewer,
            session,
            form,
        })
    }
}

/// A submitted `application/x-www-form-urlencoded` body, or a
/// `multipart/form-data` one (a form with a file); names may repeat.
pub(crate) struct Form(Vec<(String, String)>, Vec<UploadedFile>);

/// A file sent with a multipart form.
pub(crate) struct UploadedFile {
    /// The form field's name.
    pub(crate) field: String,
    /// The file's name as the browser sent it (without folders).
    pub(crate) filename: String,
    pub(crate) content_type: String,
    pub(crate) bytes: Vec<u8>,
}

/// Largest multipart form body (a file of at most 10 MiB and its fields).
const MAX_UPLOAD_FORM_BODY: usize = 10 * 1024 * 1024 + 64 * 1024;

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i] == needle[0] && hay[i..i + needle.len()] == *needle)
}

/// A form's text fields (name, value) and its files.
type FormParts = (Vec<(String, String)>, Vec<UploadedFile>);

/// A `multipart/form-data` body (RFC 7578): its text fields and its files.
fn parse_multipart(boundary: &str, body: &[u8]) -> Result<FormParts, PageError> {
    let bad = || {
        PageError::page(
            StatusCode::BAD_REQUEST,
            "The form did not arrive whole (its parts could not be read).",
        )
    };
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = Vec::new();
    let mut files = Vec::new();
    let mut at = find(body, &delimiter, 0).ok_or_else(bad)? + delimiter.len();
    loop {
        if body.get(at..at + 2) == Some(b"--") {
            break;
        }
        if body.get(at..at + 2) != Some(b"\r\n") {
            return Err(bad());
        }
        let start = at + 2;
        let end = find(body, &delimiter, start).ok_or_else(bad)?;
        // The part ends with CRLF before the next delimiter.
        let part = body
            .get(start..end.checked_sub(2).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let split = find(part, b"\r\n\r\n", 0).ok_or_else(bad)?;
        let head = std::str::from_utf8(&part[..split]).map_err(|_| bad())?;
        let content = &part[split + 4..];
        let mut name = None;
        let mut filename = None;
        let mut content_type = String::from("application/octet-stream");
        for line in head.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_lowercase();
            if key == "content-type" {
                content_type = value.trim().chars().take(100).collect();
            } else if key == "content-disposition" {
                for param in value.split(';').skip(1) {
                    if let Some((k, v)) = param.trim().split_once('=') {
                        let v = v.trim().trim_matches('"').to_string();
                        match k.trim() {
                            "name" => name = Some(v),
                            "filename" => filename = Some(v),
                            _ => {}
                        }
                    }
                }
            }
        }
        let name = name.ok_or_else(bad)?;
        match filename {
            Some(f) => files.push(UploadedFile {
                field: name,
                filename: f.rsplit(['/', '\\']).next().unwrap_or("").to_string(),
                content_type,
                bytes: content.to_vec(),
            }),
            None => fields.push((name, String::from_utf8_lossy(content).into_owned())),
        }
        at = end + delimiter.len();
    }
    Ok((fields, files))
}

impl Form {
    pub(crate) fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Form, PageError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("multipart/form-data") {
            let boundary = content_type
                .split(';')
                .filter_map(|p| p.trim().strip_prefix("boundary="))
                .next()
                .map(|b| b.trim_matches('"').to_string())
                .filter(|b| !b.is_empty() && b.len() <= 200)
                .ok_or_else(|| {
                    PageError::page(StatusCode::BAD_REQUEST, "The form names no boundary.")
                })?;
            if body.len() > MAX_UPLOAD_FORM_BODY {
                return Err(PageError::page(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "The form is too large.",
                ));
            }
            let (fields, files) = parse_multipart(&boundary, body)?;
            return Ok(Form(fields, files));
        }
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            return Err(PageError::page(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Forms must be sent URL-encoded (or as multipart, with a file).",
            ));
        }
        if body.len() > MAX_FORM_BODY {
            return Err(PageError::page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form is too large.",
            ));
        }
        Ok(Form(
            form_urlencoded::parse(body).into_owned().collect(),
            Vec::new(),
        ))
    }
    /// The file sent in field `name`, if any (an empty file input sends none).
    pub(crate) fn file(&self, name: &str) -> Option<&UploadedFile> {
        self.1
            .iter()
            .find(|f| f.field == name && !(f.filename.is_empty() && f.bytes.is_empty()))
    }
    pub(crate) fn one(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        Some(self.one(name)).filter(|s| !s.is_empty())
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    }
    /// A value exactly as typed (passwords: spaces count).
    fn secret(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }
    /// A comma-separated list.
    fn list(&self, name: &str) -> Vec<String> {
        self.one(name)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// Parse a snake_case enum value the way the JSON API does.
fn enum_value<T: DeserializeOwned>(s: &str) -> Option<T> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
}

fn enum_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Parameter `name` of a page's query string, if given.
fn query_param(raw: Option<&str>, name: &str) -> Option<String> {
    raw.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}

/// Parameter `name` as a number; anything else is a 400 page saying `why`.
fn query_number<T: std::str::FromStr>(
    raw: Option<&str>,
    name: &str,
    why: &str,
) -> Result<Option<T>, PageError> {
    query_param(raw, name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| PageError::page(StatusCode::BAD_REQUEST, why.to_string()))
        })
        .transpose()
}

fn humanise(s: &str) -> String {
    let s = s.replace('_', " ");
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => s,
    }
}

fn theme_label(t: Theme) -> String {
    humanise(t.as_str())
}

// ---- form errors ----------------------------------------------------------------

/// One error at the top of a form, linking to its field.
struct ErrorLink {
    anchor: String,
    field: String,
    message: String,
}

/// A form's errors as links to their fields, `anchor` naming each field's id.
fn error_links(errors: Vec<FieldError>, anchor: impl Fn(&str) -> String) -> Vec<ErrorLink> {
    errors
        .into_iter()
        .map(|e| ErrorLink {
            anchor: anchor(&e.field),
            field: e.field,
            message: e.message,
        })
        .collect()
}

/// Where on the form a field's error should take the reader.
fn anchor_for(field: &str) -> String {
    let head = field.split(['[', '.']).next().unwrap_or(field);
    let id = match (head, field) {
        ("owner_organization_id", _) => "owner",
        ("licence", f) if f.ends_with("url") => "licence_url",
        ("licence", f) if f.ends_with("id") => "licence_id",
        ("licence", _) => "licence_title",
        ("contact", f) if f.ends_with("email") => "contact_email",
        ("contact", _) => "contact_name",
        ("temporal_coverage", f) if f.ends_with("end") => "period_end",
        ("temporal_coverage", _) => "period_start",
        ("location", f) if f.ends_with("url") => "location_url",
        ("location", _) => "location_system",
        ("column_classes", f) if f.contains("quasi") => "quasi_columns",
        ("column_classes", _) => "personal_columns",
        ("data_states", f) => f.rsplit('.').next().unwrap_or("title"),
        ("spectrum", _) => "spectrum-open",
        ("themes", _) => "themes-first",
        (h, _) => h,
    };
    format!("f-{id}")
}

/// Split a service refusal into field errors to show on the form, or a page error.
fn form_errors(e: ServiceError) -> Result<Vec<FieldError>, PageError> {
    match e {
        ServiceError::Invalid(v) => Ok(v.0),
        ServiceError::Conflict(what) => Ok(vec![FieldError {
            field: "id".into(),
            message: format!("{what} already exists; choose another"),
        }]),
        ServiceError::Stale(why) => Ok(vec![FieldError {
            field: "title".into(),
            message: why,
        }]),
        other => Err(other.into()),
    }
}

// ---- view models ----------------------------------------------------------------

#[derive(Default, Clone)]
pub struct Nav {
    signed_in: bool,
    display_name: String,
    is_admin: bool,
    is_trustee: bool,
    csrf: String,
    current: &'static str,
}

struct Choice {
    value: String,
    label: String,
    selected: bool,
}

fn choices<T: Copy + serde::Serialize>(all: &[T], selected: &[String]) -> Vec<Choice> {
    all.iter()
        .map(|v| {
            let value = enum_text(v);
            Choice {
                label: humanise(&value),
                selected: selected.contains(&value),
                value,
            }
        })
        .collect()
}

struct Card {
    id: String,
    title: String,
    summary: String,
    owner: String,
    spectrum: String,
    spectrum_label: String,
    themes: Vec<String>,
    format: String,
    personal_data: bool,
    updated: String,
}

fn card(d: &Dataset, orgs: &BTreeMap<String, String>) -> Card {
    let m = &d.metadata;
    let mut summary: String = m.description.chars().take(220).collect();
    if m.description.chars().count() > 220 {
        summary.push('…');
    }
    Card {
        id: d.id.clone(),
        title: m.title.clone(),
        summary,
        owner: orgs
            .get(&m.owner_organization_id)
            .cloned()
            .unwrap_or_else(|| m.owner_organization_id.clone()),
        spectrum: m.spectrum.as_str().to_string(),
        spectrum_label: m.spectrum.label().to_string(),
        themes: m.themes.iter().map(|t| theme_label(*t)).collect(),
        format: m.format.clone().unwrap_or_default(),
        personal_data: m.personal_data,
        updated: d.updated_at.get(..10).unwrap_or("").to_string(),
    }
}

async fn organization_names(state: &AppState) -> Result<BTreeMap<String, String>, PageError> {
    Ok(state
        .service
        .list_organizations()
        .await?
        .into_iter()
        .map(|o| (o.id, o.name))
        .collect())
}

// ---- sign-in --------------------------------------------------------------------

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    nav: Nav,
    csrf: String,
    username: String,
    error: String,
    /// (id, name) of the city's identity services.
    providers: Vec<(String, String)>,
}

async fn signin_form(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    if viewer.0.is_some() {
        return Ok(Redirect::to("/").into_response());
    }
    signin_page(&state, String::new(), String::new(), StatusCode::OK)
}

fn signin_page(
    state: &AppState,
    username: String,
    error: String,
    status: StatusCode,
) -> PageResult {
    let csrf = new_form_token()?;
    let page = SigninPage {
        nav: Nav {
            current: "signin",
            ..Nav::default()
        },
        csrf: csrf.clone(),
        username,
        error,
        providers: state.oidc.choices(),
    };
    let mut res = (status, Html(page.render()?)).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGNIN_COOKIE, &csrf, 3600),
    );
    Ok(res)
}

async fn signin(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> PageResult {
    let form = Form::parse(&headers, &body)?;
    let sent = form.one("csrf");
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or_default();
    if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(expected.as_bytes())) {
        return signin_page(
            &state,
            form.one("username"),
            "The sign-in form had expired. Please try again.".into(),
            StatusCode::FORBIDDEN,
        );
    }
    let username = form.one("username");
    let password = form.secret("password");
    if username.is_empty() || password.is_empty() || username.len() > 64 || password.len() > 1024 {
        return signin_page(
            &state,
            username,
            "Enter your username and password.".into(),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let user = match state.service.authenticate(&username, &password).await {
        Ok(u) => u,
        Err(ServiceError::BadCredentials) => {
            return signin_page(
                &state,
                username,
                "The username or password is wrong.".into(),
                StatusCode::UNAUTHORIZED,
            );
        }
        Err(e) => return Err(e.into()),
    };
    signed_in(&state, &user).await
}

/// Start a session for `user` and go home: after a password, or an identity provider.
pub(crate) async fn signed_in(state: &AppState, user: &User) -> PageResult {
    let issued = state.service.start_session(user).await?;
    let max_age = (issued.expires_at - state.service.now())
        .whole_seconds()
        .max(0);
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &issued.secret, max_age),
    );
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(state, SIGNIN_COOKIE, "", 0));
    Ok(res)
}

async fn signout(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    let form = Form::parse(&headers, &body)?;
    if viewer.0.is_some() {
        viewer.check_form(&form)?;
        if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
            state.service.end_session(&secret).await?;
        }
    }
    let mut res = Redirect::to("/").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", 0),
    );
    Ok(res)
}

// ---- pages shared by all --------------------------------------------------------

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
    status: u16,
}

const STYLESHEET: &str = include_str!("../static/style.css");

async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multipart_form_gives_its_fields_and_files_and_a_broken_one_is_refused() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok en\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"document\"; filename=\"C:\\\\docs\\\\mou.pdf\"\r\n\
Content-Type: application/pdf\r\n\r\n%PDF\r\n--not the end\r\n--XyZ--\r\n";
        let Ok((fields, files)) = parse_multipart("XyZ", body) else {
            panic!("a well-formed body");
        };
        assert_eq!(fields, vec![("csrf".to_string(), "tok en".to_string())]);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].field, "document");
        assert_eq!(files[0].filename, "mou.pdf", "folders are dropped");
        assert_eq!(files[0].content_type, "application/pdf");
        assert_eq!(files[0].bytes, b"%PDF\r\n--not the end");
        // Cut short, or without the final delimiter: refused, nothing half-read.
        assert!(parse_multipart("XyZ", &body[..body.len() / 2]).is_err());
        assert!(
            parse_multipart(
                "XyZ",
                b"--XyZ\r\nContent-Disposition: form-data\r\n\r\nx\r\n--XyZ--"
            )
            .is_err()
        );
        assert!(parse_multipart("other", body).is_err());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ct_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn field_errors_point_at_form_controls() {
        assert_eq!(anchor_for("licence.url"), "f-licence_url");
        assert_eq!(anchor_for("owner_organization_id"), "f-owner");
        assert_eq!(anchor_for("temporal_coverage.end"), "f-period_end");
        assert_eq!(
            anchor_for("data_states.completeness.coverage"),
            "f-coverage"
        );
    }
}
