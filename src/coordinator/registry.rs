//! The instances the Coordinator may use: what the Controller's last refresh listed, plus what
//! the Coordinator itself knows — requests in flight on each instance, whether each decode
//! instance's `/dresult` stream is open, and prefill instances that just refused connections.
//! [`Registry::apply`] diffs a refresh against what is known and says which decode instances
//! are new (their `/dresult` must be opened) and which instances left.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::motor::instances::{role, Instance, Refresh};

/// How long a prefill instance that refused connections is left out of scheduling.
pub const SUSPECT_FOR: Duration = Duration::from_secs(3);

/// An instance's role as the Coordinator uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Prefill,
    Decode,
    Flex,
    /// Not (yet) assigned: only usable in single-node mode.
    None,
}

impl Role {
    fn from_code(code: u8) -> Role {
        match code {
            role::PREFILL => Role::Prefill,
            role::DECODE => Role::Decode,
            role::FLEX => Role::Flex,
            _ => Role::None,
        }
    }

    /// Whether this instance can take a request's prefill.
    pub fn prefills(self) -> bool {
        matches!(self, Role::Prefill | Role::Flex)
    }

    /// Whether this instance can take a request's decode (and serves `/dresult`).
    pub fn decodes(self) -> bool {
        matches!(self, Role::Decode | Role::Flex)
    }
}

/// One instance.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: u64,
    pub role: Role,
    pub business: SocketAddr,
    pub metrics: SocketAddr,
    /// `d-target` toward this instance: `ip` or `ip;inter_comm_port`.
    pub d_target: String,
    pub model_name: String,
    pub peers: Vec<u64>,
    pub total_slots: u64,
    pub avail_slots: u64,
    pub total_blocks: u64,
    pub avail_blocks: u64,
    /// Requests this Coordinator has on the instance now.
    pub load: Arc<AtomicUsize>,
    /// Decode side: whether the `/dresult` stream is open.
    pub dresult_up: bool,
    /// Prefill side: left out of scheduling until then (connections refused).
    pub suspect_until: Option<Instant>,
    /// Taken offline by the Controller (`/v1/instances/offline`): no new requests.
    pub offline: bool,
}

/// Counts one request on an instance while it is held (see [`Member::hold`]).
pub struct Hold(Arc<AtomicUsize>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Member {
    /// Counts a request on this instance until the returned guard drops.
    pub fn hold(&self) -> Hold {
        self.load.fetch_add(1, Ordering::Relaxed);
        Hold(self.load.clone())
    }

    /// Requests in flight here.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    /// Whether the instance said it has room (unknown totals count as room).
    pub fn has_room(&self) -> bool {
        (self.total_slots == 0 || self.avail_slots > 0)
            && (self.total_blocks == 0 || self.avail_blocks > 0)
    }

    fn usable(&self, now: Instant) -> bool {
        !self.offline && self.suspect_until.is_none_or(|t| t <= now)
    }

    fn usable_prefill(&self, now: Instant) -> bool {
        self.role.prefills() && self.usable(now)
    }

    fn usable_decode(&self) -> bool {
        self.role.decodes() && self.dresult_up && !self.offline
    }

    /// Whether `self` (a prefill) and `d` are two instances linked with each other: either
    /// lists the other as a peer. A flex instance is not paired with itself: its answer to a
    /// plain request is not the prefill protocol the relay reads.
    fn linked_with(&self, d: &Member) -> bool {
        self.id != d.id && (self.peers.contains(&d.id) || d.peers.contains(&self.id))
    }
}

/// Why a refresh entry was refused.
#[derive(Debug, thiserror::Error)]
#[error("instances[{index}] (id {id}): {field} {value:?} is not allowed; {allowed}")]
pub struct RefreshError {
    pub index: usize,
    pub id: u64,
    pub field: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

/// What a refresh changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Decode-capable instances whose `/dresult` must be opened (new, or moved).
    pub new_decoders: Vec<u64>,
    /// Instances no longer listed (or moved): their streams close, their requests fail.
    pub gone: Vec<u64>,
}

/// The instances, shared by every request.
#[derive(Debug, Default)]
pub struct Registry {
    members: RwLock<BTreeMap<u64, Member>>,
    rr: AtomicUsize,
}

fn port(index: usize, id: u64, field: &'static str, text: &str) -> Result<u16, RefreshError> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(RefreshError {
            index,
            id,
            field,
            value: text.to_string(),
            allowed: "a port string from \"1\" to \"65535\" is required",
        })
}

