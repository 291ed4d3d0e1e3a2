//! The serving path on the StandardMock engine (deterministic tokens, paced steps): SSE
//! framing, usage placement, client disconnect freeing KV blocks, many concurrent streams,
//! timeouts ending a stream with a well-formed error event, and metrics fed by real requests.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json as post};
use common::daemon::Home;
use common::sse::SseStream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// (free, total, running, waiting) from `/v1/status`.
async fn blocks(home: &Home) -> (u64, u64, u64, u64) {
    let st = get(home.mgmt(), "/v1/status").await.json();
    let r = &st["resource"];
    let n = |k: &str| r[k].as_u64().unwrap_or_else(|| panic!("{k} in {st}"));
    (
        n("freeNpuBlockNums"),
        n("totalNpuBlockNums"),
        n("runningRequestNum"),
        n("waitingRequestNum"),
    )
}

/// Polls until every block is free and nothing runs; panics after `limit`.
async fn wait_all_free(home: &Home, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let (free, total, running, waiting) = blocks(home).await;
        if free == total && running == 0 && waiting == 0 {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "blocks not freed: {free}/{total} free, {running} running, {waiting} waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn chat_stream_framing_and_usage_placement() {
    let home = Home::new();
    let _d = home.start(&[]);
    let addr = home.business();
    let body = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 7, "stream": true});
    // Without stream_options: usage rides on the last chunk (MindIE).
    let events = SseStream::open(addr, "/v1/chat/completions", &body)
        .await
        .collect()
        .await;
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let first = &events[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let id = first["id"].as_str().expect("id");
    assert!(id.starts_with("chatcmpl-"));
    let last = &events[events.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "length");
    assert_eq!(last["usage"]["completion_tokens"], 7);
    assert!(events[..events.len() - 2]
        .iter()
        .all(|e| e.get("usage").is_none() && e["id"] == id));
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    // The mock is deterministic: the folded reply has the same text.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let reply = post(addr, "/v1/chat/completions", &plain).await.json();
    assert_eq!(reply["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(reply["object"], "chat.completion");

    // include_usage: a final chunk with empty choices; false: no usage at all.
    let mut with = body.clone();
    with["stream_options"] = json!({"include_usage": true});
    let events = SseStream::open(addr, "/v1/chat/completions", &with)
        .await
        .collect()
        .await;
    let usage_chunk = &events[events.len() - 2];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().is_some());
    with["stream_options"] = json!({"include_usage": false});
    let events = SseStream::open(addr, "/v1/chat/completions", &with)
        .await
        .collect()
        .await;
    assert!(events.iter().all(|e| e.get("usage").is_none()));
}

#[tokio::test]
async fn disconnect_cancels_and_frees_blocks() {
    let mut home = Home::new();
    home.set("/BackendConfig/ScheduleConfig/maxIterTimes", 4096)
        .set("/BackendConfig/ModelDeployConfig/maxSeqLen", 8192)
        .set("/BackendConfig/ModelDeployConfig/maxInputTokenLen", 4096)
        .set("/BackendConfig/ScheduleConfig/maxPrefillTokens", 8192);
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "20")]);
    let addr = home.business();
    let (free0, total, _, _) = blocks(&home).await;
    assert_eq!(free0, total);
    let body = json!({"model": "mock-model", "prompt": "a long story ".repeat(100),
                      "max_tokens": 4000, "stream": true});
    let mut s = SseStream::open(addr, "/v1/completions", &body).await;
    assert_eq!(s.status, 200);
    for _ in 0..3 {
        s.next_data().await.expect("an event");
    }
    let (free, _, running, _) = blocks(&home).await;
    assert!(
        free < total && running == 1,
        "{free}/{total}, {running} running"
    );
    drop(s);
    // Within a few steps (20 ms each), not after the 4000 tokens (80 s).
    wait_all_free(&home, Duration::from_secs(5)).await;

    // A non-streaming client that hangs up is noticed too.
    {
        use std::io::Write;
        let mut raw = std::net::TcpStream::connect(addr).expect("connect");
        let mut plain = body.clone();
        plain["stream"] = json!(false);
        let b = plain.to_string();
        write!(
            raw,
            "POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )
        .expect("write");
        let t0 = Instant::now();
        while blocks(&home).await.2 == 0 {
            assert!(t0.elapsed() < Duration::from_secs(5), "never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_all_free(&home, Duration::from_secs(5)).await;
    let metrics = get(home.metrics(), "/metrics").await.text();
    assert!(
        metrics.contains("request_failed_total{model_name=\"mock-model\"} 2"),
        "a cut request is not a success:\n{metrics}"
    );
}

#[tokio::test]
async fn thirty_two_concurrent_streams_complete() {
    let home = Home::new();
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "2")]);
    let addr = home.business();
    let streams = (0..32).map(|i| async move {
        let body = json!({"model": "mock-model", "prompt": format!("request number {i} says hello"),
                          "max_tokens": 40 + i, "stream": true,
                          "stream_options": {"include_usage": true}});
        let events = SseStream::open(addr, "/v1/completions", &body)
            .await
            .collect()
            .await;
        (i, events)
    });
    let all = futures_util::future::join_all(streams).await;
    for (i, events) in all {
        assert_eq!(events.last(), Some(&json!("[DONE]")), "stream {i}");
        let usage = &events[events.len() - 2]["usage"];
        assert_eq!(usage["completion_tokens"], 40 + i, "stream {i}: {usage}");
        let finishes: Vec<&Value> = events
            .iter()
            .filter_map(|e| e["choices"][0].get("finish_reason"))
            .filter(|f| !f.is_null())
            .collect();
        assert_eq!(finishes, vec![&json!("length")], "stream {i}");
    }
    wait_all_free(&home, Duration::from_secs(5)).await;
    // Counters and histograms saw every request.
    let m = get(home.metrics(), "/metrics").await.text();
    let line = |name: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{m}"))
    };
    assert_eq!(line("request_success_total{"), 32.0);
    assert_eq!(line("request_received_total{"), 32.0);
    let generated: u64 = (0..32).map(|i| 40 + i).sum();
    assert_eq!(line("generation_tokens_total{"), generated as f64);
    assert_eq!(line("time_to_first_token_seconds_count{"), 32.0);
    assert_eq!(line("e2e_request_latency_seconds_count{"), 32.0);
    assert_eq!(line("request_generation_tokens_sum{"), generated as f64);
}

