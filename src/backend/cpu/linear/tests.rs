//! Tests of the linear layers: every path against scalar references (the exact path at every
//! kernel level, the bf16 dot-product path, the exact AMX path, the bf16 kernels directly).

use super::*;
use crate::backend::cpu::kernels::amx::{self, AmxPanel};
use crate::backend::cpu::kernels::avx512::{self, GemmPanel, TilesPanel};
use crate::backend::cpu::kernels::column_panel::{split_columns, ColumnPanel};
use crate::backend::cpu::kernels::{gemm, has_amx, has_avx512_bf16};
use crate::backend::cpu::knobs::level_from_process_env as simd_level;
use crate::backend::cpu::weights::Buf;
use std::sync::Arc;

/// A row-major bf16 weight of `rows × cols` over `data` (test matrices).
fn bf16_matrix(rows: usize, cols: usize, data: Vec<u16>) -> Matrix {
    Matrix {
        rows,
        cols,
        data: WeightData::Bf16(Buf::Owned(Arc::new(data))),
    }
}

/// `n × k` bf16 weights in tile order (`Bf16Tiles`, whole 16-row blocks).
fn tiled(n: usize, k: usize, w: Vec<u16>) -> Matrix {
    bf16_matrix(n, k, w).amx_tiled().0
}

/// All of a tile-order matrix's blocks, as one kernel panel.
fn tile_blocks(m: &Matrix) -> &[u16] {
    let WeightData::Bf16Tiles(t) = &m.data else {
        panic!("amx_tiled gives tile order");
    };
    t.panels(m.rows.next_multiple_of(16))
        .next()
        .expect("one panel")
}

/// Runs `kernel` on columns 3 .. 3 + n of an `m × (n + 5)` matrix of NaN, to check the column
/// placement: nothing outside those columns may be written, nothing at all when the kernel
/// refuses (`false`). Returns whether it ran and the `m × n` it wrote.
fn in_wide_columns(
    m: usize,
    n: usize,
    kernel: impl FnOnce(ColumnPanel<'_>) -> bool,
) -> (bool, Vec<f32>) {
    let mut wide = vec![f32::NAN; m * (n + 5)];
    let mut panels = split_columns(&mut wide, n + 5, [3, n]);
    let ran = kernel(panels.pop().expect("two panels"));
    drop(panels);
    let mut inside = Vec::with_capacity(m * n);
    for row in wide.chunks_exact(n + 5) {
        assert!(
            row[..3].iter().chain(&row[3 + n..]).all(|v| v.is_nan()),
            "wrote outside its columns"
        );
        inside.extend_from_slice(&row[3..3 + n]);
    }
    if !ran {
        assert!(
            inside.iter().all(|v| v.is_nan()),
            "a refused kernel writes nothing"
        );
    }
    (ran, inside)
}

/// `y` (`m × n`) transposed to `n × m`.
fn transposed(y: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..n * m).map(|at| y[(at % m) * n + at / m]).collect()
}

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
        // Packed activations past `avx512::widen`'s L2-resident size: tile-by-tile passes.
        (200, 9, 700),
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
            bf16_matrix(n, k, wb),
        ];
        for mat in &mats {
            for level in [simd_level(), SimdLevel::Portable] {
                let mut out = vec![0f32; m * n];
                matmul(level, &x, m, mat, &mut out);
                for (a, b) in out.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-3, "m{m} n{n} k{k}: {a} vs {b}");
                }
            }
        }
    }
}

/// The value a bf16 dot-product matmul multiplies for activation `v` taken as `terms` bf16
/// terms: the rounded value (1), or the rounded value plus the rounded rest (2).
fn as_terms(v: f32, terms: usize) -> f64 {
    use crate::backend::cpu::kernels::{bf16_to_f32, f32_to_bf16};
    let hi = bf16_to_f32(f32_to_bf16(v));
    if terms < 2 {
        return hi as f64;
    }
    hi as f64 + bf16_to_f32(f32_to_bf16(v - hi)) as f64
}

