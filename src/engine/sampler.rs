//! Turning a logits row into the next token: penalties (repetition, presence, frequency),
//! temperature, top-k, top-p, typical-p, min-p, seeded random choice or greedy, and the
//! log-probabilities clients ask for. Log-probabilities are always those of the model's raw
//! distribution (log-softmax over the whole row), as OpenAI reports them.

use std::borrow::Cow;
use std::collections::HashMap;

/// How to choose tokens. Ranges are checked at the edge (HTTP); here they are trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 1.0 = off.
    pub typical_p: f32,
    /// 0.0 = off.
    pub min_p: f32,
    /// 1.0 = off; > 1 discourages tokens already seen (prompt and output).
    pub repetition_penalty: f32,
    /// 0.0 = off; subtracted once from tokens already generated.
    pub presence_penalty: f32,
    /// 0.0 = off; subtracted per occurrence in the generated tokens.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            typical_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == 1
    }

    fn has_penalties(&self) -> bool {
        self.repetition_penalty != 1.0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

/// A small, fast, seedable generator (SplitMix64): the same seed gives the same stream, so
/// the same request gives the same output, alone or inside a batch.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The whole state: `Rng::new(r.state())` continues exactly where `r` is.
    pub fn state(&self) -> u64 {
        self.0
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % (n.max(1) as u64)) as usize
    }
}

/// The chosen token and what clients may ask about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-probability of `token` under the raw distribution (when asked for).
    pub logprob: Option<f32>,
    /// The `n` most likely tokens under the raw distribution, best first.
    pub top: Vec<(u32, f32)>,
}

/// Log-softmax of a row, computed in f64 for stability.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// Indices of the `n` largest values, best first (ties: lower id first).
pub fn top_n(values: &[f32], n: usize) -> Vec<usize> {
    let n = n.min(values.len());
    if n == 0 {
        return Vec::new();
    }
    let mut idx: Vec<usize> = (0..values.len()).collect();
    let cmp = |a: &usize, b: &usize| values[*b].total_cmp(&values[*a]).then(a.cmp(b));
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_by(cmp);
    idx
}

fn apply_penalties(logits: &mut [f32], p: &SamplingParams, prompt: &[u32], generated: &[u32]) {
    if p.repetition_penalty != 1.0 {
        let mut seen: Vec<u32> = prompt.iter().chain(generated).copied().collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
    }
    if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in generated {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.presence_penalty + p.frequency_penalty * c as f32;
            }
        }
    }
}

/// Keeps the candidates that the truncation rules allow, as (id, probability) best first.
fn candidates(logits: &[f32], p: &SamplingParams) -> Vec<(usize, f64)> {
    let t = p.temperature as f64;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut c: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i, ((l as f64 - max) / t).exp()))
        .collect();
    c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        c.truncate(p.top_k);
    }
    normalize(&mut c);
    if p.min_p > 0.0 {
        let floor = c.first().map(|x| x.1).unwrap_or(0.0) * p.min_p as f64;
        c.retain(|x| x.1 >= floor);
        normalize(&mut c);
    }
    if p.typical_p < 1.0 && c.len() > 1 {
        let entropy: f64 = c
            .iter()
            .filter(|x| x.1 > 0.0)
            .map(|x| -x.1 * x.1.ln())
            .sum();
        let mut by_surprise: Vec<(usize, f64)> = c.clone();
        by_surprise.sort_by(|a, b| {
            let da = (-a.1.ln() - entropy).abs();
            let db = (-b.1.ln() - entropy).abs();
            da.total_cmp(&db)
        });
        let mut acc = 0.0;
        let mut keep = Vec::new();
        for x in by_surprise {
            acc += x.1;
            keep.push(x);
            if acc >= p.typical_p as f64 {
                break;
            }
        }
        keep.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        c = keep;
        normalize(&mut c);
    }
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        let mut cut = c.len();
        for (i, x) in c.iter().enumerate() {
            acc += x.1;
            if acc >= p.top_p as f64 {
                cut = i + 1;
                break;
            }
        }
        c.truncate(cut.max(1));
        normalize(&mut c);
    }
    c
}

fn normalize(c: &mut [(usize, f64)]) {
    let s: f64 = c.iter().map(|x| x.1).sum();
    if s > 0.0 {
        for x in c.iter_mut() {
            x.1 /= s;
        }
    }
}

