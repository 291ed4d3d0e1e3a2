//! TGI's reply shapes: `{generated_text, details}` with `details{finish_reason,
//! generated_tokens, seed, prompt_tokens, prefill[], tokens[]}`, token objects
//! `{id, text, logprob, special}`, and the streaming event
//! `{token, generated_text, details}` (text and details on the last event only).

use crate::engine::Finish;
use crate::http::session::{Outcome, TokenPiece};
use crate::tokenizer::Tokenizer;
use serde_json::{json, Value};

/// TGI's `finish_reason` (also MindIE-native's and Triton's). Only complete ends reach a
/// reply; a cancelled or failed generation answers with an error instead.
pub fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop => "eos_token",
        Finish::StopString(_) => "stop_sequence",
        Finish::Length => "length",
        Finish::Cancelled => "cancelled",
        Finish::Error(_) => "error",
    }
}

/// One token as TGI shows it (`text` is the token's own text).
pub fn token(tok: &Tokenizer, t: &TokenPiece) -> Value {
    json!({
        "id": t.id,
        "text": tok.token_text(t.id).unwrap_or_default(),
        "logprob": t.logprob,
        "special": tok.is_special(t.id),
    })
}

/// The `details` object (`seed` is null for greedy decoding, as TGI shows it).
pub fn details(
    tok: &Tokenizer,
    outcome: &Outcome,
    seed: Option<u64>,
    tokens: Option<&[TokenPiece]>,
    prefill: Option<&[u32]>,
) -> Value {
    let mut d = json!({
        "finish_reason": finish_reason(&outcome.reason),
        "generated_tokens": outcome.completion_tokens,
        "prompt_tokens": outcome.prompt_tokens,
        "seed": seed,
    });
    if let Some(ts) = tokens {
        d["tokens"] = ts.iter().map(|t| token(tok, t)).collect();
    }
    // Prompt log-probabilities are not computed: ids and texts only.
    d["prefill"] = prefill.map_or_else(
        || json!([]),
        |ids| {
            ids.iter()
                .map(|&id| json!({"id": id, "text": tok.token_text(id).unwrap_or_default(), "logprob": null}))
                .collect()
        },
    );
    d
}
