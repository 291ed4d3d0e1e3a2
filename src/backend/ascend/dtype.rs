//! The dtype the model runs in on the device, and host-side encoding of checkpoint tensors
//! into it. bf16/fp16 checkpoints run as stored; f32 checkpoints are converted to bf16 (the
//! NPU's attention and KV operators take only bf16/fp16). `MINDIE_ASCEND_DTYPE` overrides:
//! `bf16`, `fp16`, or `f32` (everything widened to f32: accepted only by the emulated CANN's
//! f32 mode, for tight numerical checks; a real NPU refuses f32 attention).

use crate::backend::cpu::weights::WeightData;
use crate::backend::cpu::{bf16_to_f32, f16_to_f32, f32_to_bf16};
use crate::backend::{BackendError, DType};

use super::ffi::meta::AclDType;

/// Names the override variable.
pub const DTYPE_ENV: &str = "MINDIE_ASCEND_DTYPE";

/// `MINDIE_ASCEND_DTYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtypeChoice {
    /// As stored; f32 → bf16.
    #[default]
    Auto,
    Fixed(DType),
}

impl DtypeChoice {
    pub fn parse(v: Option<&str>) -> Result<DtypeChoice, String> {
        match v.map(str::trim) {
            None | Some("") | Some("auto") => Ok(DtypeChoice::Auto),
            Some("bf16" | "bfloat16") => Ok(DtypeChoice::Fixed(DType::BF16)),
            Some("fp16" | "float16" | "f16") => Ok(DtypeChoice::Fixed(DType::F16)),
            Some("f32" | "fp32" | "float32") => Ok(DtypeChoice::Fixed(DType::F32)),
            Some(other) => Err(format!(
                "{DTYPE_ENV} = {other:?}: expected auto, bf16, fp16 or f32"
            )),
        }
    }

    /// The compute dtype for a checkpoint stored as `stored`.
    pub fn resolve(self, stored: DType) -> DType {
        match self {
            DtypeChoice::Fixed(d) => d,
            DtypeChoice::Auto if stored == DType::F16 => DType::F16,
            DtypeChoice::Auto => DType::BF16,
        }
    }
}

pub fn acl(d: DType) -> AclDType {
    match d {
        DType::F32 => AclDType::F32,
        DType::BF16 => AclDType::Bf16,
        DType::F16 => AclDType::F16,
    }
}

/// f32 → binary16 bits, round to nearest even (overflow → ±inf, NaN kept).
pub fn f32_to_f16(v: f32) -> u16 {
    let b = v.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal: shift the full significand (with its hidden bit) into place.
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let rest = m & ((1 << shift) - 1);
        let mut out = m >> shift;
        if rest > half || (rest == half && out & 1 == 1) {
            out += 1;
        }
        return sign | out as u16;
    }
    let mut out = ((e as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && out & 1 == 1) {
        out += 1; // may carry into the exponent (→ inf): still correct
    }
    sign | out as u16
}

/// The block `rows × cols` of a row-major matrix with `width` columns, in `to`'s encoding
/// (little-endian). The conversion is chosen once, and each row's slice is encoded as a whole
/// (bits copied when the dtypes agree).
pub fn encode_block(
    w: &WeightData,
    width: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    to: DType,
) -> Result<Vec<u8>, BackendError> {
    let mut out = Vec::new();
    out.try_reserve_exact(rows.len() * cols.len() * to.size_bytes())
        .map_err(|e| BackendError::OutOfMemory(format!("staging weights: {e}")))?;
    let row = |r: usize| r * width + cols.start..r * width + cols.end;
    let w = &*w.row_major();
    match (w, to) {
        (WeightData::Bf16(b), DType::BF16) | (WeightData::F16(b), DType::F16) => {
            for r in rows {
                b.as_slice()[row(r)]
                    .iter()
                    .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
            }
        }
        (WeightData::F32(b), _) => {
            for r in rows {
                out.extend(encode_f32(&b.as_slice()[row(r)], to));
            }
        }
        (WeightData::Bf16(b), _) => {
            for r in rows {
                let wide: Vec<f32> = b.as_slice()[row(r)]
                    .iter()
                    .map(|&x| bf16_to_f32(x))
                    .collect();
                out.extend(encode_f32(&wide, to));
            }
        }
        (WeightData::F16(b), _) => {
            for r in rows {
                let wide: Vec<f32> = b.as_slice()[row(r)]
                    .iter()
                    .map(|&x| f16_to_f32(x))
                    .collect();
                out.extend(encode_f32(&wide, to));
            }
        }
        // (`row_major` above leaves no tiled data.)
        (WeightData::Bf16Tiles(_), _) => {
            return Err(BackendError::Weights("tiled bf16 weights".into()));
        }
    }
    Ok(out)
}

/// f32 values in `to`'s encoding.
pub fn encode_f32(values: &[f32], to: DType) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * to.size_bytes());
    for &v in values {
        match to {
            DType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&f32_to_bf16(v).to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_parses_and_resolves() {
        assert_eq!(DtypeChoice::parse(None), Ok(DtypeChoice::Auto));
        assert_eq!(DtypeChoice::Auto.resolve(DType::F32), DType::BF16);
        assert_eq!(DtypeChoice::Auto.resolve(DType::F16), DType::F16);
        let f32 = DtypeChoice::parse(Some("f32")).unwrap();
        assert_eq!(f32.resolve(DType::BF16), DType::F32);
        assert!(DtypeChoice::parse(Some("int4"))
            .unwrap_err()
            .contains(DTYPE_ENV));
    }

    #[test]
    fn f16_rounding_round_trips_and_rounds_to_even() {
        for v in [
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            6.1035156e-5,
            5.9604645e-8,
            0.1,
            1000.3,
        ] {
            let h = f32_to_f16(v);
            let back = f16_to_f32(h);
            assert!((back - v).abs() <= v.abs() * 1e-3 + 6e-8, "{v} → {back}");
        }
        assert_eq!(f32_to_f16(1e6), 0x7c00, "overflow is inf");
        // 1 + 2^-11 is halfway between 1 and the next f16: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }
}
