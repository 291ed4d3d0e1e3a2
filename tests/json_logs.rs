//! `MINDIE_LOG_FORMAT=json` on the real binary: every stdout line is one JSON object (the
//! `Daemon start success!` line too), and what is logged while a request is served carries
//! the request's id, the one the client sent in `RequestUUID`, also for a stream whose end
//! is logged after its handler returned. A value that is not a format is named in a warning.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::send_with_headers;
use common::daemon::{Daemon, Home};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Every stdout line as a JSON object; panics naming the first line that is not one.
fn json_lines(d: &Daemon) -> Vec<Value> {
    d.stdout()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
            assert!(v.is_object(), "stdout line is not a JSON object: {line}");
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(v.get(key).is_some(), "no {key:?} in log line {line}");
            }
            v
        })
        .collect()
}

/// The log lines whose span carries `request_id == id` and whose message is `message`.
fn lines_of<'a>(lines: &'a [Value], id: &str, message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["span"]["request_id"] == id && v["fields"]["message"] == message)
        .collect()
}

/// Polls the daemon's stdout until `done` holds (logs of a finished request may trail its
/// reply by a moment); panics with the output after 10 s.
fn wait_until(d: &Daemon, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let lines = json_lines(d);
        if done(&lines) {
            return lines;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no {what} in the log:\n{}",
            d.stdout()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_carry_the_request_id() {
    let home = Home::new();
    let d = home.start(&[("MINDIE_LOG_FORMAT", "json"), ("MINDIE_LOG_LEVEL", "debug")]);

    let lines = json_lines(&d);
    assert!(
        lines
            .iter()
            .any(|v| v["fields"]["message"] == "Daemon start success!" && v["level"] == "INFO"),
        "no start line:\n{}",
        d.stdout()
    );

    // A plain request and a stream, each with an id chosen by the client.
    let (plain_id, stream_id) = ("ops-json-log-plain-0001", "ops-json-log-stream-0002");
    let body = json!({"model": "mock-model", "prompt": "hello", "max_tokens": 4});
    let r = send_with_headers(
        home.business(),
        None,
        "POST",
        "/v1/completions",
        Some(&body.to_string()),
        &[("RequestUUID", plain_id)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.headers["RequestUUID"], plain_id);
    let generated = r.json()["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(generated > 0, "{}", r.text());

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let s = send_with_headers(
        home.business(),
        None,
        "POST",
        "/v1/completions",
        Some(&streamed.to_string()),
        &[("RequestUUID", stream_id)],
    )
    .await
    .unwrap();
    assert_eq!(s.status, 200, "{}", s.text());
    assert!(s.text().contains("data: [DONE]"), "{}", s.text());

    let lines = wait_until(&d, "generation end of both requests", |l| {
        !lines_of(l, plain_id, "generation ended").is_empty()
            && !lines_of(l, stream_id, "generation ended").is_empty()
    });

    // The plain request: its answer and its generation's end, under its id and route.
    let answered = lines_of(&lines, plain_id, "request answered");
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["fields"]["status"], 200);
    assert_eq!(answered[0]["span"]["path"], "/v1/completions");
    assert_eq!(answered[0]["span"]["method"], "POST");
    assert_eq!(answered[0]["level"], "DEBUG");
    let ended = lines_of(&lines, plain_id, "generation ended");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["fields"]["success"], true);
    assert_eq!(ended[0]["fields"]["generated_tokens"], generated);

    // The stream ends after its handler returned; its end still carries its id.
    let ended = lines_of(&lines, stream_id, "generation ended");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["fields"]["success"], true);
    assert!(ended[0]["fields"]["generated_tokens"].as_u64().unwrap() > 0);

    // No id is mixed up: a line of one request never names the other.
    for v in &lines {
        if v["span"]["request_id"] == plain_id {
            assert!(!v.to_string().contains(stream_id), "{v}");
        }
    }

    // A request without an id gets a fresh one, logged as the reply header says.
    let r = send_with_headers(home.business(), None, "GET", "/v1/models", None, &[])
        .await
        .unwrap();
    let fresh = r.headers["RequestUUID"].to_str().unwrap().to_string();
    assert_ne!(fresh, plain_id);
    wait_until(&d, "the fresh id", |l| {
        !lines_of(l, &fresh, "request answered").is_empty()
    });
}

#[test]
fn an_unknown_log_format_is_named_with_the_allowed_values() {
    let home = Home::new();
    let d = home.start(&[("MINDIE_LOG_FORMAT", "xml")]);
    let out = d.stdout();
    let warning = out
        .lines()
        .find(|l| l.contains("MINDIE_LOG_FORMAT"))
        .unwrap_or_else(|| panic!("no warning about MINDIE_LOG_FORMAT:\n{out}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("\"xml\""), "{warning}");
    assert!(warning.contains("text, json"), "{warning}");
    // The daemon keeps its text lines and serves.
    assert!(out.lines().any(|l| l == "Daemon start success!"), "{out}");
    assert!(serde_json::from_str::<Value>(warning).is_err(), "{warning}");
}
