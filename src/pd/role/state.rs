//! [`RoleState`]: this instance's role, its status and its links to peers, shared by the
//! management routes, `/v1/status` and (through [`RoleState::subscribe`]) the business plane
//! and the `/dresult` hub.
//!
//! [`RoleState::apply`] takes a checked role post and answers at once. The first
//! prefill/decode assignment (or flex at 0 % / 100 %) without peers is refused
//! ([`ApplyError::NoPeers`], 503) and changes nothing. Otherwise a re-post is a diff keyed by
//! peer instance id: unlink = (linked or linking) − peers, link = peers − linked − linking (a
//! failed peer that is posted again is linked again). Each link runs on its own task through
//! the [`Linker`], retried every [`LinkTiming::retry_interval`] until
//! [`LinkTiming::link_timeout`]; then the peer is `failed : <last error>`.
//!
//! The status follows from the table whenever it changes (a post, a link that ends):
//! - no role yet: `RoleUnknown`;
//! - a link still running: `RoleSwitching`;
//! - otherwise `RoleReady` when at least one link is ok, or the role needs no peers
//!   ([`Role::needs_peers`]: flex strictly between 0 % and 100 % serves both phases itself,
//!   failed links or not);
//! - otherwise (every link failed) `RoleSwitching`, logged as an error, until a new post.
//!
//! So a re-post that changes nothing leaves `RoleReady` as it is (SPEC-PD §7: MindIE sets
//! `RoleSwitching` and never clears it). Model loading and the engine's own role switch are
//! not tracked here; `/v1/status` also weighs the engine's condition.

use super::{Instance, Role, RoleRequest, RoleStatus, RoleView};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// MindIE's `kv_link_timeout` default, also used for a value ≤ 0.
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(1080);

/// Makes and drops the links to peers (on the CPU backend: the KV `Hello` over gRPC).
pub trait Linker: Send + Sync + 'static {
    /// One attempt to link `local` to `peer`; the error is a short reason for
    /// `failed : <reason>` in `linkStatus` (e.g. MindIE's code `2001`). Retries and the
    /// overall timeout are the caller's.
    fn link(&self, local: &Instance, peer: &Instance) -> BoxFuture<'static, Result<(), String>>;

    /// Drops the link to a peer that is no longer posted (linked, or still linking).
    fn unlink(&self, peer_id: u32);
}

/// How long links are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTiming {
    /// A peer not linked by then is `failed` (MindIE's `kv_link_timeout`).
    pub link_timeout: Duration,
    /// Pause between failed attempts.
    pub retry_interval: Duration,
}

impl LinkTiming {
    /// From `ModelConfig.kv_link_timeout` in seconds (≤ 0 → 1080 s, as MindIE). MindIE makes
    /// 80 attempts in that time; the pause here is a 80th of it, kept within 1 s to 5 s so a
    /// peer that comes up late is linked soon.
    pub fn from_kv_link_timeout(seconds: i64) -> Self {
        let link_timeout = u64::try_from(seconds)
            .ok()
            .filter(|&s| s > 0)
            .map_or(DEFAULT_LINK_TIMEOUT, Duration::from_secs);
        Self {
            link_timeout,
            retry_interval: (link_timeout / 80)
                .clamp(Duration::from_secs(1), Duration::from_secs(5)),
        }
    }
}

impl Default for LinkTiming {
    fn default() -> Self {
        Self::from_kv_link_timeout(0)
    }
}

/// The link to one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Linking,
    Ok,
    /// Gave up (timeout), or broke later (e.g. a KV pull failed); the reason is shown.
    Failed(String),
}

/// One peer in a [`RoleSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLink {
    pub id: u32,
    pub state: LinkState,
    pub instance: Instance,
}

/// Everything `/v1/status` shows, read at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSnapshot {
    pub view: RoleView,
    pub local: Option<Instance>,
    /// By instance id.
    pub peers: Vec<PeerLink>,
}

/// What a post changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleDiff {
    /// Peers now being linked (new, or failed before).
    pub link: Vec<u32>,
    /// Peers unlinked (linked or linking, and no longer posted).
    pub unlink: Vec<u32>,
    pub role_changed: bool,
}

