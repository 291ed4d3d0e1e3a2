//! The paged KV cache: storage only (ownership of blocks is the block manager's).
//!
//! Per layer, keys and values each live in one f32 array. Values are laid out
//! `[block][kv_head][slot][head_dim]`; keys are transposed within each block,
//! `[block][kv_head][head_dim][slot]`, so the attention kernel scores a run of slots with one
//! vector per dimension instead of a horizontal sum per key. Its size comes from a byte budget
//! given at construction.
//!
//! A cache may hold only a range of the model's layers (a node's share of a model split by
//! layers, [`KvCache::for_layers`]): its arrays are indexed by local slot (global layer minus
//! the range's start), its block is that much smaller (the budget buys more of them), and its
//! layout tag names the range, so KV moves only between caches of the same share.

use std::ops::Range;

use crate::backend::{BackendError, BlockId, KvChunk};

pub struct KvCache {
    /// Layers held (the length of [`KvCache::held`]).
    pub layers: usize,
    /// Global indices of the layers held; local slot `i` is layer `held.start + i`.
    pub held: Range<usize>,
    /// Decoder layers of the whole model.
    pub model_layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub num_blocks: usize,
    /// Per layer: (keys, values).
    data: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvCache {
    /// Bytes one block takes across all layers, keys and values.
    pub fn bytes_per_block(layers: usize, kv_heads: usize, head_dim: usize, bs: usize) -> usize {
        layers * 2 * kv_heads * bs * head_dim * std::mem::size_of::<f32>()
    }

    /// A cache of all `layers` layers with as many blocks as fit in `budget_bytes` (at least
    /// one, or an error).
    pub fn with_budget(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        budget_bytes: usize,
    ) -> Result<Self, BackendError> {
        Self::for_layers(
            0..layers,
            layers,
            kv_heads,
            head_dim,
            block_size,
            budget_bytes,
        )
    }

    /// A cache of the layers `held` of a model of `model_layers` layers, with as many blocks
    /// as fit in `budget_bytes`. An empty `held` (a node holding only the embedding and LM
    /// head) stores nothing; its block count is what the budget buys at one layer's block, so
    /// the block pool built on it stays the budget's size rather than unbounded.
    pub fn for_layers(
        held: Range<usize>,
        model_layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        budget_bytes: usize,
    ) -> Result<Self, BackendError> {
        if block_size == 0 {
            return Err(BackendError::KvCache("block size must be positive".into()));
        }
        if held.start > held.end || held.end > model_layers {
            return Err(BackendError::KvCache(format!(
                "layers {held:?} are outside the model's 0..{model_layers}"
            )));
        }
        let layers = held.len();
        let per_block = Self::bytes_per_block(layers.max(1), kv_heads, head_dim, block_size);
        let num_blocks = budget_bytes / per_block.max(1);
        if num_blocks == 0 {
            return Err(BackendError::KvCache(format!(
                "budget of {budget_bytes} bytes is below one block ({per_block} bytes)"
            )));
        }
        if num_blocks > BlockId::MAX as usize {
            return Err(BackendError::KvCache(format!(
                "{num_blocks} blocks exceed the id range"
            )));
        }
        let per_layer = num_blocks * kv_heads * block_size * head_dim;
        let mut data = Vec::with_capacity(layers);
        for _ in 0..layers {
            data.push((zeroed(per_layer)?, zeroed(per_layer)?));
        }
        Ok(Self {
            layers,
            held,
            model_layers,
            kv_heads,
            head_dim,
            block_size,
            num_blocks,
            data,
        })
    }

    pub fn bytes_per_block_total(&self) -> usize {
        Self::bytes_per_block(self.layers, self.kv_heads, self.head_dim, self.block_size)
    }

    /// Floats of one head within one block.
    fn head_stride(&self) -> usize {
        self.block_size * self.head_dim
    }

    /// Keys and values of one layer, by local slot.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.data[layer];
        (k, v)
    }

    /// Writes the keys/values of one token (`kv_heads × head_dim` each) into `block`, `slot`
    /// of the layer at local slot `layer`.
    pub fn write(&mut self, layer: usize, block: BlockId, slot: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let stride = self.head_stride();
        let block_base = block as usize * self.kv_heads * stride;
        let (kc, vc) = &mut self.data[layer];
        let bs = self.block_size;
        for h in 0..self.kv_heads {
            let head = block_base + h * stride;
            for (d, x) in k[h * hd..(h + 1) * hd].iter().enumerate() {
                kc[head + d * bs + slot] = *x;
            }
            let at = head + slot * hd;
            vc[at..at + hd].copy_from_slice(&v[h * hd..(h + 1) * hd]);
        }
    }

    fn check_ids(&self, ids: &[BlockId]) -> Result<(), BackendError> {
        match ids.iter().find(|&&b| b as usize >= self.num_blocks) {
            Some(b) => Err(BackendError::KvCache(format!(
                "block {b} out of range (cache has {} blocks)",
                self.num_blocks
            ))),
            None => Ok(()),
        }
    }