/// `matmul_with` with [`Dot::Fast`] and [`Dot::Fine`] (AMX where present, else `vdpbf16ps`
/// for one term; the exact path below `BF16_DOT_MIN_M` rows, which the reference tolerance
/// also covers) against a scalar reference over the activations as the kernel takes them (one
/// bf16 term, or two: [`Dot::terms`]) that accumulates the exact products in f64; odd `k`,
/// tails of every width, partial activation tiles, 1-row panels. Where the CPU has no AVX-512
/// BF16 (or `MINDIE_CPU_KERNELS` caps the level), or has no AMX for two terms, the matmul must
/// fall back to the exact path: the same shapes then check that fallback bit for bit, and that
/// it stays within bf16 rounding of the activations of the same reference.
#[test]
fn bf16_dot_matches_bf16_rounded_reference() {
    let level = simd_level();
    let have_dot = level == SimdLevel::Avx512 && has_avx512_bf16();
    if have_dot {
        println!("bf16-dot path: the dot-product kernels ran ({level:?})");
    } else {
        println!("bf16-dot path: no AVX-512 BF16 at {level:?}; checked the exact fallback");
    }
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
        (33, 9, 64),
        (70, 9, 64),
        (16, 33, 896),
    ] {
        let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let wb: Vec<u16> = (0..n * k)
            .map(|_| crate::backend::cpu::kernels::f32_to_bf16(rnd() * 0.5))
            .collect();
        let wr: Vec<f64> = wb
            .iter()
            .map(|&b| crate::backend::cpu::kernels::bf16_to_f32(b) as f64)
            .collect();
        let mat = bf16_matrix(n, k, wb);
        let mut exact = vec![0f32; m * n];
        matmul(level, &x, m, &mat, &mut exact);
        for dot in [Dot::Fast, Dot::Fine] {
            let terms = dot.terms(m);
            // Which kernel runs: one term on either dot kernel, two only on AMX.
            let on_dot = have_dot && (terms == Some(1) || (terms == Some(2) && has_amx()));
            let xr: Vec<f64> = x.iter().map(|&v| as_terms(v, terms.unwrap_or(1))).collect();
            // How far the activations as taken can be from the f32 ones, relative.
            let rel = if terms == Some(2) {
                2f64.powi(-16)
            } else {
                2f64.powi(-8)
            };
            let mut out = vec![0f32; m * n];
            matmul_with(level, dot, &x, m, &mat, &mut out);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k).map(|t| xr[i * k + t] * wr[j * k + t]).sum();
                    let mag: f64 = (0..k).map(|t| (xr[i * k + t] * wr[j * k + t]).abs()).sum();
                    let got = out[i * n + j] as f64;
                    // f32 accumulation of `k` products: a few ulps of the magnitude sum.
                    let tol = 1e-6 + mag * 4.0 * f32::EPSILON as f64;
                    if !on_dot {
                        assert_eq!(got, exact[i * n + j] as f64, "m{m} {dot:?}: the exact path");
                        // Within rounding of the activations of the reference.
                        assert!((got - want).abs() <= mag * rel + 1e-6, "m{m} {dot:?}");
                        continue;
                    }
                    assert!(
                        (got - want).abs() <= tol,
                        "m{m} n{n} k{k} {dot:?} ({i},{j}): {got} vs {want} (tol {tol})"
                    );
                    // And it is off the exact path by no more than the activations as
                    // taken allow.
                    let e = exact[i * n + j] as f64;
                    assert!((got - e).abs() <= mag * rel + tol, "m{m} {dot:?}");
                }
            }
        }
    }
}

/// Which matmuls take one bf16 term, two, or the exact path.
#[test]
fn dot_terms_by_mode_and_rows() {
    use super::BF16_DOT_MIN_M as MIN;
    for m in [0, 1, MIN - 1] {
        for d in [Dot::Exact, Dot::Fast, Dot::Fine] {
            assert_eq!(d.terms(m), None, "{d:?} m{m}");
        }
    }
    for m in [MIN, 4096] {
        assert_eq!(Dot::Exact.terms(m), None);
        assert_eq!(Dot::Fast.terms(m), Some(1));
        assert_eq!(Dot::Fine.terms(m), Some(2));
    }
    assert_eq!(
        (Dot::fast(false), Dot::fine(false)),
        (Dot::Exact, Dot::Exact)
    );
    assert_eq!((Dot::fast(true), Dot::fine(true)), (Dot::Fast, Dot::Fine));
}

