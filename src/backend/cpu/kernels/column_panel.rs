//! Disjoint writable column ranges of one row-major matrix ([`split_columns`],
//! [`ColumnPanel`]), or of one matrix in the AMX kernel's packed activation layout
//! ([`split_steps`], [`PackedSteps`]), so several threads can each write their own columns of
//! the same output (the AMX path writes its panels' results in place).
#![allow(unsafe_code)]

/// One writable column range of a row-major matrix, made by [`split_columns`]. The panels of
/// one split cover disjoint columns, so each may be written from its own thread.
pub struct ColumnPanel<'a> {
    base: *mut f32,
    rows: usize,
    stride: usize,
    first: usize,
    width: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a panel reaches only its own columns of a buffer that its split borrowed mutably for
// `'a`; no other panel of the split reaches them, so moving it to another thread races nothing.
unsafe impl Send for ColumnPanel<'_> {}

impl ColumnPanel<'_> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i` of this panel's columns.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        // SAFETY: `split_columns` checked that the buffer holds `rows × stride` floats and that
        // `first + width <= stride`, so the range is inside row `i`; it belongs to this panel
        // alone (panels of a split are disjoint) and `&mut self` makes it the only live slice
        // of the panel.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.add(i * self.stride + self.first), self.width)
        }
    }

    /// Where rows `i..i + rows`, columns `c..c + cols` of this panel start, and the row
    /// stride (floats): for a kernel's stores of a whole block (`unsafe` for the caller: the
    /// block is this panel's alone while `&mut self` is borrowed).
    pub fn block_ptr(&mut self, i: usize, rows: usize, c: usize, cols: usize) -> (*mut f32, usize) {
        assert!(
            i + rows <= self.rows && c + cols <= self.width,
            "block ({i}+{rows}, {c}+{cols}) outside {} × {}",
            self.rows,
            self.width
        );
        // `wrapping_add`: the address of an in-bounds element (checked above), no access.
        let p = self.base.wrapping_add(i * self.stride + self.first + c);
        (p, self.stride)
    }
}

/// Splits `out` (row-major, rows of `stride` floats) into consecutive column panels of the
/// given widths, from column 0; the widths must add up to at most `stride`.
pub fn split_columns(
    out: &mut [f32],
    stride: usize,
    widths: impl IntoIterator<Item = usize>,
) -> Vec<ColumnPanel<'_>> {
    assert!(
        stride > 0 && out.len().is_multiple_of(stride),
        "not whole rows"
    );
    let rows = out.len() / stride;
    let base = out.as_mut_ptr();
    let mut first = 0;
    let mut panels = Vec::new();
    for width in widths {
        assert!(first + width <= stride, "panels wider than the rows");
        panels.push(ColumnPanel {
            base,
            rows,
            stride,
            first,
            width,
            _out: std::marker::PhantomData,
        });
        first += width;
    }
    panels
}

/// Elements of one packed activation tile (16 rows × 32 bf16 columns, `gemm::pack_amx`).
const TILE: usize = 512;

/// One range of whole 32-column steps of an `m × k` matrix in the packed activation layout
/// of `gemm::pack_amx` (per 16-row block, per term, `k / 32` tiles), made by [`split_steps`];
/// the ranges of one split are disjoint, so each may be written from its own thread.
pub struct PackedSteps<'a> {
    base: *mut u16,
    rows: usize,
    pieces: usize,
    kb: usize,
    first: usize,
    steps: usize,
    _out: std::marker::PhantomData<&'a mut [u16]>,
}

// SAFETY: as for `ColumnPanel`: a range reaches only its own steps' tiles of a buffer its
// split borrowed mutably for `'a`, which no other range of the split reaches.
unsafe impl Send for PackedSteps<'_> {}

