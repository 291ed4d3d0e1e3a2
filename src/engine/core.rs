//! The engine thread: drains submissions and cancellations, asks the scheduler for a step,
//! runs it on the backend, samples, and streams events back. Nothing here blocks the async
//! runtime; the thread sleeps on its command channel when there is nothing to do.

use super::handle::{Command, EngineHandle, RequestId};
use super::json_mode::JsonState;
use super::request::{Finish, GenRequest, TokenEvent};
use super::sampler::{self, Rng};
use super::{EngineInfo, EngineStatus};
use crate::backend::{Backend, BackendErrorKind, SeqSlice, StepBatch};
use crate::scheduler::{FinishReason, Plan, Scheduler, SeqEvent, SeqRequest};
use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Longest the thread sleeps when idle before re-checking cancellations.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// Commands that may queue before `submit` reports the engine busy.
const QUEUE_DEPTH: usize = 4096;

/// Per-request state the engine keeps beside the scheduler's.
pub(super) struct Live {
    req: GenRequest,
    events: UnboundedSender<TokenEvent>,
    rng: Rng,
    generated: Vec<u32>,
    cached_tokens: usize,
    /// JSON mode: where the output stands.
    json: Option<JsonState>,
    /// This step's pick with its log-probabilities, until the scheduler confirms the token and
    /// it goes out in the token's event.
    sampled: Option<sampler::Sampled>,
}

/// Owns the scheduler and the backend; runs on its own thread.
pub struct Engine {
    pub(super) scheduler: Scheduler,
    pub(super) backend: Box<dyn Backend>,
    live: HashMap<RequestId, Live>,
    pub(super) eos: Vec<u32>,
    /// Rows of the LM head: every row is a candidate token, as in HF and vLLM, including rows
    /// past the tokenizer's ids (those decode to no text).
    vocab: usize,
    status: Arc<Mutex<EngineStatus>>,
    /// Sampler state of finished requests whose KV is leased (see `retire`).
    pub(super) lease_rng: HashMap<RequestId, u64>,
    /// Leased KV already copied out, readable without a round trip to this thread.
    pub(super) ready: super::handoff::ReadyLeases,
    /// Set when the backend reported its device lost: health turns abnormal with this reason
    /// (requests still get an error each, never a hang).
    fault: Option<String>,
    /// The backend's last seen [`Backend::kv_epoch`].
    kv_epoch: u64,
}

