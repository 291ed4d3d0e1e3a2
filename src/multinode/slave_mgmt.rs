//! A slave's management plane: it runs no business plane (MindIE's slaves serve no HTTP at
//! all; we keep management so an operator and Kubernetes probes can see it). `/health` and
//! `/v2/health/ready` answer 200 once the slave has joined its master and loaded its layers
//! (503 before, or while the link is lost), `/v2/health/live` 200 while the process runs, and
//! `/v1/status` (`/v2/status`) shows its role, master, layers, weight bytes, KV blocks and
//! resident memory. Everything else is 404.

use super::slave::SlaveStatus;
use crate::http::error::not_found;
use crate::mgmt::process::rss_bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::PoisonError;

/// The slave's management routes.
pub fn router(status: SlaveStatus) -> Router {
    Router::new()
        .route("/health", get(ready))
        .route("/v2/health/ready", get(ready))
        .route("/v2/health/live", get(live))
        .route("/v1/status", get(status_json))
        .route("/v2/status", get(status_json))
        .fallback(not_found)
        .with_state(status)
}

fn joined(s: &SlaveStatus) -> bool {
    s.lock().unwrap_or_else(PoisonError::into_inner).joined
}

async fn ready(State(s): State<SlaveStatus>) -> Response {
    if joined(&s) {
        (StatusCode::OK, "Slave node is ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "Slave node has not joined its master",
        )
            .into_response()
    }
}

async fn live() -> Response {
    (StatusCode::OK, "Service is alive").into_response()
}

async fn status_json(State(s): State<SlaveStatus>) -> Json<serde_json::Value> {
    let st = s.lock().unwrap_or_else(PoisonError::into_inner).clone();
    Json(json!({
        "service": {
            "roleStatus": if st.joined { "RoleReady" } else { "RoleUnknown" },
            "currentRole": "slave",
        },
        "multiNode": {
            "role": "slave",
            "joined": st.joined,
            "master": st.master,
            "layers": st.layers,
            "holdsEmbeddingAndHead": false,
            "weight_bytes": st.weight_bytes,
            "kv_blocks": st.kv_blocks,
            "rss_bytes": rss_bytes(),
            "device": st.device,
            "steps": st.steps,
            "lastError": st.last_error,
        },
    }))
}
