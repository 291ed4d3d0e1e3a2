//! Test harness: a fake engine + backend around a [`Scheduler`].
//!
//! The fake backend keeps one `u64` per KV slot and computes it like a model would: the value
//! at position `p` mixes the value at `p - 1` (read through the sequence's own block table)
//! with token `p`. So a slot holds a digest of the whole prefix, and every step checks that
//! the slots a sequence attends to hold exactly the digests of *its* tokens: a block shared
//! wrongly, reused while still owned, or matched from the prefix cache with other content,
//! fails the test. Sampled tokens are a function of the last digest, so outputs are
//! deterministic per prompt whatever the scheduling.

mod handoff;
mod knobs;
mod lifecycle;
mod props;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{
    FinishReason, Plan, Scheduler, SchedulerLimits, SeqEvent, SeqId, SeqRequest, Template,
};

pub(super) const SEED: u64 = 0x5eed;

/// What the fake engine sampled for a plan, as `complete` takes it.
type Sampled = Vec<(SeqId, Option<u32>)>;

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn mix(prev: u64, token: u32) -> u64 {
    splitmix(prev ^ u64::from(token).wrapping_mul(0xA24B_AED4_963E_E407))
}

/// Seeded PRNG (splitmix64 stream).
pub(super) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

/// A small config for tests: 16 blocks of 4 tokens, no waiting for company.
pub(super) fn small_cfg() -> SchedulerLimits {
    SchedulerLimits {
        template: Template::Standard,
        block_size: 4,
        num_blocks: 16,
        max_seq_len: 64,
        max_batch_size: 8,
        max_prefill_batch_size: 0,
        max_prefill_tokens: 64,
        max_iter_times: 64,
        max_queue_delay: Duration::ZERO,
        max_first_token_wait: Duration::ZERO,
        ..SchedulerLimits::default()
    }
}

pub(super) struct Harness {
    pub s: Scheduler,
    pub t0: Instant,
    pub now: Instant,
    kv: Vec<Option<u64>>,
    bs: usize,
    vocab: u32,
    /// Every token of every sequence ever added (prompt + generated), as the engine sees it.
    pub tokens: HashMap<SeqId, Vec<u32>>,
    pub prompt_len: HashMap<SeqId, usize>,
    pub finished: HashMap<SeqId, FinishReason>,
    pub admitted: Vec<(SeqId, usize, bool)>,
    pub preempted: Vec<SeqId>,
    pub plans: Vec<Plan>,
    pending: Option<(Plan, Sampled)>,
}

impl Harness {
    pub fn new(cfg: SchedulerLimits) -> Self {
        let t0 = Instant::now();
        let bs = cfg.block_size;
        let kv = vec![None; cfg.num_blocks * bs];
        Self {
            s: Scheduler::new(cfg).expect("valid test config"),
            t0,
            now: t0,
            kv,
            bs,
            vocab: 7,
            tokens: HashMap::new(),
            prompt_len: HashMap::new(),
            finished: HashMap::new(),
            admitted: Vec::new(),
            preempted: Vec::new(),
            plans: Vec::new(),
            pending: None,
        }
    }

    pub fn with_vocab(mut self, vocab: u32) -> Self {
        self.vocab = vocab;
        self
    }

    pub fn advance_ms(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
    }

    pub fn req(&self, id: SeqId, prompt: Vec<u32>, max_new: usize) -> SeqRequest {
        SeqRequest {
            id,
            prompt,
            max_new_tokens: max_new,
            priority: 3,
            arrival: self.now,
        }
    }

    pub fn add(&mut self, id: SeqId, prompt: Vec<u32>, max_new: usize) {
        let req = self.req(id, prompt, max_new);
        self.add_req(req).expect("request accepted");
    }

    pub fn add_req(&mut self, req: SeqRequest) -> Result<(), super::AddError> {
        let (id, prompt) = (req.id, req.prompt.clone());
        self.s.add(req)?;
        self.prompt_len.insert(id, prompt.len());
        self.tokens.insert(id, prompt);
        self.finished.remove(&id);
        Ok(())
    }

    fn absorb(&mut self, events: Vec<SeqEvent>) {
        for e in events {
            match e {
                SeqEvent::Admitted {
                    id,
                    cached_tokens,
                    recompute,
                } => self.admitted.push((id, cached_tokens, recompute)),
                SeqEvent::Token {
                    id,
                    token,
                    generated,
                } => {
                    let t = self
                        .tokens
                        .get_mut(&id)
                        .expect("token for a known sequence");
                    t.push(token);
                    assert_eq!(
                        t.len() - self.prompt_len[&id],
                        generated,
                        "generated count of {id}"
                    );
                }
                SeqEvent::Preempted { id, .. } => self.preempted.push(id),
                SeqEvent::Finished { id, reason } => {
                    assert!(
                        self.finished.insert(id, reason).is_none(),
                        "sequence {id} finished twice"
                    );
                }
            }
        }
    }

    fn slot(&self, table: &[u32], pos: usize) -> usize {
        let block = table
            .get(pos / self.bs)
            .copied()
            .expect("block table covers the position");
        block as usize * self.bs + pos % self.bs
    }

