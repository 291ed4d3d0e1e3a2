//! Tool calls in chat replies: the request's `tools` / `tool_choice` checked, and the model's
//! text read back into OpenAI `tool_calls` (SPEC §1: `message.tool_calls`,
//! `finish_reason: "tool_calls"`).
//!
//! Two output conventions are recognised, as the common chat templates teach them:
//! - **tagged** (Qwen2/2.5, Hermes and most others): each call is a JSON object
//!   `{"name", "arguments"}` between `<tool_call>` and `</tool_call>`; text outside the tags
//!   is the message content. The closing tag of the last call may be missing (the model
//!   stopped on EOS right after the JSON).
//! - **bare JSON** (Llama 3.1/3.2): the whole reply, after an optional `<|python_tag|>`, is one
//!   JSON object `{"name", "parameters" | "arguments"}` or several joined by `;`. Only names of
//!   the request's tools count here, so an ordinary JSON answer is not taken for a call.
//!
//! Text that matches neither stays plain content. Streaming ([`ToolStream`]) sends content as
//! it comes and holds back from the first sign of a call (the tag, or a reply that opens with
//! `{`), so a call is never streamed as content; the calls go out whole at the end.
//!
//! `tool_choice` `"required"` or a named function would need guided decoding to be honoured,
//! which this server does not have; such requests are refused (422) rather than served as if
//! `"auto"`.

use crate::http::fields::{kind, FieldError};
use serde_json::{json, Map, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
const PYTHON_TAG: &str = "<|python_tag|>";

/// What a request asked for: parse calls out of the reply, or not.
#[derive(Debug, Clone, Default)]
pub struct ToolParser {
    /// Function names of the request's `tools`.
    names: Vec<String>,
}

/// Checks `tools` and `tool_choice`. `Some` when the reply should be read for calls (tools
/// given and `tool_choice` is absent or `"auto"`).
pub fn from_request(
    tools: Option<&Value>,
    tool_choice: Option<&Value>,
) -> Result<Option<ToolParser>, FieldError> {
    let list = match tools {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(items),
        Some(v) => {
            return Err(FieldError::new(
                "tools",
                format!("must be a list, got {}", kind(v)),
            ))
        }
    };
    let mut names = Vec::new();
    for (i, t) in list.into_iter().flatten().enumerate() {
        let ty = t.get("type").and_then(Value::as_str);
        if ty != Some("function") {
            return Err(FieldError::new(
                format!("tools[{i}].type"),
                format!("{ty:?} is not supported: only \"function\""),
            ));
        }
        match t.pointer("/function/name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => names.push(n.to_string()),
            _ => {
                return Err(FieldError::new(
                    format!("tools[{i}].function.name"),
                    "is required and must be a non-empty string",
                ))
            }
        }
    }
    let parse = match tool_choice {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) if s == "auto" => true,
        Some(Value::String(s)) if s == "none" => false,
        Some(Value::String(s)) if s == "required" => {
            return Err(FieldError::new(
                "tool_choice",
                "\"required\" is not supported: forcing a call needs guided decoding; use \"auto\" or \"none\"",
            ))
        }
        Some(Value::Object(_)) => {
            return Err(FieldError::new(
                "tool_choice",
                "a named function is not supported: forcing a call needs guided decoding; use \"auto\" or \"none\"",
            ))
        }
        Some(v) => {
            return Err(FieldError::new(
                "tool_choice",
                format!("{v} is not allowed: one of \"auto\", \"none\""),
            ))
        }
    };
    if tool_choice.is_some_and(|v| !v.is_null()) && names.is_empty() {
        return Err(FieldError::new(
            "tool_choice",
            "is only allowed when tools are given",
        ));
    }
    Ok((parse && !names.is_empty()).then_some(ToolParser { names }))
}

/// A reply read for calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The text outside the calls, trimmed; `None` when nothing is left.
    pub content: Option<String>,
    /// OpenAI `tool_calls` entries.
    pub calls: Vec<Value>,
}

