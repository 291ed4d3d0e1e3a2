//! The non-OpenAI business routes of the real binary, as their clients send them: TGI, vLLM
//! legacy, MindIE-native, Triton and `/v1/tokenizer`. Outputs are checked against the HF
//! reference of tiny-llama (greedy), shapes field by field against SPEC §1; `stopInfer` on
//! the paced mock engine.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json as post, send, Reply};
use common::daemon::Home;
use common::sse::SseStream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The reference case "hello" of tiny-llama: prompt, ids, first generated ids and texts.
struct Hello {
    prompt: String,
    prompt_ids: Vec<u64>,
    ids: Vec<u64>,
    text3: String,
}

fn hello() -> Hello {
    let p = format!(
        "{}/tests/fixtures/refs/tiny-llama.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let refs: Value = serde_json::from_slice(&std::fs::read(p).expect("refs")).expect("json");
    let c = &refs["cases"][0];
    let ids: Vec<u64> = c["generated_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let text3: String = c["steps"].as_array().expect("steps")[..3]
        .iter()
        .map(|s| s["text"].as_str().expect("text"))
        .collect();
    Hello {
        prompt: c["prompt"].as_str().expect("prompt").into(),
        prompt_ids: c["prompt_ids"]
            .as_array()
            .expect("prompt ids")
            .iter()
            .filter_map(Value::as_u64)
            .collect(),
        ids,
        text3,
    }
}

fn real_model() -> Home {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        "tiny-llama",
    );
    home
}

fn assert_mindie_error(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let e = r.json();
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains(needle)),
        "{e}"
    );
    assert!(e["error_type"].is_string(), "{e}");
}

