//! KV leases and adopted (prefilled elsewhere) sequences: blocks kept exactly while leased,
//! freed on release or expiry, never leased after a cancel or error; an adopted sequence
//! decodes from the imported KV exactly as a local run would (the fake backend checks every
//! slot it attends to); random interleavings with hand-offs never leak or double-own a block.

use std::time::Duration;

use super::super::{AbortReason, AddError, AdoptError, FinishReason, SchedulerLimits, SeqId};
use super::{small_cfg, Harness, Rng};

const TTL: Duration = Duration::from_secs(5);

fn in_use(h: &Harness) -> usize {
    h.s.stats().blocks.in_use
}

#[test]
fn a_held_prefill_keeps_its_blocks_until_released() {
    let mut h = Harness::new(small_cfg());
    h.add(1, vec![1, 2, 3, 4, 5, 6], 1);
    assert!(h.s.hold_kv(1, TTL));
    h.run_until_idle(10);
    assert_eq!(h.finished[&1], FinishReason::Length);
    let lease = h.s.lease(1).expect("lease");
    assert_eq!(lease.kv_tokens, 6);
    assert_eq!(lease.block_ids().len(), 2);
    assert_eq!(in_use(&h), 2, "leased blocks stay out of the pool");
    assert_eq!(h.s.num_leases(), 1);
    h.s.check_invariants().expect("invariants with a lease");
    assert!(h.s.release_lease(1));
    assert!(!h.s.release_lease(1), "released once");
    assert_eq!(in_use(&h), 0);
    h.s.check_invariants().expect("invariants after release");
}

#[test]
fn a_stop_keeps_the_kv_too_but_cancel_and_errors_do_not() {
    let mut h = Harness::new(small_cfg());
    for id in 1..=3 {
        h.add(id, vec![1, 2, 3, 4, 5], 8);
        assert!(h.s.hold_kv(id, TTL));
    }
    h.step();
    assert!(h.finish_stop(1));
    assert!(h.cancel(2));
    assert!(h
        .s
        .finish(3, FinishReason::Aborted(AbortReason::Engine("boom".into()))));
    assert!(h.s.lease(1).is_some());
    assert!(h.s.lease(2).is_none() && h.s.lease(3).is_none());
    assert_eq!(in_use(&h), 2);
    assert!(!h.s.hold_kv(99, TTL), "unknown sequence");
    h.s.check_invariants().expect("invariants");
}

#[test]
fn leases_expire_and_the_engine_is_woken_for_it() {
    let mut h = Harness::new(small_cfg());
    h.add(1, vec![1, 2, 3], 1);
    h.s.hold_kv(1, Duration::from_millis(40));
    h.run_until_idle(10);
    let expiry = h.s.next_wakeup().expect("a wake-up for the lease");
    assert!(h
        .s
        .expire_leases(expiry - Duration::from_millis(1))
        .is_empty());
    assert_eq!(h.s.expire_leases(expiry), vec![1]);
    assert_eq!(in_use(&h), 0);
    assert!(h.s.next_wakeup().is_none());
}

#[test]
fn an_adopted_sequence_decodes_as_a_local_run_would() {
    let prompt = vec![3, 1, 4, 1, 5, 2, 6, 5, 3];
    // Reference: the whole request on one instance.
    let mut local = Harness::new(small_cfg());
    local.add(1, prompt.clone(), 7);
    local.run_until_idle(50);
    let want = local.generated(1).to_vec();
    assert_eq!(want.len(), 7);

    // Prefill with a lease, hand off, decode from the imported KV.
    let mut h = Harness::new(small_cfg());
    h.add(1, prompt.clone(), 1);
    h.s.hold_kv(1, TTL);
    h.run_until_idle(10);
    h.hand_off(1, 2, 7).expect("adopted");
    assert_eq!(h.s.num_leases(), 0);
    h.s.check_invariants().expect("invariants after adoption");
    let first = h.step().expect("a decode step");
    assert!(
        first.seqs.iter().all(|s| !s.is_prefill),
        "no prefill after adoption"
    );
    h.run_until_idle(50);
    assert_eq!(h.generated(2), &want[..], "same tokens as the local run");
    assert_eq!(h.finished[&2], FinishReason::Length);
    assert_eq!(in_use(&h), 0);
}

#[test]
fn adoption_publishes_the_prompt_to_the_prefix_cache() {
    let prompt: Vec<u32> = (0..9).map(|i| i % 5).collect();
    let mut h = Harness::new(small_cfg());
    h.add(1, prompt.clone(), 1);
    h.s.hold_kv(1, TTL);
    h.run_until_idle(10);
    h.hand_off(1, 2, 3).expect("adopted");
    h.run_until_idle(20);
    let hits = h.s.stats().prefix.hit_blocks;
    h.add(3, prompt, 2);
    h.run_until_idle(20);
    assert!(
        h.s.stats().prefix.hit_blocks > hits,
        "the adopted prompt's blocks are reused"
    );
}

