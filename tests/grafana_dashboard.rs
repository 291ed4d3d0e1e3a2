//! The shipped Grafana dashboard (conf/grafana/mindie-dashboard.json) against a live daemon:
//! it is a well-formed dashboard, every metric its PromQL names is one the daemon exports on
//! `/metrics` (histograms through their `_bucket`/`_sum`/`_count` series), and a real
//! Prometheus scraping that daemon evaluates every panel query and template variable with
//! Grafana's variables filled in, each giving series.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json};
use common::daemon::Home;
use common::prom::{Job, Prometheus};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/grafana/mindie-dashboard.json");
    serde_json::from_slice(&std::fs::read(&path).expect("read the dashboard"))
        .expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// `(panel title, expression)` of every query target.
fn exprs(d: &Value) -> Vec<(String, String)> {
    panels(d)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_string()))
        })
        .collect()
}

/// `(name, metric selector, label)` of each `label_values(selector, label)` template variable.
fn label_values_vars(d: &Value) -> Vec<(String, String, String)> {
    d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = v["query"]["query"].as_str().expect("variable query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query is not label_values(...): {q}"));
            let (sel, label) = inner
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            (
                v["name"].as_str().unwrap().to_string(),
                sel.trim().to_string(),
                label.trim().to_string(),
            )
        })
        .collect()
}

/// Grafana's variables as a query of the whole fleet: every job, instance and model; the
/// rate window one minute.
fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("\"$job\"", "\".*\"")
        .replace("\"$instance\"", "\".*\"")
        .replace("\"$model\"", "\".*\"")
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers outside strings, label
/// matchers `{...}`, ranges `[...]` and grouping lists, that are neither functions nor
/// aggregations (followed by `(` or `by`/`without`) nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let c: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_ws = |mut j: usize| {
        while j < c.len() && c[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let skip_group = |j: usize, open: char, close: char| {
        let mut depth = 0;
        let mut k = j;
        let mut in_str: Option<char> = None;
        while k < c.len() {
            match (in_str, c[k]) {
                (Some(_), '\\') => k += 1,
                (Some(q), ch) if ch == q => in_str = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => in_str = Some(c[k]),
                (None, ch) if ch == open => depth += 1,
                (None, ch) if ch == close => {
                    depth -= 1;
                    if depth == 0 {
                        return k + 1;
                    }
                }
                _ => {}
            }
            k += 1;
        }
        panic!("unbalanced {open}{close} in {expr}");
    };
    while i < c.len() {
        let ch = c[i];
        if ch == '{' {
            i = skip_group(i, '{', '}');
        } else if ch == '[' {
            i = skip_group(i, '[', ']');
        } else if ch == '"' || ch == '\'' {
            let mut k = i + 1;
            while c[k] != ch {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            i = k + 1;
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '.') {
                let exp = c[i] == 'e' || c[i] == 'E';
                i += 1;
                if exp && i < c.len() && (c[i] == '-' || c[i] == '+') {
                    i += 1;
                }
            }
        } else if ch == '$' {
            i += 1;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch.is_ascii_alphabetic() || ch == '_' || ch == ':' {
            let start = i;
            while i < c.len() && (c[i].is_ascii_alphanumeric() || c[i] == '_' || c[i] == ':') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = skip_ws(i);
            let lower = word.to_ascii_lowercase();
            if KEYWORDS.contains(&lower.as_str()) {
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&lower.as_str())
                    && c.get(next) == Some(&'(')
                {
                    i = skip_group(next, '(', ')');
                }
                continue;
            }
            let after: String = c[next..].iter().take(8).collect();
            let is_call = c.get(next) == Some(&'(')
                || after.starts_with("by ")
                || after.starts_with("by(")
                || after.starts_with("without");
            if !is_call {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_name_extractor_reads_promql() {
    let e = r#"histogram_quantile(0.9, sum by (le, job) (rate(a_bucket{x=~"b{c}",le!="1e-9"}[5m]))) / on(job) group_left(model_name) sum without (instance) (c_total offset 5m) > bool 1e-3 or d"#;
    let want: BTreeSet<String> = ["a_bucket", "c_total", "d"].map(String::from).into();
    assert_eq!(metric_names(e), want);
}

#[tokio::test]
async fn the_dashboard_queries_what_the_daemon_exports() {
    let d = dashboard();

    // A dashboard Grafana can load: title, uid, a Prometheus data-source variable every
    // panel uses, unique panel ids, panels inside the 24-column grid.
    assert_eq!(d["uid"], "mindie-service-daemon");
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"));
    let mut ids = HashSet::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate id: {p}");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                !p["targets"].as_array().unwrap().is_empty(),
                "{}",
                p["title"]
            );
        }
    }

    let queries = exprs(&d);
    let vars = label_values_vars(&d);
    let mut used = BTreeSet::new();
    for (_, e) in &queries {
        used.extend(metric_names(e));
    }
    for (_, sel, _) in &vars {
        used.extend(metric_names(sel));
    }
    // The panels an operator looks for first are there.
    for name in [
        "request_received_total",
        "request_success_total",
        "request_failed_total",
        "time_to_first_token_seconds_bucket",
        "time_per_output_token_seconds_bucket",
        "e2e_request_latency_seconds_bucket",
        "num_requests_running",
        "num_requests_waiting",
        "npu_cache_usage_perc",
        "prompt_tokens_total",
        "generation_tokens_total",
    ] {
        assert!(used.contains(name), "the dashboard does not chart {name}");
    }

    // Every name is exported by a live daemon.
    let home = Home::new();
    let mut daemon = home.start(&[]);
    let text = get(home.metrics(), "/metrics").await.text();
    let exported: HashSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses names the daemon does not export: {missing:?}"
    );

    // A real Prometheus evaluates every query on that daemon's scraped series.
    let prom = Prometheus::start(&[Job {
        name: "mindie".into(),
        target: home.metrics(),
        tls: None,
    }])
    .await;
    prom.wait_up("mindie", &mut daemon).await;
    for i in 0..2 {
        let body = json!({"model": "mock-model", "prompt": format!("hi {i}"), "max_tokens": 3});
        assert_eq!(
            post_json(home.business(), "/v1/completions", &body)
                .await
                .status,
            200
        );
    }
    prom.wait_value(r#"request_success_total{job="mindie"}"#, 2.0)
        .await;
    let t0 = Instant::now();
    for (title, e) in &queries {
        let q = grafana_to_promql(e);
        assert!(!q.contains('$'), "a Grafana variable left in {q}");
        loop {
            let r = prom.query(&q).await;
            assert_eq!(r["status"], "success", "panel {title:?}: {q}\n{r}");
            if r["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "panel {title:?} gives no series: {q}\n{r}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The template variables list this daemon's job, instance and model.
    for (name, sel, label) in &vars {
        let q = format!("group by ({label}) ({})", grafana_to_promql(sel));
        let values: Vec<String> = prom
            .samples(&q)
            .await
            .iter()
            .map(|(m, _)| m[label.as_str()].as_str().unwrap_or("").to_string())
            .collect();
        let want = match label.as_str() {
            "job" => "mindie".to_string(),
            "instance" => home.metrics().to_string(),
            _ => "mock-model".to_string(),
        };
        assert_eq!(values, vec![want], "variable {name}: {q}");
    }
}
