//! The AVX-512 BF16 dot-product micro-kernel (`vdpbf16ps`): bf16 weights times activations
//! packed as bf16 (`kernels::gemm::pack_bf16`), f32 accumulation, with the same tiling as the
//! widening kernel in `widen` (over row-major weights or tile order, `widen::Layout`). Entered
//! only through `super::gemm_panel_bf16_dot` and `super::gemm_panel_tiles_dot`.
#![allow(unsafe_code)]
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::widen::{passes, store_acc, Layout, TileOps};
use crate::backend::cpu::kernels::gemm::{CHUNK, TILE_M};

/// 32 bf16 (64 bytes) at `p`, zero past `n`, as a `vdpbf16ps` operand.
///
/// # Safety
/// `p` points at `min(n, 32)` readable u16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
unsafe fn load_bh(p: *const u16, n: usize) -> __m512bh {
    // SAFETY: the caller guarantees `min(n, 32)` readable u16 at `p`; masked lanes are not
    // accessed (AVX-512 masked loads suppress faults).
    let v = unsafe {
        if n >= CHUNK {
            _mm512_loadu_si512(p.cast())
        } else {
            _mm512_maskz_loadu_epi16((1u32 << n) - 1, p.cast())
        }
    };
    // SAFETY: `__m512i` and `__m512bh` are both 64-byte vectors of plain bits; every bit
    // pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// The dot-product kernel's step: chunk `c` (`n` elements, at most `CHUNK`) of `R` bf16
/// weight rows against `MT` packed bf16 activation rows. Lane `l` of `acc[r][i]`
/// accumulates the products of elements `2l` and `2l + 1` of every chunk, so one 64-byte
/// load of each side feeds one `vdpbf16ps` (32 multiply-adds) per (row, row) pair.
///
/// # Safety
/// As for [`tile_dot`]; chunk `c` starts inside the rows and has `n` elements in them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
unsafe fn step_dot<const R: usize, const MT: usize>(
    acc: &mut [[__m512; MT]; R],
    xp: *const u16,
    w: *const u8,
    lay: Layout,
    c: usize,
    n: usize,
) {
    // SAFETY: a zeroed vector is a valid (all +0.0) bf16 vector; see `load_bh`.
    let mut wv: [__m512bh; R] =
        unsafe { [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); R] };
    for r in 0..R {
        // SAFETY: row `r` (at `r * ldw` bytes, its chunk `c` at `c * ldc`: the caller's
        // layout) has `c * CHUNK + n` elements or more.
        wv[r] = unsafe { load_bh(w.add(r * lay.ldw + c * lay.ldc).cast(), n) };
        lay.prefetch(w, r, c);
    }
    // SAFETY: chunk `c` of the packed tile is `MT × CHUNK` u16 inside it.
    let xc = unsafe { xp.add(c * MT * CHUNK) };
    for i in 0..MT {
        // SAFETY: row `i` of the chunk is `CHUNK` u16 at `i * CHUNK` (zero past `k`).
        let xv = unsafe { load_bh(xc.add(i * CHUNK), CHUNK) };
        for r in 0..R {
            acc[r][i] = _mm512_dpbf16_ps(acc[r][i], wv[r], xv);
        }
    }
}

/// [`super::widen::tile`] for the dot-product kernel: `out[r * ldo + i] = Σ_t w_r[t] · bf16(x_i[t])`.
///
/// # Safety
/// `xp` points at a packed bf16 tile of `MT` rows (`k.div_ceil(CHUNK)` chunks of
/// `MT × CHUNK` u16); `w` at `R` rows of `k` bf16 laid out as `lay` says; `out` at `R` rows
/// of `MT` writable floats `ldo` floats apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
unsafe fn tile_dot<const R: usize, const MT: usize>(
    xp: *const u16,
    k: usize,
    w: *const u8,
    lay: Layout,
    out: *mut f32,
    ldo: usize,
) {
    let full = k / CHUNK;
    let mut acc = [[_mm512_setzero_ps(); MT]; R];
    for c in 0..full {
        // SAFETY: forwarded contract; chunk `c` is whole.
        unsafe { step_dot::<R, MT>(&mut acc, xp, w, lay, c, CHUNK) };
    }
    if full * CHUNK < k {
        // SAFETY: forwarded contract; the last chunk has `k - full * CHUNK` elements.
        unsafe { step_dot::<R, MT>(&mut acc, xp, w, lay, full, k - full * CHUNK) };
    }
    // SAFETY: forwarded contract.
    unsafe { store_acc(&acc, out, ldo) };
}

