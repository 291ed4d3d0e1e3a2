//! Life-cycle tests: cancellation, plans in flight, prefix reuse, LRU eviction, preemption
//! and its limits, running out of blocks.

use std::time::Duration;

use super::super::{AbortReason, FinishReason, Scheduler, SchedulerLimits, SeqEvent, StepKind};
use super::{small_cfg, Harness};

fn prompt(start: u32, len: u32) -> Vec<u32> {
    (start..start + len).collect()
}

fn assert_all_blocks_back(h: &Harness) {
    let b = h.s.stats().blocks;
    assert_eq!((b.in_use, b.available()), (0, b.total), "{b:?}");
    h.s.check_invariants().unwrap();
}

#[test]
fn scheduler_and_tables_are_send() {
    fn is_send<T: Send>() {}
    is_send::<Scheduler>();
    is_send::<super::super::BlockTable>();
}

#[test]
fn cancel_in_every_state_returns_blocks_at_once() {
    let mut h = Harness::new(small_cfg());
    h.add(1, prompt(0, 9), 8);
    assert!(h.cancel(1), "waiting");
    h.add(2, prompt(20, 9), 8);
    h.step();
    h.step();
    assert!(h.s.stats().blocks.in_use > 0);
    assert!(h.cancel(2), "running");
    assert_all_blocks_back(&h);
    h.add(3, prompt(40, 9), 8);
    h.schedule().unwrap();
    assert!(h.cancel(3), "in flight");
    assert_all_blocks_back(&h);
    h.complete();
    assert_eq!(
        h.generated(3).len(),
        0,
        "no token for a sequence cancelled in flight"
    );
    assert!(!h.cancel(3), "unknown");
    assert_all_blocks_back(&h);
    assert!(h.s.is_idle());
}

#[test]
fn stale_and_given_up_plans() {
    let mut s = Scheduler::new(small_cfg()).unwrap();
    let now = std::time::Instant::now();
    let req = |id| super::super::SeqRequest {
        id,
        prompt: prompt(0, 6),
        max_new_tokens: 3,
        priority: 3,
        arrival: now,
    };
    s.add(req(1)).unwrap();
    let p1 = s.schedule(now).unwrap();
    assert!(s.schedule(now).is_none(), "one plan in flight at a time");
    s.abort_plan(&p1);
    s.check_invariants().unwrap();
    assert_eq!(s.seq_info(1).unwrap().computed, 0);
    let p2 = s.schedule(now).unwrap();
    assert_ne!(p1.id, p2.id);
    assert_eq!(p1.seqs, p2.seqs);
    assert!(
        s.complete(&p1, &[(1, Some(5))]).is_empty(),
        "stale plan ignored"
    );
    let ev = s.complete(&p2, &[(1, Some(5))]);
    assert_eq!(
        ev,
        vec![SeqEvent::Token {
            id: 1,
            token: 5,
            generated: 1
        }]
    );
    s.check_invariants().unwrap();
}

#[test]
fn missing_token_aborts_the_sequence() {
    let mut s = Scheduler::new(small_cfg()).unwrap();
    let now = std::time::Instant::now();
    s.add(super::super::SeqRequest {
        id: 7,
        prompt: vec![1, 2],
        max_new_tokens: 3,
        priority: 3,
        arrival: now,
    })
    .unwrap();
    let p = s.schedule(now).unwrap();
    let ev = s.complete(&p, &[]);
    let reason = FinishReason::Aborted(AbortReason::NoToken);
    assert_eq!(ev, vec![SeqEvent::Finished { id: 7, reason }]);
    assert!(s.is_idle());
    assert_eq!(s.stats().blocks.in_use, 0);
}

