//! One generation as every HTTP flavour sees it. [`Serving`] is what the inference routes
//! share (engine handle, tokenizer pool, limits, metrics); [`Generation`] turns one engine
//! request's [`TokenEvent`]s into text pieces: incremental detokenization, stop strings,
//! `tokenTimeout`/`e2eTimeout`, and the request's metrics. Dropping a [`Generation`] before
//! its end cancels the engine request, which frees its KV blocks within one step.

use crate::config::{Config, Truncation};
use crate::engine::handle::RequestId;
use crate::engine::json_mode::{JsonConstraint, JsonMode};
use crate::engine::sampler::SamplingParams;
use crate::engine::{Finish, GenRequest, Inference, SubmitError, TokenEvent, TokenEvents};
use crate::http::error::{ApiError, ErrorStyle};
use crate::metrics::Metrics;
use crate::tokenizer::{Detokenizer, StopMatcher, TokenizerError, TokenizerPool};
use axum::http::StatusCode;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Request limits from config.json.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `min(maxInputTokenLen, maxSeqLen − 1)`.
    pub max_input_tokens: usize,
    pub max_seq_len: usize,
    /// `maxIterTimes`: the default and ceiling for output length.
    pub max_iter_times: usize,
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
            max_seq_len: d.max_seq_len as usize,
            max_iter_times: c.backend_config.schedule_config.max_iter_times as usize,
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
}

/// Why a generation could not start or finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    #[error("{field}: the prompt is empty")]
    EmptyPrompt { field: String },
    #[error("{field}: the prompt has {len} tokens, more than the {max} allowed (min of ModelDeployConfig.maxInputTokenLen and maxSeqLen - 1); shorten it or enable truncation")]
    PromptTooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field}: token id {id} is out of range: allowed [0, {vocab})")]
    BadTokenId {
        field: String,
        id: i64,
        vocab: usize,
    },
    #[error("{0}")]
    Tokenizer(String),
    #[error("{0}")]
    TokenizerServer(String),
    #[error("the engine is busy; retry later")]
    Busy,
    #[error("the engine is not running")]
    Stopped,
    #[error("Engine callback timeout: server tokenTimeout ({0} s without a new token)")]
    TokenTimeout(u64),
    #[error("Engine callback timeout: server e2eTimeout ({0} s)")]
    E2eTimeout(u64),
    #[error("generation failed: {0}")]
    Engine(String),
    #[error("the request was cancelled by the server")]
    Cancelled,
}

impl GenError {
    pub fn status(&self) -> StatusCode {
        match self {
            GenError::EmptyPrompt { .. }
            | GenError::PromptTooLong { .. }
            | GenError::BadTokenId { .. }
            | GenError::Tokenizer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GenError::Busy | GenError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            GenError::TokenizerServer(_)
            | GenError::TokenTimeout(_)
            | GenError::E2eTimeout(_)
            | GenError::Engine(_)
            | GenError::Cancelled => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            GenError::EmptyPrompt { field }
            | GenError::PromptTooLong { field, .. }
            | GenError::BadTokenId { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn into_api(self, style: ErrorStyle) -> ApiError {
        let mut e = ApiError::new(self.status(), self.to_string()).style(style);
        if let Some(f) = self.field() {
            e = e.param(f.to_string());
        }
        if matches!(self, GenError::Busy) {
            e = e.retry_after(1);
        }
        e
    }
}

impl From<TokenizerError> for GenError {
    fn from(e: TokenizerError) -> Self {
        if e.is_client_error() {
            GenError::Tokenizer(e.to_string())
        } else {
            GenError::TokenizerServer(e.to_string())
        }
    }
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

    /// The output limit of a request asking for `requested` tokens (`None`: as many as
    /// allowed): `min(maxIterTimes, requested, maxSeqLen − prompt)`.
    pub fn output_limit(&self, requested: Option<usize>, prompt_len: usize) -> usize {
        let room = self.limits.max_seq_len.saturating_sub(prompt_len);
        requested
            .unwrap_or(usize::MAX)
            .min(self.limits.max_iter_times)
            .min(room)
            .max(1)
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
        let sub = match self.engine.submit(req) {
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
        })
    }
}

/// Per-request options of a generation: how generated ids become text, its own time limit,
/// and the ids it can be cancelled by.
#[derive(Debug, Clone, Default)]
pub struct GenOptions {
    /// The request's own time limit (MindIE's `timeout` parameter); the shorter of it and
    /// `e2eTimeout` applies.
    pub timeout: Option<Duration>,
    /// Names under which `stopInfer` finds this request (its `RequestUUID`, a client `id`).
    pub keys: Vec<String>,
    pub skip_special_tokens: bool,
    pub stop: Vec<String>,
    pub include_stop_str_in_output: bool,
    /// Decode the first tokens in the context of the prompt's last tokens (keeps a leading
    /// SentencePiece space, as in the text of prompt + completion).
    pub decode_in_prompt_context: bool,
}

/// Why a generation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// EOS or a stop token id.
    Stop,
    /// The stop string with this index in the request's list.
    StopString(usize),
    /// The output limit.
    Length,
}

impl EndReason {
    /// OpenAI's `finish_reason`.
    pub fn openai(&self) -> &'static str {
        match self {
            EndReason::Stop | EndReason::StopString(_) => "stop",
            EndReason::Length => "length",
        }
    }
}

