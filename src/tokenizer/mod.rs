//! The model's tokenizer as the server uses it: text ⇄ token ids, chat templates, streaming
//! detokenization, stop strings, and a bounded pool that keeps all of it off the async runtime.
//!
//! - [`Tokenizer`] (this file): loads an HF model folder (`tokenizer.json`,
//!   `tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`,
//!   `chat_template.jinja`), encodes, decodes, and answers per-token questions (text and raw bytes
//!   for logprobs, special or not, EOS ids).
//! - [`ChatMessage`] and [`Tokenizer::render_chat`] (`chat.rs`): chat templates with minijinja,
//!   configured like `transformers` renders them; `tojson` as Python's `json.dumps` (`pyjson.rs`).
//! - [`Detokenizer`] (`detok.rs`): incremental decoding that never splits a UTF-8 character.
//! - [`StopMatcher`] (`stop.rs`): stop strings over the streamed text, holding back what may
//!   still become a stop string.
//! - [`TokenizerPool`] (`pool.rs`): async encode / chat rendering on tokio's blocking threads,
//!   bounded by `tokenizerProcessNumber` permits and `TOKENIZER_ENCODE_TIMEOUT`.
//!
//! Everything here treats request text as untrusted input: errors, never panics.

mod bytes;
mod chat;
#[cfg(test)]
mod chat_tests;
mod detok;
mod error;
mod files;
mod pool;
mod pyjson;
mod stop;
mod strftime;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use chat::{join_text_parts, ChatMessage};
pub use detok::Detokenizer;
pub use error::TokenizerError;
pub use pool::{ChatPrompt, TokenizerPool, DEFAULT_ENCODE_TIMEOUT};
pub use stop::{StopMatcher, StopResult};

use bytes::ByteDecoding;
use files::SpecialTokenNames;

/// A loaded tokenizer. Cheap to clone (one `Arc`), `Send + Sync`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<Inner>,
}

struct Inner {
    hf: tokenizers::Tokenizer,
    special_ids: HashSet<u32>,
    eos_ids: Vec<u32>,
    names: SpecialTokenNames,
    add_bos_token: Option<bool>,
    chat: Option<chat::ChatTemplates>,
    bytes: ByteDecoding,
    /// The decoder is plain `ByteLevel`: its output is a lossy UTF-8 decode of the token bytes,
    /// so text before a trailing U+FFFD never changes when more ids follow.
    lossy_utf8_decoder: bool,
    vocab_size: usize,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.inner.vocab_size)
            .field("eos_token_ids", &self.inner.eos_ids)
            .field("bos_token", &self.inner.names.bos)
            .field("has_chat_template", &self.inner.chat.is_some())
            .finish()
    }
}

