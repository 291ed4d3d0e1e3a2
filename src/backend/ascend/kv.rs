//! The paged KV cache in device memory and its export/import (PD handoff, device ↔ host).
//!
//! Per rank and layer, keys and values each live in one buffer `[blocks, block_size,
//! kv_heads_of_rank, head_dim]` in the compute dtype, the layout `aclnnScatterPaKvCache` writes
//! and `aclnnFusedInferAttentionScoreV3` reads (viewed `[blocks, block_size, heads·dim]`).
//! A block of one layer is contiguous, so exporting it is one copy per rank.
//!
//! Exported blocks ([`KvChunk`]) do not depend on the tensor-parallel degree: per block, per
//! layer, keys `[block_size, kv_heads, head_dim]` then values, the heads of all ranks in
//! order, little-endian in the compute dtype; the layout tag
//! `ascend-{dtype}-bsnd/l{layers}/h{kv_heads}/d{head_dim}/b{block_size}` names exactly that,
//! so instances with different `worldSize` exchange KV (and a CPU instance, whose tag differs,
//! is refused).

use std::sync::Arc;

use super::ffi::{Acl, Context, DeviceBuf};
use crate::backend::{BackendError, BlockId, DType, KvChunk};

/// The cache's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    pub layers: usize,
    /// All KV heads of the model.
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub tp: usize,
    pub dtype: DType,
}

impl KvGeometry {
    /// Bytes of one rank's keys (or values) of one block of one layer.
    pub fn rank_layer_block(&self) -> usize {
        self.block_size * (self.kv_heads / self.tp) * self.head_dim * self.dtype.size_bytes()
    }

    /// Device bytes one block takes on each rank (all layers, keys and values).
    pub fn rank_block(&self) -> usize {
        2 * self.layers * self.rank_layer_block()
    }

    /// Bytes of one exported block (all ranks).
    pub fn bytes_per_block(&self) -> usize {
        self.rank_block() * self.tp
    }

    pub fn layout_tag(&self) -> String {
        let d = match self.dtype {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "fp16",
        };
        format!(
            "ascend-{d}-bsnd/l{}/h{}/d{}/b{}",
            self.layers, self.kv_heads, self.head_dim, self.block_size
        )
    }
}

/// One rank's cache: per layer, keys and values.
pub struct RankKv {
    pub k: Vec<DeviceBuf>,
    pub v: Vec<DeviceBuf>,
}

impl RankKv {
    /// `blocks` blocks of every layer on the current device.
    pub fn alloc(acl: &Arc<Acl>, geo: &KvGeometry, blocks: usize) -> Result<RankKv, BackendError> {
        let bytes = blocks * geo.rank_layer_block();
        let mut k = Vec::with_capacity(geo.layers);
        let mut v = Vec::with_capacity(geo.layers);
        for _ in 0..geo.layers {
            k.push(acl.malloc(bytes).map_err(|e| e.at_load())?);
            v.push(acl.malloc(bytes).map_err(|e| e.at_load())?);
        }
        Ok(RankKv { k, v })
    }
}

fn check_ids(ids: &[BlockId], blocks: usize) -> Result<(), BackendError> {
    match ids.iter().find(|&&b| b as usize >= blocks) {
        Some(b) => Err(BackendError::KvCache(format!(
            "block {b} out of range (cache has {blocks} blocks)"
        ))),
        None => Ok(()),
    }
}

/// The slot-major interleave of the ranks' head groups: `(rank, byte range in the rank's
/// block, byte offset in the exported layer block)` for every slot.
fn pieces(geo: &KvGeometry) -> impl Iterator<Item = (usize, std::ops::Range<usize>, usize)> {
    let per = (geo.kv_heads / geo.tp) * geo.head_dim * geo.dtype.size_bytes();
    let (tp, bs) = (geo.tp, geo.block_size);
    (0..bs).flat_map(move |s| (0..tp).map(move |r| (r, s * per..(s + 1) * per, (s * tp + r) * per)))
}

