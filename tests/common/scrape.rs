//! Reading the daemon's own accounting: Prometheus samples from the metrics plane and the
//! engine's numbers from the management plane's `/v1/status`.

#![allow(dead_code)]

use std::net::SocketAddr;

/// The metrics plane's `/metrics` text; panics unless it answers 200.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let r = super::client::get(addr, "/metrics").await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// The value of the (single) sample of `name` in an exposition, e.g. `request_received_total`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// [`sample`] of a counter as a whole number; panics when the series is missing.
pub fn counter(text: &str, name: &str) -> u64 {
    sample(text, name).unwrap_or_else(|| panic!("no {name} in:\n{text}")) as u64
}

/// `/v1/status`'s `resource` object (free/total blocks, running/waiting requests).
pub async fn resource(mgmt: SocketAddr) -> serde_json::Value {
    let r = super::client::get(mgmt, "/v1/status").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    v.get("resource")
        .cloned()
        .unwrap_or_else(|| panic!("no resource in /v1/status: {v}"))
}
