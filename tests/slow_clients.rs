//! Slow and abusive clients against the real binary (StandardMock engine), with the connection
//! limits set small through their environment variables so the tests run in seconds:
//! a slowloris request head, a thousand silent connections, an oversized head (HTTP/1.1 and
//! HTTP/2), and TLS clients that never finish the handshake or never send a request. Each is
//! cut off within its limit (plus slack for a loaded machine) while ordinary clients are served
//! the whole time. Also: a bad value of each variable stops the start (and fails `check`)
//! with a message naming the variable, the value and the allowed range.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json, send};
use common::daemon::{Daemon, Home};
use common::pki::Pki;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: &str = "MINDIE_HTTP_HEADER_TIMEOUT_S";
const TLS_TIMEOUT: &str = "MINDIE_TLS_HANDSHAKE_TIMEOUT_S";
const MAX_HEADER: &str = "MINDIE_HTTP_MAX_HEADER_BYTES";

/// Time a loaded 2-core machine may add to a limit before the cut-off counts as late.
const SLACK: Duration = Duration::from_millis(2500);

fn start(env: &[(&str, &str)]) -> (Home, Daemon) {
    let home = Home::new();
    let d = home.start(env);
    (home, d)
}

/// Reads until the peer closes (end of stream or reset); returns when, and what it sent.
async fn until_closed(mut s: impl AsyncReadExt + Unpin, t0: Instant) -> (Duration, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return (t0.elapsed(), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// An ordinary client's request and the checks on its reply.
async fn served(addr: SocketAddr) {
    let r = get(addr, "/v1/models").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_json(
        addr,
        "/v1/completions",
        &json!({"model": "mock-model", "prompt": "hello", "max_tokens": 4}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 4);
}

/// Runs [`served`] over and over until `done` says stop; returns how many rounds passed.
async fn serve_meanwhile(addr: SocketAddr, done: impl Fn() -> bool) -> usize {
    let mut rounds = 0;
    while !done() {
        served(addr).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rounds
}

#[tokio::test]
async fn slowloris_head_is_cut_off_while_others_are_served() {
    let (home, _d) = start(&[(HEADER_TIMEOUT, "2")]);
    let addr = home.business();
    let t0 = Instant::now();
    let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let sent_w = sent.clone();
    // 41 bytes at one a second: a head that would take 41 s.
    let writer = tokio::spawn(async move {
        for b in b"GET /v1/models HTTP/1.1\r\nHost: slowloris\r\n\r\n" {
            if wr.write_all(&[*b]).await.is_err() {
                return;
            }
            sent_w.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let reader = tokio::spawn(until_closed(rd, t0));
    let rounds = serve_meanwhile(addr, || reader.is_finished()).await;
    let (closed_after, reply) = reader.await.unwrap();
    writer.abort();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        closed_after >= Duration::from_millis(1500)
            && closed_after <= Duration::from_secs(2) + SLACK,
        "the slow head must be cut off at the 2 s header timeout, was {closed_after:?}"
    );
    assert!(
        !reply.starts_with("HTTP/1.1 2"),
        "an incomplete head got an answer: {reply}"
    );
    let n = sent.load(Ordering::SeqCst);
    assert!(n < 10, "{n} bytes went out before the cut-off");
    assert!(
        rounds >= 3,
        "only {rounds} ordinary rounds were served meanwhile"
    );
}

/// Makes sure this process (and so the daemon it starts) may hold `n` sockets plus spares.
fn allow_files(n: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = n + 512;
    if soft < want {
        assert!(
            hard >= want,
            "RLIMIT_NOFILE hard limit {hard} is below the {want} this test needs"
        );
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

#[tokio::test]
async fn silent_connections_are_closed_and_others_served_meanwhile() {
    const SILENT: usize = 1000;
    allow_files(SILENT as u64);
    let (home, _d) = start(&[(HEADER_TIMEOUT, "4")]);
    let addr = home.business();
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));

    // Ordinary clients all along; each round notes how many silent connections were open.
    let stop = Arc::new(AtomicUsize::new(0));
    let ordinary = {
        let (opened, closed, stop) = (opened.clone(), closed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut open_during = Vec::new();
            while stop.load(Ordering::SeqCst) == 0 {
                served(addr).await;
                let open = opened.load(Ordering::SeqCst) - closed.load(Ordering::SeqCst);
                open_during.push(open);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            open_during
        })
    };

    // The silent ones, opened in waves that stay within the listen backlog.
    let t0 = Instant::now();
    let mut watchers = Vec::with_capacity(SILENT);
    for wave in 0..SILENT.div_ceil(100) {
        let n = 100.min(SILENT - wave * 100);
        for _ in 0..n {
            let (opened, closed) = (opened.clone(), closed.clone());
            watchers.push(tokio::spawn(async move {
                let s = TcpStream::connect(addr).await.unwrap();
                let at = Instant::now();
                opened.fetch_add(1, Ordering::SeqCst);
                let r = tokio::time::timeout(Duration::from_secs(30), until_closed(s, at)).await;
                closed.fetch_add(1, Ordering::SeqCst);
                r.map(|(after, got)| (after, got.len()))
            }));
        }
        while opened.load(Ordering::SeqCst) < watchers.len() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let all_open = t0.elapsed();
    eprintln!("opened {SILENT} silent connections in {all_open:?}");

    let mut late = Vec::new();
    for w in watchers {
        match w.await.unwrap() {
            Ok((after, bytes)) => {
                assert_eq!(bytes, 0, "a silent connection got a reply");
                assert!(
                    // (half the timeout: on a loaded machine the client may note its
                    // connection late)
                    after >= Duration::from_secs(2),
                    "closed after {after:?}, long before the 4 s timeout"
                );
                if after > Duration::from_secs(4) + SLACK {
                    late.push(after);
                }
            }
            Err(_) => panic!("a silent connection was still open after 30 s"),
        }
    }
    stop.store(1, Ordering::SeqCst);
    let open_during = ordinary.await.unwrap();
    assert!(
        late.is_empty(),
        "{} of {SILENT} silent connections closed late: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let most = open_during.iter().copied().max().unwrap_or(0);
    assert!(
        open_during.len() >= 5 && most >= SILENT / 4,
        "ordinary rounds {} served with at most {most} silent connections open (opening all \
         took {all_open:?})",
        open_during.len()
    );
    served(addr).await;
}

/// A request whose head is about `bytes` long (one big header).
fn big_head(bytes: usize) -> Vec<u8> {
    let mut head = b"GET /v1/models HTTP/1.1\r\nHost: big\r\nX-Big: ".to_vec();
    head.resize(bytes, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[tokio::test]
async fn oversized_heads_get_431_and_the_daemon_keeps_serving() {
    let (home, _d) = start(&[(MAX_HEADER, "8192")]);
    let addr = home.business();

    // HTTP/1.1: just under the limit is served, over it is 431.
    for (size, want) in [(7000, "HTTP/1.1 200"), (12_000, "HTTP/1.1 431")] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&big_head(size)).await.unwrap();
        let (_, reply) = tokio::time::timeout(Duration::from_secs(10), async {
            // A 200 keeps the connection open: stop at the first reply head.
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            ((), got)
        })
        .await
        .expect("a reply within 10 s");
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with(want), "{size}-byte head: {reply:?}");
    }
    served(addr).await;

    // HTTP/2 (prior knowledge): the stream is refused with 431, the connection lives on.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = |big: bool| {
        let mut b = hyper::Request::builder()
            .uri(format!("http://{addr}/v1/models"))
            .method("GET");
        if big {
            b = b.header("x-big", "a".repeat(12_000));
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    match h2.send_request(req(true)).await {
        Ok(r) => assert_eq!(r.status(), 431),
        // h2 may deliver its REFUSED_STREAM reset before the 431 head.
        Err(e) => {
            let e = format!("{e:?}");
            assert!(e.contains("REFUSED_STREAM"), "{e}");
        }
    }
    let r = h2.send_request(req(false)).await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert!(body.starts_with(b"{"), "{body:?}");
    served(addr).await;
}

#[tokio::test]
async fn tls_clients_that_stall_are_cut_off_while_others_are_served() {
    let pki = Pki::shared();
    let home = pki.mtls_home();
    // Different values, so each cut-off shows which limit made it.
    let _d = home.start(&[(TLS_TIMEOUT, "2"), (HEADER_TIMEOUT, "4")]);
    let addr = home.business();
    let good = mindie::security::tls::client_config(
        std::slice::from_ref(&pki.ca),
        Some((
            pki.client_cert.as_path(),
            pki.client_key.as_path(),
            Some(pki.client_key_pwd_file.as_path()),
        )),
    )
    .unwrap();

    let t0 = Instant::now();
    // Opens TCP and sends nothing.
    let silent = TcpStream::connect(addr).await.unwrap();
    let silent = tokio::spawn(until_closed(silent, t0));
    // Starts a handshake record and never finishes it.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
    let partial = tokio::spawn(until_closed(partial, t0));
    // Finishes the handshake, then sends no request.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(good.clone())
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let handshaken = Instant::now();
    let idle_tls = tokio::spawn(until_closed(tls, handshaken));

    let mut rounds = 0;
    while !(silent.is_finished() && partial.is_finished() && idle_tls.is_finished()) {
        let r = send(addr, Some(good.clone()), "GET", "/v1/models", None)
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        rounds += 1;
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "a stalled client was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (what, task, limit) in [
        ("silent TCP", silent, 2),
        ("half a ClientHello", partial, 2),
        ("no request after the handshake", idle_tls, 4),
    ] {
        let (after, got) = task.await.unwrap();
        let limit = Duration::from_secs(limit);
        assert!(
            after >= limit - Duration::from_millis(500) && after <= limit + SLACK,
            "{what}: closed after {after:?}, limit {limit:?}"
        );
        assert!(
            !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
            "{what}: got an HTTP reply"
        );
    }
    assert!(rounds >= 10, "only {rounds} requests were served meanwhile");
}

#[test]
fn bad_limit_values_stop_the_start_naming_variable_value_and_range() {
    let home = Home::new();
    home.write();
    for (var, value, range) in [
        (HEADER_TIMEOUT, "0", "1..=3600"),
        (TLS_TIMEOUT, "soon", "1..=3600"),
        (MAX_HEADER, "1024", "8192..=1048576"),
    ] {
        let (st, out, err) = home.run_to_exit(&[], &[(var, value)]);
        assert!(!st.success(), "{var}={value} started");
        let all = format!("{out}{err}");
        assert!(
            all.contains(var) && all.contains(&format!("{value:?}")) && all.contains(range),
            "{var}={value}: {all}"
        );
        let (st, out, err) = home.run_to_exit(&["check"], &[(var, value)]);
        assert!(!st.success(), "check passed {var}={value}");
        let all = format!("{out}{err}");
        assert!(all.contains(var) && all.contains(range), "{all}");
    }
}
