//! Linear layers over all packed tokens: `y = x · Wᵀ (+ b)` with one pass over the weight,
//! split into row panels across the thread pool. With AVX-512, bf16 and f32 weights go through
//! the intrinsic kernels in `ffi` over activations packed once per matmul (`kernels::gemm`);
//! otherwise (and for f16) through the portable kernels in `kernels::matmul`.
//!
//! Exact AMX (default where the CPU has AMX-BF16; `MINDIE_CPU_AMX=0` turns it off): bf16
//! weights with at least [`AMX_EXACT_MIN_M`] activation rows run on AMX tiles with every
//! activation split into three bf16 terms (`kernels::gemm::pack_amx`) that sum to its f32
//! value, so the result has the f32 kernel's accuracy at 1.9–3× its speed (measured with
//! `BENCH_GEMM_M`, 4864 × 896, 16–2048 rows). Each panel writes its columns of the outputs
//! directly (`ffi::split_columns`).
//!
//! Opt-in (`bf16_dot`, from `MINDIE_CPU_BF16_DOT` via `CpuOptions::bf16_dot`): bf16 weights
//! with at least [`BF16_DOT_MIN_M`] activation rows round the activations to bf16 and run
//! bf16 × bf16 products with f32 accumulation — on AMX tiles (`tdpbf16ps`,
//! `ffi::gemm_panel_amx`) where the CPU and OS allow, else with AVX-512 BF16 (`vdpbf16ps`,
//! `ffi::gemm_panel_bf16_dot`). Not bit-for-bit the f32-activation result; everything else
//! (other dtypes, fewer rows, the flag off) keeps the exact path. Measured on a 2-core
//! Sapphire-Rapids-class VM: ≈1.7× the exact AMX path's GFLOP/s at 128–2048 rows; `vdpbf16ps`
//! alone is *slower* than the exact kernel there (≈0.8×: it issues at about half the f32 FMA
//! rate), so it is only the fallback where AMX is missing.

use rayon::prelude::*;

use super::ffi::{self, AmxPanel, GemmPanel, Pod, SimdLevel};
use super::kernels::{gemm, Bf16, Fmt, PanelArgs, F16, F32};
use super::weights::{Matrix, WeightData};

/// Below this many multiply-adds a matmul runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Weight bytes of one panel when activation tiles re-read it (half a 2 MiB L2).
const PANEL_L2_BYTES: usize = 1 << 20;

/// Fewest activation rows of a matmul for the bf16 dot-product path (when enabled): matmuls of
/// a few rows (batch-1 to ~4 decode) are bound by reading the weights, where the exact kernel
/// already runs at the memory bound (and the AMX tiles would be mostly padding), so they keep
/// the exact f32-activation kernel, and its accuracy.
pub const BF16_DOT_MIN_M: usize = 8;

/// Fewest activation rows of a matmul for the exact AMX path (bf16 weights, activations as
/// three bf16 terms; see `ffi::gemm_panel_amx`): below it the AVX-512 kernel, which reads the
/// weights at the memory bound, is as fast.
pub const AMX_EXACT_MIN_M: usize = 16;

static AMX_EXACT: std::sync::OnceLock<std::sync::atomic::AtomicBool> = std::sync::OnceLock::new();

fn amx_exact_flag() -> &'static std::sync::atomic::AtomicBool {
    AMX_EXACT.get_or_init(|| {
        let off = std::env::var("MINDIE_CPU_AMX").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        });
        std::sync::atomic::AtomicBool::new(!off)
    })
}

