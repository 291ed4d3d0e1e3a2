//! Certificate rotation test support, shared by the daemon's, the Controller's and the
//! Coordinator's reload tests: copies of the shared PKI's files that a test replaces
//! ([`Files`]), new leaves and CRLs from the PKI's CA ([`issue`], [`crl_revoking`]), a TLS
//! connection that reports the server certificate's serial ([`Conn`], [`fresh_get`]), and
//! SIGHUP with a wait for the process's `TLS reload done` line ([`sighup_and_wait`]).
#![allow(dead_code)]

use super::daemon::Daemon;
use super::pki::{openssl, Pki};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mindie::security::certinfo;
use mindie::security::tls::client_config;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// The line a process logs after each SIGHUP reload (success or not).
pub const RELOAD_DONE: &str = "TLS reload done";

/// A process's own copies of the TLS files, which the tests replace.
pub struct Files {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pwd: PathBuf,
    pub crl: PathBuf,
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Copies `from` to `to` with `mode`, through a temporary file and a rename, as an operator's
/// `install -m` or a config-management tool does.
pub fn put(from: &Path, to: &Path, mode: u32) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    chmod(&tmp, mode);
    std::fs::rename(&tmp, to).unwrap();
}

/// Writes `text` as `to` with `mode` (temporary file and rename).
pub fn put_text(text: &str, to: &Path, mode: u32) {
    let tmp = to.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    chmod(&tmp, mode);
    std::fs::rename(&tmp, to).unwrap();
}

impl Files {
    /// Copies the shared PKI's CA, server identity (encrypted key and its password file) and
    /// CRL into `dir` (created, 0700), with the modes the checks want.
    pub fn copy_in(pki: &Pki, dir: &Path) -> Files {
        std::fs::create_dir_all(dir).unwrap();
        chmod(dir, 0o700);
        let files = Files {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key.pem"),
            pwd: dir.join("server.pwd"),
            crl: dir.join("ca.crl.pem"),
            dir: dir.to_path_buf(),
        };
        put(&pki.ca, &files.ca, 0o640);
        put(&pki.server_cert, &files.cert, 0o640);
        put(&pki.server_key, &files.key, 0o600);
        put(&pki.server_key_pwd_file, &files.pwd, 0o600);
        put(&pki.crl, &files.crl, 0o640);
        files
    }

    /// These files as a Motor `<x>_tls_items` object (mutual TLS with the CRL).
    pub fn motor_item(&self) -> Value {
        json!({"ca_cert": self.ca, "tls_cert": self.cert, "tls_key": self.key,
               "tls_passwd": self.pwd, "tls_crl": self.crl})
    }
}

/// A serial no other certificate of the PKI uses (the PKI counts from 0x2000).
pub fn fresh_serial() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("0x5eed{:04x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Issues a leaf from the PKI's CA into `dir`: `<name>.pem` for a new key `<name>.key.pem`,
/// with extension section `ext` (`server_ext` / `client_ext`). A server key is 3072-bit RSA
/// encrypted with the server's password file (as the daemon's rules want); a client key is
/// a clear EC P-256 key. Returns (certificate, key), mode 0640 / 0600.
pub fn issue(pki: &Pki, dir: &Path, name: &str, ext: &str) -> (PathBuf, PathBuf) {
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
pub fn crl_revoking(pki: &Pki, dir: &Path, revoked: &[&Path]) -> PathBuf {
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
pub fn serial_of(path: &Path) -> Vec<u8> {
    let certs = certinfo::read_certs(path).unwrap();
    certinfo::cert_facts(certs[0].as_ref()).unwrap().serial
}

/// A client trusting the PKI's CA and presenting `cert`/`key` (`pwd`: its password file).
pub fn client(pki: &Pki, cert: &Path, key: &Path, pwd: Option<&Path>) -> Arc<rustls::ClientConfig> {
    client_config(std::slice::from_ref(&pki.ca), Some((cert, key, pwd))).unwrap()
}

/// The PKI's good client.
pub fn good_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    client(
        pki,
        &pki.client_cert,
        &pki.client_key,
        Some(&pki.client_key_pwd_file),
    )
}

/// One kept-alive HTTP/1.1 connection over TLS, and the serial of the certificate the
/// server presented on it.
pub struct Conn {
    pub sender: SendRequest<Full<Bytes>>,
    pub server_serial: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr, cfg: Arc<rustls::ClientConfig>) -> Result<Conn, String> {
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
    pub async fn get(&mut self, path: &str) -> Result<u16, String> {
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

pub async fn tls_connect(
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
pub async fn fresh_get(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(Vec<u8>, u16), String> {
    let mut c = Conn::open(addr, cfg).await?;
    let status = c.get(path).await?;
    Ok((c.server_serial, status))
}

/// Sends SIGHUP and waits until the process has logged its `n`-th [`RELOAD_DONE`] line; the
/// whole output. Panics (with the output) after 60 s or when the process exits.
pub fn sighup_and_wait(d: &mut Daemon, n: usize) -> String {
    d.signal(Signal::SIGHUP);
    let t0 = Instant::now();
    loop {
        let out = d.output();
        if out.matches(RELOAD_DONE).count() >= n {
            return out;
        }
        if let Ok(Some(st)) = d.child.try_wait() {
            panic!("the process exited ({st}) on SIGHUP:\n{out}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no reload line {n} after SIGHUP within 60 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The output lines after the `n-1`-th reload line (the `n`-th reload's report).
pub fn reload_report(out: &str, n: usize) -> String {
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
