//! Paged attention over a packed step, parallel across sequences × KV heads × query chunks.
//!
//! Keys and values of the step's new tokens are already in the cache when this runs, so one
//! path covers prefill (causal over the prompt), chunked prefill (earlier chunks already in
//! KV) and decode (one query over the whole block table): the query at position `p` attends
//! to positions `0..=p` of its own sequence.

use rayon::prelude::*;

use super::kernels::{dispatch, AttendArgs, SimdLevel};
use crate::backend::SeqSlice;

/// Query tokens per task: enough work to amortise scheduling, small enough to spread a long
/// prefill over all threads.
const QUERY_CHUNK: usize = 16;

pub struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub block_size: usize,
}

struct Task {
    seq: usize,
    /// Query tokens `first..last` of the sequence's new tokens (0-based within the range).
    first: usize,
    last: usize,
    kv_head: usize,
}

/// `out[t][h]` (`T × heads·head_dim`) = attention of query `q[t][h]` over its sequence's cache.
pub fn paged_attention(
    level: SimdLevel,
    shape: &Shape,
    seqs: &[SeqSlice],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
) {
    let Shape {
        heads,
        kv_heads,
        head_dim: hd,
        block_size,
    } = *shape;
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut tasks = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        let n = seq.token_range.len();
        for first in (0..n).step_by(QUERY_CHUNK) {
            for kv_head in 0..kv_heads {
                tasks.push(Task {
                    seq: s,
                    first,
                    last: (first + QUERY_CHUNK).min(n),
                    kv_head,
                });
            }
        }
    }
    let q_stride = heads * hd;
    let results: Vec<Vec<f32>> = tasks
        .par_iter()
        .map_init(Vec::new, |scratch, t| {
            let seq = &seqs[t.seq];
            let n = seq.token_range.len();
            let start_pos = seq.context_len - n;
            let mut buf = vec![0f32; (t.last - t.first) * group * hd];
            for (i, qi) in (t.first..t.last).enumerate() {
                let row = seq.token_range.start + qi;
                let h0 = t.kv_head * group;
                let args = AttendArgs {
                    q: &q[row * q_stride + h0 * hd..row * q_stride + (h0 + group) * hd],
                    head_dim: hd,
                    k_cache,
                    v_cache,
                    block_table: &seq.block_table,
                    ctx: start_pos + qi + 1,
                    block_size,
                    kv_head: t.kv_head,
                    kv_heads,
                    scale,
                };
                let o = &mut buf[i * group * hd..(i + 1) * group * hd];
                dispatch::attend_group(level, args, o, scratch);
            }
            buf
        })
        .collect();
    for (t, buf) in tasks.iter().zip(&results) {
        let seq = &seqs[t.seq];
        for (i, qi) in (t.first..t.last).enumerate() {
            let row = seq.token_range.start + qi;
            let h0 = t.kv_head * group;
            let dst = &mut out[row * q_stride + h0 * hd..row * q_stride + (h0 + group) * hd];
            dst.copy_from_slice(&buf[i * group * hd..(i + 1) * group * hd]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::kv_cache::KvCache;

    /// `paged_attention` against an f64 softmax-attention reference, for head sizes on and off
    /// the 64-column fast path, block sizes under, at and over the vector width, GQA groups of
    /// 1 to 7, prefill chunks (causal) and single decode queries, at every kernel level.
    #[test]
    fn matches_f64_reference() {
        let mut rng = crate::engine::sampler::Rng::new(0x2545_f491);
        let mut rnd = move || (rng.next_f64() * 2.0 - 1.0) as f32;
        let levels = [
            SimdLevel::Portable,
            SimdLevel::Avx2,
            crate::backend::cpu::knobs::level_from_process_env(),
        ];
        for &(hd, heads, kv_heads, bs) in &[
            (16, 4, 2, 1),
            (16, 4, 4, 4),
            (64, 14, 2, 16),
            (64, 7, 1, 5),
            (128, 8, 2, 128),
            (64, 4, 2, 32),
        ] {
            // One sequence with 37 tokens of context, the last `new` of them in this step.
            for (ctx, new) in [(37usize, 37usize), (37, 1), (37, 5)] {
                let blocks = ctx.div_ceil(bs);
                let mut cache = KvCache::with_budget(
                    1,
                    kv_heads,
                    hd,
                    bs,
                    KvCache::bytes_per_block(1, kv_heads, hd, bs) * (blocks + 2),
                )
                .expect("cache");
                // Blocks out of order, to exercise the table.
                let table: Vec<u32> = (0..blocks as u32).rev().map(|b| b + 1).collect();
                let keys: Vec<f32> = (0..ctx * kv_heads * hd).map(|_| rnd()).collect();
                let vals: Vec<f32> = (0..ctx * kv_heads * hd).map(|_| rnd()).collect();
                let kvd = kv_heads * hd;
                for p in 0..ctx {
                    cache.write(
                        0,
                        table[p / bs],
                        p % bs,
                        &keys[p * kvd..(p + 1) * kvd],
                        &vals[p * kvd..(p + 1) * kvd],
                    );
                }
                let q: Vec<f32> = (0..new * heads * hd).map(|_| rnd() * 2.0).collect();
                let seqs = [SeqSlice {
                    token_range: 0..new,
                    context_len: ctx,
                    block_table: table.clone(),
                    want_logits: true,
                }];
                let shape = Shape {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    block_size: bs,
                };
                let scale = 1.0 / (hd as f64).sqrt();
                let group = heads / kv_heads;
                for level in levels {
                    let mut out = vec![f32::NAN; new * heads * hd];
                    let (kc, vc) = cache.layer(0);
                    paged_attention(level, &shape, &seqs, &q, kc, vc, &mut out);
                    for t in 0..new {
                        let pos = ctx - new + t;
                        for h in 0..heads {
                            let kh = h / group;
                            let qv = &q[(t * heads + h) * hd..][..hd];
                            let s: Vec<f64> = (0..=pos)
                                .map(|p| {
                                    let k = &keys[p * kvd + kh * hd..][..hd];
                                    qv.iter()
                                        .zip(k)
                                        .map(|(a, b)| *a as f64 * *b as f64)
                                        .sum::<f64>()
                                        * scale
                                })
                                .collect();
                            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                            let z: f64 = e.iter().sum();
                            for d in 0..hd {
                                let want: f64 = (0..=pos)
                                    .map(|p| e[p] / z * vals[p * kvd + kh * hd + d] as f64)
                                    .sum();
                                let got = out[(t * heads + h) * hd + d] as f64;
                                assert!(
                                    (got - want).abs() < 1e-5,
                                    "{level:?} hd{hd} bs{bs} ctx{ctx} new{new} t{t} h{h} d{d}: \
                                     {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
