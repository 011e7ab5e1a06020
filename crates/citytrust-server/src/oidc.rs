//! Sign-in through the city's OpenID Connect providers (R-ACC-9): the
//! authorization code flow with PKCE, a nonce, and the ID token's signature
//! and claims checked here before anyone is signed in.
//!
//! Providers are configured in a JSON file (`--oidc-config`):
//!
//! ```json
//! [{"id": "city-id", "name": "City ID", "issuer": "https://id.city.example",
//!   "client_id": "citytrust", "client_secret_file": "/etc/citytrust/city-id.secret",
//!   "roles": ["resident"]}]
//! ```
//!
//! Discovery and the provider's keys are fetched when first needed (a
//! provider that is down does not stop the trust from starting) and kept for
//! an hour; an ID token signed with a key not seen yet refetches the keys.
//! Issuers and endpoints must use HTTPS, except on the loopback interface.

use std::path::Path;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use citytrust_model::Role;
use citytrust_service::ServiceError;
use citytrust_service::identity::ExternalProfile;
use serde::Deserialize;
use std::collections::BTreeMap;
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::AppState;
use crate::web::{PageError, PageResult, cookie, set_cookie, signed_in};

/// The cookie that binds a provider's answer to the browser that asked.
const LOGIN_COOKIE: &str = "ct_oidc";
/// Seconds an ID token's times may be off from ours.
const LEEWAY: i64 = 60;
/// How long discovery documents and keys are trusted before fetching again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// Largest document read from a provider.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Largest ID token accepted.
const MAX_TOKEN: usize = 16 * 1024;

/// One provider as configured.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default = "default_roles")]
    roles: Vec<Role>,
    /// Claims by which the provider vouches for whose records a person's are:
    /// `{"claim": "household_id", "dataset": "household-electricity"}` links
    /// the account, at each sign-in, to the records with that subject key.
    #[serde(default)]
    records: Vec<RecordClaim>,
}

/// A claim naming a subject key in one dataset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordClaim {
    claim: String,
    dataset: String,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Resident]
}

struct Provider {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    roles: Vec<Role>,
    records: Vec<RecordClaim>,
    discovery: RwLock<Option<(Instant, Discovery)>>,
    keys: RwLock<Option<(Instant, Jwks)>>,
}

/// The configured providers, and how to reach them.
pub struct Oidc {
    providers: Vec<Provider>,
    /// Where browsers reach this trust (for the redirect URI).
    public_url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field(
                "providers",
                &self.providers.iter().map(|p| &p.id).collect::<Vec<_>>(),
            )
            .field("public_url", &self.public_url)
            .finish()
    }
}