impl Engine {
    /// Starts the engine thread. Sampling and log-probabilities cover every row of the
    /// backend's logits (`BackendInfo::vocab_size`).
    pub fn spawn(
        scheduler: Scheduler,
        backend: Box<dyn Backend>,
    ) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let status = Arc::new(Mutex::new(EngineStatus::default()));
        let eos = backend.info().eos_token_ids.clone();
        let info = EngineInfo {
            dtype: backend.info().dtype.as_str().to_string(),
            // "cpu (2 threads, avx512)" → "cpu"; "mock (no model)" → "mock".
            device: backend
                .info()
                .device
                .split_whitespace()
                .next()
                .unwrap_or("unknown")
                .to_string(),
            block_size: backend.info().block_size,
            kv: super::KvShape {
                num_layers: backend.info().num_layers,
                num_kv_heads: backend.info().num_kv_heads,
                head_dim: backend.info().head_dim,
                bytes_per_block: backend.info().bytes_per_block,
                layout: backend.info().kv_layout.clone(),
            },
        };
        let vocab = backend.info().vocab_size.max(1);
        let kv_epoch = backend.kv_epoch();
        let engine = Engine {
            scheduler,
            backend,
            live: HashMap::new(),
            eos,
            vocab,
            status: status.clone(),
            fault: None,
            kv_epoch,
            lease_rng: HashMap::new(),
            ready: Default::default(),
        };
        let ready = engine.ready.clone();
        engine.publish_status();
        let join = std::thread::Builder::new()
            .name("mindie-engine".into())
            .spawn(move || engine.run(rx))?;
        Ok((EngineHandle::new(tx, status, info, ready), join))
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            // KV lost elsewhere ends what holds KV before anything new comes in.
            self.check_kv_epoch();
            // Take whatever arrived; sleep only when there is nothing to run.
            while let Ok(cmd) = rx.try_recv() {
                self.apply(cmd);
            }
            self.reap_cancelled();
            let now = Instant::now();
            self.expire_leases(now);
            let plan = self.scheduler.schedule(now);
            // schedule() may admit, preempt or end sequences: report that first.
            self.forward_events();
            match plan {
                Some(plan) => {
                    // The status shows the work of a step while it runs (a stuck one included).
                    self.publish_status();
                    self.run_step(plan)
                }
                None => {
                    let wait = self
                        .scheduler
                        .next_wakeup()
                        .map(|t| t.saturating_duration_since(now))
                        .unwrap_or(IDLE_POLL)
                        .min(IDLE_POLL);
                    match rx.recv_timeout(wait) {
                        Ok(cmd) => {
                            self.check_kv_epoch();
                            self.apply(cmd)
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return self.stop_all(),
                    }
                }
            }
            self.publish_status();
        }
    }

    /// Applies one command.
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Submit {
                id,
                req,
                events,
                kv_lease,
            } => {
                let seq = SeqRequest {
                    id,
                    prompt: req.prompt.clone(),
                    max_new_tokens: req.max_new_tokens,
                    priority: req.priority,
                    arrival: Instant::now(),
                };
                match self.scheduler.add(seq) {
                    Ok(()) => {
                        if let Some(ttl) = kv_lease {
                            self.scheduler.hold_kv(id, ttl);
                        }
                        self.admit(id, req, events, Vec::new(), None);
                    }
                    Err(e) => {
                        let _ = events.send(TokenEvent::Finished {
                            finish: Finish::Error(e.to_string()),
                            prompt_tokens: req.prompt.len(),
                            generated_tokens: 0,
                            cached_tokens: 0,
                            at: Instant::now(),
                        });
                    }
                }
            }
            Command::ExportKv { id, reply } => {
                // A lease past its expiry is gone even if the loop has not expired it yet.
                self.expire_leases(Instant::now());
                let _ = reply.send(self.export_kv(id));
            }
            Command::LeaseBlocks { id, reply } => {
                self.expire_leases(Instant::now());
                let blocks = self
                    .scheduler
                    .lease(id)
                    .map(|l| (l.block_ids().to_vec(), l.kv_tokens));
                let _ = reply.send(blocks);
            }
            Command::ReleaseKv { id, reply } => {
                self.lease_rng.remove(&id);
                self.unpublish_lease(id);
                let _ = reply.send(self.scheduler.release_lease(id));
            }
            Command::SubmitPrefilled {
                id,
                req,
                first_token,
                kv,
                events,
                reply,
            } => {
                let _ = reply.send(self.submit_prefilled(id, req, first_token, &kv, events));
            }
            Command::Cancel(id) => self.end(id, Finish::Cancelled),
        }
    }

    /// Tracks a request the scheduler took; `generated` holds output tokens that came with it
    /// (a first token sampled by another instance).
    pub(super) fn admit(
        &mut self,
        id: RequestId,
        req: GenRequest,
        events: UnboundedSender<TokenEvent>,
        generated: Vec<u32>,
        rng_state: Option<u64>,
    ) {
        let rng = Rng::new(rng_state.unwrap_or(req.sampling.seed));
        let mut json = req.json.as_ref().map(|_| JsonState::default());
        if let (Some(mode), Some(state)) = (&req.json, &mut json) {
            for &t in &generated {
                mode.0.advance(state, t);
            }
        }
        self.live.insert(
            id,
            Live {
                json,
                req,
                events,
                rng,
                generated,
                cached_tokens: 0,
                sampled: None,
            },
        );
    }

    /// Rows of the LM head (token ids are below this).
    pub(super) fn vocab(&self) -> usize {
        self.vocab
    }

    /// Frees the KV leases past their expiry, and their sampler states.
    fn expire_leases(&mut self, now: Instant) {
        for id in self.scheduler.expire_leases(now) {
            self.lease_rng.remove(&id);
            self.unpublish_lease(id);
        }
    }

    /// Forgets a request's state once the scheduler has ended it; when its KV stays under a
    /// lease, its sampler state stays too, to travel with the KV (PD).
    fn retire(&mut self, id: RequestId) -> Option<Live> {
        let l = self.live.remove(&id)?;
        if self.scheduler.lease(id).is_some() {
            self.lease_rng.insert(id, l.rng.state());
            self.publish_lease(id);
        }
        Some(l)
    }

    /// Ends a request the engine decided to end (EOS, stop token, cancel, step error): the
    /// scheduler frees its blocks without raising an event, so the engine reports it here.
    pub(super) fn end(&mut self, id: RequestId, finish: Finish) {
        let reason = match &finish {
            Finish::Stop | Finish::StopString(_) => FinishReason::Stop,
            Finish::Length => FinishReason::Length,
            Finish::Cancelled => FinishReason::Cancelled,
            Finish::Error(e) => {
                FinishReason::Aborted(crate::scheduler::AbortReason::Engine(e.clone()))
            }
        };
        let removed = if finish == Finish::Cancelled {
            self.scheduler.cancel(id)
        } else {
            self.scheduler.finish(id, reason)
        };
        if let (true, Some(l)) = (removed, self.retire(id)) {
            // Status first: a client that sees its stream end then sees its blocks free.
            self.publish_status();
            let _ = l.events.send(TokenEvent::Finished {
                finish,
                prompt_tokens: l.req.prompt.len(),
                generated_tokens: l.generated.len(),
                cached_tokens: l.cached_tokens,
                at: Instant::now(),
            });
        }
    }

    /// Requests whose receiver is gone (client disconnected) are cancelled.
    fn reap_cancelled(&mut self) {
        let gone: Vec<RequestId> = self
            .live
            .iter()
            .filter(|(_, l)| l.events.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.end(id, Finish::Cancelled);
        }
        if !self.live.is_empty() {
            self.forward_events();
        }
    }

    /// A backend whose KV was lost somewhere (a multi-node slave restarted: its layers' KV is
    /// empty) bumps its [`Backend::kv_epoch`]: every live request ends with an error and the
    /// prefix cache forgets its blocks, so no later request reuses KV that is only half there.
    fn check_kv_epoch(&mut self) {
        let epoch = self.backend.kv_epoch();
        if epoch == self.kv_epoch {
            return;
        }
        self.kv_epoch = epoch;
        let live: Vec<RequestId> = self.live.keys().copied().collect();
        let why = "the KV cache of a node of this instance was lost (a node restarted)";
        for id in &live {
            self.end(*id, Finish::Error(why.into()));
        }
        self.forward_events();
        let forgotten = self.scheduler.block_manager().forget_cached();
        tracing::warn!(
            ended = live.len(),
            forgotten_blocks = forgotten,
            "backend KV epoch {epoch}: {why}; requests ended, prefix cache cleared"
        );
    }

    fn run_step(&mut self, plan: Plan) {
        let batch = to_batch(&plan);
        let started = Instant::now();
        let result = self.backend.step(&batch);
        tracing::debug!(
            step = plan.id,
            kind = ?plan.kind,
            seqs = plan.seqs.len(),
            prefill_seqs = plan.seqs.iter().filter(|s| s.is_prefill).count(),
            tokens = batch.tokens.len(),
            ms = started.elapsed().as_secs_f64() * 1e3,
            "engine step"
        );
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                tracing::error!(error = %e, "backend step failed; ending the step's requests");
                if e.kind() == BackendErrorKind::DeviceLost && self.fault.is_none() {
                    self.fault = Some(e.to_string());
                }
                self.scheduler.abort_plan(&plan);
                for s in &plan.seqs {
                    self.end(s.id, Finish::Error(e.to_string()));
                }
                self.forward_events();
                return;
            }
        };
        let mut sampled = Vec::new();
        let mut stops = Vec::new();
        let mut stuck = Vec::new();
        let mut closed = Vec::new();
        for (i, s) in plan.seqs.iter().enumerate() {
            if !s.want_logits {
                continue;
            }
            let (Some(row), Some(live)) = (out.for_seq(i), self.live.get_mut(&s.id)) else {
                sampled.push((s.id, None));
                continue;
            };
            let prompt = &live.req.prompt;
            // JSON mode: only tokens that keep the output one JSON object; EOS (and the stop
            // ids) once it is closed.
            let masked = match (&live.req.json, &live.json) {
                (Some(mode), Some(state)) => {
                    let mut m = row[..self.vocab.min(row.len())].to_vec();
                    let ends: Vec<u32> = self
                        .eos
                        .iter()
                        .chain(&live.req.stop_token_ids)
                        .copied()
                        .collect();
                    if state.is_complete() && ends.is_empty() {
                        // The object is closed and nothing may follow it, but this model has
                        // no EOS (nor stop ids) to end on: the output is finished.
                        closed.push(s.id);
                        continue;
                    }
                    if !mode.0.mask(state, &ends, &mut m) {
                        // (No EOS known, or a vocabulary without the characters needed.)
                        stuck.push(s.id);
                        continue;
                    }
                    Some(m)
                }
                _ => None,
            };
            let pick = sampler::sample(
                masked.as_deref().unwrap_or(row),
                self.vocab,
                &live.req.sampling,
                prompt,
                &live.generated,
                &mut live.rng,
                live.req.top_logprobs,
            );
            if let (Some(mode), Some(state)) = (&live.req.json, &mut live.json) {
                mode.0.advance(state, pick.token);
            }
            let json_done = live.json.as_ref().is_some_and(JsonState::is_complete);
            // A closed JSON object ends on EOS even with `ignore_eos` (nothing else may follow).
            let stop = ((json_done || !live.req.ignore_eos) && self.eos.contains(&pick.token))
                || live.req.stop_token_ids.contains(&pick.token);
            if stop {
                stops.push(s.id);
            }
            sampled.push((s.id, Some(pick.token)));
            live.sampled = Some(pick);
        }
        // Ended before the plan completes, so the scheduler skips them (as it does sequences
        // cancelled while in flight) instead of aborting them for a missing token.
        for id in stuck {
            self.end(
                id,
                Finish::Error("JSON mode: no token can continue the output".into()),
            );
        }
        for id in closed {
            self.end(id, Finish::Stop);
        }
        let events = self.scheduler.complete(&plan, &sampled);
        self.dispatch(events);
        for id in stops {
            self.end(id, Finish::Stop);
        }
        self.forward_events();
    }

    fn forward_events(&mut self) {
        let events = self.scheduler.drain_events();
        self.dispatch(events);
    }

    fn dispatch(&mut self, events: Vec<SeqEvent>) {
        let now = Instant::now();
        for ev in events {
            match ev {
                SeqEvent::Admitted {
                    id,
                    cached_tokens,
                    recompute,
                } => {
                    if let (Some(l), false) = (self.live.get_mut(&id), recompute) {
                        l.cached_tokens = cached_tokens;
                    }
                }
                SeqEvent::Token { id, token, .. } => {
                    let Some(l) = self.live.get_mut(&id) else {
                        continue;
                    };
                    l.generated.push(token);
                    let (logprob, top) = l
                        .sampled
                        .take()
                        .map(|p| (p.logprob, p.top))
                        .unwrap_or_default();
                    let _ = l.events.send(TokenEvent::Token {
                        id: token,
                        logprob,
                        top,
                        at: now,
                    });
                }
                SeqEvent::Preempted { id, count } => {
                    tracing::debug!(id, count, "sequence preempted (recompute)");
                }
                SeqEvent::Finished { id, reason } => {
                    let Some(l) = self.retire(id) else {
                        continue;
                    };
                    self.publish_status();
                    let finish = match reason {
                        FinishReason::Stop => Finish::Stop,
                        FinishReason::Length => Finish::Length,
                        FinishReason::Cancelled => Finish::Cancelled,
                        FinishReason::Aborted(e) => Finish::Error(e.to_string()),
                    };
                    let _ = l.events.send(TokenEvent::Finished {
                        finish,
                        prompt_tokens: l.req.prompt.len(),
                        generated_tokens: l.generated.len(),
                        cached_tokens: l.cached_tokens,
                        at: now,
                    });
                }
            }
        }
    }

    fn publish_status(&self) {
        let st = self.scheduler.stats();
        let max_batch = self.scheduler.config().max_batch_size;
        let steps_total = st.prefill_steps + st.decode_steps + st.mixed_steps;
        let Ok(mut s) = self.status.lock() else {
            return;
        };
        // Progress: a step finished since the last snapshot, or there is nothing to do.
        let progress_at = if s.progress_at.is_none()
            || steps_total != s.steps_total
            || st.waiting + st.running == 0
        {
            Some(Instant::now())
        } else {
            s.progress_at
        };
        *s = EngineStatus {
            ready: self.fault.is_none(),
            reason: self.fault.clone(),
            waiting: st.waiting,
            running: st.running,
            swapped: 0,
            free_npu_blocks: st.blocks.available(),
            total_npu_blocks: st.blocks.total,
            free_cpu_blocks: 0,
            total_cpu_blocks: 0,
            free_slots: max_batch.saturating_sub(st.running),
            preemptions_total: st.preemptions_total,
            prefix_query_tokens: st.prefix.query_tokens,
            prefix_hit_tokens: st.prefix.hit_tokens,
            steps_total,
            progress_at,
            node_down: false,
        };
    }

    fn stop_all(mut self) {
        let ids: Vec<RequestId> = self.live.keys().copied().collect();
        for id in ids {
            self.end(id, Finish::Cancelled);
        }
        if let Ok(mut s) = self.status.lock() {
            s.ready = false;
            s.reason = Some("engine stopped".into());
        }
    }
}

