//! Load on the real binary (StandardMock engine at 1 ms a step): `MINDIE_LOAD_REQUESTS`
//! requests (default below) from `MINDIE_LOAD_CONCURRENCY` workers (default 64) over every
//! wire format the business plane speaks: OpenAI completions and chat, TGI, vLLM legacy,
//! MindIE-native and Triton, streaming and not. Every fifth request is a client that goes away
//! mid-stream (a long streaming request dropped after its first event). Checks: every other
//! request succeeds with its whole output; afterwards the engine is idle with every KV block
//! free; and the metrics plane counts exactly what the clients saw (received = sent,
//! success = completed, failed = abandoned, nothing refused).
//!
//! Workers keep one HTTP/1.1 connection each for their ordinary requests; an abandoning client
//! opens its own connection and closes it. The run's numbers go to stderr (`--nocapture`).
//! Run: `cargo test --release --test load -- --nocapture` (10,000 requests by default).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use common::scrape::{counter, metrics_text, resource};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Requests per run (about 5 s on 2 loaded cores: CI runs the full count).
const DEFAULT_REQUESTS: usize = 10_000;
const DEFAULT_CONCURRENCY: usize = 64;
/// Output tokens of an ordinary request.
const TOKENS: u64 = 8;
/// Output tokens asked for by a client that goes away (it never gets them all).
const ABANDONED_TOKENS: u64 = 500;
/// How long one request may take before it counts as hung.
const REQUEST_LIMIT: Duration = Duration::from_secs(60);
/// Token ids for `/infer_token` (ordinary ids of the fixture's vocabulary).
const PROMPT_IDS: [u32; 4] = [1, 450, 1000, 1500];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    OpenAiCompletion,
    OpenAiCompletionStream,
    OpenAiChat,
    OpenAiChatStream,
    TgiGenerate,
    TgiStream,
    VllmGenerate,
    VllmStream,
    NativeInfer,
    NativeInferStream,
    NativeInferToken,
    TritonGenerate,
    TritonStream,
}

use Kind::*;

const KINDS: [Kind; 13] = [
    OpenAiCompletion,
    OpenAiCompletionStream,
    OpenAiChat,
    OpenAiChatStream,
    TgiGenerate,
    TgiStream,
    VllmGenerate,
    VllmStream,
    NativeInfer,
    NativeInferStream,
    NativeInferToken,
    TritonGenerate,
    TritonStream,
];

const STREAMING: [Kind; 6] = [
    OpenAiCompletionStream,
    OpenAiChatStream,
    TgiStream,
    VllmStream,
    NativeInferStream,
    TritonStream,
];