    /// Schedules and runs the plan on the fake backend; `complete` comes later.
    pub fn schedule(&mut self) -> Option<Plan> {
        assert!(self.pending.is_none(), "a plan is already pending");
        let plan = self.s.schedule(self.now);
        let events = self.s.drain_events();
        self.absorb(events);
        let plan = plan?;
        let mut sampled = Vec::new();
        for ps in &plan.seqs {
            let truth = &self.tokens[&ps.id];
            assert_eq!(
                ps.context_len,
                ps.start_pos + ps.tokens.len(),
                "plan shape of {}",
                ps.id
            );
            assert_eq!(
                &truth[ps.start_pos..ps.context_len],
                &ps.tokens[..],
                "plan tokens of {}",
                ps.id
            );
            assert!(
                ps.block_table.len() * self.bs >= ps.context_len,
                "table too short for {}",
                ps.id
            );
            assert_eq!(
                ps.want_logits,
                ps.context_len == truth.len(),
                "want_logits of {}",
                ps.id
            );
            for (k, &tok) in ps.tokens.iter().enumerate() {
                let p = ps.start_pos + k;
                let prev = if p == 0 {
                    SEED
                } else {
                    self.kv[self.slot(&ps.block_table, p - 1)].expect("earlier KV written")
                };
                let slot = self.slot(&ps.block_table, p);
                self.kv[slot] = Some(mix(prev, tok));
            }
            let mut digest = SEED;
            for (p, &tok) in truth[..ps.context_len].iter().enumerate() {
                digest = mix(digest, tok);
                let slot = self.slot(&ps.block_table, p);
                assert_eq!(
                    self.kv[slot],
                    Some(digest),
                    "KV of sequence {} at position {p} is not its own",
                    ps.id
                );
            }
            if ps.want_logits {
                sampled.push((
                    ps.id,
                    Some((splitmix(digest) % u64::from(self.vocab)) as u32),
                ));
            }
        }
        self.pending = Some((plan.clone(), sampled));
        self.plans.push(plan.clone());
        Some(plan)
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn complete(&mut self) {
        if let Some((plan, sampled)) = self.pending.take() {
            let events = self.s.complete(&plan, &sampled);
            self.absorb(events);
        }
    }

    /// Schedule, run, complete.
    pub fn step(&mut self) -> Option<Plan> {
        let plan = self.schedule();
        self.complete();
        plan
    }

    pub fn cancel(&mut self, id: SeqId) -> bool {
        let done = self.s.cancel(id);
        if done {
            self.finished.insert(id, FinishReason::Cancelled);
        }
        done
    }

    pub fn finish_stop(&mut self, id: SeqId) -> bool {
        let done = self.s.finish(id, FinishReason::Stop);
        if done {
            self.finished.insert(id, FinishReason::Stop);
        }
        done
    }

    /// Steps (advancing 1 ms each) until nothing is left; panics after `max_steps`.
    pub fn run_until_idle(&mut self, max_steps: usize) -> usize {
        for n in 0..max_steps {
            if self.s.is_idle() {
                return n;
            }
            if self.step().is_none() {
                self.advance_ms(1);
            }
            self.s
                .check_invariants()
                .unwrap_or_else(|e| panic!("step {n}: {e}"));
        }
        panic!(
            "not idle after {max_steps} steps: {} waiting, {} running",
            self.s.num_waiting(),
            self.s.num_running()
        );
    }

    /// PD hand-off inside one pool: sequence `to` adopts the prompt and first token of `from`
    /// (which must hold a lease), its KV copied slot by slot from the lease's blocks as a
    /// transfer would; then the lease is released. `Err` if the scheduler refused.
    pub fn hand_off(
        &mut self,
        from: SeqId,
        to: SeqId,
        max_new: usize,
    ) -> Result<(), super::AdoptError> {
        let lease = self.s.lease(from).expect("a lease to hand off");
        let src: Vec<u32> = lease.block_ids().to_vec();
        let kv_tokens = lease.kv_tokens;
        let prompt = self.tokens[&from][..kv_tokens].to_vec();
        let first = self.tokens[&from][kv_tokens];
        let req = self.req(to, prompt.clone(), max_new);
        let dst = self.s.adopt(req, first, self.now)?;
        assert_eq!(dst.len(), src.len(), "adopted blocks cover the prompt");
        for (&a, &b) in src.iter().zip(&dst) {
            for k in 0..self.bs {
                self.kv[b as usize * self.bs + k] = self.kv[a as usize * self.bs + k];
            }
        }
        self.s.kv_imported(to);
        assert!(self.s.release_lease(from));
        self.prompt_len.insert(to, prompt.len());
        let mut tokens = prompt;
        tokens.push(first);
        self.tokens.insert(to, tokens);
        self.finished.remove(&to);
        let events = self.s.drain_events();
        self.absorb(events);
        Ok(())
    }

    pub fn generated(&self, id: SeqId) -> &[u32] {
        &self.tokens[&id][self.prompt_len[&id]..]
    }
}
