//! OpenAI-compatible routes (SPEC §1): `/v1/chat/completions`, `/v1/completions` and the model
//! list. Wire types stay here; requests become engine [`crate::engine::GenRequest`]s through
//! [`crate::http::session`].

pub mod chat;
pub mod completions;
pub mod logprobs;
pub mod models;
pub mod request;
pub mod respond;
pub mod stream;
pub mod tools;

use crate::engine::Finish;
use crate::http::error::{ApiError, ErrorStyle};
use crate::http::session::Serving;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use std::sync::Arc;

/// Which reply shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn id_prefix(self) -> &'static str {
        match self {
            Kind::Chat => "chatcmpl-",
            Kind::Completion => "cmpl-",
        }
    }
}

/// OpenAI's `finish_reason`. Only complete ends reach a reply; a cancelled or failed
/// generation answers with an error instead.
fn finish_reason(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::StopString(_) => "stop",
        Finish::Length => "length",
        Finish::Cancelled => "cancelled",
        Finish::Error(_) => "error",
    }
}

/// The `model` field must name the served model.
fn check_model(inf: &Serving, model: &str) -> Result<(), ApiError> {
    if model == inf.model_name {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "The model `{model}` does not exist; this server serves `{}`.",
                inf.model_name
            ),
        )
        .style(ErrorStyle::OpenAi)
        .param("model"))
    }
}

/// The inference routes.
pub fn router(inf: Arc<Serving>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/completions", post(completions::completions))
        .with_state(inf)
}
