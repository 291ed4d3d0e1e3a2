//! GET `/metrics-json` (SPEC §2): the few numbers MindIE's Coordinator balances load on, as a
//! Prometheus-style vector: `TTFT` and `TBT` (ms, averaged over the last 1000 requests),
//! `waitingInferRequestNum`, `processingInferRequestNum` and `remainBlocks` (from the engine
//! now). Values are strings. 503 when metrics are turned off (`MIES_SERVICE_MONITOR_MODE=0`).

use super::MgmtState;
use crate::http::error::ApiError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

fn sample(name: &str, instance: &str, value: String) -> Value {
    json!({
        "metric": [{ "__name__": name, "job": "node", "instance": instance }],
        "value": value,
    })
}

/// Formats a millisecond average the way a scraper can parse it (no exponent).
fn ms(v: f64) -> String {
    format!("{v:.3}")
}

pub async fn metrics_json(State(s): State<MgmtState>) -> Response {
    let Some(m) = &s.metrics else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metrics are turned off: environment variable MIES_SERVICE_MONITOR_MODE is 0 (unset it or set it to 1)",
        )
        .into_response();
    };
    let sc = &s.config.config.server_config;
    let instance = format!("{}:{}", sc.management_ip(), sc.management_port());
    let lat = m.recent.averages();
    let st = s.engine.status();
    Json(json!({
        "resultType": "vector",
        "result": [
            sample("TTFT", &instance, ms(lat.ttft_ms)),
            sample("TBT", &instance, ms(lat.tbt_ms)),
            sample("waitingInferRequestNum", &instance, st.waiting.to_string()),
            sample("processingInferRequestNum", &instance, st.running.to_string()),
            sample("remainBlocks", &instance, st.free_npu_blocks.to_string()),
        ],
    }))
    .into_response()
}
