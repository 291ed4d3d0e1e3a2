//! The AVX-512 path of the linear layers: activations packed once per matmul
//! (`kernels::gemm`), the weight-row panels of all weights of one input spread over the pool,
//! each run by an AVX-512 kernel (`kernels::avx512`) into a transposed buffer, or by the AMX
//! kernel (`kernels::amx`) straight into its columns of the outputs. Weights in AMX tile order
//! (`weights::Bf16Tiles`, the model's wherever the AVX-512 kernels run) go to the AMX kernel, or
//! for one activation row (and without AMX) to the AVX-512 kernels over tile order, which write
//! their columns directly too.

use rayon::prelude::*;

use super::{
    amx_exact, Dot, AMX_EXACT_MIN_M, BCAST_MIN_M, PARALLEL_MIN_MACS, TILES_ROW_KERNEL_MAX_M,
};
use crate::backend::cpu::kernels::amx::{self, AmxOut, AmxPanel};
use crate::backend::cpu::kernels::avx512::{self, GemmPanel, TilesPanel};
use crate::backend::cpu::kernels::column_panel::{split_columns, split_steps, ColumnPanel};
use crate::backend::cpu::kernels::{gemm, has_amx, has_avx512_bf16, SimdLevel};
use crate::backend::cpu::pod::Pod;
use crate::backend::cpu::weights::{Bf16Tiles, Matrix, WeightData, TILE_ROWS};

/// Weight bytes of one panel when activation tiles re-read it (half a 2 MiB L2).
const PANEL_L2_BYTES: usize = 1 << 20;

/// The AVX-512 path of [`super::matmul_many`]: with `level` AVX-512 and every weight bf16
/// (AMX tiles, the bf16 dot-product kernel or the widening kernel) or every weight f32, runs
/// the matmul over activations packed once and returns `true`; otherwise does nothing and
/// returns `false` (the caller takes the portable path).
pub(super) fn matmul_packed(
    level: SimdLevel,
    dot: Dot,
    x: &[f32],
    m: usize,
    ws: &[&Matrix],
    outs: &mut [&mut [f32]],
) -> bool {
    let k = ws.first().map_or(0, |w| w.cols);
    let fast = level == SimdLevel::Avx512
        && m > 0
        && k > 0
        && ws.iter().all(|w| w.cols == k && w.rows > 0);
    if !fast {
        return false;
    }
    let tiled: Vec<&Bf16Tiles> = ws
        .iter()
        .filter_map(|w| match &w.data {
            WeightData::Bf16Tiles(t) => Some(t),
            _ => None,
        })
        .collect();
    if tiled.len() == ws.len() {
        return matmul_tiles(level, dot, x, m, &tiled, outs);
    }
    let bf16: Option<Vec<&[u16]>> = ws
        .iter()
        .map(|w| match &w.data {
            WeightData::Bf16(b) => Some(b.as_slice()),
            _ => None,
        })
        .collect();
    if let Some(b) = bf16 {
        // bf16 terms per activation on the dot-product path (`None`: exact).
        let terms = dot.terms(m);
        let amx_pieces = match (terms, has_amx()) {
            (Some(t), true) => Some(t),
            (None, true) if m >= AMX_EXACT_MIN_M && amx_exact() => Some(3),
            _ => None,
        };
        if let Some(pieces) = amx_pieces {
            let mut xb = XB.with(|s| s.take());
            let packed = gemm::pack_amx(x, m, k, pieces, &mut xb);
            let ws: Vec<AmxWeights> = b.iter().map(|w| AmxWeights::Rows(w)).collect();
            run_amx(packed, Rows { m, k, pieces }, &ws, outs, false);
            XB.with(|s| s.replace(xb));
            return true;
        }
        // Without AMX only one term runs on `vdpbf16ps`; two take the exact kernel below.
        if terms == Some(1) && has_avx512_bf16() {
            let mut xb = XB.with(|s| s.take());
            let packed = gemm::pack_bf16(x, m, k, &mut xb);
            run_packed(
                level,
                Packed { data: packed, m, k },
                &b,
                outs,
                4,
                avx512::gemm_panel_bf16_dot,
            );
            XB.with(|s| s.replace(xb));
            return true;
        }
        let mut xp = XP.with(|s| s.take());
        let packed = gemm::pack(x, m, k, true, &mut xp);
        run_packed(
            level,
            Packed { data: packed, m, k },
            &b,
            outs,
            4,
            avx512::gemm_panel_bf16,
        );
        XP.with(|s| s.replace(xp));
        return true;
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
        run_packed(
            level,
            Packed { data: packed, m, k },
            &f,
            outs,
            4,
            avx512::gemm_panel_f32,
        );
        XP.with(|s| s.replace(xp));
        return true;
    }
    false
}

