//! The master's backend of a model split across nodes: its own share of the model (embedding,
//! the first layers, final norm, LM head) in a [`CpuBackend`], the rest on the slaves of the
//! [`SlaveSet`]. One step: embed and run the master's layers → each slave's layers in stage
//! order, the hidden states going out and back over that slave's stream → final norm and LM
//! head on the master. The scheduler stays on the master; block ids mean the same blocks on
//! every node (each node has at least [`BackendInfo::num_blocks`] blocks of its own layers).

use super::slaves::SlaveSet;
use super::wire;
use crate::backend::cpu::{CpuBackend, Stage, StageInput, StageOutput};
use crate::backend::{Backend, BackendError, BackendInfo, BlockId, KvChunk, StepBatch, StepOutput};
use std::ops::Range;
use std::sync::Arc;

/// See the module docs.
pub struct PipelineBackend {
    local: CpuBackend,
    layers: Range<usize>,
    set: Arc<SlaveSet>,
    info: BackendInfo,
    hidden: usize,
    step: u64,
}

impl PipelineBackend {
    /// `local` holds `layers` and the ends; every slave of `set` is ready, and `num_blocks`
    /// is the fewest KV blocks of any node.
    pub fn new(local: CpuBackend, set: Arc<SlaveSet>, num_blocks: usize) -> Self {
        let mut info = local.info().clone();
        let layers = info.held_layers.clone();
        info.num_blocks = num_blocks;
        info.device = format!(
            "{} + {} multi-node slave(s), pipeline by layers",
            info.device,
            set.len()
        );
        let hidden = local.spec().hidden;
        Self {
            local,
            layers,
            set,
            info,
            hidden,
            step: 0,
        }
    }

    fn local_stage(
        &mut self,
        batch: &StepBatch,
        stage: Stage<'_>,
    ) -> Result<StageOutput, BackendError> {
        self.local.step_stage(batch, stage)
    }
}

impl Backend for PipelineBackend {
    fn info(&self) -> &BackendInfo {
        &self.info
    }

    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, BackendError> {
        self.set
            .all_ready()
            .map_err(BackendError::NodeUnavailable)?;
        let first = Stage {
            layers: self.layers.clone(),
            input: StageInput::Tokens,
            logits: false,
        };
        let mut hidden = match self.local_stage(batch, first)? {
            StageOutput::Hidden(h) => h,
            StageOutput::Logits(_) => {
                return Err(BackendError::Other("the first stage gave logits".into()))
            }
        };
        if batch.tokens.is_empty() {
            return Ok(StepOutput {
                vocab_size: self.info.vocab_size,
                ..StepOutput::default()
            });
        }
        for idx in 0..self.set.len() {
            self.step += 1;
            let req = wire::infer_request(batch, self.step, self.set.epoch(), &hidden)
                .map_err(|e| BackendError::InvalidBatch(e.to_string()))?;
            let want = batch.tokens.len() * self.hidden;
            hidden = self
                .set
                .run_stage(idx, self.step, req, want)
                .map_err(BackendError::NodeUnavailable)?;
        }
        let end = self.layers.end;
        let last = Stage {
            layers: end..end,
            input: StageInput::Hidden(&hidden),
            logits: true,
        };
        match self.local_stage(batch, last)? {
            StageOutput::Logits(out) => Ok(out),
            StageOutput::Hidden(_) => {
                Err(BackendError::Other("the last stage gave no logits".into()))
            }
        }
    }

    fn export_blocks(&self, _ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        Err(BackendError::Unsupported(
            "KV export from a multi-node instance (PD with multi-node is not built)".into(),
        ))
    }

    fn import_blocks(&mut self, _ids: &[BlockId], _kv: &KvChunk) -> Result<(), BackendError> {
        Err(BackendError::Unsupported(
            "KV import into a multi-node instance (PD with multi-node is not built)".into(),
        ))
    }

    fn kv_epoch(&self) -> u64 {
        self.set.epoch()
    }
}
