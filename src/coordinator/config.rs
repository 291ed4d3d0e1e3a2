//! `ms_coordinator.json` (SPEC-CLUSTER §3): the keys the Coordinator acts on, checked with
//! messages that name the key, the value and the allowed range. Other Motor keys
//! (`metrics_config`, `log_info`, `backup_config`, …) are accepted and ignored.
//!
//! Where the file is: `$MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH`, else
//! `./conf/ms_coordinator.json` when it exists (running from the package root), else Motor's
//! `../conf/ms_coordinator.json` (running from `bin/`). Relative TLS paths resolve against the
//! working folder, as in Motor.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::motor::files::{self, FileError};
use crate::motor::tls_items::{self, TlsItemError};
use crate::security::TlsFiles;

/// Env var naming the config file.
pub const CONFIG_ENV: &str = "MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH";
/// Env var overriding `request_limit.max_requests` (≤ 90000).
pub const MAX_REQ_ENV: &str = "MINDIE_MS_COORDINATOR_CONFIG_MAX_REQ";
/// Env var overriding `request_limit.single_node_max_requests` (≤ 15000).
pub const SINGLE_NODE_MAX_REQ_ENV: &str = "MINDIE_MS_COORDINATOR_CONFIG_SINGLE_NODE_MAX_REQ";

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Tls(#[from] TlsItemError),
    #[error("{key}: {value} is not allowed; {allowed}")]
    Field {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("{key} is missing; {allowed}")]
    Missing { key: String, allowed: String },
}

/// How instances are used (`digs_scheduler_config.deploy_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// Every instance serves whole requests.
    SingleNode,
    /// Prefill and decode instances (`pd_separate`, `pd_disaggregation`,
    /// `pd_disaggregation_single_container`).
    Pd,
}

/// How a P/D pair (or a single node) is chosen (`digs_scheduler_config.algorithm_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    LoadBalance,
    RoundRobin,
    CacheAffinity,
}

/// The four servers' addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub predict: SocketAddr,
    pub manage: SocketAddr,
    pub external: SocketAddr,
    pub status: SocketAddr,
    pub allow_all_zero: bool,
}

/// `exception_config`: retries and the timeouts (`None` = 0 = off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceptions {
    pub max_retry: u32,
    pub schedule_timeout: Option<Duration>,
    pub first_token_timeout: Option<Duration>,
    pub infer_timeout: Option<Duration>,
    pub tokenizer_timeout: Option<Duration>,
}

/// The TLS items the Coordinator uses (`None` = that link or server is plain).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    /// The predict port (users).
    pub request_server: Option<TlsFiles>,
    /// The manage port (the Controller).
    pub controller_server: Option<TlsFiles>,
    /// Toward instances' business ports.
    pub mindie_client: Option<TlsFiles>,
    /// Toward instances' management and metrics ports (Motor spells it `mindie_mangment`).
    pub mindie_management: Option<TlsFiles>,
    /// The external (metrics) port.
    pub external: Option<TlsFiles>,
    /// The status port.
    pub status: Option<TlsFiles>,
}

/// The Coordinator's configuration.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    pub path: PathBuf,
    pub listen: Listen,
    pub http_timeout: Duration,
    pub keep_alive: Duration,
    pub max_requests: usize,
    pub single_node_max_requests: usize,
    /// Largest request body, bytes.
    pub body_limit: usize,
    pub exceptions: Exceptions,
    pub deploy_mode: DeployMode,
    pub algorithm: Algorithm,
    /// `cache_size` of the cache-affinity LRU.
    pub cache_size: usize,
    pub tls: Tls,
}

/// Finds the config file: env, then `./conf/…`, then `../conf/…`.
pub fn locate(env_value: Option<&str>) -> PathBuf {
    if let Some(p) = env_value.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let here = Path::new("conf").join("ms_coordinator.json");
    if here.exists() {
        return here;
    }
    Path::new("..").join("conf").join("ms_coordinator.json")
}

