//! JSON mode (`response_format: {"type": "json_object"}`) on the real tiny models: their random
//! weights never write JSON by themselves, so every output that parses, or is an unfinished
//! prefix of an object at the length limit, comes from the constrained sampling. serde_json
//! is the judge.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{post_json, Reply};
use common::daemon::Home;
use common::sse::SseStream;
use serde_json::{json, Value};
use std::net::SocketAddr;

async fn post(addr: SocketAddr, body: &Value) -> Reply {
    post_json(addr, "/v1/chat/completions", body).await
}

/// serde_json's verdict: Some(true) a whole object, Some(false) an unfinished prefix of one.
fn verdict(text: &str) -> Option<bool> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => Some(v.is_object()),
        Err(e) if e.is_eof() => Some(false),
        Err(_) => None,
    }
}

fn body(content: &str, extra: Value) -> Value {
    let mut b = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 400,
        "response_format": {"type": "json_object"},
    });
    for (k, v) in extra.as_object().expect("object") {
        b[k] = v.clone();
    }
    b
}

#[tokio::test]
async fn json_object_outputs_are_json() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let mut home = Home::new();
        home.use_fixture_model(model);
        home.set(
            "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
            "tiny",
        );
        let _d = home.start(&[]);
        let addr = home.business();

        // Unconstrained, the model writes no JSON.
        let plain = post(
            addr,
            &body(
                "Give me a person.",
                json!({"response_format": {"type": "text"}}),
            ),
        )
        .await;
        assert_eq!(plain.status, 200, "{}", plain.text());
        let text = plain.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(verdict(&text), None, "{model}: {text:?}");

        let mut complete = 0;
        let prompts = [
            "Give me a person.",
            "List three colours.",
            "Describe a cat as JSON.",
            "{}",
        ];
        for (i, p) in prompts.iter().enumerate() {
            // Greedy and sampled (seeded) requests.
            for extra in [json!({}), json!({"temperature": 1.0, "seed": i})] {
                let r = post(addr, &body(p, extra.clone())).await;
                assert_eq!(r.status, 200, "{}", r.text());
                let v = r.json();
                let choice = &v["choices"][0];
                let text = choice["message"]["content"].as_str().unwrap();
                let finish = choice["finish_reason"].as_str().unwrap();
                match (verdict(text), finish) {
                    (Some(true), "stop") => complete += 1,
                    (Some(false), "length") => {}
                    other => panic!("{model} {p:?} {extra}: {other:?} for {text:?}"),
                }
            }
        }
        assert!(complete > 0, "{model}: no output closed its object");

        // Streaming: the deltas add up to the same kind of text.
        let events = SseStream::open(
            addr,
            "/v1/chat/completions",
            &body("Give me a person.", json!({"stream": true})),
        )
        .await
        .collect()
        .await;
        let text: String = events
            .iter()
            .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(verdict(&text).is_some(), "{model}: {text:?}");

        for (rf, needle) in [
            (
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
                "json_schema",
            ),
            (json!({"type": "xml"}), "not allowed"),
        ] {
            let r = post(addr, &body("hi", json!({"response_format": rf}))).await;
            assert_eq!(r.status, 422, "{}", r.text());
            assert!(
                r.text().contains("response_format.type") && r.text().contains(needle),
                "{}",
                r.text()
            );
        }
    }
}
