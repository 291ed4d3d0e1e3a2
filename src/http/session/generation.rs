//! One generation: [`Generation`] turns one engine request's [`TokenEvent`]s into text pieces:
//! incremental detokenization, stop strings, `tokenTimeout`/`e2eTimeout`, and the request's
//! metrics. Dropping a [`Generation`] before its end cancels the engine request, which frees
//! its KV blocks within one step.

use super::{GenError, Registry};
use crate::engine::handle::RequestId;
use crate::engine::{Finish, TokenEvent, TokenEvents};
use crate::metrics::Metrics;
use crate::tokenizer::{Detokenizer, StopMatcher};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// The end of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended: [`Finish::Stop`], [`Finish::StopString`] or [`Finish::Length`] (a
    /// cancelled or failed generation ends with a [`GenError`] instead).
    pub reason: Finish,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Running,
    /// The engine finished (or a stop string matched): flush held text, then end.
    Ending(Finish, usize),
    Done,
}

/// A running generation. Yields pieces until [`Piece::End`] or an error.
pub struct Generation {
    pub(super) registry: Registry,
    pub(super) keys: Vec<String>,
    pub(super) metrics: Option<Arc<Metrics>>,
    pub(super) id: RequestId,
    /// The engine request; dropping it before its end cancels it.
    pub(super) events: TokenEvents,
    pub(super) detok: Detokenizer,
    pub(super) stop: StopMatcher,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
    pub(super) e2e_timeout: Duration,
    pub(super) token_timeout: Duration,
    pub(super) first_at: Option<Instant>,
    pub(super) last_at: Instant,
    pub(super) tokens: usize,
    pub(super) prompt_tokens: usize,
    pub(super) state: State,
    /// The span of the HTTP request that started it (its `request_id`), so the end of a
    /// generation that outlives its handler, such as a stream, is logged under that id.
    pub(super) span: tracing::Span,
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
            match &self.state {
                State::Done => return None,
                State::Ending(reason, cached) => {
                    let (reason, cached) = (reason.clone(), *cached);
                    let tail = self.detok.finish();
                    let mut text = self.stop.push(&tail).emit;
                    text.push_str(&self.stop.finish());
                    let reason = match (reason, self.stop.stopped()) {
                        (Finish::StopString(i), _) | (_, Some(i)) => Finish::StopString(i),
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
                        self.state = State::Ending(Finish::StopString(i), 0);
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
                    match finish {
                        Finish::Cancelled => return Some(Err(self.fail(GenError::Cancelled))),
                        Finish::Error(e) => return Some(Err(self.fail(GenError::Engine(e)))),
                        done => self.state = State::Ending(done, cached_tokens),
                    }
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

    /// The prefill side's share of a request handed to a decode instance: its prompt and
    /// first token, neither a success nor a failure here.
    fn record_handoff(&self) {
        self.registry.remove(&self.keys, self.id);
        if let Some(m) = &self.metrics {
            let label = [m.model()];
            m.prompt_tokens
                .with_label_values(&label)
                .inc_by(self.prompt_tokens as u64);
            m.generation_tokens
                .with_label_values(&label)
                .inc_by(self.tokens as u64);
        }
    }

    fn record_end(&self, success: bool) {
        self.registry.remove(&self.keys, self.id);
        self.span.in_scope(|| {
            tracing::debug!(
                seq = self.id,
                success,
                prompt_tokens = self.prompt_tokens,
                generated_tokens = self.tokens,
                ttft_ms = self
                    .first_at
                    .map(|f| f.duration_since(self.started).as_millis() as u64),
                e2e_ms = self.last_at.duration_since(self.started).as_millis() as u64,
                "generation ended"
            )
        });
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
            if self.events.is_handed_off() {
                // PD prefill: the decode instance finishes it and counts its end.
                self.record_handoff();
            } else {
                self.record_end(false);
            }
        }
    }
}
