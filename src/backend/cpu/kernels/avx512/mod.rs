//! The AVX-512 GEMM kernels' safe entry points: one panel of weight rows (bf16 or f32) against
//! activations packed once per matmul (`kernels::gemm`), with the f32-activation kernels
//! ([`gemm_panel_bf16`], [`gemm_panel_f32`]; intrinsics in `widen`), the same register tiles and
//! a one-row kernel over weights in AMX tile order ([`gemm_panel_tiles`]; intrinsics in `widen`
//! too), the opt-in AVX-512 BF16 dot-product kernel over rows or tile order
//! ([`gemm_panel_bf16_dot`], [`gemm_panel_tiles_dot`]; intrinsics in `dot`), and the broadcast
//! forms over tile order for 16 rows and more, exact and `vdpbf16ps`
//! ([`gemm_panel_tiles_bcast_exact`], [`gemm_panel_tiles_bcast`]; intrinsics in `bcast`). Each
//! entry point checks the CPU features and the slice bounds the intrinsic code relies on.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod bcast;
#[cfg(target_arch = "x86_64")]
mod dot;
#[cfg(target_arch = "x86_64")]
mod widen;

use super::column_panel::ColumnPanel;
use super::cpu_features::{has_avx512_bf16, verified, SimdLevel};
use super::gemm;
use crate::backend::cpu::pod::Pod;

/// Weight rows × activation rows of one GEMM panel for the AVX-512 kernels (see
/// [`gemm`] for the packed activation layouts and the driver).
pub struct GemmPanel<'a, W, X = f32> {
    /// Activations packed by [`gemm::pack`] (f32) or [`gemm::pack_bf16`]
    /// (bf16 bits, for [`gemm_panel_bf16_dot`]); `m` rows, `k` columns.
    pub xp: &'a [X],
    pub m: usize,
    pub k: usize,
    /// Consecutive weight rows, `rows × k`, bf16 bits (`u16`) or f32.
    pub w: &'a [W],
    /// Output, transposed: `rows × m`.
    pub out_t: &'a mut [f32],
}

/// Runs one panel with the AVX-512 bf16-weight kernel; `false` (nothing done) when `level` has
/// no such kernel.
pub fn gemm_panel_bf16(level: SimdLevel, p: GemmPanel<'_, u16>) -> bool {
    gemm_panel::<u16, true>(level, p)
}

/// Runs one panel with the AVX-512 f32-weight kernel; `false` when `level` has none.
pub fn gemm_panel_f32(level: SimdLevel, p: GemmPanel<'_, f32>) -> bool {
    gemm_panel::<f32, false>(level, p)
}