impl Kind {
    fn path(self) -> &'static str {
        match self {
            OpenAiCompletion | OpenAiCompletionStream => "/v1/completions",
            OpenAiChat | OpenAiChatStream => "/v1/chat/completions",
            TgiGenerate | VllmGenerate | VllmStream => "/generate",
            TgiStream => "/generate_stream",
            NativeInfer | NativeInferStream => "/infer",
            NativeInferToken => "/infer_token",
            TritonGenerate => "/v2/models/mock-model/generate",
            TritonStream => "/v2/models/mock-model/generate_stream",
        }
    }

    fn body(self, prompt: &str, n: u64) -> Value {
        let openai_stream = json!({"include_usage": true});
        match self {
            OpenAiCompletion => json!({"model": "mock-model", "prompt": prompt, "max_tokens": n}),
            OpenAiCompletionStream => json!({"model": "mock-model", "prompt": prompt,
                "max_tokens": n, "stream": true, "stream_options": openai_stream}),
            OpenAiChat => json!({"model": "mock-model", "max_tokens": n,
                "messages": [{"role": "user", "content": prompt}]}),
            OpenAiChatStream => json!({"model": "mock-model", "max_tokens": n, "stream": true,
                "stream_options": openai_stream,
                "messages": [{"role": "user", "content": prompt}]}),
            TgiGenerate => json!({"inputs": prompt,
                "parameters": {"max_new_tokens": n, "details": true}}),
            TgiStream => json!({"inputs": prompt, "parameters": {"max_new_tokens": n}}),
            VllmGenerate => json!({"prompt": prompt, "max_tokens": n}),
            VllmStream => json!({"prompt": prompt, "max_tokens": n, "stream": true}),
            NativeInfer => json!({"inputs": prompt, "parameters": {"max_new_tokens": n}}),
            NativeInferStream => json!({"inputs": prompt, "stream": true,
                "parameters": {"max_new_tokens": n}}),
            NativeInferToken => json!({"input_id": PROMPT_IDS,
                "parameters": {"max_new_tokens": n}}),
            TritonGenerate => json!({"text_input": prompt,
                "parameters": {"max_new_tokens": n}}),
            TritonStream => json!({"text_input": prompt, "parameters": {"max_new_tokens": n}}),
        }
    }

    /// Checks a whole 200 reply of an ordinary request ([`TOKENS`] tokens).
    fn check(self, prompt: &str, body: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(body).map_err(|e| format!("not UTF-8: {e}"))?;
        let json = || serde_json::from_str::<Value>(text).map_err(|e| format!("{e}: {text}"));
        let want = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{what}: {text}"))
            }
        };
        match self {
            OpenAiCompletion | OpenAiChat => {
                let v = json()?;
                want(
                    v["usage"]["completion_tokens"] == TOKENS,
                    "completion_tokens",
                )?;
                want(
                    v["choices"][0]["finish_reason"] == "length",
                    "finish_reason",
                )
            }
            OpenAiCompletionStream | OpenAiChatStream => {
                let events = sse_events(text)?;
                want(
                    events.last().map(String::as_str) == Some("[DONE]"),
                    "[DONE]",
                )?;
                let usage = events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                    .find(|v| v["usage"].is_object());
                want(
                    usage.is_some_and(|u| u["usage"]["completion_tokens"] == TOKENS),
                    "usage",
                )
            }
            TgiGenerate => want(json()?["details"]["generated_tokens"] == TOKENS, "details"),
            NativeInfer | NativeInferToken => {
                let v = json()?;
                let ids = v["details"]["generated_token_ids"].as_array().map(Vec::len);
                want(ids == Some(TOKENS as usize), "generated_token_ids")
            }
            TritonGenerate => want(json()?["details"]["generated_tokens"] == TOKENS, "details"),
            TritonStream => {
                // Text events (a token that ends mid-character waits for the next), then one
                // with the details.
                let events = sse_events(text)?;
                let last: Value = serde_json::from_str(events.last().unwrap_or(&String::new()))
                    .map_err(|e| format!("last event: {e}: {text}"))?;
                want(
                    last["details"]["generated_tokens"] == TOKENS,
                    "generated_tokens",
                )?;
                want(
                    last["details"]["finish_reason"] == "length",
                    "finish_reason",
                )
            }
            TgiStream | NativeInferStream => {
                let events = sse_events(text)?;
                want(events.len() as u64 == TOKENS, "one event per token")?;
                let last: Value = serde_json::from_str(events.last().unwrap_or(&String::new()))
                    .map_err(|e| format!("last event: {e}: {text}"))?;
                want(
                    last["details"]["finish_reason"] == "length",
                    "finish_reason",
                )
            }
            VllmGenerate => {
                let v = json()?;
                let out = v["text"][0].as_str().unwrap_or_default();
                want(
                    out.starts_with(&format!("{prompt} ")) && out.len() > prompt.len() + 1,
                    "prompt + output",
                )
            }
            VllmStream => {
                want(text.ends_with('\0'), "NUL-terminated")?;
                let frames: Vec<&str> = text.split('\0').filter(|f| !f.is_empty()).collect();
                want(!frames.is_empty(), "frames")?;
                for f in frames {
                    let v: Value = serde_json::from_str(f).map_err(|e| format!("{e}: {f:?}"))?;
                    want(v["text"][0].is_string(), "frame text")?;
                }
                Ok(())
            }
        }
    }
}

/// The `data:` payloads of an SSE body; each must be JSON (or `[DONE]`), and one with an
/// `error` member is an error.
fn sse_events(body: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for ev in body.split("\n\n") {
        let data: Vec<&str> = ev
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        if data != "[DONE]" {
            let v: Value = serde_json::from_str(&data).map_err(|e| format!("{e}: {data}"))?;
            if v.get("error").is_some() {
                return Err(format!("error event: {data}"));
            }
        }
        out.push(data);
    }
    Ok(out)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number"))
        })
        .unwrap_or(default)
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<(Sender, tokio::task::JoinHandle<()>), String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    Ok((
        sender,
        tokio::spawn(async move {
            let _ = conn.await;
        }),
    ))
}

fn request(addr: SocketAddr, path: &str, body: &Value) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Sends one request on `sender`; the status and the whole body.
async fn exchange(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
) -> Result<(u16, Vec<u8>), String> {
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, body))
}

/// A client that goes away: a long stream on its own connection, closed after the first
/// piece of body.
async fn abandon(addr: SocketAddr, kind: Kind, prompt: &str) -> Result<(), String> {
    let (mut sender, conn) = connect(addr).await?;
    let resp = sender
        .send_request(request(
            addr,
            kind.path(),
            &kind.body(prompt, ABANDONED_TOKENS),
        ))
        .await
        .map_err(|e| format!("send: {e}"))?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        return Err(format!("status {status}: {body:?}"));
    }
    let mut body: Incoming = resp.into_body();
    loop {
        match body.frame().await {
            Some(Ok(f)) if f.data_ref().is_some_and(|d| !d.is_empty()) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("body: {e}")),
            None => return Err("the stream ended before the client left".into()),
        }
    }
    drop(body);
    drop(sender);
    conn.abort();
    Ok(())
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    completed: AtomicUsize,
    abandoned: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

