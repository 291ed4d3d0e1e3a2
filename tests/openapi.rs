//! The OpenAPI description the daemon serves (`GET /openapi.json` on each listener), checked
//! against the live daemon (StandardMock engine, shipped config on free ports):
//! - each listener's document lists the routes MindIE's clients call (SPEC §1, §2, §3) and
//!   only those; every documented operation exists (no fallback 404, no 405);
//! - `schemathesis` from PyPI (a venv under `target/`) generates requests from the document,
//!   valid and invalid, against the business and management planes: no response may be a
//!   5xx, and every response must match its documented status codes, content types, headers
//!   and schemas; afterwards the daemon still serves and every KV block is free.
//!
//! Cases per operation: `MINDIE_SCHEMATHESIS_CASES` (default 20); the seed is random unless
//! `MINDIE_SCHEMATHESIS_SEED` is set, and is printed so a failure can be replayed.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, send};
use common::daemon::Home;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The schemathesis release the CI venv pins.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
/// Checks run on every response (schemathesis names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance";

fn schemathesis() -> PathBuf {
    common::venv::venv("st-venv", SCHEMATHESIS, "bin/schemathesis").join("bin/schemathesis")
}

async fn doc(addr: SocketAddr) -> Value {
    let r = get(addr, "/openapi.json").await;
    assert_eq!(r.status, 200, "GET /openapi.json on {addr}: {}", r.text());
    r.json()
}

fn operations(doc: &Value) -> Vec<String> {
    let mut ops = mindie::http::openapi::operations(doc);
    ops.sort();
    ops
}

/// A concrete path for a documented template.
fn concrete(template: &str) -> String {
    template
        .replace("{model}", "mock-model")
        .replace("{id}", "mock-model")
        .replace("{seconds}", "3")
}

/// Every documented operation reaches a handler: not the fallback's `Not Found: <path>` and
/// not 405. Bodies are `{}` (handlers answer 4xx); `/stopService` is left alone.
async fn every_operation_exists(addr: SocketAddr, doc: &Value) {
    for op in operations(doc) {
        let (method, template) = op.split_once(' ').unwrap();
        if template == "/stopService" {
            continue;
        }
        let path = concrete(template);
        let body = (method == "POST").then_some("{}");
        let r = send(addr, None, method, &path, body).await.unwrap();
        assert_ne!(r.status, 405, "{op}: method not allowed");
        assert!(
            !(r.status == 404 && r.text().contains("Not Found: ")),
            "{op}: documented but not routed ({})",
            r.text()
        );
    }
}

