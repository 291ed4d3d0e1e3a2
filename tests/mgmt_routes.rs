//! The management routes of SPEC §2 on the real binary: `/info`, `/v2/models/{m}/ready`,
//! `/v2/models/{m}/getSlotCount`, `/metrics-json`, `/health/timed[-N]`,
//! `/v1/engine-server/running-status`, `/v2/status` (v2 fields): shapes, values from the
//! engine, wrong model names, bad input.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, send};
use common::daemon::Home;
use serde_json::Value;
use std::net::SocketAddr;

fn assert_mindie_error(r: &common::client::Reply, status: u16, error_type: &str, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let j = r.json();
    assert_eq!(j["error_type"], error_type, "{j}");
    let msg = j["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error: {j}"));
    assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    assert!(r.headers.contains_key("RequestUUID"));
}

async fn complete(addr: SocketAddr) -> Value {
    let body = r#"{"model":"mock-model","prompt":"hi","max_tokens":4}"#;
    let r = send(addr, None, "POST", "/v1/completions", Some(body))
        .await
        .expect("completion");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test]
async fn info_reports_limits_and_the_real_device() {
    let home = Home::new();
    let _d = home.start(&[]);
    let r = get(home.mgmt(), "/info").await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("RequestUUID"));
    let j = r.json();
    assert_eq!(j["max_concurrent_requests"], 200, "maxBatchSize: {j}");
    assert_eq!(j["max_batch_total_tokens"], 8192, "maxPrefillTokens: {j}");
    assert_eq!(j["max_input_length"], 2048, "{j}");
    assert_eq!(j["max_best_of"], 1);
    assert!(j["version"].as_str().is_some_and(|v| !v.is_empty()), "{j}");
    for k in [
        "docker_label",
        "sha",
        "max_stop_sequences",
        "waiting_served_ratio",
    ] {
        assert!(j.get(k).is_some(), "{k} missing: {j}");
    }
    let m = &j["models"][0];
    assert_eq!(m["model_id"], "mock-model");
    assert_eq!(m["model_pipeline_tag"], "text-generation");
    // The StandardMock engine runs no model: it says so instead of claiming an NPU.
    assert_eq!(m["model_device_type"], "mock", "{m}");
    assert_eq!(m["model_dtype"], "float32", "{m}");
    assert_eq!(m["max_total_tokens"], 2560, "{m}");
}

#[tokio::test]
async fn real_model_info_says_cpu() {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    let _d = home.start(&[]);
    let j = get(home.mgmt(), "/info").await.json();
    assert_eq!(j["models"][0]["model_device_type"], "cpu", "{j}");
    let dtype = j["models"][0]["model_dtype"].as_str().unwrap().to_string();
    assert!(
        ["float32", "bfloat16", "float16"].contains(&dtype.as_str()),
        "{dtype}"
    );
}

