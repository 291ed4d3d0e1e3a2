//! What every fuzz harness (`tests/fuzz_*.rs`) shares: the committed seed corpora under
//! `tests/fuzz/<target>/`, the case count, and the inputs proptest draws.
//!
//! An [`Input`] is one of
//! - purely random bytes;
//! - a seed with byte mutations ([`ByteOp`]): bit flips, byte sets, truncation, insertion,
//!   deletion, duplication, and splicing in a piece of another seed;
//! - a JSON seed with JSON-aware mutations ([`JsonOp`]) at a chosen node: wrong types, huge,
//!   negative and fractional numbers, numbers past every integer type, long strings, unicode
//!   and NUL, deep nesting, long arrays, removed fields and extra fields (names taken from
//!   every seed, so known fields turn up with wrong values), then byte mutations on the text.
//!
//! proptest draws the inputs, catches panics (a panic fails the test with the shrunk input
//! printed) and persists failing seeds next to the harness (`*.proptest-regressions`,
//! committed). The number of cases is [`cases`]: `MINDIE_FUZZ_CASES` times the target's
//! weight, so one variable scales the whole set.

#![allow(dead_code)] // each harness uses its own part

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Cases per target unit when `MINDIE_FUZZ_CASES` is unset: sized so that the whole fuzz set
/// runs in about two minutes of `cargo test --release` on two cores.
pub const DEFAULT_CASES: u32 = 1024;