/// Weight rows per panel of a matmul of `m` activation rows over `total_n` weight rows of `k`
/// columns (`elem` bytes each), for a kernel that takes up to `sweep_m` activation rows in one
/// pass over a panel: a few panels per thread for balance, each a multiple of the kernel's row
/// block `align` and, with several passes, small enough to stay in L2 between them. A panel
/// read once is not capped: the same number of panels on every thread (at 16 decode rows on
/// the Zen 4, 1 MiB panels had made gate_up 17 panels and down_proj 10 over two threads).
fn panel_rows(
    m: usize,
    k: usize,
    total_n: usize,
    elem: usize,
    align: usize,
    sweep_m: usize,
) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let rows = total_n
        .div_ceil(threads * 4)
        .next_multiple_of(align)
        .max(align);
    if m > sweep_m {
        let cap = (PANEL_L2_BYTES / (k * elem)).max(align) / align * align;
        return rows.min(cap);
    }
    rows
}

/// bf16 terms per activation of the AMX kernel over tile-order weights: the dot path's, else
/// three (exact) from [`TILES_ROW_KERNEL_MAX_M`] + 1 rows; `None`: the AVX-512 one-row kernel.
fn tile_pieces(dot: Dot, m: usize) -> Option<usize> {
    match dot.terms(m) {
        Some(t) => Some(t),
        None if m > TILES_ROW_KERNEL_MAX_M => Some(3),
        None => None,
    }
}

/// [`matmul_packed`] over weights in tile order ([`Bf16Tiles`], made at load wherever the
/// AVX-512 kernels run): the AMX kernel (three bf16 terms per activation for the exact path, or
/// the dot path's terms) from [`TILES_ROW_KERNEL_MAX_M`] + 1 rows or where the dot path asks for
/// bf16 terms; else the AVX-512 kernels over tile order: `avx512::gemm_panel_tiles_dot` where
/// the dot path asks for one term and the CPU has AVX-512 BF16, `avx512::gemm_panel_tiles`
/// (exact f32 activations; one row streams each block once) otherwise, each in its broadcast
/// form (`gemm_panel_tiles_bcast`, `gemm_panel_tiles_bcast_exact`) from [`BCAST_MIN_M`] rows.
fn matmul_tiles(
    level: SimdLevel,
    dot: Dot,
    x: &[f32],
    m: usize,
    ws: &[&Bf16Tiles],
    outs: &mut [&mut [f32]],
) -> bool {
    let k = ws[0].cols;
    if let (Some(pieces), true) = (tile_pieces(dot, m), has_amx()) {
        let mut xb = XB.with(|s| s.take());
        let packed = gemm::pack_amx(x, m, k, pieces, &mut xb);
        let ws: Vec<AmxWeights> = ws.iter().map(|w| AmxWeights::Tiles(w)).collect();
        run_amx(packed, Rows { m, k, pieces }, &ws, outs, false);
        XB.with(|s| s.replace(xb));
        return true;
    }
    let total_n: usize = ws.iter().map(|w| w.rows).sum();
    // Without AMX only one bf16 term runs on `vdpbf16ps`; two take the exact kernel. From one
    // whole 16-row block, the broadcast forms (activations 16 rows to a vector; one block
    // goes through a panel in one pass).
    let bcast = m >= BCAST_MIN_M;
    let sweep_m = if bcast { BCAST_MIN_M } else { gemm::TILE_M };
    let rows = panel_rows(m, k, total_n, 2, TILE_ROWS, sweep_m);
    let tasks = tile_panels(ws, rows, outs);
    let parallel = m * total_n * k >= PARALLEL_MIN_MACS && rayon::current_num_threads() > 1;
    if dot.terms(m) == Some(1) && has_avx512_bf16() {
        let mut xb = XB.with(|s| s.take());
        let (data, kernel): (_, TilesFn<u16>) = if bcast {
            let p = gemm::pack_amx(x, m, k, 1, &mut xb);
            (p, avx512::gemm_panel_tiles_bcast)
        } else {
            let p = gemm::pack_bf16(x, m, k, &mut xb);
            (p, avx512::gemm_panel_tiles_dot)
        };
        run_tiles(level, Packed { data, m, k }, kernel, tasks, parallel);
        XB.with(|s| s.replace(xb));
        return true;
    }
    let mut xp = XP.with(|s| s.take());
    let (data, kernel): (_, TilesFn<f32>) = if bcast {
        let p = gemm::pack_pairs(x, m, k, &mut xp);
        (p, avx512::gemm_panel_tiles_bcast_exact)
    } else {
        (gemm::pack(x, m, k, true, &mut xp), avx512::gemm_panel_tiles)
    };
    run_tiles(level, Packed { data, m, k }, kernel, tasks, parallel);
    XP.with(|s| s.replace(xp));
    true
}

