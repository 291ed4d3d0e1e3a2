//! [`RoleState`] with a scripted [`Linker`]: first-assignment refusal, diffs on re-post,
//! status transitions, retries, timeouts, cancelled links, the role watch.

use super::*;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Instant;

/// What one link attempt does.
#[derive(Debug, Clone)]
enum Step {
    Ok,
    Fail(&'static str),
    /// Never answers.
    Hang,
}

#[derive(Default)]
struct FakeLinker {
    /// Per peer: the next attempts; then `default`.
    script: Mutex<HashMap<u32, VecDeque<Step>>>,
    default: Mutex<HashMap<u32, Step>>,
    attempts: Mutex<HashMap<u32, u32>>,
    unlinked: Mutex<Vec<u32>>,
}

impl FakeLinker {
    fn script(&self, id: u32, steps: &[Step]) {
        self.script
            .lock()
            .unwrap()
            .insert(id, steps.iter().cloned().collect());
    }

    fn always(&self, id: u32, step: Step) {
        self.default.lock().unwrap().insert(id, step);
    }

    fn attempts(&self, id: u32) -> u32 {
        self.attempts.lock().unwrap().get(&id).copied().unwrap_or(0)
    }

    fn unlinked(&self) -> Vec<u32> {
        self.unlinked.lock().unwrap().clone()
    }
}

impl Linker for FakeLinker {
    fn link(&self, _local: &Instance, peer: &Instance) -> BoxFuture<'static, Result<(), String>> {
        let id = peer.id.unwrap();
        *self.attempts.lock().unwrap().entry(id).or_default() += 1;
        let step = self
            .script
            .lock()
            .unwrap()
            .get_mut(&id)
            .and_then(VecDeque::pop_front)
            .or_else(|| self.default.lock().unwrap().get(&id).cloned())
            .unwrap_or(Step::Ok);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            match step {
                Step::Ok => Ok(()),
                Step::Fail(e) => Err(e.to_string()),
                Step::Hang => std::future::pending().await,
            }
        })
    }

    fn unlink(&self, peer_id: u32) {
        self.unlinked.lock().unwrap().push(peer_id);
    }
}

fn inst(id: u32) -> Instance {
    Instance {
        id: Some(id),
        server_ip: Ipv4Addr::new(10, 0, 0, id as u8),
        host_ip: Some(Ipv4Addr::new(10, 0, 0, id as u8)),
        p_percentage: None,
        devices: Vec::new(),
        dp_inst_ids: Vec::new(),
    }
}

fn req(role: Role, p: Option<u8>, peers: &[u32]) -> RoleRequest {
    RoleRequest {
        role,
        local: Instance {
            p_percentage: p,
            ..inst(1)
        },
        peers: peers.iter().map(|&id| inst(id)).collect(),
    }
}

fn timing(timeout_ms: u64, retry_ms: u64) -> LinkTiming {
    LinkTiming {
        link_timeout: Duration::from_millis(timeout_ms),
        retry_interval: Duration::from_millis(retry_ms),
    }
}

fn state(t: LinkTiming) -> (RoleState, Arc<FakeLinker>) {
    let linker = Arc::new(FakeLinker::default());
    (RoleState::new(linker.clone(), t), linker)
}

async fn until(s: &RoleState, what: impl Fn(&RoleSnapshot) -> bool) -> RoleSnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let snap = s.snapshot();
        if what(&snap) {
            return snap;
        }
        assert!(Instant::now() < deadline, "not reached: {snap:#?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn links(snap: &RoleSnapshot) -> Vec<(u32, LinkState)> {
    snap.peers.iter().map(|p| (p.id, p.state.clone())).collect()
}

fn ready(snap: &RoleSnapshot) -> bool {
    snap.view.status == RoleStatus::RoleReady
}

#[tokio::test]
async fn first_assignment_without_peers_is_refused() {
    let (s, _) = state(timing(1000, 10));
    for (role, p) in [
        (Role::Prefill, None),
        (Role::Decode, None),
        (Role::Flex, Some(0)),
        (Role::Flex, Some(100)),
    ] {
        assert_eq!(
            s.apply(req(role, p, &[])),
            Err(ApplyError::NoPeers { role }),
            "{role:?} {p:?}"
        );
        assert_eq!(s.view(), RoleView::default());
        assert!(s.snapshot().local.is_none());
    }
    // Flex that serves both phases needs no peers: ready at once.
    let (s, _) = state(timing(1000, 10));
    s.apply(req(Role::Flex, Some(50), &[])).unwrap();
    assert_eq!(
        s.view(),
        RoleView {
            status: RoleStatus::RoleReady,
            role: Some(Role::Flex),
            p_percentage: Some(50)
        }
    );
    let (s, _) = state(timing(1000, 10));
    s.apply(req(Role::Flex, None, &[])).unwrap();
    assert_eq!(s.view().status, RoleStatus::RoleReady);
}

