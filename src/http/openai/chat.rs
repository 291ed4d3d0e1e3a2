//! `POST /v1/chat/completions`: messages checked per SPEC §1 (roles, non-empty content, tool
//! messages with `tool_call_id`), rendered with the model's chat template (`tools` and
//! `chat_template_kwargs` passed through), then run like a completion of the rendered prompt.
//! With `tools`, replies are read back for tool calls (see `tools`).

use super::request::{Common, MAX_TOP_LOGPROBS};
use super::respond::{respond, Job, ReplyMeta};
use super::tools::{self, ToolParser};
use super::{check_model, Kind};
use crate::engine::json_mode::JsonMode;
use crate::http::extract::{Body, Error, OpenAi, Reply};
use crate::http::fields::{kind, FieldError, Fields};
use crate::http::session::Serving;
use crate::tokenizer::ChatMessage;
use axum::extract::State;
use serde_json::{Map, Value};
use std::sync::Arc;

const ROLES: &[&str] = &["system", "user", "assistant", "tool", "developer"];

/// Checks and converts `messages`.
fn messages(f: &Fields<'_>) -> Result<Vec<ChatMessage>, FieldError> {
    let items = match f.get("messages") {
        None => return Err(FieldError::new("messages", "is required")),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(FieldError::new("messages", "must not be empty"))
        }
        Some(Value::Array(items)) => items,
        Some(v) => {
            return Err(FieldError::new(
                "messages",
                format!("must be a list of messages, got {}", kind(v)),
            ))
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = |k: &str| format!("messages[{i}].{k}");
        let obj = item
            .as_object()
            .ok_or_else(|| FieldError::new(format!("messages[{i}]"), "must be an object"))?;
        let role = obj
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| FieldError::new(at("role"), "is required and must be a string"))?;
        if !ROLES.contains(&role) {
            return Err(FieldError::new(
                at("role"),
                format!("{role:?} is not allowed: one of system, user, assistant, tool"),
            ));
        }
        let content = obj.get("content").unwrap_or(&Value::Null);
        let has_tool_calls = obj.get("tool_calls").is_some_and(|v| !v.is_null());
        match content {
            Value::String(s) if s.is_empty() => {
                return Err(FieldError::new(
                    at("content"),
                    "must not be empty (content len should not be 0)",
                ))
            }
            Value::Null if !(role == "assistant" && has_tool_calls) => {
                return Err(FieldError::new(at("content"), "is required"))
            }
            Value::Array(parts) if parts.is_empty() => {
                return Err(FieldError::new(at("content"), "must not be an empty list"))
            }
            Value::String(_) | Value::Array(_) | Value::Null => {}
            other => {
                return Err(FieldError::new(
                    at("content"),
                    format!(
                        "must be a string or a list of content parts, got {}",
                        kind(other)
                    ),
                ))
            }
        }
        if role == "tool" && !obj.get("tool_call_id").is_some_and(Value::is_string) {
            return Err(FieldError::new(
                at("tool_call_id"),
                "is required for tool messages",
            ));
        }
        let mut msg = ChatMessage::from_json(item)
            .map_err(|e| FieldError::new(format!("messages[{i}]"), e.to_string()))?;
        if msg.role == "developer" {
            msg.role = "system".into();
        }
        out.push(msg);
    }
    Ok(out)
}

/// A checked chat request: the shared fields, the messages and what shapes the prompt.
pub struct ChatRequest {
    pub common: Common,
    pub messages: Vec<ChatMessage>,
    /// `response_format: {"type": "json_object"}`: the constraint to decode under.
    pub json: Option<JsonMode>,
    /// Reads tool calls back out of replies when `tools` were given.
    pub tool_parser: Option<ToolParser>,
    pub tools: Option<Value>,
    pub chat_template_kwargs: Option<Map<String, Value>>,
    pub add_generation_prompt: bool,
}

impl ChatRequest {
    /// Reads and checks the body, in the order the fields have always been checked (the
    /// `model` check comes after the shared fields, `messages` after it).
    pub async fn read(body: &Map<String, Value>, inf: &Serving) -> Result<Self, Error<OpenAi>> {
        let f = Fields::new(body);
        let vocab = inf.vocab();
        let want_logprobs = f.bool("logprobs")?.unwrap_or(false);
        let top = f.int("top_logprobs", 0, MAX_TOP_LOGPROBS)?;
        if top.is_some() && !want_logprobs {
            return Err(FieldError::new("top_logprobs", "requires logprobs to be true").into());
        }
        let logprobs = want_logprobs.then(|| top.unwrap_or(0) as usize);
        let common = Common::parse(&f, vocab, logprobs, &inf.sampling_defaults)?;
        check_model(inf, &common.model)?;
        let messages = messages(&f)?;
        let json = match json_object(&f)? {
            true => Some(inf.json_mode().await?),
            false => None,
        };
        Ok(Self {
            common,
            messages,
            json,
            tool_parser: tools::from_request(f.get("tools"), f.get("tool_choice"))?,
            tools: f.get("tools").filter(|v| v.is_array()).cloned(),
            chat_template_kwargs: f.object("chat_template_kwargs")?.cloned(),
            add_generation_prompt: f.bool("add_generation_prompt")?.unwrap_or(true),
        })
    }
}

/// `response_format`: true for `json_object`.
fn json_object(f: &Fields<'_>) -> Result<bool, FieldError> {
    let Some(rf) = f.object("response_format")? else {
        return Ok(false);
    };
    match rf.get("type").and_then(Value::as_str) {
        Some("text") => Ok(false),
        Some("json_object") => Ok(true),
        Some("json_schema") => Err(FieldError::new(
            "response_format.type",
            "\"json_schema\" is not supported: schema-guided decoding is not implemented; use \"json_object\" (any JSON object) or \"text\"",
        )),
        other => Err(FieldError::new(
            "response_format.type",
            format!("{other:?} is not allowed: one of \"text\", \"json_object\""),
        )),
    }
}

/// The handler.
pub async fn chat(State(inf): State<Arc<Serving>>, body: Body<OpenAi>) -> Reply<OpenAi> {
    let req = ChatRequest::read(&body.map, &inf).await?;
    let common = req.common;
    let prompt = inf
        .tokenizer
        .render_and_encode_chat(
            req.messages,
            req.add_generation_prompt,
            req.tools,
            req.chat_template_kwargs,
        )
        .await?;
    let ids = inf.fit_prompt(prompt.ids, "messages")?;
    let mut jobs = Vec::with_capacity(common.n);
    for j in 0..common.n {
        let mut gen = common.gen_request(ids.clone(), j);
        gen.json = req.json.clone();
        let generation = inf.start(gen, common.gen_options(body.keys.clone()))?;
        jobs.push(Job {
            index: j,
            counts_prompt: j == 0,
            prefix: None,
            generation,
        });
    }
    let mut meta = ReplyMeta::new(Kind::Chat, &common, inf.tokenizer.tokenizer().clone());
    meta.full_text = inf.limits.full_text;
    meta.tools = req.tool_parser;
    Ok(respond(meta, jobs).await)
}
