//! Running the choices of one OpenAI request and answering: the generations of all choices
//! are merged into one stream of pieces; a streaming request turns it into SSE chunks
//! (`chat.completion.chunk` / `text_completion`, usage per `stream_options`, `data: [DONE]`),
//! a non-streaming one folds it into one reply. Dropping the merged stream (client gone, error)
//! drops every generation, which cancels their engine requests.

use super::logprobs::Logprobs;
use super::request::Common;
use super::tools::{ToolParser, ToolStream};
use super::Kind;
use crate::http::error::ErrorStyle;
use crate::http::generation::{GenError, Generation, Outcome, Piece};
use crate::http::sse;
use crate::tokenizer::Tokenizer;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, StreamExt};
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

type Item = (usize, Result<Piece, GenError>);

fn merged(jobs: Vec<Generation>) -> BoxStream<'static, Item> {
    let streams = jobs.into_iter().enumerate().map(|(slot, g)| {
        stream::unfold(Some(g), move |g| async move {
            let mut g = g?;
            let item = g.next().await?;
            let done = matches!(item, Ok(Piece::End(_)) | Err(_));
            Some(((slot, item), (!done).then_some(g)))
        })
        .boxed()
    });
    stream::select_all(streams).boxed()
}

/// Per-choice state while answering.
struct Choice {
    index: usize,
    counts_prompt: bool,
    text: String,
    logprobs: Option<Logprobs>,
    outcome: Option<Outcome>,
    /// Streaming chat with tools: what may go out as content yet.
    tools: Option<ToolStream>,
}

impl Choice {
    /// Takes newly generated text (kept whole in `text`); returns the part that may be
    /// streamed now (all of it, unless a tool call may be starting).
    fn stream_text(&mut self, t: String) -> String {
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

fn usage(choices: &[Choice]) -> Value {
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
    let id = format!("{}{}", meta.kind.id_prefix(), uuid::Uuid::new_v4().simple());
    let created = now_secs();
    if meta.stream {
        stream_reply(meta, id, created, choices, merged(gens))
    } else {
        fold_reply(meta, id, created, choices, merged(gens)).await
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
            let mut finish = c.outcome.as_ref().map(|o| o.reason.openai());
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
const TOOL_CALLS: &str = "tool_calls";

/// The chunk that carries a choice's tool calls (whole: name and all arguments at once).
fn tool_calls_chunk(
    meta: &ReplyMeta,
    id: &str,
    created: u64,
    index: usize,
    calls: Vec<Value>,
) -> Value {
    let calls: Vec<Value> = calls
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            c["index"] = json!(i);
            c
        })
        .collect();
    let mut v = chunk(meta, id, created, index, None, None, None);
    v["choices"][0]["delta"] = json!({ "tool_calls": calls });
    v
}

/// One streamed chunk of one choice.
fn chunk(
    meta: &ReplyMeta,
    id: &str,
    created: u64,
    index: usize,
    text: Option<&str>,
    logprobs: Option<Value>,
    finish: Option<&str>,
) -> Value {
    let choice = match meta.kind {
        Kind::Chat => {
            let delta = match text {
                Some(t) => json!({ "content": t }),
                None => json!({}),
            };
            json!({ "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish })
        }
        Kind::Completion => json!({
            "index": index,
            "text": text.unwrap_or(""),
            "logprobs": logprobs,
            "finish_reason": finish,
        }),
    };
    json!({
        "id": id,
        "object": meta.kind.object(true),
        "created": created,
        "model": meta.model,
        "choices": [choice],
    })
}

fn stream_reply(
    meta: ReplyMeta,
    id: String,
    created: u64,
    mut choices: Vec<Choice>,
    mut items: BoxStream<'static, Item>,
) -> Response {
    let (tx, resp) = sse::channel();
    tokio::spawn(async move {
        // Opening chunks: the assistant role (chat), the echoed prompt (completions).
        for c in &mut choices {
            let opening = match meta.kind {
                Kind::Chat => {
                    let mut v = chunk(&meta, &id, created, c.index, None, None, None);
                    v["choices"][0]["delta"] = json!({ "role": "assistant", "content": "" });
                    Some(v)
                }
                Kind::Completion if !c.text.is_empty() => {
                    let text = std::mem::take(&mut c.text);
                    Some(chunk(&meta, &id, created, c.index, Some(&text), None, None))
                }
                Kind::Completion => None,
            };
            if let Some(v) = opening {
                if !tx.send_json(&v).await {
                    return;
                }
            }
        }
        let mut open = choices.len();
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = items.next() => next,
            };
            let Some((slot, item)) = next else {
                break;
            };
            let c = &mut choices[slot];
            let v = match item {
                Ok(Piece::Token(p)) => {
                    let lp = c.logprobs.as_mut().map(|_| {
                        let mut one = Logprobs::default();
                        one.push(&meta.tokenizer, &p, c.text.len());
                        one.to_json(meta.kind)
                    });
                    let text = c.stream_text(p.text);
                    if text.is_empty() && lp.is_none() {
                        continue;
                    }
                    chunk(&meta, &id, created, c.index, Some(&text), lp, None)
                }
                Ok(Piece::Text(t)) => {
                    let text = c.stream_text(t);
                    if text.is_empty() {
                        continue;
                    }
                    chunk(&meta, &id, created, c.index, Some(&text), None, None)
                }
                Ok(Piece::End(o)) => {
                    let mut finish = o.reason.openai();
                    c.outcome = Some(o);
                    open -= 1;
                    if let Some(tools) = c.tools.take() {
                        let (tail, calls) = tools.finish();
                        let (index, mut out) = (c.index, Vec::new());
                        if !tail.is_empty() {
                            out.push(chunk(&meta, &id, created, index, Some(&tail), None, None));
                        }
                        if !calls.is_empty() {
                            finish = TOOL_CALLS;
                            out.push(tool_calls_chunk(&meta, &id, created, index, calls));
                        }
                        for v in out {
                            if !tx.send_json(&v).await {
                                return;
                            }
                        }
                    }
                    let c = &choices[slot];
                    let mut v = chunk(&meta, &id, created, c.index, None, None, Some(finish));
                    if meta.full_text {
                        v["full_text"] = json!(c.text);
                    }
                    if open == 0 && meta.include_usage.is_none() {
                        v["usage"] = usage(&choices);
                    }
                    v
                }
                Err(e) => {
                    let err = e.into_api(ErrorStyle::OpenAi).body();
                    let _ = tx.send_json(&err).await;
                    let _ = tx.send_raw(sse::DONE).await;
                    return;
                }
            };
            if !tx.send_json(&v).await {
                return;
            }
        }
        if meta.include_usage == Some(true) {
            let v = json!({
                "id": id,
                "object": meta.kind.object(true),
                "created": created,
                "model": meta.model,
                "choices": [],
                "usage": usage(&choices),
            });
            if !tx.send_json(&v).await {
                return;
            }
        }
        let _ = tx.send_raw(sse::DONE).await;
    });
    resp
}