#[tokio::test]
async fn links_then_ready_and_re_posts_are_diffs() {
    let (s, linker) = state(timing(1000, 10));
    let diff = s.apply(req(Role::Decode, None, &[7, 8])).unwrap();
    assert_eq!(
        diff,
        RoleDiff {
            link: vec![7, 8],
            unlink: vec![],
            role_changed: true
        }
    );
    assert_eq!(s.view().status, RoleStatus::RoleSwitching);
    assert_eq!(s.view().role, Some(Role::Decode));
    let snap = until(&s, ready).await;
    assert_eq!(links(&snap), vec![(7, LinkState::Ok), (8, LinkState::Ok)]);

    // The same post again changes nothing and stays ready (SPEC-PD §7).
    let mut views = s.subscribe();
    views.borrow_and_update();
    let diff = s.apply(req(Role::Decode, None, &[8, 7])).unwrap();
    assert!(diff.is_empty(), "{diff:?}");
    assert_eq!(s.view().status, RoleStatus::RoleReady);
    assert!(!views.has_changed().unwrap());
    assert_eq!(linker.attempts(7), 1);

    // Peers 8, 9: unlink 7, link 9, keep 8.
    let diff = s.apply(req(Role::Decode, None, &[8, 9])).unwrap();
    assert_eq!(
        diff,
        RoleDiff {
            link: vec![9],
            unlink: vec![7],
            role_changed: false
        }
    );
    assert_eq!(linker.unlinked(), vec![7]);
    assert_eq!(s.view().status, RoleStatus::RoleSwitching);
    let snap = until(&s, ready).await;
    assert_eq!(links(&snap), vec![(8, LinkState::Ok), (9, LinkState::Ok)]);
    assert_eq!(linker.attempts(8), 1);

    // Unlink only: nothing to wait for, still ready.
    let diff = s.apply(req(Role::Decode, None, &[9])).unwrap();
    assert_eq!(diff.unlink, vec![8]);
    assert_eq!(s.view().status, RoleStatus::RoleReady);
}

#[tokio::test]
async fn a_failed_attempt_is_retried() {
    let (s, linker) = state(timing(2000, 10));
    linker.script(7, &[Step::Fail("2001"), Step::Fail("2001"), Step::Ok]);
    s.apply(req(Role::Prefill, None, &[7])).unwrap();
    let snap = until(&s, ready).await;
    assert_eq!(links(&snap), vec![(7, LinkState::Ok)]);
    assert_eq!(linker.attempts(7), 3);
}

#[tokio::test]
async fn timeout_fails_the_link_with_the_last_error() {
    let (s, linker) = state(timing(150, 20));
    linker.always(7, Step::Fail("2001"));
    linker.always(8, Step::Hang);
    s.apply(req(Role::Decode, None, &[7, 8])).unwrap();
    let snap = until(&s, |s| {
        s.peers
            .iter()
            .all(|p| matches!(p.state, LinkState::Failed(_)))
    })
    .await;
    assert_eq!(
        links(&snap),
        vec![
            (7, LinkState::Failed("2001".into())),
            (8, LinkState::Failed("timeout".into()))
        ]
    );
    assert!(linker.attempts(7) >= 2, "retried");
    // No link: not ready (and not unknown: the role is taken).
    assert_eq!(snap.view.status, RoleStatus::RoleSwitching);

    // Posting the same peers again retries the failed ones.
    linker.always(7, Step::Ok);
    let diff = s.apply(req(Role::Decode, None, &[7, 8])).unwrap();
    assert_eq!(diff.link, vec![7, 8]);
    assert_eq!(s.view().status, RoleStatus::RoleSwitching);
    let snap = until(&s, |s| {
        !s.peers.iter().any(|p| p.state == LinkState::Linking)
    })
    .await;
    // One ok link is enough.
    assert_eq!(snap.view.status, RoleStatus::RoleReady);
    assert_eq!(snap.peers[0].state, LinkState::Ok);
    assert!(matches!(snap.peers[1].state, LinkState::Failed(_)));
}

