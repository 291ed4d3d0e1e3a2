//! The activation layout of the AVX-512 GEMM kernels (`avx512::gemm_panel_*`): rows in tiles of
//! [`TILE_M`], each tile chunk by chunk ([`CHUNK`] columns), each row's chunk as two 16-float
//! vectors — its even and odd columns for bf16 weights (matching how the kernel widens a
//! 64-byte load of 32 bf16), or its first and last 16 columns for f32 weights. Columns past `k`
//! are zero. Packing costs one pass over the (small) activations per matmul and lets the
//! kernel read every weight byte exactly once per tile of activation rows.
//!
//! The opt-in dot-product kernel (`avx512::gemm_panel_bf16_dot`, `MINDIE_CPU_BF16_DOT`) reads the
//! same tile / chunk / row order, but each row's chunk is its 32 columns rounded to bf16
//! ([`pack_bf16`]), in natural order: `vdpbf16ps` multiplies adjacent pairs, exactly as a
//! 64-byte load of the weight row holds them.

use rayon::prelude::*;

use super::{bf16_to_f32, f32_to_bf16, SimdLevel};

/// Weight elements per kernel step (one 64-byte bf16 load).
pub const CHUNK: usize = 32;
/// Activation rows per packed tile (the kernel's widest register tile).
pub const TILE_M: usize = 8;

/// Floats in the packed layout of `m × k` activations (the last tile is allocated whole).
pub fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(TILE_M) * k.div_ceil(CHUNK) * TILE_M * CHUNK
}

/// Elements a buffer needs for [`aligned64`] to find `len` of them on a 64-byte boundary (a
/// caller that allocates the buffer itself sizes it with this, so `aligned64` never grows it).
pub fn aligned64_room<T>(len: usize) -> usize {
    len + 64 / std::mem::size_of::<T>()
}

/// `len` elements of `v` starting on a 64-byte boundary (a 64-byte vector or tile row that
/// straddles two cache lines costs two loads). `v` grows as needed; the contents are stale.
pub fn aligned64<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    let room = aligned64_room::<T>(len);
    if v.len() < room {
        v.resize(room, T::default());
    }
    let skip = v.as_ptr().align_offset(64).min(room - len);
    &mut v[skip..skip + len]
}

/// The tile / chunk / row walk shared by [`pack`] and [`pack_bf16`]: `chunk(src, dst)` writes
/// one row's chunk (`src`, up to [`CHUNK`] columns) into its [`CHUNK`]-wide slot; everything
/// else is zero.
fn pack_tiles<'a, T: Copy + Default>(
    x: &[f32],
    m: usize,
    k: usize,
    out: &'a mut Vec<T>,
    chunk: impl Fn(&[f32], &mut [T]),
) -> &'a [T] {
    let chunks = k.div_ceil(CHUNK);
    let packed = aligned64(out, packed_len(m, k));
    packed.fill(T::default());
    let tile_len = chunks * TILE_M * CHUNK;
    for (t, tile) in packed.chunks_exact_mut(tile_len).enumerate() {
        let r0 = t * TILE_M;
        let mt = (m - r0).min(TILE_M);
        for c in 0..chunks {
            let (c0, c1) = (c * CHUNK, ((c + 1) * CHUNK).min(k));
            for i in 0..mt {
                let src = &x[(r0 + i) * k + c0..(r0 + i) * k + c1];
                chunk(
                    src,
                    &mut tile[(c * mt + i) * CHUNK..(c * mt + i + 1) * CHUNK],
                );
            }
        }
    }
    packed
}

