//! The Ascend NPU backend: LLaMA / Qwen2 run as aclnn operators on one or more NPUs through
//! CANN, which is loaded at run time (one binary builds and runs everywhere; without CANN the
//! start fails with one line saying what is missing and how to fix it).
//!
//! - [`locate`]: where CANN's libraries are (`ASCEND_TOOLKIT_HOME` / `ASCEND_HOME_PATH`, the
//!   loader path, or `MINDIE_RS_ACL_LIBS`); [`runtime`]: the process's one loaded CANN;
//! - `ffi`: every CANN call (the only `unsafe` of the backend); [`error`]: [`AclError`];
//! - [`dtype`]: the device compute dtype and weight encoding; `weights`: one rank's weights
//!   (tensor-parallel split); `kv`: the paged KV cache and its export/import; `rank`: one
//!   device's state; `step`: the operator plan of a packed step.
//! - this file: [`AscendBackend`] — load (devices, weights, KV sizing), validate, step.
//!
//! Devices are `npuDeviceIds[0]` (their count is `worldSize`): one context and stream each,
//! driven by the engine thread (which makes each rank's context current before its work;
//! see `step` for the order with tensor parallelism). KV memory: `npuMemSize` GiB per device,
//! or with `-1` what MindIE takes: after weights, `total · 0.8 − used` (the 20 % margin keeps
//! room for activations and operator workspace, which grow on demand).
//!
//! When the loaded CANN is the project's emulator (`tests/emuacl`, it exports
//! `emuaclBuildInfo`), the device string and the load log say "EMULATED": nothing run on it
//! says anything about NPU numerics or speed.

pub mod dtype;
pub mod error;
mod ffi;
mod kv;
pub mod locate;
mod rank;
pub mod runtime;
mod step;
mod weights;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use dtype::DtypeChoice;
pub use error::AclError;
pub use locate::CannSearch;

use self::ffi::Acl;
use self::kv::{KvGeometry, RankKv};
use self::rank::{Dims, HostConstants, KvWriteOp, Rank, RopeOp};
use self::step::{Plan, StepInputs};
use self::weights::Split;
use super::cpu::weights::WeightStore;
use super::cpu::HfModelConfig;
use super::{Backend, BackendError, BackendInfo, BlockId, KvChunk, StepBatch, StepOutput};

/// Share of a device's HBM MindIE lets weights, activations and KV take with `npuMemSize: -1`.
pub const NPU_MEMORY_FRACTION: f64 = 0.8;

/// Tokens per KV block must be a multiple of this (the paged attention operator's rule).
pub const BLOCK_ALIGN: usize = 128;

/// How to build an [`AscendBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AscendOptions {
    /// The HF model folder.
    pub model_dir: PathBuf,
    /// Where CANN is.
    pub search: CannSearch,
    /// Logical device ids (`npuDeviceIds[0]`); their count is the tensor-parallel degree.
    pub device_ids: Vec<u32>,
    /// `npuMemSize`: GiB of KV cache per device, or `-1` for automatic.
    pub mem_size_gb: i64,
    /// Tokens per KV block (`cacheBlockSize`).
    pub block_size: usize,
    /// `MINDIE_ASCEND_DTYPE`.
    pub dtype: DtypeChoice,
    /// `MINDIE_ASCEND_FALLBACK_OPS=1`: RoPE by `aclnnApplyRotaryPosEmbV2` and the KV write by
    /// `aclnnInplaceIndexCopy` even where the preferred operators exist (for a CANN whose
    /// newer operators misbehave, and to test the fallbacks).
    pub fallback_ops: bool,
}

/// Names the fallback switch.
pub const FALLBACK_OPS_ENV: &str = "MINDIE_ASCEND_FALLBACK_OPS";

/// Counters of the last step (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepStats {
    /// aclnn operators launched (all ranks).
    pub launches: u64,
}

/// A model on Ascend NPUs.
pub struct AscendBackend {
    info: BackendInfo,
    // Ranks before the runtime handle: their buffers, streams and contexts go first.
    ranks: Vec<Rank>,
    acl: Arc<Acl>,
    dims: Dims,
    geo: KvGeometry,
    rope: RopeOp,
    kv_write: KvWriteOp,
    last: StepStats,
    /// Set when a step failed on a multi-device instance: its devices may have stopped at
    /// different collectives, so a later all-reduce could pair the wrong calls or wait
    /// forever; every later step fails at once with this reason instead.
    broken: Option<String>,
}

