//! The request fields chat and completions share (model, sampling, limits, stop conditions,
//! log-probabilities, `n`, streaming), read and range-checked per SPEC §1, then turned into the
//! engine's [`GenRequest`] and the text options of a [`crate::http::session::Generation`].

use crate::engine::sampler::SamplingParams;
use crate::engine::{GenRequest, NO_OUTPUT_LIMIT};
use crate::http::fields::{FieldError, Fields, Range};
use crate::http::session::GenOptions;

/// Most characters in one stop string, and in all of them together (MindIE's limits).
const MAX_STOP_CHARS: usize = 1024;
const MAX_STOP_TOTAL_CHARS: usize = 32 * 1024;
/// Most choices per request (MindIE allows up to 8192; each is a sequence in the batch).
pub const MAX_N: i64 = 8192;
/// Most alternatives per token.
pub const MAX_TOP_LOGPROBS: i64 = 20;
/// Default request priority (1 most urgent ..= 5).
const DEFAULT_PRIORITY: u8 = 3;

/// The shared fields of one request.
#[derive(Debug, Clone)]
pub struct Common {
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: `None` when not given (usage then rides on the last
    /// chunk, as MindIE does), `Some(false)` for no usage in the stream at all.
    pub include_usage: Option<bool>,
    pub max_tokens: Option<usize>,
    pub n: usize,
    pub sampling: SamplingParams,
    /// True when the client chose the seed (otherwise each choice gets a random one).
    pub seeded: bool,
    pub stop: Vec<String>,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
    pub include_stop_str_in_output: bool,
    pub skip_special_tokens: bool,
    /// `Some(k)`: report the chosen token's logprob and `k` alternatives.
    pub logprobs: Option<usize>,
    pub priority: u8,
}

impl Common {
    /// Reads the shared fields. `logprobs` is read by the caller (its type differs between
    /// chat and completions) and passed in; `defaults` fill the sampling fields left out.
    pub fn parse(
        f: &Fields<'_>,
        vocab: usize,
        logprobs: Option<usize>,
        defaults: &SamplingParams,
    ) -> Result<Self, FieldError> {
        let model = f.required_str("model", "is required")?.to_string();
        Self::parse_fields(f, vocab, logprobs, defaults, model)
    }

    /// Like [`Common::parse`] for APIs without a `model` field (vLLM's legacy `/generate`).
    pub fn parse_unnamed(
        f: &Fields<'_>,
        vocab: usize,
        logprobs: Option<usize>,
        defaults: &SamplingParams,
    ) -> Result<Self, FieldError> {
        Self::parse_fields(f, vocab, logprobs, defaults, String::new())
    }

    fn parse_fields(
        f: &Fields<'_>,
        vocab: usize,
        logprobs: Option<usize>,
        defaults: &SamplingParams,
        model: String,
    ) -> Result<Self, FieldError> {
        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = match f.object("stream_options")? {
            Some(o) => {
                if !stream {
                    return Err(FieldError::new(
                        "stream_options",
                        "is only allowed when stream is true",
                    ));
                }
                Fields::with_prefix(o, "stream_options.").bool("include_usage")?
            }
            None => None,
        };
        let max_tokens = match f.int("max_completion_tokens", 1, i64::from(i32::MAX))? {
            Some(n) => Some(n),
            None => f.int("max_tokens", 1, i64::from(i32::MAX))?,
        }
        .map(|n| n as usize);
        let n = f.int("n", 1, MAX_N)?.unwrap_or(1);
        if let Some(best_of) = f.int("best_of", 1, 128)? {
            if best_of != n {
                return Err(FieldError::new(
                    "best_of",
                    format!("{best_of} is not supported: best_of must equal n ({n}); ranking extra candidates is not implemented"),
                ));
            }
        }
        if f.bool("use_beam_search")? == Some(true) {
            return Err(FieldError::new(
                "use_beam_search",
                "beam search is not supported; use sampling or greedy decoding",
            ));
        }
        let sampling = sampling(f, defaults)?;
        let seeded = f.has("seed");
        let stop = stop_strings(f)?;
        let stop_token_ids = f
            .int_list("stop_token_ids", 0, vocab as i64 - 1)?
            .unwrap_or_default()
            .into_iter()
            .map(|id| id as u32)
            .collect();
        Ok(Common {
            model,
            stream,
            include_usage,
            max_tokens,
            n: n as usize,
            seeded,
            sampling,
            stop,
            stop_token_ids,
            ignore_eos: f.bool("ignore_eos")?.unwrap_or(false),
            include_stop_str_in_output: f.bool("include_stop_str_in_output")?.unwrap_or(false),
            skip_special_tokens: f.bool("skip_special_tokens")?.unwrap_or(true),
            logprobs,
            priority: f
                .int("priority", 1, 5)?
                .map(|p| p as u8)
                .unwrap_or(DEFAULT_PRIORITY),
        })
    }

    /// The engine request of choice `choice` over `prompt` (the engine caps `max_tokens`).
    pub fn gen_request(&self, prompt: Vec<u32>, choice: usize) -> GenRequest {
        let mut sampling = self.sampling.clone();
        sampling.seed = choice_seed(sampling.seed, choice);
        GenRequest {
            prompt,
            max_new_tokens: self.max_tokens.unwrap_or(NO_OUTPUT_LIMIT),
            sampling,
            stop_token_ids: self.stop_token_ids.clone(),
            ignore_eos: self.ignore_eos,
            top_logprobs: self.logprobs,
            priority: self.priority,
            json: None,
        }
    }

