//! Multi-node inference: one model across several machines (SPEC-PD §5, DESIGN §6). The
//! node holding rank 0 of the ranktable is the master: it serves every plane, runs the only
//! scheduler, and holds the embedding, the first layers, the final norm and the LM head; the
//! slaves hold the remaining layers in contiguous ranges and serve only management. Each
//! engine step the packed batch's hidden states go master → slave → master for each slave in
//! turn over the slave's authenticated `MasterService` stream.
//!
//! - [`ranktable`]: `RANK_TABLE_FILE`, checked, and this node's place in it.
//! - [`split`]: which layers each node holds.
//! - [`proto`]: MindIE's `model_execute_data` messages (the subset used) and this project's
//!   `mindie_rs.pipeline.v1` extension; [`wire`]: a step in those messages.
//! - master side: [`service`] (`MasterService`), [`slaves`] (the slaves' book: links, states,
//!   heartbeats, step waiters), [`pipeline`] (the master's `Backend`), [`monitor`] (health,
//!   business gate, `/v1/status`).
//! - slave side: [`slave`] (join, load, run steps), [`slave_mgmt`] (its management plane).
//!
//! The control plane (registration, init, health, finalise) does not depend on how the
//! activations move: on an NPU backend they would go through HCCL instead of `StageStep`.

pub mod monitor;
pub mod pipeline;
pub mod proto;
pub mod ranktable;
pub mod service;
pub mod slave;
pub mod slave_mgmt;
pub mod slaves;
pub mod split;
pub mod wire;
