//! GET `/v1/models` and `/v1/models/{id}`: the served model, as MindIE lists it.

use crate::http::error::{ApiError, ErrorStyle};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

/// What the model routes need to know.
#[derive(Debug, Clone)]
pub struct ModelCard {
    pub name: String,
    /// Unix seconds the daemon started.
    pub created: u64,
    pub root: String,
}

impl ModelCard {
    fn to_json(&self) -> Value {
        json!({
            "id": self.name,
            "object": "model",
            "created": self.created,
            "owned_by": "MindIE Server",
            "root": self.root,
            "parent": null,
        })
    }
}

pub fn router(card: Arc<ModelCard>) -> Router {
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/{id}", get(one))
        .with_state(card)
}

async fn list(State(card): State<Arc<ModelCard>>) -> Json<Value> {
    Json(json!({ "object": "list", "data": [card.to_json()] }))
}

async fn one(State(card): State<Arc<ModelCard>>, Path(id): Path<String>) -> Response {
    if id == card.name {
        Json(card.to_json()).into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("The model `{id}` does not exist."),
        )
        .style(ErrorStyle::OpenAi)
        .param("model")
        .into_response()
    }
}
