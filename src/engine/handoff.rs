//! KV hand-off on the engine thread (PD disaggregation): the prefill side keeps a finished
//! request's KV under a lease and copies it out on request; the decode side imports KV into
//! fresh blocks and continues a request from its first token without a prefill. The scheduler
//! keeps the books (`scheduler::handoff`); this module moves the bytes through the backend.

use super::core::Engine;
use super::handle::{RequestId, SubmitError};
use super::request::{Finish, GenRequest, TokenEvent};
use crate::backend::KvChunk;
use crate::scheduler::{AbortReason, AdoptError, FinishReason, SeqRequest};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

/// A finished prefill's KV as it leaves the instance.
#[derive(Debug, Clone, PartialEq)]
pub struct KvExport {
    /// Tokens whose KV `kv` holds (the prompt, for a one-token prefill).
    pub kv_tokens: usize,
    /// Tokens per block on the exporting side.
    pub block_size: usize,
    pub kv: KvChunk,
    /// The prefill side's sampler state after its first token (`None`: start from the
    /// request's seed).
    pub rng_state: Option<u64>,
}

/// A lease's KV, copied out when the lease was taken so a pull never waits for the engine's
/// running step (a CPU prefill step may take seconds): the bytes, the blocks they came from
/// and the lease's expiry. Shared by the engine thread and every [`EngineHandle`] clone.
#[derive(Debug, Clone)]
pub struct ReadyLease {
    pub blocks: Vec<crate::backend::BlockId>,
    pub export: KvExport,
    pub expires: Instant,
}

/// Ready leases by request id.
pub type ReadyLeases =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<RequestId, ReadyLease>>>;

