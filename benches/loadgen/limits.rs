//! `--limits`: the machine's ceilings next to the measurement. Before the sweep it measures
//! DRAM read bandwidth and the matmul kernel's arithmetic peak here (`common/machine.rs`),
//! reads the model's weight bytes, and after each level prints the output tokens/s a perfect
//! engine could reach in the same closed loop, and the fraction the server reached.
//!
//! The model of a level (c workers, prompt p, output o tokens, weights W bytes holding P
//! parameters, 2·P FLOPs per token): a cycle prefills c·p tokens at the kernel peak, then runs
//! o decode steps of c rows, each bounded by reading W from DRAM or by its 2·P·c FLOPs,
//! whichever is slower:
//! `cycle = 2·P·c·p / peak + o · max(W / bandwidth, 2·P·c / peak)`; ceiling = c·o / cycle.
//! Attention, sampling and HTTP are left out, so the ceiling is optimistic (a true upper
//! bound): the fraction is how close the whole server gets to the hardware.

use std::path::Path;

use mindie::backend::cpu::CpuKnobs;
use mindie::config::Env;
use serde_json::{json, Value};

#[path = "../common/machine.rs"]
mod machine;

use crate::stats::LevelSummary;

/// The ceilings measured on this machine for one model.
#[derive(Debug, Clone)]
pub struct Limits {
    /// DRAM read bandwidth, GB/s.
    pub bandwidth_gbs: f64,
    /// Matmul kernel peak with every thread, GFLOP/s.
    pub peak_gflops: f64,
    pub threads: usize,
    /// Bytes of the model's safetensors files.
    pub weight_bytes: u64,
    /// Parameters (weight bytes / bytes per stored value).
    pub params: f64,
    /// The kernel measured: bf16 weights, and the bf16 dot-product path.
    pub bf16: bool,
    pub bf16_dot: bool,
}

impl Limits {
    /// Measures the machine for the model in `model_dir` (its safetensors and config.json),
    /// with the kernel the daemon would use under this environment (`MINDIE_CPU_*`).
    pub fn measure(model_dir: &Path) -> Result<Limits, String> {
        let mut weight_bytes = 0u64;
        let entries = std::fs::read_dir(model_dir)
            .map_err(|e| format!("--limits: {}: {e}", model_dir.display()))?;
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "safetensors") {
                weight_bytes += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        if weight_bytes == 0 {
            return Err(format!(
                "--limits: no .safetensors files in {}",
                model_dir.display()
            ));
        }
        let dtype = std::fs::read(model_dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["torch_dtype"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "float32".into());
        let bytes_per_param = if dtype == "float32" { 4.0 } else { 2.0 };
        let knobs = CpuKnobs::from_env(&Env::from_process());
        let bf16 = dtype == "bfloat16";
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| e.to_string())?;
        let bandwidth_gbs = machine::read_bandwidth(&pool);
        let dot = bf16 && knobs.bf16_dot;
        let peak_gflops = machine::kernel_peak_gflops(threads, knobs.simd_level(), bf16, dot);
        Ok(Limits {
            bandwidth_gbs,
            peak_gflops,
            threads,
            weight_bytes,
            params: weight_bytes as f64 / bytes_per_param,
            bf16,
            bf16_dot: dot,
        })
    }

    /// Seconds of one decode step of `rows` sequences at the ceiling.
    pub fn decode_step_floor(&self, rows: usize) -> f64 {
        let read = self.weight_bytes as f64 / (self.bandwidth_gbs * 1e9);
        let math = 2.0 * self.params * rows as f64 / (self.peak_gflops * 1e9);
        read.max(math)
    }

    /// Output tokens/s a perfect engine reaches with `c` closed-loop workers (module docs).
    pub fn ceiling_tok_s(&self, c: usize, prompt: usize, output: u64) -> f64 {
        let c = c.max(1);
        let prefill = 2.0 * self.params * (c * prompt) as f64 / (self.peak_gflops * 1e9);
        let cycle = prefill + output as f64 * self.decode_step_floor(c);
        (c as f64 * output as f64) / cycle
    }

    /// The ceilings, one paragraph.
    pub fn text(&self) -> String {
        format!(
            "limits: DRAM read {:.1} GB/s; kernel peak {:.1} GFLOP/s ({} weights{}, {} threads); weights {:.3} GB ({:.3} B params); batch-1 decode floor {:.1} ms/token ({:.1} tok/s)\n",
            self.bandwidth_gbs,
            self.peak_gflops,
            if self.bf16 { "bf16" } else { "f32/f16" },
            if self.bf16_dot { ", bf16-dot" } else { "" },
            self.threads,
            self.weight_bytes as f64 / 1e9,
            self.params / 1e9,
            self.decode_step_floor(1) * 1e3,
            1.0 / self.decode_step_floor(1),
        )
    }

    /// One level against its ceiling.
    pub fn level_text(&self, s: &LevelSummary, prompt: usize, output: u64) -> String {
        let ceiling = self.ceiling_tok_s(s.concurrency, prompt, output);
        format!(
            "  vs limits: {:.1} of a {:.1} output tok/s ceiling = {:.1} % (decode step floor {:.1} ms at {} rows)\n",
            s.output_tok_per_s,
            ceiling,
            100.0 * s.output_tok_per_s / ceiling,
            self.decode_step_floor(s.concurrency) * 1e3,
            s.concurrency
        )
    }

    /// The ceilings and each level's fraction, for the JSON report.
    pub fn json(&self, levels: &[LevelSummary], prompt: usize, output: u64) -> Value {
        json!({
            "dram_read_gbs": self.bandwidth_gbs,
            "kernel_peak_gflops": self.peak_gflops,
            "threads": self.threads,
            "weight_bytes": self.weight_bytes,
            "params": self.params,
            "bf16_weights": self.bf16,
            "bf16_dot": self.bf16_dot,
            "levels": levels.iter().map(|s| {
                let ceiling = self.ceiling_tok_s(s.concurrency, prompt, output);
                json!({
                    "concurrency": s.concurrency,
                    "output_tok_per_s": s.output_tok_per_s,
                    "ceiling_tok_per_s": ceiling,
                    "fraction": s.output_tok_per_s / ceiling,
                    "decode_step_floor_ms": self.decode_step_floor(s.concurrency) * 1e3,
                })
            }).collect::<Vec<_>>(),
        })
    }
}
