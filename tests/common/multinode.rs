//! Multi-node test support: one model served by a master and slaves, each a real daemon
//! process on its own loopback address (127.0.0.1 master, 127.0.0.3, 127.0.0.4 …) with the
//! same config.json and ports, told apart by `MIES_CONTAINER_IP` as MindIE's nodes are, and a
//! ranktable naming them. The interNode link runs mutual TLS with the test PKI and its CRL.
#![allow(dead_code)]

use super::daemon::{free_port, Daemon, Home};
use super::pki::Pki;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir_and_name(p: &Path) -> (String, String) {
    (
        format!("{}/", p.parent().expect("parent").display()),
        p.file_name().expect("name").to_string_lossy().into_owned(),
    )
}

/// A multi-node instance's shared files: config, ranktable, model.
pub struct MultiNode {
    pub home: Home,
    pub ips: Vec<&'static str>,
    pub node_port: u16,
    pub ranktable: PathBuf,
}

/// A ranktable with one device per server, rank i on `ips[i]`.
pub fn ranktable(ips: &[&str]) -> Value {
    let servers: Vec<Value> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            json!({"server_id": ip, "container_ip": ip,
                   "device": [{"device_id": "0", "device_ip": ip, "rank_id": i.to_string()}]})
        })
        .collect();
    json!({"version": "1.0", "status": "completed", "server_count": ips.len().to_string(),
           "server_list": servers})
}

impl MultiNode {
    /// `model` (a fixture) over the nodes `ips` (master first), interNode mutual TLS with the
    /// PKI's server certificate on every node, CRL on.
    pub fn new(model: &str, ips: &[&'static str], pki: &Pki) -> Self {
        let mut home = Home::new();
        home.use_fixture_model(model);
        let node_port = free_port();
        let (ca_dir, ca_name) = dir_and_name(&pki.ca);
        let (crl_dir, crl_name) = dir_and_name(&pki.crl);
        home.set(
            "/BackendConfig/ModelDeployConfig/ModelConfig/0/modelName",
            model,
        )
        .set("/BackendConfig/multiNodesInferEnabled", true)
        .set("/BackendConfig/multiNodesInferPort", node_port)
        .set("/BackendConfig/interNodeTLSEnabled", true)
        .set("/BackendConfig/interNodeTlsCaPath", ca_dir.as_str())
        .set("/BackendConfig/interNodeTlsCaFiles", json!([ca_name]))
        .set(
            "/BackendConfig/interNodeTlsCert",
            pki.server_cert.to_str().expect("utf8"),
        )
        .set(
            "/BackendConfig/interNodeTlsPk",
            pki.server_key.to_str().expect("utf8"),
        )
        .set(
            "/BackendConfig/interNodeTlsPkPwd",
            pki.server_key_pwd_file.to_str().expect("utf8"),
        )
        .set("/BackendConfig/interNodeTlsCrlPath", crl_dir.as_str())
        .set("/BackendConfig/interNodeTlsCrlFiles", json!([crl_name]));
        home.write();
        let ranktable = home.path().join("ranktable.json");
        write_0640(&ranktable, &ranktable_bytes(ips));
        Self {
            home,
            ips: ips.to_vec(),
            node_port,
            ranktable,
        }
    }

    /// The environment of the node at `ip`.
    pub fn env(&self, ip: &str) -> Vec<(String, String)> {
        vec![
            (
                "RANK_TABLE_FILE".into(),
                self.ranktable.display().to_string(),
            ),
            ("MIES_CONTAINER_IP".into(), ip.into()),
            ("MIES_CONTAINER_MANAGEMENT_IP".into(), ip.into()),
        ]
    }

    /// Starts the node at `ip` without waiting (the master prints success only once every
    /// slave joined; a slave once it joined).
    pub fn spawn(&self, ip: &str, extra: &[(&str, &str)]) -> Daemon {
        let mut env = self.env(ip);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut cmd = std::process::Command::new(super::daemon::BIN);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("MIES_INSTALL_PATH", self.home.path())
            .env("MIES_CONFIG_JSON_PATH", self.home.config_path())
            .env("MINDIE_LOG_TO_STDOUT", "1")
            .env("MINDIE_LOG_TO_FILE", "0");
        for (k, v) in pairs {
            cmd.env(k, v);
        }
        Daemon::spawn_unready(cmd)
    }

    pub fn business(&self) -> SocketAddr {
        SocketAddr::new(self.ips[0].parse().expect("ip"), self.home.port)
    }

    pub fn mgmt(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), self.home.mgmt_port)
    }

    /// Starts every node (slaves first) and waits until all printed `Daemon start success!`.
    pub fn start_all(&self, extra: &[(&str, &str)]) -> Vec<Daemon> {
        let mut nodes: Vec<Daemon> = self.ips.iter().map(|ip| self.spawn(ip, extra)).collect();
        for d in &mut nodes {
            d.wait_for("Daemon start success!", Duration::from_secs(90));
        }
        nodes
    }
}

pub fn ranktable_bytes(ips: &[&str]) -> Vec<u8> {
    serde_json::to_vec_pretty(&ranktable(ips)).expect("json")
}

pub fn write_0640(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
}
