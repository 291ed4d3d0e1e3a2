//! The status port (probes; SPEC-CLUSTER §5): `/v1/startup`, `/v1/health`, `/v2/health/live`
//! always 200; `/v1/readiness` and `/v2/health/ready` 200 only when a prefill instance is
//! linked with a decode instance whose `/dresult` is open (single node: any instance) and
//! the predict port listens, else 503; `/v2/models/{m}/ready` also needs a listed instance
//! serving model `m`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::shared::Shared;

/// The status port's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/startup", get(alive))
        .route("/v1/health", get(alive))
        .route("/v2/health/live", get(alive))
        .route("/v1/readiness", get(ready))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{model}/ready", get(model_ready))
        .with_state(shared)
}

async fn alive() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(s): State<Arc<Shared>>) -> StatusCode {
    if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_ready(State(s): State<Arc<Shared>>, Path(model): Path<String>) -> StatusCode {
    if s.ready() && s.registry.all().iter().any(|m| m.model_name == model) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
