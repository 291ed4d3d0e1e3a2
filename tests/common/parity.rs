//! HF parity through the OpenAI API: the request a reference case of
//! `tests/fixtures/refs/*.json` stands for, and the checks of a reply (or a folded stream)
//! against it: text, finish reason, usage, chosen and top-5 logprobs within 1e-4.
#![allow(dead_code)]

use std::net::SocketAddr;

use serde_json::{json, Value};

use super::client::post_json;
use super::sse::SseStream;

pub const TOL: f64 = 1e-4;

pub fn refs(model: &str) -> Value {
    let p = format!(
        "{}/tests/fixtures/refs/{model}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&p).expect("refs")).expect("refs json")
}

/// The request a reference case stands for.
pub fn case_request(model: &str, case: &Value, stream: bool) -> (&'static str, Value) {
    let n = case["generated_ids"].as_array().map_or(0, Vec::len);
    // Ask for exactly as many tokens as HF made (an EOS end stops earlier by itself).
    let max_tokens = if case["finish_reason"] == "length" {
        n
    } else {
        n + 8
    };
    if case["kind"] == "chat" {
        (
            "/v1/chat/completions",
            json!({"model": model, "messages": case["messages"], "max_tokens": max_tokens,
                   "temperature": 0, "logprobs": true, "top_logprobs": 5, "stream": stream}),
        )
    } else {
        (
            "/v1/completions",
            json!({"model": model, "prompt": case["prompt"], "max_tokens": max_tokens,
                   "temperature": 0, "logprobs": 5, "stream": stream}),
        )
    }
}

/// (chosen logprob, sorted top logprobs) per token, from either wire shape.
pub fn token_logprobs(kind: &str, lp: &Value) -> Vec<(f64, Vec<f64>)> {
    let mut out = Vec::new();
    if kind == "chat" {
        for e in lp["content"].as_array().expect("content") {
            let mut top: Vec<f64> = e["top_logprobs"]
                .as_array()
                .expect("top")
                .iter()
                .map(|t| t["logprob"].as_f64().expect("lp"))
                .collect();
            top.sort_by(|a, b| b.total_cmp(a));
            out.push((e["logprob"].as_f64().expect("logprob"), top));
        }
    } else {
        let chosen = lp["token_logprobs"].as_array().expect("token_logprobs");
        let tops = lp["top_logprobs"].as_array().expect("top_logprobs");
        for (c, t) in chosen.iter().zip(tops) {
            let mut top: Vec<f64> = t
                .as_object()
                .expect("top map")
                .values()
                .map(|v| v.as_f64().expect("lp"))
                .collect();
            top.sort_by(|a, b| b.total_cmp(a));
            out.push((c.as_f64().expect("lp"), top));
        }
    }
    out
}

pub fn check_logprobs(name: &str, case: &Value, got: &[(f64, Vec<f64>)]) {
    let steps = case["steps"].as_array().expect("steps");
    assert_eq!(got.len(), steps.len(), "{name}: token count");
    for (i, (step, (chosen, top))) in steps.iter().zip(got).enumerate() {
        let want = step["logprob"].as_f64().expect("ref logprob");
        assert!(
            (chosen - want).abs() <= TOL,
            "{name} step {i}: logprob {chosen} vs {want}"
        );
        let want_top: Vec<f64> = step["top"]
            .as_array()
            .expect("ref top")
            .iter()
            .map(|t| t["logprob"].as_f64().expect("lp"))
            .collect();
        if top.len() == want_top.len() {
            for (g, w) in top.iter().zip(&want_top) {
                assert!(
                    (g - w).abs() <= TOL,
                    "{name} step {i}: top {top:?} vs {want_top:?}"
                );
            }
        } else {
            // Tokens with the same text (e.g. partial UTF-8, shown as U+FFFD) collapse into one
            // key of the completions map: each value left must still be one of the references.
            assert!(top.len() < want_top.len(), "{name} step {i}");
            for g in top {
                assert!(
                    want_top.iter().any(|w| (g - w).abs() <= TOL),
                    "{name} step {i}: top {top:?} vs {want_top:?}"
                );
            }
        }
    }
}

pub fn check_reply(model: &str, case: &Value, reply: &Value) {
    let name = format!("{model}/{}", case["name"].as_str().unwrap_or("?"));
    let kind = case["kind"].as_str().expect("kind");
    let choice = &reply["choices"][0];
    let text = if kind == "chat" {
        &choice["message"]["content"]
    } else {
        &choice["text"]
    };
    assert_eq!(text, &case["generated_text_skip_special"], "{name}: text");
    assert_eq!(choice["finish_reason"], case["finish_reason"], "{name}");
    assert_eq!(
        reply["usage"]["prompt_tokens"], case["prompt_tokens"],
        "{name}"
    );
    let generated = case["generated_ids"].as_array().map_or(0, Vec::len);
    assert_eq!(reply["usage"]["completion_tokens"], generated, "{name}");
    check_logprobs(&name, case, &token_logprobs(kind, &choice["logprobs"]));
}

/// Folds a stream's chunks into the non-streaming reply shape (text, logprobs, finish, usage).
pub fn fold_stream(kind: &str, events: &[Value]) -> Value {
    assert_eq!(
        events.last(),
        Some(&json!("[DONE]")),
        "stream ends with [DONE]"
    );
    let mut text = String::new();
    let mut finish = Value::Null;
    let mut usage = Value::Null;
    let mut chat_lp = Vec::new();
    let (mut chosen, mut tops) = (Vec::new(), Vec::new());
    for e in &events[..events.len() - 1] {
        assert!(e.get("error").is_none(), "error event: {e}");
        if let Some(u) = e.get("usage") {
            usage = u.clone();
        }
        for c in e["choices"].as_array().expect("choices") {
            let piece = if kind == "chat" {
                c["delta"]["content"].as_str()
            } else {
                c["text"].as_str()
            };
            text.push_str(piece.unwrap_or(""));
            if !c["finish_reason"].is_null() {
                finish = c["finish_reason"].clone();
            }
            let lp = &c["logprobs"];
            if kind == "chat" {
                if let Some(items) = lp["content"].as_array() {
                    chat_lp.extend(items.iter().cloned());
                }
            } else if let Some(items) = lp["token_logprobs"].as_array() {
                chosen.extend(items.iter().cloned());
                tops.extend(lp["top_logprobs"].as_array().expect("tops").iter().cloned());
            }
        }
    }
    let logprobs = if kind == "chat" {
        json!({ "content": chat_lp })
    } else {
        json!({ "token_logprobs": chosen, "top_logprobs": tops })
    };
    let mut choice = json!({ "finish_reason": finish, "logprobs": logprobs });
    if kind == "chat" {
        choice["message"] = json!({ "content": text });
    } else {
        choice["text"] = json!(text);
    }
    json!({ "choices": [choice], "usage": usage })
}

/// Every reference case one at a time, then all at once streamed (one batch).
pub async fn api_parity(model: &str, addr: SocketAddr) {
    let r = refs(model);
    let cases = r["cases"].as_array().unwrap();
    for case in cases {
        let (path, body) = case_request(model, case, false);
        let reply = post_json(addr, path, &body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        check_reply(model, case, &reply.json());
    }
    let streams = cases.iter().map(|case| {
        let (path, body) = case_request(model, case, true);
        async move {
            let s = SseStream::open(addr, path, &body).await;
            assert_eq!(s.status, 200);
            s.collect().await
        }
    });
    let all = futures_util::future::join_all(streams).await;
    for (case, events) in cases.iter().zip(all) {
        check_reply(
            model,
            case,
            &fold_stream(case["kind"].as_str().unwrap(), &events),
        );
    }
}
