//! One test (or a few) per `ScheduleConfig` knob.

use std::time::Duration;

use super::super::{AddError, FinishReason, SchedulerLimits, SeqRequest, StepKind, Template};
use super::{small_cfg, Harness};

fn prompt(start: u32, len: u32) -> Vec<u32> {
    (start..start + len).collect()
}

#[test]
fn output_length_is_min_of_request_iter_times_and_seq_len() {
    let mut h = Harness::new(SchedulerLimits {
        max_iter_times: 5,
        max_seq_len: 20,
        ..small_cfg()
    });
    h.add(1, prompt(0, 4), 100); // maxIterTimes wins: 5
    h.add(2, prompt(10, 17), 100); // maxSeqLen - prompt wins: 3
    h.add(3, prompt(40, 4), 2); // the request wins: 2
    h.run_until_idle(200);
    assert_eq!(h.generated(1).len(), 5);
    assert_eq!(h.generated(2).len(), 3);
    assert_eq!(h.generated(3).len(), 2);
    for id in 1..=3 {
        assert_eq!(h.finished[&id], FinishReason::Length);
    }
}

#[test]
fn add_refuses_what_can_never_run() {
    let now = std::time::Instant::now();
    let r = |id, p: Vec<u32>, n| SeqRequest {
        id,
        prompt: p,
        max_new_tokens: n,
        priority: 3,
        arrival: now,
    };
    let mut s = super::super::Scheduler::new(SchedulerLimits {
        max_seq_len: 100,
        ..small_cfg()
    })
    .unwrap();
    assert_eq!(s.add(r(1, vec![], 4)), Err(AddError::EmptyPrompt));
    assert_eq!(s.add(r(1, vec![1], 0)), Err(AddError::NoOutput));
    assert_eq!(
        s.add(r(1, prompt(0, 100), 4)),
        Err(AddError::PromptTooLong {
            len: 100,
            max_seq_len: 100
        })
    );
    assert_eq!(
        s.add(r(1, prompt(0, 65), 4)),
        Err(AddError::PromptExceedsCache {
            needed: 17,
            total: 16
        })
    );
    assert_eq!(s.add(r(1, prompt(0, 64), 4)), Ok(()));
    assert_eq!(s.add(r(1, prompt(0, 3), 4)), Err(AddError::DuplicateId(1)));
    s.check_invariants().unwrap();
    let mut h = Harness::new(SchedulerLimits {
        max_seq_len: 100,
        num_blocks: 32,
        ..small_cfg()
    });
    h.add(9, prompt(0, 99), 50);
    assert_eq!(h.s.seq_info(9).unwrap().max_new_tokens, 1);
}

#[test]
fn prefill_batch_size_limits_sequences_per_prefill() {
    let mut h = Harness::new(SchedulerLimits {
        max_prefill_batch_size: 2,
        ..small_cfg()
    });
    for id in 1..=5 {
        h.add(id, prompt(id as u32 * 10, 4), 2);
    }
    let sizes: Vec<_> = (0..4)
        .map(|_| h.step().map(|p| (p.kind, p.seqs.len())))
        .collect();
    assert_eq!(
        sizes,
        vec![
            Some((StepKind::Prefill, 2)),
            Some((StepKind::Prefill, 2)),
            Some((StepKind::Prefill, 1)),
            Some((StepKind::Decode, 5)),
        ]
    );
}

#[test]
fn prefill_token_budget_limits_new_tokens() {
    let mut h = Harness::new(SchedulerLimits {
        max_prefill_tokens: 10,
        ..small_cfg()
    });
    for id in 1..=3 {
        h.add(id, prompt(id as u32 * 10, 4), 2);
    }
    assert_eq!(
        h.step().unwrap().num_tokens(),
        8,
        "4 + 4 fit in 10, the third does not"
    );
    assert_eq!(h.step().unwrap().seqs[0].id, 3);
}

#[test]
fn standard_splits_a_prompt_longer_than_the_budget_when_alone() {
    let mut h = Harness::new(SchedulerLimits {
        max_prefill_tokens: 10,
        ..small_cfg()
    });
    h.add(1, prompt(0, 25), 2);
    let chunks: Vec<_> = (0..3)
        .map(|_| {
            let p = h.step().unwrap();
            (
                p.kind,
                p.seqs[0].start_pos,
                p.seqs[0].tokens.len(),
                p.seqs[0].want_logits,
            )
        })
        .collect();
    assert_eq!(
        chunks,
        vec![
            (StepKind::Prefill, 0, 10, false),
            (StepKind::Prefill, 10, 10, false),
            (StepKind::Prefill, 20, 5, true)
        ]
    );
    assert_eq!(h.step().unwrap().kind, StepKind::Decode);
}

