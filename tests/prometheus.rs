//! The metrics plane under a real Prometheus: `promtool check metrics` accepts the exposition
//! of a daemon that served requests, and Debian's `prometheus` server scrapes two daemons
//! (the shipped plain-HTTP config, and mutual TLS with the metrics plane's own certificate
//! set, Prometheus presenting a client certificate) and answers PromQL queries on MindIE's
//! metric names with what the clients did.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, send};
use common::daemon::Home;
use common::pki::Pki;
use common::prom::{mtls_home, promtool_check_metrics, scrape_identity, Job, Prometheus};
use mindie::security::tls::client_config;
use serde_json::json;

/// `promtool` lint findings that MindIE's own names cause and that cannot be fixed without
/// renaming them (SPEC §0.6 keeps every MindIE name): `toks_per_s` is an abbreviated unit.
const MINDIE_NAME_LINTS: &[&str] = &[
    "avg_prompt_throughput_toks_per_s metric names should not contain abbreviated units",
    "avg_generation_throughput_toks_per_s metric names should not contain abbreviated units",
];

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let home = Home::new();
    let _d = home.start(&[]);
    for _ in 0..3 {
        let body = json!({"model": "mock-model", "prompt": "hello", "max_tokens": 3});
        let r = common::client::post_json(home.business(), "/v1/completions", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let metrics = get(home.metrics(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(text.contains("request_success_total{model_name=\"mock-model\"} 3"));
    let verdict = promtool_check_metrics(&text);
    assert_ne!(
        verdict.code, 1,
        "promtool could not parse /metrics: {verdict:?}\n{text}"
    );
    let unexpected: Vec<&String> = verdict
        .problems
        .iter()
        .filter(|p| !MINDIE_NAME_LINTS.contains(&p.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "promtool found problems beyond MindIE's fixed names: {unexpected:?}\n{text}"
    );
    // Exit code 3 means lint findings only; they must be exactly the known ones.
    assert!(
        verdict.code == 0 || (verdict.code == 3 && !verdict.problems.is_empty()),
        "{verdict:?}"
    );
}

#[tokio::test]
async fn prometheus_scrapes_plain_and_mutual_tls_daemons() {
    let pki = Pki::shared();
    let plain = Home::new();
    let secure = mtls_home(pki);
    let mut dp = plain.start(&[]);
    let mut ds = secure.start(&[]);
    let keydir = tempfile::tempdir().unwrap();
    let prom = Prometheus::start(&[
        Job {
            name: "mindie".into(),
            target: plain.metrics(),
            tls: None,
        },
        Job {
            name: "mindie-mtls".into(),
            target: secure.metrics(),
            tls: Some(scrape_identity(pki, keydir.path())),
        },
    ])
    .await;
    prom.wait_up("mindie", &mut dp).await;
    prom.wait_up("mindie-mtls", &mut ds).await;
    // Scraped before any request: the series are there at zero.
    prom.wait_value(r#"request_received_total{job="mindie"}"#, 0.0)
        .await;

    // Plain daemon: four completions with known token counts.
    let (mut prompt, mut generated) = (0u64, 0u64);
    for i in 0..4 {
        let body = json!({"model": "mock-model", "prompt": format!("count {i} to ten"),
                          "max_tokens": 2 + i});
        let r = common::client::post_json(plain.business(), "/v1/completions", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let usage = &r.json()["usage"];
        prompt += usage["prompt_tokens"].as_u64().unwrap();
        generated += usage["completion_tokens"].as_u64().unwrap();
    }
    // mTLS daemon: one completion through its mutual-TLS business plane.
    let client = client_config(
        std::slice::from_ref(&pki.ca),
        Some((
            &pki.client_cert,
            &pki.client_key,
            Some(pki.client_key_pwd_file.as_path()),
        )),
    )
    .unwrap();
    let body = json!({"model": "mock-model", "prompt": "hello", "max_tokens": 3}).to_string();
    let r = send(
        secure.business(),
        Some(client),
        "POST",
        "/v1/completions",
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());

    // What Prometheus stored matches what the clients did, under MindIE's names and label.
    let labels = prom
        .wait_value(r#"request_received_total{job="mindie"}"#, 4.0)
        .await;
    assert_eq!(labels["model_name"], "mock-model", "{labels}");
    assert_eq!(labels["instance"], plain.metrics().to_string(), "{labels}");
    for (q, want) in [
        (r#"request_success_total{job="mindie"}"#, 4.0),
        (r#"request_failed_total{job="mindie"}"#, 0.0),
        (r#"prompt_tokens_total{job="mindie"}"#, prompt as f64),
        (r#"generation_tokens_total{job="mindie"}"#, generated as f64),
        (
            r#"time_to_first_token_seconds_bucket{job="mindie",le="+Inf"}"#,
            4.0,
        ),
        (r#"e2e_request_latency_seconds_count{job="mindie"}"#, 4.0),
        (
            r#"request_generation_tokens_bucket{job="mindie",le="10"}"#,
            4.0,
        ),
        (
            r#"request_generation_tokens_sum{job="mindie"}"#,
            generated as f64,
        ),
        (r#"num_requests_running{job="mindie"}"#, 0.0),
        (r#"request_success_total{job="mindie-mtls"}"#, 1.0),
        (
            r#"time_per_output_token_seconds_count{job="mindie-mtls"}"#,
            1.0,
        ),
    ] {
        prom.wait_value(q, want).await;
    }
    // A whole histogram: every bucket of TTFT, cumulative, ending at the count.
    let buckets = prom
        .samples(r#"time_to_first_token_seconds_bucket{job="mindie"}"#)
        .await;
    assert_eq!(buckets.len(), 17, "16 MindIE bounds and +Inf: {buckets:?}");
    let mut by_le: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(l, v)| (l["le"].as_str().unwrap().parse::<f64>().unwrap(), *v))
        .collect();
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(by_le.windows(2).all(|w| w[0].1 <= w[1].1), "{by_le:?}");
    assert_eq!(by_le.last().unwrap(), &(f64::INFINITY, 4.0));
    // A quantile over the scraped buckets is a number within the bucket range.
    let q = prom
        .samples(r#"histogram_quantile(0.9, sum by (le) (time_to_first_token_seconds_bucket{job="mindie"}))"#)
        .await;
    assert_eq!(q.len(), 1, "{q:?}");
    assert!(q[0].1 > 0.0 && q[0].1 <= 10.0, "{q:?}");

    // Both targets healthy in Prometheus's own view.
    let targets = get(prom.addr, "/api/v1/targets").await.json();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 2, "{targets}");
    for t in active {
        assert_eq!(t["health"], "up", "{t}");
        assert_eq!(t["lastError"], "", "{t}");
    }
}
