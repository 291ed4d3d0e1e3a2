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
}

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
        kv: &KvChunk,
        events: UnboundedSender<TokenEvent>,
    ) -> Result<(), HandoffError> {
        let now = Instant::now();
        let seq = SeqRequest {
            id,
            prompt: req.prompt.clone(),
            max_new_tokens: req.max_new_tokens,
            priority: req.priority,
            arrival: now,
        };
        let blocks = self.scheduler.adopt(seq, first_token, now)?;
        if let Err(e) = self.backend.import_blocks(&blocks, kv) {
            let msg = e.to_string();
            // Aborted, not Stop/Length: the blocks go back to the pool, never to a lease.
            self.scheduler
                .finish(id, FinishReason::Aborted(AbortReason::Engine(msg.clone())));
            return Err(HandoffError::Backend(msg));
        }
        self.scheduler.kv_imported(id);
        let stops = (!req.ignore_eos && self.eos.contains(&first_token))
            || req.stop_token_ids.contains(&first_token);
        self.admit(id, req, events, vec![first_token]);
        if stops {
            // The first token already ended it (the prefill side should not have sent it).
            self.end(id, Finish::Stop);
        }
        Ok(())
    }
}
