//! One sequence's state: what the engine submits ([`SeqRequest`]), what the scheduler tracks
//! (`Sequence`), how it ends ([`FinishReason`]) and what the engine is told ([`SeqEvent`]).
//!
//! Token accounting: `tokens` holds the prompt followed by every generated token. `computed`
//! of them have KV in the cache; a step processes `tokens[computed..computed + n]` and wants
//! logits when it reaches the end of `tokens`. After a prefill the sampled token is appended,
//! so a decoding sequence always has exactly one token (the last sampled) still to compute.
//! Preemption by recompute drops the KV (`computed = 0`) and keeps `tokens`: the generated
//! tokens are simply part of the prompt of the recompute.
//!
//! Priority: 1 is the most urgent, 5 the least (values outside are clamped); it matters only
//! under the priority policy ([`super::PolicyType::Priority`]).

use std::time::{Duration, Instant};

use super::blocks::BlockTable;

/// The engine's id for a sequence (unique among live sequences).
pub type SeqId = u64;

/// Most urgent priority.
pub const PRIORITY_HIGHEST: u8 = 1;
/// Least urgent priority.
pub const PRIORITY_LOWEST: u8 = 5;

/// A new sequence to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRequest {
    pub id: SeqId,
    pub prompt: Vec<u32>,
    /// The request's own limit (`max_tokens` / `max_new_tokens`); the scheduler also caps it by
    /// `maxIterTimes` and `maxSeqLen − prompt length`.
    pub max_new_tokens: usize,
    /// 1 (most urgent) ..= 5 (least).
    pub priority: u8,
    pub arrival: Instant,
}

/// Why `add` refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddError {
    #[error("sequence {0} already exists")]
    DuplicateId(SeqId),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("the request allows no output tokens (max new tokens 0)")]
    NoOutput,
    #[error("the prompt has {len} tokens; maxSeqLen {max_seq_len} leaves no room for output")]
    PromptTooLong { len: usize, max_seq_len: usize },
    #[error("the prompt needs {needed} KV blocks; the whole cache has {total}")]
    PromptExceedsCache { needed: usize, total: usize },
}

/// Why the scheduler ended a sequence with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbortReason {
    #[error("out of KV blocks: the sequence needs {needed} blocks and cannot get them (cache: {total} blocks; preemption disabled or impossible)")]
    OutOfKvBlocks { needed: usize, total: usize },
    #[error("out of KV blocks after being preempted {count} times (maxPreemptCount {max})")]
    PreemptLimit { count: u32, max: u32 },
    #[error("the engine reported no token for a sequence that produced logits")]
    NoToken,
    #[error("{0}")]
    Engine(String),
}

/// How a sequence ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop condition (decided by the engine).
    Stop,
    /// Reached its output limit: min(request, `maxIterTimes`, `maxSeqLen` − prompt length).
    Length,
    /// The client went away or asked to stop.
    Cancelled,
    /// The scheduler (or engine) had to end it with an error.
    Aborted(AbortReason),
}

/// Where a sequence is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqStatus {
    /// In the waiting queue, holding no blocks.
    Waiting,
    /// Admitted: holds blocks, is prefilling or decoding.
    Running,
    /// Ended; the scheduler forgets it right after reporting [`SeqEvent::Finished`].
    Finished(FinishReason),
}

/// What happened to a sequence, for the engine to turn into `TokenEvent`s and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqEvent {
    /// Left the waiting queue. `cached_tokens`: prompt tokens served by the prefix cache (on a
    /// recompute, tokens of the recomputed sequence).
    Admitted {
        id: SeqId,
        cached_tokens: usize,
        recompute: bool,
    },
    /// A sampled token was appended; `generated` counts output tokens so far.
    Token {
        id: SeqId,
        token: u32,
        generated: usize,
    },
    /// Lost its KV and went back to the waiting queue (`num_preemptions_total`).
    Preempted { id: SeqId, count: u32 },
    /// Ended; its blocks are back in the pool.
    Finished { id: SeqId, reason: FinishReason },
}

/// A public snapshot of one sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqInfo {
    pub id: SeqId,
    pub status: SeqStatus,
    pub prompt_len: usize,
    pub generated: usize,
    /// Output limit after the scheduler's caps.
    pub max_new_tokens: usize,
    /// Tokens with KV in the cache.
    pub computed: usize,
    pub preempt_count: u32,
    /// Prompt tokens served by the prefix cache at the first admission.
    pub cached_tokens: usize,
    pub blocks: Vec<u32>,
}

/// The scheduler's record of a live sequence.
#[derive(Debug)]
pub(crate) struct Sequence {
    pub id: SeqId,
    pub priority: u8,
    pub arrival: Instant,
    /// When it (re-)entered the waiting queue.
    pub queued_at: Instant,
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_new: usize,
    pub computed: usize,
    /// Tokens of the step in flight (their blocks are leased, their KV not yet confirmed).
    pub in_flight: usize,
    /// Produced logits since the last (re-)admission: decoding, not prefilling.
    pub prefilled: bool,
    pub preempt_count: u32,
    pub admitted_once: bool,
    pub cached_tokens: usize,
    /// Chain keys of the full blocks of `tokens` (see `prefix`).
    pub keys: Vec<u64>,
    pub status: SeqStatus,
    /// `Some` exactly while running.
    pub table: Option<BlockTable>,
    /// Keep the KV under a lease of this long when the sequence ends normally (PD prefill).
    pub kv_lease: Option<Duration>,
}

impl Sequence {
    pub fn new(req: SeqRequest, max_new: usize, keys: Vec<u64>) -> Self {
        Self {
            id: req.id,
            priority: req.priority.clamp(PRIORITY_HIGHEST, PRIORITY_LOWEST),
            arrival: req.arrival,
            queued_at: req.arrival,
            prompt_len: req.prompt.len(),
            tokens: req.prompt,
            max_new,
            computed: 0,
            in_flight: 0,
            prefilled: false,
            preempt_count: 0,
            admitted_once: false,
            cached_tokens: 0,
            keys,
            status: SeqStatus::Waiting,
            table: None,
            kv_lease: None,
        }
    }

    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens not yet in KV nor in flight.
    pub fn remaining(&self) -> usize {
        self.tokens
            .len()
            .saturating_sub(self.computed + self.in_flight)
    }

    /// KV tokens at the very end (the last sampled token never enters KV).
    pub fn max_kv_tokens(&self) -> usize {
        self.prompt_len + self.max_new - 1
    }

    /// Still owes its first token to the client.
    pub fn awaiting_first_token(&self) -> bool {
        self.generated() == 0
    }

    pub fn blocks_held(&self) -> usize {
        self.table.as_ref().map_or(0, BlockTable::len)
    }

    pub fn info(&self) -> SeqInfo {
        SeqInfo {
            id: self.id,
            status: self.status.clone(),
            prompt_len: self.prompt_len,
            generated: self.generated(),
            max_new_tokens: self.max_new,
            computed: self.computed,
            preempt_count: self.preempt_count,
            cached_tokens: self.cached_tokens,
            blocks: self
                .table
                .as_ref()
                .map(|t| t.ids().to_vec())
                .unwrap_or_default(),
        }
    }
}