/// `MINDIE_FUZZ_CASES` (default [`DEFAULT_CASES`]) scaled by `weight` (a slow target runs
/// fewer, a cheap one more), at least 1.
pub fn cases(weight: f64) -> u32 {
    let base = std::env::var("MINDIE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(DEFAULT_CASES);
    ((f64::from(base) * weight).round() as u32).max(1)
}

/// proptest's configuration for a target of `weight`: the case count, a bounded shrink, and
/// failures persisted beside the harness `source` (its `file!()`).
pub fn config(weight: f64, source: &'static str) -> Config {
    Config {
        cases: cases(weight),
        max_shrink_iters: 512,
        max_shrink_time: 60_000,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(source),
        ..Config::default()
    }
}

/// Runs `check` on `weight` × the base count of inputs that `strategy` draws over `seeds`,
/// failures persisted beside the harness `source` (its `file!()`); prints the count and panics
/// with proptest's report (the shrunk input) on the first failing input.
pub fn run<S: Strategy<Value = Input>>(
    name: &str,
    source: &'static str,
    seeds: Vec<Vec<u8>>,
    weight: f64,
    strategy: impl Fn(usize) -> S,
    check: impl Fn(&[u8]),
) {
    let ran = std::sync::atomic::AtomicU64::new(0);
    let mut runner = TestRunner::new(config(weight, source));
    let result = runner.run(&strategy(seeds.len()), |input| {
        ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        check(&input.render(&seeds));
        Ok(())
    });
    println!(
        "fuzz {name}: {} cases",
        ran.load(std::sync::atomic::Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

/// The folder of `target`'s seeds.
pub fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

/// Every file of `tests/fuzz/<target>/`, sorted by name; panics when there is none (a target
/// without seeds would fuzz only random bytes, and that is a setup mistake).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let d = dir(target);
    let mut names: Vec<PathBuf> = std::fs::read_dir(&d)
        .unwrap_or_else(|e| panic!("seed folder {}: {e}", d.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no seeds in {}", d.display());
    names
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("seed {}: {e}", p.display())))
        .collect()
}

/// One byte-level mutation; positions are taken modulo the current length.
#[derive(Debug, Clone)]
pub enum ByteOp {
    Flip {
        at: usize,
        bit: u8,
    },
    Set {
        at: usize,
        byte: u8,
    },
    Truncate {
        at: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    Duplicate {
        at: usize,
        len: usize,
        times: u8,
    },
    Splice {
        seed: usize,
        from: usize,
        len: usize,
        at: usize,
    },
}

/// A value written into a JSON document as raw text (so it may be a number no integer type
/// holds, or nesting deeper than any parser allows).
#[derive(Debug, Clone)]
pub enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// A number as text: past u64, negative past i64, exponents past f64.
    BigNumber(String),
    Str(String),
    LongStr(usize),
    /// `[[[...]]]` or `{"a":{"a":...}}` this deep.
    Nested {
        depth: usize,
        object: bool,
    },
    /// An array of this many copies of a small value.
    LongArray(usize),
    EmptyArray,
    EmptyObject,
}

impl Raw {
    fn text(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Bool(b) => b.to_string(),
            Raw::Int(i) => i.to_string(),
            Raw::Uint(u) => u.to_string(),
            Raw::Float(f) => serde_json::to_string(f).unwrap_or_else(|_| "0.5".into()),
            Raw::BigNumber(s) => s.clone(),
            Raw::Str(s) => Value::String(s.clone()).to_string(),
            Raw::LongStr(n) => format!("\"{}\"", "a".repeat(*n)),
            Raw::Nested { depth, object } => {
                if *object {
                    format!("{}1{}", "{\"a\":".repeat(*depth), "}".repeat(*depth))
                } else {
                    format!("{}1{}", "[".repeat(*depth), "]".repeat(*depth))
                }
            }
            Raw::LongArray(n) => format!("[{}]", vec!["\"x\""; *n].join(",")),
            Raw::EmptyArray => "[]".into(),
            Raw::EmptyObject => "{}".into(),
        }
    }
}

/// One JSON-aware mutation at the node numbered `node` (pre-order, modulo the node count).
#[derive(Debug, Clone)]
pub enum JsonOp {
    Replace {
        node: usize,
        with: Raw,
    },
    Remove {
        node: usize,
    },
    /// Adds field `names[name % len]` (or `extra` when no name is known) to the object at
    /// `node` (or its nearest object ancestor).
    AddField {
        node: usize,
        name: usize,
        with: Raw,
    },
    AddUnknownField {
        node: usize,
        name: String,
        with: Raw,
    },
}

/// One fuzz input; [`Input::render`] turns it into bytes.
#[derive(Debug, Clone)]
pub enum Input {
    Random(Vec<u8>),
    Bytes {
        seed: usize,
        ops: Vec<ByteOp>,
    },
    Json {
        seed: usize,
        ops: Vec<JsonOp>,
        then: Vec<ByteOp>,
    },
}

fn raw() -> impl Strategy<Value = Raw> {
    prop_oneof![
        Just(Raw::Null),
        any::<bool>().prop_map(Raw::Bool),
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MIN),
            Just(i64::MAX),
            Just(i64::from(i32::MAX) + 1),
            Just(i64::from(u32::MAX) + 1),
            any::<i64>(),
            -3i64..70_000,
        ]
        .prop_map(Raw::Int),
        prop_oneof![Just(u64::MAX), any::<u64>()].prop_map(Raw::Uint),
        prop_oneof![
            Just(-0.0f64),
            Just(0.5),
            Just(1e308),
            Just(-1e308),
            Just(f64::MIN_POSITIVE),
            Just(1.000_000_1),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]
        .prop_map(Raw::Float),
        prop_oneof![
            Just("18446744073709551616".to_string()),
            Just("-9223372036854775809".to_string()),
            Just("1e999999".to_string()),
            Just("-1e400".to_string()),
            Just("123456789012345678901234567890123456789".to_string()),
            Just("0.0000000000000000000000000000001".to_string()),
            Just("1E+2".to_string()),
        ]
        .prop_map(Raw::BigNumber),
        prop_oneof![
            Just(String::new()),
            Just("\u{0}".to_string()),
            Just("null".to_string()),
            Just("-1".to_string()),
            Just("\u{202e}\u{fffd}\u{1f600}ẞ\u{10ffff}".to_string()),
            Just("<|im_start|>user\n</s><s>[INST]".to_string()),
            any::<String>(),
        ]
        .prop_map(Raw::Str),
        prop_oneof![1usize..300, Just(70_000), Just(1_100_000)].prop_map(Raw::LongStr),
        (
            prop_oneof![1usize..40, Just(127), Just(129), Just(5_000)],
            any::<bool>()
        )
            .prop_map(|(depth, object)| Raw::Nested { depth, object }),
        prop_oneof![2usize..50, Just(1_000), Just(20_000)].prop_map(Raw::LongArray),
        Just(Raw::EmptyArray),
        Just(Raw::EmptyObject),
    ]
}