impl Oidc {
    /// Read the providers from a JSON file; every mistake is named.
    pub fn from_file(path: &Path, public_url: &str) -> Result<Oidc, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("could not read {}: {e}", path.display()))?;
        Oidc::from_json(&text, public_url, path.parent())
    }

    /// Providers from the JSON text of a configuration file (secrets in
    /// files are read relative to `dir`).
    pub fn from_json(text: &str, public_url: &str, dir: Option<&Path>) -> Result<Oidc, String> {
        let mut de = serde_json::Deserializer::from_str(text);
        let files: Vec<ProviderFile> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            format!(
                "OpenID Connect configuration, at '{}': {}",
                e.path(),
                e.inner()
            )
        })?;
        let public_url = public_url.trim_end_matches('/').to_string();
        check_url("public URL", &public_url)?;
        let mut providers: Vec<Provider> = Vec::new();
        for (i, f) in files.into_iter().enumerate() {
            let at = format!("provider [{i}] ('{}')", f.id);
            if !citytrust_model::validation::is_slug(&f.id) {
                return Err(format!(
                    "{at}: id must be lower-case letters, digits and '-'"
                ));
            }
            if providers.iter().any(|p| p.id == f.id) {
                return Err(format!("{at}: the id is used twice"));
            }
            if f.name.trim().is_empty() || f.client_id.is_empty() {
                return Err(format!("{at}: name and client_id are required"));
            }
            check_url(&format!("{at}: issuer"), &f.issuer)?;
            for (j, r) in f.records.iter().enumerate() {
                if r.claim.is_empty()
                    || r.claim.len() > 100
                    || !citytrust_model::validation::is_slug(&r.dataset)
                {
                    return Err(format!(
                        "{at}: records [{j}] needs a claim name and a dataset id"
                    ));
                }
            }
            let client_secret = match (f.client_secret, f.client_secret_file) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "{at}: give client_secret or client_secret_file, not both"
                    ));
                }
                (Some(s), None) => Some(s),
                (None, Some(file)) => {
                    let file = match dir {
                        Some(d) if file.is_relative() => d.join(file),
                        _ => file,
                    };
                    let s = std::fs::read_to_string(&file).map_err(|e| {
                        format!(
                            "{at}: could not read client_secret_file {}: {e}",
                            file.display()
                        )
                    })?;
                    Some(s.trim().to_string())
                }
                (None, None) => None,
            };
            let mut scopes = vec!["openid".to_string()];
            let asked = if f.scopes.is_empty() {
                vec!["profile".to_string(), "email".to_string()]
            } else {
                f.scopes
            };
            for s in asked {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
            providers.push(Provider {
                id: f.id,
                name: f.name.trim().to_string(),
                issuer: f.issuer,
                client_id: f.client_id,
                client_secret,
                scopes,
                roles: f.roles,
                records: f.records,
                discovery: RwLock::new(None),
                keys: RwLock::new(None),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Oidc {
            providers,
            public_url,
            http,
        })
    }

    /// (id, name) of each provider, for the sign-in page.
    pub fn choices(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect()
    }

    fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    fn redirect_uri(&self, provider: &Provider) -> String {
        format!("{}/signin/oidc/{}/callback", self.public_url, provider.id)
    }

    async fn discovery(&self, p: &Provider) -> Result<Discovery, String> {
        if let Some((at, d)) = &*p.discovery.read().await
            && at.elapsed() < CACHE_FOR
        {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            p.issuer.trim_end_matches('/')
        );
        let d: Discovery = self.get_json(&url).await?;
        if d.issuer != p.issuer {
            return Err(format!(
                "the discovery document names issuer '{}', not the configured '{}'",
                d.issuer, p.issuer
            ));
        }
        for (what, u) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
            ("jwks_uri", &d.jwks_uri),
        ] {
            check_url(what, u)?;
        }
        *p.discovery.write().await = Some((Instant::now(), d.clone()));
        Ok(d)
    }

    async fn keys(&self, p: &Provider, jwks_uri: &str, refresh: bool) -> Result<Jwks, String> {
        if let Some((at, k)) = &*p.keys.read().await {
            let fresh = at.elapsed() < CACHE_FOR;
            // A refresh is asked for when a token names an unknown key; at most every 10 s.
            let may_refresh = at.elapsed() > Duration::from_secs(10);
            if fresh && !(refresh && may_refresh) {
                return Ok(k.clone());
            }
        }
        let k: Jwks = self.get_json(jwks_uri).await?;
        *p.keys.write().await = Some((Instant::now(), k.clone()));
        Ok(k)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        self.get_json_as(url, None).await
    }

    /// GET a JSON document, with a bearer token when given; size-limited.
    async fn get_json_as<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, String> {
        let mut req = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json");
        if let Some(token) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let res = req
            .send()
            .await
            .map_err(|e| format!("could not fetch {url}: {e}"))?;
        let status = res.status();
        let body = read_limited(res).await?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{url} sent unreadable JSON: {e}"))
    }

    /// Exchange the code for tokens at the token endpoint: the ID token, and
    /// the access token (for the userinfo endpoint) if one came.
    async fn exchange(
        &self,
        p: &Provider,
        d: &Discovery,
        code: &str,
        verifier: &str,
    ) -> Result<(String, Option<String>), String> {
        let redirect_uri = self.redirect_uri(p);
        let methods = d
            .token_endpoint_auth_methods_supported
            .clone()
            .unwrap_or_else(|| vec!["client_secret_basic".into()]);
        // (The serializer is not Send: build the body before any await.)
        let (body, basic) = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "authorization_code")
                .append_pair("code", code)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("code_verifier", verifier);
            let mut basic = None;
            match &p.client_secret {
                Some(secret) if methods.iter().any(|m| m == "client_secret_basic") => {
                    let enc =
                        |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                    basic = Some(STANDARD.encode(format!("{}:{}", enc(&p.client_id), enc(secret))));
                }
                Some(secret) => {
                    form.append_pair("client_id", &p.client_id)
                        .append_pair("client_secret", secret);
                }
                None => {
                    form.append_pair("client_id", &p.client_id);
                }
            }
            (form.finish(), basic)
        };
        let mut req = self.http.post(&d.token_endpoint);
        if let Some(basic) = basic {
            req = req.header(header::AUTHORIZATION, format!("Basic {basic}"));
        }
        let res = req
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("could not reach the token endpoint: {e}"))?;
        let status = res.status();
        let body = read_limited(res).await?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
            format!("the token endpoint answered {status} with unreadable JSON: {e}")
        })?;
        if let Some(error) = parsed.error {
            return Err(format!(
                "the token endpoint refused the code: {}{}",
                clip(&error),
                parsed
                    .error_description
                    .map(|d| format!(" ({})", clip(&d)))
                    .unwrap_or_default()
            ));
        }
        if !status.is_success() {
            return Err(format!("the token endpoint answered {status}"));
        }
        let id_token = parsed
            .id_token
            .ok_or_else(|| "the token endpoint sent no ID token".to_string())?;
        Ok((id_token, parsed.access_token))
    }

    /// Profile claims from the userinfo endpoint, for providers that keep
    /// them out of the ID token. Its `sub` must be the ID token's.
    async fn userinfo(
        &self,
        d: &Discovery,
        access_token: &str,
        claims: &mut IdClaims,
    ) -> Result<(), String> {
        let Some(url) = &d.userinfo_endpoint else {
            return Ok(());
        };
        check_url("userinfo_endpoint", url)?;
        let info: UserInfo = self.get_json_as(url, Some(access_token)).await?;
        if info.sub != claims.sub {
            return Err("the userinfo endpoint describes another subject".into());
        }
        claims.preferred_username = claims.preferred_username.take().or(info.preferred_username);
        claims.name = claims.name.take().or(info.name);
        if claims.email.is_none() {
            claims.email = info.email;
            claims.email_verified = info.email_verified;
        }
        for (k, v) in other_claims(info.other) {
            claims.other.entry(k).or_insert(v);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct UserInfo {
    sub: String,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

async fn read_limited(mut res: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| format!("reading the provider's answer: {e}"))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE {
            return Err(format!(
                "the provider's answer is larger than {MAX_RESPONSE} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// HTTPS, or HTTP on the loopback interface (for development and the tests).
fn check_url(what: &str, u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{what}: '{u}' is not a URL: {e}"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{what}: '{u}' must use https (plain http only on the loopback interface)"
        )),
    }
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

// ---- the two routes -------------------------------------------------------------

pub(crate) fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route("/signin/oidc/{provider}", axum::routing::get(start))
        .route(
            "/signin/oidc/{provider}/callback",
            axum::routing::get(callback),
        )
}

fn unknown_provider(id: &str) -> PageError {
    PageError::page(
        StatusCode::NOT_FOUND,
        format!("There is no identity service '{}' here.", clip(id)),
    )
}

fn provider_down(p: &Provider, why: &str) -> PageError {
    tracing::warn!(provider = %p.id, error = %why, "OpenID Connect provider failed");
    PageError::page(
        StatusCode::BAD_GATEWAY,
        format!(
            "{} could not be reached or answered wrongly, so you are not signed in. Try again later, or sign in with a password.",
            p.name
        ),
    )
}

/// Send the browser to the provider, remembering state, nonce and verifier.
async fn start(State(state): State<AppState>, UrlPath(id): UrlPath<String>) -> PageResult {
    let oidc = state.oidc.clone();
    let Some(p) = oidc.provider(&id) else {
        return Err(unknown_provider(&id));
    };
    let d = oidc.discovery(p).await.map_err(|e| provider_down(p, &e))?;
    let login = state.service.begin_external_sign_in(&p.id).await?;
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        login.code_verifier.as_bytes(),
    ));
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &oidc.redirect_uri(p))
        .append_pair("scope", &p.scopes.join(" "))
        .append_pair("state", &login.state)
        .append_pair("nonce", &login.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut res =
        Redirect::to(&format!("{}{sep}{query}", d.authorization_endpoint)).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, &login.state, 600),
    );
    Ok(res)
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
    /// The issuer, from providers that name themselves in their answers (RFC 9207).
    #[serde(default)]
    iss: Option<String>,
}

