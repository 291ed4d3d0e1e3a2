//! Builds the engine a configuration asks for: backend from `backendType` and
//! `modelInstanceType`, KV budget from `cpuMemSize`, scheduler knobs from `ScheduleConfig`.

use super::core::Engine;
use super::handle::EngineHandle;
use crate::backend::cpu::{CpuBackend, CpuKnobs, CpuOptions};
use crate::backend::mock::{MockBackend, MockOptions, BYTES_PER_TOKEN as MOCK_BYTES_PER_TOKEN};
use crate::backend::Backend;
use crate::config::{Config, Env, ModelConfig};
use crate::scheduler::{Scheduler, SchedulerConfig, Template};
use std::path::Path;
use std::time::Duration;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("ModelConfig.backendType = {0:?}: the Ascend runtime (libascendcl.so) is not available in this build; use \"backendType\": \"cpu\" to run on this host")]
    NoAscend(String),
    #[error("model {path}: {source}")]
    Backend {
        path: String,
        source: crate::backend::BackendError,
    },
    #[error("ScheduleConfig: {0}")]
    Schedule(String),
    #[error("engine thread: {0}")]
    Thread(std::io::Error),
}

/// Bytes of KV cache the CPU backend gets: `cpuMemSize` GB (at least 64 MiB).
pub fn kv_budget_bytes(model: &ModelConfig) -> usize {
    (model.cpu_mem_size as usize)
        .saturating_mul(1 << 30)
        .max(64 << 20)
}

/// The scheduler's view of `ScheduleConfig` and `ModelDeployConfig`.
pub fn scheduler_config(c: &Config, num_blocks: usize, block_size: usize) -> SchedulerConfig {
    let s = &c.backend_config.schedule_config;
    let d = &c.backend_config.model_deploy_config;
    SchedulerConfig {
        template: if s.template_type == "Mix" {
            Template::Mix
        } else {
            Template::Standard
        },
        block_size,
        num_blocks,
        max_seq_len: d.max_seq_len as usize,
        max_batch_size: s.max_batch_size as usize,
        max_prefill_batch_size: c.effective_max_prefill_batch_size() as usize,
        max_prefill_tokens: s.max_prefill_tokens as usize,
        mix_step_tokens: s
            .prefill_chunk_size
            .or(s.split_chunk_tokens)
            .map(|n| n as usize),
        prefill_time_ms_per_req: s.prefill_time_ms_per_req,
        decode_time_ms_per_req: s.decode_time_ms_per_req,
        support_select_batch: s.support_select_batch,
        prefill_policy_type: s.prefill_policy_type,
        decode_policy_type: s.decode_policy_type,
        max_iter_times: s.max_iter_times as usize,
        max_preempt_count: s.max_preempt_count,
        max_queue_delay: Duration::from_micros(u64::from(s.max_queue_delay_microseconds)),
        max_first_token_wait: Duration::from_millis(u64::from(s.max_first_token_wait_time)),
        ..SchedulerConfig::default()
    }
}

/// Env var: milliseconds the mock backend sleeps per step (default 0).
pub const MOCK_STEP_TIME_ENV: &str = "MIES_MOCK_STEP_TIME_MS";
/// Env var: microseconds the mock backend sleeps per token in a step (default 0).
pub const MOCK_TOKEN_TIME_ENV: &str = "MIES_MOCK_TOKEN_TIME_US";

/// Env var (test support): the mock answers every request with this file's text (tokenized),
/// then EOS.
pub const MOCK_REPLY_FILE_ENV: &str = "MIES_MOCK_REPLY_FILE";

/// Env var (test support): while the file it names exists, every mock step blocks: a stuck
/// engine step for the health checks to detect (SPEC §0.12).
pub const MOCK_STALL_FILE_ENV: &str = "MIES_MOCK_STALL_FILE";

/// Starts the engine on the model-free mock backend (`modelInstanceType: "StandardMock"`):
/// the tokenizer's vocabulary, never a special token, the pace from `step_time`/`token_time`.
pub fn start_mock(
    c: &Config,
    model: &ModelConfig,
    vocab: usize,
    avoid: Vec<u32>,
    step_time: Duration,
    token_time: Duration,
    reply: Option<(Vec<u32>, u32)>,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), BuildError> {
    let block_size = c.backend_config.schedule_config.cache_block_size as usize;
    let num_blocks = (kv_budget_bytes(model) / (block_size * MOCK_BYTES_PER_TOKEN)).max(1);
    let backend = MockBackend::new(MockOptions {
        vocab_size: vocab,
        avoid,
        block_size,
        num_blocks,
        step_time,
        token_time,
        max_position: c.backend_config.model_deploy_config.max_seq_len as usize,
        stall_file: std::env::var_os(MOCK_STALL_FILE_ENV)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from),
        reply,
    })
    .map_err(|source| BuildError::Backend {
        path: model.model_weight_path.clone(),
        source,
    })?;
    tracing::info!(
        kv_blocks = num_blocks,
        block_size,
        ?step_time,
        ?token_time,
        "StandardMock engine (no model)"
    );
    let sched = Scheduler::new(scheduler_config(c, num_blocks, block_size))
        .map_err(|e| BuildError::Schedule(e.to_string()))?;
    Engine::spawn(sched, Box::new(backend), vocab).map_err(BuildError::Thread)
}

/// Loads the model and starts the engine thread. `vocab` is the tokenizer's vocabulary size.
pub fn start(
    c: &Config,
    model: &ModelConfig,
    model_dir: &Path,
    vocab: usize,
) -> Result<(EngineHandle, std::thread::JoinHandle<()>), BuildError> {
    if model.backend_type != "cpu" {
        return Err(BuildError::NoAscend(model.backend_type.clone()));
    }
    let block_size = c.backend_config.schedule_config.cache_block_size as usize;
    let opts = CpuOptions {
        kv_cache_bytes: kv_budget_bytes(model),
        block_size,
        knobs: CpuKnobs::from_env(&Env::from_process()),
        ..CpuOptions::default()
    };
    let backend = CpuBackend::load(model_dir, opts).map_err(|source| BuildError::Backend {
        path: model_dir.display().to_string(),
        source,
    })?;
    let info = backend.info().clone();
    tracing::info!(
        arch = %info.architecture, dtype = info.dtype.as_str(), device = %info.device,
        kv_blocks = info.num_blocks, block_size = info.block_size, "model loaded"
    );
    let sched = Scheduler::new(scheduler_config(c, info.num_blocks, info.block_size))
        .map_err(|e| BuildError::Schedule(e.to_string()))?;
    Engine::spawn(sched, Box::new(backend), vocab).map_err(BuildError::Thread)
}