/// Packs `x` (`m × k`, row-major) for the kernel; `bf16` selects the even/odd split. Returns
/// the packed layout, which starts on a 64-byte boundary inside `out` (a 64-byte vector load
/// that straddles two cache lines costs two).
pub fn pack<'a>(x: &[f32], m: usize, k: usize, bf16: bool, out: &'a mut Vec<f32>) -> &'a [f32] {
    pack_tiles(x, m, k, out, |src, dst| {
        if bf16 {
            let (even, odd) = dst.split_at_mut(CHUNK / 2);
            let pairs = src.chunks_exact(2);
            if let [last] = pairs.remainder() {
                even[src.len() / 2] = *last;
            }
            for ((e, o), p) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                *e = p[0];
                *o = p[1];
            }
        } else {
            dst[..src.len()].copy_from_slice(src);
        }
    })
}

/// Packs `x` (`m × k`, row-major) for the dot-product kernel: the layout of [`pack`] (same
/// tiles, chunks and row order, `packed_len` elements) with each column rounded to bf16
/// (round-to-nearest-even) in natural order. Starts on a 64-byte boundary inside `out`.
pub fn pack_bf16<'a>(x: &[f32], m: usize, k: usize, out: &'a mut Vec<u16>) -> &'a [u16] {
    pack_tiles(x, m, k, out, |src, dst| {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = f32_to_bf16(*v);
        }
    })
}

/// Floats of [`pack_pairs`]'s layout of `m × k`.
pub fn pairs_packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(16) * k.div_ceil(CHUNK) * PAIRS_STEP
}

/// Floats of one 32-column step of one 16-row block in [`pack_pairs`]'s layout.
pub const PAIRS_STEP: usize = 16 * CHUNK;

/// Packs `x` (`m × k`, row-major) as f32 for the broadcast form of the exact AVX-512 kernel
/// (`avx512::gemm_panel_tiles_bcast_exact`): blocks of 16 rows, each
/// `k.div_ceil(32)` steps of 32 columns; within a step, for each column pair `q` (0..16), the
/// block's 16 values of column `2q` then its 16 of column `2q + 1` (two vectors, one lane per
/// row), zeros past `m` and `k`. Starts on a 64-byte boundary inside `out`.
pub fn pack_pairs<'a>(x: &[f32], m: usize, k: usize, out: &'a mut Vec<f32>) -> &'a [f32] {
    let kb = k.div_ceil(CHUNK);
    let packed = aligned64(out, pairs_packed_len(m, k));
    packed
        .par_chunks_exact_mut(kb * PAIRS_STEP)
        .enumerate()
        .for_each(|(blk, block)| {
            block.fill(0.0);
            for l in 0..16.min(m.saturating_sub(blk * 16)) {
                let row = &x[(blk * 16 + l) * k..][..k];
                for (c, step) in block.chunks_exact_mut(PAIRS_STEP).enumerate() {
                    let src = &row[c * CHUNK..k.min(c * CHUNK + CHUNK)];
                    for (col, v) in src.iter().enumerate() {
                        step[col / 2 * 32 + col % 2 * 16 + l] = *v;
                    }
                }
            }
        });
    packed
}

/// Elements of the AMX packed layout of `m × k` with `pieces` terms per value (see
/// [`pack_amx`]).
pub fn amx_packed_len(m: usize, k: usize, pieces: usize) -> usize {
    m.div_ceil(16) * pieces * k.div_ceil(32) * 512
}

