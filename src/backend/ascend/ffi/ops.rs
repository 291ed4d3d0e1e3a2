//! The aclnn operators the step plan uses, each as CANN's two-phase call:
//! `aclnnXxxGetWorkspaceSize(args…, &size, &executor)` then `aclnnXxx(workspace, size,
//! executor, stream)`. A [`Launcher`] binds one rank's stream and its [`Workspace`]; executors
//! are single-use (consumed by their launch), descriptors may be dropped once it returns.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::sync::Arc;

use super::meta::{AclDType, IntArray, Scalar, Tensor, TensorList};
use super::{Acl, DeviceBuf, Raw, Rc, Stream};
use crate::backend::ascend::error::AclError;

/// A launch entry point: `aclnnXxx(workspace, size, executor, stream)`.
type LaunchFn = unsafe extern "C" fn(Raw, u64, Raw, Raw) -> Rc;

/// `cubeMathType` ALLOW_FP32_DOWN_PRECISION, as vllm-ascend passes.
const CUBE_MATH: i8 = 1;

/// The device buffer operators get as workspace: one per stream, grown (after synchronising
/// the stream, as the old one may still be in use) when an operator asks for more.
#[derive(Default)]
pub struct Workspace {
    buf: Option<DeviceBuf>,
}

impl Workspace {
    pub fn bytes(&self) -> usize {
        self.buf.as_ref().map_or(0, DeviceBuf::bytes)
    }

    fn ensure(&mut self, acl: &Arc<Acl>, stream: &Stream, need: u64) -> Result<Raw, AclError> {
        if need == 0 {
            return Ok(std::ptr::null_mut());
        }
        let need = need as usize;
        if self.bytes() < need {
            stream.synchronize()?;
            let grown = need.max(self.bytes() * 2).next_multiple_of(64 << 10);
            self.buf = None;
            self.buf = Some(acl.malloc(grown)?);
        }
        Ok(self
            .buf
            .as_ref()
            .map_or(std::ptr::null_mut(), |b| b.ptr().raw()))
    }
}

/// Launches operators on one stream.
pub struct Launcher<'a> {
    pub acl: &'a Arc<Acl>,
    stream: &'a Stream,
    ws: &'a mut Workspace,
    /// Operators launched through this launcher.
    pub launches: u64,
}

