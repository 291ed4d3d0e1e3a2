//! MindIE-native routes (SPEC §1): `POST /infer` (text `inputs`: a string or a list of
//! `{type: "text", text}` parts) and `POST /infer_token` (`input_id`: token ids), both with
//! `stream` and `parameters{}` (sampling, `max_new_tokens`, `priority` 1..5, `timeout`
//! seconds). Reply `{generated_text, details{finish_reason, generated_tokens,
//! generated_token_ids, seed}}`; stream events `{prefill_time, decode_time, token{id: [id],
//! text}}` in milliseconds, the last one also carrying `generated_text` and `details`.

use crate::http::error::ErrorStyle;
use crate::http::extract::{Body, Error, Flavour, MindIe, Reply};
use crate::http::fields::{show, FieldError, Fields};
use crate::http::gen_parameters::Parameters;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{Outcome, Piece, Serving, TokenPiece};
use crate::http::sse;
use crate::http::tgi::reply::finish_reason;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Instant;

const STYLE: ErrorStyle = MindIe::STYLE;

pub fn router(inf: Arc<Serving>) -> Router {
    Router::new()
        .route("/infer", post(infer))
        .route("/infer_token", post(infer_token))
        .with_state(inf)
}

/// A checked native request: the prompt's token ids (encoded, truncated and fitted), the
/// `parameters` and `stream`.
pub struct NativeRequest {
    pub ids: Vec<u32>,
    pub params: Parameters,
    pub stream: bool,
}

impl NativeRequest {
    /// `/infer`: text `inputs`.
    pub async fn text(body: &Map<String, Value>, inf: &Serving) -> Result<Self, Error<MindIe>> {
        let text = input_text(body)?;
        let params = Parameters::read(body, inf)?;
        let ids = inf.encode_prompt(&text, "inputs", params.truncate).await?;
        Self::finish(body, ids, params)
    }

    /// `/infer_token`: token ids in `input_id`.
    pub fn tokens(body: &Map<String, Value>, inf: &Serving) -> Result<Self, Error<MindIe>> {
        let ids = Fields::new(body)
            .int_list("input_id", 0, inf.vocab() as i64 - 1)?
            .ok_or_else(|| FieldError::new("input_id", "is required: a list of token ids"))?;
        let params = Parameters::read(body, inf)?;
        let ids = params.truncate_prompt(ids.into_iter().map(|i| i as u32).collect());
        let ids = inf.fit_prompt(ids, "input_id")?;
        Self::finish(body, ids, params)
    }

    /// `stream` is read last, after the prompt (as it always was).
    fn finish(
        body: &Map<String, Value>,
        ids: Vec<u32>,
        params: Parameters,
    ) -> Result<Self, Error<MindIe>> {
        let stream = Fields::new(body).bool("stream")?.unwrap_or(false);
        Ok(Self {
            ids,
            params,
            stream,
        })
    }
}

/// The text of `inputs`: a string, or a list of text parts.
fn input_text(map: &Map<String, Value>) -> Result<String, FieldError> {
    match map.get("inputs") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ Value::Array(_)) => crate::tokenizer::join_text_parts(v)
            .map_err(|e| FieldError::new("inputs", e.to_string()))?
            .ok_or_else(|| FieldError::new("inputs", "is empty")),
        Some(v) => Err(FieldError::new(
            "inputs",
            format!("must be a string or a list of text parts, got {}", show(v)),
        )),
        None => Err(FieldError::new("inputs", "is required")),
    }
}

async fn infer(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    let req = NativeRequest::text(&body.map, &inf).await?;
    run(&inf, req, body.keys).await
}

async fn infer_token(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    let req = NativeRequest::tokens(&body.map, &inf)?;
    run(&inf, req, body.keys).await
}

fn details(o: &Outcome, ids: Vec<u32>, seed: u64) -> Value {
    json!({
        "finish_reason": finish_reason(&o.reason),
        "generated_tokens": o.completion_tokens,
        "generated_token_ids": ids,
        "prompt_tokens": o.prompt_tokens,
        "seed": seed,
    })
}

async fn run(inf: &Serving, req: NativeRequest, keys: Vec<String>) -> Reply<MindIe> {
    let NativeRequest {
        ids,
        params,
        stream,
    } = req;
    let g = inf.start(params.gen_request(ids), params.gen_options(keys))?;
    let seed = params.sampling.seed;
    if !stream {
        let folded = drive::fold(g).await?;
        let ids = folded.tokens.iter().map(|t| t.id).collect();
        return Ok(Json(json!({
            "generated_text": folded.text,
            "details": details(&folded.outcome, ids, seed),
        }))
        .into_response());
    }
    let (tx, resp) = sse::channel();
    let mut last_at: Instant = g.started();
    let mut first = true;
    let mut held: Option<(TokenPiece, f64)> = None;
    let mut text = String::new();
    let mut ids: Vec<u32> = Vec::new();
    let frame = move |step: Step<'_>| -> Vec<String> {
        let event = |(t, ms): &(TokenPiece, f64), is_first: bool, end: Option<Value>| {
            let (prefill, decode) = if is_first {
                (json!(ms), Value::Null)
            } else {
                (Value::Null, json!(ms))
            };
            let mut e = json!({ "prefill_time": prefill, "decode_time": decode,
                                "token": { "id": [t.id], "text": t.text } });
            if let Some(end) = end {
                e["generated_text"] = end["generated_text"].clone();
                e["details"] = end["details"].clone();
            }
            format!("data: {e}\n\n")
        };
        match step {
            Step::Piece(Piece::Token(t)) => {
                let ms = t.at.duration_since(last_at).as_secs_f64() * 1000.0;
                last_at = t.at;
                text.push_str(&t.text);
                ids.push(t.id);
                let out = held.replace((t.clone(), ms)).map(|h| {
                    let e = event(&h, first, None);
                    first = false;
                    e
                });
                out.into_iter().collect()
            }
            Step::Piece(Piece::Text(x)) => {
                text.push_str(x);
                if let Some((h, _)) = &mut held {
                    h.text.push_str(x);
                }
                Vec::new()
            }
            Step::Piece(Piece::End(o)) => {
                let end =
                    json!({ "generated_text": text, "details": details(o, ids.clone(), seed) });
                match held.take() {
                    Some(h) => vec![event(&h, first, Some(end))],
                    None => vec![format!("data: {end}\n\n")],
                }
            }
            Step::Failed(e) => {
                let mut out: Vec<String> = held
                    .take()
                    .map(|h| event(&h, first, None))
                    .into_iter()
                    .collect();
                out.push(format!("data: {}\n\n", e.into_api(STYLE).body()));
                out
            }
        }
    };
    drive::stream(vec![g], tx, PerStep(frame));
    Ok(resp)
}
