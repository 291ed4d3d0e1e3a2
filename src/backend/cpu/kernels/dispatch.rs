//! Entering the portable kernels (`matmul`, `attend`) compiled for the CPU features detected
//! at run time: each has an AVX-512 and an AVX2 instantiation behind `#[target_feature]`,
//! chosen by the (verified) [`SimdLevel`], and the plain build as the fallback.
#![allow(unsafe_code)]

use super::cpu_features::{verified, SimdLevel};
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
