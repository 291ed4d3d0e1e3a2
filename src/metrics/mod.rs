//! Prometheus metrics with MindIE's exact names, types, buckets and `model_name` label
//! (SPEC §3): registered once in [`names`], rendered as classic Prometheus text for `/metrics`.
//! Requests feed the counters and histograms (`http::session`); [`collector`] refreshes the
//! gauges from the engine once a second; [`recent`] keeps the rolling TTFT/TBT averages of
//! the management plane's `/metrics-json`.

pub mod collector;
pub mod names;
pub mod recent;

pub use names::Metrics;

/// Content type of the classic Prometheus text exposition (what prometheus-cpp serves).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

use crate::http::error::ApiError;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The metrics plane: GET `/metrics`. `None` when metrics are turned off
/// (`MIES_SERVICE_MONITOR_MODE=0`): the route then says so with 503.
pub fn router(metrics: Option<Arc<Metrics>>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Option<Arc<Metrics>>>) -> Response {
    let Some(m) = metrics else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Metrics are turned off: environment variable MIES_SERVICE_MONITOR_MODE is 0 (unset it or set it to 1)",
        )
        .into_response();
    };
    match m.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}"),
        )
        .into_response(),
    }
}
