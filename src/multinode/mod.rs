//! Multi-node inference: one model across several machines (SPEC-PD §5).

pub mod ranktable;
