//! The public transparency log over HTTP: the verifier key, the newest signed
//! checkpoint, and entries with their inclusion proofs; consistency proofs
//! between checkpoints. Hashes travel as standard base64, as in C2SP.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use citytrust_model::ProblemCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, CommonProblems, Problem};
use crate::extract::{ApiPath, ApiQuery};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ledger/key", get(key))
        .route("/ledger/checkpoint", get(checkpoint))
        .route("/ledger/head", get(head))
        .route("/ledger/witnesses", get(witnesses))
        .route("/ledger/tile/{*path}", get(tile))
        .route("/api/v1/ledger/entries/{index}", get(entry))
        .route("/api/v1/ledger/proofs/{index}", get(proof))
        .route("/api/v1/ledger/consistency", get(consistency))
        .route("/api/v1/ledger/analytics", get(analytics))
        .route("/api/v1/agreements/{id}/log", get(agreement_log))
}

fn text(body: String, cache: &'static str) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        body,
    )
        .into_response()
}

/// The log's signed-note verifier key: `<name>+<key id>+<base64 key>`.
async fn key(State(state): State<AppState>) -> Response {
    text(
        format!("{}\n", state.service.ledger_verifier_key()),
        "public, max-age=86400",
    )
}

/// The published checkpoint (C2SP tlog-checkpoint in a signed note): the
/// newest signed one, or — when the log is witnessed under a policy — the
/// newest whose cosignatures meet the quorum, with every cosignature.
async fn checkpoint(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.service.published_checkpoint().await? {
        Some(note) => Ok(text(note, "no-cache")),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            if state.service.witness_policy().is_some() {
                "the log has no checkpoint its witnesses have cosigned yet (the newest signed one is at /ledger/head)"
            } else {
                "the log has no checkpoint yet"
            },
        )),
    }
}

/// The witnesses the log asks to cosign, as the `witness` lines of its
/// C2SP tlog-policy (`witness <name> <vkey> [<url>]`), then its quorum rule
/// in words — for the in-browser check. A verifier pins its own policy.
async fn witnesses(State(state): State<AppState>) -> Response {
    let body = match state.service.witness_policy() {
        None => String::new(),
        Some(policy) => policy
            .witnesses
            .iter()
            .map(|w| {
                format!(
                    "witness {} {}{}\n",
                    w.name,
                    w.key.vkey(),
                    w.url
                        .as_deref()
                        .map(|u| format!(" {u}"))
                        .unwrap_or_default()
                )
            })
            .collect(),
    };
    text(body, "no-cache")
}

/// The newest signed checkpoint, witnessed or not, with the cosignatures it
/// has gathered so far.
async fn head(State(state): State<AppState>) -> Result<Response, ApiError> {
    match state.service.head_checkpoint().await? {
        Some(note) => Ok(text(note, "no-cache")),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "the log has no checkpoint yet",
        )),
    }
}

/// A signed checkpoint.
#[derive(Serialize, ToSchema)]
pub struct CheckpointView {
    pub size: u64,
    /// The tree's root hash, base64.
    pub root: String,
    /// The signed note, as served at /ledger/checkpoint for this size.
    pub note: String,
}

/// A log entry with the proof that the log holds it.
#[derive(Serialize, ToSchema)]
pub struct LedgerEntry {
    pub index: u64,
    /// The entry, decoded.
    #[schema(value_type = Object)]
    pub entry: serde_json::Value,
    /// The canonical encoding that was hashed (UTF-8 JSON).
    pub encoded: String,
    /// RFC 6962 leaf hash of `encoded`, base64.
    pub leaf_hash: String,
    /// Inclusion proof (leaf to root), base64 hashes, against `checkpoint`.
    pub inclusion_proof: Vec<String>,
    pub checkpoint: CheckpointView,
}

