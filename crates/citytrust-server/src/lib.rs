//! CityTrust over HTTP: the JSON API (`/api/v1`), its OpenAPI document, the
//! server-rendered web portal, `/healthz` and Prometheus `/metrics`.
//!
//! This is the only crate that knows HTTP. Handlers translate requests into
//! calls on `citytrust_service::Service` and its answers into responses; they
//! decide nothing themselves. `app(state)` builds the whole router so tests can
//! drive it without a socket.

pub mod api;
mod breaches;
mod ckan;
mod content;
pub mod cosigning;
mod dataspace;
mod dcat;
pub mod error;
pub mod extract;
mod federation;
mod feedback;
mod governance;
mod health;
mod ledger;
mod lineage;
mod metrics;
mod ngsi;
pub mod oidc;
mod participation;
mod projects;
mod rdf;
mod residents;
mod web;
mod witness;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Request, header};
use citytrust_service::Service;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

pub use metrics::Metrics;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub metrics: Arc<Metrics>,
    /// Whether cookies carry the `Secure` attribute (off only for plain-HTTP development).
    pub secure_cookies: bool,
    /// The city's OpenID Connect providers (none: passwords only).
    pub oidc: Arc<oidc::Oidc>,
    /// The URL the trust is reached at (`--public-url`, else the address
    /// it listens on), for absolute links in exports.
    pub public_url: Option<String>,
}

impl AppState {
    pub fn new(service: Arc<Service>, secure_cookies: bool) -> AppState {
        AppState {
            service,
            metrics: Arc::new(Metrics::new()),
            secure_cookies,
            oidc: Arc::new(oidc::Oidc::default()),
            public_url: None,
        }
    }

