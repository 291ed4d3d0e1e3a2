//! The AMX BF16 tile kernel's safe entry point ([`gemm_panel_amx`]): bf16 weights × activations
//! packed as 1 to 3 bf16 terms (`kernels::gemm::pack_amx`), blocked so activation tiles stay in
//! L1 while weights stream from L2 (decode-sized inputs: three weight blocks per activation
//! tile load), with the 16 × 16 tile transpose ([`transpose16`]) that
//! writes finished tiles into the caller's output columns, or the split into bf16 terms that
//! writes them already packed for the next AMX matmul ([`AmxOut`]). The tile instructions
//! themselves (inline `asm!`) live in `tiles`.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod tiles;

use super::column_panel::{ColumnPanel, PackedSteps};
use super::cpu_features::has_amx;
use super::gemm;

/// Rows and columns of one AMX tile block (16 rows of 64 bytes).
const AMX_T: usize = 16;

/// Column steps (32 columns each) per chunk of a long row in panels of at least
/// [`AMX_WIDE_MIN_M`] activation rows (see [`gemm_panel_amx`]).
pub const AMX_K_CHUNK: usize = 32;

/// Fewest activation rows for which the AMX path goes through long rows in chunks and takes
/// wide panels (`linear::packed`): below it the activation tiles are few and the narrower
/// panels of one pass over the rows were as fast or faster (64 rows) on the decode bench's
/// `BENCH_GEMM_M` runs.
pub const AMX_WIDE_MIN_M: usize = 128;

/// Fewest 16-row activation blocks for which the AMX kernel copies misaligned weights.
const AMX_ALIGN_MIN_BLOCKS: usize = 4;

/// Weight rows × activation rows of one AMX panel (see [`gemm_panel_amx`]).
pub struct AmxPanel<'a> {
    /// Activations packed by [`gemm::pack_amx`] with `pieces` bf16 terms per value;
    /// `m` rows, `k` columns.
    pub xp: &'a [u16],
    pub m: usize,
    pub k: usize,
    /// 1 (activations rounded to bf16), 2 (rounded value + rounded rest) or 3 (bf16 terms
    /// summing to the f32 value).
    pub pieces: usize,
    /// Consecutive weight rows, bf16 bits: `rows × k` row-major, or with `tiled` whole
    /// 16-row blocks in the tile order of `weights::Bf16Tiles` (`rows` is then the output's
    /// width).
    pub w: &'a [u16],
    pub tiled: bool,
    /// The weight is a gated unit's two projections with their rows interleaved in 16-row
    /// blocks (gate block, up block, …; see `weights::glu_interleaved`): the panel writes
    /// `silu(gate) · up`, `rows / 2` columns, instead of both products.
    pub glu: bool,
    /// Output: `m` rows, `rows` columns of the destination matrix (`rows / 2` with `glu`).
    pub out: AmxOut<'a>,
}

/// Where a panel's results go.
pub enum AmxOut<'a> {
    /// Columns of a row-major f32 matrix.
    Columns(ColumnPanel<'a>),
    /// Whole 32-column steps of a matrix in the packed activation layout of
    /// [`gemm::pack_amx`], as the terms it would split each f32 result into: the input of
    /// the next AMX matmul, written without the f32 matrix in between (a gated unit's output
    /// feeding the down projection).
    Packed(PackedSteps<'a>),
}

impl AmxOut<'_> {
    fn rows(&self) -> usize {
        match self {
            AmxOut::Columns(c) => c.rows(),
            AmxOut::Packed(p) => p.rows(),
        }
    }

    fn width(&self) -> usize {
        match self {
            AmxOut::Columns(c) => c.width(),
            AmxOut::Packed(p) => p.width(),
        }
    }
}

