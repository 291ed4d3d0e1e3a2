//! The AVX-512 GEMM micro-kernels over f32 activations. Weights are read in their stored
//! format and widened in registers: a 64-byte load of 32 bf16 holds, per 32-bit lane, an even
//! element in the low half and an odd one in the high half, so `lane << 16` and
//! `lane & 0xffff0000` are exact f32 values of the even and odd elements. Activations are
//! packed to match (even/odd split for bf16, plain for f32), and each (weight row, activation
//! row) pair accumulates in one zmm. Entered only through `super::gemm_panel`, and
//! [`tiles_block_row`] (16 weight rows of a tile-order block against one activation row) and
//! [`tiles_group`] (the register tiles over tile order, [`Layout`]) through
//! `super::gemm_panel_tiles`.
#![allow(unsafe_code)]
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::backend::cpu::kernels::gemm::{CHUNK, TILE_M};
use crate::backend::cpu::kernels::{TILES_PREFETCH_L1, TILES_PREFETCH_L2};

/// How many weight rows ahead of the current ones to prefetch (two 4-row groups).
pub(super) const PREFETCH_ROWS: usize = 8;

/// Loads the weights `[at, at + min(n, 32))` of one row as (even, odd) or (first 16, next
/// 16) f32 vectors, zero beyond `n`.
///
/// # Safety
/// `p` points at element `at` of a row with at least `min(n, 32)` readable elements.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn load_w<const BF16: bool>(p: *const u8, n: usize) -> (__m512, __m512) {
    if BF16 {
        // SAFETY: the caller guarantees `min(n, 32)` readable u16 at `p`; masked lanes are
        // not accessed (AVX-512 masked loads suppress faults).
        let v = unsafe {
            if n >= CHUNK {
                _mm512_loadu_si512(p.cast())
            } else {
                _mm512_maskz_loadu_epi16((1u32 << n) - 1, p.cast())
            }
        };
        let hi = _mm512_set1_epi32(0xffff_0000_u32 as i32);
        (
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
            _mm512_castsi512_ps(_mm512_and_si512(v, hi)),
        )
    } else {
        let p = p.cast::<f32>();
        // SAFETY: as above, for f32 elements; masked lanes are not accessed.
        unsafe {
            if n >= CHUNK {
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            } else {
                let lo = (1u32 << n.min(16)) - 1;
                let hi = (1u32 << n.saturating_sub(16)) - 1;
                (
                    _mm512_maskz_loadu_ps(lo as u16, p),
                    _mm512_maskz_loadu_ps(hi as u16, p.add(16)),
                )
            }
        }
    }
}

/// Where a register tile's weight rows lie and what to prefetch for them.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    /// Bytes from one weight row to the next.
    pub ldw: usize,
    /// Bytes from one chunk of a row to its next.
    pub ldc: usize,
    pub ahead: Ahead,
}

/// The software prefetch of a register tile's weight rows.
#[derive(Clone, Copy)]
pub(super) enum Ahead {
    /// Row-major rows: the same chunk [`PREFETCH_ROWS`] rows on (the hardware prefetcher
    /// does not follow a dozen short row streams well).
    Rows,
    /// Rows of one block in tile order (`weights::Bf16Tiles`, one sequential stream of 1 KiB
    /// steps): the tile's own rows `TILES_PREFETCH_L1` steps on into L1 and, for the block's
    /// first register tile (`lead`), whole steps `TILES_PREFETCH_L2` on into L2, so the
    /// block's later row groups find theirs there.
    Tiles { lead: bool },
}

impl Layout {
    /// Row-major rows `ldw` bytes apart of elements `es` bytes wide.
    pub(super) fn rows(ldw: usize, es: usize) -> Self {
        Self {
            ldw,
            ldc: CHUNK * es,
            ahead: Ahead::Rows,
        }
    }

    /// Rows of one tile-order block of bf16 (64 bytes apart, chunks 1 KiB apart).
    pub(super) fn tiles(lead: bool) -> Self {
        Self {
            ldw: CHUNK * 2,
            ldc: TILE_STEP_BYTES,
            ahead: Ahead::Tiles { lead },
        }
    }

    /// The layout of the rows after the first register tile's in the same pass over a block
    /// (the second half of a 4-row group): the lead's whole-step prefetch is issued once.
    pub(super) fn follower(self) -> Self {
        Self {
            ahead: match self.ahead {
                Ahead::Tiles { .. } => Ahead::Tiles { lead: false },
                rows => rows,
            },
            ..self
        }
    }

