//! A model split across processes by [`LayerShare`]: backends each holding a share, chained
//! over a prefill of two sequences and a decode step, give the whole model's logits; a share
//! reads, counts and allocates only what it holds; stages and steps it cannot run are refused.

use super::model::Model;
use super::stage_tests::{decode, prefill};
use super::weights::WeightStore;
use super::{
    layer_weight_bytes, CpuBackend, CpuOptions, HfModelConfig, LayerShare, Stage, StageInput,
    StageOutput,
};
use crate::backend::{Backend, BackendError, StepBatch, StepOutput};
use std::ops::Range;
use std::path::{Path, PathBuf};

const MODELS: [&str; 5] = [
    "tiny-llama",
    "tiny-llama-bf16",
    "tiny-qwen2",
    "tiny-qwen2-bf16",
    "tiny-qwen2-untied",
];

/// The KV budget of every backend here (whole or share).
const BUDGET: usize = 1 << 20;

fn dir(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(model)
}

fn try_load(model: &str, share: Option<LayerShare>) -> Result<CpuBackend, BackendError> {
    let opts = CpuOptions {
        kv_cache_bytes: BUDGET,
        block_size: 4,
        threads: 1,
        share,
        ..CpuOptions::default()
    };
    CpuBackend::load(&dir(model), opts)
}

fn load(model: &str, share: Option<LayerShare>) -> CpuBackend {
    try_load(model, share).expect("model loads")
}

fn share(layers: Range<usize>, ends: bool) -> Option<LayerShare> {
    Some(LayerShare { layers, ends })
}

/// The pipeline cut at `cuts` (ascending layer indices): the first backend holds the ends and
/// layers `0..cuts[0]`, each next one the layers up to the next cut (the last up to the end).
fn pipeline(model: &str, layers: usize, cuts: &[usize]) -> Vec<CpuBackend> {
    let mut bounds = cuts.to_vec();
    bounds.push(layers);
    let mut nodes = vec![load(model, share(0..bounds[0], true))];
    for w in bounds.windows(2) {
        nodes.push(load(model, share(w[0]..w[1], false)));
    }
    nodes
}

fn stage<'a>(b: &mut CpuBackend, batch: &StepBatch, s: Stage<'a>) -> StageOutput {
    b.step_stage(batch, s).expect("stage runs")
}

/// One step through the pipeline: the first node embeds and runs its layers, the others run
/// theirs on the hidden states, and the first turns the last hidden states into logits (its
/// empty range at the end of its layers).
fn run(nodes: &mut [CpuBackend], batch: &StepBatch) -> StepOutput {
    let Some((first, rest)) = nodes.split_first_mut() else {
        panic!("a pipeline has a node");
    };
    let mine = first.share().layers.clone();
    let tokens = Stage {
        layers: mine.clone(),
        input: StageInput::Tokens,
        logits: false,
    };
    let StageOutput::Hidden(mut x) = stage(first, batch, tokens) else {
        panic!("hidden states asked for");
    };
    for node in rest {
        let s = Stage {
            layers: node.share().layers.clone(),
            input: StageInput::Hidden(&x),
            logits: false,
        };
        let StageOutput::Hidden(next) = stage(node, batch, s) else {
            panic!("hidden states asked for");
        };
        x = next;
    }
    let to_logits = Stage {
        layers: mine.end..mine.end,
        input: StageInput::Hidden(&x),
        logits: true,
    };
    match stage(first, batch, to_logits) {
        StageOutput::Logits(out) => out,
        StageOutput::Hidden(_) => panic!("logits asked for"),
    }
}

fn assert_close(got: &StepOutput, want: &StepOutput, what: &str) {
    assert_eq!(got.seq_indices, want.seq_indices, "{what}");
    assert_eq!(got.vocab_size, want.vocab_size, "{what}");
    assert_eq!(got.logits.len(), want.logits.len(), "{what}");
    let worst = got
        .logits
        .iter()
        .zip(&want.logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= 1e-6, "{what}: logits differ by {worst}");
}

