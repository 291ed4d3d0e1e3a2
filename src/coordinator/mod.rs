//! The `coordinator` subcommand: MindIE-Motor's Coordinator (SPEC-CLUSTER §3, §5; SPEC-PD §2,
//! §4), the users' entry point of a PD cluster.
//!
//! Four servers: predict (users: [`predict`], [`relay`], [`proxy`]), manage (the Controller's
//! instance list: [`manage`]), status (probes: [`status`]) and external (aggregated metrics:
//! [`external`]). The Controller's refresh fills the [`registry`]; each decode instance gets a
//! `/dresult` reader ([`dresult_reader`]) whose frames reach the waiting requests
//! ([`waiters`]). Every server and every link toward instances uses the `tls_config` items of
//! `ms_coordinator.json` ([`config`]).
//!
//! SIGHUP reloads the certificates, keys and CRLs of those items (the four servers'
//! `request_server`, `controller_server`, `status`, `external` and the links'
//! `mindie_client`, `mindie_mangment`) from the files named at start, with the same checks
//! ([`crate::security::reload`]): new connections use the new material, open ones (and
//! streams under way, such as a `/dresult` reader) finish on theirs, and an item whose new
//! files are refused keeps its old material. SIGTERM and SIGINT stop it.

pub mod affinity;
pub mod cancel;
pub mod config;
pub mod dresult_reader;
pub mod external;
pub mod manage;
pub mod metrics_merge;
pub mod out;
pub mod own_metrics;
pub mod predict;
pub mod proxy;
pub mod registry;
pub mod relay;
pub mod shared;
pub mod status;
pub mod waiters;

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Env;
use crate::http::server::{self, Plane};
use crate::logging::{self, LogSettings};
use crate::motor::client::HttpClient;
use crate::motor::files::checker_from_env;
use crate::motor::tls_items;
use crate::security::reload::{LiveServer, ReloadSignal, Reloader};
use crate::security::TlsFiles;
use config::{ConfigError, CoordinatorConfig};
use shared::Shared;

