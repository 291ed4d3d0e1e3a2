//! The answer to one user request as the relay task writes it: first a head (a whole answer,
//! or the start of a stream), then stream chunks. The user hanging up is seen here
//! ([`Out::closed`]) whether the head went out or not, so the relay can cancel on both
//! instances at once.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

/// Chunks buffered toward a slow user before the relay waits.
const STREAM_BUFFER: usize = 64;

/// A plain-text answer (the Coordinator's own errors are `text/plain`, as Motor's).
pub fn text(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
        msg.to_string(),
    )
        .into_response()
}

/// A stream chunk that tells an SSE client the request failed after its stream began. The
/// `{"error": …}` shape makes OpenAI's and TGI's clients raise an error.
pub fn sse_error(msg: &str) -> Bytes {
    let v = serde_json::json!({"error": {"message": msg, "type": "server_error", "code": 500}});
    Bytes::from(format!("data: {v}\n\n"))
}

/// One request's way back to its user.
pub struct Out {
    head: Option<oneshot::Sender<Response>>,
    body: Option<mpsc::Sender<Bytes>>,
}

impl Out {
    /// The relay's half, and the receiver the route handler awaits for the head.
    pub fn new() -> (Out, oneshot::Receiver<Response>) {
        let (tx, rx) = oneshot::channel();
        (
            Out {
                head: Some(tx),
                body: None,
            },
            rx,
        )
    }

    /// Whether nothing was sent yet.
    pub fn fresh(&self) -> bool {
        self.head.is_some()
    }

    /// Whether a stream is open.
    pub fn streaming(&self) -> bool {
        self.body.is_some()
    }

    /// Sends a whole answer (only as the head).
    pub fn respond(&mut self, resp: Response) -> bool {
        match self.head.take() {
            Some(tx) => tx.send(resp).is_ok(),
            None => false,
        }
    }

    /// Starts a stream with `status` and `content_type`.
    pub fn start_stream(&mut self, status: StatusCode, content_type: HeaderValue) -> bool {
        let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        let resp = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            .body(Body::from_stream(stream));
        let Ok(resp) = resp else { return false };
        self.body = Some(tx);
        self.respond(resp)
    }

    /// Sends one stream chunk; false when the user is gone.
    pub async fn chunk(&mut self, bytes: Bytes) -> bool {
        if bytes.is_empty() {
            return true;
        }
        match &self.body {
            Some(tx) => tx.send(bytes).await.is_ok(),
            None => false,
        }
    }

    /// Ends the answer with an error: a plain-text head if nothing was sent yet, else an
    /// error chunk closing the stream.
    pub async fn fail(&mut self, status: StatusCode, msg: &str) {
        if self.fresh() {
            self.respond(text(status, msg));
        } else if self.streaming() {
            self.chunk(sse_error(msg)).await;
        }
        self.finish();
    }

    /// Closes the stream (the user's body ends).
    pub fn finish(&mut self) {
        self.body = None;
        self.head = None;
    }

    /// Resolves when the user has gone (their connection closed). Never resolves after
    /// [`Self::finish`].
    pub async fn closed(&mut self) {
        if let Some(tx) = &self.body {
            tx.closed().await;
        } else if let Some(tx) = &mut self.head {
            tx.closed().await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}