fn byte_op(n_seeds: usize) -> impl Strategy<Value = ByteOp> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| ByteOp::Flip { at, bit }),
        (
            any::<usize>(),
            prop_oneof![
                Just(0u8),
                Just(b'"'),
                Just(b'{'),
                Just(b'}'),
                Just(b'\\'),
                Just(b':'),
                Just(0xff),
                any::<u8>()
            ]
        )
            .prop_map(|(at, byte)| ByteOp::Set { at, byte }),
        any::<usize>().prop_map(|at| ByteOp::Truncate { at }),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| ByteOp::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| ByteOp::Delete { at, len }),
        (any::<usize>(), 1usize..32, 1u8..64).prop_map(|(at, len, times)| ByteOp::Duplicate {
            at,
            len,
            times
        }),
        (0..n_seeds, any::<usize>(), 1usize..256, any::<usize>()).prop_map(
            |(seed, from, len, at)| ByteOp::Splice {
                seed,
                from,
                len,
                at
            }
        ),
    ]
}

fn json_op() -> impl Strategy<Value = JsonOp> {
    prop_oneof![
        4 => (any::<usize>(), raw()).prop_map(|(node, with)| JsonOp::Replace { node, with }),
        2 => any::<usize>().prop_map(|node| JsonOp::Remove { node }),
        2 => (any::<usize>(), any::<usize>(), raw())
            .prop_map(|(node, name, with)| JsonOp::AddField { node, name, with }),
        1 => (any::<usize>(), "[a-zA-Z_]{1,12}", raw()).prop_map(|(node, name, with)| {
            JsonOp::AddUnknownField { node, name, with }
        }),
    ]
}

/// Inputs drawn from `n_seeds` seeds: mostly mutated seeds, some random bytes.
pub fn input(n_seeds: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(Input::Random),
        3 => (0..n_seeds, proptest::collection::vec(byte_op(n_seeds), 0..6))
            .prop_map(|(seed, ops)| Input::Bytes { seed, ops }),
        6 => (
            0..n_seeds,
            proptest::collection::vec(json_op(), 1..4),
            proptest::collection::vec(byte_op(n_seeds), 0..2)
        )
            .prop_map(|(seed, ops, then)| Input::Json { seed, ops, then }),
    ]
}

/// Inputs for targets whose seeds are not JSON (headers, frames, protobuf, PEM).
pub fn byte_input(n_seeds: usize) -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..1024).prop_map(Input::Random),
        4 => (0..n_seeds, proptest::collection::vec(byte_op(n_seeds), 0..8))
            .prop_map(|(seed, ops)| Input::Bytes { seed, ops }),
    ]
}

impl Input {
    /// The bytes this input stands for, given the seeds it was drawn against.
    pub fn render(&self, seeds: &[Vec<u8>]) -> Vec<u8> {
        match self {
            Input::Random(b) => b.clone(),
            Input::Bytes { seed, ops } => {
                let mut b = seeds[*seed % seeds.len()].clone();
                apply_bytes(&mut b, ops, seeds);
                b
            }
            Input::Json { seed, ops, then } => {
                let base = &seeds[*seed % seeds.len()];
                let mut b = match serde_json::from_slice::<Value>(base) {
                    Ok(doc) => apply_json(doc, ops, &field_names(seeds)).into_bytes(),
                    Err(_) => base.clone(),
                };
                apply_bytes(&mut b, then, seeds);
                b
            }
        }
    }
}

/// A short, printable view of `bytes` for failure messages.
pub fn show(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 600 {
        let head: String = s.chars().take(600).collect();
        format!("{head}… ({} bytes)", bytes.len())
    } else {
        s.into_owned()
    }
}

