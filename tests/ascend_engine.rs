//! The Ascend backend on the emulated CANN (`tests/emuacl`), through the whole engine
//! (scheduler, sampler, event streams): both fixture models reproduce the HF references —
//! greedy tokens identical, top-5 logprobs within 1e-4 in the emulator's f32 mode — on one
//! device and split over two (tensor parallel, HCCL all-reduce), all cases batched, again
//! with prefix-cache hits; under preemption equal to the CPU backend; every KV block comes
//! back. KV export/import
//! is checked against the CPU backend's cache contents and across tensor-parallel degrees,
//! and the emulator's trace shows the work went through aclnn and HCCL.
//!
//! Everything here is emulated: it proves the calls, shapes, layouts and plumbing against
//! CANN's documented contract, not NPU numerics or speed.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::engine_refs::{check_streams, ref_requests};
use common::{dot_accuracy, emuacl};
use mindie::backend::ascend::{AscendBackend, AscendOptions, CannSearch, DtypeChoice};
use mindie::backend::cpu::{CpuBackend, CpuOptions};
use mindie::backend::{Backend, DType, SeqSlice, StepBatch};
use mindie::engine::core::Engine;
use mindie::engine::{EngineHandle, EngineMonitor, GenRequest};
use mindie::scheduler::{Scheduler, SchedulerLimits, Template};
use serde_json::Value;

const BLOCK: usize = 128;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The emulator's environment, set once before any backend loads CANN (it reads it at
/// `aclInit`): f32 mode and a trace file. (Backends of parallel tests share the emulated
/// devices, so each takes a fixed 1 GiB of KV rather than a share of what is free.)
fn trace() -> &'static Path {
    static TRACE: OnceLock<PathBuf> = OnceLock::new();
    TRACE.get_or_init(|| {
        emuacl::home();
        let trace = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("ascend-engine-trace-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&trace);
        std::env::set_var("EMUACL_F32", "1");
        std::env::set_var("EMUACL_TRACE", &trace);
        trace
    })
}

fn options(model: &str, tp: u32) -> AscendOptions {
    trace();
    AscendOptions {
        model_dir: fixtures().join("models").join(model),
        search: CannSearch {
            libs: None,
            homes: vec![
                ("ASCEND_TOOLKIT_HOME", Some(emuacl::home().to_path_buf())),
                ("ASCEND_HOME_PATH", None),
            ],
        },
        device_ids: (0..tp).collect(),
        mem_size_gb: 1,
        block_size: BLOCK,
        dtype: DtypeChoice::Fixed(DType::F32),
        fallback_ops: false,
    }
}

/// An engine over the Ascend backend; `blocks` caps the scheduler's pool (to force
/// preemption).
fn engine(
    model: &str,
    tp: u32,
    template: Template,
    blocks: Option<usize>,
) -> (EngineHandle, usize) {
    engine_with(options(model, tp), template, blocks)
}

fn engine_with(
    opts: AscendOptions,
    template: Template,
    blocks: Option<usize>,
) -> (EngineHandle, usize) {
    let tp = opts.device_ids.len();
    let backend = AscendBackend::load(opts).expect("load on the emulated CANN");
    let info = backend.info().clone();
    assert!(
        info.device.contains("EMULATED") && info.device.contains(&format!("x{tp}")),
        "{}",
        info.device
    );
    let num_blocks = blocks.unwrap_or(info.num_blocks).min(info.num_blocks);
    let cfg = SchedulerLimits {
        template,
        block_size: BLOCK,
        num_blocks,
        max_prefill_tokens: 64,
        max_preempt_count: 16,
        max_queue_delay: Duration::from_micros(500),
        ..SchedulerLimits::default()
    };
    let (h, _join) = Engine::spawn(Scheduler::new(cfg).unwrap(), Box::new(backend)).unwrap();
    (h, num_blocks)
}

fn refs(model: &str) -> Value {
    serde_json::from_slice(
        &std::fs::read(fixtures().join("refs").join(format!("{model}.json"))).unwrap(),
    )
    .unwrap()
}

/// All reference cases at once, checked; then the engine idle with every block back.
async fn run_refs(model: &str, h: &EngineHandle, blocks: usize) {
    let subs = ref_requests(&refs(model))
        .into_iter()
        .map(|(case, req)| (case, h.submit(req).unwrap()))
        .collect();
    check_streams(model, subs).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = h.status();
    assert_eq!((st.running, st.waiting), (0, 0));
    assert_eq!(
        st.free_npu_blocks, blocks,
        "every block back (free or cached-idle)"
    );
}

