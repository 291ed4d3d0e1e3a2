//! How far the bf16 dot-product matmuls (`MINDIE_CPU_BF16_DOT`) move logprobs on the
//! Qwen2-0.5B-shaped bench model (random bf16 weights, the fixture tokenizer; made by
//! `cargo bench --bench decode -- model`): the prompts of the tiny-qwen2 HF reference cases
//! (real text through the same tokenizer), greedy, top-5 logprobs, run alone and batched with
//! filler traffic (every step ≥ 8 rows), on the exact path and on the bf16-dot path
//! (`tests/common/dot_accuracy.rs`). There is no HF reference for random weights, so the
//! exact path run alone is the reference: the exact path is within 1e-4 of HF
//! (`tests/engine_parity.rs`), so |Δ vs HF| ≤ |Δ vs exact| + 1e-4.
//!
//! `cargo bench --bench bf16_accuracy`. Env: `BENCH_DIR` (the model folder), `BENCH_STEPS`
//! (tokens per case, default 32).
#![allow(clippy::unwrap_used)] // bench code: a failed unwrap is a failed run

#[path = "common/bench_model.rs"]
mod bench_model;
#[path = "../tests/common/dot_accuracy.rs"]
mod dot_accuracy;

use std::path::Path;

use mindie::scheduler::Template;
use serde_json::Value;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = bench_model::dir()?;
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let refs: Value = serde_json::from_slice(&std::fs::read(
        manifest.join("tests/fixtures/refs/tiny-qwen2.json"),
    )?)?;
    let cases = refs["cases"].as_array().ok_or("no cases")?;
    let names: Vec<String> = cases
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("?").to_string())
        .collect();
    let prompts: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            c["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    let reqs = dot_accuracy::requests(&prompts, steps);
    let rt = tokio::runtime::Runtime::new()?;
    let t = std::time::Instant::now();
    let runs = rt.block_on(dot_accuracy::four_runs(
        |dot| dot_accuracy::engine(&dir, Template::Mix, 16, 1 << 30, dot).0,
        &reqs,
    ));
    println!(
        "reference: the exact path alone (|dlogprob vs HF| <= |dlogprob vs exact| + 1e-4); {:.0} s",
        t.elapsed().as_secs_f64()
    );
    dot_accuracy::report(
        "qwen2-0.5b-bf16 (bench model)",
        &names,
        &runs.exact_alone,
        &runs,
    );
    Ok(())
}