/// One log entry with its inclusion proof against the newest checkpoint.
#[utoipa::path(get, path = "/api/v1/ledger/entries/{index}", tag = "ledger",
    params(("index" = u64, Path, description = "The entry's index, from 0")),
    responses(
        CommonProblems,
        (status = 200, description = "The entry and its proof", body = LedgerEntry),
        (status = 404, description = "No such entry in a checkpoint yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn entry(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<LedgerEntry>, ApiError> {
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::not_found(format!("log entry '{index}'")))?;
    let proven = state.service.ledger_entry(index).await?;
    let entry = serde_json::from_str(&proven.body)
        .map_err(|e| citytrust_service::ServiceError::Internal(e.to_string()))?;
    let root = STANDARD.encode(proven.root);
    Ok(Json(LedgerEntry {
        index: proven.index,
        entry,
        leaf_hash: STANDARD.encode(proven.leaf_hash),
        inclusion_proof: proven.proof.iter().map(|h| STANDARD.encode(h)).collect(),
        encoded: proven.body,
        checkpoint: CheckpointView {
            size: u64::try_from(proven.checkpoint.size).unwrap_or(0),
            root,
            note: proven.checkpoint.note,
        },
    }))
}

/// An inclusion proof alone, against the newest checkpoint the node holds.
#[derive(Serialize, ToSchema)]
pub struct InclusionProofView {
    pub index: u64,
    /// The size of the tree the proof is for (a checkpoint at
    /// `/ledger/checkpoint` of this size or newer signs it).
    pub size: u64,
    /// That tree's root, base64.
    pub root: String,
    /// The entry's RFC 6962 leaf hash, base64.
    pub leaf_hash: String,
    /// Inclusion proof (leaf to root), base64 hashes.
    pub inclusion_proof: Vec<String>,
}

