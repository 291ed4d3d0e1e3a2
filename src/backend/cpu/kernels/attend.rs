//! The query heads of one KV head (a GQA group) attending over a paged context:
//! `softmax(q·Kᵀ · scale) · V` per head, each key row shared by four heads and each value row
//! by two, block by block through the sequence's block table.

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
/// Per head the arithmetic (and its order) is that of a single-head pass: each score
/// `Σ_d q[d]·key[d]` accumulated from zero in `d` order, each output column `Σ_j p_j·v_j`
/// from zero in position order. The loops are arranged for independent dependency chains
/// (this work is bound by FMA latency, not by reading the cache: a decode step's attention
/// takes as long with the cache in L2): eight score accumulators (four heads × two lane
/// chunks), eight output accumulators (two heads × 64 columns, each value row read once for
/// both), and the maxima taken in vectors after the scores instead of one serial chain per
/// head (~10 % less time than one head's four chains at a time, prefill and decode alike,
/// same bits).
#[inline(always)]
pub fn attend_group<const FMA: bool>(a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    let hd = a.head_dim;
    let group = a.q.len() / hd;
    let ctx = a.ctx;
    scratch.clear();
    scratch.resize(group * ctx + group, 0.0);
    let (scores, max) = scratch.split_at_mut(group * ctx);
    let bs = a.block_size;
    // Four query heads at a time (a short last group repeats its last head and drops the
    // copies).
    let heads4 = |g0: usize| std::array::from_fn::<usize, 4, _>(|i| (g0 + i).min(group - 1));
    for (first, n, base) in a.spans() {
        // This head's keys of the block, transposed: `keys[d * bs + slot]`. Lanes over key
        // slots, so no horizontal sums: `acc_h[j] += q_h[d] · key_j[d]`.
        let keys = &a.k_cache[base..base + hd * bs];
        for g0 in (0..group).step_by(4) {
            let hs = heads4(g0);
            let q = hs.map(|g| &a.q[g * hd..(g + 1) * hd]);
            let mut put = |h: usize, j0: usize, acc: &[f32; LANES]| {
                if j0 >= n || hs[h] != g0 + h {
                    return;
                }
                let w = (n - j0).min(LANES);
                let row = &mut scores[hs[h] * ctx + first + j0..][..w];
                for (dst, s) in row.iter_mut().zip(acc) {
                    *dst = s * a.scale;
                }
            };
            let mut j0 = 0;
            while j0 < n {
                if j0 + 2 * LANES <= bs {
                    // Two whole lane chunks (slots past `n` are computed and dropped).
                    let (mut a0, mut a1, mut a2, mut a3) =
                        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                    let (mut b0, mut b1, mut b2, mut b3) =
                        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                    let [q0, q1, q2, q3] = q;
                    for d in 0..hd {
                        let k0: &[f32; LANES] = keys[d * bs + j0..][..LANES]
                            .try_into()
                            .expect("LANES floats");
                        let k1: &[f32; LANES] = keys[d * bs + j0 + LANES..][..LANES]
                            .try_into()
                            .expect("LANES floats");
                        // (Indexed lanes: LLVM keeps each accumulator in a vector register.)
                        for l in 0..LANES {
                            a0[l] = fmadd::<FMA>(q0[d], k0[l], a0[l]);
                            a1[l] = fmadd::<FMA>(q1[d], k0[l], a1[l]);
                            a2[l] = fmadd::<FMA>(q2[d], k0[l], a2[l]);
                            a3[l] = fmadd::<FMA>(q3[d], k0[l], a3[l]);
                            b0[l] = fmadd::<FMA>(q0[d], k1[l], b0[l]);
                            b1[l] = fmadd::<FMA>(q1[d], k1[l], b1[l]);
                            b2[l] = fmadd::<FMA>(q2[d], k1[l], b2[l]);
                            b3[l] = fmadd::<FMA>(q3[d], k1[l], b3[l]);
                        }
                    }
                    for (h, (x, y)) in [(a0, b0), (a1, b1), (a2, b2), (a3, b3)].iter().enumerate() {
                        put(h, j0, x);
                        put(h, j0 + LANES, y);
                    }
                    j0 += 2 * LANES;
                } else if j0 + LANES <= bs {
                    // One whole lane chunk (blocks of 16 slots, or a block's last 16).
                    let (mut a0, mut a1, mut a2, mut a3) =
                        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                    let [q0, q1, q2, q3] = q;
                    for d in 0..hd {
                        let k0: &[f32; LANES] = keys[d * bs + j0..][..LANES]
                            .try_into()
                            .expect("LANES floats");
                        for l in 0..LANES {
                            a0[l] = fmadd::<FMA>(q0[d], k0[l], a0[l]);
                            a1[l] = fmadd::<FMA>(q1[d], k0[l], a1[l]);
                            a2[l] = fmadd::<FMA>(q2[d], k0[l], a2[l]);
                            a3[l] = fmadd::<FMA>(q3[d], k0[l], a3[l]);
                        }
                    }
                    for (h, x) in [a0, a1, a2, a3].iter().enumerate() {
                        put(h, j0, x);
                    }
                    j0 += LANES;
                } else {
                    let w = (bs - j0).min(LANES);
                    let mut acc = [[0f32; LANES]; 4];
                    for d in 0..hd {
                        let kd = &keys[d * bs + j0..][..w];
                        for h in 0..4 {
                            let qd = q[h][d];
                            for (s, k) in acc[h].iter_mut().zip(kd) {
                                *s = fmadd::<FMA>(qd, *k, *s);
                            }
                        }
                    }
                    for (h, acc) in acc.iter().enumerate() {
                        put(h, j0, acc);
                    }
                    j0 += LANES;
                }
            }
        }
    }
    // Per head: the maximum (lane-wise, then across lanes: `max` is exact, so the order does
    // not matter), the exponentials, and `max[g]` becomes the normaliser `1 / Σ exp`.
    for (row, m) in scores.chunks_exact_mut(ctx).zip(max.iter_mut()) {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for l in 0..LANES {
                lanes[l] = lanes[l].max(c[l]);
            }
        }
        let top = chunks
            .remainder()
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        // Two loops so the exponentials vectorize (no running sum in the first).
        for s in row.iter_mut() {
            *s = super::exp(*s - top);
        }
        *m = 1.0 / super::sum(row);
    }
    let inv = max;
    const COLS: usize = 4 * LANES;
    if hd.is_multiple_of(COLS) {
        // Two heads × one 64-column slice: eight accumulators over every value row, read
        // once for both heads.
        for g0 in (0..group).step_by(2) {
            let (ga, gb) = (g0, (g0 + 1).min(group - 1));
            for c0 in (0..hd).step_by(COLS) {
                let (mut a0, mut a1, mut a2, mut a3) =
                    ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                let (mut b0, mut b1, mut b2, mut b3) =
                    ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
                for (first, n, base) in a.spans() {
                    let values = &a.v_cache[base..base + n * hd];
                    for (j, val) in values.chunks_exact(hd).enumerate() {
                        let pa = scores[ga * ctx + first + j] * inv[ga];
                        let pb = scores[gb * ctx + first + j] * inv[gb];
                        let v: &[f32; COLS] = val[c0..c0 + COLS].try_into().expect("COLS floats");
                        for l in 0..LANES {
                            a0[l] = fmadd::<FMA>(pa, v[l], a0[l]);
                            a1[l] = fmadd::<FMA>(pa, v[LANES + l], a1[l]);
                            a2[l] = fmadd::<FMA>(pa, v[2 * LANES + l], a2[l]);
                            a3[l] = fmadd::<FMA>(pa, v[3 * LANES + l], a3[l]);
                            b0[l] = fmadd::<FMA>(pb, v[l], b0[l]);
                            b1[l] = fmadd::<FMA>(pb, v[LANES + l], b1[l]);
                            b2[l] = fmadd::<FMA>(pb, v[2 * LANES + l], b2[l]);
                            b3[l] = fmadd::<FMA>(pb, v[3 * LANES + l], b3[l]);
                        }
                    }
                }
                // (A short last pair repeats its head: its copy is dropped.)
                let heads = [(ga, [a0, a1, a2, a3]), (gb, [b0, b1, b2, b3])];
                for (g, acc) in heads.into_iter().take(if gb == ga { 1 } else { 2 }) {
                    let og = &mut out[g * hd + c0..g * hd + c0 + COLS];
                    for (dst, src) in og.chunks_exact_mut(LANES).zip(acc) {
                        dst.copy_from_slice(&src);
                    }
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
