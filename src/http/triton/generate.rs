//! `POST /v2/models/{m}/generate` and `/generate_stream`: `{id?, text_input, parameters}` →
//! `{id, model_name, model_version: null, text_output, details{finish_reason,
//! generated_tokens, first_token_cost, decode_cost}}`; streaming sends one such event per
//! token with the text delta, `details` on the last.

use super::{request_id, ServedModel, Triton, STYLE};
use crate::http::extract::{Body, Error, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::gen_parameters::Parameters;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{Generation, Outcome, Piece, Serving};
use crate::http::sse;
use crate::http::tgi::reply::finish_reason;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
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

/// A checked generate request: the client's id, the prompt text and its `parameters`.
pub struct TritonGenerate {
    pub id: Option<String>,
    pub text: String,
    pub params: Parameters,
}

impl TritonGenerate {
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, FieldError> {
        let f = Fields::new(body);
        let id = request_id(&f)?;
        let text = f.required_str("text_input", "is required")?.to_string();
        let params = Parameters::read(body, inf)?;
        Ok(Self { id, text, params })
    }
}

/// A generate request read, checked and started: what both generate routes begin with.
/// Extracted in the order the checks have always run: the path's model, the body, the fields,
/// then the prompt.
pub struct Started {
    pub model: String,
    /// The client's id.
    pub id: Option<String>,
    pub generation: Generation,
}

impl FromRequest<Triton> for Started {
    type Rejection = Response;

    async fn from_request(req: Request, t: &Triton) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let ServedModel(model) = ServedModel::from_request_parts(&mut parts, t).await?;
        let body = Body::<MindIe>::from_request(Request::from_parts(parts, body), t)
            .await
            .map_err(IntoResponse::into_response)?;
        start(t, body)
            .await
            .map(|(generation, id)| Self {
                model,
                id,
                generation,
            })
            .map_err(IntoResponse::into_response)
    }
}

async fn start(
    t: &Triton,
    body: Body<MindIe>,
) -> Result<(Generation, Option<String>), Error<MindIe>> {
    let inf = &t.inf;
    let TritonGenerate { id, text, params } = TritonGenerate::read(&body.map, inf)?;
    let ids = inf
        .encode_prompt(&text, "text_input", params.truncate)
        .await?;
    let mut keys = body.keys;
    keys.extend(id.clone());
    let g = inf.start(params.gen_request(ids), params.gen_options(keys))?;
    Ok((g, id))
}

pub async fn generate(s: Started) -> Reply<MindIe> {
    let started = s.generation.started();
    let folded = drive::fold(s.generation).await?;
    let first = folded.tokens.first().map(|t| t.at);
    let last = folded.tokens.last().map_or(started, |t| t.at);
    Ok(Json(json!({
        "id": s.id.unwrap_or_default(),
        "model_name": s.model,
        "model_version": null,
        "text_output": folded.text,
        "details": details(&folded.outcome, started, first, last),
    }))
    .into_response())
}

pub async fn generate_stream(s: Started) -> Reply<MindIe> {
    let Started {
        model: m,
        id,
        generation: g,
    } = s;
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
    Ok(resp)
}
