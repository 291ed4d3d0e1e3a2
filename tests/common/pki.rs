//! A throw-away test PKI made with the `openssl` CLI, the way MindIE's docs make one:
//! 3072-bit RSA keys encrypted with `-aes256`, a CA with `v3_ca` extensions, a server
//! certificate for `IP:127.0.0.1, DNS:localhost`, client certificates, a second independent
//! CA, a revoked client certificate with a CRL from `openssl ca -gencrl`, a traditional
//! (`Proc-Type: 4,ENCRYPTED`) copy of the server key, an expired server certificate and a
//! 2048-bit server key/certificate for refusal tests.
//!
//! Usage (from any integration test that has `mod common;`):
//! ```ignore
//! let pki = common::pki::Pki::shared();   // made once per test binary
//! let files = pki.server_files(true);     // mTLS + CRL, as the daemon would be configured
//! ```
//! Every file is chmod'ed to a mode the daemon accepts (keys and password files 0600,
//! certificates and CRLs 0640, the folder 0700). Silent on success; a failing `openssl` call
//! panics with its stderr.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::daemon::Home;
use mindie::security::TlsFiles;
use tempfile::TempDir;

/// Passphrase of both CAs' keys.
pub const CA_PASS: &str = "ca-pass-123";
/// Passphrase of the server key (PKCS#8 and traditional copies), held in `server_key_pwd_file`.
pub const SERVER_PASS: &str = "server pass 456";
/// Passphrase of the good client's key, held in `client_key_pwd_file`.
pub const CLIENT_PASS: &str = "client-pass-789";

/// Paths of everything the PKI made; all under `dir`, deleted when the `Pki` drops.
pub struct Pki {
    pub dir: TempDir,
    /// The CA certificate (PEM), signer of server and client certificates and of the CRL.
    pub ca: PathBuf,
    /// The CA's key (encrypted PKCS#8, passphrase [`CA_PASS`], also in `ca.pwd` in `dir`).
    pub ca_key: PathBuf,
    /// Server certificate: `CN=localhost`, SAN `IP:127.0.0.1`–`127.0.0.4`, `DNS:localhost`,
    /// serverAuth and clientAuth (it also serves as a PD instance's interComm identity, which
    /// dials its peers with it).
    pub server_cert: PathBuf,
    /// Server key, `openssl genrsa -aes256` (OpenSSL 3: `ENCRYPTED PRIVATE KEY`).
    pub server_key: PathBuf,
    /// The same key in traditional form (`RSA PRIVATE KEY` + `Proc-Type: 4,ENCRYPTED`).
    pub server_key_traditional: PathBuf,
    /// Plain-text passphrase file for both server key forms ([`SERVER_PASS`] + newline).
    pub server_key_pwd_file: PathBuf,
    /// A file holding a wrong passphrase.
    pub wrong_pwd_file: PathBuf,
    /// A server certificate for `server_key` whose validity ended in 2021.
    pub expired_server_cert: PathBuf,
    /// 2048-bit RSA key (clear) and its CA-signed server certificate.
    pub weak_key: PathBuf,
    pub weak_cert: PathBuf,
    /// Good client: clientAuth certificate, key encrypted with [`CLIENT_PASS`].
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_key_pwd_file: PathBuf,
    /// Client whose certificate is revoked in `crl` (clear key).
    pub revoked_client_cert: PathBuf,
    pub revoked_client_key: PathBuf,
    /// CRL (PEM) from `openssl ca -gencrl`, listing `revoked_client_cert`.
    pub crl: PathBuf,
    /// A second, independent CA and a client certificate it signed (clear key).
    pub other_ca: PathBuf,
    pub other_ca_client_cert: PathBuf,
    pub other_ca_client_key: PathBuf,
}

/// Runs `openssl args...` in `dir`; panics with stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    if !out.status.success() {
        panic!(
            "openssl {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn config_text(dir: &Path) -> String {
    format!(
        r#"[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = IP:127.0.0.1,IP:127.0.0.2,IP:127.0.0.3,IP:127.0.0.4,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ca]
default_ca = test_ca
[test_ca]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
certificate = {dir}/ca.pem
private_key = {dir}/ca.key.pem
serial = {dir}/serial
crlnumber = {dir}/crlnumber
default_md = sha256
default_days = 365
default_crl_days = 30
unique_subject = no
policy = policy_any
copy_extensions = none
[policy_any]
commonName = supplied
"#,
        dir = dir.display()
    )
}

/// Runs `openssl` with a whitespace-separated argument line (no argument has spaces: every
/// passphrase is passed as `file:<name>`), in `dir`; panics with stderr on failure.
fn run(dir: &Path, line: &str) {
    openssl(dir, &line.split_whitespace().collect::<Vec<_>>());
}