/// The provider's answer: check it belongs to this browser's sign-in, take
/// the code to the token endpoint, verify the ID token, sign the person in.
async fn callback(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Query(answer): Query<Answer>,
) -> PageResult {
    let oidc = state.oidc.clone();
    let Some(p) = oidc.provider(&id) else {
        return Err(unknown_provider(&id));
    };
    let expired = || {
        PageError::page(
            StatusCode::FORBIDDEN,
            "This sign-in had expired or was not started in this browser. Please sign in again.",
        )
    };
    let sent = answer.state.as_deref().unwrap_or("");
    let kept = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if sent.is_empty() || sent.len() > 200 || !bool::from(sent.as_bytes().ct_eq(kept.as_bytes())) {
        return Err(expired());
    }
    let login = match state.service.finish_external_sign_in(sent).await {
        Ok(l) => l,
        Err(ServiceError::ExpiredCredentials) => return Err(expired()),
        Err(e) => return Err(e.into()),
    };
    if login.provider != p.id {
        return Err(expired());
    }
    if answer.iss.as_deref().is_some_and(|iss| iss != p.issuer) {
        // An answer from another provider, sent here to mix sign-ins up.
        return Err(PageError::page(
            StatusCode::FORBIDDEN,
            format!(
                "This answer did not come from {}. Please sign in again.",
                p.name
            ),
        ));
    }
    if let Some(error) = &answer.error {
        return Err(PageError::page(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} did not sign you in: {}{}",
                p.name,
                clip(error),
                answer
                    .error_description
                    .as_deref()
                    .map(|d| format!(" ({})", clip(d)))
                    .unwrap_or_default()
            ),
        ));
    }
    let Some(code) = answer
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return Err(PageError::page(
            StatusCode::BAD_REQUEST,
            format!("{} sent no authorization code.", p.name),
        ));
    };
    let d = oidc.discovery(p).await.map_err(|e| provider_down(p, &e))?;
    let (id_token, access_token) = oidc
        .exchange(p, &d, code, &login.code_verifier)
        .await
        .map_err(|e| provider_down(p, &e))?;
    let expected = Expected {
        issuer: &p.issuer,
        client_id: &p.client_id,
        nonce: &login.nonce,
        now: state.service.now().unix_timestamp(),
    };
    let keys = oidc
        .keys(p, &d.jwks_uri, false)
        .await
        .map_err(|e| provider_down(p, &e))?;
    let claims = match verify_id_token(&id_token, &keys, &expected) {
        Err(TokenError::UnknownKey) => {
            let keys = oidc
                .keys(p, &d.jwks_uri, true)
                .await
                .map_err(|e| provider_down(p, &e))?;
            verify_id_token(&id_token, &keys, &expected)
        }
        other => other,
    };
    let claims = claims.map_err(|e| {
        tracing::warn!(provider = %p.id, error = %e, "ID token refused");
        PageError::page(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} sent an identity that could not be verified ({e}), so you are not signed in.",
                p.name
            ),
        )
    })?;
    let mut claims = claims;
    let record_claims_missing = p
        .records
        .iter()
        .any(|r| !claims.other.contains_key(&r.claim));
    if let Some(access_token) = access_token
        && ((claims.preferred_username.is_none()
            && claims.name.is_none()
            && claims.email.is_none())
            || record_claims_missing)
    {
        oidc.userinfo(&d, &access_token, &mut claims)
            .await
            .map_err(|e| provider_down(p, &e))?;
    }
    let records: Vec<(String, String)> = p
        .records
        .iter()
        .filter_map(|r| {
            claims
                .other
                .get(&r.claim)
                .map(|key| (r.dataset.clone(), key.clone()))
        })
        .collect();
    let profile = ExternalProfile {
        provider: p.id.clone(),
        issuer: p.issuer.clone(),
        subject: claims.sub,
        preferred_username: claims.preferred_username,
        name: claims.name,
        verified_email: claims.email.filter(|_| claims.email_verified == Some(true)),
        roles: p.roles.clone(),
    };
    let user = match state.service.sign_in_external(&profile).await {
        Ok(u) => u,
        Err(ServiceError::ExpiredCredentials) => {
            return Err(PageError::page(
                StatusCode::FORBIDDEN,
                "The account this identity signs in to is disabled.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // The records the provider vouches are theirs; a claim that cannot be
    // honoured (no such records, linked to someone else) does not stop the sign-in.
    for (dataset, key) in records {
        if let Err(e) = state
            .service
            .link_from_identity_provider(&user.username, &dataset, &key, &p.id)
            .await
        {
            tracing::warn!(provider = %p.id, dataset = %dataset, error = %e, "a records claim was not linked");
        }
    }
    let mut res = signed_in(&state, &user).await?;
    res.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", 0));
    Ok(res)
}

// ---- the ID token -----------------------------------------------------------------

/// What an ID token must say.
pub(crate) struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Seconds since 1970.
    pub now: i64,
}

/// The claims used from a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdClaims {
    pub sub: String,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Other string claims (at most 64, each at most 200 characters), for the
    /// provider's `records` claims.
    pub other: BTreeMap<String, String>,
}

/// String claims beyond the standard ones, bounded.
fn other_claims(map: serde_json::Map<String, serde_json::Value>) -> BTreeMap<String, String> {
    map.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) if k.len() <= 100 && s.len() <= 200 => Some((k, s)),
            _ => None,
        })
        .take(64)
        .collect()
}

