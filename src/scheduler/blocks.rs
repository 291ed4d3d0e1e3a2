//! The KV block pool: `num_blocks` ids of `block_size` tokens, reference counted, handed out as
//! RAII [`BlockTable`]s.
//!
//! A [`BlockTable`] is a sequence's lease on its blocks, in order. Dropping it returns every block
//! it holds to the pool, whatever ended the sequence (finish, cancel, error, preemption, a panic
//! unwinding the engine): KV cannot leak. Blocks shared through the prefix cache carry one
//! reference per table holding them. A block whose last reference goes away becomes free, or,
//! when it is in the prefix cache, idle-cached: kept for reuse and evicted LRU when the pool
//! needs blocks.
//!
//! The pool sits behind `Arc<Mutex<_>>` so tables are `Send` (the engine runs on its own thread)
//! and can outlive the scheduler; one lock per table operation, never held across calls.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::prefix::{PrefixCache, PrefixStats, ROOT_HASH};

pub use super::prefix::BlockId;

/// Tokens → blocks needed to hold them.
pub fn blocks_for(tokens: usize, block_size: usize) -> usize {
    tokens.div_ceil(block_size.max(1))
}

/// Not enough blocks, even after evicting every idle cached block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("out of KV blocks: {needed} needed, {available} available")]
pub struct OutOfBlocks {
    pub needed: usize,
    pub available: usize,
}

/// Pool counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    pub total: usize,
    /// Never used, or released and not cached.
    pub free: usize,
    /// In the prefix cache (referenced or idle).
    pub cached: usize,
    /// In the prefix cache with no reference: reusable by a hit, evictable.
    pub cached_idle: usize,
    /// Referenced by at least one table.
    pub in_use: usize,
}

impl BlockStats {
    /// Blocks a new lease can get: free plus evictable.
    pub fn available(&self) -> usize {
        self.free + self.cached_idle
    }

    /// `npu_cache_usage_perc` (0..1): referenced blocks over all blocks.
    pub fn usage(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.in_use as f64 / self.total as f64
        }
    }
}

#[derive(Debug)]
struct Pool {
    refcount: Vec<u32>,
    free: Vec<BlockId>,
    cache: PrefixCache,
}

impl Pool {
    fn available(&self) -> usize {
        self.free.len() + self.cache.idle_len()
    }

    fn take(&mut self) -> Option<BlockId> {
        let block = self.free.pop().or_else(|| self.cache.evict_lru())?;
        if let Some(rc) = self.refcount.get_mut(block as usize) {
            *rc = 1;
        }
        Some(block)
    }

    fn retain(&mut self, block: BlockId) {
        if let Some(rc) = self.refcount.get_mut(block as usize) {
            if *rc == 0 {
                self.cache.mark_busy(block);
            }
            *rc += 1;
        }
    }

    fn release(&mut self, block: BlockId) {
        let Some(rc) = self.refcount.get_mut(block as usize) else {
            return;
        };
        if *rc == 0 {
            tracing::error!(block, "KV block released more often than leased");
            return;
        }
        *rc -= 1;
        if *rc == 0 {
            if self.cache.contains(block) {
                self.cache.mark_idle(block);
            } else {
                self.free.push(block);
            }
        }
    }
}

type Shared = Arc<Mutex<Pool>>;

fn lock(pool: &Shared) -> MutexGuard<'_, Pool> {
    // Nothing panics under this lock; should a poisoned lock ever appear, its data is still
    // consistent (every mutation is a few lines without early exits), so keep going.
    pool.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handle on the shared pool (cheap to clone).