/// A NUL-terminated string argument CANN takes as `char*`.
fn c_arg(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

const NULL: Raw = std::ptr::null_mut();

/// The arguments of `aclnnFusedInferAttentionScoreV3` the backend sets (the rest are NULL or
/// zero, as vllm-ascend passes them; ASCEND.md §3).
pub struct Attention<'t, 'a> {
    /// `[T, Nq, D]`, layout TND.
    pub query: &'t Tensor<'a>,
    /// This layer's key and value caches, each a one-tensor list `[blocks, block, Nkv·D]`.
    pub key: &'t TensorList<'a>,
    pub value: &'t TensorList<'a>,
    /// The 2048² i8 causal mask (sparse mode 3).
    pub mask: &'t Tensor<'a>,
    /// Cumulative query lengths (last = T) and per-sequence KV lengths, host values.
    pub cu_q: &'t IntArray<'a>,
    pub kv_lens: &'t IntArray<'a>,
    /// i32 `[B, max blocks]`.
    pub block_table: &'t Tensor<'a>,
    pub num_heads: i64,
    pub num_kv_heads: i64,
    pub scale: f64,
    pub block_size: i64,
    /// `[T, Nq, D]`.
    pub out: &'t Tensor<'a>,
    /// A one-element f32 dummy (softmaxLseFlag is false).
    pub lse: &'t Tensor<'a>,
}

impl<'a> Launcher<'a> {
    pub fn new(acl: &'a Arc<Acl>, stream: &'a Stream, ws: &'a mut Workspace) -> Self {
        Launcher {
            acl,
            stream,
            ws,
            launches: 0,
        }
    }

    /// One two-phase call: `get` is the GetWorkspaceSize call with the size and executor
    /// out-parameters, `launch` the operator itself.
    fn run(
        &mut self,
        name: &'static str,
        get_name: &'static str,
        get: impl FnOnce(*mut u64, *mut Raw) -> Rc,
        launch: LaunchFn,
    ) -> Result<(), AclError> {
        let mut size = 0u64;
        let mut executor: Raw = NULL;
        let rc = get(&mut size, &mut executor);
        self.acl.check(get_name, rc)?;
        let ws = self.ws.ensure(self.acl, self.stream, size)?;
        // SAFETY: the executor was just made by the matching GetWorkspaceSize and is consumed
        // here; `ws` is device memory of at least `size` bytes (or NULL for 0); the stream
        // is live and its device current.
        let rc = unsafe { launch(ws, size, executor, self.stream.raw()) };
        self.launches += 1;
        self.acl.check(name, rc)
    }

    /// Rows of `weight [V, H]` at `indices [T]` → `out [T, H]`.
    pub fn embedding(
        &mut self,
        weight: &Tensor,
        indices: &Tensor,
        out: &Tensor,
    ) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnEmbeddingGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnEmbedding",
            "aclnnEmbeddingGetWorkspaceSize",
            |w, e| unsafe { f(weight.raw, indices.raw, out.raw, w, e) },
            self.acl.fns.aclnnEmbedding,
        )
    }

    /// Rows of `src` (dim 0) at `index` → `out`.
    pub fn index_select(
        &mut self,
        src: &Tensor,
        index: &Tensor,
        out: &Tensor,
    ) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnIndexSelectGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnIndexSelect",
            "aclnnIndexSelectGetWorkspaceSize",
            |w, e| unsafe { f(src.raw, 0, index.raw, out.raw, w, e) },
            self.acl.fns.aclnnIndexSelect,
        )
    }

    /// `y = rmsnorm(x) · gamma`, `rstd` f32 `[T, 1]`.
    pub fn rms_norm(
        &mut self,
        x: &Tensor,
        gamma: &Tensor,
        eps: f64,
        y: &Tensor,
        rstd: &Tensor,
    ) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnRmsNormGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnRmsNorm",
            "aclnnRmsNormGetWorkspaceSize",
            |w, e| unsafe { f(x.raw, gamma.raw, eps, y.raw, rstd.raw, w, e) },
            self.acl.fns.aclnnRmsNorm,
        )
    }

    /// `x_out = x1 + x2`, `y = rmsnorm(x_out) · gamma` (`x_out` may be `x1`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_rms_norm(
        &mut self,
        x1: &Tensor,
        x2: &Tensor,
        gamma: &Tensor,
        eps: f64,
        y: &Tensor,
        rstd: &Tensor,
        x_out: &Tensor,
    ) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnAddRmsNormGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnAddRmsNorm",
            "aclnnAddRmsNormGetWorkspaceSize",
            |w, e| unsafe {
                f(
                    x1.raw, x2.raw, gamma.raw, eps, y.raw, rstd.raw, x_out.raw, w, e,
                )
            },
            self.acl.fns.aclnnAddRmsNorm,
        )
    }

    /// `out = a · b`.
    pub fn matmul(&mut self, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnMatmulGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnMatmul",
            "aclnnMatmulGetWorkspaceSize",
            |w, e| unsafe { f(a.raw, b.raw, out.raw, CUBE_MATH, w, e) },
            self.acl.fns.aclnnMatmul,
        )
    }

    /// `out = bias + a · b` (`bias` `[1, N]`, broadcast over rows).
    pub fn addmm(
        &mut self,
        bias: &Tensor,
        a: &Tensor,
        b: &Tensor,
        out: &Tensor,
    ) -> Result<(), AclError> {
        let one_b: Scalar = self.acl.scalar_f32(1.0)?;
        let one_a: Scalar = self.acl.scalar_f32(1.0)?;
        let f = self.acl.fns.aclnnAddmmGetWorkspaceSize;
        // SAFETY: live descriptors and scalars; out-parameters valid.
        self.run(
            "aclnnAddmm",
            "aclnnAddmmGetWorkspaceSize",
            |w, e| unsafe {
                f(
                    bias.raw, a.raw, b.raw, one_b.raw, one_a.raw, out.raw, CUBE_MATH, w, e,
                )
            },
            self.acl.fns.aclnnAddmm,
        )
    }

    /// Whether [`Launcher::rope_cache`] is available (else [`Launcher::rope_v2`]).
    pub fn has_rope_cache(acl: &Acl) -> bool {
        acl.fns.aclnnRopeWithSinCosCacheGetWorkspaceSize.is_some()
            && acl.fns.aclnnRopeWithSinCosCache.is_some()
    }

    /// Neox RoPE of `q [T, Nq·D]`, `k [T, Nkv·D]` in place from `cache [maxPos, D]` (cos ‖ sin).
    pub fn rope_cache(
        &mut self,
        positions: &Tensor,
        q: &Tensor,
        k: &Tensor,
        cache: &Tensor,
        head_dim: i64,
    ) -> Result<(), AclError> {
        let (Some(f), Some(launch)) = (
            self.acl.fns.aclnnRopeWithSinCosCacheGetWorkspaceSize,
            self.acl.fns.aclnnRopeWithSinCosCache,
        ) else {
            return Err(AclError::missing("aclnnRopeWithSinCosCache"));
        };
        // SAFETY: live descriptors (outputs alias the inputs: in place,
        // as the operator allows); NULL mropeSection = plain RoPE; out-parameters valid.
        self.run(
            "aclnnRopeWithSinCosCache",
            "aclnnRopeWithSinCosCacheGetWorkspaceSize",
            |w, e| unsafe {
                f(
                    positions.raw,
                    q.raw,
                    k.raw,
                    cache.raw,
                    NULL,
                    head_dim,
                    true,
                    q.raw,
                    k.raw,
                    w,
                    e,
                )
            },
            launch,
        )
    }

    pub fn has_rope_v2(acl: &Acl) -> bool {
        acl.fns.aclnnApplyRotaryPosEmbV2GetWorkspaceSize.is_some()
            && acl.fns.aclnnApplyRotaryPosEmbV2.is_some()
    }

    /// RoPE in place, TND layout: `q [T, Nq, D]`, `k [T, Nkv, D]`, `cos`/`sin` `[T, 1, D]`.
    pub fn rope_v2(
        &mut self,
        q: &Tensor,
        k: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<(), AclError> {
        let (Some(f), Some(launch)) = (
            self.acl.fns.aclnnApplyRotaryPosEmbV2GetWorkspaceSize,
            self.acl.fns.aclnnApplyRotaryPosEmbV2,
        ) else {
            return Err(AclError::missing("aclnnApplyRotaryPosEmbV2"));
        };
        let mut mode = c_arg("half");
        // SAFETY: live descriptors; `mode` is a NUL-terminated string
        // that outlives the call; layout 4 = TND; out-parameters valid.
        self.run(
            "aclnnApplyRotaryPosEmbV2",
            "aclnnApplyRotaryPosEmbV2GetWorkspaceSize",
            |w, e| unsafe {
                f(
                    q.raw,
                    k.raw,
                    cos.raw,
                    sin.raw,
                    4,
                    mode.as_mut_ptr().cast::<c_char>(),
                    w,
                    e,
                )
            },
            launch,
        )
    }

    pub fn has_scatter_pa(acl: &Acl) -> bool {
        acl.fns.aclnnScatterPaKvCacheGetWorkspaceSize.is_some()
            && acl.fns.aclnnScatterPaKvCache.is_some()
    }

    /// Rows of `key`/`value` `[T, Nkv, D]` into their slots of the paged caches.
    pub fn scatter_pa_kv(
        &mut self,
        key: &Tensor,
        k_cache: &Tensor,
        slots: &Tensor,
        value: &Tensor,
        v_cache: &Tensor,
    ) -> Result<(), AclError> {
        let (Some(f), Some(launch)) = (
            self.acl.fns.aclnnScatterPaKvCacheGetWorkspaceSize,
            self.acl.fns.aclnnScatterPaKvCache,
        ) else {
            return Err(AclError::missing("aclnnScatterPaKvCache"));
        };
        let mut mode = c_arg("Norm");
        // SAFETY: live descriptors; `mode` outlives the call; the other
        // optionals are NULL as documented for the "Norm" cache mode; out-parameters valid.
        self.run(
            "aclnnScatterPaKvCache",
            "aclnnScatterPaKvCacheGetWorkspaceSize",
            |w, e| unsafe {
                f(
                    key.raw,
                    k_cache.raw,
                    slots.raw,
                    value.raw,
                    v_cache.raw,
                    NULL,
                    NULL,
                    NULL,
                    mode.as_mut_ptr().cast::<c_char>(),
                    std::ptr::null_mut(),
                    NULL,
                    NULL,
                    w,
                    e,
                )
            },
            launch,
        )
    }

    pub fn has_index_copy(acl: &Acl) -> bool {
        acl.fns.aclnnInplaceIndexCopyGetWorkspaceSize.is_some()
            && acl.fns.aclnnInplaceIndexCopy.is_some()
    }

    /// `dst[index[t]] = src[t]` along dim 0.
    pub fn index_copy(
        &mut self,
        dst: &Tensor,
        index: &Tensor,
        src: &Tensor,
    ) -> Result<(), AclError> {
        let (Some(f), Some(launch)) = (
            self.acl.fns.aclnnInplaceIndexCopyGetWorkspaceSize,
            self.acl.fns.aclnnInplaceIndexCopy,
        ) else {
            return Err(AclError::missing("aclnnInplaceIndexCopy"));
        };
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnInplaceIndexCopy",
            "aclnnInplaceIndexCopyGetWorkspaceSize",
            |w, e| unsafe { f(dst.raw, 0, index.raw, src.raw, w, e) },
            launch,
        )
    }

    /// Paged attention over block tables for prefill, decode and mixed batches.
    pub fn attention(&mut self, a: &Attention) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnFusedInferAttentionScoreV3GetWorkspaceSize;
        let mut layout = c_arg("TND");
        // SAFETY: live descriptors, lists and int arrays; every optional
        // not set is NULL; `layout` outlives the call; out-parameters valid.
        self.run(
            "aclnnFusedInferAttentionScoreV3",
            "aclnnFusedInferAttentionScoreV3GetWorkspaceSize",
            |w, e| unsafe {
                f(
                    a.query.raw,
                    a.key.raw,
                    a.value.raw,
                    NULL,
                    a.mask.raw,
                    a.cu_q.raw,
                    a.kv_lens.raw,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    a.block_table.raw,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    a.num_heads,
                    a.scale,
                    2_147_483_647,
                    0,
                    layout.as_mut_ptr().cast::<c_char>(),
                    a.num_kv_heads,
                    3,
                    0,
                    a.block_size,
                    0,
                    false,
                    0,
                    0,
                    a.out.raw,
                    a.lse.raw,
                    w,
                    e,
                )
            },
            self.acl.fns.aclnnFusedInferAttentionScoreV3,
        )
    }

    /// `out = silu(x[:, :I]) · x[:, I:]` for `x [T, 2I]`.
    pub fn swiglu(&mut self, x: &Tensor, out: &Tensor) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnSwiGluGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnSwiGlu",
            "aclnnSwiGluGetWorkspaceSize",
            |w, e| unsafe { f(x.raw, -1, out.raw, w, e) },
            self.acl.fns.aclnnSwiGlu,
        )
    }

    /// `out = x` converted to `dtype`.
    pub fn cast(&mut self, x: &Tensor, dtype: AclDType, out: &Tensor) -> Result<(), AclError> {
        let f = self.acl.fns.aclnnCastGetWorkspaceSize;
        // SAFETY: live descriptors; out-parameters valid.
        self.run(
            "aclnnCast",
            "aclnnCastGetWorkspaceSize",
            |w, e| unsafe { f(x.raw, dtype as i32, out.raw, w, e) },
            self.acl.fns.aclnnCast,
        )
    }
}