/// Both bf16-activation kernels called directly (the AMX one and the `vdpbf16ps` one),
/// against the same bf16-rounded scalar reference. On every CPU the exact path over
/// activations rounded to bf16 (what both kernels compute) is checked against it too; where
/// the CPU lacks a kernel, its entry point must refuse (it never trusts the level it is given)
/// and write nothing.
#[test]
fn bf16_dot_kernels_match_reference_directly() {
    use crate::backend::cpu::kernels::{bf16_to_f32, f32_to_bf16};
    let level = simd_level();
    let have_dot = level == SimdLevel::Avx512 && has_avx512_bf16();
    let have_amx = has_amx();
    let ran = |yes: bool| {
        if yes {
            "ran"
        } else {
            "absent here, must refuse"
        }
    };
    println!(
        "exact path at {level:?} ran; vdpbf16ps kernel {}; AMX kernel {}",
        ran(have_dot),
        ran(have_amx)
    );
    for &(m, n, k) in &[
        (1, 1, 1),
        (3, 17, 33),
        (16, 32, 64),
        (17, 50, 95),
        (40, 70, 130),
        (48, 40, 64),
        // bf16-packed activations past the L2-resident size (tile-by-tile passes).
        (300, 20, 1000),
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
        // What both kernels compute, on any CPU: the exact path over bf16-rounded activations.
        let xr: Vec<f32> = x.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect();
        let mat = bf16_matrix(n, k, w.clone());
        let mut y = vec![0f32; m * n];
        matmul(level, &xr, m, &mat, &mut y);
        check(
            "exact path over bf16-rounded activations",
            &transposed(&y, m, n),
        );
        {
            let mut buf = Vec::new();
            let xp = gemm::pack_bf16(&x, m, k, &mut buf);
            let mut out_t = vec![f32::NAN; n * m];
            let p = GemmPanel {
                xp,
                m,
                k,
                w: &w,
                out_t: &mut out_t,
            };
            let ran = avx512::gemm_panel_bf16_dot(level, p);
            assert_eq!(ran, have_dot, "vdpbf16ps kernel at {level:?}");
            if ran {
                check("vdpbf16ps", &out_t);
            } else {
                assert!(
                    out_t.iter().all(|v| v.is_nan()),
                    "a refused kernel writes nothing"
                );
            }
        }
        {
            // The broadcast form of `vdpbf16ps`: tile-order weights, AMX-packed activations
            // (one to three 16-row blocks per register tile, several column passes at k 1000).
            let mut buf = Vec::new();
            let xp = gemm::pack_amx(&x, m, k, 1, &mut buf);
            let tiled = tiled(n, k, w.clone());
            let (ran, out) = in_wide_columns(m, n, |out| {
                let w = tile_blocks(&tiled);
                avx512::gemm_panel_tiles_bcast(level, TilesPanel { xp, m, k, w, out })
            });
            assert_eq!(ran, have_dot, "broadcast vdpbf16ps kernel at {level:?}");
            if ran {
                check("broadcast vdpbf16ps", &transposed(&out, m, n));
            }
        }
        {
            let mut buf = Vec::new();
            let xp = gemm::pack_amx(&x, m, k, 1, &mut buf);
            let (ran, out) = in_wide_columns(m, n, |out| {
                amx::gemm_panel_amx(AmxPanel {
                    xp,
                    m,
                    k,
                    pieces: 1,
                    w: &w,
                    tiled: false,
                    glu: false,
                    out: amx::AmxOut::Columns(out),
                })
            });
            assert_eq!(ran, have_amx, "AMX kernel");
            if ran {
                check("amx", &transposed(&out, m, n));
            }
        }
    }
}

