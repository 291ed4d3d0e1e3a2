//! TLS over real sockets: a tokio-rustls server built by `security::tls::server_config` from
//! the openssl-made test PKI, and rustls / `openssl s_client` clients against it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::sync::Arc;

use common::pki::Pki;
use mindie::security::certinfo::{self, Severity};
use mindie::security::keys::KeyError;
use mindie::security::perms::PermChecker;
use mindie::security::tls::{self, TlsError};
use mindie::security::TlsFiles;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const REPLY: &[u8] = b"hello from mindie\n";

/// A server answering [`REPLY`] to every TLS connection; each handshake's outcome (ALPN or
/// error text) is sent on the channel.
struct TestServer {
    port: u16,
    outcomes: mpsc::UnboundedReceiver<Result<Option<Vec<u8>>, String>>,
}

async fn serve(config: Arc<rustls::ServerConfig>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, outcomes) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(stream).await {
                    Ok(mut tls) => {
                        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let _ = tls.write_all(REPLY).await;
                        let _ = tls.shutdown().await;
                        let _ = tx.send(Ok(alpn));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        }
    });
    TestServer { port, outcomes }
}

impl TestServer {
    async fn outcome(&mut self) -> Result<Option<Vec<u8>>, String> {
        self.outcomes.recv().await.expect("server outcome")
    }
}

/// Connects, reads everything; `Err` with the error text when the handshake or read fails.
async fn fetch(port: u16, config: Arc<rustls::ClientConfig>) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tls.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    Ok(buf)
}

fn server(files: &TlsFiles) -> Arc<rustls::ServerConfig> {
    tls::server_config(files, &mut PermChecker::new(true)).unwrap()
}

fn good_client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    tls::client_config(
        std::slice::from_ref(&pki.ca),
        Some((
            &pki.client_cert,
            &pki.client_key,
            Some(pki.client_key_pwd_file.as_path()),
        )),
    )
    .unwrap()
}

fn client_with(pki: &Pki, cert: &Path, key: &Path) -> Arc<rustls::ClientConfig> {
    tls::client_config(std::slice::from_ref(&pki.ca), Some((cert, key, None))).unwrap()
}

#[tokio::test]
async fn good_client_cert_succeeds_with_alpn() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(true))).await;
    let mut client = (*good_client(pki)).clone();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let got = fetch(srv.port, Arc::new(client)).await;
    assert_eq!(got.as_deref(), Ok(REPLY));
    assert_eq!(srv.outcome().await, Ok(Some(b"h2".to_vec())));
}

#[tokio::test]
async fn missing_client_cert_refused() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(true))).await;
    let client = tls::client_config(std::slice::from_ref(&pki.ca), None).unwrap();
    assert!(fetch(srv.port, client).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("no certificates"), "{err}");
}

#[tokio::test]
async fn client_from_other_ca_refused() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(true))).await;
    let client = client_with(pki, &pki.other_ca_client_cert, &pki.other_ca_client_key);
    assert!(fetch(srv.port, client).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn revoked_client_refused_by_crl() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(true))).await;
    let client = client_with(pki, &pki.revoked_client_cert, &pki.revoked_client_key);
    assert!(fetch(srv.port, client).await.is_err());
    let err = srv.outcome().await.unwrap_err();
    assert!(err.contains("Revoked"), "{err}");
    // Without the CRL the same client is accepted: the refusal above is the CRL's doing.
    let mut files = pki.server_files(true);
    files.crl_files.clear();
    let mut srv = serve(server(&files)).await;
    let client = client_with(pki, &pki.revoked_client_cert, &pki.revoked_client_key);
    assert_eq!(fetch(srv.port, client).await.as_deref(), Ok(REPLY));
    assert!(srv.outcome().await.is_ok());
}

#[tokio::test]
async fn server_without_ca_needs_no_client_cert() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(false))).await;
    let client = tls::client_config(std::slice::from_ref(&pki.ca), None).unwrap();
    assert_eq!(fetch(srv.port, client).await.as_deref(), Ok(REPLY));
    assert!(srv.outcome().await.is_ok());
}

#[tokio::test]
async fn traditional_encrypted_key_loads_and_serves() {
    let pki = Pki::shared();
    let text = std::fs::read_to_string(&pki.server_key_traditional).unwrap();
    assert!(text.contains("Proc-Type: 4,ENCRYPTED"));
    let pkcs8 = std::fs::read_to_string(&pki.server_key).unwrap();
    assert!(pkcs8.contains("BEGIN ENCRYPTED PRIVATE KEY"));
    let mut files = pki.server_files(true);
    files.key = pki.server_key_traditional.clone();
    let mut srv = serve(server(&files)).await;
    assert_eq!(
        fetch(srv.port, good_client(pki)).await.as_deref(),
        Ok(REPLY)
    );
    assert!(srv.outcome().await.is_ok());
}

#[test]
fn wrong_password_names_key_and_password_file() {
    let pki = Pki::shared();
    for key in [&pki.server_key, &pki.server_key_traditional] {
        let mut files = pki.server_files(true);
        files.key = key.clone();
        files.key_password = Some(pki.wrong_pwd_file.clone());
        let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, TlsError::Key(KeyError::WrongPassphrase { .. })),
            "{msg}"
        );
        assert!(msg.contains("wrong passphrase"), "{msg}");
        assert!(msg.contains(&key.display().to_string()), "{msg}");
        assert!(
            msg.contains(&pki.wrong_pwd_file.display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains("not the passphrase"), "{msg}");
    }
}

#[test]
fn encrypted_key_without_password_file_names_tls_pk_pwd() {
    let pki = Pki::shared();
    let mut files = pki.server_files(false);
    files.key_password = None;
    let msg = tls::server_config(&files, &mut PermChecker::new(true))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("tlsPkPwd"), "{msg}");
    assert!(msg.contains(&pki.server_key.display().to_string()), "{msg}");
}

