//! Rotary position embedding: inverse frequencies (with LLaMA-3 scaling) and the per-step
//! cos/sin tables for the packed positions. Follows HF's f32 arithmetic: f32 inverse
//! frequencies (f32 `powf`, LLaMA-3 adjustment in f32), f32 angle `inv_freq · position`, then
//! cos/sin of that angle.

use super::hf_config::Llama3Scaling;

pub struct Rope {
    /// `head_dim / 2` inverse frequencies.
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f64, llama3: Option<&Llama3Scaling>) -> Self {
        let half = head_dim / 2;
        let inv_freq = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / head_dim as f32;
                let f = 1.0f32 / (theta as f32).powf(exponent);
                match llama3 {
                    Some(s) => llama3_adjust(f, s),
                    None => f,
                }
            })
            .collect();
        Self { inv_freq }
    }

    /// cos and sin tables, `positions.len() × head_dim/2` each.
    pub fn tables(&self, positions: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for &f in &self.inv_freq {
                let angle = (f * p as f32) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        (cos, sin)
    }
}

/// LLaMA-3 frequency scaling: long wavelengths divided by `factor`, short ones kept, a smooth
/// blend in between.
fn llama3_adjust(inv_freq: f32, s: &Llama3Scaling) -> f32 {
    let old = s.original_max_position_embeddings as f32;
    let (factor, low, high) = (
        s.factor as f32,
        s.low_freq_factor as f32,
        s.high_freq_factor as f32,
    );
    let low_freq_wavelen = old / low;
    let high_freq_wavelen = old / high;
    let wavelen = 2.0 * std::f32::consts::PI / inv_freq;
    if wavelen < high_freq_wavelen {
        inv_freq
    } else if wavelen > low_freq_wavelen {
        inv_freq / factor
    } else {
        let smooth = (old / wavelen - low) / (high - low);
        (1.0 - smooth) * inv_freq / factor + smooth * inv_freq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_zero_is_identity() {
        let r = Rope::new(8, 10_000.0, None);
        let (c, s) = r.tables(&[0]);
        assert!(c.iter().all(|&x| x == 1.0) && s.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn llama3_scales_low_frequencies_only() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let plain = Rope::new(128, 500_000.0, None);
        let scaled = Rope::new(128, 500_000.0, Some(&s));
        assert_eq!(plain.inv_freq[0], scaled.inv_freq[0]);
        let last = plain.inv_freq.len() - 1;
        assert_eq!(plain.inv_freq[last] / 8.0, scaled.inv_freq[last]);
    }
}
