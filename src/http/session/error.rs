//! Why a generation could not start or finish ([`GenError`]), with the status code and
//! error body each case gets on the wire.

use crate::http::error::{ApiError, ErrorStyle};
use crate::tokenizer::TokenizerError;
use axum::http::StatusCode;

/// Why a generation could not start or finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GenError {
    #[error("{field}: the prompt is empty")]
    EmptyPrompt { field: String },
    #[error("{field}: the prompt has {len} tokens, more than the {max} allowed (min of ModelDeployConfig.maxInputTokenLen and maxSeqLen - 1); shorten it or enable truncation")]
    PromptTooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field}: token id {id} is out of range: allowed [0, {vocab})")]
    BadTokenId {
        field: String,
        id: i64,
        vocab: usize,
    },
    #[error("{0}")]
    Tokenizer(String),
    #[error("{0}")]
    TokenizerServer(String),
    #[error("the engine is busy; retry later")]
    Busy,
    #[error("the engine is not running")]
    Stopped,
    #[error("Engine callback timeout: server tokenTimeout ({0} s without a new token)")]
    TokenTimeout(u64),
    #[error("Engine callback timeout: server e2eTimeout ({0} s)")]
    E2eTimeout(u64),
    #[error("generation failed: {0}")]
    Engine(String),
    #[error("the request was cancelled by the server")]
    Cancelled,
}

impl GenError {
    pub fn status(&self) -> StatusCode {
        match self {
            GenError::EmptyPrompt { .. }
            | GenError::PromptTooLong { .. }
            | GenError::BadTokenId { .. }
            | GenError::Tokenizer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GenError::Busy | GenError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            GenError::TokenizerServer(_)
            | GenError::TokenTimeout(_)
            | GenError::E2eTimeout(_)
            | GenError::Engine(_)
            | GenError::Cancelled => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            GenError::EmptyPrompt { field }
            | GenError::PromptTooLong { field, .. }
            | GenError::BadTokenId { field, .. } => Some(field),
            _ => None,
        }
    }

    pub fn into_api(self, style: ErrorStyle) -> ApiError {
        let mut e = ApiError::new(self.status(), self.to_string()).style(style);
        if let Some(f) = self.field() {
            e = e.param(f.to_string());
        }
        if matches!(self, GenError::Busy) {
            e = e.retry_after(1);
        }
        e
    }
}

impl From<TokenizerError> for GenError {
    fn from(e: TokenizerError) -> Self {
        if e.is_client_error() {
            GenError::Tokenizer(e.to_string())
        } else {
            GenError::TokenizerServer(e.to_string())
        }
    }
}
