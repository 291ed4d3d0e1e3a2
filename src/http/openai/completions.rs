//! `POST /v1/completions`: a prompt as a string, a list of strings, a list of token ids or a
//! list of such lists; `n` choices per prompt; `echo`; legacy integer `logprobs` (0..=20).

use super::request::{Common, MAX_N, MAX_TOP_LOGPROBS};
use super::respond::{respond, Job, ReplyMeta};
use super::{check_model, Kind};
use crate::http::extract::{Body, Error, OpenAi, Reply};
use crate::http::fields::{show, FieldError, Fields};
use crate::http::session::Serving;
use axum::extract::State;
use serde_json::{Map, Value};
use std::sync::Arc;

/// One prompt as given.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

fn prompts(body: &serde_json::Map<String, Value>, vocab: usize) -> Result<Vec<Prompt>, FieldError> {
    let ids = |items: &[Value], field: &str| -> Result<Vec<u32>, FieldError> {
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_u64() {
                Some(id) if (id as usize) < vocab => Ok(id as u32),
                _ => Err(FieldError::new(
                    format!("{field}[{i}]"),
                    format!(
                        "{} is not a token id: allowed integers in [0, {vocab})",
                        show(v)
                    ),
                )),
            })
            .collect()
    };
    let bad = || {
        FieldError::new(
            "prompt",
            "must be a string, a list of strings, a list of token ids or a list of token-id lists",
        )
    };
    let out = match body.get("prompt") {
        None | Some(Value::Null) => return Err(FieldError::new("prompt", "is required")),
        Some(Value::String(s)) => vec![Prompt::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(FieldError::new("prompt", "must not be empty"))
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::Number(_) => vec![Prompt::Ids(ids(items, "prompt")?)],
            Value::String(_) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(Prompt::Text(s.clone())),
                    _ => Err(FieldError::new(
                        format!("prompt[{i}]"),
                        "must be a string like the first item",
                    )),
                })
                .collect::<Result<_, _>>()?,
            Value::Array(_) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Array(inner) => ids(inner, &format!("prompt[{i}]")).map(Prompt::Ids),
                    _ => Err(FieldError::new(
                        format!("prompt[{i}]"),
                        "must be a list of token ids like the first item",
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        Some(_) => return Err(bad()),
    };
    Ok(out)
}

/// A checked completion request: the shared fields and the prompts.
pub struct CompletionRequest {
    pub common: Common,
    pub echo: bool,
    prompts: Vec<Prompt>,
}

impl CompletionRequest {
    /// Reads and checks the body, in the order the fields have always been checked (the
    /// `model` check comes after the shared fields).
    pub fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, Error<OpenAi>> {
        let f = Fields::new(body);
        let vocab = inf.vocab();
        let logprobs = f.int("logprobs", 0, MAX_TOP_LOGPROBS)?.map(|k| k as usize);
        let common = Common::parse(&f, vocab, logprobs, &inf.sampling_defaults)?;
        check_model(inf, &common.model)?;
        let echo = f.bool("echo")?.unwrap_or(false);
        if f.str("suffix")?.is_some_and(|s| !s.is_empty()) {
            return Err(FieldError::new("suffix", "is not supported by these models").into());
        }
        let prompts = prompts(body, vocab)?;
        if (prompts.len() * common.n) as i64 > MAX_N {
            return Err(FieldError::new(
                "n",
                format!(
                    "{} prompts x n = {} choices: allowed at most {MAX_N}",
                    prompts.len(),
                    prompts.len() * common.n
                ),
            )
            .into());
        }
        Ok(Self {
            common,
            echo,
            prompts,
        })
    }
}

/// The handler.
pub async fn completions(State(inf): State<Arc<Serving>>, body: Body<OpenAi>) -> Reply<OpenAi> {
    let CompletionRequest {
        common,
        echo,
        prompts,
    } = CompletionRequest::read(&body.map, &inf)?;
    let many = prompts.len() > 1;
    let mut jobs = Vec::new();
    for (pi, p) in prompts.into_iter().enumerate() {
        let field = if many {
            format!("prompt[{pi}]")
        } else {
            "prompt".to_string()
        };
        let (text, ids) = match p {
            Prompt::Text(t) => {
                let ids = inf.tokenizer.encode(t.clone(), true).await?;
                (Some(t), ids)
            }
            Prompt::Ids(ids) => (None, ids),
        };
        let ids = inf.fit_prompt(ids, &field)?;
        let prefix = match (echo, text) {
            (false, _) => None,
            (true, Some(t)) => Some(t),
            (true, None) => Some(
                inf.tokenizer
                    .decode(ids.clone(), common.skip_special_tokens)
                    .await?,
            ),
        };
        for j in 0..common.n {
            let req = common.gen_request(ids.clone(), j);
            let generation = inf.start(req, common.gen_options(body.keys.clone()))?;
            jobs.push(Job {
                index: pi * common.n + j,
                counts_prompt: j == 0,
                prefix: prefix.clone(),
                generation,
            });
        }
    }
    let mut meta = ReplyMeta::new(Kind::Completion, &common, inf.tokenizer.tokenizer().clone());
    meta.full_text = inf.limits.full_text;
    Ok(respond(meta, jobs).await)
}