/// Batched, then the same again with the prompts' full blocks in the prefix cache.
async fn parity(model: &str, tp: u32, template: Template) {
    let (h, blocks) = engine(model, tp, template, None);
    run_refs(model, &h, blocks).await;
    let before = h.status().prefix_hit_tokens;
    run_refs(model, &h, blocks).await;
    let hit = h.status().prefix_hit_tokens - before;
    assert!(
        hit >= BLOCK as u64,
        "the second round reused cached blocks: {hit} tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_one_device_matches_hf() {
    parity("tiny-llama", 1, Template::Standard).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_two_devices_tensor_parallel_matches_hf() {
    parity("tiny-llama", 2, Template::Mix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen2_one_device_matches_hf() {
    parity("tiny-qwen2", 1, Template::Mix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen2_two_devices_tensor_parallel_matches_hf() {
    parity("tiny-qwen2", 2, Template::Standard).await;
}

/// The fallback operators (`aclnnApplyRotaryPosEmbV2` with gathered cos/sin rows,
/// `aclnnInplaceIndexCopy` into the cache) give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_operators_match_hf() {
    for (model, tp) in [("tiny-qwen2", 2), ("tiny-llama", 1)] {
        let opts = AscendOptions {
            fallback_ops: true,
            ..options(model, tp)
        };
        let (h, blocks) = engine_with(opts, Template::Mix, None);
        run_refs(model, &h, blocks).await;
    }
    let t = trace();
    assert!(emuacl::trace_count(t, "aclnnApplyRotaryPosEmbV2") > 0);
    assert!(emuacl::trace_count(t, "aclnnInplaceIndexCopy") > 0);
}

/// Four 100-token prompts generating 180 tokens each (three blocks of 128 in the end) on a
/// pool of 6 blocks: three are admitted (the scheduler keeps one free block per running
/// sequence when admitting), they take their second blocks together, and at their third the
/// pool is empty, so sequences are preempted and recomputed. Greedy tokens and top-5 logprobs equal the CPU backend's (HF
/// parity, tests/engine_parity.rs) on an unconstrained pool, within 1e-4.
async fn preempted_matches_cpu(model: &str) {
    let template = ref_requests(&refs(model)).remove(0).1;
    let reqs: Vec<GenRequest> = (0..4)
        .map(|i| GenRequest {
            prompt: (0..100)
                .map(|j| ((i * 389 + j * 53) % 1990) as u32 + 7)
                .collect(),
            max_new_tokens: 180,
            ignore_eos: true,
            top_logprobs: Some(5),
            ..template.clone()
        })
        .collect();
    let run = |h: EngineHandle, reqs: Vec<GenRequest>| async move {
        let subs: Vec<_> = reqs.into_iter().map(|r| h.submit(r).unwrap()).collect();
        let mut out = Vec::new();
        for s in subs {
            out.push(dot_accuracy::drain(s).await);
        }
        (h, out)
    };
    let dir = fixtures().join("models").join(model);
    let (cpu, _) = dot_accuracy::engine(&dir, Template::Standard, BLOCK, 16 << 20, false);
    let (_cpu, want) = run(cpu, reqs.clone()).await;
    let (npu, blocks) = engine(model, 2, Template::Standard, Some(6));
    let (npu, got) = run(npu, reqs).await;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_eq!(w.len(), 180);
        let ids = |s: &[dot_accuracy::Step]| s.iter().map(|x| x.id).collect::<Vec<_>>();
        assert_eq!(ids(w), ids(g), "{model} request {i}: greedy tokens");
        for (a, b) in w.iter().zip(g) {
            assert!((a.logprob - b.logprob).abs() < 1e-4, "{model} request {i}");
            for (x, y) in a.top.iter().zip(&b.top) {
                assert!(
                    x.0 == y.0 && (x.1 - y.1).abs() < 1e-4,
                    "{model} request {i}: top"
                );
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = npu.status();
    assert!(
        st.preemptions_total > 0,
        "{model}: the pool was meant to force preemption: {st:?}"
    );
    assert_eq!(st.free_npu_blocks, blocks, "every block back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_preemption_two_devices_match_the_cpu_backend() {
    preempted_matches_cpu("tiny-llama").await;
    preempted_matches_cpu("tiny-qwen2").await;
    let t = trace();
    assert!(emuacl::trace_count(t, "aclnnFusedInferAttentionScoreV3") > 0);
    assert!(emuacl::trace_count(t, "aclnnScatterPaKvCache") > 0);
    assert!(
        emuacl::trace_count(t, "HcclAllReduce") > 0,
        "TP sums went through HCCL"
    );
    assert!(emuacl::trace_count(t, "HcclCommInitAll") > 0);
}

/// One prefill step of `prompt` into block 0 (no logits needed beyond the last token).
fn prefill(backend: &mut dyn Backend, prompt: &[u32]) -> Vec<f32> {
    let batch = StepBatch {
        tokens: prompt.to_vec(),
        positions: (0..prompt.len() as u32).collect(),
        seqs: vec![SeqSlice {
            token_range: 0..prompt.len(),
            context_len: prompt.len(),
            block_table: vec![0],
            want_logits: true,
        }],
    };
    backend.step(&batch).unwrap().logits
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Export/import device ↔ host: the exported block holds what the CPU backend's cache
/// holds for the same prompt (its keys transposed per block, `[head][dim][slot]`; ours
/// `[slot][head][dim]`), a block exported at TP 2 imports at TP 1 (the layout does not
/// depend on the split), and the imported KV continues the sequence as the original does.
#[test]
fn kv_export_import_against_the_cpu_layout() {
    let model = "tiny-qwen2";
    let prompt: Vec<u32> = (0..40).map(|i| (i * 37 % 1900) as u32 + 5).collect();
    let mut npu2 = AscendBackend::load(options(model, 2)).unwrap();
    let mut cpu = CpuBackend::load(
        &fixtures().join("models").join(model),
        CpuOptions {
            kv_cache_bytes: 8 << 20,
            block_size: BLOCK,
            ..CpuOptions::default()
        },
    )
    .unwrap();
    let l_npu = prefill(&mut npu2, &prompt);
    let l_cpu = prefill(&mut cpu, &prompt);
    let worst = l_npu
        .iter()
        .zip(&l_cpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "logits differ by {worst}");

    let ours = npu2.export_blocks(&[0]).unwrap();
    assert!(
        ours.layout.starts_with("ascend-f32-bsnd/l2/h2/d16/b128"),
        "{}",
        ours.layout
    );
    assert_eq!(ours.data.len(), ours.bytes_per_block);
    let theirs = cpu.export_blocks(&[0]).unwrap();
    assert_eq!(
        ours.bytes_per_block, theirs.bytes_per_block,
        "same f32 payload size"
    );
    let (ours_v, theirs_v) = (f32s(&ours.data), f32s(&theirs.data));
    let (heads, dim) = (2, 16);
    let per = BLOCK * heads * dim;
    let mut compared = 0;
    for layer in 0..2 {
        for (which, base) in [(0, 2 * layer * per), (1, (2 * layer + 1) * per)] {
            for slot in 0..prompt.len() {
                for h in 0..heads {
                    for d in 0..dim {
                        let o = ours_v[base + (slot * heads + h) * dim + d];
                        let c = if which == 0 {
                            theirs_v[base + (h * dim + d) * BLOCK + slot]
                        } else {
                            theirs_v[base + (h * BLOCK + slot) * dim + d]
                        };
                        assert!(
                            (o - c).abs() < 1e-4,
                            "layer {layer} kv {which} slot {slot} head {h} dim {d}: {o} vs {c}"
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert_eq!(compared, 2 * 2 * prompt.len() * heads * dim);

    // Into a one-device instance (block 3), then one decode step from it on both.
    let mut npu1 = AscendBackend::load(options(model, 1)).unwrap();
    npu1.import_blocks(&[3], &ours).unwrap();
    assert_eq!(
        npu1.export_blocks(&[3]).unwrap().data,
        ours.data,
        "round trip is exact"
    );
    let next = |b: &mut dyn Backend, block: u32| {
        let batch = StepBatch {
            tokens: vec![77],
            positions: vec![prompt.len() as u32],
            seqs: vec![SeqSlice {
                token_range: 0..1,
                context_len: prompt.len() + 1,
                block_table: vec![block],
                want_logits: true,
            }],
        };
        b.step(&batch).unwrap().logits
    };
    let a = next(&mut npu2, 0);
    let b = next(&mut npu1, 3);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1e-4,
        "continuing from imported KV differs by {worst}"
    );
    // A CPU chunk is refused by its layout tag.
    let err = npu1.import_blocks(&[1], &theirs).unwrap_err().to_string();
    assert!(err.contains("incompatible KV chunk"), "{err}");
}
