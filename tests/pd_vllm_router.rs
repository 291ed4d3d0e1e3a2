//! vLLM's PD protocol driven by a real router from PyPI (`vllm-router`, pinned in
//! [`ROUTER_VERSION`]): `--vllm-pd-disaggregation --prefill <P> --decode <D>` in front of
//! two dmi instances on two loopback hosts. The router probes `/health`, sends P the request
//! with `max_tokens: 1` and `kv_transfer_params.do_remote_decode`, copies P's
//! `kv_transfer_params` into the original request for D, and D pulls the KV over gRPC with
//! mutual TLS and answers. The answers equal a standard instance's, streamed and not.
//!
//! The router comes from `VLLM_ROUTER` (a path), else `target/pd-venv/bin/vllm-router`,
//! which this test makes with `python3 -m venv` + `pip install` when it is missing.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::{free_port, Home};
use common::pd::{send, sse_events, Instance};
use common::pki::Pki;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router version these tests were written against.
const ROUTER_VERSION: &str = "0.1.17";

fn router_binary() -> PathBuf {
    if let Ok(p) = std::env::var("VLLM_ROUTER") {
        return PathBuf::from(p);
    }
    common::venv::venv(
        "pd-venv",
        &format!("vllm-router=={ROUTER_VERSION}"),
        "bin/vllm-router",
    )
    .join("bin/vllm-router")
}

struct Router(Child);

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_router(p: &Instance, d: &Instance) -> (Router, std::net::SocketAddr) {
    let port = free_port();
    let child = Command::new(router_binary())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--vllm-pd-disaggregation")
        .args(["--prefill", &format!("http://{}", p.business())])
        .args(["--decode", &format!("http://{}", d.business())])
        .args([
            "--worker-startup-timeout-secs",
            "60",
            "--log-level",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vllm-router");
    let router = Router(child);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "vllm-router did not listen"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (router, addr)
}

fn fold(reply: &Value, stream_events: Option<&[Value]>) -> Value {
    match stream_events {
        None => {
            let c = &reply["choices"][0];
            json!({"text": c["message"]["content"].as_str().or(c["text"].as_str()),
                   "finish": c["finish_reason"], "logprobs": c["logprobs"]})
        }
        Some(events) => {
            let mut text = String::new();
            let mut finish = Value::Null;
            for e in events.iter().filter(|e| e.is_object()) {
                let Some(c) = e["choices"].get(0) else {
                    continue;
                };
                if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
                    text.push_str(t);
                }
                if !c["finish_reason"].is_null() {
                    finish = c["finish_reason"].clone();
                }
            }
            json!({"text": text, "finish": finish})
        }
    }
}

async fn answer(addr: std::net::SocketAddr, path: &str, body: &Value) -> Value {
    let r = send(addr, "POST", path, Some(body), &[]).await;
    assert_eq!(r.status, 200, "{addr}{path}: {}", r.text());
    if body["stream"] == json!(true) {
        fold(&Value::Null, Some(&sse_events(&r.text())))
    } else {
        fold(&r.json(), None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vllm_router_drives_our_prefill_and_decode() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, Some("tiny-llama"));
    let d = Instance::new(pki, "127.0.0.3", port, Some("tiny-llama"));
    let mut s = Home::new();
    s.use_fixture_model("tiny-llama");
    let (_pd, _dd, _sd) = (p.start(), d.start(), s.start(&[]));
    let (_router, router) = start_router(&p, &d).await;

    let chat = json!({"model": "mock-model",
        "messages": [{"role": "user", "content": "Tell me about the sea and the sky"}],
        "max_tokens": 12, "temperature": 0});
    let comp = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 12,
        "temperature": 0, "logprobs": 2});
    let mut chat_stream = chat.clone();
    chat_stream["stream"] = json!(true);
    let mut seeded = comp.clone();
    seeded["temperature"] = json!(1.0);
    seeded["seed"] = json!(5);
    for (path, body) in [
        ("/v1/chat/completions", &chat),
        ("/v1/chat/completions", &chat_stream),
        ("/v1/completions", &comp),
        ("/v1/completions", &seeded),
    ] {
        let want = answer(s.business(), path, body).await;
        let got = answer(router, path, body).await;
        assert_eq!(got, want, "through vllm-router: {path} {body}");
    }
    // Both halves did their part, and nothing is left held.
    let pm = send(p.metrics(), "GET", "/metrics", None, &[]).await.text();
    assert!(
        pm.contains("pd_handoffs_total{model_name=\"mock-model\"} 4"),
        "{pm}"
    );
    let dm = send(d.metrics(), "GET", "/metrics", None, &[]).await.text();
    assert!(
        dm.contains("pd_kv_transfer_seconds_count{model_name=\"mock-model\"} 4"),
        "{dm}"
    );
    common::pd::assert_all_blocks_free(&p, "prefill").await;
    common::pd::assert_all_blocks_free(&d, "decode").await;
}