fn member(index: usize, inst: &Instance) -> Result<Member, RefreshError> {
    let ip: IpAddr = inst.ip.trim().parse().map_err(|_| RefreshError {
        index,
        id: inst.id,
        field: "ip",
        value: inst.ip.clone(),
        allowed: "an IP address is required",
    })?;
    let business = SocketAddr::new(ip, port(index, inst.id, "port", &inst.port)?);
    let metrics = if inst.metric_port.trim().is_empty() {
        SocketAddr::new(ip, 1027)
    } else {
        SocketAddr::new(ip, port(index, inst.id, "metric_port", &inst.metric_port)?)
    };
    let d_target = if inst.inter_comm_port.trim().is_empty() {
        ip.to_string()
    } else {
        let p = port(index, inst.id, "inter_comm_port", &inst.inter_comm_port)?;
        format!("{ip};{p}")
    };
    let s = &inst.static_info;
    let d = &inst.dynamic_info;
    Ok(Member {
        id: inst.id,
        role: Role::from_code(s.role),
        business,
        metrics,
        d_target,
        model_name: inst.model_name.clone(),
        peers: d.peers.clone(),
        total_slots: s.total_slots_num,
        avail_slots: d.avail_slots_num,
        total_blocks: s.total_block_num,
        avail_blocks: d.avail_block_num,
        load: Arc::new(AtomicUsize::new(0)),
        dresult_up: false,
        suspect_until: None,
        offline: false,
    })
}

impl Registry {
    /// Replaces the instance list with `refresh`, keeping what the Coordinator knows of
    /// instances that stay at the same address with the same role.
    pub fn apply(&self, refresh: &Refresh) -> Result<Changes, RefreshError> {
        let fresh = refresh
            .instances
            .iter()
            .enumerate()
            .map(|(i, inst)| member(i, inst))
            .collect::<Result<Vec<_>, _>>()?;
        let mut members = self.write();
        let mut changes = Changes::default();
        let mut next = BTreeMap::new();
        for mut m in fresh {
            match members.remove(&m.id) {
                Some(old) if old.business == m.business && old.role == m.role => {
                    m.load = old.load;
                    m.dresult_up = old.dresult_up;
                    m.suspect_until = old.suspect_until;
                    m.offline = old.offline;
                }
                Some(_) => {
                    changes.gone.push(m.id);
                    if m.role.decodes() {
                        changes.new_decoders.push(m.id);
                    }
                }
                None => {
                    if m.role.decodes() {
                        changes.new_decoders.push(m.id);
                    }
                }
            }
            next.insert(m.id, m);
        }
        changes.gone.extend(members.keys().copied());
        *members = next;
        Ok(changes)
    }

    /// A copy of one instance.
    pub fn get(&self, id: u64) -> Option<Member> {
        self.read().get(&id).cloned()
    }

    /// Copies of every instance, by id.
    pub fn all(&self) -> Vec<Member> {
        self.read().values().cloned().collect()
    }

    /// Removes instances (a decode instance whose `/dresult` cannot be reopened).
    pub fn remove(&self, id: u64) -> Option<Member> {
        self.write().remove(&id)
    }

    /// Marks a decode instance's `/dresult` stream open or closed.
    pub fn set_dresult(&self, id: u64, up: bool) {
        if let Some(m) = self.write().get_mut(&id) {
            m.dresult_up = up;
        }
    }

