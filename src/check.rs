//! `mindieservice_daemon check`: validates the configuration, the permissions of every file it
//! trusts, the certificates of every TLS plane (chain, validity, key match, key size) and the
//! model folder, without starting anything. Prints every finding; exit status 1 on any error.

use crate::config::{Env, Loaded, Plane};
use crate::daemon::{self, Options};
use crate::multinode::ranktable::{self, Placement, RankTableError, RANK_TABLE_ENV};
use crate::security::certinfo::{self, Severity};
use crate::security::perms::{FileRole, PermChecker};
use std::path::Path;

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub severity: Severity,
    pub what: String,
    pub message: String,
}

/// The report of a check run.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    fn push(&mut self, severity: Severity, what: impl Into<String>, message: impl Into<String>) {
        self.lines.push(Line {
            severity,
            what: what.into(),
            message: message.into(),
        });
    }

    pub fn errors(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.severity == Severity::Error)
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| l.severity == Severity::Warning)
            .count()
    }

    /// Human-readable report, one finding per line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            let tag = match l.severity {
                Severity::Ok => "ok   ",
                Severity::Warning => "WARN ",
                Severity::Error => "ERROR",
            };
            out.push_str(&format!("[{tag}] {}: {}\n", l.what, l.message));
        }
        out.push_str(&format!(
            "{} error(s), {} warning(s)\n",
            self.errors(),
            self.warnings()
        ));
        out
    }
}

fn perm(report: &mut Report, checker: &mut PermChecker, path: &Path, role: FileRole) {
    match checker.check(path, role) {
        Ok(()) => report.push(
            Severity::Ok,
            path.display().to_string(),
            "owner, mode and type acceptable",
        ),
        Err(e) => report.push(Severity::Error, path.display().to_string(), e.message),
    }
}

/// The TLS sets in use: one per HTTP listener (its first plane's), plus the inter-process
/// links when their modes are on.
fn planes(loaded: &Loaded) -> Vec<(Plane, &'static str)> {
    let sc = &loaded.config.server_config;
    let mut v: Vec<(Plane, &'static str)> = sc
        .http_sockets()
        .iter()
        .filter_map(|s| s.planes.first().copied())
        .map(|p| match p {
            Plane::Management => (p, "management"),
            Plane::Metrics => (p, "metrics"),
            _ => (p, "business"),
        })
        .collect();
    if sc.infer_mode == "dmi" {
        v.push((Plane::InterComm, "interComm"));
    }
    if loaded.config.backend_config.multi_nodes_infer_enabled {
        v.push((Plane::InterNode, "interNode"));
    }
    v
}

fn check_model(report: &mut Report, checker: &mut PermChecker, loaded: &Loaded) {
    let Some((_, dir)) = loaded.model_dir() else {
        let Some(model) = loaded.config.model() else {
            return;
        };
        let dir = crate::config::paths::resolve(&loaded.home, &model.model_weight_path);
        if dir.join("tokenizer.json").is_file() {
            report.push(
                Severity::Ok,
                dir.display().to_string(),
                "StandardMock: no model is run; the folder's tokenizer is used",
            );
        } else {
            report.push(
                Severity::Error,
                dir.display().to_string(),
                "StandardMock needs the model's tokenizer.json in modelWeightPath",
            );
        }
        return;
    };
    let cfg = dir.join("config.json");
    if !cfg.is_file() {
        report.push(
            Severity::Error,
            dir.display().to_string(),
            "no config.json: modelWeightPath must be a Hugging Face model folder",
        );
        return;
    }
    perm(report, checker, &cfg, FileRole::ModelConfig);
    let parsed: Result<serde_json::Value, String> = std::fs::read(&cfg)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
    match parsed {
        Ok(v) => {
            let arch = v["architectures"][0]
                .as_str()
                .unwrap_or("<none>")
                .to_string();
            report.push(
                Severity::Ok,
                cfg.display().to_string(),
                format!("architecture {arch}, model_type {}", v["model_type"]),
            );
        }
        Err(e) => report.push(
            Severity::Error,
            cfg.display().to_string(),
            format!("not valid JSON: {e}"),
        ),
    }
    let has_weights = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        })
        .unwrap_or(false);
    if has_weights {
        report.push(
            Severity::Ok,
            dir.display().to_string(),
            "safetensors weights present",
        );
    } else {
        report.push(
            Severity::Error,
            dir.display().to_string(),
            "no *.safetensors weights found",
        );
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        if !dir.join(f).is_file() {
            report.push(
                Severity::Error,
                dir.join(f).display().to_string(),
                "missing",
            );
        }
    }
}