/// The end of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub reason: EndReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub cached_tokens: usize,
}

/// One generated token and the text it released.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPiece {
    pub id: u32,
    /// Text that became final with this token (may be empty: an incomplete character, text
    /// held back as a possible stop string start, a skipped special token).
    pub text: String,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
    /// When the engine produced it.
    pub at: Instant,
}

/// What [`Generation::next`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Token(TokenPiece),
    /// Held-back text released at the end (no token of its own).
    Text(String),
    /// The last piece.
    End(Outcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// The engine finished (or a stop string matched): flush held text, then end.
    Ending(EndReason, usize),
    Done,
}

/// Running requests by the names clients may cancel them with (`stopInfer`).
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<String, Vec<RequestId>>>>);

impl Registry {
    fn insert(&self, keys: &[String], id: RequestId) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            for k in keys {
                m.entry(k.clone()).or_default().push(id);
            }
        }
    }

    fn remove(&self, keys: &[String], id: RequestId) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            for k in keys {
                if let Some(ids) = m.get_mut(k) {
                    ids.retain(|&i| i != id);
                    if ids.is_empty() {
                        m.remove(k);
                    }
                }
            }
        }
    }

    /// The engine ids of the running requests known as `key` (the `n` choices of one
    /// request share its keys).
    pub fn find(&self, key: &str) -> Vec<RequestId> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }
}

/// A running generation. Yields pieces until [`Piece::End`] or an error.
pub struct Generation {
    registry: Registry,
    keys: Vec<String>,
    metrics: Option<Arc<Metrics>>,
    id: RequestId,
    /// The engine request; dropping it before its end cancels it.
    events: TokenEvents,
    detok: Detokenizer,
    stop: StopMatcher,
    started: Instant,
    deadline: Instant,
    e2e_timeout: Duration,
    token_timeout: Duration,
    first_at: Option<Instant>,
    last_at: Instant,
    tokens: usize,
    prompt_tokens: usize,
    state: State,
}

