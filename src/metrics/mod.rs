//! Prometheus metrics with MindIE's exact names, types, buckets and `model_name` label
//! (SPEC §3): registered once in [`names`], rendered as classic Prometheus text for `/metrics`.
//! Requests feed the counters and histograms (`http::session`); [`collector`] refreshes the
//! gauges from the engine once a second; [`recent`] keeps the rolling TTFT/TBT averages of
//! the management plane's `/metrics-json`. The plane's route is `mgmt::metrics_plane` (this
//! module renders; it knows nothing of HTTP errors).

pub mod collector;
pub mod names;
pub mod recent;

pub use names::Metrics;

/// Content type of the classic Prometheus text exposition (what prometheus-cpp serves).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
