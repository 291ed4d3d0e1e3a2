//! The Coordinator's own request counters, under the names the instances use for theirs
//! (`request_received_total`, `request_success_total`, `request_failed_total`), so the
//! aggregated `/metrics` counts user requests once, as the Coordinator saw them.

use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

/// The counters and their registry.
pub struct OwnMetrics {
    registry: Registry,
    pub received: IntCounter,
    pub success: IntCounter,
    pub failed: IntCounter,
}

impl OwnMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(OwnMetrics {
            received: counter("request_received_total", "Count of received requests.")?,
            success: counter(
                "request_success_total",
                "Count of successfully processed requests.",
            )?,
            failed: counter("request_failed_total", "Count of failed requests.")?,
            registry,
        })
    }

    /// Prometheus text of the counters.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
