//! The Hugging Face model config: a model folder's `config.json` (+ `generation_config.json`)
//! → [`HfModelConfig`], everything the CPU model needs to know about the architecture,
//! validated once at load. Not MindIE's daemon config (`crate::config::Config`) nor the
//! scheduler's.

use std::path::Path;

use serde_json::Value;

use crate::backend::BackendError;

/// Architectures this backend runs.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["LlamaForCausalLM", "Qwen2ForCausalLM"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

/// LLaMA-3 style frequency-dependent RoPE scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The model shape and numerics, from the HF `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HfModelConfig {
    pub arch: Arch,
    pub architecture: String,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub rms_eps: f32,
    pub rope_theta: f64,
    pub rope_llama3: Option<Llama3Scaling>,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry biases (always for Qwen2; `attention_bias` for Llama).
    pub qkv_bias: bool,
    /// o_proj carries a bias (Llama `attention_bias`).
    pub o_bias: bool,
    /// gate/up/down carry biases (Llama `mlp_bias`).
    pub mlp_bias: bool,
    pub max_position: usize,
    /// `torch_dtype` (or `dtype`) as written, for information.
    pub torch_dtype: Option<String>,
    /// End-of-sequence ids: `generation_config.json` when present, else `config.json`.
    pub eos_token_ids: Vec<u32>,
}

fn bad(msg: impl Into<String>) -> BackendError {
    BackendError::Config(msg.into())
}

fn read_json(path: &Path) -> Result<Value, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| BackendError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| bad(format!("{}: invalid JSON: {e}", path.display())))
}

fn get_usize(v: &Value, key: &str) -> Result<Option<usize>, BackendError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "config.json: `{key}` must be a non-negative integer"
                ))
            }),
    }
}

fn need_usize(v: &Value, key: &str) -> Result<usize, BackendError> {
    match get_usize(v, key)? {
        Some(n) if n > 0 => Ok(n),
        Some(_) => Err(bad(format!("config.json: `{key}` must be positive"))),
        None => Err(bad(format!("config.json: missing `{key}`"))),
    }
}

fn get_f64(v: &Value, key: &str) -> Result<Option<f64>, BackendError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(format!("config.json: `{key}` must be a number"))),
    }
}

fn get_bool(v: &Value, key: &str, default: bool) -> Result<bool, BackendError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(bad(format!("config.json: `{key}` must be true or false"))),
    }
}

