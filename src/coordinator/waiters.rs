//! Requests waiting for their decode instance's `/dresult` frames, by `req-id`. A request
//! registers before it is sent to its prefill instance, so no frame can arrive unclaimed;
//! `lastData:` and `error:` end the wait. When a decode instance's stream breaks, every
//! request waiting on it gets an `error:` at once ([`Waiters::fail_decoder`]), so a dead
//! instance ends its requests with an error instead of a hang.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::pd::frames::{Frame, FrameKind};

/// The `req-id` is already waiting (an id clash; the request is refused).
#[derive(Debug, thiserror::Error)]
#[error("Duplicate request id")]
pub struct Duplicate;

struct Waiter {
    decoder: u64,
    tx: mpsc::UnboundedSender<Frame>,
}

/// Waiting requests.
#[derive(Default)]
pub struct Waiters {
    map: Mutex<HashMap<String, Waiter>>,
}

impl Waiters {
    /// Starts waiting for `req_id`'s frames from decode instance `decoder`.
    pub fn register(
        &self,
        req_id: &str,
        decoder: u64,
    ) -> Result<mpsc::UnboundedReceiver<Frame>, Duplicate> {
        let mut map = self.lock();
        if map.contains_key(req_id) {
            return Err(Duplicate);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        map.insert(req_id.to_string(), Waiter { decoder, tx });
        Ok(rx)
    }

    /// Stops waiting (the request ended another way).
    pub fn unregister(&self, req_id: &str) {
        self.lock().remove(req_id);
    }

    /// Hands a frame to its request; `lastData:`/`error:` end the wait. Frames for requests
    /// that no longer wait (cancelled, timed out) are dropped.
    pub fn dispatch(&self, frame: Frame) {
        let mut map = self.lock();
        let done = matches!(frame.kind, FrameKind::LastData | FrameKind::Error);
        let Some(w) = map.get(&frame.req_id) else {
            tracing::debug!(req_id = %frame.req_id, kind = ?frame.kind, "frame for no waiting request");
            return;
        };
        if done {
            let id = frame.req_id.clone();
            let _ = w.tx.send(frame);
            map.remove(&id);
        } else if let Err(mpsc::error::SendError(f)) = w.tx.send(frame) {
            map.remove(&f.req_id);
        }
    }

    /// Ends every request waiting on `decoder` with an `error:` saying why.
    pub fn fail_decoder(&self, decoder: u64, why: &str) -> usize {
        let mut map = self.lock();
        let ids: Vec<String> = map
            .iter()
            .filter(|(_, w)| w.decoder == decoder)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(w) = map.remove(id) {
                let _ = w.tx.send(Frame::error(id.clone(), why));
            }
        }
        ids.len()
    }

    /// How many requests wait.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiter>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_reach_their_request_and_end_it() {
        let w = Waiters::default();
        let mut rx = w.register("7", 1).expect("register");
        assert!(w.register("7", 1).is_err());
        w.dispatch(Frame::data("7", "a"));
        w.dispatch(Frame::data("8", "stray"));
        w.dispatch(Frame::last_data("7", "b"));
        assert_eq!(rx.try_recv().expect("a").payload, "a");
        assert_eq!(rx.try_recv().expect("b").kind, FrameKind::LastData);
        assert!(w.is_empty());
    }

    #[test]
    fn a_lost_decoder_fails_only_its_requests() {
        let w = Waiters::default();
        let mut a = w.register("1", 5).expect("a");
        let mut b = w.register("2", 6).expect("b");
        assert_eq!(w.fail_decoder(5, "gone"), 1);
        assert_eq!(a.try_recv().expect("err").kind, FrameKind::Error);
        assert!(b.try_recv().is_err());
        assert_eq!(w.len(), 1);
    }
}
