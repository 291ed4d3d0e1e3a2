//! The multi-node pipeline at the engine level, in one process over a real gRPC link: the
//! master's share (embedding, layer 0, final norm, LM head) behind the engine, the slave's
//! (layer 1) in `slave::run` joined through `MasterService` on a loopback port. Every HF
//! reference case submitted at once into a KV pool too small for all of them, so the
//! scheduler preempts and recomputes, and still: greedy tokens identical, logprobs within
//! 1e-4, every block back at the end.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::engine_refs::{check_streams, ref_requests};
use mindie::backend::cpu::{CpuBackend, CpuOptions, LayerShare};
use mindie::backend::Backend;
use mindie::cluster::transport;
use mindie::engine::core::Engine;
use mindie::engine::EngineMonitor;
use mindie::multinode::pipeline::PipelineBackend;
use mindie::multinode::service;
use mindie::multinode::slave::{self, SlaveSettings, SlaveStatus};
use mindie::multinode::slaves::{ModelFacts, SlaveSet, SlaveSpec};
use mindie::scheduler::{Scheduler, SchedulerLimits, Template};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const BLOCK: usize = 4;
/// Enough for the longest case (325 tokens), far fewer than all cases at once need (~850).
const BLOCKS: usize = 96;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn options(share: LayerShare) -> CpuOptions {
    CpuOptions {
        kv_cache_bytes: 4 << 20,
        block_size: BLOCK,
        threads: 1,
        share: Some(share),
        ..CpuOptions::default()
    }
}

async fn pipeline_parity(model: &str) {
    let dir = fixtures().join("models").join(model);
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master = listener.local_addr().unwrap();
    let facts = ModelFacts {
        model_name: model.into(),
        num_layers: 2,
        hidden: 64,
        dtype: String::new(),
        block_size: BLOCK,
    };
    let spec = SlaveSpec {
        addr: "127.0.0.1".parse().unwrap(),
        stage: 1,
        layers: 1..2,
    };
    let set = Arc::new(SlaveSet::new(vec![spec], facts, Duration::from_secs(30)));
    tokio::spawn(transport::serve(
        listener,
        None,
        service::routes(set.clone()),
        stop.clone(),
    ));
    let settings = SlaveSettings {
        local_ip: "127.0.0.1".parse().unwrap(),
        master,
        tls: None,
        model_dir: dir.clone(),
        model_name: model.into(),
        options: options(LayerShare {
            layers: 0..0,
            ends: false,
        }),
        join_window: Duration::from_secs(10),
    };
    let status = SlaveStatus::default();
    tokio::spawn(slave::run(settings, status.clone(), stop.clone(), || {}));
    tokio::time::timeout(
        Duration::from_secs(30),
        set.wait_all_ready(Duration::from_secs(5)),
    )
    .await
    .expect("the slave joins");

    let local = CpuBackend::load(
        &dir,
        options(LayerShare {
            layers: 0..1,
            ends: true,
        }),
    )
    .unwrap();
    assert!(local.info().num_blocks >= BLOCKS);
    let pipeline = PipelineBackend::new(local, set.clone(), BLOCKS);
    let limits = SchedulerLimits {
        template: Template::Standard,
        block_size: BLOCK,
        num_blocks: BLOCKS,
        max_prefill_tokens: 64,
        max_preempt_count: 16,
        max_queue_delay: Duration::from_micros(500),
        ..SchedulerLimits::default()
    };
    let (h, _join) = Engine::spawn(Scheduler::new(limits).unwrap(), Box::new(pipeline)).unwrap();
    let refs: Value = serde_json::from_slice(
        &std::fs::read(fixtures().join("refs").join(format!("{model}.json"))).unwrap(),
    )
    .unwrap();
    let subs = ref_requests(&refs)
        .into_iter()
        .map(|(case, req)| (case, h.submit(req).unwrap()))
        .collect();
    check_streams(model, subs).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let st = h.status();
    assert!(
        st.preemptions_total > 0,
        "the pool was meant to force preemption: {st:?}"
    );
    assert_eq!((st.running, st.waiting), (0, 0));
    assert_eq!(st.free_npu_blocks, BLOCKS, "every block back");
    let steps = status.lock().unwrap().steps;
    assert!(steps > 0, "the slave ran the steps");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_pipeline_batched_with_preemption_matches_hf() {
    pipeline_parity("tiny-llama").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen2_pipeline_batched_with_preemption_matches_hf() {
    pipeline_parity("tiny-qwen2").await;
}