    /// The generation options; `keys` name the request for `stopInfer`.
    pub fn gen_options(&self, keys: Vec<String>) -> GenOptions {
        GenOptions {
            keys,
            skip_special_tokens: self.skip_special_tokens,
            stop: self.stop.clone(),
            include_stop_str_in_output: self.include_stop_str_in_output,
            decode_in_prompt_context: true,
            ..GenOptions::default()
        }
    }
}

/// Choice 0 uses the seed as given (so `n = 1` repeats exactly); later choices get distinct,
/// equally reproducible streams.
fn choice_seed(seed: u64, choice: usize) -> u64 {
    if choice == 0 {
        seed
    } else {
        let mut rng = crate::engine::sampler::Rng::new(seed ^ (choice as u64).rotate_left(32));
        rng.next_u64()
    }
}

fn sampling(f: &Fields<'_>, d: &SamplingParams) -> Result<SamplingParams, FieldError> {
    let top_k = match f.int("top_k", -1, i64::from(i32::MAX))? {
        None | Some(-1) | Some(0) => 0,
        Some(k) => k as usize,
    };
    let seed = match f.seed("seed")? {
        Some(s) => s,
        None => crate::pd::context::fresh_seed(),
    };
    Ok(SamplingParams {
        temperature: f
            .num("temperature", Range::at_least(0.0))?
            .map_or(d.temperature, |x| x as f32),
        top_k,
        top_p: f
            .num("top_p", Range::left_open(0.0, 1.0))?
            .map_or(d.top_p, |x| x as f32),
        typical_p: f
            .num("typical_p", Range::left_open(0.0, 1.0))?
            .map_or(d.typical_p, |x| x as f32),
        min_p: f
            .num("min_p", Range::closed(0.0, 1.0))?
            .map_or(d.min_p, |x| x as f32),
        repetition_penalty: f
            .num("repetition_penalty", Range::left_open(0.0, 2.0))?
            .map_or(d.repetition_penalty, |x| x as f32),
        presence_penalty: f
            .num("presence_penalty", Range::closed(-2.0, 2.0))?
            .map_or(d.presence_penalty, |x| x as f32),
        frequency_penalty: f
            .num("frequency_penalty", Range::closed(-2.0, 2.0))?
            .map_or(d.frequency_penalty, |x| x as f32),
        seed,
    })
}

fn stop_strings(f: &Fields<'_>) -> Result<Vec<String>, FieldError> {
    let stop = f.str_or_list("stop")?.unwrap_or_default();
    let mut total = 0;
    for (i, s) in stop.iter().enumerate() {
        let chars = s.chars().count();
        if chars > MAX_STOP_CHARS {
            return Err(FieldError::new(
                format!("stop[{i}]"),
                format!("has {chars} characters: allowed at most {MAX_STOP_CHARS}"),
            ));
        }
        total += chars;
    }
    if total > MAX_STOP_TOTAL_CHARS {
        return Err(FieldError::new(
            "stop",
            format!("has {total} characters in all: allowed at most {MAX_STOP_TOTAL_CHARS}"),
        ));
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(v: Value) -> Result<Common, FieldError> {
        let Value::Object(m) = v else {
            return Err(FieldError::new("body", "not an object"));
        };
        Common::parse(&Fields::new(&m), 100, None, &SamplingParams::default())
    }

    #[test]
    fn defaults_and_ranges() {
        let c = parse(json!({"model": "m"})).unwrap();
        assert_eq!(c.n, 1);
        assert!(!c.stream);
        assert!(c.skip_special_tokens);
        assert!(!c.seeded);
        for (field, v) in [
            ("temperature", json!(-0.1)),
            ("top_p", json!(0)),
            ("top_p", json!(1.5)),
            ("top_k", json!(-2)),
            ("repetition_penalty", json!(0)),
            ("presence_penalty", json!(2.5)),
            ("max_tokens", json!(0)),
            ("n", json!(0)),
            ("stop_token_ids", json!([100])),
            ("stop", json!(5)),
        ] {
            let mut body = json!({"model": "m"});
            body[field] = v.clone();
            let e = parse(body).unwrap_err();
            assert!(e.field.starts_with(field), "{field}={v}: {e}");
        }
        assert_eq!(parse(json!({})).unwrap_err().field, "model");
        assert_eq!(
            parse(json!({"model": "m", "stream_options": {"include_usage": true}}))
                .unwrap_err()
                .field,
            "stream_options"
        );
        assert_eq!(
            parse(json!({"model": "m", "n": 2, "best_of": 3}))
                .unwrap_err()
                .field,
            "best_of"
        );
    }

    #[test]
    fn seeds_per_choice_are_stable_and_distinct() {
        let c = parse(json!({"model": "m", "seed": 7, "n": 3})).unwrap();
        assert!(c.seeded);
        let a: Vec<u64> = (0..3)
            .map(|i| c.gen_request(vec![1], i).sampling.seed)
            .collect();
        let b: Vec<u64> = (0..3)
            .map(|i| c.gen_request(vec![1], i).sampling.seed)
            .collect();
        assert_eq!(a, b);
        assert_eq!(a[0], 7);
        assert!(a[1] != a[0] && a[2] != a[1]);
    }
}
