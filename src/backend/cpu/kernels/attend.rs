//! The query heads of one KV head (a GQA group) attending over a paged context:
//! `softmax(q·Kᵀ · scale) · V` per head, reading each key and value once for the whole group,
//! block by block through the sequence's block table.

use super::{dot, fmadd};

/// Where one group of query heads' keys and values live.
pub struct AttendArgs<'a> {
    /// The group's query head vectors (RoPE applied), one after another: `group × head_dim`.
    pub q: &'a [f32],
    pub head_dim: usize,
    /// This layer's key and value storage, `[block][kv_head][slot][head_dim]`.
    pub k_cache: &'a [f32],
    pub v_cache: &'a [f32],
    pub block_table: &'a [u32],
    /// Attend to positions `0..ctx` (causal: the query's own position + 1).
    pub ctx: usize,
    pub block_size: usize,
    pub kv_head: usize,
    pub kv_heads: usize,
    pub scale: f32,
}

impl AttendArgs<'_> {
    /// The context block by block: (first position, tokens in the block, offset of this
    /// head's slots in the cache).
    #[inline(always)]
    fn spans(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let (bs, hd) = (self.block_size, self.head_dim);
        self.block_table
            .iter()
            .enumerate()
            .map(move |(b, &block)| {
                (
                    b * bs,
                    (block as usize * self.kv_heads + self.kv_head) * bs * hd,
                )
            })
            .take_while(|&(first, _)| first < self.ctx)
            .map(move |(first, base)| (first, bs.min(self.ctx - first), base))
    }
}

/// Writes the attention output of each head of the group into `out` (`group × head_dim`, in
/// the order of `q`). `scratch` holds the scores (`group × ctx`) and per-head maxima; it is
/// reused across calls.
/// Per head the arithmetic (and its order) is that of a single-head pass.
#[inline(always)]
pub fn attend_group<const FMA: bool>(a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    let hd = a.head_dim;
    let group = a.q.len() / hd;
    let ctx = a.ctx;
    scratch.clear();
    scratch.resize(group * ctx + group, 0.0);
    let (scores, max) = scratch.split_at_mut(group * ctx);
    max.iter_mut().for_each(|m| *m = f32::NEG_INFINITY);
    for (first, n, base) in a.spans() {
        let keys = &a.k_cache[base..base + n * hd];
        for (j, key) in keys.chunks_exact(hd).enumerate() {
            for (g, qg) in a.q.chunks_exact(hd).enumerate() {
                let v = dot::<FMA>(qg, key) * a.scale;
                scores[g * ctx + first + j] = v;
                max[g] = max[g].max(v);
            }
        }
    }
    // `max[g]` becomes the normaliser `1 / Σ exp` of head `g`.
    for (row, m) in scores.chunks_exact_mut(ctx).zip(max.iter_mut()) {
        let mut sum = 0f32;
        for s in row.iter_mut() {
            *s = super::exp(*s - *m);
            sum += *s;
        }
        *m = 1.0 / sum;
    }
    let inv = max;
    out.iter_mut().for_each(|o| *o = 0.0);
    for (first, n, base) in a.spans() {
        let values = &a.v_cache[base..base + n * hd];
        for (j, val) in values.chunks_exact(hd).enumerate() {
            for (g, og) in out.chunks_exact_mut(hd).enumerate() {
                let p = scores[g * ctx + first + j] * inv[g];
                for (o, v) in og.iter_mut().zip(val) {
                    *o = fmadd::<FMA>(p, *v, *o);
                }
            }
        }
    }
}
