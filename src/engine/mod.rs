//! The protocol-neutral engine as the planes see it. [`EngineMonitor`] is what management and
//! metrics read: readiness, the resource picture (queues, KV blocks), what runs the model
//! ([`EngineInfo`]) and when the engine last made progress (stuck-step detection).

use serde::Serialize;
use std::time::{Duration, Instant};

/// A snapshot of the engine's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EngineStatus {
    /// The model is loaded and steps run.
    pub ready: bool,
    /// Why not ready, when not.
    pub reason: Option<String>,
    pub waiting: usize,
    pub running: usize,
    pub swapped: usize,
    pub free_npu_blocks: usize,
    pub total_npu_blocks: usize,
    pub free_cpu_blocks: usize,
    pub total_cpu_blocks: usize,
    /// Sequences that may still join the running batch.
    pub free_slots: usize,
    /// Preemptions since start (`num_preemptions_total`).
    pub preemptions_total: u64,
    /// Prompt tokens looked up in the prefix cache (`all_radix_match_num`).
    pub prefix_query_tokens: u64,
    /// Prompt tokens found there (`npu_radix_match_hit_num`).
    pub prefix_hit_tokens: u64,
    /// Not ready because another node of this instance (a multi-node slave) is down: health
    /// says abnormal, readiness 503, liveness stays 200 (restarting this process would not help).
    pub node_down: bool,
    /// Steps run since start (health: the engine makes progress).
    pub steps_total: u64,
    /// When the engine last made progress: a step finished, or it had nothing to do. `None`
    /// before the engine thread ran. It stops moving while a step hangs, because the engine
    /// publishes nothing then (see [`EngineStatus::stalled_for`]).
    #[serde(skip)]
    pub progress_at: Option<Instant>,
}

impl EngineStatus {
    /// Fraction of KV blocks in use (0 when there are none).
    pub fn cache_usage(&self) -> f64 {
        if self.total_npu_blocks == 0 {
            0.0
        } else {
            1.0 - self.free_npu_blocks as f64 / self.total_npu_blocks as f64
        }
    }

    /// How long the engine has gone without progress while it has work (`None`: it has no
    /// work, or it never ran). A value that keeps growing means a stuck step.
    pub fn stalled_for(&self, now: Instant) -> Option<Duration> {
        if self.running + self.waiting == 0 {
            return None;
        }
        self.progress_at.map(|t| now.saturating_duration_since(t))
    }

    /// Prefix-cache hit rate over prompt tokens (0 before any lookup).
    pub fn prefix_hit_rate(&self) -> f64 {
        if self.prefix_query_tokens == 0 {
            0.0
        } else {
            self.prefix_hit_tokens as f64 / self.prefix_query_tokens as f64
        }
    }
}

/// What runs the model; fixed once the engine started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    /// Weight storage dtype, e.g. `float32`, `bfloat16`.
    pub dtype: String,
    /// Device kind, e.g. `cpu`, `npu`, or `mock` for the model-free engine.
    pub device: String,
    /// Tokens per KV block.
    pub block_size: usize,
    /// The KV cache's shape, for PD peers to check they can exchange blocks.
    #[serde(skip)]
    pub kv: KvShape,
}

/// The shape of the engine's KV cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvShape {
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub bytes_per_block: usize,
    /// [`crate::backend::BackendInfo::kv_layout`].
    pub layout: String,
}

impl Default for EngineInfo {
    fn default() -> Self {
        Self {
            dtype: "unknown".into(),
            device: "unknown".into(),
            block_size: 0,
            kv: KvShape::default(),
        }
    }
}

/// Read access to the engine's state, shared by every plane.
pub trait EngineMonitor: Send + Sync {
    fn status(&self) -> EngineStatus;

    /// What runs the model (defaults where no engine runs).
    fn info(&self) -> EngineInfo {
        EngineInfo::default()
    }
}

/// Stands in where no engine runs (the model is not loaded): never ready, nothing queued.
#[derive(Debug, Clone)]
pub struct NoEngine {
    pub reason: String,
}

impl EngineMonitor for NoEngine {
    fn status(&self) -> EngineStatus {
        EngineStatus {
            ready: false,
            reason: Some(self.reason.clone()),
            ..EngineStatus::default()
        }
    }
}
pub mod core;
pub mod defaults;
pub mod handle;
pub mod handoff;
pub mod inference;
pub mod json_mode;
pub mod request;
pub mod sampler;
#[cfg(test)]
mod step_error_tests;
#[cfg(test)]
mod test_support;

pub use handle::{EngineHandle, Submission, SubmitError};
pub use handoff::{HandoffError, KvExport};
pub use inference::{Inference, TokenEvents};
pub use request::{Finish, GenRequest, TokenEvent, NO_OUTPUT_LIMIT};
