//! The Dataspace Protocol over HTTP (DSP 2025-1), provider side:
//! `/.well-known/dspace-version`, the catalogue (`POST /dsp/catalog/request`,
//! `GET /dsp/catalog/datasets/{id}`), this trust's participant identity
//! (`GET /dsp/participant`) and contract negotiations (`/dsp/negotiations/…`).
//! Bad messages and unknown datasets answer DSP's `CatalogError`, and
//! negotiation failures its `ContractNegotiationError`, not problem+json.
//! Negotiations need a participant's signed token (`Authorization: Bearer`);
//! without one, as for an unknown negotiation, the answer is 404.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_service::ServiceError;
use citytrust_service::dataspace::{Caller, DSP_CONTEXT};
use citytrust_service::negotiation::{ConsumerMessage, DspError};
use citytrust_service::transfer::TransferMessage;

use crate::content::{DataParams, serve_data};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use serde_json::{Value, json};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/dspace-version", get(versions))
        .route("/dsp/catalog/request", post(catalog_request))
        .route("/dsp/catalog/datasets/{id}", get(dataset))
        .route("/dsp/participant", get(participant))
        .route("/dsp/context.jsonld", get(context))
        .route("/dsp/negotiations/request", post(negotiation_request))
        .route("/dsp/negotiations/{pid}", get(negotiation))
        .route("/dsp/negotiations/{pid}/request", post(counter_request))
        .route("/dsp/negotiations/{pid}/events", post(negotiation_event))
        .route(
            "/dsp/negotiations/{pid}/agreement/verification",
            post(agreement_verification),
        )
        .route("/dsp/negotiations/{pid}/termination", post(termination))
        .route("/dsp/transfers/request", post(transfer_request))
        .route("/dsp/transfers/{pid}", get(transfer))
        .route("/dsp/transfers/{pid}/start", post(transfer_start))
        .route("/dsp/transfers/{pid}/completion", post(transfer_completion))
        .route("/dsp/transfers/{pid}/suspension", post(transfer_suspension))
        .route(
            "/dsp/transfers/{pid}/termination",
            post(transfer_termination),
        )
        .route("/dsp/transfers/{pid}/data", get(transfer_data))
        .route(
            "/dsp/callback/negotiations/{pid}",
            get(callback_negotiation),
        )
        .route(
            "/dsp/callback/negotiations/{pid}/{kind}",
            post(callback_negotiation_message),
        )
        .route(
            "/dsp/callback/transfers/{pid}/{kind}",
            post(callback_transfer_message),
        )
}

/// The header a participant's signed token travels in on data reads (the
/// `Authorization` header carries the transfer's data token).
pub const PARTICIPANT_HEADER: &str = "citytrust-participant";

/// A DSP `ContractNegotiationError`, naming the negotiation's ids as far
/// as the message gave them.
fn negotiation_error(
    status: StatusCode,
    pids: (&str, &str),
    reason: impl Into<String>,
) -> Response {
    (
        status,
        Json(json!({
            "@context": [DSP_CONTEXT],
            "@type": "ContractNegotiationError",
            "providerPid": pids.0,
            "consumerPid": pids.1,
            "code": status.as_u16().to_string(),
            "reason": [reason.into()],
        })),
    )
        .into_response()
}

fn negotiation_failed(e: DspError, pids: (&str, &str)) -> Response {
    match e {
        DspError::NotFound => negotiation_error(
            StatusCode::NOT_FOUND,
            pids,
            "no such negotiation is known to this participant",
        ),
        DspError::BadRequest(reason) => negotiation_error(StatusCode::BAD_REQUEST, pids, reason),
        DspError::Internal(e) => {
            tracing::error!(error = %e, "DSP negotiation failed");
            negotiation_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                pids,
                "the negotiation could not be handled",
            )
        }
    }
}

/// The participant behind a request's token; unauthorised callers are
/// answered as for an unknown negotiation.
async fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, DspError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state
        .service
        .dsp_caller(authorization, &crate::base_url(state))
        .await
    {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(DspError::NotFound),
        Err(e) => Err(DspError::Internal(e)),
    }
}

