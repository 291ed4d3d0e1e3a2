//! Reading request fields out of a JSON body with one clear error per bad field: the field's
//! name, the value given and what is allowed. Every flavour (OpenAI, TGI, native, Triton) reads
//! its wire fields through [`Fields`], so a wrong type or an out-of-range value always reads the
//! same way and never panics.

use crate::http::error::{ApiError, ErrorStyle};
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// A bad field: which one and why. Rendered as 422 (MindIE's "Input Validation Error").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The error reply, in the route's style.
    pub fn into_api(self, style: ErrorStyle) -> ApiError {
        let msg = self.to_string();
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
            .style(style)
            .param(self.field)
    }
}

/// Parses a request body as a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, FieldError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| FieldError::new("body", format!("invalid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(FieldError::new(
            "body",
            format!("must be a JSON object, got {}", kind(&other)),
        )),
    }
}

/// The JSON type name of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Short rendering of a value for messages (long strings and arrays are cut).
pub fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Typed, range-checked access to the fields of one JSON object. `prefix` is prepended to
/// field names in errors (e.g. `parameters.`).
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self { map, prefix: "" }
    }

    pub fn with_prefix(map: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Self { map, prefix }
    }

    /// The full name of `key` for messages.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn err(&self, key: &str, message: impl Into<String>) -> FieldError {
        FieldError::new(self.name(key), message)
    }

    /// The raw value; JSON `null` counts as absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    fn type_err(&self, key: &str, want: &str, v: &Value) -> FieldError {
        self.err(key, format!("must be {want}, got {} {}", kind(v), show(v)))
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.type_err(key, "a boolean", v)),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.type_err(key, "a string", v)),
        }
    }

    /// A string that must be given; `missing` says what is expected when it is not (e.g. "is
    /// required").
    pub fn required_str(&self, key: &str, missing: &str) -> Result<&'a str, FieldError> {
        self.str(key)?.ok_or_else(|| self.err(key, missing))
    }

    /// An integer within `[min, max]`.
    pub fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, FieldError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                // 3.0 is accepted as 3; 3.5 is not an integer.
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            }),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(self.err(key, format!("{n} is out of range: allowed [{min}, {max}]"))),
            None if matches!(v, Value::Number(_)) => Err(self.err(
                key,
                format!(
                    "{} is out of range: allowed integers in [{min}, {max}]",
                    show(v)
                ),
            )),
            None => Err(self.type_err(key, "an integer", v)),
        }
    }

    /// A seed: any non-negative integer up to 2^64 − 1 (negative ones are taken modulo 2^64,
    /// as clients that send signed seeds expect the same stream back).
    pub fn seed(&self, key: &str) -> Result<Option<u64>, FieldError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v {
            Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_i64().map(|i| i as u64))
                .map(Some)
                .ok_or_else(|| self.err(key, format!("{n} is not an integer seed"))),
            _ => Err(self.type_err(key, "an integer", v)),
        }
    }

    /// A finite number in the range `range` describes; `lo_open`/`hi_open` make an end
    /// exclusive.
    pub fn num(&self, key: &str, range: Range) -> Result<Option<f64>, FieldError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let x = match v {
            Value::Number(n) => n.as_f64(),
            _ => return Err(self.type_err(key, "a number", v)),
        };
        match x {
            Some(x) if x.is_finite() && range.contains(x) => Ok(Some(x)),
            _ => Err(self.err(key, format!("{} is out of range: allowed {range}", show(v)))),
        }
    }

    /// A string or a list of strings (`stop`-style fields).
    pub fn str_or_list(&self, key: &str) -> Result<Option<Vec<String>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, it)| match it {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(self.err(
                        &format!("{key}[{i}]"),
                        format!("must be a string, got {}", kind(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(self.type_err(key, "a string or a list of strings", v)),
        }
    }

    /// A list of integers each within `[min, max]`.
    pub fn int_list(&self, key: &str, min: i64, max: i64) -> Result<Option<Vec<i64>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, it) in items.iter().enumerate() {
                    match it.as_i64() {
                        Some(n) if (min..=max).contains(&n) => out.push(n),
                        _ => {
                            return Err(self.err(
                                &format!("{key}[{i}]"),
                                format!("{} is not allowed: integers in [{min}, {max}]", show(it)),
                            ))
                        }
                    }
                }
                Ok(Some(out))
            }
            Some(v) => Err(self.type_err(key, "a list of integers", v)),
        }
    }

    /// A nested object.
    pub fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(self.type_err(key, "an object", v)),
        }
    }
}

