//! The decode side's runner: an [`Inference`] that continues a request prefilled on another
//! instance. Its event stream starts with the prefill side's first token (so the replayed
//! route handler detokenizes, applies stop strings and reports logprobs over the whole
//! output, exactly as one instance would), then the local engine takes the pulled KV and the
//! sampler state ([`EngineHandle::submit_prefilled_as`]) and decodes from there without
//! recomputing the prompt.

use super::prefill::FirstToken;
use crate::engine::handle::RequestId;
use crate::engine::{
    EngineHandle, Finish, GenRequest, Inference, KvExport, SubmitError, TokenEvent, TokenEvents,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Instant;

/// Continues one handed-over request (see the module docs).
pub struct DecodeRun {
    engine: EngineHandle,
    /// The prompt ids the prefill side ran; the replayed request must build the same.
    prompt: Vec<u32>,
    first: FirstToken,
    kv: Mutex<Option<KvExport>>,
    ended: Arc<AtomicBool>,
}

impl DecodeRun {
    pub fn new(
        engine: EngineHandle,
        prompt: Vec<u32>,
        first: FirstToken,
        kv: KvExport,
    ) -> Arc<Self> {
        Arc::new(Self {
            engine,
            prompt,
            first,
            kv: Mutex::new(Some(kv)),
            ended: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Set once the generation reached its end (finished, failed or cancelled): whatever the
    /// reply writes after this is its closing part.
    pub fn ended(&self) -> Arc<AtomicBool> {
        self.ended.clone()
    }
}

fn failed(msg: String) -> TokenEvent {
    TokenEvent::Finished {
        finish: Finish::Error(msg),
        prompt_tokens: 0,
        generated_tokens: 0,
        cached_tokens: 0,
        at: Instant::now(),
    }
}

/// Where the stream is.
enum Stage {
    /// The prefill side's first token is next.
    First,
    /// Waiting for the engine to take the request.
    Submitting(tokio::sync::oneshot::Receiver<Result<crate::engine::Submission, String>>),
    Running(tokio::sync::mpsc::UnboundedReceiver<TokenEvent>),
    Done,
}

impl Inference for DecodeRun {
    fn submit(&self, req: GenRequest) -> Result<TokenEvents, SubmitError> {
        let kv = self.kv.lock().ok().and_then(|mut g| g.take());
        let ended = self.ended.clone();
        let id = self.engine.reserve_id();
        let first = self.first.clone();
        // What the stream reports instead of running, if the request cannot continue here.
        let refusal = match kv {
            None => Some("a handed-over request runs one sequence".to_string()),
            Some(_) if req.prompt != self.prompt => Some(format!(
                "the replayed request's prompt ({} tokens) differs from the one the prefill \
                 instance ran ({} tokens): the two instances must serve the same model, \
                 tokenizer and configuration",
                req.prompt.len(),
                self.prompt.len()
            )),
            Some(_) => None,
        };
        let mut stage = Stage::First;
        let mut pending = None;
        if let (None, Some(kv)) = (&refusal, kv) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let engine = self.engine.clone();
            let first_id = first.id;
            tokio::spawn(async move {
                let r = engine
                    .submit_prefilled_as(id, req, first_id, kv)
                    .await
                    .map_err(|e| e.to_string());
                let _ = tx.send(r);
            });
            pending = Some(rx);
        }
        let mut refusal = refusal;
        let flag = ended.clone();
        let events = futures_util::stream::poll_fn(move |cx| loop {
            match &mut stage {
                Stage::First => {
                    stage = match pending.take() {
                        Some(rx) => Stage::Submitting(rx),
                        None => Stage::Done,
                    };
                    return Poll::Ready(Some(TokenEvent::Token {
                        id: first.id,
                        logprob: first.logprob,
                        top: first.top.clone(),
                        at: Instant::now(),
                    }));
                }
                Stage::Submitting(rx) => match std::pin::Pin::new(rx).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(sub))) => stage = Stage::Running(sub.events),
                    Poll::Ready(Ok(Err(e))) => {
                        stage = Stage::Done;
                        flag.store(true, Ordering::Release);
                        return Poll::Ready(Some(failed(format!("decode instance: {e}"))));
                    }
                    Poll::Ready(Err(_)) => {
                        stage = Stage::Done;
                        flag.store(true, Ordering::Release);
                        return Poll::Ready(Some(failed("the engine is not running".into())));
                    }
                },
                Stage::Running(rx) => {
                    let ev = std::task::ready!(rx.poll_recv(cx));
                    if !matches!(ev, Some(TokenEvent::Token { .. })) {
                        flag.store(true, Ordering::Release);
                        stage = Stage::Done;
                    }
                    return Poll::Ready(ev);
                }
                Stage::Done => {
                    flag.store(true, Ordering::Release);
                    return Poll::Ready(refusal.take().map(failed));
                }
            }
        });
        let engine = self.engine.clone();
        let cancel = move || {
            ended.store(true, Ordering::Release);
            engine.cancel(id);
        };
        Ok(TokenEvents::new(id, events, cancel))
    }

    fn cancel(&self, id: RequestId) {
        self.engine.cancel(id);
    }
}
