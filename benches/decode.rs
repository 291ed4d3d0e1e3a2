//! Decode benchmarks for the CPU backend (plain `std::time`, `harness = false`):
//! 1. memory read bandwidth of this machine (the bound for batch-1 decode),
//! 2. the decode-shaped matmul kernel (bf16 weights, M = 1 and 16),
//! 3. a Qwen2-0.5B-shaped bf16 model with random weights and the vocabulary of the fixture
//!    tokenizer: batch-1 decode (effective weight bandwidth, % of the measured bound) and
//!    concurrency-16 decode throughput.
//!
//! The model is a complete HF folder (config, safetensors, the fixture tokenizer files), kept
//! at `target/bench-models/qwen2-0.5b-bf16/` so the daemon can serve it; it is generated from a
//! fixed seed, so reruns reuse (or recreate) the same bytes.
//!
//! `cargo bench --bench decode` (add `-- quick` for the kernel parts only, `-- model` to skip
//! the kernel part). Env: `BENCH_DIR`
//! (the model folder), `BENCH_THREADS`, `BENCH_PROMPT` (prompt tokens
//! per sequence, default 32), `BENCH_DECODE_STEPS` (default 16), `BENCH_BLOCK` (KV block size,
//! default 128 as the shipped config), `BENCH_JSON` (also write the summary there as JSON),
//! `BENCH_LOG` (a tracing filter, e.g. `debug`: each model step's time per operation).
//!
//! Both matmul paths are measured: the exact f32-activation kernel (the default) and the opt-in
//! AVX-512 BF16 dot-product kernel (`MINDIE_CPU_BF16_DOT`; lines marked `bf16-dot`) where the
//! CPU has it. `MINDIE_CPU_BF16_DOT=1` limits the model part to the dot path,
//! `MINDIE_CPU_BF16_DOT=0` to the exact one; unset runs both (`BENCH_JSON` gets the exact
//! path's summary, `BENCH_JSON` + `-bf16-dot` the other's).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mindie::backend::cpu::linear::{matmul_with, set_amx_exact, Dot};
use mindie::backend::cpu::weights::{Buf, Matrix, WeightData};
use mindie::backend::cpu::{has_amx, has_avx512_bf16, CpuBackend, CpuKnobs, CpuOptions, SimdLevel};
use mindie::backend::{Backend, SeqSlice, StepBatch};
use mindie::config::Env;
use mindie::engine::sampler::Rng;

#[path = "common/machine.rs"]
mod machine;
use machine::{kernel_peak_gflops, read_bandwidth};

/// The backend knobs this process's environment sets (`MINDIE_CPU_KERNELS`, `MINDIE_CPU_AMX`,
/// `MINDIE_CPU_BF16_DOT`), as the daemon reads them.
fn knobs() -> CpuKnobs {
    CpuKnobs::from_env(&Env::from_process())
}

/// The kernel level the daemon would run at here (`MINDIE_CPU_KERNELS` caps it).
fn simd_level() -> SimdLevel {
    knobs().simd_level()
}

/// The matmul paths to measure: exact, and bf16-dot where the CPU has it.
fn dot_modes() -> Vec<bool> {
    if has_avx512_bf16() && simd_level() == SimdLevel::Avx512 {
        vec![false, true]
    } else {
        vec![false]
    }
}

fn tag(dot: bool) -> &'static str {
    if dot {
        " bf16-dot"
    } else {
        ""
    }
}

/// A bf16 uniform in ±`scale` from the engine's seeded generator.
fn bf16(rng: &mut Rng, scale: f32) -> u16 {
    (((rng.next_f64() as f32 * 2.0 - 1.0) * scale).to_bits() >> 16) as u16
}

fn threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