fn unsupported(msg: String) -> BackendError {
    BackendError::Unsupported(msg)
}

impl AscendBackend {
    pub fn load(opts: AscendOptions) -> Result<Self, BackendError> {
        let started = Instant::now();
        let spec = HfModelConfig::load(&opts.model_dir)?;
        let tp = opts.device_ids.len();
        if tp == 0 {
            return Err(BackendError::Config(
                "npuDeviceIds: no device for the model".into(),
            ));
        }
        check_split(&spec, tp)?;
        if opts.block_size == 0 || !opts.block_size.is_multiple_of(BLOCK_ALIGN) {
            return Err(BackendError::Config(format!(
                "ScheduleConfig.cacheBlockSize = {}: the Ascend backend's paged attention needs a \
                 multiple of {BLOCK_ALIGN}",
                opts.block_size
            )));
        }
        let acl = runtime::acl(&opts.search, tp > 1).map_err(unsupported)?;
        let soc = acl.soc_name();
        match &acl.emulated {
            Some(e) => tracing::warn!(
                soc = %soc, "EMULATED CANN loaded ({e}): results say nothing about NPU numerics or speed"
            ),
            None => tracing::info!(soc = %soc, libs = ?acl.paths, "CANN loaded"),
        }
        let count = acl.device_count().map_err(AclError::at_load)?;
        if let Some(bad) = opts.device_ids.iter().find(|&&id| id >= count) {
            return Err(BackendError::Config(format!(
                "BackendConfig.npuDeviceIds: device {bad} does not exist (this host has {count} \
                 NPU(s): ids 0..{})",
                count.saturating_sub(1)
            )));
        }
        let prefer = !opts.fallback_ops;
        let rope = if prefer && ffi::ops::Launcher::has_rope_cache(&acl) {
            RopeOp::SinCosCache
        } else if ffi::ops::Launcher::has_rope_v2(&acl) {
            RopeOp::ApplyV2
        } else {
            return Err(unsupported(
                "the loaded CANN has neither aclnnRopeWithSinCosCache nor aclnnApplyRotaryPosEmbV2"
                    .into(),
            ));
        };
        let kv_write = if prefer && ffi::ops::Launcher::has_scatter_pa(&acl) {
            KvWriteOp::ScatterPaKvCache
        } else if ffi::ops::Launcher::has_index_copy(&acl) {
            KvWriteOp::IndexCopy
        } else {
            return Err(unsupported(
                "the loaded CANN has neither aclnnScatterPaKvCache nor aclnnInplaceIndexCopy"
                    .into(),
            ));
        };
        let store = WeightStore::open(&opts.model_dir)?;
        let stored = store
            .tensor("model.embed_tokens.weight", &[spec.vocab, spec.hidden])?
            .dtype();
        let cd = opts.dtype.resolve(stored);
        let dims = Dims::of(&spec, tp, opts.block_size, cd);
        let constants = HostConstants::new(&spec, spec.max_position.max(1), cd, rope);
        let mut ranks = Vec::with_capacity(tp);
        for (r, &id) in opts.device_ids.iter().enumerate() {
            let split = Split { rank: r, tp };
            ranks.push(Rank::open(&acl, id, split, &spec, &store, cd, &constants)?);
        }
        drop(constants);
        let weight_bytes = ranks.iter().map(|r| r.weights.bytes).max().unwrap_or(0);
        if tp > 1 {
            let ids: Vec<i32> = opts.device_ids.iter().map(|&i| i as i32).collect();
            let comms = acl.comm_init_all(&ids).map_err(AclError::at_load)?;
            for (rank, comm) in ranks.iter_mut().zip(comms) {
                rank.comm = Some(comm);
            }
        }
        let geo = KvGeometry {
            layers: spec.layers,
            kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            block_size: opts.block_size,
            tp,
            dtype: cd,
        };
        let num_blocks = kv_blocks(&acl, &ranks, &geo, opts.mem_size_gb)?;
        for rank in &mut ranks {
            rank.ctx.make_current().map_err(AclError::at_load)?;
            rank.kv = Some(RankKv::alloc(&acl, &geo, num_blocks)?);
        }
        // The first word is what `/info` reports as the device type.
        let (kind, emulated) = match &acl.emulated {
            Some(e) => ("npu-emulated", format!("; EMULATED CANN: {e}")),
            None => ("npu", String::new()),
        };
        let ids: Vec<String> = opts.device_ids.iter().map(u32::to_string).collect();
        let info = BackendInfo {
            architecture: spec.architecture.clone(),
            dtype: stored,
            device: format!(
                "{kind} (ascend {soc} x{tp}, devices {}, compute {}, {:?}/{:?}{emulated})",
                ids.join(","),
                cd.as_str(),
                rope,
                kv_write
            ),
            vocab_size: spec.vocab,
            block_size: opts.block_size,
            num_blocks,
            bytes_per_block: geo.bytes_per_block(),
            max_position: spec.max_position,
            eos_token_ids: spec.eos_token_ids.clone(),
            num_layers: spec.layers,
            held_layers: 0..spec.layers,
            weight_bytes: store.opened_bytes(),
            num_kv_heads: spec.kv_heads,
            head_dim: spec.head_dim,
            kv_layout: geo.layout_tag(),
        };
        tracing::info!(
            device = %info.device,
            kv_blocks = num_blocks,
            weights_mib_per_device = weight_bytes >> 20,
            secs = started.elapsed().as_secs_f64(),
            "Ascend backend ready"
        );
        Ok(AscendBackend {
            info,
            ranks,
            acl,
            dims,
            geo,
            rope,
            kv_write,
            last: StepStats::default(),
            broken: None,
        })
    }

