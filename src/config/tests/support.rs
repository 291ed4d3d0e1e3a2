//! Helpers shared by the config tests: the stock MindIE file, JSON mutation by path, loading a
//! document through a real file, and picking problems out of the result.

use crate::config::{load, ConfigError, Env, Loaded, Problem};
use serde_json::Value;

/// MindIE's stock config.json.
pub(super) const DEFAULT: &str = include_str!("../../../tests/fixtures/config/mindie_default.json");

pub(super) fn default_doc() -> Value {
    serde_json::from_str(DEFAULT).expect("fixture is JSON")
}

pub(super) fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

/// Splits `A.B[0].c` into object keys and array indices.
fn steps(path: &str) -> Vec<Result<String, usize>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default();
        if !key.is_empty() {
            out.push(Ok(key.to_string()));
        }
        for idx in pieces {
            let n = idx.trim_end_matches(']').parse().expect("index");
            out.push(Err(n));
        }
    }
    out
}

/// The value at `path`, which must exist up to its parent.
fn parent_of<'a>(doc: &'a mut Value, path: &str) -> (&'a mut Value, Result<String, usize>) {
    let mut steps = steps(path);
    let last = steps.pop().expect("non-empty path");
    let mut cur = doc;
    for step in steps {
        cur = match step {
            Ok(k) => cur.get_mut(&k).unwrap_or_else(|| panic!("{path}: no {k}")),
            Err(i) => cur.get_mut(i).unwrap_or_else(|| panic!("{path}: no [{i}]")),
        };
    }
    (cur, last)
}

/// Sets (or adds) the value at `path`.
pub(super) fn set(doc: &mut Value, path: &str, v: Value) {
    match parent_of(doc, path) {
        (Value::Object(m), Ok(k)) => {
            m.insert(k, v);
        }
        (Value::Array(a), Err(i)) => a[i] = v,
        _ => panic!("{path}: parent has the wrong type"),
    }
}

/// Removes the key at `path`.
pub(super) fn remove(doc: &mut Value, path: &str) {
    match parent_of(doc, path) {
        (Value::Object(m), Ok(k)) => {
            m.remove(&k).unwrap_or_else(|| panic!("{path}: absent"));
        }
        _ => panic!("{path}: not an object key"),
    }
}

/// Writes `text` to a fresh file and loads it with the given environment.
pub(super) fn load_text(text: &str, env: &Env) -> Result<Loaded, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.json");
    std::fs::write(&path, text).expect("write config");
    load(&path, dir.path(), env)
}

pub(super) fn load_doc(doc: &Value, env: &Env) -> Result<Loaded, ConfigError> {
    let text = serde_json::to_string_pretty(doc).expect("serialize");
    load_text(&text, env)
}

/// The problems of a document that must be refused.
pub(super) fn problems(doc: &Value, env: &Env) -> Vec<Problem> {
    match load_doc(doc, env) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(e) => panic!("expected validation problems, got {e}"),
        Ok(_) => panic!("expected validation problems, the document was accepted"),
    }
}

/// The document loads; returns it.
pub(super) fn accepted(doc: &Value, env: &Env) -> Loaded {
    match load_doc(doc, env) {
        Ok(l) => l,
        Err(e) => panic!("expected the document to load, got {e}"),
    }
}

/// The problem at `path`, failing with the whole list when there is none.
pub(super) fn at<'a>(problems: &'a [Problem], path: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}; got {problems:#?}"))
}

pub(super) const SC: &str = "BackendConfig.ScheduleConfig";
pub(super) const MC0: &str = "BackendConfig.ModelDeployConfig.ModelConfig[0]";

/// A mutation of the stock file: (key, value) pairs to set, `None` removes the key.
pub(super) type Edits<'a> = &'a [(&'a str, Option<Value>)];

pub(super) fn mutate(edits: Edits) -> Value {
    let mut doc = default_doc();
    for (path, v) in edits {
        let path = path
            .replace("SC.", &format!("{SC}."))
            .replace("MC0.", &format!("{MC0}."));
        match v {
            Some(v) => set(&mut doc, &path, v.clone()),
            None => remove(&mut doc, &path),
        }
    }
    doc
}

/// The variant is refused with exactly one problem, at `path`, whose allowed text contains
/// `allowed`.
pub(super) fn refused(name: &str, edits: Edits, path: &str, allowed: &str) {
    let path = path
        .replace("SC.", &format!("{SC}."))
        .replace("MC0.", &format!("{MC0}."));
    let p = problems(&mutate(edits), &env(&[]));
    assert_eq!(
        p.len(),
        1,
        "{name}: expected one problem at {path}, got {p:#?}"
    );
    let found = at(&p, &path);
    assert!(
        found.allowed.contains(allowed),
        "{name}: allowed {:?} lacks {allowed:?}",
        found.allowed
    );
}

pub(super) fn v(x: Value) -> Option<Value> {
    Some(x)
}