/// The exact AMX path (three bf16 terms per activation) against an f64 reference, with
/// the tolerance of an f32 dot product, on shapes with partial tiles, odd `k`, several
/// L2 chunks of activation rows and several panels; and the AVX-512 path agrees with it
/// to the same tolerance. Without AMX (or with the level capped below AVX-512), the exact
/// path this CPU takes is held to the same reference and tolerance on the same shapes.
#[test]
fn exact_amx_matches_f32_reference() {
    let level = simd_level();
    let have_amx = has_amx() && level == SimdLevel::Avx512;
    if have_amx {
        println!("exact AMX path ran, and the AVX-512 path beside it");
    } else {
        println!("no AMX-BF16 at {level:?} (or no OS permission): checked the exact path there");
    }
    let mut rng = crate::engine::sampler::Rng::new(0x1234_5678);
    for &(m, n, k) in &[
        (16, 1, 1),
        (16, 33, 31),
        // One activation block, weight blocks three at a time (the last group partial).
        (16, 200, 896),
        (17, 70, 130),
        (40, 96, 896),
        (100, 50, 4864),
        (333, 64, 96),
        // Wide panels, rows in chunks (three, the last partial), five activation pairs.
        (160, 70, 2100),
    ] {
        let (x, wb) = exact_case(&mut rng, m, n, k);
        let mat = bf16_matrix(n, k, wb.clone());
        let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
        if have_amx {
            set_amx_exact(true);
            let mut amx = vec![0f32; m * n];
            matmul(SimdLevel::Avx512, &x, m, &mat, &mut amx);
            set_amx_exact(false);
            let mut fma = vec![0f32; m * n];
            matmul(SimdLevel::Avx512, &x, m, &mat, &mut fma);
            set_amx_exact(true);
            runs.push(("amx", amx));
            runs.push(("fma", fma));
        } else {
            let mut exact = vec![0f32; m * n];
            matmul(level, &x, m, &mat, &mut exact);
            runs.push(("exact", exact));
        }
        for (name, y) in &runs {
            assert_exact(name, &x, &wb, (m, n, k), y);
        }
    }
}

