//! `ms_controller.json` (SPEC-CLUSTER §2): the keys the Controller acts on, checked into a
//! [`Config`], with the environment overrides of SPEC-CLUSTER §1 (`GLOBAL_RANK_TABLE_FILE_PATH`,
//! `POD_IP`, `MINDIE_MS_P_RATE`, `MINDIE_MS_D_RATE`). Every other key of Motor's file is
//! accepted and ignored. A key that is absent takes Motor's shipped value; a key that is
//! present must have Motor's type and range.
//!
//! Rates follow Motor's code (`ControllerConfig.cpp`): each 0..=767, both 0 (decide
//! automatically) or both non-zero, sum at most 768.

use crate::config::Env;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest `default_p_rate` / `default_d_rate`.
pub const MAX_RATE: u64 = 767;
/// Largest sum of the two rates.
pub const MAX_RATE_SUM: u64 = 768;
/// Largest count or period Motor accepts for its integer keys.
const MAX_COMMON: u64 = 65_535;

/// A refused key: the file, the key (JSON path), what it held and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field} = {value}: {rule}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub value: String,
    pub rule: String,
}

/// The Controller's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub deploy_mode: String,
    pub rank_table_path: PathBuf,
    pub cluster_sync: Duration,
    pub rank_table_detect: Duration,
    pub p_rate: u64,
    pub d_rate: u64,
    pub online_attempts: u64,
    pub online_wait: Duration,
    pub init_role_attempts: u64,
    pub check_role_attempts: u64,
    pub check_role_wait: Duration,
    pub server_port: u16,
    pub server_control_port: u16,
    pub server_metric_port: u16,
    pub coordinator_port: u16,
    pub http_timeout: Duration,
    pub http_retries: u64,
    pub http_server: SocketAddr,
    /// `process_manager.file_path` when `process_manager.to_file` is true.
    pub process_file: Option<PathBuf>,
    /// The raw `tls_config` object (read by `motor::tls_items`).
    pub tls_config: Option<Value>,
    /// `log_info.log_level` (MindIE's names).
    pub log_level: String,
}

/// The config file's path: `$MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH`, else `./conf/ms_controller.json`.
pub fn path(env: &Env) -> PathBuf {
    env.get("MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./conf/ms_controller.json"))
}

struct Reader<'a> {
    file: String,
    root: &'a Value,
}

impl Reader<'_> {
    fn err(&self, field: &str, value: Option<&Value>, rule: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            field: field.to_string(),
            value: value.map_or_else(|| "(absent)".to_string(), Value::to_string),
            rule: rule.into(),
        }
    }

    fn get(&self, pointer: &str) -> Option<&Value> {
        self.root.pointer(pointer).filter(|v| !v.is_null())
    }

    fn field(pointer: &str) -> String {
        pointer.trim_start_matches('/').replace('/', ".")
    }

    fn int(&self, pointer: &str, min: u64, max: u64, default: u64) -> Result<u64, ConfigError> {
        match self.get(pointer) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    self.err(
                        &Self::field(pointer),
                        Some(v),
                        format!("must be an integer in {min}..={max}"),
                    )
                }),
        }
    }

    fn secs(&self, pointer: &str, default: u64) -> Result<Duration, ConfigError> {
        self.int(pointer, 1, MAX_COMMON, default)
            .map(Duration::from_secs)
    }

    fn port(&self, pointer: &str, default: u16) -> Result<u16, ConfigError> {
        self.int(pointer, 1024, 65_535, u64::from(default))
            .map(|p| u16::try_from(p).unwrap_or(default))
    }

    fn string(&self, pointer: &str, default: &str) -> Result<String, ConfigError> {
        match self.get(pointer) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(v) => Err(self.err(&Self::field(pointer), Some(v), "must be a non-empty string")),
        }
    }

    fn boolean(&self, pointer: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(pointer) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.err(&Self::field(pointer), Some(v), "must be true or false")),
        }
    }
}

