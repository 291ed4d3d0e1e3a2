//! The decoder stack (Llama / Qwen2) over one packed step:
//! embed → [RMSNorm → q/k/v (+bias) → RoPE → KV write → paged attention → o_proj → residual →
//! RMSNorm → gate/up → SiLU·up → down → residual] × L → final RMSNorm → lm_head, the last only
//! for the rows that want logits. [`Model::forward_stage`] runs any contiguous range of layers
//! from tokens or hidden states to logits or hidden states (a node's share of a model split by
//! layers); [`Model::forward`] is the stage of all layers.
//!
//! A model may hold only a [`LayerShare`]: its layers (indexed locally, global index minus the
//! share's start, here and in the [`KvCache`]) and, when the share has the ends, the
//! embedding, final norm and LM head. [`Model::check_stage`] refuses a stage it cannot run.

use rayon::prelude::*;
use std::ops::Range;

use super::attention::{paged_attention, Shape};
use super::hf_config::HfModelConfig;
use super::kernels::SimdLevel;
use super::kernels::{self, dispatch, Bf16, Fmt, F16, F32};
use super::kv_cache::KvCache;
use super::linear::{matmul_with, Dot, Linear, PackedActs, GLU_BLOCK};
use super::op_times::{Op, OpTimes};
use super::rope::Rope;
use super::share::LayerShare;
use super::weights::{glu_interleaved, Matrix, WeightData, WeightStore};
use crate::backend::{BackendError, DType, StepBatch, StepOutput};

struct Layer {
    input_norm: Vec<f32>,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    post_norm: Vec<f32>,
    gate_up: GateUp,
    down: Linear,
}

/// The first half of a layer's MLP: the gate and up projections apart, or (where the loader
/// lays weights out in AMX tile order and the projections have no bias) as one weight with
/// their rows interleaved, whose matmul applies `silu(gate) · up` itself
/// (`linear::matmul_glu`).
enum GateUp {
    Split { gate: Linear, up: Linear },
    Fused(Linear),
}

/// The token embedding, final norm and LM head: the "ends" of a [`LayerShare`].
struct Ends {
    embed: Matrix,
    norm: Vec<f32>,
    lm_head: Matrix,
}

pub struct Model {
    pub spec: HfModelConfig,
    /// Global indices of `layers` (the share's range).
    held: Range<usize>,
    /// The held decoder layers; `layers[i]` is global layer `held.start + i`.
    layers: Vec<Layer>,
    ends: Option<Ends>,
    rope: Rope,
    pub dtype: DType,
    /// Activation buffers reused across steps (a prefill step's are tens of MB; fresh ones
    /// page-fault on every step).
    scratch: std::sync::Mutex<Scratch>,
}

/// The per-step activation buffers of [`Model::forward`]; every one is overwritten whole
/// before it is read, so old contents never leak into a step.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    hbuf: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// The gated unit's output packed for the down projection (AMX).
    packed: PackedActs,
}

/// How the loader lays out bf16 matmul weights, and the bytes it copied doing so.
pub struct Prep {
    /// Rearrange them into AMX tile order (`weights::Bf16Tiles`; wherever the AVX-512
    /// kernels run, but where AMX was turned off on an AMX machine); else, where the CPU has
    /// AMX, only move misaligned ones to 64-byte-aligned memory.
    pub tiles: bool,
    pub copied: usize,
}

/// A projection's weight and bias, the weight laid out as `prep` says.
fn linear(
    store: &WeightStore,
    prefix: &str,
    rows: usize,
    cols: usize,
    bias: bool,
    prep: &mut Prep,
) -> Result<Linear, BackendError> {
    let w = prep.matmul_weight(store.matrix(&format!("{prefix}.weight"), rows, cols)?);
    let bias = if bias {
        Some(store.vector(&format!("{prefix}.bias"), rows)?)
    } else {
        None
    };
    Ok(Linear { w, bias })
}

impl Prep {
    /// `m` in AMX tile order ([`Matrix::amx_tiled`]) when `tiles`, else 64-byte aligned where
    /// the AMX kernel may read it ([`Matrix::tile_aligned`]).
    fn matmul_weight(&mut self, m: Matrix) -> Matrix {
        let (m, bytes) = if self.tiles {
            m.amx_tiled()
        } else if super::kernels::has_amx() {
            m.tile_aligned()
        } else {
            (m, 0)
        };
        self.copied += bytes;
        m
    }
}

