//! [`Scheduler::check_invariants`]: the scheduler's and the pool's bookkeeping agree, for tests
//! (and for a debug endpoint, should one want it). Cost: a pass over every sequence and block.

use std::collections::HashSet;

use super::blocks::blocks_for;
use super::sched::Scheduler;
use super::sequence::SeqStatus;

impl Scheduler {
    /// Every block is exactly one of: free, owned by live sequences (refcount = number of
    /// owners), or cached and unreferenced. Waiting sequences own nothing; a running
    /// sequence's table covers exactly its computed (plus in-flight) tokens; the queues and the
    /// sequence map agree; limits hold; and every full computed block that is in the prefix
    /// cache holds the sequence's own tokens. KV leases own their blocks like sequences do.
    pub fn check_invariants(&self) -> Result<(), String> {
        let c = &self.cfg.raw;
        let bs = c.block_size;
        let waiting: HashSet<_> = self.waiting.iter().copied().collect();
        let running: HashSet<_> = self.running.iter().copied().collect();
        if waiting.len() != self.waiting.len() || running.len() != self.running.len() {
            return Err("a sequence is twice in a queue".into());
        }
        if waiting.len() + running.len() != self.seqs.len() || !waiting.is_disjoint(&running) {
            return Err(format!(
                "{} sequences but {} waiting and {} running",
                self.seqs.len(),
                waiting.len(),
                running.len()
            ));
        }
        if running.len() > c.max_batch_size {
            return Err(format!(
                "{} running > maxBatchSize {}",
                running.len(),
                c.max_batch_size
            ));
        }
        let mut owners = vec![0u32; c.num_blocks];
        let cached = self.blocks.cached_contents();
        for (&id, s) in &self.seqs {
            let err = |what: String| Err(format!("sequence {id}: {what}"));
            if s.tokens.len() > c.max_seq_len || s.generated() > s.max_new {
                return err(format!(
                    "{} tokens, {} generated of {}",
                    s.tokens.len(),
                    s.generated(),
                    s.max_new
                ));
            }
            if s.computed + s.in_flight > s.tokens.len() {
                return err(format!(
                    "computed {} + in flight {} > {} tokens",
                    s.computed,
                    s.in_flight,
                    s.tokens.len()
                ));
            }
            if s.in_flight > 0 && self.in_flight.is_none() {
                return err("tokens in flight without a plan in flight".into());
            }
            match (&s.status, &s.table) {
                (SeqStatus::Waiting, None) if waiting.contains(&id) => {
                    if s.computed != 0 || s.in_flight != 0 {
                        return err("waiting with KV".into());
                    }
                }
                (SeqStatus::Running, Some(table)) if running.contains(&id) => {
                    let want = blocks_for(s.computed + s.in_flight, bs);
                    if table.len() != want {
                        return err(format!(
                            "{} blocks for {} computed + {} in flight tokens (want {want})",
                            table.len(),
                            s.computed,
                            s.in_flight
                        ));
                    }
                    if s.prefilled && s.in_flight == 0 && s.computed + 1 != s.tokens.len() {
                        return err(format!(
                            "decoding with {} of {} tokens computed",
                            s.computed,
                            s.tokens.len()
                        ));
                    }
                    for (i, &b) in table.ids().iter().enumerate() {
                        let slot = owners
                            .get_mut(b as usize)
                            .ok_or(format!("sequence {id}: unknown block {b}"))?;
                        *slot += 1;
                        let full_computed = (i + 1) * bs <= s.computed;
                        match (full_computed, cached.get(&b)) {
                            (false, Some(_)) => {
                                return err(format!("block {i} (id {b}) is cached but not full"))
                            }
                            (true, Some(tokens))
                                if s.tokens.get(i * bs..(i + 1) * bs)
                                    != Some(tokens.as_slice()) =>
                            {
                                return err(format!(
                                    "block {i} (id {b}) is cached with other tokens"
                                ));
                            }
                            _ => {}
                        }
                    }
                }
                (status, table) => {
                    return err(format!(
                        "status {status:?} with table {:?}",
                        table.as_ref().map(|t| t.ids())
                    ));
                }
            }
        }
        for (id, lease) in &self.leases {
            if self.seqs.contains_key(id) {
                return Err(format!("sequence {id} is live and holds a lease"));
            }
            if lease.block_ids().len() != blocks_for(lease.kv_tokens, bs) {
                return Err(format!(
                    "lease {id}: {} blocks for {} KV tokens",
                    lease.block_ids().len(),
                    lease.kv_tokens
                ));
            }
            for &b in lease.block_ids() {
                *owners
                    .get_mut(b as usize)
                    .ok_or(format!("lease {id}: unknown block {b}"))? += 1;
            }
        }
        self.blocks.audit(&owners)
    }
}
