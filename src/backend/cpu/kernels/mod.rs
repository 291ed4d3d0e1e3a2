//! Numeric kernels of the CPU backend. Most are safe Rust written so LLVM vectorizes them
//! (fixed-width lane arrays over exact chunks); activations and accumulation are always f32;
//! weights are read in their stored format ([`Fmt`]) and widened in registers.
//!
//! - [`matmul`]: `y = x · Wᵀ` over all packed tokens, one pass over the weight (the portable and
//!   AVX2 path, and f16 weights; with AVX-512, f32/bf16 weights use the intrinsic kernels in
//!   [`avx512`] and [`amx`] instead).
//! - [`gemm`]: the packed activation layouts those AVX-512 and AMX kernels read.
//! - [`attend`]: the query heads of one KV head against a paged context (scores, softmax,
//!   weighted values), each key and value read once for the group.
//! - [`cpu_features`]: what this CPU has ([`SimdLevel`], AVX-512 BF16, AMX);
//!   [`dispatch`]: `matmul` and `attend` entered compiled for that level.
//! - [`avx512`]: the AVX-512 GEMM micro-kernels (intrinsics); [`amx`]: the AMX BF16 tile
//!   kernel (inline `asm!`); [`column_panel`]: disjoint output columns written from several
//!   threads. These, `cpu_features` and `dispatch` hold the module's `unsafe`.
//! - this file: weight formats and the small element-wise kernels (RMSNorm, RoPE, SiLU).

pub mod amx;
mod attend;
pub mod avx512;
pub mod column_panel;
pub mod cpu_features;
pub mod dispatch;
pub mod gemm;
mod matmul;

pub use attend::{attend_group, AttendArgs};
pub use cpu_features::{detected_level, has_amx, has_avx512_bf16, SimdLevel};
pub use matmul::{matmul_panel, PanelArgs};

use super::pod::Pod;

/// How many steps (1 KiB tiles) ahead the kernels over tiled weights (`weights::Bf16Tiles`:
/// the AMX kernel and the AVX-512 one-row kernel) prefetch each block's stream into L2 and
/// into L1. Chosen on the decode bench (L2: 12–96, L1: 0–4 tried; batch-1 and concurrency-16
/// steps): without them the hardware prefetcher alone left batch-1 decode ~30 % and the
/// concurrency-16 step ~8 % slower.
pub const TILES_PREFETCH_L2: usize = 24;
pub const TILES_PREFETCH_L1: usize = 2;

/// Lane count of the vector accumulators (one AVX-512 register of f32).
pub const LANES: usize = 16;

/// A stored weight element format, widened to f32 on use.
pub trait Fmt: Send + Sync + 'static {
    type Raw: Pod;
    const IS_F32: bool;
    fn to_f32(r: Self::Raw) -> f32;
}

/// IEEE f32 weights.
pub struct F32;
/// bfloat16 weights (the upper half of an f32).
pub struct Bf16;
/// IEEE binary16 weights.
pub struct F16;

impl Fmt for F32 {
    type Raw = f32;
    const IS_F32: bool = true;
    #[inline(always)]
    fn to_f32(r: f32) -> f32 {
        r
    }
}

impl Fmt for Bf16 {
    type Raw = u16;
    const IS_F32: bool = false;
    #[inline(always)]
    fn to_f32(r: u16) -> f32 {
        bf16_to_f32(r)
    }
}

impl Fmt for F16 {
    type Raw = u16;
    const IS_F32: bool = false;
    #[inline(always)]
    fn to_f32(r: u16) -> f32 {
        f16_to_f32(r)
    }
}

#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 → bf16 bits, rounding to nearest, ties to even (NaN stays a quiet NaN of its sign).
#[inline(always)]
pub fn f32_to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// binary16 → f32, exact for every input (normals, subnormals, zeros, infinities, NaN), written
/// with selects instead of branches so it vectorizes.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let shifted = (h & 0x7fff) << 13;
    let exp = shifted & (0x7c00 << 13);
    let normal = shifted + ((127 - 15) << 23);
    // Inf/NaN: push the exponent to all ones.
    let inf_nan = normal + ((128 - 16) << 23);
    // Zero/subnormal: renormalise through a float subtraction.
    let sub = f32::from_bits(normal + (1 << 23)) - f32::from_bits(113 << 23);
    let bits = if exp == (0x7c00 << 13) {
        inf_nan
    } else if exp == 0 {
        sub.to_bits()
    } else {
        normal
    };
    f32::from_bits(bits | sign)
}

