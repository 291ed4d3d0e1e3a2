//! Linear layers over all packed tokens: `y = x · Wᵀ (+ b)` with one pass over the weight,
//! split into row panels across the thread pool. With AVX-512, bf16 and f32 weights go through
//! the intrinsic kernels in `kernels::avx512` / `kernels::amx` over activations packed once per
//! matmul (`kernels::gemm`; driven by `packed`); otherwise (and for f16) through the portable
//! kernels in `kernels::matmul` (driven by `portable`).
//!
//! Exact AMX (default where the CPU has AMX-BF16; `MINDIE_CPU_AMX=0`, via [`set_amx_exact`] at
//! backend load, turns it off): bf16
//! weights with at least [`AMX_EXACT_MIN_M`] activation rows run on AMX tiles with every
//! activation split into three bf16 terms (`kernels::gemm::pack_amx`) that sum to its f32
//! value, so the result has the f32 kernel's accuracy at 1.9–3× its speed (measured with
//! `BENCH_GEMM_M`, 4864 × 896, 16–2048 rows). Each panel writes its columns of the outputs
//! directly (`kernels::column_panel::split_columns`). The backend loads bf16 weights in AMX
//! tile order (`weights::Bf16Tiles`) wherever the AVX-512 kernels run (not where
//! `MINDIE_CPU_AMX=0` turns AMX off on an AMX machine): AMX from 2 rows, one row through the
//! AVX-512 one-row kernel over tile order ([`TILES_ROW_KERNEL_MAX_M`]); without AMX, the
//! AVX-512 register-tile kernels over tile order from 2 rows (exact, or `vdpbf16ps` for one
//! bf16 term): the dot-product form below [`BCAST_MIN_M`] rows, the broadcast form from there
//! (activations packed 16 rows to a vector: `gemm::pack_pairs` in f32, `gemm::pack_amx` as one
//! bf16 term).
//!
//! Opt-in (`bf16_dot`, from `MINDIE_CPU_BF16_DOT` via `CpuKnobs::bf16_dot`; per matmul a
//! [`Dot`]): bf16 weights with at least [`BF16_DOT_MIN_M`] activation rows run bf16 × bf16
//! products with f32 accumulation over activations taken as one bf16 each (rounded to nearest
//! even; [`Dot::Fast`]: the MLP, most of the multiply-adds) or as two ([`Dot::Fine`]: `hi`
//! rounded, `lo` the rounded rest, 16 significant bits; q/k/v, o and the LM head, where one
//! rounding moves logprobs most for the fewest multiply-adds) — on AMX tiles (`tdpbf16ps`,
//! `kernels::amx::gemm_panel_amx`) where the CPU and OS allow, else (one term only) with
//! AVX-512 BF16 (`vdpbf16ps`, `kernels::avx512::gemm_panel_bf16_dot`); without AMX, two-term
//! matmuls take the exact path. Measured through the engine (`tests/engine_parity.rs`, tiny
//! bf16 fixtures vs HF, prompts alone and batched): one term everywhere moved logprobs by up to
//! 0.18 (q/k/v alone: 0.17); with q/k/v, o and the LM head on two terms, 0.066. Not
//! bit-for-bit the f32-activation result; everything else (other dtypes, fewer rows,
//! [`Dot::Exact`]) keeps the exact path. Measured on a 2-core Sapphire-Rapids-class VM
//! (4864 × 896): one term ≈2.3× the exact AMX path's GFLOP/s at 256–1024 rows, two terms
//! ≈1.4×; `vdpbf16ps` alone is *slower* than the exact kernel there (≈0.8×: it issues at about
//! half the f32 FMA rate), so it is only the fallback where AMX is missing.
//!
//! Gated MLP on AMX: gate and up run as one weight ([`matmul_glu`]), and where the down
//! projection takes the AMX kernel too, the unit's output is written straight into its packed
//! input ([`Linear::forward_glu_packed`], [`PackedActs`]), the same bits as packing the f32
//! output.

mod packed;
mod portable;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};

use super::kernels::{gemm, Bf16, SimdLevel, F16, F32};
use super::weights::{Matrix, WeightData};

/// Below this many multiply-adds a matmul runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Fewest activation rows of a matmul for the bf16 dot-product path (when enabled): matmuls of
/// a few rows (batch-1 to ~4 decode) are bound by reading the weights, where the exact kernel
/// already runs at the memory bound (and the AMX tiles would be mostly padding), so they keep
/// the exact f32-activation kernel, and its accuracy.
pub const BF16_DOT_MIN_M: usize = 8;