#[test]
fn rsa_2048_refused_with_3072_advice() {
    let pki = Pki::shared();
    let files = TlsFiles {
        ca_files: vec![],
        cert: pki.weak_cert.clone(),
        key: pki.weak_key.clone(),
        key_password: None,
        crl_files: vec![],
    };
    let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TlsError::WeakRsa { bits: 2048, .. }), "{msg}");
    assert!(msg.contains(&pki.weak_cert.display().to_string()), "{msg}");
    assert!(msg.contains("2048 bits"), "{msg}");
    assert!(
        msg.contains("openssl genrsa -aes256 -out server.key.pem 3072"),
        "{msg}"
    );
}

#[test]
fn expired_cert_and_mismatched_key_refused() {
    let pki = Pki::shared();
    let mut files = pki.server_files(true);
    files.cert = pki.expired_server_cert.clone();
    let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
    assert!(matches!(err, TlsError::Expired { .. }), "{err}");
    assert!(err.to_string().contains("server.expired.pem"), "{err}");

    let mut files = pki.server_files(true);
    files.key = pki.revoked_client_key.clone();
    files.key_password = None;
    let err = tls::server_config(&files, &mut PermChecker::new(true)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{msg}");
    assert!(
        msg.contains("revoked.key.pem") && msg.contains("server.pem"),
        "{msg}"
    );
}

#[test]
fn bad_ca_and_crl_files_are_named() {
    let pki = Pki::shared();
    let mut files = pki.server_files(true);
    files.crl_files = vec![pki.ca.clone()]; // a certificate is not a CRL
    let msg = tls::server_config(&files, &mut PermChecker::new(true))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("CRL") && msg.contains("ca.pem"), "{msg}");
    let mut files = pki.server_files(true);
    files.ca_files = vec![pki.crl.clone()];
    let msg = tls::server_config(&files, &mut PermChecker::new(true))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("CA file") && msg.contains("ca.crl.pem"),
        "{msg}"
    );
}

#[test]
fn certinfo_reports_good_and_bad() {
    let pki = Pki::shared();
    let good = certinfo::inspect(&pki.server_files(true));
    assert!(
        good.iter().all(|f| f.severity != Severity::Error),
        "{good:#?}"
    );
    assert!(
        good.iter().any(|f| f.message.contains("chains to CA")),
        "{good:#?}"
    );
    assert!(
        good.iter().any(|f| f.message.contains("matches")),
        "{good:#?}"
    );
    assert!(
        good.iter().any(|f| f.message.contains("RSA 3072 bits")),
        "{good:#?}"
    );

    // The revoked client's certificate inspected as if it were a server's.
    let revoked = TlsFiles {
        cert: pki.revoked_client_cert.clone(),
        key: pki.revoked_client_key.clone(),
        key_password: None,
        ..pki.server_files(true)
    };
    let found = certinfo::inspect(&revoked);
    assert!(
        found
            .iter()
            .any(|f| f.severity == Severity::Error && f.message.contains("revoked")),
        "{found:#?}"
    );
    let weak = TlsFiles {
        cert: pki.weak_cert.clone(),
        key: pki.revoked_client_key.clone(),
        key_password: None,
        ..pki.server_files(true)
    };
    let found = certinfo::inspect(&weak);
    let errors: Vec<_> = found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.message.as_str())
        .collect();
    assert!(errors.iter().any(|m| m.contains("2048")), "{found:#?}");
    assert!(
        errors.iter().any(|m| m.contains("does not match")),
        "{found:#?}"
    );
    let other = TlsFiles {
        ca_files: vec![pki.other_ca.clone()],
        ..pki.server_files(true)
    };
    let found = certinfo::inspect(&other);
    assert!(
        found
            .iter()
            .any(|f| f.severity == Severity::Warning && f.message.contains("not issued by")),
        "{found:#?}"
    );
}

/// `openssl s_client` against the server; returns (success, stdout + stderr).
fn s_client(pki: &Pki, port: u16, version_args: &[&str]) -> (bool, String) {
    let pass = format!("file:{}", pki.client_key_pwd_file.display());
    let connect = format!("127.0.0.1:{port}");
    let out = std::process::Command::new("openssl")
        .arg("s_client")
        .args(version_args)
        .args(["-connect", &connect, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(&pki.ca)
        .arg("-cert")
        .arg(&pki.client_cert)
        .arg("-key")
        .arg(&pki.client_key)
        .args(["-pass", &pass, "-verify_return_error", "-ign_eof"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_tls11_refused_tls12_and_tls13_accepted() {
    let pki = Pki::shared();
    let mut srv = serve(server(&pki.server_files(true))).await;
    let port = srv.port;

    // SECLEVEL=0 so the client really offers TLS 1.1 (OpenSSL 3 refuses it locally otherwise).
    let (ok, text) = tokio::task::spawn_blocking(move || {
        s_client(pki, port, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
    })
    .await
    .unwrap();
    assert!(!ok, "TLS 1.1 handshake should fail:\n{text}");
    assert!(text.contains("Cipher is (NONE)"), "{text}");
    // rustls refuses the TLS 1.1 hello (no TLS 1.2+ version, no signature_algorithms).
    assert!(srv.outcome().await.is_err());

    for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = tokio::task::spawn_blocking(move || s_client(pki, port, &[flag]))
            .await
            .unwrap();
        assert!(ok, "{flag} should succeed:\n{text}");
        assert!(text.contains(name), "{text}");
        assert!(text.contains("hello from mindie"), "{text}");
        assert!(srv.outcome().await.is_ok());
    }
}
