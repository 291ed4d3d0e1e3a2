//! vLLM's legacy `POST /generate` (a body with `prompt`, reached through the TGI router):
//! OpenAI-style sampling fields at the top level; the reply is `{"text": [prompt + " " +
//! output, ...]}` (one entry per `n`), and the stream is `{"text": [delta]}` objects each
//! followed by a NUL byte (SPEC §1).

use crate::http::error::ErrorStyle;
use crate::http::extract::{Body, Flavour, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::openai::request::Common;
use crate::http::session::drive::{self, PerStep, Step};
use crate::http::session::{Piece, Serving};
use crate::http::sse;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Map, Value};

const STYLE: ErrorStyle = MindIe::STYLE;

/// A checked vLLM legacy request: the prompt and the OpenAI-style fields.
pub struct VllmRequest {
    pub prompt: String,
    pub common: Common,
}

impl VllmRequest {
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, FieldError> {
        let f = Fields::new(body);
        let prompt = f.required_str("prompt", "is required")?.to_string();
        let mut common = Common::parse_unnamed(&f, inf.vocab(), None, &inf.sampling_defaults)?;
        if common.stream && common.n > 1 {
            return Err(FieldError::new(
                "n",
                "must be 1 when streaming (the stream carries one text)",
            ));
        }
        common.include_usage = None;
        Ok(Self { prompt, common })
    }
}

/// Handles a vLLM legacy request (the TGI router parsed the body).
pub async fn run(inf: &Serving, body: Body<MindIe>) -> Reply<MindIe> {
    let VllmRequest { prompt, common } = VllmRequest::read(&body.map, inf)?;
    let keys = body.keys;
    let ids = inf.encode_prompt(&prompt, "prompt", None).await?;
    let mut gens = Vec::with_capacity(common.n);
    for j in 0..common.n {
        let opts = common.gen_options(keys.clone());
        gens.push(inf.start(common.gen_request(ids.clone(), j), opts)?);
    }
    if !common.stream {
        let mut texts = Vec::with_capacity(gens.len());
        let folded = futures_util::future::join_all(gens.into_iter().map(drive::fold)).await;
        for r in folded {
            texts.push(format!("{prompt} {}", r?.text));
        }
        return Ok(Json(json!({ "text": texts })).into_response());
    }
    // NUL-terminated JSON objects are not one JSON text, so the stream is not labelled
    // application/json (vLLM's own server sends no type at all); clients split on NUL.
    let (tx, resp) = sse::channel_with("application/octet-stream");
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