/// Reads and checks the file; `predict_ip`/`manage_ip` are the command line's overrides,
/// `env` looks up the environment.
pub fn load(
    path: &Path,
    predict_ip: Option<&str>,
    manage_ip: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CoordinatorConfig, ConfigError> {
    let root = files::read_json(path, "config file")?;
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    from_json(path, &root, predict_ip, manage_ip, env, &base)
}

/// [`load`] on parsed JSON; relative TLS paths resolve against `base`.
pub fn from_json(
    path: &Path,
    root: &Value,
    predict_ip: Option<&str>,
    manage_ip: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    base: &Path,
) -> Result<CoordinatorConfig, ConfigError> {
    let http = object(root, "http_config")?;
    let allow_all_zero =
        opt_bool(http, "http_config.allow_all_zero_ip_listening")?.unwrap_or(false);
    let ip = |key: &str, over: Option<&str>| -> Result<IpAddr, ConfigError> {
        let (text, key) = match over {
            Some(t) => (t.to_string(), format!("command line {key}")),
            None => (
                str_field(http, key, "http_config")?.to_string(),
                format!("http_config.{key}"),
            ),
        };
        let ip: IpAddr = text.parse().map_err(|_| ConfigError::Field {
            key: key.clone(),
            value: format!("{text:?}"),
            allowed: "an IPv4 or IPv6 address is required".into(),
        })?;
        if ip.is_unspecified() && !allow_all_zero {
            return Err(ConfigError::Field {
                key,
                value: text,
                allowed:
                    "listening on all addresses needs http_config.allow_all_zero_ip_listening: true"
                        .into(),
            });
        }
        Ok(ip)
    };
    let predict_ip = ip("predict_ip", predict_ip)?;
    let manage_ip = ip("manage_ip", manage_ip)?;
    let port = |key: &str, default: u16| -> Result<u16, ConfigError> {
        let v = http.get(key);
        let text = match v {
            None | Some(Value::Null) => return Ok(default),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => other.to_string(),
        };
        text.parse::<u16>()
            .ok()
            .filter(|p| *p >= 1024)
            .ok_or_else(|| ConfigError::Field {
                key: format!("http_config.{key}"),
                value: format!("{text:?}"),
                allowed: "a port string from \"1024\" to \"65535\" is required".into(),
            })
    };
    let listen = Listen {
        predict: SocketAddr::new(predict_ip, port("predict_port", 1025)?),
        manage: SocketAddr::new(manage_ip, port("manage_port", 1026)?),
        external: SocketAddr::new(manage_ip, port("external_port", 1028)?),
        status: SocketAddr::new(manage_ip, port("status_port", 1029)?),
        allow_all_zero,
    };
    let mut seen = vec![];
    for (name, a) in [
        ("predict_port", listen.predict),
        ("manage_port", listen.manage),
        ("external_port", listen.external),
        ("status_port", listen.status),
    ] {
        if let Some((other, _)) = seen.iter().find(|(_, b)| *b == a) {
            return Err(ConfigError::Field {
                key: format!("http_config.{name}"),
                value: a.to_string(),
                allowed: format!("it is already used by http_config.{other}; each port needs its own address:port"),
            });
        }
        seen.push((name, a));
    }
    let http_timeout =
        Duration::from_secs(int(http, "http_config.http_timeout_seconds", 600, 1, 3600)?);
    let keep_alive =
        Duration::from_secs(int(http, "http_config.keep_alive_seconds", 180, 1, 3600)?);

    let limit = opt_object(root, "request_limit")?;
    let env_int = |name: &str, max: u64| -> Result<Option<u64>, ConfigError> {
        match env(name) {
            None => Ok(None),
            Some(t) => t
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|v| (1..=max).contains(v))
                .map(Some)
                .ok_or(ConfigError::Field {
                    key: format!("environment {name}"),
                    value: format!("{t:?}"),
                    allowed: format!("an integer from 1 to {max} is required"),
                }),
        }
    };
    let max_requests = match env_int(MAX_REQ_ENV, 90_000)? {
        Some(v) => v,
        None => int(limit, "request_limit.max_requests", 10_000, 1, 90_000)?,
    } as usize;
    let single_node_max_requests = match env_int(SINGLE_NODE_MAX_REQ_ENV, 15_000)? {
        Some(v) => v,
        None => int(
            limit,
            "request_limit.single_node_max_requests",
            1000,
            1,
            15_000,
        )?,
    } as usize;
    let body_limit = int(limit, "request_limit.body_limit", 1, 1, 20)? as usize * 1024 * 1024;

    let exc = opt_object(root, "exception_config")?;
    let secs = |key: &str, default: u64| -> Result<Option<Duration>, ConfigError> {
        let v = int(exc, key, default, 0, 65_535)?;
        Ok((v > 0).then(|| Duration::from_secs(v)))
    };
    let exceptions = Exceptions {
        max_retry: int(exc, "exception_config.max_retry", 5, 0, 100)? as u32,
        schedule_timeout: secs("exception_config.schedule_timeout", 600)?,
        first_token_timeout: secs("exception_config.first_token_timeout", 600)?,
        infer_timeout: secs("exception_config.infer_timeout", 600)?,
        tokenizer_timeout: secs("exception_config.tokenizer_timeout", 300)?,
    };

    let digs = opt_object(root, "digs_scheduler_config")?;
    let mode_text = opt_str(digs, "digs_scheduler_config.deploy_mode")?.unwrap_or("pd_separate");
    let deploy_mode = match mode_text {
        "single_node" => DeployMode::SingleNode,
        "pd_separate" | "pd_disaggregation" | "pd_disaggregation_single_container" => DeployMode::Pd,
        other => {
            return Err(ConfigError::Field {
                key: "digs_scheduler_config.deploy_mode".into(),
                value: format!("{other:?}"),
                allowed: "one of \"single_node\", \"pd_separate\", \"pd_disaggregation\", \"pd_disaggregation_single_container\"".into(),
            })
        }
    };
    let algo_text =
        opt_str(digs, "digs_scheduler_config.algorithm_type")?.unwrap_or("load_balance");
    let algorithm = match algo_text {
        "load_balance" => Algorithm::LoadBalance,
        "round_robin" => Algorithm::RoundRobin,
        "cache_affinity" if deploy_mode == DeployMode::SingleNode => Algorithm::CacheAffinity,
        other => {
            return Err(ConfigError::Field {
                key: "digs_scheduler_config.algorithm_type".into(),
                value: format!("{other:?}"),
                allowed: "one of \"load_balance\", \"round_robin\", or \"cache_affinity\" with deploy_mode \"single_node\"".into(),
            })
        }
    };
    let cache_size = match opt_str(digs, "digs_scheduler_config.cache_size")? {
        None => 100,
        Some(t) => t
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|v| (1..=1_000_000).contains(v))
            .ok_or(ConfigError::Field {
                key: "digs_scheduler_config.cache_size".into(),
                value: format!("{t:?}"),
                allowed: "an integer string from \"1\" to \"1000000\" is required".into(),
            })?,
    };

    let tls_cfg = root.get("tls_config");
    let tls = Tls {
        request_server: tls_items::item(tls_cfg, "request_server", base)?,
        controller_server: tls_items::item(tls_cfg, "controller_server", base)?,
        mindie_client: tls_items::item(tls_cfg, "mindie_client", base)?,
        mindie_management: tls_items::item(tls_cfg, "mindie_mangment", base)?,
        external: tls_items::item(tls_cfg, "external", base)?,
        status: tls_items::item(tls_cfg, "status", base)?,
    };
    Ok(CoordinatorConfig {
        path: path.to_path_buf(),
        listen,
        http_timeout,
        keep_alive,
        max_requests,
        single_node_max_requests,
        body_limit,
        exceptions,
        deploy_mode,
        algorithm,
        cache_size,
        tls,
    })
}