#[tokio::test]
async fn model_ready_and_slot_count() {
    let home = Home::new();
    let _d = home.start(&[]);

    let r = get(home.mgmt(), "/v2/models/mock-model/ready").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.headers.contains_key("RequestUUID"));
    let r = get(home.mgmt(), "/v2/models/nope/ready").await;
    assert_mindie_error(&r, 404, "NotFoundError", "Model nope not found.");

    let status = get(home.mgmt(), "/v1/status").await.json();
    let total_blocks = status["resource"]["totalNpuBlockNums"].as_u64().unwrap();
    // this project's process view (what a soak run samples)
    let p = get(home.mgmt(), "/v1/process").await.json();
    assert!(p["residentBytes"].as_u64().unwrap() > 1 << 20, "{p}");
    for key in ["threads", "openFds", "aliveTasks"] {
        assert!(p[key].as_u64().unwrap() > 0, "{key}: {p}");
    }
    let r = get(home.mgmt(), "/v2/models/mock-model/getSlotCount").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["total_slots"], 200, "{j}");
    assert_eq!(j["free_slots"], 200, "idle: every slot free: {j}");
    assert_eq!(
        j["available_tokens_length"].as_u64(),
        Some(total_blocks * 128),
        "idle: every block free, 128 tokens each: {j}"
    );
    let r = get(home.mgmt(), "/v2/models/nope/getSlotCount").await;
    assert_mindie_error(&r, 404, "NotFoundError", "Model nope not found.");
    // Not on the business port when the planes differ.
    assert_eq!(
        get(home.business(), "/v2/models/mock-model/getSlotCount")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn timed_health_runs_a_probe() {
    let home = Home::new();
    let _d = home.start(&[]);
    for path in ["/health/timed", "/health/timed-3", "/health/timed-600"] {
        let r = get(home.mgmt(), path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["status"], "healthy", "{path}");
    }
    for bad in [
        "/health/timed-0",
        "/health/timed-601",
        "/health/timed-x",
        "/health/timed-",
    ] {
        let r = get(home.mgmt(), bad).await;
        assert_mindie_error(&r, 422, "Input Validation Error", "[1, 600]");
    }
    let r = get(home.mgmt(), "/health/other").await;
    assert_mindie_error(&r, 404, "NotFoundError", "/health/other");
    // The probe is not a client request: the request counters stay at zero.
    let metrics = get(home.metrics(), "/metrics").await.text();
    assert!(
        metrics.contains("request_received_total{model_name=\"mock-model\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn running_status_and_v2_status() {
    let home = Home::new();
    let _d = home.start(&[]);
    let r = get(home.mgmt(), "/v1/engine-server/running-status").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["status"], 0, "idle engine is READY: {j}");
    assert_eq!(j["errors"], serde_json::json!([]));

    let v2 = get(home.mgmt(), "/v2/status").await.json();
    let res = &v2["resource"];
    let free = res["freeNpuBlockNums"].as_u64().unwrap();
    assert_eq!(res["totalAvailNpuSlotsNum"], 200, "{v2}");
    assert_eq!(res["totalAvailNpuBlockNum"].as_u64(), Some(free));
    assert_eq!(res["maxAvailNpuBlockNum"].as_u64(), Some(free));
    assert_eq!(res["dpInstMap"], serde_json::json!([[0, free]]), "{v2}");
    assert_eq!(v2["service"]["roleStatus"], "RoleReady");
}

#[tokio::test]
async fn metrics_json_after_requests() {
    let home = Home::new();
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "5")]);
    for _ in 0..3 {
        complete(home.business()).await;
    }
    let r = get(home.mgmt(), "/metrics-json").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let j = r.json();
    assert_eq!(j["resultType"], "vector");
    let result = j["result"].as_array().expect("result array");
    let value = |name: &str| -> f64 {
        let s = result
            .iter()
            .find(|e| e["metric"][0]["__name__"] == name)
            .unwrap_or_else(|| panic!("{name} missing: {j}"));
        assert_eq!(s["metric"][0]["job"], "node");
        assert_eq!(
            s["metric"][0]["instance"],
            format!("127.0.0.1:{}", home.mgmt_port)
        );
        s["value"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: value is a string: {s}"))
            .parse()
            .unwrap_or_else(|_| panic!("{name}: value parses: {s}"))
    };
    // Mock steps take 5 ms: the first token and each next one take at least that.
    assert!(value("TTFT") >= 4.0, "{j}");
    assert!(value("TBT") >= 4.0, "{j}");
    assert_eq!(value("waitingInferRequestNum"), 0.0);
    assert_eq!(value("processingInferRequestNum"), 0.0);
    let free = get(home.mgmt(), "/v1/status").await.json()["resource"]["freeNpuBlockNums"]
        .as_f64()
        .unwrap();
    assert_eq!(value("remainBlocks"), free);
}

#[tokio::test]
async fn metrics_json_off_with_metrics() {
    let home = Home::new();
    let _d = home.start(&[("MIES_SERVICE_MONITOR_MODE", "0")]);
    let r = get(home.mgmt(), "/metrics-json").await;
    assert_mindie_error(&r, 503, "Service Unavailable", "MIES_SERVICE_MONITOR_MODE");
}
