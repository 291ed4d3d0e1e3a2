//! The protocol-neutral request the engine runs and the events it streams back. Wire formats
//! (OpenAI, TGI, ...) are converted to and from these at the HTTP edge.

use super::json_mode::JsonMode;
use super::sampler::SamplingParams;
use std::time::Instant;

/// One generation request, already tokenized and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// The request's own output limit ([`NO_OUTPUT_LIMIT`]: none of its own). The engine's
    /// scheduler is the one place that applies the output limit:
    /// `min(max_new_tokens, maxIterTimes, maxSeqLen − prompt)`.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Extra token ids that end the generation (like EOS).
    pub stop_token_ids: Vec<u32>,
    /// Keep going past EOS.
    pub ignore_eos: bool,
    /// Report the chosen token's log-probability and this many alternatives (`None`: no
    /// log-probabilities at all).
    pub top_logprobs: Option<usize>,
    /// 1 (most urgent) ..= 5.
    pub priority: u8,
    /// JSON mode: the output is kept to one JSON object.
    pub json: Option<JsonMode>,
}

/// [`GenRequest::max_new_tokens`] of a request that sets no output limit of its own.
pub const NO_OUTPUT_LIMIT: usize = usize::MAX;

/// How a generation ended: one type from the engine to the wire. The engine reports `Stop`,
/// `Length`, `Cancelled` and `Error`; `StopString` is found where the text is (the HTTP session
/// matches stop strings on the detokenized output, then cancels the engine request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// EOS or a stop token id.
    Stop,
    /// The stop string with this index in the request's list.
    StopString(usize),
    /// Output limit reached.
    Length,
    /// Cancelled (client gone, stopInfer, timeout).
    Cancelled,
    /// The engine could not finish it; the message says why.
    Error(String),
}

impl Finish {
    /// The generation ended as asked (EOS, a stop token or string, the output limit), not
    /// cancelled or failed.
    pub fn is_complete(&self) -> bool {
        matches!(self, Finish::Stop | Finish::StopString(_) | Finish::Length)
    }
}

/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// A new output token.
    Token {
        id: u32,
        /// Log-probability of `id` (when asked for).
        logprob: Option<f32>,
        /// The most likely alternatives, best first (when asked for).
        top: Vec<(u32, f32)>,
        at: Instant,
    },
    /// The end; nothing follows.
    Finished {
        finish: Finish,
        prompt_tokens: usize,
        generated_tokens: usize,
        /// Prompt tokens served by the prefix cache.
        cached_tokens: usize,
        at: Instant,
    },
}