#[derive(Debug, Clone)]
pub struct BlockManager {
    pool: Shared,
    block_size: usize,
    num_blocks: usize,
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        // Highest id on top of the stack last, so fresh pools hand out 0, 1, 2, ...
        let free = (0..num_blocks as BlockId).rev().collect();
        let pool = Pool {
            refcount: vec![0; num_blocks],
            free,
            cache: PrefixCache::new(num_blocks),
        };
        Self {
            pool: Arc::new(Mutex::new(pool)),
            block_size: block_size.max(1),
            num_blocks,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// An empty lease to grow.
    pub fn new_table(&self) -> BlockTable {
        BlockTable {
            pool: Arc::clone(&self.pool),
            ids: Vec::new(),
        }
    }

    /// Free plus evictable blocks.
    pub fn available(&self) -> usize {
        lock(&self.pool).available()
    }

    pub fn stats(&self) -> BlockStats {
        let p = lock(&self.pool);
        BlockStats {
            total: self.num_blocks,
            free: p.free.len(),
            cached: p.cache.len(),
            cached_idle: p.cache.idle_len(),
            in_use: p.refcount.iter().filter(|&&rc| rc > 0).count(),
        }
    }

    /// Drops every idle block from the prefix cache into the free list (their KV can no longer
    /// be trusted); returns how many. Blocks in use stay with their owners.
    pub fn forget_cached(&self) -> usize {
        let mut p = lock(&self.pool);
        let mut n = 0;
        while let Some(block) = p.cache.evict_lru() {
            p.free.push(block);
            n += 1;
        }
        n
    }

    pub fn prefix_stats(&self) -> PrefixStats {
        lock(&self.pool).cache.stats
    }

    /// Leases the longest cached prefix of `tokens` (at most `max_blocks` full blocks), whose
    /// chain keys are `keys`. The returned table holds a reference on every matched block.
    pub fn match_prefix(&self, keys: &[u64], tokens: &[u32], max_blocks: usize) -> BlockTable {
        let mut table = self.new_table();
        let mut p = lock(&self.pool);
        let mut parent = ROOT_HASH;
        for (i, &key) in keys.iter().take(max_blocks).enumerate() {
            let start = i * self.block_size;
            let Some(block_tokens) = tokens.get(start..start + self.block_size) else {
                break;
            };
            let Some(block) = p.cache.lookup(key, parent, block_tokens) else {
                break;
            };
            p.retain(block);
            table.ids.push(block);
            parent = key;
        }
        table
    }

    /// Counts one first-admission lookup into the hit counters.
    pub fn record_lookup(
        &self,
        query_tokens: usize,
        hit_tokens: usize,
        query_blocks: usize,
        hit_blocks: usize,
    ) {
        let mut p = lock(&self.pool);
        let s = &mut p.cache.stats;
        s.queries += 1;
        s.query_tokens += query_tokens as u64;
        s.hit_tokens += hit_tokens as u64;
        s.query_blocks += query_blocks as u64;
        s.hit_blocks += hit_blocks as u64;
    }

    /// Snapshot of every cached block's tokens (invariant checks).
    pub fn cached_contents(&self) -> HashMap<BlockId, Vec<u32>> {
        let p = lock(&self.pool);
        (0..self.num_blocks as BlockId)
            .filter_map(|b| p.cache.tokens_of(b).map(|t| (b, t.to_vec())))
            .collect()
    }

    /// Checks the pool against `owners[b]` = number of live tables holding block `b`: every
    /// block is exactly one of free, owned (refcount = owners), or cached-and-unreferenced.
    pub fn audit(&self, owners: &[u32]) -> Result<(), String> {
        let p = lock(&self.pool);
        if owners.len() != self.num_blocks || p.refcount.len() != self.num_blocks {
            return Err(format!(
                "owner map has {} entries for {} blocks",
                owners.len(),
                self.num_blocks
            ));
        }
        let mut in_free = vec![false; self.num_blocks];
        for &b in &p.free {
            let slot = in_free
                .get_mut(b as usize)
                .ok_or(format!("free list holds unknown block {b}"))?;
            if *slot {
                return Err(format!("block {b} is twice in the free list"));
            }
            *slot = true;
        }
        for (b, (&rc, &own)) in p.refcount.iter().zip(owners).enumerate() {
            let id = b as BlockId;
            let (free, cached, idle) = (in_free[b], p.cache.contains(id), p.cache.is_idle(id));
            if rc != own {
                return Err(format!("block {b}: refcount {rc} but {own} live owners"));
            }
            let ok = if rc > 0 {
                !free && !idle
            } else {
                free != idle && (!free || !cached)
            };
            if !ok {
                return Err(format!(
                    "block {b}: refcount {rc}, free {free}, cached {cached}, idle {idle}"
                ));
            }
        }
        p.cache.audit()
    }
}

/// A sequence's lease on its KV blocks, in position order (see the module docs).
#[derive(Debug)]
pub struct BlockTable {
    pool: Shared,
    ids: Vec<BlockId>,
}

impl BlockTable {
    pub fn ids(&self) -> &[BlockId] {
        &self.ids
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Leases `extra` more blocks, all or nothing.
    pub fn grow(&mut self, extra: usize) -> Result<(), OutOfBlocks> {
        if extra == 0 {
            return Ok(());
        }
        let mut p = lock(&self.pool);
        let available = p.available();
        if available < extra {
            return Err(OutOfBlocks {
                needed: extra,
                available,
            });
        }
        self.ids.reserve(extra);
        for _ in 0..extra {
            match p.take() {
                Some(block) => self.ids.push(block),
                None => {
                    return Err(OutOfBlocks {
                        needed: extra,
                        available,
                    })
                }
            }
        }
        Ok(())
    }

    /// Returns the blocks past the first `len` to the pool.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.ids.len() {
            return;
        }
        let mut p = lock(&self.pool);
        for block in self.ids.drain(len..).rev() {
            p.release(block);
        }
    }

