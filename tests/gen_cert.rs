//! `mindieservice_daemon gen-cert` on the real binary, against CAs made with the openssl CLI
//! as MindIE's docs make them (`openssl genrsa -aes256`, `-extensions v3_ca`): the result
//! verifies with `openssl verify`, carries the SANs, EKUs and key size asked for, its key opens
//! with the written password (and not with another), every file is 0400, and the daemon's own
//! TLS serves mutual TLS with it. Each bad input is refused, naming the file and field, and
//! nothing is written.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use mindie::security::perms::PermChecker;
use mindie::security::tls::{client_config, load_identity, server_config};
use mindie::security::TlsFiles;
use serde_json::json;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_mindieservice_daemon");
const CA_PASS: &str = "ca-pass-123";

const CA_CNF: &str = "\
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = policy_any
copy_extensions = none
unique_subject = no
[policy_any]
commonName = supplied
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[not_ca]
basicConstraints = critical, CA:FALSE
";

/// How to make a test CA.
#[derive(Clone, Copy)]
struct CaSpec {
    bits: u32,
    /// `genrsa -traditional`: a `Proc-Type: 4,ENCRYPTED` PKCS#1 key instead of PKCS#8.
    traditional: bool,
    /// Validity ended in 2021 (`openssl ca -selfsign -startdate/-enddate`).
    expired: bool,
    /// basicConstraints CA:FALSE.
    not_ca: bool,
}

const GOOD_CA: CaSpec = CaSpec {
    bits: 3072,
    traditional: false,
    expired: false,
    not_ca: false,
};

fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl")
}

fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let out = openssl(dir, args);
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A folder with a CA (`ca/`), `gen_cert.json`, `cert_info.json` and an empty `out/`.
struct Setup {
    dir: TempDir,
}

impl Setup {
    fn new(spec: CaSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s = Setup { dir };
        fs::create_dir(s.p("ca")).unwrap();
        make_ca(&s.p("ca"), spec, "/C=CN/O=Gen Cert Test/CN=test-ca");
        fs::create_dir(s.p("out")).unwrap();
        chmod(&s.p("out"), 0o700);
        s.write_gen_cert(json!({
            "ca_cert": "ca/ca.pem",
            "ca_key": "ca/ca.key.pem",
            "ca_key_pwd": "ca/ca_pwd.txt",
            "cert_config": "cert_info.json",
            "output_path": "out",
            "kmc_ksf_master": "./tools/pmt/master/ksfa",
            "kmc_ksf_standby": "./tools/pmt/standby/ksfb"
        }));
        s.write_cert_info(json!({
            "subject": "mindie-server",
            "expired_time": 365,
            "serial_number": 4242,
            "req_distinguished_name": {
                "C": "CN", "ST": "Sichuan", "L": "Chengdu", "O": "Gen Cert Test",
                "OU": "Ascend", "CN": "MindIE"
            },
            "alt_names": {"IP": ["127.0.0.1"], "DNS": ["localhost", "mindie.example"]}
        }));
        s
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write_json(&self, rel: &str, v: serde_json::Value) {
        fs::write(self.p(rel), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        chmod(&self.p(rel), 0o640);
    }

    fn write_gen_cert(&self, v: serde_json::Value) {
        self.write_json("gen_cert.json", v);
    }

    fn write_cert_info(&self, v: serde_json::Value) {
        self.write_json("cert_info.json", v);
    }

    /// Edits one key of `cert_info.json`.
    fn set_info(&self, key: &str, v: serde_json::Value) {
        let mut info: serde_json::Value =
            serde_json::from_slice(&fs::read(self.p("cert_info.json")).unwrap()).unwrap();
        info[key] = v;
        self.write_cert_info(info);
    }

    /// Edits one key of `gen_cert.json`.
    fn set_gen(&self, key: &str, v: &str) {
        let mut g: serde_json::Value =
            serde_json::from_slice(&fs::read(self.p("gen_cert.json")).unwrap()).unwrap();
        g[key] = v.into();
        self.write_gen_cert(g);
    }

    /// Runs `gen-cert gen_cert.json <args>` from another folder (paths are relative to the
    /// JSON file's folder).
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(std::env::temp_dir())
            .arg("gen-cert")
            .arg(self.p("gen_cert.json"))
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().expect("run gen-cert");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn out_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.p("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Runs gen-cert expecting a refusal whose message holds every one of `needles`, and
    /// that nothing was written.
    fn expect_refusal(&self, args: &[&str], needles: &[&str]) -> String {
        let (ok, out, err) = self.run(args, &[]);
        assert!(
            !ok,
            "gen-cert should have refused\nstdout: {out}\nstderr: {err}"
        );
        for n in needles {
            assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
        }
        assert!(
            self.out_files().is_empty(),
            "written: {:?}",
            self.out_files()
        );
        err
    }
}

/// A CA in `dir`: `ca.key.pem` (encrypted with `ca_pwd.txt`, 0600), `ca.pem` (0640).
fn make_ca(dir: &Path, spec: CaSpec, subject: &str) {
    fs::write(dir.join("ca_pwd.txt"), format!("{CA_PASS}\n")).unwrap();
    chmod(&dir.join("ca_pwd.txt"), 0o600);
    fs::write(dir.join("ca.cnf"), CA_CNF).unwrap();
    let bits = spec.bits.to_string();
    let mut genrsa = vec!["genrsa"];
    if spec.traditional {
        genrsa.push("-traditional");
    }
    genrsa.extend([
        "-aes256",
        "-passout",
        "file:ca_pwd.txt",
        "-out",
        "ca.key.pem",
        &bits,
    ]);
    openssl_ok(dir, &genrsa);
    chmod(&dir.join("ca.key.pem"), 0o600);
    openssl_ok(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "ca.key.pem",
            "-passin",
            "file:ca_pwd.txt",
            "-subj",
            subject,
            "-out",
            "ca.csr",
        ],
    );
    let ext = if spec.not_ca { "not_ca" } else { "v3_ca" };
    if spec.expired {
        fs::write(dir.join("index.txt"), "").unwrap();
        fs::write(dir.join("serial"), "01\n").unwrap();
        openssl_ok(
            dir,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-selfsign",
                "-keyfile",
                "ca.key.pem",
                "-passin",
                "file:ca_pwd.txt",
                "-in",
                "ca.csr",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20210101000000Z",
                "-extensions",
                ext,
                "-notext",
                "-out",
                "ca.pem",
            ],
        );
    } else {
        openssl_ok(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "ca.csr",
                "-signkey",
                "ca.key.pem",
                "-passin",
                "file:ca_pwd.txt",
                "-days",
                "3650",
                "-extfile",
                "ca.cnf",
                "-extensions",
                ext,
                "-out",
                "ca.pem",
            ],
        );
    }
    chmod(&dir.join("ca.pem"), 0o640);
}

