//! GET `/stopService[?mode=Force]`. Graceful: refuse new work, wait for in-flight requests (up
//! to the drain deadline), answer 200, then shut down. Force: answer at once and stop without
//! draining.

use super::MgmtState;
use crate::lifecycle::StopMode;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Debug, Deserialize)]
pub struct StopQuery {
    mode: Option<String>,
}

/// The shutdown is pulled a moment after the reply so the reply reaches the caller.
const REPLY_GRACE: Duration = Duration::from_millis(200);

pub async fn stop_service(State(s): State<MgmtState>, Query(q): Query<StopQuery>) -> Response {
    let mode = match q.mode.as_deref() {
        None | Some("") => StopMode::Graceful,
        Some(m) if m.eq_ignore_ascii_case("force") => StopMode::Force,
        Some(m) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!("mode {m:?}: allowed Force or no mode"),
                    "error_type": "Input Validation Error",
                })),
            )
                .into_response()
        }
    };
    tracing::warn!(?mode, "stopService requested");
    s.life.begin_stopping();
    let message = match mode {
        StopMode::Force => "Service is stopping (Force)".to_string(),
        StopMode::Graceful => {
            if s.life.wait_idle(s.drain_deadline).await {
                "Service stopped: all requests finished".to_string()
            } else {
                format!(
                    "Service stopping: {} request(s) still running after {} s",
                    s.life.inflight(),
                    s.drain_deadline.as_secs()
                )
            }
        }
    };
    let life = s.life.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REPLY_GRACE).await;
        life.trigger(mode);
    });
    (StatusCode::OK, Json(json!({ "message": message }))).into_response()
}
