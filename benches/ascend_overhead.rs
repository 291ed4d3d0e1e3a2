//! Host-side cost per step of the Ascend backend, on the emulated CANN with its math turned
//! off (`EMUACL_COMPUTE=0`: every call is validated and executed as bookkeeping only), for the
//! Qwen2-0.5B-shaped bench model: what the daemon adds per NPU step (descriptor building,
//! two-phase operator calls, input packing, copies) before hardware exists. The emulator's
//! own validation is included, so this is an upper bound of our share; on hardware the
//! launches are asynchronous and overlap the device's work.
//!
//! `cargo bench --bench ascend_overhead` (after `cargo bench --bench decode -- model`).
//! Env: `BENCH_DIR` (the model folder), `BENCH_STEPS` (decode steps per size, default 40).
#![allow(clippy::unwrap_used)] // bench code: a failed unwrap is a failed run

#[path = "common/bench_model.rs"]
mod bench_model;
#[path = "../tests/common/emuacl.rs"]
mod emuacl;

use std::path::Path;
use std::time::Instant;

use mindie::backend::ascend::{AscendBackend, AscendOptions, CannSearch, DtypeChoice};
use mindie::backend::{Backend, SeqSlice, StepBatch};

const BLOCK: usize = 128;
const PROMPT: usize = 128;

fn options(dir: &Path, tp: u32) -> AscendOptions {
    AscendOptions {
        model_dir: dir.to_path_buf(),
        search: CannSearch {
            libs: None,
            homes: vec![("ASCEND_TOOLKIT_HOME", Some(emuacl::home().to_path_buf()))],
        },
        device_ids: (0..tp).collect(),
        mem_size_gb: -1,
        block_size: BLOCK,
        dtype: DtypeChoice::Auto,
        fallback_ops: false,
    }
}

/// A step of `seqs` sequences (ids `first..`), each with `new` tokens ending at `len`.
fn batch(first: usize, seqs: usize, new: usize, len: usize) -> StepBatch {
    let mut b = StepBatch::default();
    for s in first..first + seqs {
        let start = b.tokens.len();
        for p in len - new..len {
            b.tokens.push(((s * 131 + p * 7) % 1900) as u32 + 3);
            b.positions.push(p as u32);
        }
        b.seqs.push(SeqSlice {
            token_range: start..b.tokens.len(),
            context_len: len,
            block_table: (0..len.div_ceil(BLOCK))
                .map(|j| (s * 4 + j) as u32)
                .collect(),
            want_logits: true,
        });
    }
    b
}

/// (median ms per step, launches per step) of `steps` runs of `make(i)`.
fn measure(b: &mut AscendBackend, steps: usize, make: impl Fn(usize) -> StepBatch) -> (f64, u64) {
    let mut ms = Vec::with_capacity(steps);
    let mut launches = 0;
    for i in 0..steps {
        let batch = make(i);
        let t0 = Instant::now();
        b.step(&batch).unwrap();
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        launches = b.last_step().launches;
    }
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], launches)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = bench_model::dir()?;
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    emuacl::home();
    std::env::set_var("EMUACL_COMPUTE", "0");
    std::env::set_var("EMUACL_HBM_TOTAL", (16u64 << 30).to_string());
    println!(
        "Ascend backend host overhead per step, emulated CANN without math ({})",
        dir.display()
    );
    println!("| TP | step | tokens | median ms/step | aclnn launches | µs/launch |");
    println!("|---|---|---|---|---|---|");
    for tp in [1u32, 2] {
        let mut b = AscendBackend::load(options(&dir, tp))?;
        // 16 prompts of 128 tokens (their KV is what the decode steps attend over).
        let (prefill_ms, prefill_launches) = measure(&mut b, 16, |i| batch(i, 1, PROMPT, PROMPT));
        let mut table = vec![("prefill", 1, PROMPT, prefill_ms, prefill_launches)];
        for seqs in [1usize, 16] {
            let (ms, launches) = measure(&mut b, steps, |i| batch(0, seqs, 1, PROMPT + 1 + i % 64));
            table.push(("decode", seqs, seqs, ms, launches));
        }
        for (what, seqs, tokens, ms, launches) in table {
            println!(
                "| {tp} | {what} ×{seqs} | {tokens} | {ms:.3} | {launches} | {:.1} |",
                ms * 1e3 / launches.max(1) as f64
            );
        }
    }
    Ok(())
}
