//! The one `GET /dresult` reader of a decode instance (SPEC-PD §2.6): the Coordinator's
//! long-lived connection that carries every decoded request's output as [`frames`].
//!
//! [`DresultHub`] owns that connection. [`DresultHub::connect`] answers a `GET /dresult` with
//! a chunked `text/event-stream` body that never ends on its own; each frame is one body chunk
//! (Motor keeps a `reqId:` only within the chunk it came in). A newer connect replaces the
//! reader: the old one receives what was already queued for it, then
//! `reqId:0xffffffffffffffff\0close:new connection is to established, close the old one.\0`,
//! and its body ends.
//!
//! [`DresultHub::send`] fails with [`NoReader`] when no reader is connected or it went away;
//! the caller must then end its request some other way (MindIE drops such output silently,
//! SPEC-PD §7). **Back-pressure:** each reader has a bounded queue of [`READER_QUEUE`] frames;
//! when the Coordinator does not drain it, `send` waits (asynchronously) for room, so a slow
//! Coordinator slows the decode loop's senders instead of growing memory. A caller that needs
//! a bound wraps `send` in a timeout.
//!
//! Heartbeat: from the first connect on, a task checks every second (the `tick`) and queues
//! `ka:heartbeat\0` when nothing was queued for more than five seconds (the `idle` time),
//! while the hub is active. [`DresultHub::set_active`]`(false)` (the role became prefill) stops
//! the heartbeats; [`DresultHub::follow_role`] does that from the role watch.
//!
//! The route itself belongs to the business plane: it answers 400 with [`NOT_DMI`] in
//! standard mode and with [`check_role`]'s error when the role is not decode or flex, then
//! calls [`DresultHub::connect`].

use super::frames::{self, Frame, HEARTBEAT, REPLACED};
use super::role::{Role, RoleView};
use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A heartbeat goes out after this long without any frame (MindIE: more than 5 s).
pub const HEARTBEAT_IDLE: Duration = Duration::from_secs(5);

/// How often the heartbeat task looks (MindIE: every second).
pub const HEARTBEAT_TICK: Duration = Duration::from_secs(1);

/// Frames queued for one reader before [`DresultHub::send`] waits.
pub const READER_QUEUE: usize = 256;

/// No `/dresult` reader is connected (or it went away): the frame was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no /dresult reader is connected: the Coordinator cannot receive this request's output")]
pub struct NoReader;

/// MindIE's 400 text for `GET /dresult` outside dmi mode.
pub const NOT_DMI: &str = "Non DMI does not support dresult request";