#[tokio::test]
async fn tgi_and_vllm_routes() {
    let home = real_model();
    let _d = home.start(&[]);
    let addr = home.business();
    let h = hello();

    // TGI /generate with details: ids and text as HF; prefill lists the prompt.
    let r = post(
        addr,
        "/generate",
        &json!({"inputs": h.prompt, "parameters": {"max_new_tokens": 3, "details": true,
                "decoder_input_details": true}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains_key("RequestUUID"));
    let v = r.json();
    assert_eq!(v["generated_text"], h.text3.as_str());
    let d = &v["details"];
    assert_eq!(d["finish_reason"], "length");
    assert_eq!(d["generated_tokens"], 3);
    assert!(d["seed"].is_null(), "greedy has no seed: {d}");
    let ids: Vec<u64> = d["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, h.ids[..3]);
    assert_eq!(
        d["prefill"].as_array().map(Vec::len),
        Some(h.prompt_ids.len())
    );
    // Without details: no details; return_full_text prepends the input.
    let v = post(
        addr,
        "/generate",
        &json!({"inputs": h.prompt, "parameters": {"max_new_tokens": 3, "return_full_text": true}}),
    )
    .await
    .json();
    assert_eq!(
        v["generated_text"],
        format!("{}{}", h.prompt, h.text3).as_str()
    );
    assert!(v.get("details").is_none());
    // POST / answers an array; with stream it is the SSE of /generate_stream.
    let v = post(
        addr,
        "/",
        &json!({"inputs": h.prompt, "parameters": {"max_new_tokens": 3}}),
    )
    .await
    .json();
    assert_eq!(v[0]["generated_text"], h.text3.as_str());
    for path in ["/generate_stream", "/"] {
        let body = json!({"inputs": h.prompt, "stream": true, "parameters": {"max_new_tokens": 3}});
        let events = SseStream::open(addr, path, &body).await.collect().await;
        assert_eq!(events.len(), 3, "{path}: {events:?}");
        let ids: Vec<u64> = events
            .iter()
            .map(|e| e["token"]["id"].as_u64().expect("id"))
            .collect();
        assert_eq!(ids, h.ids[..3]);
        assert!(events[0]["generated_text"].is_null());
        assert_eq!(events[2]["generated_text"], h.text3.as_str());
        assert_eq!(events[2]["details"]["finish_reason"], "length");
    }
    // A stop sequence ends with "stop_sequence".
    let v = post(
        addr,
        "/generate",
        &json!({"inputs": h.prompt, "parameters": {"max_new_tokens": 10, "stop": [" used"], "details": true}}),
    )
    .await
    .json();
    assert_eq!(v["details"]["finish_reason"], "stop_sequence", "{v}");
    assert_eq!(v["generated_text"], "art been");

    // vLLM legacy: prompt + " " + output; the stream is NUL-terminated JSON objects.
    let v = post(
        addr,
        "/generate",
        &json!({"prompt": h.prompt, "max_tokens": 3, "temperature": 0}),
    )
    .await
    .json();
    assert_eq!(v["text"], json!([format!("{} {}", h.prompt, h.text3)]));
    let r = post(
        addr,
        "/generate",
        &json!({"prompt": h.prompt, "max_tokens": 3, "temperature": 0, "stream": true}),
    )
    .await;
    let body = r.text();
    assert!(body.ends_with('\0'), "{body:?}");
    let deltas: String = body
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let v: Value = serde_json::from_str(s).expect("json frame");
            v["text"][0].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(deltas, h.text3);

    // Bad input: MindIE's error shape naming the field; neither inputs nor prompt is 422.
    let r = post(
        addr,
        "/generate",
        &json!({"inputs": "x", "parameters": {"temperature": 0}}),
    )
    .await;
    assert_mindie_error(&r, 422, "parameters.temperature");
    assert_eq!(r.json()["error_type"], "Input Validation Error");
    assert_mindie_error(
        &post(addr, "/generate", &json!({"x": 1})).await,
        422,
        "inputs",
    );
    assert_mindie_error(
        &send(addr, None, "POST", "/generate_stream", Some("{bad"))
            .await
            .expect("send"),
        422,
        "invalid JSON",
    );
}

#[tokio::test]
async fn native_triton_and_tokenizer_routes() {
    let home = real_model();
    let _d = home.start(&[]);
    let addr = home.business();
    let h = hello();

    // /v1/tokenizer: the prompt ids of the reference.
    let v = post(addr, "/v1/tokenizer", &json!({"inputs": h.prompt}))
        .await
        .json();
    assert_eq!(v["token_number"], h.prompt_ids.len());
    assert_eq!(v["tokens"], json!(h.prompt_ids));
    let v = post(
        addr,
        "/v1/tokenizer",
        &json!({"inputs": h.prompt, "do_decode": true}),
    )
    .await
    .json();
    assert_eq!(v["tokens"][3], "lo");

    // Native /infer and /infer_token.
    let params = json!({"max_new_tokens": 3, "priority": 1, "timeout": 60});
    let v = post(
        addr,
        "/infer",
        &json!({"inputs": h.prompt, "parameters": params}),
    )
    .await
    .json();
    assert_eq!(v["generated_text"], h.text3.as_str());
    assert_eq!(v["details"]["generated_token_ids"], json!(h.ids[..3]));
    assert_eq!(v["details"]["finish_reason"], "length");
    let v = post(
        addr,
        "/infer",
        &json!({"inputs": [{"type": "text", "text": h.prompt}], "parameters": params}),
    )
    .await
    .json();
    assert_eq!(v["generated_text"], h.text3.as_str());
    let events = SseStream::open(
        addr,
        "/infer_token",
        &json!({"input_id": h.prompt_ids, "stream": true, "parameters": params}),
    )
    .await
    .collect()
    .await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[0]["prefill_time"].as_f64().is_some() && events[0]["decode_time"].is_null());
    assert!(events[1]["decode_time"].as_f64().is_some() && events[1]["prefill_time"].is_null());
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e["token"]["id"][0].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, h.ids[..3]);
    assert_eq!(events[2]["generated_text"], h.text3.as_str());
    assert_mindie_error(
        &post(
            addr,
            "/infer",
            &json!({"inputs": "x", "parameters": {"priority": 9}}),
        )
        .await,
        422,
        "parameters.priority",
    );
    assert_mindie_error(
        &post(addr, "/infer_token", &json!({"input_id": [1, 999999]})).await,
        422,
        "input_id[1]",
    );

    // Triton metadata, text and token inference.
    let v = get(addr, "/v2").await.json();
    assert_eq!(v["name"], "MindIE Server");
    assert_eq!(v["extensions"]["max_iter_times"], 512);
    assert_eq!(
        get(addr, "/v2/models/tiny-llama").await.json()["name"],
        "tiny-llama"
    );
    assert_eq!(get(addr, "/v2/models/tiny-llama/config").await.status, 200);
    for path in ["/v2/models/other", "/v2/models/other/config"] {
        assert_mindie_error(&get(addr, path).await, 404, "Model other not found.");
    }
    assert_mindie_error(
        &post(
            addr,
            "/v2/models/other/generate",
            &json!({"text_input": "x"}),
        )
        .await,
        404,
        "Model other not found.",
    );
    let v = post(
        addr,
        "/v2/models/tiny-llama/generate",
        &json!({"id": "req-1", "text_input": h.prompt, "parameters": {"max_new_tokens": 3}}),
    )
    .await
    .json();
    assert_eq!(v["id"], "req-1");
    assert_eq!(v["model_name"], "tiny-llama");
    assert!(v["model_version"].is_null());
    assert_eq!(v["text_output"], h.text3.as_str());
    assert_eq!(v["details"]["generated_tokens"], 3);
    assert!(v["details"]["first_token_cost"].as_f64().is_some());
    let events = SseStream::open(
        addr,
        "/v2/models/tiny-llama/generate_stream",
        &json!({"text_input": h.prompt, "parameters": {"max_new_tokens": 3}}),
    )
    .await
    .collect()
    .await;
    let text: String = events
        .iter()
        .map(|e| e["text_output"].as_str().expect("text_output"))
        .collect();
    assert_eq!(text, h.text3);
    assert_eq!(
        events.last().map(|e| &e["details"]["finish_reason"]),
        Some(&json!("length"))
    );
    let tensor = |data: Value, datatype: &str| {
        json!({"id": "t1", "inputs": [{"name": "input0", "shape": [1, h.prompt_ids.len()],
               "datatype": datatype, "data": data}], "outputs": [{"name": "output0"}],
               "parameters": {"max_new_tokens": 3}})
    };
    let v = post(
        addr,
        "/v2/models/tiny-llama/infer",
        &tensor(json!(h.prompt_ids), "UINT32"),
    )
    .await
    .json();
    assert_eq!(v["outputs"][0]["name"], "output0");
    assert_eq!(v["outputs"][0]["datatype"], "UINT32");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 3]));
    assert_eq!(v["outputs"][0]["data"], json!(h.ids[..3]));
    assert_mindie_error(
        &post(
            addr,
            "/v2/models/tiny-llama/infer",
            &tensor(json!(h.prompt_ids), "FP32"),
        )
        .await,
        422,
        "inputs[0].datatype",
    );
    assert_mindie_error(
        &post(
            addr,
            "/v2/models/tiny-llama/infer",
            &tensor(json!([1, 2]), "UINT32"),
        )
        .await,
        422,
        "inputs[0].shape",
    );
    assert_mindie_error(
        &post(
            addr,
            "/v2/models/tiny-llama/generate",
            &json!({"id": "bad id!", "text_input": "x"}),
        )
        .await,
        422,
        "id",
    );
}