/// Copies blocks `ids` out of the ranks' caches (device → host).
pub fn export(
    acl: &Acl,
    ranks: &[(&Context, &RankKv)],
    geo: &KvGeometry,
    blocks: usize,
    ids: &[BlockId],
) -> Result<KvChunk, BackendError> {
    check_ids(ids, blocks)?;
    let lb = geo.rank_layer_block();
    let mut data = vec![0u8; ids.len() * geo.bytes_per_block()];
    let mut staged = vec![vec![0u8; lb]; geo.tp];
    let mut at = 0;
    for &b in ids {
        for layer in 0..geo.layers {
            for which in 0..2 {
                for (r, (ctx, kv)) in ranks.iter().enumerate() {
                    ctx.make_current().map_err(|e| e.in_step())?;
                    let buf = if which == 0 {
                        &kv.k[layer]
                    } else {
                        &kv.v[layer]
                    };
                    acl.download(&mut staged[r], buf, b as usize * lb)
                        .map_err(|e| e.in_step())?;
                }
                let out = &mut data[at..at + lb * geo.tp];
                for (r, src, dst) in pieces(geo) {
                    out[dst..dst + src.len()].copy_from_slice(&staged[r][src]);
                }
                at += lb * geo.tp;
            }
        }
    }
    Ok(KvChunk {
        layout: geo.layout_tag(),
        bytes_per_block: geo.bytes_per_block(),
        data,
    })
}

/// Writes blocks exported by a cache of the same layout into `ids` (host → device).
pub fn import(
    acl: &Acl,
    ranks: &[(&Context, &RankKv)],
    geo: &KvGeometry,
    blocks: usize,
    ids: &[BlockId],
    kv: &KvChunk,
) -> Result<(), BackendError> {
    check_ids(ids, blocks)?;
    kv.check(&geo.layout_tag(), geo.bytes_per_block(), ids)?;
    let lb = geo.rank_layer_block();
    let mut staged = vec![vec![0u8; lb]; geo.tp];
    let mut at = 0;
    for &b in ids {
        for layer in 0..geo.layers {
            for which in 0..2 {
                let src = &kv.data[at..at + lb * geo.tp];
                for (r, dst, from) in pieces(geo) {
                    staged[r][dst.clone()].copy_from_slice(&src[from..from + dst.len()]);
                }
                for (r, (ctx, cache)) in ranks.iter().enumerate() {
                    ctx.make_current().map_err(|e| e.in_step())?;
                    let buf = if which == 0 {
                        &cache.k[layer]
                    } else {
                        &cache.v[layer]
                    };
                    acl.upload(buf, b as usize * lb, &staged[r])
                        .map_err(|e| e.in_step())?;
                }
                at += lb * geo.tp;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exported_layout_interleaves_ranks_per_slot() {
        let geo = KvGeometry {
            layers: 2,
            kv_heads: 4,
            head_dim: 8,
            block_size: 2,
            tp: 2,
            dtype: DType::BF16,
        };
        assert_eq!(geo.rank_layer_block(), 2 * 2 * 8 * 2);
        assert_eq!(geo.bytes_per_block(), 2 * 2 * 2 * 64);
        assert_eq!(geo.layout_tag(), "ascend-bf16-bsnd/l2/h4/d8/b2");
        let p: Vec<_> = pieces(&geo).collect();
        // slot 0: rank 0 then rank 1; slot 1 likewise; 32 bytes (2 heads × 8 × 2 B) each.
        assert_eq!(
            p,
            vec![
                (0, 0..32, 0),
                (1, 0..32, 32),
                (0, 32..64, 64),
                (1, 32..64, 96)
            ]
        );
        let one = KvGeometry { tp: 1, ..geo };
        assert_eq!(
            one.layout_tag(),
            geo.layout_tag(),
            "independent of the TP degree"
        );
        assert_eq!(one.bytes_per_block(), geo.bytes_per_block());
    }
}