type TilesFn<X> = fn(SimdLevel, TilesPanel<'_, X>) -> bool;

/// Runs `kernel` over `(weight panel, its columns)` tasks against the packed activations `x`,
/// on the pool when `parallel`.
fn run_tiles<'a, X: Sync>(
    level: SimdLevel,
    x: Packed<'a, X>,
    kernel: TilesFn<X>,
    tasks: Vec<(&'a [u16], ColumnPanel<'a>)>,
    parallel: bool,
) {
    let Packed { data, m, k } = x;
    run_tasks(tasks, parallel, |w, out| {
        let p = TilesPanel {
            xp: data,
            m,
            k,
            w,
            out,
        };
        assert!(kernel(level, p), "no {level:?} kernel");
    });
}

/// Runs `panel` over `(weight panel, its columns)` tasks, on the pool when `parallel`.
fn run_tasks<'a>(
    tasks: Vec<(&'a [u16], ColumnPanel<'a>)>,
    parallel: bool,
    panel: impl Fn(&'a [u16], ColumnPanel<'a>) + Sync,
) {
    if parallel {
        tasks.into_par_iter().for_each(|(w, out)| panel(w, out));
    } else {
        tasks.into_iter().for_each(|(w, out)| panel(w, out));
    }
}

/// The gated unit's first half on AMX (see `super::matmul_glu`): `w` holds the gate and up
/// projections with their rows interleaved in 16-row blocks, in tile order; `out` (`m ×
/// w.rows / 2`) gets `silu(gate) · up`, computed on each finished tile. `false` (nothing done)
/// unless the weight is in tile order and the AMX kernel takes these rows (the caller then
/// runs the matmul and the activation apart).
pub(super) fn matmul_glu_amx(dot: Dot, x: &[f32], m: usize, w: &Matrix, out: &mut [f32]) -> bool {
    with_glu_input(dot, x, m, w, 2 * TILE_ROWS, |t, packed, r| {
        run_amx(packed, r, &[AmxWeights::Tiles(t)], &mut [out], true)
    })
    .is_some()
}

/// [`matmul_glu_amx`] with the output written in the packed layout (`acts`, terms as
/// [`tile_pieces`] gives them) that `down`'s AMX matmul reads, so the f32 output and its
/// packing never happen (at 2,048 prefill rows of Qwen2-0.5B: 40 MB written, read back and
/// packed again, each layer). `false` (nothing done) unless both weights are in tile order,
/// the AMX kernel takes these rows, the unit is whole 32-column steps and `down` reads it.
pub(super) fn matmul_glu_packed_amx(
    dot: Dot,
    x: &[f32],
    m: usize,
    w: &Matrix,
    down: &Matrix,
    acts: &mut super::PackedActs,
) -> bool {
    let WeightData::Bf16Tiles(d) = &down.data else {
        return false;
    };
    if d.cols != w.rows / 2 {
        return false;
    }
    // (Panels of whole 64-row multiples hold whole 32-unit steps of the output.)
    let align = 4 * TILE_ROWS;
    with_glu_input(dot, x, m, w, align, |t, packed, r| {
        let Rows { m, k, pieces } = r;
        let units = t.rows / 2;
        let rows = amx_panel_rows(m, k, t.rows, align);
        let widths = (0..t.rows)
            .step_by(rows)
            .map(|n0| rows.min(t.rows - n0) / 2);
        let out = acts.reset(m, units, pieces);
        let tasks = t
            .panels(rows)
            .zip(split_steps(out, m, units, pieces, widths))
            .map(|(w, o)| (w, true, AmxOut::Packed(o)))
            .collect();
        run_amx_panels(packed, r, tasks, true);
    })
    .is_some()
}