    /// Counters of the last step.
    pub fn last_step(&self) -> StepStats {
        self.last
    }

    fn run(&mut self, batch: &StepBatch) -> Result<StepOutput, AclError> {
        let inputs = StepInputs::build(batch, self.info.block_size);
        let plan = Plan {
            acl: &self.acl,
            dims: self.dims,
            rope: self.rope,
            kv_write: self.kv_write,
            num_blocks: self.info.num_blocks,
            inputs: &inputs,
        };
        let mut launches = 0;
        for rank in &mut self.ranks {
            launches += plan.begin(rank)?;
        }
        for layer in 0..self.dims.layers {
            for rank in &mut self.ranks {
                launches += plan.attention_half(rank, layer)?;
            }
            for rank in &mut self.ranks {
                launches += plan.mlp_half(rank, layer)?;
            }
        }
        let Some(first) = self.ranks.first_mut() else {
            return Err(AclError::new("step", 100_000, "no device"));
        };
        launches += plan.head(first)?;
        for rank in &self.ranks {
            rank.ctx.make_current()?;
            rank.stream.synchronize()?;
        }
        let logits = plan.logits(&self.ranks[0])?;
        self.last = StepStats { launches };
        Ok(StepOutput {
            vocab_size: self.dims.vocab,
            seq_indices: inputs.logit_seqs.clone(),
            logits,
        })
    }

    fn contexts(&self) -> Vec<(&ffi::Context, &RankKv)> {
        self.ranks
            .iter()
            .filter_map(|r| r.kv.as_ref().map(|kv| (&r.ctx, kv)))
            .collect()
    }
}

/// What `check` reports for an Ascend configuration: CANN found and initialised, the SoC,
/// the device count, and every id of `devices` present; else the start-up error.
pub fn probe(search: &CannSearch, devices: &[u32]) -> Result<String, String> {
    let acl = runtime::acl(search, devices.len() > 1)?;
    let count = acl.device_count().map_err(|e| e.to_string())?;
    if let Some(bad) = devices.iter().find(|&&id| id >= count) {
        return Err(format!(
            "npuDeviceIds names device {bad}, but CANN reports {count} NPU(s)"
        ));
    }
    let libs: Vec<String> = acl.paths.iter().map(|p| p.display().to_string()).collect();
    let emulated = acl
        .emulated
        .as_ref()
        .map(|e| format!("; EMULATED CANN ({e})"))
        .unwrap_or_default();
    Ok(format!(
        "CANN loaded ({}): {} with {count} NPU(s), devices {devices:?} present{emulated}",
        libs.join(", "),
        acl.soc_name()
    ))
}

