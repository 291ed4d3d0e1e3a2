//! Automatic prefix cache: the index of FULL KV blocks by the hash chain of their tokens, the
//! LRU list of cached blocks nobody references, and the hit counters behind
//! `npu_prefix_cache_hit_rate`, `all_radix_match_num` and `npu_radix_match_hit_num`.
//!
//! Block `i` of a token sequence is keyed by `chain_hash(key(i-1), tokens[i*bs..(i+1)*bs])`
//! (block 0 chains from [`ROOT_HASH`]), so a key names the whole prefix up to and including the
//! block. A hit is verified: the cached entry must hold exactly the same tokens and the same
//! parent key, so a wrong reuse needs a 64-bit collision of the chain over two different prefixes
//! that also end in the same block of tokens.
//!
//! This module only keeps the index; reference counts and the free list are the
//! [`super::blocks`] pool's, which calls in here under its lock. A cached block is either
//! referenced (refcount > 0; not in the LRU) or idle (refcount 0; in the LRU, evictable).

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};

pub use crate::backend::BlockId;

/// Parent key of a sequence's first block.
pub const ROOT_HASH: u64 = 0x6d69_6e64_6965_5f70;

/// Key of a block whose parent block has key `parent`.
pub fn chain_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// Extends `keys` to cover every full block of `tokens` (keys already there are kept).
pub fn extend_hash_chain(keys: &mut Vec<u64>, tokens: &[u32], block_size: usize) {
    if block_size == 0 {
        return;
    }
    let done = keys.len();
    for block in tokens.chunks_exact(block_size).skip(done) {
        let parent = keys.last().copied().unwrap_or(ROOT_HASH);
        keys.push(chain_hash(parent, block));
    }
}

/// Prefix-cache counters (cumulative). Token counters follow MindIE: per first admission of a
/// request, `query_tokens` += prompt tokens and `hit_tokens` += prompt tokens served from cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// First admissions that looked the cache up.
    pub queries: u64,
    /// Prompt tokens looked up (`all_radix_match_num`).
    pub query_tokens: u64,
    /// Prompt tokens found in cache (`npu_radix_match_hit_num`).
    pub hit_tokens: u64,
    /// Full blocks that were eligible for reuse.
    pub query_blocks: u64,
    /// Full blocks reused.
    pub hit_blocks: u64,
    /// Idle cached blocks evicted to make room.
    pub evictions: u64,
}

impl PrefixStats {
    /// `npu_prefix_cache_hit_rate`: hit tokens / looked-up tokens (0 before any lookup).
    pub fn hit_rate(&self) -> f64 {
        if self.query_tokens == 0 {
            0.0
        } else {
            self.hit_tokens as f64 / self.query_tokens as f64
        }
    }
}

#[derive(Debug)]
struct Entry {
    key: u64,
    parent: u64,
    tokens: Box<[u32]>,
    /// LRU tick while idle.
    idle_tick: Option<u64>,
}

/// The index (see the module docs).
#[derive(Debug)]
pub(crate) struct PrefixCache {
    by_key: HashMap<u64, BlockId>,
    entries: Vec<Option<Entry>>,
    /// tick → block; the smallest tick is the least recently released.
    idle: BTreeMap<u64, BlockId>,
    clock: u64,
    pub stats: PrefixStats,
}

impl PrefixCache {
    pub fn new(num_blocks: usize) -> Self {
        let mut entries = Vec::with_capacity(num_blocks);
        entries.resize_with(num_blocks, || None);
        Self {
            by_key: HashMap::new(),
            entries,
            idle: BTreeMap::new(),
            clock: 0,
            stats: PrefixStats::default(),
        }
    }

    fn entry(&self, block: BlockId) -> Option<&Entry> {
        self.entries.get(block as usize).and_then(Option::as_ref)
    }

    pub fn contains(&self, block: BlockId) -> bool {
        self.entry(block).is_some()
    }

    pub fn is_idle(&self, block: BlockId) -> bool {
        self.entry(block).is_some_and(|e| e.idle_tick.is_some())
    }