/// How a bf16 matmul multiplies its f32 activations (see the module doc): the exact path, or
/// bf16 dot products over activations taken as one or two bf16 terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dot {
    /// f32 activations (the default, `MINDIE_CPU_BF16_DOT` off).
    Exact,
    /// One bf16 term per activation (the bulk of the multiply-adds: gate/up, down).
    Fast,
    /// Two bf16 terms per activation (16 significant bits): the matmuls whose rounding moves
    /// logprobs most for their share of the work (q/k/v, o, the LM head).
    Fine,
}

impl Dot {
    /// `Fast` where `bf16_dot`, else `Exact`.
    pub fn fast(bf16_dot: bool) -> Self {
        if bf16_dot {
            Self::Fast
        } else {
            Self::Exact
        }
    }

    /// `Fine` where `bf16_dot`, else `Exact`.
    pub fn fine(bf16_dot: bool) -> Self {
        if bf16_dot {
            Self::Fine
        } else {
            Self::Exact
        }
    }

    /// bf16 terms per activation of a matmul of `m` rows, `None` for the exact path.
    pub fn terms(self, m: usize) -> Option<usize> {
        match self {
            _ if m < BF16_DOT_MIN_M => None,
            Self::Exact => None,
            Self::Fast => Some(1),
            Self::Fine => Some(2),
        }
    }
}

/// Fewest activation rows of a matmul for the exact AMX path (bf16 weights, activations as
/// three bf16 terms; see `kernels::amx::gemm_panel_amx`): below it the AVX-512 kernel, which reads the
/// weights at the memory bound, is as fast.
pub const AMX_EXACT_MIN_M: usize = 16;

/// Most activation rows for which a matmul over tiled weights (`weights::Bf16Tiles`) on the
/// exact path runs the AVX-512 one-row kernel instead of the AMX tiles: batch-1 decode, where
/// it reads the weights at ~95 % of the bandwidth without paying for 16 tile rows of
/// arithmetic. It streams each block once per activation row, so from 2 rows the AMX kernel,
/// whose time hardly depends on the rows, is as fast or faster (4864 × 896 from memory,
/// `cargo bench --bench decode -- quick`: 2 rows 421–435 µs vs 409–411 µs on AMX, 4 rows
/// 518–530 µs vs 408–415 µs).
pub const TILES_ROW_KERNEL_MAX_M: usize = 1;

/// Fewest activation rows for which one bf16 term without AMX runs the broadcast form of the
/// `vdpbf16ps` kernel (`avx512::gemm_panel_tiles_bcast`: 16 activation rows per vector, whole
/// sums) instead of the dot-product form (one pair of rows per vector, lane sums at the end):
/// from one whole 16-row block, where a part block would waste lanes. Measured on a Zen 4 with
/// the decode bench's matmul loop (`MINDIE_CPU_BF16_DOT=1 BENCH_GEMM_TILED=1 BENCH_GEMM_M=m
/// BENCH_GEMM_NK=n,k`, GFLOP/s dot → broadcast): 9728 × 896 at 8 rows 300 → 209, 12: 265 →
/// 273, 16: 266 → 361, 32: 267 → 357, 128: 292 → 363, 2,048: 343 → 356; 896 × 4864 at 8:
/// 245 → 162, 12: 265 → 263, 16: 278 → 331, 32: 271 → 349, 2,048: 255 → 367. Through the
/// model, the concurrency-16 decode step (`MINDIE_CPU_BF16_DOT=1 BENCH_PROMPT=32 BENCH_CONC=16
/// cargo bench --bench decode -- model`) went from 66–68 ms to 47–49 ms. The exact kernel
/// (f32 FMAs, each weight pair broadcast and widened once per register tile) takes the same
/// threshold: 9728 × 896 at 16 rows 169 → 180 GFLOP/s, 32: 168 → 198, 2,048: 187 → 188;
/// 896 × 4864 at 16: 140 → 169, 32: 159 → 186, 2,048: 149 → 139–149; the exact
/// concurrency-16 decode step 91–94 → 72–82 ms.
pub const BCAST_MIN_M: usize = 16;

/// The exact path's AMX switch: one per process, since the step API carries only the kernel
/// level and the bf16-dot flag down to the matmuls.
static AMX_EXACT: AtomicBool = AtomicBool::new(true);