    /// Absolute links (DCAT-AP, CKAN resource URLs, ODRL) start with this URL.
    pub fn with_public_url(mut self, url: impl Into<String>) -> AppState {
        self.public_url = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// Offer sign-in through these OpenID Connect providers.
    pub fn with_oidc(mut self, oidc: oidc::Oidc) -> AppState {
        self.oidc = Arc::new(oidc);
        self
    }
}

/// The trust's own URL: `--public-url` when given, else the address it
/// listens on (`serve` sets it). Never the request's `Host`: a caller must
/// not choose where the links in the trust's exports point.
pub(crate) fn base_url(state: &AppState) -> String {
    state
        .public_url
        .clone()
        .unwrap_or_else(|| "http://localhost".to_string())
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let security_headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ];
    let mut router = Router::new()
        .merge(api::routes())
        .merge(content::routes())
        .merge(lineage::routes())
        .merge(feedback::routes())
        .merge(governance::routes())
        .merge(residents::routes())
        .merge(breaches::routes())
        .merge(participation::routes())
        .merge(projects::routes())
        .merge(federation::routes())
        .merge(dataspace::routes())
        .merge(ngsi::routes())
        .merge(web::routes())
        .merge(oidc::routes())
        .merge(health::routes())
        .merge(ledger::routes())
        .merge(witness::routes())
        .merge(dcat::routes())
        .merge(ckan::routes())
        .fallback(web::not_found)
        .layer(DefaultBodyLimit::max(extract::MAX_JSON_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ));
    for (name, value) in security_headers {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            // The path only: query strings may carry search words, never log bodies or cookies.
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Background upkeep: keep the search index current with other nodes' writes
/// and purge expired credentials. Runs until the process ends.
pub fn spawn_maintenance(service: Arc<Service>) {
    // The log's sequencer: fold new entries into the tree and sign a
    // checkpoint at least every second while entries arrive.
    let sequencer = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            loop {
                match sequencer.integrate_ledger().await {
                    Ok(Some(_)) => continue, // more may be waiting
                    Ok(None) => break,
                    Err(e) => {
                        tracing::error!(error = %e, "transparency log integration failed");
                        break;
                    }
                }
            }
        }
    });
    // The witnesses of the log's policy, asked to cosign each new checkpoint
    // (a policy may come later, from peers).
    let cosigner = service.clone();
    tokio::spawn(async move {
        let cosigning = cosigning::Cosigning::new();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tick.tick().await;
            cosigning.round(&cosigner).await;
        }
    });
    // Other catalogues' scheduled harvests, each in its turn (a harvest
    // another node holds is left to it).
    let harvester = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = harvester.harvest_due().await {
                tracing::warn!(error = %e, "scheduled harvests failed");
            }
        }
    });
    // Streams' history past its retention goes (logged), what is kept is
    // compacted into a version once per period, and versions holding
    // readings past retention are removed (logged); checked every minute.
    let keeper = service.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            if let Err(e) = keeper.expire_stream_history().await {
                tracing::warn!(error = %e, "expiring stream history failed");
            }
            if let Err(e) = keeper.compact_streams().await {
                tracing::warn!(error = %e, "compacting streams failed");
            }
            // After compaction: the period's new version is in place first.
            if let Err(e) = keeper.remove_expired_versions().await {
                tracing::warn!(error = %e, "removing stream versions past retention failed");
            }
        }
    });
    // NGSI-LD notifications: deliver what writes owe subscribers when a
    // write wakes it (and every second, for retries and throttling); every
    // ten seconds, expire subscriptions whose agreements ended. A write's
    // wake starts a pass at once, beside one already preparing (up to
    // PASSES at once: a write arriving during a pass need not wait for it to
    // end), and a pass's notifications are sent while the next ones are
    // prepared (up to POSTING at once). A subscription is in one pass at a
    // time (`InFlight`, and the store's claim on its rows), so its
    // notifications still go in order.
    let notifier = service.clone();
    tokio::spawn(async move {
        const PASSES: usize = 2;
        const POSTING: usize = 4;
        let mut last_sweep = std::time::Instant::now();
        let mut passes = tokio::task::JoinSet::new();
        let mut posting = tokio::task::JoinSet::new();
        // A wake met while PASSES were running: start one when one ends.
        let mut pending = false;
        let reap = |r: Option<std::result::Result<citytrust_service::Result<usize>, _>>| match r {
            Some(Ok(Err(e))) => {
                tracing::warn!(error = %e, "delivering notifications failed")
            }
            Some(Err(e)) => tracing::warn!(error = %e, "a notification pass ended early"),
            _ => {}
        };
        loop {
            let start = tokio::select! {
                _ = notifier.notifications_waiting(Duration::from_secs(1)) => true,
                Some(done) = passes.join_next() => {
                    match done {
                        Ok(Ok(Some(p))) => {
                            while posting.len() >= POSTING {
                                reap(posting.join_next().await);
                            }
                            posting.spawn(notifier.clone().post_notifications(p));
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "delivering notifications failed"),
                        Err(e) => tracing::warn!(error = %e, "a notification pass ended early"),
                    }
                    std::mem::take(&mut pending)
                }
            };
            while let Some(r) = posting.try_join_next() {
                reap(Some(r));
            }
            if start {
                if passes.len() < PASSES {
                    let n = notifier.clone();
                    passes.spawn(async move { n.notification_pass().await });
                } else {
                    pending = true;
                }
            }
            if last_sweep.elapsed() >= Duration::from_secs(10) {
                last_sweep = std::time::Instant::now();
                if let Err(e) = notifier.expire_subscriptions().await {
                    tracing::warn!(error = %e, "expiring subscriptions failed");
                }
            }
        }
    });
    // Dataspace Protocol negotiations: send consumers what decisions owe
    // them, when a decision wakes it and every few seconds (for retries).
    let negotiator = service.clone();
    tokio::spawn(async move {
        loop {
            negotiator
                .negotiations_waiting(Duration::from_secs(5))
                .await;
            if let Err(e) = negotiator.advance_negotiations().await {
                tracing::warn!(error = %e, "DSP negotiations could not be advanced");
            }
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        let mut n: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(e) = service.refresh_search_index().await {
                tracing::warn!(error = %e, "search index refresh failed");
            }
            n += 1;
            if n.is_multiple_of(300)
                && let Err(e) = service.purge_expired_credentials().await
            {
                tracing::warn!(error = %e, "credential purge failed");
            }
        }
    });
}