/// Decoder layer `i` (global index) of `spec` from `store`.
fn load_layer(
    spec: &HfModelConfig,
    store: &WeightStore,
    i: usize,
    prep: &mut Prep,
) -> Result<Layer, BackendError> {
    let (h, inter) = (spec.hidden, spec.intermediate);
    let (qd, kvd) = (spec.q_dim(), spec.kv_dim());
    let p = format!("model.layers.{i}");
    let attn = |name: &str, rows, cols, bias, prep: &mut Prep| {
        linear(
            store,
            &format!("{p}.self_attn.{name}"),
            rows,
            cols,
            bias,
            prep,
        )
    };
    let mlp = |name: &str, rows, cols, prep: &mut Prep| {
        linear(
            store,
            &format!("{p}.mlp.{name}"),
            rows,
            cols,
            spec.mlp_bias,
            prep,
        )
    };
    Ok(Layer {
        input_norm: store.vector(&format!("{p}.input_layernorm.weight"), h)?,
        q: attn("q_proj", qd, h, spec.qkv_bias, prep)?,
        k: attn("k_proj", kvd, h, spec.qkv_bias, prep)?,
        v: attn("v_proj", kvd, h, spec.qkv_bias, prep)?,
        o: attn("o_proj", h, qd, spec.o_bias, prep)?,
        post_norm: store.vector(&format!("{p}.post_attention_layernorm.weight"), h)?,
        gate_up: gate_up(store, &format!("{p}.mlp"), spec, prep, mlp)?,
        down: mlp("down_proj", h, inter, prep)?,
    })
}

/// A layer's gate and up projections (under `prefix`): fused ([`GateUp::Fused`]) where the
/// loader makes tile-order weights, they are bf16 and have no bias; else each through `mlp`.
fn gate_up(
    store: &WeightStore,
    prefix: &str,
    spec: &HfModelConfig,
    prep: &mut Prep,
    mlp: impl Fn(&str, usize, usize, &mut Prep) -> Result<Linear, BackendError>,
) -> Result<GateUp, BackendError> {
    let (h, inter) = (spec.hidden, spec.intermediate);
    if prep.tiles && !spec.mlp_bias {
        let gate = store.matrix(&format!("{prefix}.gate_proj.weight"), inter, h)?;
        let up = store.matrix(&format!("{prefix}.up_proj.weight"), inter, h)?;
        if let Some(w) = glu_interleaved(&gate, &up, GLU_BLOCK) {
            prep.copied += 2 * inter * h * 2;
            return Ok(GateUp::Fused(Linear { w, bias: None }));
        }
    }
    Ok(GateUp::Split {
        gate: mlp("gate_proj", inter, h, prep)?,
        up: mlp("up_proj", inter, h, prep)?,
    })
}

/// The embedding, final norm and LM head (tied: the embedding again, read once).
fn load_ends(
    spec: &HfModelConfig,
    store: &WeightStore,
    prep: &mut Prep,
) -> Result<Ends, BackendError> {
    let h = spec.hidden;
    let embed = store.matrix("model.embed_tokens.weight", spec.vocab, h)?;
    let norm = store.vector("model.norm.weight", h)?;
    let lm_head = if spec.tie_word_embeddings {
        embed.clone()
    } else if store.contains("lm_head.weight") {
        store.matrix("lm_head.weight", spec.vocab, h)?
    } else {
        return Err(BackendError::Weights(
            "missing `lm_head.weight` and tie_word_embeddings is false".into(),
        ));
    };
    let lm_head = prep.matmul_weight(lm_head);
    Ok(Ends {
        embed,
        norm,
        lm_head,
    })
}

impl Model {
    /// Reads the tensors of `share` (checked against the model first) from `store`, and no
    /// others: a share without the ends never opens the embedding or LM head. `tiles`: bf16
    /// matmul weights in AMX tile order ([`Prep`]).
    pub fn load(
        spec: HfModelConfig,
        store: &WeightStore,
        share: &LayerShare,
        tiles: bool,
    ) -> Result<Self, BackendError> {
        share.check(spec.layers)?;
        let mut prep = Prep { tiles, copied: 0 };
        let ends = if share.ends {
            Some(load_ends(&spec, store, &mut prep)?)
        } else {
            None
        };
        let layers = share
            .layers
            .clone()
            .map(|i| load_layer(&spec, store, i, &mut prep))
            .collect::<Result<Vec<_>, _>>()?;
        let dtype = match (&ends, layers.first()) {
            (Some(e), _) => e.embed.data.dtype(),
            (None, Some(l)) => l.q.w.data.dtype(),
            // (Refused by `share.check`: no layers and no ends.)
            (None, None) => DType::F32,
        };
        if prep.copied > 0 && tiles {
            tracing::info!(
                mib = prep.copied >> 20,
                "bf16 matmul weights rearranged into AMX tile order (read as one stream per \
                 tile row block)"
            );
        } else if prep.copied > 0 {
            tracing::info!(
                mib = prep.copied >> 20,
                "bf16 weights copied to 64-byte-aligned memory for the AMX kernel (the \
                 safetensors data is not 64-byte aligned)"
            );
        }
        let rope = Rope::new(spec.head_dim, spec.rope_theta, spec.rope_llama3.as_ref());
        Ok(Self {
            spec,
            held: share.layers.clone(),
            layers,
            ends,
            rope,
            dtype,
            scratch: std::sync::Mutex::new(Scratch::default()),
        })
    }