    /// Prefetches for row `r` of a register tile at `w` while chunk `c` is read.
    #[inline(always)]
    pub(super) fn prefetch(self, w: *const u8, r: usize, c: usize) {
        // Addresses may lie past the weights: computed with wrapping arithmetic, and a
        // prefetch never faults or reads anything architecturally.
        match self.ahead {
            Ahead::Rows => {
                let at = w.wrapping_add((r + PREFETCH_ROWS) * self.ldw + c * self.ldc);
                // SAFETY: prefetching is not a memory access (see above).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
                if self.ldc > 64 {
                    // SAFETY: as above.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(64).cast()) };
                }
            }
            Ahead::Tiles { lead } => {
                let l1 = w.wrapping_add((c + TILES_PREFETCH_L1) * self.ldc + r * self.ldw);
                // SAFETY: as above.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(l1.cast()) };
                if lead && r == 0 {
                    let l2 = w.wrapping_add((c + TILES_PREFETCH_L2) * self.ldc);
                    for l in 0..TILE_STEP_BYTES / 64 {
                        // SAFETY: as above.
                        unsafe { _mm_prefetch::<_MM_HINT_T1>(l2.wrapping_add(l * 64).cast()) };
                    }
                }
            }
        }
    }
}

/// Bytes of one step of a tile-order block (16 rows × 32 bf16).
const TILE_STEP_BYTES: usize = 16 * CHUNK * 2;

/// Accumulates chunk `c` (`n` elements, at most `CHUNK`) of `R` weight rows against `MT`
/// packed activation rows.
///
/// # Safety
/// As for [`tile`]; chunk `c` starts inside the rows and has `n` elements in them.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn step<const BF16: bool, const R: usize, const MT: usize>(
    acc: &mut [[__m512; MT]; R],
    xp: *const f32,
    w: *const u8,
    lay: Layout,
    c: usize,
    n: usize,
) {
    let mut we = [_mm512_setzero_ps(); R];
    let mut wo = [_mm512_setzero_ps(); R];
    for r in 0..R {
        // SAFETY: row `r` has `c * CHUNK + n` elements or more, at `r * ldw` bytes, its
        // chunk `c` at `c * ldc` bytes (the caller's layout).
        (we[r], wo[r]) = unsafe { load_w::<BF16>(w.add(r * lay.ldw + c * lay.ldc), n) };
        lay.prefetch(w, r, c);
    }
    // SAFETY: chunk `c` of the packed tile is `MT × CHUNK` floats inside it.
    let xc = unsafe { xp.add(c * MT * CHUNK) };
    for i in 0..MT {
        // SAFETY: row `i` of the chunk is `CHUNK` floats at `i * CHUNK`.
        let (xe, xo) = unsafe {
            (
                _mm512_loadu_ps(xc.add(i * CHUNK)),
                _mm512_loadu_ps(xc.add(i * CHUNK + 16)),
            )
        };
        for r in 0..R {
            acc[r][i] = _mm512_fmadd_ps(we[r], xe, acc[r][i]);
            acc[r][i] = _mm512_fmadd_ps(wo[r], xo, acc[r][i]);
        }
    }
}

/// `out[r * ldo + i] = Σ_t w_r[t] · x_i[t]` for `R` weight rows and one packed tile of `MT`
/// activation rows.
///
/// # Safety
/// `xp` points at a packed tile of `MT` rows (`k.div_ceil(CHUNK)` chunks of
/// `MT × CHUNK` floats); `w` at `R` rows of `k` elements laid out as `lay` says; `out` at
/// `R` rows of `MT` writable floats `ldo` floats apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn tile<const BF16: bool, const R: usize, const MT: usize>(
    xp: *const f32,
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
        unsafe { step::<BF16, R, MT>(&mut acc, xp, w, lay, c, CHUNK) };
    }
    if full * CHUNK < k {
        // SAFETY: forwarded contract; the last chunk has `k - full * CHUNK` elements.
        unsafe { step::<BF16, R, MT>(&mut acc, xp, w, lay, full, k - full * CHUNK) };
    }
    // SAFETY: forwarded contract (`R` output rows of `MT` floats, `ldo` apart).
    unsafe { store_acc(&acc, out, ldo) };
}

