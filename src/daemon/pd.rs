//! Start-up of a dmi instance (`inferMode: "dmi"`, SPEC-PD): the interComm plane's TLS (server
//! and client halves, every file permission-checked) and listener are prepared with the other
//! planes, before anything serves; once the engine runs, the PD node is built — role state
//! with its KV linker, `/dresult` hub, peer links — and the gRPC services start on
//! `ipAddress:interCommPort`.

use super::StartError;
use crate::cluster::kv::{self as kv_service, KvLayout};
use crate::cluster::transport;
use crate::config::{Loaded, Plane};
use crate::engine::{EngineHandle, EngineMonitor};
use crate::http::server;
use crate::metrics::Metrics;
use crate::pd::decode::DecodeSide;
use crate::pd::dresult::DresultHub;
use crate::pd::kv_source::LeasedKv;
use crate::pd::linker::KvLinker;
use crate::pd::links::Links;
use crate::pd::node::{LeaseBook, PdNode, PdSettings, Transfers};
use crate::pd::role::{LinkTiming, Role, RoleState};
use crate::security::perms::PermChecker;
use crate::security::reload::{LiveClient, LiveServer, Reloader};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What a dmi instance prepares before serving.
pub struct Prepared {
    listener: TcpListener,
    server_tls: Option<LiveServer>,
    client_tls: Option<LiveClient>,
    ip: Ipv4Addr,
    port: u16,
    kv_trans_timeout: Duration,
    link_timing: LinkTiming,
}

/// The interComm plane of a dmi instance: TLS checked and loaded (both halves registered with
/// `reloader` as one plane), listener bound. `None` in standard mode.
pub async fn prepare(
    loaded: &Loaded,
    checker: &mut PermChecker,
    reloader: &Reloader,
) -> Result<Option<Prepared>, StartError> {
    let sc = &loaded.config.server_config;
    if sc.infer_mode != "dmi" {
        return Ok(None);
    }
    let tls_err = |source| StartError::Tls {
        plane: "interComm".into(),
        source,
    };
    let (server_tls, client_tls) = match loaded.config.tls_files(Plane::InterComm, &loaded.home) {
        Some(files) => {
            let (server, client) = reloader
                .both("interComm", files, checker)
                .map_err(tls_err)?;
            (Some(server), Some(client))
        }
        None => {
            tracing::warn!("ServerConfig.interCommTLSEnabled is false: PD links between instances are PLAIN h2c without authentication; use only on a trusted network");
            (None, None)
        }
    };
    let ip: Ipv4Addr = sc.ip_address.parse().map_err(|_| {
        StartError::Address(format!(
            "ServerConfig.ipAddress {:?} must be an IPv4 address in dmi mode (peers and pNodeAddr are IPv4)",
            sc.ip_address
        ))
    })?;
    let port = sc.inter_comm_port;
    let listener = server::bind("interComm", SocketAddr::new(ip.into(), port)).await?;
    let model = loaded.config.model();
    let kv_trans = model.map_or(10, |m| m.kv_trans_timeout);
    let kv_link = model.map_or(1080, |m| m.kv_link_timeout);
    Ok(Some(Prepared {
        listener,
        server_tls,
        client_tls,
        ip,
        port,
        // MindIE: ≤ 0 → 1 s.
        kv_trans_timeout: Duration::from_secs(u64::from(kv_trans.max(1))),
        link_timing: LinkTiming::from_kv_link_timeout(i64::from(kv_link)),
    }))
}

/// The PD node once the engine runs; its gRPC services serve until `shutdown`.
pub fn start(
    prep: Prepared,
    loaded: &Loaded,
    engine: EngineHandle,
    metrics: Option<Arc<Metrics>>,
    model_name: &str,
    shutdown: CancellationToken,
) -> Arc<PdNode> {
    let sc = &loaded.config.server_config;
    let info = engine.info();
    let layout = KvLayout {
        model_name: model_name.to_string(),
        num_layers: info.kv.num_layers,
        num_kv_heads: info.kv.num_kv_heads,
        head_dim: info.kv.head_dim,
        dtype: info.dtype.clone(),
        block_size: info.block_size,
        tp_size: 1,
        layout: info.kv.layout.clone(),
        bytes_per_block: info.kv.bytes_per_block,
    };
    let links = Arc::new(Links::new(prep.client_tls.clone()));
    let linker = Arc::new(KvLinker {
        links: links.clone(),
        layout: layout.clone(),
        inter_comm_port: prep.port,
    });
    let role = RoleState::new(linker, prep.link_timing);
    let hub = DresultHub::new();
    hub.follow_role(role.subscribe());
    let node = Arc::new(PdNode {
        settings: PdSettings {
            ip: prep.ip,
            inter_comm_port: prep.port,
            kv_trans_timeout: prep.kv_trans_timeout,
            kv_link_timeout: prep.link_timing.link_timeout,
            vllm_openai: sc.open_ai_support == "vllm",
            max_request_bytes: (sc.max_request_length as usize) << 20,
            model_name: model_name.to_string(),
        },
        engine,
        role,
        hub,
        links,
        layout,
        leases: LeaseBook::default(),
        transfers: Transfers::default(),
        metrics,
        replay: OnceLock::new(),
    });
    let routes = kv_service::routes(
        Arc::new(DecodeSide(node.clone())),
        Arc::new(LeasedKv(node.clone())),
    );
    let scheme = if prep.server_tls.is_some() {
        "grpcs (mutual TLS)"
    } else {
        "grpc (plain h2c)"
    };
    tracing::info!(
        plane = "interComm",
        "listening on {scheme} {}:{}",
        prep.ip,
        prep.port
    );
    let (listener, tls, stop) = (prep.listener, prep.server_tls, shutdown.clone());
    tokio::spawn(async move {
        if let Err(e) = transport::serve_live(listener, tls, routes, stop).await {
            tracing::error!(plane = "interComm", "gRPC server ended: {e}");
        }
    });
    spawn_gauges(node.clone(), shutdown);
    node
}

/// Refreshes the PD gauges once a second.
fn spawn_gauges(node: Arc<PdNode>, shutdown: CancellationToken) {
    let Some(m) = node.metrics.clone() else {
        return;
    };
    tokio::spawn(async move {
        let l = [m.model().to_string()];
        let l = [l[0].as_str()];
        loop {
            let view = node.role.view();
            let (p, d) = match view.role {
                Some(Role::Prefill) => (1.0, 0.0),
                Some(Role::Decode) => (0.0, 1.0),
                Some(Role::Flex) => (1.0, 1.0),
                None => (0.0, 0.0),
            };
            m.pd_role_prefill.with_label_values(&l).set(p);
            m.pd_role_decode.with_label_values(&l).set(d);
            m.pd_kv_leases_held
                .with_label_values(&l)
                .set(node.leases.len() as f64);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
}
