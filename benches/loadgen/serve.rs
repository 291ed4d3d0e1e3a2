//! `--serve <model_dir>`: runs `mindieservice_daemon` for the sweep. Writes a config derived
//! from the repo's `conf/config.json` (free loopback ports, HTTP, the model folder, the
//! schedule limits the sweep needs) with mode 0640 into a fresh temp folder, starts the
//! daemon with its output in a log file there, waits for `/v2/health/ready`, and stops it with
//! SIGTERM afterwards (also when dropped). The folder is removed after a clean run and kept
//! (its path printed) when anything failed.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::client::Endpoint;

/// What the daemon is configured with.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub model_dir: PathBuf,
    pub model_name: String,
    pub base_config: PathBuf,
    pub daemon_bin: PathBuf,
    pub cpu_mem_gb: u64,
    pub max_batch_size: u64,
    pub max_prefill_batch_size: u64,
    pub max_prefill_tokens: Option<u64>,
    pub max_iter_times: Option<u64>,
    pub max_seq_len: Option<u64>,
    /// ScheduleConfig.templateType (None: the base config's).
    pub template: Option<String>,
    /// ScheduleConfig.prefillChunkSize (Mix: tokens in one step).
    pub chunk_tokens: Option<u64>,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub ready_timeout: Duration,
}

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    pub log: PathBuf,
    pub port: u16,
    pub mgmt_port: u16,
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local addr: {e}"))
}

/// Sets `v` at JSON pointer `p`, which must exist.
fn set(config: &mut Value, p: &str, v: impl Into<Value>) -> Result<(), String> {
    *config
        .pointer_mut(p)
        .ok_or_else(|| format!("base config has no {p}"))? = v.into();
    Ok(())
}

/// The daemon's config for `o`, on the given (business, management, metrics) ports.
pub fn build_config(o: &ServeOptions, ports: (u16, u16, u16)) -> Result<Value, String> {
    let text = std::fs::read(&o.base_config)
        .map_err(|e| format!("read {}: {e}", o.base_config.display()))?;
    let mut c: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("parse {}: {e}", o.base_config.display()))?;
    let weights = o
        .model_dir
        .canonicalize()
        .map_err(|e| format!("model folder {}: {e}", o.model_dir.display()))?;
    let need = o.prompt_tokens + o.output_tokens;
    let seq = o.max_seq_len.unwrap_or(need.max(2560));
    if seq < need {
        return Err(format!("maxSeqLen {seq} < prompt + output tokens ({need})"));
    }
    let input = o.prompt_tokens.max(2048).min(seq);
    let s = "/ServerConfig";
    set(&mut c, &format!("{s}/ipAddress"), "127.0.0.1")?;
    set(&mut c, &format!("{s}/managementIpAddress"), "127.0.0.1")?;
    set(&mut c, &format!("{s}/port"), ports.0)?;
    set(&mut c, &format!("{s}/managementPort"), ports.1)?;
    set(&mut c, &format!("{s}/metricsPort"), ports.2)?;
    set(&mut c, &format!("{s}/httpsEnabled"), false)?;
    let d = "/BackendConfig/ModelDeployConfig";
    set(&mut c, &format!("{d}/maxSeqLen"), seq)?;
    set(&mut c, &format!("{d}/maxInputTokenLen"), input)?;
    let m = format!("{d}/ModelConfig/0");
    set(&mut c, &format!("{m}/modelInstanceType"), "Standard")?;
    set(&mut c, &format!("{m}/modelName"), o.model_name.as_str())?;
    set(
        &mut c,
        &format!("{m}/modelWeightPath"),
        weights.to_string_lossy().as_ref(),
    )?;
    set(&mut c, &format!("{m}/cpuMemSize"), o.cpu_mem_gb)?;
    let sc = "/BackendConfig/ScheduleConfig";
    set(&mut c, &format!("{sc}/maxBatchSize"), o.max_batch_size)?;
    set(
        &mut c,
        &format!("{sc}/maxPrefillBatchSize"),
        o.max_prefill_batch_size.min(o.max_batch_size),
    )?;
    set(
        &mut c,
        &format!("{sc}/maxPrefillTokens"),
        o.max_prefill_tokens.unwrap_or(input.max(8192)),
    )?;
    if let Some(t) = &o.template {
        set(&mut c, &format!("{sc}/templateType"), t.as_str())?;
    }
    let schedule = c
        .pointer_mut(sc)
        .and_then(Value::as_object_mut)
        .ok_or("base config has no ScheduleConfig")?;
    if let Some(n) = o.chunk_tokens {
        schedule.insert("prefillChunkSize".into(), n.into());
    }
    // maxN (best-of/n) defaults to 128 and must not exceed maxBatchSize.
    if o.max_batch_size < 128 {
        schedule.insert("maxN".into(), o.max_batch_size.into());
    }
    set(
        &mut c,
        &format!("{sc}/maxIterTimes"),
        o.max_iter_times
            .unwrap_or(o.output_tokens.max(512).min(seq)),
    )?;
    Ok(c)
}