fn gemv_bench(pool: &rayon::ThreadPool, bw: f64) {
    let (n, k) = env_nk("BENCH_GEMV_NK");
    let mat = random_bf16(n, k, 7);
    // Copies of `BENCH_GEMV_BYTES` in all (default 1 GiB, at least 16) cycled, so the
    // weights come from memory, not cache.
    let total: usize = std::env::var("BENCH_GEMV_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let count = total.div_ceil(n * k * 2).max(16);
    let copies: Vec<Matrix> = (0..count).map(|_| clone_owned(&mat)).collect();
    // The same in AMX tile order, as the backend loads bf16 weights where the exact path runs
    // on AMX.
    let tiled: Vec<Matrix> = if has_amx() {
        copies
            .iter()
            .map(|c| clone_owned(c).amx_tiled().0)
            .collect()
    } else {
        Vec::new()
    };
    // Cold: weights stream from DRAM (64 copies cycle). Hot: one copy, cache-resident panels,
    // so the kernel's arithmetic rate shows.
    let cases = [
        (1usize, false, false),
        (2, false, false),
        (3, false, false),
        (4, false, false),
        (16, false, false),
        (16, true, false),
        (128, true, false),
        (1, false, true),
        (16, false, true),
        (16, true, true),
        (128, true, true),
    ];
    let layouts = [("", &copies), (" tiled", &tiled)];
    for ((m, hot, dot), (layout, copies)) in layouts
        .iter()
        .flat_map(|l| cases.iter().map(move |c| (*c, *l)))
    {
        if (dot && !dot_modes().contains(&true)) || copies.is_empty() {
            continue;
        }
        let x = activations(m, k);
        let mut out = vec![0f32; m * n];
        let set = if hot { &copies[..1] } else { &copies[..] };
        let iters = if hot { 64 * 3 / m.max(16) * 4 } else { 3 };
        let t = Instant::now();
        pool.install(|| {
            for _ in 0..iters {
                for c in set {
                    matmul_with(simd_level(), Dot::fast(dot), &x, m, c, &mut out);
                }
            }
        });
        let secs = t.elapsed().as_secs_f64() / (iters * set.len()) as f64;
        let gbs = (n * k * 2) as f64 / secs / 1e9;
        let gflops = (2 * m * n * k) as f64 / secs / 1e9;
        println!(
            "gemm bf16{layout} {n}x{k}, M={m:3} {}: {:8.1} us  {gbs:6.1} GB/s ({:3.0}% of bound)  {gflops:6.1} GFLOP/s{}",
            if hot { "hot " } else { "cold" },
            secs * 1e6,
            gbs / bw * 100.0,
            tag(dot)
        );
    }
}

/// An `n × k` bf16 weight of small random values from `seed`.
fn random_bf16(n: usize, k: usize, seed: u64) -> Matrix {
    let mut rng = Rng::new(seed);
    let w: Vec<u16> = (0..n * k).map(|_| bf16(&mut rng, 0.05)).collect();
    Matrix {
        rows: n,
        cols: k,
        data: WeightData::Bf16(Buf::Owned(Arc::new(w))),
    }
}

/// The weight shape `n,k` from environment variable `name`, default 4864 × 896 (gate_proj).
fn env_nk(name: &str) -> (usize, usize) {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let (n, k) = v.split_once(',')?;
            Some((n.parse().ok()?, k.parse().ok()?))
        })
        .unwrap_or((4864, 896))
}

