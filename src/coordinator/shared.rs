//! What every part of the Coordinator shares: configuration, the instance registry, waiting
//! requests, the clients toward instances, admission, the `/dresult` readers by instance, and
//! the Coordinator's own counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use super::config::{CoordinatorConfig, DeployMode};
use super::own_metrics::OwnMetrics;
use super::registry::Registry;
use super::waiters::Waiters;
use crate::motor::client::HttpClient;

/// The Coordinator's state.
pub struct Shared {
    pub cfg: CoordinatorConfig,
    pub registry: Registry,
    pub waiters: Waiters,
    /// Toward instances' business ports (`mindie_client` TLS).
    pub business: HttpClient,
    /// Toward instances' metrics (and management) ports (`mindie_mangment` TLS).
    pub management: HttpClient,
    /// `/dresult` reader of each decode instance, by id.
    readers: Mutex<HashMap<u64, CancellationToken>>,
    /// User requests being served now.
    pub in_flight: AtomicUsize,
    pub metrics: OwnMetrics,
    /// Whether the predict port listens (readiness needs it).
    pub predict_listening: std::sync::atomic::AtomicBool,
    /// Ends everything.
    pub stop: CancellationToken,
    id_base: u64,
    id_counter: AtomicU64,
}

impl Shared {
    pub fn new(
        cfg: CoordinatorConfig,
        business: HttpClient,
        management: HttpClient,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let (hi, _) = uuid::Uuid::new_v4().as_u64_pair();
        Ok(Arc::new(Shared {
            cfg,
            registry: Registry::default(),
            waiters: Waiters::default(),
            business,
            management,
            readers: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
            metrics: OwnMetrics::new()?,
            predict_listening: false.into(),
            stop,
            // Random high bits per run, a counter in the low ones: unique in this run and
            // unlikely to meet a previous run's ids still known to instances.
            id_base: hi & 0x7fff_ffff_0000_0000,
            id_counter: AtomicU64::new(1),
        }))
    }

    /// A fresh `req-id`: a decimal u64 (it passes the instance's hex-digit check).
    pub fn next_req_id(&self) -> String {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        (self.id_base | n).to_string()
    }

    /// The `/dresult` readers by decode instance.
    pub fn readers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, CancellationToken>> {
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Single-node deployment (instances serve whole requests).
    pub fn single_node(&self) -> bool {
        self.cfg.deploy_mode == DeployMode::SingleNode
    }

    /// The admission limit for this deployment mode.
    pub fn max_requests(&self) -> usize {
        if self.single_node() {
            self.cfg.single_node_max_requests
        } else {
            self.cfg.max_requests
        }
    }

    /// Whether the Coordinator can serve: instances as readiness needs them and the predict
    /// port listening.
    pub fn ready(&self) -> bool {
        self.predict_listening.load(Ordering::Relaxed) && self.registry.ready(self.single_node())
    }
}