/// The scheduler's plan as the backend's packed batch.
fn to_batch(plan: &Plan) -> StepBatch {
    let mut batch = StepBatch::default();
    for s in &plan.seqs {
        let start = batch.tokens.len();
        batch.tokens.extend_from_slice(&s.tokens);
        batch.positions.extend(s.positions());
        batch.seqs.push(SeqSlice {
            token_range: start..batch.tokens.len(),
            context_len: s.context_len,
            block_table: s.block_table.clone(),
            want_logits: s.want_logits,
        });
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::json_mode::{JsonConstraint, JsonMode};
    use crate::engine::EngineMonitor;

    /// Runs one JSON-mode request over the mock model (no EOS) whose 16 tokens all have the
    /// text `text`; returns the tokens streamed, how it finished, and whether every KV block
    /// came back.
    fn json_run(text: &[u8]) -> (usize, Finish, bool) {
        let h = crate::engine::test_support::engine_on(Box::new(
            crate::engine::test_support::mock(16, 8),
        ));
        let mut sub = h
            .submit(GenRequest {
                prompt: vec![1, 2, 3, 4, 5],
                max_new_tokens: 8,
                sampling: Default::default(),
                stop_token_ids: Vec::new(),
                ignore_eos: false,
                top_logprobs: None,
                priority: 3,
                json: Some(JsonMode(JsonConstraint::new(vec![text.to_vec(); 16]))),
            })
            .expect("submit");
        let mut tokens = 0;
        let finish = loop {
            match sub.events.blocking_recv().expect("an end") {
                TokenEvent::Token { .. } => tokens += 1,
                TokenEvent::Finished { finish, .. } => break finish,
            }
        };
        let st = h.status();
        (tokens, finish, st.free_npu_blocks == st.total_npu_blocks)
    }

    /// A JSON-mode request whose vocabulary cannot start an object ends with an error, not a
    /// garbage token, and its blocks come back.
    #[test]
    fn json_mode_with_nothing_allowed_ends_with_an_error_and_frees_blocks() {
        let (tokens, finish, freed) = json_run(b"x");
        assert_eq!(tokens, 0);
        assert!(
            matches!(&finish, Finish::Error(m) if m.contains("JSON mode")),
            "{finish:?}"
        );
        assert!(freed, "every KV block back");
    }

    /// A JSON-mode request on a model without EOS (and no stop ids) stops once its object is
    /// closed (found by schemathesis: it used to end with "no token can continue", a 500).
    #[test]
    fn json_mode_without_eos_stops_when_the_object_closes() {
        // Every token is the whole object, so the first one closes it.
        let (tokens, finish, freed) = json_run(b"{}");
        assert_eq!(tokens, 1, "the closing token, then the end");
        assert!(matches!(finish, Finish::Stop), "{finish:?}");
        assert!(freed, "every KV block back");
    }
}
