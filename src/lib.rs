//! `mindieservice_daemon` as a library: everything the binary runs, so integration tests and
//! benches can reach it.
//!
//! Layers (see `DESIGN.md` in the shared folder):
//! - [`config`]: MindIE's `config.json` — schema, path resolution, env overrides, validation.
//! - [`security`]: permission checks on every trusted file, rustls configs (mTLS, CRL, encrypted keys).
//! - [`http`]: listeners (one accept loop per plane, own TLS each), admission limits, errors.
//! - [`mgmt`]: the management plane (health, status, config view, stopService).
//! - [`metrics`]: MindIE's Prometheus metric names, registered in one place.
//! - [`engine`]: the protocol-neutral view of the inference engine the planes talk to.
//! - [`scheduler`]: continuous batching under `ScheduleConfig`, paged KV blocks, prefix cache.
//! - [`backend`]: model execution behind one trait (CPU, mock; Ascend later).
//! - [`lifecycle`]: readiness, stopping, in-flight accounting and the shutdown trigger.
//! - [`tokenizer`]: HF tokenizer, chat templates, incremental detokenizer, stop strings, pool.
//! - [`daemon`]: start order, shutdown order, task supervision.

pub mod backend;
pub mod check;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod mgmt;
pub mod scheduler;
pub mod security;
pub mod tokenizer;
