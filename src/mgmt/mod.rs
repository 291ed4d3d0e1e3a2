//! The management plane (SPEC §2): health and readiness, the config view the Controller reads,
//! the resource status, and `/stopService`. Routes live in [`health`], [`status`] and [`stop`];
//! [`router`] assembles them over one shared [`MgmtState`].

pub mod health;
pub mod status;
pub mod stop;

use crate::config::Loaded;
use crate::engine::EngineMonitor;
use crate::lifecycle::Lifecycle;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

/// What the management routes read.
#[derive(Clone)]
pub struct MgmtState {
    pub config: Arc<Loaded>,
    pub engine: Arc<dyn EngineMonitor>,
    pub life: Arc<Lifecycle>,
    /// How long a graceful `/stopService` waits for in-flight requests.
    pub drain_deadline: Duration,
}

/// The management routes.
pub fn router(state: MgmtState) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v1/config", get(status::config_view))
        .route("/v1/status", get(status::status_v1))
        .route("/v2/status", get(status::status_v2))
        .route("/stopService", get(stop::stop_service))
        .with_state(state)
}
