//! The AMX tile instructions (inline `asm!`: `ldtilecfg`, `tileloadd`, `tdpbf16ps`,
//! `tilestored`, `tilerelease`), the AVX-512 16 × 16 register transpose of the AMX kernel and
//! its split of finished tiles into packed bf16 terms ([`pack_half16`]). Entered only through
//! `super::gemm_panel_amx`, `super::transpose16` and the panel's tile stores.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::super::{TILES_PREFETCH_L1, TILES_PREFETCH_L2};

/// Loads the AMX tile configuration of [`amx_block`] (palette 1, tiles 0–7 all 16 rows ×
/// 64 bytes) on this thread.
///
/// # Safety
/// AMX-TILE is present and permitted for this process.
pub unsafe fn amx_config() {
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    for t in 0..8 {
        cfg[16 + 2 * t] = 64;
        cfg[48 + t] = 16;
    }
    // SAFETY: `cfg` is a valid 64-byte palette-1 configuration; the instruction only reads it.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
    }
}

/// Returns this thread's tile state to init (frees it for context switches).
///
/// # Safety
/// AMX-TILE is present and permitted for this process.
pub unsafe fn amx_release() {
    // SAFETY: `tilerelease` touches no memory; the caller guarantees AMX is usable.
    unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
}

/// How many 64-byte column steps ahead the AMX kernel prefetches its row-major weight rows.
const AMX_PREFETCH: usize = 4;

/// Operands of one [`amx_block`] call.
pub struct AmxBlock {
    /// Blocks of 16 weight rows (1–2) and of 16 activation rows (1–2).
    pub nb: usize,
    pub mb: usize,
    /// The first weight tile of the block: tile rows `row_bytes` apart, the tiles of
    /// consecutive column steps `step_bytes` apart, the second 16-row tile `half_bytes` after
    /// the first (row-major weights: the row stride, 64 and 16 rows; `tiled`, the order of
    /// `weights::Bf16Tiles`: 64, 1 KiB and one block).
    pub w: *const u16,
    pub row_bytes: usize,
    pub step_bytes: usize,
    pub half_bytes: usize,
    pub tiled: bool,
    /// The first packed activation block (`pieces * kb` tiles of 1 KiB, piece-major).
    pub xb: *const u16,
    pub kb: usize,
    pub pieces: usize,
    /// The 32-column steps of this pass.
    pub steps: std::ops::Range<usize>,
    /// Prefetch the weights ahead (the first pass over them, from memory); off where they
    /// are already in L2 (later activation pairs), where the prefetches only cost: ~20 % of
    /// the kernel's rate on an L2-resident panel (one or three terms).
    pub prefetch: bool,
}

