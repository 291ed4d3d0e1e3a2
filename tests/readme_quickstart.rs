//! The README's secure quick start works verbatim: the shell block after the
//! `<!-- quickstart-tls -->` marker is run with bash, unmodified, from the root of a fresh copy
//! of the layout it expects (the real binary at `bin/mindieservice_daemon`, `conf/`, the empty
//! `security/` folders, the tiny fixture model); then `check` on the shipped
//! `conf/config.https-mtls.json` reports no error, and the daemon started on that config
//! (a copy with free ports, so tests can run side by side) answers an inference request and the
//! management and metrics planes over mutual TLS with the block's client certificate, and
//! refuses a client without one.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::send;
use mindie::security::tls::client_config;

const BIN: &str = env!("CARGO_BIN_EXE_mindieservice_daemon");
const REPO: &str = env!("CARGO_MANIFEST_DIR");
const MARKER: &str = "<!-- quickstart-tls";

/// The first ```sh block after the marker comment in README.md.
fn quickstart_block() -> String {
    let readme = fs::read_to_string(Path::new(REPO).join("README.md")).unwrap();
    let after = &readme[readme
        .find(MARKER)
        .expect("README has the quickstart-tls marker")..];
    let mut lines = after.lines().skip(1);
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "the marker is followed by a ```sh fence"
    );
    let mut block = String::new();
    for line in lines {
        if line == "```" {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("the quickstart block has no closing fence");
}

/// Copies what the recipe expects from the repository into `home`: the binary as
/// `bin/mindieservice_daemon`, `conf/config.https-mtls.json`, the fixture model, and the
/// `security/` folders with only their READMEs and `.gitkeep` files.
fn lay_out(home: &Path) {
    let repo = Path::new(REPO);
    fs::create_dir_all(home.join("bin")).unwrap();
    let bin = home.join("bin/mindieservice_daemon");
    if fs::hard_link(BIN, &bin).is_err() {
        fs::copy(BIN, &bin).unwrap();
    }
    fs::create_dir_all(home.join("conf")).unwrap();
    fs::copy(
        repo.join("conf/config.https-mtls.json"),
        home.join("conf/config.https-mtls.json"),
    )
    .unwrap();
    let model = "tests/fixtures/models/tiny-llama";
    fs::create_dir_all(home.join(model)).unwrap();
    for entry in fs::read_dir(repo.join(model)).unwrap() {
        let p = entry.unwrap().path();
        fs::copy(&p, home.join(model).join(p.file_name().unwrap())).unwrap();
    }
    copy_security(&repo.join("security"), &home.join("security"));
}

fn copy_security(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap(); // as git checks out
    for entry in fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap();
        if p.is_dir() {
            copy_security(&p, &to.join(name));
        } else if name == ".gitkeep" || name == "README.md" {
            fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// A free port on `ip`.
fn free_port(ip: [u8; 4]) -> u16 {
    TcpListener::bind(SocketAddr::from((ip, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(child: &mut Child, log: &Path, needle: &str, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("exited {st} before `{needle}`:\n{text}");
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("no `{needle}` within {limit:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn readme_secure_quick_start_works_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    lay_out(home);

    // The block, exactly as written, under `bash -e` so that any failing step fails the test.
    let block = quickstart_block();
    let log = home.join("quickstart.log");
    let mut child = Command::new("bash")
        .args(["-e", "-c", &block])
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::options().append(true).open(&log).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("the quickstart block ran past 600 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = fs::read_to_string(&log).unwrap();
    assert!(
        status.success(),
        "the quickstart block failed ({status}):\n{out}"
    );
    assert!(out.contains("0 error(s)"), "{out}");
    assert!(!out.contains("[ERROR]"), "{out}");

    // `check` on the shipped secure config, as the README says.
    let bin = home.join("bin/mindieservice_daemon");
    let check = Command::new(&bin)
        .args(["check", "--config-file", "conf/config.https-mtls.json"])
        .current_dir(home)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "check failed:\n{report}");
    assert!(report.contains("0 error(s), 0 warning(s)"), "{report}");

    // The daemon on the same config with free ports.
    let mut config: serde_json::Value =
        serde_json::from_slice(&fs::read(home.join("conf/config.https-mtls.json")).unwrap())
            .unwrap();
    let (port, mgmt, metrics) = (
        free_port([127, 0, 0, 1]),
        free_port([127, 0, 0, 2]),
        free_port([127, 0, 0, 2]),
    );
    let s = &mut config["ServerConfig"];
    s["port"] = port.into();
    s["managementPort"] = mgmt.into();
    s["metricsPort"] = metrics.into();
    s["interCommPort"] = free_port([127, 0, 0, 1]).into();
    let test_config = home.join("conf/config.test.json");
    fs::write(&test_config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    fs::set_permissions(&test_config, fs::Permissions::from_mode(0o640)).unwrap();
    let daemon_log = home.join("daemon.log");
    let mut daemon = Killed(
        Command::new(&bin)
            .args(["--config-file", "conf/config.test.json"])
            .current_dir(home)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&daemon_log).unwrap())
            .stderr(fs::File::options().append(true).open(&daemon_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(
        &mut daemon.0,
        &daemon_log,
        "Daemon start success!",
        Duration::from_secs(120),
    );

    let sec = home.join("security");
    let with_cert = client_config(
        &[sec.join("ca/ca.pem")],
        Some((
            &sec.join("client/client.pem"),
            &sec.join("client/client.key.pem"),
            Some(&sec.join("client/client_pwd.txt")),
        )),
    )
    .expect("client config from the quickstart's client files");
    let business = SocketAddr::from(([127, 0, 0, 1], port));
    let body = serde_json::json!({
        "model": "tiny-llama",
        "messages": [{"role": "user", "content": "Hello!"}],
        "max_tokens": 4
    })
    .to_string();
    let r = send(
        business,
        Some(with_cert.clone()),
        "POST",
        "/v1/chat/completions",
        Some(&body),
    )
    .await
    .expect("inference over mutual TLS");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["object"], "chat.completion", "{}", r.text());
    for (addr, path) in [
        (SocketAddr::from(([127, 0, 0, 2], mgmt)), "/v2/health/ready"),
        (SocketAddr::from(([127, 0, 0, 2], mgmt)), "/v1/config"),
        (SocketAddr::from(([127, 0, 0, 2], metrics)), "/metrics"),
    ] {
        let r = send(addr, Some(with_cert.clone()), "GET", path, None)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    }
    let without_cert = client_config(&[sec.join("ca/ca.pem")], None).unwrap();
    let refused = send(business, Some(without_cert), "GET", "/v1/models", None).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );
}