#[test]
fn max_batch_size_caps_the_running_set() {
    let mut h = Harness::new(SchedulerLimits {
        max_batch_size: 3,
        ..small_cfg()
    });
    for id in 1..=5 {
        h.add(id, prompt(id as u32 * 10, 4), 4);
    }
    h.step();
    assert_eq!((h.s.num_running(), h.s.num_waiting()), (3, 2));
    assert_eq!(
        h.s.next_wakeup(),
        None,
        "blocked on room: no timer would help"
    );
    h.run_until_idle(200); // check_invariants asserts running ≤ 3 after every step
    assert_eq!(h.finished.len(), 5);
}

#[test]
fn queue_delay_waits_for_company_then_fires() {
    let cfg = SchedulerLimits {
        max_queue_delay: Duration::from_millis(5),
        max_prefill_batch_size: 4,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg.clone());
    h.add(1, prompt(0, 4), 8);
    assert!(h.schedule().is_none(), "alone and fresh: wait for company");
    assert_eq!(h.s.next_wakeup(), Some(h.t0 + Duration::from_millis(5)));
    h.advance_ms(4);
    assert!(h.schedule().is_none());
    h.add(2, prompt(10, 4), 8);
    h.add(3, prompt(20, 4), 8);
    assert!(h.schedule().is_none(), "3 of 4: still waiting");
    h.add(4, prompt(30, 4), 8);
    let p = h.step().expect("a full batch fires at once");
    assert_eq!((p.kind, p.seqs.len()), (StepKind::Prefill, 4));
    // While waiting for company, running sequences keep decoding.
    h.add(5, prompt(40, 4), 8);
    assert_eq!(h.step().unwrap().kind, StepKind::Decode);
    h.advance_ms(5);
    let p = h.step().unwrap();
    assert_eq!((p.kind, p.seqs[0].id), (StepKind::Prefill, 5));

    // Alone, the delay running out fires it.
    let mut h = Harness::new(cfg);
    h.add(1, prompt(0, 4), 8);
    assert!(h.schedule().is_none());
    h.advance_ms(5);
    assert_eq!(h.step().unwrap().kind, StepKind::Prefill);
}