    /// Refuses a stage this model's share cannot run: layers outside the held ones (an empty
    /// range at either end of them is fine), a token input or logits without the ends.
    pub fn check_stage(&self, stage: &Stage<'_>) -> Result<(), BackendError> {
        let (r, held, n) = (&stage.layers, &self.held, self.spec.layers);
        let holds = || {
            let ends = if self.ends.is_some() {
                "with"
            } else {
                "without"
            };
            format!(
                "this backend holds layers {held:?} of the model's 0..{n}, {ends} the \
                 embedding, final norm and LM head"
            )
        };
        if r.start > r.end || r.start < held.start || r.end > held.end {
            return Err(BackendError::InvalidBatch(format!(
                "layer range {r:?} is outside the held layers: {}",
                holds()
            )));
        }
        if self.ends.is_none() && matches!(stage.input, StageInput::Tokens) {
            return Err(BackendError::InvalidBatch(format!(
                "a stage from tokens needs the token embedding: {}",
                holds()
            )));
        }
        if self.ends.is_none() && stage.logits {
            return Err(BackendError::InvalidBatch(format!(
                "a stage to logits needs the final norm and LM head: {}",
                holds()
            )));
        }
        Ok(())
    }

    /// Runs one validated packed step over the whole model; writes KV into `cache`.
    /// `bf16_dot` allows the bf16 dot-product matmuls (`linear` module doc).
    pub fn forward(
        &self,
        level: SimdLevel,
        bf16_dot: bool,
        batch: &StepBatch,
        cache: &mut KvCache,
    ) -> Result<StepOutput, BackendError> {
        let all = Stage {
            layers: 0..self.spec.layers,
            input: StageInput::Tokens,
            logits: true,
        };
        match self.forward_stage(level, bf16_dot, batch, all, cache)? {
            StageOutput::Logits(out) => Ok(out),
            // (Unreachable: the stage asked for logits.)
            StageOutput::Hidden(_) => Ok(StepOutput {
                vocab_size: self.spec.vocab,
                ..StepOutput::default()
            }),
        }
    }

    /// Runs the layers `stage.layers` of one validated packed step (a node's share of a model
    /// split by layers): from the token embeddings or from the hidden states of the stage
    /// before, to logits (final norm and LM head) or to hidden states for the stage after.
    /// Writes the KV of those layers only. The full forward is the stage of every layer from
    /// tokens to logits. `stage.layers` (global indices) must lie within the held layers
    /// ([`Model::check_stage`], else an error before anything runs); hidden inputs are
    /// `tokens × hidden` f32 rows.
    pub fn forward_stage(
        &self,
        level: SimdLevel,
        bf16_dot: bool,
        batch: &StepBatch,
        stage: Stage<'_>,
        cache: &mut KvCache,
    ) -> Result<StageOutput, BackendError> {
        self.check_stage(&stage)?;
        let h = self.spec.hidden;
        let t = batch.tokens.len();
        // A poisoned lock only means an earlier step panicked; the buffers are overwritten.
        let mut guard = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sc = &mut *guard;
        sc.x.resize(t * h, 0.0);
        match (stage.input, &self.ends) {
            (StageInput::Tokens, Some(ends)) => {
                for (row, &tok) in sc.x.chunks_exact_mut(h).zip(&batch.tokens) {
                    embed_row(&ends.embed, tok as usize, row);
                }
            }
            (StageInput::Hidden(hidden), _) => sc.x.copy_from_slice(&hidden[..t * h]),
            // (Refused by `check_stage`.)
            (StageInput::Tokens, None) => sc.x.fill(0.0),
        }
        // Local slots of the stage's layers (inside `held`: `check_stage`).
        let local = stage.layers.start - self.held.start..stage.layers.end - self.held.start;
        let mut times = self.run_layers(level, bf16_dot, batch, local, sc, cache);
        let out = match (stage.logits, &self.ends) {
            (true, Some(ends)) => {
                StageOutput::Logits(self.logits(ends, level, bf16_dot, batch, &sc.x))
            }
            _ => StageOutput::Hidden(sc.x[..t * h].to_vec()),
        };
        times.lap(Op::Head);
        tracing::debug!(tokens = t, ops = %times, "cpu step");
        Ok(out)
    }

