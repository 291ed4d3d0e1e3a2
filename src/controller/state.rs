//! The Controller's table of instances: what the ranktable says of each, what the instance
//! last answered, the role it was given and when. From it follow the peers each instance
//! should have ([`Cluster::peers_of`]), which instances need their role (re-)posted
//! ([`Cluster::needs_post`]) and the Coordinator's instance list ([`Cluster::refresh`]).
//!
//! Peers of an instance = the instances of the other role in the same ranktable group that
//! are in the ranktable and answered their last status probe. A link counts only when both
//! ends list each other `ok`. The refresh lists an instance when it answered, is in its
//! assigned role and has at least one such link (Motor leaves out P/D instances without an
//! available peer); everything else is left out, which is how the Coordinator learns an
//! instance is gone.

use super::ranktable::Server;
use super::roles::Role;
use super::server_api::{RoleStatus, StaticConfig, Status};
use crate::motor::instances::{DynamicInfo, Instance, Refresh, StaticInfo};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One instance.
#[derive(Debug, Clone)]
pub struct Node {
    pub server: Server,
    /// Still listed in the ranktable.
    pub listed: bool,
    pub config: Option<StaticConfig>,
    /// The last status; `None` when the last probe got no (valid) answer.
    pub status: Option<Status>,
    pub role: Option<Role>,
    /// When the role was last posted successfully, and with which peers.
    pub posted: Option<(Instant, Vec<u64>)>,
    /// Largest free slot and block counts seen (the totals of the refresh).
    pub total_slots: u64,
    pub total_blocks: u64,
}

impl Node {
    pub fn new(server: Server) -> Self {
        Self {
            server,
            listed: true,
            config: None,
            status: None,
            role: None,
            posted: None,
            total_slots: 0,
            total_blocks: 0,
        }
    }

    /// Answered its last probe and its static config is known.
    pub fn online(&self) -> bool {
        self.listed && self.status.is_some() && self.config.is_some()
    }

    /// Records a probe's answer.
    pub fn observe(&mut self, status: Option<Status>) {
        if let Some(s) = &status {
            self.total_slots = self.total_slots.max(s.avail_slots);
            self.total_blocks = self.total_blocks.max(s.avail_blocks);
        }
        self.status = status;
    }
}

/// Why a role is posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostReason {
    /// Never posted, or the instance lost its role (RoleUnknown: restarted).
    NoRole,
    /// The instance reports another role.
    WrongRole,
    /// The peers it should have changed (an instance came or went).
    PeersChanged,
    /// It has peers but none of its links is ok (failed, or not ready in time).
    NoLink,
}

