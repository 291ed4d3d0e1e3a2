//! Chat templates: [`ChatMessage`] and [`Tokenizer::render_chat`], rendering the model's Jinja
//! chat template with minijinja the way `transformers`' `apply_chat_template` does.
//!
//! What makes HF templates render identically here:
//! - `trim_blocks` and `lstrip_blocks` on, trailing newline of the template dropped (Jinja2's
//!   default), no auto-escaping, `{% break %}`/`{% continue %}` available;
//! - Python string/dict methods (`.strip()`, `.startswith()`, `.items()`, `.get()`, ...) through
//!   `minijinja_contrib::pycompat`;
//! - `raise_exception(msg)` fails rendering with `msg` ([`TokenizerError::TemplateRaised`]);
//! - `tojson` is Python's `json.dumps` (see `pyjson.rs`); `strftime_now(fmt)` gives today's date
//!   (UTC);
//! - context: `messages`, `add_generation_prompt`, `tools` (none when absent), `documents`,
//!   the special tokens (`bos_token`, `eos_token`, `pad_token`, `unk_token`) and the request's
//!   `chat_template_kwargs`, which may override the special tokens but not the rest.
//!
//! A template list (`[{name, template}]`) renders `tool_use` when tools are given and the model
//! has one, else `default`.

use minijinja::syntax::SyntaxConfig;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Value};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::files::TemplateSource;
use super::{pyjson, strftime, Tokenizer, TokenizerError};

/// One chat message as the template sees it.
///
/// `content` is text: a list of content parts must be joined first, either by the caller or by
/// [`ChatMessage::from_json`] (text parts joined with `"\n"`, as vLLM does for text-only
/// templates). `tool_calls` is passed through as given, except that a `function.arguments` JSON
/// string is parsed into an object, because HF templates print it with `tojson`. Fields in
/// `extra` (e.g. `reasoning_content`) reach the template as message attributes too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool` (not checked here: the template decides).
    pub role: String,
    /// The text; `None` is `null` in the template (an assistant turn with only tool calls).
    pub content: Option<String>,
    /// Optional participant name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For `tool` messages: the call this answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `assistant` messages: the OpenAI `tool_calls` list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Json>,
    /// Any other fields of the message.
    #[serde(flatten)]
    pub extra: Map<String, Json>,
}

impl ChatMessage {
    /// A message with just a role and text.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: Some(content.into()),
            ..ChatMessage::default()
        }
    }

    /// Builds a message from an OpenAI-style JSON object: `role` (string), `content` (string,
    /// null, or a list of `{"type": "text", "text": ...}` parts, joined with `"\n"`), `name`,
    /// `tool_call_id`, `tool_calls`; other fields go to `extra`.
    pub fn from_json(v: &Json) -> Result<ChatMessage, TokenizerError> {
        let obj = v
            .as_object()
            .ok_or_else(|| TokenizerError::InvalidMessage("a message must be an object".into()))?;
        let mut msg = ChatMessage::default();
        for (key, value) in obj {
            match key.as_str() {
                "role" => {
                    msg.role = value
                        .as_str()
                        .ok_or_else(|| bad("\"role\" must be a string"))?
                        .to_string()
                }
                "content" => msg.content = join_text_parts(value)?,
                "name" => msg.name = opt_string(value, "name")?,
                "tool_call_id" => msg.tool_call_id = opt_string(value, "tool_call_id")?,
                "tool_calls" => msg.tool_calls = (!value.is_null()).then(|| value.clone()),
                _ => {
                    msg.extra.insert(key.clone(), value.clone());
                }
            }
        }
        if msg.role.is_empty() {
            return Err(bad("\"role\" is required"));
        }
        Ok(msg)
    }
}

fn bad(msg: &str) -> TokenizerError {
    TokenizerError::InvalidMessage(msg.to_string())
}

fn opt_string(v: &Json, key: &str) -> Result<Option<String>, TokenizerError> {
    match v {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        _ => Err(bad(&format!("\"{key}\" must be a string"))),
    }
}

/// Message `content` as text: a string as is, `null` as `None`, a list of text parts joined
/// with `"\n"`. Other part types are refused: these models read text only.
pub fn join_text_parts(content: &Json) -> Result<Option<String>, TokenizerError> {
    match content {
        Json::Null => Ok(None),
        Json::String(s) => Ok(Some(s.clone())),
        Json::Array(parts) => {
            let mut texts = Vec::with_capacity(parts.len());
            for part in parts {
                let kind = part.get("type").and_then(Json::as_str).unwrap_or("");
                if kind != "text" {
                    return Err(bad(&format!(
                        "content part type {kind:?} is not supported: only \"text\" parts are"
                    )));
                }
                let text = part
                    .get("text")
                    .and_then(Json::as_str)
                    .ok_or_else(|| bad("a \"text\" content part needs a string \"text\""))?;
                texts.push(text);
            }
            Ok(Some(texts.join("\n")))
        }
        _ => Err(bad("\"content\" must be a string, null or a list of parts")),
    }
}

