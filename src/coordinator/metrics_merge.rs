//! The Coordinator's `/metrics` (SPEC-CLUSTER §5): merges the instances' Prometheus text
//! expositions (0.0.4, as `metrics::Metrics::render` writes them, MindIE's names) into one.
//! Pure: texts in, text out; scraping, the 503 on a failed scrape and logging are the caller's.
//! Reading the text format is [`parse`]'s; this file merges and writes.
//!
//! Rules:
//! - Families keep their `# HELP` / `# TYPE` lines (the first text that has them wins) and
//!   their order of first appearance (instance 0 first, then what later instances add).
//! - Series are keyed by their label set (label order does not matter); the same set is merged,
//!   different sets are kept apart, in order of first appearance. Timestamps are dropped (the
//!   merged sample is as of this scrape).
//! - Counters, gauges and untyped samples are summed.
//! - Histograms are summed element-wise (each `_bucket` by its `le`, `_sum`, `_count`). A series
//!   must have the same bucket layout (the same `le` bounds, compared as numbers, in the same
//!   order) in every instance that has it, otherwise [`MergeError::BucketLayout`]: buckets are
//!   cumulative, so a union of bounds would invent counts for bounds an instance never had.
//! - Summaries are refused ([`MergeError::Summary`]): quantiles cannot be added up. The daemon
//!   exports none.
//! - `npu_cache_usage_perc` and `cpu_cache_usage_perc` (0..1) are the mean of the instances'
//!   values weighted by each instance's total NPU blocks (as MindIE-Motor weights both by
//!   `total_block_num`). The exposition carries no block count, so the weight comes from the
//!   caller ([`Scrape::total_blocks`], the instance's `static_info.total_block_num`); when an
//!   instance that has the series has no weight (or all weights are 0) the plain mean is used
//!   and the series is listed in [`Merged::unweighted`]. [`merge`] has no weights at all.
//! - `npu_prefix_cache_hit_rate` is recomputed as the summed `npu_radix_match_hit_num` over the
//!   summed `all_radix_match_num` of the same label set (1 when hits but no matches; the plain
//!   mean of the instances' rates when both are 0 or a series is missing), as MindIE-Motor does.
//! - `failed_request_perc` is recomputed as `request_failed_total / request_received_total` of
//!   the same label set after the own families are in (0 when none received; the plain mean of
//!   the instances' values when a counter is missing), as MindIE-Motor does from its own counts.
//! - `own` (the Coordinator's own exposition, e.g. the request counters) replaces the
//!   instances' families of the same name whole, in place; its other families are appended.
//!   Own families are emitted as given (no recomputation).
//! - Values are written as the `prometheus` crate writes them (Rust's shortest float form:
//!   `3`, `0.75`), except that non-finite values are written `+Inf`, `-Inf` and `NaN`.
//!   Label values are re-escaped (`\\`, `\"`, `\n`); HELP text is passed through as written.

use std::collections::HashMap;
use std::fmt;

mod parse;
use parse::parse;

/// Cache usage gauges (fractions), merged as a mean weighted by total blocks.
pub const CACHE_USAGE: &[&str] = &["npu_cache_usage_perc", "cpu_cache_usage_perc"];
const HIT_RATE: &str = "npu_prefix_cache_hit_rate";
const RADIX_HITS: &str = "npu_radix_match_hit_num";
const RADIX_ALL: &str = "all_radix_match_num";
const FAILED_PERC: &str = "failed_request_perc";
const RECEIVED: &str = "request_received_total";
const FAILED: &str = "request_failed_total";

/// Which text a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The instance at this index of the input slice.
    Instance(usize),
    /// The Coordinator's own exposition.
    Own,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Instance(i) => write!(f, "instance {i}"),
            Origin::Own => f.write_str("the Coordinator's own metrics"),
        }
    }
}

/// A metric family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            "untyped" => Kind::Untyped,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the texts could not be merged; every variant names the text and its 1-based line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MergeError {
    #[error("/metrics of {origin}, line {line}: {reason} (line: `{text}`)")]
    Parse {
        origin: Origin,
        line: usize,
        reason: ParseReason,
        /// The offending line, cut to 120 characters.
        text: String,
    },
    #[error(
        "/metrics of {origin}, line {line}: `{family}` is a {found} here but a {expected} in {first}"
    )]
    TypeMismatch {
        origin: Origin,
        line: usize,
        family: String,
        found: Kind,
        expected: Kind,
        first: Origin,
    },
    #[error(
        "/metrics of {origin}, line {line}: histogram `{series}` has buckets le=[{found}] but {first} has le=[{expected}]; only equal bucket layouts are merged"
    )]
    BucketLayout {
        origin: Origin,
        line: usize,
        /// `name{labels}` of the histogram series.
        series: String,
        found: String,
        expected: String,
        first: Origin,
    },
    #[error(
        "/metrics of {origin}, line {line}: `{family}` is a summary; quantiles cannot be merged across instances"
    )]
    Summary {
        origin: Origin,
        line: usize,
        family: String,
    },
}

