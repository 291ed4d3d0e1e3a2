//! The three planes of the real binary on real sockets: which routes answer where, their
//! shapes, Prometheus text, admission limits (maxLinkNum → 503, maxRequestLength → 413).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{finish_slow_request, get, send, slow_request};
use common::daemon::Home;
use std::time::{Duration, Instant};

const MINDIE_METRICS: &[&str] = &[
    "request_received_total",
    "request_success_total",
    "request_failed_total",
    "prompt_tokens_total",
    "generation_tokens_total",
    "num_preemptions_total",
    "num_requests_running",
    "num_requests_waiting",
    "num_requests_swapped",
    "avg_prompt_throughput_toks_per_s",
    "avg_generation_throughput_toks_per_s",
    "failed_request_perc",
    "npu_cache_usage_perc",
    "cpu_cache_usage_perc",
    "npu_prefix_cache_hit_rate",
    "all_radix_match_num",
    "npu_radix_match_hit_num",
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_prompt_tokens",
    "request_generation_tokens",
];

/// Parses Prometheus text exposition strictly enough to catch malformed output: every sample
/// line is `name{labels} value` with a float value, and every family has a TYPE line.
fn parse_prometheus(text: &str) -> Vec<(String, String, f64)> {
    let mut typed = std::collections::HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unexpected comment: {line}");
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                assert!(l.ends_with('}'), "bad labels: {line}");
                (n.to_string(), l.trim_end_matches('}').to_string())
            }
            None => (series.to_string(), String::new()),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(&name)
            .to_string();
        assert!(typed.contains_key(&family), "sample without TYPE: {line}");
        samples.push((name, labels, value));
    }
    samples
}