impl Tokenizer {
    /// Loads the tokenizer of the HF model folder `model_dir`. `tokenizer.json` is required; the
    /// other files are optional. Chat templates are compiled here, so a broken template fails
    /// at start-up rather than on the first chat request.
    pub fn load(model_dir: &Path) -> Result<Tokenizer, TokenizerError> {
        let path = model_dir.join("tokenizer.json");
        let text = std::fs::read(&path).map_err(|source| TokenizerError::Read {
            path: path.clone(),
            source,
        })?;
        let mut hf =
            tokenizers::Tokenizer::from_bytes(&text).map_err(|e| TokenizerError::Load {
                path: path.clone(),
                message: e.to_string(),
            })?;
        // `transformers` encodes without the truncation/padding saved in tokenizer.json; length
        // limits are the server's business (maxInputTokenLen), not silent cuts.
        hf.with_truncation(None).map_err(|e| TokenizerError::Load {
            path: path.clone(),
            message: e.to_string(),
        })?;
        hf.with_padding(None);

        let files = files::read_model_files(model_dir)?;
        let special_ids: HashSet<u32> = hf
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, tok)| tok.special)
            .map(|(id, _)| id)
            .collect();

        let mut eos_ids: Vec<u32> = files.generation_eos_ids.clone();
        if let Some(id) = files.special.eos.as_deref().and_then(|t| hf.token_to_id(t)) {
            eos_ids.push(id);
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();

        let chat = chat::ChatTemplates::compile(&files.templates)?;
        let bytes = ByteDecoding::detect(hf.get_decoder());
        let lossy_utf8_decoder = matches!(
            hf.get_decoder(),
            Some(tokenizers::DecoderWrapper::ByteLevel(_))
        );
        let vocab_size = hf.get_vocab_size(true);
        Ok(Tokenizer {
            inner: Arc::new(Inner {
                hf,
                special_ids,
                eos_ids,
                names: files.special,
                add_bos_token: files.add_bos_token,
                chat,
                bytes,
                lossy_utf8_decoder,
                vocab_size,
            }),
        })
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's post-processor adds what
    /// the model expects around a plain prompt (e.g. BOS); chat prompts are encoded without, as
    /// the template already wrote them.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TokenizerError> {
        self.inner
            .hf
            .encode_fast(text, add_special_tokens)
            .map(|enc| enc.get_ids().to_vec())
            .map_err(|e| TokenizerError::Encode(e.to_string()))
    }

    /// Text of `ids`. Ids outside the vocabulary are ignored; byte sequences that are not valid
    /// UTF-8 come out as U+FFFD (as `transformers` does). `clean_up_tokenization_spaces` is not
    /// applied (streaming could not reproduce it).
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TokenizerError> {
        self.inner
            .hf
            .decode(ids, skip_special_tokens)
            .map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// Number of tokens the tokenizer knows (base vocabulary plus added tokens). The model's
    /// embedding table may have more rows (padding); those ids decode to nothing.
    pub fn vocab_size(&self) -> usize {
        self.inner.vocab_size
    }

    /// The text of one token on its own (special tokens included), as the logprobs `top`
    /// entries show it: a token holding part of a UTF-8 character reads as U+FFFD.
    /// `None` for an id outside the vocabulary.
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.inner.hf.id_to_token(id)?;
        self.inner.hf.decode(&[id], false).ok()
    }

    /// The raw bytes one token stands for (the logprobs `bytes` field): for byte-level BPE the
    /// bytes before UTF-8 decoding, for byte-fallback tokens `<0xAB>` that byte, else the UTF-8
    /// of [`Self::token_text`]. `None` for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        let raw = self.inner.hf.id_to_token(id)?;
        match self.inner.bytes.raw_bytes(&raw) {
            Some(b) => Some(b),
            None => self.token_text(id).map(String::into_bytes),
        }
    }

    /// The id of a token given by its text (`"<|im_end|>"`), if it is one token.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.hf.token_to_id(token)
    }

    /// True for added tokens marked special (skipped by `skip_special_tokens`).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.special_ids.contains(&id)
    }

    /// Ids that end generation: `generation_config.json`'s `eos_token_id` (int or list) and the
    /// tokenizer's `eos_token`, sorted, without duplicates.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.inner.eos_ids
    }

    /// The BOS token's text, if the model has one.
    pub fn bos_token(&self) -> Option<&str> {
        self.inner.names.bos.as_deref()
    }

    /// The EOS token's text, if the model names one.
    pub fn eos_token(&self) -> Option<&str> {
        self.inner.names.eos.as_deref()
    }

    /// `add_bos_token` from `tokenizer_config.json`, if present (informational: BOS insertion
    /// itself is done by `tokenizer.json`'s post-processor).
    pub fn add_bos_token(&self) -> Option<bool> {
        self.inner.add_bos_token
    }

    /// See `Inner::lossy_utf8_decoder`.
    pub(crate) fn lossy_utf8_decoder(&self) -> bool {
        self.inner.lossy_utf8_decoder
    }

    /// True when the model has a chat template (chat requests can be served).
    pub fn has_chat_template(&self) -> bool {
        self.inner.chat.is_some()
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn tokenizer_is_send_sync_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Tokenizer>();
    }

    #[test]
    fn missing_tokenizer_json_names_the_path() {
        let d = tempfile::tempdir().unwrap();
        let e = Tokenizer::load(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn broken_tokenizer_json_is_a_load_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("tokenizer.json"), "{\"model\": 3}").unwrap();
        let e = Tokenizer::load(d.path()).unwrap_err();
        assert!(matches!(e, TokenizerError::Load { .. }), "{e}");
    }
}
