//! The host-CPU backend: an HF model folder (Llama / Qwen2, safetensors f32/bf16/f16,
//! memory-mapped) run in f32 with our own kernels and paged attention on a private thread pool
//! (whose threads poll for work for the length of each step: `awake`).
//!
//! - [`hf_config`]: the HF `config.json` → [`HfModelConfig`]; [`weights`]: safetensors, read
//!   through `mmap` (file mapping, typed views of [`Pod`](pod::Pod) elements).
//! - `kernels`, [`linear`], `rope`, `attention`: the numerics (`kernels` also holds CPU feature
//!   detection and the AVX-512 / AMX kernels); [`kv_cache`]: KV storage; `model`: the layer
//!   sequence, whole or a range of layers ([`CpuBackend::step_stage`]). `unsafe` lives only in
//!   `mmap` and the kernel modules that need it.
//! - [`share`]: [`LayerShare`], the part of a model a process holds when the model is split by
//!   layers across machines ([`CpuOptions::share`]): only those layers' weights are read and
//!   prefaulted, only their KV is allocated; [`layer_weight_bytes`] sizes the parts.
//! - this file: [`CpuBackend`] — load, validate each [`StepBatch`], run it.
//!
//! Knobs ([`CpuKnobs`], in [`CpuOptions::knobs`]): the daemon builds them from its environment
//! with [`CpuKnobs::from_env`] (`MINDIE_CPU_KERNELS`, `MINDIE_CPU_AMX`, `MINDIE_CPU_BF16_DOT`);
//! nothing below this module reads the environment.
//!
//! Opt-in faster matmuls: with `MINDIE_CPU_BF16_DOT=1` (or `true`/`yes`/`on`;
//! [`CpuKnobs::bf16_dot`]),
//! bf16 models on a CPU with AVX-512 BF16 run their bf16 matmuls of at least
//! `linear::BF16_DOT_MIN_M` rows (prefill, batched decode) as bf16 × bf16 products with f32
//! accumulation: the MLP over activations rounded to bf16 (round-to-nearest-even), q/k/v, o
//! and the LM head over activations as two bf16 terms (`linear::Dot`); on AMX tiles
//! (`tdpbf16ps`) where the CPU and kernel allow, else with `vdpbf16ps` (one term; two-term
//! matmuls then stay exact). Logprobs then no longer match HF to 1e-4 (≤ 0.075 on the tiny
//! bf16 fixtures, alone or batched: `tests/engine_parity.rs`; greedy tokens mostly match). The device string gains `bf16-dot (amx)` or
//! `bf16-dot (avx512-bf16)`. Other dtypes or CPUs keep the exact path, with a warning. The
//! default is the exact f32-activation path.
//!
//! The exact path itself uses AMX where the CPU and kernel allow (the device string says
//! `amx-exact`): bf16 matmuls of at least `linear::AMX_EXACT_MIN_M` rows split each f32
//! activation into three bf16 terms whose sum is the f32 value, so the tile products add up to
//! the f32 activation's (same tolerance as the AVX-512 f32 kernel; the HF parity tests run
//! through it). `MINDIE_CPU_AMX=0` ([`CpuKnobs::amx`]) turns it off.

mod attention;
mod awake;
pub mod hf_config;
pub mod hugepages;
mod kernels;
mod knobs;
pub mod kv_cache;
pub mod linear;
mod mmap;
mod model;
mod op_times;
mod pod;
mod rope;
pub mod share;
#[cfg(test)]
mod share_tests;
#[cfg(test)]
mod stage_tests;
pub mod weights;

use std::path::Path;
use std::time::Instant;

pub use hf_config::{Arch, HfModelConfig, SUPPORTED_ARCHITECTURES};
pub use kernels::{bf16_to_f32, f16_to_f32, f32_to_bf16};
pub use kernels::{detected_level, has_amx, has_avx512_bf16, SimdLevel};
pub use knobs::CpuKnobs;
pub use model::{Stage, StageInput, StageOutput};
pub use rope::Rope;
pub use share::{layer_weight_bytes, LayerShare};

use self::kv_cache::KvCache;
use self::model::Model;
use self::weights::WeightStore;
use super::{Backend, BackendError, BackendInfo, BlockId, DType, KvChunk, StepBatch, StepOutput};

