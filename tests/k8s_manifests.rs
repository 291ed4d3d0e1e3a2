//! The Kubernetes layouts in `conf/k8s/` (multi- and single-machine), checked offline:
//!
//! - every manifest passes `kubernetes-validate --strict` (PyPI, pinned in
//!   [`VALIDATE_VERSION`]) against Kubernetes [`K8S_VERSION`];
//! - `tests/k8s/check_manifests.py` (PyYAML from the same venv) holds them to the promises of
//!   `conf/k8s/README.md`: security contexts, POD_IP from the downward API, mTLS exec probes on
//!   the ports and paths the embedded configs name, the one NodePort Service, ConfigMap keys
//!   that exist, TLS on every link with the pod's generated certificate;
//! - the embedded server configs pass the real daemon's `check`;
//! - `boot.sh` picks the role from the ranktable as MindIE-Motor's helper does (real bash and
//!   python3), and in each role runs gen-cert with the pod IP and execs the right subcommand
//!   with the right environment (a recording stand-in for the binary: the pod's dispatch is
//!   what is tested here);
//! - the probe helper passes a real daemon's mutual TLS with the pod's certificate layout.
//!
//! The venv is `target/k8s-venv` (made here with `python3 -m venv` + `pip install` when
//! missing; `.ci/run` makes it too).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::{free_port, Home};
use common::pki::Pki;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The kubernetes-validate release these tests were written against.
const VALIDATE_VERSION: &str = "1.37.0";
/// The Kubernetes API version the manifests are validated against.
const K8S_VERSION: &str = "1.33.0";
const LAYOUTS: [&str; 2] = ["multi", "single"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn k8s_dir() -> PathBuf {
    repo().join("conf/k8s")
}

/// `target/k8s-venv/bin/<tool>`, making the venv first when missing.
fn venv_bin(tool: &str) -> PathBuf {
    let venv = common::venv::venv(
        "k8s-venv",
        &format!("kubernetes-validate=={VALIDATE_VERSION}"),
        "bin/kubernetes-validate",
    );
    venv.join("bin").join(tool)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for layout in LAYOUTS {
        for e in fs::read_dir(k8s_dir().join(layout)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_manifest_passes_strict_schema_validation() {
    let files = manifests();
    assert!(files.len() >= 9, "manifests: {files:?}");
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", K8S_VERSION])
        .args(&files)
        .output()
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "kubernetes-validate --strict:\n{log}");
    // Every object was looked at (an empty or unparsable file would pass silently).
    let passed = log.matches(" passed for resource ").count();
    assert_eq!(passed, 16, "objects validated:\n{log}");
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn a_broken_manifest_fails_validation() {
    let dir = tempfile::tempdir().unwrap();
    let good = fs::read_to_string(k8s_dir().join("multi/22-server.yaml")).unwrap();
    let bad = good.replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    assert_ne!(good, bad);
    let path = dir.path().join("bad.yaml");
    fs::write(&path, bad).unwrap();
    let out = Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "-k", K8S_VERSION])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("readOnlyRootFileSystem"),
        "{}",
        text(&out)
    );
}

fn check_script(root: &Path) -> Output {
    Command::new(venv_bin("python"))
        .arg(repo().join("tests/k8s/check_manifests.py"))
        .arg("check")
        .arg(root)
        .output()
        .unwrap()
}

#[test]
fn manifests_keep_the_readme_promises() {
    let out = check_script(&k8s_dir());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("0 broken promise(s)"), "{}", text(&out));
}