/// Packs `x` (`m × k`) for the AMX kernel (`amx::gemm_panel_amx`) as `pieces` bf16 terms per
/// value: 1 is the value rounded to bf16 (nearest, ties to even); 2 are that and the rest
/// `v - hi` rounded likewise (16 significant bits: within 2⁻¹⁷ of the value, relative); 3 are `hi = trunc(v)`,
/// `mid = trunc(v - hi)`, `lo = v - hi - mid` (truncated to bf16, exactly), whose sum is the
/// f32 exactly (each difference is exact in f32 and 8 bits shorter), so the kernel's
/// products sum to the f32 activation's.
///
/// Layout: blocks of 16 rows; each block holds, piece by piece, `k / 32` tiles (zero-padded)
/// of 16 column pairs × 16 rows × 2, i.e. tile row `p` holds, for each of the 16 rows, its
/// columns `2p` and `2p + 1` (the "VNNI" B layout of `tdpbf16ps`). Starts on a 64-byte
/// boundary inside `out`.
pub fn pack_amx<'a>(
    x: &[f32],
    m: usize,
    k: usize,
    pieces: usize,
    out: &'a mut Vec<u16>,
) -> &'a [u16] {
    assert!((1..=3).contains(&pieces), "1 to 3 pieces");
    let kb = k.div_ceil(32);
    // Every element below is written (padding as zeros), so a reused buffer needs no clearing.
    let packed = aligned64(out, amx_packed_len(m, k, pieces));
    // (AMX implies AVX-512: the block packing is entered compiled for it, where its loops
    // vectorize 16 lanes wide.)
    packed
        .par_chunks_exact_mut(pieces * kb * 512)
        .enumerate()
        .for_each(|(blk, block)| {
            let b = AmxBlockPack {
                x,
                m,
                k,
                pieces,
                blk,
            };
            super::dispatch::pack_amx_block(SimdLevel::Avx512, b, block)
        });
    packed
}

/// The `pieces` bf16 terms of each lane of `v` as [`pack_amx`] splits values (`terms[p]`: term
/// `p`): 1, the value rounded to nearest even; 2, that and the rounded rest; 3, truncations
/// whose sum is the f32 exactly (each residual is exact in f32 and has 8 fewer significant
/// bits, so three terms hold all 24). `v` is used up as scratch.
#[inline(always)]
fn split_terms<const N: usize>(v: &mut [f32; N], pieces: usize, terms: &mut [[u16; N]; 3]) {
    match pieces {
        1 => {
            for (d, x) in terms[0].iter_mut().zip(v.iter()) {
                *d = f32_to_bf16(*x);
            }
        }
        2 => {
            let (hi, lo) = terms.split_at_mut(1);
            for ((h, l), x) in hi[0].iter_mut().zip(&mut lo[0]).zip(v.iter()) {
                *h = f32_to_bf16(*x);
                *l = f32_to_bf16(*x - bf16_to_f32(*h));
            }
        }
        _ => {
            for term in terms.iter_mut() {
                for (d, x) in term.iter_mut().zip(v.iter_mut()) {
                    let bits = x.to_bits();
                    *d = (bits >> 16) as u16;
                    *x -= f32::from_bits(bits & 0xffff_0000);
                }
            }
        }
    }
}

/// Half a step of [`pack_amx`]'s layout from a finished AMX C tile (`tile`: row `u` = output
/// column `u`, column `r` = output row `r`, 16 × 16): `out[piece][q]` is tile row `q` of that
/// half for term `piece`, holding columns `2q`, `2q + 1` of each row `r` at `2r`, `2r + 1` —
/// the terms [`pack_amx`] splits each value into, zeros for rows `r >= mi` and columns
/// `u >= ni` (its padding). The AMX kernel's stores use the same split in AVX-512 registers
/// (`amx::tiles::pack_half16`); this is the reference they are tested against.
#[inline(always)]
pub(super) fn pack_amx_half(
    tile: &[f32; 256],
    mi: usize,
    ni: usize,
    pieces: usize,
    out: &mut [[[u16; 32]; 8]; 3],
) {
    for q in 0..8 {
        let mut v = [[0f32; 16]; 2];
        for (c, lanes) in v.iter_mut().enumerate() {
            let unit = 2 * q + c;
            for (r, l) in lanes.iter_mut().enumerate() {
                let keep = r < mi && unit < ni;
                *l = if keep { tile[unit * 16 + r] } else { 0.0 };
            }
        }
        // [column of the pair][piece][row]
        let mut terms = [[[0u16; 16]; 3]; 2];
        for (lanes, t) in v.iter_mut().zip(&mut terms) {
            split_terms(lanes, pieces, t);
        }
        for (piece, o) in out.iter_mut().enumerate().take(pieces) {
            for r in 0..16 {
                o[q][2 * r] = terms[0][piece][r];
                o[q][2 * r + 1] = terms[1][piece][r];
            }
        }
    }
}

