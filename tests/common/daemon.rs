//! Starts the real `mindieservice_daemon` binary on free loopback ports with a config written
//! into a temporary install home, and captures its output.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mindieservice_daemon");

/// The binary [`Home`] starts: `MINDIE_TEST_DAEMON_BIN` when set (a copy of this build, for
/// target folders that other builds overwrite while tests run), else [`BIN`].
pub fn bin() -> PathBuf {
    std::env::var_os("MINDIE_TEST_DAEMON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    // Never the same port twice in this process: the kernel may hand a just-released port to
    // the next bind, and tests starting daemons in parallel would then collide.
    static GIVEN: Mutex<std::collections::BTreeSet<u16>> =
        Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..1000 {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = l.local_addr().expect("local addr").port();
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no port not handed out before");
}

/// The shipped default config, as JSON.
pub fn shipped_config() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/config.json");
    serde_json::from_slice(&std::fs::read(path).expect("read conf/config.json")).expect("parse")
}

/// A temporary install home with `conf/config.json` and the ports it uses.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub config: Value,
    pub port: u16,
    pub mgmt_port: u16,
    pub metrics_port: u16,
}

impl Home {
    /// Shipped config on free ports, mock model, management on 127.0.0.1 (separate port).
    pub fn new() -> Self {
        let mut config = shipped_config();
        let (port, mgmt_port, metrics_port) = (free_port(), free_port(), free_port());
        let s = &mut config["ServerConfig"];
        s["ipAddress"] = "127.0.0.1".into();
        s["managementIpAddress"] = "127.0.0.1".into();
        s["port"] = port.into();
        s["managementPort"] = mgmt_port.into();
        s["metricsPort"] = metrics_port.into();
        let m = &mut config["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0];
        m["modelInstanceType"] = "StandardMock".into();
        m["modelName"] = "mock-model".into();
        // The mock runs no model but uses the fixture's tokenizer.
        m["modelWeightPath"] = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/tiny-llama")
            .to_str()
            .expect("utf8 path")
            .into();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("conf")).expect("mkdir conf");
        Self {
            dir,
            config,
            port,
            mgmt_port,
            metrics_port,
        }
    }

    /// Copies a fixture model (e.g. `tiny-llama`) into the home with a 0640 config.json and
    /// points the config at it as a `Standard` model.
    pub fn use_fixture_model(&mut self, name: &str) -> PathBuf {
        let model = self.path().join(name);
        std::fs::create_dir_all(&model).expect("mkdir model");
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name);
        for f in std::fs::read_dir(&src).expect("fixture model") {
            let f = f.expect("entry").path();
            std::fs::copy(&f, model.join(f.file_name().expect("name"))).expect("copy");
        }
        std::fs::set_permissions(
            model.join("config.json"),
            std::fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        self.set(
            "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelInstanceType",
            "Standard",
        )
        .set(
            "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelWeightPath",
            model.to_str().expect("utf8"),
        );
        model
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("conf/config.json")
    }

    /// Sets a value by JSON pointer, e.g. `/ServerConfig/maxLinkNum`.
    pub fn set(&mut self, pointer: &str, v: impl Into<Value>) -> &mut Self {
        *self
            .config
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("no {pointer}")) = v.into();
        self
    }

    /// Writes the config with mode 0640.
    pub fn write(&self) -> PathBuf {
        let p = self.config_path();
        std::fs::write(&p, serde_json::to_vec_pretty(&self.config).expect("json")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        p
    }

    pub fn business(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn mgmt(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.mgmt_port))
    }

    pub fn metrics(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }

    fn command(&self, extra_env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(bin());
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("MIES_INSTALL_PATH", self.path())
            .env("MIES_CONFIG_JSON_PATH", self.config_path());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        c
    }

    /// Writes the config (mode 0640), starts the daemon and waits for `Daemon start success!`.
    pub fn start(&self, extra_env: &[(&str, &str)]) -> Daemon {
        self.write();
        self.start_without_write(extra_env)
    }

    /// Starts the daemon on the config file as it is on disk.
    pub fn start_without_write(&self, extra_env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(self.command(extra_env), "Daemon start success!")
    }

    /// Runs the daemon (or `check`) expecting it to exit by itself; returns status and output.
    pub fn run_to_exit(
        &self,
        args: &[&str],
        extra_env: &[(&str, &str)],
    ) -> (ExitStatus, String, String) {
        let mut c = self.command(extra_env);
        c.args(args);
        run_to_exit(c)
    }
}

/// Runs `cmd` expecting it to exit by itself within 30 s; returns status, stdout, stderr.
pub fn run_to_exit(mut cmd: Command) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("process did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running daemon; killed on drop if still running.
pub struct Daemon {
    pub child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    /// How many of the two output readers have reached the end of their pipe.
    drained: Arc<std::sync::atomic::AtomicUsize>,
}

impl Daemon {
    /// Spawns `cmd` (the binary with its arguments and environment) and waits until its
    /// stdout shows `ready`; panics with its output when it exits first or takes over 60 s.
    pub fn spawn(cmd: Command, ready: &str) -> Daemon {
        let mut d = Daemon::spawn_unready(cmd);
        d.wait_for(ready, Duration::from_secs(60));
        d
    }

    /// Spawns `cmd` without waiting for anything.
    pub fn spawn_unready(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (o, e) = (out.clone(), err.clone());
        let (d1, d2) = (drained.clone(), drained.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut g = o.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
            d1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = e.lock().unwrap();
                g.push_str(&line);
                g.push('\n');
            }
            d2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        Daemon {
            child,
            out,
            err,
            drained,
        }
    }

    /// Waits until stdout shows `ready`; panics with the output when the process exits first
    /// or `limit` passes (the process is killed then).
    pub fn wait_for(&mut self, ready: &str, limit: Duration) {
        let t0 = Instant::now();
        loop {
            if self.stdout().contains(ready) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "daemon exited {st} before {ready:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "daemon did not print {ready:?} in {limit:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// stdout then stderr so far.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill");
    }

    /// Waits for exit up to `limit`; `None` if still running. After an exit, also waits (up to
    /// 5 s) until everything the process wrote has been read, so `output()` is complete (the
    /// readers can lag the exit, and a check of the output right after it saw nothing).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                let t1 = Instant::now();
                while self.drained.load(std::sync::atomic::Ordering::SeqCst) < 2
                    && t1.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
