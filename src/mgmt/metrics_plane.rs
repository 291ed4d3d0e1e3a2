//! The metrics plane (`managementIpAddress:metricsPort`): GET `/metrics`, MindIE's metrics as
//! classic Prometheus text (rendered by [`crate::metrics`]).

use crate::http::error::ApiError;
use crate::metrics::{self, Metrics};
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
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics encoding failed: {e}"),
        )
        .into_response(),
    }
}
