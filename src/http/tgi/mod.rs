//! TGI routes (SPEC §1): `POST /generate` (a body with `inputs` is TGI; with `prompt` it is
//! vLLM's legacy API, see [`crate::http::vllm`]), `POST /generate_stream` (SSE token events)
//! and `POST /` (TGI "general": `stream` picks the mode; the non-stream reply is an array).

pub mod reply;

use crate::http::error::ErrorStyle;
use crate::http::extract::{Body, Flavour, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::gen_parameters::Parameters;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{Piece, Serving, TokenPiece};
use crate::http::{sse, vllm};
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::Arc;

const STYLE: ErrorStyle = MindIe::STYLE;

pub fn router(inf: Arc<Serving>) -> Router {
    Router::new()
        .route("/generate", post(generate))
        .route("/generate_stream", post(generate_stream))
        .route("/", post(general))
        .with_state(inf)
}

/// A checked TGI request: the prompt text and its `parameters`.
pub struct TgiRequest {
    pub inputs: String,
    pub params: Parameters,
}

impl TgiRequest {
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, FieldError> {
        let f = Fields::new(body);
        let inputs = f.required_str("inputs", "is required")?.to_string();
        let params = Parameters::read(body, inf)?;
        if let Some(a) = f
            .object("parameters")?
            .and_then(|p| p.get("adapter_id"))
            .and_then(Value::as_str)
        {
            if a != inf.model_name {
                return Err(FieldError::new(
                    "parameters.adapter_id",
                    format!("{a:?}: no such adapter (LoRA adapters are not loaded)"),
                ));
            }
        }
        Ok(Self { inputs, params })
    }
}

/// `POST /generate`: TGI when the body has `inputs`, vLLM legacy when it has `prompt`.
async fn generate(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    match (body.map.get("inputs"), body.map.get("prompt")) {
        (Some(Value::String(_)), _) => run(&inf, body, Mode::Object).await,
        (None, Some(Value::String(_))) => vllm::run(&inf, body).await,
        _ => Err(FieldError::new(
            "inputs",
            "is required: a string (TGI), or send \"prompt\" for the vLLM API",
        )
        .into()),
    }
}

async fn generate_stream(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    run(&inf, body, Mode::Stream).await
}

/// `POST /`: `stream` picks the mode.
async fn general(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    let mode = match Fields::new(&body.map).bool("stream")? {
        Some(true) => Mode::Stream,
        _ => Mode::Array,
    };
    run(&inf, body, mode).await
}

/// How the reply is shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `{generated_text, details}`.
    Object,
    /// `[{generated_text, details}]` (`POST /`).
    Array,
    /// SSE token events.
    Stream,
}

async fn run(inf: &Serving, body: Body<MindIe>, mode: Mode) -> Reply<MindIe> {
    let TgiRequest { inputs, params } = TgiRequest::read(&body.map, inf)?;
    let ids = inf
        .encode_prompt(&inputs, "inputs", params.truncate)
        .await?;
    let prefill = params.decoder_input_details.then(|| ids.clone());
    let g = inf.start(params.gen_request(ids), params.gen_options(body.keys))?;
    let tok = inf.tokenizer.tokenizer().clone();
    let seed = (!params.sampling.is_greedy()).then_some(params.sampling.seed);
    let full_prefix = if params.return_full_text {
        inputs
    } else {
        String::new()
    };
    if mode != Mode::Stream {
        let folded = drive::fold(g).await?;
        let mut reply = json!({ "generated_text": format!("{full_prefix}{}", folded.text) });
        if params.details {
            reply["details"] = reply::details(
                &tok,
                &folded.outcome,
                seed,
                Some(&folded.tokens),
                prefill.as_deref(),
            );
        }
        let body = if mode == Mode::Array {
            json!([reply])
        } else {
            reply
        };
        return Ok(Json(body).into_response());
    }
    let (tx, resp) = sse::channel();
    let mut held: Option<TokenPiece> = None;
    let mut text = full_prefix;
    let frame = move |step: Step<'_>| -> Vec<String> {
        let event = |t: &TokenPiece, extra: Option<Value>| {
            let mut e =
                json!({ "token": reply::token(&tok, t), "generated_text": null, "details": null });
            e["token"]["text"] = json!(t.text);
            if let Some(x) = extra {
                e["generated_text"] = x["generated_text"].clone();
                e["details"] = x["details"].clone();
            }
            format!("data: {e}\n\n")
        };
        match step {
            Step::Piece(Piece::Token(t)) => {
                text.push_str(&t.text);
                // One event behind, so the last token's event can carry the final text.
                held.replace(t.clone())
                    .map(|prev| vec![event(&prev, None)])
                    .unwrap_or_default()
            }
            Step::Piece(Piece::Text(extra)) => {
                text.push_str(extra);
                if let Some(h) = &mut held {
                    h.text.push_str(extra);
                }
                Vec::new()
            }
            Step::Piece(Piece::End(o)) => {
                let d = reply::details(&tok, o, seed, None, None);
                let last = json!({ "generated_text": text, "details": d });
                match held.take() {
                    Some(h) => vec![event(&h, Some(last))],
                    None => vec![format!(
                        "data: {}\n\n",
                        json!({"token": null, "generated_text": last["generated_text"], "details": last["details"]})
                    )],
                }
            }
            Step::Failed(e) => {
                let mut out: Vec<String> =
                    held.take().map(|h| event(&h, None)).into_iter().collect();
                out.push(format!("data: {}\n\n", e.into_api(STYLE).body()));
                out
            }
        }
    };
    drive::stream(vec![g], tx, PerStep(frame));
    Ok(resp)
}
