//! Answering one OpenAI request from the generations of its choices: a non-streaming request
//! folds their merged pieces into one `chat.completion` / `text_completion` object; a
//! streaming one is handed to the session's streaming driver with this flavour's chunks
//! ([`super::stream`]). Dropping the merged pieces (client gone, error) drops every
//! generation, which cancels their engine requests.

use super::logprobs::Logprobs;
use super::request::Common;
use super::stream::ChunkFrames;
use super::tools::{ToolParser, ToolStream};
use super::Kind;
use crate::http::error::ErrorStyle;
use crate::http::session::drive::{self, Item};
use crate::http::session::{Generation, Outcome, Piece};
use crate::http::sse;
use crate::pd::context::ReplyIdentity;
use crate::tokenizer::Tokenizer;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{BoxStream, StreamExt};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// One choice to run.
pub struct Job {
    /// The choice's `index` in the reply.
    pub index: usize,
    /// Whether this choice's prompt counts in `usage.prompt_tokens` (the first choice of each
    /// prompt does; `n` choices share one prompt).
    pub counts_prompt: bool,
    /// Text sent before the generated text (completions `echo`).
    pub prefix: Option<String>,
    pub generation: Generation,
}

/// Per-choice state while answering.
pub(super) struct Choice {
    pub(super) index: usize,
    pub(super) counts_prompt: bool,
    pub(super) text: String,
    pub(super) logprobs: Option<Logprobs>,
    pub(super) outcome: Option<Outcome>,
    /// Streaming chat with tools: what may go out as content yet.
    pub(super) tools: Option<ToolStream>,
}

impl Choice {
    /// Takes newly generated text (kept whole in `text`); returns the part that may be
    /// streamed now (all of it, unless a tool call may be starting).
    pub(super) fn stream_text(&mut self, t: String) -> String {
        self.text.push_str(&t);
        match &mut self.tools {
            Some(tools) => tools.push(&t),
            None => t,
        }
    }
}

/// What the reply needs besides the choices.
pub struct ReplyMeta {
    pub kind: Kind,
    pub model: String,
    pub tokenizer: Tokenizer,
    pub stream: bool,
    pub include_usage: Option<bool>,
    pub logprobs: bool,
    /// `fullTextEnabled`: each choice's last streamed chunk carries `full_text`.
    pub full_text: bool,
    /// Chat with `tools`: replies are read for tool calls.
    pub tools: Option<ToolParser>,
}

impl ReplyMeta {
    pub fn new(kind: Kind, common: &Common, tokenizer: Tokenizer) -> Self {
        Self {
            kind,
            model: common.model.clone(),
            tokenizer,
            stream: common.stream,
            include_usage: common.include_usage,
            logprobs: common.logprobs.is_some(),
            full_text: false,
            tools: None,
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn usage(choices: &[Choice]) -> Value {
    let mut prompt = 0;
    let mut completion = 0;
    let mut cached = 0;
    for c in choices {
        if let Some(o) = &c.outcome {
            if c.counts_prompt {
                prompt += o.prompt_tokens;
                cached += o.cached_tokens;
            }
            completion += o.completion_tokens;
        }
    }
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}

/// Answers the request: SSE when streaming, one JSON object otherwise.
pub async fn respond(meta: ReplyMeta, jobs: Vec<Job>) -> Response {
    let mut choices = Vec::with_capacity(jobs.len());
    let mut gens = Vec::with_capacity(jobs.len());
    for j in jobs {
        choices.push(Choice {
            index: j.index,
            counts_prompt: j.counts_prompt,
            text: j.prefix.unwrap_or_default(),
            logprobs: meta.logprobs.then(Logprobs::default),
            outcome: None,
            tools: meta
                .tools
                .as_ref()
                .filter(|_| meta.stream)
                .map(|p| ToolStream::new(p.clone())),
        });
        gens.push(j.generation);
    }
    // Under PD both halves of a request write one reply: the scope keeps its identity.
    let ReplyIdentity { id, created } = crate::pd::context::reply_identity(|| ReplyIdentity {
        id: format!("{}{}", meta.kind.id_prefix(), uuid::Uuid::new_v4().simple()),
        created: now_secs(),
    });
    if meta.stream {
        let (tx, resp) = sse::channel();
        drive::stream(gens, tx, ChunkFrames::new(meta, id, created, choices));
        resp
    } else {
        fold_reply(meta, id, created, choices, drive::merged(gens)).await
    }
}

async fn fold_reply(
    meta: ReplyMeta,
    id: String,
    created: u64,
    mut choices: Vec<Choice>,
    mut items: BoxStream<'static, Item>,
) -> Response {
    while let Some((slot, item)) = items.next().await {
        let c = &mut choices[slot];
        match item {
            Ok(Piece::Token(p)) => {
                if let Some(lp) = &mut c.logprobs {
                    lp.push(&meta.tokenizer, &p, c.text.len());
                }
                c.text.push_str(&p.text);
            }
            Ok(Piece::Text(t)) => c.text.push_str(&t),
            Ok(Piece::End(o)) => c.outcome = Some(o),
            Err(e) => return e.into_api(ErrorStyle::OpenAi).into_response(),
        }
    }
    let body_choices: Vec<Value> = choices
        .iter()
        .map(|c| {
            let mut finish = c.outcome.as_ref().map(|o| super::finish_reason(&o.reason));
            let logprobs = c
                .logprobs
                .as_ref()
                .map_or(Value::Null, |l| l.to_json(meta.kind));
            match meta.kind {
                Kind::Chat => {
                    let parsed = meta.tools.as_ref().and_then(|t| t.parse(&c.text));
                    let message = match parsed {
                        Some(p) => {
                            finish = Some(TOOL_CALLS);
                            json!({ "role": "assistant", "content": p.content, "tool_calls": p.calls })
                        }
                        None => json!({ "role": "assistant", "content": c.text, "tool_calls": [] }),
                    };
                    json!({
                        "index": c.index,
                        "message": message,
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    })
                }
                Kind::Completion => json!({
                    "index": c.index,
                    "text": c.text,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }),
            }
        })
        .collect();
    Json(json!({
        "id": id,
        "object": meta.kind.object(false),
        "created": created,
        "model": meta.model,
        "choices": body_choices,
        "usage": usage(&choices),
    }))
    .into_response()
}

/// `finish_reason` of a reply that ends in tool calls.
pub(super) const TOOL_CALLS: &str = "tool_calls";
