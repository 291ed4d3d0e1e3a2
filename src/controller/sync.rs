//! The Controller's loop (SPEC-PD §3.4), one [`Controller::tick`] every
//! `cluster_synchronization_seconds`:
//! 1. every `rank_table_detecting_seconds`, re-read the ranktable: new servers join the
//!    table, servers no longer listed drop out (a bad re-read keeps the last good table);
//! 2. probe every listed server: `GET /v1/config` until known, then `GET /v1/status`;
//! 3. decide roles for servers that have none (recovered from the process file when it
//!    names them). The first decision waits until every listed server answered or
//!    `server_online_attempt_times` × `server_online_wait_seconds` passed; later ones are
//!    made as servers come online;
//! 4. post roles where [`Cluster::needs_post`] says so (`init_role_attempt_times` rounds
//!    3 s apart per post);
//! 5. push the instance list to the Coordinator's `POST /v1/instances/refresh`.

use super::config::Config;
use super::process_file::{self, Decision};
use super::ranktable::{self, DefaultPorts, IdBook, RankTable};
use super::role_body;
use super::roles::{self, Role};
use super::server_api::Servers;
use super::state::{Cluster, Node};
use crate::motor::client::HttpClient;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Pause between role post rounds (Motor's).
const ROUND_PAUSE: Duration = Duration::from_secs(3);

/// Why the ranktable could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Read(crate::motor::files::FileError),
    #[error(transparent)]
    Invalid(#[from] ranktable::RankTableError),
}

/// Reads and checks the ranktable named by the config.
pub fn load_table(cfg: &Config) -> Result<RankTable, TableError> {
    let path = &cfg.rank_table_path;
    let v = crate::motor::files::read_json(path, "global ranktable").map_err(TableError::Read)?;
    let ports = DefaultPorts {
        predict: cfg.server_port,
        mgmt: cfg.server_control_port,
        metric: cfg.server_metric_port,
    };
    Ok(ranktable::parse(&v, &path.display().to_string(), ports)?)
}

/// The Controller's state between ticks.
pub struct Controller {
    cfg: Config,
    servers: Servers,
    coordinator_client: HttpClient,
    coordinator: Option<IpAddr>,
    cluster: Cluster,
    ids: IdBook,
    recovered: HashMap<(IpAddr, u16), Role>,
    online_deadline: Instant,
    decided_once: bool,
    table_read_at: Instant,
    last_pushed: Option<Vec<u64>>,
}

impl Controller {
    /// A Controller over `table`, with the decisions recovered from the process file.
    pub fn new(
        cfg: Config,
        table: RankTable,
        servers: Servers,
        coordinator_client: HttpClient,
        recovered: Vec<Decision>,
    ) -> Self {
        let mut ids = IdBook::default();
        let mut roles = HashMap::new();
        for d in recovered {
            ids.remember((d.server_ip, d.mgmt_port), d.id);
            roles.insert((d.server_ip, d.mgmt_port), d.role);
        }
        let wait = cfg
            .online_wait
            .saturating_mul(u32::try_from(cfg.online_attempts).unwrap_or(u32::MAX));
        let now = Instant::now();
        let mut c = Self {
            cfg,
            servers,
            coordinator_client,
            coordinator: None,
            cluster: Cluster::default(),
            ids,
            recovered: roles,
            online_deadline: now + wait,
            decided_once: false,
            table_read_at: now,
            last_pushed: None,
        };
        c.apply_table(table);
        c
    }

    /// Takes a (re-)read ranktable: ids for new servers, `listed` for all.
    pub fn apply_table(&mut self, table: RankTable) {
        if table.coordinator.is_none() {
            tracing::warn!("the global ranktable has no group \"0\" (Coordinator): the instance list is pushed nowhere");
        }
        self.coordinator = table.coordinator;
        for n in self.cluster.nodes.values_mut() {
            n.listed = false;
        }
        for s in table.servers {
            let id = self.ids.id(s.key());
            match self.cluster.nodes.get_mut(&id) {
                Some(n) => {
                    if !n.listed && n.server != s {
                        tracing::info!(id, ip = %s.server_ip, "ranktable entry changed");
                    }
                    n.server = s;
                    n.listed = true;
                }
                None => {
                    tracing::info!(id, ip = %s.server_ip, mgmt_port = s.mgmt_port, "server joins from the ranktable");
                    self.cluster.nodes.insert(id, Node::new(s));
                }
            }
        }
        let gone: Vec<u64> = self
            .cluster
            .nodes
            .iter()
            .filter(|(_, n)| !n.listed)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(n) = self.cluster.nodes.remove(&id) {
                tracing::info!(id, ip = %n.server.server_ip, "server left the ranktable: dropped");
            }
        }
    }

    fn mgmt_addr(n: &Node) -> SocketAddr {
        SocketAddr::new(n.server.server_ip, n.server.mgmt_port)
    }

    async fn probe_all(&mut self) {
        let jobs = self.cluster.nodes.iter().map(|(&id, n)| {
            let servers = self.servers.clone();
            let addr = Self::mgmt_addr(n);
            let need_config = n.config.is_none();
            async move {
                let config = if need_config {
                    match servers.config(addr).await {
                        Ok(c) => Some(Ok(c)),
                        Err(e) => Some(Err(e)),
                    }
                } else {
                    None
                };
                let status = match &config {
                    Some(Err(_)) => None,
                    _ => Some(servers.status(addr).await),
                };
                (id, config, status)
            }
        });
        for (id, config, status) in join_all(jobs).await {
            let Some(n) = self.cluster.nodes.get_mut(&id) else {
                continue;
            };
            let was_online = n.online();
            match config {
                Some(Ok(c)) => n.config = Some(c),
                Some(Err(e)) => tracing::debug!(id, error = %e, "config probe failed"),
                None => {}
            }
            let status = match status {
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    if was_online {
                        tracing::warn!(id, error = %e, "server unreachable: left out of the instance list");
                    } else {
                        tracing::debug!(id, error = %e, "status probe failed");
                    }
                    None
                }
                None => None,
            };
            n.observe(status);
            if n.online() && !was_online {
                tracing::info!(id, ip = %n.server.server_ip, "server online");
            }
        }
    }

    fn decide(&mut self) {
        let all_online = self.cluster.nodes.values().all(Node::online);
        if !self.decided_once && !all_online && Instant::now() < self.online_deadline {
            return;
        }
        let mut new = Vec::new();
        let mut changed = false;
        for (&id, n) in self.cluster.nodes.iter_mut() {
            if n.role.is_some() || !n.online() {
                continue;
            }
            match self.recovered.get(&n.server.key()) {
                Some(&r) => {
                    tracing::info!(id, role = r.name(), "role recovered from the process file");
                    n.role = Some(r);
                    changed = true;
                }
                None => new.push(id),
            }
        }
        if !self.decided_once && !all_online {
            let missing: Vec<u64> = self
                .cluster
                .nodes
                .iter()
                .filter(|(_, n)| !n.online())
                .map(|(id, _)| *id)
                .collect();
            tracing::warn!(
                ?missing,
                "servers still offline after server_online_attempt_times; deciding without them"
            );
        }
        self.decided_once = true;
        if !new.is_empty() {
            let count = |r: Role| {
                self.cluster
                    .nodes
                    .values()
                    .filter(|n| n.role == Some(r))
                    .count()
            };
            let (p, d) = (count(Role::Prefill), count(Role::Decode));
            for (id, role) in roles::decide(p, d, &new, self.cfg.p_rate, self.cfg.d_rate) {
                tracing::info!(id, role = role.name(), "role decided");
                if let Some(n) = self.cluster.nodes.get_mut(&id) {
                    n.role = Some(role);
                }
            }
            changed = true;
        }
        if changed {
            self.save_decisions();
        }
    }

    fn save_decisions(&self) {
        let Some(path) = &self.cfg.process_file else {
            return;
        };
        let decisions: Vec<Decision> = self
            .cluster
            .nodes
            .iter()
            .filter_map(|(&id, n)| {
                n.role.map(|role| Decision {
                    id,
                    server_ip: n.server.server_ip,
                    mgmt_port: n.server.mgmt_port,
                    role,
                })
            })
            .collect();
        if let Err(e) = process_file::write(path, &decisions) {
            tracing::error!(error = %e, "role decisions not saved");
        }
    }

    async fn post_roles(&mut self) {
        let now = Instant::now();
        let settle = self.cfg.check_role_wait;
        let mut jobs = Vec::new();
        for (&id, n) in &self.cluster.nodes {
            let Some(reason) = self.cluster.needs_post(id, now, settle) else {
                continue;
            };
            let Some(role) = n.role else {
                continue;
            };
            let peer_ids = self.cluster.peers_of(id);
            let peers: Vec<(u64, &ranktable::Server)> = peer_ids
                .iter()
                .filter_map(|p| self.cluster.nodes.get(p).map(|pn| (*p, &pn.server)))
                .collect();
            let body = role_body::build(id, &n.server, &peers);
            let servers = self.servers.clone();
            let addr = Self::mgmt_addr(n);
            let rounds = self.cfg.init_role_attempts.max(1);
            tracing::info!(id, role = role.name(), peers = ?peer_ids, ?reason, "posting role");
            jobs.push(async move {
                let mut last = None;
                for round in 0..rounds {
                    if round > 0 {
                        tokio::time::sleep(ROUND_PAUSE).await;
                    }
                    match servers.post_role(addr, role, &body).await {
                        Ok(()) => return (id, peer_ids, None),
                        Err(e) => last = Some(e),
                    }
                }
                (id, peer_ids, last)
            });
        }
        for (id, peers, err) in join_all(jobs).await {
            match err {
                None => {
                    if let Some(n) = self.cluster.nodes.get_mut(&id) {
                        n.posted = Some((Instant::now(), peers));
                    }
                }
                Some(e) => {
                    tracing::error!(id, error = %e, "role post failed; tried again next round")
                }
            }
        }
    }

    fn warn_slow(&self) {
        let limit = self
            .cfg
            .check_role_wait
            .saturating_mul(u32::try_from(self.cfg.check_role_attempts).unwrap_or(u32::MAX));
        for (&id, n) in &self.cluster.nodes {
            if let (Some(role), Some((at, _)), Some(s)) = (n.role, &n.posted, &n.status) {
                let late = at.elapsed();
                if !s.ready_as(role) && late > limit && late <= limit + self.cfg.cluster_sync {
                    tracing::error!(
                        id,
                        role = role.name(),
                        "not RoleReady after check_role_attempt_times × check_role_wait_seconds"
                    );
                }
            }
        }
    }

    async fn push(&mut self) {
        let Some(ip) = self.coordinator else {
            return;
        };
        let refresh = self.cluster.refresh();
        let addr = SocketAddr::new(ip, self.cfg.coordinator_port);
        let mut result = Err(String::new());
        for attempt in 0..=self.cfg.http_retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result = match self
                .coordinator_client
                .post_json(addr, "/v1/instances/refresh", &refresh)
                .await
            {
                Ok(r) if r.status == 200 => Ok(()),
                Ok(r) => Err(format!("HTTP {}: {}", r.status, r.text())),
                Err(e) => Err(e.to_string()),
            };
            if result.is_ok() {
                break;
            }
        }
        match result {
            Ok(()) => {
                if self.last_pushed.as_ref() != Some(&refresh.ids) {
                    tracing::info!(ids = ?refresh.ids, "instance list pushed to the Coordinator");
                    self.last_pushed = Some(refresh.ids);
                }
            }
            Err(e) => {
                tracing::warn!(coordinator = %addr, error = %e, "instance list not pushed");
                self.last_pushed = None;
            }
        }
    }

    /// One round of the loop.
    pub async fn tick(&mut self) {
        if self.table_read_at.elapsed() >= self.cfg.rank_table_detect {
            self.table_read_at = Instant::now();
            match load_table(&self.cfg) {
                Ok(t) => self.apply_table(t),
                Err(e) => {
                    tracing::error!(error = %e, "ranktable re-read failed; keeping the last good one")
                }
            }
        }
        self.probe_all().await;
        self.decide();
        self.post_roles().await;
        self.warn_slow();
        self.push().await;
    }

    /// `GET /stopService?mode=Force` to every listed server.
    pub async fn stop_cluster(&self) {
        let jobs = self.cluster.nodes.iter().map(|(&id, n)| {
            let servers = self.servers.clone();
            let addr = Self::mgmt_addr(n);
            async move { (id, servers.stop(addr).await) }
        });
        for (id, r) in join_all(jobs).await {
            match r {
                Ok(()) => tracing::info!(id, "server told to stop"),
                Err(e) => tracing::warn!(id, error = %e, "stop request failed"),
            }
        }
    }
}
