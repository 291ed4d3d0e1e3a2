//! The matmul micro-kernel: a panel of weight rows against all activation rows.
//!
//! `y[m][n] = Σ_k x[m][k] · w[n][k]` (HF `Linear` layout, `w` is `[out, in]`). A panel is a run
//! of consecutive weight rows; the driver (`cpu::linear`) hands panels to threads. Inside a
//! panel, tiles of `NR` weight rows × `MR` activation rows keep `MR·NR` lane accumulators in
//! registers, so each weight element is loaded (and widened) once per `MR` activation rows and
//! each activation chunk once per `NR` weight rows. With few rows (decode) this reads every
//! weight exactly once; with many rows (prefill) non-f32 panels are widened once into scratch.

use super::{fmadd, hsum, widen_row, Fmt, F32, LANES};

/// Widen a non-f32 panel once when at least this many activation rows will reuse it.
const WIDEN_ROWS: usize = 8;

/// One panel of a matmul.
pub struct PanelArgs<'a, F: Fmt> {
    /// Activations, `m × k` row-major.
    pub x: &'a [f32],
    pub m: usize,
    pub k: usize,
    /// Consecutive weight rows, `rows × k` row-major in the stored format.
    pub w: &'a [F::Raw],
    /// Output, transposed: `rows × m` (row `n` holds `y[0..m][n]`).
    pub out_t: &'a mut [f32],
    /// Reusable buffer for a widened panel.
    pub scratch: &'a mut Vec<f32>,
}

/// Computes one panel (inlined into the feature-specific entry points in `ffi.rs`).
#[inline(always)]
pub fn matmul_panel<F: Fmt, const FMA: bool>(p: PanelArgs<'_, F>) {
    let PanelArgs {
        x,
        m,
        k,
        w,
        out_t,
        scratch,
    } = p;
    if k == 0 || m == 0 {
        out_t.iter_mut().for_each(|o| *o = 0.0);
        return;
    }
    if !F::IS_F32 && m >= WIDEN_ROWS {
        scratch.clear();
        scratch.resize(w.len(), 0.0);
        for (src, dst) in w.chunks_exact(k).zip(scratch.chunks_exact_mut(k)) {
            widen_row::<F>(src, dst);
        }
        panel_rows::<F32, FMA>(x, m, k, scratch, out_t);
    } else {
        panel_rows::<F, FMA>(x, m, k, w, out_t);
    }
}

#[inline(always)]
fn panel_rows<F: Fmt, const FMA: bool>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[F::Raw],
    out_t: &mut [f32],
) {
    let rows = w.len() / k;
    let mut n = 0;
    while n + 4 <= rows {
        let wr = [
            &w[n * k..(n + 1) * k],
            &w[(n + 1) * k..(n + 2) * k],
            &w[(n + 2) * k..(n + 3) * k],
            &w[(n + 3) * k..(n + 4) * k],
        ];
        rows_block::<F, FMA, 4>(x, m, k, wr, &mut out_t[n * m..(n + 4) * m]);
        n += 4;
    }
    while n < rows {
        let wr = [&w[n * k..(n + 1) * k]];
        rows_block::<F, FMA, 1>(x, m, k, wr, &mut out_t[n * m..(n + 1) * m]);
        n += 1;
    }
}

/// `NR` weight rows against all `m` activation rows, in tiles of up to 4 activation rows.
#[inline(always)]
fn rows_block<F: Fmt, const FMA: bool, const NR: usize>(
    x: &[f32],
    m: usize,
    k: usize,
    wr: [&[F::Raw]; NR],
    out_t: &mut [f32],
) {
    let mut i = 0;
    while i + 4 <= m {
        let xr = [
            &x[i * k..(i + 1) * k],
            &x[(i + 1) * k..(i + 2) * k],
            &x[(i + 2) * k..(i + 3) * k],
            &x[(i + 3) * k..(i + 4) * k],
        ];
        let r = tile::<F, FMA, 4, NR>(k, xr, wr);
        store(&r, i, m, out_t);
        i += 4;
    }
    match m - i {
        3 => {
            let xr = [
                &x[i * k..(i + 1) * k],
                &x[(i + 1) * k..(i + 2) * k],
                &x[(i + 2) * k..],
            ];
            store(&tile::<F, FMA, 3, NR>(k, xr, wr), i, m, out_t);
        }
        2 => {
            let xr = [&x[i * k..(i + 1) * k], &x[(i + 1) * k..(i + 2) * k]];
            store(&tile::<F, FMA, 2, NR>(k, xr, wr), i, m, out_t);
        }
        1 => {
            let xr = [&x[i * k..(i + 1) * k]];
            store(&tile::<F, FMA, 1, NR>(k, xr, wr), i, m, out_t);
        }
        _ => {}
    }
}

#[inline(always)]
fn store<const MR: usize, const NR: usize>(
    r: &[[f32; NR]; MR],
    i0: usize,
    m: usize,
    out_t: &mut [f32],
) {
    for (a, row) in r.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            out_t[j * m + i0 + a] = *v;
        }
    }
}

/// The register tile: `MR` activation rows × `NR` weight rows over the full `k`.
#[inline(always)]
fn tile<F: Fmt, const FMA: bool, const MR: usize, const NR: usize>(
    k: usize,
    xr: [&[f32]; MR],
    wr: [&[F::Raw]; NR],
) -> [[f32; NR]; MR] {
    let mut acc = [[[0f32; LANES]; NR]; MR];
    let chunks = k / LANES;
    for c in 0..chunks {
        let base = c * LANES;
        let mut wv = [[0f32; LANES]; NR];
        for j in 0..NR {
            let ws = &wr[j][base..base + LANES];
            for l in 0..LANES {
                wv[j][l] = F::to_f32(ws[l]);
            }
        }
        for i in 0..MR {
            let xs = &xr[i][base..base + LANES];
            for j in 0..NR {
                for l in 0..LANES {
                    acc[i][j][l] = fmadd::<FMA>(xs[l], wv[j][l], acc[i][j][l]);
                }
            }
        }
    }
    let mut out = [[0f32; NR]; MR];
    for i in 0..MR {
        for j in 0..NR {
            let mut s = hsum(&acc[i][j]);
            for t in chunks * LANES..k {
                s = fmadd::<FMA>(xr[i][t], F::to_f32(wr[j][t]), s);
            }
            out[i][j] = s;
        }
    }
    out
}