/// A rate from the environment (`MINDIE_MS_P_RATE`), checked like the config key.
fn env_rate(env: &Env, key: &str, file: &str) -> Result<Option<u64>, ConfigError> {
    let Some(raw) = env.get(key) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= MAX_RATE)
        .map(Some)
        .ok_or_else(|| ConfigError {
            file: file.to_string(),
            field: format!("${key}"),
            value: format!("{raw:?}"),
            rule: format!("must be an integer in 0..={MAX_RATE}"),
        })
}

/// Checks the rate pair as Motor does.
fn check_rates(p: u64, d: u64, file: &str) -> Result<(), ConfigError> {
    let bad = |rule: &str| ConfigError {
        file: file.to_string(),
        field: "default_p_rate/default_d_rate".into(),
        value: format!("{p}/{d}"),
        rule: rule.to_string(),
    };
    if (p == 0) != (d == 0) {
        return Err(bad(
            "must both be 0 (decide automatically) or both be non-zero",
        ));
    }
    if p + d > MAX_RATE_SUM {
        return Err(bad(&format!("their sum must be at most {MAX_RATE_SUM}")));
    }
    Ok(())
}

impl Config {
    /// Checks the parsed file `root` (read from `file`), applying the environment overrides.
    /// Relative paths stay relative (Motor resolves them against the working directory).
    pub fn from_json(root: &Value, file: &Path, env: &Env) -> Result<Self, ConfigError> {
        let r = Reader {
            file: file.display().to_string(),
            root,
        };
        if !root.is_object() {
            return Err(r.err("(file)", Some(root), "must be a JSON object"));
        }
        let deploy_mode = r.string("/deploy_mode", "pd_separate")?;
        const MODES: [&str; 4] = [
            "pd_separate",
            "pd_disaggregation",
            "pd_disaggregation_single_container",
            "single_node",
        ];
        if !MODES.contains(&deploy_mode.as_str()) {
            return Err(r.err(
                "deploy_mode",
                r.get("/deploy_mode"),
                format!("must be one of {}", MODES.join(", ")),
            ));
        }
        let rank_table_path = match env.get("GLOBAL_RANK_TABLE_FILE_PATH") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(r.string(
                "/global_rank_table_file_path",
                "./conf/global_rank_table_file.json",
            )?),
        };
        let mut p_rate = r.int("/default_p_rate", 0, MAX_RATE, 0)?;
        let mut d_rate = r.int("/default_d_rate", 0, MAX_RATE, 0)?;
        if let Some(p) = env_rate(env, "MINDIE_MS_P_RATE", &r.file)? {
            p_rate = p;
        }
        if let Some(d) = env_rate(env, "MINDIE_MS_D_RATE", &r.file)? {
            d_rate = d;
        }
        check_rates(p_rate, d_rate, &r.file)?;

        let ip_text = match env.get("POD_IP") {
            Some(ip) => ip.to_string(),
            None => r.string("/http_server/ip", "127.0.0.1")?,
        };
        let ip: IpAddr = ip_text.trim().parse().map_err(|_| {
            r.err(
                if env.get("POD_IP").is_some() {
                    "$POD_IP"
                } else {
                    "http_server.ip"
                },
                Some(&Value::String(ip_text.clone())),
                "must be an IP address",
            )
        })?;
        let allow_zero = r.boolean("/allow_all_zero_ip_listening", false)?;
        if ip.is_unspecified() && !allow_zero {
            return Err(r.err(
                "http_server.ip",
                Some(&Value::String(ip_text)),
                "0.0.0.0/:: is refused unless allow_all_zero_ip_listening is true",
            ));
        }
        let probe_port = r.port("/http_server/port", 1026)?;