/// `m × k` activations with a fixed pattern of small values.
fn activations(m: usize, k: usize) -> Vec<f32> {
    (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect()
}

/// `BENCH_GEMM_M=m`: only the bf16 matmul of `m` rows by an `n × k` weight
/// (`BENCH_GEMM_NK=n,k`, default 4864,896), for about two seconds per
/// path (a steady loop to profile).
fn gemm_loop(pool: &rayon::ThreadPool, m: usize) {
    let (n, k) = env_nk("BENCH_GEMM_NK");
    let (mut mat, x) = (random_bf16(n, k, 7), activations(m, k));
    // `BENCH_GEMM_TILED=1`: the weight in AMX tile order, as the model holds it where AMX runs.
    if std::env::var("BENCH_GEMM_TILED").is_ok_and(|v| v == "1") {
        mat = mat.amx_tiled().0;
    }
    let mut out = vec![0f32; m * n];
    let paths = [
        (Dot::Exact, false, ""),
        (Dot::Exact, true, " exact-amx"),
        (Dot::Fast, true, " bf16-dot fast"),
        (Dot::Fine, true, " bf16-dot fine"),
    ];
    for (dot, amx, name) in paths {
        if dot != Dot::Exact && !dot_modes().contains(&true) {
            continue;
        }
        set_amx_exact(amx);
        let t = Instant::now();
        let mut iters = 0usize;
        pool.install(|| {
            while t.elapsed().as_secs_f64() < 2.0 {
                matmul_with(simd_level(), dot, &x, m, &mat, &mut out);
                iters += 1;
            }
        });
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        let terms = dot
            .terms(m)
            .map_or(String::new(), |t| format!(" ({t} bf16 terms)"));
        println!(
            "gemm bf16 {n}x{k}, M={m}: {:8.1} us  {:6.1} GFLOP/s{name}{terms}",
            secs * 1e6,
            (2 * m * n * k) as f64 / secs / 1e9,
        );
    }
}

/// The kernel's arithmetic rate on an L2-resident weight (512 × 896 bf16), one thread.
fn kernel_peak_bench(bw: f64) {
    let (n, k, m) = (512, 896, 16);
    let (mat, x) = (random_bf16(n, k, 11), activations(m, k));
    let mut out = vec![0f32; m * n];
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let iters = 2000;
    let _ = bw;
    for dot in dot_modes() {
        let t = Instant::now();
        one.install(|| {
            for _ in 0..iters {
                matmul_with(simd_level(), Dot::fast(dot), &x, m, &mat, &mut out);
            }
        });
        let secs = t.elapsed().as_secs_f64() / iters as f64;
        println!(
            "gemm bf16 {n}x{k}, M={m:3} L2-resident, 1 thread: {:8.1} us  {:6.1} GFLOP/s{}",
            secs * 1e6,
            (2 * m * n * k) as f64 / secs / 1e9,
            tag(dot)
        );
    }
}

fn clone_owned(m: &Matrix) -> Matrix {
    let data = match &m.data {
        WeightData::Bf16(b) => WeightData::Bf16(Buf::Owned(Arc::new(b.as_slice().to_vec()))),
        other => other.clone(),
    };
    Matrix {
        rows: m.rows,
        cols: m.cols,
        data,
    }
}

/// Qwen2-0.5B shapes (the vocabulary is the fixture tokenizer's, read from its config).
const HIDDEN: usize = 896;
const LAYERS: usize = 24;
const HEADS: usize = 14;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const INTER: usize = 4864;
/// Where the tokenizer files (and the vocabulary size) come from.
const FIXTURE: &str = "tests/fixtures/models/tiny-qwen2";

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture model's `vocab_size` (its tokenizer's id range).
fn fixture_vocab() -> Result<usize, Box<dyn std::error::Error>> {
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        manifest().join(FIXTURE).join("config.json"),
    )?)?;
    Ok(cfg["vocab_size"]
        .as_u64()
        .ok_or("fixture config has no vocab_size")? as usize)
}

