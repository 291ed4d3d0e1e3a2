//! The `coordinator` subcommand on real sockets (SPEC-CLUSTER §5, SPEC-PD §2, §4): a prefill
//! and a decode instance (StandardMock, dmi, mutual TLS on interComm) on 127.0.0.1 and
//! 127.0.0.3, the Coordinator on 127.0.0.5 fed the instance list as the Controller sends it.
//! Readiness follows the list and the `/dresult` stream; requests relay P's first chunk and
//! D's frames; a user who hangs up leaves no KV block held; a decode instance that dies ends
//! its requests with an error at once, and later requests get 503 until a pair is back.
//! Without TLS, SIGHUP is a logged no-op; with TLS on its servers, SIGHUP rotates their
//! certificates (new connections get the new one, open ones finish) and refuses broken new
//! material, keeping the old.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::coord::{refresh, refresh_entry, Coord};
use common::pd::{assert_all_blocks_free, link_pair, send, sse_events, Instance};
use common::pki::{Pki, SERVER_PASS};
use common::rotate::{
    fresh_get, good_client, issue, put, reload_report, serial_of, sighup_and_wait,
};
use common::rotate::{Conn, Files};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    send(addr, "GET", path, None, &[]).await.status
}

/// Sends a streamed completion over a raw socket, reads until `chunks` SSE events arrived,
/// then drops the connection.
async fn hang_up_after(addr: std::net::SocketAddr, chunks: usize) {
    let body = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 400,
                      "stream": true, "ignore_eos": true})
    .to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while String::from_utf8_lossy(&seen).matches("data:").count() < chunks {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no stream: {}",
            String::from_utf8_lossy(&seen)
        );
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_relays_and_survives_a_dead_decode_instance() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, None);
    let d = Instance::new(pki, "127.0.0.3", port, None);
    let env = [("MIES_MOCK_STEP_TIME_MS", "20")];
    let _pd = p.start_env(&env);
    let dd = d.start_env(&env);
    link_pair(&p, &d).await;

    let coord = Coord::new("127.0.0.5");
    let _c = coord.start();
    // Nothing listed yet: not ready, requests refused at once with Motor's text.
    assert_eq!(get_status(coord.status_addr(), "/v1/startup").await, 200);
    assert_eq!(get_status(coord.status_addr(), "/v1/readiness").await, 503);
    let body = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 8});
    let r = send(
        coord.predict_addr(),
        "POST",
        "/v1/completions",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.text(), "MindIE-MS Coordinator is not ready");
    let r = send(coord.predict_addr(), "POST", "/v1/models", Some(&body), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid request"));

    let list = refresh(vec![
        refresh_entry(&p, 0, b'P', &[1]),
        refresh_entry(&d, 1, b'D', &[0]),
    ]);
    let r = send(
        coord.manage_addr(),
        "POST",
        "/v1/instances/refresh",
        Some(&list),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_status(coord.status_addr(), "/v1/readiness").await, 200);
    assert_eq!(
        get_status(coord.status_addr(), "/v2/health/ready").await,
        200
    );

    assert_eq!(
        get_status(coord.status_addr(), "/v2/health/live").await,
        200
    );
    assert_eq!(
        get_status(coord.status_addr(), "/v2/models/mock-model/ready").await,
        200
    );
    assert_eq!(
        get_status(coord.status_addr(), "/v2/models/other/ready").await,
        503
    );
    // The Controller's other routes: tasks per instance (-1 unknown), offline/online.
    let m = coord.manage_addr();
    let r = send(m, "GET", "/v1/instances/tasks?id=0&id=7", None, &[]).await;
    assert_eq!(r.json(), json!({"tasks": [0, -1]}));
    let r = send(
        m,
        "POST",
        "/v1/instances/query_tasks",
        Some(&json!({"ids": [1]})),
        &[],
    )
    .await;
    assert_eq!(r.json(), json!({"tasks": [0]}));
    let r = send(m, "GET", "/v1/coordinator_info", None, &[]).await;
    assert_eq!(
        r.json()["schedule_info"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.text()
    );
    let r = send(
        m,
        "POST",
        "/v1/instances/refresh",
        Some(&json!({"ids": [1]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = send(
        m,
        "POST",
        "/v1/instances/offline",
        Some(&json!({"ids": [0]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_status(coord.status_addr(), "/v1/readiness").await, 503);
    let r = send(
        coord.predict_addr(),
        "POST",
        "/v1/completions",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r = send(
        m,
        "POST",
        "/v1/instances/online",
        Some(&json!({"ids": [0]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_status(coord.status_addr(), "/v1/readiness").await, 200);
    let r = send(
        m,
        "POST",
        "/v1/instances/offline",
        Some(&json!({"ids": [9]})),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Not streamed: D's lastData body is the answer.
    let r = send(
        coord.predict_addr(),
        "POST",
        "/v1/completions",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v: Value = r.json();
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    // Streamed chat: P's first chunk then D's, one reply id, ends with [DONE].
    let chat = json!({"model": "mock-model", "messages": [{"role": "user", "content": "hi"}],
                      "max_tokens": 6, "stream": true});
    let r = send(
        coord.predict_addr(),
        "POST",
        "/v1/chat/completions",
        Some(&chat),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let events = sse_events(&text);
    let ids: std::collections::BTreeSet<_> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "{text}");
    assert!(events.len() >= 6, "{text}");

    // A user who hangs up mid-stream: stopInfer reaches both; no KV block stays held.
    hang_up_after(coord.predict_addr(), 3).await;
    assert_all_blocks_free(&p, "prefill after the user hung up").await;
    assert_all_blocks_free(&d, "decode after the user hung up").await;

    // Aggregated metrics on the external port.
    let m = send(coord.external_addr(), "GET", "/metrics", None, &[]).await;
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m.text().contains("request_received_total"), "{}", m.text());

    // D dies mid-stream: the stream ends with an error within seconds, readiness drops and
    // new requests get 503 at once.
    let long = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 400,
                      "stream": true, "ignore_eos": true});
    let addr = coord.predict_addr();
    let inflight =
        tokio::spawn(async move { send(addr, "POST", "/v1/completions", Some(&long), &[]).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    dd.signal(nix::sys::signal::Signal::SIGKILL);
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .expect("in-flight request ended within 10 s")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(r.text().contains("\"error\""), "{}", r.text());
    let t0 = Instant::now();
    while get_status(coord.status_addr(), "/v1/readiness").await != 503 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "readiness did not drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = send(
        coord.predict_addr(),
        "POST",
        "/v1/completions",
        Some(&body),
        &[],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_all_blocks_free(&p, "prefill after D died").await;
}

/// Without TLS a fleet-wide `kill -HUP` (which rotates the daemons' certificates) is a
/// logged no-op: the Coordinator keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_tls_is_logged_and_does_not_stop_the_coordinator() {
    let coord = Coord::new("127.0.0.5");
    let mut c = coord.start();
    c.signal(nix::sys::signal::Signal::SIGHUP);
    c.wait_for("nothing to reload", Duration::from_secs(10));
    assert_eq!(get_status(coord.status_addr(), "/v1/startup").await, 200);
    assert!(
        c.wait_exit(Duration::from_millis(300)).is_none(),
        "{}",
        c.output()
    );
}

/// The status and manage servers with mutual TLS on copies of the PKI's files: a new
/// certificate installed over the files reaches new connections after SIGHUP while an open
/// connection keeps working on the old one; then a key that does not match the certificate
/// is refused (named in the NOT-reloaded line) and the servers keep the certificate they had.
/// New TLS connections to the status and manage servers both see certificate `serial`.
async fn both_planes_serve(coord: &Coord, pki: &Pki, serial: &[u8]) {
    let (got, status) = fresh_get(coord.status_addr(), good_client(pki), "/v1/startup")
        .await
        .unwrap();
    assert_eq!((got.as_slice(), status), (serial, 200));
    let (got, _) = fresh_get(
        coord.manage_addr(),
        good_client(pki),
        "/v1/coordinator_info",
    )
    .await
    .unwrap();
    assert_eq!(got, serial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_servers_certificates_and_refuses_broken_ones() {
    let pki = Pki::shared();
    let mut coord = Coord::new("127.0.0.5");
    let files = Files::copy_in(pki, &coord.dir.path().join("tls"));
    for item in ["status", "controller_server"] {
        coord.config["tls_config"][format!("{item}_tls_enable")] = json!(true);
        coord.config["tls_config"][format!("{item}_tls_items")] = files.motor_item();
    }
    let mut c = coord.start();
    let serial_a = serial_of(&pki.server_cert);
    let mut kept = Conn::open(coord.status_addr(), good_client(pki))
        .await
        .unwrap();
    assert_eq!(kept.server_serial, serial_a);
    assert_eq!(kept.get("/v1/startup").await.unwrap(), 200);

    // Certificate B (new key, new serial, same CA) over the files named in the config.
    let (cert_b, key_b) = issue(pki, &files.dir, "server-b", "server_ext");
    let serial_b = serial_of(&cert_b);
    assert_ne!(serial_a, serial_b);
    put(&key_b, &files.key, 0o600);
    put(&cert_b, &files.cert, 0o640);
    let out = sighup_and_wait(&mut c, 1);
    let report = reload_report(&out, 1);
    for plane in ["tls_config.status", "tls_config.controller_server"] {
        assert!(
            report.contains(&format!("TLS material reloaded: {plane}")),
            "{report}"
        );
    }
    assert!(
        report.contains("TLS reload done: every plane uses the new material"),
        "{report}"
    );
    assert!(!report.contains(SERVER_PASS), "the key password was logged");
    both_planes_serve(&coord, pki, &serial_b).await;
    // The connection opened before the reload goes on, on certificate A.
    assert_eq!(kept.get("/v1/startup").await.unwrap(), 200);
    assert_eq!(kept.server_serial, serial_a);

    // Broken: the old key (A) under certificate B. Refused; B stays in use.
    put(&pki.server_key, &files.key, 0o600);
    let out = sighup_and_wait(&mut c, 2);
    let report = reload_report(&out, 2);
    assert!(
        report.contains("TLS material NOT reloaded: tls_config.status keeps its old material"),
        "{report}"
    );
    assert!(report.contains("kept their old material"), "{report}");
    both_planes_serve(&coord, pki, &serial_b).await;
    assert!(c.child.try_wait().unwrap().is_none(), "{}", c.output());
}
