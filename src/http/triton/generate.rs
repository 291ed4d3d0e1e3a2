//! `POST /v2/models/{m}/generate` and `/generate_stream`: `{id?, text_input, parameters}` →
//! `{id, model_name, model_version: null, text_output, details{finish_reason,
//! generated_tokens, first_token_cost, decode_cost}}`; streaming sends one such event per
//! token with the text delta, `details` on the last.

use super::{check_model, field_err, request_id, Triton, STYLE};
use crate::http::error::ApiError;
use crate::http::fields::{parse_object, FieldError, Fields};
use crate::http::gen_parameters::Parameters;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{Generation, Outcome, Piece};
use crate::http::tgi::reply::finish_reason;
use crate::http::{request_keys, sse};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::time::Instant;

/// Milliseconds between two instants.
fn ms(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

fn details(o: &Outcome, started: Instant, first: Option<Instant>, last: Instant) -> Value {
    let first = first.unwrap_or(last);
    json!({
        "finish_reason": finish_reason(&o.reason),
        "generated_tokens": o.completion_tokens,
        "prompt_tokens": o.prompt_tokens,
        "first_token_cost": ms(started, first),
        "decode_cost": ms(first, last),
    })
}

async fn start(
    t: &Triton,
    m: &str,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<(Generation, Option<String>), ApiError> {
    check_model(&t.inf, m)?;
    let map = parse_object(body).map_err(field_err)?;
    let f = Fields::new(&map);
    let id = request_id(&f)?;
    let text = f
        .str("text_input")
        .map_err(field_err)?
        .ok_or_else(|| field_err(FieldError::new("text_input", "is required")))?;
    let inf = &t.inf;
    let vocab = inf.tokenizer.tokenizer().vocab_size();
    let params = Parameters::parse(&map, &inf.sampling_defaults, vocab).map_err(field_err)?;
    let ids = inf
        .encode_prompt(text, "text_input", params.truncate)
        .await
        .map_err(|e| e.into_api(STYLE))?;
    let mut keys = request_keys(parts);
    keys.extend(id.clone());
    let g = inf
        .start(params.gen_request(ids), params.gen_options(keys))
        .map_err(|e| e.into_api(STYLE))?;
    Ok((g, id))
}

pub async fn generate(
    State(t): State<Triton>,
    Path(m): Path<String>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let result = async {
        let (g, id) = start(&t, &m, &parts, &body).await?;
        let started = g.started();
        let folded = drive::fold(g).await.map_err(|e| e.into_api(STYLE))?;
        let first = folded.tokens.first().map(|t| t.at);
        let last = folded.tokens.last().map_or(started, |t| t.at);
        Ok::<_, ApiError>(
            Json(json!({
                "id": id.unwrap_or_default(),
                "model_name": m,
                "model_version": null,
                "text_output": folded.text,
                "details": details(&folded.outcome, started, first, last),
            }))
            .into_response(),
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn generate_stream(
    State(t): State<Triton>,
    Path(m): Path<String>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    let (g, id) = match start(&t, &m, &parts, &body).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let started = g.started();
    let id = id.unwrap_or_default();
    let (tx, resp) = sse::channel();
    let mut first: Option<Instant> = None;
    let mut last = started;
    let frame = move |step: Step<'_>| -> Vec<String> {
        let event = |text: &str, details: Value| {
            let e = json!({ "id": id, "model_name": m, "model_version": null,
                            "text_output": text, "details": details });
            format!("data: {e}\n\n")
        };
        match step {
            Step::Piece(Piece::Token(tp)) => {
                first.get_or_insert(tp.at);
                last = tp.at;
                if tp.text.is_empty() {
                    Vec::new()
                } else {
                    vec![event(&tp.text, Value::Null)]
                }
            }
            Step::Piece(Piece::Text(x)) => vec![event(x, Value::Null)],
            Step::Piece(Piece::End(o)) => vec![event("", details(o, started, first, last))],
            Step::Failed(e) => vec![format!("data: {}\n\n", e.into_api(STYLE).body())],
        }
    };
    drive::stream(vec![g], tx, PerStep(frame));
    resp
}
