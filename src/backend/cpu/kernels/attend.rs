//! One query head attending over a paged context: `softmax(q·Kᵀ · scale) · V`, reading keys and
//! values block by block through the sequence's block table.

use super::{dot, fmadd};

/// Where one query head's keys and values live.
pub struct AttendArgs<'a> {
    /// The query head vector (RoPE applied), `head_dim` long.
    pub q: &'a [f32],
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
        let (bs, hd) = (self.block_size, self.q.len());
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

/// Writes the attention output for one head into `out` (`head_dim` long). `scratch` holds the
/// scores; it is reused across calls.
#[inline(always)]
pub fn attend_one<const FMA: bool>(a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    let hd = a.q.len();
    scratch.clear();
    scratch.resize(a.ctx, 0.0);
    let mut max = f32::NEG_INFINITY;
    for (first, n, base) in a.spans() {
        let keys = &a.k_cache[base..base + n * hd];
        for (s, key) in scratch[first..first + n]
            .iter_mut()
            .zip(keys.chunks_exact(hd))
        {
            let v = dot::<FMA>(a.q, key) * a.scale;
            *s = v;
            max = max.max(v);
        }
    }
    let mut sum = 0f32;
    for s in scratch.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o = 0.0);
    for (first, n, base) in a.spans() {
        let values = &a.v_cache[base..base + n * hd];
        for (p, val) in scratch[first..first + n]
            .iter()
            .zip(values.chunks_exact(hd))
        {
            let p = p * inv;
            for (o, v) in out.iter_mut().zip(val) {
                *o = fmadd::<FMA>(p, *v, *o);
            }
        }
    }
}