/// Why an ID token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// No key of the provider's matches the token's key id and algorithm.
    UnknownKey,
    Invalid(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::UnknownKey => {
                f.write_str("signed with a key the provider does not publish")
            }
            TokenError::Invalid(why) => f.write_str(why),
        }
    }
}

fn invalid(why: impl Into<String>) -> TokenError {
    TokenError::Invalid(why.into())
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// Verify an ID token's signature against the provider's keys, then its
/// issuer, audience, times and nonce. Refuses `none`, HMAC and unknown
/// algorithms, unknown critical headers, and tokens over 16 KiB.
pub(crate) fn verify_id_token(
    token: &str,
    keys: &Jwks,
    expected: &Expected<'_>,
) -> Result<IdClaims, TokenError> {
    if token.len() > MAX_TOKEN {
        return Err(invalid("the ID token is too large"));
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(
            "the ID token is not a signed JWT (three dot-separated parts)",
        ));
    };
    let decode = |part: &str, what: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| invalid(format!("the ID token's {what} is not base64url")))
    };
    let header: Header = serde_json::from_slice(&decode(h64, "header")?)
        .map_err(|e| invalid(format!("the ID token's header is unreadable: {e}")))?;
    if header.crit.is_some() {
        return Err(invalid(
            "the ID token has critical header parameters this trust does not know",
        ));
    }
    if let Some(typ) = &header.typ
        && !typ.eq_ignore_ascii_case("jwt")
    {
        return Err(invalid(format!(
            "the ID token's type is '{}', not JWT",
            clip(typ)
        )));
    }
    let signature = decode(s64, "signature")?;
    let signed = &token.as_bytes()[..h64.len() + 1 + c64.len()];
    let family = match header.alg.as_str() {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => "RSA",
        "ES256" | "ES384" => "EC",
        "EdDSA" => "OKP",
        other => {
            return Err(invalid(format!(
                "the ID token is signed with '{}', which this trust does not accept",
                clip(other)
            )));
        }
    };
    let candidates: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|k| k.kty == family)
        .filter(|k| k.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter(|k| k.alg.as_deref().is_none_or(|a| a == header.alg))
        .filter(|k| header.kid.is_none() || k.kid == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    if !candidates
        .iter()
        .any(|k| verify_signature(&header.alg, k, signed, &signature))
    {
        return Err(invalid("the ID token's signature does not verify"));
    }
    let claims: Claims = serde_json::from_slice(&decode(c64, "claims")?)
        .map_err(|e| invalid(format!("the ID token's claims are unreadable: {e}")))?;
    if claims.iss != expected.issuer {
        return Err(invalid(format!(
            "the ID token was issued by '{}', not '{}'",
            clip(&claims.iss),
            expected.issuer
        )));
    }
    let audiences = match &claims.aud {
        Audience::One(a) => vec![a.as_str()],
        Audience::Many(v) => v.iter().map(String::as_str).collect(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(invalid("the ID token is meant for another client"));
    }
    if (audiences.len() > 1 || claims.azp.is_some())
        && claims.azp.as_deref() != Some(expected.client_id)
    {
        return Err(invalid("the ID token was obtained by another party (azp)"));
    }
    if claims.exp + LEEWAY <= expected.now {
        return Err(invalid("the ID token has expired"));
    }
    if claims.iat > expected.now + LEEWAY || claims.nbf.is_some_and(|n| n > expected.now + LEEWAY) {
        return Err(invalid("the ID token is dated in the future"));
    }
    if claims.nonce.as_deref() != Some(expected.nonce) {
        return Err(invalid("the ID token does not answer this sign-in (nonce)"));
    }
    if claims.sub.is_empty() || claims.sub.len() > 255 {
        return Err(invalid("the ID token's subject is empty or too long"));
    }
    Ok(IdClaims {
        sub: claims.sub,
        preferred_username: claims.preferred_username,
        name: claims.name,
        email: claims.email,
        email_verified: claims.email_verified,
        other: other_claims(claims.other),
    })
}

fn verify_signature(alg: &str, key: &Jwk, message: &[u8], signature: &[u8]) -> bool {
    use ring::signature as sig;
    let b64 = |v: &Option<String>| v.as_deref().and_then(|s| URL_SAFE_NO_PAD.decode(s).ok());
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let (Some(n), Some(e)) = (b64(&key.n), b64(&key.e)) else {
                return false;
            };
            let strip = |v: &[u8]| {
                let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
                v[start..].to_vec()
            };
            let params: &sig::RsaParameters = match alg {
                "RS256" => &sig::RSA_PKCS1_2048_8192_SHA256,
                "RS384" => &sig::RSA_PKCS1_2048_8192_SHA384,
                "RS512" => &sig::RSA_PKCS1_2048_8192_SHA512,
                "PS256" => &sig::RSA_PSS_2048_8192_SHA256,
                "PS384" => &sig::RSA_PSS_2048_8192_SHA384,
                _ => &sig::RSA_PSS_2048_8192_SHA512,
            };
            sig::RsaPublicKeyComponents {
                n: strip(&n),
                e: strip(&e),
            }
            .verify(params, message, signature)
            .is_ok()
        }
        "ES256" | "ES384" => {
            let (want_crv, algorithm, size): (_, &'static dyn sig::VerificationAlgorithm, _) =
                if alg == "ES256" {
                    ("P-256", &sig::ECDSA_P256_SHA256_FIXED, 32)
                } else {
                    ("P-384", &sig::ECDSA_P384_SHA384_FIXED, 48)
                };
            let (Some(x), Some(y)) = (b64(&key.x), b64(&key.y)) else {
                return false;
            };
            if key.crv.as_deref() != Some(want_crv) || x.len() != size || y.len() != size {
                return false;
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            sig::UnparsedPublicKey::new(algorithm, point)
                .verify(message, signature)
                .is_ok()
        }
        "EdDSA" => {
            let Some(x) = b64(&key.x) else { return false };
            key.crv.as_deref() == Some("Ed25519")
                && sig::UnparsedPublicKey::new(&sig::ED25519, x)
                    .verify(message, signature)
                    .is_ok()
        }
        _ => false,
    }
}

/// No providers: the sign-in page offers passwords only.
impl Default for Oidc {
    fn default() -> Oidc {
        Oidc {
            providers: vec![],
            public_url: String::new(),
            http: reqwest::Client::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self as sig, KeyPair};
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: "https://id.city.example",
            client_id: "citytrust",
            nonce: "n-0S6",
            now: NOW,
        }
    }

    fn good_claims() -> serde_json::Value {
        json!({
            "iss": "https://id.city.example", "sub": "248289761001", "aud": "citytrust",
            "exp": NOW + 300, "iat": NOW - 10, "nonce": "n-0S6",
            "preferred_username": "marta", "name": "Marta Puig",
            "email": "marta@example.org", "email_verified": true
        })
    }

    /// An Ed25519 and a P-256 key, their JWKS, and signers.
    struct Keys {
        ed: sig::Ed25519KeyPair,
        ec: sig::EcdsaKeyPair,
        jwks: Jwks,
    }

    fn keys() -> Keys {
        let rng = SystemRandom::new();
        let ed = sig::Ed25519KeyPair::from_pkcs8(
            sig::Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref(),
        )
        .unwrap();
        let ec_pkcs8 =
            sig::EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = sig::EcdsaKeyPair::from_pkcs8(
            &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            ec_pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let point = ec.public_key().as_ref();
        let jwks: Jwks = serde_json::from_value(json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig", "x": b64(ed.public_key().as_ref())},
            {"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64(&point[1..33]), "y": b64(&point[33..65])},
            {"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"}
        ]}))
        .unwrap();
        Keys { ed, ec, jwks }
    }

    fn sign(k: &Keys, header: serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = match header["alg"].as_str() {
            Some("EdDSA") => k.ed.sign(input.as_bytes()).as_ref().to_vec(),
            Some("ES256") => {
                k.ec.sign(&SystemRandom::new(), input.as_bytes())
                    .unwrap()
                    .as_ref()
                    .to_vec()
            }
            _ => b"not a signature".to_vec(),
        };
        format!("{input}.{}", b64(&signature))
    }

    fn ed(k: &Keys, claims: &serde_json::Value) -> String {
        sign(
            k,
            json!({"alg": "EdDSA", "kid": "ed-1", "typ": "JWT"}),
            claims,
        )
    }

    fn refused(k: &Keys, token: &str) -> String {
        match verify_id_token(token, &k.jwks, &expected()) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_good_token_verifies_with_either_key() {
        let k = keys();
        let c = verify_id_token(&ed(&k, &good_claims()), &k.jwks, &expected()).unwrap();
        assert_eq!(c.sub, "248289761001");
        assert_eq!(c.preferred_username.as_deref(), Some("marta"));
        assert_eq!(c.email_verified, Some(true));
        let es = sign(&k, json!({"alg": "ES256", "kid": "ec-1"}), &good_claims());
        assert!(verify_id_token(&es, &k.jwks, &expected()).is_ok());
        // No kid: every key of the algorithm's kind is tried.
        let es = sign(&k, json!({"alg": "ES256"}), &good_claims());
        assert!(verify_id_token(&es, &k.jwks, &expected()).is_ok());
        // Several audiences are fine when azp names this client.
        let mut c = good_claims();
        c["aud"] = json!(["citytrust", "other"]);
        c["azp"] = json!("citytrust");
        assert!(verify_id_token(&ed(&k, &c), &k.jwks, &expected()).is_ok());
    }

    #[test]
    fn a_token_may_not_be_forged_or_tampered_with() {
        let k = keys();
        let token = ed(&k, &good_claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut c = good_claims();
        c["sub"] = json!("someone-else");
        let forged = b64(c.to_string().as_bytes());
        parts[1] = &forged;
        assert!(refused(&k, &parts.join(".")).contains("signature does not verify"));
        // alg none, HMAC with a public value, unknown algorithms: refused before any key is tried.
        let none = format!(
            "{}.{}.",
            b64(br#"{"alg":"none"}"#),
            b64(good_claims().to_string().as_bytes())
        );
        assert!(refused(&k, &none).contains("'none'"));
        let hs = sign(&k, json!({"alg": "HS256", "kid": "ed-1"}), &good_claims());
        assert!(refused(&k, &hs).contains("'HS256'"));
        // A key the provider does not publish, or one only for encryption.
        let other = sign(&k, json!({"alg": "EdDSA", "kid": "ed-2"}), &good_claims());
        assert_eq!(
            verify_id_token(&other, &k.jwks, &expected()),
            Err(TokenError::UnknownKey)
        );
        let enc = sign(&k, json!({"alg": "RS256", "kid": "enc-1"}), &good_claims());
        assert_eq!(
            verify_id_token(&enc, &k.jwks, &expected()),
            Err(TokenError::UnknownKey)
        );
        // The Ed25519 signature presented as ES256 of the same key id does not pass.
        let wrong = sign(&k, json!({"alg": "EdDSA", "kid": "ec-1"}), &good_claims());
        assert_eq!(
            verify_id_token(&wrong, &k.jwks, &expected()),
            Err(TokenError::UnknownKey)
        );
        assert!(refused(&k, "a.b").contains("three"));
        assert!(refused(&k, &"x".repeat(20_000)).contains("too large"));
        let crit = sign(
            &k,
            json!({"alg": "EdDSA", "kid": "ed-1", "crit": ["exp"]}),
            &good_claims(),
        );
        assert!(refused(&k, &crit).contains("critical"));
    }

    #[test]
    fn a_token_may_not_be_for_another_issuer_client_sign_in_or_time() {
        let k = keys();
        let with = |field: &str, value: serde_json::Value| {
            let mut c = good_claims();
            c[field] = value;
            ed(&k, &c)
        };
        assert!(refused(&k, &with("iss", json!("https://evil.example"))).contains("issued by"));
        assert!(refused(&k, &with("aud", json!("other-client"))).contains("another client"));
        assert!(refused(&k, &with("aud", json!(["citytrust", "other"]))).contains("azp"));
        assert!(refused(&k, &with("azp", json!("other"))).contains("azp"));
        assert!(refused(&k, &with("exp", json!(NOW - 61))).contains("expired"));
        assert!(refused(&k, &with("iat", json!(NOW + 600))).contains("future"));
        assert!(refused(&k, &with("nbf", json!(NOW + 600))).contains("future"));
        assert!(refused(&k, &with("nonce", json!("replayed"))).contains("nonce"));
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("nonce");
        assert!(refused(&k, &ed(&k, &c)).contains("nonce"));
        assert!(refused(&k, &with("sub", json!(""))).contains("subject"));
        assert!(refused(&k, &with("exp", json!("tomorrow"))).contains("unreadable"));
        // Within the leeway of a minute, a slightly slow clock is fine.
        assert!(verify_id_token(&with("exp", json!(NOW - 30)), &k.jwks, &expected()).is_ok());
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let ok = r#"[{"id": "city-id", "name": "City ID", "issuer": "https://id.city.example", "client_id": "c", "client_secret": "s"}]"#;
        let o = Oidc::from_json(ok, "https://trust.city.example/", None).unwrap();
        assert_eq!(
            o.choices(),
            [("city-id".to_string(), "City ID".to_string())]
        );
        let p = o.provider("city-id").unwrap();
        assert_eq!(p.scopes, ["openid", "profile", "email"]);
        assert_eq!(p.roles, [Role::Resident]);
        assert_eq!(
            o.redirect_uri(p),
            "https://trust.city.example/signin/oidc/city-id/callback"
        );
        let err = |text: &str| Oidc::from_json(text, "http://127.0.0.1:8080", None).unwrap_err();
        assert!(
            err(r#"[{"id": "xy", "name": "X", "issuer": "http://id.example", "client_id": "c"}]"#)
                .contains("must use https")
        );
        assert!(err(r#"[{"id": "xy", "name": "X", "issuer": "https://id.example", "client_id": "c", "colour": 1}]"#).contains("colour"));
        assert!(
            err(
                r#"[{"id": "X Y", "name": "X", "issuer": "https://id.example", "client_id": "c"}]"#
            )
            .contains("id must be")
        );
        assert!(err(r#"[{"id": "xy", "name": "X", "issuer": "https://id.example", "client_id": "c", "client_secret": "a", "client_secret_file": "b"}]"#).contains("not both"));
        assert!(err(r#"[{"id": "xy", "name": "X", "issuer": "https://id.example", "client_id": "c", "roles": ["king"]}]"#).contains("[0].roles"));
        // Plain HTTP is allowed on the loopback interface only.
        assert!(Oidc::from_json(r#"[{"id": "xy", "name": "X", "issuer": "http://127.0.0.1:9000", "client_id": "c"}]"#, "http://127.0.0.1:8080", None).is_ok());
        // A records claim names its claim and a dataset id.
        assert!(err(r#"[{"id": "xy", "name": "X", "issuer": "https://id.example", "client_id": "c", "records": [{"claim": "", "dataset": "d"}]}]"#).contains("records [0]"));
        assert!(err(r#"[{"id": "xy", "name": "X", "issuer": "https://id.example", "client_id": "c", "records": [{"claim": "h", "dataset": "Not A Slug"}]}]"#).contains("records [0]"));
    }

    #[test]
    fn other_string_claims_are_kept_for_records_within_bounds() {
        let k = keys();
        let mut c = good_claims();
        c["household_id"] = json!("H0012");
        c["shoe_size"] = json!(42);
        c["essay"] = json!("x".repeat(201));
        let claims = verify_id_token(&ed(&k, &c), &k.jwks, &expected()).unwrap();
        assert_eq!(
            claims.other.get("household_id").map(String::as_str),
            Some("H0012")
        );
        assert!(!claims.other.contains_key("shoe_size"));
        assert!(!claims.other.contains_key("essay"));
        // The standard claims are not "other".
        assert!(!claims.other.contains_key("iss") && !claims.other.contains_key("sub"));
    }
}