    /// `cpu-f32-kt/l{model layers}/h{kv heads}/d{head dim}/b{block size}`, with
    /// `;layers={a}..{b}` appended when the cache holds only the layers `a..b`.
    pub fn layout_tag(&self) -> String {
        let base = format!(
            "cpu-f32-kt/l{}/h{}/d{}/b{}",
            self.model_layers, self.kv_heads, self.head_dim, self.block_size
        );
        if self.held == (0..self.model_layers) {
            base
        } else {
            format!("{base};layers={}..{}", self.held.start, self.held.end)
        }
    }

    /// Copies blocks out, each as layer-major keys then values, little-endian f32.
    pub fn export(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        self.check_ids(ids)?;
        let n = self.kv_heads * self.head_stride();
        let mut data = Vec::with_capacity(ids.len() * self.bytes_per_block_total());
        for &b in ids {
            for (k, v) in &self.data {
                for x in k[b as usize * n..(b as usize + 1) * n].iter() {
                    data.extend_from_slice(&x.to_le_bytes());
                }
                for x in v[b as usize * n..(b as usize + 1) * n].iter() {
                    data.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        Ok(KvChunk {
            layout: self.layout_tag(),
            bytes_per_block: self.bytes_per_block_total(),
            data,
        })
    }

    /// Writes blocks produced by [`KvCache::export`] of a cache with the same layout.
    pub fn import(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError> {
        self.check_ids(ids)?;
        kv.check(&self.layout_tag(), self.bytes_per_block_total(), ids)?;
        let n = self.kv_heads * self.head_stride();
        let mut src = kv
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
        for &b in ids {
            for (k, v) in &mut self.data {
                for x in k[b as usize * n..(b as usize + 1) * n].iter_mut() {
                    *x = src.next().unwrap_or(0.0);
                }
                for x in v[b as usize * n..(b as usize + 1) * n].iter_mut() {
                    *x = src.next().unwrap_or(0.0);
                }
            }
        }
        Ok(())
    }
}

/// `n` zeroed floats of cache, on huge pages where the system gives them (`hugepages`).
fn zeroed(n: usize) -> Result<Vec<f32>, BackendError> {
    super::hugepages::zeroed_vec(n)
        .map_err(|e| BackendError::KvCache(format!("cannot allocate {} bytes: {e}", n * 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_decides_block_count() {
        let per = KvCache::bytes_per_block(2, 2, 4, 8);
        let c = KvCache::with_budget(2, 2, 4, 8, per * 3 + 5).expect("fits");
        assert_eq!(c.num_blocks, 3);
        assert!(KvCache::with_budget(2, 2, 4, 8, per - 1).is_err());
    }

    #[test]
    fn export_import_round_trip() {
        let mut a = KvCache::with_budget(2, 2, 4, 2, KvCache::bytes_per_block(2, 2, 4, 2) * 4)
            .expect("fits");
        let k: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..8).map(|i| -(i as f32)).collect();
        a.write(1, 2, 1, &k, &v);
        let chunk = a.export(&[2]).expect("export");
        let mut b = KvCache::with_budget(2, 2, 4, 2, KvCache::bytes_per_block(2, 2, 4, 2) * 4)
            .expect("fits");
        b.import(&[0], &chunk).expect("import");
        assert_eq!(b.export(&[0]).expect("export").data, chunk.data);
        assert!(b.import(&[9], &chunk).is_err());
    }

    #[test]
    fn a_share_holds_fewer_layers_and_tags_them() {
        let budget = KvCache::bytes_per_block(4, 2, 4, 2) * 3;
        let whole = KvCache::with_budget(4, 2, 4, 2, budget).expect("fits");
        let part = KvCache::for_layers(1..3, 4, 2, 4, 2, budget).expect("fits");
        assert_eq!(whole.num_blocks, 3);
        assert_eq!(part.num_blocks, 6, "half the layers: twice the blocks");
        assert_eq!(
            part.bytes_per_block_total() * 2,
            whole.bytes_per_block_total()
        );
        assert_eq!(whole.layout_tag(), "cpu-f32-kt/l4/h2/d4/b2");
        assert_eq!(part.layout_tag(), "cpu-f32-kt/l4/h2/d4/b2;layers=1..3");
        let mut other = KvCache::for_layers(1..3, 4, 2, 4, 2, budget).expect("fits");
        let chunk = part.export(&[5]).expect("export");
        other.import(&[0], &chunk).expect("same share imports");
        let mut whole = whole;
        assert!(
            whole.import(&[0], &chunk).is_err(),
            "a share's KV is not a whole's"
        );
        let none = KvCache::for_layers(2..2, 4, 2, 4, 2, budget).expect("fits");
        assert_eq!((none.num_blocks, none.bytes_per_block_total()), (12, 0));
        assert!(KvCache::for_layers(3..5, 4, 2, 4, 2, budget).is_err());
    }
}