/// Why a hand-off command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    #[error(transparent)]
    Engine(#[from] SubmitError),
    #[error("request {0} holds no KV lease (never held, released, or expired)")]
    NoLease(RequestId),
    #[error(transparent)]
    Adopt(#[from] AdoptError),
    #[error("KV transfer: {0}")]
    Backend(String),
}

impl Engine {
    /// Copies a just-taken lease out into the ready leases (see [`ReadyLease`]).
    pub(super) fn publish_lease(&self, id: RequestId) {
        let Some(lease) = self.scheduler.lease(id) else {
            return;
        };
        let (blocks, expires) = (lease.block_ids().to_vec(), lease.expires);
        match self.export_kv(id) {
            Ok(export) => {
                if let Ok(mut m) = self.ready.lock() {
                    m.insert(
                        id,
                        ReadyLease {
                            blocks,
                            export,
                            expires,
                        },
                    );
                }
            }
            Err(e) => tracing::warn!(id, "copying a leased KV out failed: {e}"),
        }
    }

    /// Forgets a lease's copied-out KV.
    pub(super) fn unpublish_lease(&self, id: RequestId) {
        if let Ok(mut m) = self.ready.lock() {
            m.remove(&id);
        }
    }

    /// [`super::handle::Command::ExportKv`].
    pub(super) fn export_kv(&self, id: RequestId) -> Result<KvExport, HandoffError> {
        let lease = self.scheduler.lease(id).ok_or(HandoffError::NoLease(id))?;
        let kv = self
            .backend
            .export_blocks(lease.block_ids())
            .map_err(|e| HandoffError::Backend(e.to_string()))?;
        Ok(KvExport {
            kv_tokens: lease.kv_tokens,
            block_size: self.scheduler.config().block_size,
            kv,
            rng_state: self.lease_rng.get(&id).copied(),
        })
    }

    /// [`super::handle::Command::SubmitPrefilled`]: blocks leased, KV written, the request
    /// running from its first token (which counts as generated and is not sent again). On
    /// any failure nothing is left behind.
    pub(super) fn submit_prefilled(
        &mut self,
        id: RequestId,
        req: GenRequest,
        first_token: u32,
        kv: &KvExport,
        events: UnboundedSender<TokenEvent>,
    ) -> Result<(), HandoffError> {
        if first_token as usize >= self.vocab() {
            return Err(HandoffError::Backend(format!(
                "first token {first_token} is outside the model's vocabulary of {}",
                self.vocab()
            )));
        }
        if kv.kv_tokens != req.prompt.len() {
            return Err(HandoffError::Backend(format!(
                "the KV covers {} tokens but the prompt has {}",
                kv.kv_tokens,
                req.prompt.len()
            )));
        }
        let now = Instant::now();
        let seq = SeqRequest {
            id,
            prompt: req.prompt.clone(),
            max_new_tokens: req.max_new_tokens,
            priority: req.priority,
            arrival: now,
        };
        let blocks = self.scheduler.adopt(seq, first_token, now)?;
        if let Err(e) = self.backend.import_blocks(&blocks, &kv.kv) {
            let msg = e.to_string();
            // Aborted, not Stop/Length: the blocks go back to the pool, never to a lease.
            self.scheduler
                .finish(id, FinishReason::Aborted(AbortReason::Engine(msg.clone())));
            return Err(HandoffError::Backend(msg));
        }
        self.scheduler.kv_imported(id);
        let stops = (!req.ignore_eos && self.eos.contains(&first_token))
            || req.stop_token_ids.contains(&first_token);
        self.admit(id, req, events, vec![first_token], kv.rng_state);
        if stops {
            // The first token already ended it (the prefill side should not have sent it).
            self.end(id, Finish::Stop);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_support::{engine_on, mock, status_when_free};
    use crate::engine::{EngineHandle, EngineMonitor};
    use std::time::Duration;

    fn engine() -> EngineHandle {
        engine_on(Box::new(mock(64, 32)))
    }

    fn req(max_new_tokens: usize) -> GenRequest {
        GenRequest {
            prompt: vec![5, 9, 2, 7, 7, 3, 1, 8, 4, 6, 2],
            max_new_tokens,
            sampling: Default::default(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            top_logprobs: None,
            priority: 3,
            json: None,
        }
    }

    /// Tokens and the end of a stream.
    async fn collect(sub: &mut super::super::Submission) -> (Vec<u32>, Finish, usize) {
        let mut ids = Vec::new();
        loop {
            match sub.events.recv().await.expect("an end") {
                TokenEvent::Token { id, .. } => ids.push(id),
                TokenEvent::Finished {
                    finish,
                    generated_tokens,
                    ..
                } => return (ids, finish, generated_tokens),
            }
        }
    }

    async fn all_free(h: &EngineHandle) {
        let h = h.clone();
        let st = tokio::task::spawn_blocking(move || status_when_free(&h))
            .await
            .expect("status");
        assert_eq!(st.free_npu_blocks, st.total_npu_blocks, "{st:?}");
    }

    #[tokio::test]
    async fn a_lease_is_exported_without_waiting_for_the_running_step() {
        // A slow engine: each step takes 400 ms.
        let backend = crate::backend::mock::MockBackend::new(crate::backend::mock::MockOptions {
            step_time: Duration::from_millis(400),
            ..mock_options()
        })
        .expect("mock");
        let e = engine_on(Box::new(backend));
        let mut sub = e
            .submit_holding_kv(req(1), Duration::from_secs(30))
            .expect("submit");
        collect(&mut sub).await;
        // Another request keeps the engine inside its (slow) steps.
        let mut busy = e.submit(req(50)).expect("submit");
        assert!(matches!(
            busy.events.recv().await,
            Some(TokenEvent::Token { .. })
        ));
        let t0 = std::time::Instant::now();
        let blocks = e.lease_blocks(sub.id).await.expect("lease").expect("held");
        let export = e.export_kv(sub.id).await.expect("export");
        assert!(
            t0.elapsed() < Duration::from_millis(200),
            "the export waited for a step: {:?}",
            t0.elapsed()
        );
        assert_eq!((blocks.0.len(), export.kv_tokens), (3, 11));
        assert_eq!(e.release_kv(sub.id).await, Ok(true));
        assert!(
            e.export_kv(sub.id).await.is_err(),
            "released: nothing to export"
        );
        e.cancel(busy.id);
    }

    fn mock_options() -> crate::backend::mock::MockOptions {
        crate::backend::mock::MockOptions {
            vocab_size: 64,
            avoid: Vec::new(),
            block_size: 4,
            num_blocks: 32,
            step_time: Duration::ZERO,
            token_time: Duration::ZERO,
            max_position: 256,
            stall_file: None,
            reply: None,
        }
    }

    #[tokio::test]
    async fn prefill_here_decode_there_gives_the_local_tokens() {
        let (p, d, local) = (engine(), engine(), engine());
        let mut sub = local.submit(req(6)).expect("submit");
        let (want, ..) = collect(&mut sub).await;
        assert_eq!(want.len(), 6);

        let mut sub = p
            .submit_holding_kv(req(1), Duration::from_secs(5))
            .expect("submit");
        let (first, finish, _) = collect(&mut sub).await;
        assert_eq!((first.as_slice(), finish), (&want[..1], Finish::Length));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let st = p.status();
        assert_eq!(
            st.total_npu_blocks - st.free_npu_blocks,
            3,
            "the lease holds the prompt's blocks"
        );
        let export = p.export_kv(sub.id).await.expect("export");
        assert_eq!((export.kv_tokens, export.block_size), (11, 4));

        let mut sub2 = d
            .submit_prefilled(req(6), first[0], export.clone())
            .await
            .expect("adopted");
        let (rest, finish, generated) = collect(&mut sub2).await;
        assert_eq!(rest, want[1..], "decode continues from the imported KV");
        assert_eq!((finish, generated), (Finish::Length, 6));

        assert_eq!(p.release_kv(sub.id).await, Ok(true));
        assert_eq!(p.release_kv(sub.id).await, Ok(false));
        assert_eq!(
            p.export_kv(sub.id).await,
            Err(HandoffError::NoLease(sub.id))
        );
        all_free(&p).await;
        all_free(&d).await;
    }

    #[tokio::test]
    async fn bad_kv_is_refused_and_leaves_no_block_held() {
        let d = engine();
        let bad = KvExport {
            kv: KvChunk {
                layout: "other".into(),
                bytes_per_block: 16,
                data: vec![0; 48],
            },
            ..bad_export()
        };
        let err = d
            .submit_prefilled(req(4), 3, bad)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, HandoffError::Backend(ref m) if m.contains("incompatible")),
            "{err}"
        );
        let mut empty = req(4);
        empty.prompt.clear();
        let none = KvExport {
            kv_tokens: 0,
            ..bad_export()
        };
        let err = d
            .submit_prefilled(empty, 3, none)
            .await
            .expect_err("refused");
        assert!(matches!(err, HandoffError::Adopt(_)), "{err}");
        let short = KvExport {
            kv_tokens: 5,
            ..bad_export()
        };
        let err = d
            .submit_prefilled(req(4), 3, short)
            .await
            .expect_err("refused");
        assert!(err.to_string().contains("covers 5 tokens"), "{err}");
        let err = d
            .submit_prefilled(req(4), 64, bad_export())
            .await
            .expect_err("refused");
        assert!(
            err.to_string().contains("outside the model's vocabulary"),
            "{err}"
        );
        all_free(&d).await;
    }

    /// A KV export for `req`'s 11-token prompt carrying no usable KV.
    fn bad_export() -> KvExport {
        KvExport {
            kv_tokens: 11,
            block_size: 4,
            kv: KvChunk::default(),
            rng_state: None,
        }
    }

    /// Seeded sampling on a real model: P's sampler state travels with the KV, so P→D gives
    /// the tokens of one local run.
    #[tokio::test]
    async fn seeded_sampling_continues_across_the_hand_off() {
        use crate::backend::cpu::{CpuBackend, CpuOptions};
        let cpu = || {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/models/tiny-llama");
            let opts = CpuOptions {
                kv_cache_bytes: 1 << 20,
                block_size: 4,
                threads: 1,
                ..CpuOptions::default()
            };
            engine_on(Box::new(CpuBackend::load(&dir, opts).expect("model")))
        };
        let sampled = |n| {
            let mut r = req(n);
            r.sampling.temperature = 1.0;
            r.sampling.seed = 7;
            r.ignore_eos = true;
            r
        };
        let (p, d, local) = (cpu(), cpu(), cpu());
        let mut sub = local.submit(sampled(12)).expect("submit");
        let (want, ..) = collect(&mut sub).await;
        let mut sub = p
            .submit_holding_kv(sampled(1), Duration::from_secs(5))
            .expect("submit");
        let (first, ..) = collect(&mut sub).await;
        let export = p.export_kv(sub.id).await.expect("export");
        assert!(export.rng_state.is_some());
        let mut sub2 = d
            .submit_prefilled(sampled(12), first[0], export)
            .await
            .expect("adopted");
        let (rest, ..) = collect(&mut sub2).await;
        let mut got = first;
        got.extend(rest);
        assert_eq!(got, want, "P→D sampling equals one instance's");
        assert_eq!(p.release_kv(sub.id).await, Ok(true));
        all_free(&p).await;
        all_free(&d).await;
    }

    #[tokio::test]
    async fn an_unclaimed_lease_expires() {
        let p = engine();
        let mut sub = p
            .submit_holding_kv(req(1), Duration::from_millis(60))
            .expect("submit");
        collect(&mut sub).await;
        assert!(p.export_kv(sub.id).await.is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            p.export_kv(sub.id).await,
            Err(HandoffError::NoLease(sub.id))
        );
        all_free(&p).await;
    }

    #[tokio::test]
    async fn a_cancelled_prefill_leaves_no_lease() {
        let p = engine();
        let sub = p
            .submit_holding_kv(req(50), Duration::from_secs(5))
            .expect("submit");
        let id = sub.id;
        drop(sub);
        all_free(&p).await;
        assert_eq!(p.export_kv(id).await, Err(HandoffError::NoLease(id)));
    }
}
