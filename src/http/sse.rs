//! Streaming replies (server-sent events and other framings): a reply body fed through a bounded channel by the task that
//! produces the events. When the client goes away the body is dropped, the channel closes, and
//! the producer sees it ([`SseSender::send`] fails, [`SseSender::closed`] resolves) and stops,
//! which drops its generations and so cancels their engine requests.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::convert::Infallible;
use tokio::sync::mpsc;

/// Events buffered between the producer and the socket.
const BUFFER: usize = 64;

/// The terminating event of OpenAI-style streams.
pub const DONE: &str = "data: [DONE]\n\n";

/// The producing side of an event stream.
#[derive(Clone)]
pub struct SseSender {
    tx: mpsc::Sender<Bytes>,
}

impl SseSender {
    /// Sends `data: <json>\n\n`. False when the client is gone.
    pub async fn send_json(&self, v: &Value) -> bool {
        self.send_raw(format!("data: {v}\n\n")).await
    }

    /// Sends raw bytes (already framed). False when the client is gone.
    pub async fn send_raw(&self, s: impl Into<Bytes>) -> bool {
        self.tx.send(s.into()).await.is_ok()
    }

    /// Resolves when the client is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A `text/event-stream` reply and the sender that feeds it.
pub fn channel() -> (SseSender, Response) {
    channel_with("text/event-stream")
}

/// A streaming reply of any content type (e.g. vLLM's NUL-separated JSON) and its sender.
pub fn channel_with(content_type: &'static str) -> (SseSender, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    (SseSender { tx }, resp)
}