impl RoleDiff {
    pub fn is_empty(&self) -> bool {
        self.link.is_empty() && self.unlink.is_empty() && !self.role_changed
    }
}

/// Why a post was refused; the state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "the first {} assignment lists no peers: a {} instance needs at least one",
        .role.as_str(),
        .role.as_str()
    )]
    NoPeers { role: Role },
}

/// See the module docs. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct RoleState {
    inner: Arc<Inner>,
}

struct Inner {
    linker: Arc<dyn Linker>,
    timing: LinkTiming,
    table: Mutex<Table>,
    views: watch::Sender<RoleView>,
    generation: AtomicU64,
}

#[derive(Default)]
struct Table {
    view: RoleView,
    local: Option<Instance>,
    peers: BTreeMap<u32, Peer>,
}

struct Peer {
    instance: Instance,
    state: LinkState,
    /// Which link task may report on this entry.
    generation: u64,
    cancel: CancellationToken,
}

/// A link task to start once the table lock is released.
struct Pending {
    id: u32,
    generation: u64,
    peer: Instance,
    cancel: CancellationToken,
}

impl RoleState {
    pub fn new(linker: Arc<dyn Linker>, timing: LinkTiming) -> Self {
        let (views, _) = watch::channel(RoleView::default());
        Self {
            inner: Arc::new(Inner {
                linker,
                timing,
                table: Mutex::new(Table::default()),
                views,
                generation: AtomicU64::new(0),
            }),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The role, status and percentage now.
    pub fn view(&self) -> RoleView {
        self.table().view
    }

    /// Role changes as they happen (the current value first).
    pub fn subscribe(&self) -> watch::Receiver<RoleView> {
        self.inner.views.subscribe()
    }

    pub fn snapshot(&self) -> RoleSnapshot {
        let t = self.table();
        RoleSnapshot {
            view: t.view,
            local: t.local.clone(),
            peers: t
                .peers
                .iter()
                .map(|(&id, p)| PeerLink {
                    id,
                    state: p.state.clone(),
                    instance: p.instance.clone(),
                })
                .collect(),
        }
    }

    /// Takes a role post (see the module docs). Answers at once; links run on spawned tasks,
    /// so this must be called inside a Tokio runtime.
    pub fn apply(&self, req: RoleRequest) -> Result<RoleDiff, ApplyError> {
        let mut pending = Vec::new();
        let mut diff = RoleDiff::default();
        let local = req.local.clone();
        {
            let mut t = self.table();
            let p_percentage = req.local.p_percentage.or(t.view.p_percentage);
            if t.view.role.is_none() && req.peers.is_empty() && req.role.needs_peers(p_percentage) {
                return Err(ApplyError::NoPeers { role: req.role });
            }
            let wanted: BTreeMap<u32, Instance> = req
                .peers
                .into_iter()
                .filter_map(|p| Some((p.id?, p)))
                .collect();
            t.peers.retain(|id, p| {
                if wanted.contains_key(id) {
                    return true;
                }
                p.cancel.cancel();
                if !matches!(p.state, LinkState::Failed(_)) {
                    diff.unlink.push(*id);
                }
                false
            });
            for (id, peer) in wanted {
                match t.peers.get_mut(&id) {
                    Some(p) if matches!(p.state, LinkState::Ok | LinkState::Linking) => {
                        // Already linked or linking: keep the link, note the latest details.
                        p.instance = peer;
                    }
                    _ => {
                        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed);
                        let cancel = CancellationToken::new();
                        t.peers.insert(
                            id,
                            Peer {
                                instance: peer.clone(),
                                state: LinkState::Linking,
                                generation,
                                cancel: cancel.clone(),
                            },
                        );
                        pending.push(Pending {
                            id,
                            generation,
                            peer,
                            cancel,
                        });
                        diff.link.push(id);
                    }
                }
            }
            diff.role_changed = t.view.role != Some(req.role);
            t.view.role = Some(req.role);
            t.view.p_percentage = p_percentage;
            t.local = Some(req.local);
            self.settle(&mut t);
        }
        tracing::info!(
            role = req.role.as_str(),
            link = ?diff.link,
            unlink = ?diff.unlink,
            role_changed = diff.role_changed,
            "role assigned"
        );
        for id in &diff.unlink {
            self.inner.linker.unlink(*id);
        }
        for p in pending {
            tokio::spawn(run_link(self.inner.clone(), local.clone(), p));
        }
        Ok(diff)
    }

    /// Marks an ok link broken (e.g. a KV pull from that peer failed: reason
    /// `pull kv failed.`). The status is left as it is; a new post links the peer again.
    /// Returns whether the peer was linked.
    pub fn mark_failed(&self, peer_id: u32, reason: &str) -> bool {
        let mut t = self.table();
        match t.peers.get_mut(&peer_id) {
            Some(p) if p.state == LinkState::Ok => {
                tracing::warn!(peer = peer_id, reason, "link to peer marked failed");
                p.state = LinkState::Failed(reason.to_string());
                true
            }
            _ => false,
        }
    }

    /// Whether at least one peer link is ok.
    pub fn has_ok_link(&self) -> bool {
        self.table()
            .peers
            .values()
            .any(|p| p.state == LinkState::Ok)
    }

    /// Recomputes the status from the table and publishes the view when it changed.
    fn settle(&self, t: &mut Table) {
        let status = match t.view.role {
            None => RoleStatus::RoleUnknown,
            Some(role) => {
                let linking = t.peers.values().any(|p| p.state == LinkState::Linking);
                let ok = t.peers.values().any(|p| p.state == LinkState::Ok);
                if linking {
                    RoleStatus::RoleSwitching
                } else if ok || !role.needs_peers(t.view.p_percentage) {
                    RoleStatus::RoleReady
                } else {
                    tracing::error!(
                        role = role.as_str(),
                        peers = t.peers.len(),
                        "no peer link succeeded: the instance waits for a new role post"
                    );
                    RoleStatus::RoleSwitching
                }
            }
        };
        if status != t.view.status {
            tracing::info!(
                from = t.view.status.as_str(),
                to = status.as_str(),
                "role status"
            );
            t.view.status = status;
        }
        let view = t.view;
        self.inner.views.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    /// A link task's result, unless the peer was dropped or relinked meanwhile.
    fn finish(&self, id: u32, generation: u64, result: Result<(), String>) {
        let mut t = self.table();
        let Some(p) = t.peers.get_mut(&id) else {
            return;
        };
        if p.generation != generation || p.state != LinkState::Linking {
            return;
        }
        match result {
            Ok(()) => {
                tracing::info!(peer = id, "linked to peer");
                p.state = LinkState::Ok;
            }
            Err(reason) => {
                tracing::error!(peer = id, %reason, "link to peer failed");
                p.state = LinkState::Failed(reason);
            }
        }
        self.settle(&mut t);
    }
}

/// Tries one link until it succeeds, the timeout passes or the peer is dropped.
async fn run_link(inner: Arc<Inner>, local: Instance, p: Pending) {
    let timing = inner.timing;
    let deadline = tokio::time::Instant::now() + timing.link_timeout;
    let mut last_error: Option<String> = None;
    let mut attempt = 0u32;
    let result = loop {
        attempt += 1;
        let link = inner.linker.link(&local, &p.peer);
        let outcome = tokio::select! {
            _ = p.cancel.cancelled() => return,
            r = tokio::time::timeout_at(deadline, link) => r,
        };
        match outcome {
            Ok(Ok(())) => break Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(peer = p.id, attempt, error = %e, "link attempt failed");
                last_error = Some(e);
            }
            Err(_) => break Err(last_error.unwrap_or_else(|| "timeout".into())),
        }
        if tokio::time::Instant::now() + timing.retry_interval >= deadline {
            break Err(last_error.unwrap_or_else(|| "timeout".into()));
        }
        tokio::select! {
            _ = p.cancel.cancelled() => return,
            _ = tokio::time::sleep(timing.retry_interval) => {}
        }
    };
    RoleState { inner }.finish(p.id, p.generation, result);
}

#[cfg(test)]
mod tests;
