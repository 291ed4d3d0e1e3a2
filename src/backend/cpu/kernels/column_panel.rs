//! Disjoint writable column ranges of one row-major matrix ([`split_columns`],
//! [`ColumnPanel`]), so several threads can each write their own columns of the same output
//! (the AMX path writes its panels' results in place).
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
}