/// How to build a [`CpuBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuOptions {
    /// Bytes for the KV cache; the block count is as many blocks as fit.
    pub kv_cache_bytes: usize,
    /// Tokens per KV block (`cacheBlockSize`).
    pub block_size: usize,
    /// Worker threads; 0 = one per available core.
    pub threads: usize,
    /// Touch every weight page at load (predictable first steps, progress in the log).
    pub prefault_weights: bool,
    /// Kernel level cap, exact AMX matmuls, bf16 dot-product matmuls (see [`CpuKnobs`]; the
    /// default is what an empty environment gives, [`CpuKnobs::from_env`] reads the real one).
    /// `bf16_dot` is ignored (with a warning) unless the weights are bf16 and the CPU has
    /// `avx512_bf16`.
    pub knobs: CpuKnobs,
    /// The part of the model this process holds (a node of a model split by layers); `None`
    /// is the whole model. A partial backend runs only [`CpuBackend::step_stage`].
    pub share: Option<LayerShare>,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            kv_cache_bytes: 256 << 20,
            block_size: 128,
            threads: 0,
            prefault_weights: true,
            knobs: CpuKnobs::default(),
            share: None,
        }
    }
}

/// A model loaded for the CPU, with its KV cache and thread pool.
pub struct CpuBackend {
    info: BackendInfo,
    model: Model,
    cache: KvCache,
    pool: rayon::ThreadPool,
    level: SimdLevel,
    /// The bf16 dot-product matmuls are on (asked for, bf16 weights, CPU support).
    bf16_dot: bool,
    /// The part of the model held (the whole model when loaded without a share).
    share: LayerShare,
}

impl CpuBackend {
    /// Loads `model_dir` (config.json, generation_config.json, safetensors).
    pub fn load(model_dir: &Path, opts: CpuOptions) -> Result<Self, BackendError> {
        let started = Instant::now();
        let spec = HfModelConfig::load(model_dir)?;
        tracing::info!(
            architecture = %spec.architecture,
            layers = spec.layers,
            hidden = spec.hidden,
            vocab = spec.vocab,
            "loading model from {}",
            model_dir.display()
        );
        let share = opts
            .share
            .clone()
            .unwrap_or_else(|| LayerShare::whole(spec.layers));
        share.check(spec.layers)?;
        if !share.is_whole(spec.layers) {
            tracing::info!(
                layers = ?share.layers,
                ends = share.ends,
                "holding a share of the model's {} layers",
                spec.layers
            );
        }
        let store = WeightStore::open(model_dir)?;
        // bf16 matmul weights in AMX tile order wherever the AVX-512 kernels run, but where
        // the exact path's AMX kernel was turned off on an AMX machine: the AMX kernel and
        // the AVX-512 ones then stream each block front to back (on a Zen 4 without AMX, the
        // one-row kernel read 34 GB/s from tile order against 22–29 GB/s from rows).
        let tiles =
            opts.knobs.simd_level() == SimdLevel::Avx512 && (opts.knobs.amx || !kernels::has_amx());
        let model = Model::load(spec, &store, &share, tiles)?;
        if opts.prefault_weights {
            store.prefault();
        }
        let weight_bytes = store.opened_bytes();
        let s = &model.spec;
        let cache = KvCache::for_layers(
            share.layers.clone(),
            s.layers,
            s.kv_heads,
            s.head_dim,
            opts.block_size,
            opts.kv_cache_bytes,
        )?;
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cpu-backend-{i}"))
            .build()
            .map_err(|e| BackendError::Other(format!("thread pool: {e}")))?;
        let level = opts.knobs.simd_level();
        // Process-wide (see `knobs`): the exact path's AMX switch follows these options.
        linear::set_amx_exact(opts.knobs.amx);
        let bf16_dot = opts.knobs.bf16_dot && {
            let why = if model.dtype != DType::BF16 {
                Some("the weights are not bf16")
            } else if level != SimdLevel::Avx512 || !kernels::has_avx512_bf16() {
                Some("this CPU (or MINDIE_CPU_KERNELS) has no AVX-512 BF16")
            } else {
                None
            };
            if let Some(why) = why {
                tracing::warn!("MINDIE_CPU_BF16_DOT ignored: {why}; using the exact f32 path");
            }
            why.is_none()
        };
        let dot_tag = match (bf16_dot, kernels::has_amx()) {
            (false, true)
                if model.dtype == DType::BF16 && opts.knobs.amx && level == SimdLevel::Avx512 =>
            {
                ", amx-exact"
            }
            (false, _) => "",
            (true, true) => ", bf16-dot (amx)",
            (true, false) => {
                tracing::warn!(
                    "MINDIE_CPU_BF16_DOT: no AMX here; the vdpbf16ps fallback may be slower than \
                     the exact path"
                );
                ", bf16-dot (avx512-bf16)"
            }
        };
        let info = BackendInfo {
            architecture: s.architecture.clone(),
            dtype: model.dtype,
            device: format!("cpu ({threads} threads, {level:?}{dot_tag})"),
            vocab_size: s.vocab,
            block_size: cache.block_size,
            num_blocks: cache.num_blocks,
            bytes_per_block: cache.bytes_per_block_total(),
            max_position: s.max_position,
            eos_token_ids: s.eos_token_ids.clone(),
            num_layers: s.layers,
            held_layers: share.layers.clone(),
            weight_bytes,
            num_kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            kv_layout: cache.layout_tag(),
        };
        tracing::info!(
            dtype = model.dtype.as_str(),
            weights_mib = weight_bytes >> 20,
            kv_blocks = cache.num_blocks,
            block_size = cache.block_size,
            device = %info.device,
            huge_pages = hugepages::thp_mode(),
            secs = started.elapsed().as_secs_f64(),
            "model loaded"
        );
        Ok(Self {
            info,
            model,
            cache,
            pool,
            level,
            bf16_dot,
            share,
        })
    }