impl PackedSteps<'_> {
    /// The matrix's rows (`m`: its blocks hold `m.div_ceil(16)` × 16).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of this range (32 per step).
    pub fn width(&self) -> usize {
        self.steps * 32
    }

    /// Terms per value.
    pub fn pieces(&self) -> usize {
        self.pieces
    }

    /// The tile of row block `blk`, term `piece`, step `t` of this range.
    pub fn tile_mut(&mut self, blk: usize, piece: usize, t: usize) -> &mut [u16; TILE] {
        assert!(
            blk < self.rows.div_ceil(16) && piece < self.pieces && t < self.steps,
            "tile ({blk}, {piece}, {t}) outside {} blocks × {} terms × {} steps",
            self.rows.div_ceil(16),
            self.pieces,
            self.steps
        );
        let at = ((blk * self.pieces + piece) * self.kb + self.first + t) * TILE;
        // SAFETY: `split_steps` checked that the buffer holds every block's `pieces * kb`
        // tiles and that `first + steps <= kb`, so the tile is inside it; its step belongs to
        // this range alone and `&mut self` makes this the only live reference into the range.
        unsafe { &mut *self.base.add(at).cast::<[u16; TILE]>() }
    }
}

/// Splits `out`, an `m × k` matrix in `gemm::pack_amx`'s layout with `pieces` terms (`k` a
/// multiple of 32), into consecutive ranges of the given widths (multiples of 32 columns,
/// adding up to at most `k`), from column 0.
pub fn split_steps(
    out: &mut [u16],
    m: usize,
    k: usize,
    pieces: usize,
    widths: impl IntoIterator<Item = usize>,
) -> Vec<PackedSteps<'_>> {
    assert!(k.is_multiple_of(32), "k = {k} is not whole steps");
    let kb = k / 32;
    assert!(
        out.len() >= m.div_ceil(16) * pieces * kb * TILE,
        "packed buffer short"
    );
    let base = out.as_mut_ptr();
    let mut first = 0;
    let mut ranges = Vec::new();
    for width in widths {
        assert!(width.is_multiple_of(32), "width {width} is not whole steps");
        let steps = width / 32;
        assert!(first + steps <= kb, "ranges wider than the rows");
        ranges.push(PackedSteps {
            base,
            rows: m,
            pieces,
            kb,
            first,
            steps,
            _out: std::marker::PhantomData,
        });
        first += steps;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Column panels cover their own columns only, every row, and refuse to overrun.
    #[test]
    fn split_columns_hands_out_disjoint_columns() {
        let mut m = vec![0f32; 3 * 10];
        let mut panels = split_columns(&mut m, 10, [4, 5]);
        assert_eq!(panels.len(), 2);
        for (pi, p) in panels.iter_mut().enumerate() {
            assert_eq!(p.rows(), 3);
            for i in 0..3 {
                p.row_mut(i).fill((pi + 1) as f32);
            }
        }
        drop(panels);
        for row in m.chunks_exact(10) {
            assert_eq!(row, &[1., 1., 1., 1., 2., 2., 2., 2., 2., 0.]);
        }
        let wide = std::panic::catch_unwind(|| {
            let mut m = vec![0f32; 20];
            split_columns(&mut m, 10, [6, 5]).len()
        });
        assert!(wide.is_err(), "widths past the row are refused");
    }

    /// Step ranges reach their own tiles of every block and term, and refuse to overrun.
    #[test]
    fn split_steps_hands_out_disjoint_tiles() {
        let (m, k, pieces) = (20, 96, 2);
        let mut buf = vec![0u16; 2 * pieces * 3 * TILE];
        let mut ranges = split_steps(&mut buf, m, k, pieces, [64, 32]);
        for (ri, r) in ranges.iter_mut().enumerate() {
            for blk in 0..2 {
                for piece in 0..pieces {
                    for t in 0..r.width() / 32 {
                        r.tile_mut(blk, piece, t).fill((ri + 1) as u16);
                    }
                }
            }
        }
        drop(ranges);
        for (i, tile) in buf.chunks_exact(TILE).enumerate() {
            let want = if i % 3 < 2 { 1 } else { 2 };
            assert!(tile.iter().all(|&v| v == want), "tile {i}");
        }
        let wide = std::panic::catch_unwind(|| {
            let mut buf = vec![0u16; 2 * 3 * TILE];
            split_steps(&mut buf, 16, 96, 2, [64, 64]).len()
        });
        assert!(wide.is_err(), "widths past the rows are refused");
        let mut buf = vec![0u16; 3 * TILE];
        let mut r = split_steps(&mut buf, 16, 96, 1, [32]);
        let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            r[0].tile_mut(0, 0, 1)[0] = 1;
        }));
        assert!(past.is_err(), "a step outside the range is refused");
    }
}
