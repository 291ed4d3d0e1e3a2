//! A model split by layers gives the same logits as the whole: the stages of
//! [`CpuBackend::step_stage`] chained (tokens → hidden → … → logits) against [`Backend::step`],
//! over a prefill of two sequences and a decode step reading the KV the stages wrote.

use super::{CpuBackend, CpuOptions, Stage, StageInput, StageOutput};
use crate::backend::{Backend, BackendError, SeqSlice, StepBatch, StepOutput};
use std::path::Path;

fn load(model: &str) -> CpuBackend {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models")
        .join(model);
    let opts = CpuOptions {
        kv_cache_bytes: 1 << 20,
        block_size: 4,
        threads: 1,
        ..CpuOptions::default()
    };
    CpuBackend::load(&dir, opts).expect("model loads")
}

/// Two prompts (5 and 3 tokens) in blocks 0–1 and 2.
pub(super) fn prefill() -> StepBatch {
    StepBatch {
        tokens: vec![11, 12, 13, 14, 15, 21, 22, 23],
        positions: vec![0, 1, 2, 3, 4, 0, 1, 2],
        seqs: vec![
            SeqSlice {
                token_range: 0..5,
                context_len: 5,
                block_table: vec![0, 1],
                want_logits: true,
            },
            SeqSlice {
                token_range: 5..8,
                context_len: 3,
                block_table: vec![2],
                want_logits: true,
            },
        ],
    }
}

/// One new token each, attending to the prefill's KV.
pub(super) fn decode() -> StepBatch {
    StepBatch {
        tokens: vec![16, 24],
        positions: vec![5, 3],
        seqs: vec![
            SeqSlice {
                token_range: 0..1,
                context_len: 6,
                block_table: vec![0, 1],
                want_logits: true,
            },
            SeqSlice {
                token_range: 1..2,
                context_len: 4,
                block_table: vec![2],
                want_logits: true,
            },
        ],
    }
}

/// Runs `batch` as consecutive stages cut at `cuts` (layer indices).
fn staged(b: &mut CpuBackend, batch: &StepBatch, cuts: &[usize]) -> StepOutput {
    let layers = b.info().num_layers;
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(layers);
    let mut hidden: Option<Vec<f32>> = None;
    for w in bounds.windows(2) {
        let last = w[1] == layers;
        let stage = Stage {
            layers: w[0]..w[1],
            input: hidden
                .as_deref()
                .map_or(StageInput::Tokens, StageInput::Hidden),
            logits: last,
        };
        match b.step_stage(batch, stage).expect("stage runs") {
            StageOutput::Hidden(x) => hidden = Some(x),
            StageOutput::Logits(out) => return out,
        }
    }
    panic!("the last stage returns logits");
}

#[test]
fn stages_chained_equal_the_whole_forward() {
    for model in ["tiny-llama", "tiny-qwen2-bf16"] {
        let mut whole = load(model);
        let layers = whole.info().num_layers;
        assert!(layers >= 2, "{model}: a split needs two layers");
        let want = [
            whole.step(&prefill()).expect("prefill"),
            whole.step(&decode()).expect("decode"),
        ];
        for cuts in [vec![], vec![1], (1..layers).collect::<Vec<_>>()] {
            let mut split = load(model);
            let got = [
                staged(&mut split, &prefill(), &cuts),
                staged(&mut split, &decode(), &cuts),
            ];
            assert_eq!(got, want, "{model} cut at {cuts:?}: logits differ");
        }
    }
}

#[test]
fn bad_stages_are_refused() {
    let mut b = load("tiny-llama");
    let layers = b.info().num_layers;
    let past = Stage {
        layers: 0..layers + 1,
        input: StageInput::Tokens,
        logits: true,
    };
    assert!(matches!(
        b.step_stage(&prefill(), past),
        Err(BackendError::InvalidBatch(m)) if m.contains("outside")
    ));
    let short = vec![0.0; 7];
    let wrong_hidden = Stage {
        layers: 1..layers,
        input: StageInput::Hidden(&short),
        logits: true,
    };
    assert!(matches!(
        b.step_stage(&prefill(), wrong_hidden),
        Err(BackendError::InvalidBatch(m)) if m.contains("hidden-state input")
    ));
}
