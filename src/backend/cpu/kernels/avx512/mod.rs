//! The AVX-512 GEMM kernels' safe entry points: one panel of weight rows (bf16 or f32) against
//! activations packed once per matmul (`kernels::gemm`), with the f32-activation kernels
//! ([`gemm_panel_bf16`], [`gemm_panel_f32`]; intrinsics in `widen`), the one-row kernel over
//! weights in AMX tile order ([`gemm_panel_tiles`]; intrinsics in `widen` too) and the opt-in
//! AVX-512 BF16 dot-product kernel ([`gemm_panel_bf16_dot`]; intrinsics in `dot`). Each entry
//! point checks the CPU features and the slice bounds the intrinsic code relies on.
#![allow(unsafe_code)]

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

/// Weight blocks in the tile order of `weights::Bf16Tiles` × a few activation rows (see
/// [`gemm_panel_tiles`]).
pub struct TilesPanel<'a> {
    /// Activations packed by [`gemm::pack`] with the even/odd split, at most
    /// [`gemm::TILE_M`] rows (`m`), `k` columns.
    pub xp: &'a [f32],
    pub m: usize,
    pub k: usize,
    /// Whole 16-row blocks of `Bf16Tiles` (`k.div_ceil(32)` steps of 512 u16 each).
    pub w: &'a [u16],
    /// Output: `m` rows, the panel's columns (as many as its weight rows).
    pub out: ColumnPanel<'a>,
}

/// Runs one panel of tiled bf16 weights against up to [`gemm::TILE_M`] activation rows with
/// f32 accumulation (the exact path's kernel for decode-sized matmuls over `Bf16Tiles`), each
/// block read once per activation row, front to back; `false` (nothing done) when `level` is
/// not AVX-512.
pub fn gemm_panel_tiles(level: SimdLevel, p: TilesPanel<'_>) -> bool {
    if verified(level) != SimdLevel::Avx512 || p.k == 0 || p.m == 0 {
        return false;
    }
    let (m, k) = (p.m, p.k);
    assert!(m <= gemm::TILE_M, "at most one packed tile of rows");
    let kb = k.div_ceil(gemm::CHUNK);
    let block = kb * 16 * gemm::CHUNK;
    let rows = p.out.width();
    assert_eq!(p.out.rows(), m, "output is not m rows");
    assert_eq!(p.w.len(), rows.div_ceil(16) * block, "not whole blocks");
    assert!(p.xp.len() >= gemm::packed_len(m, k), "packed x too short");
    let mut out = p.out;
    #[cfg(target_arch = "x86_64")]
    for (b, wb) in p.w.chunks_exact(block).enumerate() {
        let (n0, ni) = (b * 16, (rows - b * 16).min(16));
        for i in 0..m {
            // SAFETY: `verified` returned Avx512 (avx512f/bw/vl and fma detected); `xp` holds
            // the packed tile of `m` rows and `kb` chunks (assert above), `i < m`, and `wb` is
            // one whole block of `kb × 512` u16.
            let sums = unsafe { widen::tiles_block_row(p.xp.as_ptr(), m, i, kb, wb.as_ptr()) };
            out.row_mut(i)[n0..n0 + ni].copy_from_slice(&sums[..ni]);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (&mut out, block);
        return false;
    }
    true
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
