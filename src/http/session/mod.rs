//! The per-request session every flavour shares: [`Serving`] holds what the inference routes
//! share (the [`Inference`] that runs generations, the tokenizer pool, limits, metrics, the
//! `stopInfer` [`Registry`]) and checks and submits prompts; one submitted request is a
//! [`Generation`], which turns its engine events into text pieces; [`drive`] runs generations
//! to their end, folded or streamed. Failures are [`GenError`]s.

pub mod drive;
mod error;
mod generation;
mod registry;

pub use error::GenError;
pub use generation::{GenOptions, Generation, Outcome, Piece, TokenPiece};
pub use registry::{Registry, StopHook};

use crate::config::{Config, Truncation};
use crate::engine::json_mode::{JsonConstraint, JsonMode};
use crate::engine::sampler::SamplingParams;
use crate::engine::{GenRequest, Inference, SubmitError};
use crate::metrics::Metrics;
use crate::tokenizer::{Detokenizer, StopMatcher, TokenizerPool};
use generation::State;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Request limits from config.json.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `min(maxInputTokenLen, maxSeqLen − 1)`.
    pub max_input_tokens: usize,
    pub truncation: Truncation,
    /// Longest wait for the next token.
    pub token_timeout: Duration,
    /// Longest a request may live.
    pub e2e_timeout: Duration,
    /// `fullTextEnabled`: the last streamed chunk also carries the whole text.
    pub full_text: bool,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        let d = &c.backend_config.model_deploy_config;
        Self {
            max_input_tokens: c.effective_max_input_token_len() as usize,
            truncation: d.truncation,
            token_timeout: Duration::from_secs(u64::from(c.token_timeout_secs())),
            e2e_timeout: Duration::from_secs(u64::from(c.e2e_timeout_secs())),
            full_text: c.server_config.full_text_enabled,
        }
    }
}

/// What the inference routes of every flavour share.
#[derive(Clone)]
pub struct Serving {
    /// Where generations run: the local engine, or later a remote instance.
    pub engine: Arc<dyn Inference>,
    pub tokenizer: TokenizerPool,
    /// `modelName`: the only model the routes accept.
    pub model_name: String,
    pub limits: Limits,
    pub metrics: Option<Arc<Metrics>>,
    /// What requests that leave sampling fields out get (see [`crate::engine::defaults`]).
    pub sampling_defaults: SamplingParams,
    /// Running requests by client-visible id, for `stopInfer`.
    pub registry: Registry,
    /// Every token's text for JSON mode, made at its first use.
    pub json_mode: tokio::sync::OnceCell<JsonMode>,
    /// What else `stopInfer` can end (PD leases and transfers; `None` in standard mode).
    pub stop_hook: Option<Arc<dyn StopHook>>,
}

/// The token texts JSON mode masks with: special tokens never allowed.
fn json_mode_of(tok: &crate::tokenizer::Tokenizer) -> JsonMode {
    let texts = (0..tok.vocab_size() as u32)
        .map(|id| {
            if tok.is_special(id) {
                Vec::new()
            } else {
                tok.token_bytes(id).unwrap_or_default()
            }
        })
        .collect();
    JsonMode(JsonConstraint::new(texts))
}

impl Serving {
    /// JSON mode's token table, built on a blocking thread the first time (one decode per
    /// vocabulary entry); a failed build is retried by the next request.
    pub async fn json_mode(&self) -> Result<JsonMode, GenError> {
        self.json_mode
            .get_or_try_init(|| async {
                let tok = self.tokenizer.tokenizer().clone();
                tokio::task::spawn_blocking(move || json_mode_of(&tok))
                    .await
                    .map_err(|e| GenError::TokenizerServer(format!("JSON mode token table: {e}")))
            })
            .await
            .cloned()
    }

    /// The tokenizer's vocabulary size (token ids are below it).
    pub fn vocab(&self) -> usize {
        self.tokenizer.tokenizer().vocab_size()
    }

    /// Checks prompt ids against the vocabulary and the input limit, truncating when
    /// `truncation` says so. `field` names the request field in errors.
    pub fn fit_prompt(&self, mut ids: Vec<u32>, field: &str) -> Result<Vec<u32>, GenError> {
        if ids.is_empty() {
            return Err(GenError::EmptyPrompt {
                field: field.into(),
            });
        }
        let vocab = self.tokenizer.tokenizer().vocab_size();
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(GenError::BadTokenId {
                field: field.into(),
                id: i64::from(bad),
                vocab,
            });
        }
        let max = self.limits.max_input_tokens;
        if ids.len() > max {
            match self.limits.truncation {
                Truncation::Reject => {
                    return Err(GenError::PromptTooLong {
                        field: field.into(),
                        len: ids.len(),
                        max,
                    })
                }
                Truncation::KeepLeft => ids.truncate(max),
                Truncation::KeepRight => {
                    ids.drain(..ids.len() - max);
                }
            }
        }
        Ok(ids)
    }

    /// Encodes a text prompt (special tokens added as the model wants), keeps its last
    /// `keep_last` tokens when asked (TGI `truncate`), then applies [`Self::fit_prompt`].
    pub async fn encode_prompt(
        &self,
        text: &str,
        field: &str,
        keep_last: Option<usize>,
    ) -> Result<Vec<u32>, GenError> {
        if text.is_empty() {
            return Err(GenError::EmptyPrompt {
                field: field.into(),
            });
        }
        let mut ids = self.tokenizer.encode(text.to_string(), true).await?;
        if let Some(n) = keep_last {
            if ids.len() > n {
                ids.drain(..ids.len() - n);
            }
        }
        self.fit_prompt(ids, field)
    }

    /// Submits `req` and returns its generation.
    pub fn start(&self, req: GenRequest, text: GenOptions) -> Result<Generation, GenError> {
        if let Some(m) = &self.metrics {
            m.request_received.with_label_values(&[m.model()]).inc();
        }
        let prompt_tokens = req.prompt.len();
        let detok = if text.decode_in_prompt_context {
            Detokenizer::with_prompt(
                self.tokenizer.tokenizer().clone(),
                text.skip_special_tokens,
                &req.prompt,
            )
        } else {
            Detokenizer::new(self.tokenizer.tokenizer().clone(), text.skip_special_tokens)
        };
        // Under PD the request's scope decides where it runs (see `crate::pd::context`).
        let engine = crate::pd::context::inference().unwrap_or_else(|| self.engine.clone());
        let sub = match engine.submit(req) {
            Ok(s) => s,
            Err(e) => {
                if let Some(m) = &self.metrics {
                    m.request_failed.with_label_values(&[m.model()]).inc();
                }
                return Err(match e {
                    SubmitError::QueueFull => GenError::Busy,
                    SubmitError::Stopped => GenError::Stopped,
                });
            }
        };
        let now = Instant::now();
        let e2e = text
            .timeout
            .map_or(self.limits.e2e_timeout, |t| t.min(self.limits.e2e_timeout));
        self.registry.insert(&text.keys, sub.id());
        Ok(Generation {
            registry: self.registry.clone(),
            keys: text.keys,
            metrics: self.metrics.clone(),
            id: sub.id(),
            events: sub,
            detok,
            stop: StopMatcher::new(text.stop, text.include_stop_str_in_output),
            started: now,
            deadline: now + e2e,
            e2e_timeout: e2e,
            token_timeout: self.limits.token_timeout,
            first_at: None,
            last_at: now,
            tokens: 0,
            prompt_tokens,
            state: State::Running,
            span: tracing::Span::current(),
        })
    }
}
