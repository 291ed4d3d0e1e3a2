//! Statistics of one concurrency level: percentiles (linear interpolation between closest
//! ranks, as numpy's default) and the [`LevelSummary`] built from its request [`Record`]s —
//! throughput, error accounting by kind, and TTFT / TPOT / e2e distributions.
//!
//! Pure code, included by `tests/loadgen.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::record::{Outcome, Record};

/// The `q`-quantile (0 ≤ q ≤ 1) of ascending `sorted`; `None` when empty.
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// A latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Dist {
    pub n: usize,
    pub mean: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    /// The distribution of `values` (ms); all zero when empty.
    pub fn of(mut values: Vec<f64>) -> Dist {
        values.retain(|v| v.is_finite());
        if values.is_empty() {
            return Dist::default();
        }
        values.sort_by(f64::total_cmp);
        let q = |p| percentile(&values, p).unwrap_or(0.0);
        Dist {
            n: values.len(),
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values[0],
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: values[values.len() - 1],
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "n": self.n, "mean": self.mean, "min": self.min, "p50": self.p50,
            "p90": self.p90, "p99": self.p99, "max": self.max,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Everything measured at one concurrency level.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSummary {
    pub concurrency: usize,
    /// Requests sent.
    pub requests: usize,
    /// Completed with the requested length.
    pub ok: usize,
    /// Completed with another length although `ignore_eos` was set (not counted as errors).
    pub short: usize,
    /// Failed requests, all kinds.
    pub errors: usize,
    /// Failed requests by [`crate::record::ErrorKind::name`].
    pub errors_by_kind: BTreeMap<&'static str, usize>,
    /// The first message of each error kind, for diagnosis.
    pub error_samples: BTreeMap<&'static str, String>,
    /// First request start to last request end.
    pub wall: Duration,
    /// Completed (ok + short) requests per second of wall time.
    pub req_per_s: f64,
    /// Σ completion_tokens of completed requests per second of wall time.
    pub output_tok_per_s: f64,
    /// Σ prompt_tokens of completed requests per second of wall time.
    pub input_tok_per_s: f64,
    pub completion_tokens: u64,
    pub ttft: Dist,
    pub tpot: Dist,
    pub e2e: Dist,
}

impl LevelSummary {
    /// Summarises a level's records; `wall` is the level's duration.
    pub fn new(concurrency: usize, records: &[Record], wall: Duration) -> LevelSummary {
        let mut s = LevelSummary {
            concurrency,
            requests: records.len(),
            ok: 0,
            short: 0,
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            wall,
            req_per_s: 0.0,
            output_tok_per_s: 0.0,
            input_tok_per_s: 0.0,
            completion_tokens: 0,
            ttft: Dist::default(),
            tpot: Dist::default(),
            e2e: Dist::default(),
        };
        let mut prompt_tokens = 0u64;
        for r in records {
            match &r.outcome {
                Outcome::Ok => s.ok += 1,
                Outcome::Short => s.short += 1,
                Outcome::Failed(kind, msg) => {
                    s.errors += 1;
                    *s.errors_by_kind.entry(kind.name()).or_default() += 1;
                    s.error_samples
                        .entry(kind.name())
                        .or_insert_with(|| msg.clone());
                }
            }
            if r.completed() {
                s.completion_tokens += r.completion_tokens;
                prompt_tokens += r.prompt_tokens.unwrap_or(0);
            }
        }
        let done: Vec<&Record> = records.iter().filter(|r| r.completed()).collect();
        s.ttft = Dist::of(done.iter().filter_map(|r| r.ttft).map(ms).collect());
        s.tpot = Dist::of(done.iter().filter_map(|r| r.tpot()).map(ms).collect());
        s.e2e = Dist::of(done.iter().map(|r| ms(r.e2e)).collect());
        let secs = wall.as_secs_f64();
        if secs > 0.0 {
            s.req_per_s = done.len() as f64 / secs;
            s.output_tok_per_s = s.completion_tokens as f64 / secs;
            s.input_tok_per_s = prompt_tokens as f64 / secs;
        }
        s
    }

    pub fn to_json(&self) -> Value {
        json!({
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "short": self.short,
            "errors": self.errors,
            "errors_by_kind": self.errors_by_kind,
            "error_samples": self.error_samples,
            "wall_s": self.wall.as_secs_f64(),
            "req_per_s": self.req_per_s,
            "output_tok_per_s": self.output_tok_per_s,
            "input_tok_per_s": self.input_tok_per_s,
            "completion_tokens": self.completion_tokens,
            "ttft_ms": self.ttft.to_json(),
            "tpot_ms": self.tpot.to_json(),
            "e2e_ms": self.e2e.to_json(),
        })
    }
}