/// What is wrong with one line of a text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseReason {
    #[error("metric name missing or invalid (allowed: [a-zA-Z_:][a-zA-Z0-9_:]*)")]
    BadName,
    #[error("label name missing or invalid at column {0} (allowed: [a-zA-Z_][a-zA-Z0-9_]*)")]
    BadLabelName(usize),
    #[error("label `{0}` appears twice")]
    DuplicateLabel(String),
    #[error("expected {expected} at column {column}")]
    Expected {
        expected: &'static str,
        column: usize,
    },
    #[error("label value has the unknown escape `\\{0}` (allowed: \\\\, \\\", \\n)")]
    BadEscape(char),
    #[error("label value not closed by `\"`")]
    UnclosedValue,
    #[error("sample value `{0}` is not a float (allowed: decimal, +Inf, -Inf, NaN)")]
    BadValue(String),
    #[error("timestamp `{0}` is not an integer of milliseconds")]
    BadTimestamp(String),
    #[error("unexpected `{0}` after the timestamp")]
    Trailing(String),
    #[error("TYPE `{0}` unknown (allowed: counter, gauge, histogram, summary, untyped)")]
    BadType(String),
    #[error("second TYPE line for `{0}`, or one after its samples")]
    LateType(String),
    #[error("series repeated (first at line {0})")]
    DuplicateSeries(usize),
    #[error("histogram bucket without an `le` label")]
    MissingLe,
    #[error("bucket bound le=\"{0}\" is not a float")]
    BadLe(String),
    #[error("sample of histogram `{0}` without a _bucket, _sum or _count suffix")]
    BareHistogramSample(String),
}

/// One instance's scrape and the weight of its cache usage gauges.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    /// The instance's `/metrics` body.
    pub text: &'a str,
    /// The instance's total NPU KV blocks (`static_info.total_block_num` from the
    /// Controller's refresh); `None` when unknown.
    pub total_blocks: Option<u64>,
}

/// The merged exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub text: String,
    /// Cache usage series (`name{labels}`) written as a plain mean because an instance had no
    /// block count (or all counts were 0); for the caller to log.
    pub unweighted: Vec<String>,
}

/// Merges the instances' Prometheus texts into one, MindIE's names kept. `own` is the
/// Coordinator's own exposition whose metric families replace the instances' same-named ones.
/// Without block counts the cache usage gauges are a plain mean; see [`merge_weighted`].
pub fn merge(instances: &[&str], own: &str) -> Result<String, MergeError> {
    let scrapes: Vec<Scrape<'_>> = instances
        .iter()
        .map(|text| Scrape {
            text,
            total_blocks: None,
        })
        .collect();
    merge_weighted(&scrapes, own).map(|m| m.text)
}