/// Runs one panel with the AMX BF16 tile kernel (`tdpbf16ps`: bf16 × bf16 products with f32
/// accumulation) over activations packed by [`gemm::pack_amx`]; every piece of a
/// value multiplies the same weight tile, so with 3 pieces the sum is the f32 activation's
/// product, and with 1 the bf16-rounded one's (with one activation block, odd pieces
/// accumulate in the otherwise idle C tiles and are added at the end: shorter chains of
/// dependent tile products).
///
/// Blocking: blocks of 32 weight rows × 32 activation rows accumulate in four 16 × 16 tiles.
/// For each pair of activation blocks, the columns go in passes of a few 32-column steps whose
/// activation tiles stay in L1 while every weight block of the panel streams past from L2; the
/// C tiles wait in an aligned buffer between passes, and finished ones are transposed in
/// registers straight into the panel's columns of the output. From [`AMX_WIDE_MIN_M`] rows
/// the columns go in chunks of [`AMX_K_CHUNK`] steps, all pairs through one chunk before the
/// next (each pair's C tiles kept), so a wide panel's weights of one chunk stay in L2. Weights
/// in tile order (`tiled`) are read in place; row-major rows in place when they are 64-byte
/// aligned whole blocks, else from an aligned, zero-padded copy. One activation block (at
/// most 16 rows: decode) over weights in tile order goes through [`panel_one_block`] instead:
/// three 16-row weight blocks at a time, each activation tile load feeding three products.
/// `false` (nothing done) when AMX is unavailable.
pub fn gemm_panel_amx(p: AmxPanel<'_>) -> bool {
    if !has_amx() || p.k == 0 || p.m == 0 {
        return false;
    }
    let (m, k, pieces) = (p.m, p.k, p.pieces);
    assert!((1..=3).contains(&pieces), "1 to 3 pieces");
    let kb = k.div_ceil(2 * AMX_T);
    let rows = if p.tiled {
        let rows = p.out.width() * if p.glu { 2 } else { 1 };
        assert_eq!(
            p.w.len(),
            rows.div_ceil(AMX_T) * kb * 2 * AMX_T * AMX_T,
            "tiled panel is not whole blocks"
        );
        rows
    } else {
        p.w.len() / k
    };
    assert!(
        p.tiled || p.w.len() == rows * k,
        "weight panel is not whole rows"
    );
    let width = if p.glu { rows / 2 } else { rows };
    assert!(
        !p.glu || rows.is_multiple_of(2 * AMX_T),
        "gated panel is not whole gate/up block pairs"
    );
    assert!(
        p.out.rows() == m && p.out.width() == width,
        "output is not m × {width}"
    );
    let mut out = p.out;
    let mbs = m.div_ceil(AMX_T);
    assert!(
        p.xp.len() >= gemm::amx_packed_len(m, k, pieces),
        "packed x too short"
    );
    let kp = kb * 2 * AMX_T;
    let nblocks = rows.div_ceil(2 * AMX_T);
    // Tile rows must start on 64-byte boundaries: a row that straddles two cache lines makes
    // every tile load several times slower (measured ~6× here). Weights used in place only when
    // they are aligned whole 16-row blocks of `kp` columns; else an aligned, zero-padded copy
    // of the panel (safetensors data is only 8-byte aligned).
    let mut scratch = AMX_SCRATCH.with(|s| s.take());
    // (With few activation blocks the copy costs more than it saves: each weight tile is
    // loaded only `mbs` times.)
    let aligned = (p.w.as_ptr() as usize).is_multiple_of(64) || mbs < AMX_ALIGN_MIN_BLOCKS;
    let in_place = p.tiled || (k == kp && rows.is_multiple_of(AMX_T) && aligned);
    let (w, ldw): (&[u16], usize) = if in_place {
        (p.w, k)
    } else {
        let len = rows.div_ceil(AMX_T) * AMX_T * kp;
        let buf = gemm::aligned64(&mut scratch.0, len);
        for (dst, src) in buf.chunks_exact_mut(kp).zip(p.w.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
            dst[k..].fill(0);
        }
        buf[rows * kp..].fill(0);
        (&*buf, kp)
    };
    if mbs == 1 && p.tiled {
        let one = OneBlock {
            w,
            xb: p.xp,
            kb,
            pieces,
            rows,
            m,
            glu: p.glu,
        };
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission.
        unsafe {
            tiles::amx_config()
        };
        panel_one_block(one, &mut out);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for `amx_config` above.
        unsafe {
            tiles::amx_release()
        };
        AMX_SCRATCH.with(|s| s.replace(scratch));
        return true;
    }
    let block_u16 = pieces * kb * AMX_T * 2 * AMX_T;
    // Column steps per pass: an activation pair's tiles of one pass (2 × pieces × steps KiB)
    // stay in L1 while every weight block of the panel streams past them from L2.
    let steps = if mbs == 1 { kb } else { (12 / pieces).max(1) };
    // With many activation rows, long rows go in chunks of `AMX_K_CHUNK` column steps, every
    // pair through one chunk before the next, so the panel's weights of one chunk stay in L2
    // while the pairs stream past (a pair's tiles of a whole row, with three terms, are
    // ~0.9 MiB at k = 4864); the caller sizes the panel for that.
    let chunk = if m >= AMX_WIDE_MIN_M {
        AMX_K_CHUNK.min(kb)
    } else {
        kb
    };
    // The four C tiles of every weight block (of every pair, with several chunks), kept
    // between passes (64-byte aligned too).
    let per_pair = nblocks * 4 * AMX_T * AMX_T;
    let pairs = if chunk < kb { mbs.div_ceil(2) } else { 1 };
    let acc_all = gemm::aligned64(&mut scratch.1, pairs * per_pair);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission.
    unsafe {
        tiles::amx_config()
    };
    for k0 in (0..kb).step_by(chunk) {
        let k1 = (k0 + chunk).min(kb);
        for (pair, mb0) in (0..mbs).step_by(2).enumerate() {
            let mb = (mbs - mb0).min(2);
            let xb = &p.xp[mb0 * block_u16..];
            assert!(xb.len() >= mb * block_u16);
            let acc = &mut acc_all[(pair % pairs) * per_pair..][..per_pair];
            for t0 in (k0..k1).step_by(steps) {
                let t1 = (t0 + steps).min(k1);
                for (bi, c) in acc.chunks_exact_mut(4 * AMX_T * AMX_T).enumerate() {
                    let n0 = bi * 2 * AMX_T;
                    let nb = (rows - n0).div_ceil(AMX_T).min(2);
                    // Where the block starts, tile rows apart, steps apart, and its second tile.
                    let (wb, row_bytes, step_bytes, half_bytes) = if p.tiled {
                        let block = kb * 2 * AMX_T * AMX_T; // u16 of one 16-row block
                        let wb = &w[2 * bi * block..];
                        assert!(wb.len() >= nb * block);
                        (wb, 64, 2 * AMX_T * AMX_T * 2, block * 2)
                    } else {
                        let wb = &w[n0 * ldw..];
                        assert!(wb.len() >= (nb * AMX_T - 1) * ldw + kp);
                        (wb, ldw * 2, 64, AMX_T * ldw * 2)
                    };
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission, and
                    // `amx_config` ran on this thread above (nothing between releases the tiles).
                    // Bounds: row-major, `wb` holds `nb` blocks of 16 rows, `ldw` u16 apart, each
                    // with `kb * 32` readable u16; tiled, `nb` blocks of `kb` 1 KiB tiles (the
                    // asserts above); `xb` holds `mb` packed blocks of
                    // `pieces * kb` 16 × 32 tiles (the assert above); `c` holds four 16 × 16 f32
                    // tiles (1024 floats).
                    unsafe {
                        tiles::amx_block(
                            tiles::AmxBlock {
                                nb,
                                mb,
                                w: wb.as_ptr(),
                                row_bytes,
                                step_bytes,
                                half_bytes,
                                tiled: p.tiled,
                                xb: xb.as_ptr(),
                                kb,
                                pieces,
                                steps: t0..t1,
                                // Only the first pair reads the panel's weights (of this
                                // chunk) from memory; later ones find them in L2.
                                prefetch: mb0 == 0,
                            },
                            c.as_mut_ptr(),
                        );
                    }
                }
            }
            if k1 == kb {
                let finished = Finished {
                    rows,
                    m,
                    mb0,
                    mb,
                    odd_apart: mb == 1 && pieces > 1,
                    glu: p.glu,
                };
                store_finished(acc, finished, &mut out);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `amx_config` above.
    unsafe {
        tiles::amx_release()
    };
    AMX_SCRATCH.with(|s| s.replace(scratch));
    true
}

/// A panel in tile order (`weights::Bf16Tiles`: `rows` weight rows in whole 16-row blocks of
/// `kb` 1 KiB tiles) against one block of at most 16 activation rows (`m`), packed as `xb`.
struct OneBlock<'a> {
    w: &'a [u16],
    xb: &'a [u16],
    kb: usize,
    pieces: usize,
    rows: usize,
    m: usize,
    /// Gate and up blocks alternate (see [`AmxPanel::glu`]).
    glu: bool,
}

/// C tiles of [`tiles::amx_rows`], 64-byte aligned.
#[repr(C, align(64))]
struct CTiles([f32; 3 * AMX_T * AMX_T]);

/// The decode-sized case of [`gemm_panel_amx`] (one activation block, weights in tile order):
/// the panel's weight blocks three at a time through `tiles::amx_rows` (each activation tile
/// load feeding three products), each finished tile written to the output ([`store_tile`]).
fn panel_one_block(b: OneBlock<'_>, out: &mut AmxOut<'_>) {
    const TILE: usize = AMX_T * AMX_T;
    let blocks = b.rows.div_ceil(AMX_T);
    let block_u16 = b.kb * 2 * TILE;
    assert!(b.w.len() >= blocks * block_u16, "weight blocks short");
    assert!(
        b.xb.len() >= b.pieces * b.kb * 2 * TILE,
        "packed x too short"
    );
    let mut c = CTiles([0.0; 3 * TILE]);
    // With `glu`: the last gate tile, waiting for its up tile (the next block, which may
    // come in the next group of three).
    let mut gate = [0f32; TILE];
    for g in (0..blocks).step_by(3) {
        let nb = (blocks - g).min(3);
        let wg = &b.w[g * block_u16..];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission, and `amx_config`
        // ran on this thread in `gemm_panel_amx` (nothing since released the tiles). Bounds:
        // `w` holds `blocks` whole blocks of `kb` 1 KiB tiles (the assert above), so `wg`
        // holds `nb` of them; `xb` holds `pieces * kb` tiles (the assert above); `c` is 768
        // floats.
        unsafe {
            tiles::amx_rows(
                tiles::AmxRows {
                    nb,
                    w: wg.as_ptr(),
                    block_bytes: block_u16 * 2,
                    xb: b.xb.as_ptr(),
                    kb: b.kb,
                    pieces: b.pieces,
                },
                c.0.as_mut_ptr(),
            );
        }
        for (i, tile) in c.0.chunks_exact_mut(TILE).take(nb).enumerate() {
            let block = g + i;
            let tile: &mut [f32; TILE] = tile.try_into().expect("tile is 256 floats");
            if !b.glu {
                let n = block * AMX_T;
                store_tile(tile, out, (0, b.m), (n, AMX_T.min(b.rows - n)));
            } else if block % 2 == 0 {
                gate = *tile;
            } else {
                glu_combine(&mut gate, tile);
                store_tile(&gate, out, (0, b.m), (block / 2 * AMX_T, AMX_T));
            }
        }
    }
}

/// Which C tiles [`store_finished`] writes: the panel's `rows` weight rows × activation
/// blocks `mb0..mb0 + mb` of `m` rows; `odd_apart` when the odd pieces accumulated in tiles 1
/// and 3 (one activation block, several pieces; see `tiles::amx_block`).
struct Finished {
    rows: usize,
    m: usize,
    mb0: usize,
    mb: usize,
    odd_apart: bool,
    /// Each 32-row weight block is a gate and an up block (see [`AmxPanel::glu`]).
    glu: bool,
}

/// Writes one activation pair's finished C tiles (`acc`: four 16 × 16 tiles per 32-row weight
/// block) into the output columns ([`store_tile`]), after adding the odd pieces' tiles to the
/// even ones where they were kept apart.
fn store_finished(acc: &mut [f32], f: Finished, out: &mut AmxOut<'_>) {
    const TILE: usize = AMX_T * AMX_T;
    if f.odd_apart {
        for c in acc.chunks_exact_mut(4 * TILE) {
            let (t0, rest) = c.split_at_mut(TILE);
            let (t1, rest) = rest.split_at_mut(TILE);
            let (t2, t3) = rest.split_at_mut(TILE);
            t0.iter_mut().zip(&*t1).for_each(|(a, b)| *a += b);
            t2.iter_mut().zip(&*t3).for_each(|(a, b)| *a += b);
        }
    }
    if f.glu {
        for (bi, c) in acc.chunks_exact_mut(4 * TILE).enumerate() {
            let (gates, ups) = c.split_at_mut(2 * TILE);
            for bj in 0..f.mb {
                let m0 = (f.mb0 + bj) * AMX_T;
                let gate: &mut [f32; TILE] = (&mut gates[bj * TILE..][..TILE])
                    .try_into()
                    .expect("tile is 256 floats");
                let up: &[f32; TILE] = ups[bj * TILE..][..TILE]
                    .try_into()
                    .expect("tile is 256 floats");
                glu_combine(gate, up);
                let mi = (f.m - m0).min(AMX_T);
                store_tile(gate, out, (m0, mi), (bi * AMX_T, AMX_T));
            }
        }
        return;
    }
    for (bi, c) in acc.chunks_exact(4 * TILE).enumerate() {
        let n0 = bi * 2 * AMX_T;
        let nr = (f.rows - n0).min(2 * AMX_T);
        for bj in 0..f.mb {
            let m0 = (f.mb0 + bj) * AMX_T;
            for bi2 in 0..nr.div_ceil(AMX_T) {
                let ni = AMX_T.min(nr - bi2 * AMX_T);
                let n = n0 + bi2 * AMX_T;
                let tile: &[f32; TILE] = c[(bi2 * 2 + bj) * TILE..][..TILE]
                    .try_into()
                    .expect("tile is 256 floats");
                let mi = (f.m - m0).min(AMX_T);
                store_tile(tile, out, (m0, mi), (n, ni));
            }
        }
    }
}

/// `gate = silu(gate) · up` for one gate tile and its up tile (the same weight rows of the
/// two projections × the same activation rows), with the kernel the unfused path runs.
fn glu_combine(gate: &mut [f32; 256], up: &[f32; 256]) {
    super::dispatch::silu_mul(super::SimdLevel::Avx512, gate, up);
}

/// Writes a finished C tile (row = weight row, column = activation row) into `out`: its
/// first `rows.1` columns become output rows `rows.0 ..`, its first `cols.1` rows output
/// columns `cols.0 ..` ([`store_columns`], [`store_packed`]).
fn store_tile(tile: &[f32; 256], out: &mut AmxOut<'_>, rows: (usize, usize), cols: (usize, usize)) {
    match out {
        AmxOut::Columns(c) => store_columns(tile, c, rows, cols),
        AmxOut::Packed(p) => store_packed(tile, p, rows, cols),
    }
}

/// [`store_tile`] into the packed layout: each value as `out.pieces()` bf16 terms
/// (`gemm::pack_amx_half`), the tile's 16 output columns (`cols.0` a multiple of 16) filling
/// half of their 32-column step's tile rows; output rows of the 16-row block past `rows.1`,
/// and columns past `cols.1`, become zeros, as [`gemm::pack_amx`] pads them.
fn store_packed(
    tile: &[f32; 256],
    out: &mut PackedSteps<'_>,
    (m0, mi): (usize, usize),
    (n, ni): (usize, usize),
) {
    assert!(
        m0.is_multiple_of(AMX_T) && n.is_multiple_of(AMX_T),
        "packed tiles start on whole blocks"
    );
    let pieces = out.pieces();
    let mut terms = [[[0u16; 2 * AMX_T]; AMX_T / 2]; 3];
    pack_half(tile, (mi, ni), pieces, &mut terms);
    let (blk, step, half) = (m0 / AMX_T, n / (2 * AMX_T), n % (2 * AMX_T) / AMX_T);
    for (piece, rows) in terms.iter().take(pieces).enumerate() {
        let dst = out.tile_mut(blk, piece, step);
        let dst = &mut dst[half * AMX_T * AMX_T..][..AMX_T * AMX_T];
        for (d, src) in dst.chunks_exact_mut(2 * AMX_T).zip(rows) {
            d.copy_from_slice(src);
        }
    }
}

/// `gemm::pack_amx_half` (half a packed step from a C tile), in AVX-512 registers where the
/// CPU has them (wherever AMX runs): the same bits.
fn pack_half(
    tile: &[f32; 256],
    (mi, ni): (usize, usize),
    pieces: usize,
    out: &mut [[[u16; 2 * AMX_T]; AMX_T / 2]; 3],
) {
    assert!(mi <= AMX_T && ni <= AMX_T && (1..=3).contains(&pieces));
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
        // SAFETY: avx512f/bw were just detected; `tile` is 256 floats, `out` 3 × 256 u16
        // (at least `pieces * 256`), and `mi`, `ni`, `pieces` are in range (asserted).
        unsafe { tiles::pack_half16(tile.as_ptr(), mi, ni, pieces, out.as_mut_ptr().cast()) };
        return;
    }
    gemm::pack_amx_half(tile, mi, ni, pieces, out);
}

/// [`store_tile`] into f32 columns, transposed: with AVX-512 straight from the registers of
/// the transpose, one 64-byte (masked) store per output row; else through a transposed copy.
fn store_columns(
    tile: &[f32; 256],
    out: &mut ColumnPanel<'_>,
    rows: (usize, usize),
    cols: (usize, usize),
) {
    let ((m0, mi), (n, ni)) = (rows, cols);
    assert!(mi <= AMX_T && ni <= AMX_T, "more than a tile");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        let (dst, stride) = out.block_ptr(m0, mi, n, ni);
        // SAFETY: avx512f was just detected; `tile` is 256 floats; `block_ptr` checked that
        // rows `m0..m0 + mi`, columns `n..n + ni` lie inside the panel, which `&mut out`
        // holds exclusively, and the store writes exactly those (`mi`, `ni` ≤ 16).
        unsafe { tiles::transpose16_store(tile.as_ptr(), dst, stride, mi, ni) };
        return;
    }
    let mut t = [[0f32; AMX_T]; AMX_T];
    transpose16(tile, &mut t);
    for (j, col) in t.iter().take(mi).enumerate() {
        out.row_mut(m0 + j)[n..n + ni].copy_from_slice(&col[..ni]);
    }
}