#[test]
fn first_token_wait_forces_a_prefill() {
    // decodeTimeMsPerReq 0: the select-batch rule alone would defer prefills forever.
    let cfg = SchedulerLimits {
        support_select_batch: true,
        prefill_time_ms_per_req: 150,
        decode_time_ms_per_req: 0,
        max_first_token_wait: Duration::from_millis(100),
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    h.add(1, prompt(0, 4), 40);
    assert_eq!(h.step().unwrap().kind, StepKind::Prefill);
    h.add(2, prompt(10, 4), 4);
    for _ in 0..3 {
        assert_eq!(h.step().unwrap().kind, StepKind::Decode);
    }
    h.advance_ms(99);
    assert_eq!(h.step().unwrap().kind, StepKind::Decode);
    h.advance_ms(1);
    let p = h.step().unwrap();
    assert_eq!((p.kind, p.seqs[0].id), (StepKind::Prefill, 2));
}

#[test]
fn select_batch_weighs_prefill_wait_against_decode_waste() {
    let cfg = SchedulerLimits {
        support_select_batch: true,
        prefill_time_ms_per_req: 150,
        decode_time_ms_per_req: 50,
        max_batch_size: 200,
        num_blocks: 128,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg.clone());
    for id in 1..=10 {
        h.add(id, prompt(id as u32 * 10, 4), 20);
    }
    assert_eq!(
        h.step().unwrap().seqs.len(),
        10,
        "nothing decoding: prefill"
    );
    h.add(11, prompt(500, 4), 20);
    // 150 × 10 = 1500 > 0: decode, waste += 50 × 190 = 9500; then 1500 ≤ 9500: prefill.
    assert_eq!(h.step().unwrap().kind, StepKind::Decode);
    let p = h.step().unwrap();
    assert_eq!((p.kind, p.seqs[0].id), (StepKind::Prefill, 11));
    h.add(12, prompt(600, 4), 20);
    assert_eq!(
        h.step().unwrap().kind,
        StepKind::Decode,
        "the waste was reset by the prefill"
    );

    // Without supportSelectBatch a ready prefill goes first.
    let mut h = Harness::new(SchedulerLimits {
        support_select_batch: false,
        ..cfg
    });
    h.add(1, prompt(0, 4), 20);
    h.step();
    h.add(2, prompt(10, 4), 20);
    assert_eq!(h.step().unwrap().kind, StepKind::Prefill);
}

#[test]
fn mix_chunks_a_long_prompt_alongside_decodes() {
    let cfg = SchedulerLimits {
        template: Template::Mix,
        max_prefill_tokens: 8,
        num_blocks: 32,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    h.add(1, prompt(0, 3), 10);
    assert_eq!(h.step().unwrap().kind, StepKind::Prefill);
    h.add(2, prompt(100, 20), 3);
    let mut shapes = Vec::new();
    for _ in 0..4 {
        let p = h.step().unwrap();
        let s2 = p
            .seqs
            .iter()
            .find(|s| s.id == 2)
            .map(|s| (s.start_pos, s.tokens.len(), s.want_logits));
        let s1 = p.seqs.iter().find(|s| s.id == 1).map(|s| s.tokens.len());
        assert!(p.num_tokens() <= 8, "token budget");
        shapes.push((p.kind, s1, s2));
    }
    assert_eq!(
        shapes,
        vec![
            (StepKind::Mixed, Some(1), Some((0, 7, false))),
            (StepKind::Mixed, Some(1), Some((7, 7, false))),
            (StepKind::Mixed, Some(1), Some((14, 6, true))),
            (StepKind::Decode, Some(1), Some((20, 1, true))),
        ]
    );
    h.run_until_idle(100);
}

#[test]
fn mix_step_tokens_bound_every_step_not_max_prefill_tokens() {
    // maxPrefillTokens must cover maxInputTokenLen, so it cannot bound a Mix step;
    // prefillChunkSize / splitChunkTokens do, decodes included.
    let cfg = SchedulerLimits {
        template: Template::Mix,
        max_prefill_tokens: 64,
        mix_step_tokens: Some(6),
        num_blocks: 32,
        ..small_cfg()
    };
    let mut h = Harness::new(cfg);
    h.add(1, prompt(0, 3), 10);
    h.add(2, prompt(50, 4), 10);
    let first = h.step().unwrap();
    assert_eq!(
        first.num_tokens(),
        6,
        "3 + 3 of the second prompt: {first:?}"
    );
    h.add(3, prompt(100, 20), 3);
    let mut chunks = Vec::new();
    while chunks.iter().sum::<usize>() < 20 {
        let p = h.step().unwrap();
        assert!(p.num_tokens() <= 6, "step budget: {p:?}");
        if let Some(s) = p.seqs.iter().find(|s| s.id == 3) {
            chunks.push(s.tokens.len());
        }
    }
    // Two tokens of 1 and 2 (the rest of 2's prompt, then decodes) ride along with every
    // chunk of prompt 3.
    assert_eq!(chunks, vec![4, 4, 4, 4, 4]);
    h.run_until_idle(100);

    let standard = SchedulerLimits {
        template: Template::Standard,
        max_prefill_tokens: 64,
        mix_step_tokens: Some(6),
        ..small_cfg()
    };
    let mut h = Harness::new(standard);
    h.add(1, prompt(0, 20), 3);
    assert_eq!(h.step().unwrap().num_tokens(), 20, "ignored by Standard");
    h.run_until_idle(100);
}

#[test]
fn priority_policy_orders_waiting_with_aging() {
    let cfg = SchedulerLimits {
        prefill_policy_type: 1,
        max_prefill_batch_size: 1,
        priority_aging: Duration::from_secs(1),
        ..small_cfg()
    };
    let mut h = Harness::new(cfg.clone());
    let mut low = h.req(1, prompt(0, 4), 2);
    low.priority = 5;
    let mut high = h.req(2, prompt(10, 4), 2);
    high.priority = 1;
    h.add_req(low.clone()).unwrap();
    h.add_req(high.clone()).unwrap();
    assert_eq!(h.step().unwrap().seqs[0].id, 2, "urgent first");

    let mut h = Harness::new(cfg);
    h.add_req(low).unwrap();
    h.advance_ms(5000); // 5 - 5 levels of aging = 0 < 1
    high.arrival = h.now;
    h.add_req(high).unwrap();
    assert_eq!(h.step().unwrap().seqs[0].id, 1, "aged request overtakes");
}