/// An id or a list of ids (`eos_token_id` takes both forms).
fn id_list(v: Option<&Value>) -> Vec<u32> {
    let one = |x: &Value| x.as_u64().and_then(|n| u32::try_from(n).ok());
    match v {
        Some(Value::Array(a)) => a.iter().filter_map(one).collect(),
        Some(x) => one(x).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Parses the rope settings: `rope_theta` + `rope_scaling` (transformers 4) or
/// `rope_parameters` (transformers 5).
fn rope(v: &Value) -> Result<(f64, Option<Llama3Scaling>), BackendError> {
    let params = v.get("rope_parameters").filter(|p| p.is_object());
    let theta = match params
        .map(|p| get_f64(p, "rope_theta"))
        .transpose()?
        .flatten()
    {
        Some(t) => Some(t),
        None => get_f64(v, "rope_theta")?,
    }
    .unwrap_or(10_000.0);
    if !(theta.is_finite() && theta > 0.0) {
        return Err(bad("config.json: `rope_theta` must be positive"));
    }
    let scaling = match params {
        Some(p) => Some(p),
        None => v.get("rope_scaling").filter(|s| !s.is_null()),
    };
    let Some(s) = scaling else {
        return Ok((theta, None));
    };
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok((theta, None)),
        "llama3" => {
            let f = |key: &str| {
                get_f64(s, key)?.ok_or_else(|| bad(format!("rope_scaling llama3: missing `{key}`")))
            };
            let sc = Llama3Scaling {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings: f("original_max_position_embeddings")?,
            };
            if sc.factor <= 0.0
                || sc.original_max_position_embeddings <= 0.0
                || sc.low_freq_factor <= 0.0
                || sc.high_freq_factor <= sc.low_freq_factor
            {
                return Err(bad("rope_scaling llama3: factors out of range"));
            }
            Ok((theta, Some(sc)))
        }
        other => Err(BackendError::Unsupported(format!(
            "rope scaling type `{other}` (supported: default, llama3)"
        ))),
    }
}

impl HfModelConfig {
    /// Reads `config.json` and, when present, `generation_config.json` from a model folder.
    pub fn load(model_dir: &Path) -> Result<Self, BackendError> {
        let cfg = read_json(&model_dir.join("config.json"))?;
        let mut spec = Self::from_json(&cfg)?;
        let gen_path = model_dir.join("generation_config.json");
        if gen_path.is_file() {
            let gen = read_json(&gen_path)?;
            let ids = id_list(gen.get("eos_token_id"));
            if !ids.is_empty() {
                spec.eos_token_ids = ids;
            }
        }
        Ok(spec)
    }

    /// Interprets a parsed HF `config.json`.
    pub fn from_json(v: &Value) -> Result<Self, BackendError> {
        let archs: Vec<&str> = match v.get("architectures") {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let supported = SUPPORTED_ARCHITECTURES.join(", ");
        let (arch, architecture) = match archs.first() {
            Some(&"LlamaForCausalLM") => (Arch::Llama, "LlamaForCausalLM"),
            Some(&"Qwen2ForCausalLM") => (Arch::Qwen2, "Qwen2ForCausalLM"),
            Some(other) => {
                return Err(BackendError::Unsupported(format!(
                    "model architecture `{other}` is not supported by the CPU backend \
                     (supported: {supported})"
                )))
            }
            None => {
                return Err(bad(format!(
                    "config.json: missing `architectures` (supported: {supported})"
                )))
            }
        };
        let hidden = need_usize(v, "hidden_size")?;
        let heads = need_usize(v, "num_attention_heads")?;
        let kv_heads = get_usize(v, "num_key_value_heads")?.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(bad(format!(
                "config.json: num_attention_heads ({heads}) must be a multiple of \
                 num_key_value_heads ({kv_heads})"
            )));
        }
        let head_dim = match get_usize(v, "head_dim")? {
            Some(d) => d,
            None if hidden % heads == 0 => hidden / heads,
            None => return Err(bad("config.json: hidden_size not divisible by heads")),
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(bad(format!(
                "config.json: head_dim {head_dim} must be even and > 0"
            )));
        }
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(BackendError::Unsupported(format!(
                "hidden_act `{act}` (only silu)"
            )));
        }
        if arch == Arch::Qwen2 && get_bool(v, "use_sliding_window", false)? {
            return Err(BackendError::Unsupported(
                "Qwen2 with use_sliding_window=true".to_string(),
            ));
        }
        let rms_eps = get_f64(v, "rms_norm_eps")?.unwrap_or(1e-6);
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(bad(
                "config.json: `rms_norm_eps` must be a non-negative number",
            ));
        }
        let (rope_theta, rope_llama3) = rope(v)?;
        let attention_bias = get_bool(v, "attention_bias", false)?;
        let (qkv_bias, o_bias, mlp_bias) = match arch {
            Arch::Qwen2 => (true, false, false),
            Arch::Llama => (
                attention_bias,
                attention_bias,
                get_bool(v, "mlp_bias", false)?,
            ),
        };
        let torch_dtype = v
            .get("torch_dtype")
            .or_else(|| v.get("dtype"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Self {
            arch,
            architecture: architecture.to_string(),
            hidden,
            layers: need_usize(v, "num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: need_usize(v, "intermediate_size")?,
            vocab: need_usize(v, "vocab_size")?,
            rms_eps: rms_eps as f32,
            rope_theta,
            rope_llama3,
            tie_word_embeddings: get_bool(v, "tie_word_embeddings", arch == Arch::Qwen2)?,
            qkv_bias,
            o_bias,
            mlp_bias,
            max_position: get_usize(v, "max_position_embeddings")?.unwrap_or(4096),
            torch_dtype,
            eos_token_ids: id_list(v.get("eos_token_id")),
        })
    }

    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 128,
            "vocab_size": 100, "rms_norm_eps": 1e-5, "rope_theta": 500000.0
        })
    }

    #[test]
    fn parses_llama_defaults() {
        let s = HfModelConfig::from_json(&base()).expect("valid");
        assert_eq!((s.head_dim, s.kv_heads, s.arch), (16, 2, Arch::Llama));
        assert!(!s.tie_word_embeddings && !s.qkv_bias);
    }

    #[test]
    fn qwen2_has_qkv_bias_and_ties_by_default() {
        let mut v = base();
        v["architectures"] = json!(["Qwen2ForCausalLM"]);
        let s = HfModelConfig::from_json(&v).expect("valid");
        assert!(s.qkv_bias && s.tie_word_embeddings && !s.o_bias);
    }

    #[test]
    fn llama3_rope_scaling() {
        let mut v = base();
        v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let s = HfModelConfig::from_json(&v).expect("valid");
        assert_eq!(s.rope_llama3.map(|r| r.factor), Some(8.0));
        v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0});
        assert!(matches!(
            HfModelConfig::from_json(&v),
            Err(BackendError::Unsupported(_))
        ));
    }

    #[test]
    fn unsupported_architecture_names_it() {
        let mut v = base();
        v["architectures"] = json!(["GPT2LMHeadModel"]);
        let e = HfModelConfig::from_json(&v)
            .expect_err("unsupported")
            .to_string();
        assert!(
            e.contains("GPT2LMHeadModel") && e.contains("Qwen2ForCausalLM"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_gqa() {
        let mut v = base();
        v["num_key_value_heads"] = json!(3);
        assert!(HfModelConfig::from_json(&v).is_err());
    }
}
