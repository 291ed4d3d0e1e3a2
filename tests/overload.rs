//! Overload past `maxLinkNum` on the real binary (StandardMock engine paced to 25 ms a step, so
//! an admitted request runs for seconds): of 4 × maxLinkNum requests sent at once over several
//! flavours, exactly the extras get 503 with `Retry-After` and their flavour's error shape, each
//! answered at once while the admitted ones still run; none hangs; every admitted one completes
//! with the full output; once the load is gone a full batch is admitted again; and the metrics
//! plane counts what the clients saw (refusals apart from received requests).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{send, Reply};
use common::daemon::Home;
use common::scrape::{counter, metrics_text, resource};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MAX_LINKS: usize = 4;
const TOKENS: u64 = 60;
const STEP_MS: &str = "25";

/// One request shape: route, body, and whether its reply is an SSE stream.
#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAiCompletion,
    OpenAiChatStream,
    TgiStream,
    NativeInfer,
}

const KINDS: [Kind; 4] = [
    Kind::OpenAiCompletion,
    Kind::OpenAiChatStream,
    Kind::TgiStream,
    Kind::NativeInfer,
];

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::OpenAiCompletion => "/v1/completions",
            Kind::OpenAiChatStream => "/v1/chat/completions",
            Kind::TgiStream => "/generate_stream",
            Kind::NativeInfer => "/infer",
        }
    }

    fn body(self) -> Value {
        match self {
            Kind::OpenAiCompletion => {
                json!({"model": "mock-model", "prompt": "overload", "max_tokens": TOKENS})
            }
            Kind::OpenAiChatStream => json!({"model": "mock-model", "stream": true,
                "stream_options": {"include_usage": true}, "max_tokens": TOKENS,
                "messages": [{"role": "user", "content": "overload"}]}),
            Kind::TgiStream => json!({"inputs": "overload", "stream": true,
                "parameters": {"max_new_tokens": TOKENS}}),
            Kind::NativeInfer => {
                json!({"inputs": "overload", "parameters": {"max_new_tokens": TOKENS}})
            }
        }
    }

    /// Checks a 200 reply carries the whole output.
    fn check_complete(self, r: &Reply) {
        let text = r.text();
        match self {
            Kind::OpenAiCompletion => {
                let v = r.json();
                assert_eq!(v["usage"]["completion_tokens"], TOKENS, "{v}");
                assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
            }
            Kind::OpenAiChatStream => {
                let events = sse_events(&text);
                assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
                let usage = events
                    .iter()
                    .filter_map(|e| serde_json::from_str::<Value>(e).ok())
                    .find(|v| v["usage"].is_object())
                    .unwrap_or_else(|| panic!("no usage: {text}"));
                assert_eq!(usage["usage"]["completion_tokens"], TOKENS, "{usage}");
            }
            Kind::TgiStream => {
                let events = sse_events(&text);
                assert_eq!(events.len() as u64, TOKENS, "{text}");
                let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
                assert_eq!(last["details"]["finish_reason"], "length", "{last}");
            }
            Kind::NativeInfer => {
                let v = r.json();
                let ids = v["details"]["generated_token_ids"].as_array().unwrap();
                assert_eq!(ids.len() as u64, TOKENS, "{v}");
            }
        }
    }

    /// Checks a 503 reply: `Retry-After`, and the flavour's error shape naming the limit.
    fn check_refused(self, r: &Reply) {
        let retry = r
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry.is_some_and(|s| s >= 1),
            "Retry-After: {:?}",
            r.headers
        );
        let v = r.json();
        let message = match self {
            Kind::OpenAiCompletion | Kind::OpenAiChatStream => &v["error"]["message"],
            Kind::TgiStream | Kind::NativeInfer => {
                assert!(v["error_type"].is_string(), "{v}");
                &v["error"]
            }
        };
        assert!(
            message.as_str().is_some_and(|m| m.contains("maxLinkNum")),
            "{v}"
        );
    }
}

