//! Property tests over thousands of random interleavings of add / schedule / complete /
//! cancel / finish / time passing, with a small pool (16 blocks of 4) and a tiny vocabulary so
//! prefixes collide. After every operation the scheduler's invariants hold (and the fake
//! backend checks every sequence attends to its own KV); at the end, with everything cancelled
//! or finished, every block is free or cached-unreferenced.

use std::collections::HashMap;
use std::time::Duration;

use super::super::{AbortReason, AddError, FinishReason, SchedulerLimits, SeqId, Template};
use super::{small_cfg, Harness, Rng};

/// A spread of configurations: both templates, preemption on and off, select batch, both
/// policies, tight budgets, waiting for company and first-token forcing.
fn configs() -> Vec<SchedulerLimits> {
    let mut out = Vec::new();
    for (i, template) in [Template::Standard, Template::Mix].into_iter().enumerate() {
        for preempt in [0u32, 2] {
            for variant in 0..3u32 {
                out.push(SchedulerLimits {
                    template,
                    max_preempt_count: preempt,
                    max_batch_size: [6, 4, 8][variant as usize],
                    max_prefill_batch_size: [0, 2, 3][variant as usize],
                    max_prefill_tokens: [12, 7, 64][variant as usize],
                    mix_step_tokens: [None, None, Some(9)][variant as usize],
                    support_select_batch: variant == 1,
                    decode_time_ms_per_req: [50, 1, 0][variant as usize],
                    prefill_policy_type: variant % 2,
                    decode_policy_type: (variant + i as u32) % 2,
                    max_queue_delay: Duration::from_millis(u64::from(variant)),
                    max_first_token_wait: Duration::from_millis([0, 5, 3][variant as usize]),
                    priority_aging: Duration::from_millis(4),
                    enable_prefix_cache: variant != 2 || preempt == 0,
                    max_seq_len: 40,
                    ..small_cfg()
                });
            }
        }
    }
    out
}

/// Prompts that share prefixes often (a few stems, random tails, vocabulary of 3).
fn random_prompt(rng: &mut Rng) -> Vec<u32> {
    let stem = rng.range(0, 3);
    let stem_len = [0, 4, 8, 9][stem];
    let mut p: Vec<u32> = (0..stem_len)
        .map(|i| (i as u32 * 7 + stem as u32) % 3)
        .collect();
    let tail = rng.range(if stem_len == 0 { 1 } else { 0 }, 14);
    p.extend((0..tail).map(|_| rng.range(0, 2) as u32));
    p
}

/// How often the random runs hit the paths worth testing (guards against a degenerate mix).
#[derive(Debug, Default)]
struct Coverage {
    preemptions: u64,
    aborts: u64,
    prefix_hit_blocks: u64,
    evictions: u64,
    mixed_steps: u64,
    split_prompts: u64,
    cancels_in_flight: u64,
    timed_waits: u64,
}

fn random_run(cfg: &SchedulerLimits, seed: u64, ops: usize, cov: &mut Coverage) -> Harness {
    let mut h = Harness::new(cfg.clone()).with_vocab(3);
    let mut rng = Rng(seed);
    let mut next_id: SeqId = 1;
    let mut live: Vec<SeqId> = Vec::new();
    for op in 0..ops {
        live.retain(|id| !h.finished.contains_key(id));
        let pick = |rng: &mut Rng, live: &[SeqId]| {
            (!live.is_empty()).then(|| live[rng.range(0, live.len() - 1)])
        };
        match rng.range(0, 99) {
            0..=24 => {
                let mut req = h.req(next_id, random_prompt(&mut rng), rng.range(1, 12));
                req.priority = rng.range(1, 5) as u8;
                match h.add_req(req) {
                    Ok(()) => live.push(next_id),
                    Err(AddError::PromptTooLong { .. } | AddError::PromptExceedsCache { .. }) => {}
                    Err(e) => panic!("seed {seed} op {op}: unexpected refusal {e}"),
                }
                next_id += 1;
            }
            25..=59 => {
                if h.has_pending() {
                    h.complete();
                } else if h.schedule().is_none() && h.s.num_waiting() > 0 {
                    cov.timed_waits += u64::from(h.s.next_wakeup().is_some());
                }
            }
            60..=69 => {
                if let Some(id) = pick(&mut rng, &live) {
                    cov.cancels_in_flight += u64::from(h.has_pending());
                    assert!(
                        h.cancel(id),
                        "seed {seed} op {op}: live {id} not cancellable"
                    );
                } else {
                    assert!(!h.s.cancel(next_id + 1000));
                }
            }
            70..=74 => {
                if let Some(id) = pick(&mut rng, &live) {
                    h.finish_stop(id);
                }
            }
            75..=87 => h.advance_ms(rng.range(0, 3) as u64),
            _ => {
                if !h.has_pending() {
                    h.step();
                }
            }
        }
        h.s.check_invariants()
            .unwrap_or_else(|e| panic!("seed {seed} op {op}: {e}"));
        for &id in &live {
            let known = h.s.seq_info(id).is_some();
            assert_eq!(
                known,
                !h.finished.contains_key(&id),
                "seed {seed} op {op}: {id} state"
            );
        }
    }
    h
}

