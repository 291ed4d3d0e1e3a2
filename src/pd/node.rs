//! One dmi instance's PD state, shared by its business gate, its gRPC services and its
//! management routes: the engine, the role, the `/dresult` reader, links to peers, the
//! prefill side's lease book and the decode side's transfers in flight.

use super::dresult::DresultHub;
use super::links::Links;
use super::role::RoleState;
use crate::cluster::kv::KvLayout;
use crate::engine::handle::RequestId;
use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use axum::Router;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What a lease lives past `kv_trans_timeout`: the decode side accepts the hand-off,
/// dials back and starts its pull in this time (a pull still running at the expiry fails).
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// Settings of a dmi instance (config.json).
#[derive(Debug, Clone)]
pub struct PdSettings {
    /// `ServerConfig.ipAddress`: what this instance calls itself (`pNodeAddr`).
    pub ip: Ipv4Addr,
    /// `ServerConfig.interCommPort`.
    pub inter_comm_port: u16,
    /// `kv_trans_timeout`: the longest a KV pull may take.
    pub kv_trans_timeout: Duration,
    /// `kv_link_timeout`: how long linking to a peer is retried.
    pub kv_link_timeout: Duration,
    /// `openAiSupport == "vllm"` (chat `msgType` 5, else 4).
    pub vllm_openai: bool,
    /// `maxRequestLength` in bytes.
    pub max_request_bytes: usize,
    pub model_name: String,
}

impl PdSettings {
    /// How long a prefilled request's KV waits for its pull: `kv_trans_timeout` plus a
    /// margin for the decode side's dial and queueing ([`LEASE_MARGIN`]).
    pub fn lease_ttl(&self) -> Duration {
        self.kv_trans_timeout + LEASE_MARGIN
    }
}

/// Requests handed on and waiting for their pull, by `req-id` (the prefill side).
#[derive(Default)]
pub struct LeaseBook(Mutex<HashMap<String, RequestId>>);

impl LeaseBook {
    pub fn insert(&self, req_id: &str, engine_id: RequestId) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(req_id.to_string(), engine_id);
        }
    }

    pub fn get(&self, req_id: &str) -> Option<RequestId> {
        self.0.lock().ok().and_then(|m| m.get(req_id).copied())
    }

    pub fn remove(&self, req_id: &str) -> Option<RequestId> {
        self.0.lock().ok().and_then(|mut m| m.remove(req_id))
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Transfers in flight on the decode side, by `req-id`, so `stopInfer` can end one before
/// its generation starts.
#[derive(Default)]
pub struct Transfers(Mutex<HashMap<String, CancellationToken>>);

impl Transfers {
    pub fn start(&self, req_id: &str) -> CancellationToken {
        let t = CancellationToken::new();
        if let Ok(mut m) = self.0.lock() {
            m.insert(req_id.to_string(), t.clone());
        }
        t
    }

    pub fn finish(&self, req_id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(req_id);
        }
    }

    /// Cancels the transfer of `req_id`; false if there is none.
    pub fn cancel(&self, req_id: &str) -> bool {
        match self.0.lock().ok().and_then(|mut m| m.remove(req_id)) {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// A dmi instance's PD state.
pub struct PdNode {
    pub settings: PdSettings,
    pub engine: EngineHandle,
    pub role: RoleState,
    pub hub: DresultHub,
    pub links: Arc<Links>,
    pub layout: KvLayout,
    pub leases: LeaseBook,
    pub transfers: Transfers,
    pub metrics: Option<Arc<Metrics>>,
    /// The business routes without the PD gate: what a decode instance replays a handed-over
    /// request through (set once the router is built).
    pub replay: OnceLock<Router>,
}

impl crate::http::session::StopHook for PdNode {
    /// `stopInfer {"id": <req-id>}`: frees a prefill lease waiting for its pull, or ends a
    /// decode instance's transfer in flight.
    fn stop(&self, key: &str) -> bool {
        let mut hit = self.transfers.cancel(key);
        if let Some(id) = self.leases.remove(key) {
            self.engine.release_kv_detached(id);
            hit = true;
        }
        hit
    }
}