/// Writes (or reuses) the complete HF folder; returns the safetensors size in bytes.
fn synthetic_model(dir: &Path, vocab: usize) -> Result<u64, Box<dyn std::error::Error>> {
    let fixture = manifest().join(FIXTURE);
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        let src = fixture.join(name);
        if src.exists() {
            std::fs::copy(&src, dir.join(name))?;
        }
    }
    let fixture_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json"))?)?;
    let config = serde_json::json!({
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": INTER,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": true,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
        "bos_token_id": fixture_cfg["bos_token_id"],
        "eos_token_id": fixture_cfg["eos_token_id"],
    });
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&config)?)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg_path, std::fs::Permissions::from_mode(0o640))?;
    }

    // Ids with text: the tokenizer's ordinary vocabulary. The rows past it (its special
    // tokens and the padding up to `vocab_size`, which decode to no text) are zero, so the
    // random head's greedy choice (a positive maximum over ~2,000 random logits) never lands
    // on them: a request locked on a textless id streams nothing until its end, which read
    // as multi-second TTFT outliers in `loadgen` runs.
    let tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer.json"))?)?;
    let texted = tokenizer["model"]["vocab"]
        .as_object()
        .map_or(vocab, |v| v.len().min(vocab));
    let mut tensors: Vec<(String, Vec<usize>)> =
        vec![("model.embed_tokens.weight".into(), vec![vocab, HIDDEN])];
    for l in 0..LAYERS {
        let p = format!("model.layers.{l}");
        let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
        tensors.push((format!("{p}.input_layernorm.weight"), vec![HIDDEN]));
        tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![HIDDEN]));
        for (name, rows, cols) in [
            ("self_attn.q_proj", q, HIDDEN),
            ("self_attn.k_proj", kv, HIDDEN),
            ("self_attn.v_proj", kv, HIDDEN),
            ("self_attn.o_proj", HIDDEN, q),
            ("mlp.gate_proj", INTER, HIDDEN),
            ("mlp.up_proj", INTER, HIDDEN),
            ("mlp.down_proj", HIDDEN, INTER),
        ] {
            tensors.push((format!("{p}.{name}.weight"), vec![rows, cols]));
            if name.ends_with("q_proj") || name.ends_with("k_proj") || name.ends_with("v_proj") {
                tensors.push((format!("{p}.{name}.bias"), vec![rows]));
            }
        }
    }
    tensors.push(("model.norm.weight".into(), vec![HIDDEN]));
    let mut header = serde_json::Map::new();
    // (The generator's revision, so a folder written by an older one is rewritten.)
    header.insert(
        "__metadata__".into(),
        serde_json::json!({"format": "pt", "generator": "mindie-decode-bench-2"}),
    );
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let total = (8 + h.len() + offset) as u64;
    let st = dir.join("model.safetensors");
    // Same shapes, same seed: a file of the expected size holds the same bytes.
    if std::fs::metadata(&st).map(|m| m.len()).ok() == Some(total) {
        return Ok(total);
    }
    let tmp = dir.join("model.safetensors.partial");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(&(h.len() as u64).to_le_bytes())?;
    f.write_all(&h)?;
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        let norm = name.ends_with("norm.weight");
        let scale = if norm {
            0.0
        } else {
            1.0 / (shape[shape.len() - 1] as f32).sqrt()
        };
        let embed = name == "model.embed_tokens.weight";
        let mut buf = Vec::with_capacity(n * 2);
        for i in 0..n {
            let v = if norm {
                0x3f80
            } else if embed && i / HIDDEN >= texted {
                0
            } else {
                bf16(&mut rng, scale)
            };
            buf.extend_from_slice(&v.to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.flush()?;
    drop(f);
    std::fs::rename(&tmp, &st)?;
    Ok(std::fs::metadata(&st)?.len())
}

/// What the model part measured.
#[derive(Default)]
struct ModelResults {
    weight_bytes: u64,
    b1_tok_s: f64,
    c16_tok_s: f64,
    prefill_tok_s: f64,
    prompt: usize,
}

fn model_bench(bw: f64, bf16_dot: bool) -> Result<ModelResults, Box<dyn std::error::Error>> {
    let dir: PathBuf = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("target/bench-models/qwen2-0.5b-bf16"));
    std::fs::create_dir_all(&dir)?;
    let vocab = fixture_vocab()?;
    let t = Instant::now();
    let bytes = synthetic_model(&dir, vocab)?;
    println!(
        "synthetic model: {:.0} MB at {} ({:.1} s)",
        bytes as f64 / 1e6,
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    let opts = CpuOptions {
        kv_cache_bytes: 1 << 30,
        // The shipped config's `cacheBlockSize` (128) unless `BENCH_BLOCK` says otherwise.
        block_size: std::env::var("BENCH_BLOCK")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(128),
        threads: threads(),
        prefault_weights: true,
        knobs: CpuKnobs {
            bf16_dot,
            ..knobs()
        },
        share: None,
    };
    let t = Instant::now();
    let mut b = CpuBackend::load(&dir, opts)?;
    println!(
        "load: {:.2} s, {}",
        t.elapsed().as_secs_f64(),
        b.info().device
    );
    let prompt: usize = std::env::var("BENCH_PROMPT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(32);
    let mut res = ModelResults {
        weight_bytes: bytes,
        prompt,
        ..ModelResults::default()
    };
    let bs = b.info().block_size;
    // `BENCH_DECODE_STEPS` (default 16): more steps make a steady decode loop to profile.
    let decode_steps: usize = std::env::var("BENCH_DECODE_STEPS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(16)
        .max(1);
    let concs: Vec<usize> = match std::env::var("BENCH_CONC") {
        Ok(c) => c.split(',').filter_map(|c| c.parse().ok()).collect(),
        Err(_) => vec![1, 16],
    };
    for conc in concs {
        // Prefill `conc` sequences of `prompt` tokens in one step.
        let tables: Vec<Vec<u32>> = (0..conc)
            .map(|s| {
                let per = (prompt + decode_steps + 1).div_ceil(bs);
                (0..per).map(|i| (s * per + i) as u32).collect()
            })
            .collect();
        let mut batch = StepBatch::default();
        for (s, table) in tables.iter().enumerate() {
            let start = batch.tokens.len();
            batch
                .tokens
                .extend((0..prompt).map(|i| ((s * 131 + i * 17) % vocab) as u32));
            batch.positions.extend(0..prompt as u32);
            batch.seqs.push(SeqSlice {
                token_range: start..start + prompt,
                context_len: prompt,
                block_table: table.clone(),
                want_logits: true,
            });
        }
        let t = Instant::now();
        b.step(&batch)?;
        let pf = t.elapsed().as_secs_f64();
        println!(
            "prefill {conc}x{prompt} tokens: {:.3} s ({:.0} tok/s)",
            pf,
            (conc * prompt) as f64 / pf
        );
        if conc == 16 {
            res.prefill_tok_s = (conc * prompt) as f64 / pf;
        }
        let mut times = Vec::new();
        for d in 0..decode_steps {
            let ctx = prompt + d + 1;
            let batch = StepBatch {
                tokens: (0..conc)
                    .map(|s| ((s * 7 + d * 13) % vocab) as u32)
                    .collect(),
                positions: vec![(ctx - 1) as u32; conc],
                seqs: tables
                    .iter()
                    .enumerate()
                    .map(|(s, table)| SeqSlice {
                        token_range: s..s + 1,
                        context_len: ctx,
                        block_table: table.clone(),
                        want_logits: true,
                    })
                    .collect(),
            };
            let t = Instant::now();
            b.step(&batch)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        let gbs = bytes as f64 / med / 1e9;
        println!(
            "decode concurrency {conc:2}: step {:.1} ms (median of {decode_steps}), {:.1} tok/s, weights {:.1} GB/s = {:.0}% of the {:.1} GB/s bound",
            med * 1e3,
            conc as f64 / med,
            gbs,
            gbs / bw * 100.0,
            bw
        );
        if conc == 1 {
            res.b1_tok_s = 1.0 / med;
        } else {
            res.c16_tok_s = conc as f64 / med;
        }
    }
    Ok(res)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "quick");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads())
        .build()?;
    // The exact AMX switch is process-wide; start from what the environment says, as the
    // daemon does (`MINDIE_CPU_AMX`).
    set_amx_exact(knobs().amx);
    // `BENCH_LOG=debug`: the backend's debug lines on stderr, among them one `cpu step` per
    // model step with the time of each operation (norm, qkv, attention, gate_up, …).
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    println!("threads {}, kernels {:?}", threads(), simd_level());
    if let Some(m) = std::env::var("BENCH_GEMM_M")
        .ok()
        .and_then(|m| m.parse().ok())
    {
        gemm_loop(&pool, m);
        return Ok(());
    }
    let bw = read_bandwidth(&pool);
    println!("read bandwidth: {bw:.1} GB/s");
    for dot in dot_modes() {
        let peak = kernel_peak_gflops(threads(), simd_level(), true, dot);
        println!(
            "kernel peak, bf16 weights, {} threads: {peak:.1} GFLOP/s{}",
            threads(),
            tag(dot)
        );
    }
    if !std::env::args().any(|a| a == "model") {
        gemv_bench(&pool, bw);
        kernel_peak_bench(bw);
    }
    if quick {
        return Ok(());
    }
    let modes: Vec<bool> = match std::env::var("MINDIE_CPU_BF16_DOT").ok() {
        Some(_) => vec![knobs().bf16_dot],
        None => dot_modes(),
    };
    for dot in modes {
        println!("== model, {} ==", if dot { "bf16-dot" } else { "exact" });
        let r = model_bench(bw, dot)?;
        summary(bw, &r, dot)?;
    }
    Ok(())
}

fn summary(bw: f64, r: &ModelResults, dot: bool) -> Result<(), Box<dyn std::error::Error>> {
    let bound = bw * 1e9 / r.weight_bytes as f64;
    println!("== summary{} ==", tag(dot));
    println!("DRAM read bandwidth: {bw:.1} GB/s");
    println!(
        "bound (bandwidth / {:.3} GB of bf16 weights per token): {bound:.1} tok/s",
        r.weight_bytes as f64 / 1e9
    );
    println!(
        "batch-1 decode: {:.1} tok/s = {:.0}% of bound",
        r.b1_tok_s,
        r.b1_tok_s / bound * 100.0
    );
    println!("concurrency-16 decode: {:.1} tok/s", r.c16_tok_s);
    println!("prefill 16x{}: {:.0} tok/s", r.prompt, r.prefill_tok_s);
    // The exact path's summary at `BENCH_JSON`, the dot path's next to it (`…-bf16-dot`).
    if let Some(mut path) = std::env::var_os("BENCH_JSON") {
        if dot {
            path.push("-bf16-dot");
        }
        let json = serde_json::json!({
            "threads": threads(),
            "kernels": format!("{:?}{}", simd_level(), tag(dot)),
            "dram_read_gb_s": bw,
            "weight_bytes_per_token": r.weight_bytes,
            "bound_tok_s": bound,
            "batch1_tok_s": r.b1_tok_s,
            "batch1_pct_of_bound": r.b1_tok_s / bound * 100.0,
            "c16_tok_s": r.c16_tok_s,
            "prompt_tokens": r.prompt,
            "prefill_c16_tok_s": r.prefill_tok_s,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
