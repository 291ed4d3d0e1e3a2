//! One rank's weights in device memory, uploaded once at load in the compute dtype: for a
//! tensor-parallel rank `r` of `tp`, q/k/v and gate/up are split by output rows (heads,
//! MLP columns), o_proj and down by input columns, and the embedding replicated; the final
//! norm and LM head live on rank 0 only (it alone computes logits). gate and up are
//! concatenated (gate first) so one matmul feeds SwiGLU. Biases of row-parallel projections
//! (o_proj / down, Llama's `attention_bias` / `mlp_bias`) are added by rank 0 only.

use std::ops::Range;
use std::sync::Arc;

use super::dtype::encode_block;
use super::ffi::{Acl, DeviceBuf};
use crate::backend::cpu::weights::WeightStore;
use crate::backend::cpu::HfModelConfig;
use crate::backend::{BackendError, DType};

/// A projection `out = x · Wᵀ (+ b)`: `w` is `[n, k]` row-major, `bias` `[n]`.
pub struct Proj {
    pub w: DeviceBuf,
    pub n: usize,
    pub k: usize,
    pub bias: Option<DeviceBuf>,
}

pub struct LayerWeights {
    pub in_norm: DeviceBuf,
    pub post_norm: DeviceBuf,
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    pub gate_up: Proj,
    pub down: Proj,
}

/// The final norm and LM head (rank 0).
pub struct Head {
    pub norm: DeviceBuf,
    /// `None`: tied to the embedding.
    pub lm_head: Option<DeviceBuf>,
}

pub struct RankWeights {
    pub embed: DeviceBuf,
    pub layers: Vec<LayerWeights>,
    pub head: Option<Head>,
    /// Bytes uploaded.
    pub bytes: u64,
}

/// Which part of the model a rank holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub rank: usize,
    pub tp: usize,
}

impl Split {
    /// This rank's part of `0..n` (n divisible by tp, checked at load).
    pub fn part(self, n: usize) -> Range<usize> {
        let each = n / self.tp;
        self.rank * each..(self.rank + 1) * each
    }
}

struct Uploader<'a> {
    acl: &'a Arc<Acl>,
    store: &'a WeightStore,
    cd: DType,
    bytes: u64,
}

impl Uploader<'_> {
    fn put(&mut self, data: &[u8]) -> Result<DeviceBuf, BackendError> {
        let buf = self.acl.malloc(data.len()).map_err(|e| e.at_load())?;
        self.acl.upload(&buf, 0, data).map_err(|e| e.at_load())?;
        self.bytes += data.len() as u64;
        Ok(buf)
    }

    /// `rows × cols` of the `[height, width]` tensor `name`.
    fn block(
        &self,
        name: &str,
        shape: [usize; 2],
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<u8>, BackendError> {
        let w = self.store.tensor(name, &shape)?;
        encode_block(&w, shape[1], rows, cols, self.cd)
    }

    /// `part` of the 1-D tensor `name` of `len` elements.
    fn vector_part(
        &self,
        name: &str,
        len: usize,
        part: Range<usize>,
    ) -> Result<Vec<u8>, BackendError> {
        let w = self.store.tensor(name, &[len])?;
        encode_block(&w, len, 0..1, part, self.cd)
    }

    fn vector(
        &mut self,
        name: &str,
        len: usize,
        part: Range<usize>,
    ) -> Result<DeviceBuf, BackendError> {
        let bytes = self.vector_part(name, len, part)?;
        self.put(&bytes)
    }
}