#[test]
fn shares_chained_equal_the_whole_model() {
    for model in MODELS {
        let mut whole = load(model, None);
        let layers = whole.info().num_layers;
        assert!(layers >= 2, "{model}: a split needs two layers");
        let want = [
            whole.step(&prefill()).expect("prefill"),
            whole.step(&decode()).expect("decode"),
        ];
        // Two nodes (the first with a layer, or with the ends only), three nodes.
        for cuts in [vec![1], vec![0], vec![0, 1]] {
            let mut nodes = pipeline(model, layers, &cuts);
            for (batch, want, name) in [
                (prefill(), &want[0], "prefill"),
                (decode(), &want[1], "decode"),
            ] {
                let got = run(&mut nodes, &batch);
                assert_close(&got, want, &format!("{model} cut at {cuts:?}, {name}"));
            }
        }
    }
}

#[test]
fn kv_of_a_share_moves_to_the_same_share_only() {
    let model = "tiny-qwen2";
    let mut whole = load(model, None);
    let want = [
        whole.step(&prefill()).expect("prefill"),
        whole.step(&decode()).expect("decode"),
    ];
    let mut nodes = pipeline(model, 2, &[1]);
    run(&mut nodes, &prefill());
    // Fresh nodes of the same shares get the prefill's KV by export/import, then decode.
    let mut fresh = pipeline(model, 2, &[1]);
    let ids = [0, 1, 2];
    for (from, to) in nodes.iter().zip(fresh.iter_mut()) {
        let kv = from.export_blocks(&ids).expect("export");
        assert_eq!(kv.bytes_per_block, from.info().bytes_per_block);
        to.import_blocks(&ids, &kv).expect("same share imports");
    }
    assert_close(&run(&mut fresh, &decode()), &want[1], "decode after import");
    // A share's KV is not a whole model's, nor another share's, and the other way round.
    let from_share = nodes[1].export_blocks(&ids).expect("export");
    assert!(matches!(
        whole.import_blocks(&ids, &from_share),
        Err(BackendError::KvCache(_))
    ));
    assert!(nodes[0].import_blocks(&ids, &from_share).is_err());
    let from_whole = whole.export_blocks(&ids).expect("export");
    assert!(nodes[1].import_blocks(&ids, &from_whole).is_err());
}

#[test]
fn a_share_holds_its_part_of_the_weights_and_kv() {
    for model in MODELS {
        let whole = load(model, None);
        let first = load(model, share(0..1, true));
        let middle = load(model, share(1..2, false));
        let (w, f, m) = (whole.info(), first.info(), middle.info());
        assert_eq!(w.held_layers, 0..2, "{model}");
        assert_eq!(f.held_layers, 0..1, "{model}");
        assert_eq!(m.held_layers, 1..2, "{model}");
        assert!(w.num_layers == 2 && f.num_layers == 2 && m.num_layers == 2);
        assert!(f.weight_bytes < w.weight_bytes && m.weight_bytes < w.weight_bytes);
        assert_eq!(f.weight_bytes + m.weight_bytes, w.weight_bytes, "{model}");
        // The middle share holds one layer and never the embedding or LM head.
        let (layer, ends) = layer_weight_bytes(whole.spec(), w.dtype);
        assert_eq!(m.weight_bytes, layer, "{model}");
        assert_eq!(f.weight_bytes, layer + ends, "{model}");
        // Half the layers: half the block, twice the blocks for the same budget.
        assert_eq!(m.bytes_per_block * 2, w.bytes_per_block, "{model}");
        assert_eq!(f.bytes_per_block * 2, w.bytes_per_block, "{model}");
        assert_eq!(m.num_blocks, 2 * w.num_blocks, "{model}");
        assert_eq!(m.kv_layout, format!("{};layers=1..2", w.kv_layout));
        assert_eq!(f.kv_layout, format!("{};layers=0..1", w.kv_layout));
        // A share of all layers with the ends is the whole model.
        let all = load(model, share(0..2, true));
        assert_eq!(all.info(), w);
        // The ends alone: no KV, a block count the budget buys at one layer.
        let ends_only = load(model, share(0..0, true));
        assert_eq!(ends_only.info().weight_bytes, ends, "{model}");
        assert_eq!(ends_only.info().bytes_per_block, 0, "{model}");
        assert_eq!(ends_only.info().num_blocks, m.num_blocks, "{model}");
    }
}

#[test]
fn a_middle_share_never_opens_the_embedding() {
    for model in ["tiny-llama", "tiny-qwen2"] {
        let spec = HfModelConfig::load(&dir(model)).expect("config");
        let store = WeightStore::open(&dir(model)).expect("weights");
        let middle = LayerShare {
            layers: 1..2,
            ends: false,
        };
        Model::load(spec, &store, &middle, false).expect("share loads");
        let opened = store.opened();
        assert!(!opened.is_empty());
        assert!(
            opened.iter().all(|n| n.starts_with("model.layers.1.")),
            "{model}: opened {opened:?}"
        );
        store.prefault();
    }
}

