//! A fake OpenAI-compatible SSE server for the load generator: `/v1/models`,
//! `/v1/completions` and `/v1/chat/completions` stream text chunks split at odd byte
//! boundaries (several events per write, events cut mid-line) and, by arrival order, fail in
//! every way the generator must count (non-2xx, error event, truncated stream, missing usage,
//! short reply) unless `no_faults`. Used by `tests/loadgen.rs` and by `--fake` (a server to
//! try the generator against by hand).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};

#[derive(Default)]
pub struct Fake {
    /// Requests received so far.
    pub arrivals: AtomicU64,
    /// Each request's prompt (chat: the first message's content), in arrival order.
    pub prompts: Mutex<Vec<Value>>,
    /// Serve every request well (the manual server); default: the fault pattern below.
    pub no_faults: bool,
    /// Pause after every fourth piece of a reply (default 1 ms).
    pub pause: Option<Duration>,
}

/// The SSE body of one reply: `n` text chunks (chat: deltas), then optionally usage, [DONE].
fn sse_body(chat: bool, n: u64, usage: bool, done: bool) -> String {
    let mut s = String::new();
    for i in 0..n {
        let finish = if i + 1 == n {
            json!("length")
        } else {
            Value::Null
        };
        let chunk = if chat {
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0,
                   "model": "fake-model",
                   "choices": [{"index": 0, "delta": {"content": format!("t{i} ")},
                                "finish_reason": finish}]})
        } else {
            json!({"id": "cmpl-1", "object": "text_completion", "created": 0,
                   "model": "fake-model",
                   "choices": [{"index": 0, "text": format!("tok{i} "), "logprobs": null,
                                "finish_reason": finish}]})
        };
        s.push_str(&format!("data: {chunk}\n\n"));
    }
    if usage {
        let u = json!({"id": "cmpl-1", "object": "text_completion", "created": 0,
                       "model": "fake-model", "choices": [],
                       "usage": {"prompt_tokens": 16, "completion_tokens": n,
                                 "total_tokens": 16 + n}});
        s.push_str(&format!("data: {u}\n\n"));
    }
    if done {
        s.push_str("data: [DONE]\n\n");
    }
    s
}

/// Cuts `s` into pieces of 7, 1, 33, 150 and 3 bytes (cycling): events split mid-line and
/// several events in one write; a short pause after some pieces.
fn oddly_split(s: String, pause: Duration) -> Body {
    let bytes = s.into_bytes();
    let mut pieces = Vec::new();
    let (mut at, mut k) = (0, 0);
    let sizes = [7, 1, 33, 150, 3];
    while at < bytes.len() {
        let end = (at + sizes[k % sizes.len()]).min(bytes.len());
        pieces.push(bytes[at..end].to_vec());
        at = end;
        k += 1;
    }
    let stream =
        futures_util::stream::iter(pieces.into_iter().enumerate()).then(move |(i, p)| async move {
            if i % 4 == 0 {
                tokio::time::sleep(pause).await;
            }
            Ok::<_, std::io::Error>(p)
        });
    Body::from_stream(stream)
}

/// Behaviour by arrival order `n % 10`: 1 truncated, 3 HTTP 500, 5 error event, 7 one token
/// short, 9 no usage; otherwise `max_tokens` tokens.
async fn complete(fake: Arc<Fake>, body: Value, chat: bool) -> Response {
    let n = fake.arrivals.fetch_add(1, Ordering::SeqCst);
    let max = body["max_tokens"].as_u64().unwrap_or(16);
    fake.prompts.lock().unwrap().push(if chat {
        body["messages"][0]["content"].clone()
    } else {
        body["prompt"].clone()
    });
    let sse = match if fake.no_faults { 0 } else { n % 10 } {
        1 => sse_body(chat, 3, false, false),
        3 => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": {"message": "boom", "type": "server_error"}})),
            )
                .into_response()
        }
        5 => {
            sse_body(chat, 2, false, false)
                + "data: {\"error\": {\"message\": \"engine died\"}}\n\n"
        }
        7 => sse_body(chat, max - 1, true, true),
        9 => sse_body(chat, max, false, true),
        _ => sse_body(chat, max, true, true),
    };
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(oddly_split(
            sse,
            fake.pause.unwrap_or(Duration::from_millis(1)),
        ))
        .unwrap()
}

pub fn fake_app(fake: Arc<Fake>) -> Router {
    Router::new()
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "fake-model"}]})) }),
        )
        .route(
            "/v1/completions",
            post(|State(f): State<Arc<Fake>>, Json(b): Json<Value>| complete(f, b, false)),
        )
        .route(
            "/v1/chat/completions",
            post(|State(f): State<Arc<Fake>>, Json(b): Json<Value>| complete(f, b, true)),
        )
        .with_state(fake)
}

/// Serves `fake` on 127.0.0.1:`port` (0: any free port) from a background task.
pub async fn start_fake_with(fake: Fake, port: u16) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(fake);
    let app = fake_app(fake.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, fake)
}