/// Runs one panel with the AVX-512 BF16 dot-product kernel (`vdpbf16ps`: bf16 weights times
/// activations rounded to bf16, f32 accumulation); `false` (nothing done) when `level` is not
/// AVX-512 or the CPU lacks `avx512bf16`.
pub fn gemm_panel_bf16_dot(level: SimdLevel, p: GemmPanel<'_, u16, u16>) -> bool {
    if verified(level) != SimdLevel::Avx512 || !has_avx512_bf16() || p.k == 0 || p.m == 0 {
        return false;
    }
    let rows = p.w.len() / p.k;
    assert_eq!(p.w.len(), rows * p.k, "weight panel is not whole rows");
    assert_eq!(p.out_t.len(), rows * p.m, "output is not rows × m");
    assert!(
        p.xp.len() >= gemm::packed_len(p.m, p.k),
        "packed x too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `verified` returned Avx512 and `has_avx512_bf16` held, so avx512f/bw/vl, fma
        // and avx512bf16 were detected. The asserts above establish the bounds
        // `dot::panel_dot` relies on: `w` holds `rows × k` u16, `out_t` `rows × m` floats, and
        // `xp` the whole packed bf16 layout of `m × k`.
        unsafe {
            dot::panel_dot(
                p.xp.as_ptr(),
                p.m,
                p.k,
                p.w.as_ptr(),
                rows,
                p.out_t.as_mut_ptr(),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Weight blocks in the tile order of `weights::Bf16Tiles` × activation rows (see
/// [`gemm_panel_tiles`] and [`gemm_panel_tiles_dot`]).
pub struct TilesPanel<'a, X = f32> {
    /// Activations packed by [`gemm::pack`] with the even/odd split (f32), or by
    /// [`gemm::pack_bf16`] (bf16 bits, for [`gemm_panel_tiles_dot`]); `m` rows, `k` columns.
    pub xp: &'a [X],
    pub m: usize,
    pub k: usize,
    /// Whole 16-row blocks of `Bf16Tiles` (`k.div_ceil(32)` steps of 512 u16 each).
    pub w: &'a [u16],
    /// Output: `m` rows, the panel's columns (as many as its weight rows).
    pub out: ColumnPanel<'a>,
}

impl<X> TilesPanel<'_, X> {
    /// Checks the shapes the kernels rely on; returns (steps per block, u16 per block).
    fn check(&self) -> (usize, usize) {
        let kb = self.k.div_ceil(gemm::CHUNK);
        let block = kb * 16 * gemm::CHUNK;
        let rows = self.out.width();
        assert_eq!(self.out.rows(), self.m, "output is not m rows");
        assert_eq!(self.w.len(), rows.div_ceil(16) * block, "not whole blocks");
        assert!(
            self.xp.len() >= gemm::packed_len(self.m, self.k),
            "packed x too short"
        );
        (kb, block)
    }
}

/// Runs one panel of tiled bf16 weights against `m` activation rows with f32 accumulation
/// (the exact path over `Bf16Tiles`): one row streams each block once through a kernel of
/// 16 accumulators (batch-1 decode at the memory bound); more rows go in register tiles of
/// 4 block rows × up to 8 activation rows, as the row-major kernel does. `false` (nothing
/// done) when `level` is not AVX-512.
pub fn gemm_panel_tiles(level: SimdLevel, p: TilesPanel<'_>) -> bool {
    if verified(level) != SimdLevel::Avx512 || p.k == 0 || p.m == 0 {
        return false;
    }
    let (kb, block) = p.check();
    #[cfg(target_arch = "x86_64")]
    {
        if p.m > 1 {
            by_groups(p, false, |x, mt, chunks, w, lead, sums| {
                // SAFETY: `verified` returned Avx512 (avx512f/bw/vl and fma detected);
                // `by_groups` hands out chunk `c0` of a packed tile of `mt` rows with `chunks`
                // more chunks after it, and 4 rows of a whole block (at a multiple of 4 inside
                // it) from its step `c0`, `chunks` more steps in it (shapes checked above).
                unsafe { widen::tiles_group(x, mt, chunks, w, lead, sums) }
            });
            return true;
        }
        let rows = p.out.width();
        let mut out = p.out;
        for (b, wb) in p.w.chunks_exact(block).enumerate() {
            let (n0, ni) = (b * 16, (rows - b * 16).min(16));
            // SAFETY: `verified` returned Avx512 (avx512f/bw/vl and fma detected); `xp` holds
            // the packed tile of one row and `kb` chunks (checked above), and `wb` is one
            // whole block of `kb × 512` u16.
            let sums = unsafe { widen::tiles_block_row(p.xp.as_ptr(), 1, 0, kb, wb.as_ptr()) };
            out.row_mut(0)[n0..n0 + ni].copy_from_slice(&sums[..ni]);
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kb, block);
        false
    }
}

/// [`gemm_panel_tiles`] with the AVX-512 BF16 dot products (`vdpbf16ps`) over activations
/// packed as bf16, in the same register tiles (for any number of rows); `false` (nothing
/// done) when `level` is not AVX-512 or the CPU lacks `avx512bf16`.
pub fn gemm_panel_tiles_dot(level: SimdLevel, p: TilesPanel<'_, u16>) -> bool {
    if verified(level) != SimdLevel::Avx512 || !has_avx512_bf16() || p.k == 0 || p.m == 0 {
        return false;
    }
    p.check();
    #[cfg(target_arch = "x86_64")]
    {
        by_groups(p, true, |x, mt, chunks, w, lead, sums| {
            // SAFETY: `verified` returned Avx512 and `has_avx512_bf16` held (avx512f/bw/vl,
            // fma and avx512bf16 detected); operands as in `gemm_panel_tiles`.
            unsafe { dot::tiles_group_dot(x, mt, chunks, w, lead, sums) }
        });
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// [`gemm_panel_tiles_dot`]'s products in the broadcast form (`avx512::bcast`): the same
/// weights against activations packed by [`gemm::pack_amx`] with one term (`p.xp`), each
/// weight column pair broadcast into a `vdpbf16ps` over 16 activation rows, so the sums come
/// out whole without lane sums; from one whole 16-row block. `false` (nothing done) when
/// `level` is not AVX-512 or the CPU lacks `avx512bf16`.
pub fn gemm_panel_tiles_bcast(level: SimdLevel, p: TilesPanel<'_, u16>) -> bool {
    if verified(level) != SimdLevel::Avx512 || !has_avx512_bf16() || p.k == 0 || p.m == 0 {
        return false;
    }
    let need = gemm::amx_packed_len(p.m, p.k, 1);
    #[cfg(target_arch = "x86_64")]
    {
        let xp = bcast::Acts::Bf16(p.xp.as_ptr());
        // SAFETY: `verified` returned Avx512 and `has_avx512_bf16` held (avx512f/bw/vl, fma
        // and avx512bf16 detected); `xp` is the panel's bf16 activations, `need` long.
        unsafe { bcast_panel(p, xp, need) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = need;
        false
    }
}

/// [`gemm_panel_tiles`] in the broadcast form (`avx512::bcast`): the same weights against f32
/// activations packed by [`gemm::pack_pairs`] (`p.xp`), each weight column pair broadcast and
/// widened once for two FMAs per 16 activation rows: every product and sum in f32, the sums
/// whole without lane sums; from one whole 16-row block. `false` (nothing done) when `level`
/// is not AVX-512.
pub fn gemm_panel_tiles_bcast_exact(level: SimdLevel, p: TilesPanel<'_, f32>) -> bool {
    if verified(level) != SimdLevel::Avx512 || p.k == 0 || p.m == 0 {
        return false;
    }
    let need = gemm::pairs_packed_len(p.m, p.k);
    #[cfg(target_arch = "x86_64")]
    {
        let xp = bcast::Acts::F32(p.xp.as_ptr());
        // SAFETY: `verified` returned Avx512 (avx512f/bw/vl and fma detected); `xp` is the
        // panel's f32 activations, `need` long.
        unsafe { bcast_panel(p, xp, need) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = need;
        false
    }
}

/// Checks a broadcast-form panel's shapes (activations `need` elements or more) and runs it.
///
/// # Safety
/// `xp` points at `p.xp`; the CPU has the features `bcast::panel` needs for its kind.
#[cfg(target_arch = "x86_64")]
unsafe fn bcast_panel<X>(p: TilesPanel<'_, X>, xp: bcast::Acts, need: usize) {
    let kb = p.k.div_ceil(gemm::CHUNK);
    let block = kb * 16 * gemm::CHUNK;
    let blocks = p.out.width().div_ceil(16);
    assert_eq!(p.out.rows(), p.m, "output is not m rows");
    assert_eq!(p.w.len(), blocks * block, "not whole blocks");
    assert!(p.xp.len() >= need, "packed x too short");
    let mut out = p.out;
    // SAFETY: the asserts above establish `bcast::panel`'s bounds: `xp` holds
    // `m.div_ceil(16)` packed blocks of `kb` steps, `w` `blocks` whole blocks of `kb` steps,
    // and the output `m` rows of at most `blocks × 16` columns; the features by contract.
    unsafe { bcast::panel(xp, p.m, kb, p.w.as_ptr(), blocks, &mut out) };
}

/// Bytes of one packed bf16 activation tile's columns that the tile-order `vdpbf16ps` kernel
/// reads per pass where the rows are long: the tile's columns are taken in ranges of about this
/// many bytes, each range against every weight group before the next, so the activations stay
/// in L1 (32 KiB on the CPUs here) instead of streaming from L2 for every group (down_proj of
/// Qwen2-0.5B, 896 × 4864, on a Zen 4: 16 rows 233 → 276 GFLOP/s, 2,048 rows 251 → 293). Rows
/// whose tile fits twice this go in one pass (every projection over hidden 896). The exact
/// kernel, bound by its FMAs, gained nothing from ranges (149 → 141, 155 → 153) and takes
/// its rows whole.
const X_PASS_BYTES: usize = 16 << 10;

/// Drives a tile-order register-tile kernel over a checked panel: the columns in one pass, or
/// (with `ranges`, for long rows) in ranges of about [`X_PASS_BYTES`]; within each, in the
/// order `widen::passes` gives, `group(x, mt, chunks, w, lead, sums)` for each packed
/// activation tile (`mt` rows at `x`, the range's first chunk) and group of 4 block rows (at
/// `w`, the range's first step, `lead` for a block's first), over `chunks` chunks. The sums
/// (row `r`'s at `r * TILE_M`) go to the panel's columns (padding rows dropped), added to the
/// earlier ranges' sums.
#[cfg(target_arch = "x86_64")]
fn by_groups<X>(
    p: TilesPanel<'_, X>,
    ranges: bool,
    group: impl Fn(*const X, usize, usize, *const u16, bool, &mut [f32; 4 * gemm::TILE_M]),
) {
    use gemm::{CHUNK, TILE_M};
    let (m, kb) = (p.m, p.k.div_ceil(CHUNK));
    let block = kb * 16 * CHUNK;
    let tile_len = kb * TILE_M * CHUNK;
    let rows = p.out.width();
    let mut out = p.out;
    let elem_bytes = std::mem::size_of::<X>();
    let tile_bytes = tile_len * elem_bytes;
    let parts = if ranges && tile_bytes > 2 * X_PASS_BYTES {
        tile_bytes.div_ceil(X_PASS_BYTES)
    } else {
        1
    };
    let per = kb.div_ceil(parts);
    for c0 in (0..kb).step_by(per) {
        let chunks = per.min(kb - c0);
        let x_bytes = m.div_ceil(TILE_M) * chunks * TILE_M * CHUNK * elem_bytes;
        widen::passes(m, rows.div_ceil(16) * 16, x_bytes, |j, r, t0, mt| {
            debug_assert_eq!(r, 4, "blocks hold whole groups of 4 rows");
            if j >= rows {
                return; // all padding
            }
            // Step `c0` of the block's rows `j ..`, chunk `c0` of the tile (chunk-major).
            let w = &p.w[j / 16 * block + c0 * 16 * CHUNK + j % 16 * CHUNK..];
            let x = &p.xp[t0 / TILE_M * tile_len + c0 * mt * CHUNK..];
            let mut sums = [0f32; 4 * TILE_M];
            group(x.as_ptr(), mt, chunks, w.as_ptr(), j % 16 == 0, &mut sums);
            let cols = (rows - j).min(4);
            for i in 0..mt {
                let row = &mut out.row_mut(t0 + i)[j..j + cols];
                for (c, o) in row.iter_mut().enumerate() {
                    let v = sums[c * TILE_M + i];
                    *o = if c0 == 0 { v } else { *o + v };
                }
            }
        });
    }
}

fn gemm_panel<W: Pod, const BF16: bool>(level: SimdLevel, p: GemmPanel<'_, W>) -> bool {
    debug_assert_eq!(std::mem::size_of::<W>(), if BF16 { 2 } else { 4 });
    if verified(level) != SimdLevel::Avx512 || p.k == 0 || p.m == 0 {
        return false;
    }
    let rows = p.w.len() / p.k;
    assert_eq!(p.w.len(), rows * p.k, "weight panel is not whole rows");
    assert_eq!(p.out_t.len(), rows * p.m, "output is not rows × m");
    assert!(
        p.xp.len() >= gemm::packed_len(p.m, p.k),
        "packed x too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `verified` returned Avx512, so avx512f/bw/vl and fma were detected. The
        // asserts above establish the bounds `widen::panel` relies on: `w` holds `rows × k`
        // elements of `size_of::<W>()` bytes, `out_t` holds `rows × m` floats, and `xp` holds
        // the whole packed layout of `m × k`.
        unsafe {
            widen::panel::<BF16>(
                p.xp.as_ptr(),
                p.m,
                p.k,
                p.w.as_ptr().cast::<u8>(),
                rows,
                p.out_t.as_mut_ptr(),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
