//! The witness over HTTP (C2SP tlog-witness): `POST /witness/add-checkpoint`
//! (the cosignature, or the specification's status for each refusal — 409
//! answers the size held as `text/x.tlog.size`), the newest cosigned
//! checkpoint per log at `GET /witness/{origin hash}/checkpoint`, and the
//! witness's verifier key at `GET /witness/key`. No authentication: the
//! checkpoint's signature is the credential, as the specification says.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use citytrust_model::ProblemCode;
use citytrust_service::witness::{MAX_PROOF_LINES, Refusal};

use crate::AppState;
use crate::error::ApiError;

/// The largest `add-checkpoint` body: 63 proof lines, a checkpoint with
/// extension lines and a few dozen signatures fit well within it.
const MAX_BODY: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    // The proof lines alone are at most 63 × 45 bytes.
    const _: () = assert!(MAX_PROOF_LINES * 45 < MAX_BODY / 2);
    Router::new()
        .route(
            "/witness/add-checkpoint",
            post(add_checkpoint).layer(DefaultBodyLimit::max(MAX_BODY)),
        )
        .route("/witness/key", get(key))
        .route("/witness/{origin_hash}/checkpoint", get(checkpoint))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

/// Cosign a checkpoint that extends the newest one cosigned for its log.
async fn add_checkpoint(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ProblemCode::BodyTooLarge,
                format!("an add-checkpoint body is at most {MAX_BODY} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ProblemCode::UnreadableBody,
                "the request body could not be read",
            )
        }
    })?;
    match state.service.add_checkpoint(&body).await? {
        Ok(cosignature) => Ok(text(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            cosignature,
        )),
        Err(Refusal::Conflict { latest, .. }) => Ok(text(
            StatusCode::CONFLICT,
            "text/x.tlog.size",
            format!("{latest}\n"),
        )),
        Err(refusal) => {
            let (status, code) = match &refusal {
                Refusal::Malformed(_) | Refusal::OldBeyondSize { .. } => {
                    (StatusCode::BAD_REQUEST, ProblemCode::MalformedAddCheckpoint)
                }
                Refusal::UnknownLog(_) => (StatusCode::NOT_FOUND, ProblemCode::UnknownLog),
                Refusal::BadSignature => (StatusCode::FORBIDDEN, ProblemCode::CheckpointNotSigned),
                Refusal::Inconsistent(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ProblemCode::InconsistentCheckpoint,
                ),
                Refusal::Conflict { .. } => (StatusCode::CONFLICT, ProblemCode::Conflict),
            };
            debug_assert_eq!(status.as_u16(), refusal.status());
            Err(ApiError::new(status, code, refusal.to_string()))
        }
    }
}

/// The witness's verifier key (`<name>+<key id>+<base64 of 0x04 ‖ key>`).
async fn key(State(state): State<AppState>) -> Response {
    text(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        format!("{}\n", state.service.witness_verifier_key()),
    )
}

/// The newest checkpoint cosigned for the log whose origin's SHA-256 is
/// `origin_hash` (lowercase hex), with the log's and the witness's signatures.
async fn checkpoint(
    State(state): State<AppState>,
    Path(origin_hash): Path<String>,
) -> Result<Response, ApiError> {
    match state.service.witnessed_checkpoint(&origin_hash).await? {
        Some(note) => Ok(text(StatusCode::OK, "text/plain; charset=utf-8", note)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ProblemCode::NotFound,
            "this witness has cosigned no checkpoint of that log",
        )),
    }
}
