//! Rules that need more than one key, the environment, or more than a type and range: address
//! validity, listener conflicts, TLS sets that must be complete, scheduler limits tied to each
//! other, and warnings (KMC, deprecated keys, Version). Every rule runs; a rule is skipped only
//! when a key it reads already has a problem (its value is then a stand-in), so one mistake is
//! reported once.
//!
//! Environment overrides are applied first ([`apply_env`]): the rules see the effective values.

mod backend;
mod server;

use super::{Config, Env, Problem};

/// The path of a problem with the document as a whole.
pub(crate) const ROOT: &str = "(root)";

/// Where an effective IP address came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpOrigin {
    /// The key itself.
    Json,
    /// This environment variable.
    Env(&'static str),
    /// `managementIpAddress` absent: the file's `ipAddress`.
    IpAddress,
}

/// Where the effective business and management addresses came from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origins {
    pub ip: IpOrigin,
    pub management_ip: IpOrigin,
}

/// Applies `MIES_CONTAINER_IP` (replaces `ipAddress`) and `MIES_CONTAINER_MANAGEMENT_IP`
/// (wins over `managementIpAddress`, which wins over `ipAddress`). As MindIE, a management
/// address falling back to `ipAddress` takes the file's value, not `MIES_CONTAINER_IP`.
pub(crate) fn apply_env(c: &mut Config, env: &Env) -> Origins {
    let s = &mut c.server_config;
    let management_ip = match (
        env.get("MIES_CONTAINER_MANAGEMENT_IP"),
        &s.management_ip_address,
    ) {
        (Some(v), _) => {
            s.management_ip_address = Some(v.to_string());
            IpOrigin::Env("MIES_CONTAINER_MANAGEMENT_IP")
        }
        (None, Some(_)) => IpOrigin::Json,
        (None, None) => {
            s.management_ip_address = Some(s.ip_address.clone());
            IpOrigin::IpAddress
        }
    };
    let ip = match env.get("MIES_CONTAINER_IP") {
        Some(v) => {
            s.ip_address = v.to_string();
            IpOrigin::Env("MIES_CONTAINER_IP")
        }
        None => IpOrigin::Json,
    };
    Origins { ip, management_ip }
}

/// Runs every rule on `c` (already overridden by the environment). `bad` are the paths the
/// walk found problems at.
pub(crate) fn check(
    c: &Config,
    env: &Env,
    origins: Origins,
    bad: Vec<String>,
) -> (Vec<Problem>, Vec<String>) {
    let mut r = Rules {
        c,
        env,
        origins,
        bad,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    r.server();
    r.backend();
    (r.problems, r.warnings)
}

/// The rule runner: the config, what is already known bad, and what the rules found.
pub(crate) struct Rules<'a> {
    c: &'a Config,
    env: &'a Env,
    origins: Origins,
    bad: Vec<String>,
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl Rules<'_> {
    /// Reports `problem()` unless `ok`, or unless one of `operands` (JSON paths the rule reads)
    /// already has a problem.
    fn rule<S: AsRef<str>>(&mut self, operands: &[S], ok: bool, problem: impl FnOnce() -> Problem) {
        if ok || operands.iter().any(|o| self.is_bad(o.as_ref())) {
            return;
        }
        let p = problem();
        self.bad.push(p.path.clone());
        self.problems.push(p);
    }

    /// Whether `path` is, contains or lies inside a path with a problem (a problem with the
    /// document itself, `(root)`, spoils every path).
    fn is_bad(&self, path: &str) -> bool {
        self.bad
            .iter()
            .any(|b| b == ROOT || same_branch(b, path) || same_branch(path, b))
    }

    fn warn(&mut self, w: String) {
        self.warnings.push(w);
    }
}

/// Whether `inner` is `outer` or lies inside it (`outer.x`, `outer[0]`).
fn same_branch(outer: &str, inner: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

fn problem(path: String, value: impl ToString, allowed: impl Into<String>) -> Problem {
    Problem {
        path,
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

fn sv(key: &str) -> String {
    format!("ServerConfig.{key}")
}

fn be(key: &str) -> String {
    format!("BackendConfig.{key}")
}

fn md(key: &str) -> String {
    format!("BackendConfig.ModelDeployConfig.{key}")
}

fn mc(i: usize, key: &str) -> String {
    format!("BackendConfig.ModelDeployConfig.ModelConfig[{i}].{key}")
}

fn sc(key: &str) -> String {
    format!("BackendConfig.ScheduleConfig.{key}")
}

/// A string value rendered as JSON.
fn quoted(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}
