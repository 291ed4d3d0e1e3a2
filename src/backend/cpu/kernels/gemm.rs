//! The activation layout of the AVX-512 GEMM kernels (`ffi::gemm_panel_*`): rows in tiles of
//! [`TILE_M`], each tile chunk by chunk ([`CHUNK`] columns), each row's chunk as two 16-float
//! vectors — its even and odd columns for bf16 weights (matching how the kernel widens a
//! 64-byte load of 32 bf16), or its first and last 16 columns for f32 weights. Columns past `k`
//! are zero. Packing costs one pass over the (small) activations per matmul and lets the
//! kernel read every weight byte exactly once per tile of activation rows.

/// Weight elements per kernel step (one 64-byte bf16 load).
pub const CHUNK: usize = 32;
/// Activation rows per packed tile (the kernel's widest register tile).
pub const TILE_M: usize = 8;

/// Floats in the packed layout of `m × k` activations (the last tile is allocated whole).
pub fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(TILE_M) * k.div_ceil(CHUNK) * TILE_M * CHUNK
}

/// Packs `x` (`m × k`, row-major) for the kernel; `bf16` selects the even/odd split.
pub fn pack(x: &[f32], m: usize, k: usize, bf16: bool, out: &mut Vec<f32>) {
    let chunks = k.div_ceil(CHUNK);
    out.clear();
    out.resize(packed_len(m, k), 0.0);
    let tile_len = chunks * TILE_M * CHUNK;
    for (t, tile) in out.chunks_exact_mut(tile_len).enumerate() {
        let r0 = t * TILE_M;
        let mt = (m - r0).min(TILE_M);
        for c in 0..chunks {
            let (c0, c1) = (c * CHUNK, ((c + 1) * CHUNK).min(k));
            for i in 0..mt {
                let src = &x[(r0 + i) * k + c0..(r0 + i) * k + c1];
                let dst = &mut tile[(c * mt + i) * CHUNK..(c * mt + i + 1) * CHUNK];
                if bf16 {
                    let (even, odd) = dst.split_at_mut(CHUNK / 2);
                    for (j, v) in src.iter().enumerate() {
                        if j % 2 == 0 {
                            even[j / 2] = *v;
                        } else {
                            odd[j / 2] = *v;
                        }
                    }
                } else {
                    dst[..src.len()].copy_from_slice(src);
                }
            }
        }
    }
}
