//! Tool calls through the real daemon: the StandardMock engine answers every request with a
//! scripted reply (`MIES_MOCK_REPLY_FILE`, tokenized by the fixture tokenizer and decoded back
//! by the server) that holds a `<tool_call>` block; the chat route must return it as OpenAI
//! `tool_calls`, streaming and not, and leave it as plain text when tools are off.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{post_json, Reply};
use common::daemon::Home;
use common::sse::SseStream;
use serde_json::{json, Value};
use std::net::SocketAddr;

const REPLY: &str = "I will look it up.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>";

async fn post(addr: SocketAddr, body: &Value) -> Reply {
    post_json(addr, "/v1/chat/completions", body).await
}

fn request(extra: Value) -> Value {
    let mut body = json!({
        "model": "mock-model",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "max_tokens": 200,
        "tools": [{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }}],
    });
    for (k, v) in extra.as_object().expect("object") {
        if v.is_null() {
            body.as_object_mut().expect("object").remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

fn arguments(call: &Value) -> Value {
    serde_json::from_str(
        call["function"]["arguments"]
            .as_str()
            .expect("arguments string"),
    )
    .expect("arguments are JSON")
}

/// A Hermes-style template that renders the tools, the assistant's calls and tool results
/// (the fixtures' own templates know nothing of tools).
const TOOL_TEMPLATE: &str = r#"{%- if tools %}<|system|>Tools:{% for t in tools %} {{ t | tojson }}{% endfor %}
{% endif %}{%- for m in messages %}<|{{ m.role }}|>{% if m.content %}{{ m.content }}{% endif %}{% if m.tool_calls %}{% for tc in m.tool_calls %}<tool_call>{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}</tool_call>{% endfor %}{% endif %}
{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"#;

/// The tiny-llama tokenizer files with [`TOOL_TEMPLATE`], for the mock to serve.
fn tool_model(home: &mut Home) {
    let dir = home.path().join("tool-model");
    std::fs::create_dir_all(&dir).unwrap();
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = dir.join("tokenizer_config.json");
    let mut tc: Value = serde_json::from_slice(&std::fs::read(&cfg).unwrap()).unwrap();
    tc["chat_template"] = json!(TOOL_TEMPLATE);
    std::fs::write(&cfg, tc.to_string()).unwrap();
    home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelWeightPath",
        dir.to_str().unwrap(),
    );
}

#[tokio::test]
async fn tool_calls_folded_streamed_and_switched_off() {
    let mut home = Home::new();
    tool_model(&mut home);
    let script = home.path().join("reply.txt");
    std::fs::write(&script, REPLY).unwrap();
    let _d = home.start(&[("MIES_MOCK_REPLY_FILE", script.to_str().unwrap())]);
    let addr = home.business();

    // Folded: the call comes back as tool_calls, the text before it as content.
    let r = post(addr, &request(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{v}");
    let msg = &choice["message"];
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["content"], "I will look it up.");
    let calls = msg["tool_calls"].as_array().expect("tool_calls");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        arguments(&calls[0]),
        json!({"city": "Paris", "unit": "celsius"})
    );
    assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));

    // Streamed: content deltas never carry the call; one delta carries it whole.
    let events = SseStream::open(
        addr,
        "/v1/chat/completions",
        &request(json!({"stream": true})),
    )
    .await
    .collect()
    .await;
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let deltas: Vec<&Value> = events[..events.len() - 1]
        .iter()
        .map(|e| &e["choices"][0]["delta"])
        .collect();
    let content: String = deltas
        .iter()
        .filter_map(|d| d["content"].as_str())
        .collect();
    assert_eq!(content.trim_end(), "I will look it up.");
    let streamed: Vec<&Value> = deltas.iter().filter_map(|d| d.get("tool_calls")).collect();
    assert_eq!(streamed.len(), 1, "{events:#?}");
    let call = &streamed[0][0];
    assert_eq!(call["index"], 0);
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(arguments(call), json!({"city": "Paris", "unit": "celsius"}));
    let last = &events[events.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
    assert!(last["usage"]["completion_tokens"].as_u64().unwrap() > 10);

    // tool_choice "none", or no tools: the same text, as text. The tools reach the template
    // either way but the second, so its prompt is shorter.
    let with_tools = v["usage"]["prompt_tokens"].as_u64().unwrap();
    for (extra, tools_in_prompt) in [
        (json!({"tool_choice": "none"}), true),
        (json!({"tools": null}), false),
    ] {
        let v = post(addr, &request(extra.clone())).await.json();
        let choice = &v["choices"][0];
        assert_eq!(choice["finish_reason"], "stop", "{extra}: {v}");
        assert_eq!(choice["message"]["content"], REPLY, "{extra}");
        assert_eq!(choice["message"]["tool_calls"], json!([]), "{extra}");
        let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            prompt == with_tools,
            tools_in_prompt,
            "{extra}: {prompt} vs {with_tools}"
        );
    }

    // Forcing a call is refused, naming the field; bad tool lists too.
    for (extra, field) in [
        (json!({"tool_choice": "required"}), "tool_choice"),
        (
            json!({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}),
            "tool_choice",
        ),
        (
            json!({"tools": [{"type": "function"}]}),
            "tools[0].function.name",
        ),
        (json!({"tools": null, "tool_choice": "auto"}), "tool_choice"),
    ] {
        let r = post(addr, &request(extra.clone())).await;
        assert_eq!(r.status, 422, "{extra}: {}", r.text());
        assert!(r.text().contains(field), "{extra}: {}", r.text());
    }

    // The conversation goes on with the call and its result.
    let follow = request(json!({"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": calls},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp\": 18}"},
    ]}));
    let r = post(addr, &follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let grown = r.json()["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        grown > with_tools + 20,
        "{grown} vs {with_tools}: the call and result rendered"
    );
}
