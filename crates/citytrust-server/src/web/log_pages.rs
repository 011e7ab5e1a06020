//! The portal's pages on the transparency log: the newest entries with the
//! checkpoint they are signed under and the witnesses that cosign it, one
//! entry with its proof (and cosignatures) checked in the reader's browser
//! (`static/verify-entry.js`), from public data only; and `/witnessing`, the
//! logs this trust witnesses and any evidence of a fork it has seen.

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::charts::{self, count_bars};
use super::{Nav, PageError, PageResult, Viewer, query_number, render};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/log", get(log_page))
        .route("/log/analytics", get(analytics_page))
        .route("/log/{index}", get(entry_page))
        .route("/witnessing", get(witnessing_page))
        .route("/static/verify-entry.js", get(verify_script))
}

const VERIFY_SCRIPT: &str = include_str!("../../static/verify-entry.js");

async fn verify_script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        VERIFY_SCRIPT,
    )
        .into_response()
}

/// Entries per page of the log.
const PAGE: u64 = 50;

struct EntryRow {
    index: u64,
    kind: String,
    at: String,
    summary: String,
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPage {
    nav: Nav,
    size: u64,
    entries: Vec<EntryRow>,
    /// The first index of the next (older) page, if any.
    older: Option<u64>,
    origin: String,
    key: String,
    /// Under a witness policy: the newest witnessed size, and each witness.
    witnessed: Option<u64>,
    witnesses: Vec<WitnessRow>,
    /// Fork evidence this trust holds as a witness of other logs.
    forks: usize,
    /// The published checkpoint, as served (with its cosignatures).
    published: String,
}

/// One witness of this trust's log, as the log page shows it.
struct WitnessRow {
    name: String,
    size: i64,
    cosigned_at: String,
    failure: String,
}

/// The fields that say what an entry is about, in a line.
fn summary(fields: &serde_json::Map<String, serde_json::Value>) -> String {
    let mut parts = Vec::new();
    for name in [
        "dataset",
        "organization",
        "group",
        "request",
        "agreement",
        "purpose",
        "level",
        "rows",
        "vote",
        "version",
        "by",
    ] {
        match fields.get(name) {
            Some(serde_json::Value::String(s)) => parts.push(format!("{name} {s}")),
            Some(serde_json::Value::Number(n)) => parts.push(format!("{name} {n}")),
            _ => {}
        }
    }
    parts.join(" · ")
}

fn row(index: u64, body: &str) -> EntryRow {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let map = value.as_object().cloned().unwrap_or_default();
    EntryRow {
        index,
        kind: map
            .get("type")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string(),
        at: map
            .get("at")
            .and_then(|v| v.as_str())
            .map(|a| a.replace('T', " ").trim_end_matches('Z').to_string())
            .unwrap_or_default(),
        summary: summary(&map),
    }
}

async fn log_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let size = match state.service.latest_checkpoint().await? {
        Some(cp) => u64::try_from(cp.size).unwrap_or(0),
        None => 0,
    };
    // `?before=N`: the page of entries just before index N.
    let before = query_number::<u64>(raw.as_deref(), "before", "before must be an entry number.")?
        .unwrap_or(size)
        .min(size);
    let from = before.saturating_sub(PAGE);
    let mut entries: Vec<EntryRow> = state
        .service
        .ledger_bodies(from, before - from)
        .await?
        .into_iter()
        .map(|(i, body)| row(i, &body))
        .collect();
    entries.reverse();
    let status = state.service.witnessing_status().await?;
    let witnesses = status
        .as_ref()
        .map(|st| {
            st.named
                .iter()
                .map(|name| {
                    let seen = st.witnesses.iter().find(|w| &w.witness == name);
                    WitnessRow {
                        name: name.clone(),
                        size: seen.map_or(0, |w| w.size),
                        cosigned_at: seen
                            .and_then(|w| w.cosigned_at.clone())
                            .map(|a| a.replace('T', " ").trim_end_matches('Z').to_string())
                            .unwrap_or_else(|| "never".into()),
                        failure: seen.and_then(|w| w.failure.clone()).unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let forks = state.service.fork_evidence().await?.len();
    let published = state
        .service
        .published_checkpoint()
        .await?
        .unwrap_or_default();
    render(&LogPage {
        published,
        witnessed: status.map(|st| st.witnessed),
        witnesses,
        forks,
        nav: viewer.nav("log"),
        size,
        entries,
        older: (from > 0).then_some(from),
        origin: state.service.ledger_origin().to_string(),
        key: state.service.ledger_verifier_key().to_string(),
    })
}

#[derive(Template)]
#[template(path = "log_entry.html")]
struct EntryPage {
    nav: Nav,
    e: EntryRow,
    /// The canonical encoding, pretty-printed for reading.
    pretty: String,
}

async fn entry_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(index): Path<String>,
) -> PageResult {
    let not_found = || {
        PageError::page(
            StatusCode::NOT_FOUND,
            format!(
                "There is no entry {} in a checkpoint of the log yet.",
                index.chars().take(20).collect::<String>()
            ),
        )
    };
    let i: u64 = index.parse().map_err(|_| not_found())?;
    let proven = match state.service.ledger_entry(i).await {
        Ok(p) => p,
        Err(citytrust_service::ServiceError::NotFound(_)) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    let pretty = serde_json::from_str::<serde_json::Value>(&proven.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| proven.body.clone());
    render(&EntryPage {
        nav: viewer.nav("log"),
        e: row(i, &proven.body),
        pretty,
    })
}

#[derive(Template)]
#[template(path = "analytics.html")]
struct AnalyticsPage {
    nav: Nav,
    a: citytrust_service::analytics::AccessAnalytics,
    over_time_svg: String,
    by_dataset_svg: String,
    by_purpose_svg: String,
    by_party_svg: String,
    requests_svg: String,
    /// Outcomes by purpose and by year (R-PAR-4).
    outcomes: citytrust_service::participation::OutcomeSummary,
}

/// Bars for the first `n` counts.
fn top_bars(counts: &[citytrust_service::analytics::Count], n: usize) -> Vec<charts::Bar> {
    count_bars(counts.iter().take(n).map(|c| (c.label.as_str(), c.count)))
}

/// `/log/analytics`: who uses which data, for what, and how often (R-AUD-3),
/// from the signed log.
async fn analytics_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let a = state.service.access_analytics().await?;
    let series = |counts: &[citytrust_service::analytics::Count]| -> Vec<(String, i64)> {
        counts.iter().map(|c| (c.label.clone(), c.count)).collect()
    };
    render(&AnalyticsPage {
        nav: viewer.nav("log"),
        over_time_svg: charts::vertical(
            "over-time",
            &format!("Uses of data per {}", a.period),
            "uses",
            &series(&a.reads_over_time),
        ),
        by_dataset_svg: charts::horizontal(
            "by-dataset",
            "Most used datasets",
            &top_bars(&a.reads_by_dataset, 15),
        ),
        by_purpose_svg: charts::horizontal(
            "by-purpose",
            "Uses by purpose",
            &top_bars(&a.reads_by_purpose, 15),
        ),
        by_party_svg: charts::horizontal(
            "by-party",
            "Uses by organisation",
            &top_bars(&a.reads_by_party, 15),
        ),
        requests_svg: charts::vertical(
            "requests",
            "Access requests per month",
            "requests",
            &series(&a.requests_over_time),
        ),
        outcomes: state.service.outcome_summary().await?,
        a,
    })
}

#[derive(Template)]
#[template(path = "witnessing.html")]
struct WitnessingPage {
    nav: Nav,
    key: String,
    logs: Vec<WitnessedRow>,
    evidence: Vec<citytrust_service::witness::ForkEvidence>,
}

struct WitnessedRow {
    origin: String,
    key: String,
    size: String,
    cosigned_at: String,
    path: String,
}

/// The logs this trust witnesses, the newest checkpoint it cosigned of each,
/// and every fork it has seen, with the evidence in full.
async fn witnessing_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let logs = state
        .service
        .witnessed_logs()
        .await?
        .into_iter()
        .map(|(log, held)| WitnessedRow {
            path: format!(
                "/witness/{}/checkpoint",
                citytrust_service::witness::origin_hash(&log.origin)
            ),
            key: log.verifier_keys.join(" "),
            size: held
                .as_ref()
                .map_or("none yet".into(), |h| h.size.to_string()),
            cosigned_at: held
                .map(|h| {
                    h.cosigned_at
                        .replace('T', " ")
                        .trim_end_matches('Z')
                        .to_string()
                })
                .unwrap_or_default(),
            origin: log.origin,
        })
        .collect();
    render(&WitnessingPage {
        nav: viewer.nav("log"),
        key: state.service.witness_verifier_key(),
        logs,
        evidence: state.service.fork_evidence().await?,
    })
}
