//! Paged attention over a packed step, parallel across sequences × KV heads × query chunks.
//!
//! Keys and values of the step's new tokens are already in the cache when this runs, so one
//! path covers prefill (causal over the prompt), chunked prefill (earlier chunks already in
//! KV) and decode (one query over the whole block table): the query at position `p` attends
//! to positions `0..=p` of its own sequence.

use rayon::prelude::*;

use super::ffi::{self, SimdLevel};
use super::kernels::AttendArgs;
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
#[allow(clippy::too_many_arguments)]
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
                ffi::attend_group(level, args, o, scratch);
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
