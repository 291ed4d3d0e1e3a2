//! [`TokenizerPool`]: tokenization for async handlers without blocking the runtime.
//!
//! Encoding a long prompt or rendering a big chat template takes milliseconds of CPU, so it runs
//! on the pool's own threads (`mindie-tok-N`, `tokenizerProcessNumber` of them, started with the
//! pool and ended when its last clone is dropped), one job per thread at a time (a semaphore),
//! and the caller waits at most `TOKENIZER_ENCODE_TIMEOUT` (permit wait included). A job that
//! times out still finishes on its thread and keeps its permit until then, so the bound on
//! concurrent work holds even under timeouts.
//!
//! Fixed threads rather than tokio's blocking pool: a blocking thread is still busy for a moment
//! after its job returns its permit, so under steady load tokio kept starting new ones (and
//! retiring idle ones), and each new thread could take a fresh glibc malloc arena; the resident
//! size crept up with the thread count (issue 16's soak). A fixed set keeps threads and arenas
//! constant.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value as Json};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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

/// One job for a pool thread: it runs with the tokenizer, holding its permit.
type Job = Box<dyn FnOnce(&Tokenizer) + Send>;

/// Bounded async access to a [`Tokenizer`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenizerPool {
    tokenizer: Tokenizer,
    permits: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
    threads: usize,
    timeout: Duration,
}

impl TokenizerPool {
    /// A pool of `threads` threads (0 counts as 1) running one job each at a time, each call
    /// bounded by `timeout`. A thread that cannot be started leaves the pool smaller (logged);
    /// with none at all every call fails with [`TokenizerError::PoolUnavailable`].
    pub fn new(tokenizer: Tokenizer, threads: usize, timeout: Duration) -> TokenizerPool {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..threads {
            let (queue, tok) = (Arc::clone(&queue), tokenizer.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mindie-tok-{i}"))
                .spawn(move || work(&queue, &tok));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start tokenizer thread {i}: {e}"),
            }
        }
        let permits = Arc::new(Semaphore::new(started));
        if started == 0 {
            permits.close(); // every call fails at once instead of waiting out its timeout
        }
        TokenizerPool {
            tokenizer,
            permits,
            jobs,
            threads: started,
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
            let (tx, rx) = oneshot::channel();
            self.jobs
                .send(packed(job, permit, tx))
                .map_err(|_| TokenizerError::PoolUnavailable("no tokenizer thread".into()))?;
            rx.await.map_err(|_| {
                TokenizerError::PoolUnavailable("tokenizer job failed: it panicked".into())
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

/// `job` as a pool [`Job`]: it holds `permit` while it runs and sends its result to `tx` (the
/// caller may have stopped waiting; then the result is dropped).
fn packed<T, F>(
    job: F,
    permit: OwnedSemaphorePermit,
    tx: oneshot::Sender<Result<T, TokenizerError>>,
) -> Job
where
    T: Send + 'static,
    F: FnOnce(&Tokenizer) -> Result<T, TokenizerError> + Send + 'static,
{
    Box::new(move |tok: &Tokenizer| {
        let _permit = permit;
        let _ = tx.send(job(tok));
    })
}

/// A pool thread: runs jobs until every sender is gone. A job that panics drops its result
/// sender (its caller gets an error) and the thread goes on.
fn work(queue: &Mutex<mpsc::Receiver<Job>>, tok: &Tokenizer) {
    loop {
        let next = match queue.lock() {
            Ok(q) => q.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = next else { return };
        if catch_unwind(AssertUnwindSafe(|| job(tok))).is_err() {
            tracing::error!("a tokenizer job panicked; its request gets an error");
        }
    }
}
