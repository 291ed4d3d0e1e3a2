//! The generation seam: what the business routes drive to run one tokenized request.
//! [`Inference`] takes an engine [`GenRequest`] and answers with [`TokenEvents`], the
//! request's stream of [`TokenEvent`]s, which cancels the request when dropped before its end;
//! a running request can also be cancelled by id. The local engine ([`EngineHandle`])
//! implements it here; a remote instance (a PD coordinator forwarding to other daemons) is
//! meant to implement it the same way.

use super::handle::{EngineHandle, RequestId, SubmitError};
use super::request::{GenRequest, TokenEvent};
use futures_util::stream::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Something that runs generations.
pub trait Inference: Send + Sync + 'static {
    /// Hands `req` over without blocking; its events follow on the returned stream.
    fn submit(&self, req: GenRequest) -> Result<TokenEvents, SubmitError>;

    /// Cancels a running request by id (e.g. Triton `stopInfer`); unknown or finished ids are
    /// ignored.
    fn cancel(&self, id: RequestId);
}

/// Ends a request early; called at most once.
type Canceller = Box<dyn FnOnce() + Send + Sync>;

/// The events as the runner sends them.
type Events = Pin<Box<dyn Stream<Item = TokenEvent> + Send + Sync>>;

/// One submitted request's events, ending with [`TokenEvent::Finished`]. Dropping it before
/// that event cancels the request.
pub struct TokenEvents {
    id: RequestId,
    events: Events,
    /// `None` once the request finished or was cancelled.
    cancel: Option<Canceller>,
    /// Set by a runner that handed the request on to another instance (PD prefill): the
    /// events stop here without an end, and that is not a failure.
    handed_off: Option<Arc<AtomicBool>>,
}

impl TokenEvents {
    /// The stream of request `id`: `events` as the runner sends them, `cancel` to end it early.
    pub fn new(
        id: RequestId,
        events: impl Stream<Item = TokenEvent> + Send + Sync + 'static,
        cancel: impl FnOnce() + Send + Sync + 'static,
    ) -> Self {
        Self {
            id,
            events: Box::pin(events),
            cancel: Some(Box::new(cancel)),
            handed_off: None,
        }
    }

    /// Marks the stream as one whose runner may hand the request on: once `flag` is set,
    /// [`TokenEvents::is_handed_off`] says so.
    pub fn with_handoff_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.handed_off = Some(flag);
        self
    }

    /// Whether the runner handed the request on to another instance (no more events come,
    /// and the request did not fail).
    pub fn is_handed_off(&self) -> bool {
        self.handed_off
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Acquire))
    }

    /// The runner's id of this request (for cancels by id and logs).
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Ends the request now (nothing happens once it finished or was cancelled).
    pub fn cancel(&mut self) {
        if let Some(c) = self.cancel.take() {
            c();
        }
    }
}

impl Stream for TokenEvents {
    type Item = TokenEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TokenEvent>> {
        let next = self.events.poll_next_unpin(cx);
        if let Poll::Ready(Some(TokenEvent::Finished { .. })) = &next {
            // Finished: nothing left to cancel.
            self.cancel = None;
        }
        next
    }
}

impl Drop for TokenEvents {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl std::fmt::Debug for TokenEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEvents")
            .field("id", &self.id)
            .field("running", &self.cancel.is_some())
            .finish()
    }
}

impl Inference for EngineHandle {
    fn submit(&self, req: GenRequest) -> Result<TokenEvents, SubmitError> {
        let sub = EngineHandle::submit(self, req)?;
        let (id, mut rx) = (sub.id, sub.events);
        let events = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let engine = self.clone();
        Ok(TokenEvents::new(id, events, move || engine.cancel(id)))
    }

    fn cancel(&self, id: RequestId) {
        EngineHandle::cancel(self, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Finish;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    fn finished() -> TokenEvent {
        TokenEvent::Finished {
            finish: Finish::Stop,
            prompt_tokens: 1,
            generated_tokens: 0,
            cached_tokens: 0,
            at: Instant::now(),
        }
    }

    /// A stream of `events` and how often it cancelled its request.
    fn counted(events: Vec<TokenEvent>) -> (TokenEvents, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        let ev = TokenEvents::new(7, futures_util::stream::iter(events), move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        (ev, n)
    }

    #[test]
    fn dropping_a_running_request_cancels_it() {
        let (ev, n) = counted(Vec::new());
        assert_eq!(ev.id(), 7);
        drop(ev);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_explicit_cancel_is_not_repeated_on_drop() {
        let (mut ev, n) = counted(Vec::new());
        ev.cancel();
        ev.cancel();
        drop(ev);
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_finished_request_is_not_cancelled() {
        let (mut ev, n) = counted(vec![finished()]);
        assert!(matches!(ev.next().await, Some(TokenEvent::Finished { .. })));
        drop(ev);
        assert_eq!(n.load(Ordering::SeqCst), 0);
    }
}
