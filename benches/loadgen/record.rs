//! One request's measurement: a [`Tracker`] follows the classified SSE events of a streaming
//! reply with their arrival times and turns them into a [`Record`] (TTFT, end-to-end time,
//! token counts, and the outcome: ok, short, or which kind of error).
//!
//! Pure code (times are passed in), included by `tests/loadgen.rs`.

use std::time::Duration;

use crate::sse::{Event, Usage};

/// Why a request did not count as a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// Non-2xx status.
    Http,
    /// Connect, TLS, I/O or timeout failure.
    Transport,
    /// An `{"error": ...}` event in the stream.
    ErrorEvent,
    /// An event that was not a recognisable chunk.
    Malformed,
    /// The stream ended before `[DONE]`.
    Truncated,
    /// `[DONE]` came but no usage chunk did (usage is always requested).
    MissingUsage,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Http => "http",
            ErrorKind::Transport => "transport",
            ErrorKind::ErrorEvent => "error_event",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Truncated => "truncated",
            ErrorKind::MissingUsage => "missing_usage",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Completed, but `completion_tokens` differs from the requested output length although
    /// `ignore_eos` was set.
    Short,
    Failed(ErrorKind, String),
}

/// The measurement of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub outcome: Outcome,
    /// Start to the first chunk with text (or, failing that, the first chunk with choices).
    pub ttft: Option<Duration>,
    /// Start to `[DONE]` (or to the failure).
    pub e2e: Duration,
    /// From usage; the count of text chunks when usage is missing.
    pub completion_tokens: u64,
    pub prompt_tokens: Option<u64>,
    pub text_chunks: u64,
}

impl Record {
    /// A request that failed before any event was read.
    pub fn failed(kind: ErrorKind, msg: impl Into<String>, e2e: Duration) -> Self {
        Record {
            outcome: Outcome::Failed(kind, msg.into()),
            ttft: None,
            e2e,
            completion_tokens: 0,
            prompt_tokens: None,
            text_chunks: 0,
        }
    }

    /// Counts for the latency statistics (ok or short).
    pub fn completed(&self) -> bool {
        !matches!(self.outcome, Outcome::Failed(..))
    }

    /// Time per output token after the first: `(e2e − ttft) / (completion_tokens − 1)`.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft?;
        if self.completion_tokens < 2 {
            return None;
        }
        let n = u32::try_from(self.completion_tokens - 1).ok()?;
        Some(self.e2e.saturating_sub(ttft) / n)
    }
}

/// Follows one stream's events.
#[derive(Debug, Default)]
pub struct Tracker {
    first_choice: Option<Duration>,
    first_text: Option<Duration>,
    text_chunks: u64,
    usage: Option<Usage>,
    done: Option<Duration>,
    failure: Option<(ErrorKind, String)>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event that arrived `at` after the request started. Returns `true` when the
    /// stream is over for the generator (`[DONE]` or an error): later bytes are not read.
    pub fn on_event(&mut self, ev: Event, at: Duration) -> bool {
        match ev {
            Event::Done => {
                self.done = Some(at);
                true
            }
            Event::Chunk(c) => {
                if c.choices > 0 && self.first_choice.is_none() {
                    self.first_choice = Some(at);
                }
                if c.has_text {
                    self.text_chunks += 1;
                    self.first_text.get_or_insert(at);
                }
                if c.usage.is_some() {
                    self.usage = c.usage;
                }
                false
            }
            Event::Error(m) => {
                self.fail(ErrorKind::ErrorEvent, m);
                true
            }
            Event::Malformed(m) => {
                self.fail(ErrorKind::Malformed, m);
                true
            }
        }
    }

    /// Records a transport failure while reading the body.
    pub fn fail(&mut self, kind: ErrorKind, msg: String) {
        if self.failure.is_none() {
            self.failure = Some((kind, msg));
        }
    }

    /// The record of the request, which ended `end` after its start. `expected` is the
    /// requested output length when `ignore_eos` was set.
    pub fn finish(self, end: Duration, expected: Option<u64>) -> Record {
        let completion_tokens = self
            .usage
            .map(|u| u.completion_tokens)
            .unwrap_or(self.text_chunks);
        let outcome = if let Some((k, m)) = self.failure {
            Outcome::Failed(k, m)
        } else if self.done.is_none() {
            Outcome::Failed(ErrorKind::Truncated, "stream ended before [DONE]".into())
        } else if self.usage.is_none() {
            Outcome::Failed(
                ErrorKind::MissingUsage,
                "no usage chunk before [DONE]".into(),
            )
        } else if expected.is_some_and(|e| e != completion_tokens) {
            Outcome::Short
        } else {
            Outcome::Ok
        };
        Record {
            outcome,
            ttft: self.first_text.or(self.first_choice),
            e2e: self.done.unwrap_or(end),
            completion_tokens,
            prompt_tokens: self.usage.map(|u| u.prompt_tokens),
            text_chunks: self.text_chunks,
        }
    }
}