type Map = serde_json::Map<String, Value>;

fn object<'a>(root: &'a Value, key: &str) -> Result<&'a Map, ConfigError> {
    match root.get(key) {
        Some(Value::Object(o)) => Ok(o),
        None => Err(ConfigError::Missing {
            key: key.into(),
            allowed: "an object is required".into(),
        }),
        Some(other) => Err(type_err(key, other, "an object")),
    }
}

fn opt_object<'a>(root: &'a Value, key: &str) -> Result<Option<&'a Map>, ConfigError> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(type_err(key, other, "an object")),
    }
}

fn type_err(key: &str, v: &Value, expected: &str) -> ConfigError {
    ConfigError::Field {
        key: key.into(),
        value: v.to_string(),
        allowed: format!("{expected} is required"),
    }
}

fn leaf(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

fn str_field<'a>(obj: &'a Map, key: &str, parent: &str) -> Result<&'a str, ConfigError> {
    match obj.get(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(ConfigError::Missing {
            key: format!("{parent}.{key}"),
            allowed: "a string is required".into(),
        }),
        Some(other) => Err(type_err(&format!("{parent}.{key}"), other, "a string")),
    }
}

fn opt_str<'a>(obj: Option<&'a Map>, key: &str) -> Result<Option<&'a str>, ConfigError> {
    match obj.and_then(|o| o.get(leaf(key))) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(type_err(key, other, "a string")),
    }
}

