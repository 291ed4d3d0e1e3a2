//! A whole PD cluster on loopback, started exactly as the README's "PD cluster" block says
//! (two dmi servers on 127.0.0.1 and 127.0.0.3, the Controller on 127.0.0.2, the Coordinator
//! on 127.0.0.4, real processes from a copy of the binary), driven through the Coordinator
//! with the official OpenAI Python SDK: completions and chat, streamed and not, and 16
//! concurrent streams, greedy output equal to one standard instance's; streams hung up
//! mid-way leave no KV block held; `SIGKILL` of the decode instance ends in-flight requests
//! with an error within seconds, readiness drops, and the restarted instance gets its role
//! back and the cluster serves again.
//!
//! The SDK runs from `OPENAI_PYTHON` (a python with `openai`), else `target/sdk-venv`, which
//! this test makes with `python3 -m venv` + `pip install openai==` [`SDK_VERSION`] when missing
//! (`.ci/run` makes it first).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use common::install;
use common::pd::send;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SDK_VERSION: &str = "1.109.1";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A python with the OpenAI SDK.
fn sdk_python() -> PathBuf {
    if let Ok(p) = std::env::var("OPENAI_PYTHON") {
        return PathBuf::from(p);
    }
    common::venv::venv("sdk-venv", &format!("openai=={SDK_VERSION}"), "bin/openai")
        .join("bin/python")
}

/// Runs tests/cluster/sdk_check.py against `base` and returns its JSON.
fn sdk(base: &str, model: &str, extra: &[&str]) -> Value {
    let out = Command::new(sdk_python())
        .arg(repo().join("tests/cluster/sdk_check.py"))
        .args([base, model])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sdk_check.py {base} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The SDK's answers from one standard instance of the same model.
fn reference_answers() -> Value {
    let mut reference = Home::new();
    reference.use_fixture_model("tiny-llama");
    reference.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
        "tiny-llama",
    );
    let _daemon = reference.start(&[]);
    sdk(
        &format!("http://{}", reference.business()),
        "tiny-llama",
        &[],
    )
}

/// The README's cluster block.
fn readme_block() -> String {
    install::readme_block("cluster-quickstart")
}

/// A copy of the install layout the cluster block runs in.
struct Install(install::Install);

impl std::ops::Deref for Install {
    type Target = install::Install;
    fn deref(&self) -> &install::Install {
        &self.0
    }
}

impl Install {
    fn new() -> Install {
        Install(install::Install::new(
            &["conf/cluster", "tests/fixtures/models/tiny-llama"],
            &[
                "server-1.json",
                "server-2.json",
                " controller",
                " coordinator",
            ],
        ))
    }

