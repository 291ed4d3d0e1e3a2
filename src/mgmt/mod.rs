//! The management plane (SPEC §2): health and readiness (with stuck-engine detection), the
//! timed probe inference, model readiness and slots, `/info`, `/metrics-json`, the config
//! view the Controller reads, the resource status, the engine running status, the run-time
//! log level, `/stopService` and, in dmi mode, the PD role posts ([`role`]). [`router`]
//! assembles the routes over one shared [`MgmtState`]; [`condition`] judges the engine for
//! every health answer.

pub mod condition;
pub mod health;
pub mod log_level;
pub mod metrics_json;
pub mod metrics_plane;
pub mod model;
pub mod probe;
pub mod process;
pub mod role;
pub mod running;
pub mod status;
pub mod stop;

use crate::config::Loaded;
use crate::engine::{EngineHandle, EngineMonitor};
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::pd::role::RoleState;
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
    /// Submits `/health/timed` probe inferences (`None`: no engine runs).
    pub probe: Option<EngineHandle>,
    /// Request metrics, for `/metrics-json` (`None`: metrics are turned off).
    pub metrics: Option<Arc<Metrics>>,
    /// No engine progress this long while work waits means stuck (`None`: not checked).
    /// See [`condition`].
    pub stall_after: Option<Duration>,
    /// The run-time log level (`None`: logging was not set up by the daemon).
    pub log: Option<Arc<log_level::LogControl>>,
    /// The PD role and peer links in dmi mode (`None` in standard mode: no role routes, and
    /// `/v1/status` keeps its standard shape).
    pub pd: Option<RoleState>,
    /// A multi-node master's view of its nodes, shown as `/v1/status`'s `multiNode` (`None`:
    /// a single node).
    pub multinode: Option<Arc<dyn NodeView>>,
}

/// Something that describes the nodes of a multi-node instance for `/v1/status`.
pub trait NodeView: Send + Sync {
    fn json(&self) -> serde_json::Value;
}

/// The management routes (with the role routes in dmi mode).
pub fn router(state: MgmtState) -> Router {
    let routes = Router::new()
        .route("/health", get(health::health))
        .route("/health/timed", get(probe::timed_default))
        .route("/health/{probe}", get(probe::timed))
        .route("/v2/health/live", get(health::live))
        .route("/v2/health/ready", get(health::ready))
        .route("/v2/models/{model}/ready", get(model::ready))
        .route("/v2/models/{model}/getSlotCount", get(model::slot_count))
        .route("/info", get(model::info))
        .route("/metrics-json", get(metrics_json::metrics_json))
        .route("/v1/config", get(status::config_view))
        .route("/v1/status", get(status::status_v1))
        .route("/v2/status", get(status::status_v2))
        .route("/v1/process", get(process::process_view))
        .route(
            "/v1/engine-server/running-status",
            get(running::running_status),
        )
        .route(
            "/v1/log-level",
            get(log_level::get_level)
                .post(log_level::set_level)
                .delete(log_level::reset_level),
        )
        .route("/stopService", get(stop::stop_service));
    let routes = if state.pd.is_some() {
        routes.merge(role::routes())
    } else {
        routes
    };
    routes.with_state(state)
}