fn apply_bytes(b: &mut Vec<u8>, ops: &[ByteOp], seeds: &[Vec<u8>]) {
    for op in ops {
        let len = b.len();
        let pos = |at: usize| if len == 0 { 0 } else { at % (len + 1) };
        match op {
            ByteOp::Flip { at, bit } if len > 0 => b[at % len] ^= 1 << bit,
            ByteOp::Set { at, byte } if len > 0 => b[at % len] = *byte,
            ByteOp::Truncate { at } => b.truncate(pos(*at)),
            ByteOp::Insert { at, bytes } => {
                let p = pos(*at);
                b.splice(p..p, bytes.iter().copied());
            }
            ByteOp::Delete { at, len: n } if len > 0 => {
                let p = at % len;
                b.drain(p..(p + n).min(len));
            }
            ByteOp::Duplicate { at, len: n, times } if len > 0 => {
                let p = at % len;
                let piece = b[p..(p + n).min(len)].to_vec();
                for _ in 0..*times {
                    b.splice(p..p, piece.iter().copied());
                }
            }
            ByteOp::Splice {
                seed,
                from,
                len: n,
                at,
            } => {
                let other = &seeds[*seed % seeds.len()];
                if !other.is_empty() {
                    let f = from % other.len();
                    let piece = &other[f..(f + n).min(other.len())];
                    let p = pos(*at);
                    b.splice(p..p, piece.iter().copied());
                }
            }
            _ => {}
        }
    }
}

/// Every object key in the JSON seeds.
fn field_names(seeds: &[Vec<u8>]) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    out.push(k.clone());
                    walk(x, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for s in seeds {
        if let Ok(v) = serde_json::from_slice::<Value>(s) {
            walk(&v, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Where a node sits: the keys and indexes from the root.
#[derive(Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                here.push(Step::Key(k.clone()));
                paths(x, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                here.push(Step::Index(i));
                paths(x, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    let mut cur = v;
    for s in path {
        cur = match (s, cur) {
            (Step::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Step::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Applies `ops` to `doc`; raw values are put in as placeholders and swapped in the text.
fn apply_json(mut doc: Value, ops: &[JsonOp], names: &[String]) -> String {
    let mut raws: Vec<String> = Vec::new();
    let placeholder = |r: &Raw, raws: &mut Vec<String>| {
        raws.push(r.text());
        Value::String(format!("\u{1}RAW{}\u{1}", raws.len() - 1))
    };
    for op in ops {
        let mut all = Vec::new();
        paths(&doc, &mut Vec::new(), &mut all);
        let pick = |node: usize| all[node % all.len()].clone();
        match op {
            JsonOp::Replace { node, with } => {
                let p = pick(*node);
                let v = placeholder(with, &mut raws);
                if let Some(slot) = at(&mut doc, &p) {
                    *slot = v;
                }
            }
            JsonOp::Remove { node } => {
                let p = pick(*node);
                if let Some((last, parent)) = p.split_last() {
                    match (last, at(&mut doc, parent)) {
                        (Step::Key(k), Some(Value::Object(m))) => {
                            m.shift_remove(k);
                        }
                        (Step::Index(i), Some(Value::Array(a))) if *i < a.len() => {
                            a.remove(*i);
                        }
                        _ => {}
                    }
                }
            }
            JsonOp::AddField { node, name, with } => {
                let key = if names.is_empty() {
                    "extra".to_string()
                } else {
                    names[name % names.len()].clone()
                };
                let v = placeholder(with, &mut raws);
                add_field(&mut doc, pick(*node), key, v);
            }
            JsonOp::AddUnknownField { node, name, with } => {
                let v = placeholder(with, &mut raws);
                add_field(&mut doc, pick(*node), name.clone(), v);
            }
        }
    }
    let mut text = doc.to_string();
    for (i, r) in raws.iter().enumerate() {
        text = text.replace(&format!("\"\\u0001RAW{i}\\u0001\""), r);
    }
    text
}

/// Sets `key` in the object at `path`, or in its nearest object ancestor.
fn add_field(doc: &mut Value, mut path: Vec<Step>, key: String, v: Value) {
    loop {
        if let Some(Value::Object(m)) = at(doc, &path) {
            m.insert(key, v);
            return;
        }
        if path.pop().is_none() {
            return;
        }
    }
}
