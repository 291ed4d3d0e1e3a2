//! Entering the portable kernels (`matmul`, `attend`, `silu_mul`, the AMX activation packing)
//! compiled for the CPU features detected at run time: each has an AVX-512 (and, but for the
//! packing, which only AMX machines run, an AVX2) instantiation behind `#[target_feature]`,
//! chosen by the (verified) [`SimdLevel`], and the plain build as the fallback.
#![allow(unsafe_code)]

use super::cpu_features::{verified, SimdLevel};
use super::gemm::AmxBlockPack;
use super::{AttendArgs, Fmt, PanelArgs};

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn panel_avx512<F: Fmt>(p: PanelArgs<'_, F>) {
    super::matmul_panel::<F, true>(p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_avx2<F: Fmt>(p: PanelArgs<'_, F>) {
    super::matmul_panel::<F, true>(p)
}

/// Runs one weight panel of a matmul with the best instruction set this CPU has.
pub fn matmul_panel<F: Fmt>(level: SimdLevel, p: PanelArgs<'_, F>) {
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { panel_avx512::<F>(p) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx2 only when avx2 and fma were detected.
        SimdLevel::Avx2 => unsafe { panel_avx2::<F>(p) },
        _ => super::matmul_panel::<F, false>(p),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn attend_avx512(a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    super::attend_group::<true>(a, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    super::attend_group::<true>(a, out, scratch)
}

/// Attention of one GQA group of query heads over its context, with the best instruction set
/// available.
pub fn attend_group(level: SimdLevel, a: AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { attend_avx512(a, out, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx2 only when avx2 and fma were detected.
        SimdLevel::Avx2 => unsafe { attend_avx2(a, out, scratch) },
        _ => super::attend_group::<false>(a, out, scratch),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn silu_mul_avx512(gate: &mut [f32], up: &[f32]) {
    super::silu_mul(gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(gate: &mut [f32], up: &[f32]) {
    super::silu_mul(gate, up)
}

/// `gate = silu(gate) * up`, element-wise, in the widest vectors this CPU has (the same
/// result at every level: the arithmetic has no fused steps for the wider build to contract).
pub fn silu_mul(level: SimdLevel, gate: &mut [f32], up: &[f32]) {
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { silu_mul_avx512(gate, up) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx2 only when avx2 and fma were detected.
        SimdLevel::Avx2 => unsafe { silu_mul_avx2(gate, up) },
        _ => super::silu_mul(gate, up),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn pack_amx_block_avx512(b: AmxBlockPack<'_>, block: &mut [u16]) {
    super::gemm::pack_amx_block(b, block)
}

/// One 16-row block of `gemm::pack_amx`, compiled for AVX-512 where the CPU has it (it does
/// wherever AMX runs); the same bits at every level (integer and exact f32 steps only).
pub fn pack_amx_block(level: SimdLevel, b: AmxBlockPack<'_>, block: &mut [u16]) {
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { pack_amx_block_avx512(b, block) },
        _ => super::gemm::pack_amx_block(b, block),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level gives the plain build's SiLU bit for bit (the wider builds only vectorize
    /// it), over signs, magnitudes up to the exponential's clamps, zeros and odd lengths.
    #[test]
    fn silu_mul_is_the_same_at_every_level() {
        let gate: Vec<f32> = (0..4099)
            .map(|i| {
                let t = i as f32 / 4099.0;
                (t - 0.5) * 240.0 * t.powi(3)
            })
            .chain([0.0, -0.0, 88.0, -88.0, 1e-30, -1e-30])
            .collect();
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 1.0 - (i % 13) as f32 / 6.5)
            .collect();
        let mut want = gate.clone();
        super::super::silu_mul(&mut want, &up);
        assert!(want.iter().all(|v| v.is_finite()));
        for level in [
            SimdLevel::Portable,
            SimdLevel::Avx2,
            crate::backend::cpu::knobs::level_from_process_env(),
        ] {
            let mut got = gate.clone();
            silu_mul(level, &mut got, &up);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "{level:?} at {i}: {g} vs {w}");
            }
        }
    }

    /// The AMX activation packing gives the same bits compiled for AVX-512 as in the plain
    /// build, for one to three terms, a partial last block and a ragged last column step.
    #[test]
    fn pack_amx_block_is_the_same_at_every_level() {
        let (m, k): (usize, usize) = (21, 70);
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0 + 1e-7 * i as f32)
            .collect();
        let kb = k.div_ceil(32);
        for pieces in 1..=3 {
            for blk in 0..m.div_ceil(16) {
                let b = AmxBlockPack {
                    x: &x,
                    m,
                    k,
                    pieces,
                    blk,
                };
                let mut want = vec![1u16; pieces * kb * 512];
                super::super::gemm::pack_amx_block(b, &mut want);
                let mut got = vec![2u16; pieces * kb * 512];
                pack_amx_block(
                    crate::backend::cpu::knobs::level_from_process_env(),
                    b,
                    &mut got,
                );
                assert_eq!(got, want, "{pieces} pieces, block {blk}");
            }
        }
    }
}
