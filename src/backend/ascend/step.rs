//! One packed step as aclnn operators (ASCEND.md §3), per rank:
//!
//! embed → per layer [(Add)RmsNorm → q/k/v (Matmul, Addmm with biases) → RoPE → KV write →
//! FusedInferAttentionScoreV3 over the block tables → o_proj (→ HcclAllReduce) → AddRmsNorm →
//! gate‖up → SwiGlu → down (→ HcclAllReduce)] → on rank 0: the rows wanting logits gathered
//! (IndexSelect), final AddRmsNorm, LM head, Cast to f32 → host.
//!
//! The host packs the step's integer inputs (ids, positions, slots, logits rows, block table)
//! into one buffer copied to each device once; cumulative query lengths and KV lengths go to
//! the attention operator as host int arrays. Tensor parallelism: one thread drives every
//! rank by enqueueing each rank's work up to the next all-reduce, rank after rank (attention
//! half of layer l on ranks 0..tp, then its MLP half, …); HCCL collectives are stream-ordered,
//! so a rank's next operator waits on the device for the sum, never on the host.

use std::sync::Arc;

use super::error::AclError;
use super::ffi::meta::{AclDType, View};
use super::ffi::ops::{Attention, Launcher};
use super::ffi::{Acl, DeviceBuf};
use super::rank::{Dims, KvWriteOp, Rank, RopeOp, RopeTables, MASK_SIDE};
use crate::backend::StepBatch;

/// Byte offsets of the integer inputs in the step's input buffer.
#[derive(Debug, Clone, Copy, Default)]
struct Offsets {
    ids: usize,
    positions: usize,
    slots: usize,
    rows: usize,
    table: usize,
}

/// The step's inputs, packed on the host.
pub struct StepInputs {
    pub tokens: usize,
    pub seqs: usize,
    /// Sequences wanting logits, in batch order (indices into `batch.seqs`).
    pub logit_seqs: Vec<usize>,
    max_blocks: usize,
    cu_q: Vec<i64>,
    kv_lens: Vec<i64>,
    off: Offsets,
    pub host: Vec<u8>,
}

fn align32(n: usize) -> usize {
    n.next_multiple_of(32)
}

impl StepInputs {
    /// Packs a validated batch.
    pub fn build(batch: &StepBatch, block_size: usize) -> StepInputs {
        let t = batch.tokens.len();
        let b = batch.seqs.len();
        let max_blocks = batch
            .seqs
            .iter()
            .map(|s| s.context_len.div_ceil(block_size))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut slots = vec![0i32; t];
        let mut cu_q = Vec::with_capacity(b);
        let mut kv_lens = Vec::with_capacity(b);
        let mut table = vec![0i32; b * max_blocks];
        let mut rows = Vec::new();
        let mut logit_seqs = Vec::new();
        // Sequences in token order: TND wants each sequence's rows contiguous and in order.
        for (i, s) in batch.seqs.iter().enumerate() {
            for (j, &id) in s.block_table.iter().take(max_blocks).enumerate() {
                table[i * max_blocks + j] = id as i32;
            }
            for t in s.token_range.clone() {
                let p = batch.positions[t] as usize;
                slots[t] =
                    (s.block_table[p / block_size] as usize * block_size + p % block_size) as i32;
            }
            cu_q.push(s.token_range.end as i64);
            kv_lens.push(s.context_len as i64);
            if s.want_logits {
                rows.push(s.token_range.end as i64 - 1);
                logit_seqs.push(i);
            }
        }
        let mut off = Offsets::default();
        let mut at = 0;
        off.ids = at;
        at = align32(at + 8 * t);
        off.positions = at;
        at = align32(at + 8 * t);
        off.slots = at;
        at = align32(at + 4 * t);
        off.rows = at;
        at = align32(at + 8 * rows.len());
        off.table = at;
        at = align32(at + 4 * table.len());
        let mut host = vec![0u8; at.max(32)];
        let mut put = |o: usize, bytes: &[u8]| host[o..o + bytes.len()].copy_from_slice(bytes);
        for (i, &id) in batch.tokens.iter().enumerate() {
            put(off.ids + 8 * i, &(id as i64).to_le_bytes());
            put(
                off.positions + 8 * i,
                &(batch.positions[i] as i64).to_le_bytes(),
            );
            put(off.slots + 4 * i, &slots[i].to_le_bytes());
        }
        for (i, r) in rows.iter().enumerate() {
            put(off.rows + 8 * i, &r.to_le_bytes());
        }
        for (i, id) in table.iter().enumerate() {
            put(off.table + 4 * i, &id.to_le_bytes());
        }
        StepInputs {
            tokens: t,
            seqs: b,
            logit_seqs,
            max_blocks,
            cu_q,
            kv_lens,
            off,
            host,
        }
    }
}

