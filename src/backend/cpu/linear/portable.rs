//! The portable path of the linear layers (any CPU, any weight dtype; f16 weights always): the
//! matmul micro-kernel of `kernels::matmul`, entered at the detected level
//! (`kernels::dispatch`), panel by panel over the pool into a transposed buffer.

use rayon::prelude::*;

use super::PARALLEL_MIN_MACS;
use crate::backend::cpu::kernels::{dispatch, Fmt, PanelArgs, SimdLevel};

pub(super) fn run<F: Fmt>(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    w: &[F::Raw],
    out: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    if m == 1 {
        panels::<F>(level, x, m, k, w, &mut out[..n]);
        return;
    }
    let mut out_t = vec![0f32; n * m];
    panels::<F>(level, x, m, k, w, &mut out_t);
    for (j, col) in out_t.chunks_exact(m).enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[i * n + j] = *v;
        }
    }
}

/// Fills `out_t` (`n × m`, transposed) panel by panel, in parallel when worth it.
fn panels<F: Fmt>(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    k: usize,
    w: &[F::Raw],
    out_t: &mut [f32],
) {
    let n = out_t.len() / m;
    let threads = rayon::current_num_threads().max(1);
    if m * n * k < PARALLEL_MIN_MACS || threads == 1 {
        let (mut scratch, mut xpack) = (Vec::new(), Vec::new());
        let p = PanelArgs::<F> {
            x,
            m,
            k,
            w: &w[..n * k],
            out_t,
            scratch: &mut scratch,
            xpack: &mut xpack,
        };
        dispatch::matmul_panel::<F>(level, p);
    } else {
        // Several panels per thread for balance, each a multiple of the 4-row register tile.
        let rows = n.div_ceil(threads * 4).next_multiple_of(4).max(4);
        out_t
            .par_chunks_mut(rows * m)
            .zip(w[..n * k].par_chunks(rows * k))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |(scratch, xpack), (o, wp)| {
                    let p = PanelArgs::<F> {
                        x,
                        m,
                        k,
                        w: wp,
                        out_t: o,
                        scratch,
                        xpack,
                    };
                    dispatch::matmul_panel::<F>(level, p);
                },
            );
    }
}
