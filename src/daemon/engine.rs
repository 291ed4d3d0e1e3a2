//! From MindIE's config to a running engine: which backend ([`BackendKind`], decided once),
//! the model folder check, the backend's options from config and environment, the scheduler's
//! limits from `ScheduleConfig` / `ModelDeployConfig`, and the engine thread. This is the one
//! place that translates `config.json` for the engine; the engine and backends take typed
//! options only.

use super::StartError;
use crate::backend::ascend::{dtype, AscendOptions, CannSearch, DtypeChoice, FALLBACK_OPS_ENV};
use crate::backend::cpu::{CpuKnobs, CpuOptions};
use crate::backend::load::{self, BackendSpec};
use crate::backend::mock::{
    MockOptions, BYTES_PER_TOKEN as MOCK_BYTES_PER_TOKEN, MOCK_REPLY_FILE_ENV, MOCK_STALL_FILE_ENV,
    MOCK_STEP_TIME_ENV, MOCK_TOKEN_TIME_ENV,
};
use crate::backend::BackendKind;
use crate::config::{self, Config, Env, Loaded, ModelConfig};
use crate::engine::core::Engine;
use crate::engine::EngineHandle;
use crate::scheduler::{Scheduler, SchedulerLimits, Template};
use crate::security::perms::{FileRole, PermChecker};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the engine's model comes from: the configured folder and what runs it.
#[derive(Debug, Clone)]
pub struct ModelSource {
    pub kind: BackendKind,
    /// A Hugging Face model folder (config.json checked); for the mock only its tokenizer is
    /// used.
    pub dir: PathBuf,
}

/// Checks the model folder: for a real model its config.json (≤ 750, owner, no symlink); for
/// `StandardMock` that a tokenizer is there.
pub(super) fn check_model_dir(
    loaded: &Loaded,
    checker: &mut PermChecker,
) -> Result<ModelSource, StartError> {
    let model = loaded
        .config
        .model()
        .ok_or_else(|| StartError::Model("ModelConfig is empty".into()))?;
    let dir = config::paths::resolve(&loaded.home, &model.model_weight_path);
    let kind = BackendKind::of(model);
    if !kind.runs_a_model() {
        if !dir.join("tokenizer.json").is_file() {
            return Err(StartError::Model(format!(
                "ModelConfig.modelWeightPath = {:?}: {} has no tokenizer.json; StandardMock runs no model but needs the model's tokenizer to turn tokens into text",
                model.model_weight_path,
                dir.display()
            )));
        }
        return Ok(ModelSource { kind, dir });
    }
    let cfg = dir.join("config.json");
    if !cfg.is_file() {
        return Err(StartError::Model(format!(
            "ModelConfig.modelWeightPath = {:?}: {} has no config.json; point modelWeightPath at a Hugging Face model folder",
            model.model_weight_path,
            dir.display()
        )));
    }
    checker.check(&cfg, FileRole::ModelConfig)?;
    Ok(ModelSource { kind, dir })
}

/// Bytes of KV cache the CPU backend (and the mock) get: `cpuMemSize` GB (at least 64 MiB).
pub fn kv_budget_bytes(model: &ModelConfig) -> usize {
    (model.cpu_mem_size as usize)
        .saturating_mul(1 << 30)
        .max(64 << 20)
}

/// The scheduler's limits from `ScheduleConfig` and `ModelDeployConfig`.
pub fn scheduler_limits(c: &Config, num_blocks: usize, block_size: usize) -> SchedulerLimits {
    let s = &c.backend_config.schedule_config;
    let d = &c.backend_config.model_deploy_config;
    SchedulerLimits {
        // Validation allows only "Standard" and "Mix".
        template: s.template_type.parse().unwrap_or(Template::Standard),
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
        ..SchedulerLimits::default()
    }
}

/// A duration from an integer env var (`unit` converts it), 0 when unset.
fn env_duration(env: &Env, name: &str, unit: fn(u64) -> Duration) -> Result<Duration, StartError> {
    match env.get(name) {
        None | Some("") => Ok(Duration::ZERO),
        Some(v) => v.trim().parse::<u64>().map(unit).map_err(|_| {
            StartError::Model(format!("{name} = {v:?}: must be a non-negative integer"))
        }),
    }
}

/// Test support (`MIES_MOCK_REPLY_FILE`): the mock's scripted answer, tokenized, and the EOS
/// id that ends it.
fn mock_reply(tok: &Tokenizer, path: &Path) -> Result<(Vec<u32>, u32), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {}: {e}", MOCK_REPLY_FILE_ENV, path.display()))?;
    let ids = tok.encode(&text, false).map_err(|e| e.to_string())?;
    let eos = tok
        .eos_token_ids()
        .first()
        .copied()
        .ok_or("the mock's scripted reply needs an EOS token")?;
    Ok((ids, eos))
}

/// The mock's knobs read from the environment (before going off the runtime).
struct MockEnv {
    step_time: Duration,
    token_time: Duration,
    reply_file: Option<PathBuf>,
    stall_file: Option<PathBuf>,
}

impl MockEnv {
    fn read(env: &Env) -> Result<MockEnv, StartError> {
        Ok(MockEnv {
            step_time: env_duration(env, MOCK_STEP_TIME_ENV, Duration::from_millis)?,
            token_time: env_duration(env, MOCK_TOKEN_TIME_ENV, Duration::from_micros)?,
            reply_file: env.get(MOCK_REPLY_FILE_ENV).map(PathBuf::from),
            stall_file: env.get(MOCK_STALL_FILE_ENV).map(PathBuf::from),
        })
    }
}

