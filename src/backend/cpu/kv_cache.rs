//! The paged KV cache: storage only (ownership of blocks is the block manager's).
//!
//! Per layer, keys and values each live in one f32 array. Values are laid out
//! `[block][kv_head][slot][head_dim]`; keys are transposed within each block,
//! `[block][kv_head][head_dim][slot]`, so the attention kernel scores a run of slots with one
//! vector per dimension instead of a horizontal sum per key. Its size comes from a byte budget
//! given at construction.

use crate::backend::{BackendError, BlockId, KvChunk};

pub struct KvCache {
    pub layers: usize,
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

    /// As many blocks as fit in `budget_bytes` (at least one, or an error).
    pub fn with_budget(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        budget_bytes: usize,
    ) -> Result<Self, BackendError> {
        if block_size == 0 {
            return Err(BackendError::KvCache("block size must be positive".into()));
        }
        let per_block = Self::bytes_per_block(layers, kv_heads, head_dim, block_size);
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

    /// Keys and values of one layer.
    pub fn layer(&self, layer: usize) -> (&[f32], &[f32]) {
        let (k, v) = &self.data[layer];
        (k, v)
    }

    /// Writes the keys/values of one token (`kv_heads × head_dim` each) into `block`, `slot`.
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

    pub fn layout_tag(&self) -> String {
        format!(
            "cpu-f32-kt/l{}/h{}/d{}/b{}",
            self.layers, self.kv_heads, self.head_dim, self.block_size
        )
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
        let per_block = self.bytes_per_block_total();
        if kv.layout != self.layout_tag()
            || kv.bytes_per_block != per_block
            || kv.data.len() != ids.len() * per_block
        {
            return Err(BackendError::KvCache(format!(
                "incompatible KV chunk (layout `{}`, {} bytes; expected `{}`, {} bytes)",
                kv.layout,
                kv.data.len(),
                self.layout_tag(),
                ids.len() * per_block
            )));
        }
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

fn zeroed(n: usize) -> Result<Vec<f32>, BackendError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|e| BackendError::KvCache(format!("cannot allocate {} bytes: {e}", n * 4)))?;
    v.resize(n, 0.0);
    Ok(v)
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
}