fn opt_bool(obj: &Map, key: &str) -> Result<Option<bool>, ConfigError> {
    match obj.get(leaf(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(type_err(key, other, "true or false")),
    }
}

/// An integer key (JSON number, or a string of digits as Motor sometimes writes) in `min..=max`.
fn int<'a>(
    obj: impl Into<Option<&'a Map>>,
    key: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let v = obj.into().and_then(|o| o.get(leaf(key)));
    let parsed = match v {
        None | Some(Value::Null) => return Ok(default),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    parsed
        .filter(|x| (min..=max).contains(x))
        .ok_or_else(|| ConfigError::Field {
            key: key.into(),
            value: v.map(|v| v.to_string()).unwrap_or_default(),
            allowed: format!("an integer from {min} to {max} is required"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn motor_default() -> Value {
        json!({
            "http_config": {"allow_all_zero_ip_listening": false, "predict_ip": "127.0.0.1",
                "predict_port": "1025", "manage_ip": "127.0.0.1", "manage_port": "1026",
                "alarm_port": "1027", "external_port": "1028", "status_port": "1029",
                "server_thread_num": 10, "client_thread_num": 10, "http_timeout_seconds": 600,
                "keep_alive_seconds": 180, "server_name": "MindIE-MS", "user_agent": "Coordinator/1.0"},
            "request_limit": {"single_node_max_requests": 1000, "max_requests": 10000, "body_limit": 1},
            "exception_config": {"max_retry": 5, "schedule_timeout": 600, "first_token_timeout": 600,
                "infer_timeout": 600, "tokenizer_timeout": 300},
            "digs_scheduler_config": {"deploy_mode": "pd_separate", "scheduler_type": "digs_scheduler",
                "algorithm_type": "load_balance", "cache_size": "100"},
            "string_token_rate": 4.02,
            "tls_config": {"request_server_tls_enable": false}
        })
    }

    fn parse(v: &Value, env: &[(&str, &str)]) -> Result<CoordinatorConfig, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let look = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        from_json(
            Path::new("ms.json"),
            v,
            None,
            None,
            &look,
            Path::new("/base"),
        )
    }

    #[test]
    fn motor_default_file_parses() {
        let c = parse(&motor_default(), &[]).expect("parses");
        assert_eq!(c.listen.predict, "127.0.0.1:1025".parse().expect("addr"));
        assert_eq!(c.listen.status, "127.0.0.1:1029".parse().expect("addr"));
        assert_eq!(c.max_requests, 10_000);
        assert_eq!(c.body_limit, 1024 * 1024);
        assert_eq!(c.deploy_mode, DeployMode::Pd);
        assert_eq!(c.algorithm, Algorithm::LoadBalance);
        assert_eq!(
            c.exceptions.first_token_timeout,
            Some(Duration::from_secs(600))
        );
        assert!(c.tls.request_server.is_none());
    }

    #[test]
    fn env_overrides_limits_within_range() {
        let c = parse(&motor_default(), &[(MAX_REQ_ENV, "16")]).expect("parses");
        assert_eq!(c.max_requests, 16);
        let e = parse(&motor_default(), &[(MAX_REQ_ENV, "90001")]).expect_err("range");
        assert!(e.to_string().contains(MAX_REQ_ENV), "{e}");
    }

    #[test]
    fn bad_values_name_key_value_and_range() {
        let mut v = motor_default();
        v["http_config"]["predict_port"] = json!("80");
        let e = parse(&v, &[]).expect_err("port");
        assert!(e.to_string().contains("http_config.predict_port"), "{e}");
        let mut v = motor_default();
        v["request_limit"]["body_limit"] = json!(21);
        let e = parse(&v, &[]).expect_err("body");
        assert!(
            e.to_string().contains("request_limit.body_limit: 21"),
            "{e}"
        );
        let mut v = motor_default();
        v["http_config"]["predict_ip"] = json!("0.0.0.0");
        let e = parse(&v, &[]).expect_err("all zero");
        assert!(e.to_string().contains("allow_all_zero_ip_listening"), "{e}");
        let mut v = motor_default();
        v["digs_scheduler_config"]["algorithm_type"] = json!("cache_affinity");
        let e = parse(&v, &[]).expect_err("affinity needs single node");
        assert!(e.to_string().contains("algorithm_type"), "{e}");
        let mut v = motor_default();
        v["http_config"]["status_port"] = json!("1026");
        let e = parse(&v, &[]).expect_err("dup");
        assert!(e.to_string().contains("manage_port"), "{e}");
    }
}