#[tokio::test]
async fn a_dropped_peer_stops_linking() {
    let (s, linker) = state(timing(5000, 10));
    linker.always(8, Step::Hang);
    s.apply(req(Role::Decode, None, &[7, 8])).unwrap();
    until(&s, |s| s.peers[0].state == LinkState::Ok).await;
    assert_eq!(
        s.view().status,
        RoleStatus::RoleSwitching,
        "8 still linking"
    );
    let diff = s.apply(req(Role::Decode, None, &[7])).unwrap();
    assert_eq!(diff.unlink, vec![8]);
    assert_eq!(linker.unlinked(), vec![8]);
    assert_eq!(s.view().status, RoleStatus::RoleReady);
    assert_eq!(links(&s.snapshot()), vec![(7, LinkState::Ok)]);
}

#[tokio::test]
async fn a_role_switch_relinks_to_the_new_peers() {
    let (s, linker) = state(timing(1000, 10));
    s.apply(req(Role::Prefill, None, &[7])).unwrap();
    until(&s, ready).await;
    let diff = s.apply(req(Role::Decode, None, &[5])).unwrap();
    assert_eq!(
        diff,
        RoleDiff {
            link: vec![5],
            unlink: vec![7],
            role_changed: true
        }
    );
    assert_eq!(linker.unlinked(), vec![7]);
    let snap = until(&s, ready).await;
    assert_eq!(snap.view.role, Some(Role::Decode));
    // A switch to flex keeps the links and needs none of them; the percentage is kept for
    // later posts that omit it.
    let diff = s.apply(req(Role::Flex, Some(30), &[5])).unwrap();
    assert!(diff.role_changed && diff.link.is_empty() && diff.unlink.is_empty());
    assert_eq!(s.view().status, RoleStatus::RoleReady);
    s.apply(req(Role::Flex, None, &[5])).unwrap();
    assert_eq!(s.view().p_percentage, Some(30));
}

#[tokio::test]
async fn the_watch_follows_the_role() {
    let (s, _) = state(timing(1000, 10));
    let mut views = s.subscribe();
    assert_eq!(*views.borrow_and_update(), RoleView::default());
    s.apply(req(Role::Decode, None, &[7])).unwrap();
    let v = *views.borrow_and_update();
    assert_eq!(v.role, Some(Role::Decode));
    assert_eq!(v.status, RoleStatus::RoleSwitching);
    tokio::time::timeout(Duration::from_secs(5), views.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(views.borrow().status, RoleStatus::RoleReady);
}

#[tokio::test]
async fn a_broken_link_is_marked_failed() {
    let (s, _) = state(timing(1000, 10));
    s.apply(req(Role::Decode, None, &[7])).unwrap();
    until(&s, ready).await;
    assert!(s.has_ok_link());
    assert!(s.mark_failed(7, "pull kv failed."));
    assert!(!s.mark_failed(7, "again"));
    assert!(!s.mark_failed(9, "unknown"));
    assert!(!s.has_ok_link());
    assert_eq!(
        links(&s.snapshot()),
        vec![(7, LinkState::Failed("pull kv failed.".into()))]
    );
    // Left as it is until the Controller posts again.
    assert_eq!(s.view().status, RoleStatus::RoleReady);
    assert_eq!(
        s.apply(req(Role::Decode, None, &[7])).unwrap().link,
        vec![7]
    );
    until(&s, |s| s.peers[0].state == LinkState::Ok).await;
}

#[test]
fn timing_from_config() {
    let t = LinkTiming::from_kv_link_timeout(0);
    assert_eq!(t.link_timeout, Duration::from_secs(1080));
    assert_eq!(t.retry_interval, Duration::from_secs(5));
    assert_eq!(LinkTiming::from_kv_link_timeout(-3), t);
    assert_eq!(LinkTiming::default(), t);
    let t = LinkTiming::from_kv_link_timeout(10);
    assert_eq!(t.link_timeout, Duration::from_secs(10));
    assert_eq!(t.retry_interval, Duration::from_secs(1));
    let t = LinkTiming::from_kv_link_timeout(240);
    assert_eq!(t.retry_interval, Duration::from_secs(3));
}
