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
//! - without TLS, SIGHUP is a logged no-op and the daemon keeps serving.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::{Daemon, Home};
use common::pki::{openssl, Pki, SERVER_PASS};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mindie::security::certinfo;
use mindie::security::tls::client_config;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The daemon's line after each SIGHUP reload (success or not).
const RELOAD_DONE: &str = "TLS reload done";

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

/// The daemon's own copies of the TLS files (under its home), which the tests replace.
struct Files {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    pwd: PathBuf,
    crl: PathBuf,
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies `from` to `to` with `mode`, through a temporary file and a rename, as an operator's
/// `install -m` or a config-management tool does.
fn put(from: &Path, to: &Path, mode: u32) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    chmod(&tmp, mode);
    std::fs::rename(&tmp, to).unwrap();
}

/// Writes `text` as `to` with `mode` (temporary file and rename).
fn put_text(text: &str, to: &Path, mode: u32) {
    let tmp = to.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    chmod(&tmp, mode);
    std::fs::rename(&tmp, to).unwrap();
}

/// Copies the shared PKI's CA, server identity and CRL into `home/tls` and points every plane
/// (business, management, metrics) at the copies, with mutual TLS.
fn tls_home(pki: &Pki) -> (Home, Files) {
    let mut home = Home::new();
    let dir = home.path().join("tls");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let files = Files {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key.pem"),
        pwd: dir.join("server.pwd"),
        crl: dir.join("ca.crl.pem"),
        dir: dir.clone(),
    };
    put(&pki.ca, &files.ca, 0o640);
    put(&pki.server_cert, &files.cert, 0o640);
    put(&pki.server_key, &files.key, 0o600);
    put(&pki.server_key_pwd_file, &files.pwd, 0o600);
    put(&pki.crl, &files.crl, 0o640);
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

/// A serial no other certificate of the PKI uses (the PKI counts from 0x2000).
fn fresh_serial() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("0x5eed{:04x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Issues a leaf from the PKI's CA into `dir`: `<name>.pem` for a new key `<name>.key.pem`,
/// with extension section `ext` (`server_ext` / `client_ext`). A server key is 3072-bit RSA
/// encrypted with the server's password file (as the daemon's rules want); a client key is
/// a clear EC P-256 key. Returns (certificate, key), mode 0640 / 0600.
fn issue(pki: &Pki, dir: &Path, name: &str, ext: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key.pem"));
    let csr = dir.join(format!("{name}.csr"));
    let cert = dir.join(format!("{name}.pem"));
    let (k, c, r) = (
        key.to_str().unwrap(),
        csr.to_str().unwrap(),
        cert.to_str().unwrap(),
    );
    let pwd = format!("file:{}", pki.server_key_pwd_file.display());
    let server = ext == "server_ext";
    if server {
        openssl(
            pki.dir.path(),
            &["genrsa", "-aes256", "-passout", &pwd, "-out", k, "3072"],
        );
    } else {
        openssl(
            pki.dir.path(),
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                k,
            ],
        );
    }
    let subject = if server {
        "/CN=localhost".to_string()
    } else {
        format!("/CN={name}")
    };
    let mut req = vec!["req", "-new", "-config", "pki.cnf", "-key", k];
    if server {
        req.extend(["-passin", &pwd]);
    }
    req.extend(["-subj", &subject, "-out", c]);
    openssl(pki.dir.path(), &req);
    let serial = fresh_serial();
    openssl(
        pki.dir.path(),
        &[
            "x509",
            "-req",
            "-in",
            c,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key.pem",
            "-passin",
            "file:ca.pwd",
            "-set_serial",
            &serial,
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "pki.cnf",
            "-extensions",
            ext,
            "-out",
            r,
        ],
    );
    chmod(&cert, 0o640);
    chmod(&key, 0o600);
    (cert, key)
}

/// A CRL from the PKI's CA revoking exactly `revoked` (its own CA database under `dir`, so
/// the shared PKI's database is untouched). Mode 0640.
fn crl_revoking(pki: &Pki, dir: &Path, revoked: &[&Path]) -> PathBuf {
    let db = dir.join("crl-db");
    std::fs::create_dir(&db).unwrap();
    std::fs::write(db.join("index.txt"), "").unwrap();
    std::fs::write(db.join("crlnumber"), "3000\n").unwrap();
    let cnf = db.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = t\n[t]\ndatabase = {db}/index.txt\ncrlnumber = {db}/crlnumber\n\
             certificate = {ca}\nprivate_key = {key}\ndefault_md = sha256\n\
             default_crl_days = 30\n",
            db = db.display(),
            ca = pki.ca.display(),
            key = pki.ca_key.display(),
        ),
    )
    .unwrap();
    let cnf = cnf.to_str().unwrap();
    for cert in revoked {
        openssl(
            pki.dir.path(),
            &[
                "ca",
                "-config",
                cnf,
                "-passin",
                "file:ca.pwd",
                "-revoke",
                cert.to_str().unwrap(),
            ],
        );
    }
    let out = db.join("new.crl.pem");
    openssl(
        pki.dir.path(),
        &[
            "ca",
            "-config",
            cnf,
            "-passin",
            "file:ca.pwd",
            "-gencrl",
            "-out",
            out.to_str().unwrap(),
        ],
    );
    chmod(&out, 0o640);
    out
}