#[tokio::test]
async fn e2e_timeout_ends_requests_with_an_error() {
    let mut home = Home::new();
    home.set("/ServerConfig/e2eTimeout", 1);
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "100")]);
    let addr = home.business();
    let body = json!({"model": "mock-model", "prompt": "x", "max_tokens": 100});
    let r = post(addr, "/v1/completions", &body).await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("e2eTimeout"), "{}", r.text());
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let events = SseStream::open(addr, "/v1/completions", &sb)
        .await
        .collect()
        .await;
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let err = &events[events.len() - 2];
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("e2eTimeout")),
        "{err}"
    );
    wait_all_free(&home, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn full_text_enabled_and_cancel_by_request_uuid() {
    let mut home = Home::new();
    home.set("/ServerConfig/fullTextEnabled", true)
        .set("/BackendConfig/ScheduleConfig/maxIterTimes", 2000);
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "10")]);
    let addr = home.business();
    let body = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 5, "stream": true});
    let events = SseStream::open(addr, "/v1/chat/completions", &body)
        .await
        .collect()
        .await;
    let text: String = events[..events.len() - 1]
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let last = &events[events.len() - 2];
    assert_eq!(last["full_text"], text.as_str(), "{last}");

    // An OpenAI request is known to stopInfer by its RequestUUID (all its choices).
    let body = json!({"model": "mock-model", "prompt": "go on", "max_tokens": 1500, "n": 2,
                      "stream": true});
    let mut s = SseStream::open(addr, "/v1/completions", &body).await;
    let uuid = s.request_uuid.clone();
    s.next_data().await.expect("first event");
    let r = post(
        addr,
        "/v2/models/mock-model/stopInfer",
        &json!({ "id": uuid }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = Instant::now();
    while s.next_data().await.is_some() {
        assert!(t0.elapsed() < Duration::from_secs(5), "still streaming");
    }
    wait_all_free(&home, Duration::from_secs(5)).await;
}