/// The common part of the gated AMX paths: where `w` is in tile order with whole
/// `rows_multiple`-row panels, AMX is here and the AMX kernel takes `m` rows ([`tile_pieces`]),
/// packs `x` and runs `f` over the weight, the packed activations and their shape; else
/// `None`, nothing done.
fn with_glu_input<R>(
    dot: Dot,
    x: &[f32],
    m: usize,
    w: &Matrix,
    rows_multiple: usize,
    f: impl FnOnce(&Bf16Tiles, &[u16], Rows) -> R,
) -> Option<R> {
    let WeightData::Bf16Tiles(t) = &w.data else {
        return None;
    };
    let pieces = tile_pieces(dot, m)?;
    if !has_amx() || m == 0 || !t.rows.is_multiple_of(rows_multiple) {
        return None;
    }
    let k = t.cols;
    let mut xb = XB.with(|s| s.take());
    let packed = gemm::pack_amx(x, m, k, pieces, &mut xb);
    let r = f(t, packed, Rows { m, k, pieces });
    XB.with(|s| s.replace(xb));
    Some(r)
}

/// `out = acts · wᵀ` on AMX over activations [`matmul_glu_packed_amx`] packed for `w`.
pub(super) fn matmul_acts_amx(acts: &super::PackedActs, w: &Matrix, out: &mut [f32]) {
    let WeightData::Bf16Tiles(t) = &w.data else {
        panic!("packed activations for a weight not in tile order");
    };
    let (m, k, pieces) = (acts.m, acts.k, acts.pieces);
    assert_eq!(t.cols, k, "packed activations of another width");
    let ws = [AmxWeights::Tiles(t)];
    run_amx(acts.data(), Rows { m, k, pieces }, &ws, &mut [out], false);
}

/// Panels of `rows` weight rows (a multiple of 16) of every tiled weight, each with its columns
/// of that weight's output.
fn tile_panels<'a>(
    ws: &[&'a Bf16Tiles],
    rows: usize,
    outs: &'a mut [&mut [f32]],
) -> Vec<(&'a [u16], ColumnPanel<'a>)> {
    let mut tasks = Vec::new();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let n = w.rows;
        let widths = (0..n).step_by(rows).map(|n0| rows.min(n - n0));
        tasks.extend(w.panels(rows).zip(split_columns(out, n, widths)));
    }
    tasks
}

