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
//!
//! SIGHUP reloads the certificates, keys and CRLs of its `tls_config` items (the probe server
//! `http_server`, the links `request_server` and `request_coordinator`) from the files named
//! at start, with the same checks ([`crate::security::reload`]); new connections use the new
//! material, open ones finish on theirs, and an item whose new files are refused keeps its old
//! material.

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
use crate::motor::files::checker_from_env;
use crate::motor::tls_items;
use crate::security::reload::{LiveServer, ReloadSignal, Reloader};
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

/// The reload plane name of item `item`, as the start-up messages name it.
fn plane(item: &str) -> String {
    format!("tls_config.{item}")
}

fn client_for(
    cfg: &Config,
    item: &'static str,
    reloader: &Reloader,
) -> Result<HttpClient, StartError> {
    let tls = match tls_files(cfg, item)? {
        Some(files) => Some(
            reloader
                .client(
                    &plane(item),
                    tls_items::Item(files),
                    &mut checker_from_env(),
                )
                .map_err(|e| StartError::Tls {
                    item,
                    reason: e.to_string(),
                })?,
        ),
        None => None,
    };
    Ok(HttpClient::live(tls, cfg.http_timeout))
}

fn probe_tls(cfg: &Config, reloader: &Reloader) -> Result<Option<LiveServer>, StartError> {
    const ITEM: &str = "http_server";
    match tls_files(cfg, ITEM)? {
        Some(files) => reloader
            .server(
                &plane(ITEM),
                tls_items::Item(files),
                &mut checker_from_env(),
            )
            .map(Some)
            .map_err(|e| StartError::Tls {
                item: ITEM,
                reason: e.to_string(),
            }),
        None => Ok(None),
    }
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
    let reloader = Reloader::default();
    let servers = Servers {
        client: client_for(&cfg, "request_server", &reloader)?,
        retries: cfg.http_retries,
    };
    let coordinator = client_for(&cfg, "request_coordinator", &reloader)?;
    let probe_tls = probe_tls(&cfg, &reloader)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("mindie-controller")
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(async move {
        ReloadSignal::install().spawn(reloader, checker_from_env);
        let listener = crate::http::server::bind("controller probe", cfg.http_server).await?;
        let stop = CancellationToken::new();
        let plane = crate::http::server::Plane {
            name: "controller probe".into(),
            listener,
            tls: probe_tls,
            router: probe::router(),
        };
        let probe_task = tokio::spawn(crate::http::server::serve(plane, stop.clone()));
        // Before "start success": a SIGTERM right after that line must stop the Controller
        // cleanly, not meet the default action (seen under load in the tests).
        let signals = StopSignals::install();
        tracing::info!(
            probe = %cfg.http_server,
            ranktable = %cfg.rank_table_path.display(),
            servers = table.servers.len(),
            recovered = recovered.len(),
            "Controller start success"
        );
        let period = cfg.cluster_sync;
        let mut controller = Controller::new(cfg, table, servers, coordinator, recovered);
        let stop_cluster = loop_until_signal(&mut controller, period, signals).await;
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

/// The Controller's stop signals, listened for from [`StopSignals::install`] on.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// SIGTERM, SIGINT and SIGUSR1 handlers; `None` (logged) where they cannot be installed.
    fn install() -> Option<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::user_defined1()),
        ) {
            (Ok(term), Ok(int), Ok(usr1)) => Some(Self { term, int, usr1 }),
            _ => {
                tracing::error!("cannot install signal handlers; running until killed");
                None
            }
        }
    }
}

/// Runs ticks until SIGTERM/SIGINT (returns false) or SIGUSR1 (returns true). SIGHUP is
/// handled apart ([`ReloadSignal`]) and never interrupts a tick.
async fn loop_until_signal(
    controller: &mut Controller,
    period: std::time::Duration,
    signals: Option<StopSignals>,
) -> bool {
    let Some(StopSignals {
        mut term,
        mut int,
        mut usr1,
    }) = signals
    else {
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
            _ = timer.tick() => {
                tokio::select! {
                    _ = controller.tick() => {}
                    _ = term.recv() => return false,
                    _ = int.recv() => return false,
                    _ = usr1.recv() => return true,
                }
            }
        }
    }
}
