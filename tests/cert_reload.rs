//! Certificate, key and CRL rotation without a restart, on the real binary with real mutual
//! TLS: the files named in `config.json` are replaced on disk, the daemon gets SIGHUP, and
//! each test waits for the daemon's own "TLS reload done" line before looking.
//!
//! - a new server certificate (new key, new serial, same CA) reaches new connections while a
//!   kept-alive connection and a half-sent request finish on the old one;
//! - a new CRL revoking a client refuses that client on new connections; another client of
//!   the same CA still gets in;
//! - a garbage certificate or a 0644 key is refused with a message naming the file; the old
//!   certificate stays in use and the management plane keeps answering; once fixed, the next
//!   SIGHUP takes the new material;
//! - without TLS, SIGHUP is a logged no-op and the daemon keeps serving;
//! - the Controller's and Coordinator's HTTP client (`HttpClient::live`) dials with the
//!   material of the moment: after its holder is replaced, the next call makes a new
//!   connection with the new config instead of reusing a pooled one.
//!
//! The helpers are in `tests/common/rotate.rs`, shared with the Controller's and the
//! Coordinator's reload tests.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use common::pki::{Pki, SERVER_PASS};
use common::rotate::{
    chmod, client, crl_revoking, fresh_get, good_client, issue, put, put_text, reload_report,
    serial_of, sighup_and_wait, tls_connect, Conn, Files,
};
use mindie::motor::client::HttpClient;
use mindie::security::reload::Live;
use mindie::security::tls::client_config;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Copies the shared PKI's CA, server identity and CRL into `home/tls` and points every plane
/// (business, management, metrics) at the copies, with mutual TLS.
fn tls_home(pki: &Pki) -> (Home, Files) {
    let mut home = Home::new();
    let files = Files::copy_in(pki, &home.path().join("tls"));
    let dir = files.dir.clone();
    let d = format!("{}/", dir.display());
    let (cert, key, pwd) = (
        files.cert.to_str().unwrap(),
        files.key.to_str().unwrap(),
        files.pwd.to_str().unwrap(),
    );
    home.set("/ServerConfig/httpsEnabled", true)
        .set("/ServerConfig/tlsCaPath", d.as_str())
        .set("/ServerConfig/tlsCaFile", serde_json::json!(["ca.pem"]))
        .set("/ServerConfig/tlsCert", cert)
        .set("/ServerConfig/tlsPk", key)
        .set("/ServerConfig/tlsPkPwd", pwd)
        .set("/ServerConfig/tlsCrlPath", d.as_str())
        .set(
            "/ServerConfig/tlsCrlFiles",
            serde_json::json!(["ca.crl.pem"]),
        )
        .set(
            "/ServerConfig/managementTlsCaFile",
            serde_json::json!(["ca.pem"]),
        )
        .set("/ServerConfig/managementTlsCert", cert)
        .set("/ServerConfig/managementTlsPk", key)
        .set("/ServerConfig/managementTlsPkPwd", pwd)
        .set("/ServerConfig/managementTlsCrlPath", d.as_str())
        .set(
            "/ServerConfig/managementTlsCrlFiles",
            serde_json::json!(["ca.crl.pem"]),
        );
    (home, files)
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_get_the_new_certificate_and_open_ones_finish() {
    let pki = Pki::shared();
    let (home, files) = tls_home(pki);
    let mut d = home.start(&[]);
    let addr = home.business();
    let serial_a = serial_of(&pki.server_cert);

    // A kept-alive connection and a request whose body is only half sent, both on cert A.
    let mut kept = Conn::open(addr, good_client(pki)).await.unwrap();
    assert_eq!(kept.server_serial, serial_a);
    assert_eq!(kept.get("/v1/models").await.unwrap(), 200);
    let mut half = tls_connect(addr, good_client(pki)).await.unwrap();
    let body =
        r#"{"model":"mock-model","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    half.write_all(head.as_bytes()).await.unwrap();
    half.write_all(&body.as_bytes()[..10]).await.unwrap();
    half.flush().await.unwrap();

    // Certificate B: a new key and a new serial from the same CA, installed over the files
    // the daemon was started with.
    let (cert_b, key_b) = issue(pki, &files.dir, "server-b", "server_ext");
    let serial_b = serial_of(&cert_b);
    assert_ne!(serial_a, serial_b);
    put(&key_b, &files.key, 0o600);
    put(&cert_b, &files.cert, 0o640);
    let out = sighup_and_wait(&mut d, 1);
    let report = reload_report(&out, 1);
    assert!(
        report.contains("TLS reload done: every plane uses the new material"),
        "{report}"
    );
    assert!(
        report.contains("TLS material reloaded: business"),
        "{report}"
    );
    assert!(!report.contains(SERVER_PASS), "the key password was logged");

    // New connections: certificate B, on business and management alike.
    let (serial, status) = fresh_get(addr, good_client(pki), "/v1/models")
        .await
        .unwrap();
    assert_eq!((serial, status), (serial_b.clone(), 200));
    let (serial, status) = fresh_get(home.mgmt(), good_client(pki), "/health")
        .await
        .unwrap();
    assert_eq!((serial, status), (serial_b.clone(), 200));

    // The open ones finish on certificate A.
    assert_eq!(kept.get("/v1/models").await.unwrap(), 200);
    assert_eq!(kept.server_serial, serial_a);
    half.write_all(&body.as_bytes()[10..]).await.unwrap();
    half.flush().await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !String::from_utf8_lossy(&reply).contains("\r\n\r\n") {
            match half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(read.is_ok(), "no reply to the half-sent request: {reply}");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_crl_refuses_the_revoked_client_on_new_connections() {
    let pki = Pki::shared();
    let (home, files) = tls_home(pki);
    let mut d = home.start(&[]);
    let addr = home.business();
    let (second_cert, second_key) = issue(pki, &files.dir, "second-client", "client_ext");
    let second = client(pki, &second_cert, &second_key, None);

    for (what, cfg) in [("good", good_client(pki)), ("second", second.clone())] {
        let (_, status) = fresh_get(addr, cfg, "/v1/models")
            .await
            .unwrap_or_else(|e| panic!("{what} client before the reload: {e}"));
        assert_eq!(status, 200, "{what}");
    }
    // A connection of the good client, open across the reload.
    let mut kept = Conn::open(addr, good_client(pki)).await.unwrap();
    assert_eq!(kept.get("/v1/models").await.unwrap(), 200);

    // The new CRL revokes the good client (and the one revoked before).
    let crl = crl_revoking(
        pki,
        &files.dir,
        &[&pki.client_cert, &pki.revoked_client_cert],
    );
    put(&crl, &files.crl, 0o640);
    let out = sighup_and_wait(&mut d, 1);
    assert!(
        reload_report(&out, 1).contains("every plane uses the new material"),
        "{out}"
    );

    let refused = fresh_get(addr, good_client(pki), "/v1/models").await;
    assert!(
        refused.is_err(),
        "a client revoked by the new CRL was served: {refused:?}"
    );
    let refused = fresh_get(home.mgmt(), good_client(pki), "/health").await;
    assert!(refused.is_err(), "management served a revoked client");
    let old_revoked = client(pki, &pki.revoked_client_cert, &pki.revoked_client_key, None);
    assert!(fresh_get(addr, old_revoked, "/v1/models").await.is_err());
    let (_, status) = fresh_get(addr, second, "/v1/models")
        .await
        .unwrap_or_else(|e| panic!("the second client after the reload: {e}"));
    assert_eq!(status, 200);
    // The connection accepted before the reload finishes its business.
    assert_eq!(kept.get("/v1/models").await.unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_material_is_refused_and_the_old_stays_in_use() {
    let pki = Pki::shared();
    let (home, files) = tls_home(pki);
    let mut d = home.start(&[]);
    let addr = home.business();
    let serial_a = serial_of(&pki.server_cert);
    let (cert_b, key_b) = issue(pki, &files.dir, "server-b", "server_ext");
    let serial_b = serial_of(&cert_b);

    // 1. A certificate file that holds no certificate.
    put_text("this is not a certificate\n", &files.cert, 0o640);
    let out = sighup_and_wait(&mut d, 1);
    let report = reload_report(&out, 1);
    assert!(
        report.contains("TLS material NOT reloaded: business")
            && report.contains(files.cert.to_str().unwrap())
            && report.contains("keeps its old material"),
        "{report}"
    );
    assert!(report.contains("kept their old material"), "{report}");
    still_a(&home, pki, &serial_a, "a garbage certificate").await;

    // 2. The new certificate with its key readable by everyone (0644).
    put(&cert_b, &files.cert, 0o640);
    put(&key_b, &files.key, 0o644);
    let out = sighup_and_wait(&mut d, 2);
    let report = reload_report(&out, 2);
    assert!(
        report.contains("TLS material NOT reloaded: business")
            && report.contains(files.key.to_str().unwrap())
            && report.contains("0644")
            && report.contains("chmod 600"),
        "{report}"
    );
    assert!(!report.contains(SERVER_PASS), "the password was logged");
    still_a(&home, pki, &serial_a, "a 0644 key").await;

    // 3. Fixed: the next SIGHUP takes certificate B.
    chmod(&files.key, 0o600);
    let out = sighup_and_wait(&mut d, 3);
    assert!(
        reload_report(&out, 3).contains("every plane uses the new material"),
        "{out}"
    );
    let (serial, status) = fresh_get(addr, good_client(pki), "/v1/models")
        .await
        .unwrap();
    assert_eq!((serial, status), (serial_b, 200));
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon stopped");
}

/// New connections to business and management still see the certificate with `serial` and
/// are served.
async fn still_a(home: &Home, pki: &Pki, serial: &[u8], what: &str) {
    for (addr, path) in [(home.business(), "/v1/models"), (home.mgmt(), "/health")] {
        let (got, status) = fresh_get(addr, good_client(pki), path)
            .await
            .unwrap_or_else(|e| panic!("{path} after {what}: {e}"));
        assert_eq!(
            (got.as_slice(), status),
            (serial, 200),
            "{path} after {what}"
        );
    }
}

#[tokio::test]
async fn sighup_without_tls_is_a_no_op() {
    let home = Home::new();
    let mut d = home.start(&[]);
    d.signal(Signal::SIGHUP);
    let t0 = Instant::now();
    while !d.output().contains("nothing to reload") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no reload line:\n{}",
            d.output()
        );
        assert!(d.child.try_wait().unwrap().is_none(), "{}", d.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = common::client::get(home.business(), "/v1/models").await;
    assert_eq!(r.status, 200);
    let r = common::client::get(home.mgmt(), "/health").await;
    assert_eq!(r.status, 200);
}

/// The Motor HTTP client takes its TLS config from a `Live` holder: once the holder is
/// replaced, the next call dials a new connection with the new config (a client trusting
/// another CA is refused the daemon's certificate) instead of reusing the pooled one, and
/// good material makes it work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_motor_client_dials_with_the_material_of_the_moment() {
    let pki = Pki::shared();
    let home = pki.mtls_home();
    let _d = home.start(&[]);
    let live = Live::new(good_client(pki));
    let http = HttpClient::live(Some(live.clone()), Duration::from_secs(10));
    for _ in 0..2 {
        let r = http.get(home.business(), "/v1/models").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // New material that does not trust the daemon's CA: a pooled connection would still
    // answer; a new one fails its handshake.
    let other = client_config(
        std::slice::from_ref(&pki.other_ca),
        Some((
            &pki.client_cert,
            &pki.client_key,
            Some(&pki.client_key_pwd_file),
        )),
    )
    .unwrap();
    live.replace(other);
    let refused = http.get(home.business(), "/v1/models").await;
    let err = refused.expect_err("a call after the reload reused the old connection");
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    live.replace(good_client(pki));
    let r = http.get(home.business(), "/v1/models").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
}
