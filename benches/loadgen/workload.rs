//! What the generator sends: deterministic per-request prompts of exact token length, drawn
//! (seeded) from the ordinary vocabulary of the served model's tokenizer, and the JSON bodies
//! of `/v1/completions` (token-id prompt) and `/v1/chat/completions` (text prompt).
//!
//! Included by `tests/loadgen.rs`.

use std::path::Path;

use mindie::engine::sampler::Rng;

use serde_json::{json, Value};

/// Ids used when no tokenizer is given.
pub const FALLBACK_IDS: std::ops::Range<u32> = 1000..20000;

/// The request shape of a run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub model: String,
    pub prompt_tokens: usize,
    pub output_tokens: u64,
    /// `/v1/chat/completions` with a text prompt instead of `/v1/completions` with ids.
    pub chat: bool,
    /// Send `ignore_eos: true` (and expect exactly `output_tokens` back).
    pub ignore_eos: bool,
    pub seed: u64,
    /// Ids prompts are drawn from (non-empty).
    pub vocab: Vec<u32>,
    /// Text of each id in `vocab` order, for chat prompts (`None`: words are made up).
    pub pieces: Option<Vec<String>>,
}

/// The non-special ids of `tokenizer.json`, ascending, and (with `with_pieces`, for chat
/// prompts) the decoded text of each.
pub fn vocab_from_tokenizer(
    path: &Path,
    with_pieces: bool,
) -> Result<(Vec<u32>, Option<Vec<String>>), String> {
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| format!("tokenizer {}: {e}", path.display()))?;
    let special: std::collections::HashSet<u32> = tok
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    let mut ids: Vec<u32> = tok
        .get_vocab(false)
        .into_values()
        .filter(|id| !special.contains(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Err(format!(
            "tokenizer {} has no ordinary tokens",
            path.display()
        ));
    }
    let pieces = with_pieces.then(|| {
        ids.iter()
            .map(|&id| tok.decode(&[id], false).unwrap_or_default())
            .collect()
    });
    Ok((ids, pieces))
}

impl Workload {
    /// Positions into `vocab` of request `index`'s prompt: the same for the same seed and
    /// index, different across indexes.
    fn prompt_positions(&self, index: u64) -> Vec<usize> {
        let mut rng = Rng::new(self.seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let n = self.vocab.len().max(1);
        (0..self.prompt_tokens).map(|_| rng.below(n)).collect()
    }

    /// The token ids of request `index`'s prompt.
    pub fn prompt_ids(&self, index: u64) -> Vec<u32> {
        self.prompt_positions(index)
            .into_iter()
            .map(|p| self.vocab.get(p).copied().unwrap_or(FALLBACK_IDS.start))
            .collect()
    }

    /// The text prompt of request `index` (chat mode).
    pub fn prompt_text(&self, index: u64) -> String {
        let pos = self.prompt_positions(index);
        match &self.pieces {
            Some(p) => pos.iter().filter_map(|&i| p.get(i)).cloned().collect(),
            None => pos
                .iter()
                .map(|&i| format!("w{} ", i % 997))
                .collect::<String>(),
        }
    }

    /// The route requests go to.
    pub fn path(&self) -> &'static str {
        if self.chat {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        }
    }

    /// The JSON body of request `index`.
    pub fn body(&self, index: u64) -> Value {
        let mut b = json!({
            "model": self.model,
            "max_tokens": self.output_tokens,
            "stream": true,
            "temperature": 0,
            "stream_options": {"include_usage": true},
        });
        if self.chat {
            b["messages"] = json!([{"role": "user", "content": self.prompt_text(index)}]);
        } else {
            b["prompt"] = json!(self.prompt_ids(index));
        }
        if self.ignore_eos {
            b["ignore_eos"] = json!(true);
        }
        b
    }

    /// The output length every reply must have, when `ignore_eos` makes it exact.
    pub fn expected_output(&self) -> Option<u64> {
        self.ignore_eos.then_some(self.output_tokens)
    }
}