/// Whether the exact path may use the AMX kernel (where the CPU has it): on unless
/// [`set_amx_exact`] turned it off (a backend sets it from `CpuKnobs::amx`, i.e.
/// `MINDIE_CPU_AMX`, when it loads).
pub fn amx_exact() -> bool {
    AMX_EXACT.load(Ordering::Relaxed)
}

/// Turns the exact AMX path on or off for this process (the backend at load, from its options;
/// benchmarks compare both in one run).
pub fn set_amx_exact(on: bool) {
    AMX_EXACT.store(on, Ordering::Relaxed);
}
/// A projection: weight `[out, in]` in its stored dtype, optional f32 bias.
pub struct Linear {
    pub w: Matrix,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `out[m × out_features] = x[m × in_features] · Wᵀ + b`.
    /// `dot` chooses the exact path or the bf16 dot products (see the module doc).
    pub fn forward(&self, level: SimdLevel, dot: Dot, x: &[f32], m: usize, out: &mut Vec<f32>) {
        Self::forward_many(level, dot, x, m, &[self], &mut [out]);
    }

    /// `out[m × rows / 2] = silu(gate(x)) · up(x)` for a gated weight ([`matmul_glu`]; no
    /// bias: the loader fuses only bias-free projections). `scratch` is reused across calls.
    pub fn forward_glu(
        &self,
        level: SimdLevel,
        dot: Dot,
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
        scratch: &mut Vec<f32>,
    ) {
        assert!(self.bias.is_none(), "a gated weight has no bias");
        out.resize(m * self.w.rows / 2, 0.0);
        matmul_glu(level, dot, x, m, &self.w, out, scratch);
    }

    /// [`Self::forward_glu`] with its output left in `acts`, packed as `down`'s AMX matmul
    /// reads it ([`Self::forward_packed`]), without the f32 matrix in between. `false`
    /// (nothing done) where `down` would not run on AMX at these rows or the shapes do not
    /// allow it (the caller then runs the two apart); the values are the same either way.
    pub fn forward_glu_packed(
        &self,
        level: SimdLevel,
        dot: Dot,
        x: &[f32],
        m: usize,
        down: &Linear,
        acts: &mut PackedActs,
    ) -> bool {
        assert!(self.bias.is_none(), "a gated weight has no bias");
        level == SimdLevel::Avx512
            && packed::matmul_glu_packed_amx(dot, x, m, &self.w, &down.w, acts)
    }

    /// `out = acts · Wᵀ + b` over activations that [`Self::forward_glu_packed`] packed for
    /// this projection.
    pub fn forward_packed(&self, acts: &PackedActs, out: &mut Vec<f32>) {
        out.resize(acts.m * self.w.rows, 0.0);
        packed::matmul_acts_amx(acts, &self.w, out);
        self.add_bias(out);
    }

    /// Adds the bias, if any, to every row of `out` (rows of `w.rows` values).
    fn add_bias(&self, out: &mut [f32]) {
        if let Some(b) = &self.bias {
            for row in out.chunks_exact_mut(self.w.rows) {
                super::kernels::add_in_place(row, b);
            }
        }
    }

    /// Several projections of the same input (q/k/v, gate/up) in one parallel pass: the
    /// activations are packed once and the panels of all weights share the pool.
    pub fn forward_many(
        level: SimdLevel,
        dot: Dot,
        x: &[f32],
        m: usize,
        layers: &[&Linear],
        outs: &mut [&mut Vec<f32>],
    ) {
        for (l, out) in layers.iter().zip(outs.iter_mut()) {
            // Overwritten whole by the matmul: a reused buffer keeps its old values until then.
            out.resize(m * l.w.rows, 0.0);
        }
        let mats: Vec<&Matrix> = layers.iter().map(|l| &l.w).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_many(level, dot, x, m, &mats, &mut slices);
        for (l, out) in layers.iter().zip(outs.iter_mut()) {
            l.add_bias(out);
        }
    }
}