    pub fn spec(&self) -> &HfModelConfig {
        &self.model.spec
    }

    /// The part of the model this backend holds.
    pub fn share(&self) -> &LayerShare {
        &self.share
    }

    fn validate(&self, b: &StepBatch) -> Result<(), BackendError> {
        b.validate(
            self.info.vocab_size,
            self.info.block_size,
            self.info.num_blocks,
        )
    }
}

impl CpuBackend {
    /// Runs one packed step over a range of the model's layers (see [`Stage`]): the range must
    /// lie within the held layers (an empty range at either end of them is fine), a token input
    /// or logits need the ends ([`LayerShare::ends`]), and a hidden-state input must have
    /// `tokens × hidden` values. [`Backend::step`] is the stage of all layers from tokens to
    /// logits.
    pub fn step_stage(
        &mut self,
        batch: &StepBatch,
        stage: Stage<'_>,
    ) -> Result<StageOutput, BackendError> {
        self.validate(batch)?;
        self.model.check_stage(&stage)?;
        let hidden = self.model.spec.hidden;
        if let StageInput::Hidden(x) = stage.input {
            let want = batch.tokens.len() * hidden;
            if x.len() != want {
                return Err(BackendError::InvalidBatch(format!(
                    "hidden-state input has {} values; {} tokens × hidden {hidden} = {want}",
                    x.len(),
                    batch.tokens.len()
                )));
            }
        }
        if batch.tokens.is_empty() {
            return Ok(if stage.logits {
                StageOutput::Logits(StepOutput {
                    vocab_size: self.info.vocab_size,
                    ..StepOutput::default()
                })
            } else {
                StageOutput::Hidden(Vec::new())
            });
        }
        let (model, cache, level, dot) = (&self.model, &mut self.cache, self.level, self.bf16_dot);
        self.pool
            .install(|| awake::run_awake(|| model.forward_stage(level, dot, batch, stage, cache)))
    }
}

impl Backend for CpuBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, BackendError> {
        if !self.share.is_whole(self.info.num_layers) {
            return Err(BackendError::Unsupported(format!(
                "this backend holds layers {:?} only of the model's 0..{}{}; run it by stages \
                 (step_stage)",
                self.share.layers,
                self.info.num_layers,
                if self.share.ends {
                    ", with the embedding and LM head"
                } else {
                    ", without the embedding and LM head"
                }
            )));
        }
        self.validate(batch)?;
        if batch.tokens.is_empty() {
            return Ok(StepOutput {
                vocab_size: self.info.vocab_size,
                ..StepOutput::default()
            });
        }
        let (model, cache, level, dot) = (&self.model, &mut self.cache, self.level, self.bf16_dot);
        self.pool
            .install(|| awake::run_awake(|| model.forward(level, dot, batch, cache)))
    }

    fn export_blocks(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        self.cache.export(ids)
    }

    fn import_blocks(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError> {
        self.cache.import(ids, kv)
    }
}
