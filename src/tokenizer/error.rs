//! [`TokenizerError`]: everything that can go wrong loading a model's tokenizer files, encoding,
//! decoding, rendering a chat template or waiting on the tokenizer pool.
//!
//! Messages name the file, the field or the template message, so the HTTP layer can pass them to
//! the client (template and input errors) or the operator (load errors) unchanged.

use std::path::PathBuf;
use std::time::Duration;

/// An error from the tokenizer layer.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file the tokenizer needs could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file next to the model has invalid content.
    #[error("invalid {path}: {message}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `tokenizer.json` could not be parsed by the `tokenizers` crate.
    #[error("cannot load tokenizer {path}: {message}")]
    Load {
        /// The `tokenizer.json` path.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The chat template does not compile.
    #[error("invalid chat template {name:?} in {path}: {message}")]
    TemplateSyntax {
        /// The file the template came from.
        path: PathBuf,
        /// The template's name (`default`, `tool_use`, ...).
        name: String,
        /// minijinja's message, with the line.
        message: String,
    },
    /// The model has no chat template, so chat requests cannot be rendered.
    #[error("the model has no chat template (tokenizer_config.json has no \"chat_template\" and there is no chat_template.jinja); use a completion request instead")]
    NoChatTemplate,
    /// The chat template is a list without a `default` entry.
    #[error("the model has several chat templates ({names}) and none is named \"default\"")]
    NoDefaultTemplate {
        /// The names present, comma-separated.
        names: String,
    },
    /// The chat template called `raise_exception(message)`: the messages do not fit the model.
    #[error("chat template error: {0}")]
    TemplateRaised(String),
    /// Rendering the chat template failed (undefined operation, type error, ...).
    #[error("chat template rendering failed: {0}")]
    TemplateRender(String),
    /// A chat message is malformed (e.g. a content part that is not text).
    #[error("invalid chat message: {0}")]
    InvalidMessage(String),
    /// The `tokenizers` crate failed to encode the text.
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The `tokenizers` crate failed to decode the ids.
    #[error("decoding failed: {0}")]
    Decode(String),
    /// Tokenization did not finish within `TOKENIZER_ENCODE_TIMEOUT`.
    #[error("tokenization timed out after {0:?}")]
    Timeout(Duration),
    /// The tokenizer pool is shut down or its worker failed.
    #[error("tokenizer pool unavailable: {0}")]
    PoolUnavailable(String),
}

impl TokenizerError {
    /// True when the error comes from the request's own content (bad messages, a template that
    /// rejects them, a model without a chat template): the HTTP layer answers 4xx. Everything
    /// else is the server's problem (5xx).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            TokenizerError::NoChatTemplate
                | TokenizerError::NoDefaultTemplate { .. }
                | TokenizerError::TemplateRaised(_)
                | TokenizerError::TemplateRender(_)
                | TokenizerError::InvalidMessage(_)
                | TokenizerError::Encode(_)
        )
    }
}
