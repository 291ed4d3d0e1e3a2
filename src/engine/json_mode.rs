//! JSON mode (`response_format: {"type": "json_object"}`): sampling restricted to tokens that
//! keep the output a prefix of one JSON object, and EOS only once the object is closed.
//!
//! [`JsonState`] is an incremental JSON recogniser over bytes. Structure is ASCII, so a
//! token's text (its lone decoding, where a partial UTF-8 character shows as U+FFFD) is
//! judged exactly wherever it matters; non-ASCII bytes are accepted only inside strings.
//! [`JsonConstraint`] holds every token's text; per step it masks the logits of a sequence by
//! running a copy of its state over each candidate token.
//!
//! Runs of whitespace between tokens are capped ([`MAX_WS_RUN`]) so a model cannot pad forever,
//! and nothing may follow the closed object but EOS. The output can still end unfinished at
//! the length limit (`finish_reason: "length"`), as with OpenAI.

use std::sync::Arc;

/// Most whitespace bytes in a row outside strings.
pub const MAX_WS_RUN: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Object,
    Array,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    E,
    ESign,
    Exp,
}

impl Num {
    fn terminal(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::Exp)
    }

    fn next(self, b: u8) -> Option<Num> {
        Some(match (self, b) {
            (Num::Minus, b'0') => Num::Zero,
            (Num::Minus, b'1'..=b'9') => Num::Int,
            (Num::Int, b'0'..=b'9') => Num::Int,
            (Num::Zero | Num::Int, b'.') => Num::Dot,
            (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
            (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::E,
            (Num::E, b'+' | b'-') => Num::ESign,
            (Num::E | Num::ESign | Num::Exp, b'0'..=b'9') => Num::Exp,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the top-level object.
    Start,
    /// A value is due; `]` too when the array is still empty.
    Value {
        close: bool,
    },
    /// After `{`: a key or `}`.
    KeyOrClose,
    /// After `,` in an object: a key.
    Key,
    /// Inside a string; `escape`: 0 none, 1 after `\`, 2..=5: one more than the hex digits
    /// of a `\u` escape still due.
    Str {
        key: bool,
        escape: u8,
    },
    /// After a key: `:`.
    Colon,
    /// After a value: `,` or the container's close.
    After,
    Number(Num),
    /// The rest of `true`, `false` or `null`.
    Literal(&'static [u8]),
    /// The top-level object is closed.
    Done,
}

/// Where the output stands. Cheap to clone (the container stack is the only heap part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonState {
    stack: Vec<Container>,
    mode: Mode,
    ws_run: u8,
}

impl Default for JsonState {
    fn default() -> Self {
        Self {
            stack: Vec::new(),
            mode: Mode::Start,
            ws_run: 0,
        }
    }
}

/// Text that can sit inside a JSON string as it is: no quote, backslash or control byte.
fn plain(text: &[u8]) -> bool {
    text.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

impl JsonState {
    /// Inside a string, not in an escape: any [`plain`] text keeps it so.
    fn in_plain_string(&self) -> bool {
        matches!(self.mode, Mode::Str { escape: 0, .. })
    }

    /// The top-level object is complete.
    pub fn is_complete(&self) -> bool {
        self.mode == Mode::Done
    }

    /// Takes `bytes`; false (state then unspecified) if they cannot continue a JSON object.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.byte(b))
    }

    fn value_done(&mut self) {
        self.mode = if self.stack.is_empty() {
            Mode::Done
        } else {
            Mode::After
        };
    }

    fn close(&mut self, c: Container) -> bool {
        if self.stack.pop() != Some(c) {
            return false;
        }
        self.value_done();
        true
    }

    fn open(&mut self, c: Container) {
        self.stack.push(c);
        self.mode = match c {
            Container::Object => Mode::KeyOrClose,
            Container::Array => Mode::Value { close: true },
        };
    }

    fn byte(&mut self, b: u8) -> bool {
        let between = matches!(
            self.mode,
            Mode::Start
                | Mode::Value { .. }
                | Mode::KeyOrClose
                | Mode::Key
                | Mode::Colon
                | Mode::After
        );
        if between && is_ws(b) {
            if self.ws_run >= MAX_WS_RUN {
                return false;
            }
            self.ws_run += 1;
            return true;
        }
        self.ws_run = 0;
        match self.mode {
            Mode::Start => {
                if b != b'{' {
                    return false;
                }
                self.open(Container::Object);
            }
            Mode::Value { close } => match b {
                b'{' => self.open(Container::Object),
                b'[' => self.open(Container::Array),
                b'"' => {
                    self.mode = Mode::Str {
                        key: false,
                        escape: 0,
                    }
                }
                b'-' => self.mode = Mode::Number(Num::Minus),
                b'0' => self.mode = Mode::Number(Num::Zero),
                b'1'..=b'9' => self.mode = Mode::Number(Num::Int),
                b't' => self.mode = Mode::Literal(b"rue"),
                b'f' => self.mode = Mode::Literal(b"alse"),
                b'n' => self.mode = Mode::Literal(b"ull"),
                b']' if close => return self.close(Container::Array),
                _ => return false,
            },
            Mode::KeyOrClose | Mode::Key => match b {
                b'"' => {
                    self.mode = Mode::Str {
                        key: true,
                        escape: 0,
                    }
                }
                b'}' if self.mode == Mode::KeyOrClose => return self.close(Container::Object),
                _ => return false,
            },
            Mode::Str { key, escape } => {
                let escape = match (escape, b) {
                    (0, b'"') => {
                        if key {
                            self.mode = Mode::Colon;
                        } else {
                            self.value_done();
                        }
                        return true;
                    }
                    (0, b'\\') => 1,
                    (0, 0..=0x1f) => return false,
                    (0, _) => 0,
                    (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
                    (1, b'u') => 5,
                    (2, b) if b.is_ascii_hexdigit() => 0,
                    (3..=5, b) if b.is_ascii_hexdigit() => escape - 1,
                    _ => return false,
                };
                self.mode = Mode::Str { key, escape };
            }
            Mode::Colon => {
                if b != b':' {
                    return false;
                }
                self.mode = Mode::Value { close: false };
            }
            Mode::After => match (self.stack.last(), b) {
                (Some(Container::Object), b',') => self.mode = Mode::Key,
                (Some(Container::Array), b',') => self.mode = Mode::Value { close: false },
                (_, b'}') => return self.close(Container::Object),
                (_, b']') => return self.close(Container::Array),
                _ => return false,
            },
            Mode::Number(n) => match n.next(b) {
                Some(next) => self.mode = Mode::Number(next),
                None if n.terminal() => {
                    self.value_done();
                    return self.byte(b);
                }
                None => return false,
            },
            Mode::Literal(rest) => {
                if rest.first() != Some(&b) {
                    return false;
                }
                if rest.len() == 1 {
                    self.value_done();
                } else {
                    self.mode = Mode::Literal(&rest[1..]);
                }
            }
            Mode::Done => return false,
        }
        true
    }
}

/// A request's JSON mode: the shared token texts (equal when they are the same table).
#[derive(Debug, Clone)]
pub struct JsonMode(pub Arc<JsonConstraint>);

impl PartialEq for JsonMode {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Every token's text, for masking; shared by all JSON-mode requests.
#[derive(Debug)]
pub struct JsonConstraint {
    /// Bytes of each token id's text; empty for tokens never allowed (special tokens).
    texts: Vec<Vec<u8>>,
    /// Which texts are [`plain`] (allowed inside a string without running the recogniser).
    plain: Vec<bool>,
}

impl JsonConstraint {
    /// `texts[id]`: the token's text alone (empty: never allowed).
    pub fn new(texts: Vec<Vec<u8>>) -> Arc<Self> {
        let plain = texts.iter().map(|t| plain(t)).collect();
        Arc::new(Self { texts, plain })
    }

    /// Sets the logit of every token that cannot follow `state` to −∞; `eos` ids are allowed
    /// exactly when the object is complete. Returns false when nothing at all is allowed.
    pub fn mask(&self, state: &JsonState, eos: &[u32], logits: &mut [f32]) -> bool {
        let done = state.is_complete();
        let in_string = state.in_plain_string();
        let mut any = false;
        // One scratch state, reset per token (`clone_from` keeps its stack's allocation).
        let mut s = state.clone();
        for (id, l) in logits.iter_mut().enumerate() {
            let ok = if eos.contains(&(id as u32)) {
                done
            } else if in_string && self.plain.get(id) == Some(&true) {
                // (Most of the vocabulary while a string is open: no need to run it.)
                !self.texts[id].is_empty()
            } else {
                !done
                    && self.texts.get(id).is_some_and(|t| {
                        !t.is_empty() && {
                            s.clone_from(state);
                            s.feed(t)
                        }
                    })
            };
            if ok {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        any
    }

    /// Advances `state` by token `id` (EOS and unknown ids leave it as it is).
    pub fn advance(&self, state: &mut JsonState, id: u32) {
        if let Some(t) = self.texts.get(id as usize) {
            state.feed(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sampler::Rng;

    /// serde_json's verdict on `s` as an object prefix: Some(true) complete, Some(false) a
    /// valid unfinished prefix, None invalid.
    /// (Only an object counts, and nothing may follow it, not even whitespace.)
    fn oracle(s: &str) -> Option<bool> {
        let lead = s.trim_start();
        if !lead.is_empty() && !lead.starts_with('{') {
            return None;
        }
        match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => (v.is_object() && s.trim_end() == s).then_some(true),
            Err(e) if e.is_eof() => Some(false),
            Err(_) => None,
        }
    }

    fn ours(s: &str) -> Option<bool> {
        let mut st = JsonState::default();
        st.feed(s.as_bytes()).then(|| st.is_complete())
    }

    #[test]
    fn accepts_and_rejects_like_serde_json() {
        for s in [
            "{}",
            "{\"a\": 1}",
            "{\"a\": [1, 2.5e-3, -0, true, false, null, \"x\\u00e9\\n\"], \"b\": {\"c\": []}}",
            " {\"k\":\"é\"}",
            "{\"a\"",
            "{\"a\": -",
            "{\"a\": 1.",
            "{\"a\": tr",
            "{\"a\": \"\\u12",
        ] {
            assert_eq!(ours(s), oracle(s), "{s:?}");
        }
        for bad in [
            "[1]",
            "{,}",
            "{\"a\" 1}",
            "{\"a\": 01}",
            "{\"a\": 1.e}",
            "{\"a\": tru}",
            "{\"a\": \"\\x\"}",
            "{\"a\": \"\\u00-\"}",
            "{\"a\": [1,]}",
            "{\"a\": 1}}",
            "{} ",
            "{\"a\": \"\u{1}\"}",
        ] {
            assert_eq!(ours(bad), None, "{bad:?}");
        }
    }

    /// Random strings over JSON's alphabet: every prefix is judged as serde_json judges it
    /// (as long as whitespace runs stay under the cap). Escapes come whole: serde_json reads
    /// the four digits of `\u` before judging them, so it calls `"\u0-` unfinished.
    #[test]
    fn random_prefixes_match_serde_json() {
        let alphabet: Vec<&str> = vec![
            "{", "}", "[", "]", ",", ":", "\"", "\\\"", "a", "u", "1", "0", "-", ".", "e", "+",
            "true", "null", " ", "\"k\":", "\"v\"", "\\u00e9", "\\n", "é",
        ];
        let mut rng = Rng::new(7);
        let (mut complete, mut partial) = (0, 0);
        for _ in 0..20_000 {
            let mut s = String::from(["{", " {", "{\"k\":"][rng.below(3)]);
            for _ in 0..rng.below(14) {
                s.push_str(alphabet[rng.below(alphabet.len())]);
                let (a, b) = (ours(&s), oracle(&s));
                assert_eq!(a, b, "{s:?}");
                match a {
                    Some(true) => complete += 1,
                    Some(false) => partial += 1,
                    None => break,
                }
            }
        }
        assert!(complete > 300 && partial > 5_000, "{complete} {partial}");
    }

    /// The string fast path of `mask` allows exactly what running the recogniser would.
    #[test]
    fn mask_fast_path_agrees_with_the_recogniser() {
        let toks = [
            "a", " b", "é", "\"", "\",", "\\", "\\n", "\n", "x\"}", "{", "}", "1", "\t", "\u{1}",
            "ok\":", " ", "<|x|>",
        ];
        let texts: Vec<Vec<u8>> = toks.iter().map(|t| t.as_bytes().to_vec()).collect();
        let c = JsonConstraint::new(texts.clone());
        for prefix in ["{\"", "{\"k\": \"v", "{\"k\": \"\\", "{\"k\": [", "{\"k\""] {
            let mut st = JsonState::default();
            assert!(st.feed(prefix.as_bytes()), "{prefix}");
            let mut l = vec![0f32; texts.len()];
            c.mask(&st, &[], &mut l);
            for (i, t) in texts.iter().enumerate() {
                let mut s = st.clone();
                assert_eq!(l[i] == 0.0, s.feed(t), "{prefix:?} + {:?}", toks[i]);
            }
        }
    }

    #[test]
    fn whitespace_runs_are_capped() {
        let mut st = JsonState::default();
        assert!(st.feed(&[b' '; MAX_WS_RUN as usize]));
        assert!(!st.clone().feed(b" "));
        assert!(st.feed(b"{"));
    }

    #[test]
    fn mask_allows_continuations_and_eos_only_when_complete() {
        let texts: Vec<Vec<u8>> = ["{", "}", "\"a\"", ":", "1", "x", "", "</s>"]
            .iter()
            .map(|t| t.as_bytes().to_vec())
            .collect();
        let c = JsonConstraint::new(texts);
        let eos = [7u32];
        let allowed = |st: &JsonState| {
            let mut l = vec![0f32; 8];
            c.mask(st, &eos, &mut l);
            (0..8).filter(|&i| l[i] == 0.0).collect::<Vec<_>>()
        };
        let mut st = JsonState::default();
        assert_eq!(allowed(&st), vec![0]);
        c.advance(&mut st, 0);
        assert_eq!(allowed(&st), vec![1, 2]);
        for id in [2, 3, 4] {
            c.advance(&mut st, id);
        }
        assert_eq!(allowed(&st), vec![1, 4]);
        c.advance(&mut st, 1);
        assert!(st.is_complete());
        assert_eq!(allowed(&st), vec![7]);
    }
}