#[tokio::test]
async fn stop_infer_cancels_a_running_generation() {
    let mut home = Home::new();
    home.set("/BackendConfig/ScheduleConfig/maxIterTimes", 2000);
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "20")]);
    let addr = home.business();
    let body = json!({"id": "long-one", "text_input": "tell me everything",
                      "parameters": {"max_new_tokens": 2000}});
    let mut s = SseStream::open(addr, "/v2/models/mock-model/generate_stream", &body).await;
    assert_eq!(s.status, 200);
    s.next_data().await.expect("a first token");
    let r = post(
        addr,
        "/v2/models/mock-model/stopInfer",
        &json!({"id": "long-one"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The stream ends soon with an error event, not after 2000 tokens (40 s).
    let t0 = Instant::now();
    let mut last = String::new();
    while let Some(d) = s.next_data().await {
        last = d;
        assert!(t0.elapsed() < Duration::from_secs(5), "still streaming");
    }
    assert!(last.contains("cancelled"), "{last}");
    let st = get(home.mgmt(), "/v1/status").await.json();
    assert_eq!(
        st["resource"]["freeNpuBlockNums"], st["resource"]["totalNpuBlockNums"],
        "{st}"
    );
    // Unknown ids are 404; the id is required.
    assert_mindie_error(
        &post(
            addr,
            "/v2/models/mock-model/stopInfer",
            &json!({"id": "long-one"}),
        )
        .await,
        404,
        "long-one",
    );
    assert_mindie_error(
        &post(addr, "/v2/models/mock-model/stopInfer", &json!({})).await,
        422,
        "id",
    );
}

/// tiny-qwen2-untied's "hello" case picks LM-head row 2032 (past the tokenizer's 2,008 ids) at
/// step 4, as HF does: every flavour reports the same ids and the text without that token.
#[tokio::test]
async fn untied_head_rows_past_the_tokenizer_in_every_flavour() {
    const N: usize = 8;
    let p = format!(
        "{}/tests/fixtures/refs/tiny-qwen2-untied.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let refs: Value = serde_json::from_slice(&std::fs::read(p).expect("refs")).expect("json");
    let c = &refs["cases"][0];
    let prompt = c["prompt"].as_str().expect("prompt");
    let ids: Vec<u64> = c["generated_ids"].as_array().expect("ids")[..N]
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert!(
        ids.iter().any(|&id| id >= 2008),
        "the case picks a row past the tokenizer"
    );
    let text: String = c["steps"].as_array().expect("steps")[..N]
        .iter()
        .map(|s| s["text"].as_str().expect("text"))
        .collect();

    let mut home = Home::new();
    home.use_fixture_model("tiny-qwen2-untied");
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        "untied",
    );
    let _d = home.start(&[]);
    let addr = home.business();

    // TGI: ids in details, streamed ids, text.
    let v = post(
        addr,
        "/generate",
        &json!({"inputs": prompt, "parameters": {"max_new_tokens": N, "details": true}}),
    )
    .await
    .json();
    assert_eq!(v["generated_text"], text.as_str(), "{v}");
    let got: Vec<u64> = v["details"]["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, ids);
    let events = SseStream::open(
        addr,
        "/generate_stream",
        &json!({"inputs": prompt, "parameters": {"max_new_tokens": N}}),
    )
    .await
    .collect()
    .await;
    let got: Vec<u64> = events
        .iter()
        .map(|e| e["token"]["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(got, ids);
    // vLLM legacy.
    let v = post(
        addr,
        "/generate",
        &json!({"prompt": prompt, "max_tokens": N, "temperature": 0}),
    )
    .await
    .json();
    assert_eq!(v["text"], json!([format!("{prompt} {text}")]));
    // MindIE-native.
    let v = post(
        addr,
        "/infer",
        &json!({"inputs": prompt, "parameters": {"max_new_tokens": N}}),
    )
    .await
    .json();
    assert_eq!(v["generated_text"], text.as_str());
    assert_eq!(v["details"]["generated_token_ids"], json!(ids));
    // Triton.
    let v = post(
        addr,
        "/v2/models/untied/generate",
        &json!({"text_input": prompt, "parameters": {"max_new_tokens": N}}),
    )
    .await
    .json();
    assert_eq!(v["text_output"], text.as_str(), "{v}");
    // OpenAI completions: the textless id is named by id in the logprobs.
    let v = post(
        addr,
        "/v1/completions",
        &json!({"model": "untied", "prompt": prompt, "max_tokens": N, "temperature": 0,
                "logprobs": 1}),
    )
    .await
    .json();
    assert_eq!(v["choices"][0]["text"], text.as_str());
    let tokens = &v["choices"][0]["logprobs"]["tokens"];
    for (i, &id) in ids.iter().enumerate() {
        if id >= 2008 {
            assert_eq!(tokens[i], format!("token_id:{id}"), "{tokens}");
        }
    }
    // OpenAI chat: empty token text, no bytes.
    let chat = &refs["cases"][7];
    assert_eq!(chat["name"], "chat_single");
    let v = post(
        addr,
        "/v1/chat/completions",
        &json!({"model": "untied", "messages": chat["messages"], "max_tokens": 32,
                "temperature": 0, "logprobs": true}),
    )
    .await
    .json();
    assert_eq!(
        v["choices"][0]["message"]["content"], chat["generated_text_skip_special"],
        "{v}"
    );
    let entries = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("content");
    let step7 = &entries[7];
    assert_eq!(chat["generated_ids"][7], 2018);
    assert_eq!(step7["token"], "", "{step7}");
    assert!(step7["bytes"].is_null(), "{step7}");
}
