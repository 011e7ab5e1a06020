//! The Dataspace Protocol over HTTP (DSP 2025-1), provider side, first
//! part: `/.well-known/dspace-version` and the catalogue
//! (`POST /dsp/catalog/request`, `GET /dsp/catalog/datasets/{id}`). Bad
//! messages and unknown datasets answer DSP's `CatalogError`, not problem+json.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use citytrust_service::ServiceError;
use citytrust_service::dataspace::DSP_CONTEXT;
use serde_json::{Value, json};

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/dspace-version", get(versions))
        .route("/dsp/catalog/request", post(catalog_request))
        .route("/dsp/catalog/datasets/{id}", get(dataset))
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