thread_local! {
    /// The AMX kernel's aligned weight copy and C tiles, reused across calls on this thread
    /// (fresh large allocations page-fault).
    static AMX_SCRATCH: std::cell::Cell<(Vec<u16>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// `dst[j][i] = src[i * 16 + j]`: one 16 × 16 f32 tile transposed (AVX-512 shuffles where
/// available, else scalar).
pub fn transpose16(src: &[f32; 256], dst: &mut [[f32; 16]; 16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f was just detected; the function reads 256 floats from `src` and
        // writes 256 into `dst`, both whole arrays.
        unsafe { tiles::transpose16(src.as_ptr(), dst.as_mut_ptr().cast()) };
        return;
    }
    for (j, row) in dst.iter_mut().enumerate() {
        for (i, v) in row.iter_mut().enumerate() {
            *v = src[i * 16 + j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed store's register version gives the plain one's bits: every term count,
    /// partial rows and columns, and values at the edges of bf16 (NaN, infinities, the
    /// largest finite value, rounding ties, subnormals, signed zeros).
    #[test]
    fn pack_half_is_the_same_in_registers() {
        let edges = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x0000_0001),
            f32::from_bits(0x8040_0000),
            0.0,
            -0.0,
            1.0 / 3.0,
        ];
        let tile: [f32; 256] = std::array::from_fn(|i| match i % 19 {
            j if j < edges.len() => edges[j],
            j => (i as f32 - 128.0) * 1.000_123 * j as f32,
        });
        for pieces in 1..=3 {
            for (mi, ni) in [(16, 16), (5, 16), (16, 7), (1, 1), (0, 16)] {
                let mut want = [[[9u16; 32]; 8]; 3];
                gemm::pack_amx_half(&tile, mi, ni, pieces, &mut want);
                let mut got = [[[7u16; 32]; 8]; 3];
                pack_half(&tile, (mi, ni), pieces, &mut got);
                assert_eq!(
                    got[..pieces],
                    want[..pieces],
                    "{pieces} pieces, {mi} × {ni}"
                );
            }
        }
    }

    #[test]
    fn transpose16_transposes() {
        let src: [f32; 256] = std::array::from_fn(|i| i as f32);
        let mut dst = [[0f32; 16]; 16];
        transpose16(&src, &mut dst);
        for (j, row) in dst.iter().enumerate() {
            for (i, v) in row.iter().enumerate() {
                assert_eq!(*v, src[i * 16 + j], "({j},{i})");
            }
        }
    }
}
