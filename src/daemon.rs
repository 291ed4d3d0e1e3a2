//! Start order, shutdown order, task supervision.
//!
//! Start: logging → locate config → permission-check it → load and validate → TLS per plane
//! (each trusted file checked) → model folder check → bind every listener → serve →
//! `Daemon start success!`. Stop (SIGTERM/SIGINT or `/stopService`): readiness false, stop
//! accepting, drain in-flight requests up to the deadline (`e2eTimeout`, the longest a request
//! may legally live), exit 0. A second signal cuts the drain short.
//!
//! SIGHUP: every TLS plane and link reloads its certificates, keys and CRLs from the files
//! named at start, after the same checks ([`crate::security::reload`]); a plane whose new
//! material is refused keeps the old one. Each plane logs one line either way.

use crate::config::{self, ConfigError, Env, Loaded, Plane};
use crate::engine::EngineMonitor;
use crate::http::admission::{self, Admission};
use crate::http::openai::models::ModelCard;
use crate::http::server::{self, BindError};
use crate::http::session::{Limits, Serving};
use crate::http::{self, BusinessState};
use crate::lifecycle::{Lifecycle, StopMode, StopSignals};
use crate::logging::{self, LogSettings};
use crate::metrics::{self, Metrics};
use crate::mgmt::{self, MgmtState};
use crate::security::perms::{FileRole, PermChecker, PermError, PERMISSION_CHECK_ENV};
use crate::security::reload::{LiveServer, ReloadSignal, Reloader};
use crate::security::tls::TlsError;
use crate::tokenizer::{TokenizerPool, DEFAULT_ENCODE_TIMEOUT};
use axum::Router;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod engine;
pub mod multinode;
pub mod pd;

use crate::multinode::monitor::{MasterMonitor, MasterView};
use engine::{check_model_dir, start_engine};
use multinode::NodeRole;

/// What the command line says.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub config_file: Option<PathBuf>,
}

/// Why the daemon could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Permission(#[from] PermError),
    #[error("{plane} plane TLS: {source}")]
    Tls { plane: String, source: TlsError },
    #[error("{0}")]
    Bind(#[from] BindError),
    #[error("logging: {0}")]
    Logging(std::io::Error),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("model: {0}")]
    Model(String),
    #[error("runtime: {0}")]
    Runtime(std::io::Error),
    #[error("listen address: {0}")]
    Address(String),
    #[error("{0}")]
    Setting(String),
    /// A multi-node slave lost its master for good.
    #[error("{0}")]
    Slave(String),
    /// A connection limit set to something unusable in the environment.
    #[error("{0}")]
    ConnLimits(#[from] crate::http::conn_limits::ConnLimitError),
}

/// The path of this executable, for locating the install home.
fn current_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("./bin/mindieservice_daemon"))
}

/// The permission checker the environment asks for (`MINDIE_CHECK_INPUTFILES_PERMISSION`).
pub fn perm_checker(env: &Env) -> PermChecker {
    PermChecker::new(PermChecker::enforce_from_env_value(
        env.get(PERMISSION_CHECK_ENV),
    ))
}

/// Finds, permission-checks and loads the configuration (shared with `check`).
pub fn load_config(
    opts: &Options,
    env: &Env,
    checker: &mut PermChecker,
) -> Result<Loaded, StartError> {
    let located = config::paths::locate(opts.config_file.as_deref(), env, &current_exe())?;
    checker.check(&located.config, FileRole::Config)?;
    Ok(config::load(&located.config, &located.home, env)?)
}