/// The DSP 2025-1 JSON-LD context every message names, served from the
/// copy built in (the specification's, Apache-2.0, `assets/dsp/`), so a
/// client that expands this trust's messages need not fetch it from w3id.org;
/// this trust itself never fetches a context.
async fn context() -> Response {
    (
        [(header::CONTENT_TYPE, "application/ld+json")],
        include_str!("../assets/dsp/context.jsonld"),
    )
        .into_response()
}

async fn participant(State(state): State<AppState>) -> Response {
    Json(state.service.dsp_participant(&crate::base_url(&state))).into_response()
}

async fn negotiation_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let consumer_pid = pid_in(&body, "consumerPid");
    let pids = ("", consumer_pid.as_str());
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return negotiation_failed(e, pids),
    };
    let msg = match message(&body, "ContractRequestMessage") {
        Ok(m) => m,
        Err(reason) => return negotiation_error(StatusCode::BAD_REQUEST, pids, reason),
    };
    match state
        .service
        .dsp_request_negotiation(&caller, &msg, &crate::base_url(&state))
        .await
    {
        Ok(n) => (StatusCode::CREATED, Json(n)).into_response(),
        Err(e) => negotiation_failed(e, pids),
    }
}

/// A string field of a message, if it is JSON with one (for error bodies).
fn pid_in(body: &[u8], field: &str) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default()
}

async fn negotiation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Response {
    let result = match caller(&state, &headers).await {
        Ok(c) => state.service.dsp_get_negotiation(&c, &pid).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => Json(n).into_response(),
        Err(e) => negotiation_failed(e, (&pid, "")),
    }
}

/// A consumer's message of `expected` type on negotiation `pid`.
async fn consumer_message(
    state: &AppState,
    headers: &HeaderMap,
    pid: &str,
    body: &[u8],
    expected: &str,
    kind: impl FnOnce(&Value) -> Result<ConsumerMessage, String>,
) -> Response {
    let consumer_pid = pid_in(body, "consumerPid");
    let pids = (pid, consumer_pid.as_str());
    let caller = match caller(state, headers).await {
        Ok(c) => c,
        Err(e) => return negotiation_failed(e, pids),
    };
    let msg = match message(body, expected) {
        Ok(m) => m,
        Err(reason) => return negotiation_error(StatusCode::BAD_REQUEST, pids, reason),
    };
    let kind = match kind(&msg) {
        Ok(k) => k,
        Err(reason) => return negotiation_error(StatusCode::BAD_REQUEST, pids, reason),
    };
    match state
        .service
        .dsp_consumer_message(&caller, pid, kind, &msg)
        .await
    {
        Ok(n) => Json(n).into_response(),
        Err(e) => negotiation_failed(e, pids),
    }
}

async fn counter_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    consumer_message(
        &state,
        &headers,
        &pid,
        &body,
        "ContractRequestMessage",
        |_| Ok(ConsumerMessage::Request),
    )
    .await
}

async fn negotiation_event(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    consumer_message(
        &state,
        &headers,
        &pid,
        &body,
        "ContractNegotiationEventMessage",
        |m| match m.get("eventType").and_then(Value::as_str) {
            Some("ACCEPTED" | "dspace:ACCEPTED") => Ok(ConsumerMessage::Accepted),
            Some("FINALIZED" | "dspace:FINALIZED") => Ok(ConsumerMessage::Finalized),
            Some(other) => Err(format!(
                "eventType '{other}' is neither ACCEPTED nor FINALIZED"
            )),
            None => Err("eventType is missing".into()),
        },
    )
    .await
}

async fn agreement_verification(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    consumer_message(
        &state,
        &headers,
        &pid,
        &body,
        "ContractAgreementVerificationMessage",
        |_| Ok(ConsumerMessage::Verification),
    )
    .await
}

async fn termination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    consumer_message(
        &state,
        &headers,
        &pid,
        &body,
        "ContractNegotiationTerminationMessage",
        |_| Ok(ConsumerMessage::Termination),
    )
    .await
}

/// A DSP `CatalogError`.
fn catalog_error(status: StatusCode, reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "@context": [DSP_CONTEXT],
            "@type": "CatalogError",
            "code": status.as_u16().to_string(),
            "reason": [reason.into()],
        })),
    )
        .into_response()
}

fn failed(e: ServiceError) -> Response {
    match e {
        ServiceError::NotFound(what) => {
            catalog_error(StatusCode::NOT_FOUND, format!("no {what} is offered"))
        }
        e => {
            tracing::error!(error = %e, "DSP catalogue failed");
            catalog_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the catalogue could not be made",
            )
        }
    }
}

