//! The [`Scheduler`]: the live sequences, the waiting queue and running set, and the life-cycle
//! calls the engine makes: [`Scheduler::add`], [`Scheduler::cancel`], [`Scheduler::finish`],
//! [`Scheduler::complete`] (batch building itself is in `step`).
//!
//! Engine loop, one thread:
//! ```text
//! drain submissions → add(); cancellations → cancel()
//! match sched.schedule(now) {
//!     Some(plan) => { emit(sched.drain_events()); run plan on the backend; sample;
//!                     emit(sched.complete(&plan, &sampled)); finish(id, Stop) on EOS/stop }
//!     None => { emit(sched.drain_events()); sleep until sched.next_wakeup() or a submission }
//! }
//! ```
//! One plan is in flight at a time: `schedule` returns `None` until it is completed (or given
//! up with [`Scheduler::abort_plan`]). `cancel`/`finish` are fine at any time, in flight too:
//! the blocks go back at once and `complete` skips what is gone.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::blocks::{blocks_for, BlockManager, BlockStats};
use super::handoff::Lease;
use super::limits::{LimitsError, Resolved, SchedulerLimits};
use super::plan::{Plan, StepKind};
use super::policy::SelectBatch;
use super::prefix::{extend_hash_chain, PrefixStats, ROOT_HASH};
use super::sequence::{
    AbortReason, AddError, FinishReason, SeqEvent, SeqId, SeqInfo, SeqRequest, SeqStatus, Sequence,
};

/// Counters and gauges for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
    /// `num_preemptions_total`.
    pub preemptions_total: u64,
    /// Sequences the scheduler ended with an error.
    pub aborted_total: u64,
    pub prefill_steps: u64,
    pub decode_steps: u64,
    pub mixed_steps: u64,
    pub blocks: BlockStats,
    pub prefix: PrefixStats,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub preemptions: u64,
    pub aborted: u64,
    pub prefill_steps: u64,
    pub decode_steps: u64,
    pub mixed_steps: u64,
}

/// Continuous-batching scheduler (see the module docs of `scheduler`).
#[derive(Debug)]
pub struct Scheduler {
    pub(crate) cfg: Resolved,
    pub(crate) blocks: BlockManager,
    pub(crate) seqs: HashMap<SeqId, Sequence>,
    pub(crate) waiting: VecDeque<SeqId>,
    /// In admission order.
    pub(crate) running: Vec<SeqId>,
    pub(crate) in_flight: Option<u64>,
    pub(crate) next_plan_id: u64,
    /// `now` of the last `schedule` call.
    pub(crate) last_schedule: Option<Instant>,
    pub(crate) select: SelectBatch,
    pub(crate) events: Vec<SeqEvent>,
    pub(crate) counters: Counters,
    /// KV kept for another instance after its sequence ended (see `handoff`).
    pub(crate) leases: HashMap<SeqId, Lease>,
}

impl Scheduler {
    pub fn new(config: SchedulerLimits) -> Result<Self, LimitsError> {
        let cfg = config.validate()?;
        let blocks = BlockManager::new(cfg.raw.num_blocks, cfg.raw.block_size);
        Ok(Self {
            cfg,
            blocks,
            seqs: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            in_flight: None,
            next_plan_id: 1,
            last_schedule: None,
            select: SelectBatch::default(),
            events: Vec::new(),
            counters: Counters::default(),
            leases: HashMap::new(),
        })
    }

    pub fn config(&self) -> &SchedulerLimits {
        &self.cfg.raw
    }

    /// The block pool (for metrics, and for PD hand-offs that lease blocks themselves).
    pub fn block_manager(&self) -> &BlockManager {
        &self.blocks
    }

    pub(crate) fn block_size(&self) -> usize {
        self.cfg.raw.block_size
    }

    pub(crate) fn preemption_enabled(&self) -> bool {
        self.cfg.raw.max_preempt_count > 0
    }

    /// Queues a new sequence. Its output limit becomes min(`max_new_tokens`, `maxIterTimes`,
    /// `maxSeqLen` − prompt length). Refused: duplicate id, empty prompt, no output allowed, a
    /// prompt leaving no room under `maxSeqLen`, or one that could never fit the whole cache.
    pub fn add(&mut self, req: SeqRequest) -> Result<(), AddError> {
        if self.seqs.contains_key(&req.id) {
            return Err(AddError::DuplicateId(req.id));
        }
        let seq = self.validated(req)?;
        let id = seq.id;
        self.seqs.insert(id, seq);
        self.waiting.push_back(id);
        Ok(())
    }

