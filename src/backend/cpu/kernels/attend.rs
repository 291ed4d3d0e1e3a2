//! The query heads of one KV head (a GQA group) attending over a paged context:
//! `softmax(q·Kᵀ · scale) · V` per head, reading each key and value once for the whole group,
//! block by block through the sequence's block table.

use super::{fmadd, LANES};

/// Where one group of query heads' keys and values live.
pub struct AttendArgs<'a> {
    /// The group's query head vectors (RoPE applied), one after another: `group × head_dim`.
    pub q: &'a [f32],
    pub head_dim: usize,
    /// This layer's key storage, `[block][kv_head][head_dim][slot]` (transposed per block), and
    /// value storage, `[block][kv_head][slot][head_dim]` (see `kv_cache`).
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
    let bs = a.block_size;
    for (first, n, base) in a.spans() {
        // This head's keys of the block, transposed: `keys[d * bs + slot]`.
        let keys = &a.k_cache[base..base + hd * bs];
        // Lanes over key slots, so no horizontal sums: `acc_h[j] += q_h[d] · key_j[d]`, for
        // four query heads at once (independent accumulators hide the FMA latency; a short
        // last group repeats its last head and drops the copies).
        for g0 in (0..group).step_by(4) {
            let q = |i: usize| {
                let g = (g0 + i).min(group - 1);
                &a.q[g * hd..(g + 1) * hd]
            };
            let (q0, q1, q2, q3) = (q(0), q(1), q(2), q(3));
            for j0 in (0..n).step_by(LANES) {
                let w = (n - j0).min(LANES);
                let mut acc = [[0f32; LANES]; 4];
                if j0 + LANES <= bs {
                    // Whole lane-width loads (slots past `n` are computed and dropped).
                    let (mut a0, mut a1, mut a2, mut a3) =
                        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                    for d in 0..hd {
                        let kd: &[f32; LANES] = keys[d * bs + j0..][..LANES]
                            .try_into()
                            .expect("LANES floats");
                        // (Indexed lanes: LLVM keeps each accumulator in a vector register.)
                        for l in 0..LANES {
                            a0[l] = fmadd::<FMA>(q0[d], kd[l], a0[l]);
                            a1[l] = fmadd::<FMA>(q1[d], kd[l], a1[l]);
                            a2[l] = fmadd::<FMA>(q2[d], kd[l], a2[l]);
                            a3[l] = fmadd::<FMA>(q3[d], kd[l], a3[l]);
                        }
                    }
                    acc = [a0, a1, a2, a3];
                } else {
                    for (h, qh) in [q0, q1, q2, q3].into_iter().enumerate() {
                        for (d, &qd) in qh.iter().enumerate() {
                            let kd = &keys[d * bs + j0..][..w];
                            for (s, k) in acc[h].iter_mut().zip(kd) {
                                *s = fmadd::<FMA>(qd, *k, *s);
                            }
                        }
                    }
                }
                for (h, g) in (g0..group.min(g0 + 4)).enumerate() {
                    let row = &mut scores[g * ctx + first + j0..][..w];
                    for (dst, s) in row.iter_mut().zip(acc[h]) {
                        *dst = s * a.scale;
                        max[g] = max[g].max(*dst);
                    }
                }
            }
        }
    }
    // `max[g]` becomes the normaliser `1 / Σ exp` of head `g`.
    for (row, m) in scores.chunks_exact_mut(ctx).zip(max.iter_mut()) {
        let top = *m;
        // Two loops so the exponentials vectorize (no running sum in the first).
        for s in row.iter_mut() {
            *s = super::exp(*s - top);
        }
        *m = 1.0 / super::sum(row);
    }
    let inv = max;
    const COLS: usize = 4 * LANES;
    if hd.is_multiple_of(COLS) {
        // Per head and 64-column slice, the weighted sum over every key in four vector
        // accumulators (same order of additions as the general loop below).
        for (g, og) in out.chunks_exact_mut(hd).enumerate() {
            for c0 in (0..hd).step_by(COLS) {
                let (mut a0, mut a1, mut a2, mut a3) =
                    ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                for (first, n, base) in a.spans() {
                    let values = &a.v_cache[base..base + n * hd];
                    for (j, val) in values.chunks_exact(hd).enumerate() {
                        let p = scores[g * ctx + first + j] * inv[g];
                        let v: &[f32; COLS] = val[c0..c0 + COLS].try_into().expect("COLS floats");
                        for l in 0..LANES {
                            a0[l] = fmadd::<FMA>(p, v[l], a0[l]);
                            a1[l] = fmadd::<FMA>(p, v[LANES + l], a1[l]);
                            a2[l] = fmadd::<FMA>(p, v[2 * LANES + l], a2[l]);
                            a3[l] = fmadd::<FMA>(p, v[3 * LANES + l], a3[l]);
                        }
                    }
                }
                for (dst, src) in og[c0..c0 + COLS]
                    .chunks_exact_mut(LANES)
                    .zip([a0, a1, a2, a3])
                {
                    dst.copy_from_slice(&src);
                }
            }
        }
        return;
    }
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
