//! Coordinator test support: an `ms_coordinator.json` on free ports of a loopback address,
//! the real `coordinator` subcommand started on it, and refresh bodies as the Controller
//! sends them.

use super::daemon::{free_port, Daemon, BIN};
use super::pd::Instance;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use tempfile::TempDir;

/// A Coordinator's folder and ports.
pub struct Coord {
    pub dir: TempDir,
    pub ip: String,
    pub predict: u16,
    pub manage: u16,
    pub status: u16,
    pub external: u16,
    pub config: Value,
}

impl Coord {
    /// Motor's shipped `ms_coordinator.json` with TLS off, on `ip` and free ports.
    pub fn new(ip: &str) -> Coord {
        let (predict, manage, status, external) =
            (free_port(), free_port(), free_port(), free_port());
        let config = json!({
            "http_config": {"allow_all_zero_ip_listening": false, "predict_ip": ip,
                "predict_port": predict.to_string(), "manage_ip": ip, "manage_port": manage.to_string(),
                "alarm_port": "1027", "external_port": external.to_string(), "status_port": status.to_string(),
                "server_thread_num": 10, "client_thread_num": 10, "http_timeout_seconds": 600,
                "keep_alive_seconds": 180, "server_name": "MindIE-MS", "user_agent": "Coordinator/1.0"},
            "request_limit": {"single_node_max_requests": 1000, "max_requests": 10000, "body_limit": 1},
            "metrics_config": {"enable": false, "trigger_size": 100},
            "exception_config": {"max_retry": 2, "schedule_timeout": 600, "first_token_timeout": 600,
                "infer_timeout": 600, "tokenizer_timeout": 300},
            "log_info": {"log_level": "INFO", "to_file": false, "to_stdout": true},
            "digs_scheduler_config": {"deploy_mode": "pd_separate", "scheduler_type": "digs_scheduler",
                "algorithm_type": "load_balance", "cache_size": "100", "slots_thresh": "0.05",
                "block_thresh": "0.05"},
            "string_token_rate": 4.02,
            "tls_config": {"controller_server_tls_enable": false, "request_server_tls_enable": false,
                "mindie_client_tls_enable": false, "mindie_mangment_tls_enable": false,
                "external_tls_enable": false, "status_tls_enable": false}
        });
        Coord {
            dir: tempfile::tempdir().expect("tempdir"),
            ip: ip.to_string(),
            predict,
            manage,
            status,
            external,
            config,
        }
    }

    fn addr(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.ip).parse().expect("addr")
    }

    pub fn predict_addr(&self) -> SocketAddr {
        self.addr(self.predict)
    }

    pub fn manage_addr(&self) -> SocketAddr {
        self.addr(self.manage)
    }

    pub fn status_addr(&self) -> SocketAddr {
        self.addr(self.status)
    }

    pub fn external_addr(&self) -> SocketAddr {
        self.addr(self.external)
    }

    /// Writes the config (mode 0640) and returns its path.
    pub fn write(&self) -> PathBuf {
        let p = self.dir.path().join("ms_coordinator.json");
        std::fs::write(&p, serde_json::to_vec_pretty(&self.config).expect("json")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        p
    }

    /// The `coordinator` command on this config, run from the config's folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let path = self.write();
        let mut c = Command::new(BIN);
        c.arg("coordinator")
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH", path);
        c
    }

    /// Starts the Coordinator and waits until it listens.
    pub fn start(&self) -> Daemon {
        Daemon::spawn(
            self.command(&[]),
            "mindieservice_daemon coordinator: predict",
        )
    }
}

/// One refresh entry for `inst` as the Controller writes it (`role`: b'P', b'D', …).
pub fn refresh_entry(inst: &Instance, id: u64, role: u8, peers: &[u64]) -> Value {
    json!({
        "id": id, "ip": inst.ip.to_string(), "port": inst.home.port.to_string(),
        "metric_port": inst.home.metrics_port.to_string(),
        "inter_comm_port": inst.inter_port.to_string(), "model_name": "mock-model",
        "static_info": {"group_id": 0, "max_seq_len": 2560, "max_output_len": 512,
            "total_slots_num": 200, "total_block_num": 1024, "block_size": 128, "label": 0,
            "role": role, "p_percentage": 0, "virtual_id": 0},
        "dynamic_info": {"peers": peers, "avail_slots_num": 200, "avail_block_num": 1024,
            "waiting_request_num": 0, "running_request_num": 0}
    })
}

/// A refresh body of `entries`.
pub fn refresh(entries: Vec<Value>) -> Value {
    let ids: Vec<Value> = entries.iter().map(|e| e["id"].clone()).collect();
    json!({"ids": ids, "instances": entries})
}
