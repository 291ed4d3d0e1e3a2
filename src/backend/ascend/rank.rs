//! One device of the instance: its context and stream, weights, KV cache, constant tables
//! (causal mask, RoPE), per-step scratch buffers and operator workspace, and its HCCL
//! communicator when the model is split across devices. Fields drop in declaration order:
//! buffers first, then the communicator, stream and context.

use std::sync::Arc;

use super::dtype::{acl as acl_dtype, encode_f32};
use super::error::AclError;
use super::ffi::hccl::Comm;
use super::ffi::meta::AclDType;
use super::ffi::ops::Workspace;
use super::ffi::{Acl, Context, DeviceBuf, Stream};
use super::kv::RankKv;
use super::weights::{upload, RankWeights, Split};
use crate::backend::cpu::weights::WeightStore;
use crate::backend::cpu::{HfModelConfig, Rope};
use crate::backend::{BackendError, DType};

/// Side of the square causal mask sparse mode 3 takes (ASCEND.md §3).
pub const MASK_SIDE: usize = 2048;

/// How RoPE is applied, by what the loaded CANN exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeOp {
    /// `aclnnRopeWithSinCosCache` over one `[maxPos, D]` cos ‖ sin table.
    SinCosCache,
    /// `aclnnApplyRotaryPosEmbV2` with per-step cos/sin rows gathered from full-width tables.
    ApplyV2,
}

/// How keys/values reach the paged cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvWriteOp {
    ScatterPaKvCache,
    /// `aclnnInplaceIndexCopy` on the cache viewed `[blocks·block_size, heads·dim]`.
    IndexCopy,
}

/// RoPE tables on the device.
pub enum RopeTables {
    /// `[maxPos, D]`: cos of the `D/2` frequencies, then their sin.
    Cache(DeviceBuf),
    /// `[maxPos, D]` each, halves duplicated (HF's `cat(freqs, freqs)`).
    Split { cos: DeviceBuf, sin: DeviceBuf },
}

/// Sizes a rank works with.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub inter: usize,
    pub vocab: usize,
    pub layers: usize,
    pub block_size: usize,
    pub eps: f64,
    pub dtype: DType,
}

impl Dims {
    /// Per-rank sizes of `spec` split `tp` ways.
    pub fn of(spec: &HfModelConfig, tp: usize, block_size: usize, dtype: DType) -> Dims {
        Dims {
            hidden: spec.hidden,
            heads: spec.heads / tp,
            kv_heads: spec.kv_heads / tp,
            head_dim: spec.head_dim,
            inter: spec.intermediate / tp,
            vocab: spec.vocab,
            layers: spec.layers,
            block_size,
            eps: spec.rms_eps as f64,
            dtype,
        }
    }

    pub fn es(&self) -> usize {
        self.dtype.size_bytes()
    }