/// What a rank's step needs besides its own state.
pub struct Plan<'a> {
    pub acl: &'a Arc<Acl>,
    pub dims: Dims,
    pub rope: RopeOp,
    pub kv_write: KvWriteOp,
    pub num_blocks: usize,
    pub inputs: &'a StepInputs,
}

/// A buffer `Scratch::ensure` (or the load) made; its absence is a bug reported as an error.
fn need<T>(b: Option<&T>) -> Result<&T, AclError> {
    b.ok_or_else(|| {
        AclError::new(
            "step",
            100_000,
            "internal: a device buffer was not allocated",
        )
    })
}

fn v2(rows: usize, cols: usize, dt: AclDType) -> View {
    View::contiguous(&[rows, cols], dt)
}

impl Plan<'_> {
    /// Uploads the inputs, embeds the tokens and gathers RoPE rows when needed.
    pub fn begin(&self, rank: &mut Rank) -> Result<u64, AclError> {
        let (acl, d, inp) = (self.acl, &self.dims, self.inputs);
        rank.ctx.make_current()?;
        let rows = if rank.weights.head.is_some() {
            inp.logit_seqs.len()
        } else {
            0
        };
        rank.scratch
            .ensure(acl, d, self.rope, inp.tokens, rows, inp.host.len())?;
        let input = need(rank.scratch.inputs.as_ref())?;
        acl.upload(input, 0, &inp.host)?;
        let bufs = need(rank.scratch.bufs.as_ref())?;
        let mut l = Launcher::new(acl, &rank.stream, &mut rank.ws);
        let t = inp.tokens;
        let ids = acl.tensor(
            input,
            &View::contiguous(&[t], AclDType::I64).at(inp.off.ids),
        )?;
        let embed = acl.tensor(&rank.weights.embed, &v2(d.vocab, d.hidden, d.acl()))?;
        let x = acl.tensor(&bufs.x, &v2(t, d.hidden, d.acl()))?;
        l.embedding(&embed, &ids, &x)?;
        if let (RopeTables::Split { cos, sin }, Some(cos_t), Some(sin_t)) =
            (&rank.rope, &bufs.cos, &bufs.sin)
        {
            let pos = acl.tensor(
                input,
                &View::contiguous(&[t], AclDType::I64).at(inp.off.positions),
            )?;
            let max_pos = cos.bytes() / (d.head_dim * d.es());
            for (table, out) in [(cos, cos_t), (sin, sin_t)] {
                let src = acl.tensor(table, &v2(max_pos, d.head_dim, d.acl()))?;
                let dst = acl.tensor(out, &v2(t, d.head_dim, d.acl()))?;
                l.index_select(&src, &pos, &dst)?;
            }
        }
        Ok(l.launches)
    }

    /// Layer `layer` up to and including the attention output's all-reduce.
    pub fn attention_half(&self, rank: &mut Rank, layer: usize) -> Result<u64, AclError> {
        let (acl, d, inp) = (self.acl, &self.dims, self.inputs);
        rank.ctx.make_current()?;
        let (t, dt) = (inp.tokens, d.acl());
        let bufs = need(rank.scratch.bufs.as_ref())?;
        let input = need(rank.scratch.inputs.as_ref())?;
        let w = &rank.weights.layers[layer];
        let kv = need(rank.kv.as_ref())?;
        let mut l = Launcher::new(acl, &rank.stream, &mut rank.ws);
        let x = acl.tensor(&bufs.x, &v2(t, d.hidden, dt))?;
        let h = acl.tensor(&bufs.h, &v2(t, d.hidden, dt))?;
        let rstd = acl.tensor(&bufs.rstd, &v2(t, 1, AclDType::F32))?;
        let gamma = acl.tensor(&w.in_norm, &View::contiguous(&[d.hidden], dt))?;
        if layer == 0 {
            l.rms_norm(&x, &gamma, d.eps, &h, &rstd)?;
        } else {
            let mlp = acl.tensor(&bufs.mlp, &v2(t, d.hidden, dt))?;
            l.add_rms_norm(&x, &mlp, &gamma, d.eps, &h, &rstd, &x)?;
        }
        for (proj, out) in [(&w.q, &bufs.q), (&w.k, &bufs.k), (&w.v, &bufs.v)] {
            project(acl, &mut l, &h, proj, out, t, dt)?;
        }
        // RoPE in place.
        let q2 = acl.tensor(&bufs.q, &v2(t, d.q_dim(), dt))?;
        let k2 = acl.tensor(&bufs.k, &v2(t, d.kv_dim(), dt))?;
        match &rank.rope {
            RopeTables::Cache(cache) => {
                let pos = acl.tensor(
                    input,
                    &View::contiguous(&[t], AclDType::I64).at(inp.off.positions),
                )?;
                let max_pos = cache.bytes() / (d.head_dim * d.es());
                let c = acl.tensor(cache, &v2(max_pos, d.head_dim, dt))?;
                l.rope_cache(&pos, &q2, &k2, &c, d.head_dim as i64)?;
            }
            RopeTables::Split { .. } => {
                let (Some(cos), Some(sin)) = (&bufs.cos, &bufs.sin) else {
                    return Err(AclError::missing("RoPE rows"));
                };
                let q3 = acl.tensor(&bufs.q, &View::contiguous(&[t, d.heads, d.head_dim], dt))?;
                let k3 =
                    acl.tensor(&bufs.k, &View::contiguous(&[t, d.kv_heads, d.head_dim], dt))?;
                let c = acl.tensor(cos, &View::contiguous(&[t, 1, d.head_dim], dt))?;
                let s = acl.tensor(sin, &View::contiguous(&[t, 1, d.head_dim], dt))?;
                l.rope_v2(&q3, &k3, &c, &s)?;
            }
        }
        // Keys and values into their slots.
        let nb = self.num_blocks;
        let slots = acl.tensor(
            input,
            &View::contiguous(&[t], AclDType::I32).at(inp.off.slots),
        )?;
        match self.kv_write {
            KvWriteOp::ScatterPaKvCache => {
                let cache = |b: &DeviceBuf| {
                    acl.tensor(
                        b,
                        &View::contiguous(&[nb, d.block_size, d.kv_heads, d.head_dim], dt),
                    )
                };
                let kt =
                    acl.tensor(&bufs.k, &View::contiguous(&[t, d.kv_heads, d.head_dim], dt))?;
                let vt =
                    acl.tensor(&bufs.v, &View::contiguous(&[t, d.kv_heads, d.head_dim], dt))?;
                l.scatter_pa_kv(
                    &kt,
                    &cache(&kv.k[layer])?,
                    &slots,
                    &vt,
                    &cache(&kv.v[layer])?,
                )?;
            }
            KvWriteOp::IndexCopy => {
                for (src, dst) in [(&bufs.k, &kv.k[layer]), (&bufs.v, &kv.v[layer])] {
                    let s = acl.tensor(src, &v2(t, d.kv_dim(), dt))?;
                    let c = acl.tensor(dst, &v2(nb * d.block_size, d.kv_dim(), dt))?;
                    l.index_copy(&c, &slots, &s)?;
                }
            }
        }
        // Paged attention.
        let list = |b: &DeviceBuf| -> Result<_, AclError> {
            let t = acl.tensor(b, &View::contiguous(&[nb, d.block_size, d.kv_dim()], dt))?;
            acl.tensor_list(vec![t])
        };
        let (keys, values) = (list(&kv.k[layer])?, list(&kv.v[layer])?);
        let query = acl.tensor(&bufs.q, &View::contiguous(&[t, d.heads, d.head_dim], dt))?;
        let out = acl.tensor(&bufs.attn, &View::contiguous(&[t, d.heads, d.head_dim], dt))?;
        let mask = acl.tensor(&rank.mask, &v2(MASK_SIDE, MASK_SIDE, AclDType::I8))?;
        let table = acl.tensor(
            input,
            &View::contiguous(&[inp.seqs, inp.max_blocks], AclDType::I32).at(inp.off.table),
        )?;
        let lse = acl.tensor(&bufs.lse, &View::contiguous(&[1], AclDType::F32))?;
        let cu_q = acl.int_array(&inp.cu_q)?;
        let kv_lens = acl.int_array(&inp.kv_lens)?;
        l.attention(&Attention {
            query: &query,
            key: &keys,
            value: &values,
            mask: &mask,
            cu_q: &cu_q,
            kv_lens: &kv_lens,
            block_table: &table,
            num_heads: d.heads as i64,
            num_kv_heads: d.kv_heads as i64,
            scale: 1.0 / (d.head_dim as f64).sqrt(),
            block_size: d.block_size as i64,
            out: &out,
            lse: &lse,
        })?;
        let attn = acl.tensor(&bufs.attn, &v2(t, d.q_dim(), dt))?;
        project(acl, &mut l, &attn, &w.o, &bufs.o, t, dt)?;
        let launches = l.launches;
        if let Some(comm) = &rank.comm {
            comm.all_reduce_sum(bufs.o.ptr(), t * d.hidden, dt, &rank.stream)?;
        }
        Ok(launches)
    }

    /// Layer `layer`'s MLP, including the down projection's all-reduce.
    pub fn mlp_half(&self, rank: &mut Rank, layer: usize) -> Result<u64, AclError> {
        let (acl, d, inp) = (self.acl, &self.dims, self.inputs);
        rank.ctx.make_current()?;
        let (t, dt) = (inp.tokens, d.acl());
        let bufs = need(rank.scratch.bufs.as_ref())?;
        let w = &rank.weights.layers[layer];
        let mut l = Launcher::new(acl, &rank.stream, &mut rank.ws);
        let x = acl.tensor(&bufs.x, &v2(t, d.hidden, dt))?;
        let o = acl.tensor(&bufs.o, &v2(t, d.hidden, dt))?;
        let h = acl.tensor(&bufs.h, &v2(t, d.hidden, dt))?;
        let rstd = acl.tensor(&bufs.rstd, &v2(t, 1, AclDType::F32))?;
        let gamma = acl.tensor(&w.post_norm, &View::contiguous(&[d.hidden], dt))?;
        l.add_rms_norm(&x, &o, &gamma, d.eps, &h, &rstd, &x)?;
        project(acl, &mut l, &h, &w.gate_up, &bufs.gu, t, dt)?;
        let gu = acl.tensor(&bufs.gu, &v2(t, 2 * d.inter, dt))?;
        let act = acl.tensor(&bufs.act, &v2(t, d.inter, dt))?;
        l.swiglu(&gu, &act)?;
        project(acl, &mut l, &act, &w.down, &bufs.mlp, t, dt)?;
        let launches = l.launches;
        if let Some(comm) = &rank.comm {
            comm.all_reduce_sum(bufs.mlp.ptr(), t * d.hidden, dt, &rank.stream)?;
        }
        Ok(launches)
    }

    /// Rank 0: logits of the rows that want them, as f32 on the device.
    pub fn head(&self, rank: &mut Rank) -> Result<u64, AclError> {
        let (acl, d, inp) = (self.acl, &self.dims, self.inputs);
        let r = inp.logit_seqs.len();
        let Some(hw) = rank.weights.head.as_ref() else {
            return Ok(0);
        };
        if r == 0 {
            return Ok(0);
        }
        rank.ctx.make_current()?;
        let (t, dt) = (inp.tokens, d.acl());
        let bufs = need(rank.scratch.bufs.as_ref())?;
        let hb = need(rank.scratch.head.as_ref())?;
        let input = need(rank.scratch.inputs.as_ref())?;
        let mut l = Launcher::new(acl, &rank.stream, &mut rank.ws);
        let rows = acl.tensor(
            input,
            &View::contiguous(&[r], AclDType::I64).at(inp.off.rows),
        )?;
        let sel_x = acl.tensor(&hb.sel_x, &v2(r, d.hidden, dt))?;
        let sel_m = acl.tensor(&hb.sel_m, &v2(r, d.hidden, dt))?;
        l.index_select(&acl.tensor(&bufs.x, &v2(t, d.hidden, dt))?, &rows, &sel_x)?;
        l.index_select(&acl.tensor(&bufs.mlp, &v2(t, d.hidden, dt))?, &rows, &sel_m)?;
        let normed = acl.tensor(&hb.normed, &v2(r, d.hidden, dt))?;
        let rstd = acl.tensor(&hb.rstd, &v2(r, 1, AclDType::F32))?;
        let gamma = acl.tensor(&hw.norm, &View::contiguous(&[d.hidden], dt))?;
        l.add_rms_norm(&sel_x, &sel_m, &gamma, d.eps, &normed, &rstd, &sel_x)?;
        let lm = hw.lm_head.as_ref().unwrap_or(&rank.weights.embed);
        let wt = acl.tensor(lm, &View::transposed(d.vocab, d.hidden, dt))?;
        let logits = acl.tensor(&hb.logits, &v2(r, d.vocab, dt))?;
        l.matmul(&normed, &wt, &logits)?;
        if let Some(l32) = &hb.logits32 {
            let out = acl.tensor(l32, &v2(r, d.vocab, AclDType::F32))?;
            l.cast(&logits, AclDType::F32, &out)?;
        }
        Ok(l.launches)
    }

    /// Rank 0, after its stream is synchronised: the f32 logits, `rows × vocab`.
    pub fn logits(&self, rank: &Rank) -> Result<Vec<f32>, AclError> {
        let r = self.inputs.logit_seqs.len();
        let v = self.dims.vocab;
        let Some(hb) = rank.scratch.head.as_ref().filter(|_| r > 0) else {
            return Ok(Vec::new());
        };
        let src = hb.logits32.as_ref().unwrap_or(&hb.logits);
        let mut bytes = vec![0u8; r * v * 4];
        self.acl.download(&mut bytes, src, 0)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// `out [t, proj.n] = x · projᵀ (+ bias)`.
fn project(
    acl: &Acl,
    l: &mut Launcher,
    x: &super::ffi::meta::Tensor,
    proj: &super::weights::Proj,
    out: &DeviceBuf,
    t: usize,
    dt: AclDType,
) -> Result<(), AclError> {
    let wt = acl.tensor(&proj.w, &View::transposed(proj.n, proj.k, dt))?;
    let y = acl.tensor(out, &v2(t, proj.n, dt))?;
    match &proj.bias {
        Some(b) => {
            let bias = acl.tensor(b, &v2(1, proj.n, dt))?;
            l.addmm(&bias, x, &wt, &y)
        }
        None => l.matmul(x, &wt, &y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SeqSlice;

    #[test]
    fn inputs_pack_slots_lengths_and_logit_rows() {
        // Seq 0: 3 new tokens at positions 126..129 over blocks [5, 9]; seq 1: one decode
        // token at position 4 of block 2, no logits wanted.
        let batch = StepBatch {
            tokens: vec![10, 11, 12, 13],
            positions: vec![126, 127, 128, 4],
            seqs: vec![
                SeqSlice {
                    token_range: 0..3,
                    context_len: 129,
                    block_table: vec![5, 9],
                    want_logits: true,
                },
                SeqSlice {
                    token_range: 3..4,
                    context_len: 5,
                    block_table: vec![2],
                    want_logits: false,
                },
            ],
        };
        let inp = StepInputs::build(&batch, 128);
        assert_eq!((inp.tokens, inp.seqs, inp.max_blocks), (4, 2, 2));
        assert_eq!(inp.cu_q, vec![3, 4]);
        assert_eq!(inp.kv_lens, vec![129, 5]);
        assert_eq!(inp.logit_seqs, vec![0]);
        let i32s = |at: usize, n: usize| -> Vec<i32> {
            (0..n)
                .map(|i| {
                    i32::from_le_bytes(inp.host[at + 4 * i..at + 4 * i + 4].try_into().unwrap())
                })
                .collect()
        };
        let i64s = |at: usize, n: usize| -> Vec<i64> {
            (0..n)
                .map(|i| {
                    i64::from_le_bytes(inp.host[at + 8 * i..at + 8 * i + 8].try_into().unwrap())
                })
                .collect()
        };
        assert_eq!(
            i32s(inp.off.slots, 4),
            vec![5 * 128 + 126, 5 * 128 + 127, 9 * 128, 2 * 128 + 4]
        );
        assert_eq!(i32s(inp.off.table, 4), vec![5, 9, 2, 0]);
        assert_eq!(i64s(inp.off.ids, 4), vec![10, 11, 12, 13]);
        assert_eq!(i64s(inp.off.positions, 4), vec![126, 127, 128, 4]);
        assert_eq!(i64s(inp.off.rows, 1), vec![2], "seq 0's last token");
        for off in [
            inp.off.positions,
            inp.off.slots,
            inp.off.rows,
            inp.off.table,
        ] {
            assert_eq!(off % 32, 0, "32-byte aligned slices");
        }
    }
}
