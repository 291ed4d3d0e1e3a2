//! What the master's planes see of its slaves: the engine's health with the slaves folded in
//! ([`MasterMonitor`]: a slave that is not ready makes the instance not ready, so
//! `/v2/health/ready` answers 503 and `/health` 500), the business gate that answers new
//! requests 503 at once while a slave is missing ([`gate`]), and the `multiNode` part of
//! `/v1/status` ([`MasterView`]: each node's layers, weight bytes, KV blocks, memory).

use super::slaves::SlaveSet;
use crate::engine::{EngineHandle, EngineInfo, EngineMonitor, EngineStatus};
use crate::mgmt::NodeView;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::ops::Range;
use std::sync::Arc;

/// The engine's status, not ready while a slave is not.
pub struct MasterMonitor {
    pub engine: EngineHandle,
    pub set: Arc<SlaveSet>,
}

impl EngineMonitor for MasterMonitor {
    fn status(&self) -> EngineStatus {
        let mut st = self.engine.status();
        if let (true, Err(why)) = (st.ready, self.set.all_ready()) {
            st.ready = false;
            st.reason = Some(why);
            st.node_down = true;
        }
        st
    }

    fn info(&self) -> EngineInfo {
        self.engine.info()
    }
}

/// Business middleware: 503 with the reason while a slave is not ready.
pub async fn gate(State(set): State<Arc<SlaveSet>>, req: Request, next: Next) -> Response {
    match set.all_ready() {
        Ok(()) => next.run(req).await,
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(json!({ "error": format!("Service is not ready: {why}"), "error_type": "Service Unavailable" })),
        )
            .into_response(),
    }
}

/// The master's own share, as loaded.
#[derive(Debug, Clone)]
pub struct LocalShare {
    pub addr: String,
    pub layers: Range<usize>,
    pub weight_bytes: u64,
    pub kv_blocks: usize,
}

/// `/v1/status`'s `multiNode` object on the master.
pub struct MasterView {
    pub local: LocalShare,
    pub set: Arc<SlaveSet>,
    pub num_layers: usize,
    /// Devices (ranks) in the ranktable.
    pub world_size: usize,
}

impl NodeView for MasterView {
    fn json(&self) -> Value {
        let l = &self.local;
        json!({
            "role": "master",
            "ready": self.set.all_ready().is_ok(),
            "numLayers": self.num_layers,
            "worldSize": self.world_size,
            "master": {
                "addr": l.addr,
                "layers": [l.layers.start, l.layers.end],
                "holdsEmbeddingAndHead": true,
                "weight_bytes": l.weight_bytes,
                "kv_blocks": l.kv_blocks,
                "rss_bytes": crate::mgmt::process::rss_bytes(),
            },
            "slaves": self.set.views(),
            "traffic": self.set.traffic(),
        })
    }
}