async fn versions(State(state): State<AppState>) -> Response {
    Json(state.service.dsp_versions()).into_response()
}

/// Check a message is JSON naming the DSP context with the expected `@type`.
pub(crate) fn message(body: &[u8], expected: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v.as_object().ok_or("the message must be a JSON object")?;
    let named = obj
        .get("@context")
        .and_then(|c| c.as_array())
        .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(DSP_CONTEXT)));
    if !named {
        return Err(format!("@context must be an array naming {DSP_CONTEXT}"));
    }
    match obj.get("@type").and_then(|t| t.as_str()) {
        Some(t) if t == expected => Ok(v),
        Some(t) => Err(format!("@type is {t}, expected {expected}")),
        None => Err(format!("@type is missing (expected {expected})")),
    }
}

async fn catalog_request(State(state): State<AppState>, body: Bytes) -> Response {
    let msg = match message(&body, "CatalogRequestMessage") {
        Ok(m) => m,
        Err(reason) => return catalog_error(StatusCode::BAD_REQUEST, reason),
    };
    if let Some(filter) = msg.get("filter")
        && !filter.as_array().is_some_and(|f| f.is_empty())
    {
        return catalog_error(
            StatusCode::BAD_REQUEST,
            "filters are not supported: send an empty filter, or none",
        );
    }
    match state.service.dsp_catalog(&crate::base_url(&state)).await {
        Ok(c) => Json(c.as_ref()).into_response(),
        Err(e) => failed(e),
    }
}

async fn dataset(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state
        .service
        .dsp_dataset(&id, &crate::base_url(&state))
        .await
    {
        Ok(d) => Json(d).into_response(),
        Err(e) => failed(e),
    }
}

/// A DSP `TransferError`.
fn transfer_error(status: StatusCode, pids: (&str, &str), reason: impl Into<String>) -> Response {
    (
        status,
        Json(json!({
            "@context": [DSP_CONTEXT],
            "@type": "TransferError",
            "providerPid": pids.0,
            "consumerPid": pids.1,
            "code": status.as_u16().to_string(),
            "reason": [reason.into()],
        })),
    )
        .into_response()
}

fn transfer_failed(e: DspError, pids: (&str, &str)) -> Response {
    match e {
        DspError::NotFound => transfer_error(
            StatusCode::NOT_FOUND,
            pids,
            "no such transfer is known to this participant",
        ),
        DspError::BadRequest(reason) => transfer_error(StatusCode::BAD_REQUEST, pids, reason),
        DspError::Internal(e) => {
            tracing::error!(error = %e, "DSP transfer failed");
            transfer_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                pids,
                "the transfer could not be handled",
            )
        }
    }
}

async fn transfer_request(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let consumer_pid = pid_in(&body, "consumerPid");
    let pids = ("", consumer_pid.as_str());
    let caller = match caller(&state, &headers).await {
        Ok(c) => c,
        Err(e) => return transfer_failed(e, pids),
    };
    let msg = match message(&body, "TransferRequestMessage") {
        Ok(m) => m,
        Err(reason) => return transfer_error(StatusCode::BAD_REQUEST, pids, reason),
    };
    match state
        .service
        .dsp_request_transfer(&caller, &msg, &crate::base_url(&state))
        .await
    {
        Ok(t) => (StatusCode::CREATED, Json(t)).into_response(),
        Err(e) => transfer_failed(e, pids),
    }
}

