//! Multi-node inference: one model across several machines (SPEC-PD §5).
pub mod proto;
pub mod split;
pub mod wire;
pub mod slaves;
pub mod service;
pub mod pipeline;
pub mod slave;
pub mod monitor;
pub mod slave_mgmt;