/// `out[r * ldo + i] = ` the lane sum of `acc[r][i]`.
///
/// # Safety
/// `out` points at `R` rows of `MT` writable floats, `ldo` floats apart.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn store_acc<const R: usize, const MT: usize>(
    acc: &[[__m512; MT]; R],
    out: *mut f32,
    ldo: usize,
) {
    for (r, row) in acc.iter().enumerate() {
        if MT == 8 {
            let sums = hsum8(std::array::from_fn(|i| row[i]));
            // SAFETY: the caller guarantees `R` output rows of `MT` = 8 floats, `ldo` apart.
            unsafe { _mm256_storeu_ps(out.add(r * ldo), sums) };
            continue;
        }
        for (i, a) in row.iter().enumerate() {
            // SAFETY: the caller guarantees `R` output rows of `MT` floats, `ldo` apart.
            unsafe { *out.add(r * ldo + i) = _mm512_reduce_add_ps(*a) };
        }
    }
}

/// The lane sums of 8 vectors, as one 8-float vector: a transposing shuffle tree (about 25
/// instructions instead of 8 separate reductions' 64).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
fn hsum8(a: [__m512; 8]) -> __m256 {
    // [x.l0 + x.l2, x.l1 + x.l3, y.l0 + y.l2, y.l1 + y.l3] in 128-bit lanes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn pair(x: __m512, y: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
        )
    }
    // From two pairs' results: one 128-bit lane of 4 partial sums per input vector.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn quad(p: __m512, q: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(p, q),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(p, q),
        )
    }
    let t1 = quad(pair(a[0], a[1]), pair(a[2], a[3]));
    let t2 = quad(pair(a[4], a[5]), pair(a[6], a[7]));
    // Lane L: [t1.L (e0+e1), t1.L (e2+e3), t2.L (e0+e1), t2.L (e2+e3)].
    let w = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(t1, t2),
        _mm512_shuffle_ps::<0xDD>(t1, t2),
    );
    // Lane L: [sum a[L], sum a[4 + L], (repeated)].
    let y = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(w, w),
        _mm512_shuffle_ps::<0xDD>(w, w),
    );
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, y))
}

/// Packed activations up to this many bytes are swept whole for each group of weight rows
/// ([`passes`]): they stay in L2 (1–2 MiB per core on the CPUs here) from group to group.
const X_RESIDENT_BYTES: usize = 512 << 10;

/// The order in which a panel kernel pairs its register tiles: `visit(j, r, t0, mt)` for every
/// group of `r` (4, or 1 at the end) weight rows from `j` and every packed activation tile of
/// `mt` rows from `t0`. Small activations (`x_bytes` ≤ [`X_RESIDENT_BYTES`], decode-sized
/// batches) go weight group by weight group, every activation tile against each group while
/// its rows are in L1, so the weights stream from memory once and evenly while the arithmetic
/// runs; large ones tile by tile, each against all the panel's groups (the driver keeps a panel
/// small enough to stay in L2 from one tile to the next). At concurrency 16 (two tiles) the
/// tile-by-tile order read the whole panel from memory during the first tile's pass and
/// computed the second from cache, so the two never overlapped.
pub(super) fn passes(
    m: usize,
    rows: usize,
    x_bytes: usize,
    mut visit: impl FnMut(usize, usize, usize, usize),
) {
    let groups = |f: &mut dyn FnMut(usize, usize)| {
        let mut j = 0;
        while j < rows {
            let r = if rows - j >= 4 { 4 } else { 1 };
            f(j, r);
            j += r;
        }
    };
    if x_bytes <= X_RESIDENT_BYTES {
        groups(&mut |j, r| {
            for t0 in (0..m).step_by(TILE_M) {
                visit(j, r, t0, (m - t0).min(TILE_M));
            }
        });
    } else {
        for t0 in (0..m).step_by(TILE_M) {
            groups(&mut |j, r| visit(j, r, t0, (m - t0).min(TILE_M)));
        }
    }
}

