//! `POST /v1/chat/completions`: messages checked per SPEC §1 (roles, non-empty content, tool
//! messages with `tool_call_id`), rendered with the model's chat template (`tools` and
//! `chat_template_kwargs` passed through), then run like a completion of the rendered prompt.
//! With `tools`, replies are read back for tool calls (see `tools`).

use super::request::{Common, MAX_TOP_LOGPROBS};
use super::respond::{respond, Job, ReplyMeta};
use super::{check_model, tools, Kind};
use crate::http::error::{ApiError, ErrorStyle};
use crate::http::fields::{kind, parse_object, FieldError, Fields};
use crate::http::session::{GenError, Serving};
use crate::tokenizer::ChatMessage;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
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

/// The handler.
pub async fn chat(
    State(inf): State<Arc<Serving>>,
    parts: axum::http::request::Parts,
    body: Bytes,
) -> Response {
    match run(&inf, &body, crate::http::request_keys(&parts)).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(inf: &Serving, body: &[u8], keys: Vec<String>) -> Result<Response, ApiError> {
    let style = ErrorStyle::OpenAi;
    let field_err = |e: FieldError| e.into_api(style);
    let map = parse_object(body).map_err(field_err)?;
    let f = Fields::new(&map);
    let vocab = inf.tokenizer.tokenizer().vocab_size();
    let want_logprobs = f.bool("logprobs").map_err(field_err)?.unwrap_or(false);
    let top = f
        .int("top_logprobs", 0, MAX_TOP_LOGPROBS)
        .map_err(field_err)?;
    if top.is_some() && !want_logprobs {
        return Err(field_err(FieldError::new(
            "top_logprobs",
            "requires logprobs to be true",
        )));
    }
    let logprobs = want_logprobs.then(|| top.unwrap_or(0) as usize);
    let common = Common::parse(&f, vocab, logprobs, &inf.sampling_defaults).map_err(field_err)?;
    check_model(inf, &common.model)?;
    let msgs = messages(&f).map_err(field_err)?;
    let json_object = match f.object("response_format").map_err(field_err)? {
        None => false,
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("text") => false,
            Some("json_object") => true,
            Some("json_schema") => {
                return Err(field_err(FieldError::new(
                    "response_format.type",
                    "\"json_schema\" is not supported: schema-guided decoding is not implemented; use \"json_object\" (any JSON object) or \"text\"",
                )))
            }
            other => {
                return Err(field_err(FieldError::new(
                    "response_format.type",
                    format!("{other:?} is not allowed: one of \"text\", \"json_object\""),
                )))
            }
        },
    };
    let json = if json_object {
        Some(inf.json_mode().await.map_err(|e| e.into_api(style))?)
    } else {
        None
    };
    let tool_parser =
        tools::from_request(f.get("tools"), f.get("tool_choice")).map_err(field_err)?;
    let tools = f.get("tools").filter(|v| v.is_array()).cloned();
    let kwargs = f
        .object("chat_template_kwargs")
        .map_err(field_err)?
        .cloned();
    let add_generation_prompt = f
        .bool("add_generation_prompt")
        .map_err(field_err)?
        .unwrap_or(true);
    let prompt = inf
        .tokenizer
        .render_and_encode_chat(msgs, add_generation_prompt, tools, kwargs)
        .await
        .map_err(|e| GenError::from(e).into_api(style))?;
    let ids = inf
        .fit_prompt(prompt.ids, "messages")
        .map_err(|e| e.into_api(style))?;
    let mut jobs = Vec::with_capacity(common.n);
    for j in 0..common.n {
        let mut req = common.gen_request(ids.clone(), j);
        req.json = json.clone();
        let generation = inf
            .start(req, common.gen_options(keys.clone()))
            .map_err(|e| e.into_api(style))?;
        jobs.push(Job {
            index: j,
            counts_prompt: j == 0,
            prefix: None,
            generation,
        });
    }
    let mut meta = ReplyMeta::new(Kind::Chat, &common, inf.tokenizer.tokenizer().clone());
    meta.full_text = inf.limits.full_text;
    meta.tools = tool_parser;
    Ok(respond(meta, jobs).await)
}
