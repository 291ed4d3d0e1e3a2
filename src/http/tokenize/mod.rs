//! `POST /v1/tokenizer` (MindIE-native): `{inputs, do_decode?}` → `{token_number, tokens}`:
//! the ids the model would see for `inputs` (special tokens added as for a prompt), or with
//! `do_decode: true` the text of each token.

use crate::http::extract::{Body, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::session::Serving;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::sync::Arc;

pub fn router(inf: Arc<Serving>) -> Router {
    Router::new()
        .route("/v1/tokenizer", post(tokenize))
        .with_state(inf)
}

/// A checked tokenizer request.
pub struct TokenizeRequest {
    pub text: String,
    /// Answer each token's text instead of its id.
    pub decode: bool,
}

impl TokenizeRequest {
    pub fn read(body: &Map<String, Value>) -> Result<Self, FieldError> {
        let f = Fields::new(body);
        let text = f.required_str("inputs", "is required: a string")?;
        if text.is_empty() {
            return Err(FieldError::new("inputs", "must not be empty"));
        }
        Ok(Self {
            text: text.to_string(),
            decode: f.bool("do_decode")?.unwrap_or(false),
        })
    }
}

async fn tokenize(State(inf): State<Arc<Serving>>, body: Body<MindIe>) -> Reply<MindIe> {
    let TokenizeRequest { text, decode } = TokenizeRequest::read(&body.map)?;
    let ids = inf.tokenizer.encode(text, true).await?;
    let tokens = if decode {
        let tok = inf.tokenizer.tokenizer();
        json!(ids
            .iter()
            .map(|&id| tok.token_text(id).unwrap_or_default())
            .collect::<Vec<_>>())
    } else {
        json!(ids)
    };
    Ok(Json(json!({ "token_number": ids.len(), "tokens": tokens })).into_response())
}