/// Stored bytes per tensor, read from the safetensors header directly.
fn tensor_bytes(model: &str) -> Vec<(String, u64)> {
    let raw = std::fs::read(dir(model).join("model.safetensors")).expect("read");
    let mut len = [0u8; 8];
    len.copy_from_slice(&raw[..8]);
    let n = u64::from_le_bytes(len) as usize;
    let header: serde_json::Value = serde_json::from_slice(&raw[8..8 + n]).expect("header");
    let obj = header.as_object().expect("object");
    obj.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = &v["data_offsets"];
            let (a, b) = (
                o[0].as_u64().expect("offset"),
                o[1].as_u64().expect("offset"),
            );
            (k.clone(), b - a)
        })
        .collect()
}

#[test]
fn layer_weight_bytes_match_the_stored_tensors() {
    for model in MODELS {
        let b = load(model, None);
        let (layer, ends) = layer_weight_bytes(b.spec(), b.info().dtype);
        let tensors = tensor_bytes(model);
        let sum = |f: &dyn Fn(&str) -> bool| -> u64 {
            tensors.iter().filter(|(n, _)| f(n)).map(|(_, b)| b).sum()
        };
        assert_eq!(layer, sum(&|n| n.starts_with("model.layers.0.")), "{model}");
        assert_eq!(layer, sum(&|n| n.starts_with("model.layers.1.")), "{model}");
        let tied = b.spec().tie_word_embeddings;
        let want_ends = sum(&|n| {
            n == "model.embed_tokens.weight"
                || n == "model.norm.weight"
                || (n == "lm_head.weight" && !tied)
        });
        assert_eq!(ends, want_ends, "{model}");
        assert_eq!(b.info().weight_bytes, 2 * layer + ends, "{model}");
    }
}

#[test]
fn stages_a_share_cannot_run_are_refused() {
    let batch = prefill();
    let h = 64;
    let x = vec![0.0; batch.tokens.len() * h];
    let mut middle = load("tiny-llama", share(1..2, false));
    let refused = |b: &mut CpuBackend, s: Stage<'_>, says: &str| match b.step_stage(&batch, s) {
        Err(BackendError::InvalidBatch(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected a refusal saying `{says}`, got {other:?}"),
    };
    let tokens = Stage {
        layers: 1..2,
        input: StageInput::Tokens,
        logits: false,
    };
    refused(&mut middle, tokens, "token embedding");
    let logits = Stage {
        layers: 1..2,
        input: StageInput::Hidden(&x),
        logits: true,
    };
    refused(&mut middle, logits, "LM head");
    let before = Stage {
        layers: 0..2,
        input: StageInput::Hidden(&x),
        logits: false,
    };
    refused(&mut middle, before, "outside the held layers");
    let mut first = load("tiny-llama", share(0..1, true));
    let after = Stage {
        layers: 1..2,
        input: StageInput::Hidden(&x),
        logits: false,
    };
    refused(&mut first, after, "holds layers 0..1");
    // The empty range at either end of the held layers is fine.
    for at in [0..0, 1..1] {
        let empty = Stage {
            layers: at,
            input: StageInput::Hidden(&x),
            logits: false,
        };
        assert!(first.step_stage(&batch, empty).is_ok());
    }
    for b in [&mut middle, &mut first] {
        match b.step(&batch) {
            Err(e @ BackendError::Unsupported(_)) => {
                assert!(e.to_string().contains("only"), "{e}")
            }
            other => panic!("a partial backend's step must be refused, got {other:?}"),
        }
    }
}

#[test]
fn shares_the_model_cannot_give_are_refused_at_load() {
    for (bad, says) in [
        (share(0..3, true), "0..3"),
        (share(2..3, false), "2..3"),
        (share(1..1, false), "holds no layers"),
    ] {
        match try_load("tiny-llama", bad) {
            Err(e @ BackendError::Config(_)) => {
                let m = e.to_string();
                assert!(m.contains(says) && m.contains("2"), "{m}");
            }
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("share `{says}` loaded"),
        }
    }
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = share(2..1, true);
    assert!(matches!(
        try_load("tiny-llama", reversed),
        Err(BackendError::Config(_))
    ));
}