/// The inclusion proof of one entry, without the entry: what a client that
/// holds the entry (a read's `CityTrust-Log-Entry`, a receipt) needs.
#[utoipa::path(get, path = "/api/v1/ledger/proofs/{index}", tag = "ledger",
    params(("index" = u64, Path, description = "The entry's index, from 0")),
    responses(
        CommonProblems,
        (status = 200, description = "The proof", body = InclusionProofView),
        (status = 404, description = "No such entry in a checkpoint yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn proof(
    State(state): State<AppState>,
    Path(index): Path<String>,
) -> Result<Json<InclusionProofView>, ApiError> {
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::not_found(format!("log entry '{index}'")))?;
    let p = state.service.ledger_inclusion_proof(index).await?;
    Ok(Json(InclusionProofView {
        index: p.index,
        size: p.size,
        root: STANDARD.encode(p.root),
        leaf_hash: STANDARD.encode(p.leaf_hash),
        inclusion_proof: p.proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ConsistencyParams {
    /// The smaller tree size (at least 1).
    #[param(minimum = 1)]
    pub from: u64,
    /// The larger tree size (at most the newest checkpoint's).
    #[param(minimum = 1)]
    pub to: u64,
}

/// A consistency proof between two tree sizes.
#[derive(Serialize, ToSchema)]
pub struct ConsistencyProof {
    pub from: u64,
    pub to: u64,
    /// RFC 6962 consistency proof, base64 hashes.
    pub proof: Vec<String>,
}

/// The proof that the log of `to` entries extends the log of `from` entries.
#[utoipa::path(get, path = "/api/v1/ledger/consistency", tag = "ledger", params(ConsistencyParams),
    responses(
        CommonProblems,
        (status = 200, description = "The proof", body = ConsistencyProof),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The sizes are out of range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn consistency(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ConsistencyParams>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let proof = state.service.ledger_consistency(p.from, p.to).await?;
    Ok(Json(ConsistencyProof {
        from: p.from,
        to: p.to,
        proof: proof.iter().map(|h| STANDARD.encode(h)).collect(),
    }))
}

/// A tile address: `<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, with N written
/// in 3-digit groups, all but the last prefixed with `x` (C2SP tlog-tiles).
#[derive(Debug, PartialEq, Eq)]
struct TilePath {
    /// `None` for an entry bundle.
    level: Option<u8>,
    n: u64,
    width: u64,
}

fn parse_tile_path(path: &str) -> Option<TilePath> {
    let mut parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 2 {
        return None;
    }
    let level = match parts.remove(0) {
        "entries" => None,
        l if !l.is_empty() && l.len() <= 2 && l.bytes().all(|b| b.is_ascii_digit()) => {
            Some(l.parse::<u8>().ok()?)
        }
        _ => return None,
    };
    let mut width = 256;
    if parts.len() >= 2 && parts[parts.len() - 2].ends_with(".p") {
        let w = parts.pop()?;
        if w.is_empty()
            || w.len() > 3
            || !w.bytes().all(|b| b.is_ascii_digit())
            || w.starts_with('0')
        {
            return None;
        }
        width = w.parse::<u64>().ok().filter(|w| (1..256).contains(w))?;
        let last = parts.pop()?;
        parts.push(last.strip_suffix(".p")?);
    }
    let (last, groups) = parts.split_last()?;
    let digits = |s: &str| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    for g in groups {
        let g = g.strip_prefix('x').filter(|g| digits(g))?;
        n = n.checked_mul(1000)?.checked_add(g.parse::<u64>().ok()?)?;
    }
    if !digits(last) {
        return None;
    }
    n = n
        .checked_mul(1000)?
        .checked_add(last.parse::<u64>().ok()?)?;
    Some(TilePath { level, n, width })
}

/// Tiles and entry bundles of the log (C2SP tlog-tiles, height 8). Immutable once served.
async fn tile(
    State(state): State<AppState>,
    Path(path): Path<String>,
) -> Result<Response, ApiError> {
    let Some(t) = parse_tile_path(&path) else {
        return Err(ApiError::not_found(format!("tile '{path}'")));
    };
    let data = match t.level {
        Some(level) => state.service.ledger_tile(level, t.n, t.width).await?,
        None => state.service.ledger_entry_bundle(t.n, t.width).await?,
    };
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        data,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_paths_follow_c2sp() {
        let p = |s: &str| parse_tile_path(s);
        assert_eq!(
            p("0/000"),
            Some(TilePath {
                level: Some(0),
                n: 0,
                width: 256
            })
        );
        assert_eq!(
            p("1/x001/234.p/7"),
            Some(TilePath {
                level: Some(1),
                n: 1234,
                width: 7
            })
        );
        assert_eq!(
            p("entries/x123/x456/789"),
            Some(TilePath {
                level: None,
                n: 123_456_789,
                width: 256
            })
        );
        assert_eq!(
            p("entries/000.p/255"),
            Some(TilePath {
                level: None,
                n: 0,
                width: 255
            })
        );
        for bad in [
            "0/0",
            "0/1234",
            "0/x001",
            "0/001/002",
            "0/000.p/0",
            "0/000.p/256",
            "0/000.p/07",
            "x/000",
            "0/000.p",
            "",
            "entries",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }
}

/// Analytics of access from the signed log: uses of content over time, by
/// dataset, purpose and party; the least used datasets; access requests over
/// time and datasets asked for more than once. Public, like the log.
#[utoipa::path(get, path = "/api/v1/ledger/analytics", tag = "ledger",
    responses(
        CommonProblems,(status = 200, description = "The figures", body = citytrust_service::analytics::AccessAnalytics)))]
pub(crate) async fn analytics(
    State(state): State<AppState>,
) -> Result<Json<citytrust_service::analytics::AccessAnalytics>, ApiError> {
    Ok(Json(state.service.access_analytics().await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AgreementLogParams {
    /// Start at this log index (default 0).
    #[param(minimum = 0)]
    pub from: Option<u64>,
    /// Entries per page, 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u64>,
}

/// The signed log entries about an agreement — its request, votes and
/// decision, each version, and every read made under it — oldest first.
#[utoipa::path(get, path = "/api/v1/agreements/{id}/log", tag = "ledger",
    params(("id" = String, Path, description = "The agreement's id"), AgreementLogParams),
    responses(
        CommonProblems,
        (status = 200, description = "The entries", body = citytrust_service::analytics::AgreementEntries),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such agreement", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn agreement_log(
    State(state): State<AppState>,
    ApiPath(crate::governance::IdPath { id }): ApiPath<crate::governance::IdPath>,
    ApiQuery(p): ApiQuery<AgreementLogParams>,
) -> Result<Json<citytrust_service::analytics::AgreementEntries>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            ProblemCode::InvalidParameter,
            "limit",
            "must be between 1 and 500",
        ));
    }
    let from = i64::try_from(p.from.unwrap_or(0)).unwrap_or(i64::MAX);
    Ok(Json(
        state
            .service
            .agreement_entries(&id, from, i64::try_from(limit).unwrap_or(500))
            .await?,
    ))
}