/// Uploads rank `split.rank`'s weights (its context must be current).
pub fn upload(
    acl: &Arc<Acl>,
    spec: &HfModelConfig,
    store: &WeightStore,
    cd: DType,
    split: Split,
) -> Result<RankWeights, BackendError> {
    let mut up = Uploader {
        acl,
        store,
        cd,
        bytes: 0,
    };
    let (h, vocab) = (spec.hidden, spec.vocab);
    let embed_bytes = up.block("model.embed_tokens.weight", [vocab, h], 0..vocab, 0..h)?;
    let embed = up.put(&embed_bytes)?;
    drop(embed_bytes);
    let mut layers = Vec::with_capacity(spec.layers);
    for i in 0..spec.layers {
        layers.push(layer(&mut up, spec, i, split)?);
    }
    let head = if split.rank == 0 {
        let norm = up.vector("model.norm.weight", h, 0..h)?;
        let lm_head = if spec.tie_word_embeddings {
            None
        } else {
            let b = up.block("lm_head.weight", [vocab, h], 0..vocab, 0..h)?;
            Some(up.put(&b)?)
        };
        Some(Head { norm, lm_head })
    } else {
        None
    };
    Ok(RankWeights {
        embed,
        layers,
        head,
        bytes: up.bytes,
    })
}

fn layer(
    up: &mut Uploader,
    spec: &HfModelConfig,
    i: usize,
    split: Split,
) -> Result<LayerWeights, BackendError> {
    let (h, inter) = (spec.hidden, spec.intermediate);
    let (qd, kvd) = (spec.q_dim(), spec.kv_dim());
    let p = format!("model.layers.{i}");
    let first = split.rank == 0;
    // Column-parallel: this rank's output rows of [n, h].
    let col = |up: &mut Uploader, name: &str, n: usize, bias: bool| {
        let rows = split.part(n);
        let w = up.block(&format!("{p}.{name}.weight"), [n, h], rows.clone(), 0..h)?;
        let bias = if bias {
            Some(up.vector(&format!("{p}.{name}.bias"), n, rows.clone())?)
        } else {
            None
        };
        Ok::<_, BackendError>(Proj {
            w: up.put(&w)?,
            n: rows.len(),
            k: h,
            bias,
        })
    };
    let q = col(up, "self_attn.q_proj", qd, spec.qkv_bias)?;
    let k = col(up, "self_attn.k_proj", kvd, spec.qkv_bias)?;
    let v = col(up, "self_attn.v_proj", kvd, spec.qkv_bias)?;
    // Row-parallel: all output rows, this rank's input columns; the bias on rank 0.
    let row = |up: &mut Uploader, name: &str, k: usize, bias: bool| {
        let cols = split.part(k);
        let w = up.block(&format!("{p}.{name}.weight"), [h, k], 0..h, cols.clone())?;
        let bias = if bias && first {
            Some(up.vector(&format!("{p}.{name}.bias"), h, 0..h)?)
        } else {
            None
        };
        Ok::<_, BackendError>(Proj {
            w: up.put(&w)?,
            n: h,
            k: cols.len(),
            bias,
        })
    };
    let o = row(up, "self_attn.o_proj", qd, spec.o_bias)?;
    let down = row(up, "mlp.down_proj", inter, spec.mlp_bias)?;
    let part = split.part(inter);
    let mut gu = up.block(
        &format!("{p}.mlp.gate_proj.weight"),
        [inter, h],
        part.clone(),
        0..h,
    )?;
    gu.extend(up.block(
        &format!("{p}.mlp.up_proj.weight"),
        [inter, h],
        part.clone(),
        0..h,
    )?);
    let gu_bias = if spec.mlp_bias {
        let mut b = up.vector_part(&format!("{p}.mlp.gate_proj.bias"), inter, part.clone())?;
        b.extend(up.vector_part(&format!("{p}.mlp.up_proj.bias"), inter, part.clone())?);
        Some(up.put(&b)?)
    } else {
        None
    };
    let gate_up = Proj {
        w: up.put(&gu)?,
        n: 2 * part.len(),
        k: h,
        bias: gu_bias,
    };
    Ok(LayerWeights {
        in_norm: up.vector(&format!("{p}.input_layernorm.weight"), h, 0..h)?,
        post_norm: up.vector(&format!("{p}.post_attention_layernorm.weight"), h, 0..h)?,
        q,
        k,
        v,
        o,
        gate_up,
        down,
    })
}
