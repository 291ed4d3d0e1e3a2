//! Building one step: [`Scheduler::schedule`]. Owns the batch rules of DESIGN §4.
//!
//! **Standard** (`templateType: "Standard"`): a step is either a prefill or a decode.
//! - A prefill batch is *ready* when a sequence waited `maxFirstTokenWaitTime` for its first
//!   token (*forced*), a split prompt is half done, the oldest waiting sequence waited
//!   `maxQueueDelayMicroseconds`, or the batch could not grow anyway: the waiting sequences
//!   reach `maxPrefillBatchSize`, `maxPrefillTokens`, `maxBatchSize` together with the running
//!   set, or the free blocks.
//! - Ready and nothing decoding, or forced: prefill. Ready with decodes and
//!   `supportSelectBatch`: MindIE's cost rule (see `policy`). Ready without it: prefill first.
//!   Not ready: decode, or nothing (`next_wakeup` says until when).
//! - A prefill batch continues half-done prompts, then admits waiting sequences in policy order
//!   while `≤ maxPrefillBatchSize` sequences, `≤ maxPrefillTokens` new tokens and
//!   `≤ maxBatchSize` running fit and blocks can be leased. It stops at the first that does not
//!   fit (no overtaking). A prompt longer than the whole token budget is split only when it
//!   would be alone in the batch. A prefill batch that comes out empty falls back to decode.
//! - A decode step takes every decoding sequence (one token each).
//!
//! **Mix** (SplitFuse): every step carries all decodes (one token each), then chunks of
//! half-done prompts, then new admissions with their first chunk, under one budget of
//! `maxPrefillTokens` tokens (decodes count one each and always run), or of `prefillChunkSize`
//! / `splitChunkTokens` when set (MindIE's split-fuse chunk). New admissions wait for company
//! (`maxQueueDelayMicroseconds`) only while nothing runs.
//!
//! **Blocks.** Admission leases the blocks of the first chunk, reusing the longest cached
//! prefix, and keeps headroom: with preemption enabled (`maxPreemptCount > 0`) one free block
//! per running sequence; with it disabled, every running sequence's worst-case growth
//! (prompt + output limit) stays reserved, so decoding never runs out. The first admission into
//! an empty system needs no headroom. When a running sequence needs a block and none is left, the
//! victim by `decodePolicyType` (newest / least urgent) is preempted by recompute, or finished
//! with [`AbortReason::PreemptLimit`] once it was preempted `maxPreemptCount` times
//! ([`AbortReason::OutOfKvBlocks`] when preemption is disabled). A sequence alone that cannot grow
//! is finished with `OutOfKvBlocks`. A forced sequence that cannot be admitted may preempt
//! running sequences that still have preemptions left (MindIE: the first-token wait "allows
//! preemption"); it never aborts anyone.

use std::collections::HashSet;
use std::time::Instant;

use super::blocks::blocks_for;
use super::limits::Template;
use super::plan::{Plan, PlannedSeq, StepKind};
use super::policy::{pick_victim, waiting_order};
use super::prefix::extend_hash_chain;
use super::sched::Scheduler;
use super::sequence::{AbortReason, SeqEvent, SeqId, SeqStatus, Sequence};

/// The step under construction. A drafted sequence's tokens are its `in_flight` count.
#[derive(Debug, Default)]
struct Draft {
    ids: Vec<SeqId>,
    tokens: usize,
    prefill_seqs: usize,
    /// Admitted in this step: never victims.
    admitted: HashSet<SeqId>,
    /// Preempted in this step: not re-admitted in it.
    preempted: HashSet<SeqId>,
}

enum Admit {
    Done,
    /// Gone (aborted as impossible) or not waiting any more: try the next one.
    Skipped,
    /// The token budget is spent.
    NoTokens,
    /// No room: blocks or `maxBatchSize`.
    NoRoom,
}

impl Scheduler {
    /// The next step to run, or `None` when there is nothing to do now (or a plan is still in
    /// flight). Admissions, preemptions and aborts it causes are in [`Scheduler::drain_events`].
    pub fn schedule(&mut self, now: Instant) -> Option<Plan> {
        if self.in_flight.is_some() {
            return None;
        }
        self.last_schedule = Some(now);
        let draft = match self.cfg.raw.template {
            Template::Standard => self.draft_standard(now),
            Template::Mix => self.draft_mix(now),
        };
        self.make_plan(draft)
    }

    fn running_where(&self, prefilled: bool) -> Vec<SeqId> {
        let is = |id: &&SeqId| self.seqs.get(id).is_some_and(|s| s.prefilled == prefilled);
        self.running.iter().filter(is).copied().collect()
    }