    /// The held decoder layers at local slots `layers` over the residual stream `sc.x`; returns
    /// the time each operation took.
    fn run_layers(
        &self,
        level: SimdLevel,
        bf16_dot: bool,
        batch: &StepBatch,
        layers: Range<usize>,
        sc: &mut Scratch,
        cache: &mut KvCache,
    ) -> OpTimes {
        let mut times = OpTimes::start();
        let s = &self.spec;
        let t = batch.tokens.len();
        let (h, hd) = (s.hidden, s.head_dim);
        let Scratch {
            x,
            hbuf,
            q,
            k,
            v,
            attn,
            proj,
            gate,
            up,
            packed,
        } = sc;
        hbuf.resize(t * h, 0.0);
        attn.resize(t * s.q_dim(), 0.0);
        let (cos, sin) = self.rope.tables(&batch.positions);
        times.lap(Op::RopeKv);
        let half = hd / 2;
        // Which bf16 matmuls may round their activations to one bf16 term (`linear::Dot`).
        let (fast, fine) = (Dot::fast(bf16_dot), Dot::fine(bf16_dot));
        let shape = Shape {
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: hd,
            block_size: cache.block_size,
        };
        for (li, layer) in self
            .layers
            .iter()
            .enumerate()
            .take(layers.end)
            .skip(layers.start)
        {
            rms_norm_rows(x, &layer.input_norm, s.rms_eps, h, &mut *hbuf);
            times.lap(Op::Norm);
            Linear::forward_many(
                level,
                fine,
                hbuf,
                t,
                &[&layer.q, &layer.k, &layer.v],
                &mut [&mut *q, &mut *k, &mut *v],
            );
            times.lap(Op::Qkv);
            q.par_chunks_exact_mut(s.q_dim())
                .zip(k.par_chunks_exact_mut(s.kv_dim()))
                .zip(cos.par_chunks_exact(half).zip(sin.par_chunks_exact(half)))
                .with_min_len(ROWS_PER_TASK)
                .for_each(|((qr, kr), (c, sn))| {
                    for head in qr.chunks_exact_mut(hd).chain(kr.chunks_exact_mut(hd)) {
                        kernels::rope_rotate(head, c, sn);
                    }
                });
            let kvd = s.kv_dim();
            for seq in &batch.seqs {
                for r in seq.token_range.clone() {
                    let p = batch.positions[r] as usize;
                    let block = seq.block_table[p / cache.block_size];
                    let slot = p % cache.block_size;
                    let (kr, vr) = (&k[r * kvd..(r + 1) * kvd], &v[r * kvd..(r + 1) * kvd]);
                    cache.write(li, block, slot, kr, vr);
                }
            }
            times.lap(Op::RopeKv);
            let (kc, vc) = cache.layer(li);
            paged_attention(level, &shape, &batch.seqs, q, kc, vc, &mut *attn);
            times.lap(Op::Attention);
            layer.o.forward(level, fine, attn, t, &mut *proj);
            times.lap(Op::OProj);
            add_rows(&mut *x, proj, h);
            rms_norm_rows(x, &layer.post_norm, s.rms_eps, h, &mut *hbuf);
            times.lap(Op::Norm);
            // With AMX the gated unit's output goes straight into the down projection's
            // packed input where it can (`Linear::forward_glu_packed`; same values).
            let packed_down = match &layer.gate_up {
                GateUp::Split { gate: g, up: u } => {
                    Linear::forward_many(
                        level,
                        fast,
                        hbuf,
                        t,
                        &[g, u],
                        &mut [&mut *gate, &mut *up],
                    );
                    gate.par_chunks_mut(s.intermediate)
                        .zip(up.par_chunks(s.intermediate))
                        .with_min_len(ROWS_PER_TASK)
                        .for_each(|(g, u)| dispatch::silu_mul(level, g, u));
                    false
                }
                GateUp::Fused(gu)
                    if gu.forward_glu_packed(level, fast, hbuf, t, &layer.down, packed) =>
                {
                    true
                }
                // (`up` is the scratch of the unfused fallback, e.g. one row off AMX.)
                GateUp::Fused(gu) => {
                    gu.forward_glu(level, fast, hbuf, t, gate, up);
                    false
                }
            };
            times.lap(Op::GateUp);
            if packed_down {
                layer.down.forward_packed(packed, &mut *proj);
            } else {
                layer.down.forward(level, fast, gate, t, &mut *proj);
            }
            times.lap(Op::Down);
            add_rows(&mut *x, proj, h);
            times.lap(Op::Norm);
        }
        times
    }

