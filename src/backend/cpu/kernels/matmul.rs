//! The matmul micro-kernel: a panel of weight rows against all activation rows.
//!
//! `y[m][n] = Σ_k x[m][k] · w[n][k]` (HF `Linear` layout, `w` is `[out, in]`). A panel is a run
//! of consecutive weight rows; the driver (`cpu::linear`) hands panels to threads. Inside a
//! panel, tiles of 4 weight rows × 1 or 2 activation rows keep their lane accumulators in
//! registers (named locals that never escape: LLVM keeps them out of memory only then), so
//! each weight chunk is widened once per 2 activation rows and each activation chunk is
//! loaded once per 4 weight rows. With few rows (decode) this reads every
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
    /// Reusable buffer for the packed activations.
    pub xpack: &'a mut Vec<f32>,
}

/// Computes one panel (inlined into the feature-specific entry points in `dispatch`).
#[inline(always)]
pub fn matmul_panel<F: Fmt, const FMA: bool>(p: PanelArgs<'_, F>) {
    let PanelArgs {
        x,
        m,
        k,
        w,
        out_t,
        scratch,
        xpack,
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
        panel_rows::<F32, FMA>(x, m, k, scratch, out_t, xpack);
    } else {
        panel_rows::<F, FMA>(x, m, k, w, out_t, xpack);
    }
}

#[inline(always)]
fn panel_rows<F: Fmt, const FMA: bool>(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[F::Raw],
    out_t: &mut [f32],
    xpack: &mut Vec<f32>,
) {
    let rows = w.len() / k;
    let row = |n: usize| &w[n * k..(n + 1) * k];
    // Activation rows in pairs, interleaved per lane chunk: [chunk][2][LANES].
    let pairs = m / 2;
    let full = k / LANES;
    xpack.clear();
    xpack.resize(pairs * full * 2 * LANES, 0.0);
    let stride = full * 2 * LANES;
    for p in 0..pairs {
        let dst = &mut xpack[p * stride..(p + 1) * stride];
        for (c, d) in dst.chunks_exact_mut(2 * LANES).enumerate() {
            for i in 0..2 {
                let src = &x[(2 * p + i) * k + c * LANES..(2 * p + i) * k + (c + 1) * LANES];
                d[i * LANES..(i + 1) * LANES].copy_from_slice(src);
            }
        }
    }
    let mut n = 0;
    while n + 4 <= rows {
        let wr = [row(n), row(n + 1), row(n + 2), row(n + 3)];
        for p in 0..pairs {
            let xp = &xpack[p * stride..(p + 1) * stride];
            let r = tile2x4::<F, FMA>(xp, [&x[2 * p * k..], &x[(2 * p + 1) * k..]], k, wr);
            for (j, v) in r.iter().enumerate() {
                out_t[(n + j) * m + 2 * p] = v[0];
                out_t[(n + j) * m + 2 * p + 1] = v[1];
            }
        }
        if m % 2 == 1 {
            let r = tile1x4::<F, FMA>(&x[(m - 1) * k..m * k], k, wr);
            for (j, v) in r.iter().enumerate() {
                out_t[(n + j) * m + m - 1] = *v;
            }
        }
        n += 4;
    }
    while n < rows {
        for i in 0..m {
            out_t[n * m + i] = dot_row::<F, FMA>(&x[i * k..(i + 1) * k], row(n));
        }
        n += 1;
    }
}

#[inline(always)]
fn widen16<F: Fmt>(w: &[F::Raw]) -> [f32; LANES] {
    let w = &w[..LANES];
    let mut o = [0f32; LANES];
    for l in 0..LANES {
        o[l] = F::to_f32(w[l]);
    }
    o
}

#[inline(always)]
fn fma16<const FMA: bool>(acc: &mut [f32; LANES], x: &[f32], w: &[f32; LANES]) {
    let x = &x[..LANES];
    for l in 0..LANES {
        acc[l] = fmadd::<FMA>(x[l], w[l], acc[l]);
    }
}

