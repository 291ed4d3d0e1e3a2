//! The business router in process, without a socket: `mindie::http::business_router` over the
//! StandardMock engine and the tiny-llama fixture's tokenizer, each request sent with
//! `tower::ServiceExt::oneshot`. Checks field errors, the model check, a real completion, the
//! `RequestUUID` tag and the 404 fallback.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use mindie::http::admission;
use mindie::http::REQUEST_UUID;
use serde_json::{json, Value};
use tower::ServiceExt;

#[path = "common/mock_router.rs"]
mod mock_router;

use mock_router::{mock_business, MODEL};

/// The business router of a daemon serving the mock engine; the temporary home holds its
/// config and must outlive it.
fn business() -> (Router, tempfile::TempDir) {
    mock_business(None)
}

/// Posts `body` to `path`; the status, the `RequestUUID` header and the JSON reply.
async fn post(router: &Router, path: &str, body: Value) -> (StatusCode, Option<String>, Value) {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .header(REQUEST_UUID, "router-test-1")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let uuid = resp
        .headers()
        .get(REQUEST_UUID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, uuid, v)
}

#[tokio::test]
async fn bad_field_is_422_naming_the_field() {
    let (router, _home) = business();
    let (status, _, v) = post(
        &router,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "hi", "max_tokens": 0}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["param"], "max_tokens", "{v}");
}

#[tokio::test]
async fn unknown_model_is_404() {
    let (router, _home) = business();
    let (status, _, v) = post(
        &router,
        "/v1/chat/completions",
        json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        v["error"]["message"],
        format!("The model `nope` does not exist; this server serves `{MODEL}`."),
        "{v}"
    );
}

#[tokio::test]
async fn completion_runs_on_the_mock_engine() {
    let (router, _home) = business();
    let (status, _, v) = post(
        &router,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Hello", "max_tokens": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
}

#[tokio::test]
async fn tgi_generate_runs_on_the_mock_engine() {
    let (router, _home) = business();
    let (status, _, v) = post(
        &router,
        "/generate",
        json!({"inputs": "Hello", "parameters": {"max_new_tokens": 2, "details": true}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["details"]["finish_reason"], "length", "{v}");
    assert_eq!(v["details"]["generated_tokens"], 2, "{v}");
}

#[tokio::test]
async fn each_end_of_sequence_reaches_the_wire() {
    let (router, _home) = mock_business(Some("one two three four"));
    let tgi = |stop: Value, max: u32| json!({"inputs": "Hello", "parameters": {"max_new_tokens": max, "stop": stop, "details": true}});
    let cases = [
        (tgi(json!(["three"]), 50), "stop_sequence", "stop"),
        (tgi(json!([]), 50), "eos_token", "stop"),
        (tgi(json!([]), 2), "length", "length"),
    ];
    for (body, tgi_reason, openai_reason) in cases {
        let (status, _, v) = post(&router, "/generate", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["details"]["finish_reason"], tgi_reason, "{body} -> {v}");
        let p = &body["parameters"];
        let openai = json!({"model": MODEL, "prompt": "Hello", "max_tokens": p["max_new_tokens"],
                            "stop": p["stop"]});
        let (status, _, v) = post(&router, "/v1/completions", openai).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(
            v["choices"][0]["finish_reason"], openai_reason,
            "{body} -> {v}"
        );
    }
}

#[tokio::test]
async fn request_uuid_is_echoed_by_the_tag_layer() {
    let (router, _home) = business();
    // The daemon adds the tag as each listener's outermost layer; so does this test.
    let router = router.layer(axum::middleware::from_fn(admission::tag_request_id));
    let (status, uuid, _) = post(&router, "/v1/tokenizer", json!({"inputs": "Hello"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(uuid.as_deref(), Some("router-test-1"));
}

#[tokio::test]
async fn unknown_path_is_404_in_the_style_of_its_path() {
    let (router, _home) = business();
    let (status, _, v) = post(&router, "/no/such/route", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"], "Not Found: /no/such/route", "{v}");
}

/// A body past axum's 2 MB default but within `maxRequestLength` (40 MB in the stock config)
/// is read and answered by the route, not refused with axum's plain-text 413 (found by
/// tests/fuzz_http.rs). Past `maxRequestLength`, admission's 413 is JSON in the flavour's style.
#[tokio::test]
async fn bodies_up_to_max_request_length_are_read() {
    let (router, _home) = business();
    let big = "u".repeat(3 << 20);
    let (status, _, v) = post(
        &router,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "Hello", "max_tokens": 1, "user": big}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = post(
        &router,
        "/generate",
        json!({"inputs": big, "parameters": {}}),
    )
    .await;
    assert!(
        status.is_client_error() && status != StatusCode::PAYLOAD_TOO_LARGE,
        "{status} {v}"
    );
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    let huge = "u".repeat(41 << 20);
    let (status, _, v) = post(&router, "/generate", json!({"inputs": huge})).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}