#[inline(always)]
pub fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Pairwise sum of one lane array (fixed order, so results are reproducible). Takes the array
/// by value: a reference would let the accumulator escape and pin it to memory in hot loops.
#[inline(always)]
pub fn hsum(acc: [f32; LANES]) -> f32 {
    let mut v = acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// `out = x / rms(x) * weight`, as HF's RMSNorm computes it in f32.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = [0f32; LANES];
    let chunks = x.len() / LANES;
    for c in 0..chunks {
        let xs = &x[c * LANES..(c + 1) * LANES];
        for l in 0..LANES {
            acc[l] += xs[l] * xs[l];
        }
    }
    let mut ss = hsum(acc);
    for v in &x[chunks * LANES..] {
        ss += v * v;
    }
    let mean = ss / x.len().max(1) as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inv);
    }
}

/// Rotates one head vector in place (HF "rotate_half" layout: pairs `i` and `i + d/2`).
pub fn rope_rotate(v: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = v.len() / 2;
    let (lo, hi) = v.split_at_mut(half);
    for (((a, b), c), s) in lo.iter_mut().zip(hi.iter_mut()).zip(cos).zip(sin) {
        let (x0, x1) = (*a, *b);
        *a = x0 * c - x1 * s;
        *b = x1 * c + x0 * s;
    }
}

/// `gate = silu(gate) * up`, element-wise (the plain build; `dispatch::silu_mul` enters it
/// compiled for the detected instruction set, with the same arithmetic: no fused operations).
#[inline(always)]
pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        let x = *g;
        *g = x / (1.0 + exp(-x)) * u;
    }
}

/// `e^x` in straight-line f32 arithmetic that LLVM vectorizes (libm's `expf` is a call per
/// element): `x = n·ln2 + r` with `|r| ≤ ln2/2` (ln2 split in two so `n·ln2` is exact), a
/// degree-7 Taylor polynomial for `e^r` (truncation error < 2⁻²⁴ relative), and `2ⁿ` built in
/// the exponent bits. Within 2 ulp of the exact value over the normal range; below `-87.3`
/// it returns `e^-87.3` (≈1e-38, where the true value would be subnormal or zero) and above
/// `88.7` infinity; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 to 16 bits: n · LN2_HI is exact for |n| < 2⁸
    const LN2_LO: f32 = 1.428_606_8e-6; // ln 2 − LN2_HI
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³: adding it rounds to an integer
    let over = x > 88.7;
    let x = if x < -87.3 {
        -87.3
    } else if over {
        0.0
    } else {
        x
    }; // (NaN stays NaN)
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // `2ⁿ` from `shifted`'s bits, whose mantissa holds `n` (|n| ≤ 128 ≪ 2²²) over the bits
    // of `ROUND`: integer steps that vectorize (a float-to-int `as` saturates, which LLVM
    // turns into one scalar conversion per lane).
    let two_n = (shifted.to_bits())
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127)
        << 23;
    let e = p * f32::from_bits(two_n);
    if over {
        f32::INFINITY
    } else {
        e
    }
}

/// Sum of `v` with lane accumulators (fixed order, so results are reproducible).
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    hsum(acc) + tail
}

/// `acc += x`, element-wise.
pub fn add_in_place(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Widens a row of stored weights into f32.
pub fn widen_row<F: Fmt>(src: &[F::Raw], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = F::to_f32(*s);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_within_two_ulp_of_f64() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = super::exp(x) as f64;
            let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.000_97;
        }
        assert!(worst <= 2.0, "worst {worst} ulp");
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(100.0), f32::INFINITY);
        assert!(super::exp(-1000.0) < 1e-37);
        assert!(super::exp(f32::NAN).is_nan());
        assert_eq!(super::exp(f32::NEG_INFINITY), super::exp(-87.3));
    }

    use super::*;

    #[test]
    fn f16_conversion_is_exact() {
        let cases: [(u16, f32); 8] = [
            (0x0000, 0.0),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x7bff, 65504.0),
            (0x0001, 5.960_464_5e-8),
            (0x03ff, 6.097_555e-5),
            (0x3555, 0.333_251_95),
            (0x7c00, f32::INFINITY),
        ];
        for (h, f) in cases {
            assert_eq!(f16_to_f32(h), f, "{h:#06x}");
        }
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn bf16_conversion_is_the_upper_half() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn f32_to_bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-3.0), 0xc040);
        // Halfway cases go to the even neighbour; above halfway rounds up.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn rms_norm_unit_weight() {
        let x = [3.0f32, 4.0];
        let mut out = [0f32; 2];
        rms_norm(&x, &[1.0, 1.0], 0.0, &mut out);
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] - 4.0 / r).abs() < 1e-6);
    }
}
