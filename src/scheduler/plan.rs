//! What one step runs: the scheduler's [`Plan`], shaped so the engine's conversion into the
//! backend's packed `StepBatch` is a copy: per sequence, its new token ids, the position of the
//! first, the context length after the step, its block table and whether it wants logits.
//!
//! ```text
//! for s in &plan.seqs {
//!     let start = batch.tokens.len();
//!     batch.tokens.extend(&s.tokens);
//!     batch.positions.extend(s.positions());
//!     batch.seqs.push(SeqSlice { token_range: start..batch.tokens.len(),
//!         context_len: s.context_len, block_table: s.block_table.clone(),
//!         want_logits: s.want_logits });
//! }
//! ```

use std::ops::Range;

use super::sequence::SeqId;

/// What kind of step a plan is (for metrics and logs; the backend does not care).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Prompt tokens only.
    Prefill,
    /// One token per running sequence only.
    Decode,
    /// `Mix` template: decodes and prompt chunks together.
    Mixed,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedSeq {
    pub id: SeqId,
    /// New token ids, in order (positions `start_pos..context_len`).
    pub tokens: Vec<u32>,
    /// Position of `tokens[0]` (= tokens of the sequence already in KV).
    pub start_pos: usize,
    /// Tokens in KV after this step.
    pub context_len: usize,
    /// The sequence's KV blocks in order, covering `context_len` tokens.
    pub block_table: Vec<u32>,
    /// The chunk reaches the end of the known tokens: sample a token from its last row.
    pub want_logits: bool,
    /// Part of a prompt (first pass or recompute) rather than a decode token.
    pub is_prefill: bool,
}

impl PlannedSeq {
    pub fn positions(&self) -> Range<u32> {
        let start = u32::try_from(self.start_pos).unwrap_or(u32::MAX);
        let end = u32::try_from(self.context_len).unwrap_or(u32::MAX);
        start..end
    }
}

/// One step, to be run by the backend and then reported with `Scheduler::complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub id: u64,
    pub kind: StepKind,
    pub seqs: Vec<PlannedSeq>,
}

impl Plan {
    /// New tokens in the step.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    /// Sequences that will produce logits (and so need a sampled token in `complete`).
    pub fn sampling_ids(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.seqs.iter().filter(|s| s.want_logits).map(|s| s.id)
    }
}