    fn draft_standard(&mut self, now: Instant) -> Draft {
        let decoding = self.running_where(true).len();
        let partial = !self.running_where(false).is_empty();
        if !self.waiting.is_empty() || partial {
            let forced = self.any_forced(now);
            let mut go = forced || partial || self.prefill_ready(now);
            let c = &self.cfg.raw;
            if go
                && !forced
                && decoding > 0
                && c.support_select_batch
                && !self.select.prefill_now(decoding, c.prefill_time_ms_per_req)
            {
                let (max_batch, decode_ms) = (c.max_batch_size, c.decode_time_ms_per_req);
                self.select.decode_chosen(decoding, max_batch, decode_ms);
                go = false;
            }
            if go {
                let draft = self.draft_prefill(now);
                if !draft.ids.is_empty() {
                    self.select.prefill_ran();
                    return draft;
                }
            }
        }
        let mut draft = Draft::default();
        for id in self.running_where(true) {
            self.draft_chunk(id, 1, &mut draft, now);
        }
        draft
    }

    fn draft_prefill(&mut self, now: Instant) -> Draft {
        let mut draft = Draft::default();
        self.draft_partials(&mut draft, now);
        self.admit_waiting(&mut draft, now);
        draft
    }

    fn draft_mix(&mut self, now: Instant) -> Draft {
        let was_running = !self.running.is_empty();
        let mut draft = Draft::default();
        for id in self.running_where(true) {
            self.draft_chunk(id, 1, &mut draft, now);
        }
        self.draft_partials(&mut draft, now);
        if !self.waiting.is_empty()
            && (was_running || self.any_forced(now) || self.prefill_ready(now))
        {
            self.admit_waiting(&mut draft, now);
        }
        draft
    }

    /// Next chunks of half-done prompts, under the token and prefill-batch budgets.
    fn draft_partials(&mut self, draft: &mut Draft, now: Instant) {
        let budget = self.cfg.step_tokens;
        for id in self.running_where(false) {
            if draft.prefill_seqs >= self.cfg.max_prefill_seqs || draft.tokens >= budget {
                break;
            }
            let Some(remaining) = self
                .seqs
                .get(&id)
                .filter(|s| !s.prefilled)
                .map(|s| s.remaining())
            else {
                continue; // preempted meanwhile
            };
            self.draft_chunk(id, remaining.min(budget - draft.tokens), draft, now);
        }
    }

    /// Drafts up to `want` tokens of running sequence `id`, leasing their blocks.
    fn draft_chunk(&mut self, id: SeqId, want: usize, draft: &mut Draft, now: Instant) {
        let undrafted = |s: &&Sequence| s.status == SeqStatus::Running && s.in_flight == 0;
        if want == 0 || self.seqs.get(&id).filter(undrafted).is_none() {
            return;
        }
        if let Some(n) = self.grant(id, want, draft, now) {
            let prefill = self.seqs.get(&id).is_some_and(|s| !s.prefilled);
            draft.ids.push(id);
            draft.tokens += n;
            draft.prefill_seqs += usize::from(prefill);
        }
    }

    /// Leases blocks so running `id` can compute `want` more tokens (fewer if only fewer fit),
    /// preempting when none fit. Sets its `in_flight`; `None` if it lost its place instead.
    fn grant(&mut self, id: SeqId, want: usize, draft: &mut Draft, now: Instant) -> Option<usize> {
        let bs = self.block_size();
        loop {
            let available = self.blocks.available();
            let seq = self.seqs.get_mut(&id)?;
            let base = seq.computed;
            let table = seq.table.as_mut()?;
            let fit = ((table.len() + available) * bs)
                .saturating_sub(base)
                .min(want);
            if fit > 0 {
                let need = blocks_for(base + fit, bs).saturating_sub(table.len());
                if table.grow(need).is_ok() {
                    seq.in_flight = fit;
                    return Some(fit);
                }
            }
            let needed = blocks_for(base + 1, bs);
            let victim = self.victim(draft, |_| true)?;
            if victim == id && self.running.len() == 1 {
                let total = self.cfg.raw.num_blocks;
                self.abort(id, AbortReason::OutOfKvBlocks { needed, total });
                return None;
            }
            self.evict(victim, draft, now);
            if victim == id {
                return None;
            }
        }
    }

    /// The running sequence to give up first (not one admitted in this step).
    fn victim(&self, draft: &Draft, eligible: impl Fn(&Sequence) -> bool) -> Option<SeqId> {
        let candidates = self
            .running
            .iter()
            .filter(|id| !draft.admitted.contains(id))
            .filter_map(|id| self.seqs.get(id))
            .filter(|s| eligible(s));
        pick_victim(self.cfg.decode_policy, candidates)
    }

