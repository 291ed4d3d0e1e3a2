//! [`TokenizerPool`]: tokenization for async handlers without blocking the runtime.
//!
//! Encoding a long prompt or rendering a big chat template takes milliseconds of CPU, so it runs
//! on tokio's blocking threads, at most `tokenizerProcessNumber` jobs at a time (a semaphore),
//! and the caller waits at most `TOKENIZER_ENCODE_TIMEOUT` (permit wait included). A job that
//! times out still finishes on its thread and keeps its permit until then, so the bound on
//! concurrent work holds even under timeouts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tokio::sync::Semaphore;

use super::{ChatMessage, Tokenizer, TokenizerError};

/// MindIE's default for `TOKENIZER_ENCODE_TIMEOUT`.
pub const DEFAULT_ENCODE_TIMEOUT: Duration = Duration::from_secs(60);

/// A rendered and encoded chat prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPrompt {
    /// The chat template's output.
    pub text: String,
    /// Its ids, encoded without adding special tokens (the template wrote them).
    pub ids: Vec<u32>,
}

/// Bounded async access to a [`Tokenizer`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenizerPool {
    tokenizer: Tokenizer,
    permits: Arc<Semaphore>,
    threads: usize,
    timeout: Duration,
}

impl TokenizerPool {
    /// A pool running at most `threads` jobs at once (0 counts as 1), each call bounded by
    /// `timeout`.
    pub fn new(tokenizer: Tokenizer, threads: usize, timeout: Duration) -> TokenizerPool {
        let threads = threads.max(1);
        TokenizerPool {
            tokenizer,
            permits: Arc::new(Semaphore::new(threads)),
            threads,
            timeout,
        }
    }

    /// The tokenizer (for cheap calls such as `token_text`, or a [`super::Detokenizer`]).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The concurrency bound.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// [`Tokenizer::encode`] on the pool.
    pub async fn encode(
        &self,
        text: String,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        self.run(move |t| t.encode(&text, add_special_tokens)).await
    }

    /// [`Tokenizer::decode`] on the pool (for long id lists; streaming uses a `Detokenizer`).
    pub async fn decode(
        &self,
        ids: Vec<u32>,
        skip_special_tokens: bool,
    ) -> Result<String, TokenizerError> {
        self.run(move |t| t.decode(&ids, skip_special_tokens)).await
    }

    /// [`Tokenizer::render_chat`] then [`Tokenizer::encode`] without special tokens, on the pool.
    pub async fn render_and_encode_chat(
        &self,
        messages: Vec<ChatMessage>,
        add_generation_prompt: bool,
        tools: Option<Json>,
        kwargs: Option<Map<String, Json>>,
    ) -> Result<ChatPrompt, TokenizerError> {
        self.run(move |t| {
            let text = t.render_chat(
                &messages,
                add_generation_prompt,
                tools.as_ref(),
                kwargs.as_ref(),
            )?;
            let ids = t.encode(&text, false)?;
            Ok(ChatPrompt { text, ids })
        })
        .await
    }

    /// Runs `job` on a blocking thread under a permit, within the timeout.
    async fn run<T, F>(&self, job: F) -> Result<T, TokenizerError>
    where
        T: Send + 'static,
        F: FnOnce(&Tokenizer) -> Result<T, TokenizerError> + Send + 'static,
    {
        let work = async {
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| TokenizerError::PoolUnavailable("the pool is closed".into()))?;
            let tok = self.tokenizer.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                job(&tok)
            });
            handle.await.map_err(|e| {
                TokenizerError::PoolUnavailable(format!("tokenizer job failed: {e}"))
            })?
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| TokenizerError::Timeout(self.timeout))?
    }

    /// Stops accepting work: calls waiting for a permit and later calls fail.
    pub fn close(&self) {
        self.permits.close();
    }

    #[cfg(test)]
    pub(crate) async fn run_for_test<T, F>(&self, job: F) -> Result<T, TokenizerError>
    where
        T: Send + 'static,
        F: FnOnce(&Tokenizer) -> Result<T, TokenizerError> + Send + 'static,
    {
        self.run(job).await
    }
}