    fn logs(&self) -> String {
        self.0.logs(&[
            "server-1.log",
            "server-2.log",
            "controller.log",
            "coordinator.log",
        ])
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The status of `GET path`, 0 while nothing listens there.
async fn status_code(a: SocketAddr, path: &str) -> u16 {
    if tokio::net::TcpStream::connect(a).await.is_err() {
        return 0;
    }
    send(a, "GET", path, None, &[]).await.status
}

async fn wait_status(inst: &Install, a: SocketAddr, path: &str, want: u16, limit: Duration) {
    let t0 = Instant::now();
    loop {
        if status_code(a, path).await == want {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "{a}{path} not {want} after {limit:?}\n{}",
            inst.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (10 s at most) until process `pid` has exited (no `/proc` entry, or a zombie, which
/// holds no sockets) and every one of `ports` on `ip` can be bound again.
async fn wait_released(pid: i32, ip: &str, ports: &[u16]) {
    let t0 = Instant::now();
    let exited = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        stat.is_empty() || state == Some('Z')
    };
    let free = || {
        ports
            .iter()
            .all(|p| std::net::TcpListener::bind((ip, *p)).is_ok())
    };
    while !(exited() && free()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "pid {pid} or its ports {ip}:{ports:?} still held 10 s after SIGKILL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every KV block of the instance whose management port is `mgmt` is free (20 s at most).
async fn blocks_free(mgmt: SocketAddr, what: &str) {
    let t0 = Instant::now();
    loop {
        let r = send(mgmt, "GET", "/v1/status", None, &[]).await;
        let s: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let res = &s["resource"];
        if !res["freeNpuBlockNums"].is_null() && res["freeNpuBlockNums"] == res["totalNpuBlockNums"]
        {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: KV blocks held: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a long stream through the Coordinator, says on `started` once 3 chunks arrived,
/// and returns the whole answer text when the connection ends.
async fn long_stream(coord: SocketAddr, started: tokio::sync::oneshot::Sender<()>) -> String {
    let body = json!({"model": "tiny-llama", "prompt": "Once upon a time", "max_tokens": 2000,
                      "stream": true, "ignore_eos": true})
    .to_string();
    let mut s = tokio::net::TcpStream::connect(coord).await.unwrap();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let mut started = Some(started);
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&all).matches("data:").count() >= 3 {
            if let Some(tx) = started.take() {
                let _ = tx.send(());
            }
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readme_cluster_serves_fails_over_and_recovers() {
    let inst = Install::new();
    let block = readme_block();
    inst.bash(&block);
    let coord = addr("127.0.0.4:1025");
    let status = addr("127.0.0.4:1029");
    let (p_mgmt, d_mgmt) = (addr("127.0.0.1:1026"), addr("127.0.0.3:1026"));
    wait_status(&inst, status, "/v1/startup", 200, Duration::from_secs(30)).await;
    wait_status(&inst, status, "/v1/readiness", 200, Duration::from_secs(90)).await;

    // One standard instance of the same model for reference answers.
    let want = reference_answers();
    let got = sdk(&format!("http://{coord}"), "tiny-llama", &[]);
    for key in [
        "completion",
        "completion_stream",
        "chat",
        "chat_stream",
        "completion_tokens",
        "chat_finish",
    ] {
        assert_eq!(
            got[key], want[key],
            "{key}: cluster {got} vs standard {want}"
        );
    }
    assert_eq!(want["completion"], want["completion_stream"], "{want}");
    let streams = got["concurrent"].as_array().unwrap();
    assert_eq!(streams.len(), 16);
    assert!(streams.iter().all(|t| *t == want["chat"]), "{got}");

    // Users who hang up mid-stream leave nothing held on P or D.
    let hung = sdk(&format!("http://{coord}"), "tiny-llama", &["hangup", "4"]);
    assert_eq!(hung["hung_up"], json!([2, 2, 2, 2]), "{hung}");
    blocks_free(p_mgmt, "prefill after hang-ups").await;
    blocks_free(d_mgmt, "decode after hang-ups").await;

    // SIGKILL of D: the in-flight stream ends with an error within seconds, readiness drops,
    // new requests are refused at once.
    let (tx, started) = tokio::sync::oneshot::channel();
    let inflight = tokio::spawn(long_stream(coord, tx));
    started.await.expect("the long stream started");
    let d_pid = inst.pid_of("server-2.json").expect("decode server running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t0 = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(10), inflight)
        .await
        .expect("the in-flight request ended within 10 s")
        .unwrap();
    assert!(
        text.contains("\"error\""),
        "no error for the in-flight request: {text}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    wait_status(&inst, status, "/v1/readiness", 503, Duration::from_secs(10)).await;
    let body = json!({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4});
    let r = send(coord, "POST", "/v1/completions", Some(&body), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    blocks_free(p_mgmt, "prefill after D died").await;

    // D restarted with the README's own line, as an operator would: once the killed process is
    // gone and its ports are free (a SIGKILLed process lets go of them only as it finishes
    // exiting; under load that can outlast the checks above). It gets its role back, the
    // cluster serves.
    wait_released(d_pid, "127.0.0.3", &[1025, 1026, 1027, 1121]).await;
    let line = block
        .lines()
        .find(|l| l.contains("server-2.json"))
        .unwrap()
        .to_string();
    inst.bash(&line);
    wait_status(&inst, status, "/v1/readiness", 200, Duration::from_secs(90)).await;
    let again = sdk(&format!("http://{coord}"), "tiny-llama", &[]);
    assert_eq!(again["completion"], want["completion"], "{again}");
    assert_eq!(again["chat_stream"], want["chat"], "{again}");
}

/// Rewrites the install's configs for TLS on every link (servers' business, management and
/// interComm planes; the Controller's probe server and its clients; the Coordinator's four
/// servers and its clients), all from the test PKI, on ports 1000 above the plain cluster's
/// so both tests can run at once.
fn secure(inst: &Install, pki: &common::pki::Pki) {
    let home = inst.home().join("conf/cluster");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let dir_of = |p: &Path| format!("{}/", p.parent().unwrap().display());
    let name_of = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    let edit = |file: &str, f: &dyn Fn(&mut Value)| {
        let p = home.join(file);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        f(&mut v);
        std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    for file in ["server-1.json", "server-2.json"] {
        edit(file, &|v| {
            let s = &mut v["ServerConfig"];
            s["port"] = json!(2025);
            s["managementPort"] = json!(2026);
            s["metricsPort"] = json!(2027);
            s["interCommPort"] = json!(2121);
            s["httpsEnabled"] = json!(true);
            s["interCommTLSEnabled"] = json!(true);
            for (ca_path, ca_files, cert, key, pwd, crl_path, crl_files) in [
                (
                    "tlsCaPath",
                    "tlsCaFile",
                    "tlsCert",
                    "tlsPk",
                    "tlsPkPwd",
                    "tlsCrlPath",
                    "tlsCrlFiles",
                ),
                (
                    "managementTlsCaPath",
                    "managementTlsCaFile",
                    "managementTlsCert",
                    "managementTlsPk",
                    "managementTlsPkPwd",
                    "managementTlsCrlPath",
                    "managementTlsCrlFiles",
                ),
                (
                    "interCommTlsCaPath",
                    "interCommTlsCaFiles",
                    "interCommTlsCert",
                    "interCommPk",
                    "interCommPkPwd",
                    "interCommTlsCrlPath",
                    "interCommTlsCrlFiles",
                ),
            ] {
                s[ca_path] = json!(dir_of(&pki.ca));
                s[ca_files] = json!([name_of(&pki.ca)]);
                s[cert] = json!(path(&pki.server_cert));
                s[key] = json!(path(&pki.server_key));
                s[pwd] = json!(path(&pki.server_key_pwd_file));
                s[crl_path] = json!(dir_of(&pki.crl));
                s[crl_files] = json!([name_of(&pki.crl)]);
            }
        });
    }
    let item = json!({"ca_cert": path(&pki.ca), "tls_cert": path(&pki.server_cert),
                      "tls_key": path(&pki.server_key), "tls_passwd": path(&pki.server_key_pwd_file),
                      "tls_crl": path(&pki.crl)});
    edit("ms_controller.json", &|v| {
        v["mindie_server_port"] = json!(2025);
        v["mindie_server_control_port"] = json!(2026);
        v["mindie_server_metric_port"] = json!(2027);
        v["mindie_ms_coordinator_port"] = json!(2026);
        v["http_server"]["port"] = json!(2030);
        for x in ["request_coordinator", "request_server", "http_server"] {
            v["tls_config"][format!("{x}_tls_enable")] = json!(true);
            v["tls_config"][format!("{x}_tls_items")] = item.clone();
        }
    });
    edit("ms_coordinator.json", &|v| {
        let h = &mut v["http_config"];
        for (k, p) in [
            ("predict_port", "2025"),
            ("manage_port", "2026"),
            ("alarm_port", "2027"),
            ("external_port", "2028"),
            ("status_port", "2029"),
        ] {
            h[k] = json!(p);
        }
        for x in [
            "controller_server",
            "request_server",
            "mindie_client",
            "mindie_mangment",
            "external",
            "status",
        ] {
            v["tls_config"][format!("{x}_tls_enable")] = json!(true);
            v["tls_config"][format!("{x}_tls_items")] = item.clone();
        }
    });
    edit("global_rank_table_file.json", &|v| {
        for s in v["server_group_list"][0]["server_list"]
            .as_array_mut()
            .unwrap()
        {
            s["predict_port"] = json!("2025");
            s["mgmt_port"] = json!("2026");
            s["metric_port"] = json!("2027");
            s["inter_comm_port"] = json!("2121");
        }
    });
}

/// `GET path` over mutual TLS with the test PKI's client certificate; 0 when it fails.
async fn tls_status(
    a: SocketAddr,
    path: &str,
    client: &std::sync::Arc<rustls::ClientConfig>,
) -> u16 {
    common::client::send(a, Some(client.clone()), "GET", path, None)
        .await
        .map(|r| r.status)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_with_tls_on_every_link() {
    let pki = common::pki::Pki::shared();
    let inst = Install::new();
    secure(&inst, pki);
    inst.bash(&readme_block());
    let client = mindie::security::tls::client_config(
        std::slice::from_ref(&pki.ca),
        Some((
            &pki.client_cert,
            &pki.client_key,
            Some(&pki.client_key_pwd_file),
        )),
    )
    .unwrap();
    let status = addr("127.0.0.4:2029");
    let t0 = Instant::now();
    while tls_status(status, "/v1/readiness", &client).await != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not ready over TLS\n{}",
            inst.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The Controller's probe server and the servers' planes are TLS too.
    assert_eq!(
        tls_status(addr("127.0.0.2:2030"), "/v1/health", &client).await,
        200
    );
    assert_eq!(
        tls_status(addr("127.0.0.3:2026"), "/v2/health/ready", &client).await,
        200
    );
    // A client without a certificate is refused at the Coordinator's predict port.
    let anonymous =
        mindie::security::tls::client_config(std::slice::from_ref(&pki.ca), None).unwrap();
    let r = common::client::send(
        addr("127.0.0.4:2025"),
        Some(anonymous),
        "POST",
        "/v1/completions",
        Some("{}"),
    )
    .await;
    assert!(
        r.is_err(),
        "accepted without a client certificate: {:?}",
        r.map(|r| r.status)
    );

    let want = reference_answers();
    let out = Command::new(sdk_python())
        .arg(repo().join("tests/cluster/sdk_check.py"))
        .args(["https://127.0.0.4:2025", "tiny-llama"])
        .env("SDK_CA", &pki.ca)
        .env("SDK_CERT", &pki.client_cert)
        .env("SDK_KEY", &pki.client_key)
        .env("SDK_KEY_PASSWORD_FILE", &pki.client_key_pwd_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK over mutual TLS failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        inst.logs()
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["completion", "completion_stream", "chat", "chat_stream"] {
        assert_eq!(
            got[key], want[key],
            "{key}: cluster over TLS {got} vs standard {want}"
        );
    }
    // The Coordinator's aggregated metrics come from every instance over mutual TLS.
    let m = common::client::send(
        addr("127.0.0.4:2028"),
        Some(client.clone()),
        "GET",
        "/metrics",
        None,
    )
    .await
    .unwrap();
    assert_eq!(m.status, 200, "{}", m.text());
    assert!(m.text().contains("request_success_total"), "{}", m.text());
}
