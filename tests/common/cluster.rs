//! Cluster test support: a fake Coordinator that records every `POST /v1/instances/refresh`
//! body, and a Controller home (`conf/ms_controller.json` + global ranktable, mode 0640)
//! from which the real `mindieservice_daemon controller` is started.
#![allow(dead_code)]

use super::daemon::{free_port, Daemon, BIN};
use super::pd::Instance;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The refresh bodies a fake Coordinator received, with when.
#[derive(Clone, Default)]
pub struct Refreshes(Arc<Mutex<Vec<(Instant, Value)>>>);

impl Refreshes {
    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Waits for a body received after `since` that `pred` accepts; panics after `limit`.
    pub async fn wait_for(
        &self,
        since: Instant,
        limit: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|(at, _)| *at >= since)
                .find(|(_, v)| pred(v))
                .map(|(_, v)| v.clone());
            if let Some(v) = found {
                return v;
            }
            if t0.elapsed() > limit {
                let last = self.0.lock().unwrap().last().map(|(_, v)| v.clone());
                panic!("{what}: no such refresh in {limit:?}; last: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A fake Coordinator's manage port on 127.0.0.1.
pub struct FakeCoordinator {
    pub port: u16,
    pub refreshes: Refreshes,
}

impl FakeCoordinator {
    pub async fn start() -> Self {
        let refreshes = Refreshes::default();
        let sink = refreshes.clone();
        let app = Router::new().route(
            "/v1/instances/refresh",
            post(move |body: String| {
                let sink = sink.clone();
                async move {
                    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    sink.0.lock().unwrap().push((Instant::now(), v));
                    "{}"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { port, refreshes }
    }
}

/// One ranktable server entry for a test instance.
pub fn server_entry(inst: &Instance) -> Value {
    let ip = inst.ip.to_string();
    json!({"server_id": ip, "server_ip": ip,
           "predict_port": inst.home.port.to_string(),
           "mgmt_port": inst.home.mgmt_port.to_string(),
           "metric_port": inst.home.metrics_port.to_string(),
           "inter_comm_port": inst.inter_port.to_string(),
           "device": [{"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"}]})
}

/// A global ranktable with `servers` in group "2", the Controller and the Coordinator on
/// 127.0.0.1.
pub fn rank_table(servers: &[Value]) -> Value {
    json!({"version": "1.0", "status": "completed", "server_group_list": [
        {"group_id": "2", "server_count": servers.len().to_string(), "server_list": servers},
        {"group_id": "1", "server_count": "1", "server_list": [{"server_ip": "127.0.0.1"}]},
        {"group_id": "0", "server_count": "1", "server_list": [{"server_ip": "127.0.0.1"}]}]})
}

/// A Controller's working directory: `conf/ms_controller.json`, `conf/global_rank_table_file.json`.
pub struct ControllerHome {
    pub dir: tempfile::TempDir,
    pub config: Value,
    pub probe_port: u16,
}

fn write_0640(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
}

impl ControllerHome {
    /// Motor's shipped file with short periods, TLS off, the given Coordinator port.
    pub fn new(coordinator_port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf")).unwrap();
        let probe_port = free_port();
        let config = json!({
            "allow_all_zero_ip_listening": false,
            "deploy_mode": "pd_separate",
            "initial_dist_server_port": 10000,
            "cluster_port": 8899,
            "process_manager": {"to_file": true, "file_path": "./logs/controller_process_status.json"},
            "cluster_status": {"to_file": true, "file_path": "./logs/cluster_status_output.json"},
            "controller_backup_cfg": {"function_sw": false, "database_server_dns": "etcd.default.svc.cluster.local", "database_server_port": 2379},
            "fault_recovery_func_dict": {"lingqu_link": false, "oom": true, "hbm": false, "roce": true},
            "global_rank_table_file_path": "./conf/global_rank_table_file.json",
            "cluster_synchronization_seconds": 1,
            "rank_table_detecting_seconds": 1,
            "disappeared_server_waiting_seconds": 7200,
            "default_p_rate": 0,
            "default_d_rate": 0,
            "is_heterogeneous": false,
            "server_online_attempt_times": 30,
            "server_online_wait_seconds": 1,
            "init_role_attempt_times": 2,
            "check_role_attempt_times": 30,
            "check_role_wait_seconds": 1,
            "mindie_server_control_port": 1026,
            "mindie_server_port": 1025,
            "mindie_server_metric_port": 1027,
            "controller_alarm_port": 1027,
            "mindie_ms_coordinator_port": coordinator_port,
            "node_manager_port": 1028,
            "mindie_ms_coordinator_external_port": 1028,
            "http_timeout_seconds": 5,
            "http_retries": 1,
            "role_decision_methods": "digs",
            "model_type": "llama2-70B",
            "transfer_type": "D2DTransfer",
            "http_server": {"ip": "127.0.0.1", "port": probe_port},
            "tls_config": {
                "request_coordinator_tls_enable": false,
                "request_server_tls_enable": false,
                "http_server_tls_enable": false,
                "external_coordinator_tls_enable": false
            },
            "log_info": {"log_level": "INFO", "to_file": false, "to_stdout": true,
                         "run_log_path": "./logs/ms_controller_run_log.txt"}
        });
        Self {
            dir,
            config,
            probe_port,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("conf/ms_controller.json")
    }

    pub fn rank_table_path(&self) -> PathBuf {
        self.path().join("conf/global_rank_table_file.json")
    }

    pub fn write_config(&self) {
        write_0640(&self.config_path(), &self.config);
    }

    pub fn write_rank_table(&self, table: &Value) {
        write_0640(&self.rank_table_path(), table);
    }

    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("controller")
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Starts the Controller on the files as they are; waits until it says it started.
    pub fn start(&self, env: &[(&str, &str)]) -> Controller {
        Daemon::spawn(self.command(env), "Controller start success")
    }

    /// Runs the Controller expecting it to exit by itself; returns its status and output.
    pub fn run_to_exit(&self, env: &[(&str, &str)]) -> (ExitStatus, String) {
        let (st, out, err) = super::daemon::run_to_exit(self.command(env));
        (st, format!("{out}{err}"))
    }
}

/// A running Controller; killed on drop.
pub type Controller = Daemon;