/// A copy of conf/k8s with `edit` applied to one file.
fn mutated(file: &str, from: &str, to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["", "multi", "single"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for e in fs::read_dir(k8s_dir().join(sub)).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                fs::copy(&p, dir.path().join(sub).join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    let p = dir.path().join(file);
    let t = fs::read_to_string(&p).unwrap();
    assert!(t.contains(from), "{file} has no {from:?}");
    fs::write(&p, t.replacen(from, to, 1)).unwrap();
    dir
}

#[test]
fn the_promise_checks_catch_broken_manifests() {
    let cases = [
        (
            "multi/22-server.yaml",
            "/v2/health/ready",
            "/v2/health/live",
            "readiness must be GET /v2/health/ready",
        ),
        (
            "multi/20-controller.yaml",
            "fieldPath: status.podIP",
            "fieldPath: status.hostIP",
            "POD_IP must come from status.podIP",
        ),
        (
            "multi/30-service.yaml",
            "name: mindie-ms-coordinator-infer",
            "name: mindie-ms-coordinator",
            "must not be named mindie-ms-coordinator",
        ),
        (
            "multi/21-coordinator.yaml",
            "allowPrivilegeEscalation: false",
            "allowPrivilegeEscalation: true",
            "allowPrivilegeEscalation must be false",
        ),
        (
            "multi/21-coordinator.yaml",
            "readOnly: true",
            "readOnly: false",
            "must be readOnly",
        ),
        (
            "multi/11-configs.yaml",
            "\"status_port\": \"1029\"",
            "\"status_port\": \"1039\"",
            "containerPorts",
        ),
        (
            "single/11-configs.yaml",
            "\"port\": 1030",
            "\"port\": 2026",
            "127.0.0.1:2026 used by both",
        ),
        (
            "multi/11-configs.yaml",
            "\"request_server_tls_enable\": true",
            "\"request_server_tls_enable\": false",
            "request_server_tls_enable must be true",
        ),
        (
            "single/20-deployment.yaml",
            "name: mindie-single-config",
            "name: mindie-single-configs",
            "no ConfigMap mindie-single-configs",
        ),
        (
            "boot.sh",
            "set -euo pipefail",
            "set -eu",
            "boot.sh differs from conf/k8s/boot.sh",
        ),
        (
            "multi/12-ranktable.yaml",
            "\"mgmt_port\": \"1026\"",
            "\"mgmt_port\": \"1036\"",
            "ports must be the server config's",
        ),
    ];
    for (file, from, to, want) in cases {
        let dir = mutated(file, from, to);
        let out = check_script(dir.path());
        assert!(
            !out.status.success() && text(&out).contains(want),
            "{file}: {from} -> {to} should fail with {want:?}:\n{}",
            text(&out)
        );
    }
}

/// Every ConfigMap key of both layouts, extracted: `<dir>/<layout>/<configmap>/<key>`.
fn extracted() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/k8s/check_manifests.py"))
        .arg("extract")
        .arg(k8s_dir())
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    dir
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// The pod's `/run/mindie/tls` as gen-cert leaves it, from the test PKI (its server
/// certificate has serverAuth + clientAuth and SAN 127.0.0.1, as a pod's has its IP).
fn pod_tls(run: &Path, pki: &Pki) {
    let tls = run.join("tls");
    fs::create_dir_all(&tls).unwrap();
    chmod(&tls, 0o700);
    for (src, name) in [
        (&pki.ca, "ca.pem"),
        (&pki.server_cert, "cert.pem"),
        (&pki.server_key, "cert.key.pem"),
        (&pki.server_key_pwd_file, "cert_passwd.txt"),
    ] {
        fs::copy(src, tls.join(name)).unwrap();
        chmod(&tls.join(name), 0o400);
    }
}

/// A server config from a ConfigMap, as it runs in the pod, but with `/run/mindie` at `run`,
/// free ports and the fixture model in `home`.
fn pod_server_config(file: &Path, run: &Path, home: &mut Home) {
    let text = fs::read_to_string(file)
        .unwrap()
        .replace("/run/mindie", run.to_str().unwrap());
    let mut c: Value = serde_json::from_str(&text).unwrap();
    let s = &mut c["ServerConfig"];
    s["port"] = home.port.into();
    s["managementPort"] = home.mgmt_port.into();
    s["metricsPort"] = home.metrics_port.into();
    s["interCommPort"] = free_port().into();
    home.config = c;
    home.use_fixture_model("tiny-llama");
}

#[test]
fn the_embedded_server_configs_pass_the_daemons_check() {
    let cms = extracted();
    let pki = Pki::shared();
    let files = [
        "multi/mindie-server-config/config.json",
        "single/mindie-single-config/config1.json",
        "single/mindie-single-config/config2.json",
    ];
    for f in files {
        let mut home = Home::new();
        let run = home.path().join("run");
        pod_tls(&run, pki);
        pod_server_config(&cms.path().join(f), &run, &mut home);
        home.write();
        let (st, out, err) = home.run_to_exit(
            &["check"],
            &[
                ("MIES_CONTAINER_IP", "127.0.0.1"),
                ("MIES_CONTAINER_MANAGEMENT_IP", "127.0.0.1"),
            ],
        );
        assert!(st.success(), "{f}: check failed:\n{out}\n{err}");
    }
}

#[test]
fn the_probe_helper_passes_a_real_daemons_mutual_tls() {
    let cms = extracted();
    let pki = Pki::shared();
    let mut home = Home::new();
    let run = home.path().join("run");
    pod_tls(&run, pki);
    pod_server_config(
        &cms.path().join("multi/mindie-server-config/config.json"),
        &run,
        &mut home,
    );
    // As boot.sh runs a server with POD_IP=127.0.0.1.
    let _daemon = home.start(&[
        ("MIES_CONTAINER_IP", "127.0.0.1"),
        ("MIES_CONTAINER_MANAGEMENT_IP", "127.0.0.1"),
    ]);
    let probe = |args: &[&str]| {
        Command::new("python3")
            .arg(k8s_dir().join("k8s_helper.py"))
            .arg("probe")
            .args(args)
            .env("POD_IP", "127.0.0.1")
            .env("MINDIE_RUN_DIR", &run)
            .output()
            .unwrap()
    };
    let mgmt = home.mgmt_port.to_string();
    let ok = probe(&[&mgmt, "/v2/health/live"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let ok = probe(&[
        "--host",
        "127.0.0.1",
        &mgmt,
        "/v2/health/live",
        &mgmt,
        "/v2/health/live",
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    let missing = probe(&[&mgmt, "/no/such/route"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("HTTP 404"), "{}", text(&missing));
    let closed = free_port().to_string();
    let refused = probe(&[&closed, "/v2/health/live"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    // Why the probes are exec and not httpGet: without a client certificate (all an httpGet
    // probe can do) the management port refuses the request.
    let script = "import ssl,socket,sys\n\
        ctx=ssl.create_default_context(cafile=sys.argv[1])\n\
        s=ctx.wrap_socket(socket.create_connection(('127.0.0.1',int(sys.argv[2]))),server_hostname='127.0.0.1')\n\
        s.sendall(b'GET /v2/health/live HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n\
        print(s.recv(100))\n";
    let anon = Command::new("python3")
        .args(["-c", script])
        .arg(run.join("tls/ca.pem"))
        .arg(&mgmt)
        .output()
        .unwrap();
    assert!(
        !anon.status.success() && !text(&anon).contains("200 OK"),
        "a client without certificate got through:\n{}",
        text(&anon)
    );
}

// ------------------------------------------------------------------ boot.sh

/// A ranktable with the coordinator, the controller and two servers.
fn ranktable(dir: &Path, status: &str) -> PathBuf {
    let rt = serde_json::json!({
        "version": "1.0", "status": status,
        "server_group_list": [
            {"group_id": "2", "server_count": "2", "server_list": [
                {"server_id": "10.0.0.20", "server_ip": "10.0.0.20", "device": []},
                {"server_id": "10.0.0.21", "server_ip": "10.0.0.21", "device": []}]},
            {"group_id": "1", "server_count": "1", "server_list": [{"server_ip": "10.0.0.11"}]},
            {"group_id": "0", "server_count": "1", "server_list": [{"server_ip": "10.0.0.10"}]}]
    });
    let p = dir.join("global_ranktable.json");
    fs::write(&p, serde_json::to_vec_pretty(&rt).unwrap()).unwrap();
    p
}

fn boot(mode: &str, env: &[(&str, &Path)], pod_ip: Option<&str>) -> Command {
    let mut c = Command::new("bash");
    c.arg(k8s_dir().join("boot.sh")).arg(mode);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    if let Some(ip) = pod_ip {
        c.env("POD_IP", ip);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

#[test]
fn boot_role_picks_coordinator_controller_and_server_like_motor() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ranktable(dir.path(), "completed");
    for (ip, code, name) in [
        ("10.0.0.10", 0, "coordinator"),
        ("10.0.0.11", 1, "controller"),
        ("10.0.0.20", 2, "server"),
        ("10.0.0.21", 2, "server"),
    ] {
        let out = boot("role", &[("MINDIE_RANKTABLE", rt.as_path())], Some(ip))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{ip}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), name, "{ip}");
    }
    let out = boot(
        "role",
        &[("MINDIE_RANKTABLE", rt.as_path())],
        Some("10.0.0.99"),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("POD_IP 10.0.0.99 is in no server_list"),
        "{}",
        text(&out)
    );
    let out = boot("role", &[("MINDIE_RANKTABLE", rt.as_path())], None)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("POD_IP is not set"), "{}", text(&out));
    let out = boot("role", &[("MINDIE_RANKTABLE", rt.as_path())], Some("pod-a"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(text(&out).contains("not an IP address"), "{}", text(&out));
}

#[test]
fn boot_role_waits_for_a_completed_ranktable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = ranktable(dir.path(), "initializing");
    let t0 = Instant::now();
    let out = boot(
        "role",
        &[("MINDIE_RANKTABLE", rt.as_path())],
        Some("10.0.0.10"),
    )
    .env("RANKTABLE_WAIT_SECONDS", "2")
    .output()
    .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(2));
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("still not \"completed\""),
        "{}",
        text(&out)
    );
    // Completed while waiting: the role comes out.
    let child = boot(
        "role",
        &[("MINDIE_RANKTABLE", rt.as_path())],
        Some("10.0.0.10"),
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    ranktable(dir.path(), "completed");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// A stand-in for the binary that records its arguments and environment in `$STUB_LOG` and,
/// as gen-cert, leaves the three files gen-cert writes in `output_path`.
const STUB: &str = r#"#!/usr/bin/env bash
set -eu
{
  printf 'ARGS'; printf ' %s' "$@"; printf '\n'
  for v in MIES_CONTAINER_IP MIES_CONTAINER_MANAGEMENT_IP MIES_INSTALL_PATH POD_IP \
           MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH \
           GLOBAL_RANK_TABLE_FILE_PATH; do
    printf '%s=%s\n' "$v" "${!v:-}"
  done
  printf 'CWD=%s\n' "$PWD"
} >>"$STUB_LOG.$$"
mv "$STUB_LOG.$$" "$STUB_LOG.$(date +%s%N).$$"
if [ "${1:-}" = gen-cert ]; then
  out=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["output_path"])' "$2")
  for f in cert.pem cert.key.pem cert_passwd.txt; do echo stub >"$out/$f"; chmod 0400 "$out/$f"; done
fi
case "${1:-}" in
  gen-cert) ;;
  controller) exec sleep "${STUB_CONTROLLER_SECONDS:-0}" ;;
  *) exec sleep "${STUB_SECONDS:-0}" ;;
esac
"#;

struct Pod {
    dir: tempfile::TempDir,
    rt: PathBuf,
}

impl Pod {
    /// A pod's mounts from the multi-machine ConfigMaps, a fake CA Secret and the stub.
    fn new(layout_conf: &str) -> Pod {
        let cms = extracted();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["ca", "conf", "cert-info", "ranktable", "run", "bin", "log"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        for f in ["ca.pem", "ca.key.pem", "ca_passwd.txt"] {
            fs::write(d.join("ca").join(f), f).unwrap();
            chmod(&d.join("ca").join(f), 0o440);
        }
        for e in fs::read_dir(cms.path().join(layout_conf)).unwrap() {
            let p = e.unwrap().path();
            fs::copy(&p, d.join("conf").join(p.file_name().unwrap())).unwrap();
        }
        fs::copy(
            cms.path().join("multi/mindie-cert-info/cert_info.json"),
            d.join("cert-info/cert_info.json"),
        )
        .unwrap();
        let rt = ranktable(&d.join("ranktable"), "completed");
        fs::write(d.join("bin/daemon"), STUB).unwrap();
        chmod(&d.join("bin/daemon"), 0o755);
        Pod { dir, rt }
    }

    fn p(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn command(&self, mode: &str, pod_ip: &str) -> Command {
        let (bin, run, ca, conf) = (
            self.p("bin/daemon"),
            self.p("run"),
            self.p("ca"),
            self.p("conf"),
        );
        let (ci, log) = (self.p("cert-info/cert_info.json"), self.p("log/call"));
        let mut c = boot(
            mode,
            &[
                ("MINDIE_DAEMON_BIN", bin.as_path()),
                ("MINDIE_RUN_DIR", run.as_path()),
                ("MINDIE_CA_DIR", ca.as_path()),
                ("MINDIE_CONF_DIR", conf.as_path()),
                ("MINDIE_CERT_INFO", ci.as_path()),
                ("MINDIE_RANKTABLE", self.rt.as_path()),
                ("STUB_LOG", log.as_path()),
            ],
            Some(pod_ip),
        );
        c.env("RANKTABLE_SYNC_SECONDS", "1");
        c
    }

    /// The stand-in's calls, oldest first: (args, env lines).
    fn calls(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.p("log"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.split('.').count() == 3)
            .collect();
        names.sort();
        names
            .iter()
            .map(|n| fs::read_to_string(self.p("log").join(n)).unwrap())
            .collect()
    }

    fn mode(&self, sub: &str) -> u32 {
        fs::metadata(self.p(sub)).unwrap().permissions().mode() & 0o777
    }
}

fn run_boot(pod: &Pod, ip: &str) -> Vec<String> {
    let out = pod.command("multi", ip).output().unwrap();
    assert!(out.status.success(), "boot.sh for {ip}:\n{}", text(&out));
    let calls = pod.calls();
    assert_eq!(calls.len(), 2, "gen-cert then the role: {calls:?}");
    let run = pod.p("run");
    let r = run.to_str().unwrap();
    assert!(
        calls[0].starts_with(&format!("ARGS gen-cert {r}/conf/gen_cert.json --ip={ip}\n")),
        "{}",
        calls[0]
    );
    // gen_cert.json names the private CA copies, made 0400 and gone after gen-cert.
    let g: Value =
        serde_json::from_slice(&fs::read(run.join("conf/gen_cert.json")).unwrap()).unwrap();
    assert_eq!(g["ca_key"], format!("{r}/ca/ca.key.pem"));
    assert_eq!(g["output_path"], format!("{r}/tls"));
    assert!(!run.join("ca/ca.key.pem").exists() && !run.join("ca/ca_passwd.txt").exists());
    assert_eq!(pod.mode("run/tls/ca.pem"), 0o400);
    assert_eq!(pod.mode("run/tls/cert.key.pem"), 0o400);
    // cert_info.json: the ConfigMap's, with a serial of its own.
    let ci: Value =
        serde_json::from_slice(&fs::read(run.join("conf/cert_info.json")).unwrap()).unwrap();
    assert_eq!(pod.mode("run/conf/cert_info.json"), 0o640);
    assert!(ci["serial_number"].as_u64().unwrap() >= 1);
    assert_eq!(ci["req_distinguished_name"]["CN"], "mindie-k8s");
    calls
}

#[test]
fn boot_runs_a_server_with_its_pod_ip() {
    let pod = Pod::new("multi/mindie-server-config");
    let calls = run_boot(&pod, "10.0.0.20");
    let r = pod.p("run");
    let r = r.to_str().unwrap();
    let c = &calls[1];
    assert!(
        c.starts_with(&format!("ARGS --config-file {r}/conf/config.json\n")),
        "{c}"
    );
    assert!(c.contains("MIES_CONTAINER_IP=10.0.0.20\n"), "{c}");
    assert!(
        c.contains("MIES_CONTAINER_MANAGEMENT_IP=10.0.0.20\n"),
        "{c}"
    );
    assert!(c.contains(&format!("MIES_INSTALL_PATH={r}\n")), "{c}");
    assert_eq!(pod.mode("run/conf/config.json"), 0o640);
    let copied = fs::read(pod.p("run/conf/config.json")).unwrap();
    assert_eq!(copied, fs::read(pod.p("conf/config.json")).unwrap());
}

#[test]
fn boot_runs_the_coordinator_on_its_pod_ip() {
    let pod = Pod::new("multi/mindie-ms-coordinator-config");
    let calls = run_boot(&pod, "10.0.0.10");
    let r = pod.p("run");
    let r = r.to_str().unwrap();
    let c = &calls[1];
    assert!(
        c.starts_with("ARGS coordinator 10.0.0.10 10.0.0.10\n"),
        "{c}"
    );
    assert!(
        c.contains(&format!(
            "MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH={r}/conf/ms_coordinator.json\n"
        )),
        "{c}"
    );
    assert!(c.contains("MIES_CONTAINER_IP=\n"), "{c}");
    assert_eq!(pod.mode("run/conf/ms_coordinator.json"), 0o640);
}

#[test]
fn boot_runs_the_controller_and_keeps_its_ranktable_current() {
    let pod = Pod::new("multi/mindie-ms-controller-config");
    // The ranktable sync loop outlives boot.sh's exec by up to a second: its output goes to
    // a file, so that waiting for the exit does not wait for the loop's pipes.
    let log = fs::File::create(pod.p("boot.log")).unwrap();
    let mut child = pod
        .command("multi", "10.0.0.11")
        .env("STUB_CONTROLLER_SECONDS", "6")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let r = pod.p("run");
    let copy = r.join("conf/global_ranktable.json");
    let t0 = Instant::now();
    while pod.calls().len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no controller start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = pod.calls();
    let c = &calls[1];
    let r = r.to_str().unwrap();
    assert!(c.starts_with("ARGS controller\n"), "{c}");
    assert!(c.contains("POD_IP=10.0.0.11\n"), "{c}");
    assert!(
        c.contains(&format!(
            "MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH={r}/conf/ms_controller.json\n"
        )),
        "{c}"
    );
    assert!(
        c.contains(&format!(
            "GLOBAL_RANK_TABLE_FILE_PATH={r}/conf/global_ranktable.json\n"
        )),
        "{c}"
    );
    assert_eq!(pod.mode("run/conf/global_ranktable.json"), 0o640);
    // An operator's update of the mounted ranktable reaches the Controller's copy.
    let mut rt: Value = serde_json::from_slice(&fs::read(&pod.rt).unwrap()).unwrap();
    rt["server_group_list"][0]["server_list"][1]["server_ip"] = "10.0.0.22".into();
    fs::write(&pod.rt, serde_json::to_vec(&rt).unwrap()).unwrap();
    let t0 = Instant::now();
    while !fs::read_to_string(&copy).unwrap().contains("10.0.0.22") {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "ranktable copy not updated"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(pod.mode("run/conf/global_ranktable.json"), 0o640);
    let st = child.wait().unwrap();
    let log = fs::read_to_string(pod.p("boot.log")).unwrap();
    assert!(st.success(), "{log}");
    assert!(log.contains("ranktable updated"), "{log}");
}

#[test]
fn boot_refuses_a_pod_missing_from_the_ranktable() {
    let pod = Pod::new("multi/mindie-server-config");
    let out = pod.command("multi", "10.0.0.99").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("POD_IP 10.0.0.99 is in no server_list"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("no role for POD_IP 10.0.0.99"),
        "{}",
        text(&out)
    );
    assert!(
        pod.calls().is_empty(),
        "nothing may start: {:?}",
        pod.calls()
    );
}

#[test]
fn boot_single_runs_every_part_and_stops_them_together() {
    let pod = Pod::new("single/mindie-single-config");
    let t0 = Instant::now();
    // The Controller's stand-in ends after a second; the others would run for a minute.
    let out = pod
        .command("single", "10.0.0.30")
        .env("STUB_SECONDS", "60")
        .env("STUB_CONTROLLER_SECONDS", "1")
        .output()
        .unwrap();
    // The supervisor stopped the others at once and failed the pod (Kubernetes restarts it).
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("a process ended"), "{}", text(&out));
    let calls = pod.calls();
    let r = pod.p("run");
    let r = r.to_str().unwrap();
    assert!(
        calls[0].starts_with(&format!(
            "ARGS gen-cert {r}/conf/gen_cert.json --ip=10.0.0.30,127.0.0.1\n"
        )),
        "{calls:?}"
    );
    let rest: Vec<&String> = calls[1..].iter().collect();
    assert_eq!(
        rest.len(),
        4,
        "two servers, coordinator, controller: {calls:?}"
    );
    let find = |prefix: &str| {
        rest.iter()
            .find(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix}: {calls:?}"))
            .to_string()
    };
    for i in [1, 2] {
        let c = find(&format!("ARGS --config-file {r}/conf/config{i}.json\n"));
        assert!(c.contains("MIES_CONTAINER_IP=127.0.0.1\n"), "{c}");
        assert!(
            c.contains("MIES_CONTAINER_MANAGEMENT_IP=127.0.0.1\n"),
            "{c}"
        );
    }
    let c = find("ARGS coordinator 10.0.0.30 127.0.0.1\n");
    assert!(c.contains("MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH="), "{c}");
    let c = find("ARGS controller\n");
    assert!(c.contains("POD_IP=127.0.0.1\n"), "{c}");
    assert!(
        c.contains(&format!(
            "GLOBAL_RANK_TABLE_FILE_PATH={r}/conf/global_ranktable.json\n"
        )),
        "{c}"
    );
}
