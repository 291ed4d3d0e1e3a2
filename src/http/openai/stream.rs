//! OpenAI's streamed chunks (`chat.completion.chunk` / `text_completion`): the opening chunks
//! (the assistant role, the echoed prompt), one chunk per text delta with its log-probabilities,
//! tool calls and `finish_reason` at each choice's end, usage per `stream_options`, and `data:
//! [DONE]`. The session's streaming driver sends them ([`ChunkFrames`]).

use super::logprobs::Logprobs;
use super::respond::{usage, Choice, ReplyMeta, TOOL_CALLS};
use super::Kind;
use crate::http::error::ErrorStyle;
use crate::http::session::drive::{Frames, Step};
use crate::http::session::Piece;
use crate::http::sse;
use serde_json::{json, Value};

/// The chunks of one streamed OpenAI reply.
pub struct ChunkFrames {
    meta: ReplyMeta,
    id: String,
    created: u64,
    choices: Vec<Choice>,
    /// Choices not ended yet.
    open: usize,
}

impl ChunkFrames {
    pub(super) fn new(meta: ReplyMeta, id: String, created: u64, choices: Vec<Choice>) -> Self {
        let open = choices.len();
        Self {
            meta,
            id,
            created,
            choices,
            open,
        }
    }

    fn chunk(
        &self,
        index: usize,
        text: Option<&str>,
        logprobs: Option<Value>,
        finish: Option<&str>,
    ) -> Value {
        chunk(
            &self.meta,
            &self.id,
            self.created,
            index,
            text,
            logprobs,
            finish,
        )
    }
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl Frames for ChunkFrames {
    fn opening(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for slot in 0..self.choices.len() {
            let index = self.choices[slot].index;
            let opening = match self.meta.kind {
                Kind::Chat => {
                    let mut v = self.chunk(index, None, None, None);
                    v["choices"][0]["delta"] = json!({ "role": "assistant", "content": "" });
                    Some(v)
                }
                Kind::Completion if !self.choices[slot].text.is_empty() => {
                    let text = std::mem::take(&mut self.choices[slot].text);
                    Some(self.chunk(index, Some(&text), None, None))
                }
                Kind::Completion => None,
            };
            out.extend(opening.as_ref().map(data));
        }
        out
    }

    fn step(&mut self, slot: usize, step: Step<'_>) -> Vec<String> {
        let piece = match step {
            Step::Piece(p) => p,
            Step::Failed(e) => {
                let err = e.into_api(ErrorStyle::OpenAi).body();
                return vec![data(&err), sse::DONE.to_string()];
            }
        };
        let meta = &self.meta;
        let c = &mut self.choices[slot];
        let index = c.index;
        match piece {
            Piece::Token(p) => {
                let lp = c.logprobs.as_mut().map(|_| {
                    let mut one = Logprobs::default();
                    one.push(&meta.tokenizer, p, c.text.len());
                    one.to_json(meta.kind)
                });
                let text = c.stream_text(p.text.clone());
                if text.is_empty() && lp.is_none() {
                    return Vec::new();
                }
                vec![data(&self.chunk(index, Some(&text), lp, None))]
            }
            Piece::Text(t) => {
                let text = c.stream_text(t.clone());
                if text.is_empty() {
                    return Vec::new();
                }
                vec![data(&self.chunk(index, Some(&text), None, None))]
            }
            Piece::End(o) => {
                let mut finish = super::finish_reason(&o.reason);
                c.outcome = Some(o.clone());
                self.open -= 1;
                let mut out = Vec::new();
                if let Some(tools) = c.tools.take() {
                    let (tail, calls) = tools.finish();
                    if !tail.is_empty() {
                        out.push(data(&self.chunk(index, Some(&tail), None, None)));
                    }
                    if !calls.is_empty() {
                        finish = TOOL_CALLS;
                        out.push(data(&tool_calls_chunk(
                            &self.meta,
                            &self.id,
                            self.created,
                            index,
                            calls,
                        )));
                    }
                }
                let mut v = self.chunk(index, None, None, Some(finish));
                if self.meta.full_text {
                    v["full_text"] = json!(self.choices[slot].text);
                }
                if self.open == 0 && self.meta.include_usage.is_none() {
                    v["usage"] = usage(&self.choices);
                }
                out.push(data(&v));
                out
            }
        }
    }

    fn closing(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.meta.include_usage == Some(true) {
            let v = json!({
                "id": self.id,
                "object": self.meta.kind.object(true),
                "created": self.created,
                "model": self.meta.model,
                "choices": [],
                "usage": usage(&self.choices),
            });
            out.push(data(&v));
        }
        out.push(sse::DONE.to_string());
        out
    }
}

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
