//! `POST /v1/tokenizer` (MindIE-native): `{inputs, do_decode?}` → `{token_number, tokens}`:
//! the ids the model would see for `inputs` (special tokens added as for a prompt), or with
//! `do_decode: true` the text of each token.

use crate::http::error::{ApiError, ErrorStyle};
use crate::http::fields::{parse_object, FieldError, Fields};
use crate::http::session::{GenError, Serving};
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

const STYLE: ErrorStyle = ErrorStyle::MindIe;

pub fn router(inf: Arc<Serving>) -> Router {
    Router::new()
        .route("/v1/tokenizer", post(tokenize))
        .with_state(inf)
}

async fn tokenize(State(inf): State<Arc<Serving>>, body: Bytes) -> Response {
    let result = async {
        let map = parse_object(&body).map_err(|e| e.into_api(STYLE))?;
        let f = Fields::new(&map);
        let text = f
            .str("inputs")
            .map_err(|e| e.into_api(STYLE))?
            .ok_or_else(|| FieldError::new("inputs", "is required: a string").into_api(STYLE))?;
        if text.is_empty() {
            return Err(FieldError::new("inputs", "must not be empty").into_api(STYLE));
        }
        let decode = f
            .bool("do_decode")
            .map_err(|e| e.into_api(STYLE))?
            .unwrap_or(false);
        let ids = inf
            .tokenizer
            .encode(text.to_string(), true)
            .await
            .map_err(|e| GenError::from(e).into_api(STYLE))?;
        let tokens = if decode {
            let tok = inf.tokenizer.tokenizer();
            json!(ids
                .iter()
                .map(|&id| tok.token_text(id).unwrap_or_default())
                .collect::<Vec<_>>())
        } else {
            json!(ids)
        };
        Ok::<_, ApiError>(
            Json(json!({ "token_number": ids.len(), "tokens": tokens })).into_response(),
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
