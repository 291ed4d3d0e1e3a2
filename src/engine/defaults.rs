//! Sampling defaults of a served model: what a request that leaves a sampling field out gets.
//! OpenAI's defaults (temperature 1, no top-k/top-p cut), overridden by the model folder's
//! `generation_config.json` as Hugging Face reads it: `do_sample: false` means greedy, and its
//! `temperature`, `top_k`, `top_p`, `typical_p`, `min_p` and `repetition_penalty` apply.

use super::sampler::SamplingParams;
use serde_json::Value;
use std::path::Path;

/// The defaults for `model_dir` (OpenAI's when the file is absent or unreadable; a broken
/// file is logged, not fatal: the tokenizer load reports it precisely).
pub fn sampling_defaults(model_dir: &Path) -> SamplingParams {
    let path = model_dir.join("generation_config.json");
    let parsed = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match parsed {
        Some(v) => from_generation_config(&v),
        None => openai_defaults(),
    }
}

/// OpenAI's defaults: temperature 1, everything else off.
pub fn openai_defaults() -> SamplingParams {
    SamplingParams {
        temperature: 1.0,
        ..SamplingParams::default()
    }
}

/// Defaults from a parsed `generation_config.json`.
pub fn from_generation_config(v: &Value) -> SamplingParams {
    let mut p = openai_defaults();
    let num = |k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
    if let Some(t) = num("temperature").filter(|t| *t >= 0.0) {
        p.temperature = t as f32;
    }
    if let Some(k) = v.get("top_k").and_then(Value::as_u64) {
        p.top_k = k as usize;
    }
    if let Some(x) = num("top_p").filter(|x| *x > 0.0 && *x <= 1.0) {
        p.top_p = x as f32;
    }
    if let Some(x) = num("typical_p").filter(|x| *x > 0.0 && *x <= 1.0) {
        p.typical_p = x as f32;
    }
    if let Some(x) = num("min_p").filter(|x| (0.0..=1.0).contains(x)) {
        p.min_p = x as f32;
    }
    if let Some(x) = num("repetition_penalty").filter(|x| *x > 0.0) {
        p.repetition_penalty = x as f32;
    }
    if v.get("do_sample").and_then(Value::as_bool) == Some(false) {
        p.temperature = 0.0;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hf_semantics() {
        let qwen = from_generation_config(&json!({
            "do_sample": true, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "repetition_penalty": 1.05, "eos_token_id": [1, 2]
        }));
        assert_eq!(qwen.temperature, 0.7);
        assert_eq!(qwen.top_k, 20);
        assert_eq!(qwen.top_p, 0.8);
        assert_eq!(qwen.repetition_penalty, 1.05);
        let greedy = from_generation_config(&json!({"do_sample": false, "max_new_tokens": 256}));
        assert!(greedy.is_greedy());
        let bare = from_generation_config(&json!({"eos_token_id": 2}));
        assert_eq!(bare.temperature, 1.0);
        assert_eq!(
            sampling_defaults(Path::new("/nonexistent")).temperature,
            1.0
        );
    }
}