/// Whether the exact path may use the AMX kernel (where the CPU has it): on unless
/// `MINDIE_CPU_AMX` is `0`/`false`/`no`/`off`, or [`set_amx_exact`] turned it off.
pub fn amx_exact() -> bool {
    amx_exact_flag().load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns the exact AMX path on or off for this process (benchmarks compare both in one run).
pub fn set_amx_exact(on: bool) {
    amx_exact_flag().store(on, std::sync::atomic::Ordering::Relaxed);
}

/// A projection: weight `[out, in]` in its stored dtype, optional f32 bias.
pub struct Linear {
    pub w: Matrix,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `out[m × out_features] = x[m × in_features] · Wᵀ + b`.
    /// `bf16_dot` allows the bf16 dot-product kernel (see the module doc).
    pub fn forward(
        &self,
        level: SimdLevel,
        bf16_dot: bool,
        x: &[f32],
        m: usize,
        out: &mut Vec<f32>,
    ) {
        Self::forward_many(level, bf16_dot, x, m, &[self], &mut [out]);
    }

    /// Several projections of the same input (q/k/v, gate/up) in one parallel pass: the
    /// activations are packed once and the panels of all weights share the pool.
    pub fn forward_many(
        level: SimdLevel,
        bf16_dot: bool,
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
        matmul_many(level, bf16_dot, x, m, &mats, &mut slices);
        for (l, out) in layers.iter().zip(outs.iter_mut()) {
            if let Some(b) = &l.bias {
                for row in out.chunks_exact_mut(l.w.rows) {
                    super::kernels::add_in_place(row, b);
                }
            }
        }
    }
}

/// `outs[i][m × ws[i].rows] = x[m × k] · ws[i]ᵀ` for weights sharing `k` columns; `bf16_dot`
/// allows the bf16 dot-product kernel (see the module doc).
pub fn matmul_many(
    level: SimdLevel,
    bf16_dot: bool,
    x: &[f32],
    m: usize,
    ws: &[&Matrix],
    outs: &mut [&mut [f32]],
) {
    let k = ws.first().map_or(0, |w| w.cols);
    let fast = level == SimdLevel::Avx512
        && m > 0
        && k > 0
        && ws.iter().all(|w| w.cols == k && w.rows > 0);
    if fast {
        let bf16: Option<Vec<&[u16]>> = ws
            .iter()
            .map(|w| match &w.data {
                WeightData::Bf16(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect();
        if let Some(b) = bf16 {
            let amx_pieces = match (bf16_dot, ffi::has_amx()) {
                (true, true) if m >= BF16_DOT_MIN_M => Some(1),
                (false, true) if m >= AMX_EXACT_MIN_M && amx_exact() => Some(3),
                _ => None,
            };
            if let Some(pieces) = amx_pieces {
                let mut xb = XB.with(|s| s.take());
                let packed = gemm::pack_amx(x, m, k, pieces, &mut xb);
                run_amx(packed, m, k, pieces, &b, outs);
                XB.with(|s| s.replace(xb));
                return;
            }
            if bf16_dot && m >= BF16_DOT_MIN_M && ffi::has_avx512_bf16() {
                let mut xb = XB.with(|s| s.take());
                let packed = gemm::pack_bf16(x, m, k, &mut xb);
                run_packed(level, packed, m, k, &b, outs, 4, ffi::gemm_panel_bf16_dot);
                XB.with(|s| s.replace(xb));
                return;
            }
            let mut xp = XP.with(|s| s.take());
            let packed = gemm::pack(x, m, k, true, &mut xp);
            run_packed(level, packed, m, k, &b, outs, 4, ffi::gemm_panel_bf16);
            XP.with(|s| s.replace(xp));
            return;
        }
        let f32s: Option<Vec<&[f32]>> = ws
            .iter()
            .map(|w| match &w.data {
                WeightData::F32(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect();
        if let Some(f) = f32s {
            let mut xp = XP.with(|s| s.take());
            let packed = gemm::pack(x, m, k, false, &mut xp);
            run_packed(level, packed, m, k, &f, outs, 4, ffi::gemm_panel_f32);
            XP.with(|s| s.replace(xp));
            return;
        }
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        matmul(level, x, m, w, out);
    }
}

/// `out[m × w.rows] = x[m × w.cols] · wᵀ` (the exact f32-activation path).
pub fn matmul(level: SimdLevel, x: &[f32], m: usize, w: &Matrix, out: &mut [f32]) {
    matmul_with(level, false, x, m, w, out)
}

/// [`matmul`], with `bf16_dot` allowing the bf16 dot-product kernel (see the module doc).
pub fn matmul_with(
    level: SimdLevel,
    bf16_dot: bool,
    x: &[f32],
    m: usize,
    w: &Matrix,
    out: &mut [f32],
) {
    let (n, k) = (w.rows, w.cols);
    let kernel_dtype = matches!(w.data, WeightData::F32(_) | WeightData::Bf16(_));
    if level == SimdLevel::Avx512 && kernel_dtype && m > 0 && n > 0 && k > 0 {
        return matmul_many(level, bf16_dot, x, m, &[w], &mut [out]);
    }
    match &w.data {
        WeightData::F32(b) => run::<F32>(level, x, m, k, n, b.as_slice(), out),
        WeightData::Bf16(b) => run::<Bf16>(level, x, m, k, n, b.as_slice(), out),
        WeightData::F16(b) => run::<F16>(level, x, m, k, n, b.as_slice(), out),
    }
}

fn run<F: Fmt>(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[F::Raw],
    out: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 {
        panels::<F>(level, x, m, k, w, &mut out[..n]);
        return;
    }
    let mut out_t = vec![0f32; n * m];
    panels::<F>(level, x, m, k, w, &mut out_t);
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
}

/// Weight rows per panel of a matmul of `m` activation rows over `total_n` weight rows of `k`
/// columns (`elem` bytes each): a few panels per thread for balance, each a multiple of the
/// kernel's row block `align` and, with several activation tiles, small enough to stay in L2
/// between them.
fn panel_rows(m: usize, k: usize, total_n: usize, elem: usize, align: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let rows = total_n
        .div_ceil(threads * 4)
        .next_multiple_of(align)
        .max(align);
    if m > gemm::TILE_M {
        let cap = (PANEL_L2_BYTES / (k * elem)).max(align) / align * align;
        return rows.min(cap);
    }
    rows
}

/// The AMX path: the weight-row panels of all `ws` in parallel, each writing its columns of
/// `outs[i]` (`m × ws[i].len() / k`) directly.
fn run_amx(
    packed: &[u16],
    m: usize,
    k: usize,
    pieces: usize,
    ws: &[&[u16]],
    outs: &mut [&mut [f32]],
) {
    let total_n: usize = ws.iter().map(|w| w.len() / k).sum();
    let rows = panel_rows(m, k, total_n, 2, 32);
    let mut tasks = Vec::new();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let n = w.len() / k;
        let widths = (0..n).step_by(rows).map(|n0| rows.min(n - n0));
        tasks.extend(w.chunks(rows * k).zip(ffi::split_columns(out, n, widths)));
    }
    tasks.into_par_iter().for_each(|(w, out)| {
        let p = AmxPanel {
            xp: packed,
            m,
            k,
            pieces,
            w,
            out,
        };
        assert!(ffi::gemm_panel_amx(p), "no AMX kernel");
    });
}

type PanelFn<W, X> = fn(SimdLevel, GemmPanel<'_, W, X>) -> bool;

/// The AVX-512 path over activations packed once (`packed`, for `kernel`): the weight-row
/// panels of all `ws` in parallel, each a multiple of `align` rows (the kernel's row block)
/// where possible; `outs[i]` is `m × ws[i].len() / k`.
#[allow(clippy::too_many_arguments)]
fn run_packed<W: Pod, X: Sync>(
    level: SimdLevel,
    packed: &[X],
    m: usize,
    k: usize,
    ws: &[&[W]],
    outs: &mut [&mut [f32]],
    align: usize,
    kernel: PanelFn<W, X>,
) {
    // Buffer reused across calls on this thread (fresh large allocations page-fault).
    let mut tr = TR.with(|s| s.take());
    let total_n: usize = ws.iter().map(|w| w.len() / k).sum();
    let threads = rayon::current_num_threads().max(1);
    let parallel = m * total_n * k >= PARALLEL_MIN_MACS && threads > 1;
    let mut rows = panel_rows(m, k, total_n, std::mem::size_of::<W>(), align);
    if !parallel && m <= gemm::TILE_M {
        rows = total_n;
    }
    // Outputs transposed (`n × m`, one after another in `tr`); with one row, the outputs.
    let mut tasks: Vec<(&[W], &mut [f32])> = Vec::new();
    if m > 1 {
        // Every kernel writes each of its outputs, so a reused buffer needs no clearing.
        if tr.len() < total_n * m {
            tr.resize(total_n * m, 0.0);
        }
        let mut rest = &mut tr[..total_n * m];
        for w in ws {
            let (o, r) = rest.split_at_mut(w.len() / k * m);
            rest = r;
            tasks.extend(w.chunks(rows * k).zip(o.chunks_mut(rows * m)));
        }
    } else {
        for (w, o) in ws.iter().zip(outs.iter_mut()) {
            tasks.extend(w.chunks(rows * k).zip(o.chunks_mut(rows)));
        }
    }
    let panel = |(w, o): (&[W], &mut [f32])| {
        let p = GemmPanel {
            xp: packed,
            m,
            k,
            w,
            out_t: o,
        };
        assert!(kernel(level, p), "no {level:?} kernel");
    };
    if parallel {
        tasks.into_par_iter().for_each(panel);
    } else {
        tasks.into_iter().for_each(panel);
    }
    if m > 1 {
        let mut rest = &tr[..total_n * m];
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (t, r) = rest.split_at(w.len() / k * m);
            rest = r;
            transpose_into(t, m, out);
        }
    }
    TR.with(|s| s.replace(tr));
}

thread_local! {
    /// Packed activations (f32 layouts, bf16 layout) and transposed outputs of the last matmul
    /// on this thread.
    static XP: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static XB: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    static TR: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `out[i][j] = t[j][i]` for `t` of `n × m`, in blocks of 16 columns so both sides stay in
/// few cache lines.
fn transpose_into(t: &[f32], m: usize, out: &mut [f32]) {
    let n = t.len() / m;
    for j0 in (0..n).step_by(16) {
        let j1 = (j0 + 16).min(n);
        for i in 0..m {
            for (j, o) in (j0..j1).zip(&mut out[i * n + j0..i * n + j1]) {
                *o = t[j * m + i];
            }
        }
    }
}

/// Fills `out_t` (`n × m`, transposed) panel by panel, in parallel when worth it.
fn panels<F: Fmt>(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[F::Raw],
    out_t: &mut [f32],
) {
    let n = out_t.len() / m;
    let threads = rayon::current_num_threads().max(1);
    if m * n * k < PARALLEL_MIN_MACS || threads == 1 {
        let (mut scratch, mut xpack) = (Vec::new(), Vec::new());
        let p = PanelArgs::<F> {
            x,
            m,
            k,
            w: &w[..n * k],
            out_t,
            scratch: &mut scratch,
            xpack: &mut xpack,
        };
        ffi::matmul_panel::<F>(level, p);
    } else {
        // Several panels per thread for balance, each a multiple of the 4-row register tile.
        let rows = n.div_ceil(threads * 4).next_multiple_of(4).max(4);
        out_t
            .par_chunks_mut(rows * m)
            .zip(w[..n * k].par_chunks(rows * k))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(scratch, xpack), (o, wp)| {
                    let p = PanelArgs::<F> {
                        x,
                        m,
                        k,
                        w: wp,
                        out_t: o,
                        scratch,
                        xpack,
                    };
                    ffi::matmul_panel::<F>(level, p);
                },
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::weights::Buf;
    use std::sync::Arc;

    fn reference(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| x[i * k + t] * w[j * k + t]).sum();
            }
        }
        y
    }

    #[test]
    fn matches_reference_all_shapes_and_levels() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 33),
            (3, 9, 16),
            (5, 13, 40),
            (17, 70, 130),
            (70, 9, 64),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let wf: Vec<f32> = (0..n * k)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let want = reference(&x, m, &wf, n, k);
            let wb: Vec<u16> = wf.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            let mats = [
                Matrix {
                    rows: n,
                    cols: k,
                    data: WeightData::F32(Buf::Owned(Arc::new(wf))),
                },
                Matrix {
                    rows: n,
                    cols: k,
                    data: WeightData::Bf16(Buf::Owned(Arc::new(wb))),
                },
            ];
            for mat in &mats {
                for level in [ffi::simd_level(), SimdLevel::Portable] {
                    let mut out = vec![0f32; m * n];
                    matmul(level, &x, m, mat, &mut out);
                    for (a, b) in out.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-3, "m{m} n{n} k{k}: {a} vs {b}");
                    }
                }
            }
        }
    }

    /// `matmul_with(.., bf16_dot = true, ..)` (AMX where present, else `vdpbf16ps`; the exact
    /// path below `BF16_DOT_MIN_M` rows, which the reference tolerance also covers) against a
    /// scalar reference that rounds the activations to bf16 and accumulates the exact
    /// products in f64; odd `k`, tails of every width, partial activation tiles, 1-row panels.
    /// Skipped (with a note) on CPUs without AVX-512 BF16.
    #[test]
    fn bf16_dot_matches_bf16_rounded_reference() {
        if ffi::simd_level() != SimdLevel::Avx512 || !ffi::has_avx512_bf16() {
            eprintln!("skipped: this CPU has no AVX-512 BF16 (or MINDIE_CPU_KERNELS caps it)");
            return;
        }
        let level = SimdLevel::Avx512;
        let mut rng = crate::engine::sampler::Rng::new(0x9e37_79b9);
        let mut rnd = move || (rng.next_f64() * 2.0 - 1.0) as f32;
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 33),
            (2, 5, 31),
            (3, 9, 16),
            (5, 13, 40),
            (8, 8, 64),
            (9, 17, 95),
            (17, 70, 130),
            (70, 9, 64),
            (16, 33, 896),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let wb: Vec<u16> = (0..n * k)
                .map(|_| crate::backend::cpu::kernels::f32_to_bf16(rnd() * 0.5))
                .collect();
            let xr: Vec<f64> = x
                .iter()
                .map(|&v| {
                    let b = crate::backend::cpu::kernels::f32_to_bf16(v);
                    crate::backend::cpu::kernels::bf16_to_f32(b) as f64
                })
                .collect();
            let wr: Vec<f64> = wb
                .iter()
                .map(|&b| crate::backend::cpu::kernels::bf16_to_f32(b) as f64)
                .collect();
            let mat = Matrix {
                rows: n,
                cols: k,
                data: WeightData::Bf16(Buf::Owned(Arc::new(wb))),
            };
            let mut out = vec![0f32; m * n];
            matmul_with(level, true, &x, m, &mat, &mut out);
            let mut exact = vec![0f32; m * n];
            matmul(level, &x, m, &mat, &mut exact);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| xr[i * k + t] * wr[j * k + t]).sum();
                    let mag: f64 = (0..k).map(|t| (xr[i * k + t] * wr[j * k + t]).abs()).sum();
                    let got = out[i * n + j] as f64;
                    // f32 accumulation of `k` products: a few ulps of the magnitude sum.
                    let tol = 1e-6 + mag * 4.0 * f32::EPSILON as f64;
                    if m < BF16_DOT_MIN_M {
                        assert_eq!(got, exact[i * n + j] as f64, "m{m}: exact path below");
                        continue;
                    }
                    assert!(
                        (got - want).abs() <= tol,
                        "m{m} n{n} k{k} ({i},{j}): {got} vs {want} (tol {tol})"
                    );
                    // And it differs from the exact path (activations were rounded)...
                    // ...by no more than bf16 rounding of the activations allows.
                    let e = exact[i * n + j] as f64;
                    assert!((got - e).abs() <= mag * 2f64.powi(-8) + 1e-6);
                }
            }
        }
    }

    /// Both bf16-activation kernels called directly (the AMX one and the `vdpbf16ps` one),
    /// against the same bf16-rounded scalar reference; each skipped (with a note) where the CPU
    /// lacks it.
    #[test]
    fn bf16_dot_kernels_match_reference_directly() {
        use crate::backend::cpu::kernels::{bf16_to_f32, f32_to_bf16};
        let have_dot = ffi::simd_level() == SimdLevel::Avx512 && ffi::has_avx512_bf16();
        let have_amx = ffi::has_amx();
        if !have_dot {
            eprintln!("skipped vdpbf16ps kernel: no AVX-512 BF16 on this CPU");
        }
        if !have_amx {
            eprintln!("skipped AMX kernel: no AMX-BF16 (or no OS permission)");
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 17, 33),
            (16, 32, 64),
            (17, 50, 95),
            (40, 70, 130),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 41.0)
                .collect();
            let w: Vec<u16> = (0..n * k)
                .map(|i| f32_to_bf16(((i * 13 % 29) as f32 - 14.0) / 17.0))
                .collect();
            let mut want = vec![0f64; n * m];
            let mut mag = vec![0f64; n * m];
            for j in 0..n {
                for i in 0..m {
                    for t in 0..k {
                        let p = bf16_to_f32(f32_to_bf16(x[i * k + t])) as f64
                            * bf16_to_f32(w[j * k + t]) as f64;
                        want[j * m + i] += p;
                        mag[j * m + i] += p.abs();
                    }
                }
            }
            let check = |name: &str, got: &[f32]| {
                for ((g, w), a) in got.iter().zip(&want).zip(&mag) {
                    let tol = 1e-6 + a * 4.0 * f32::EPSILON as f64;
                    assert!(
                        (*g as f64 - w).abs() <= tol,
                        "{name} m{m} n{n} k{k}: {g} vs {w}"
                    );
                }
            };
            if have_dot {
                let mut buf = Vec::new();
                let xp = gemm::pack_bf16(&x, m, k, &mut buf);
                let mut out_t = vec![0f32; n * m];
                let p = GemmPanel {
                    xp,
                    m,
                    k,
                    w: &w,
                    out_t: &mut out_t,
                };
                assert!(ffi::gemm_panel_bf16_dot(SimdLevel::Avx512, p));
                check("vdpbf16ps", &out_t);
            }
            if have_amx {
                let mut buf = Vec::new();
                let xp = gemm::pack_amx(&x, m, k, 1, &mut buf);
                // Written into columns 3.. of wider rows, to check the column placement.
                let mut wide = vec![f32::NAN; m * (n + 5)];
                let mut panels = ffi::split_columns(&mut wide, n + 5, [3, n]);
                let p = AmxPanel {
                    xp,
                    m,
                    k,
                    pieces: 1,
                    w: &w,
                    out: panels.pop().expect("two panels"),
                };
                assert!(ffi::gemm_panel_amx(p));
                drop(panels);
                for row in wide.chunks_exact(n + 5) {
                    assert!(row[..3].iter().chain(&row[3 + n..]).all(|v| v.is_nan()));
                }
                let out: Vec<f32> = wide
                    .chunks_exact(n + 5)
                    .flat_map(|row| row[3..3 + n].to_vec())
                    .collect();
                let out_t: Vec<f32> = (0..n * m).map(|at| out[(at % m) * n + at / m]).collect();
                check("amx", &out_t);
            }
        }
    }

    /// The exact AMX path (three bf16 terms per activation) against an f64 reference, with
    /// the tolerance of an f32 dot product, on shapes with partial tiles, odd `k`, several
    /// L2 chunks of activation rows and several panels; and the AVX-512 path agrees with it
    /// to the same tolerance. Skipped (with a note) without AMX.
    #[test]
    fn exact_amx_matches_f32_reference() {
        if !ffi::has_amx() || ffi::simd_level() != SimdLevel::Avx512 {
            eprintln!("skipped: no AMX-BF16 here (or no OS permission)");
            return;
        }
        let mut rng = crate::engine::sampler::Rng::new(0x1234_5678);
        let mut rnd = move || (rng.next_f64() * 2.0 - 1.0) as f32;
        for &(m, n, k) in &[
            (16, 1, 1),
            (16, 33, 31),
            (17, 70, 130),
            (40, 96, 896),
            (100, 50, 4864),
            (333, 64, 96),
        ] {
            // Activations over several magnitudes, as after RMSNorm and SiLU.
            let x: Vec<f32> = (0..m * k)
                .map(|i| rnd() * [1e-3f32, 1.0, 37.0][i % 3])
                .collect();
            let wb: Vec<u16> = (0..n * k)
                .map(|_| crate::backend::cpu::kernels::f32_to_bf16(rnd() * 0.5))
                .collect();
            let wr: Vec<f64> = wb
                .iter()
                .map(|&b| crate::backend::cpu::kernels::bf16_to_f32(b) as f64)
                .collect();
            let mat = Matrix {
                rows: n,
                cols: k,
                data: WeightData::Bf16(Buf::Owned(Arc::new(wb))),
            };
            set_amx_exact(true);
            let mut amx = vec![0f32; m * n];
            matmul(SimdLevel::Avx512, &x, m, &mat, &mut amx);
            set_amx_exact(false);
            let mut fma = vec![0f32; m * n];
            matmul(SimdLevel::Avx512, &x, m, &mat, &mut fma);
            set_amx_exact(true);
            for i in 0..m {
                for j in 0..n {
                    let row = &x[i * k..(i + 1) * k];
                    let w = &wr[j * k..(j + 1) * k];
                    let want: f64 = row.iter().zip(w).map(|(a, b)| *a as f64 * b).sum();
                    let mag: f64 = row.iter().zip(w).map(|(a, b)| (*a as f64 * b).abs()).sum();
                    let tol = 1e-30 + mag * 4.0 * f32::EPSILON as f64;
                    let (a, f) = (amx[i * n + j] as f64, fma[i * n + j] as f64);
                    assert!(
                        (a - want).abs() <= tol,
                        "amx m{m} n{n} k{k} ({i},{j}): {a} vs {want} (tol {tol})"
                    );
                    assert!((f - want).abs() <= tol, "fma ({i},{j}): {f} vs {want}");
                }
            }
        }
    }

    /// The three bf16 terms of `pack_amx` sum back to every f32 exactly.
    #[test]
    fn amx_pieces_sum_to_the_f32() {
        use crate::backend::cpu::kernels::bf16_to_f32;
        let (m, k) = (17, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.000_123_4 / 7.0)
            .collect();
        let mut buf = Vec::new();
        let p = gemm::pack_amx(&x, m, k, 3, &mut buf).to_vec();
        let kb = k.div_ceil(32);
        for (i, row) in x.chunks_exact(k).enumerate() {
            let (blk, r) = (i / 16, i % 16);
            for (c, v) in row.iter().enumerate() {
                let at = |piece: usize| {
                    let t = blk * 3 * kb + piece * kb + c / 32;
                    bf16_to_f32(p[t * 512 + (c % 32 / 2) * 32 + r * 2 + c % 2])
                };
                let (hi, mid, lo) = (at(0), at(1), at(2));
                assert_eq!(hi + (mid + lo), *v, "row {i} col {c}");
            }
        }
    }

    /// Column panels cover their own columns only, every row, and refuse to overrun.
    #[test]
    fn split_columns_hands_out_disjoint_columns() {
        let mut m = vec![0f32; 3 * 10];
        let mut panels = ffi::split_columns(&mut m, 10, [4, 5]);
        assert_eq!(panels.len(), 2);
        for (pi, p) in panels.iter_mut().enumerate() {
            assert_eq!(p.rows(), 3);
            for i in 0..3 {
                p.row_mut(i).fill((pi + 1) as f32);
            }
        }
        drop(panels);
        for row in m.chunks_exact(10) {
            assert_eq!(row, &[1., 1., 1., 1., 2., 2., 2., 2., 2., 0.]);
        }
        let wide = std::panic::catch_unwind(|| {
            let mut m = vec![0f32; 20];
            ffi::split_columns(&mut m, 10, [6, 5]).len()
        });
        assert!(wide.is_err(), "widths past the row are refused");
    }

    #[test]
    fn transpose16_transposes() {
        let src: [f32; 256] = std::array::from_fn(|i| i as f32);
        let mut dst = [[0f32; 16]; 16];
        ffi::transpose16(&src, &mut dst);
        for (j, row) in dst.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                assert_eq!(*v, src[i * 16 + j], "({j},{i})");
            }
        }
    }

    /// With the flag off, `matmul_with` is the exact path, bit for bit.
    #[test]
    fn bf16_dot_off_is_the_exact_path() {
        let (m, n, k) = (5, 13, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 7.0)
            .collect();
        let wb: Vec<u16> = (0..n * k)
            .map(|i| crate::backend::cpu::kernels::f32_to_bf16(((i * 5 % 11) as f32 - 5.0) / 3.0))
            .collect();
        let mat = Matrix {
            rows: n,
            cols: k,
            data: WeightData::Bf16(Buf::Owned(Arc::new(wb))),
        };
        let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
        matmul(ffi::simd_level(), &x, m, &mat, &mut a);
        matmul_with(ffi::simd_level(), false, &x, m, &mat, &mut b);
        assert_eq!(a, b);
    }
}