    /// Cached blocks (referenced or idle).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn idle_len(&self) -> usize {
        self.idle.len()
    }

    /// The block holding `tokens` after the prefix keyed `parent`, if cached (verified).
    pub fn lookup(&self, key: u64, parent: u64, tokens: &[u32]) -> Option<BlockId> {
        let block = *self.by_key.get(&key)?;
        let e = self.entry(block)?;
        (e.parent == parent && *e.tokens == *tokens).then_some(block)
    }

    /// Publishes a freshly filled, referenced block. False when the key is already cached (by
    /// another block: this one stays private) or the block is cached already.
    pub fn insert(&mut self, block: BlockId, key: u64, parent: u64, tokens: &[u32]) -> bool {
        if self.by_key.contains_key(&key) || self.contains(block) {
            return false;
        }
        let Some(slot) = self.entries.get_mut(block as usize) else {
            return false;
        };
        *slot = Some(Entry {
            key,
            parent,
            tokens: tokens.into(),
            idle_tick: None,
        });
        self.by_key.insert(key, block);
        true
    }

    /// A cached block's last reference went away: it joins the LRU as most recent.
    pub fn mark_idle(&mut self, block: BlockId) {
        let tick = self.clock;
        if let Some(Some(e)) = self.entries.get_mut(block as usize) {
            if e.idle_tick.is_none() {
                e.idle_tick = Some(tick);
                self.idle.insert(tick, block);
                self.clock += 1;
            }
        }
    }

    /// An idle cached block is referenced again (prefix hit): it leaves the LRU.
    pub fn mark_busy(&mut self, block: BlockId) {
        if let Some(Some(e)) = self.entries.get_mut(block as usize) {
            if let Some(tick) = e.idle_tick.take() {
                self.idle.remove(&tick);
            }
        }
    }

    /// Drops the least recently released idle block from the cache and hands it out.
    pub fn evict_lru(&mut self) -> Option<BlockId> {
        let (_, block) = self.idle.pop_first()?;
        if let Some(e) = self.entries.get_mut(block as usize).and_then(Option::take) {
            if self.by_key.get(&e.key) == Some(&block) {
                self.by_key.remove(&e.key);
            }
        }
        self.stats.evictions += 1;
        Some(block)
    }

    /// Tokens of a cached block (tests and invariant checks).
    pub fn tokens_of(&self, block: BlockId) -> Option<&[u32]> {
        self.entry(block).map(|e| &*e.tokens)
    }

    /// Internal consistency of the index, LRU and key map.
    pub fn audit(&self) -> Result<(), String> {
        for (&key, &block) in &self.by_key {
            match self.entry(block) {
                Some(e) if e.key == key => {}
                _ => {
                    return Err(format!(
                        "prefix key {key:#x} points at block {block} without that key"
                    ))
                }
            }
        }
        let cached = self.entries.iter().filter(|e| e.is_some()).count();
        if cached != self.by_key.len() {
            return Err(format!(
                "{cached} cached entries but {} keys",
                self.by_key.len()
            ));
        }
        for (&tick, &block) in &self.idle {
            if self.entry(block).and_then(|e| e.idle_tick) != Some(tick) {
                return Err(format!(
                    "LRU tick {tick} names block {block}, which is not idle at that tick"
                ));
            }
        }
        let idle_entries = self
            .entries
            .iter()
            .flatten()
            .filter(|e| e.idle_tick.is_some())
            .count();
        if idle_entries != self.idle.len() {
            return Err(format!(
                "{idle_entries} idle entries but {} LRU slots",
                self.idle.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_chain_depends_on_the_whole_prefix() {
        let mut a = Vec::new();
        extend_hash_chain(&mut a, &[1, 2, 3, 4, 5, 6, 7], 2);
        assert_eq!(a.len(), 3);
        let mut b = Vec::new();
        extend_hash_chain(&mut b, &[9, 2, 3, 4], 2);
        assert_ne!(a[0], b[0]);
        assert_ne!(
            a[1], b[1],
            "same block tokens after a different prefix must differ"
        );
        // extending keeps what is there
        let before = a.clone();
        extend_hash_chain(&mut a, &[1, 2, 3, 4, 5, 6, 7, 8], 2);
        assert_eq!(&a[..3], &before[..]);
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn lookup_verifies_tokens_and_parent() {
        let mut c = PrefixCache::new(4);
        let k = chain_hash(ROOT_HASH, &[1, 2]);
        assert!(c.insert(0, k, ROOT_HASH, &[1, 2]));
        assert!(
            !c.insert(1, k, ROOT_HASH, &[1, 2]),
            "second publisher of a key stays private"
        );
        assert_eq!(c.lookup(k, ROOT_HASH, &[1, 2]), Some(0));
        assert_eq!(
            c.lookup(k, ROOT_HASH, &[1, 3]),
            None,
            "forged collision: tokens differ"
        );
        assert_eq!(
            c.lookup(k, 7, &[1, 2]),
            None,
            "forged collision: parent differs"
        );
        c.audit().unwrap();
    }

    #[test]
    fn lru_evicts_least_recently_released_first() {
        let mut c = PrefixCache::new(4);
        for b in 0..3u32 {
            assert!(c.insert(b, u64::from(b) + 10, ROOT_HASH, &[b]));
        }
        c.mark_idle(2);
        c.mark_idle(0);
        c.mark_idle(1);
        c.mark_busy(0); // reused: leaves the LRU
        assert_eq!(c.idle_len(), 2);
        assert_eq!(c.evict_lru(), Some(2));
        assert!(!c.contains(2));
        assert_eq!(c.evict_lru(), Some(1));
        assert_eq!(c.evict_lru(), None);
        assert_eq!(c.stats.evictions, 2);
        assert!(c.contains(0));
        c.audit().unwrap();
    }
}
