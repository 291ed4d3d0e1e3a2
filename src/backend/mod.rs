//! Model execution behind one trait (DESIGN §5). The scheduler sees backends only through it.
//!
//! A step is *packed*: the new tokens of every scheduled sequence in one flat array
//! ([`StepBatch`]), each sequence described by its token range, its context length after the
//! step and its block table. The backend owns the paged KV storage; which block belongs to whom
//! is the block manager's business. Token at position `p` of a sequence lives in block
//! `block_table[p / block_size]`, slot `p % block_size`.
//!
//! - [`kind`]: which backend a configuration selects ([`BackendKind`]).
//! - [`load`]: building one ([`load::load`] of a [`load::BackendSpec`]).
//! - [`error`]: [`BackendError`] and its [`BackendErrorKind`].
//! - [`ascend`]: Ascend NPUs through CANN (loaded at run time; tested on an emulated CANN).
//! - [`cpu`]: the host-CPU backend (Llama / Qwen2 from HF safetensors, own paged attention).
//! - [`mock`]: the model-free backend of `StandardMock` (deterministic tokens).

pub mod ascend;
pub mod cpu;
pub mod error;
pub mod kind;
pub mod load;
pub mod mock;

pub use error::{BackendError, BackendErrorKind};
pub use kind::BackendKind;
pub use load::{load, BackendSpec};

use std::ops::Range;

/// Index of a KV block in the backend's cache.
pub type BlockId = u32;

/// Storage format of the model weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }

    /// Bytes of one stored element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }
}

/// What a backend is and holds; fixed after load.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendInfo {
    /// HF architecture name, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    /// Weight storage dtype (computation is f32 on the CPU backend).
    pub dtype: DType,
    /// Human-readable device, e.g. `cpu (2 threads, avx512)`.
    pub device: String,
    /// Rows of the logits (the model's vocabulary, possibly padded past the tokenizer's).
    pub vocab_size: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// KV blocks in the cache (block ids are `0..num_blocks`).
    pub num_blocks: usize,
    /// Bytes one KV block occupies (all held layers, keys and values).
    pub bytes_per_block: usize,
    /// `max_position_embeddings` of the model.
    pub max_position: usize,
    /// End-of-sequence ids (`generation_config.json`, else `config.json`).
    pub eos_token_ids: Vec<u32>,
    /// Decoder layers of the model (all of them, also when this backend holds only some).
    pub num_layers: usize,
    /// Decoder layers this backend holds, by global index: `0..num_layers` for a whole model,
    /// a part of it for a node of a model split by layers (`cpu::LayerShare`).
    pub held_layers: Range<usize>,
    /// Bytes of the weight tensors this backend holds, as stored (a tied embedding counted
    /// once); 0 for a backend without weights.
    pub weight_bytes: u64,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// The KV layout tag of exported blocks ([`KvChunk::layout`]): two instances can hand KV
    /// to each other only when their tags are equal.
    pub kv_layout: String,
}

/// One sequence's share of a packed step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSlice {
    /// Its new tokens: `tokens[token_range]` (positions `context_len - len .. context_len`).
    pub token_range: Range<usize>,
    /// Tokens in KV after this step, the new ones included.
    pub context_len: usize,
    /// KV blocks of the sequence in order; must cover `context_len` tokens.
    pub block_table: Vec<BlockId>,
    /// Return logits for the last new token of this sequence.
    pub want_logits: bool,
}

/// All new tokens of all sequences of one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepBatch {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub seqs: Vec<SeqSlice>,
}

