//! Server-Sent Events for the load generator: an incremental byte parser that survives events
//! split across reads (and several events in one read), and the classification of one event's
//! `data` payload as an OpenAI streaming chunk, a usage chunk, an error or `[DONE]`.
//!
//! Pure code, no I/O: `tests/loadgen.rs` includes this file directly.

use serde_json::Value;

/// Incremental SSE parser: feed bytes as they arrive, get the `data` payload of every event
/// completed by them. Lines end in `\n` or `\r\n`; an empty line ends an event; several `data:`
/// lines of one event are joined with `\n`; comments (`:`) and other fields are ignored.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `bytes`; returns the payloads of the events they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, &mut out);
        }
        out
    }

    /// The stream ended: an event cut off before its blank line is still delivered.
    pub fn finish(&mut self) -> Option<String> {
        let line = std::mem::take(&mut self.line);
        let mut out = Vec::new();
        if !line.is_empty() {
            self.take_line(&line, &mut out);
        }
        out.pop().or_else(|| self.data.take())
    }

    fn take_line(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        let Some(rest) = line.strip_prefix(b"data:") else {
            return; // comment, event:, id:, retry: — nothing the generator needs
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        let text = String::from_utf8_lossy(rest);
        match &mut self.data {
            Some(d) => {
                d.push('\n');
                d.push_str(&text);
            }
            None => self.data = Some(text.into_owned()),
        }
    }
}

/// Token counts from a chunk's `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// One streaming chunk, reduced to what the measurements need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chunk {
    /// Number of entries in `choices`.
    pub choices: usize,
    /// Whether any choice carries non-empty `text` (completions) or `delta.content` (chat).
    pub has_text: bool,
    pub usage: Option<Usage>,
}

/// What one SSE event means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `data: [DONE]`: the stream is complete.
    Done,
    Chunk(Chunk),
    /// `data: {"error": ...}`: the server gave up mid-stream; the message as sent.
    Error(String),
    /// Not JSON, or JSON of no known shape; the reason.
    Malformed(String),
}

/// Classifies the payload of one event.
pub fn classify(data: &str) -> Event {
    let data = data.trim();
    if data == "[DONE]" {
        return Event::Done;
    }
    let v: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Event::Malformed(format!("event is not JSON ({e}): {}", clip(data))),
    };
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| err.to_string());
        return Event::Error(msg);
    }
    let usage = v.get("usage").and_then(parse_usage);
    let Some(choices) = v.get("choices").and_then(Value::as_array) else {
        if usage.is_some() {
            return Event::Chunk(Chunk {
                choices: 0,
                has_text: false,
                usage,
            });
        }
        return Event::Malformed(format!("chunk without choices: {}", clip(data)));
    };
    let has_text = choices.iter().any(|c| {
        let text = c
            .get("text")
            .or_else(|| c.get("delta").and_then(|d| d.get("content")));
        text.and_then(Value::as_str).is_some_and(|t| !t.is_empty())
    });
    Event::Chunk(Chunk {
        choices: choices.len(),
        has_text,
        usage,
    })
}

fn parse_usage(u: &Value) -> Option<Usage> {
    Some(Usage {
        prompt_tokens: u.get("prompt_tokens")?.as_u64()?,
        completion_tokens: u.get("completion_tokens")?.as_u64()?,
    })
}

/// The first 200 characters of `s`, for error messages.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
