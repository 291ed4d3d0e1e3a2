//! KV hand-off between instances (PD disaggregation), on the scheduler's side.
//!
//! **Leases (the prefill side).** A sequence marked with [`Scheduler::hold_kv`] keeps its KV
//! blocks when it ends normally (EOS, stop, output limit): instead of returning to the pool,
//! its block table moves into a lease under the sequence's id, with an expiry. The blocks stay
//! out of the free pool (they count as in use) until [`Scheduler::release_lease`] or until
//! [`Scheduler::expire_leases`] finds the lease past its deadline, so a decode instance that
//! never comes cannot hold KV forever. A cancelled or failed sequence leaves no lease.
//!
//! **Adoption (the decode side).** [`Scheduler::adopt`] takes a sequence whose prompt KV
//! arrives from elsewhere: it leases blocks for the prompt at once, and the sequence starts
//! running as if it had just been prefilled here (prompt computed, first token sampled), so
//! its next step is a decode. The caller writes the imported KV into the returned blocks
//! before the next step and confirms with [`Scheduler::kv_imported`] (which publishes the full
//! prompt blocks to the prefix cache, as after a local prefill); if the import fails it ends
//! the sequence with [`Scheduler::finish`].

use std::time::{Duration, Instant};

use super::blocks::{blocks_for, BlockId, BlockTable};
use super::prefix::extend_hash_chain;
use super::sched::{publish_filled_blocks, Scheduler};
use super::sequence::{AddError, SeqId, SeqRequest, SeqStatus, Sequence};

/// KV kept after its sequence ended, for another instance to pull.
#[derive(Debug)]
pub struct Lease {
    pub(crate) table: BlockTable,
    /// Tokens whose KV the blocks hold (the prompt and every computed output token).
    pub kv_tokens: usize,
    pub expires: Instant,
}

impl Lease {
    /// The blocks, in position order.
    pub fn block_ids(&self) -> &[BlockId] {
        self.table.ids()
    }
}

/// Why [`Scheduler::adopt`] refused a prefilled sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Invalid(#[from] AddError),
    #[error(
        "no room for a prefilled sequence: {running} running of maxBatchSize {max_batch_size}"
    )]
    BatchFull {
        running: usize,
        max_batch_size: usize,
    },
    #[error("no room for a prefilled sequence: it needs {needed} KV blocks, {available} are free")]
    OutOfBlocks { needed: usize, available: usize },
}

impl Scheduler {
    /// Marks a live sequence to keep its KV under a lease of `ttl` when it ends normally.
    /// False if the sequence is unknown.
    pub fn hold_kv(&mut self, id: SeqId, ttl: Duration) -> bool {
        match self.seqs.get_mut(&id) {
            Some(seq) => {
                seq.kv_lease = Some(ttl);
                true
            }
            None => false,
        }
    }

    /// Moves an ending sequence's blocks into a lease, if it asked for one (see module docs).
    pub(crate) fn take_lease(&mut self, seq: &mut Sequence, now: Instant) {
        let (Some(ttl), Some(mut table)) = (seq.kv_lease, seq.table.take()) else {
            return;
        };
        // Only the computed KV is worth keeping (an in-flight step's blocks are not).
        table.truncate(blocks_for(seq.computed, self.block_size()));
        if let Some(old) = self.leases.insert(
            seq.id,
            Lease {
                table,
                kv_tokens: seq.computed,
                expires: now + ttl,
            },
        ) {
            tracing::warn!(
                seq = seq.id,
                blocks = old.block_ids().len(),
                "a second lease replaced the first"
            );
        }
    }

    /// The lease of sequence `id`, if one is held.
    pub fn lease(&self, id: SeqId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// Returns a lease's blocks to the pool. False if there is none.
    pub fn release_lease(&mut self, id: SeqId) -> bool {
        self.leases.remove(&id).is_some()
    }

    /// Releases every lease whose expiry is at or before `now`; returns their ids.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<SeqId> {
        let gone: Vec<SeqId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in &gone {
            tracing::warn!(seq = id, "KV lease expired before release; blocks freed");
            self.leases.remove(id);
        }
        gone
    }

    /// The earliest lease expiry (for the engine's sleep).
    pub fn next_lease_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires).min()
    }

    /// Leases held now.
    pub fn num_leases(&self) -> usize {
        self.leases.len()
    }

    /// Starts a sequence whose prompt was prefilled elsewhere: `req.prompt` has KV (to be
    /// imported into the returned blocks) and `first_token` was sampled from it. Limits are
    /// those of [`Scheduler::add`]; the first token counts toward the output limit. Refused
    /// when the running set is full or the blocks are not free now (the caller may retry).
    pub fn adopt(
        &mut self,
        req: SeqRequest,
        first_token: u32,
        now: Instant,
    ) -> Result<Vec<BlockId>, AdoptError> {
        let c = &self.cfg.raw;
        let (max_batch_size, bs, prefix) = (c.max_batch_size, c.block_size, c.enable_prefix_cache);
        if self.seqs.contains_key(&req.id) {
            return Err(AddError::DuplicateId(req.id).into());
        }
        if self.running.len() >= max_batch_size {
            return Err(AdoptError::BatchFull {
                running: self.running.len(),
                max_batch_size,
            });
        }
        let mut seq = self.validated(req)?;
        let prompt_len = seq.prompt_len;
        let needed = blocks_for(prompt_len, bs);
        let mut table = self.blocks.new_table();
        table.grow(needed).map_err(|e| AdoptError::OutOfBlocks {
            needed,
            available: e.available,
        })?;
        let ids = table.ids().to_vec();
        seq.tokens.push(first_token);
        seq.computed = prompt_len;
        seq.prefilled = true;
        seq.admitted_once = true;
        seq.queued_at = now;
        seq.status = SeqStatus::Running;
        seq.table = Some(table);
        if prefix {
            extend_hash_chain(&mut seq.keys, &seq.tokens, bs);
        }
        let id = seq.id;
        let finished = seq.generated() >= seq.max_new;
        self.seqs.insert(id, seq);
        self.running.push(id);
        if finished {
            // A one-token request: the first token was its whole output.
            self.finish_with_event(id, super::FinishReason::Length);
        }
        Ok(ids)
    }

    /// The imported KV of an adopted sequence is in its blocks: publish its full prompt blocks
    /// to the prefix cache (not before, so a failed import never leaves wrong cached blocks).
    pub fn kv_imported(&mut self, id: SeqId) {
        let (bs, prefix) = (self.block_size(), self.cfg.raw.enable_prefix_cache);
        if let (true, Some(seq)) = (prefix, self.seqs.get_mut(&id)) {
            publish_filled_blocks(seq, 0, bs);
        }
    }
}