/// [`super::widen::panel`] for the dot-product kernel (bf16 weights, bf16-packed activations), with the
/// same tiling: one `vdpbf16ps` per (weight row, activation row) and chunk, where the
/// widening kernel spends two FMAs and the widening itself.
///
/// # Safety
/// `xp` holds the packed bf16 layout of `m × k`, `w` `rows × k` bf16, `out_t` `rows × m`
/// writable floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
pub unsafe fn panel_dot(
    xp: *const u16,
    m: usize,
    k: usize,
    w: *const u16,
    rows: usize,
    out_t: *mut f32,
) {
    let tile_len = k.div_ceil(CHUNK) * TILE_M * CHUNK;
    let x_bytes = m.div_ceil(TILE_M) * tile_len * 2;
    passes(m, rows, x_bytes, |j, r, t0, mt| {
        // SAFETY: as in `panel`: the tile, weight rows `j .. j + r` and output rows
        // `j .. j + r` (columns `t0 .. t0 + mt`) lie inside the buffers.
        unsafe {
            let ops = TileOps {
                x: xp.add(t0 / TILE_M * tile_len),
                k,
                w: w.add(j * k).cast(),
                lay: Layout::rows(k * 2, 2),
                o: out_t.add(j * m + t0),
                ldo: m,
            };
            dispatch_dot(r, mt, ops);
        }
    });
}

/// [`super::widen::tiles_group`] for the dot-product kernel: 4 rows of a tile-order block
/// against a packed bf16 activation tile of `mt` rows, over `kb` chunks (all of a row's, or a
/// range of them), sums into `out`.
///
/// # Safety
/// As for `widen::tiles_group`, with `x` a packed bf16 tile.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
pub(super) unsafe fn tiles_group_dot(
    x: *const u16,
    mt: usize,
    kb: usize,
    w: *const u16,
    lead: bool,
    out: &mut [f32; 4 * TILE_M],
) {
    // SAFETY: as in `widen::tiles_group` (forwarded contract).
    unsafe { dispatch_dot(4, mt, TileOps::tiles_group(x, kb, w, lead, out)) }
}

/// [`super::widen::dispatch`] for the dot-product kernel. One weight vector per row (not two), so
/// 4 × mt runs up to mt = 4 and 2 × mt halves above, as there.
///
/// # Safety
/// As for [`tile_dot`] with `R = r`, `MT = mt`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
unsafe fn dispatch_dot(r: usize, mt: usize, ops: TileOps<u16>) {
    let TileOps {
        x,
        k,
        w,
        lay,
        o,
        ldo,
    } = ops;
    macro_rules! four {
        ($mt:literal) => {
            // SAFETY: forwarded contract.
            unsafe { tile_dot::<4, $mt>(x, k, w, lay, o, ldo) }
        };
    }
    macro_rules! two_twos {
        ($mt:literal) => {
            // SAFETY: forwarded contract; the second half starts 2 rows further.
            unsafe {
                tile_dot::<2, $mt>(x, k, w, lay, o, ldo);
                let (w2, o2) = (w.add(2 * lay.ldw), o.add(2 * ldo));
                tile_dot::<2, $mt>(x, k, w2, lay.follower(), o2, ldo);
            }
        };
    }
    macro_rules! one {
        ($mt:literal) => {
            // SAFETY: forwarded contract.
            unsafe { tile_dot::<1, $mt>(x, k, w, lay, o, ldo) }
        };
    }
    match (r, mt) {
        (4, 1) => four!(1),
        (4, 2) => four!(2),
        (4, 3) => four!(3),
        (4, 4) => four!(4),
        (4, 5) => two_twos!(5),
        (4, 6) => two_twos!(6),
        (4, 7) => two_twos!(7),
        (4, 8) => two_twos!(8),
        (_, 1) => one!(1),
        (_, 2) => one!(2),
        (_, 3) => one!(3),
        (_, 4) => one!(4),
        (_, 5) => one!(5),
        (_, 6) => one!(6),
        (_, 7) => one!(7),
        _ => one!(8),
    }
}