/// The gated unit written straight into the down projection's packed input
/// (`Linear::forward_glu_packed`, then `forward_packed`) gives bit for bit what the two steps
/// apart give (`forward_glu` to f32, then `forward`, which packs it): the packed buffer equals
/// `pack_amx` of the f32 output, and the down projection's result is the same, for one and
/// several activation blocks, partial blocks, wide panels (from 128 rows), several panels and
/// each way to multiply. Where AMX is missing, or the rows are one (the row kernel) or the
/// unit is not whole 32-column steps, it declines and changes nothing.
#[test]
fn gated_unit_packed_for_down_matches_apart() {
    use crate::backend::cpu::weights::glu_interleaved;
    let mut rng = crate::engine::sampler::Rng::new(0x6c75_7061);
    let level = simd_level();
    for &(m, inter, k, h) in &[
        (1, 64, 96, 32),
        (9, 64, 96, 48),
        (16, 96, 130, 32),
        (37, 128, 200, 64),
        (130, 96, 96, 32),
        (150, 1216, 64, 48),
    ] {
        let (x, gb) = exact_case(&mut rng, m, inter, k);
        let (_, ub) = exact_case(&mut rng, 1, inter, k);
        let (_, db) = exact_case(&mut rng, 1, h, inter);
        let bf16 = |rows, cols, w: &[u16]| bf16_matrix(rows, cols, w.to_vec());
        let fused = glu_interleaved(&bf16(inter, k, &gb), &bf16(inter, k, &ub), GLU_BLOCK)
            .expect("bf16, whole blocks");
        let gate_up = Linear {
            w: fused.amx_tiled().0,
            bias: None,
        };
        let down = Linear {
            w: bf16(h, inter, &db).amx_tiled().0,
            bias: Some((0..h).map(|i| i as f32 / 7.0).collect()),
        };
        for dot in [Dot::Exact, Dot::Fast, Dot::Fine] {
            let name = format!("{dot:?} m{m} inter{inter} k{k} h{h}");
            let (mut act, mut scratch, mut want) = (Vec::new(), Vec::new(), Vec::new());
            gate_up.forward_glu(level, dot, &x, m, &mut act, &mut scratch);
            down.forward(level, dot, &act, m, &mut want);
            let mut acts = PackedActs::default();
            let took = gate_up.forward_glu_packed(level, dot, &x, m, &down, &mut acts);
            // (One row takes the AVX-512 row kernel, at any `dot`.)
            let expect = has_amx() && level == SimdLevel::Avx512 && m > 1;
            if !expect {
                assert!(!took, "{name}: no AMX path here, yet it took one");
                continue;
            }
            assert!(took, "{name}: declined");
            let pieces = acts.pieces;
            let mut buf = Vec::new();
            let repacked = gemm::pack_amx(&act, m, inter, pieces, &mut buf);
            assert!(acts.data() == repacked, "{name}: packed activations differ");
            let mut got = vec![f32::NAN; 3];
            down.forward_packed(&acts, &mut got);
            assert_eq!(got, want, "{name}");
        }
    }
    // A unit of 16-column halves (48 = one and a half steps) declines.
    let (x, gb) = exact_case(&mut rng, 20, 48, 64);
    let fused = glu_interleaved(
        &bf16_matrix(48, 64, gb.clone()),
        &bf16_matrix(48, 64, gb),
        GLU_BLOCK,
    )
    .expect("whole blocks");
    let gate_up = Linear {
        w: fused.amx_tiled().0,
        bias: None,
    };
    let down = Linear {
        w: bf16_matrix(32, 48, vec![0; 32 * 48]).amx_tiled().0,
        bias: None,
    };
    let mut acts = PackedActs::default();
    assert!(!gate_up.forward_glu_packed(level, Dot::Fast, &x, 20, &down, &mut acts));
}

/// Activations over several magnitudes (as after RMSNorm and SiLU) and bf16 weights for an
/// exact-path case of `m × k` by `n × k`.
fn exact_case(
    rng: &mut crate::engine::sampler::Rng,
    m: usize,
    n: usize,
    k: usize,
) -> (Vec<f32>, Vec<u16>) {
    let mut rnd = move || (rng.next_f64() * 2.0 - 1.0) as f32;
    let x: Vec<f32> = (0..m * k)
        .map(|i| rnd() * [1e-3f32, 1.0, 37.0][i % 3])
        .collect();
    let wb: Vec<u16> = (0..n * k)
        .map(|_| crate::backend::cpu::kernels::f32_to_bf16(rnd() * 0.5))
        .collect();
    (x, wb)
}