#[tokio::test]
async fn planes_answer_their_own_routes() {
    let home = Home::new();
    let _d = home.start(&[]);

    // Management plane.
    let cfg = get(home.mgmt(), "/v1/config").await;
    assert_eq!(cfg.status, 200);
    let c = cfg.json();
    assert_eq!(c["modelName"], "mock-model");
    assert_eq!(c["maxSeqLen"], 2560);
    assert_eq!(c["maxOutputLen"], 512);
    assert_eq!(c["cacheBlockSize"], 128);
    assert_eq!(c["npuMemSize"], -1);
    assert!(cfg.headers.contains_key("RequestUUID"));

    for path in ["/v1/status", "/v2/status"] {
        let st = get(home.mgmt(), path).await;
        assert_eq!(st.status, 200, "{path}");
        let j = st.json();
        for k in [
            "availSlotsNum",
            "availBlockNum",
            "waitingRequestNum",
            "runningRequestNum",
            "swappedRequestNum",
            "freeNpuBlockNums",
            "freeCpuBlockNums",
            "totalNpuBlockNums",
            "totalCpuBlockNums",
        ] {
            assert!(j["resource"][k].is_u64(), "{path} resource.{k}: {j}");
        }
        assert!(j["service"]["roleStatus"].is_string());
        assert!(j["linkStatus"]["peers"].is_array());
        if path == "/v2/status" {
            assert!(j["resource"]["totalAvailNpuBlockNum"].is_u64());
        }
    }

    let live = get(home.mgmt(), "/v2/health/live").await;
    assert_eq!(live.status, 200);
    let ready = get(home.mgmt(), "/v2/health/ready").await;
    let health = get(home.mgmt(), "/health").await;
    assert!(
        ready.status == 200 || ready.status == 503,
        "{}",
        ready.status
    );
    assert_eq!(health.status, ready.status, "health and readiness agree");
    let role = get(home.mgmt(), "/v1/status").await.json()["service"]["roleStatus"].clone();
    assert_eq!(role == "RoleReady", ready.status == 200);

    // Management routes are not on the business port when the planes differ.
    for path in [
        "/health",
        "/v2/health/live",
        "/v2/health/ready",
        "/v1/config",
        "/v1/status",
        "/stopService",
    ] {
        let r = get(home.business(), path).await;
        assert_eq!(r.status, 404, "{path} must not answer on the business port");
        assert_eq!(r.json()["error_type"], "NotFoundError");
    }

    // Business plane: the served model.
    let models = get(home.business(), "/v1/models").await;
    assert_eq!(models.status, 200);
    let m = models.json();
    assert_eq!(m["data"][0]["id"], "mock-model");
    assert_eq!(m["data"][0]["owned_by"], "MindIE Server");
    assert_eq!(
        get(home.business(), "/v1/models/mock-model").await.status,
        200
    );
    let missing = get(home.business(), "/v1/models/nope").await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nope"));
    assert!(missing.headers.contains_key("RequestUUID"));

    // Metrics plane.
    let metrics = get(home.metrics(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let samples = parse_prometheus(&metrics.text());
    for name in MINDIE_METRICS {
        assert!(
            samples
                .iter()
                .any(|(n, l, _)| (n == name || n == &format!("{name}_count"))
                    && l.contains("model_name=\"mock-model\"")),
            "metric {name} missing:\n{}",
            metrics.text()
        );
    }
    assert_eq!(get(home.metrics(), "/v1/config").await.status, 404);
}

#[tokio::test]
async fn one_server_hosts_both_when_ip_port_equal() {
    let mut home = Home::new();
    let port = home.port;
    home.set("/ServerConfig/managementPort", port);
    home.mgmt_port = port;
    let _d = home.start(&[]);
    assert_eq!(get(home.business(), "/v1/config").await.status, 200);
    assert_eq!(get(home.business(), "/v2/health/live").await.status, 200);
    assert_eq!(get(home.business(), "/v1/models").await.status, 200);
    // Business and management routes under the same /v2/models/{model} prefix coexist.
    for path in [
        "/v2/models/mock-model/ready",
        "/v2/models/mock-model/getSlotCount",
        "/v2/models/mock-model/config",
        "/v2/models/mock-model",
        "/v2",
        "/info",
    ] {
        assert_eq!(get(home.business(), path).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let home = Home::new();
    let _d = home.start(&[("MIES_SERVICE_MONITOR_MODE", "0")]);
    let r = get(home.metrics(), "/metrics").await;
    assert_eq!(r.status, 503);
    assert!(r.text().contains("MIES_SERVICE_MONITOR_MODE"));
}

#[tokio::test]
async fn overload_beyond_max_link_num_gets_503_at_once() {
    let mut home = Home::new();
    home.set("/ServerConfig/maxLinkNum", 2);
    let _d = home.start(&[]);
    let a = slow_request(home.business());
    let b = slow_request(home.business());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t0 = Instant::now();
    let r = get(home.business(), "/v1/models").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "503 must come at once"
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("maxLinkNum"));
    // Management still answers while the business plane is full.
    assert_eq!(get(home.mgmt(), "/v1/config").await.status, 200);

    let reply = finish_slow_request(a);
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(home.business(), "/v1/models").await.status,
        200,
        "slots come back"
    );
}

#[tokio::test]
async fn body_above_max_request_length_gets_413() {
    let mut home = Home::new();
    home.set("/ServerConfig/maxRequestLength", 1);
    let _d = home.start(&[]);
    let big = "x".repeat(1024 * 1024 + 10);
    let r = send(home.business(), None, "POST", "/generate", Some(&big))
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.text().contains("maxRequestLength"), "{}", r.text());
    let small = send(home.business(), None, "POST", "/no-such-route", Some("{}"))
        .await
        .unwrap();
    assert_eq!(small.status, 404);
}

#[tokio::test]
async fn real_model_makes_the_instance_ready() {
    let mut home = Home::new();
    home.use_fixture_model("tiny-llama");
    let _d = home.start(&[]);
    assert_eq!(get(home.mgmt(), "/v2/health/ready").await.status, 200);
    assert_eq!(get(home.mgmt(), "/health").await.status, 200);
    let st = get(home.mgmt(), "/v1/status").await.json();
    assert_eq!(st["service"]["roleStatus"], "RoleReady");
    let total = st["resource"]["totalNpuBlockNums"].as_u64().unwrap();
    assert!(total > 0, "{st}");
    assert_eq!(
        st["resource"]["freeNpuBlockNums"].as_u64().unwrap(),
        total,
        "idle: every block free"
    );
    assert_eq!(st["resource"]["availSlotsNum"], 200);
}

#[tokio::test]
async fn one_server_hosts_all_three_planes_when_ip_port_equal() {
    let mut home = Home::new();
    let port = home.port;
    home.set("/ServerConfig/managementPort", port)
        .set("/ServerConfig/metricsPort", port);
    let _d = home.start(&[]);
    assert_eq!(get(home.business(), "/v1/models").await.status, 200);
    assert_eq!(get(home.business(), "/v1/config").await.status, 200);
    assert_eq!(get(home.business(), "/metrics").await.status, 200);
}