    /// Takes instances offline (no new requests) or back online; returns the ids not known.
    pub fn set_offline(&self, ids: &[u64], offline: bool) -> Vec<u64> {
        let mut members = self.write();
        let mut unknown = vec![];
        for id in ids {
            match members.get_mut(id) {
                Some(m) => m.offline = offline,
                None => unknown.push(*id),
            }
        }
        unknown
    }

    /// Leaves a prefill instance out of scheduling for [`SUSPECT_FOR`].
    pub fn suspect(&self, id: u64) {
        if let Some(m) = self.write().get_mut(&id) {
            m.suspect_until = Some(Instant::now() + SUSPECT_FOR);
        }
    }

    /// PD: whether at least one prefill instance is linked with a decode instance whose
    /// `/dresult` is open. Single node: whether any instance is listed.
    pub fn ready(&self, single_node: bool) -> bool {
        let members = self.read();
        if single_node {
            return !members.is_empty();
        }
        let now = Instant::now();
        members.values().any(|p| {
            p.usable_prefill(now)
                && members
                    .values()
                    .any(|d| d.usable_decode() && p.linked_with(d))
        })
    }

    /// Counts of (prefill-capable, decode-capable with `/dresult` open) instances.
    pub fn counts(&self) -> (usize, usize) {
        let m = self.read();
        (
            m.values().filter(|x| x.role.prefills()).count(),
            m.values().filter(|x| x.usable_decode()).count(),
        )
    }

    /// A prefill and a decode instance for one request: `round_robin` takes the next usable
    /// prefill in id order and the next decode linked with it; `load_balance` the prefill
    /// with the fewest requests in flight here, then the least loaded decode linked with it.
    /// Instances that said they have no room are skipped while another has room.
    pub fn pick_pair(&self, round_robin: bool) -> Option<(Member, Member)> {
        let members = self.read();
        let now = Instant::now();
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut ps: Vec<&Member> = members
            .values()
            .filter(|p| p.usable_prefill(now))
            .filter(|p| {
                members
                    .values()
                    .any(|d| d.usable_decode() && p.linked_with(d))
            })
            .collect();
        if ps.is_empty() {
            return None;
        }
        prefer_room(&mut ps);
        let p = choose(&ps, round_robin, turn)?;
        let mut ds: Vec<&Member> = members
            .values()
            .filter(|d| d.usable_decode() && p.linked_with(d))
            .collect();
        prefer_room(&mut ds);
        let d = choose(&ds, round_robin, turn)?;
        Some((p.clone(), d.clone()))
    }