/// `y` (`m × n`) is `x · wbᵀ` within the tolerance of an f32 dot product of an f64 reference.
fn assert_exact(name: &str, x: &[f32], wb: &[u16], (m, n, k): (usize, usize, usize), y: &[f32]) {
    let wr: Vec<f64> = wb
        .iter()
        .map(|&b| crate::backend::cpu::kernels::bf16_to_f32(b) as f64)
        .collect();
    for i in 0..m {
        for j in 0..n {
            let row = &x[i * k..(i + 1) * k];
            let w = &wr[j * k..(j + 1) * k];
            let want: f64 = row.iter().zip(w).map(|(a, b)| *a as f64 * b).sum();
            let mag: f64 = row.iter().zip(w).map(|(a, b)| (*a as f64 * b).abs()).sum();
            let tol = 1e-30 + mag * 4.0 * f32::EPSILON as f64;
            let a = y[i * n + j] as f64;
            assert!(
                (a - want).abs() <= tol,
                "{name} m{m} n{n} k{k} ({i},{j}): {a} vs {want} (tol {tol})"
            );
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
    let mat = bf16_matrix(n, k, wb);
    let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
    matmul(simd_level(), &x, m, &mat, &mut a);
    matmul_with(simd_level(), Dot::Exact, &x, m, &mat, &mut b);
    assert_eq!(a, b);
}

/// Weights in AMX tile order (`Bf16Tiles`, as the backend loads them where the exact path runs
/// on AMX) give the row-major weights' results: the exact path within an f32 dot product's
/// tolerance of an f64 reference (the one-row kernel at 1 row, the AMX tiles from 2, a
/// row-major copy where neither runs), and the bf16 dot path bit for bit (the same tile
/// products in the same order; with two terms and one activation block, within an f32 sum's
/// rounding), on shapes with partial blocks, partial steps and several panels.
#[test]
fn tiled_weights_match_row_major() {
    let level = simd_level();
    let mut rng = crate::engine::sampler::Rng::new(0x7e57_711e);
    for &(m, n, k) in &[
        (1, 1, 1),
        (1, 70, 130),
        (1, 4864, 896),
        (2, 17, 31),
        (4, 96, 96),
        (9, 33, 64),
        (16, 70, 130),
        (12, 200, 896),
        (40, 96, 896),
        (333, 48, 96),
        (160, 70, 2100),
    ] {
        let (x, wb) = exact_case(&mut rng, m, n, k);
        let rows = bf16_matrix(n, k, wb.clone());
        let (tiled, copied) = rows.clone().amx_tiled();
        assert_eq!(
            copied,
            n.div_ceil(16) * k.div_ceil(32) * 512 * 2,
            "padded size"
        );
        let mut got = vec![0f32; m * n];
        matmul(level, &x, m, &tiled, &mut got);
        assert_exact("tiled", &x, &wb, (m, n, k), &got);
        // The bf16 dot products too, on AMX or (one term; two take the exact kernels) on
        // `vdpbf16ps`, whose tile-order kernel has the row-major one's register tiles.
        let dot_here = has_amx() || has_avx512_bf16();
        if dot_here && level == SimdLevel::Avx512 && m >= BF16_DOT_MIN_M {
            for dot in [Dot::Fast, Dot::Fine] {
                let (mut a, mut b) = (vec![0f32; m * n], vec![0f32; m * n]);
                matmul_with(level, dot, &x, m, &rows, &mut a);
                matmul_with(level, dot, &x, m, &tiled, &mut b);
                // On AMX with one activation block, tile order goes through the three-block
                // kernel (both terms into one C tile), row-major through the two-block one (the
                // second term in its own tile, added at the end); without AMX, `vdpbf16ps` over
                // tile order takes long rows in column ranges, and from `BCAST_MIN_M` rows both
                // tile-order kernels (two terms take the exact one) run in the broadcast form:
                // the same products, summed in another order.
                let reordered = if has_amx() {
                    dot == Dot::Fine && m <= 16
                } else {
                    dot == Dot::Fast || m >= BCAST_MIN_M
                };
                if reordered {
                    for (i, (a, b)) in a.iter().zip(&b).enumerate() {
                        let (r, j) = (i / n, i % n);
                        let mag: f32 = x[r * k..(r + 1) * k]
                            .iter()
                            .zip(&wb[j * k..(j + 1) * k])
                            .map(|(x, w)| (x * crate::backend::cpu::kernels::bf16_to_f32(*w)).abs())
                            .sum();
                        let tol = 1e-30 + mag * 4.0 * f32::EPSILON;
                        assert!(
                            (a - b).abs() <= tol,
                            "{dot:?} m{m} n{n} k{k} [{i}]: {a} vs {b}"
                        );
                    }
                } else {
                    assert_eq!(a, b, "{dot:?} m{m} n{n} k{k}");
                }
            }
        }
    }
}

/// The exact broadcast-form kernel called directly at every level: at AVX-512 it writes only
/// its panel's columns (here 3.. of wider rows) with an f32 dot product's accuracy, on one to
/// several 16-row blocks, part blocks, partial steps and several column passes; below
/// AVX-512 it refuses and writes nothing.
#[test]
fn exact_broadcast_kernel_direct_at_every_level() {
    let mut rng = crate::engine::sampler::Rng::new(0xb0ad_ca57);
    for &(m, n, k) in &[(16, 16, 32), (17, 20, 95), (40, 33, 300), (70, 48, 64)] {
        let (x, wb) = exact_case(&mut rng, m, n, k);
        let tiled = tiled(n, k, wb.clone());
        let mut buf = Vec::new();
        let xp = gemm::pack_pairs(&x, m, k, &mut buf);
        for level in [simd_level(), SimdLevel::Avx2, SimdLevel::Portable] {
            let (ran, out) = in_wide_columns(m, n, |out| {
                let w = tile_blocks(&tiled);
                avx512::gemm_panel_tiles_bcast_exact(level, TilesPanel { xp, m, k, w, out })
            });
            assert_eq!(ran, level == SimdLevel::Avx512, "at {level:?}");
            if ran {
                assert_exact("exact broadcast", &x, &wb, (m, n, k), &out);
            }
        }
    }
}

/// The gated matmul (`matmul_glu` over `weights::glu_interleaved`) gives exactly the unfused
/// path's values (both projections in tile order, then `silu_mul`) on every path: one row (the
/// AVX-512 row kernel, then the activation apart), one activation block (the AMX three-block
/// kernel, whose groups of three split gate/up pairs), several blocks and pairs, wide panels
/// (from 128 rows) and long rows (several column chunks), each way to multiply (exact, one and
/// two bf16 terms), at the detected kernel level and the portable one.
#[test]
fn gated_matmul_matches_unfused() {
    use crate::backend::cpu::kernels::dispatch::silu_mul;
    use crate::backend::cpu::weights::glu_interleaved;
    let mut rng = crate::engine::sampler::Rng::new(0x9a7e_d001);
    for &(m, inter, k) in &[
        (1, 16, 31),
        (1, 96, 130),
        (2, 48, 64),
        (5, 32, 130),
        (16, 80, 896),
        (17, 96, 96),
        (40, 64, 200),
        (130, 80, 96),
        (150, 48, 2100),
    ] {
        let (x, gb) = exact_case(&mut rng, m, inter, k);
        let (_, ub) = exact_case(&mut rng, 1, inter, k);
        let bf16 = |w: &[u16]| bf16_matrix(inter, k, w.to_vec());
        let (gate, up) = (bf16(&gb), bf16(&ub));
        let fused = glu_interleaved(&gate, &up, GLU_BLOCK).expect("bf16, whole blocks");
        assert_eq!((fused.rows, fused.cols), (2 * inter, k));
        let (gate, up) = (gate.amx_tiled().0, up.amx_tiled().0);
        for level in [simd_level(), SimdLevel::Portable] {
            for dot in [Dot::Exact, Dot::Fast, Dot::Fine] {
                let (mut g, mut u) = (vec![0f32; m * inter], vec![0f32; m * inter]);
                matmul_with(level, dot, &x, m, &gate, &mut g);
                matmul_with(level, dot, &x, m, &up, &mut u);
                for (g, u) in g.chunks_exact_mut(inter).zip(u.chunks_exact(inter)) {
                    silu_mul(level, g, u);
                }
                let mut got = vec![f32::NAN; m * inter];
                let mut scratch = Vec::new();
                matmul_glu(level, dot, &x, m, &fused, &mut got, &mut scratch);
                assert_eq!(got, g, "{level:?} {dot:?} m{m} inter{inter} k{k}");
            }
        }
    }
    // Not fusable: rows not whole blocks, no columns, or not bf16.
    let odd = bf16_matrix(24, 8, vec![0u16; 24 * 8]);
    assert!(glu_interleaved(&odd, &odd, GLU_BLOCK).is_none());
    let empty = bf16_matrix(16, 0, Vec::new());
    assert!(glu_interleaved(&empty, &empty, GLU_BLOCK).is_none());
    let f32s = Matrix {
        rows: 16,
        cols: 8,
        data: WeightData::F32(Buf::Owned(Arc::new(vec![0f32; 16 * 8]))),
    };
    assert!(glu_interleaved(&f32s, &f32s, GLU_BLOCK).is_none());
}
