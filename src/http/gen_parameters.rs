//! The `parameters` object of the TGI, MindIE-native and Triton routes (SPEC §1): sampling
//! (`temperature` > 0, `top_k`, `top_p`, `typical_p`, `do_sample`, `seed`,
//! `repetition_penalty`), limits (`max_new_tokens`, `truncate`, `timeout`), stop conditions,
//! reply options (`details`, `decoder_input_details`, `return_full_text`) and `priority`.

use crate::engine::sampler::SamplingParams;
use crate::engine::{GenRequest, NO_OUTPUT_LIMIT};
use crate::http::fields::{FieldError, Fields, Range};
use crate::http::session::{GenOptions, Serving};
use serde_json::{Map, Value};
use std::time::Duration;

/// Default priority of native requests (1 most urgent ..= 5).
const DEFAULT_PRIORITY: u8 = 3;

/// The parsed `parameters`.
#[derive(Debug, Clone)]
pub struct Parameters {
    pub sampling: SamplingParams,
    pub max_new_tokens: Option<usize>,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub skip_special_tokens: bool,
    pub include_stop_str_in_output: bool,
    pub details: bool,
    pub decoder_input_details: bool,
    pub return_full_text: bool,
    /// Keep only the last `truncate` prompt tokens.
    pub truncate: Option<usize>,
    pub timeout: Option<Duration>,
    pub priority: u8,
    /// `top_logprobs`-style alternatives per token (TGI `top_n_tokens`).
    pub top_n_tokens: Option<usize>,
}