/// All instances by id.
#[derive(Debug, Default)]
pub struct Cluster {
    pub nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    /// Ids of instances that should be `id`'s peers.
    pub fn peers_of(&self, id: u64) -> Vec<u64> {
        let Some(me) = self.nodes.get(&id) else {
            return Vec::new();
        };
        let Some(role) = me.role else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.online()
                    && n.role == Some(role.opposite())
                    && n.server.group_id == me.server.group_id
            })
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Whether `a` and `b` list each other `ok`.
    pub fn linked(&self, a: u64, b: u64) -> bool {
        let ok = |x: u64, y: u64| {
            self.nodes
                .get(&x)
                .and_then(|n| n.status.as_ref())
                .is_some_and(|s| s.ok_links.contains(&y))
        };
        ok(a, b) && ok(b, a)
    }

    /// Whether (and why) instance `id` needs its role posted now. `settle` is how long a
    /// post gets to reach RoleReady with an ok link before it is posted again.
    pub fn needs_post(&self, id: u64, now: Instant, settle: Duration) -> Option<PostReason> {
        let n = self.nodes.get(&id)?;
        let role = n.role?;
        if !n.online() {
            return None;
        }
        let status = n.status.as_ref()?;
        let peers = self.peers_of(id);
        if peers.is_empty() {
            // A first assignment without peers is refused (503); wait for a peer.
            return None;
        }
        let Some((at, posted_peers)) = &n.posted else {
            return Some(PostReason::NoRole);
        };
        if status.role_status == RoleStatus::Unknown {
            return Some(PostReason::NoRole);
        }
        if *posted_peers != peers {
            return Some(PostReason::PeersChanged);
        }
        let settled = now.saturating_duration_since(*at) >= settle;
        if status.role_status != RoleStatus::Switching
            && status.current_role != role.name()
            && settled
        {
            return Some(PostReason::WrongRole);
        }
        let any_ok = peers.iter().any(|p| status.ok_links.contains(p));
        let any_failed = peers.iter().any(|p| status.failed_links.contains(p));
        if !any_ok && settled && (any_failed || status.role_status != RoleStatus::Switching) {
            return Some(PostReason::NoLink);
        }
        None
    }

    /// The instance list for the Coordinator's `POST /v1/instances/refresh`.
    pub fn refresh(&self) -> Refresh {
        let usable = |n: &Node| {
            n.online()
                && n.role.is_some_and(|r| {
                    n.status
                        .as_ref()
                        .is_some_and(|s| s.current_role == r.name())
                })
        };
        let mut out = Refresh {
            ids: Vec::new(),
            instances: Vec::new(),
        };
        for (&id, n) in &self.nodes {
            let (Some(role), Some(config), Some(status)) = (n.role, &n.config, &n.status) else {
                continue;
            };
            if !usable(n) {
                continue;
            }
            let peers: Vec<u64> = self
                .peers_of(id)
                .into_iter()
                .filter(|&p| self.nodes.get(&p).is_some_and(usable) && self.linked(id, p))
                .collect();
            if peers.is_empty() {
                continue;
            }
            out.ids.push(id);
            out.instances.push(Instance {
                id,
                ip: n.server.server_ip.to_string(),
                port: n.server.predict_port.to_string(),
                metric_port: n.server.metric_port.to_string(),
                inter_comm_port: n.server.inter_comm_port.to_string(),
                model_name: config.model_name.clone(),
                static_info: StaticInfo {
                    group_id: n.server.group_id,
                    max_seq_len: config.max_seq_len,
                    max_output_len: config.max_output_len,
                    total_slots_num: n.total_slots,
                    total_block_num: n.total_blocks,
                    block_size: config.block_size,
                    role: role.code(),
                    p_percentage: 0,
                    label: 0,
                    virtual_id: id,
                },
                dynamic_info: DynamicInfo {
                    peers,
                    avail_slots_num: status.avail_slots,
                    avail_block_num: status.avail_blocks,
                    waiting_request_num: status.waiting,
                    running_request_num: status.running,
                },
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn server(ip: &str) -> Server {
        Server {
            group_id: 2,
            server_ip: ip.parse().expect("ip"),
            host_ip: ip.into(),
            predict_port: 1025,
            mgmt_port: 1026,
            metric_port: 1027,
            inter_comm_port: 1121,
            super_pod_id: None,
            devices: Vec::new(),
        }
    }

    fn status(role: &str, rs: RoleStatus, ok: &[u64]) -> Status {
        Status {
            role_status: rs,
            current_role: role.into(),
            avail_slots: 200,
            avail_blocks: 1000,
            waiting: 0,
            running: 0,
            ok_links: ok.iter().copied().collect(),
            failed_links: BTreeSet::new(),
        }
    }

    fn pair() -> Cluster {
        let mut c = Cluster::default();
        for (id, ip, role) in [
            (0, "10.0.0.1", Role::Prefill),
            (1, "10.0.0.3", Role::Decode),
        ] {
            let mut n = Node::new(server(ip));
            n.role = Some(role);
            n.config = Some(StaticConfig {
                max_seq_len: 2560,
                max_output_len: 512,
                block_size: 128,
                model_name: "m".into(),
            });
            n.observe(Some(status("none", RoleStatus::Unknown, &[])));
            c.nodes.insert(id, n);
        }
        c
    }

    #[test]
    fn lifecycle_of_a_pair() {
        let mut c = pair();
        let now = Instant::now();
        let settle = Duration::from_secs(5);
        assert_eq!(c.needs_post(0, now, settle), Some(PostReason::NoRole));
        assert_eq!(c.peers_of(0), vec![1]);
        for id in [0, 1] {
            c.nodes.get_mut(&id).expect("node").posted = Some((now, c.peers_of(id)));
        }
        c.nodes
            .get_mut(&0)
            .expect("p")
            .observe(Some(status("prefill", RoleStatus::Ready, &[1])));
        // Only one end lists the link: not in the refresh yet.
        c.nodes
            .get_mut(&1)
            .expect("d")
            .observe(Some(status("decode", RoleStatus::Switching, &[])));
        assert!(c.refresh().ids.is_empty());
        c.nodes
            .get_mut(&1)
            .expect("d")
            .observe(Some(status("decode", RoleStatus::Ready, &[0])));
        let r = c.refresh();
        assert_eq!(r.ids, vec![0, 1]);
        assert_eq!(r.instances[0].static_info.role, b'P');
        assert_eq!(r.instances[1].dynamic_info.peers, vec![0]);
        assert_eq!(c.needs_post(0, now, settle), None);
        // D dies: left out, and P's peers change.
        c.nodes.get_mut(&1).expect("d").observe(None);
        assert!(c.refresh().ids.is_empty());
        assert_eq!(
            c.needs_post(0, now, settle),
            None,
            "no peers: nothing to post"
        );
        // D is back without a role: both get posted.
        c.nodes
            .get_mut(&1)
            .expect("d")
            .observe(Some(status("none", RoleStatus::Unknown, &[])));
        assert_eq!(c.needs_post(1, now, settle), Some(PostReason::NoRole));
        // A P whose peers went and came back unchanged is not re-posted; a P that lost a
        // link is, once settled.
        c.nodes
            .get_mut(&0)
            .expect("p")
            .observe(Some(status("prefill", RoleStatus::Ready, &[])));
        assert_eq!(c.needs_post(0, now, settle), None);
        assert_eq!(
            c.needs_post(0, now + settle, settle),
            Some(PostReason::NoLink)
        );
    }
}