/// Heads, KV heads and MLP columns must split evenly over the devices.
fn check_split(spec: &HfModelConfig, tp: usize) -> Result<(), BackendError> {
    for (what, n) in [
        ("num_attention_heads", spec.heads),
        ("num_key_value_heads", spec.kv_heads),
        ("intermediate_size", spec.intermediate),
    ] {
        if !n.is_multiple_of(tp) {
            return Err(unsupported(format!(
                "worldSize {tp}: the model's {what} ({n}) does not split evenly over {tp} devices \
                 (replicating KV heads is not supported); choose a worldSize dividing it"
            )));
        }
    }
    Ok(())
}

/// KV blocks every rank can hold: `npuMemSize` GiB, or the automatic budget.
fn kv_blocks(
    acl: &Arc<Acl>,
    ranks: &[Rank],
    geo: &KvGeometry,
    mem_size_gb: i64,
) -> Result<usize, BackendError> {
    let per_block = geo.rank_block();
    let mut blocks = usize::MAX;
    for rank in ranks {
        rank.ctx.make_current().map_err(AclError::at_load)?;
        let budget = if mem_size_gb > 0 {
            (mem_size_gb as usize) << 30
        } else {
            let (free, total) = acl.mem_info().map_err(AclError::at_load)?;
            let used = total.saturating_sub(free);
            let allowed = (total as f64 * NPU_MEMORY_FRACTION) as usize;
            if allowed <= used {
                return Err(BackendError::OutOfMemory(format!(
                    "npuMemSize -1: device {} has {} MiB of HBM, {} MiB in use after loading the \
                     weights; {}% of it leaves nothing for the KV cache (use devices with more \
                     memory or a larger worldSize)",
                    rank.device,
                    total >> 20,
                    used >> 20,
                    (NPU_MEMORY_FRACTION * 100.0) as u32
                )));
            }
            allowed - used
        };
        blocks = blocks.min(budget / per_block.max(1));
    }
    if blocks == 0 {
        return Err(BackendError::OutOfMemory(format!(
            "the KV cache budget is below one block ({per_block} bytes per device); raise npuMemSize"
        )));
    }
    Ok(blocks.min(BlockId::MAX as usize))
}

impl Backend for AscendBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, BackendError> {
        batch.validate(
            self.info.vocab_size,
            self.info.block_size,
            self.info.num_blocks,
        )?;
        let mut next = 0;
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.token_range.start != next {
                return Err(BackendError::InvalidBatch(format!(
                    "seq {i}: tokens {:?} are not packed in sequence order (TND layout)",
                    s.token_range
                )));
            }
            next = s.token_range.end;
        }
        if batch.tokens.is_empty() {
            return Ok(StepOutput {
                vocab_size: self.info.vocab_size,
                ..StepOutput::default()
            });
        }
        if let Some(why) = &self.broken {
            return Err(BackendError::DeviceLost(why.clone()));
        }
        self.run(batch).map_err(|e| {
            if let [rank] = self.ranks.as_slice() {
                // Work queued before the failure may still read this step's buffers: let it
                // finish before the next step overwrites them (its own errors add nothing).
                let _ = rank
                    .ctx
                    .make_current()
                    .and_then(|()| rank.stream.synchronize());
            } else {
                // Several devices: a stream may wait on a collective another device never
                // joins, so no synchronize here (HCCL's timeout is long); no step runs again.
                self.broken = Some(format!(
                    "Ascend devices out of step after a failed step ({e}); restart the instance"
                ));
            }
            e.in_step()
        })
    }

    fn export_blocks(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        kv::export(
            &self.acl,
            &self.contexts(),
            &self.geo,
            self.info.num_blocks,
            ids,
        )
    }

    fn import_blocks(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError> {
        kv::import(
            &self.acl,
            &self.contexts(),
            &self.geo,
            self.info.num_blocks,
            ids,
            kv,
        )
    }
}