/// The model folder's config.json must not be group-writable nor readable by others (the
/// daemon refuses it otherwise): say so before starting.
fn check_model_config(model_dir: &Path) -> Result<(), String> {
    let p = model_dir.join("config.json");
    let mode = std::fs::metadata(&p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .permissions()
        .mode();
    if mode & 0o027 != 0 {
        return Err(format!(
            "{} has mode {:o}; the daemon needs at most 0750: chmod 640 {}",
            p.display(),
            mode & 0o777,
            p.display()
        ));
    }
    Ok(())
}

impl Daemon {
    /// Writes the config, starts the daemon and waits until it is ready.
    pub async fn start(o: &ServeOptions) -> Result<Daemon, String> {
        check_model_config(&o.model_dir)?;
        let ports = (free_port()?, free_port()?, free_port()?);
        let config = build_config(o, ports)?;
        static STARTS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mindie-loadgen-{}-{}",
            std::process::id(),
            STARTS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(dir.join("conf"))
            .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750));
        let cfg_path = dir.join("conf/config.json");
        let text = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        std::fs::write(&cfg_path, text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
        std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o640))
            .map_err(|e| format!("chmod {}: {e}", cfg_path.display()))?;
        let log = dir.join("daemon.log");
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&o.daemon_bin)
            .env("MIES_CONFIG_JSON_PATH", &cfg_path)
            .env("MIES_INSTALL_PATH", &dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start {}: {e}", o.daemon_bin.display()))?;
        let mut d = Daemon {
            child: Some(child),
            dir,
            log,
            port: ports.0,
            mgmt_port: ports.1,
        };
        eprintln!(
            "loadgen: started {} (pid {}), log {}",
            o.daemon_bin.display(),
            d.pid().unwrap_or(0),
            d.log.display()
        );
        match d.wait_ready(o.ready_timeout).await {
            Ok(()) => Ok(d),
            Err(e) => {
                d.stop();
                Err(format!("{e}; daemon log: {}", d.log.display()))
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The business plane's base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let mgmt = Endpoint::parse(&format!("http://127.0.0.1:{}", self.mgmt_port), None, None)?;
        let t0 = Instant::now();
        let mut last: String;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("daemon exited ({st}) before it was ready"));
                }
            }
            match mgmt.get_json("/v2/health/ready").await {
                Ok((200, _)) => return Ok(()),
                Ok((s, v)) => last = format!("{s} {v}"),
                Err(e) => last = e,
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "daemon not ready after {} s (last: {last})",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM, then waits up to 60 s for the exit (SIGKILL after that). Returns the exit
    /// status as text.
    pub fn stop(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).ok()?;
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st.to_string()),
                Ok(None) if t0.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    return child.wait().ok().map(|s| format!("{s} (killed)"));
                }
            }
        }
    }

    /// Stops the daemon; removes its folder (config and log) unless `keep`.
    pub fn finish(mut self, keep: bool) -> Option<String> {
        let st = self.stop();
        if !keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        st
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
            eprintln!("loadgen: daemon log kept at {}", self.log.display());
        }
    }
}
