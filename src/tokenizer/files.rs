//! Reading the tokenizer-related files of an HF model folder: `tokenizer_config.json`,
//! `special_tokens_map.json`, `generation_config.json` and the chat template (from
//! `chat_template.jinja`, `tokenizer_config.json` or `chat_template.json`, in that order of
//! precedence, as `transformers` does).
//!
//! This module only parses; [`super::Tokenizer::load`] turns the result into ids and compiled
//! templates.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::TokenizerError;

/// One chat template as found in the model folder.
#[derive(Debug, Clone)]
pub(crate) struct TemplateSource {
    /// `default` for a plain string template, else the entry's `name`.
    pub name: String,
    /// Jinja source.
    pub source: String,
    /// The file it came from (for error messages).
    pub origin: PathBuf,
}

/// The special tokens named by the model's config files (as text, not ids).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialTokenNames {
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub pad: Option<String>,
    pub unk: Option<String>,
}

/// Everything read from the model folder apart from `tokenizer.json` itself.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelFiles {
    pub special: SpecialTokenNames,
    pub add_bos_token: Option<bool>,
    pub templates: Vec<TemplateSource>,
    /// `eos_token_id` of `generation_config.json` (an int or a list), empty when absent.
    pub generation_eos_ids: Vec<u32>,
}

/// Reads a JSON file that may be absent: `Ok(None)` when it does not exist.
pub(crate) fn read_json_opt(path: &Path) -> Result<Option<Value>, TokenizerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokenizerError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

fn invalid(path: &Path, message: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A special token given as `"text"`, as an AddedToken object `{"content": "text", ...}`, or null.
fn token_text(path: &Path, key: &str, v: Option<&Value>) -> Result<Option<String>, TokenizerError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Object(o)) => match o.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(invalid(
                path,
                format!("\"{key}\" object has no string \"content\""),
            )),
        },
        Some(other) => Err(invalid(
            path,
            format!("\"{key}\" must be a string or {{\"content\": ...}}, not {other}"),
        )),
    }
}

/// `chat_template` as a string (→ `default`) or a list of `{"name", "template"}`.
fn parse_templates(path: &Path, v: &Value) -> Result<Vec<TemplateSource>, TokenizerError> {
    let one = |name: &str, source: &str| TemplateSource {
        name: name.to_string(),
        source: source.to_string(),
        origin: path.to_path_buf(),
    };
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![one("default", s)]),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(Value::as_str);
                let template = item.get("template").and_then(Value::as_str);
                match (name, template) {
                    (Some(n), Some(t)) => Ok(one(n, t)),
                    _ => Err(invalid(
                        path,
                        "each \"chat_template\" list entry needs string \"name\" and \"template\"",
                    )),
                }
            })
            .collect(),
        other => Err(invalid(
            path,
            format!("\"chat_template\" must be a string or a list, not {other}"),
        )),
    }
}

/// `eos_token_id` as an int or a list of ints.
fn parse_eos_ids(path: &Path, v: Option<&Value>) -> Result<Vec<u32>, TokenizerError> {
    let as_id = |x: &Value| -> Result<u32, TokenizerError> {
        x.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                invalid(
                    path,
                    format!("\"eos_token_id\" entry {x} is not a token id"),
                )
            })
    };
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(as_id).collect(),
        Some(x) => Ok(vec![as_id(x)?]),
    }
}