    /// Final norm and LM head for the last row of each sequence that wants logits.
    fn logits(
        &self,
        ends: &Ends,
        level: SimdLevel,
        bf16_dot: bool,
        batch: &StepBatch,
        x: &[f32],
    ) -> StepOutput {
        let s = &self.spec;
        let h = s.hidden;
        let mut seq_indices = Vec::new();
        let mut last_rows = Vec::new();
        for (i, seq) in batch.seqs.iter().enumerate() {
            if seq.want_logits {
                let r = seq.token_range.end - 1;
                let mut normed = vec![0f32; h];
                kernels::rms_norm(&x[r * h..(r + 1) * h], &ends.norm, s.rms_eps, &mut normed);
                last_rows.extend_from_slice(&normed);
                seq_indices.push(i);
            }
        }
        let mut logits = vec![0f32; seq_indices.len() * s.vocab];
        matmul_with(
            level,
            Dot::fine(bf16_dot),
            &last_rows,
            seq_indices.len(),
            &ends.lm_head,
            &mut logits,
        );
        StepOutput {
            vocab_size: s.vocab,
            seq_indices,
            logits,
        }
    }
}

/// Which share of the model a [`Model::forward_stage`] runs.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    /// Decoder layers, by global index (an empty range runs none: e.g. the logits stage of
    /// the node holding the ends, after the other nodes' layers).
    pub layers: Range<usize>,
    pub input: StageInput<'a>,
    /// End with the final norm and LM head (else return hidden states).
    pub logits: bool,
}

/// Where a stage starts.
#[derive(Debug, Clone, Copy)]
pub enum StageInput<'a> {
    /// Embed the batch's tokens (the first stage).
    Tokens,
    /// The previous stage's hidden states, `tokens × hidden` f32 rows.
    Hidden(&'a [f32]),
}

/// What a stage produces.
#[derive(Debug, Clone, PartialEq)]
pub enum StageOutput {
    /// Logits of the rows that want them (the last stage).
    Logits(StepOutput),
    /// Hidden states after the stage's last layer, `tokens × hidden` f32 rows.
    Hidden(Vec<f32>),
}

/// Token rows per task of the element-wise steps spread over the pool: a decode-sized step
/// (a few dozen rows) stays on the calling thread, since waking the pool for microseconds of
/// work costs more than it saves.
pub(super) const ROWS_PER_TASK: usize = 32;

/// `out[r] = rms_norm(x[r])` for every `h`-wide row, rows spread over the pool.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, h: usize, out: &mut [f32]) {
    out.par_chunks_exact_mut(h)
        .zip(x.par_chunks_exact(h))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(o, xi)| kernels::rms_norm(xi, weight, eps, o));
}

/// `acc += x` over `h`-wide rows, rows spread over the pool.
fn add_rows(acc: &mut [f32], x: &[f32], h: usize) {
    acc.par_chunks_mut(h)
        .zip(x.par_chunks(h))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(a, b)| kernels::add_in_place(a, b));
}

/// Widens embedding row `tok` into `out`.
fn embed_row(embed: &Matrix, tok: usize, out: &mut [f32]) {
    let h = embed.cols;
    fn widen<F: Fmt>(src: &[F::Raw], tok: usize, h: usize, out: &mut [f32]) {
        kernels::widen_row::<F>(&src[tok * h..(tok + 1) * h], out);
    }
    match &embed.data {
        WeightData::F32(b) => widen::<F32>(b.as_slice(), tok, h, out),
        WeightData::Bf16(b) => widen::<Bf16>(b.as_slice(), tok, h, out),
        WeightData::F16(b) => widen::<F16>(b.as_slice(), tok, h, out),
        WeightData::Bf16Tiles(t) => {
            let mut row = vec![0u16; h];
            t.row_into(tok, &mut row);
            widen::<Bf16>(&row, 0, h, out);
        }
    }
}