/// The `data:` payloads of an SSE body.
fn sse_events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A reply with when it was sent and answered, relative to `t0`.
struct Timed {
    kind: Kind,
    reply: Reply,
    answered: Duration,
}

/// Sends `n` requests at once, cycling through [`KINDS`]; each must end within 60 s.
async fn burst(addr: SocketAddr, n: usize) -> Vec<Timed> {
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            tokio::spawn(async move {
                let body = kind.body().to_string();
                let reply = tokio::time::timeout(
                    Duration::from_secs(60),
                    send(addr, None, "POST", kind.path(), Some(&body)),
                )
                .await
                .unwrap_or_else(|_| panic!("{kind:?} hung for 60 s"))
                .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
                Timed {
                    kind,
                    reply,
                    answered: t0.elapsed(),
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Waits until the engine is idle with every KV block free; returns `/v1/status`'s resource.
async fn wait_idle(mgmt: SocketAddr) -> Value {
    let t0 = Instant::now();
    loop {
        let r = resource(mgmt).await;
        let idle = r["runningRequestNum"] == 0
            && r["waitingRequestNum"] == 0
            && r["freeNpuBlockNums"] == r["totalNpuBlockNums"];
        if idle {
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "never idle: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn past_max_link_num_the_extras_get_503_at_once() {
    let mut home = Home::new();
    home.set("/ServerConfig/maxLinkNum", MAX_LINKS as u64);
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", STEP_MS)]);
    let addr = home.business();

    let replies = burst(addr, 4 * MAX_LINKS).await;
    let (ok, refused): (Vec<&Timed>, Vec<&Timed>) =
        replies.iter().partition(|t| t.reply.status == 200);
    let statuses: Vec<u16> = replies.iter().map(|t| t.reply.status).collect();
    assert_eq!(ok.len(), MAX_LINKS, "{statuses:?}");
    assert_eq!(refused.len(), 3 * MAX_LINKS, "{statuses:?}");
    for t in &refused {
        assert_eq!(t.reply.status, 503, "{}", t.reply.text());
        t.kind.check_refused(&t.reply);
        assert!(
            t.answered < Duration::from_secs(1),
            "a refusal took {:?}",
            t.answered
        );
    }
    for t in &ok {
        t.kind.check_complete(&t.reply);
    }
    // Every refusal came while all admitted requests were still running.
    let last_refusal = refused.iter().map(|t| t.answered).max().unwrap();
    let first_done = ok.iter().map(|t| t.answered).min().unwrap();
    assert!(
        last_refusal < first_done,
        "refusals until {last_refusal:?}, but an admitted request ended at {first_done:?}"
    );
    // 60 steps of 25 ms: an admitted request cannot have been refused work in disguise.
    assert!(first_done >= Duration::from_millis(1400), "{first_done:?}");

    // Load gone: a full batch is admitted.
    let r = wait_idle(home.mgmt()).await;
    assert_eq!(r["freeNpuBlockNums"], r["totalNpuBlockNums"], "{r}");
    let again = burst(addr, MAX_LINKS).await;
    for t in &again {
        assert_eq!(t.reply.status, 200, "{:?}: {}", t.kind, t.reply.text());
        t.kind.check_complete(&t.reply);
    }
    wait_idle(home.mgmt()).await;

    // The metrics plane saw what the clients saw.
    let admitted = (2 * MAX_LINKS) as u64;
    let m = metrics_text(home.metrics()).await;
    assert_eq!(counter(&m, "request_received_total"), admitted, "{m}");
    assert_eq!(counter(&m, "request_success_total"), admitted, "{m}");
    assert_eq!(counter(&m, "request_failed_total"), 0, "{m}");
    assert_eq!(
        counter(&m, "request_refused_total"),
        (3 * MAX_LINKS) as u64,
        "{m}"
    );
    assert_eq!(
        counter(&m, "generation_tokens_total"),
        admitted * TOKENS,
        "{m}"
    );
}
