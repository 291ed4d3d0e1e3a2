//! How far the bf16 dot-product matmuls (`MINDIE_CPU_BF16_DOT`) move logprobs, measured
//! through the whole engine: the reference cases run **alone** (one sequence: only prompt
//! chunks of ≥ 8 tokens take the fast path) and **batched** (all at once, alongside filler
//! sequences that keep every step at ≥ 8 rows, so decode steps and the LM head take it too),
//! on the exact path and on the bf16-dot path, each on a fresh engine (no prefix-cache hits
//! across runs). [`compare`] gives the largest |Δ logprob| of the chosen token and the
//! reference's top-5 over the greedy tokens both runs share (same context on both sides).
//!
//! Shared by `tests/engine_parity.rs` (tiny bf16 fixtures against their HF references) and
//! `benches/bf16_accuracy.rs` (the Qwen2-0.5B-shaped bench model against its exact path).
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use mindie::backend::cpu::{CpuBackend, CpuKnobs, CpuOptions};
use mindie::backend::Backend;
use mindie::config::Env;
use mindie::engine::core::Engine;
use mindie::engine::sampler::SamplingParams;
use mindie::engine::{EngineHandle, GenRequest, TokenEvent};
use mindie::scheduler::{Scheduler, SchedulerLimits, Template};
use serde_json::Value;

/// Sequences run next to the cases in a batched run: with them alone every step has ≥ 8 rows
/// (`linear::BF16_DOT_MIN_M`), whatever the cases are doing.
pub const FILLERS: usize = 8;

/// One generated token: its id, logprob and the top alternatives (id, logprob), best first.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: u32,
    pub logprob: f64,
    pub top: Vec<(u32, f64)>,
}

/// How one run of a case compares with its reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cmp {
    /// Reference steps.
    pub len: usize,
    /// Greedy tokens equal to the reference's (any position).
    pub equal: usize,
    /// Leading tokens equal to the reference's (the common context).
    pub prefix: usize,
    /// Largest |Δ logprob| over the common prefix: the chosen token's and every reference
    /// top-k entry the run also lists.
    pub max_dev: f64,
}

/// The steps of an HF reference case (`tests/fixtures/refs/*.json`).
pub fn ref_steps(case: &Value) -> Vec<Step> {
    let num = |v: &Value| v.as_f64().expect("number");
    case["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| Step {
            id: s["id"].as_u64().expect("id") as u32,
            logprob: num(&s["logprob"]),
            top: s["top"]
                .as_array()
                .expect("top")
                .iter()
                .map(|t| (t["id"].as_u64().expect("id") as u32, num(&t["logprob"])))
                .collect(),
        })
        .collect()
}

/// `got` against `want` (see [`Cmp`]).
pub fn compare(want: &[Step], got: &[Step]) -> Cmp {
    let pairs = || want.iter().zip(got);
    let equal = pairs().filter(|(w, g)| w.id == g.id).count();
    let prefix = pairs().take_while(|(w, g)| w.id == g.id).count();
    let mut max_dev = 0f64;
    for (w, g) in pairs().take(prefix) {
        max_dev = max_dev.max((w.logprob - g.logprob).abs());
        for (id, lp) in &w.top {
            if let Some((_, glp)) = g.top.iter().find(|(gid, _)| gid == id) {
                max_dev = max_dev.max((lp - glp).abs());
            }
        }
    }
    Cmp {
        len: want.len(),
        equal,
        prefix,
        max_dev,
    }
}

/// An engine over the model folder `dir` with the bf16 dot-product matmuls on or off (the
/// other knobs from this process's environment, as the daemon reads them), and its KV block
/// count.
pub fn engine(
    dir: &Path,
    template: Template,
    block_size: usize,
    kv_cache_bytes: usize,
    bf16_dot: bool,
) -> (EngineHandle, usize) {
    let knobs = CpuKnobs {
        bf16_dot,
        ..CpuKnobs::from_env(&Env::from_process())
    };
    engine_with(dir, template, block_size, kv_cache_bytes, knobs)
}

/// [`engine`] with the backend's knobs given whole (a kernel level cap, say).
pub fn engine_with(
    dir: &Path,
    template: Template,
    block_size: usize,
    kv_cache_bytes: usize,
    knobs: CpuKnobs,
) -> (EngineHandle, usize) {
    let (bf16_dot, level) = (knobs.bf16_dot, knobs.simd_level());
    let backend = CpuBackend::load(
        dir,
        CpuOptions {
            kv_cache_bytes,
            block_size,
            knobs,
            ..CpuOptions::default()
        },
    )
    .expect("load model");
    let info = backend.info().clone();
    assert!(
        info.device.contains(&format!("{level:?}")),
        "the backend runs at {level:?}: {}",
        info.device
    );
    // The dot path runs where the CPU has AVX-512 BF16 and the kernels are not capped below
    // AVX-512 (`MINDIE_CPU_KERNELS`, or the knobs given).
    let dot_here =
        mindie::backend::cpu::has_avx512_bf16() && level == mindie::backend::cpu::SimdLevel::Avx512;
    if bf16_dot {
        assert!(
            info.device.contains("bf16-dot") || !dot_here,
            "the device string names the bf16-dot path: {}",
            info.device
        );
    }
    let cfg = SchedulerLimits {
        template,
        block_size,
        num_blocks: info.num_blocks,
        max_prefill_tokens: 64,
        max_queue_delay: Duration::from_micros(500),
        ..SchedulerLimits::default()
    };
    let (h, _join) =
        Engine::spawn(Scheduler::new(cfg).expect("scheduler"), Box::new(backend)).expect("spawn");
    (h, info.num_blocks)
}