/// The compiled templates of one model.
pub(crate) struct ChatTemplates {
    env: Environment<'static>,
    names: Vec<String>,
}

/// Marks an error raised by the template's own `raise_exception`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RaisedException(String);

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg.clone()).with_source(RaisedException(msg)))
}

impl ChatTemplates {
    /// Compiles every template; `None` when there is none.
    pub(crate) fn compile(
        sources: &[TemplateSource],
    ) -> Result<Option<ChatTemplates>, TokenizerError> {
        if sources.is_empty() {
            return Ok(None);
        }
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TokenizerError::TemplateRender(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", pyjson::tojson_filter);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime::strftime_now);
        let mut names = Vec::with_capacity(sources.len());
        for t in sources {
            env.add_template_owned(t.name.clone(), t.source.clone())
                .map_err(|e| TokenizerError::TemplateSyntax {
                    path: t.origin.clone(),
                    name: t.name.clone(),
                    message: e.to_string(),
                })?;
            names.push(t.name.clone());
        }
        Ok(Some(ChatTemplates { env, names }))
    }

    fn pick(&self, has_tools: bool) -> Result<&str, TokenizerError> {
        let has = |n: &str| self.names.iter().any(|x| x == n);
        if has_tools && has("tool_use") {
            Ok("tool_use")
        } else if has("default") {
            Ok("default")
        } else {
            Err(TokenizerError::NoDefaultTemplate {
                names: self.names.join(", "),
            })
        }
    }
}

/// `tool_calls[].function.arguments` given as a JSON string → the parsed object.
fn parse_tool_call_arguments(tool_calls: &mut Json) {
    let Some(calls) = tool_calls.as_array_mut() else {
        return;
    };
    for call in calls {
        let Some(args) = call.pointer_mut("/function/arguments") else {
            continue;
        };
        if let Some(text) = args.as_str() {
            if let Ok(parsed @ Json::Object(_)) = serde_json::from_str::<Json>(text) {
                *args = parsed;
            }
        }
    }
}

fn message_values(messages: &[ChatMessage]) -> Result<Json, TokenizerError> {
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let mut v =
            serde_json::to_value(m).map_err(|e| TokenizerError::InvalidMessage(e.to_string()))?;
        if let Some(calls) = v.get_mut("tool_calls") {
            parse_tool_call_arguments(calls);
        }
        out.push(v);
    }
    Ok(Json::Array(out))
}

impl Tokenizer {
    /// Renders the chat template over `messages`. `tools` is the request's tool list (passed as
    /// is), `extra` its `chat_template_kwargs`. Errors: [`TokenizerError::NoChatTemplate`] when
    /// the model has none, [`TokenizerError::TemplateRaised`] when the template rejects the
    /// messages, [`TokenizerError::TemplateRender`] for any other failure.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        tools: Option<&Json>,
        extra: Option<&Map<String, Json>>,
    ) -> Result<String, TokenizerError> {
        let templates = self
            .inner
            .chat
            .as_ref()
            .ok_or(TokenizerError::NoChatTemplate)?;
        let name = templates.pick(tools.is_some_and(|t| !t.is_null()))?;

        let mut ctx = Map::new();
        let n = &self.inner.names;
        for (key, value) in [
            ("bos_token", &n.bos),
            ("eos_token", &n.eos),
            ("pad_token", &n.pad),
            ("unk_token", &n.unk),
        ] {
            if let Some(v) = value {
                ctx.insert(key.into(), Json::String(v.clone()));
            }
        }
        if let Some(extra) = extra {
            for (k, v) in extra {
                ctx.insert(k.clone(), v.clone());
            }
        }
        ctx.entry("documents").or_insert(Json::Null);
        ctx.insert("messages".into(), message_values(messages)?);
        ctx.insert("tools".into(), tools.cloned().unwrap_or(Json::Null));
        ctx.insert(
            "add_generation_prompt".into(),
            Json::Bool(add_generation_prompt),
        );

        let template = templates
            .env
            .get_template(name)
            .map_err(|e| TokenizerError::TemplateRender(e.to_string()))?;
        template
            .render(Value::from(minijinja::value::Serde(&ctx)))
            .map_err(render_error)
    }

    /// The names of the model's chat templates (`default`, `tool_use`, ...), empty when none.
    pub fn chat_template_names(&self) -> Vec<String> {
        self.inner
            .chat
            .as_ref()
            .map(|t| t.names.clone())
            .unwrap_or_default()
    }
}

fn render_error(e: Error) -> TokenizerError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RaisedException>() {
            return TokenizerError::TemplateRaised(r.0.clone());
        }
        source = s.source();
    }
    TokenizerError::TemplateRender(e.to_string())
}