#[test]
fn random_interleavings_never_leak_or_double_own_blocks() {
    let mut cov = Coverage::default();
    for (ci, cfg) in configs().iter().enumerate() {
        for seed in 0..150u64 {
            let seed = seed * 1000 + ci as u64;
            let mut h = random_run(cfg, seed, 300, &mut cov);
            h.complete();
            let st = h.s.stats();
            cov.preemptions += st.preemptions_total;
            cov.aborts += st.aborted_total;
            cov.prefix_hit_blocks += st.prefix.hit_blocks;
            cov.evictions += st.prefix.evictions;
            cov.mixed_steps += st.mixed_steps;
            let seqs = h.plans.iter().flat_map(|p| &p.seqs);
            cov.split_prompts += seqs.filter(|p| p.is_prefill && !p.want_logits).count() as u64;
            let ids: Vec<SeqId> = h.tokens.keys().copied().collect();
            for id in ids {
                h.s.cancel(id);
            }
            h.s.check_invariants()
                .unwrap_or_else(|e| panic!("seed {seed} end: {e}"));
            let b = h.s.stats().blocks;
            assert_eq!(
                (b.in_use, b.available()),
                (0, b.total),
                "seed {seed}: {b:?}"
            );
            assert!(h.s.is_idle());
        }
    }
    let c = &cov;
    let counts = [
        c.preemptions,
        c.aborts,
        c.prefix_hit_blocks,
        c.evictions,
        c.mixed_steps,
        c.split_prompts,
        c.cancels_in_flight,
        c.timed_waits,
    ];
    assert!(
        counts.iter().all(|&n| n > 0),
        "a path was never exercised: {cov:?}"
    );
    eprintln!("{cov:?}");
}

#[test]
fn without_cancellations_everything_finishes_and_outputs_match() {
    for (ci, cfg) in configs().iter().enumerate() {
        for seed in 0..60u64 {
            let seed = seed * 1000 + ci as u64;
            let mut rng = Rng(seed ^ 0xabcdef);
            let mut h = Harness::new(cfg.clone()).with_vocab(3);
            let mut wanted: HashMap<SeqId, usize> = HashMap::new();
            let mut id = 0;
            for _ in 0..40 {
                // A burst of arrivals with a few steps in between.
                for _ in 0..rng.range(0, 3) {
                    id += 1;
                    let req = h.req(id, random_prompt(&mut rng), rng.range(1, 12));
                    let cap = req
                        .max_new_tokens
                        .min(cfg.max_iter_times)
                        .min(cfg.max_seq_len.saturating_sub(req.prompt.len()));
                    if h.add_req(req).is_ok() {
                        wanted.insert(id, cap);
                    }
                }
                for _ in 0..rng.range(0, 4) {
                    if h.step().is_none() {
                        h.advance_ms(1);
                    }
                    h.s.check_invariants()
                        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                }
            }
            h.run_until_idle(5000);
            let mut by_prompt: HashMap<Vec<u32>, Vec<u32>> = HashMap::new();
            for (&id, &cap) in &wanted {
                let reason = h
                    .finished
                    .get(&id)
                    .unwrap_or_else(|| panic!("seed {seed}: {id} never finished"));
                match reason {
                    FinishReason::Length => {
                        assert_eq!(h.generated(id).len(), cap, "seed {seed}: {id}")
                    }
                    FinishReason::Aborted(
                        AbortReason::OutOfKvBlocks { .. } | AbortReason::PreemptLimit { .. },
                    ) => {}
                    other => panic!("seed {seed}: {id} ended with {other:?}"),
                }
                // Deterministic model: the same prompt yields the same tokens (one output is a
                // prefix of the other when their limits differ).
                let prompt = h.tokens[&id][..h.prompt_len[&id]].to_vec();
                let out = h.generated(id).to_vec();
                let prev = by_prompt.entry(prompt).or_insert_with(|| out.clone());
                let n = prev.len().min(out.len());
                assert_eq!(
                    prev[..n],
                    out[..n],
                    "seed {seed}: outputs of {id} differ for the same prompt"
                );
                if out.len() > prev.len() {
                    *prev = out;
                }
            }
            let b = h.s.stats().blocks;
            assert_eq!((b.in_use, b.available()), (0, b.total), "seed {seed}");
        }
    }
}

#[test]
fn preempt_limit_is_reachable_and_exact() {
    // Tight pool, one preemption allowed: some sequence must hit the limit in some run, and
    // any that does was preempted exactly once before.
    let cfg = SchedulerLimits {
        num_blocks: 10,
        max_preempt_count: 1,
        max_seq_len: 40,
        ..small_cfg()
    };
    let mut hits = 0;
    for seed in 0..200u64 {
        let mut rng = Rng(seed);
        let mut h = Harness::new(cfg.clone()).with_vocab(3);
        for id in 1..=8 {
            let req = h.req(id, random_prompt(&mut rng), rng.range(8, 20));
            let _ = h.add_req(req);
            h.step();
        }
        h.run_until_idle(5000);
        for (id, reason) in &h.finished {
            if let FinishReason::Aborted(AbortReason::PreemptLimit { count, max }) = reason {
                hits += 1;
                assert_eq!((*count, *max), (1, 1));
                assert_eq!(
                    h.preempted.iter().filter(|p| *p == id).count(),
                    1,
                    "seed {seed}: {id}"
                );
            }
        }
    }
    assert!(hits > 0, "no run reached the preemption limit");
}
