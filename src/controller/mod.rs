//! The `controller` subcommand: MindIE-Motor's Controller (SPEC-CLUSTER §1–2, §4; SPEC-PD
//! §3.4). It reads `ms_controller.json` ([`config`]) and the global ranktable
//! ([`ranktable`]), decides prefill/decode roles ([`roles`]), posts them to the servers'
//! management ports ([`server_api`], [`role_body`]), follows their status and links
//! ([`state`]) and pushes the instance list to the Coordinator, every
//! `cluster_synchronization_seconds` ([`sync`]). Its probe server answers `/v1/startup` and
//! `/v1/health` ([`probe`]); role decisions survive a restart through the process file
//! ([`process_file`]).
//!
//! Stopping: SIGTERM or SIGINT stop the Controller only (exit 0); the servers keep running.
//! SIGUSR1 stops the cluster: `GET /stopService?mode=Force` to every server of the ranktable,
//! then the Controller exits 0. Start-up failures (config, ranktable, TLS, listener) exit 1
//! with a message naming the file and field.

pub mod config;
pub mod probe;
pub mod process_file;
pub mod ranktable;
pub mod role_body;
pub mod roles;
pub mod server_api;
pub mod state;
pub mod sync;

use crate::config::Env;
use crate::logging::{self, LogSettings};
use crate::motor::client::HttpClient;
use crate::motor::tls_items;
use config::Config;
use server_api::Servers;
use std::path::PathBuf;
use std::process::ExitCode;
use sync::Controller;
use tokio_util::sync::CancellationToken;

/// Why the Controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    ConfigFile(crate::motor::files::FileError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Table(#[from] sync::TableError),
    #[error(transparent)]
    ProcessFile(#[from] process_file::ProcessFileError),
    #[error("tls_config.{item}: {reason}")]
    Tls { item: &'static str, reason: String },
    #[error(transparent)]
    Bind(#[from] crate::http::server::BindError),
    #[error("cannot start logging: {0}")]
    Logging(std::io::Error),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Entry point of `mindieservice_daemon controller`.
pub fn main() -> ExitCode {
    match run(&Env::from_process()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mindieservice_daemon controller: {e}");
            tracing::error!("controller start failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(env: &Env) -> Result<Config, StartError> {
    let path = config::path(env);
    let root = crate::motor::files::read_json(&path, "ms_controller.json")
        .map_err(StartError::ConfigFile)?;
    Ok(Config::from_json(&root, &path, env)?)
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

fn tls_files(
    cfg: &Config,
    item: &'static str,
) -> Result<Option<crate::security::TlsFiles>, StartError> {
    tls_items::item(cfg.tls_config.as_ref(), item, &cwd()).map_err(|e| StartError::Tls {
        item,
        reason: e.to_string(),
    })
}

fn client_for(cfg: &Config, item: &'static str) -> Result<HttpClient, StartError> {
    let tls = match tls_files(cfg, item)? {
        Some(files) => Some(tls_items::client_tls(&files).map_err(|e| StartError::Tls {
            item,
            reason: e.to_string(),
        })?),
        None => None,
    };
    Ok(HttpClient::new(tls, cfg.http_timeout))
}

fn run(env: &Env) -> Result<(), StartError> {
    let cfg = load_config(env)?;
    let settings = LogSettings {
        level: logging::tracing_level(&cfg.log_level)
            .unwrap_or("info")
            .to_string(),
        to_stdout: true,
        to_file: false,
        dir: PathBuf::from("."),
        rotate_bytes: 20 * 1024 * 1024,
        rotate_keep: 10,
        // The Controller follows MINDIE_LOG_FORMAT too (its level comes from its config).
        ..LogSettings::from_env(env)
    };
    let _log = logging::init(&settings).map_err(StartError::Logging)?;
    let table = sync::load_table(&cfg)?;
    let recovered = match &cfg.process_file {
        Some(p) => process_file::read(p)?.unwrap_or_default(),
        None => Vec::new(),
    };
    let servers = Servers {
        client: client_for(&cfg, "request_server")?,
        retries: cfg.http_retries,
    };
    let coordinator = client_for(&cfg, "request_coordinator")?;
    let probe_tls = match tls_files(&cfg, "http_server")? {
        Some(files) => Some(tls_items::server_tls(&files).map_err(|e| StartError::Tls {
            item: "http_server",
            reason: e.to_string(),
        })?),
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("mindie-controller")
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async move {
        let listener = crate::http::server::bind("controller probe", cfg.http_server).await?;
        let stop = CancellationToken::new();
        let plane = crate::http::server::Plane {
            name: "controller probe".into(),
            listener,
            // The Controller's probe is not reloaded on SIGHUP (yet): fixed material.
            tls: probe_tls.map(crate::security::reload::Live::new),
            router: probe::router(),
        };
        let probe_task = tokio::spawn(crate::http::server::serve(plane, stop.clone()));
        tracing::info!(
            probe = %cfg.http_server,
            ranktable = %cfg.rank_table_path.display(),
            servers = table.servers.len(),
            recovered = recovered.len(),
            "Controller start success"
        );
        let period = cfg.cluster_sync;
        let mut controller = Controller::new(cfg, table, servers, coordinator, recovered);
        let stop_cluster = loop_until_signal(&mut controller, period).await;
        if stop_cluster {
            tracing::warn!("SIGUSR1: stopping the cluster");
            controller.stop_cluster().await;
        }
        stop.cancel();
        let _ = probe_task.await;
        tracing::info!("Controller stopped");
        Ok(())
    })
}

/// SIGHUP, which reloads a daemon's certificates, is caught so that a fleet-wide `kill -HUP`
/// does not stop the Controller (its default action); the Controller does not reload its own
/// material yet, and says so.
fn hup_ignored() {
    tracing::warn!(
        "SIGHUP ignored: the Controller does not reload its certificates; restart it to use new ones"
    );
}

/// Runs ticks until SIGTERM/SIGINT (returns false) or SIGUSR1 (returns true); SIGHUP is
/// logged and ignored.
async fn loop_until_signal(controller: &mut Controller, period: std::time::Duration) -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; running until killed");
        loop {
            controller.tick().await;
            tokio::time::sleep(period).await;
        }
    };
    let mut timer = tokio::time::interval(period);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = term.recv() => return false,
            _ = int.recv() => return false,
            _ = usr1.recv() => return true,
            _ = hup.recv() => hup_ignored(),
            _ = timer.tick() => {
                tokio::select! {
                    _ = controller.tick() => {}
                    _ = term.recv() => return false,
                    _ = int.recv() => return false,
                    _ = usr1.recv() => return true,
                    _ = hup.recv() => hup_ignored(),
                }
            }
        }
    }
}