    /// Preempts `victim` (or aborts it when its preemptions are used up), dropping it from the
    /// draft.
    fn evict(&mut self, victim: SeqId, draft: &mut Draft, now: Instant) {
        let Some(seq) = self.seqs.get(&victim) else {
            return;
        };
        let (count, in_flight, prefilled) = (seq.preempt_count, seq.in_flight, seq.prefilled);
        let needed = seq.blocks_held() + 1;
        if let Some(pos) = draft.ids.iter().position(|&d| d == victim) {
            draft.ids.remove(pos);
            draft.tokens -= in_flight;
            draft.prefill_seqs -= usize::from(!prefilled);
        }
        let max = self.cfg.raw.max_preempt_count;
        if count < max {
            self.preempt(victim, now);
            draft.preempted.insert(victim);
        } else if max == 0 {
            let total = self.cfg.raw.num_blocks;
            self.abort(victim, AbortReason::OutOfKvBlocks { needed, total });
        } else {
            self.abort(victim, AbortReason::PreemptLimit { count, max });
        }
    }

    /// Whether a waiting sequence has waited `maxFirstTokenWaitTime` for its first token.
    fn forced(&self, id: SeqId, now: Instant) -> bool {
        let wait = self.cfg.raw.max_first_token_wait;
        !wait.is_zero()
            && self.seqs.get(&id).is_some_and(|s| {
                s.awaiting_first_token() && now.saturating_duration_since(s.arrival) >= wait
            })
    }

    fn any_forced(&self, now: Instant) -> bool {
        self.waiting.iter().any(|&id| self.forced(id, now))
    }

    /// Whether the waiting sequences make a batch worth running now (see the module docs).
    fn prefill_ready(&self, now: Instant) -> bool {
        let c = &self.cfg.raw;
        let bs = self.block_size();
        let waiting: Vec<_> = self
            .waiting
            .iter()
            .filter_map(|id| self.seqs.get(id))
            .collect();
        let Some(oldest) = waiting.iter().map(|s| s.queued_at).min() else {
            return false;
        };
        let tokens: usize = waiting.iter().map(|s| s.tokens.len()).sum();
        let blocks: usize = waiting.iter().map(|s| blocks_for(s.tokens.len(), bs)).sum();
        now.saturating_duration_since(oldest) >= c.max_queue_delay
            || waiting.len() >= self.cfg.max_prefill_seqs
            || waiting.len() + self.running.len() >= c.max_batch_size
            || tokens >= self.cfg.step_tokens
            || blocks >= self.blocks.available()
    }

