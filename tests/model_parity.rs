//! Model parity: the CPU backend against the HF `transformers` references in
//! `tests/fixtures/refs/` (greedy tokens identical, top-5 logprobs within 1e-4), alone, batched,
//! with chunked prefill mixed with decode, for f32 and bf16 weights, over several block sizes.
//! A small greedy loop and block allocator stand in for the scheduler and block manager.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use mindie::backend::cpu::{CpuBackend, CpuKnobs, CpuOptions};
use mindie::backend::{Backend, BackendError, SeqSlice, StepBatch};
use mindie::config::Env;
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct RefStep {
    id: u32,
    top: Vec<(u32, f64)>,
}

struct RefCase {
    name: String,
    prompt_ids: Vec<u32>,
    steps: Vec<RefStep>,
    finish_reason: String,
}

struct Refs {
    max_new_tokens: usize,
    eos: Vec<u32>,
    cases: Vec<RefCase>,
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn load_refs(model: &str) -> Refs {
    let path = fixtures().join("refs").join(format!("{model}.json"));
    let text = std::fs::read_to_string(&path).expect("reference file");
    let v: Value = serde_json::from_str(&text).expect("reference JSON");
    let cases = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| RefCase {
            name: c["name"].as_str().expect("name").to_string(),
            prompt_ids: ids(&c["prompt_ids"]),
            finish_reason: c["finish_reason"]
                .as_str()
                .expect("finish_reason")
                .to_string(),
            steps: c["steps"]
                .as_array()
                .expect("steps")
                .iter()
                .map(|s| RefStep {
                    id: s["id"].as_u64().expect("step id") as u32,
                    top: s["top"]
                        .as_array()
                        .expect("top")
                        .iter()
                        .map(|t| {
                            (
                                t["id"].as_u64().expect("id") as u32,
                                t["logprob"].as_f64().expect("lp"),
                            )
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Refs {
        max_new_tokens: v["max_new_tokens"].as_u64().expect("max_new_tokens") as usize,
        eos: ids(&v["eos_token_ids"]),
        cases,
    }
}

fn load(model_dir: &str, block_size: usize) -> CpuBackend {
    let opts = CpuOptions {
        kv_cache_bytes: 4 << 20,
        block_size,
        threads: 2,
        prefault_weights: true,
        knobs: CpuKnobs {
            bf16_dot: false,
            ..CpuKnobs::from_env(&Env::from_process())
        },
        share: None,
    };
    CpuBackend::load(&fixtures().join("models").join(model_dir), opts).expect("model loads")
}

/// How the in-test scheduler feeds sequences.
#[derive(Clone, Copy)]
struct Policy {
    /// Most prompt tokens one sequence gets per step (`None`: the whole prompt at once).
    chunk: Option<usize>,
    /// Sequence `i` joins at step `i * stagger`.
    stagger: usize,
}

const WHOLE: Policy = Policy {
    chunk: None,
    stagger: 0,
};

struct Seq {
    case: usize,
    tokens: Vec<u32>,
    in_kv: usize,
    blocks: Vec<u32>,
    generated: usize,
    done: bool,
    joins_at: usize,
}

#[derive(Default)]
struct Outcome {
    max_err: f64,
    failures: Vec<String>,
    /// Per case, every logits row in order (for bit-identity across configurations).
    logits: Vec<Vec<Vec<f32>>>,
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// Greedy pick (ties → lowest id, like the reference).
fn argmax(lp: &[f64]) -> u32 {
    let mut best = 0;
    for (i, &v) in lp.iter().enumerate() {
        if v > lp[best] {
            best = i;
        }
    }
    best as u32
}

fn check_step(out: &mut Outcome, case: &RefCase, step: usize, logits: &[f32], eos: &[u32]) -> u32 {
    let lp = log_softmax(logits);
    let want = &case.steps[step];
    let got = argmax(&lp);
    let tag = format!("{} step {step}", case.name);
    if got != want.id {
        out.failures
            .push(format!("{tag}: greedy id {got}, reference {}", want.id));
    }
    let mut ranked: Vec<f64> = lp.clone();
    ranked.sort_by(|a, b| b.total_cmp(a));
    for (rank, &(id, ref_lp)) in want.top.iter().enumerate() {
        let at_id = (lp[id as usize] - ref_lp).abs();
        let at_rank = (ranked[rank] - ref_lp).abs();
        out.max_err = out.max_err.max(at_id).max(at_rank);
        if at_id > TOLERANCE || at_rank > TOLERANCE {
            out.failures.push(format!(
                "{tag}: id {id} logprob {:.6} (rank value {:.6}), reference {ref_lp:.6}",
                lp[id as usize], ranked[rank]
            ));
        }
    }
    let last = step + 1 == case.steps.len();
    let stopped = eos.contains(&want.id);
    if stopped != (last && case.finish_reason == "stop") {
        out.failures.push(format!(
            "{tag}: eos {stopped} disagrees with the reference's finish"
        ));
    }
    // Continue with the reference token so later steps stay comparable after a failure.
    want.id
}

/// Runs `cases` of `refs` on `backend` under `policy` with a little block allocator.
fn run(backend: &mut CpuBackend, refs: &Refs, cases: &[usize], policy: Policy) -> Outcome {
    let info = backend.info().clone();
    assert_eq!(
        info.eos_token_ids.len(),
        refs.eos.len(),
        "eos ids from generation_config"
    );
    assert!(refs.eos.iter().all(|e| info.eos_token_ids.contains(e)));
    let bs = info.block_size;
    // Free blocks in a scrambled order; freed blocks are reused first.
    let n = info.num_blocks;
    let stride = (1..n)
        .rev()
        .find(|s| gcd(*s, n) == 1 && *s < n / 2 + 1)
        .unwrap_or(1);
    let mut free: VecDeque<u32> = (0..n).map(|i| ((i * stride) % n) as u32).collect();
    let mut seqs: Vec<Seq> = cases
        .iter()
        .enumerate()
        .map(|(i, &c)| Seq {
            case: c,
            tokens: refs.cases[c].prompt_ids.clone(),
            in_kv: 0,
            blocks: Vec::new(),
            generated: 0,
            done: false,
            joins_at: i * policy.stagger,
        })
        .collect();
    let mut out = Outcome {
        logits: vec![Vec::new(); refs.cases.len()],
        ..Outcome::default()
    };
    let mut step_no = 0;
    while seqs.iter().any(|s| !s.done) {
        let mut batch = StepBatch::default();
        let mut members = Vec::new();
        for (si, s) in seqs.iter_mut().enumerate() {
            if s.done || s.joins_at > step_no {
                continue;
            }
            let pending = s.tokens.len() - s.in_kv;
            let take = policy.chunk.map_or(pending, |c| c.min(pending));
            let ctx = s.in_kv + take;
            while s.blocks.len() * bs < ctx {
                s.blocks
                    .push(free.pop_front().expect("test KV pool large enough"));
            }
            let start = batch.tokens.len();
            batch.tokens.extend_from_slice(&s.tokens[s.in_kv..ctx]);
            batch.positions.extend((s.in_kv..ctx).map(|p| p as u32));
            batch.seqs.push(SeqSlice {
                token_range: start..start + take,
                context_len: ctx,
                block_table: s.blocks.clone(),
                want_logits: ctx == s.tokens.len(),
            });
            members.push(si);
        }
        step_no += 1;
        if members.is_empty() {
            continue;
        }
        let res = backend.step(&batch).expect("step runs");
        for (bi, &si) in members.iter().enumerate() {
            let s = &mut seqs[si];
            s.in_kv = batch.seqs[bi].context_len;
            let Some(row) = res.for_seq(bi) else {
                assert!(!batch.seqs[bi].want_logits, "logits missing");
                continue;
            };
            assert_eq!(row.len(), info.vocab_size);
            let case = &refs.cases[s.case];
            out.logits[s.case].push(row.to_vec());
            let next = check_step(&mut out, case, s.generated, row, &info.eos_token_ids);
            s.generated += 1;
            s.tokens.push(next);
            let stop = info.eos_token_ids.contains(&next) || s.generated == refs.max_new_tokens;
            if stop || s.generated == case.steps.len() {
                if s.generated != case.steps.len() || !stop {
                    out.failures
                        .push(format!("{}: stopped after {}", case.name, s.generated));
                }
                s.done = true;
                for b in s.blocks.drain(..).rev() {
                    free.push_front(b);
                }
            }
        }
    }
    out
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn assert_ok(label: &str, out: &Outcome) {
    println!("{label}: max |Δlogprob| = {:.2e}", out.max_err);
    assert!(
        out.failures.is_empty(),
        "{label}: {} mismatches, first ones:\n{}",
        out.failures.len(),
        out.failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn all(refs: &Refs) -> Vec<usize> {
    (0..refs.cases.len()).collect()
}

fn each_case_alone(model_dir: &str, refs_name: &str) {
    let refs = load_refs(refs_name);
    let mut backend = load(model_dir, 16);
    let mut total = Outcome::default();
    for c in 0..refs.cases.len() {
        let out = run(&mut backend, &refs, &[c], WHOLE);
        total.max_err = total.max_err.max(out.max_err);
        total.failures.extend(out.failures);
    }
    assert_ok(&format!("{model_dir} alone"), &total);
}

fn batched_and_chunked(model_dir: &str, refs_name: &str) {
    let refs = load_refs(refs_name);
    let mut reference: Option<Outcome> = None;
    for bs in [1, 4, 16] {
        let mut backend = load(model_dir, bs);
        let batched = run(&mut backend, &refs, &all(&refs), WHOLE);
        assert_ok(&format!("{model_dir} one batch, block size {bs}"), &batched);
        let policy = Policy {
            chunk: Some(3),
            stagger: 2,
        };
        let chunked = run(&mut backend, &refs, &all(&refs), policy);
        assert_ok(
            &format!("{model_dir} chunked prefill + decode, block size {bs}"),
            &chunked,
        );
        // Same schedule, different block size: the same arithmetic, so bit-identical logits.
        match &reference {
            None => reference = Some(batched),
            Some(r) => assert!(
                r.logits == batched.logits,
                "block size {bs} changed the logits"
            ),
        }
    }
}

#[test]
fn llama_each_case_alone() {
    each_case_alone("tiny-llama", "tiny-llama");
}

#[test]
fn qwen2_each_case_alone() {
    each_case_alone("tiny-qwen2", "tiny-qwen2");
}

#[test]
fn llama_bf16_each_case_alone() {
    each_case_alone("tiny-llama-bf16", "tiny-llama");
}

#[test]
fn qwen2_bf16_each_case_alone() {
    each_case_alone("tiny-qwen2-bf16", "tiny-qwen2");
}

#[test]
fn llama_batched_chunked_block_sizes() {
    batched_and_chunked("tiny-llama", "tiny-llama");
}

#[test]
fn qwen2_batched_chunked_block_sizes() {
    batched_and_chunked("tiny-qwen2", "tiny-qwen2");
}

#[test]
fn llama_bf16_batched_chunked_block_sizes() {
    batched_and_chunked("tiny-llama-bf16", "tiny-llama");
}

#[test]
fn qwen2_bf16_batched_chunked_block_sizes() {
    batched_and_chunked("tiny-qwen2-bf16", "tiny-qwen2");
}

/// An untied LM head whose rows past the tokenizer's 2,008 ids are random: HF picks some of
/// those rows (7 greedy steps of the reference), so every row must be a candidate.
#[test]
fn qwen2_untied_each_case_alone() {
    each_case_alone("tiny-qwen2-untied", "tiny-qwen2-untied");
}

#[test]
fn qwen2_untied_batched_chunked_block_sizes() {
    batched_and_chunked("tiny-qwen2-untied", "tiny-qwen2-untied");
}

#[test]
fn backend_info_reflects_the_model() {
    let b = load("tiny-qwen2-bf16", 16);
    let info = b.info();
    assert_eq!(info.architecture, "Qwen2ForCausalLM");
    assert_eq!(info.dtype, mindie::backend::DType::BF16);
    assert_eq!(info.vocab_size, 2048);
    assert_eq!(info.eos_token_ids, vec![2002, 2000]);
    assert_eq!(info.bytes_per_block, 2 * 2 * 2 * 16 * 16 * 4);
    assert_eq!(info.num_blocks, (4 << 20) / info.bytes_per_block);
}

#[test]
fn unsupported_architecture_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixtures().join("models/tiny-llama/config.json");
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(src).expect("config")).expect("json");
    cfg["architectures"] = serde_json::json!(["MistralForCausalLM"]);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write");
    let err = match CpuBackend::load(dir.path(), CpuOptions::default()) {
        Ok(_) => panic!("an unsupported architecture must not load"),
        Err(e) => e,
    };
    assert!(matches!(err, BackendError::Unsupported(_)), "{err:?}");
    let msg = err.to_string();
    for needle in ["MistralForCausalLM", "LlamaForCausalLM", "Qwen2ForCausalLM"] {
        assert!(msg.contains(needle), "`{msg}` should name {needle}");
    }
}

#[test]
fn corrupt_weights_are_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = fixtures().join("models/tiny-llama");
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).expect("copy");
    let weights = std::fs::read(src.join("model.safetensors")).expect("weights");
    for cut in [0, 7, 100, weights.len() / 2] {
        std::fs::write(dir.path().join("model.safetensors"), &weights[..cut]).expect("write");
        let res = CpuBackend::load(dir.path(), CpuOptions::default());
        assert!(matches!(res, Err(BackendError::Weights(_))), "cut at {cut}");
    }
}

#[test]
fn invalid_batches_are_rejected() {
    let mut b = load("tiny-llama", 4);
    let nb = b.info().num_blocks as u32;
    let good = StepBatch {
        tokens: vec![1, 2, 3],
        positions: vec![0, 1, 2],
        seqs: vec![SeqSlice {
            token_range: 0..3,
            context_len: 3,
            block_table: vec![0],
            want_logits: true,
        }],
    };
    assert!(b.step(&good).is_ok());
    let mut bad = vec![good.clone(); 5];
    bad[0].seqs[0].block_table = vec![nb];
    bad[1].positions = vec![0, 1, 3];
    bad[2].tokens[1] = 5000;
    bad[3].seqs[0].token_range = 0..4;
    bad[4].seqs[0].context_len = 9;
    for (i, batch) in bad.iter().enumerate() {
        assert!(
            matches!(b.step(batch), Err(BackendError::InvalidBatch(_))),
            "case {i}"
        );
    }
}

/// Prefill on one backend, move the blocks (PD handoff), decode on another.
#[test]
fn exported_blocks_decode_the_same_elsewhere() {
    let refs = load_refs("tiny-qwen2");
    let case = &refs.cases[2];
    let prompt = &case.prompt_ids;
    let mut p = load("tiny-qwen2", 4);
    let mut d = load("tiny-qwen2", 4);
    let src: Vec<u32> = (0..prompt.len().div_ceil(4) as u32)
        .map(|i| 2 * i + 1)
        .collect();
    let prefill = StepBatch {
        tokens: prompt.clone(),
        positions: (0..prompt.len() as u32).collect(),
        seqs: vec![SeqSlice {
            token_range: 0..prompt.len(),
            context_len: prompt.len(),
            block_table: src.clone(),
            want_logits: true,
        }],
    };
    p.step(&prefill).expect("prefill");
    let dst: Vec<u32> = (0..src.len() as u32 + 1).map(|i| 40 + 3 * i).collect();
    let chunk = p.export_blocks(&src).expect("export");
    d.import_blocks(&dst[..src.len()], &chunk).expect("import");
    let decode = StepBatch {
        tokens: vec![case.steps[0].id],
        positions: vec![prompt.len() as u32],
        seqs: vec![SeqSlice {
            token_range: 0..1,
            context_len: prompt.len() + 1,
            block_table: dst,
            want_logits: true,
        }],
    };
    let out = d.step(&decode).expect("decode");
    let lp = log_softmax(out.row(0));
    assert_eq!(argmax(&lp), case.steps[1].id);
    for &(id, want) in &case.steps[1].top {
        assert!((lp[id as usize] - want).abs() < TOLERANCE);
    }
}