impl Parameters {
    /// Reads `parameters` (absent = all defaults). `defaults` are the model's sampling
    /// defaults; `vocab` bounds token ids.
    pub fn parse(
        body: &Map<String, Value>,
        defaults: &SamplingParams,
        vocab: usize,
    ) -> Result<Self, FieldError> {
        let empty = Map::new();
        let map = match body.get("parameters") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => return Err(FieldError::new("parameters", "must be an object")),
        };
        let f = Fields::with_prefix(map, "parameters.");
        let temperature = f.num("temperature", Range::left_open(0.0, f64::INFINITY))?;
        let top_k = f.int("top_k", 0, i64::from(i32::MAX))?;
        let top_p = f.num("top_p", Range::left_open(0.0, 1.0))?;
        let typical_p = f.num("typical_p", Range::left_open(0.0, 1.0))?;
        let do_sample = f.bool("do_sample")?;
        let mut sampling = defaults.clone();
        // Sampling when asked (do_sample), or implied by a sampling field, or by the model's
        // defaults; greedy when do_sample is false.
        let asks_sampling =
            temperature.is_some() || top_k.is_some_and(|k| k > 1) || top_p.is_some_and(|p| p < 1.0);
        let sample = do_sample.unwrap_or(asks_sampling || !defaults.is_greedy());
        sampling.temperature = match (sample, temperature) {
            (false, _) => 0.0,
            (true, Some(t)) => t as f32,
            (true, None) if defaults.temperature > 0.0 => defaults.temperature,
            (true, None) => 1.0,
        };
        if let Some(k) = top_k {
            sampling.top_k = k as usize;
        }
        if let Some(p) = top_p {
            sampling.top_p = p as f32;
        }
        if let Some(p) = typical_p {
            sampling.typical_p = p as f32;
        }
        if let Some(r) = f.num("repetition_penalty", Range::left_open(0.0, 2.0))? {
            sampling.repetition_penalty = r as f32;
        }
        if let Some(x) = f.num("presence_penalty", Range::closed(-2.0, 2.0))? {
            sampling.presence_penalty = x as f32;
        }
        if let Some(x) = f.num("frequency_penalty", Range::closed(-2.0, 2.0))? {
            sampling.frequency_penalty = x as f32;
        }
        sampling.seed = f
            .seed("seed")?
            .unwrap_or_else(crate::pd::context::fresh_seed);
        if f.bool("watermark")? == Some(true) {
            return Err(FieldError::new(
                "parameters.watermark",
                "watermarking is not supported; leave it false",
            ));
        }
        let stop = f.str_or_list("stop")?.unwrap_or_default();
        let stop_token_ids = f
            .int_list("stop_token_ids", 0, vocab as i64 - 1)?
            .unwrap_or_default()
            .into_iter()
            .map(|i| i as u32)
            .collect();
        Ok(Parameters {
            sampling,
            max_new_tokens: f
                .int("max_new_tokens", 1, i64::from(i32::MAX))?
                .map(|n| n as usize),
            stop,
            stop_token_ids,
            ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
            skip_special_tokens: f.bool("skip_special_tokens")?.unwrap_or(true),
            include_stop_str_in_output: f.bool("include_stop_str_in_output")?.unwrap_or(false),
            details: f.bool("details")?.unwrap_or(false),
            decoder_input_details: f.bool("decoder_input_details")?.unwrap_or(false),
            return_full_text: f.bool("return_full_text")?.unwrap_or(false),
            truncate: f
                .int("truncate", 1, i64::from(i32::MAX))?
                .map(|n| n as usize),
            timeout: f
                .int("timeout", 1, 65535)?
                .map(|s| Duration::from_secs(s as u64)),
            priority: f
                .int("priority", 1, 5)?
                .map_or(DEFAULT_PRIORITY, |p| p as u8),
            top_n_tokens: f.int("top_n_tokens", 0, 20)?.map(|n| n as usize),
        })
    }

    /// [`Parameters::parse`] with the served model's sampling defaults and vocabulary.
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, FieldError> {
        Self::parse(body, &inf.sampling_defaults, inf.vocab())
    }

    /// The engine request over `prompt` (the engine caps `max_new_tokens`).
    pub fn gen_request(&self, prompt: Vec<u32>) -> GenRequest {
        GenRequest {
            prompt,
            max_new_tokens: self.max_new_tokens.unwrap_or(NO_OUTPUT_LIMIT),
            sampling: self.sampling.clone(),
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: self.ignore_eos,
            top_logprobs: (self.details || self.top_n_tokens.is_some())
                .then(|| self.top_n_tokens.unwrap_or(0)),
            priority: self.priority,
            json: None,
        }
    }

    /// The generation options; `keys` name the request for `stopInfer`.
    pub fn gen_options(&self, keys: Vec<String>) -> GenOptions {
        GenOptions {
            timeout: self.timeout,
            keys,
            skip_special_tokens: self.skip_special_tokens,
            stop: self.stop.clone(),
            include_stop_str_in_output: self.include_stop_str_in_output,
            decode_in_prompt_context: true,
        }
    }

    /// Applies `truncate` (keep the last tokens) to prompt ids.
    pub fn truncate_prompt(&self, mut ids: Vec<u32>) -> Vec<u32> {
        if let Some(n) = self.truncate {
            if ids.len() > n {
                ids.drain(..ids.len() - n);
            }
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Parameters, FieldError> {
        let Value::Object(m) = v else {
            return Err(FieldError::new("body", "object"));
        };
        Parameters::parse(&m, &SamplingParams::default(), 100)
    }

    #[test]
    fn sampling_switches() {
        assert!(parse(json!({})).unwrap().sampling.is_greedy());
        let t = parse(json!({"parameters": {"temperature": 0.5}})).unwrap();
        assert_eq!(t.sampling.temperature, 0.5);
        let off = parse(json!({"parameters": {"temperature": 0.5, "do_sample": false}})).unwrap();
        assert!(off.sampling.is_greedy());
        let on = parse(json!({"parameters": {"do_sample": true}})).unwrap();
        assert_eq!(on.sampling.temperature, 1.0);
        for (k, v) in [
            ("temperature", json!(0)),
            ("top_p", json!(1.5)),
            ("max_new_tokens", json!(0)),
            ("priority", json!(6)),
            ("timeout", json!(0)),
            ("watermark", json!(true)),
            ("stop_token_ids", json!([100])),
        ] {
            let e = parse(json!({"parameters": {k: v}})).unwrap_err();
            assert!(e.field.starts_with(&format!("parameters.{k}")), "{k}: {e}");
        }
        assert_eq!(
            parse(json!({"parameters": 3})).unwrap_err().field,
            "parameters"
        );
    }

    #[test]
    fn truncate_keeps_the_end() {
        let p = parse(json!({"parameters": {"truncate": 2}})).unwrap();
        assert_eq!(p.truncate_prompt(vec![1, 2, 3, 4]), vec![3, 4]);
    }
}