impl StepBatch {
    /// Checks the batch against a backend's vocabulary and KV cache: positions follow each
    /// sequence's context, token ranges cover every token exactly once, block tables cover
    /// the context with blocks that exist.
    pub fn validate(
        &self,
        vocab_size: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Result<(), BackendError> {
        let b = self;
        let bad = |m: String| Err(BackendError::InvalidBatch(m));
        if b.tokens.len() != b.positions.len() {
            return bad(format!(
                "{} tokens but {} positions",
                b.tokens.len(),
                b.positions.len()
            ));
        }
        if let Some(t) = b.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return bad(format!(
                "token id {t} outside the vocabulary ({})",
                vocab_size
            ));
        }
        let mut covered = vec![false; b.tokens.len()];
        for (i, s) in b.seqs.iter().enumerate() {
            let r = &s.token_range;
            if r.start >= r.end || r.end > b.tokens.len() {
                return bad(format!("seq {i}: token range {r:?} empty or out of bounds"));
            }
            if s.context_len < r.len() {
                return bad(format!(
                    "seq {i}: context_len {} < new tokens",
                    s.context_len
                ));
            }
            let first = s.context_len - r.len();
            for (j, &p) in b.positions[r.clone()].iter().enumerate() {
                if p as usize != first + j {
                    return bad(format!(
                        "seq {i}: position {p} where {} expected",
                        first + j
                    ));
                }
            }
            let bs = block_size;
            if s.block_table.len() < s.context_len.div_ceil(bs) {
                return bad(format!(
                    "seq {i}: {} blocks cannot hold {} tokens",
                    s.block_table.len(),
                    s.context_len
                ));
            }
            if let Some(id) = s.block_table.iter().find(|&&id| id as usize >= num_blocks) {
                return bad(format!("seq {i}: block {id} out of range"));
            }
            for c in &mut covered[r.clone()] {
                if *c {
                    return bad(format!("seq {i}: token ranges overlap"));
                }
                *c = true;
            }
        }
        if covered.iter().any(|c| !c) {
            return bad("some tokens belong to no sequence".into());
        }
        Ok(())
    }
}

/// Logits of the sequences that asked for them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepOutput {
    pub vocab_size: usize,
    /// Indices into [`StepBatch::seqs`] of the sequences with logits, in batch order.
    pub seq_indices: Vec<usize>,
    /// `seq_indices.len() × vocab_size` raw f32 logits (full rows: padded vocabulary rows are
    /// kept; masking them is the sampler's job).
    pub logits: Vec<f32>,
}

impl StepOutput {
    /// Logits row `i` (the `i`-th sequence that wanted logits).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.vocab_size..(i + 1) * self.vocab_size]
    }

    /// Logits of `batch.seqs[seq_index]`, if it asked for them.
    pub fn for_seq(&self, seq_index: usize) -> Option<&[f32]> {
        self.seq_indices
            .iter()
            .position(|&s| s == seq_index)
            .map(|i| self.row(i))
    }
}

/// KV blocks in transit (PD handoff): the raw contents of each block in the backend's layout.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KvChunk {
    /// Layout tag, so an importer can refuse data from an incompatible backend.
    pub layout: String,
    pub bytes_per_block: usize,
    /// `ids.len() × bytes_per_block` bytes, block after block.
    pub data: Vec<u8>,
}

impl KvChunk {
    /// Refuses a chunk that is not `ids` blocks of `layout`, `bytes_per_block` each.
    pub fn check(
        &self,
        layout: &str,
        bytes_per_block: usize,
        ids: &[BlockId],
    ) -> Result<(), BackendError> {
        if self.layout != layout
            || self.bytes_per_block != bytes_per_block
            || self.data.len() != ids.len() * bytes_per_block
        {
            return Err(BackendError::KvCache(format!(
                "incompatible KV chunk (layout `{}`, {} bytes; expected `{layout}`, {} bytes)",
                self.layout,
                self.data.len(),
                ids.len() * bytes_per_block
            )));
        }
        Ok(())
    }
}

/// A model runner. Implementations: [`cpu::CpuBackend`], [`ascend::AscendBackend`], [`mock::MockBackend`] (and the multi-node pipeline).
pub trait Backend: Send {
    fn info(&self) -> &BackendInfo;
    /// Runs one packed forward step: writes the new tokens' keys/values to their KV slots and
    /// returns logits for the sequences that asked.
    fn step(&mut self, batch: &StepBatch) -> Result<StepOutput, BackendError>;
    /// Copies blocks out of the cache (PD send).
    fn export_blocks(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError>;
    /// Writes blocks exported by a compatible backend into `ids`.
    fn import_blocks(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError>;
    /// Changes whenever KV the backend held was lost outside a step (a multi-node slave that
    /// restarted); the engine then ends its requests and forgets its prefix cache.
    fn kv_epoch(&self) -> u64 {
        0
    }
}
