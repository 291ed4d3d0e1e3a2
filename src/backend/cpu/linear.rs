//! Linear layers over all packed tokens: `y = x · Wᵀ (+ b)` with one pass over the weight,
//! split into row panels across the thread pool. With AVX-512, bf16 and f32 weights go through
//! the intrinsic kernels in `ffi` over activations packed once per matmul (`kernels::gemm`);
//! otherwise (and for f16) through the portable kernels in `kernels::matmul`.

use rayon::prelude::*;

use super::ffi::{self, GemmPanel, Pod, SimdLevel};
use super::kernels::{gemm, Bf16, Fmt, PanelArgs, F16, F32};
use super::weights::{Matrix, WeightData};

/// Below this many multiply-adds a matmul runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

/// Weight bytes of one panel when activation tiles re-read it (half a 2 MiB L2).
const PANEL_L2_BYTES: usize = 1 << 20;

/// A projection: weight `[out, in]` in its stored dtype, optional f32 bias.
pub struct Linear {
    pub w: Matrix,
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `out[m × out_features] = x[m × in_features] · Wᵀ + b`.
    pub fn forward(&self, level: SimdLevel, x: &[f32], m: usize, out: &mut Vec<f32>) {
        Self::forward_many(level, x, m, &[self], &mut [out]);
    }

    /// Several projections of the same input (q/k/v, gate/up) in one parallel pass: the
    /// activations are packed once and the panels of all weights share the pool.
    pub fn forward_many(
        level: SimdLevel,
        x: &[f32],
        m: usize,
        layers: &[&Linear],
        outs: &mut [&mut Vec<f32>],
    ) {
        for (l, out) in layers.iter().zip(outs.iter_mut()) {
            out.clear();
            out.resize(m * l.w.rows, 0.0);
        }
        let mats: Vec<&Matrix> = layers.iter().map(|l| &l.w).collect();
        let mut slices: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        matmul_many(level, x, m, &mats, &mut slices);
        for (l, out) in layers.iter().zip(outs.iter_mut()) {
            if let Some(b) = &l.bias {
                for row in out.chunks_exact_mut(l.w.rows) {
                    super::kernels::add_in_place(row, b);
                }
            }
        }
    }
}

/// `outs[i][m × ws[i].rows] = x[m × k] · ws[i]ᵀ` for weights sharing `k` columns.
pub fn matmul_many(level: SimdLevel, x: &[f32], m: usize, ws: &[&Matrix], outs: &mut [&mut [f32]]) {
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
            return run_packed(level, x, m, k, &b, outs, true, ffi::gemm_panel_bf16);
        }
        let f32s: Option<Vec<&[f32]>> = ws
            .iter()
            .map(|w| match &w.data {
                WeightData::F32(b) => Some(b.as_slice()),
                _ => None,
            })
            .collect();
        if let Some(f) = f32s {
            return run_packed(level, x, m, k, &f, outs, false, ffi::gemm_panel_f32);
        }
    }
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        matmul(level, x, m, w, out);
    }
}

/// `out[m × w.rows] = x[m × w.cols] · wᵀ`.
pub fn matmul(level: SimdLevel, x: &[f32], m: usize, w: &Matrix, out: &mut [f32]) {
    let (n, k) = (w.rows, w.cols);
    let kernel_dtype = matches!(w.data, WeightData::F32(_) | WeightData::Bf16(_));
    if level == SimdLevel::Avx512 && kernel_dtype && m > 0 && n > 0 && k > 0 {
        return matmul_many(level, x, m, &[w], &mut [out]);
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

type PanelFn<W> = fn(SimdLevel, GemmPanel<'_, W>) -> bool;

/// The intrinsic-kernel path: pack `x` once, then the weight-row panels of all `ws` in
/// parallel; `outs[i]` is `m × ws[i].len() / k`.
#[allow(clippy::too_many_arguments)]
fn run_packed<W: Pod>(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    ws: &[&[W]],
    outs: &mut [&mut [f32]],
    bf16: bool,
    kernel: PanelFn<W>,
) {
    // Buffers reused across calls on this thread (fresh large allocations page-fault).
    let (mut xp, mut tr) = SCRATCH.with(|s| s.take());
    let packed = gemm::pack(x, m, k, bf16, &mut xp);
    let total_n: usize = ws.iter().map(|w| w.len() / k).sum();
    let threads = rayon::current_num_threads().max(1);
    let parallel = m * total_n * k >= PARALLEL_MIN_MACS && threads > 1;
    // A few panels per thread for balance, each a multiple of the 4-row register tile and,
    // with several activation tiles, small enough to stay in L2 between them.
    let mut rows = total_n.div_ceil(threads * 4).next_multiple_of(4).max(4);
    if m > gemm::TILE_M {
        let cap = (PANEL_L2_BYTES / (k * std::mem::size_of::<W>())).max(4) / 4 * 4;
        rows = rows.min(cap);
    }
    if !parallel && m <= gemm::TILE_M {
        rows = total_n;
    }
    // Outputs transposed (`n × m`, one after another in `tr`); with one row, the outputs.
    let mut tasks: Vec<(&[W], &mut [f32])> = Vec::new();
    if m > 1 {
        tr.clear();
        tr.resize(total_n * m, 0.0);
        let mut rest = tr.as_mut_slice();
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
        let mut rest = tr.as_slice();
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (t, r) = rest.split_at(w.len() / k * m);
            rest = r;
            transpose_into(t, m, out);
        }
    }
    SCRATCH.with(|s| s.replace((xp, tr)));
}

thread_local! {
    /// Packed activations and transposed outputs of the last matmul on this thread.
    static SCRATCH: std::cell::Cell<(Vec<f32>, Vec<f32>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
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
}