/// One 16-row block of [`pack_amx`]: which rows of which activations, and how many terms.
#[derive(Clone, Copy)]
pub struct AmxBlockPack<'a> {
    pub x: &'a [f32],
    pub m: usize,
    pub k: usize,
    pub pieces: usize,
    /// The block's index (rows `16 * blk ..`).
    pub blk: usize,
}

/// Writes block `b.blk` of [`pack_amx`]'s layout into `block` (`pieces * k/32` tiles).
#[inline(always)]
pub(super) fn pack_amx_block(b: AmxBlockPack<'_>, block: &mut [u16]) {
    let AmxBlockPack {
        x,
        m,
        k,
        pieces,
        blk,
    } = b;
    let kb = k.div_ceil(32);
    // [row][piece][column] of one 32-column step, then written tile row by tile row.
    let mut split = [[[0u16; 32]; 3]; 16];
    for t in 0..kb {
        for r in 0..16 {
            let mut rest = [0f32; 32];
            if blk * 16 + r < m {
                let row = &x[(blk * 16 + r) * k..][..k];
                let src = &row[t * 32..k.min(t * 32 + 32)];
                // A whole step as a fixed-size copy (inline vector moves; a slice copy of
                // run-time length is a `memmove` call, ~9 % of a down_proj-shaped matmul).
                match <&[f32; 32]>::try_from(src) {
                    Ok(whole) => rest = *whole,
                    _ => rest[..src.len()].copy_from_slice(src),
                }
            }
            split_terms(&mut rest, pieces, &mut split[r]);
        }
        for piece in 0..pieces {
            let tile = &mut block[(piece * kb + t) * 512..][..512];
            for (pair, dst) in tile.chunks_exact_mut(32).enumerate() {
                for (r, d) in dst.chunks_exact_mut(2).enumerate() {
                    d[0] = split[r][piece][2 * pair];
                    d[1] = split[r][piece][2 * pair + 1];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_dot_pack_rounds_in_natural_order_and_zero_pads() {
        let (m, k) = (9, 35);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
        let mut buf = Vec::new();
        let p = pack_bf16(&x, m, k, &mut buf);
        assert_eq!(p.len(), packed_len(m, k));
        assert_eq!(p.as_ptr() as usize % 64, 0);
        let b = |v: f32| f32_to_bf16(v);
        // Row 0, chunk 0: columns in order; row 1 follows.
        assert_eq!(p[0..3], [b(0.0), b(1.0), b(2.0)]);
        assert_eq!(p[CHUNK], b(k as f32));
        // Row 0, chunk 1 (columns 32..35), zeros after.
        let c1 = TILE_M * CHUNK;
        assert_eq!(p[c1..c1 + 4], [b(32.0), b(33.0), b(34.0), 0]);
        // Row 8 is alone in the second tile.
        assert_eq!(p[2 * TILE_M * CHUNK], b((8 * k) as f32));
    }

    /// `pack_pairs`: per 16-row block and 32-column step, each column pair as the block's 16
    /// values of the even column then of the odd one; zeros past the rows and columns (even a
    /// buffer reused with other values); no room between steps (every float of the layout is
    /// a value or padding of the rows and columns: the kernel streams all of it).
    #[test]
    fn pairs_pack_puts_rows_in_lanes_and_zero_pads() {
        let (m, k) = (17, 35);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32 + 0.5).collect();
        let mut buf = vec![7.0f32; 3 * pairs_packed_len(m, k)];
        let p = pack_pairs(&x, m, k, &mut buf);
        assert_eq!(
            PAIRS_STEP,
            16 * 32,
            "one step: 16 rows × 32 columns, nothing more"
        );
        assert_eq!(p.len(), 2 * 2 * PAIRS_STEP);
        assert_eq!(p.as_ptr() as usize % 64, 0);
        for blk in 0..2 {
            for c in 0..2 {
                for q in 0..16 {
                    for par in 0..2 {
                        for l in 0..16 {
                            let (row, col) = (blk * 16 + l, c * 32 + 2 * q + par);
                            let want = if row < m && col < k {
                                x[row * k + col]
                            } else {
                                0.0
                            };
                            let at = (blk * 2 + c) * PAIRS_STEP + q * 32 + par * 16 + l;
                            assert_eq!(p[at], want, "row {row} column {col}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_pack_splits_even_and_odd_columns_and_zero_pads() {
        let (m, k) = (9, 35);
        let x: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
        let mut buf = Vec::new();
        let p = pack(&x, m, k, true, &mut buf);
        assert_eq!(p.len(), packed_len(m, k));
        assert_eq!(p.as_ptr() as usize % 64, 0);
        let tile_len = 2 * TILE_M * CHUNK;
        // Row 0, chunk 0: even then odd columns.
        assert_eq!(p[0..3], [0.0, 2.0, 4.0]);
        assert_eq!(p[16..19], [1.0, 3.0, 5.0]);
        // Row 0, chunk 1 (columns 32..35): 32, 34 even; 33 odd; zeros after.
        let c1 = TILE_M * CHUNK;
        assert_eq!(p[c1..c1 + 3], [32.0, 34.0, 0.0]);
        assert_eq!(p[c1 + 16..c1 + 18], [33.0, 0.0]);
        // Row 8 is alone in the second tile.
        assert_eq!(p[tile_len], (8 * k) as f32);
        assert_eq!(p[tile_len + CHUNK], (8 * k + 32) as f32);
    }

    /// Two terms of `pack_amx`: the rounded value and the rounded rest, within 2⁻¹⁷ of the f32.
    #[test]
    fn amx_two_pieces_hold_sixteen_bits() {
        use crate::backend::cpu::kernels::bf16_to_f32;
        let (m, k) = (17, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.000_123_4 / 7.0)
            .collect();
        let mut buf = Vec::new();
        let p = pack_amx(&x, m, k, 2, &mut buf).to_vec();
        let kb = k.div_ceil(32);
        for (i, row) in x.chunks_exact(k).enumerate() {
            let (blk, r) = (i / 16, i % 16);
            for (c, v) in row.iter().enumerate() {
                let at = |piece: usize| {
                    let t = blk * 2 * kb + piece * kb + c / 32;
                    bf16_to_f32(p[t * 512 + (c % 32 / 2) * 32 + r * 2 + c % 2])
                };
                let (hi, lo) = (at(0), at(1));
                assert_eq!(hi, bf16_to_f32(f32_to_bf16(*v)), "row {i} col {c}");
                let err = (hi as f64 + lo as f64 - *v as f64).abs();
                assert!(err <= v.abs() as f64 * 2f64.powi(-17), "row {i} col {c}");
            }
        }
    }

    /// The three bf16 terms of `pack_amx` sum back to every f32 exactly.
    #[test]
    fn amx_pieces_sum_to_the_f32() {
        use crate::backend::cpu::kernels::bf16_to_f32;
        let (m, k) = (17, 40);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.000_123_4 / 7.0)
            .collect();
        let mut buf = Vec::new();
        let p = pack_amx(&x, m, k, 3, &mut buf).to_vec();
        let kb = k.div_ceil(32);
        for (i, row) in x.chunks_exact(k).enumerate() {
            let (blk, r) = (i / 16, i % 16);
            for (c, v) in row.iter().enumerate() {
                let at = |piece: usize| {
                    let t = blk * 3 * kb + piece * kb + c / 32;
                    bf16_to_f32(p[t * 512 + (c % 32 / 2) * 32 + r * 2 + c % 2])
                };
                let (hi, mid, lo) = (at(0), at(1), at(2));
                assert_eq!(hi + (mid + lo), *v, "row {i} col {c}");
            }
        }
    }
}
