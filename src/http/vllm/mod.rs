//! vLLM's legacy `POST /generate` (a body with `prompt`, reached through the TGI router):
//! OpenAI-style sampling fields at the top level; the reply is `{"text": [prompt + " " +
//! output, ...]}` (one entry per `n`), and the stream is `{"text": [delta]}` objects each
//! followed by a NUL byte (SPEC §1).

use crate::http::error::{ApiError, ErrorStyle};
use crate::http::fields::{FieldError, Fields};
use crate::http::openai::request::Common;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{GenError, Piece, Serving};
use crate::http::sse;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

const STYLE: ErrorStyle = ErrorStyle::MindIe;

/// Handles a vLLM legacy request (the body is already parsed).
pub async fn run(inf: &Serving, map: Map<String, Value>, keys: Vec<String>) -> Response {
    match try_run(inf, map, keys).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn try_run(
    inf: &Serving,
    map: Map<String, Value>,
    keys: Vec<String>,
) -> Result<Response, ApiError> {
    let field_err = |e: FieldError| e.into_api(STYLE);
    let gen_err = |e: GenError| e.into_api(STYLE);
    let f = Fields::new(&map);
    let prompt = f
        .str("prompt")
        .map_err(field_err)?
        .ok_or_else(|| field_err(FieldError::new("prompt", "is required")))?
        .to_string();
    let vocab = inf.tokenizer.tokenizer().vocab_size();
    let mut common =
        Common::parse_unnamed(&f, vocab, None, &inf.sampling_defaults).map_err(field_err)?;
    if common.stream && common.n > 1 {
        return Err(field_err(FieldError::new(
            "n",
            "must be 1 when streaming (the stream carries one text)",
        )));
    }
    common.include_usage = None;
    let ids = inf
        .encode_prompt(&prompt, "prompt", None)
        .await
        .map_err(gen_err)?;
    let mut gens = Vec::with_capacity(common.n);
    for j in 0..common.n {
        let opts = common.gen_options(keys.clone());
        gens.push(
            inf.start(common.gen_request(ids.clone(), j), opts)
                .map_err(gen_err)?,
        );
    }
    if !common.stream {
        let mut texts = Vec::with_capacity(gens.len());
        let folded = futures_util::future::join_all(gens.into_iter().map(drive::fold)).await;
        for r in folded {
            texts.push(format!("{prompt} {}", r.map_err(gen_err)?.text));
        }
        return Ok(Json(json!({ "text": texts })).into_response());
    }
    let (tx, resp) = sse::channel_with("application/json");
    let frame = |step: Step<'_>| -> Vec<String> {
        match step {
            Step::Piece(Piece::Token(t)) if !t.text.is_empty() => {
                vec![format!("{}\0", json!({ "text": [t.text] }))]
            }
            Step::Piece(Piece::Text(t)) => vec![format!("{}\0", json!({ "text": [t] }))],
            Step::Piece(_) => Vec::new(),
            Step::Failed(e) => vec![format!("{}\0", e.into_api(STYLE).body())],
        }
    };
    if let Some(g) = gens.pop() {
        drive::stream(vec![g], tx, PerStep(frame));
    }
    Ok(resp)
}