async fn worker(addr: SocketAddr, total: usize, next: Arc<AtomicUsize>, seen: Arc<Seen>) {
    let mut conn: Option<(Sender, tokio::task::JoinHandle<()>)> = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return;
        }
        let prompt = format!("load request {i}");
        if i.is_multiple_of(5) {
            let kind = STREAMING[(i / 5) % STREAMING.len()];
            match tokio::time::timeout(REQUEST_LIMIT, abandon(addr, kind, &prompt)).await {
                Ok(Ok(())) => {
                    seen.abandoned.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => seen
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("#{i} {kind:?}: {e}")),
                Err(_) => seen
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("#{i} {kind:?}: hung")),
            }
            continue;
        }
        let kind = KINDS[i % KINDS.len()];
        let result = tokio::time::timeout(REQUEST_LIMIT, async {
            if conn.as_ref().is_none_or(|(s, _)| s.is_closed()) {
                conn = Some(connect(addr).await?);
            }
            let (sender, _) = conn.as_mut().unwrap();
            let (status, body) = exchange(
                sender,
                request(addr, kind.path(), &kind.body(&prompt, TOKENS)),
            )
            .await?;
            if status != 200 {
                return Err(format!(
                    "status {status}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
            kind.check(&prompt, &body)
        })
        .await
        .unwrap_or_else(|_| Err("hung".into()));
        match result {
            Ok(()) => {
                seen.completed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                seen.errors
                    .lock()
                    .unwrap()
                    .push(format!("#{i} {kind:?}: {e}"));
                if let Some((_, task)) = conn.take() {
                    task.abort();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flavour_under_load_with_clients_leaving() {
    let total = env_usize("MINDIE_LOAD_REQUESTS", DEFAULT_REQUESTS);
    let concurrency = env_usize("MINDIE_LOAD_CONCURRENCY", DEFAULT_CONCURRENCY);
    assert!(
        total >= 5 * KINDS.len(),
        "MINDIE_LOAD_REQUESTS={total}: use at least 65"
    );
    let home = Home::new();
    let d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "1")]);
    let addr = home.business();

    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Seen::default());
    let workers: Vec<_> = (0..concurrency)
        .map(|_| tokio::spawn(worker(addr, total, next.clone(), seen.clone())))
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = t0.elapsed();
    let completed = seen.completed.load(Ordering::Relaxed);
    let abandoned = seen.abandoned.load(Ordering::Relaxed);
    let errors = seen.errors.lock().unwrap().clone();
    eprintln!(
        "load: {total} requests at concurrency {concurrency} in {:.1} s ({:.0} requests/s): \
         {completed} completed, {abandoned} abandoned mid-stream, {} errors",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, first ones: {:#?}\ndaemon log tail:\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        tail(&d.output(), 40)
    );
    assert_eq!(completed + abandoned, total);
    assert_eq!(abandoned, total.div_ceil(5));

    // Idle afterwards, every KV block free.
    let t1 = Instant::now();
    let status = loop {
        let r = resource(home.mgmt()).await;
        if r["runningRequestNum"] == 0
            && r["waitingRequestNum"] == 0
            && r["freeNpuBlockNums"] == r["totalNpuBlockNums"]
        {
            break r;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "engine not idle with every block free 20 s after the load: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status["totalNpuBlockNums"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );

    // The metrics plane counts what the clients saw, once the last abandoned stream is noticed.
    let t2 = Instant::now();
    let m = loop {
        let m = metrics_text(home.metrics()).await;
        let ended = counter(&m, "request_success_total") + counter(&m, "request_failed_total");
        if ended >= total as u64 || t2.elapsed() > Duration::from_secs(20) {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(counter(&m, "request_received_total"), total as u64, "{m}");
    assert_eq!(
        counter(&m, "request_success_total"),
        completed as u64,
        "{m}"
    );
    assert_eq!(counter(&m, "request_failed_total"), abandoned as u64, "{m}");
    assert_eq!(counter(&m, "request_refused_total"), 0, "{m}");
    assert!(
        counter(&m, "generation_tokens_total") >= completed as u64 * TOKENS,
        "{m}"
    );
    // The gauges refresh each second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = metrics_text(home.metrics()).await;
    let usage = common::scrape::sample(&m, "npu_cache_usage_perc").unwrap();
    assert_eq!(usage, 0.0, "{m}");
    assert_eq!(
        common::scrape::sample(&m, "num_requests_running"),
        Some(0.0),
        "{m}"
    );
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}