impl Generation {
    /// The engine's id of this request (for `stopInfer`-style cancels and logs).
    pub fn id(&self) -> RequestId {
        self.id
    }

    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// When the request was submitted.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The next piece; `None` after the end or an error.
    pub async fn next(&mut self) -> Option<Result<Piece, GenError>> {
        loop {
            match self.state {
                State::Done => return None,
                State::Ending(reason, cached) => {
                    let tail = self.detok.finish();
                    let mut text = self.stop.push(&tail).emit;
                    text.push_str(&self.stop.finish());
                    let reason = match (reason, self.stop.stopped()) {
                        (EndReason::StopString(i), _) | (_, Some(i)) => EndReason::StopString(i),
                        (r, None) => r,
                    };
                    if !text.is_empty() {
                        // Emit the tail first; come back for the end.
                        self.state = State::Ending(reason, cached);
                        return Some(Ok(Piece::Text(text)));
                    }
                    self.state = State::Done;
                    self.record_end(true);
                    return Some(Ok(Piece::End(Outcome {
                        reason,
                        prompt_tokens: self.prompt_tokens,
                        completion_tokens: self.tokens,
                        cached_tokens: cached,
                    })));
                }
                State::Running => {}
            }
            let now = Instant::now();
            let until_deadline = self.deadline.saturating_duration_since(now);
            let wait = until_deadline.min(self.token_timeout);
            let ev = match tokio::time::timeout(wait, self.events.next()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return Some(Err(self.fail(GenError::Cancelled))),
                Err(_) => {
                    let err = if Instant::now() >= self.deadline {
                        GenError::E2eTimeout(self.e2e_timeout.as_secs())
                    } else {
                        GenError::TokenTimeout(self.token_timeout.as_secs())
                    };
                    return Some(Err(self.fail(err)));
                }
            };
            match ev {
                TokenEvent::Token {
                    id,
                    logprob,
                    top,
                    at,
                } => {
                    self.tokens += 1;
                    self.last_at = at;
                    if self.first_at.is_none() {
                        self.first_at = Some(at);
                        if let Some(m) = &self.metrics {
                            m.time_to_first_token
                                .with_label_values(&[m.model()])
                                .observe(at.duration_since(self.started).as_secs_f64());
                        }
                    }
                    let delta = self.detok.push(id);
                    let res = self.stop.push(&delta);
                    if let Some(i) = res.stopped {
                        // Nothing after the stop string is wanted: end the engine request now.
                        self.events.cancel();
                        self.state = State::Ending(EndReason::StopString(i), 0);
                    }
                    return Some(Ok(Piece::Token(TokenPiece {
                        id,
                        text: res.emit,
                        logprob,
                        top,
                        at,
                    })));
                }
                TokenEvent::Finished {
                    finish,
                    cached_tokens,
                    at,
                    ..
                } => {
                    self.last_at = at;
                    let reason = match finish {
                        Finish::Stop => EndReason::Stop,
                        Finish::Length => EndReason::Length,
                        Finish::Cancelled => return Some(Err(self.fail(GenError::Cancelled))),
                        Finish::Error(e) => return Some(Err(self.fail(GenError::Engine(e)))),
                    };
                    self.state = State::Ending(reason, cached_tokens);
                }
            }
        }
    }

    /// Ends with an error: cancels the engine request and counts the failure.
    fn fail(&mut self, err: GenError) -> GenError {
        if self.state != State::Done {
            self.events.cancel();
            self.state = State::Done;
            self.record_end(false);
        }
        err
    }

    fn record_end(&self, success: bool) {
        self.registry.remove(&self.keys, self.id);
        let Some(m) = &self.metrics else {
            return;
        };
        let label = [m.model()];
        if success {
            m.request_success.with_label_values(&label).inc();
            let e2e = self.last_at.duration_since(self.started).as_secs_f64();
            m.e2e_request_latency.with_label_values(&label).observe(e2e);
            let mut tbt = None;
            if let (Some(first), true) = (self.first_at, self.tokens > 1) {
                let tpot =
                    self.last_at.duration_since(first).as_secs_f64() / (self.tokens - 1) as f64;
                m.time_per_output_token
                    .with_label_values(&label)
                    .observe(tpot);
                tbt = Some(Duration::from_secs_f64(tpot));
            }
            if let Some(first) = self.first_at {
                m.recent.record(first.duration_since(self.started), tbt);
            }
        } else {
            m.request_failed.with_label_values(&label).inc();
        }
        m.prompt_tokens
            .with_label_values(&label)
            .inc_by(self.prompt_tokens as u64);
        m.generation_tokens
            .with_label_values(&label)
            .inc_by(self.tokens as u64);
        m.request_prompt_tokens
            .with_label_values(&label)
            .observe(self.prompt_tokens as f64);
        m.request_generation_tokens
            .with_label_values(&label)
            .observe(self.tokens as f64);
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        // Client gone (or the handler gave up) before the end: free the engine's resources
        // (dropping `events` cancels a request the engine has not finished).
        if matches!(self.state, State::Running | State::Ending(..)) {
            self.events.cancel();
            self.state = State::Done;
            self.record_end(false);
        }
    }
}