    /// Publishes block `index` (now full with `tokens`) to the prefix cache under `key`, its
    /// parent key being `parent`. False when not published (key taken, or already cached).
    pub fn publish(&self, index: usize, key: u64, parent: u64, tokens: &[u32]) -> bool {
        let Some(&block) = self.ids.get(index) else {
            return false;
        };
        lock(&self.pool).cache.insert(block, key, parent, tokens)
    }
}

impl Drop for BlockTable {
    fn drop(&mut self) {
        // Deepest block first, so it is the older in the LRU and evicted before its parents.
        self.truncate(0);
    }
}

#[cfg(test)]
mod tests {
    use super::super::prefix::{chain_hash, extend_hash_chain};
    use super::*;

    fn no_owners(m: &BlockManager) -> Vec<u32> {
        vec![0; m.num_blocks()]
    }

    #[test]
    fn tables_lease_and_return_on_drop() {
        let m = BlockManager::new(8, 4);
        let mut a = m.new_table();
        a.grow(3).unwrap();
        let mut b = m.new_table();
        assert_eq!(
            b.grow(6),
            Err(OutOfBlocks {
                needed: 6,
                available: 5
            })
        );
        assert!(b.is_empty(), "all or nothing");
        b.grow(5).unwrap();
        assert_eq!(m.available(), 0);
        let mut owners = no_owners(&m);
        for &id in a.ids().iter().chain(b.ids()) {
            owners[id as usize] += 1;
        }
        m.audit(&owners).unwrap();
        b.truncate(2);
        assert_eq!(m.available(), 3);
        drop(a);
        drop(b);
        assert_eq!(
            m.stats(),
            BlockStats {
                total: 8,
                free: 8,
                ..BlockStats::default()
            }
        );
        m.audit(&no_owners(&m)).unwrap();
    }

    #[test]
    fn tables_move_across_threads() {
        let m = BlockManager::new(4, 2);
        let mut t = m.new_table();
        t.grow(4).unwrap();
        std::thread::spawn(move || drop(t)).join().unwrap();
        assert_eq!(m.available(), 4);
    }

    #[test]
    fn shared_prefix_blocks_are_refcounted_then_idle_then_evicted() {
        let m = BlockManager::new(4, 2);
        let tokens = [1, 2, 3, 4, 5];
        let mut keys = Vec::new();
        extend_hash_chain(&mut keys, &tokens, 2);
        let mut a = m.new_table();
        a.grow(3).unwrap();
        assert!(a.publish(0, keys[0], ROOT_HASH, &tokens[0..2]));
        assert!(a.publish(1, keys[1], keys[0], &tokens[2..4]));
        let b = m.match_prefix(&keys, &tokens, 2);
        assert_eq!(b.ids(), &a.ids()[..2]);
        let mut owners = no_owners(&m);
        for &id in a.ids().iter().chain(b.ids()) {
            owners[id as usize] += 1;
        }
        m.audit(&owners).unwrap();
        drop(a);
        drop(b);
        let s = m.stats();
        assert_eq!((s.free, s.cached, s.cached_idle, s.in_use), (2, 2, 2, 0));
        // A hit on idle blocks takes them out of the LRU.
        let c = m.match_prefix(&keys, &tokens, 2);
        assert_eq!(c.len(), 2);
        assert_eq!(m.stats().cached_idle, 0);
        drop(c);
        // Needing all four blocks evicts both idle ones, the deeper one first.
        let mut d = m.new_table();
        d.grow(4).unwrap();
        assert_eq!(m.stats().cached, 0);
        assert_eq!(m.prefix_stats().evictions, 2);
        drop(d);
        m.audit(&no_owners(&m)).unwrap();
        assert_eq!(chain_hash(ROOT_HASH, &tokens[0..2]), keys[0]);
    }

    #[test]
    fn match_stops_at_first_miss_and_respects_limit() {
        let m = BlockManager::new(6, 2);
        let tokens = [1, 2, 3, 4, 5, 6];
        let mut keys = Vec::new();
        extend_hash_chain(&mut keys, &tokens, 2);
        let mut a = m.new_table();
        a.grow(3).unwrap();
        a.publish(0, keys[0], ROOT_HASH, &tokens[0..2]);
        a.publish(2, keys[2], keys[1], &tokens[4..6]); // block 1 unpublished: chain broken
        assert_eq!(m.match_prefix(&keys, &tokens, 3).len(), 1);
        assert_eq!(m.match_prefix(&keys, &tokens, 0).len(), 0);
    }
}