/// A numeric range for [`Fields::num`] with open or closed ends.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
    pub lo_open: bool,
    pub hi_open: bool,
}

impl Range {
    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Self {
        Self {
            lo,
            hi,
            lo_open: false,
            hi_open: false,
        }
    }

    /// `(lo, hi]`.
    pub const fn left_open(lo: f64, hi: f64) -> Self {
        Self {
            lo,
            hi,
            lo_open: true,
            hi_open: false,
        }
    }

    /// `[lo, +inf)`.
    pub const fn at_least(lo: f64) -> Self {
        Self::closed(lo, f64::INFINITY)
    }

    pub fn contains(&self, x: f64) -> bool {
        let lo_ok = if self.lo_open {
            x > self.lo
        } else {
            x >= self.lo
        };
        let hi_ok = if self.hi_open {
            x < self.hi
        } else {
            x <= self.hi
        };
        lo_ok && hi_ok
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = if self.lo_open { '(' } else { '[' };
        let close = if self.hi_open || self.hi.is_infinite() {
            ')'
        } else {
            ']'
        };
        let hi = if self.hi.is_infinite() {
            "+inf".to_string()
        } else {
            self.hi.to_string()
        };
        write!(f, "{open}{}, {hi}{close}", self.lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn typed_reads_and_errors_name_the_field() {
        let m = obj(json!({
            "t": 0.5, "bad_t": -1, "s": "x", "n": 3, "f": 2.0, "frac": 2.5, "b": true,
            "stop": ["a", 1], "ids": [1, 2, 99], "nul": null
        }));
        let f = Fields::new(&m);
        assert_eq!(f.num("t", Range::closed(0.0, 2.0)).unwrap(), Some(0.5));
        let e = f.num("bad_t", Range::at_least(0.0)).unwrap_err();
        assert_eq!(e.field, "bad_t");
        assert!(e.message.contains("[0, +inf)"), "{e}");
        assert_eq!(f.int("n", 1, 5).unwrap(), Some(3));
        assert_eq!(f.int("f", 1, 5).unwrap(), Some(2));
        assert!(f.int("frac", 1, 5).is_err());
        assert!(f.int("n", 4, 5).unwrap_err().message.contains("[4, 5]"));
        assert!(f.int("s", 0, 1).unwrap_err().message.contains("an integer"));
        assert_eq!(f.bool("b").unwrap(), Some(true));
        assert_eq!(f.bool("nul").unwrap(), None);
        assert_eq!(f.str_or_list("stop").unwrap_err().field, "stop[1]");
        assert_eq!(f.int_list("ids", 0, 10).unwrap_err().field, "ids[2]");
        let p = Fields::with_prefix(&m, "parameters.");
        assert_eq!(p.bool("s").unwrap_err().field, "parameters.s");
        assert_eq!(f.required_str("s", "is required").unwrap(), "x");
        assert_eq!(
            p.required_str("nul", "is required")
                .unwrap_err()
                .to_string(),
            "parameters.nul: is required"
        );
    }

    #[test]
    fn ranges_render_their_ends() {
        assert_eq!(Range::left_open(0.0, 1.0).to_string(), "(0, 1]");
        assert!(!Range::left_open(0.0, 1.0).contains(0.0));
        assert!(Range::left_open(0.0, 1.0).contains(1.0));
    }

    #[test]
    fn body_must_be_an_object() {
        assert_eq!(parse_object(b"[1]").unwrap_err().field, "body");
        assert!(parse_object(b"{oops")
            .unwrap_err()
            .message
            .contains("invalid JSON"));
        assert!(parse_object(b"{}").is_ok());
    }
}
