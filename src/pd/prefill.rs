//! The prefill side's runner: an [`Inference`] that runs a request on the local engine up to
//! its first token and then hands it on. The engine generates one token and keeps the
//! request's KV under a lease; when that one token was not already the end, the event stream
//! stops without an end ("parks") and the waiting caller gets a [`Handoff`] with what the
//! decode instance needs. A request that really ends at its first token (EOS, a stop token,
//! `max_tokens: 1`, a stop string) ends here as usual and its lease is freed at once.

use crate::engine::handle::RequestId;
use crate::engine::{
    EngineHandle, Finish, GenRequest, Inference, SubmitError, TokenEvent, TokenEvents,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::oneshot;

/// The first output token as the prefill side sampled it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FirstToken {
    pub id: u32,
    pub logprob: Option<f32>,
    pub top: Vec<(u32, f32)>,
}

/// A request parked after its first token, its KV held under a lease.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The local engine's id of the request (and of its lease).
    pub engine_id: RequestId,
    /// The request as the route built it (the client's output limit, not the one token the
    /// prefill ran).
    pub req: GenRequest,
    pub first: FirstToken,
}

/// What a [`PrefillRun`] does after the first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFirst {
    /// MindIE's protocol: the request parks there (unless it ended) and is handed on.
    HandOn,
    /// vLLM's protocol: the request (asked for one token) ends normally and its KV stays
    /// published under the lease for a decode instance the router picks.
    Publish,
}

/// Runs one client request's prefill (see the module docs). Only the first sequence a
/// request submits is handed on; any further one runs whole on the local engine.
pub struct PrefillRun {
    engine: EngineHandle,
    lease_ttl: Duration,
    mode: AfterFirst,
    submitted: AtomicBool,
    handoff: Arc<Mutex<Option<oneshot::Sender<Handoff>>>>,
}

impl PrefillRun {
    /// A runner whose lease lives `lease_ttl` without a pull, and the receiver of its
    /// hand-off (dropped unsent when the request ends on the prefill side).
    pub fn new(
        engine: EngineHandle,
        lease_ttl: Duration,
        mode: AfterFirst,
    ) -> (Arc<Self>, oneshot::Receiver<Handoff>) {
        let (tx, rx) = oneshot::channel();
        let run = Arc::new(Self {
            engine,
            lease_ttl,
            mode,
            submitted: AtomicBool::new(false),
            handoff: Arc::new(Mutex::new(Some(tx))),
        });
        (run, rx)
    }

    fn take_sender(
        slot: &Mutex<Option<oneshot::Sender<Handoff>>>,
    ) -> Option<oneshot::Sender<Handoff>> {
        slot.lock().ok().and_then(|mut g| g.take())
    }
}

impl Inference for PrefillRun {
    fn submit(&self, req: GenRequest) -> Result<TokenEvents, SubmitError> {
        let publish = self.mode == AfterFirst::Publish;
        if self.submitted.swap(true, Ordering::AcqRel) || (req.max_new_tokens <= 1 && !publish) {
            // Nothing to hand on: one token is the whole answer (or a second sequence).
            Self::take_sender(&self.handoff);
            return Inference::submit(&self.engine, req);
        }
        let original = req.clone();
        let mut one = req;
        one.max_new_tokens = 1;
        let handing_on = !publish;
        let sub = self.engine.submit_holding_kv(one, self.lease_ttl)?;
        let (id, mut rx) = (sub.id, sub.events);
        let handed = Arc::new(AtomicBool::new(false));
        let slot = self.handoff.clone();
        let engine = self.engine.clone();
        let mut first: Option<FirstToken> = None;
        let mut parked = false;
        let flag = handed.clone();
        let events = futures_util::stream::poll_fn(move |cx| {
            if parked {
                // Handed on: no more events, ever (the caller drops the stream).
                return Poll::Pending;
            }
            let ev = match rx.poll_recv(cx) {
                Poll::Ready(Some(ev)) => ev,
                other => return other,
            };
            match &ev {
                TokenEvent::Token {
                    id: tok,
                    logprob,
                    top,
                    ..
                } => {
                    first.get_or_insert_with(|| FirstToken {
                        id: *tok,
                        logprob: *logprob,
                        top: top.clone(),
                    });
                }
                TokenEvent::Finished { finish, .. } if !handing_on => {
                    // Published: the KV stays leased for the decode instance's pull.
                    let sender = Self::take_sender(&slot);
                    let normal = matches!(finish, Finish::Length | Finish::Stop);
                    if let (true, Some(f), Some(tx)) = (normal, first.take(), sender) {
                        let handoff = Handoff {
                            engine_id: id,
                            req: original.clone(),
                            first: f,
                        };
                        if tx.send(handoff).is_ok() {
                            flag.store(true, Ordering::Release);
                            return Poll::Ready(Some(ev));
                        }
                    }
                    engine.release_kv_detached(id);
                }
                TokenEvent::Finished { finish, .. } => {
                    let sender = Self::take_sender(&slot);
                    if let (Finish::Length, Some(f), Some(tx)) = (finish, first.take(), sender) {
                        let handoff = Handoff {
                            engine_id: id,
                            req: original.clone(),
                            first: f,
                        };
                        if tx.send(handoff).is_ok() {
                            flag.store(true, Ordering::Release);
                            parked = true;
                            return Poll::Pending;
                        }
                    }
                    // The request ended here: its KV has no one to go to.
                    engine.release_kv_detached(id);
                }
            }
            Poll::Ready(Some(ev))
        });
        let engine = self.engine.clone();
        let slot = self.handoff.clone();
        let flag = handed.clone();
        let cancel = move || {
            if !flag.load(Ordering::Acquire) {
                // Ended before (or instead of) the hand-off: a stop string, the client gone,
                // a timeout. The engine may already have leased the KV: free it too.
                Self::take_sender(&slot);
                engine.cancel(id);
                engine.release_kv_detached(id);
            }
        };
        Ok(TokenEvents::new(id, events, cancel).with_handoff_flag(handed))
    }

    fn cancel(&self, id: RequestId) {
        self.engine.cancel(id);
        self.engine.release_kv_detached(id);
    }
}
