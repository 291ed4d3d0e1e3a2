//! `/health`, `/v2/health/live`, `/v2/health/ready`: the truth about whether this instance
//! should get traffic. Stopping or an engine that is not ready makes them fail.

use super::MgmtState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

fn unavailable(message: String) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "message": message })),
    )
        .into_response()
}

/// Why this instance should not take traffic, if it should not.
fn not_ready_reason(s: &MgmtState) -> Option<String> {
    if s.life.is_stopping() {
        return Some("Service is stopping".into());
    }
    let st = s.engine.status();
    (!st.ready).then(|| {
        format!(
            "Service is not ready: {}",
            st.reason.unwrap_or_else(|| "engine not ready".into())
        )
    })
}

/// GET `/health`: 200 with an empty body when serving; 503 otherwise.
pub async fn health(State(s): State<MgmtState>) -> Response {
    match not_ready_reason(&s) {
        None => StatusCode::OK.into_response(),
        Some(m) => unavailable(m),
    }
}

/// GET `/v2/health/live`: the process answers; 503 only while stopping.
pub async fn live(State(s): State<MgmtState>) -> Response {
    if s.life.is_stopping() {
        return unavailable("Service is stopping".into());
    }
    (
        StatusCode::OK,
        Json(json!({ "message": "Service is alive" })),
    )
        .into_response()
}

/// GET `/v2/health/ready`: 200 when requests will be served, else 503 with the reason.
pub async fn ready(State(s): State<MgmtState>) -> Response {
    match not_ready_reason(&s) {
        None => (
            StatusCode::OK,
            Json(json!({ "message": "Service is ready" })),
        )
            .into_response(),
        Some(m) => unavailable(m),
    }
}
