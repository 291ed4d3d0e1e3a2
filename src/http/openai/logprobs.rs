//! OpenAI's two log-probability shapes, built token by token: chat's
//! `{"content": [{token, logprob, bytes, top_logprobs: [...]}]}` and legacy completions'
//! `{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}`.

use super::Kind;
use crate::http::session::TokenPiece;
use crate::tokenizer::Tokenizer;
use serde_json::{json, Map, Value};

/// Log-probabilities of one choice (or of one chunk of it).
#[derive(Debug, Clone, Default)]
pub struct Logprobs {
    chat: Vec<Value>,
    tokens: Vec<Value>,
    token_logprobs: Vec<Value>,
    top: Vec<Value>,
    offsets: Vec<Value>,
}

/// The token's text; empty for an id the tokenizer does not know (an LM-head row past the
/// tokenizer's vocabulary: a real candidate that has no text).
fn text(tok: &Tokenizer, id: u32) -> String {
    tok.token_text(id).unwrap_or_default()
}

/// The token's raw bytes; `null` (OpenAI's "no bytes representation") for an id without text.
fn bytes(tok: &Tokenizer, id: u32) -> Value {
    tok.token_bytes(id).map_or(Value::Null, |b| json!(b))
}

/// The token as legacy completions name it: its text, or `token_id:<id>` (vLLM's spelling)
/// for an id without text, so that distinct ids stay distinct keys of `top_logprobs`.
fn label(tok: &Tokenizer, id: u32) -> String {
    tok.token_text(id)
        .unwrap_or_else(|| format!("token_id:{id}"))
}

/// A log-probability as JSON (−inf, which JSON cannot carry, as the most negative f32).
fn lp(x: f32) -> Value {
    json!(if x.is_finite() { x } else { f32::MIN })
}

impl Logprobs {
    /// Adds one token; `offset` is where its text starts in the choice's text.
    pub fn push(&mut self, tok: &Tokenizer, p: &TokenPiece, offset: usize) {
        let logprob = p.logprob.unwrap_or(f32::NEG_INFINITY);
        let t = text(tok, p.id);
        self.chat.push(json!({
            "token": t,
            "logprob": lp(logprob),
            "bytes": bytes(tok, p.id),
            "top_logprobs": p.top.iter().map(|&(id, l)| json!({
                "token": text(tok, id),
                "logprob": lp(l),
                "bytes": bytes(tok, id),
            })).collect::<Vec<_>>(),
        }));
        let mut top = Map::new();
        for &(id, l) in &p.top {
            top.insert(label(tok, id), lp(l));
        }
        self.tokens.push(json!(label(tok, p.id)));
        self.token_logprobs.push(lp(logprob));
        self.top.push(Value::Object(top));
        self.offsets.push(json!(offset));
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The wire object for `kind`.
    pub fn to_json(&self, kind: Kind) -> Value {
        match kind {
            Kind::Chat => json!({ "content": self.chat }),
            Kind::Completion => json!({
                "tokens": self.tokens,
                "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top,
                "text_offset": self.offsets,
            }),
        }
    }
}
