//! The OpenAI routes of the real binary over real sockets: HF parity through the API (text,
//! logprobs, usage, finish reasons), streaming framing, stop strings, seeds, `n`, and field
//! validation. The serving-path tests on the mock engine are in `openai_serving.rs`.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json as post, send};
use common::daemon::Home;
use common::parity::{case_request, check_reply, fold_stream, refs};
use common::sse::SseStream;
use serde_json::{json, Value};

async fn parity(model: &str) {
    let mut home = Home::new();
    home.use_fixture_model(model);
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        model,
    );
    let _d = home.start(&[]);
    let r = refs(model);
    let cases = r["cases"].as_array().expect("cases");
    // One at a time, not streamed.
    for case in cases {
        let (path, body) = case_request(model, case, false);
        let reply = post(home.business(), path, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        check_reply(model, case, &reply.json());
    }
    // All at once, streamed: the same numbers from one batch.
    let streams = cases.iter().map(|case| {
        let (path, body) = case_request(model, case, true);
        let addr = home.business();
        async move {
            let s = SseStream::open(addr, path, &body).await;
            assert_eq!(s.status, 200);
            assert!(s.content_type.starts_with("text/event-stream"));
            s.collect().await
        }
    });
    let all = futures_util::future::join_all(streams).await;
    for (case, events) in cases.iter().zip(all) {
        let kind = case["kind"].as_str().expect("kind");
        check_reply(model, case, &fold_stream(kind, &events));
    }
}

#[tokio::test]
async fn tiny_llama_matches_hf_through_the_api() {
    parity("tiny-llama").await;
}

#[tokio::test]
async fn tiny_qwen2_matches_hf_through_the_api() {
    parity("tiny-qwen2").await;
}

/// Ids past the tokenizer (an untied head's extra rows) are chosen as HF chooses them: no
/// text, reported by id (`token_id:N` in completions, `bytes: null` in chat).
#[tokio::test]
async fn tiny_qwen2_untied_matches_hf_through_the_api() {
    parity("tiny-qwen2-untied").await;
}

#[tokio::test]
async fn stop_strings_seeds_and_n() {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        "tiny-llama",
    );
    let _d = home.start(&[]);
    let addr = home.business();
    let r = refs("tiny-llama");
    let hello = &r["cases"][0];
    let full = hello["generated_text_skip_special"].as_str().expect("text");
    assert!(full.starts_with("art been used"), "{full}");

    // Stop string: cut before it, or after it when asked; the finish reason is "stop".
    for (include, want) in [(false, "art been"), (true, "art been used")] {
        let body = json!({"model": "tiny-llama", "prompt": "Hello, my name is", "max_tokens": 32,
            "temperature": 0, "stop": [" used", "never-there"], "include_stop_str_in_output": include});
        let reply = post(addr, "/v1/completions", &body).await.json();
        assert_eq!(reply["choices"][0]["text"], want, "{reply}");
        assert_eq!(reply["choices"][0]["finish_reason"], "stop");
        assert_eq!(reply["usage"]["completion_tokens"], 3, "{reply}");
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        let events = SseStream::open(addr, "/v1/completions", &sb)
            .await
            .collect()
            .await;
        let folded = fold_stream("completion", &events);
        assert_eq!(folded["choices"][0]["text"], want, "{events:?}");
        assert_eq!(folded["choices"][0]["finish_reason"], "stop");
    }

    // Same seed, same output; n choices are indexed and independent.
    let sampled = json!({"model": "tiny-llama", "prompt": "The", "max_tokens": 16,
        "temperature": 1.0, "top_p": 0.95, "seed": 1234, "n": 3});
    let a = post(addr, "/v1/completions", &sampled).await.json();
    let b = post(addr, "/v1/completions", &sampled).await.json();
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .expect("choices")
            .iter()
            .map(|c| c["text"].as_str().expect("text").to_string())
            .collect()
    };
    assert_eq!(texts(&a), texts(&b), "same seed, same texts");
    assert_eq!(a["choices"].as_array().map(Vec::len), Some(3));
    for (i, c) in a["choices"].as_array().expect("choices").iter().enumerate() {
        assert_eq!(c["index"], i);
    }
    let t = texts(&a);
    assert!(t[0] != t[1] || t[1] != t[2], "n choices differ: {t:?}");
    assert_eq!(a["usage"]["completion_tokens"], 48, "{a}");
    let mut other = sampled.clone();
    other["seed"] = json!(99);
    assert_ne!(
        texts(&post(addr, "/v1/completions", &other).await.json()),
        t
    );

    // Streamed n > 1: every index gets its chunks and its finish.
    let mut sn = sampled.clone();
    sn["stream"] = json!(true);
    sn["stream_options"] = json!({"include_usage": true});
    let events = SseStream::open(addr, "/v1/completions", &sn)
        .await
        .collect()
        .await;
    let mut per_index = vec![String::new(); 3];
    let mut finished = 0;
    for e in &events[..events.len() - 1] {
        for c in e["choices"].as_array().expect("choices") {
            let i = c["index"].as_u64().expect("index") as usize;
            per_index[i].push_str(c["text"].as_str().unwrap_or(""));
            finished += usize::from(!c["finish_reason"].is_null());
        }
    }
    assert_eq!(finished, 3);
    assert_eq!(per_index, t, "streamed choices equal the folded ones");
    let last = &events[events.len() - 2];
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 48);

    // Token-id prompts and a list of prompts.
    let ids = hello["prompt_ids"].clone();
    let by_ids = post(
        addr,
        "/v1/completions",
        &json!({"model": "tiny-llama", "prompt": ids, "max_tokens": 3, "temperature": 0}),
    )
    .await
    .json();
    assert_eq!(by_ids["choices"][0]["text"], "art been used");
    let two = post(
        addr,
        "/v1/completions",
        &json!({"model": "tiny-llama", "prompt": ["Hello, my name is", "The"], "max_tokens": 2, "temperature": 0}),
    )
    .await
    .json();
    assert_eq!(two["choices"].as_array().map(Vec::len), Some(2), "{two}");
    assert_eq!(two["choices"][0]["text"], "art been");
    assert_eq!(two["choices"][1]["index"], 1);
    assert_eq!(
        two["usage"]["prompt_tokens"].as_u64(),
        Some(9 + r["cases"][1]["prompt_tokens"].as_u64().expect("n"))
    );
}