/// All activation rows against `rows` weight rows, in register tiles of 4 (1 at the end)
/// weight rows × one packed activation tile (in the order [`passes`] gives).
///
/// # Safety
/// `xp` holds the packed layout of `m × k`, `w` `rows × k` weights (bf16 when
/// `BF16`, else f32), `out_t` `rows × m` writable floats.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub unsafe fn panel<const BF16: bool>(
    xp: *const f32,
    m: usize,
    k: usize,
    w: *const u8,
    rows: usize,
    out_t: *mut f32,
) {
    let ldw = k * if BF16 { 2 } else { 4 };
    let tile_len = k.div_ceil(CHUNK) * TILE_M * CHUNK;
    let x_bytes = m.div_ceil(TILE_M) * tile_len * 4;
    passes(m, rows, x_bytes, |j, r, t0, mt| {
        // SAFETY: tile `t0 / TILE_M` starts at `(t0 / TILE_M) * tile_len` inside `xp` and
        // holds `mt` packed rows; weight rows `j .. j + r` and output rows `j .. j + r`
        // (columns `t0 .. t0 + mt`) lie inside `w` and `out_t` by the function's contract.
        unsafe {
            let ops = TileOps {
                x: xp.add(t0 / TILE_M * tile_len),
                k,
                w: w.add(j * ldw),
                lay: Layout::rows(ldw, if BF16 { 2 } else { 4 }),
                o: out_t.add(j * m + t0),
                ldo: m,
            };
            dispatch::<BF16>(r, mt, ops);
        }
    });
}

/// One register tile over a block in tile order (`weights::Bf16Tiles`): 4 of its rows from
/// `w` (the block's first group when `lead`) against a packed activation tile of `mt` rows,
/// over `kb` chunks (all of a row's, or a range of them); the sums land in `out`, row `r`'s at
/// `r * TILE_M ..`.
///
/// # Safety
/// `x` points at a chunk of a packed tile of `mt` (1..=`TILE_M`) rows with `kb` chunks from
/// there on inside it (`mt × CHUNK` floats each); `w` at row `r` (a multiple of 4) of a step of
/// a block, that is `r * 32` u16 past the step's start, with `kb` steps of 512 u16 from that
/// step on inside the block.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn tiles_group(
    x: *const f32,
    mt: usize,
    kb: usize,
    w: *const u16,
    lead: bool,
    out: &mut [f32; 4 * TILE_M],
) {
    // SAFETY: 4 rows of the block from `w`, 64 bytes apart with their chunks 1 KiB apart
    // (the tile layout), `kb` whole chunks each (contract); the tile of `mt` rows; `out`
    // holds 4 rows of `TILE_M` ≥ `mt` floats.
    unsafe { dispatch::<true>(4, mt, TileOps::tiles_group(x, kb, w, lead, out)) }
}

/// The operands of one [`tile`] call, as [`dispatch`] takes them (and, with bf16 activations,
/// `dot`'s `tile_dot` through its dispatch): a packed activation tile `x` of `k` columns,
/// weight rows from `w` (laid out as `lay` says), output rows from `o` (`ldo` floats apart).
#[derive(Clone, Copy)]
pub(super) struct TileOps<X = f32> {
    pub x: *const X,
    pub k: usize,
    pub w: *const u8,
    pub lay: Layout,
    pub o: *mut f32,
    pub ldo: usize,
}

impl<X> TileOps<X> {
    /// The operands of a register tile over a tile-order block (`tiles_group`,
    /// `dot::tiles_group_dot`): 4 rows from `w` (the block's first group when `lead`), `kb`
    /// whole chunks of the activation tile at `x` (the block is zero-padded to whole steps, the
    /// packed tile to whole chunks), the sums into `out`, `TILE_M` floats a row.
    pub(super) fn tiles_group(
        x: *const X,
        kb: usize,
        w: *const u16,
        lead: bool,
        out: &mut [f32; 4 * TILE_M],
    ) -> Self {
        Self {
            x,
            k: kb * CHUNK,
            w: w.cast(),
            lay: Layout::tiles(lead),
            o: out.as_mut_ptr(),
            ldo: TILE_M,
        }
    }
}