/// Runs several argument lines at once (key generation is the slow part).
fn run_parallel(dir: &Path, lines: &[String]) {
    let children: Vec<_> = lines
        .iter()
        .map(|line| {
            let child = Command::new("openssl")
                .args(line.split_whitespace())
                .current_dir(dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
            (line, child)
        })
        .collect();
    for (line, child) in children {
        let out = child.wait_with_output().expect("wait for openssl");
        if !out.status.success() {
            panic!(
                "openssl {line} failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// `(key file, passphrase file or "", subject, extension section, CA name, cert file)`.
const LEAVES: [(&str, &str, &str, &str, &str, &str); 5] = [
    (
        "server.key.pem",
        "server.pwd",
        "/CN=localhost",
        "server_ext",
        "ca",
        "server.pem",
    ),
    (
        "client.key.pem",
        "client.pwd",
        "/CN=mindie-client",
        "client_ext",
        "ca",
        "client.pem",
    ),
    (
        "revoked.key.pem",
        "",
        "/CN=revoked-client",
        "client_ext",
        "ca",
        "revoked.pem",
    ),
    (
        "other_client.key.pem",
        "",
        "/CN=other-client",
        "client_ext",
        "other_ca",
        "other_client.pem",
    ),
    (
        "weak.key.pem",
        "",
        "/CN=localhost",
        "server_ext",
        "ca",
        "weak.pem",
    ),
];

impl Pki {
    /// Makes a fresh PKI in a new temporary folder (takes a few seconds: 3072-bit keys).
    pub fn make() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mindie-pki-")
            .tempdir()
            .expect("temp dir");
        Pki::make_in(dir)
    }

    /// Makes the PKI in `dir` (an empty temporary folder, deleted when the `Pki` drops).
    fn make_in(dir: TempDir) -> Pki {
        let d = dir.path().to_path_buf();
        let p = |name: &str| d.join(name);
        let write = |name: &str, text: &str| fs::write(p(name), text).expect("write pki file");
        write("pki.cnf", &config_text(&d));
        fs::create_dir(p("newcerts")).expect("mkdir newcerts");
        write("index.txt", "");
        write("crlnumber", "1000\n");
        write("serial", "2000\n");
        write("ca.pwd", &format!("{CA_PASS}\n"));
        write("server.pwd", &format!("{SERVER_PASS}\n"));
        write("client.pwd", &format!("{CLIENT_PASS}\n"));
        write("wrong.pwd", "not the passphrase\n");

        let genrsa = |out: &str, pwd: &str, bits: u32| match pwd {
            "" => format!("genrsa -out {out} {bits}"),
            pwd => format!("genrsa -aes256 -passout file:{pwd} -out {out} {bits}"),
        };
        run_parallel(
            &d,
            &[
                genrsa("ca.key.pem", "ca.pwd", 3072),
                genrsa("server.key.pem", "server.pwd", 3072),
                genrsa("client.key.pem", "client.pwd", 3072),
                genrsa("revoked.key.pem", "", 3072),
                genrsa("other_ca.key.pem", "ca.pwd", 3072),
                genrsa("other_client.key.pem", "", 3072),
                genrsa("weak.key.pem", "", 2048),
            ],
        );

        // CAs: self-signed, v3_ca extensions.
        run(
            &d,
            "req -new -x509 -config pki.cnf -extensions v3_ca -key ca.key.pem \
                 -passin file:ca.pwd -subj /CN=MindIE-Test-CA -days 3650 -sha256 -out ca.pem",
        );
        run(
            &d,
            "req -new -x509 -config pki.cnf -extensions v3_ca -key other_ca.key.pem \
                 -passin file:ca.pwd -subj /CN=Other-Test-CA -days 3650 -sha256 \
                 -out other_ca.pem",
        );

        // Leaves: CSR, then `x509 -req` signed by a CA with an extension section.
        for (key, pwd, subj, ext, ca, out) in LEAVES {
            let passin = if pwd.is_empty() {
                String::new()
            } else {
                format!("-passin file:{pwd}")
            };
            run(
                &d,
                &format!(
                    "req -new -config pki.cnf -key {key} {passin} -subj {subj} -out {out}.csr"
                ),
            );
            run(
                &d,
                &format!(
                    "x509 -req -in {out}.csr -CA {ca}.pem -CAkey {ca}.key.pem -passin file:ca.pwd \
                 -CAcreateserial -days 365 -sha256 -extfile pki.cnf -extensions {ext} -out {out}"
                ),
            );
        }

        // Traditional encrypted copy of the server key, same passphrase. (`openssl` reads
        // line 2 for -passout when both options name one file, hence the copy.)
        write("server-out.pwd", &format!("{SERVER_PASS}\n"));
        run(
            &d,
            "rsa -in server.key.pem -passin file:server.pwd -traditional -aes256 \
                 -passout file:server-out.pwd -out server.key.traditional.pem",
        );
        fs::remove_file(p("server-out.pwd")).expect("remove server-out.pwd");
        // Expired server certificate for the same key (openssl ca can backdate).
        run(
            &d,
            "ca -batch -config pki.cnf -passin file:ca.pwd -notext -extensions server_ext \
                 -extfile pki.cnf -startdate 20200101000000Z -enddate 20210101000000Z \
                 -in server.pem.csr -out server.expired.pem",
        );
        // Revoke one client and publish the CRL.
        run(
            &d,
            "ca -config pki.cnf -passin file:ca.pwd -revoke revoked.pem",
        );
        run(
            &d,
            "ca -config pki.cnf -passin file:ca.pwd -gencrl -out ca.crl.pem",
        );

        set_modes(&d);
        Pki {
            ca: p("ca.pem"),
            ca_key: p("ca.key.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key.pem"),
            server_key_traditional: p("server.key.traditional.pem"),
            server_key_pwd_file: p("server.pwd"),
            wrong_pwd_file: p("wrong.pwd"),
            expired_server_cert: p("server.expired.pem"),
            weak_key: p("weak.key.pem"),
            weak_cert: p("weak.pem"),
            client_cert: p("client.pem"),
            client_key: p("client.key.pem"),
            client_key_pwd_file: p("client.pwd"),
            revoked_client_cert: p("revoked.pem"),
            revoked_client_key: p("revoked.key.pem"),
            crl: p("ca.crl.pem"),
            other_ca: p("other_ca.pem"),
            other_ca_client_cert: p("other_client.pem"),
            other_ca_client_key: p("other_client.key.pem"),
            dir,
        }
    }

    /// One PKI per test binary, made on first use. Statics are never dropped, so it lives in
    /// cargo's per-target temp folder (`CARGO_TARGET_TMPDIR`), and shared PKIs older than an
    /// hour (left by earlier runs) are removed first.
    pub fn shared() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
            remove_stale(base, SHARED_PREFIX);
            let dir = tempfile::Builder::new()
                .prefix(SHARED_PREFIX)
                .tempdir_in(base)
                .expect("temp dir");
            Pki::make_in(dir)
        })
    }

    /// A daemon home whose planes all use this PKI with mutual TLS and the CRL.
    pub fn mtls_home(&self) -> Home {
        let mut home = Home::new();
        let (ca_dir, ca_name) = dir_and_name(&self.ca);
        let (crl_dir, crl_name) = dir_and_name(&self.crl);
        let cert = self.server_cert.to_str().expect("utf8 path");
        let key = self.server_key.to_str().expect("utf8 path");
        let pwd = self.server_key_pwd_file.to_str().expect("utf8 path");
        home.set("/ServerConfig/httpsEnabled", true)
            .set("/ServerConfig/tlsCaPath", ca_dir.as_str())
            .set("/ServerConfig/tlsCaFile", serde_json::json!([ca_name]))
            .set("/ServerConfig/tlsCert", cert)
            .set("/ServerConfig/tlsPk", key)
            .set("/ServerConfig/tlsPkPwd", pwd)
            .set("/ServerConfig/tlsCrlPath", crl_dir.as_str())
            .set("/ServerConfig/tlsCrlFiles", serde_json::json!([crl_name]))
            .set(
                "/ServerConfig/managementTlsCaFile",
                serde_json::json!([ca_name]),
            )
            .set("/ServerConfig/managementTlsCert", cert)
            .set("/ServerConfig/managementTlsPk", key)
            .set("/ServerConfig/managementTlsPkPwd", pwd)
            .set("/ServerConfig/managementTlsCrlPath", crl_dir.as_str())
            .set(
                "/ServerConfig/managementTlsCrlFiles",
                serde_json::json!([crl_name]),
            );
        home
    }

    /// The server's files as the daemon gets them: encrypted PKCS#8 key with its password
    /// file; with `mtls`, the CA for client certificates and the CRL.
    pub fn server_files(&self, mtls: bool) -> TlsFiles {
        TlsFiles {
            ca_files: if mtls {
                vec![self.ca.clone()]
            } else {
                Vec::new()
            },
            cert: self.server_cert.clone(),
            key: self.server_key.clone(),
            key_password: Some(self.server_key_pwd_file.clone()),
            crl_files: if mtls {
                vec![self.crl.clone()]
            } else {
                Vec::new()
            },
        }
    }
}

/// A file's folder (with a trailing `/`, as config.json's `*Path` keys want it) and name.
fn dir_and_name(p: &Path) -> (String, String) {
    (
        format!("{}/", p.parent().expect("parent").display()),
        p.file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned(),
    )
}

const SHARED_PREFIX: &str = "mindie-pki-shared-";

/// Removes `base/<prefix>*` folders last modified over an hour ago.
fn remove_stale(base: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3600);
        if stale && entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Keys, passwords and bookkeeping 0600; certificates and CRLs 0640; folders 0700.
fn set_modes(dir: &Path) {
    let entries = fs::read_dir(dir).expect("read pki dir");
    for entry in entries {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mode = if path.is_dir() {
            set_modes(&path);
            0o700
        } else if name.ends_with(".pem") && !name.contains("key") {
            0o640
        } else {
            0o600
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod dir");
}