#[tokio::test]
async fn bad_requests_name_the_field_and_the_daemon_keeps_serving() {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        "tiny-llama",
    )
    .set("/BackendConfig/ModelDeployConfig/maxInputTokenLen", 32);
    let _d = home.start(&[]);
    let addr = home.business();
    let chat = |extra: Value| {
        let mut b = json!({"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]});
        if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        b
    };
    let cases = [
        (chat(json!({"temperature": -1})), 422, "temperature"),
        (chat(json!({"top_p": 1.5})), 422, "top_p"),
        (chat(json!({"top_k": -5})), 422, "top_k"),
        (chat(json!({"max_tokens": 0})), 422, "max_tokens"),
        (chat(json!({"max_tokens": "ten"})), 422, "max_tokens"),
        (chat(json!({"n": 0})), 422, "n"),
        (
            chat(json!({"presence_penalty": 3})),
            422,
            "presence_penalty",
        ),
        (
            chat(json!({"top_logprobs": 21, "logprobs": true})),
            422,
            "top_logprobs",
        ),
        (chat(json!({"stream": "yes"})), 422, "stream"),
        (chat(json!({"messages": []})), 422, "messages"),
        (
            chat(json!({"messages": [{"role": "robot", "content": "x"}]})),
            422,
            "messages[0].role",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": ""}]})),
            422,
            "messages[0].content",
        ),
        (
            chat(json!({"messages": [{"role": "tool", "content": "x"}]})),
            422,
            "messages[0].tool_call_id",
        ),
        (chat(json!({"model": "gpt-4"})), 404, "model"),
        (
            chat(json!({"response_format": {"type": "json_schema", "json_schema": {}}})),
            422,
            "response_format.type",
        ),
        (
            chat(json!({"messages": [{"role": "user", "content": "word ".repeat(200)}]})),
            422,
            "messages",
        ),
    ];
    for (body, status, field) in cases {
        let r = post(addr, "/v1/chat/completions", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["param"], field, "{body}: {e}");
        assert!(e["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let long = post(
        addr,
        "/v1/chat/completions",
        &chat(json!({"messages": [{"role": "user", "content": "word ".repeat(200)}]})),
    )
    .await;
    assert!(long.text().contains("maxInputTokenLen"), "{}", long.text());
    for (body, field) in [
        (
            json!({"model": "tiny-llama", "prompt": [1, 2, 999999]}),
            "prompt[2]",
        ),
        (json!({"model": "tiny-llama", "prompt": []}), "prompt"),
        (json!({"model": "tiny-llama"}), "prompt"),
        (
            json!({"model": "tiny-llama", "prompt": "x", "logprobs": 30}),
            "logprobs",
        ),
        (
            json!({"model": "tiny-llama", "prompt": "x", "stop": ["a", 3]}),
            "stop[1]",
        ),
    ] {
        let r = post(addr, "/v1/completions", &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], field, "{body}");
    }
    for raw in ["{not json", "[1,2]", ""] {
        let r = send(addr, None, "POST", "/v1/chat/completions", Some(raw))
            .await
            .expect("send");
        assert_eq!(r.status, 422, "{raw:?}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "body");
    }
    // Still serving, and truncation instead of refusal when configured elsewhere.
    let ok = post(
        addr,
        "/v1/chat/completions",
        &chat(json!({"max_tokens": 2})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["usage"]["completion_tokens"], 2);
    assert_eq!(get(home.mgmt(), "/health").await.status, 200);
}