    pub fn acl(&self) -> AclDType {
        acl_dtype(self.dtype)
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Activation buffers for up to `tokens` tokens and `rows` logits rows, grown on demand
/// (between steps, when the stream is idle).
#[derive(Default)]
pub struct Scratch {
    pub tokens: usize,
    pub rows: usize,
    pub bufs: Option<TokenBufs>,
    pub head: Option<HeadBufs>,
    pub inputs: Option<DeviceBuf>,
}

pub struct TokenBufs {
    pub x: DeviceBuf,
    pub h: DeviceBuf,
    pub q: DeviceBuf,
    pub k: DeviceBuf,
    pub v: DeviceBuf,
    pub attn: DeviceBuf,
    pub o: DeviceBuf,
    pub gu: DeviceBuf,
    pub act: DeviceBuf,
    pub mlp: DeviceBuf,
    pub rstd: DeviceBuf,
    pub lse: DeviceBuf,
    /// Gathered cos/sin rows (`RopeOp::ApplyV2` only).
    pub cos: Option<DeviceBuf>,
    pub sin: Option<DeviceBuf>,
}

pub struct HeadBufs {
    pub sel_x: DeviceBuf,
    pub sel_m: DeviceBuf,
    pub normed: DeviceBuf,
    pub rstd: DeviceBuf,
    pub logits: DeviceBuf,
    /// f32 logits when the compute dtype is not f32.
    pub logits32: Option<DeviceBuf>,
}

impl Scratch {
    /// Buffers for `tokens` tokens, `rows` logits rows (rank 0 only) and `input_bytes` of
    /// step inputs.
    pub fn ensure(
        &mut self,
        acl: &Arc<Acl>,
        d: &Dims,
        rope: RopeOp,
        tokens: usize,
        rows: usize,
        input_bytes: usize,
    ) -> Result<(), AclError> {
        let m = |n: usize| acl.malloc(n);
        let es = d.es();
        if self.bufs.is_none() || tokens > self.tokens {
            let t = tokens.next_power_of_two().max(16);
            self.bufs = None;
            self.bufs = Some(TokenBufs {
                x: m(t * d.hidden * es)?,
                h: m(t * d.hidden * es)?,
                q: m(t * d.q_dim() * es)?,
                k: m(t * d.kv_dim() * es)?,
                v: m(t * d.kv_dim() * es)?,
                attn: m(t * d.q_dim() * es)?,
                o: m(t * d.hidden * es)?,
                gu: m(t * 2 * d.inter * es)?,
                act: m(t * d.inter * es)?,
                mlp: m(t * d.hidden * es)?,
                rstd: m(t * 4)?,
                lse: m(32)?,
                cos: if rope == RopeOp::ApplyV2 {
                    Some(m(t * d.head_dim * es)?)
                } else {
                    None
                },
                sin: if rope == RopeOp::ApplyV2 {
                    Some(m(t * d.head_dim * es)?)
                } else {
                    None
                },
            });
            self.tokens = t;
        }
        if rows > 0 && (self.head.is_none() || rows > self.rows) {
            let r = rows.next_power_of_two().max(8);
            self.head = None;
            self.head = Some(HeadBufs {
                sel_x: m(r * d.hidden * es)?,
                sel_m: m(r * d.hidden * es)?,
                normed: m(r * d.hidden * es)?,
                rstd: m(r * 4)?,
                logits: m(r * d.vocab * es)?,
                logits32: if d.dtype == DType::F32 {
                    None
                } else {
                    Some(m(r * d.vocab * 4)?)
                },
            });
            self.rows = r;
        }
        if self.inputs.as_ref().is_none_or(|b| b.bytes() < input_bytes) {
            self.inputs = None;
            self.inputs = Some(m(input_bytes.next_power_of_two().max(4096))?);
        }
        Ok(())
    }
}

pub struct Rank {
    pub device: i32,
    pub weights: RankWeights,
    pub kv: Option<RankKv>,
    /// The i8 `[2048, 2048]` causal mask, 1 = masked.
    pub mask: DeviceBuf,
    pub rope: RopeTables,
    pub scratch: Scratch,
    pub ws: Workspace,
    pub comm: Option<Comm>,
    pub stream: Stream,
    pub ctx: Context,
}

impl Drop for Rank {
    fn drop(&mut self) {
        // Buffers are freed with this rank's device current, after its work is done.
        let _ = self.ctx.make_current();
        let _ = self.stream.synchronize();
    }
}

/// The upper-triangular causal mask (`triu(ones, 1)`), row-major i8.
pub fn causal_mask() -> Vec<u8> {
    let mut m = vec![0u8; MASK_SIDE * MASK_SIDE];
    for (r, row) in m.chunks_exact_mut(MASK_SIDE).enumerate() {
        row[r + 1..].fill(1);
    }
    m
}

/// cos and sin of every position's angles, `positions × D/2` each: the CPU backend's tables
/// (HF's f32 arithmetic, LLaMA-3 scaling included).
pub fn rope_angles(spec: &HfModelConfig, positions: usize) -> (Vec<f32>, Vec<f32>) {
    let rope = Rope::new(spec.head_dim, spec.rope_theta, spec.rope_llama3.as_ref());
    let all: Vec<u32> = (0..positions as u32).collect();
    rope.tables(&all)
}

/// What every rank uploads alike, made on the host once: the causal mask and the RoPE
/// tables `op` needs, in the compute dtype.
pub struct HostConstants {
    mask: Vec<u8>,
    /// `[maxPos, D]` tables: cos ‖ sin (one table), or full-width cos and sin (two).
    rope: Vec<Vec<u8>>,
}

impl HostConstants {
    pub fn new(spec: &HfModelConfig, positions: usize, dtype: DType, op: RopeOp) -> Self {
        let (cos, sin) = rope_angles(spec, positions);
        let half = spec.head_dim / 2;
        let rows = |a: &[f32], b: &[f32]| -> Vec<u8> {
            let joined: Vec<f32> = a
                .chunks_exact(half)
                .zip(b.chunks_exact(half))
                .flat_map(|(x, y)| x.iter().chain(y).copied())
                .collect();
            encode_f32(&joined, dtype)
        };
        let rope = match op {
            RopeOp::SinCosCache => vec![rows(&cos, &sin)],
            RopeOp::ApplyV2 => vec![rows(&cos, &cos), rows(&sin, &sin)],
        };
        HostConstants {
            mask: causal_mask(),
            rope,
        }
    }

    /// The mask and RoPE tables on the current device.
    pub fn upload(&self, acl: &Arc<Acl>) -> Result<(DeviceBuf, RopeTables), AclError> {
        let put = |bytes: &[u8]| -> Result<DeviceBuf, AclError> {
            let b = acl.malloc(bytes.len())?;
            acl.upload(&b, 0, bytes)?;
            Ok(b)
        };
        let mask = put(&self.mask)?;
        let rope = match self.rope.as_slice() {
            [cache] => RopeTables::Cache(put(cache)?),
            [cos, sin] => RopeTables::Split {
                cos: put(cos)?,
                sin: put(sin)?,
            },
            _ => return Err(AclError::new("upload", 100_000, "internal: RoPE tables")),
        };
        Ok((mask, rope))
    }
}

impl Rank {
    /// Device `id` as rank `split.rank`: context, stream, its weights and the constants.
    pub fn open(
        acl: &Arc<Acl>,
        id: u32,
        split: Split,
        spec: &HfModelConfig,
        store: &WeightStore,
        dtype: DType,
        constants: &HostConstants,
    ) -> Result<Rank, BackendError> {
        let ctx = acl.open_device(id as i32).map_err(AclError::at_load)?;
        let stream = ctx.stream().map_err(AclError::at_load)?;
        let weights = upload(acl, spec, store, dtype, split)?;
        let (mask, rope) = constants.upload(acl).map_err(AclError::at_load)?;
        tracing::info!(
            rank = split.rank,
            device = id,
            weights_mib = weights.bytes >> 20,
            "weights on the device"
        );
        Ok(Rank {
            device: id as i32,
            weights,
            kv: None,
            mask,
            rope,
            scratch: Scratch::default(),
            ws: Workspace::default(),
            comm: None,
            stream,
            ctx,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mask_hides_the_future_only() {
        let m = causal_mask();
        assert_eq!(m.len(), MASK_SIDE * MASK_SIDE);
        assert_eq!(&m[..3], &[0, 1, 1]);
        assert_eq!(m[MASK_SIDE + 1], 0);
        assert_eq!(m[MASK_SIDE + 2], 1);
        assert_eq!(m[MASK_SIDE * MASK_SIDE - 1], 0);
    }
}