/// Chooses the next token from `logits` (only the first `vocab` entries are real tokens;
/// padded rows beyond are ignored). `top_logprobs`: `None` computes no log-probabilities (the
/// common case, which then costs one pass over the row for greedy); `Some(n)` reports the
/// chosen token's and the `n` best alternatives'.
pub fn sample(
    logits: &[f32],
    vocab: usize,
    p: &SamplingParams,
    prompt: &[u32],
    generated: &[u32],
    rng: &mut Rng,
    top_logprobs: Option<usize>,
) -> Sampled {
    let row = &logits[..vocab.min(logits.len())];
    let adjusted: Cow<'_, [f32]> = if p.has_penalties() {
        let mut a = row.to_vec();
        apply_penalties(&mut a, p, prompt, generated);
        Cow::Owned(a)
    } else {
        Cow::Borrowed(row)
    };
    let token = if p.is_greedy() {
        top_n(&adjusted, 1).first().copied().unwrap_or(0)
    } else {
        let c = candidates(&adjusted, p);
        let u = rng.next_f64();
        let mut acc = 0.0;
        let mut chosen = c.last().map(|x| x.0).unwrap_or(0);
        for (id, prob) in &c {
            acc += prob;
            if u < acc {
                chosen = *id;
                break;
            }
        }
        chosen
    };
    let (logprob, top) = match top_logprobs {
        None => (None, Vec::new()),
        Some(n) => {
            let raw = log_softmax(row);
            let top = top_n(&raw, n)
                .into_iter()
                .map(|i| (i as u32, raw[i]))
                .collect();
            (
                Some(raw.get(token).copied().unwrap_or(f32::NEG_INFINITY)),
                top,
            )
        }
    };
    Sampled {
        token: token as u32,
        logprob,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax_and_reports_logprobs() {
        let logits = [1.0, 3.0, 2.0, 0.5];
        let s = sample(
            &logits,
            4,
            &SamplingParams::default(),
            &[],
            &[],
            &mut Rng::new(1),
            Some(2),
        );
        assert_eq!(s.token, 1);
        let lse = logits
            .iter()
            .map(|x: &f32| (*x as f64).exp())
            .sum::<f64>()
            .ln();
        assert!((s.logprob.unwrap() as f64 - (3.0 - lse)).abs() < 1e-6);
        assert_eq!(s.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn padded_vocab_rows_are_ignored() {
        let logits = [0.0, 1.0, 50.0];
        let s = sample(
            &logits,
            2,
            &SamplingParams::default(),
            &[],
            &[],
            &mut Rng::new(1),
            Some(1),
        );
        assert_eq!(s.token, 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 7) % 13) as f32 / 3.0).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.9,
            seed: 42,
            ..Default::default()
        };
        let run = |seed| {
            let mut r = Rng::new(seed);
            (0..20)
                .map(|_| sample(&logits, 50, &p, &[], &[], &mut r, None).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_k_limits_choices() {
        let logits = [0.0, 2.0, 1.9, 1.8, -5.0];
        let p = SamplingParams {
            temperature: 5.0,
            top_k: 2,
            seed: 3,
            ..Default::default()
        };
        let mut r = Rng::new(3);
        for _ in 0..200 {
            let t = sample(&logits, 5, &p, &[], &[], &mut r, None).token;
            assert!(t == 1 || t == 2, "{t}");
        }
    }

    #[test]
    fn min_p_and_top_p_cut_the_tail() {
        let logits = [5.0, 4.9, 0.0, -1.0];
        let p = SamplingParams {
            temperature: 1.0,
            min_p: 0.5,
            ..Default::default()
        };
        let mut r = Rng::new(9);
        for _ in 0..200 {
            assert!(sample(&logits, 4, &p, &[], &[], &mut r, None).token < 2);
        }
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.1,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(sample(&logits, 4, &p, &[], &[], &mut r, None).token, 0);
        }
    }

    #[test]
    fn penalties_move_choice() {
        let logits = [2.0, 1.9];
        let rep = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        assert_eq!(
            sample(&logits, 2, &rep, &[0], &[], &mut Rng::new(1), None).token,
            1
        );
        let freq = SamplingParams {
            frequency_penalty: 0.06,
            ..Default::default()
        };
        assert_eq!(
            sample(&logits, 2, &freq, &[], &[0], &mut Rng::new(1), None).token,
            0
        );
        assert_eq!(
            sample(&logits, 2, &freq, &[], &[0, 0], &mut Rng::new(1), None).token,
            1
        );
        let pres = SamplingParams {
            presence_penalty: 0.2,
            ..Default::default()
        };
        assert_eq!(
            sample(&logits, 2, &pres, &[], &[0], &mut Rng::new(1), None).token,
            1
        );
    }

    #[test]
    fn typical_p_keeps_the_mass() {
        let logits = [3.0, 2.0, 1.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            typical_p: 0.5,
            ..Default::default()
        };
        let c = candidates(&logits, &p);
        assert!(!c.is_empty() && c.len() < 4);
        assert!((c.iter().map(|x| x.1).sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