/// One weight of the AMX path: row-major rows or tile order.
enum AmxWeights<'a> {
    Rows(&'a [u16]),
    Tiles(&'a Bf16Tiles),
}

/// Activation rows, columns and bf16 terms per value of one AMX matmul.
#[derive(Clone, Copy)]
struct Rows {
    m: usize,
    k: usize,
    pieces: usize,
}

/// The AMX path: the weight-row panels of all `ws` in parallel, each writing its columns of
/// `outs[i]` (`m × ws[i].len() / k`) directly; with `glu` (one weight, gate/up blocks
/// interleaved) `silu(gate) · up` into `outs[0]`, half as wide.
fn run_amx(packed: &[u16], r: Rows, ws: &[AmxWeights<'_>], outs: &mut [&mut [f32]], glu: bool) {
    let Rows { m, k, .. } = r;
    let n_of = |w: &AmxWeights<'_>| match w {
        AmxWeights::Rows(w) => w.len() / k,
        AmxWeights::Tiles(t) => t.rows,
    };
    let total_n: usize = ws.iter().map(n_of).sum();
    let rows = amx_panel_rows(m, k, total_n, 32);
    let mut tasks = Vec::new();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let n = n_of(w);
        let widths = (0..n).step_by(rows).map(|n0| rows.min(n - n0));
        // (Gated: every panel is whole 32-row gate/up pairs, `rows` being a multiple of 32.)
        let cols = if glu {
            split_columns(out, n / 2, widths.map(|w| w / 2))
        } else {
            split_columns(out, n, widths)
        };
        match w {
            AmxWeights::Rows(w) => tasks.extend(w.chunks(rows * k).map(|w| (w, false)).zip(cols)),
            AmxWeights::Tiles(t) => tasks.extend(t.panels(rows).map(|w| (w, true)).zip(cols)),
        }
    }
    let tasks = tasks
        .into_iter()
        .map(|((w, tiled), out)| (w, tiled, AmxOut::Columns(out)));
    run_amx_panels(packed, r, tasks.collect(), glu);
}

/// Weight rows per AMX panel (a multiple of `align`, itself a multiple of 32) of a matmul of
/// `m` activation rows over `total_n` weight rows of `k` columns.
fn amx_panel_rows(m: usize, k: usize, total_n: usize, align: usize) -> usize {
    if m >= amx::AMX_WIDE_MIN_M {
        // Prefill-sized: one panel per thread, as wide as one row chunk of its weights fits
        // half an L2 (the kernel goes through the rows in chunks then), so each activation
        // tile loaded serves many weight blocks (down_proj 896 × 4864 at 2048 rows: 496 →
        // 624 GFLOP/s, q/k/v-shaped 1152 × 896: 608 → 725; `BENCH_GEMM_M`).
        let threads = rayon::current_num_threads().max(1);
        let cols = k.min(amx::AMX_K_CHUNK * 32);
        let cap = (PANEL_L2_BYTES / (cols * 2)).max(align) / align * align;
        total_n.div_ceil(threads).next_multiple_of(align).min(cap)
    } else {
        panel_rows(m, k, total_n, 2, align, gemm::TILE_M)
    }
}

/// Runs the AMX kernel over `(weight panel, tile order, destination)` tasks in parallel.
fn run_amx_panels(packed: &[u16], r: Rows, tasks: Vec<(&[u16], bool, AmxOut<'_>)>, glu: bool) {
    let Rows { m, k, pieces } = r;
    tasks.into_par_iter().for_each(|(w, tiled, out)| {
        let p = AmxPanel {
            xp: packed,
            m,
            k,
            pieces,
            w,
            tiled,
            glu,
            out,
        };
        assert!(amx::gemm_panel_amx(p), "no AMX kernel");
    });
}

type PanelFn<W, X> = fn(SimdLevel, GemmPanel<'_, W, X>) -> bool;

/// Activations of `m` rows × `k` columns, packed once for one kernel's layout
/// (`kernels::gemm`).
#[derive(Clone, Copy)]
struct Packed<'a, X> {
    data: &'a [X],
    m: usize,
    k: usize,
}

/// The AVX-512 path over activations packed once (`x`, for `kernel`): the weight-row panels of
/// all `ws` in parallel, each a multiple of `align` rows (the kernel's row block) where
/// possible; `outs[i]` is `m × ws[i].len() / k`.
fn run_packed<W: Pod, X: Sync>(
    level: SimdLevel,
    x: Packed<'_, X>,
    ws: &[&[W]],
    outs: &mut [&mut [f32]],
    align: usize,
    kernel: PanelFn<W, X>,
) {
    let Packed { data: packed, m, k } = x;
    // Buffer reused across calls on this thread (fresh large allocations page-fault).
    let mut tr = TR.with(|s| s.take());
    let total_n: usize = ws.iter().map(|w| w.len() / k).sum();
    let threads = rayon::current_num_threads().max(1);
    let parallel = m * total_n * k >= PARALLEL_MIN_MACS && threads > 1;
    let mut rows = panel_rows(m, k, total_n, std::mem::size_of::<W>(), align, gemm::TILE_M);
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