/// A handshake between the daemon's server config (mutual TLS against the CA) and a client
/// config, both presenting the generated certificate, over an in-memory pipe.
async fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, b) = tokio::io::duplex(64 * 1024);
    let srv = tokio::spawn(async move {
        let mut s = tokio_rustls::TlsAcceptor::from(server).accept(b).await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        s.write_all(&buf).await?;
        s.flush().await?;
        Ok::<_, std::io::Error>(buf)
    });
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut c = tokio_rustls::TlsConnector::from(client)
        .connect(name, a)
        .await
        .expect("client handshake");
    c.write_all(b"ping").await.unwrap();
    c.flush().await.unwrap();
    let mut back = [0u8; 4];
    c.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");
    assert_eq!(&srv.await.unwrap().expect("server side"), b"ping");
}

#[tokio::test]
async fn certificate_verifies_and_serves_mutual_tls() {
    let s = Setup::new(CaSpec {
        bits: 4096,
        ..GOOD_CA
    });
    let (ok, out, err) = s.run(&["--ip=10.1.2.3,::1,127.0.0.1"], &[]);
    assert!(ok, "gen-cert failed:\n{out}\n{err}");
    assert_eq!(
        s.out_files(),
        ["cert.key.pem", "cert.pem", "cert_passwd.txt"]
    );
    let out_dir = s.p("out");
    let (cert, key, pwd) = (
        out_dir.join("cert.pem"),
        out_dir.join("cert.key.pem"),
        out_dir.join("cert_passwd.txt"),
    );
    assert!(out.contains(cert.to_str().unwrap()), "{out}");
    assert!(
        err.contains("kmc_ksf_master") && err.contains("KMC"),
        "{err}"
    );
    for f in [&cert, &key, &pwd] {
        assert_eq!(mode_of(f), 0o400, "{}", f.display());
    }

    // The password: 32 characters, all four classes, never printed.
    let password = fs::read_to_string(&pwd).unwrap();
    let password = password.strip_suffix('\n').unwrap();
    assert_eq!(password.len(), 32);
    for class in [
        |c: char| c.is_ascii_lowercase(),
        |c: char| c.is_ascii_uppercase(),
        |c: char| c.is_ascii_digit(),
        |c: char| c.is_ascii_punctuation(),
    ] {
        assert!(password.chars().any(class), "weak password");
    }
    assert!(!out.contains(password) && !err.contains(password));

    // openssl agrees: chain, extensions, key.
    let dir = s.dir.path();
    let verify = openssl_ok(dir, &["verify", "-CAfile", "ca/ca.pem", "out/cert.pem"]);
    assert!(verify.contains("out/cert.pem: OK"), "{verify}");
    let text = openssl_ok(dir, &["x509", "-in", "out/cert.pem", "-noout", "-text"]);
    for needle in [
        "Version: 3 (0x2)",
        "Serial Number: 4242",
        "sha256WithRSAEncryption",
        "Subject: C = CN, ST = Sichuan, L = Chengdu, O = Gen Cert Test, OU = Ascend, CN = MindIE",
        "Issuer: C = CN, O = Gen Cert Test, CN = test-ca",
        "IP Address:127.0.0.1",
        "IP Address:10.1.2.3",
        "IP Address:0:0:0:0:0:0:0:1",
        "DNS:localhost",
        "DNS:mindie.example",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "Digital Signature, Key Encipherment",
        "CA:FALSE",
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "Public-Key: (3072 bit)",
    ] {
        assert!(
            text.contains(needle),
            "certificate lacks `{needle}`:\n{text}"
        );
    }
    assert_eq!(text.matches("IP Address:127.0.0.1").count(), 1, "{text}");
    let end = openssl_ok(
        dir,
        &[
            "x509",
            "-in",
            "out/cert.pem",
            "-noout",
            "-checkend",
            "31449600",
        ],
    );
    assert!(end.contains("will not expire"), "{end}");
    let late = openssl(
        dir,
        &[
            "x509",
            "-in",
            "out/cert.pem",
            "-noout",
            "-checkend",
            "31622400",
        ],
    );
    assert!(!late.status.success(), "valid for more than 365 days");
    let key_text = openssl_ok(
        dir,
        &[
            "pkey",
            "-in",
            "out/cert.key.pem",
            "-passin",
            "file:out/cert_passwd.txt",
            "-noout",
            "-text",
        ],
    );
    assert!(key_text.contains("Private-Key: (3072 bit"), "{key_text}");
    let head = fs::read_to_string(&key).unwrap();
    assert!(
        head.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
        "{head}"
    );
    let wrong = openssl(
        dir,
        &[
            "pkey",
            "-in",
            "out/cert.key.pem",
            "-passin",
            "pass:not-the-password",
            "-noout",
        ],
    );
    assert!(
        !wrong.status.success(),
        "the key opened with a wrong password"
    );

    // The daemon's own TLS: identity loads, and it serves mutual TLS to itself.
    load_identity(&cert, &key, Some(&pwd)).expect("daemon loads the identity");
    let files = TlsFiles {
        ca_files: vec![s.p("ca/ca.pem")],
        cert: cert.clone(),
        key: key.clone(),
        key_password: Some(pwd.clone()),
        crl_files: vec![],
    };
    let server = server_config(&files, &mut PermChecker::new(true)).expect("server config");
    let client = client_config(
        std::slice::from_ref(&files.ca_files[0]),
        Some((&cert, &key, Some(&pwd))),
    )
    .expect("client config");
    handshake(server, client).await;
}