/// Reads the config files of `dir` (all optional).
pub(crate) fn read_model_files(dir: &Path) -> Result<ModelFiles, TokenizerError> {
    let mut files = ModelFiles::default();

    let cfg_path = dir.join("tokenizer_config.json");
    let cfg = read_json_opt(&cfg_path)?;
    if let Some(cfg) = &cfg {
        if !cfg.is_object() {
            return Err(invalid(&cfg_path, "top level must be an object"));
        }
        files.special = SpecialTokenNames {
            bos: token_text(&cfg_path, "bos_token", cfg.get("bos_token"))?,
            eos: token_text(&cfg_path, "eos_token", cfg.get("eos_token"))?,
            pad: token_text(&cfg_path, "pad_token", cfg.get("pad_token"))?,
            unk: token_text(&cfg_path, "unk_token", cfg.get("unk_token"))?,
        };
        files.add_bos_token = cfg.get("add_bos_token").and_then(Value::as_bool);
    }

    // Fill what tokenizer_config.json left out from special_tokens_map.json.
    let map_path = dir.join("special_tokens_map.json");
    if let Some(map) = read_json_opt(&map_path)? {
        let s = &mut files.special;
        for (key, slot) in [
            ("bos_token", &mut s.bos),
            ("eos_token", &mut s.eos),
            ("pad_token", &mut s.pad),
            ("unk_token", &mut s.unk),
        ] {
            let present_in_cfg = cfg.as_ref().is_some_and(|c| c.get(key).is_some());
            if slot.is_none() && !present_in_cfg {
                *slot = token_text(&map_path, key, map.get(key))?;
            }
        }
    }

    files.templates = read_templates(dir, cfg.as_ref(), &cfg_path)?;

    let gen_path = dir.join("generation_config.json");
    if let Some(gen) = read_json_opt(&gen_path)? {
        files.generation_eos_ids = parse_eos_ids(&gen_path, gen.get("eos_token_id"))?;
    }
    Ok(files)
}

fn read_templates(
    dir: &Path,
    cfg: Option<&Value>,
    cfg_path: &Path,
) -> Result<Vec<TemplateSource>, TokenizerError> {
    let jinja_path = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&jinja_path) {
        Ok(source) => {
            return Ok(vec![TemplateSource {
                name: "default".into(),
                source,
                origin: jinja_path,
            }])
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TokenizerError::Read {
                path: jinja_path,
                source,
            })
        }
    }
    if let Some(v) = cfg.and_then(|c| c.get("chat_template")) {
        let found = parse_templates(cfg_path, v)?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let json_path = dir.join("chat_template.json");
    if let Some(v) = read_json_opt(&json_path)? {
        if let Some(t) = v.get("chat_template") {
            return parse_templates(&json_path, t);
        }
    }
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn token_forms_and_fallback_to_special_tokens_map() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "tokenizer_config.json",
            r#"{"bos_token": {"content": "<s>", "lstrip": false}, "eos_token": null,
                "add_bos_token": true,
                "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
        );
        write(
            d.path(),
            "special_tokens_map.json",
            r#"{"eos_token": "</s>", "unk_token": {"content": "<unk>"}}"#,
        );
        write(d.path(), "generation_config.json", r#"{"eos_token_id": 7}"#);
        let f = read_model_files(d.path()).unwrap();
        assert_eq!(f.special.bos.as_deref(), Some("<s>"));
        // explicitly null in tokenizer_config.json: not taken from the map
        assert_eq!(f.special.eos, None);
        assert_eq!(f.special.unk.as_deref(), Some("<unk>"));
        assert_eq!(f.add_bos_token, Some(true));
        assert_eq!(f.generation_eos_ids, vec![7]);
        let names: Vec<_> = f.templates.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["tool_use", "default"]);
    }

    #[test]
    fn jinja_file_wins_and_bad_values_are_named() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "tokenizer_config.json",
            r#"{"chat_template": "cfg"}"#,
        );
        write(d.path(), "chat_template.jinja", "file");
        let f = read_model_files(d.path()).unwrap();
        assert_eq!(f.templates[0].source, "file");

        write(
            d.path(),
            "generation_config.json",
            r#"{"eos_token_id": [1, "x"]}"#,
        );
        let e = read_model_files(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("generation_config.json") && e.contains("eos_token_id"),
            "{e}"
        );

        write(d.path(), "generation_config.json", "{not json");
        let e = read_model_files(d.path()).unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }

    #[test]
    fn empty_folder_is_fine() {
        let d = tempfile::tempdir().unwrap();
        let f = read_model_files(d.path()).unwrap();
        assert!(f.templates.is_empty() && f.generation_eos_ids.is_empty());
    }
}