/// The first half of a gated MLP over a weight whose rows are the gate and up projections
/// interleaved in blocks of [`GLU_BLOCK`] rows (`weights::glu_interleaved`): `out[m × n/2]
/// = silu(x · gateᵀ) · (x · upᵀ)`. On AMX (tile-order weights) the activation is applied to
/// each finished tile in the kernel, so the two products never reach memory (at 2,048 prefill
/// rows of Qwen2-0.5B they are 80 MB a layer, written and read back); elsewhere the matmul
/// writes both into `scratch` and the activation runs over it. `silu_mul` is the same kernel
/// either way (`kernels::dispatch::silu_mul`), so both give the unfused path's values.
pub fn matmul_glu(
    level: SimdLevel,
    dot: Dot,
    x: &[f32],
    m: usize,
    w: &Matrix,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let half = w.rows / 2;
    assert!(
        w.rows.is_multiple_of(2 * GLU_BLOCK) && out.len() == m * half,
        "gated weight of {} rows, output of {} for {m} rows",
        w.rows,
        out.len()
    );
    if level == SimdLevel::Avx512 && packed::matmul_glu_amx(dot, x, m, w, out) {
        return;
    }
    scratch.resize(m * w.rows, 0.0);
    matmul_with(level, dot, x, m, w, scratch);
    for (both, o) in scratch
        .chunks_exact_mut(w.rows)
        .zip(out.chunks_exact_mut(half))
    {
        for (pair, o) in both
            .chunks_exact_mut(2 * GLU_BLOCK)
            .zip(o.chunks_exact_mut(GLU_BLOCK))
        {
            let (gate, up) = pair.split_at_mut(GLU_BLOCK);
            super::kernels::dispatch::silu_mul(level, gate, up);
            o.copy_from_slice(gate);
        }
    }
}

/// `m × k` activations in the AMX kernel's packed layout (`kernels::gemm::pack_amx`, `pieces`
/// bf16 terms per value), written by [`Linear::forward_glu_packed`] for the next projection;
/// the buffer is reused across steps.
#[derive(Default)]
pub struct PackedActs {
    buf: Vec<u16>,
    /// Where the 64-byte aligned data start in `buf`.
    skip: usize,
    m: usize,
    k: usize,
    pieces: usize,
}

impl PackedActs {
    /// The buffer for `m × k` activations of `pieces` terms, every element to be written.
    fn reset(&mut self, m: usize, k: usize, pieces: usize) -> &mut [u16] {
        let len = gemm::amx_packed_len(m, k, pieces);
        let data = gemm::aligned64(&mut self.buf, len);
        self.skip = (data.as_ptr() as usize - self.buf.as_ptr() as usize) / 2;
        (self.m, self.k, self.pieces) = (m, k, pieces);
        &mut self.buf[self.skip..self.skip + len]
    }

    fn data(&self) -> &[u16] {
        let len = gemm::amx_packed_len(self.m, self.k, self.pieces);
        &self.buf[self.skip..self.skip + len]
    }
}

/// Rows of each gate (then up) block of a gated weight ([`matmul_glu`]): one AMX tile's rows,
/// so a 32-row block of the AMX kernel holds a gate block and its up block.
pub const GLU_BLOCK: usize = 16;

/// `outs[i][m × ws[i].rows] = x[m × k] · ws[i]ᵀ` for weights sharing `k` columns; `dot`
/// chooses the exact path or the bf16 dot products (see the module doc).
pub fn matmul_many(
    level: SimdLevel,
    dot: Dot,
    x: &[f32],
    m: usize,
    ws: &[&Matrix],
    outs: &mut [&mut [f32]],
) {
    if packed::matmul_packed(level, dot, x, m, ws, outs) {
        return;
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        matmul(level, x, m, w, out);
    }
}

/// `out[m × w.rows] = x[m × w.cols] · wᵀ` (the exact f32-activation path).
pub fn matmul(level: SimdLevel, x: &[f32], m: usize, w: &Matrix, out: &mut [f32]) {
    matmul_with(level, Dot::Exact, x, m, w, out)
}

/// [`matmul`], with `dot` choosing the exact path or the bf16 dot products (see the module
/// doc).
pub fn matmul_with(level: SimdLevel, dot: Dot, x: &[f32], m: usize, w: &Matrix, out: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    let kernel_dtype = matches!(
        w.data,
        WeightData::F32(_) | WeightData::Bf16(_) | WeightData::Bf16Tiles(_)
    );
    if level == SimdLevel::Avx512 && kernel_dtype && m > 0 && n > 0 && k > 0 {
        return matmul_many(level, dot, x, m, &[w], &mut [out]);
    }
    match &w.data {
        WeightData::F32(b) => portable::run::<F32>(level, x, m, k, n, b.as_slice(), out),
        WeightData::Bf16(b) => portable::run::<Bf16>(level, x, m, k, n, b.as_slice(), out),
        WeightData::F16(b) => portable::run::<F16>(level, x, m, k, n, b.as_slice(), out),
        WeightData::Bf16Tiles(t) => {
            portable::run::<Bf16>(level, x, m, k, n, &t.to_rows(), out);
        }
    }
}