#[test]
fn traditional_ca_key_and_replacing_earlier_outputs() {
    let s = Setup::new(CaSpec {
        traditional: true,
        ..GOOD_CA
    });
    let ca_key = fs::read_to_string(s.p("ca/ca.key.pem")).unwrap();
    assert!(ca_key.contains("Proc-Type: 4,ENCRYPTED"), "{ca_key}");
    let (ok, out, err) = s.run(&[], &[]);
    assert!(ok, "{out}\n{err}");
    let first_cert = fs::read(s.p("out/cert.pem")).unwrap();
    let first_pwd = fs::read(s.p("out/cert_passwd.txt")).unwrap();
    // The 0400 outputs of the first run are replaced by the second.
    let (ok, out, err) = s.run(&["--ip=192.168.7.7"], &[]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        s.out_files(),
        ["cert.key.pem", "cert.pem", "cert_passwd.txt"]
    );
    assert_ne!(fs::read(s.p("out/cert.pem")).unwrap(), first_cert);
    assert_ne!(fs::read(s.p("out/cert_passwd.txt")).unwrap(), first_pwd);
    let dir = s.dir.path();
    openssl_ok(dir, &["verify", "-CAfile", "ca/ca.pem", "out/cert.pem"]);
    let text = openssl_ok(dir, &["x509", "-in", "out/cert.pem", "-noout", "-text"]);
    assert!(text.contains("IP Address:192.168.7.7"), "{text}");
    let new_key = s.p("out/cert.key.pem");
    load_identity(
        &s.p("out/cert.pem"),
        &new_key,
        Some(&s.p("out/cert_passwd.txt")),
    )
    .expect("identity");
}