/// Runs schemathesis against the document at `addr`; panics with its report on any failure.
fn run_schemathesis(addr: SocketAddr, cases: u32, seed: u64, exclude: &[&str]) {
    let url = format!("http://{addr}/openapi.json");
    let reports = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(schemathesis());
    cmd.args(["--no-color", "run", &url, "--checks", CHECKS])
        .args(["--max-examples", &cases.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--workers", "2", "--request-timeout", "60"])
        .arg("--report-dir")
        .arg(reports.path())
        .current_dir(reports.path());
    for p in exclude {
        cmd.args(["--exclude-path", p]);
    }
    let t0 = Instant::now();
    let out = cmd.output().expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" generated, ") || l.contains("Tested:"))
        .map(str::trim)
        .collect();
    eprintln!(
        "schemathesis {url} (seed {seed}, {cases} cases per operation, {:.0} s): {}",
        t0.elapsed().as_secs_f64(),
        summary.join(" | ")
    );
    assert!(
        out.status.success(),
        "schemathesis found problems on {url} (replay with MINDIE_SCHEMATHESIS_SEED={seed}):\n{text}"
    );
    // A run that tested nothing would pass without proving anything.
    assert!(
        text.contains("passed") && !text.contains("Tested: 0"),
        "schemathesis tested nothing on {url}:\n{text}"
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait_all_blocks_free(mgmt: SocketAddr) {
    let t0 = Instant::now();
    loop {
        let r = common::scrape::resource(mgmt).await;
        if r["freeNpuBlockNums"] == r["totalNpuBlockNums"] && r["runningRequestNum"] == 0 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "KV blocks still held after the run: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_describes_its_routes_and_they_exist() {
    let home = Home::new();
    let _d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "1")]);

    let business = doc(home.business()).await;
    assert_eq!(business["openapi"], "3.0.3");
    let ops = operations(&business);
    for want in [
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "GET /v1/models",
        "GET /v1/models/{id}",
        "POST /generate",
        "POST /generate_stream",
        "POST /",
        "POST /infer",
        "POST /infer_token",
        "POST /v1/tokenizer",
        "GET /v2",
        "GET /v2/models/{model}",
        "GET /v2/models/{model}/config",
        "POST /v2/models/{model}/generate",
        "POST /v2/models/{model}/generate_stream",
        "POST /v2/models/{model}/infer",
        "POST /v2/models/{model}/stopInfer",
    ] {
        assert!(ops.contains(&want.to_string()), "business: {want} missing");
    }
    assert!(!ops.iter().any(|o| o.contains("/health")), "{ops:?}");
    assert_eq!(
        business["components"]["parameters"]["Model"]["schema"]["enum"],
        serde_json::json!(["mock-model"])
    );

    let mgmt = doc(home.mgmt()).await;
    let ops = operations(&mgmt);
    for want in [
        "GET /health",
        "GET /health/timed",
        "GET /v2/health/live",
        "GET /v2/health/ready",
        "GET /v2/models/{model}/ready",
        "GET /v2/models/{model}/getSlotCount",
        "GET /info",
        "GET /metrics-json",
        "GET /v1/config",
        "GET /v1/status",
        "GET /v2/status",
        "GET /v1/engine-server/running-status",
        "GET /stopService",
        "POST /v1/log-level",
    ] {
        assert!(
            ops.contains(&want.to_string()),
            "management: {want} missing"
        );
    }
    assert!(
        !ops.iter().any(|o| o.contains("/role/")),
        "role routes exist only in dmi mode: {ops:?}"
    );
    let metrics = doc(home.metrics()).await;
    assert_eq!(operations(&metrics), ["GET /metrics"]);

    every_operation_exists(home.business(), &business).await;
    every_operation_exists(home.mgmt(), &mgmt).await;
    every_operation_exists(home.metrics(), &metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_listener_for_all_planes_describes_them_all() {
    let mut home = Home::new();
    let port = home.port;
    home.set("/ServerConfig/managementPort", port);
    home.mgmt_port = port;
    let _d = home.start(&[]);
    let ops = operations(&doc(home.business()).await);
    assert!(ops.contains(&"POST /v1/chat/completions".to_string()));
    assert!(ops.contains(&"GET /v1/status".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let cases = env_or("MINDIE_SCHEMATHESIS_CASES", 20u32);
    let seed = env_or(
        "MINDIE_SCHEMATHESIS_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000_007)
            .unwrap_or(1),
    );
    let mut home = Home::new();
    // Generated requests may ask for n = 8192 choices of up to maxIterTimes tokens each: a
    // short maxIterTimes keeps every such request within the client's timeout on two cores.
    home.set("/BackendConfig/ScheduleConfig/maxIterTimes", 16);
    let mut d = home.start(&[("MIES_MOCK_STEP_TIME_MS", "1")]);
    let (business, mgmt) = (home.business(), home.mgmt());
    tokio::task::spawn_blocking(move || {
        run_schemathesis(business, cases, seed, &[]);
        // /stopService would end the daemon under test.
        run_schemathesis(mgmt, cases, seed, &["/stopService"]);
    })
    .await
    .unwrap();

    assert_eq!(
        get(home.mgmt(), "/health").await.status,
        200,
        "unhealthy after the run:\n{}",
        d.output()
    );
    wait_all_blocks_free(home.mgmt()).await;
    assert!(d.wait_exit(Duration::from_millis(10)).is_none(), "exited");
    let out = d.output();
    assert!(!out.contains("panicked"), "a panic in the daemon:\n{out}");
}