        let process_file = if r.boolean("/process_manager/to_file", false)? {
            Some(PathBuf::from(r.string(
                "/process_manager/file_path",
                "./logs/controller_process_status.json",
            )?))
        } else {
            None
        };
        let tls_config = match r.get("/tls_config") {
            None => None,
            Some(v) if v.is_object() => Some(v.clone()),
            Some(v) => return Err(r.err("tls_config", Some(v), "must be an object")),
        };
        let log_level = r.string("/log_info/log_level", "INFO")?;
        if crate::logging::tracing_level(&log_level).is_none() {
            return Err(r.err(
                "log_info.log_level",
                r.get("/log_info/log_level"),
                "must be one of DEBUG, INFO, WARN, ERROR, CRITICAL",
            ));
        }

        Ok(Self {
            deploy_mode,
            rank_table_path,
            cluster_sync: r.secs("/cluster_synchronization_seconds", 1)?,
            rank_table_detect: r.secs("/rank_table_detecting_seconds", 5)?,
            p_rate,
            d_rate,
            online_attempts: r.int("/server_online_attempt_times", 1, MAX_COMMON, 36)?,
            online_wait: r.secs("/server_online_wait_seconds", 5)?,
            init_role_attempts: r.int("/init_role_attempt_times", 1, MAX_COMMON, 2)?,
            check_role_attempts: r.int("/check_role_attempt_times", 1, MAX_COMMON, 300)?,
            check_role_wait: r.secs("/check_role_wait_seconds", 5)?,
            server_port: r.port("/mindie_server_port", 1025)?,
            server_control_port: r.port("/mindie_server_control_port", 1026)?,
            server_metric_port: r.port("/mindie_server_metric_port", 1027)?,
            coordinator_port: r.port("/mindie_ms_coordinator_port", 1026)?,
            http_timeout: r.secs("/http_timeout_seconds", 5)?,
            http_retries: r.int("/http_retries", 0, MAX_COMMON, 3)?,
            http_server: SocketAddr::new(ip, probe_port),
            process_file,
            tls_config,
            log_level,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn load(v: Value, e: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_json(&v, Path::new("ms_controller.json"), &env(e))
    }

    #[test]
    fn defaults_and_overrides() {
        let c = load(
            json!({"http_server": {"ip": "127.0.0.2", "port": 2000}}),
            &[],
        )
        .expect("ok");
        assert_eq!(c.http_server, "127.0.0.2:2000".parse().expect("addr"));
        assert_eq!(c.cluster_sync, Duration::from_secs(1));
        assert_eq!((c.p_rate, c.d_rate), (0, 0));
        let c = load(
            json!({"default_p_rate": 1, "default_d_rate": 1, "global_rank_table_file_path": "a.json"}),
            &[("POD_IP", "10.0.0.9"), ("MINDIE_MS_P_RATE", "3"), ("GLOBAL_RANK_TABLE_FILE_PATH", "b.json")],
        )
        .expect("ok");
        assert_eq!(c.http_server.ip().to_string(), "10.0.0.9");
        assert_eq!((c.p_rate, c.d_rate), (3, 1));
        assert_eq!(c.rank_table_path, PathBuf::from("b.json"));
    }

    #[test]
    fn refusals_name_the_field() {
        let e = load(json!({"default_p_rate": 20}), &[]).expect_err("one rate 0");
        assert!(e.to_string().contains("default_p_rate"), "{e}");
        let e = load(json!({"default_p_rate": 800, "default_d_rate": 1}), &[]).expect_err("range");
        assert_eq!(e.field, "default_p_rate");
        let e = load(json!({"default_p_rate": 500, "default_d_rate": 500}), &[]).expect_err("sum");
        assert!(e.rule.contains("768"), "{e}");
        let e = load(json!({"http_server": {"port": 80}}), &[]).expect_err("port");
        assert_eq!(e.field, "http_server.port");
        let e = load(json!({}), &[("POD_IP", "nope")]).expect_err("ip");
        assert_eq!(e.field, "$POD_IP");
        let e = load(json!({"cluster_synchronization_seconds": 0}), &[]).expect_err("period");
        assert_eq!(e.field, "cluster_synchronization_seconds");
        let e = load(json!({}), &[("MINDIE_MS_D_RATE", "x")]).expect_err("env rate");
        assert_eq!(e.field, "$MINDIE_MS_D_RATE");
    }
}