    /// One instance for a whole request (single-node mode, or routes that are not split).
    pub fn pick_one(&self, round_robin: bool) -> Option<Member> {
        let members = self.read();
        let now = Instant::now();
        let turn = self.rr.fetch_add(1, Ordering::Relaxed);
        let mut all: Vec<&Member> = members.values().filter(|m| m.usable(now)).collect();
        prefer_room(&mut all);
        choose(&all, round_robin, turn).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Member>> {
        self.members.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Member>> {
        self.members.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps only instances with room, unless none has.
fn prefer_room(list: &mut Vec<&Member>) {
    if list.iter().any(|m| m.has_room()) {
        list.retain(|m| m.has_room());
    }
}

fn choose<'a>(list: &[&'a Member], round_robin: bool, turn: usize) -> Option<&'a Member> {
    if list.is_empty() {
        return None;
    }
    if round_robin {
        return Some(list[turn % list.len()]);
    }
    // Least loaded; ties broken by the turn so equal instances share the work.
    let least = list.iter().map(|m| m.load()).min()?;
    let tied: Vec<&&Member> = list.iter().filter(|m| m.load() == least).collect();
    Some(tied[turn % tied.len()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::motor::instances::{DynamicInfo, StaticInfo};

    fn inst(id: u64, ip: &str, role_code: u8, peers: &[u64]) -> Instance {
        Instance {
            id,
            ip: ip.into(),
            port: "1025".into(),
            metric_port: "1027".into(),
            inter_comm_port: "1121".into(),
            model_name: "m".into(),
            static_info: StaticInfo {
                role: role_code,
                total_slots_num: 10,
                ..Default::default()
            },
            dynamic_info: DynamicInfo {
                peers: peers.to_vec(),
                avail_slots_num: 10,
                ..Default::default()
            },
        }
    }

    fn refresh(list: Vec<Instance>) -> Refresh {
        Refresh {
            ids: list.iter().map(|i| i.id).collect(),
            instances: list,
        }
    }

    #[test]
    fn pairs_need_an_open_dresult_and_a_link() {
        let r = Registry::default();
        let ch = r
            .apply(&refresh(vec![
                inst(0, "10.0.0.1", role::PREFILL, &[1]),
                inst(1, "10.0.0.2", role::DECODE, &[0]),
                inst(2, "10.0.0.3", role::DECODE, &[]),
            ]))
            .expect("apply");
        assert_eq!(ch.new_decoders, vec![1, 2]);
        assert!(!r.ready(false));
        assert!(r.pick_pair(false).is_none());
        r.set_dresult(2, true);
        assert!(!r.ready(false), "D 2 is not linked with P 0");
        r.set_dresult(1, true);
        assert!(r.ready(false));
        let (p, d) = r.pick_pair(false).expect("pair");
        assert_eq!((p.id, d.id), (0, 1));
        assert_eq!(d.d_target, "10.0.0.2;1121");
    }

    #[test]
    fn refresh_keeps_state_of_unchanged_members_and_reports_gone() {
        let r = Registry::default();
        r.apply(&refresh(vec![
            inst(0, "10.0.0.1", role::PREFILL, &[1]),
            inst(1, "10.0.0.2", role::DECODE, &[0]),
        ]))
        .expect("apply");
        r.set_dresult(1, true);
        let ch = r
            .apply(&refresh(vec![inst(1, "10.0.0.2", role::DECODE, &[])]))
            .expect("apply");
        assert_eq!(ch.gone, vec![0]);
        assert!(ch.new_decoders.is_empty());
        assert!(r.get(1).expect("kept").dresult_up);
        let ch = r
            .apply(&refresh(vec![inst(1, "10.0.0.9", role::DECODE, &[])]))
            .expect("apply");
        assert_eq!((ch.gone, ch.new_decoders), (vec![1], vec![1]));
        assert!(!r.get(1).expect("moved").dresult_up);
    }

    #[test]
    fn load_balance_prefers_idle_and_round_robin_rotates() {
        let r = Registry::default();
        r.apply(&refresh(vec![
            inst(0, "10.0.0.1", role::PREFILL, &[2]),
            inst(1, "10.0.0.3", role::PREFILL, &[2]),
            inst(2, "10.0.0.2", role::DECODE, &[0, 1]),
        ]))
        .expect("apply");
        r.set_dresult(2, true);
        r.get(0).expect("p0").load.fetch_add(3, Ordering::Relaxed);
        for _ in 0..4 {
            assert_eq!(r.pick_pair(false).expect("pair").0.id, 1);
        }
        let mut seen: Vec<u64> = (0..4)
            .map(|_| r.pick_pair(true).expect("pair").0.id)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 0, 1, 1]);
        r.suspect(1);
        assert_eq!(r.pick_pair(false).expect("pair").0.id, 0);
    }

    #[test]
    fn bad_refresh_entry_names_the_field() {
        let r = Registry::default();
        let mut bad = inst(4, "10.0.0.1", role::PREFILL, &[]);
        bad.port = "http".into();
        let e = r.apply(&refresh(vec![bad])).expect_err("bad port");
        assert!(e.to_string().contains("instances[0] (id 4): port"), "{e}");
    }
}