/// A new call id (`call_` and 24 hex digits).
fn call_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("call_{}", &hex[..24])
}

/// One call from a parsed object: `name` and `arguments` (or `parameters`), arguments
/// re-serialised as the JSON string OpenAI sends.
fn call_of(obj: &Map<String, Value>) -> Option<(String, String)> {
    let name = obj.get("name")?.as_str()?.to_string();
    let args = match obj.get("arguments").or_else(|| obj.get("parameters")) {
        None | Some(Value::Null) => "{}".to_string(),
        // A model may write the arguments as a JSON string already.
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    Some((name, args))
}

fn wire(name: String, args: String) -> Value {
    json!({
        "id": call_id(),
        "type": "function",
        "function": { "name": name, "arguments": args },
    })
}

fn trimmed(parts: &[&str]) -> Option<String> {
    let s = parts.concat();
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl ToolParser {
    /// Reads `text` for calls; `None` when it holds none (it is then plain content).
    pub fn parse(&self, text: &str) -> Option<Parsed> {
        self.parse_tagged(text).or_else(|| self.parse_bare(text))
    }

    fn parse_tagged(&self, text: &str) -> Option<Parsed> {
        let mut rest = text;
        let mut outside = Vec::new();
        let mut calls = Vec::new();
        while let Some(at) = rest.find(OPEN) {
            outside.push(&rest[..at]);
            let body = &rest[at + OPEN.len()..];
            let (inner, after) = match body.find(CLOSE) {
                Some(end) => (&body[..end], &body[end + CLOSE.len()..]),
                None => (body, ""),
            };
            let obj = serde_json::from_str::<Value>(inner.trim()).ok()?;
            let (name, args) = call_of(obj.as_object()?)?;
            calls.push(wire(name, args));
            rest = after;
        }
        outside.push(rest);
        (!calls.is_empty()).then(|| Parsed {
            content: trimmed(&outside),
            calls,
        })
    }

    fn parse_bare(&self, text: &str) -> Option<Parsed> {
        let t = text.trim();
        let mut rest = t.strip_prefix(PYTHON_TAG).unwrap_or(t).trim_start();
        if !rest.starts_with('{') {
            return None;
        }
        let mut calls = Vec::new();
        // Objects joined by `;` (and whitespace), nothing else.
        while !rest.is_empty() {
            let mut objs = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
            let Some(Ok(Value::Object(obj))) = objs.next() else {
                return None;
            };
            let (name, args) = call_of(&obj)?;
            if !self.names.contains(&name) {
                return None;
            }
            calls.push(wire(name, args));
            let after = &rest[objs.byte_offset()..];
            let next = after.trim_start_matches([';', ' ', '\n', '\t', '\r']);
            if next.len() == after.len() && !next.is_empty() {
                return None; // something other than a separator follows
            }
            rest = next;
        }
        Some(Parsed {
            content: None,
            calls,
        })
    }
}

/// Streaming: which part of the reply may go out as content now.
#[derive(Debug)]
pub struct ToolStream {
    parser: ToolParser,
    /// The whole reply so far.
    text: String,
    /// Bytes of `text` already sent as content.
    sent: usize,
    /// A call started: nothing more goes out until the end.
    holding: bool,
}

impl ToolStream {
    pub fn new(parser: ToolParser) -> Self {
        Self {
            parser,
            text: String::new(),
            sent: 0,
            holding: false,
        }
    }

    /// Takes the next piece of text; returns the content that may be sent now (maybe empty).
    pub fn push(&mut self, delta: &str) -> String {
        self.text.push_str(delta);
        if self.holding {
            return String::new();
        }
        let lead = self.text.trim_start();
        if lead.starts_with('{') || lead.starts_with(PYTHON_TAG) {
            self.holding = true;
            return String::new();
        }
        let pending = &self.text[self.sent..];
        let upto = match pending.find(OPEN) {
            Some(at) => {
                self.holding = true;
                at
            }
            // Hold back what could be the start of the tag (or of the python tag while the
            // reply is still only whitespace).
            None => {
                let lead_only = lead.is_empty() || PYTHON_TAG.starts_with(lead);
                if lead_only {
                    0
                } else {
                    pending.len() - partial_suffix(pending, OPEN)
                }
            }
        };
        let out = pending[..upto].to_string();
        self.sent += upto;
        out
    }

    /// At the end: the content still to send, and the calls (empty when the reply held none;
    /// everything held back is then content).
    pub fn finish(self) -> (String, Vec<Value>) {
        match self.parser.parse(&self.text) {
            Some(p) => {
                // Content already streamed is not repeated: only the held-back text outside
                // the calls is left to send.
                let tail = if self.sent == 0 {
                    p.content
                } else {
                    self.parser
                        .parse_tagged(&self.text[self.sent..])
                        .and_then(|q| q.content)
                };
                (tail.unwrap_or_default(), p.calls)
            }
            None => (self.text[self.sent..].to_string(), Vec::new()),
        }
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(names: &[&str]) -> ToolParser {
        ToolParser {
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fun(call: &Value) -> (String, Value) {
        let f = &call["function"];
        let args: Value = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
        (f["name"].as_str().unwrap().to_string(), args)
    }

    #[test]
    fn request_checks() {
        let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
        assert!(from_request(Some(&tools), None).unwrap().is_some());
        assert!(from_request(Some(&tools), Some(&json!("auto")))
            .unwrap()
            .is_some());
        assert!(from_request(Some(&tools), Some(&json!("none")))
            .unwrap()
            .is_none());
        assert!(from_request(None, None).unwrap().is_none());
        let e = from_request(Some(&tools), Some(&json!("required"))).unwrap_err();
        assert_eq!(e.field, "tool_choice");
        assert!(e.message.contains("guided decoding"), "{}", e.message);
        let named = json!({"type": "function", "function": {"name": "get_weather"}});
        assert_eq!(
            from_request(Some(&tools), Some(&named)).unwrap_err().field,
            "tool_choice"
        );
        assert_eq!(
            from_request(None, Some(&json!("auto"))).unwrap_err().field,
            "tool_choice"
        );
        let bad = json!([{"type": "function", "function": {}}]);
        assert_eq!(
            from_request(Some(&bad), None).unwrap_err().field,
            "tools[0].function.name"
        );
        let bad = json!([{"type": "retrieval"}]);
        assert_eq!(
            from_request(Some(&bad), None).unwrap_err().field,
            "tools[0].type"
        );
        assert_eq!(
            from_request(Some(&json!("x")), None).unwrap_err().field,
            "tools"
        );
    }

    #[test]
    fn tagged_calls_with_and_without_content() {
        let p = parser(&["get_weather"]);
        let r = p
            .parse("Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>")
            .unwrap();
        assert_eq!(r.content.as_deref(), Some("Let me check."));
        assert_eq!(r.calls.len(), 1);
        assert_eq!(
            fun(&r.calls[0]),
            ("get_weather".into(), json!({"city": "Paris"}))
        );
        let id = r.calls[0]["id"].as_str().unwrap();
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
        assert_eq!(r.calls[0]["type"], "function");

        // Two calls, the last one unterminated (EOS right after the JSON); arguments given
        // as a string; a name not among the tools is still the model's call.
        let r = p
            .parse("<tool_call>{\"name\": \"a\", \"arguments\": \"{\\\"x\\\": 1}\"}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {}}")
            .unwrap();
        assert_eq!(r.content, None);
        assert_eq!(fun(&r.calls[0]), ("a".into(), json!({"x": 1})));
        assert_eq!(fun(&r.calls[1]), ("b".into(), json!({})));
        assert_ne!(r.calls[0]["id"], r.calls[1]["id"]);
    }

    #[test]
    fn broken_or_absent_calls_stay_content() {
        let p = parser(&["get_weather"]);
        assert_eq!(p.parse("It is sunny."), None);
        assert_eq!(p.parse("<tool_call>{\"name\": \"get_weather\""), None);
        assert_eq!(p.parse("<tool_call>{\"arguments\": {}}</tool_call>"), None);
        assert_eq!(p.parse("<tool_call>[1, 2]</tool_call>"), None);
        // Bare JSON that names no declared tool is an answer, not a call.
        assert_eq!(p.parse("{\"name\": \"Bob\", \"age\": 3}"), None);
        assert_eq!(p.parse("{\"temperature\": 21}"), None);
    }

    #[test]
    fn bare_json_calls() {
        let p = parser(&["get_weather", "get_time"]);
        let r = p
            .parse(
                "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
            )
            .unwrap();
        assert_eq!(r.content, None);
        assert_eq!(
            fun(&r.calls[0]),
            ("get_weather".into(), json!({"city": "Oslo"}))
        );
        let r = p
            .parse(" {\"name\": \"get_weather\", \"parameters\": {}}; {\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}} ")
            .unwrap();
        assert_eq!(r.calls.len(), 2);
        assert_eq!(fun(&r.calls[1]), ("get_time".into(), json!({"tz": "UTC"})));
        assert_eq!(
            p.parse("{\"name\": \"get_weather\", \"parameters\": {}} and more"),
            None
        );
    }

    /// Feeds `text` in pieces of `n` bytes (on char boundaries); returns what was streamed as
    /// content, then the finish.
    fn stream(p: &ToolParser, text: &str, n: usize) -> (String, String, Vec<Value>) {
        let mut s = ToolStream::new(p.clone());
        let mut out = String::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = n.min(rest.len());
            while !rest.is_char_boundary(cut) {
                cut += 1;
            }
            out.push_str(&s.push(&rest[..cut]));
            rest = &rest[cut..];
        }
        let (tail, calls) = s.finish();
        (out, tail, calls)
    }

    #[test]
    fn streaming_never_leaks_a_call_as_content() {
        let p = parser(&["get_weather"]);
        let text = "Checking the weather…\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\nOne moment.";
        for n in 1..12 {
            let (sent, tail, calls) = stream(&p, text, n);
            assert!(!sent.contains('<'), "piece size {n}: {sent:?}");
            assert!(sent.starts_with("Checking"), "piece size {n}: {sent:?}");
            assert_eq!(tail, "One moment.", "piece size {n}");
            assert_eq!(calls.len(), 1, "piece size {n}");
            assert_eq!(fun(&calls[0]).1, json!({"city": "Paris"}));
        }
        // Plain text streams as it comes, except a possible tag start at the end.
        let mut s = ToolStream::new(p.clone());
        assert_eq!(s.push("Hello <to"), "Hello ");
        assert_eq!(s.push("day"), "<today");
        assert_eq!(s.finish(), (String::new(), Vec::new()));
        // A reply opening with `{` is held to the end; not a call → all of it is content.
        let (sent, tail, calls) = stream(&p, "{\"answer\": 42}", 3);
        assert_eq!((sent.as_str(), tail.as_str()), ("", "{\"answer\": 42}"));
        assert!(calls.is_empty());
        // A bare call.
        let (sent, tail, calls) = stream(&p, "{\"name\": \"get_weather\", \"parameters\": {}}", 5);
        assert_eq!((sent.as_str(), tail.as_str(), calls.len()), ("", "", 1));
        // A broken tagged call is content after all.
        let (sent, tail, calls) = stream(&p, "ok <tool_call>{\"name\": oops", 4);
        assert_eq!(format!("{sent}{tail}"), "ok <tool_call>{\"name\": oops");
        assert!(calls.is_empty());
    }
}