#[test]
fn prefix_reuse_skips_cached_tokens_and_counts_hits() {
    let mut h = Harness::new(small_cfg());
    let a = prompt(1, 10);
    h.add(1, a.clone(), 2);
    h.run_until_idle(50);
    let st = h.s.stats();
    assert_eq!(
        (
            st.prefix.query_tokens,
            st.prefix.hit_tokens,
            st.prefix.query_blocks
        ),
        (10, 0, 2)
    );
    assert_eq!(
        st.blocks.cached_idle, 2,
        "KV of 11 tokens: two full blocks published"
    );

    let mut b = a.clone();
    b.extend([20, 21]);
    h.add(2, b, 2);
    let p = h.step().unwrap();
    assert_eq!(
        (p.seqs[0].start_pos, p.seqs[0].tokens.clone()),
        (8, vec![9, 10, 20, 21])
    );
    assert_eq!(h.admitted.last(), Some(&(2, 8, false)));
    h.run_until_idle(50);

    h.add(3, a.clone(), 2); // the same prompt: all but the last block's worth is reused
    assert_eq!(h.step().unwrap().seqs[0].start_pos, 8);
    h.run_until_idle(50);
    assert_eq!(h.generated(3), h.generated(1), "same prompt, same output");

    h.add(4, a[..8].to_vec(), 1); // exactly two blocks: the last token must still be computed
    let p = h.step().unwrap();
    assert_eq!((p.seqs[0].start_pos, p.seqs[0].tokens.len()), (4, 4));
    h.run_until_idle(50);

    let st = h.s.stats().prefix;
    assert_eq!(st.query_tokens, 10 + 12 + 10 + 8);
    assert_eq!(st.hit_tokens, 8 + 8 + 4);
    assert_eq!((st.query_blocks, st.hit_blocks), (2 + 2 + 2 + 1, 2 + 2 + 1));
    assert!((st.hit_rate() - 20.0 / 40.0).abs() < 1e-12);
    assert_all_blocks_back(&h);
}

#[test]
fn idle_cached_blocks_are_evicted_lru() {
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 6,
        ..small_cfg()
    });
    let a = prompt(1, 8);
    let b = prompt(50, 8);
    h.add(1, a.clone(), 1);
    h.run_until_idle(10);
    h.add(2, b.clone(), 1);
    h.run_until_idle(10);
    let mut c = a.clone();
    c.push(30);
    h.add(3, c, 1); // touches a's blocks: now more recent than b's
    h.run_until_idle(10);
    assert_eq!(h.admitted.last(), Some(&(3, 8, false)));
    let st = h.s.stats().blocks;
    assert_eq!((st.cached_idle, st.free), (4, 2));
    h.add(4, prompt(100, 20), 1); // needs 5 blocks: 2 free + the 3 least recently used
    h.run_until_idle(10);
    assert_eq!(h.s.stats().prefix.evictions, 3);
    let mut e = a;
    e.push(31);
    h.add(5, e, 1);
    h.step();
    assert_eq!(
        h.admitted.last(),
        Some(&(5, 4, false)),
        "a's first block survived, its second did not"
    );
    h.run_until_idle(10);
    let mut f = b;
    f.push(32);
    h.add(6, f, 1);
    h.step();
    assert_eq!(
        h.admitted.last(),
        Some(&(6, 0, false)),
        "b's blocks were evicted first"
    );
    h.run_until_idle(10);
    assert_all_blocks_back(&h);
}

/// Outputs of each prompt with plenty of room (the reference).
fn reference(prompts: &[(u64, Vec<u32>, usize)]) -> Vec<Vec<u32>> {
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 256,
        ..small_cfg()
    });
    for (id, p, n) in prompts {
        h.add(*id, p.clone(), *n);
    }
    h.run_until_idle(500);
    prompts
        .iter()
        .map(|(id, _, _)| h.generated(*id).to_vec())
        .collect()
}

#[test]
fn preemption_by_recompute_keeps_outputs() {
    let prompts = vec![
        (1, prompt(0, 8), 12),
        (2, prompt(40, 8), 12),
        (3, prompt(80, 5), 12),
    ];
    let want = reference(&prompts);
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 8,
        max_preempt_count: 4,
        ..small_cfg()
    });
    for (id, p, n) in &prompts {
        h.add(*id, p.clone(), *n);
    }
    h.run_until_idle(500);
    assert!(
        !h.preempted.is_empty(),
        "the pool is too small for all three: someone is preempted"
    );
    assert!(h.admitted.iter().any(|&(_, _, recompute)| recompute));
    assert_eq!(h.s.stats().preemptions_total, h.preempted.len() as u64);
    let got: Vec<_> = prompts
        .iter()
        .map(|(id, _, _)| h.generated(*id).to_vec())
        .collect();
    assert_eq!(got, want, "recompute must not change any output");
    for (id, _, _) in &prompts {
        assert_eq!(h.finished[id], FinishReason::Length);
    }
    assert_all_blocks_back(&h);
}

