//! Which part of a model one process holds when a model is split by layers across machines
//! (a pipeline, issue 13): a contiguous range of decoder layers, plus or minus the "ends" (token
//! embedding, final norm, LM head). [`LayerShare`] is checked against the model at load
//! ([`LayerShare::check`]); [`layer_weight_bytes`] tells a planner what each part weighs, so it
//! can balance layers across nodes by bytes.

use std::ops::Range;

use super::hf_config::HfModelConfig;
use crate::backend::{BackendError, DType};

/// Which part of the model a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerShare {
    /// Decoder layers held, by global index.
    pub layers: Range<usize>,
    /// Holds the token embedding, the final norm and the LM head (the master's share in our
    /// pipeline: it embeds and samples).
    pub ends: bool,
}

impl LayerShare {
    /// The whole model of `layers` decoder layers.
    pub fn whole(layers: usize) -> Self {
        Self {
            layers: 0..layers,
            ends: true,
        }
    }

    /// Holds every layer and the ends of a model of `layers` decoder layers.
    pub fn is_whole(&self, layers: usize) -> bool {
        self.ends && self.layers == (0..layers)
    }

    /// Refuses a share that a model of `model_layers` decoder layers cannot give: a range
    /// reaching past the last layer or reversed, or no layers and no ends (nothing to hold).
    pub fn check(&self, model_layers: usize) -> Result<(), BackendError> {
        let r = &self.layers;
        if r.start > r.end || r.end > model_layers {
            return Err(BackendError::Config(format!(
                "layer share {r:?} is outside the model's layers 0..{model_layers} \
                 ({model_layers} decoder layers)"
            )));
        }
        if r.is_empty() && !self.ends {
            return Err(BackendError::Config(format!(
                "layer share {r:?} holds no layers and not the ends (embedding, LM head); the \
                 model has {model_layers} decoder layers: give a non-empty range within \
                 0..{model_layers} or set `ends`"
            )));
        }
        Ok(())
    }
}

/// Bytes of the weights, as stored in `dtype`: `(one decoder layer, embedding + final norm +
/// LM head)`, the LM head counted only when it is not tied to the embedding. Every tensor is
/// assumed stored in `dtype` (HF checkpoints store norms and biases in the model's dtype).
pub fn layer_weight_bytes(spec: &HfModelConfig, dtype: DType) -> (u64, u64) {
    let (h, inter) = (spec.hidden as u64, spec.intermediate as u64);
    let (qd, kvd) = (spec.q_dim() as u64, spec.kv_dim() as u64);
    let bias = |on: bool, n: u64| if on { n } else { 0 };
    let attention =
        qd * h + 2 * kvd * h + h * qd + bias(spec.qkv_bias, qd + 2 * kvd) + bias(spec.o_bias, h);
    let mlp = 3 * inter * h + bias(spec.mlp_bias, 2 * inter + h);
    let norms = 2 * h;
    let layer = attention + mlp + norms;
    let embed = spec.vocab as u64 * h;
    let ends = embed + h + if spec.tie_word_embeddings { 0 } else { embed };
    let size = dtype.size_bytes() as u64;
    (layer * size, ends * size)
}