#[test]
fn adoption_refusals_leave_nothing_behind() {
    let cfg = SchedulerLimits {
        max_batch_size: 1,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    h.add(1, vec![1, 2, 3], 30);
    h.step();
    let req = h.req(2, vec![1, 2], 4);
    assert!(matches!(
        h.s.adopt(req, 0, h.now),
        Err(AdoptError::BatchFull { .. })
    ));
    let req = h.req(1, vec![1, 2], 4);
    assert_eq!(
        h.s.adopt(req, 0, h.now),
        Err(AdoptError::Invalid(AddError::DuplicateId(1)))
    );
    h.cancel(1);
    // Too big for what is free.
    let mut h = Harness::new(small_cfg());
    h.add(1, vec![1; 40], 1);
    h.s.hold_kv(1, TTL);
    h.run_until_idle(10);
    let req = h.req(2, vec![2; 40], 4);
    assert!(matches!(
        h.s.adopt(req, 0, h.now),
        Err(AdoptError::OutOfBlocks { needed: 10, .. })
    ));
    let req = h.req(3, Vec::new(), 4);
    assert_eq!(
        h.s.adopt(req, 0, h.now),
        Err(AdoptError::Invalid(AddError::EmptyPrompt))
    );
    assert_eq!(h.s.num_running(), 0);
    h.s.check_invariants().expect("invariants after refusals");
    assert!(h.s.release_lease(1));
    assert_eq!(in_use(&h), 0);
}

#[test]
fn a_one_token_adoption_ends_at_once() {
    let mut h = Harness::new(small_cfg());
    h.add(1, vec![1, 2, 3, 4, 5], 1);
    h.s.hold_kv(1, TTL);
    h.run_until_idle(10);
    h.hand_off(1, 2, 1).expect("adopted");
    assert_eq!(h.finished[&2], FinishReason::Length);
    assert_eq!(in_use(&h), 0);
    h.s.check_invariants().expect("invariants");
}

/// Random interleavings of requests, steps, cancels, stops, holds, hand-offs, releases and
/// expiries on a small pool: invariants after every operation; at the end, with every
/// sequence cancelled and every lease released, all blocks are free.
#[test]
fn random_hand_offs_never_leak_or_double_own_blocks() {
    let (mut handoffs, mut expired, mut refused) = (0, 0, 0);
    for seed in 0..300u64 {
        let mut rng = Rng(seed ^ 0x4a11);
        let mut h = Harness::new(SchedulerLimits {
            max_batch_size: 5,
            max_seq_len: 40,
            ..small_cfg()
        })
        .with_vocab(3);
        let mut next: SeqId = 1;
        let mut held: Vec<SeqId> = Vec::new();
        for op in 0..250 {
            let live: Vec<SeqId> = h
                .tokens
                .keys()
                .copied()
                .filter(|id| !h.finished.contains_key(id))
                .collect();
            match rng.range(0, 99) {
                0..=19 => {
                    let prompt: Vec<u32> = (0..rng.range(1, 14))
                        .map(|_| rng.range(0, 2) as u32)
                        .collect();
                    let max_new = rng.range(1, 6);
                    let req = h.req(next, prompt, max_new);
                    if h.add_req(req).is_ok() && rng.range(0, 1) == 0 {
                        h.s.hold_kv(next, Duration::from_millis(rng.range(1, 30) as u64));
                        held.push(next);
                    }
                    next += 1;
                }
                20..=54 => {
                    if h.has_pending() {
                        h.complete();
                    } else {
                        h.schedule();
                    }
                }
                55..=62 => {
                    if let Some(&id) = live.get(rng.range(0, live.len().max(1) - 1)) {
                        if rng.range(0, 1) == 0 {
                            h.cancel(id);
                        } else {
                            h.finish_stop(id);
                        }
                    }
                }
                63..=77 => {
                    if let Some(pos) = held.iter().position(|&id| h.s.lease(id).is_some()) {
                        let from = held.remove(pos);
                        match h.hand_off(from, next, rng.range(1, 6)) {
                            Ok(()) => handoffs += 1,
                            Err(_) => {
                                refused += 1;
                                assert!(h.s.release_lease(from));
                            }
                        }
                        next += 1;
                    }
                }
                78..=84 => {
                    if let Some(&id) = held.get(rng.range(0, held.len().max(1) - 1)) {
                        h.s.release_lease(id);
                    }
                }
                _ => {
                    h.advance_ms(rng.range(0, 4) as u64);
                    expired += h.s.expire_leases(h.now + Duration::from_millis(0)).len();
                }
            }
            h.s.check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed} op {op}: {e}"));
        }
        h.complete();
        let ids: Vec<SeqId> = h.tokens.keys().copied().collect();
        for id in ids {
            h.s.cancel(id);
            h.s.release_lease(id);
        }
        h.s.check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed} end: {e}"));
        let b = h.s.stats().blocks;
        assert_eq!(
            (b.in_use, b.available()),
            (0, b.total),
            "seed {seed}: {b:?}"
        );
        assert_eq!(h.s.num_leases(), 0);
    }
    assert!(
        handoffs > 100 && refused > 0 && expired > 0,
        "coverage: {handoffs} hand-offs, {refused} refused, {expired} expired"
    );
}