    /// A new sequence for `req` after the checks and caps of [`Scheduler::add`] (the id is
    /// the caller's to check).
    pub(crate) fn validated(&self, req: SeqRequest) -> Result<Sequence, AddError> {
        let c = &self.cfg.raw;
        let len = req.prompt.len();
        if len == 0 {
            return Err(AddError::EmptyPrompt);
        }
        if req.max_new_tokens == 0 {
            return Err(AddError::NoOutput);
        }
        if len >= c.max_seq_len {
            return Err(AddError::PromptTooLong {
                len,
                max_seq_len: c.max_seq_len,
            });
        }
        let needed = blocks_for(len, c.block_size);
        if needed > c.num_blocks {
            return Err(AddError::PromptExceedsCache {
                needed,
                total: c.num_blocks,
            });
        }
        let max_new = req
            .max_new_tokens
            .min(c.max_iter_times)
            .min(c.max_seq_len - len);
        let mut keys = Vec::new();
        if c.enable_prefix_cache {
            extend_hash_chain(&mut keys, &req.prompt, c.block_size);
        }
        Ok(Sequence::new(req, max_new, keys))
    }

    /// Ends a sequence at once, whatever its state; its blocks return to the pool. False if
    /// unknown (already finished).
    pub fn cancel(&mut self, id: SeqId) -> bool {
        self.finish(id, FinishReason::Cancelled)
    }

    /// Ends a sequence with `reason` (the engine's EOS / stop-string decision, or an error);
    /// its blocks return to the pool. False if unknown.
    /// A sequence marked with [`Scheduler::hold_kv`] that ends by `Stop` or `Length` keeps its
    /// blocks under a lease instead.
    pub fn finish(&mut self, id: SeqId, reason: FinishReason) -> bool {
        match self.remove(id) {
            Some(mut seq) => {
                if matches!(reason, FinishReason::Stop | FinishReason::Length) {
                    self.take_lease(&mut seq, Instant::now());
                }
                seq.status = SeqStatus::Finished(reason);
                true
            }
            None => false,
        }
    }

    /// Finishes a sequence and reports it (for ends the engine did not decide).
    pub(crate) fn finish_with_event(&mut self, id: SeqId, reason: FinishReason) {
        if self.finish(id, reason.clone()) {
            self.events.push(SeqEvent::Finished { id, reason });
        }
    }