/// `GET /dresult` on an instance that is not decode or flex (400, MindIE's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Only the Decode node supports dresult but you send to {0}")]
pub struct NotDecode(pub &'static str);

/// Only decode and flex instances have a `/dresult` reader.
pub fn check_role(view: &RoleView) -> Result<(), NotDecode> {
    match view.role {
        Some(Role::Decode | Role::Flex) => Ok(()),
        other => Err(NotDecode(other.map_or("none", Role::as_str))),
    }
}

/// See the module docs. Cheap to clone; clones share the reader.
#[derive(Clone)]
pub struct DresultHub {
    inner: Arc<Inner>,
}

struct Inner {
    idle: Duration,
    tick: Duration,
    state: Mutex<HubState>,
}

struct HubState {
    reader: Option<Reader>,
    last_write: Instant,
    active: bool,
    heartbeat_started: bool,
}

struct Reader {
    tx: mpsc::Sender<Bytes>,
    /// Set when a newer reader replaced this one: its body ends with the close frame.
    replaced: Arc<AtomicBool>,
}

impl Default for DresultHub {
    fn default() -> Self {
        Self::new()
    }
}

impl DresultHub {
    /// A hub with MindIE's heartbeat timing ([`HEARTBEAT_IDLE`], [`HEARTBEAT_TICK`]), active.
    pub fn new() -> Self {
        Self::with_timing(HEARTBEAT_IDLE, HEARTBEAT_TICK)
    }

    /// A hub that sends a heartbeat after `idle` without frames, checking every `tick`.
    pub fn with_timing(idle: Duration, tick: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                idle,
                tick,
                state: Mutex::new(HubState {
                    reader: None,
                    last_write: Instant::now(),
                    active: true,
                    heartbeat_started: false,
                }),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, HubState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a `GET /dresult` (the caller checked the role): 200, chunked
    /// `text/event-stream`, a body that lasts until the client goes or a newer connect
    /// replaces it. Must run inside a Tokio runtime (it may start the heartbeat task).
    pub fn connect(&self) -> Response {
        let (tx, rx) = mpsc::channel(READER_QUEUE);
        let replaced = Arc::new(AtomicBool::new(false));
        let start_heartbeat = {
            let mut st = self.state();
            if let Some(old) = st.reader.take() {
                old.replaced.store(true, Ordering::SeqCst);
                tracing::info!("new /dresult connection: closing the old one");
                // Dropping `old.tx` lets the old body drain, write the close frame and end.
            } else {
                tracing::info!("/dresult connected");
            }
            st.reader = Some(Reader {
                tx,
                replaced: replaced.clone(),
            });
            st.last_write = Instant::now();
            !std::mem::replace(&mut st.heartbeat_started, true)
        };
        if start_heartbeat {
            tokio::spawn(heartbeat(Arc::downgrade(&self.inner), self.inner.tick));
        }
        let body = Body::from_stream(reader_stream(rx, replaced));
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream")],
            body,
        )
            .into_response()
    }

    /// Queues one frame for the current reader, waiting while its queue is full (see the
    /// module docs). [`NoReader`] when none is connected or it went away: the frame is lost
    /// and the caller must end its request with an error.
    pub async fn send(&self, frame: &Frame) -> Result<(), NoReader> {
        if frame.payload.is_empty() && frame.kind != frames::FrameKind::Ka {
            tracing::warn!(
                req_id = %frame.req_id,
                keyword = frame.kind.keyword(),
                "/dresult frame with an empty payload: the Coordinator ignores it"
            );
        }
        let bytes = frames::encode(frame);
        let tx = self
            .state()
            .reader
            .as_ref()
            .map(|r| r.tx.clone())
            .ok_or(NoReader)?;
        tx.send(bytes).await.map_err(|_| NoReader)?;
        self.state().last_write = Instant::now();
        Ok(())
    }

    /// Whether a reader is connected now.
    pub fn connected(&self) -> bool {
        self.state()
            .reader
            .as_ref()
            .is_some_and(|r| !r.tx.is_closed())
    }

    /// Heartbeats go out only while active (decode or flex role); the reader stays connected.
    pub fn set_active(&self, active: bool) {
        let mut st = self.state();
        if st.active != active {
            tracing::info!(active, "/dresult heartbeat");
        }
        st.active = active;
    }

    pub fn is_active(&self) -> bool {
        self.state().active
    }

    /// Keeps [`set_active`](Self::set_active) in step with the role: active for decode and
    /// flex, inactive otherwise. Ends when the role's sender is gone.
    pub fn follow_role(&self, mut roles: watch::Receiver<RoleView>) -> JoinHandle<()> {
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                let role = roles.borrow_and_update().role;
                hub.set_active(matches!(role, Some(Role::Decode | Role::Flex)));
                if roles.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// The body of one reader: its frames, then the close frame if it was replaced.
fn reader_stream(
    rx: mpsc::Receiver<Bytes>,
    replaced: Arc<AtomicBool>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some((rx, replaced)), |state| async move {
        let (mut rx, replaced) = state?;
        match rx.recv().await {
            Some(frame) => Some((Ok(frame), Some((rx, replaced)))),
            None if replaced.load(Ordering::SeqCst) => {
                Some((Ok(frames::encode(&Frame::close(REPLACED))), None))
            }
            None => None,
        }
    })
}

/// Queues a heartbeat when the active reader has been idle too long; ends with the hub.
async fn heartbeat(inner: Weak<Inner>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        interval.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let mut st = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !st.active || st.last_write.elapsed() <= inner.idle {
            continue;
        }
        let Some(reader) = &st.reader else {
            continue;
        };
        match reader.tx.try_send(Bytes::from_static(HEARTBEAT)) {
            Ok(()) => st.last_write = Instant::now(),
            // A full queue means frames are waiting: the reader is not idle.
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pd::frames::HEARTBEAT;
    use axum::routing::get;
    use axum::Router;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const WAIT: Duration = Duration::from_secs(5);

    async fn serve(hub: DresultHub) -> SocketAddr {
        let app = Router::new().route(
            "/dresult",
            get(move || {
                let hub = hub.clone();
                async move { hub.connect() }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    /// A raw HTTP/1.1 client that reads the chunked body chunk by chunk, as on the wire.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
        head: String,
    }

    impl Client {
        async fn get(addr: SocketAddr) -> Self {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /dresult HTTP/1.1\r\nHost: coordinator\r\n\r\n")
                .await
                .unwrap();
            let mut c = Client {
                stream,
                buf: Vec::new(),
                head: String::new(),
            };
            let end = c.read_until(b"\r\n\r\n").await;
            let head: Vec<u8> = c.buf.drain(..end).collect();
            c.head = String::from_utf8(head).unwrap().to_ascii_lowercase();
            c
        }

        /// Reads until `needle` is in the buffer; returns the index just past it.
        async fn read_until(&mut self, needle: &[u8]) -> usize {
            loop {
                if let Some(i) = self.buf.windows(needle.len()).position(|w| w == needle) {
                    return i + needle.len();
                }
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                    .await
                    .expect("read timed out")
                    .unwrap();
                assert!(n > 0, "connection closed");
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }

        /// The next chunk's data; `None` for the last (empty) chunk.
        async fn chunk(&mut self) -> Option<Vec<u8>> {
            let end = self.read_until(b"\r\n").await;
            let size_line: Vec<u8> = self.buf.drain(..end).collect();
            let size = usize::from_str_radix(
                std::str::from_utf8(&size_line[..size_line.len() - 2]).unwrap(),
                16,
            )
            .unwrap();
            while self.buf.len() < size + 2 {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                    .await
                    .expect("read timed out")
                    .unwrap();
                assert!(n > 0, "connection closed mid-chunk");
                self.buf.extend_from_slice(&chunk[..n]);
            }
            let data: Vec<u8> = self.buf.drain(..size + 2).collect();
            assert_eq!(&data[size..], b"\r\n");
            (size > 0).then(|| data[..size].to_vec())
        }
    }

    async fn until(what: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !what() {
            assert!(Instant::now() < deadline, "condition not reached");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn frames_arrive_whole_one_chunk_each() {
        let hub = DresultHub::new();
        assert_eq!(hub.send(&Frame::data("1", "x")).await, Err(NoReader));
        let addr = serve(hub.clone()).await;
        let mut c = Client::get(addr).await;
        assert!(c.head.starts_with("http/1.1 200"), "{}", c.head);
        assert!(
            c.head.contains("content-type: text/event-stream"),
            "{}",
            c.head
        );
        assert!(c.head.contains("transfer-encoding: chunked"), "{}", c.head);
        assert!(hub.connected());
        let sent = [
            Frame::data("abc1", "data: {\"id\":\"x\",\"choices\":[]}\n\n"),
            Frame::data("abc1", "data: {\"n\":2}\n\n"),
            Frame::last_data("abc1", "data: [DONE]\n\n"),
            Frame::error("ff", "Pull kv failed reversibly."),
        ];
        for f in &sent {
            hub.send(f).await.unwrap();
        }
        for f in &sent {
            assert_eq!(c.chunk().await.unwrap(), frames::encode(f).to_vec());
        }
    }

    #[tokio::test]
    async fn a_new_reader_closes_the_old_one() {
        let hub = DresultHub::new();
        let addr = serve(hub.clone()).await;
        let mut old = Client::get(addr).await;
        hub.send(&Frame::data("1", "for the old one"))
            .await
            .unwrap();
        let mut new = Client::get(addr).await;
        assert!(new.head.starts_with("http/1.1 200"));
        // The old reader gets what was queued for it, then the close frame, then the end.
        assert_eq!(
            old.chunk().await.unwrap(),
            frames::encode(&Frame::data("1", "for the old one")).to_vec()
        );
        assert_eq!(
            old.chunk().await.unwrap(),
            b"reqId:0xffffffffffffffff\0close:new connection is to established, close the old one.\0"
                .to_vec()
        );
        assert_eq!(old.chunk().await, None);
        // Later frames go to the new reader.
        hub.send(&Frame::last_data("2", "{}")).await.unwrap();
        assert_eq!(
            new.chunk().await.unwrap(),
            frames::encode(&Frame::last_data("2", "{}")).to_vec()
        );
        assert!(hub.connected());
    }

    #[tokio::test]
    async fn heartbeat_after_idle_and_none_when_inactive() {
        let hub = DresultHub::with_timing(Duration::from_millis(150), Duration::from_millis(20));
        let addr = serve(hub.clone()).await;
        let mut c = Client::get(addr).await;
        let started = Instant::now();
        assert_eq!(c.chunk().await.unwrap(), HEARTBEAT.to_vec());
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Frames reset the idle clock: a frame, then the next heartbeat only after idle again.
        hub.send(&Frame::data("1", "x")).await.unwrap();
        assert_eq!(
            c.chunk().await.unwrap(),
            frames::encode(&Frame::data("1", "x")).to_vec()
        );
        assert_eq!(c.chunk().await.unwrap(), HEARTBEAT.to_vec());
        // Inactive (prefill role): no heartbeat however long it is idle.
        hub.set_active(false);
        let quiet = tokio::time::timeout(Duration::from_millis(500), c.chunk()).await;
        assert!(quiet.is_err(), "no heartbeat expected while inactive");
        hub.set_active(true);
        assert_eq!(c.chunk().await.unwrap(), HEARTBEAT.to_vec());
    }

    #[tokio::test]
    async fn send_fails_once_the_reader_is_gone() {
        let hub = DresultHub::new();
        let addr = serve(hub.clone()).await;
        let c = Client::get(addr).await;
        assert!(hub.connected());
        drop(c);
        // TCP may swallow a write or two after the peer closed; then the body is dropped and
        // every send says so.
        let deadline = Instant::now() + WAIT;
        loop {
            if hub.send(&Frame::data("1", "lost?")).await.is_err() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "send kept succeeding after disconnect"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        until(|| !hub.connected()).await;
    }

    #[tokio::test]
    async fn send_waits_while_the_queue_is_full() {
        let hub = DresultHub::new();
        let response = hub.connect();
        for i in 0..READER_QUEUE {
            hub.send(&Frame::data(i.to_string(), "x")).await.unwrap();
        }
        let blocked =
            tokio::time::timeout(Duration::from_millis(50), hub.send(&Frame::data("n", "x"))).await;
        assert!(blocked.is_err(), "send should wait for room");
        // The reader goes away: waiting senders and later ones get NoReader.
        drop(response);
        assert_eq!(hub.send(&Frame::data("n", "x")).await, Err(NoReader));
        assert!(!hub.connected());
    }

    #[test]
    fn only_decode_and_flex_read() {
        let view = |role| RoleView {
            role,
            ..RoleView::default()
        };
        assert_eq!(check_role(&view(Some(Role::Decode))), Ok(()));
        assert_eq!(check_role(&view(Some(Role::Flex))), Ok(()));
        let e = check_role(&view(Some(Role::Prefill))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Only the Decode node supports dresult but you send to prefill"
        );
        assert_eq!(check_role(&view(None)), Err(NotDecode("none")));
    }

    #[tokio::test]
    async fn follows_the_role() {
        let hub = DresultHub::new();
        let (tx, rx) = watch::channel(RoleView::default());
        let task = hub.follow_role(rx);
        until(|| !hub.is_active()).await;
        tx.send_replace(RoleView {
            role: Some(Role::Decode),
            ..RoleView::default()
        });
        until(|| hub.is_active()).await;
        tx.send_replace(RoleView {
            role: Some(Role::Prefill),
            ..RoleView::default()
        });
        until(|| !hub.is_active()).await;
        drop(tx);
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
}