/// One pass of the AMX kernel: C tiles `(bi, bj)` (16 × 16 f32, row = weight row, at
/// `c + (bi * 2 + bj) * 256`) accumulate weight block `bi` × activation block `bj` over
/// the pass's column steps, each step multiplying the weight tiles by the `pieces`
/// activation tiles of that step; the first pass (`steps.start == 0`) starts from zero,
/// later ones from the tiles in `c`. Stores all four tiles back.
///
/// # Safety
/// AMX-TILE/BF16 are present and permitted and [`amx_config`] ran on this thread since
/// the last [`amx_release`]; `w` points at `nb` tiles of 16 rows `half_bytes` apart, for each
/// of `kb` column steps (`step_bytes` apart), each tile row (`row_bytes` apart) 32 readable
/// bf16; `xb` at `mb` consecutive packed blocks of
/// `pieces * kb` tiles of 16 × 32 bf16; `steps.end <= kb`; `c` at 1024 floats, readable
/// and writable.
pub unsafe fn amx_block(b: AmxBlock, c: *mut f32) {
    use std::arch::asm;
    let AmxBlock {
        nb,
        mb,
        w,
        row_bytes,
        step_bytes,
        half_bytes,
        tiled,
        xb,
        kb,
        pieces,
        steps,
        prefetch,
    } = b;
    let w1 = w.wrapping_byte_add(half_bytes);
    let xstride = pieces * kb * 1024; // bytes between activation blocks
    let xb1 = xb.wrapping_byte_add(xstride);
    // SAFETY: the tiles are configured (contract); tile loads read 16 rows of 64 bytes
    // at `w(1) + t * step_bytes` with stride `row_bytes` and at `xb(1) + (piece * kb + t) * 1024`
    // with stride 64, inside the buffers by the contract (only the blocks `nb`/`mb` name
    // are touched); C loads and stores move 1 KiB tiles within `c`. Tile registers are not
    // used by compiler-generated code, so they keep their values between the `asm!` blocks.
    unsafe {
        if steps.start == 0 {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        } else {
            asm!(
                "tileloadd tmm0, [{c0} + {x}*1]",
                "tileloadd tmm1, [{c1} + {x}*1]",
                "tileloadd tmm2, [{c2} + {x}*1]",
                "tileloadd tmm3, [{c3} + {x}*1]",
                c0 = in(reg) c, c1 = in(reg) c.add(256), c2 = in(reg) c.add(512),
                c3 = in(reg) c.add(768), x = in(reg) 64usize,
                options(nostack, readonly)
            );
        }
        for t in steps {
            let (a0, a1) = (
                w.byte_add(t * step_bytes),
                w1.wrapping_byte_add(t * step_bytes),
            );
            // Row-major weights: each row's chunk `AMX_PREFETCH` steps on (32 short row
            // streams defeat the hardware prefetcher). Tiled weights: each of the two streams
            // `TILES_PREFETCH_L2` steps on into L2 and `TILES_PREFETCH_L1` on into L1.
            // Wrapping arithmetic, and a prefetch never faults.
            if !prefetch {
            } else if tiled {
                for h in 0..nb {
                    let stream = w.wrapping_byte_add(h * half_bytes);
                    let l2 = stream.wrapping_byte_add((t + TILES_PREFETCH_L2) * step_bytes);
                    let l1 = stream.wrapping_byte_add((t + TILES_PREFETCH_L1) * step_bytes);
                    for l in 0..16 {
                        _mm_prefetch::<_MM_HINT_T1>(l2.wrapping_byte_add(l * 64).cast());
                        _mm_prefetch::<_MM_HINT_T0>(l1.wrapping_byte_add(l * 64).cast());
                    }
                }
            } else {
                for r in 0..16 * nb {
                    let ahead = w.wrapping_byte_add(r * row_bytes + (t + AMX_PREFETCH) * 64);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
            }
            if nb == 2 {
                asm!(
                    "tileloadd tmm4, [{a0} + {s}*1]",
                    "tileloadd tmm5, [{a1} + {s}*1]",
                    a0 = in(reg) a0, a1 = in(reg) a1, s = in(reg) row_bytes,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {s}*1]",
                    a0 = in(reg) a0, s = in(reg) row_bytes,
                    options(nostack, readonly)
                );
            }
            for piece in 0..pieces {
                let off = (piece * kb + t) * 1024;
                let (b0, b1) = (xb.byte_add(off), xb1.wrapping_byte_add(off));
                match (nb, mb) {
                    (2, 2) => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tileloadd tmm7, [{b1} + {x}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        b0 = in(reg) b0, b1 = in(reg) b1, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    // One activation block: odd pieces go to the idle C tiles 1 and 3, so
                    // each accumulator's chain of dependent products is half as long (the
                    // caller adds the pairs).
                    (2, _) if piece % 2 == 1 => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm6",
                        b0 = in(reg) b0, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    (2, _) => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        b0 = in(reg) b0, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    (_, 2) => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {x}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        b0 = in(reg) b0, b1 = in(reg) b1, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    _ if piece % 2 == 1 => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        b0 = in(reg) b0, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    _ => asm!(
                        "tileloadd tmm6, [{b0} + {x}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        b0 = in(reg) b0, x = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                }
            }
        }
        asm!(
            "tilestored [{c0} + {x}*1], tmm0",
            "tilestored [{c1} + {x}*1], tmm1",
            "tilestored [{c2} + {x}*1], tmm2",
            "tilestored [{c3} + {x}*1], tmm3",
            c0 = in(reg) c, c1 = in(reg) c.add(256), c2 = in(reg) c.add(512),
            c3 = in(reg) c.add(768), x = in(reg) 64usize,
            options(nostack)
        );
    }
}

/// Operands of one [`amx_rows`] call: up to three 16-row weight blocks in tile order
/// (`weights::Bf16Tiles`: per block, `kb` 1 KiB tiles of 16 rows × 64 bytes) against one
/// block of at most 16 activation rows, over every column step.
pub struct AmxRows {
    /// Blocks of 16 weight rows (1–3), `block_bytes` apart from `w`.
    pub nb: usize,
    pub w: *const u16,
    pub block_bytes: usize,
    /// The packed activation block (`pieces * kb` tiles of 1 KiB, piece-major).
    pub xb: *const u16,
    pub kb: usize,
    pub pieces: usize,
}

/// The one-activation-block kernel (decode-sized matmuls, at most 16 rows): C tile `i`
/// (`c + i * 256`, 16 × 16 f32, row = weight row) = weight block `i` × the activation block,
/// over all `kb` column steps and `pieces` terms. Three weight tiles stay loaded per step
/// (tmm3–5) while the activation pieces alternate between tmm6 and tmm7, so each activation
/// tile load feeds three products (the two-block kernel, [`amx_block`] with one activation
/// block, loads five tiles per six products) and the three C tiles' chains interleave.
///
/// # Safety
/// As [`amx_block`]: tiles configured on this thread; `w` points at `nb` blocks
/// (`block_bytes` apart) of `kb` readable 1 KiB tiles; `xb` at `pieces * kb` readable 1 KiB
/// tiles; `c` at 768 writable floats (all three C tiles are stored; the first `nb` hold the
/// result).
pub unsafe fn amx_rows(b: AmxRows, c: *mut f32) {
    use std::arch::asm;
    const STEP: usize = 1024;
    let AmxRows {
        nb,
        w,
        block_bytes,
        xb,
        kb,
        pieces,
    } = b;
    // SAFETY: the tiles are configured (contract); tile loads read 16 rows of 64 bytes at
    // `w + i * block_bytes + t * 1024` (i < nb, t < kb) and at `xb + (piece * kb + t) * 1024`,
    // stride 64, inside the buffers by the contract; the C stores write three 1 KiB tiles at
    // `c`. Tile registers are not used by compiler-generated code, so they keep their values
    // between the `asm!` blocks.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            options(nostack, nomem)
        );
        for t in 0..kb {
            let a0 = w.byte_add(t * STEP);
            let (a1, a2) = (
                a0.wrapping_byte_add(block_bytes),
                a0.wrapping_byte_add(2 * block_bytes),
            );
            // As `amx_block`: each weight stream `TILES_PREFETCH_L2` steps on into L2 and
            // `TILES_PREFETCH_L1` on into L1. A prefetch never faults.
            for h in 0..nb {
                let stream = w.wrapping_byte_add(h * block_bytes);
                let l2 = stream.wrapping_byte_add((t + TILES_PREFETCH_L2) * STEP);
                let l1 = stream.wrapping_byte_add((t + TILES_PREFETCH_L1) * STEP);
                for l in 0..16 {
                    _mm_prefetch::<_MM_HINT_T1>(l2.wrapping_byte_add(l * 64).cast());
                    _mm_prefetch::<_MM_HINT_T0>(l1.wrapping_byte_add(l * 64).cast());
                }
            }
            match nb {
                3 => asm!(
                    "tileloadd tmm3, [{a0} + {s}*1]",
                    "tileloadd tmm4, [{a1} + {s}*1]",
                    "tileloadd tmm5, [{a2} + {s}*1]",
                    a0 = in(reg) a0, a1 = in(reg) a1, a2 = in(reg) a2, s = in(reg) 64usize,
                    options(nostack, readonly)
                ),
                2 => asm!(
                    "tileloadd tmm3, [{a0} + {s}*1]",
                    "tileloadd tmm4, [{a1} + {s}*1]",
                    a0 = in(reg) a0, a1 = in(reg) a1, s = in(reg) 64usize,
                    options(nostack, readonly)
                ),
                _ => asm!(
                    "tileloadd tmm3, [{a0} + {s}*1]",
                    a0 = in(reg) a0, s = in(reg) 64usize,
                    options(nostack, readonly)
                ),
            }
            for piece in 0..pieces {
                let x = xb.byte_add((piece * kb + t) * 1024);
                match (nb, piece % 2) {
                    (3, 0) => asm!(
                        "tileloadd tmm6, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    (3, _) => asm!(
                        "tileloadd tmm7, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm7",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm7",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    // Fewer blocks: a panel's last ones.
                    (2, 0) => asm!(
                        "tileloadd tmm6, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm6",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    (2, _) => asm!(
                        "tileloadd tmm7, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm7",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    (_, 0) => asm!(
                        "tileloadd tmm6, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm6",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                    _ => asm!(
                        "tileloadd tmm7, [{x} + {s}*1]",
                        "tdpbf16ps tmm0, tmm3, tmm7",
                        x = in(reg) x, s = in(reg) 64usize,
                        options(nostack, readonly)
                    ),
                }
            }
        }
        asm!(
            "tilestored [{c0} + {x}*1], tmm0",
            "tilestored [{c1} + {x}*1], tmm1",
            "tilestored [{c2} + {x}*1], tmm2",
            c0 = in(reg) c, c1 = in(reg) c.add(256), c2 = in(reg) c.add(512),
            x = in(reg) 64usize,
            options(nostack)
        );
    }
}

/// The 16 columns of a 16 × 16 f32 tile (`src`, row-major) as 16 vectors: 32-bit then
/// 64-bit unpacks give each 128-bit lane a 4 × 4 sub-block transposed, then two rounds of
/// 128-bit lane shuffles put the sub-blocks in place.
///
/// # Safety
/// avx512f is present; `src` has 256 readable floats.
#[target_feature(enable = "avx512f")]
unsafe fn columns16(src: *const f32) -> [__m512; 16] {
    // SAFETY: 16 loads of 16 floats, inside the 256 the contract grants.
    let r: [__m512; 16] = std::array::from_fn(|i| unsafe { _mm512_loadu_ps(src.add(i * 16)) });
    // t[2g], t[2g+1]: rows 2g, 2g+1 interleaved per lane (columns 4L, 4L+1 / 4L+2, 4L+3).
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + c], lane L: column 4L + c of rows 4g..4g+4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, c) = (i / 4, i % 4);
        let a = _mm512_castps_pd(t[4 * g + c / 2]);
        let b = _mm512_castps_pd(t[4 * g + 2 + c / 2]);
        _mm512_castpd_ps(if c % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    let mut cols = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
        let p0 = _mm512_shuffle_f32x4::<0x44>(a, b);
        let p1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
        let p2 = _mm512_shuffle_f32x4::<0x44>(cc, d);
        let p3 = _mm512_shuffle_f32x4::<0xEE>(cc, d);
        cols[c] = _mm512_shuffle_f32x4::<0x88>(p0, p2);
        cols[4 + c] = _mm512_shuffle_f32x4::<0xDD>(p0, p2);
        cols[8 + c] = _mm512_shuffle_f32x4::<0x88>(p1, p3);
        cols[12 + c] = _mm512_shuffle_f32x4::<0xDD>(p1, p3);
    }
    cols
}

/// `dst[j * 16 + i] = src[i * 16 + j]` for a 16 × 16 f32 tile.
///
/// # Safety
/// avx512f is present; `src` has 256 readable floats and `dst` 256 writable ones.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16(src: *const f32, dst: *mut f32) {
    // SAFETY: avx512f is present and `src` holds 256 floats (contract).
    let cols = unsafe { columns16(src) };
    for (j, v) in cols.into_iter().enumerate() {
        // SAFETY: 16 floats at `dst + 16 j`, inside the 256 the contract grants.
        unsafe { _mm512_storeu_ps(dst.add(j * 16), v) };
    }
}

/// Column `j < rows` of a 16 × 16 f32 tile (`src`, row-major) stored as the first `cols`
/// floats of `dst + j * stride`: a finished C tile written transposed straight into its
/// place in a row-major output, one (masked) 64-byte store per output row.
///
/// # Safety
/// avx512f is present; `src` has 256 readable floats; for each `j < rows`,
/// `dst + j * stride .. + cols` is writable; `rows, cols <= 16`.
#[target_feature(enable = "avx512f")]
pub unsafe fn transpose16_store(
    src: *const f32,
    dst: *mut f32,
    stride: usize,
    rows: usize,
    cols: usize,
) {
    // SAFETY: avx512f is present and `src` holds 256 floats (contract).
    let vs = unsafe { columns16(src) };
    let mask: __mmask16 = if cols >= 16 { !0 } else { (1u16 << cols) - 1 };
    for (j, v) in vs.into_iter().take(rows).enumerate() {
        // SAFETY: the masked store writes only the first `cols` floats of row `j`, which the
        // contract makes writable.
        unsafe { _mm512_mask_storeu_ps(dst.add(j * stride), mask, v) };
    }
}

/// `gemm::pack_amx_half` in AVX-512 registers (the same bits): for each of the 8 tile rows,
/// C tile rows `2q` and `2q + 1` (masked to the first `rows` lanes, zero past `cols`) split
/// into `pieces` bf16 terms, each term's pair interleaved into one 64-byte store at
/// `out + (piece * 8 + q) * 32`.
///
/// # Safety
/// avx512f and avx512bw are present; `src` has 256 readable floats; `out` has
/// `pieces * 256` writable u16; `rows, cols <= 16`; `1 <= pieces <= 3`.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn pack_half16(src: *const f32, rows: usize, cols: usize, pieces: usize, out: *mut u16) {
    let row_mask: __mmask16 = if rows >= 16 { !0 } else { (1u16 << rows) - 1 };
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    // `kernels::f32_to_bf16` on 16 lanes: nearest, ties to even; NaN keeps its top half
    // with the quiet bit set.
    let round = |v: __m512| {
        let bits = _mm512_castps_si512(v);
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let sum = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), odd);
        let rounded = _mm512_srli_epi32::<16>(sum);
        let nan = _mm512_or_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(0x40));
        _mm512_mask_blend_epi32(_mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), rounded, nan)
    };
    for q in 0..8 {
        let load = |unit: usize| {
            let mask = if unit < cols { row_mask } else { 0 };
            // SAFETY: lanes past `mask` are not read; row `unit < 16` of the 256 floats.
            unsafe { _mm512_maskz_loadu_ps(mask, src.add(unit * 16)) }
        };
        let (mut a, mut b) = (load(2 * q), load(2 * q + 1));
        for piece in 0..pieces {
            let (ta, tb) = match pieces {
                1 => (round(a), round(b)),
                2 if piece == 0 => {
                    let (ha, hb) = (round(a), round(b));
                    let back = |h: __m512i| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h));
                    a = _mm512_sub_ps(a, back(ha));
                    b = _mm512_sub_ps(b, back(hb));
                    (ha, hb)
                }
                2 => (round(a), round(b)),
                _ => {
                    let (ba, bb) = (_mm512_castps_si512(a), _mm512_castps_si512(b));
                    a = _mm512_sub_ps(a, _mm512_castsi512_ps(_mm512_and_si512(ba, high)));
                    b = _mm512_sub_ps(b, _mm512_castsi512_ps(_mm512_and_si512(bb, high)));
                    (_mm512_srli_epi32::<16>(ba), _mm512_srli_epi32::<16>(bb))
                }
            };
            let pair = _mm512_or_si512(ta, _mm512_slli_epi32::<16>(tb));
            // SAFETY: 32 u16 at `(piece * 8 + q) * 32`, inside the `pieces * 256` granted.
            unsafe { _mm512_storeu_si512(out.add((piece * 8 + q) * 32).cast(), pair) };
        }
    }
}