/// [`merge`] with each instance's total blocks weighting the cache usage gauges.
pub fn merge_weighted(instances: &[Scrape<'_>], own: &str) -> Result<Merged, MergeError> {
    let mut out = Families::default();
    for (i, s) in instances.iter().enumerate() {
        out.absorb(parse(s.text, Origin::Instance(i))?)?;
    }
    out.replace_with(parse(own, Origin::Own)?);
    let weights: Vec<Option<u64>> = instances.iter().map(|s| s.total_blocks).collect();
    Ok(out.render(&weights))
}

// ---------------------------------------------------------------------------------------------
// Data model: one text parsed, or several merged.

/// A label set as written (first-seen order), values unescaped.
type Labels = Vec<(String, String)>;
/// The same set sorted: equal sets have equal keys whatever their order.
type Key = Vec<(String, String)>;

fn key_of(labels: &Labels) -> Key {
    let mut k = labels.clone();
    k.sort();
    k
}

#[derive(Debug, Clone)]
struct Bucket {
    /// The bound as the first text wrote it.
    text: String,
    le: f64,
    count: f64,
}

#[derive(Debug, Clone)]
enum Data {
    /// Counter, gauge, untyped: each text's value with the index of the instance it came from
    /// (`usize::MAX` for the own text); combined at render time.
    Values(Vec<(usize, f64)>),
    Histogram {
        buckets: Vec<Bucket>,
        sum: Option<f64>,
        count: Option<f64>,
    },
}

#[derive(Debug, Clone)]
struct Series {
    labels: Labels,
    /// Line of the series' first sample in the text that brought it.
    line: usize,
    origin: Origin,
    data: Data,
}

#[derive(Debug, Clone)]
struct Family {
    name: String,
    /// HELP text as written (escaped).
    help: Option<String>,
    kind: Kind,
    /// A `# TYPE` line was seen (an undeclared family is untyped and rendered without one).
    declared: bool,
    /// Line of its TYPE line, else of its first line.
    line: usize,
    origin: Origin,
    from_own: bool,
    series: Vec<Series>,
    index: HashMap<Key, usize>,
}

impl Family {
    fn new(name: &str, line: usize, origin: Origin) -> Self {
        Family {
            name: name.to_string(),
            help: None,
            kind: Kind::Untyped,
            declared: false,
            line,
            origin,
            from_own: origin == Origin::Own,
            series: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn value(&self, key: &Key) -> Option<f64> {
        let s = self.series.get(*self.index.get(key)?)?;
        match &s.data {
            Data::Values(v) => Some(v.iter().map(|(_, x)| x).sum()),
            Data::Histogram { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
struct Families {
    list: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Families {
    fn get(&self, name: &str) -> Option<&Family> {
        self.list.get(*self.index.get(name)?)
    }

    fn get_or_insert(&mut self, name: &str, line: usize, origin: Origin) -> &mut Family {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.list.push(Family::new(name, line, origin));
                self.index.insert(name.to_string(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    /// Adds one instance's parsed text to the merge.
    fn absorb(&mut self, text: Families) -> Result<(), MergeError> {
        for fam in text.list {
            let Some(&at) = self.index.get(&fam.name) else {
                self.index.insert(fam.name.clone(), self.list.len());
                self.list.push(fam);
                continue;
            };
            let into = &mut self.list[at];
            if into.kind != fam.kind {
                return Err(MergeError::TypeMismatch {
                    origin: fam.origin,
                    line: fam.line,
                    family: fam.name,
                    found: fam.kind,
                    expected: into.kind,
                    first: into.origin,
                });
            }
            if into.help.is_none() {
                into.help = fam.help;
            }
            into.declared |= fam.declared;
            for s in fam.series {
                let key = key_of(&s.labels);
                let Some(&j) = into.index.get(&key) else {
                    into.index.insert(key, into.series.len());
                    into.series.push(s);
                    continue;
                };
                let target = &mut into.series[j];
                add_series(&into.name, target, s)?;
            }
        }
        Ok(())
    }

    /// Puts the own text's families in: same-named ones replaced in place, others appended.
    fn replace_with(&mut self, own: Families) {
        for fam in own.list {
            match self.index.get(&fam.name) {
                Some(&at) => self.list[at] = fam,
                None => {
                    self.index.insert(fam.name.clone(), self.list.len());
                    self.list.push(fam);
                }
            }
        }
    }

    fn render(&self, weights: &[Option<u64>]) -> Merged {
        let mut text = String::new();
        let mut unweighted = Vec::new();
        for fam in &self.list {
            if let Some(help) = &fam.help {
                push_line(&mut text, &["# HELP ", &fam.name, " ", help]);
            }
            if fam.declared {
                push_line(&mut text, &["# TYPE ", &fam.name, " ", fam.kind.as_str()]);
            }
            for s in &fam.series {
                let labels = render_labels(&s.labels, None);
                match &s.data {
                    Data::Values(values) => {
                        let v = if fam.from_own {
                            values.iter().map(|(_, x)| x).sum()
                        } else {
                            let (v, weighted) =
                                self.combine(fam, &key_of(&s.labels), values, weights);
                            if !weighted {
                                unweighted.push(format!("{}{labels}", fam.name));
                            }
                            v
                        };
                        push_line(&mut text, &[&fam.name, &labels, " ", &format_value(v)]);
                    }
                    Data::Histogram {
                        buckets,
                        sum,
                        count,
                    } => {
                        for b in buckets {
                            let l = render_labels(&s.labels, Some(&b.text));
                            push_line(
                                &mut text,
                                &[&fam.name, "_bucket", &l, " ", &format_value(b.count)],
                            );
                        }
                        for (suffix, v) in [("_sum", sum), ("_count", count)] {
                            if let Some(v) = v {
                                push_line(
                                    &mut text,
                                    &[&fam.name, suffix, &labels, " ", &format_value(*v)],
                                );
                            }
                        }
                    }
                }
            }
        }
        Merged { text, unweighted }
    }

    /// The merged value of one instance-fed series, and whether a cache usage mean was
    /// weighted (true for every other family).
    fn combine(
        &self,
        fam: &Family,
        key: &Key,
        values: &[(usize, f64)],
        weights: &[Option<u64>],
    ) -> (f64, bool) {
        let sum: f64 = values.iter().map(|(_, x)| x).sum();
        let mean = if values.is_empty() {
            0.0
        } else {
            sum / values.len() as f64
        };
        let name = fam.name.as_str();
        if CACHE_USAGE.contains(&name) {
            let mut total = 0.0;
            let mut acc = 0.0;
            for &(i, x) in values {
                let Some(Some(w)) = weights.get(i) else {
                    return (mean, false);
                };
                total += *w as f64;
                acc += *w as f64 * x;
            }
            return if total > 0.0 {
                (acc / total, true)
            } else {
                (mean, false)
            };
        }
        if name == HIT_RATE {
            let hits = self.get(RADIX_HITS).and_then(|f| f.value(key));
            let all = self.get(RADIX_ALL).and_then(|f| f.value(key));
            return match (hits, all) {
                (Some(h), Some(a)) if a > 0.0 => (h / a, true),
                (Some(h), Some(_)) if h > 0.0 => (1.0, true),
                _ => (mean, true),
            };
        }
        if name == FAILED_PERC {
            let failed = self.get(FAILED).and_then(|f| f.value(key));
            let received = self.get(RECEIVED).and_then(|f| f.value(key));
            return match (failed, received) {
                (Some(f), Some(r)) if r > 0.0 => (f / r, true),
                (Some(_), Some(_)) => (0.0, true),
                _ => (mean, true),
            };
        }
        (sum, true)
    }
}

/// Adds `s` (a later instance's series) into `target` (the same label set merged so far).
fn add_series(family: &str, target: &mut Series, s: Series) -> Result<(), MergeError> {
    match (&mut target.data, s.data) {
        (Data::Values(into), Data::Values(from)) => into.extend(from),
        (
            Data::Histogram {
                buckets,
                sum,
                count,
            },
            Data::Histogram {
                buckets: b2,
                sum: s2,
                count: c2,
            },
        ) => {
            let same = buckets.len() == b2.len()
                && buckets.iter().zip(&b2).all(|(a, b)| same_bound(a.le, b.le));
            if !same {
                return Err(MergeError::BucketLayout {
                    origin: s.origin,
                    line: s.line,
                    series: format!("{family}{}", render_labels(&s.labels, None)),
                    found: bounds(&b2),
                    expected: bounds(buckets),
                    first: target.origin,
                });
            }
            for (a, b) in buckets.iter_mut().zip(&b2) {
                a.count += b.count;
            }
            *sum = add_opt(*sum, s2);
            *count = add_opt(*count, c2);
        }
        // A family has one kind, checked before, so its series have one data shape.
        _ => {}
    }
    Ok(())
}

fn same_bound(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

fn bounds(b: &[Bucket]) -> String {
    b.iter()
        .map(|b| b.text.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering.

fn push_line(out: &mut String, parts: &[&str]) {
    for p in parts {
        out.push_str(p);
    }
    out.push('\n');
}

/// A sample value as the `prometheus` crate writes it, with Prometheus' spelling of the
/// non-finite values.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        v.to_string()
    }
}

fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `a="x",b="y"` (no braces).
fn render_label_pairs(labels: &Labels) -> String {
    let mut out = String::new();
    for (i, (n, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        escape_label_value(v, &mut out);
        out.push('"');
    }
    out
}

/// `{a="x",le="0.5"}`, or nothing for no labels; `le` goes last as the `prometheus` crate
/// writes it.
fn render_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut pairs = render_label_pairs(labels);
    if let Some(le) = le {
        if !pairs.is_empty() {
            pairs.push(',');
        }
        pairs.push_str("le=\"");
        escape_label_value(le, &mut pairs);
        pairs.push('"');
    }
    if pairs.is_empty() {
        pairs
    } else {
        format!("{{{pairs}}}")
    }
}

#[cfg(test)]
#[path = "metrics_merge_tests.rs"]
mod tests;