/// The CPU backend's options from `cpuMemSize`, `cacheBlockSize` and the environment (the
/// whole model; a multi-node share is set by the caller).
pub fn cpu_options(config: &Config, model: &ModelConfig, env: &Env) -> CpuOptions {
    CpuOptions {
        kv_cache_bytes: kv_budget_bytes(model),
        block_size: config.backend_config.schedule_config.cache_block_size as usize,
        knobs: CpuKnobs::from_env(env),
        ..CpuOptions::default()
    }
}

/// The Ascend backend's options: the first model instance's `npuDeviceIds` (as many as
/// `worldSize`), `npuMemSize`, `cacheBlockSize`, and the environment (CANN's location,
/// `MINDIE_ASCEND_DTYPE`).
pub fn ascend_options(
    config: &Config,
    model: &ModelConfig,
    source: &ModelSource,
    env: &Env,
) -> Result<AscendOptions, String> {
    Ok(AscendOptions {
        model_dir: source.dir.clone(),
        search: CannSearch::from_env(env),
        device_ids: config
            .backend_config
            .npu_device_ids
            .first()
            .cloned()
            .unwrap_or_default(),
        mem_size_gb: model.npu_mem_size,
        block_size: config.backend_config.schedule_config.cache_block_size as usize,
        dtype: DtypeChoice::parse(env.get(dtype::DTYPE_ENV))?,
        fallback_ops: env.flag(FALLBACK_OPS_ENV).unwrap_or(false),
    })
}

/// What the backend needs, resolved from config, environment and the tokenizer.
fn backend_spec(
    config: &Config,
    model: &ModelConfig,
    source: &ModelSource,
    tok: &Tokenizer,
    mock: MockEnv,
    env: &Env,
) -> Result<BackendSpec, String> {
    let block_size = config.backend_config.schedule_config.cache_block_size as usize;
    Ok(match source.kind {
        BackendKind::Cpu => BackendSpec::Cpu {
            model_dir: source.dir.clone(),
            options: cpu_options(config, model, env),
        },
        BackendKind::Mock => {
            // The tokenizer's vocabulary, never a special token or EOS.
            let mut avoid: Vec<u32> = (0..tok.vocab_size() as u32)
                .filter(|&id| tok.is_special(id))
                .collect();
            avoid.extend_from_slice(tok.eos_token_ids());
            let reply = mock
                .reply_file
                .as_deref()
                .map(|p| mock_reply(tok, p))
                .transpose()?;
            BackendSpec::Mock(MockOptions {
                vocab_size: tok.vocab_size(),
                avoid,
                block_size,
                num_blocks: (kv_budget_bytes(model) / (block_size * MOCK_BYTES_PER_TOKEN)).max(1),
                step_time: mock.step_time,
                token_time: mock.token_time,
                max_position: config.backend_config.model_deploy_config.max_seq_len as usize,
                stall_file: mock.stall_file,
                reply,
            })
        }
        BackendKind::Ascend => BackendSpec::Ascend(ascend_options(config, model, source, env)?),
    })
}

/// Builds the backend `source` names and starts the engine thread on it (blocking: it loads
/// the model). `tok` is the model's tokenizer (the mock's vocabulary and scripted reply).
pub fn build_engine(
    config: &Config,
    source: &ModelSource,
    tok: &Tokenizer,
    env: &Env,
) -> Result<EngineHandle, StartError> {
    let model = config
        .model()
        .ok_or_else(|| StartError::Model("ModelConfig is empty".into()))?;
    let mock = MockEnv::read(env)?;
    let spec = backend_spec(config, model, source, tok, mock, env).map_err(StartError::Model)?;
    let backend = load::load(spec).map_err(|e| {
        StartError::Model(match source.kind {
            // The message names the setting to change; the folder is beside the point.
            BackendKind::Ascend => e.to_string(),
            _ => format!("model {}: {e}", source.dir.display()),
        })
    })?;
    spawn_engine(config, source.kind, backend)
}

/// Starts the engine thread on a built backend, with the scheduler `config` asks for.
pub fn spawn_engine(
    config: &Config,
    kind: BackendKind,
    backend: Box<dyn crate::backend::Backend>,
) -> Result<EngineHandle, StartError> {
    let info = backend.info().clone();
    match kind {
        BackendKind::Mock => tracing::info!(
            kv_blocks = info.num_blocks,
            block_size = info.block_size,
            "StandardMock engine (no model)"
        ),
        _ => tracing::info!(
            arch = %info.architecture, dtype = info.dtype.as_str(), device = %info.device,
            kv_blocks = info.num_blocks, block_size = info.block_size, "model loaded"
        ),
    }
    let sched = Scheduler::new(scheduler_limits(config, info.num_blocks, info.block_size))
        .map_err(|e| StartError::Model(format!("ScheduleConfig: {e}")))?;
    let (handle, _thread) = Engine::spawn(sched, backend)
        .map_err(|e| StartError::Model(format!("engine thread: {e}")))?;
    // The engine thread runs until the process ends; its handle is all the planes need.
    Ok(handle)
}

/// Loads the tokenizer and the backend off the async runtime and starts the engine thread.
pub(super) async fn start_engine(
    loaded: &Loaded,
    source: ModelSource,
    env: &Env,
) -> Result<(EngineHandle, Tokenizer), StartError> {
    let config = loaded.config.clone();
    let env = env.clone();
    tokio::task::spawn_blocking(move || {
        let tok = Tokenizer::load(&source.dir).map_err(|e| StartError::Model(e.to_string()))?;
        let handle = build_engine(&config, &source, &tok, &env)?;
        Ok((handle, tok))
    })
    .await
    .map_err(|e| StartError::Model(e.to_string()))?
}
