//! `mindieservice_daemon` as a library: everything the binary runs, so integration tests and
//! benches can reach it.
//!
//! Layers (see `DESIGN.md` in the shared folder), top to bottom:
//! - [`daemon`]: start order, shutdown order, task supervision; `daemon::engine` is the one
//!   place that turns `config.json` into a running engine (backend kind, options, limits).
//! - [`http`]: listeners (one accept loop per plane, own TLS each), admission limits, errors,
//!   SSE; `http::session` is one request's life (tokenize, drive the [`engine::Inference`]
//!   seam, detokenize, stop strings, timeouts, metrics); one folder per wire flavour
//!   (`openai`, `tgi`, `vllm`, `native`, `triton`, `tokenize`); `http::business_router`.
//! - [`mgmt`]: the management plane (health, status, config view, stopService, PD role
//!   posts) and the metrics plane's route.
//! - [`pd`]: prefill/decode (dmi) protocol pieces: `/dresult` frames and hub, DMI headers,
//!   role assignment and peer links.
//! - [`metrics`]: MindIE's Prometheus metric names, registered and rendered in one place.
//! - [`engine`]: the engine thread and its handle. The business routes see it only through the
//!   [`engine::Inference`] trait (a remote instance can implement it too); KV hand-off commands
//!   for PD (`engine::handoff`).
//! - [`scheduler`]: continuous batching under `ScheduleConfig` ([`scheduler::SchedulerLimits`]),
//!   paged KV blocks, prefix cache, KV leases and adopted sequences (`scheduler::handoff`).
//! - [`backend`]: model execution behind one trait; [`backend::BackendKind`] and
//!   [`backend::load`] build one (CPU, mock; Ascend's slot); the CPU backend also runs a range
//!   of layers (`CpuBackend::step_stage`) for a model split across nodes.
//! - [`tokenizer`]: HF tokenizer, chat templates, incremental detokenizer, stop strings, pool.
//! - [`config`]: MindIE's `config.json` ([`config::Config`]) — schema, paths, env, validation.
//!   (The HF model's `config.json` is `backend::cpu::HfModelConfig`.)
//! - [`pd`]: prefill/decode disaggregation (`inferMode: "dmi"`): roles, DMI headers,
//!   `/dresult`, the P→D hand-off (MindIE's and vLLM's protocols) and KV leases.
//! - [`cluster`]: the inter-instance gRPC layer for PD (MindIE's `DecodeService` /
//!   `PrefillService` and our `KvTransfer`) served and dialled over our own rustls.
//! - [`security`]: permission checks on every trusted file, rustls configs (mTLS, CRL, keys).
//! - [`motor`]: what MindIE-Motor's Controller and Coordinator share: their JSON config files
//!   with Motor's permission rules, `tls_config` items, an HTTP(S) client toward instances, and
//!   the instance list the Controller pushes to the Coordinator.
//! - [`controller`]: the `controller` subcommand (MindIE-Motor's Controller).
//! - [`coordinator`]: the `coordinator` subcommand (MindIE-Motor's Coordinator).
//! - [`multinode`]: multi-node inference (one model across machines): the per-instance
//!   ranktable (`RANK_TABLE_FILE`) and this node's place in it.
//! - [`lifecycle`]: readiness, stopping, in-flight accounting and the shutdown trigger.
//!
//! `unsafe` is denied crate-wide (`Cargo.toml` `[lints]`) except in the CPU kernel and mmap
//! modules that opt in, each block with a `// SAFETY:` comment.

pub mod backend;
pub mod check;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod coordinator;
pub mod daemon;
pub mod engine;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod mgmt;
pub mod motor;
pub mod multinode;
pub mod pd;
pub mod scheduler;
pub mod security;
pub mod tokenizer;