/// Greedy requests with top-5 logprobs for `prompts`, `max_new_tokens` each.
pub fn requests(prompts: &[Vec<u32>], max_new_tokens: usize) -> Vec<GenRequest> {
    prompts
        .iter()
        .map(|p| GenRequest {
            prompt: p.clone(),
            max_new_tokens,
            sampling: SamplingParams::default(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            top_logprobs: Some(5),
            priority: 3,
            json: None,
        })
        .collect()
}

/// Reads one stream to its end.
pub async fn drain(mut sub: mindie::engine::handle::Submission) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some(ev) = sub.events.recv().await {
        if let TokenEvent::Token {
            id, logprob, top, ..
        } = ev
        {
            steps.push(Step {
                id,
                logprob: logprob.expect("logprob asked for") as f64,
                top: top.iter().map(|&(i, l)| (i, l as f64)).collect(),
            });
        }
    }
    steps
}

/// Each request on its own, one after another (batch 1: decode steps of one row).
pub async fn run_alone(h: &EngineHandle, reqs: &[GenRequest]) -> Vec<Vec<Step>> {
    let mut out = Vec::new();
    for r in reqs {
        out.push(drain(h.submit(r.clone()).expect("submit")).await);
    }
    out
}

/// All requests at once, after [`FILLERS`] long sequences (the requests' prompts reversed, so
/// they share no prefix-cache blocks with them) that keep running until every request is done,
/// so every step the requests take part in has ≥ 8 rows.
pub async fn run_batched(h: &EngineHandle, reqs: &[GenRequest]) -> Vec<Vec<Step>> {
    let fillers: Vec<_> = (0..FILLERS)
        .map(|i| {
            let r = &reqs[i % reqs.len()];
            let mut prompt = r.prompt.clone();
            prompt.reverse();
            prompt.push(prompt[0]);
            let req = GenRequest {
                prompt,
                max_new_tokens: 4096,
                ignore_eos: true,
                top_logprobs: None,
                ..r.clone()
            };
            h.submit(req).expect("submit filler")
        })
        .collect();
    let subs: Vec<_> = reqs
        .iter()
        .map(|r| h.submit(r.clone()).expect("submit"))
        .collect();
    let mut out = Vec::new();
    for s in subs {
        out.push(drain(s).await);
    }
    for f in &fillers {
        assert!(!f.events.is_closed(), "a filler ended before the cases did");
    }
    drop(fillers);
    out
}

/// The four runs of one model: exact and bf16-dot, alone and batched.
pub struct Runs {
    pub exact_alone: Vec<Vec<Step>>,
    pub exact_batched: Vec<Vec<Step>>,
    pub dot_alone: Vec<Vec<Step>>,
    pub dot_batched: Vec<Vec<Step>>,
}

/// Runs `reqs` four ways on fresh engines from `make(bf16_dot)`.
pub async fn four_runs(make: impl Fn(bool) -> EngineHandle, reqs: &[GenRequest]) -> Runs {
    Runs {
        exact_alone: run_alone(&make(false), reqs).await,
        exact_batched: run_batched(&make(false), reqs).await,
        dot_alone: run_alone(&make(true), reqs).await,
        dot_batched: run_batched(&make(true), reqs).await,
    }
}

/// Per case, the four runs against `refs[i]`; prints one line per case and returns the largest
/// deviation of each run (exact alone, exact batched, dot alone, dot batched).
pub fn report(model: &str, names: &[String], refs: &[Vec<Step>], runs: &Runs) -> [f64; 4] {
    let all = [
        &runs.exact_alone,
        &runs.exact_batched,
        &runs.dot_alone,
        &runs.dot_batched,
    ];
    let mut worst = [0f64; 4];
    println!(
        "{model}: max |dlogprob| over the common greedy prefix (prefix/steps) per case\n  {:<24} {:>18} {:>18} {:>18} {:>18}",
        "case", "exact alone", "exact batched", "bf16-dot alone", "bf16-dot batched"
    );
    for (i, name) in names.iter().enumerate() {
        let mut line = format!("  {name:<24}");
        for (w, run) in worst.iter_mut().zip(all) {
            let c = compare(&refs[i], &run[i]);
            *w = w.max(c.max_dev);
            line.push_str(&format!(
                " {:>9.2e} ({:>2}/{:>2})",
                c.max_dev, c.prefix, c.len
            ));
        }
        println!("{line}");
    }
    println!(
        "  {:<24} {:>18.2e} {:>18.2e} {:>18.2e} {:>18.2e}",
        "max", worst[0], worst[1], worst[2], worst[3]
    );
    worst
}