/// The serial of the (first) certificate in `path`.
fn serial_of(path: &Path) -> Vec<u8> {
    let certs = certinfo::read_certs(path).unwrap();
    certinfo::cert_facts(certs[0].as_ref()).unwrap().serial
}

// ---------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------

/// A client trusting the PKI's CA and presenting `cert`/`key` (`pwd`: its password file).
fn client(pki: &Pki, cert: &Path, key: &Path, pwd: Option<&Path>) -> Arc<rustls::ClientConfig> {
    client_config(std::slice::from_ref(&pki.ca), Some((cert, key, pwd))).unwrap()
}

/// The PKI's good client.
fn good_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    client(
        pki,
        &pki.client_cert,
        &pki.client_key,
        Some(&pki.client_key_pwd_file),
    )
}

/// One kept-alive HTTP/1.1 connection over TLS, and the serial of the certificate the
/// server presented on it.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    server_serial: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
        let tls = tls_connect(addr, cfg).await?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("no server certificate")?;
        let server_serial = certinfo::cert_facts(der.as_ref())?.serial;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn {
            sender,
            server_serial,
        })
    }

    /// GETs `path` on this connection; the status.
    async fn get(&mut self, path: &str) -> Result<u16, String> {
        let req = hyper::Request::get(path)
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?;
        Ok(status)
    }
}

async fn tls_connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))
}

/// A new connection and one GET on it: (server certificate serial, status).
async fn fresh_get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(Vec<u8>, u16), String> {
    let mut c = Conn::open(addr, cfg).await?;
    let status = c.get(path).await?;
    Ok((c.server_serial, status))
}

// ---------------------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------------------

/// Sends SIGHUP and waits until the daemon has logged its `n`-th [`RELOAD_DONE`] line; the
/// whole output. Panics (with the output) after 60 s or when the daemon exits.
fn sighup_and_wait(d: &mut Daemon, n: usize) -> String {
    d.signal(Signal::SIGHUP);
    let t0 = Instant::now();
    loop {
        let out = d.output();
        if out.matches(RELOAD_DONE).count() >= n {
            return out;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("the daemon exited ({st}) on SIGHUP:\n{out}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no reload line {n} after SIGHUP within 60 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The output lines after the `n-1`-th reload line (the `n`-th reload's report).
fn reload_report(out: &str, n: usize) -> String {
    let mut seen = 0;
    let mut lines = Vec::new();
    for line in out.lines() {
        if seen == n - 1 {
            lines.push(line);
        }
        if line.contains(RELOAD_DONE) {
            seen += 1;
        }
    }
    lines.join("\n")
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