async fn transfer(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Response {
    let result = match caller(&state, &headers).await {
        Ok(c) => state.service.dsp_get_transfer(&c, &pid).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => Json(t).into_response(),
        Err(e) => transfer_failed(e, (&pid, "")),
    }
}

async fn transfer_message(
    state: &AppState,
    headers: &HeaderMap,
    pid: &str,
    body: &[u8],
    kind: TransferMessage,
) -> Response {
    let consumer_pid = pid_in(body, "consumerPid");
    let pids = (pid, consumer_pid.as_str());
    let caller = match caller(state, headers).await {
        Ok(c) => c,
        Err(e) => return transfer_failed(e, pids),
    };
    let msg = match message(body, kind.type_name()) {
        Ok(m) => m,
        Err(reason) => return transfer_error(StatusCode::BAD_REQUEST, pids, reason),
    };
    match state
        .service
        .dsp_transfer_message(&caller, pid, kind, &msg)
        .await
    {
        Ok(t) => Json(t).into_response(),
        Err(e) => transfer_failed(e, pids),
    }
}

async fn transfer_start(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    transfer_message(&state, &headers, &pid, &body, TransferMessage::Start).await
}

async fn transfer_completion(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    transfer_message(&state, &headers, &pid, &body, TransferMessage::Completion).await
}

async fn transfer_suspension(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    transfer_message(&state, &headers, &pid, &body, TransferMessage::Suspension).await
}

async fn transfer_termination(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    body: Bytes,
) -> Response {
    transfer_message(&state, &headers, &pid, &body, TransferMessage::Termination).await
}

/// The data address of an `HttpData-PULL` transfer: the transfer's data
/// token (`Authorization: Bearer`) and the participant's signed token
/// (`CityTrust-Participant`) naming the organisation the agreement is for;
/// then a governed read like any other (the agreement's purpose and level
/// unless the read names others), logged before its first byte.
async fn transfer_data(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
    ApiQuery(mut params): ApiQuery<DataParams>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::from(ServiceError::NotFound(format!("transfer '{pid}'")));
    let participant = headers
        .get(PARTICIPANT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|t| format!("Bearer {t}"));
    let caller = state
        .service
        .dsp_caller(participant.as_deref(), &crate::base_url(&state))
        .await?
        .ok_or_else(not_found)?;
    let data_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(not_found)?;
    let reader = state
        .service
        .dsp_transfer_reader(
            &caller,
            &pid,
            data_token,
            params.purpose.as_deref(),
            params.level,
        )
        .await?;
    params.purpose.get_or_insert(reader.purpose.clone());
    params.level.get_or_insert(reader.level);
    let path = format!("/dsp/transfers/{pid}/data");
    serve_data(&state, &reader.actor, &reader.dataset_id, params, &path).await
}

/// `GET {callback}/negotiations/{pid}`: a partner asks this trust, as its
/// consumer, how a negotiation stands.
async fn callback_negotiation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(pid): Path<String>,
) -> Response {
    let result = match caller(&state, &headers).await {
        Ok(c) => state.service.dsp_callback_negotiation(&c, &pid).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(n) => Json(n).into_response(),
        Err(e) => negotiation_failed(e, ("", &pid)),
    }
}

/// A partner's message to this trust as its consumer.
async fn callback_message(
    state: &AppState,
    headers: &HeaderMap,
    area: &str,
    pid: &str,
    kind: &str,
    body: &[u8],
) -> Response {
    let expected = match (area, kind) {
        ("negotiations", "agreement") => "ContractAgreementMessage",
        ("negotiations", "events") => "ContractNegotiationEventMessage",
        ("negotiations", "termination") => "ContractNegotiationTerminationMessage",
        ("negotiations", "offers") => "ContractOfferMessage",
        ("transfers", "start") => "TransferStartMessage",
        ("transfers", "completion") => "TransferCompletionMessage",
        ("transfers", "suspension") => "TransferSuspensionMessage",
        ("transfers", "termination") => "TransferTerminationMessage",
        _ => "",
    };
    let provider_pid = pid_in(body, "providerPid");
    let pids = (provider_pid.as_str(), pid);
    let fail = |e: DspError| {
        if area == "transfers" {
            transfer_failed(e, pids)
        } else {
            negotiation_failed(e, pids)
        }
    };
    if expected.is_empty() {
        return fail(DspError::NotFound);
    }
    let caller = match caller(state, headers).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let msg = match message(body, expected) {
        Ok(m) => m,
        Err(reason) => return fail(DspError::BadRequest(reason)),
    };
    if msg.get("consumerPid").and_then(Value::as_str) != Some(pid) {
        return fail(DspError::BadRequest(
            "the consumerPid must be the one in the path".into(),
        ));
    }
    match state
        .service
        .dsp_callback(&caller, area, pid, kind, &msg)
        .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => fail(e),
    }
}

async fn callback_negotiation_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((pid, kind)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    callback_message(&state, &headers, "negotiations", &pid, &kind, &body).await
}

async fn callback_transfer_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((pid, kind)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    callback_message(&state, &headers, "transfers", &pid, &kind, &body).await
}