/// Picks the register tile for `r` (4 or 1) weight rows × `mt` (1..=8) activation rows:
/// 4 × mt up to 4 rows, two 2 × mt halves above (at most 16 accumulators + 4–8 widened
/// weight vectors live, within the 32 zmm registers).
///
/// # Safety
/// As for [`tile`] with `R = r`, `MT = mt` and the operands in `ops`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn dispatch<const BF16: bool>(r: usize, mt: usize, ops: TileOps) {
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
            unsafe { tile::<BF16, 4, $mt>(x, k, w, lay, o, ldo) }
        };
    }
    macro_rules! two_twos {
        ($mt:literal) => {
            // SAFETY: forwarded contract; the second half starts 2 rows further.
            unsafe {
                tile::<BF16, 2, $mt>(x, k, w, lay, o, ldo);
                let (w2, o2) = (w.add(2 * lay.ldw), o.add(2 * ldo));
                tile::<BF16, 2, $mt>(x, k, w2, lay.follower(), o2, ldo);
            }
        };
    }
    macro_rules! one {
        ($mt:literal) => {
            // SAFETY: forwarded contract.
            unsafe { tile::<BF16, 1, $mt>(x, k, w, lay, o, ldo) }
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

/// One block of 16 weight rows in the tile order of `weights::Bf16Tiles` (`kb` steps of 16
/// rows × 32 bf16, rows 64 bytes apart) against row `i` of a packed tile of `mt` activation
/// rows ([`gemm::pack`](crate::backend::cpu::kernels::gemm::pack), even/odd split): the 16
/// dot products, one per weight row. The block is read front to back, one sequential stream.
///
/// # Safety
/// `xp` points at a packed tile of `mt` rows with `kb` chunks (`kb × mt × CHUNK` floats) and
/// `i < mt`; `w` at `kb × 512` readable u16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn tiles_block_row(
    xp: *const f32,
    mt: usize,
    i: usize,
    kb: usize,
    w: *const u16,
) -> [f32; 16] {
    let hi = _mm512_set1_epi32(0xffff_0000_u32 as i32);
    let mut acc = [_mm512_setzero_ps(); 16];
    for c in 0..kb {
        // The block's tiles `TILES_PREFETCH_L2` steps on into L2 and `TILES_PREFETCH_L1` on
        // into L1. Wrapping arithmetic, and a prefetch never faults.
        let l2 = w.wrapping_add((c + TILES_PREFETCH_L2) * 512);
        let l1 = w.wrapping_add((c + TILES_PREFETCH_L1) * 512);
        for l in 0..16 {
            _mm_prefetch::<_MM_HINT_T1>(l2.wrapping_add(l * 32).cast());
            _mm_prefetch::<_MM_HINT_T0>(l1.wrapping_add(l * 32).cast());
        }
        // SAFETY: chunk `c` of row `i` is `CHUNK` floats at `(c * mt + i) * CHUNK` (contract).
        let (xe, xo) = unsafe {
            let x = xp.add((c * mt + i) * CHUNK);
            (_mm512_loadu_ps(x), _mm512_loadu_ps(x.add(16)))
        };
        // SAFETY: step `c` is 16 rows of 32 u16 at `c * 512` (contract).
        let tile = unsafe { w.add(c * 512) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: row `r` of the step, 64 bytes inside the tile.
            let v = unsafe { _mm512_loadu_si512(tile.add(r * 32).cast()) };
            let we = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
            let wo = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
            *a = _mm512_fmadd_ps(wo, xo, _mm512_fmadd_ps(we, xe, *a));
        }
    }
    let lo = hsum8(std::array::from_fn(|r| acc[r]));
    let up = hsum8(std::array::from_fn(|r| acc[8 + r]));
    let mut out = [0f32; 16];
    // SAFETY: two 8-float stores into a 16-float array.
    unsafe {
        _mm256_storeu_ps(out.as_mut_ptr(), lo);
        _mm256_storeu_ps(out.as_mut_ptr().add(8), up);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both orders pair every weight group with every activation tile exactly once, groups of
    /// 4 then single rows, tiles of `TILE_M` then the rest; small activations group by group,
    /// large ones tile by tile.
    #[test]
    fn passes_visit_each_group_and_tile_once() {
        for (m, rows) in [(1, 1), (8, 4), (16, 10), (21, 7), (3, 13)] {
            for x_bytes in [0, X_RESIDENT_BYTES, X_RESIDENT_BYTES + 1] {
                let mut seen = Vec::new();
                passes(m, rows, x_bytes, |j, r, t0, mt| seen.push((j, r, t0, mt)));
                let mut want = Vec::new();
                let groups: Vec<(usize, usize)> = (0..rows / 4 * 4)
                    .step_by(4)
                    .map(|j| (j, 4))
                    .chain((rows / 4 * 4..rows).map(|j| (j, 1)))
                    .collect();
                let tiles: Vec<(usize, usize)> = (0..m)
                    .step_by(TILE_M)
                    .map(|t0| (t0, (m - t0).min(TILE_M)))
                    .collect();
                if x_bytes <= X_RESIDENT_BYTES {
                    for &(j, r) in &groups {
                        want.extend(tiles.iter().map(|&(t0, mt)| (j, r, t0, mt)));
                    }
                } else {
                    for &(t0, mt) in &tiles {
                        want.extend(groups.iter().map(|&(j, r)| (j, r, t0, mt)));
                    }
                }
                assert_eq!(seen, want, "m {m}, rows {rows}, {x_bytes} bytes");
            }
        }
    }
}