#[test]
fn weak_expired_and_non_ca_cas_are_refused() {
    let weak = Setup::new(CaSpec {
        bits: 2048,
        ..GOOD_CA
    });
    weak.expect_refusal(&[], &["ca_cert", "ca.pem", "2048 bits", "3072"]);
    let expired = Setup::new(CaSpec {
        expired: true,
        ..GOOD_CA
    });
    expired.expect_refusal(&[], &["ca_cert", "ca.pem", "expired", "2021"]);
    let not_ca = Setup::new(CaSpec {
        not_ca: true,
        ..GOOD_CA
    });
    not_ca.expect_refusal(&[], &["ca_cert", "not a CA certificate"]);
}

#[test]
fn bad_inputs_are_refused_naming_file_and_field() {
    let s = Setup::new(GOOD_CA);
    let original_gen = fs::read(s.p("gen_cert.json")).unwrap();
    let original_info = fs::read(s.p("cert_info.json")).unwrap();
    let reset = || {
        fs::write(s.p("gen_cert.json"), &original_gen).unwrap();
        fs::write(s.p("cert_info.json"), &original_info).unwrap();
    };

    // --ip
    s.expect_refusal(&["--ip=10.0.0.1,10.0.0.300"], &["--ip", "10.0.0.300"]);
    // missing CA certificate
    s.set_gen("ca_cert", "ca/missing.pem");
    s.expect_refusal(&[], &["ca_cert", "missing.pem", "does not exist"]);
    reset();
    // missing field
    s.write_gen_cert(json!({"ca_cert": "ca/ca.pem"}));
    s.expect_refusal(&[], &["gen_cert.json", "ca_key", "missing"]);
    reset();
    // bad JSON
    fs::write(s.p("gen_cert.json"), "{\"ca_cert\": \"ca/ca.pem\",").unwrap();
    s.expect_refusal(&[], &["gen_cert.json", "not valid JSON"]);
    reset();
    fs::write(s.p("cert_info.json"), "[1, 2").unwrap();
    s.expect_refusal(&[], &["cert_info.json", "not valid JSON"]);
    reset();
    // wrong CA password
    fs::write(s.p("ca/wrong_pwd.txt"), "not-the-ca-password\n").unwrap();
    chmod(&s.p("ca/wrong_pwd.txt"), 0o600);
    s.set_gen("ca_key_pwd", "ca/wrong_pwd.txt");
    s.expect_refusal(&[], &["ca_key", "wrong passphrase", "wrong_pwd.txt"]);
    reset();
    // CA key of another CA
    fs::create_dir(s.p("other")).unwrap();
    make_ca(&s.p("other"), GOOD_CA, "/CN=other-ca");
    s.set_gen("ca_key", "other/ca.key.pem");
    s.expect_refusal(&[], &["ca_key", "other/ca.key.pem", "does not match"]);
    reset();
    // output folder
    s.set_gen("output_path", "no-such-folder");
    s.expect_refusal(&[], &["output_path", "no-such-folder"]);
    reset();
    // cert_info.json fields
    s.set_info("alt_names", json!({"IP": ["127.0.0.1", "not-an-ip"]}));
    s.expect_refusal(&[], &["cert_info.json", "alt_names.IP[1]", "not-an-ip"]);
    reset();
    s.set_info("alt_names", json!({"DNS": ["bad name"]}));
    s.expect_refusal(&[], &["cert_info.json", "alt_names.DNS[0]"]);
    reset();
    for bad in [json!(0), json!(7301), json!("365"), json!(-1)] {
        s.set_info("expired_time", bad);
        s.expect_refusal(&[], &["cert_info.json", "expired_time", "1..=7300"]);
    }
    reset();
    for bad in [json!(0), json!(-5), json!(1.5), json!("123")] {
        s.set_info("serial_number", bad);
        s.expect_refusal(&[], &["cert_info.json", "serial_number"]);
    }
    reset();
    s.set_info("req_distinguished_name", json!({"C": "China", "CN": "x"}));
    s.expect_refusal(&[], &["req_distinguished_name.C", "China"]);
    reset();
}

#[test]
fn permissions_are_checked_and_can_be_waived() {
    let s = Setup::new(GOOD_CA);
    chmod(&s.p("ca/ca.key.pem"), 0o644);
    s.expect_refusal(&[], &["ca_key", "ca.key.pem", "chmod"]);
    let (ok, out, err) = s.run(&[], &[("MINDIE_CHECK_INPUTFILES_PERMISSION", "0")]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("ca.key.pem"),
        "the waived finding is reported: {err}"
    );
    chmod(&s.p("ca/ca.key.pem"), 0o600);
    chmod(&s.p("ca/ca_pwd.txt"), 0o644);
    let (ok, _, err) = s.run(&[], &[]);
    assert!(!ok && err.contains("ca_key_pwd"), "{err}");
}