    /// Takes a live sequence out of every queue; dropping the result frees its blocks.
    pub(crate) fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let seq = self.seqs.remove(&id)?;
        match seq.status {
            SeqStatus::Running => self.running.retain(|&r| r != id),
            _ => self.waiting.retain(|&w| w != id),
        }
        Some(seq)
    }

    /// Ends a sequence with an error and reports it.
    pub(crate) fn abort(&mut self, id: SeqId, reason: AbortReason) {
        if self.remove(id).is_some() {
            tracing::warn!(seq = id, %reason, "scheduler aborted a sequence");
            self.counters.aborted += 1;
            let reason = FinishReason::Aborted(reason);
            self.events.push(SeqEvent::Finished { id, reason });
        }
    }

    /// Preemption by recompute: drop the KV, back to the front of the waiting queue.
    pub(crate) fn preempt(&mut self, id: SeqId, now: Instant) {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return;
        };
        if seq.status != SeqStatus::Running {
            return;
        }
        seq.table = None;
        seq.computed = 0;
        seq.in_flight = 0;
        seq.prefilled = false;
        seq.preempt_count += 1;
        seq.status = SeqStatus::Waiting;
        seq.queued_at = now;
        let count = seq.preempt_count;
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
        self.counters.preemptions += 1;
        tracing::debug!(seq = id, count, "preempted by recompute");
        self.events.push(SeqEvent::Preempted { id, count });
    }

    /// Events raised while scheduling (admissions, preemptions, aborts) since the last call.
    pub fn drain_events(&mut self) -> Vec<SeqEvent> {
        std::mem::take(&mut self.events)
    }

    /// Records a finished step. `sampled` has the engine's token for each sequence of the plan
    /// that wanted logits (`None`: none could be sampled; the sequence is aborted). Appends the
    /// tokens, publishes newly filled blocks to the prefix cache, and finishes the sequences
    /// that reached their output limit. A plan that is not the one in flight is ignored.
    pub fn complete(&mut self, plan: &Plan, sampled: &[(SeqId, Option<u32>)]) -> Vec<SeqEvent> {
        if self.in_flight != Some(plan.id) {
            tracing::warn!(plan = plan.id, in_flight = ?self.in_flight, "completion of a plan not in flight ignored");
            return Vec::new();
        }
        self.in_flight = None;
        let sampled: HashMap<SeqId, Option<u32>> = sampled.iter().copied().collect();
        let bs = self.block_size();
        let publish = self.cfg.raw.enable_prefix_cache;
        let mut events = Vec::new();
        let mut ended = Vec::new();
        for ps in &plan.seqs {
            let Some(seq) = self.seqs.get_mut(&ps.id) else {
                continue; // cancelled or finished while in flight
            };
            if seq.in_flight == 0 || seq.computed != ps.start_pos {
                continue; // not this plan's incarnation
            }
            let before = seq.computed;
            seq.computed += seq.in_flight;
            seq.in_flight = 0;
            if publish {
                publish_filled_blocks(seq, before, bs);
            }
            if !ps.want_logits || seq.computed != seq.tokens.len() {
                continue;
            }
            seq.prefilled = true;
            match sampled.get(&ps.id).copied().flatten() {
                Some(token) => {
                    seq.tokens.push(token);
                    let generated = seq.generated();
                    events.push(SeqEvent::Token {
                        id: ps.id,
                        token,
                        generated,
                    });
                    if generated >= seq.max_new {
                        ended.push((ps.id, FinishReason::Length));
                    }
                }
                None => ended.push((ps.id, FinishReason::Aborted(AbortReason::NoToken))),
            }
        }
        for (id, reason) in ended {
            if let FinishReason::Aborted(_) = reason {
                self.counters.aborted += 1;
            }
            if self.finish(id, reason.clone()) {
                events.push(SeqEvent::Finished { id, reason });
            }
        }
        events
    }

    /// Gives up the plan in flight (the step failed or was never run): its sequences keep
    /// their state from before the plan; the engine decides whether to `finish` them.
    pub fn abort_plan(&mut self, plan: &Plan) {
        if self.in_flight != Some(plan.id) {
            return;
        }
        self.in_flight = None;
        let bs = self.block_size();
        for ps in &plan.seqs {
            if let Some(seq) = self.seqs.get_mut(&ps.id) {
                if seq.in_flight > 0 && seq.computed == ps.start_pos {
                    seq.in_flight = 0;
                    if let Some(t) = seq.table.as_mut() {
                        t.truncate(blocks_for(seq.computed, bs));
                    }
                }
            }
        }
    }

    /// When `schedule` may next have something to do on its own: the earliest queue-delay or
    /// first-token-wait deadline of a waiting sequence after the last `schedule(now)`. After
    /// `schedule` returned `None` the engine may sleep until then, or until a submission or
    /// cancellation when this is `None` (time alone would change nothing). A KV lease's expiry
    /// counts too (the engine expires leases each turn).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let c = &self.cfg.raw;
        let after = self.last_schedule;
        self.waiting
            .iter()
            .filter_map(|id| self.seqs.get(id))
            .flat_map(|s| {
                let delay = s.queued_at.checked_add(c.max_queue_delay);
                let first = (!c.max_first_token_wait.is_zero() && s.awaiting_first_token())
                    .then(|| s.arrival.checked_add(c.max_first_token_wait))
                    .flatten();
                delay.into_iter().chain(first)
            })
            .filter(|&t| after.is_none_or(|a| t > a))
            .chain(self.next_lease_expiry())
            .min()
    }

    pub fn seq_info(&self, id: SeqId) -> Option<SeqInfo> {
        self.seqs.get(&id).map(Sequence::info)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Nothing waiting, running or in flight.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty() && self.in_flight.is_none()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            preemptions_total: self.counters.preemptions,
            aborted_total: self.counters.aborted,
            prefill_steps: self.counters.prefill_steps,
            decode_steps: self.counters.decode_steps,
            mixed_steps: self.counters.mixed_steps,
            blocks: self.blocks.stats(),
            prefix: self.blocks.prefix_stats(),
        }
    }

    pub(crate) fn count_step(&mut self, kind: StepKind) {
        match kind {
            StepKind::Prefill => self.counters.prefill_steps += 1,
            StepKind::Decode => self.counters.decode_steps += 1,
            StepKind::Mixed => self.counters.mixed_steps += 1,
        }
    }
}

/// Publishes the blocks that became full between `before` and `seq.computed` tokens.
pub(super) fn publish_filled_blocks(seq: &mut Sequence, before: usize, bs: usize) {
    let Some(table) = seq.table.as_ref() else {
        return;
    };
    extend_hash_chain(&mut seq.keys, &seq.tokens, bs);
    for i in before / bs..seq.computed / bs {
        let (Some(&key), Some(tokens)) = (seq.keys.get(i), seq.tokens.get(i * bs..(i + 1) * bs))
        else {
            break;
        };
        let parent = if i == 0 {
            ROOT_HASH
        } else {
            seq.keys.get(i - 1).copied().unwrap_or(ROOT_HASH)
        };
        table.publish(i, key, parent, tokens);
    }
}