/// Why the Coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("command line: {value:?} is not an IP address (predict_ip and manage_ip must be IPv4 or IPv6 addresses)")]
    BadIp { value: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tls_config.{item}: {source}")]
    Tls {
        item: &'static str,
        source: crate::security::tls::TlsError,
    },
    #[error(transparent)]
    Bind(#[from] server::BindError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("logging: {0}")]
    Logging(std::io::Error),
}

/// Entry point of `mindieservice_daemon coordinator [predict_ip [manage_ip]]`.
pub fn main(predict_ip: Option<String>, manage_ip: Option<String>) -> ExitCode {
    match run(predict_ip, manage_ip) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mindieservice_daemon coordinator: failed to start: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(predict_ip: Option<String>, manage_ip: Option<String>) -> Result<(), StartError> {
    for v in [&predict_ip, &manage_ip].into_iter().flatten() {
        if v.parse::<IpAddr>().is_err() {
            return Err(StartError::BadIp { value: v.clone() });
        }
    }
    let env = Env::from_process();
    let path = config::locate(std::env::var(config::CONFIG_ENV).ok().as_deref());
    let lookup = |k: &str| std::env::var(k).ok();
    let cfg = config::load(&path, predict_ip.as_deref(), manage_ip.as_deref(), &lookup)?;
    let _log = logging::init(&LogSettings::from_env(&env)).map_err(StartError::Logging)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("coordinator")
        .build()
        .map_err(StartError::Runtime)?;
    rt.block_on(serve(cfg))
}

/// The reload plane name of item `item`, as the start-up messages name it.
fn plane(item: &str) -> String {
    format!("tls_config.{item}")
}

fn server_tls(
    files: &Option<TlsFiles>,
    item: &'static str,
    reloader: &Reloader,
) -> Result<Option<LiveServer>, StartError> {
    files
        .as_ref()
        .map(|f| {
            reloader
                .server(
                    &plane(item),
                    tls_items::Item(f.clone()),
                    &mut checker_from_env(),
                )
                .map_err(|source| StartError::Tls { item, source })
        })
        .transpose()
}

fn client(
    files: &Option<TlsFiles>,
    item: &'static str,
    cfg: &CoordinatorConfig,
    reloader: &Reloader,
) -> Result<HttpClient, StartError> {
    let tls = files
        .as_ref()
        .map(|f| {
            reloader
                .client(
                    &plane(item),
                    tls_items::Item(f.clone()),
                    &mut checker_from_env(),
                )
                .map_err(|source| StartError::Tls { item, source })
        })
        .transpose()?;
    Ok(HttpClient::live(tls, cfg.http_timeout))
}

/// Serves until SIGTERM/SIGINT; SIGHUP reloads the TLS material.
pub async fn serve(cfg: CoordinatorConfig) -> Result<(), StartError> {
    // Caught before anything is built: SIGHUP's default action would stop the process.
    let reload_signal = ReloadSignal::install();
    let reloader = Reloader::default();
    let t = &cfg.tls;
    let predict_tls = server_tls(&t.request_server, "request_server", &reloader)?;
    let manage_tls = server_tls(&t.controller_server, "controller_server", &reloader)?;
    let status_tls = server_tls(&t.status, "status", &reloader)?;
    let external_tls = server_tls(&t.external, "external", &reloader)?;
    let business = client(&t.mindie_client, "mindie_client", &cfg, &reloader)?;
    let management = client(&t.mindie_management, "mindie_mangment", &cfg, &reloader)?;
    reload_signal.spawn(reloader, checker_from_env);
    let l = cfg.listen.clone();
    let stop = CancellationToken::new();
    let shared = Shared::new(cfg, business, management, stop.clone())?;

    let manage_l = server::bind("coordinator manage", l.manage).await?;
    let status_l = server::bind("coordinator status", l.status).await?;
    let external_l = server::bind("coordinator external", l.external).await?;
    let predict_l = server::bind("coordinator predict", l.predict).await?;
    let planes: Vec<(String, tokio::net::TcpListener, _, Router)> = vec![
        (
            "coordinator predict".into(),
            predict_l,
            predict_tls,
            predict::router(shared.clone()),
        ),
        (
            "coordinator manage".into(),
            manage_l,
            manage_tls,
            manage::router(shared.clone()),
        ),
        (
            "coordinator status".into(),
            status_l,
            status_tls,
            status::router(shared.clone()),
        ),
        (
            "coordinator external".into(),
            external_l,
            external_tls,
            external::router(shared.clone()),
        ),
    ];
    // Before the lines that say it serves: a SIGTERM right after them must stop the
    // Coordinator cleanly, not meet the default action.
    let mut signals = crate::lifecycle::StopSignals::install("running until killed");
    let mut tasks = Vec::new();
    for (name, listener, tls, router) in planes {
        let stop = stop.clone();
        tasks.push(tokio::spawn(server::serve(
            Plane {
                name,
                listener,
                tls,
                router,
            },
            stop,
        )));
    }
    shared.predict_listening.store(true, Ordering::Relaxed);
    tracing::info!(
        predict = %l.predict, manage = %l.manage, status = %l.status, external = %l.external,
        mode = ?shared.cfg.deploy_mode, algorithm = ?shared.cfg.algorithm,
        "coordinator serving; waiting for the Controller's instance list"
    );
    logging::print_line(&format!(
        "mindieservice_daemon coordinator: predict {} manage {} status {} external {}",
        l.predict, l.manage, l.status, l.external
    ));
    signals.recv().await;
    tracing::info!("coordinator stopping");
    stop.cancel();
    for t in tasks {
        if let Ok(graceful) = t.await {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), graceful.shutdown()).await;
        }
    }
    Ok(())
}
