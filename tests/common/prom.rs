//! A real Prometheus for tests: Debian's `prometheus` server and `promtool` (the `prometheus`
//! package, which `.ci/run` installs), a scrape config written into a temporary folder,
//! storage there too, the web API on a free loopback port, and small helpers for its HTTP
//! query API. Missing binaries fail the test with the install command; nothing is skipped.

#![allow(dead_code)]

use super::client::get;
use super::daemon::{free_port, Daemon, Home};
use super::pki::{openssl, Pki};
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path of `name` on `PATH`; panics with how to install it when it is not there.
pub fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: this test runs Prometheus's own binaries; install \
                 Debian's package with `apt-get install --no-install-recommends prometheus` \
                 (.ci/run does this)"
            )
        })
}

/// What `promtool check metrics` said about an exposition.
#[derive(Debug)]
pub struct PromtoolVerdict {
    /// 0: clean; 3: lint problems only; 1: the text did not parse.
    pub code: i32,
    /// Its findings, one per line (`name problem`).
    pub problems: Vec<String>,
}

/// Runs `promtool check metrics` on `body` (given on stdin, as its docs show).
pub fn promtool_check_metrics(body: &str) -> PromtoolVerdict {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    PromtoolVerdict {
        code: out.status.code().unwrap_or(-1),
        problems: text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// One scrape job: a name, the `host:port` it scrapes, and for an HTTPS target the CA, the
/// client certificate and its clear key given to Prometheus's `tls_config`.
pub struct Job {
    pub name: String,
    pub target: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

/// A running `prometheus` server, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `jobs` every second and waits until its API is ready.
    pub async fn start(jobs: &[Job]) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for j in jobs {
            cfg.push_str(&format!(
                "  - job_name: {}\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{}']\n",
                j.name, j.target
            ));
            if let Some((ca, cert, key)) = &j.tls {
                cfg.push_str(&format!(
                    "    scheme: https\n    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
                    ca.display(),
                    cert.display(),
                    key.display()
                ));
            }
        }
        let cfg_path = dir.path().join("prometheus.yml");
        std::fs::write(&cfg_path, &cfg).expect("write prometheus.yml");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus { child, addr, dir };
        p.wait_ready().await;
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self) {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("prometheus exited {st}:\n{}", self.log());
            }
            let ready = super::client::send(self.addr, None, "GET", "/-/ready", None).await;
            if ready.is_ok_and(|r| r.status == 200) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "prometheus not ready in 60 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /api/v1/query?query=...`: the whole reply (`status`, `data`, `error`).
    pub async fn query(&self, promql: &str) -> Value {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let r = get(self.addr, &path).await;
        serde_json::from_slice(&r.body)
            .unwrap_or_else(|e| panic!("query {promql:?}: not JSON ({e}): {}", r.text()))
    }

    /// The samples of an instant query that must succeed: `(labels, value)` each.
    pub async fn samples(&self, promql: &str) -> Vec<(Value, f64)> {
        let r = self.query(promql).await;
        assert_eq!(r["status"], "success", "query {promql:?}: {r}");
        r["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("query {promql:?}: no result list: {r}"))
            .iter()
            .map(|s| {
                let v = s["value"][1].as_str().expect("sample value");
                (s["metric"].clone(), v.parse::<f64>().expect("float value"))
            })
            .collect()
    }

    /// Waits until Prometheus sees `job`'s target up; panics with the target's state and the
    /// daemon's exit and output if it does not within 30 s.
    pub async fn wait_up(&self, job: &str, daemon: &mut Daemon) {
        let q = format!("up{{job=\"{job}\"}}");
        let t0 = Instant::now();
        loop {
            let got = self.samples(&q).await;
            if got.len() == 1 && got[0].1 == 1.0 {
                return;
            }
            if let Ok(Some(st)) = daemon.child.try_wait() {
                panic!("the daemon of job {job} exited {st}:\n{}", daemon.output());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let targets = get(self.addr, "/api/v1/targets").await.text();
                panic!(
                    "job {job} not up in 30 s: {got:?}\ntargets: {targets}\ndaemon:\n{}",
                    daemon.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Polls `promql` until it gives exactly one sample equal to `want` (scrapes come every
    /// second); panics after 30 s with the last answer and the targets' state.
    pub async fn wait_value(&self, promql: &str, want: f64) -> Value {
        let t0 = Instant::now();
        loop {
            let got = self.samples(promql).await;
            if got.len() == 1 && (got[0].1 - want).abs() < 1e-9 {
                return got[0].0.clone();
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let targets = get(self.addr, "/api/v1/targets").await.text();
                panic!(
                    "{promql} never became {want} in 30 s; last {got:?}\ntargets: {targets}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter (everything but unreserved characters).
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A home whose planes use the test PKI with mutual TLS, the metrics plane with its own
/// `metrics*` certificate set, as an operator secures a production daemon.
pub fn mtls_home(pki: &Pki) -> Home {
    let mut home = Home::new();
    let ca_dir = format!("{}/", pki.ca.parent().expect("ca dir").display());
    let ca_name = pki.ca.file_name().expect("ca name").to_string_lossy();
    let cert = pki.server_cert.to_str().expect("utf8");
    let key = pki.server_key.to_str().expect("utf8");
    let pwd = pki.server_key_pwd_file.to_str().expect("utf8");
    let crl_dir = format!("{}/", pki.crl.parent().expect("crl dir").display());
    let crl_name = pki.crl.file_name().expect("crl name").to_string_lossy();
    let s = &mut home.config["ServerConfig"];
    s["httpsEnabled"] = true.into();
    s["tlsCaPath"] = ca_dir.into();
    // One set per plane: business (`tls*`), management, and the metrics plane's own.
    for prefix in ["tls", "managementTls", "metricsTls"] {
        s[format!("{prefix}CaFile")] = serde_json::json!([ca_name]);
        s[format!("{prefix}Cert")] = cert.into();
        s[format!("{prefix}Pk")] = key.into();
        s[format!("{prefix}PkPwd")] = pwd.into();
        s[format!("{prefix}CrlPath")] = crl_dir.as_str().into();
        s[format!("{prefix}CrlFiles")] = serde_json::json!([crl_name]);
    }
    home
}

/// The test client's certificate with its key decrypted into `dir` (mode 0600), as Prometheus
/// needs it: `(ca, cert, clear key)`.
pub fn scrape_identity(pki: &Pki, dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let key = dir.join("prometheus-client.key");
    openssl(
        dir,
        &[
            "pkey",
            "-in",
            pki.client_key.to_str().expect("utf8"),
            "-passin",
            &format!("file:{}", pki.client_key_pwd_file.display()),
            "-out",
            key.to_str().expect("utf8"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    (pki.ca.clone(), pki.client_cert.clone(), key)
}