    /// Admits waiting sequences in policy order until a budget or the room runs out.
    fn admit_waiting(&mut self, draft: &mut Draft, now: Instant) {
        let c = &self.cfg.raw;
        let order = waiting_order(
            self.cfg.prefill_policy,
            c.priority_aging,
            now,
            &self.waiting,
            &self.seqs,
        );
        for id in order {
            if draft.preempted.contains(&id) {
                continue;
            }
            loop {
                if draft.prefill_seqs >= self.cfg.max_prefill_seqs {
                    return;
                }
                let forced = self.forced(id, now);
                match self.admit(id, draft, forced) {
                    Admit::Done | Admit::Skipped => break,
                    Admit::NoTokens => return,
                    Admit::NoRoom => {
                        if !(forced && self.make_room(id, draft, now)) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Tries to admit waiting `id` with its first chunk.
    fn admit(&mut self, id: SeqId, draft: &mut Draft, forced: bool) -> Admit {
        let bs = self.block_size();
        let c = &self.cfg.raw;
        let (total_blocks, prefix, budget) =
            (c.num_blocks, c.enable_prefix_cache, self.cfg.step_tokens);
        let allow_split = c.template == Template::Mix || draft.ids.is_empty();
        let budget_left = budget.saturating_sub(draft.tokens);
        if budget_left == 0 {
            return Admit::NoTokens;
        }
        if self.running.len() >= c.max_batch_size {
            return Admit::NoRoom;
        }
        let preempt_on = self.preemption_enabled();
        let skip_headroom = self.running.is_empty() || (forced && preempt_on);
        let reserved = if preempt_on {
            0
        } else {
            self.reserved_growth()
        };
        let running = self.running.len();
        let Some(seq) = self
            .seqs
            .get_mut(&id)
            .filter(|s| s.status == SeqStatus::Waiting)
        else {
            return Admit::Skipped;
        };
        let len = seq.tokens.len();
        if blocks_for(len, bs) > total_blocks {
            let needed = blocks_for(len, bs);
            self.abort(
                id,
                AbortReason::OutOfKvBlocks {
                    needed,
                    total: total_blocks,
                },
            );
            return Admit::Skipped;
        }
        let max_match = (len - 1) / bs;
        let mut table = if prefix {
            extend_hash_chain(&mut seq.keys, &seq.tokens, bs);
            self.blocks.match_prefix(&seq.keys, &seq.tokens, max_match)
        } else {
            self.blocks.new_table()
        };
        let matched = table.len();
        let cached = matched * bs;
        let remaining = len - cached;
        let chunk = if remaining <= budget_left {
            remaining
        } else if allow_split {
            budget_left
        } else {
            return Admit::NoTokens;
        };
        if table
            .grow(blocks_for(cached + chunk, bs) - matched)
            .is_err()
        {
            return Admit::NoRoom;
        }
        if !skip_headroom {
            let headroom = if preempt_on {
                running + 1
            } else {
                reserved + blocks_for(seq.max_kv_tokens(), bs).saturating_sub(table.len())
            };
            if self.blocks.available() < headroom {
                return Admit::NoRoom;
            }
        }
        let recompute = seq.admitted_once;
        if prefix && !recompute {
            let hit = cached.min(seq.prompt_len);
            self.blocks
                .record_lookup(seq.prompt_len, hit, max_match, matched);
        }
        if !recompute {
            seq.cached_tokens = cached;
        }
        seq.admitted_once = true;
        seq.table = Some(table);
        seq.computed = cached;
        seq.in_flight = chunk;
        seq.prefilled = false;
        seq.status = SeqStatus::Running;
        self.waiting.retain(|&w| w != id);
        self.running.push(id);
        draft.ids.push(id);
        draft.admitted.insert(id);
        draft.tokens += chunk;
        draft.prefill_seqs += 1;
        self.events.push(SeqEvent::Admitted {
            id,
            cached_tokens: cached,
            recompute,
        });
        Admit::Done
    }

    /// Blocks the running sequences may still need at most (reservation when preemption is off).
    fn reserved_growth(&self) -> usize {
        let bs = self.block_size();
        let growth =
            |s: &Sequence| blocks_for(s.max_kv_tokens(), bs).saturating_sub(s.blocks_held());
        self.running
            .iter()
            .filter_map(|id| self.seqs.get(id))
            .map(growth)
            .sum()
    }

    /// For a forced sequence: preempts one running sequence that has preemptions left, when
    /// that can make room at all. True if one was preempted.
    fn make_room(&mut self, id: SeqId, draft: &mut Draft, now: Instant) -> bool {
        let max = self.cfg.raw.max_preempt_count;
        if max == 0 {
            return false;
        }
        let bs = self.block_size();
        let budget = self.cfg.step_tokens;
        let Some(need) = self
            .seqs
            .get(&id)
            .map(|s| blocks_for(s.tokens.len().min(budget), bs))
        else {
            return false;
        };
        let eligible = |s: &Sequence| s.preempt_count < max;
        let reclaimable: usize = self
            .running
            .iter()
            .filter(|r| !draft.admitted.contains(r))
            .filter_map(|r| self.seqs.get(r))
            .filter(|s| eligible(s))
            .map(|s| s.blocks_held())
            .sum();
        if self.blocks.available() + reclaimable < need {
            return false;
        }
        match self.victim(draft, eligible) {
            Some(victim) => {
                self.evict(victim, draft, now);
                true
            }
            None => false,
        }
    }

    fn make_plan(&mut self, draft: Draft) -> Option<Plan> {
        let mut seqs = Vec::with_capacity(draft.ids.len());
        for id in draft.ids {
            let Some(s) = self.seqs.get(&id).filter(|s| s.in_flight > 0) else {
                continue;
            };
            let (start, end) = (s.computed, s.computed + s.in_flight);
            let (Some(tokens), Some(table)) = (s.tokens.get(start..end), s.table.as_ref()) else {
                continue;
            };
            seqs.push(PlannedSeq {
                id,
                tokens: tokens.to_vec(),
                start_pos: start,
                context_len: end,
                block_table: table.ids().to_vec(),
                want_logits: end == s.tokens.len(),
                is_prefill: !s.prefilled,
            });
        }
        if seqs.is_empty() {
            return None;
        }
        let kind = match (
            seqs.iter().any(|s| s.is_prefill),
            seqs.iter().any(|s| !s.is_prefill),
        ) {
            (true, false) => StepKind::Prefill,
            (false, true) => StepKind::Decode,
            _ => StepKind::Mixed,
        };
        let id = self.next_plan_id;
        self.next_plan_id += 1;
        self.in_flight = Some(id);
        self.count_step(kind);
        Some(Plan { id, kind, seqs })
    }
}