/// For an Ascend backend: CANN can be loaded and initialised and has the configured devices
/// (what the start would find), and `MINDIE_ASCEND_DTYPE` is valid.
fn check_cann(report: &mut Report, loaded: &Loaded, env: &Env) {
    use crate::backend::ascend::{self, dtype, CannSearch, DtypeChoice};
    let Some(model) = loaded.config.model() else {
        return;
    };
    if crate::backend::BackendKind::of(model) != crate::backend::BackendKind::Ascend
        || loaded.config.backend_config.multi_nodes_infer_enabled
    {
        return;
    }
    if let Err(e) = DtypeChoice::parse(env.get(dtype::DTYPE_ENV)) {
        report.push(Severity::Error, dtype::DTYPE_ENV, e);
    }
    let devices = loaded
        .config
        .backend_config
        .npu_device_ids
        .first()
        .cloned()
        .unwrap_or_default();
    match ascend::probe(&CannSearch::from_env(env), &devices) {
        Ok(line) => report.push(Severity::Ok, "Ascend", line),
        Err(e) => report.push(Severity::Error, "Ascend", e),
    }
}

/// The multi-node ranktable: loaded and this node placed in it when `multiNodesInferEnabled`,
/// else only a warning when `RANK_TABLE_FILE` is set but unreadable.
fn check_ranktable(report: &mut Report, checker: &mut PermChecker, loaded: &Loaded, env: &Env) {
    let backend = &loaded.config.backend_config;
    if !backend.multi_nodes_infer_enabled {
        if let Some(w) = ranktable::warn_if_unused(env) {
            report.push(Severity::Warning, RANK_TABLE_ENV, w);
        }
        return;
    }
    let what = env
        .get(RANK_TABLE_ENV)
        .unwrap_or(RANK_TABLE_ENV)
        .to_string();
    match ranktable::from_env(env, checker) {
        Ok(p) => report.push(
            Severity::Ok,
            what,
            placement_summary(&p, backend.multi_nodes_infer_port),
        ),
        Err(RankTableError::Invalid { problems, .. }) => {
            for p in problems {
                report.push(Severity::Error, what.clone(), format!("ranktable: {p}"));
            }
        }
        Err(e) => report.push(Severity::Error, what, e.to_string()),
    }
}

/// "ranktable valid: 2 servers, world size 16; this node is server_list[1] (10.0.0.2, 8
/// devices), slave 1 of 1; master server_list[0] at 10.0.0.1:1120".
fn placement_summary(p: &Placement, port: u16) -> String {
    let servers = p.table.servers.len();
    let local_devices = p.local_device_ids().len();
    let role = if p.is_master() {
        "the master".to_string()
    } else {
        let slaves = p.slaves();
        let n = slaves
            .iter()
            .position(|&i| i == p.local)
            .map_or(0, |k| k + 1);
        format!("slave {n} of {}", slaves.len())
    };
    format!(
        "ranktable valid: {servers} servers, world size {}; this node is server_list[{}] ({}, \
         {local_devices} devices), {role}; master server_list[{}] at {}",
        p.world_size(),
        p.local,
        p.local_addr(),
        p.master,
        std::net::SocketAddr::new(p.master_addr(), port)
    )
}

/// Runs every check; never starts a listener.
pub fn run(opts: &Options, env: &Env) -> Report {
    let mut report = Report::default();
    let mut checker = daemon::perm_checker(env);
    let loaded = match daemon::load_config(opts, env, &mut checker) {
        Ok(l) => l,
        Err(e) => {
            report.push(Severity::Error, "config", e.to_string());
            return report;
        }
    };
    report.push(
        Severity::Ok,
        loaded.path.display().to_string(),
        format!("valid; install home {}", loaded.home.display()),
    );
    for w in &loaded.warnings {
        report.push(Severity::Warning, "config", w.clone());
    }
    if !loaded.config.server_config.https_enabled {
        report.push(
            Severity::Warning,
            "ServerConfig.httpsEnabled",
            "false: planes serve plain HTTP without authentication",
        );
    }
    for (plane, name) in planes(&loaded) {
        let Some(files) = loaded.config.tls_files(plane, &loaded.home) else {
            continue;
        };
        for ca in &files.ca_files {
            perm(&mut report, &mut checker, ca, FileRole::Cert);
        }
        perm(&mut report, &mut checker, &files.cert, FileRole::Cert);
        perm(&mut report, &mut checker, &files.key, FileRole::Key);
        if let Some(p) = &files.key_password {
            perm(&mut report, &mut checker, p, FileRole::Password);
        }
        for crl in &files.crl_files {
            perm(&mut report, &mut checker, crl, FileRole::Crl);
        }
        for f in certinfo::inspect(&files) {
            report.push(f.severity, format!("{name} TLS {}", f.subject), f.message);
        }
    }
    if let Err(e) = crate::http::conn_limits::ConnLimits::from_env(env) {
        report.push(Severity::Error, e.var, e.to_string());
    }
    check_model(&mut report, &mut checker, &loaded);
    check_cann(&mut report, &loaded, env);
    check_ranktable(&mut report, &mut checker, &loaded, env);
    for w in &checker.warnings {
        report.push(Severity::Warning, "permissions", w.clone());
    }
    report
}