/// One activation row × 4 weight rows (the decode shape). Accumulators are named locals that
/// never escape, so they stay in registers.
#[inline(always)]
fn tile1x4<F: Fmt, const FMA: bool>(x: &[f32], k: usize, w: [&[F::Raw]; 4]) -> [f32; 4] {
    let full = k / LANES * LANES;
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let it = x[..full]
        .chunks_exact(LANES)
        .zip(w[0][..full].chunks_exact(LANES))
        .zip(w[1][..full].chunks_exact(LANES))
        .zip(w[2][..full].chunks_exact(LANES))
        .zip(w[3][..full].chunks_exact(LANES));
    for ((((xs, c0), c1), c2), c3) in it {
        let (v0, v1, v2, v3) = (
            widen16::<F>(c0),
            widen16::<F>(c1),
            widen16::<F>(c2),
            widen16::<F>(c3),
        );
        fma16::<FMA>(&mut a0, xs, &v0);
        fma16::<FMA>(&mut a1, xs, &v1);
        fma16::<FMA>(&mut a2, xs, &v2);
        fma16::<FMA>(&mut a3, xs, &v3);
    }
    let mut r = [hsum(a0), hsum(a1), hsum(a2), hsum(a3)];
    for (j, rj) in r.iter_mut().enumerate() {
        for t in full..k {
            *rj = fmadd::<FMA>(x[t], F::to_f32(w[j][t]), *rj);
        }
    }
    r
}

/// Two activation rows (packed `[chunk][2][LANES]`) × 4 weight rows: each widened weight
/// chunk feeds two FMAs. `xt` are the unpacked rows, for the `k % LANES` tail.
#[inline(always)]
fn tile2x4<F: Fmt, const FMA: bool>(
    xp: &[f32],
    xt: [&[f32]; 2],
    k: usize,
    w: [&[F::Raw]; 4],
) -> [[f32; 2]; 4] {
    let full = k / LANES * LANES;
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let (mut b0, mut b1, mut b2, mut b3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let it = xp
        .chunks_exact(2 * LANES)
        .zip(w[0][..full].chunks_exact(LANES))
        .zip(w[1][..full].chunks_exact(LANES))
        .zip(w[2][..full].chunks_exact(LANES))
        .zip(w[3][..full].chunks_exact(LANES));
    for ((((xs, c0), c1), c2), c3) in it {
        let (v0, v1, v2, v3) = (
            widen16::<F>(c0),
            widen16::<F>(c1),
            widen16::<F>(c2),
            widen16::<F>(c3),
        );
        let (x0, x1) = xs.split_at(LANES);
        fma16::<FMA>(&mut a0, x0, &v0);
        fma16::<FMA>(&mut a1, x0, &v1);
        fma16::<FMA>(&mut a2, x0, &v2);
        fma16::<FMA>(&mut a3, x0, &v3);
        fma16::<FMA>(&mut b0, x1, &v0);
        fma16::<FMA>(&mut b1, x1, &v1);
        fma16::<FMA>(&mut b2, x1, &v2);
        fma16::<FMA>(&mut b3, x1, &v3);
    }
    let mut r = [
        [hsum(a0), hsum(b0)],
        [hsum(a1), hsum(b1)],
        [hsum(a2), hsum(b2)],
        [hsum(a3), hsum(b3)],
    ];
    for (j, rj) in r.iter_mut().enumerate() {
        for (i, ri) in rj.iter_mut().enumerate() {
            for t in full..k {
                *ri = fmadd::<FMA>(xt[i][t], F::to_f32(w[j][t]), *ri);
            }
        }
    }
    r
}

/// One activation row · one weight row.
#[inline(always)]
fn dot_row<F: Fmt, const FMA: bool>(x: &[f32], w: &[F::Raw]) -> f32 {
    let full = x.len().min(w.len()) / LANES * LANES;
    let mut acc = [0f32; LANES];
    for (xs, ws) in x[..full]
        .chunks_exact(LANES)
        .zip(w[..full].chunks_exact(LANES))
    {
        fma16::<FMA>(&mut acc, xs, &widen16::<F>(ws));
    }
    let mut s = hsum(acc);
    for t in full..x.len().min(w.len()) {
        s = fmadd::<FMA>(x[t], F::to_f32(w[t]), s);
    }
    s
}