#[test]
fn fcfs_preempts_the_newest_arrival_first() {
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 6,
        max_preempt_count: 3,
        ..small_cfg()
    });
    h.add(2, prompt(0, 4), 16);
    h.advance_ms(1);
    h.add(1, prompt(40, 4), 16); // newer despite the smaller id
    h.run_until_idle(300);
    assert_eq!(h.preempted.first(), Some(&1));
    assert!(!h.preempted.contains(&2));
    assert_eq!(h.finished[&1], FinishReason::Length);
    assert_eq!(h.finished[&2], FinishReason::Length);
}

#[test]
fn preempt_limit_finishes_with_an_error() {
    // Priority victims: 2 (least urgent) loses its blocks first, every time.
    let cfg = SchedulerLimits {
        num_blocks: 8,
        max_preempt_count: 1,
        decode_policy_type: 1,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    let mut a = h.req(1, prompt(0, 4), 20);
    a.priority = 1;
    let mut b = h.req(2, prompt(30, 4), 20);
    b.priority = 5;
    h.add_req(a).unwrap();
    h.add_req(b).unwrap();
    for _ in 0..100 {
        if !h.preempted.is_empty() {
            break;
        }
        h.step();
        h.s.check_invariants().unwrap();
    }
    assert_eq!(h.preempted, vec![2]);
    h.finish_stop(1); // 1 meets EOS; 2 comes back, and an urgent 3 arrives
    let mut c = h.req(3, prompt(60, 4), 20);
    c.priority = 1;
    h.add_req(c).unwrap();
    h.run_until_idle(200);
    assert_eq!(
        h.finished[&2],
        FinishReason::Aborted(AbortReason::PreemptLimit { count: 1, max: 1 })
    );
    assert_eq!(h.finished[&3], FinishReason::Length);
    assert_eq!(h.s.stats().aborted_total, 1);
    assert_all_blocks_back(&h);
}

#[test]
fn without_preemption_admission_reserves_growth() {
    // Each needs 4 blocks at the end; the pool has 6: the second waits instead of failing.
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 6,
        max_preempt_count: 0,
        ..small_cfg()
    });
    h.add(1, prompt(0, 4), 12);
    h.add(2, prompt(40, 4), 12);
    h.step();
    assert_eq!((h.s.num_running(), h.s.num_waiting()), (1, 1));
    h.run_until_idle(200);
    assert_eq!(h.finished[&1], FinishReason::Length);
    assert_eq!(h.finished[&2], FinishReason::Length);
    assert!(h.preempted.is_empty());
    assert_all_blocks_back(&h);
}

#[test]
fn a_sequence_outgrowing_the_cache_gets_out_of_kv_blocks() {
    let mut h = Harness::new(SchedulerLimits {
        num_blocks: 4,
        max_preempt_count: 0,
        ..small_cfg()
    });
    h.add(1, prompt(0, 12), 10); // KV would reach 21 tokens; the cache holds 16
    h.add(2, prompt(40, 4), 3);
    h.run_until_idle(100);
    assert_eq!(
        h.finished[&1],
        FinishReason::Aborted(AbortReason::OutOfKvBlocks {
            needed: 5,
            total: 4
        })
    );
    assert_eq!(
        h.generated(1).len(),
        5,
        "positions 12..=15 decoded, 16 has no block"
    );
    assert_eq!(
        h.finished[&2],
        FinishReason::Length,
        "the other one runs after"
    );
    assert_all_blocks_back(&h);
}

#[test]
fn first_token_wait_may_preempt_for_room() {
    let cfg = SchedulerLimits {
        max_batch_size: 1,
        max_preempt_count: 2,
        max_first_token_wait: Duration::from_millis(100),
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    h.add(1, prompt(0, 4), 50);
    h.step();
    h.add(2, prompt(40, 4), 3);
    assert_eq!(
        h.step().unwrap().kind,
        StepKind::Decode,
        "no room for 2 yet"
    );
    h.advance_ms(100);
    let p = h.step().unwrap();
    assert_eq!((p.kind, p.seqs[0].id), (StepKind::Prefill, 2));
    assert_eq!(h.preempted, vec![1]);
    h.run_until_idle(200);
    assert_eq!(h.finished[&1], FinishReason::Length);
    assert_eq!(h.finished[&2], FinishReason::Length);
}
