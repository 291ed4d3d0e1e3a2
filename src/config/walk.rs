//! Checks a parsed `config.json` against the key table in [`fields`](super::fields): unknown keys
//! become warnings (with a "did you mean" for near misses), wrong types, values outside a key's
//! own range and missing required keys become [`Problem`]s with their JSON path. Every bad or
//! missing value is replaced in place by a well-typed stand-in, so the document can still be
//! deserialized and the cross-field rules can run on everything that was fine.

use super::fields::{all_sections, Field, Kind, Section, ROOT};
use super::Problem;
use serde_json::{Map, Value};

/// What the walk found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
}

/// Walks `doc` from the root, repairing it in place.
pub(crate) fn walk(doc: &mut Value) -> Walk {
    let mut w = Walk::default();
    if let Value::Object(map) = doc {
        w.section(&ROOT, map, "");
    } else {
        w.problem(super::rules::ROOT, render(doc), "a JSON object".into());
        *doc = ROOT.placeholder();
    }
    w
}

/// A JSON value for a problem message, shortened when long.
pub(crate) fn render(v: &Value) -> String {
    const MAX: usize = 80;
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl Walk {
    fn problem(&mut self, path: &str, value: String, allowed: String) {
        self.problems.push(Problem {
            path: path.to_string(),
            value,
            allowed,
        });
    }

    fn section(&mut self, s: &'static Section, obj: &mut Map<String, Value>, path: &str) {
        // `null` on an optional key means "not given" (a serialized Config writes absent
        // options so); on a required key it is a type problem.
        obj.retain(|k, v| !(v.is_null() && s.field(k).is_some_and(|f| !f.required)));
        for key in obj.keys() {
            if s.field(key).is_none() {
                if let Some(w) = unknown_key(s, key, path) {
                    self.warnings.push(w);
                }
            }
        }
        for f in s.fields {
            let p = join(path, f.key);
            match obj.get_mut(f.key) {
                Some(v) => self.value(f, v, &p),
                None if f.required => {
                    self.problem(
                        &p,
                        "(missing)".into(),
                        format!("required: {}", f.kind.describe()),
                    );
                    obj.insert(f.key.to_string(), f.kind.placeholder());
                }
                None => {}
            }
        }
    }

    fn value(&mut self, f: &Field, v: &mut Value, p: &str) {
        match (f.kind, &mut *v) {
            (Kind::Section(s), Value::Object(m)) => self.section(s, m, p),
            (Kind::SectionList(s), Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let ip = format!("{p}[{i}]");
                    match item {
                        Value::Object(m) => self.section(s, m, &ip),
                        other => {
                            self.problem(&ip, render(other), "an object".into());
                            *other = s.placeholder();
                        }
                    }
                }
            }
            (Kind::StrList, Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    if !item.is_string() {
                        self.problem(&format!("{p}[{i}]"), render(item), "a string".into());
                        *item = Value::from("x");
                    }
                }
            }
            (Kind::IntList { min, max }, Value::Array(items)) => {
                self.ints(items, p, min, max);
            }
            (Kind::IntMatrix { min, max }, Value::Array(rows)) => {
                for (i, row) in rows.iter_mut().enumerate() {
                    let rp = format!("{p}[{i}]");
                    match row {
                        Value::Array(items) => self.ints(items, &rp, min, max),
                        other => {
                            let allowed = format!("an array of integers in [{min}, {max}]");
                            self.problem(&rp, render(other), allowed);
                            *other = Value::Array(Vec::new());
                        }
                    }
                }
            }
            (kind, value) => {
                if !accepts(kind, value) {
                    self.problem(p, render(value), kind.describe());
                    *value = kind.placeholder();
                }
            }
        }
    }

    fn ints(&mut self, items: &mut [Value], p: &str, min: i64, max: i64) {
        for (i, item) in items.iter_mut().enumerate() {
            if !int_in(item, min, max) {
                let allowed = format!("an integer in [{min}, {max}]");
                self.problem(&format!("{p}[{i}]"), render(item), allowed);
                *item = Value::from(min);
            }
        }
    }
}

/// Whether a leaf value fits its kind (containers are handled by the walk itself and reach
/// here only when they have the wrong JSON type).
fn accepts(kind: Kind, v: &Value) -> bool {
    match kind {
        Kind::Bool => v.is_boolean(),
        Kind::Str => v.is_string(),
        Kind::NonEmptyStr => v.as_str().is_some_and(|s| !s.is_empty()),
        Kind::Enum(opts) => v.as_str().is_some_and(|s| opts.contains(&s)),
        Kind::EnumCi(opts) => v
            .as_str()
            .is_some_and(|s| opts.iter().any(|o| o.eq_ignore_ascii_case(s))),
        Kind::Int { min, max } => int_in(v, min, max),
        Kind::IntSet(opts) => v.as_i64().is_some_and(|n| opts.contains(&n)),
        Kind::Truncation => v.is_boolean() || v.as_i64().is_some_and(|n| (-1..=1).contains(&n)),
        Kind::StrOrObject => v.is_string() || v.is_object(),
        Kind::AnyObject => v.is_object(),
        Kind::StrList
        | Kind::IntList { .. }
        | Kind::IntMatrix { .. }
        | Kind::Section(_)
        | Kind::SectionList(_) => false,
    }
}

fn int_in(v: &Value, min: i64, max: i64) -> bool {
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        _ => None,
    };
    n.is_some_and(|n| (i128::from(min)..=i128::from(max)).contains(&n))
}

/// The warning for an unknown key, if one is due.
fn unknown_key(s: &'static Section, key: &str, path: &str) -> Option<String> {
    let full = join(path, key);
    // MindIE forwards unlisted ModelConfig keys to the model: say so rather than "ignored".
    let tail = if s.open {
        "; passed to the model as an extra parameter"
    } else {
        ""
    };
    if let Some(f) = s.fields.iter().find(|f| f.key.eq_ignore_ascii_case(key)) {
        return Some(format!(
            "unknown key {full} (did you mean \"{}\"?){tail}",
            f.key
        ));
    }
    let elsewhere: Vec<String> = all_sections()
        .into_iter()
        .filter(|(_, other)| !std::ptr::eq(*other, s) && other.field(key).is_some())
        .map(|(p, _)| {
            if p.is_empty() {
                "the top level".into()
            } else {
                p
            }
        })
        .collect();
    if !elsewhere.is_empty() {
        let tail = if s.open { tail } else { "; ignored" };
        return Some(format!(
            "unknown key {full} (it belongs in {}){tail}",
            elsewhere.join(" or ")
        ));
    }
    match near_miss(s, key) {
        Some(k) => Some(format!("unknown key {full} (did you mean \"{k}\"?){tail}")),
        None if s.open => None,
        None => Some(format!("unknown key {full}; ignored")),
    }
}

/// The known key of `s` closest to `key`, when it is close enough to be a likely typo.
fn near_miss(s: &Section, key: &str) -> Option<&'static str> {
    let lower = key.to_ascii_lowercase();
    s.fields
        .iter()
        .map(|f| {
            let score = strsim::normalized_damerau_levenshtein(&lower, &f.key.to_ascii_lowercase());
            (score, f.key)
        })
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}