/// Runs the daemon to completion. Returns after a clean stop.
pub fn run(opts: Options) -> Result<(), StartError> {
    let env = Env::from_process();
    let log = logging::init(&LogSettings::from_env(&env)).map_err(StartError::Logging)?;
    crate::http::conn_limits::install(crate::http::conn_limits::ConnLimits::from_env(&env)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mindie-io")
        .build()
        .map_err(StartError::Runtime)?;
    let _keep = log;
    rt.block_on(async move {
        let running = start(&opts, &env).await?;
        running.wait().await
    })
}

fn socket(ip: &str, port: u16) -> Result<SocketAddr, StartError> {
    // The config validated the literal; this only guards against a mismatch between the two.
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| StartError::Address(format!("{ip:?} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

fn tls_for(
    loaded: &Loaded,
    plane: Plane,
    name: &str,
    checker: &mut PermChecker,
    reloader: &Reloader,
) -> Result<Option<LiveServer>, StartError> {
    match loaded.config.tls_files(plane, &loaded.home) {
        None => Ok(None),
        Some(files) => reloader
            .server(name, files, checker)
            .map(Some)
            .map_err(|source| StartError::Tls {
                plane: name.to_string(),
                source,
            }),
    }
}

/// "business", "business+management", ... for messages about a listener.
fn plane_names(planes: &[Plane]) -> String {
    let names: Vec<&str> = planes
        .iter()
        .map(|p| match p {
            Plane::Business => "business",
            Plane::Management => "management",
            Plane::Metrics => "metrics",
            Plane::InterComm => "interComm",
            Plane::InterNode => "interNode",
        })
        .collect();
    names.join("+")
}

/// A started daemon: its serve tasks and life cycle.
pub struct Running {
    life: Arc<Lifecycle>,
    planes: Vec<tokio::task::JoinHandle<hyper_util::server::graceful::GracefulShutdown>>,
    signals: tokio::task::JoinHandle<()>,
    /// A multi-node master's slaves, told to stop once the master has drained.
    slaves: Option<Arc<crate::multinode::slaves::SlaveSet>>,
    /// Why a multi-node slave stopped, when it failed.
    failure: Arc<std::sync::OnceLock<String>>,
}

/// Starts everything; returns once every listener is bound and serving.
pub async fn start(opts: &Options, env: &Env) -> Result<Running, StartError> {
    // SIGHUP is caught from the start (its default would kill the daemon); reloads run once
    // every plane is registered.
    let reload_signal = ReloadSignal::install();
    let reloader = Reloader::default();
    let mut checker = perm_checker(env);
    if !checker.enforce {
        tracing::warn!("MINDIE_CHECK_INPUTFILES_PERMISSION=0: file owner/mode/symlink refusals are only warnings");
    }
    let loaded = load_config(opts, env, &mut checker)?;
    tracing::info!(config = %loaded.path.display(), home = %loaded.home.display(), "configuration loaded");
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let sc = &loaded.config.server_config;
    if !sc.https_enabled {
        tracing::warn!("ServerConfig.httpsEnabled is false: every plane serves PLAIN HTTP without authentication; do not expose these ports beyond this host");
    }
    let master = match multinode::prepare(&loaded, env, &mut checker, &reloader).await? {
        NodeRole::Single => None,
        NodeRole::Master(m) => Some(m),
        NodeRole::Slave(settings) => {
            let running = start_slave(loaded, settings, &mut checker, &reloader).await?;
            let enforce = checker.enforce;
            reload_signal.spawn(reloader, move || PermChecker::new(enforce));
            return Ok(running);
        }
    };

    // One listener per distinct ip:port; planes that share one are served by one server
    // under the TLS settings of its first plane (business, then management, then metrics).
    let sockets = sc.http_sockets();
    let mut prepared = Vec::new();
    for s in &sockets {
        let name = plane_names(&s.planes);
        let lead = s.planes.first().copied().unwrap_or(Plane::Business);
        let tls = tls_for(&loaded, lead, &name, &mut checker, &reloader)?;
        prepared.push((s, name, tls, socket(&s.ip, s.port)?));
    }
    let model_source = check_model_dir(&loaded, &mut checker)?;

    // Bind everything before serving anything: a conflict fails the start cleanly.
    let mut bound = Vec::new();
    for (s, name, tls, addr) in prepared {
        let listener = server::bind(&name, addr).await?;
        bound.push((s.planes.clone(), name, tls, listener));
    }
    // dmi: the interComm plane (TLS checked, listener bound) before anything serves.
    let pd_prepared = pd::prepare(&loaded, &mut checker, &reloader).await?;

    let model = loaded
        .config
        .model()
        .map(|m| m.model_name.clone())
        .unwrap_or_default();
    let metrics = if env.get("MIES_SERVICE_MONITOR_MODE") == Some("0") {
        tracing::warn!("MIES_SERVICE_MONITOR_MODE=0: metrics are turned off");
        None
    } else {
        Some(Arc::new(Metrics::new(&[model.as_str()])?))
    };

    let life = Lifecycle::new();
    let drain_deadline = Duration::from_secs(u64::from(sc.e2e_timeout));
    let sampling_defaults = crate::engine::defaults::sampling_defaults(&model_source.dir);
    // A multi-node master serves its slaves first (they load while it does), then waits for
    // all of them before its engine starts.
    let master = master.map(multinode::MasterPrep::serve);
    let (handle, tok, share) = match &master {
        Some(m) => {
            let (h, t, s) = multinode::start_master_engine(
                &loaded,
                model_source,
                env,
                m.set.clone(),
                m.layers.clone(),
            )
            .await?;
            (h, t, Some(s))
        }
        None => {
            let (h, t) = start_engine(&loaded, model_source, env).await?;
            (h, t, None)
        }
    };
    let pd_node = pd_prepared.map(|prep| {
        pd::start(
            prep,
            &loaded,
            handle.clone(),
            metrics.clone(),
            &model,
            life.token(),
        )
    });
    let threads = loaded.config.backend_config.tokenizer_process_number as usize;
    let inference = Arc::new(Serving {
        engine: Arc::new(handle.clone()),
        tokenizer: TokenizerPool::new(tok, threads, DEFAULT_ENCODE_TIMEOUT),
        model_name: model.clone(),
        limits: Limits::from_config(&loaded.config),
        metrics: metrics.clone(),
        sampling_defaults,
        registry: Default::default(),
        json_mode: Default::default(),
        stop_hook: pd_node
            .clone()
            .map(|n| n as Arc<dyn crate::http::session::StopHook>),
    });
    let engine: Arc<dyn EngineMonitor> = match &master {
        Some(m) => Arc::new(MasterMonitor {
            engine: handle.clone(),
            set: m.set.clone(),
        }),
        None => Arc::new(handle.clone()),
    };
    let node_view = match (&master, share) {
        (Some(m), Some(mut local)) => {
            local.addr = m.addr.ip().to_string();
            Some(Arc::new(MasterView {
                local,
                set: m.set.clone(),
                num_layers: m.num_layers,
                world_size: m.world_size,
            }) as Arc<dyn mgmt::NodeView>)
        }
        _ => None,
    };
    if let Some(m) = &metrics {
        metrics::collector::spawn(m.clone(), engine.clone(), life.token());
    }
    let loaded = Arc::new(loaded);
    let stall_after = mgmt::condition::stall_after_from_env(env).map_err(StartError::Setting)?;
    let log_control = logging::handle().map(|h| {
        let c = mgmt::log_level::LogControl::new(h, &loaded.config.log_config);
        c.spawn(loaded.path.clone(), life.token());
        c
    });
    let mgmt_state = MgmtState {
        config: loaded.clone(),
        engine,
        life: life.clone(),
        drain_deadline,
        probe: Some(handle.clone()),
        metrics: metrics.clone(),
        stall_after,
        log: log_control,
        pd: pd_node.as_ref().map(|n| n.role.clone()),
        multinode: node_view,
    };
    mgmt::condition::spawn_watch(mgmt_state.clone(), life.token());
    let mgmt_router = mgmt::router(mgmt_state);
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let described = http::openapi::Instance {
        model: model.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        vocab_max: inference.vocab().saturating_sub(1) as u64,
        dmi: pd_node.is_some(),
    };
    let card = Arc::new(ModelCard {
        name: model.clone(),
        created,
        root: model,
    });
    let sc = &loaded.config.server_config;
    let admission = Admission::new(
        sc.max_link_num as usize,
        sc.max_request_length as usize,
        life.clone(),
    )
    .count_refusals(metrics.clone());
    let mut business_router = http::business_router(BusinessState {
        serving: inference,
        card,
        config: loaded.clone(),
        admission,
    });
    if let Some(node) = &pd_node {
        // A decode instance replays handed-over requests through the routes without the gate.
        let _ = node.replay.set(business_router.clone());
        business_router = business_router.layer(axum::middleware::from_fn_with_state(
            node.clone(),
            crate::pd::gate::business_gate,
        ));
    }
    if let Some(m) = &master {
        business_router = business_router.layer(axum::middleware::from_fn_with_state(
            m.set.clone(),
            crate::multinode::monitor::gate,
        ));
    }

    let metrics_router = mgmt::metrics_plane::router(metrics);
    let mut planes = Vec::new();
    for (served, name, tls, listener) in bound {
        let mut router = Router::new();
        for plane in &served {
            router = router.merge(match plane {
                Plane::Business => business_router.clone(),
                Plane::Management => mgmt_router.clone(),
                _ => metrics_router.clone(),
            });
        }
        let doc = http::openapi::document(&served, &described)
            .map_err(|e| StartError::Setting(format!("the built-in OpenAPI document: {e}")))?;
        router = router.merge(http::openapi::router(doc));
        // The business router brings its own fallback (through admission).
        if !served.contains(&Plane::Business) {
            router = router.fallback(http::error::not_found);
        }
        planes.push(server::Plane {
            name,
            listener,
            tls,
            router: router.layer(axum::middleware::from_fn(admission::tag_request_id)),
        });
    }

    // Signal handlers are registered here, before any plane serves: a stop that comes as soon
    // as readiness shows must drain, not kill. (Registering inside the spawned task would leave
    // a window until that task first runs.)
    let stop_signals = StopSignals::install("stop with /stopService");
    let mut handles = Vec::new();
    for plane in planes {
        let scheme = if plane.tls.is_some() { "https" } else { "http" };
        let addr = plane
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(plane = %plane.name, "listening on {scheme}://{addr}");
        handles.push(tokio::spawn(server::serve(plane, life.token())));
    }
    let signals = tokio::spawn(signal_stop(stop_signals, life.clone(), drain_deadline));
    let enforce = checker.enforce;
    reload_signal.spawn(reloader, move || PermChecker::new(enforce));
    logging::print_line("Daemon start success!");
    tracing::info!("Daemon start success!");
    Ok(Running {
        life,
        planes: handles,
        signals,
        slaves: master.map(|m| m.set),
        failure: Default::default(),
    })
}

/// A multi-node slave: its management plane only (no business plane), and the link to its
/// master. `Daemon start success!` once it has joined and loaded its layers.
async fn start_slave(
    loaded: Loaded,
    settings: crate::multinode::slave::SlaveSettings,
    checker: &mut PermChecker,
    reloader: &Reloader,
) -> Result<Running, StartError> {
    check_model_dir(&loaded, checker)?;
    let sc = &loaded.config.server_config;
    let mgmt_socket = sc
        .http_sockets()
        .into_iter()
        .find(|s| s.planes.contains(&Plane::Management))
        .ok_or_else(|| StartError::Setting("no management listener configured".into()))?;
    let tls = tls_for(&loaded, Plane::Management, "management", checker, reloader)?;
    let addr = socket(&mgmt_socket.ip, mgmt_socket.port)?;
    let listener = server::bind("management", addr).await?;
    let life = Lifecycle::new();
    let status = crate::multinode::slave::SlaveStatus::default();
    let router = crate::multinode::slave_mgmt::router(status.clone())
        .layer(axum::middleware::from_fn(admission::tag_request_id));
    let stop_signals = StopSignals::install("stop with /stopService");
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        plane = "management",
        "listening on {scheme}://{addr} (multi-node slave: no business plane)"
    );
    let plane = server::Plane {
        name: "management".into(),
        listener,
        tls,
        router,
    };
    let handles = vec![tokio::spawn(server::serve(plane, life.token()))];
    let failure: Arc<std::sync::OnceLock<String>> = Default::default();
    let (l, f) = (life.clone(), failure.clone());
    tokio::spawn(async move {
        let joined = || {
            logging::print_line("Daemon start success!");
            tracing::info!("Daemon start success! (multi-node slave joined its master)");
        };
        if let Err(why) = crate::multinode::slave::run(settings, status, l.token(), joined).await {
            tracing::error!("{why}");
            let _ = f.set(why);
        }
        l.trigger(StopMode::Graceful);
    });
    let signals = tokio::spawn(signal_stop(
        stop_signals,
        life.clone(),
        Duration::from_secs(1),
    ));
    Ok(Running {
        life,
        planes: handles,
        signals,
        slaves: None,
        failure,
    })
}

async fn signal_stop(mut signals: StopSignals, life: Arc<Lifecycle>, drain_deadline: Duration) {
    let mut count = 0;
    loop {
        signals.recv().await;
        count += 1;
        if count == 1 {
            tracing::warn!(
                inflight = life.inflight(),
                "stop signal received: not ready, refusing new requests, draining in-flight ones (send it again to stop at once)"
            );
            life.begin_stopping();
            let life = life.clone();
            tokio::spawn(async move {
                if !life.wait_idle(drain_deadline).await {
                    tracing::warn!(inflight = life.inflight(), "drain deadline passed");
                }
                life.trigger(StopMode::Graceful);
            });
        } else {
            tracing::warn!("second stop signal: stopping now");
            life.trigger(StopMode::Force);
        }
    }
}

/// After the trigger, how long open connections get to finish their last reply.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

impl Running {
    /// Waits for a stop (signals or `/stopService`: both drain before pulling the trigger),
    /// closes the listeners and lets open connections finish, then returns.
    pub async fn wait(self) -> Result<(), StartError> {
        self.life.triggered().await;
        if let Some(set) = &self.slaves {
            tracing::info!("multi-node: telling the slaves to stop");
            set.finalize_all();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tracing::info!(
            inflight = self.life.inflight(),
            "stopping: listeners closed"
        );
        let mut graceful = Vec::new();
        for h in self.planes {
            if let Ok(g) = h.await {
                graceful.push(g);
            }
        }
        if self.life.is_forced() {
            tracing::warn!(
                inflight = self.life.inflight(),
                "forced stop: in-flight requests are cut"
            );
        } else {
            let close = async {
                for g in graceful {
                    g.shutdown().await;
                }
            };
            if tokio::time::timeout(CLOSE_GRACE, close).await.is_err() {
                tracing::warn!("connections still open after the close grace; closing them");
            }
        }
        self.signals.abort();
        tracing::info!("Daemon stopped");
        match self.failure.get() {
            Some(why) => Err(StartError::Slave(why.clone())),
            None => Ok(()),
        }
    }
}
