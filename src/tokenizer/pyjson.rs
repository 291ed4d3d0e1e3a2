//! Python's `json.dumps`, for the chat templates' `tojson` filter.
//!
//! Chat templates were written against `transformers`, whose `tojson` is
//! `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`: no HTML
//! escaping (minijinja's own `tojson` escapes `< > & '`), `", "` / `": "` separators (`","` between
//! items when indenting), floats as Python's `repr` (`1.0`, `1e-07`, `1e+16`). The tool schemas a
//! template prints this way become prompt tokens, so every byte must match.

use minijinja::value::Kwargs;
use minijinja::{Error, ErrorKind, Value};
use serde_json::Value as Json;

/// Output options of `json.dumps`.
#[derive(Debug, Clone)]
pub(crate) struct DumpOptions {
    pub ensure_ascii: bool,
    /// `None`: one line. `Some(s)`: one item per line, `s` per nesting level.
    pub indent: Option<String>,
    pub item_sep: String,
    pub key_sep: String,
    pub sort_keys: bool,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            ensure_ascii: false,
            indent: None,
            item_sep: ", ".into(),
            key_sep: ": ".into(),
            sort_keys: false,
        }
    }
}

/// The `tojson` filter: `x|tojson`, `x|tojson(indent=4)`, also `ensure_ascii`, `separators`,
/// `sort_keys` as keywords (a positional argument is `ensure_ascii`, as in `transformers`).
pub(crate) fn tojson_filter(
    value: &Value,
    ensure_ascii: Option<bool>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let mut opts = DumpOptions {
        ensure_ascii: match ensure_ascii {
            Some(b) => b,
            None => kwargs.get::<Option<bool>>("ensure_ascii")?.unwrap_or(false),
        },
        ..DumpOptions::default()
    };
    let indent: Option<Value> = kwargs.get("indent")?;
    if let Some(indent) = indent.filter(|v| !v.is_none()) {
        opts.indent = Some(if let Some(s) = indent.as_str() {
            s.to_string()
        } else {
            let n = indent.as_i64().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson: indent must be an int or a string",
                )
            })?;
            " ".repeat(usize::try_from(n).unwrap_or(0).min(64))
        });
        opts.item_sep = ",".into();
    }
    let separators: Option<Value> = kwargs.get("separators")?;
    if let Some(seps) = separators.filter(|v| !v.is_none()) {
        let parts: Vec<String> = seps
            .try_iter()
            .map_err(|_| sep_error())?
            .map(|v| v.as_str().map(str::to_string).ok_or_else(sep_error))
            .collect::<Result<_, _>>()?;
        let [item, key] = <[String; 2]>::try_from(parts).map_err(|_| sep_error())?;
        opts.item_sep = item;
        opts.key_sep = key;
    }
    opts.sort_keys = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;

    let json = serde_json::to_value(value).map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("tojson: cannot serialize value: {e}"),
        )
    })?;
    Ok(Value::from_safe_string(dumps(&json, &opts)))
}

fn sep_error() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        "tojson: separators must be a pair of strings",
    )
}

/// `json.dumps(value, **opts)`.
pub(crate) fn dumps(value: &Json, opts: &DumpOptions) -> String {
    let mut out = String::new();
    write_value(&mut out, value, opts, 0);
    out
}

fn newline_indent(out: &mut String, opts: &DumpOptions, level: usize) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

fn write_value(out: &mut String, value: &Json, opts: &DumpOptions, level: usize) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                out.push_str(&py_float(n.as_f64().unwrap_or(f64::NAN)));
            }
        }
        Json::String(s) => write_str(out, s, opts.ensure_ascii),
        Json::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(out, opts, level + 1);
                write_value(out, item, opts, level + 1);
            }
            newline_indent(out, opts, level);
            out.push(']');
        }
        Json::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            let mut entries: Vec<(&String, &Json)> = map.iter().collect();
            if opts.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(b.0));
            }
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(out, opts, level + 1);
                write_str(out, k, opts.ensure_ascii);
                out.push_str(&opts.key_sep);
                write_value(out, v, opts, level + 1);
            }
            newline_indent(out, opts, level);
            out.push('}');
        }
    }
}

/// A JSON string literal as Python writes it.
fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && !(' '..='~').contains(&c)) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (what `json.dumps` writes): shortest round-trip digits, fixed notation
/// for exponents -4..16, else `d.ddde±XX`; `NaN` / `Infinity` for the non-finite.
pub(crate) fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat(point.unsigned_abs() as usize), digits)
        } else {
            let p = point as usize;
            if digits.len() > p {
                format!("{}.{}", &digits[..p], &digits[p..])
            } else {
                format!("{}{}.0", digits, "0".repeat(p - digits.len()))
            }
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{frac}e{esign}{:02}", exp.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_like_python_repr() {
        for (f, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-7, "1e-07"),
            (2.5e100, "2.5e+100"),
            (12.375, "12.375"),
            (0.30000000000000004, "0.30000000000000004"),
            (f64::INFINITY, "Infinity"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(py_float(f), want, "{f}");
        }
    }

    #[test]
    fn default_layout_and_escapes() {
        let v = json!({"b": [1, 2.0, null, true], "a": "x<y>&'\"\\\n\u{1}é🚀", "e": {}, "l": []});
        assert_eq!(
            dumps(&v, &DumpOptions::default()),
            r#"{"b": [1, 2.0, null, true], "a": "x<y>&'\"\\\n\u0001é🚀", "e": {}, "l": []}"#
        );
        let ascii = DumpOptions {
            ensure_ascii: true,
            ..DumpOptions::default()
        };
        assert_eq!(
            dumps(&json!("é🚀\u{7f}"), &ascii),
            r#""\u00e9\ud83d\ude80\u007f""#
        );
    }

    #[test]
    fn indent_like_python() {
        // json.dumps({"a": [1, {"b": None}], "c": []}, indent=2)
        let opts = DumpOptions {
            indent: Some("  ".into()),
            item_sep: ",".into(),
            ..DumpOptions::default()
        };
        let v = json!({"a": [1, {"b": null}], "c": []});
        assert_eq!(
            dumps(&v, &opts),
            "{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  \"c\": []\n}"
        );
    }

    #[test]
    fn filter_through_minijinja() {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson_filter);
        let ctx = Value::from(minijinja::value::Serde(json!({"t": {"z": 1, "a": "<b>"}})));
        let r = |src: &str| env.render_str(src, ctx.clone()).unwrap();
        assert_eq!(r("{{ t|tojson }}"), r#"{"z": 1, "a": "<b>"}"#);
        assert_eq!(
            r("{{ t|tojson(sort_keys=true) }}"),
            r#"{"a": "<b>", "z": 1}"#
        );
        assert_eq!(
            r("{{ t|tojson(separators=[',', ':']) }}"),
            r#"{"z":1,"a":"<b>"}"#
        );
        assert_eq!(
            r("{{ t|tojson(indent=1) }}"),
            "{\n \"z\": 1,\n \"a\": \"<b>\"\n}"
        );
        assert!(env
            .render_str("{{ t|tojson(bogus=1) }}", ctx.clone())
            .is_err());
        assert!(env
            .render_str("{{ t|tojson(separators=[1]) }}", ctx)
            .is_err());
    }
}
