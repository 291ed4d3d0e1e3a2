//! The Prometheus text format 0.0.4, read line by line into [`Families`]: `# HELP` / `# TYPE`
//! comments, samples `name{label="value",...} value [timestamp]` with `\\`, `\"`, `\n` escapes
//! in label values; a histogram's `_bucket`/`_sum`/`_count` samples filed under it.

use super::{
    key_of, same_bound, Bucket, Data, Families, Family, Kind, Labels, MergeError, Origin,
    ParseReason, Series,
};

pub(super) fn parse(text: &str, origin: Origin) -> Result<Families, MergeError> {
    let mut fams = Families::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fail = |reason: ParseReason| MergeError::Parse {
            origin,
            line,
            reason,
            text: raw.chars().take(120).collect(),
        };
        let l = raw.trim_start_matches([' ', '\t']);
        if l.is_empty() {
            continue;
        }
        if let Some(comment) = l.strip_prefix('#') {
            parse_comment(&mut fams, comment, line, origin).map_err(fail)?;
            continue;
        }
        let sample = parse_sample(l).map_err(&fail)?;
        add_sample(&mut fams, sample, line, origin).map_err(|e| match e {
            Fault::Reason(r) => fail(r),
            Fault::Merge(m) => m,
        })?;
    }
    Ok(fams)
}

enum Fault {
    Reason(ParseReason),
    Merge(MergeError),
}

fn split_token(s: &str) -> (&str, &str) {
    let s = s.trim_start_matches([' ', '\t']);
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], s[i..].trim_start_matches([' ', '\t'])),
        None => (s, ""),
    }
}

/// `# HELP name text`, `# TYPE name kind`; any other comment is ignored.
fn parse_comment(
    fams: &mut Families,
    comment: &str,
    line: usize,
    origin: Origin,
) -> Result<(), ParseReason> {
    let (word, rest) = split_token(comment);
    match word {
        "HELP" => {
            let (name, help) = split_token(rest);
            check_metric_name(name)?;
            let fam = fams.get_or_insert(name, line, origin);
            if fam.help.is_none() {
                fam.help = Some(help.to_string());
            }
        }
        "TYPE" => {
            let (name, kind) = split_token(rest);
            check_metric_name(name)?;
            let kind_word = kind.trim_end_matches([' ', '\t']);
            let kind = Kind::parse(kind_word).ok_or(ParseReason::BadType(kind_word.to_string()))?;
            let fam = fams.get_or_insert(name, line, origin);
            if fam.declared || !fam.series.is_empty() {
                return Err(ParseReason::LateType(name.to_string()));
            }
            fam.kind = kind;
            fam.declared = true;
            fam.line = line;
        }
        _ => {}
    }
    Ok(())
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn check_metric_name(name: &str) -> Result<(), ParseReason> {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if is_name_start(c) || c == ':' => {}
        _ => return Err(ParseReason::BadName),
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(ParseReason::BadName)
    }
}

struct Sample<'a> {
    name: &'a str,
    labels: Labels,
    value: f64,
}

/// A byte cursor over one line (every token boundary the format has is ASCII).
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn skip_blank(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
        self.pos > start
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn expect(&mut self, c: char, expected: &'static str) -> Result<(), ParseReason> {
        if self.peek() == Some(c) {
            self.bump();
            Ok(())
        } else {
            Err(ParseReason::Expected {
                expected,
                column: self.pos + 1,
            })
        }
    }

    /// A quoted label value after its opening `"`, unescaped.
    fn quoted(&mut self) -> Result<String, ParseReason> {
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or(ParseReason::UnclosedValue)?;
            self.bump();
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or(ParseReason::UnclosedValue)?;
                    self.bump();
                    out.push(match e {
                        '\\' => '\\',
                        '"' => '"',
                        'n' => '\n',
                        other => return Err(ParseReason::BadEscape(other)),
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Result<Sample<'_>, ParseReason> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':');
    check_metric_name(name)?;
    c.skip_blank();
    let mut labels: Labels = Vec::new();
    if c.peek() == Some('{') {
        c.bump();
        loop {
            c.skip_blank();
            if c.peek() == Some('}') {
                c.bump();
                break;
            }
            let column = c.pos + 1;
            let label = c.take_while(|ch| ch.is_ascii_alphanumeric() || ch == '_');
            if !label.starts_with(is_name_start) {
                return Err(ParseReason::BadLabelName(column));
            }
            c.skip_blank();
            c.expect('=', "`=`")?;
            c.skip_blank();
            c.expect('"', "`\"`")?;
            let value = c.quoted()?;
            if labels.iter().any(|(n, _)| n == label) {
                return Err(ParseReason::DuplicateLabel(label.to_string()));
            }
            labels.push((label.to_string(), value));
            c.skip_blank();
            match c.peek() {
                Some(',') => c.bump(),
                Some('}') => {}
                _ => {
                    return Err(ParseReason::Expected {
                        expected: "`,` or `}`",
                        column: c.pos + 1,
                    });
                }
            }
        }
        c.skip_blank();
    }
    let token = c.take_while(|ch| ch != ' ' && ch != '\t');
    if token.is_empty() {
        return Err(ParseReason::Expected {
            expected: "a sample value",
            column: c.pos + 1,
        });
    }
    let value = parse_float(token).ok_or_else(|| ParseReason::BadValue(token.to_string()))?;
    c.skip_blank();
    let ts = c.take_while(|ch| ch != ' ' && ch != '\t');
    if !ts.is_empty() && ts.parse::<i64>().is_err() {
        return Err(ParseReason::BadTimestamp(ts.to_string()));
    }
    c.skip_blank();
    let rest = &line[c.pos..];
    if !rest.is_empty() {
        return Err(ParseReason::Trailing(rest.to_string()));
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Go's `ParseFloat` spellings that Prometheus accepts: decimals, `[+-]Inf`, `NaN` (any case).
pub(super) fn parse_float(s: &str) -> Option<f64> {
    // Rust also takes "infinity" and "nan" in any case, as Go does; nothing else differs for
    // the decimal forms an exposition uses.
    s.parse::<f64>().ok()
}

/// Files one sample under its family (a histogram's `_bucket`/`_sum`/`_count` under the
/// histogram; an undeclared name under a new untyped family).
fn add_sample(
    fams: &mut Families,
    sample: Sample<'_>,
    line: usize,
    origin: Origin,
) -> Result<(), Fault> {
    let mut owner: Option<(&str, &str)> = None;
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.name.strip_suffix(suffix) {
            if let Some(f) = fams.get(base) {
                if f.kind == Kind::Histogram || (f.kind == Kind::Summary && suffix != "_bucket") {
                    owner = Some((base, suffix));
                }
            }
        }
    }
    let (fam_name, suffix) = owner.unwrap_or((sample.name, ""));
    let fam = fams.get_or_insert(fam_name, line, origin);
    match fam.kind {
        Kind::Summary => Err(Fault::Merge(MergeError::Summary {
            origin,
            line,
            family: fam.name.clone(),
        })),
        Kind::Histogram => add_histogram_sample(fam, sample, suffix, line, origin),
        Kind::Counter | Kind::Gauge | Kind::Untyped => {
            let key = key_of(&sample.labels);
            if let Some(&j) = fam.index.get(&key) {
                let first = fam.series.get(j).map_or(line, |s| s.line);
                return Err(Fault::Reason(ParseReason::DuplicateSeries(first)));
            }
            fam.index.insert(key, fam.series.len());
            let idx = match origin {
                Origin::Instance(i) => i,
                Origin::Own => usize::MAX,
            };
            fam.series.push(Series {
                labels: sample.labels,
                line,
                origin,
                data: Data::Values(vec![(idx, sample.value)]),
            });
            Ok(())
        }
    }
}

fn add_histogram_sample(
    fam: &mut Family,
    sample: Sample<'_>,
    suffix: &str,
    line: usize,
    origin: Origin,
) -> Result<(), Fault> {
    let mut labels = sample.labels;
    let le = labels
        .iter()
        .position(|(n, _)| n == "le")
        .map(|i| labels.remove(i).1);
    if suffix.is_empty() {
        return Err(Fault::Reason(ParseReason::BareHistogramSample(
            fam.name.clone(),
        )));
    }
    let key = key_of(&labels);
    let j = match fam.index.get(&key) {
        Some(&j) => j,
        None => {
            fam.index.insert(key, fam.series.len());
            fam.series.push(Series {
                labels,
                line,
                origin,
                data: Data::Histogram {
                    buckets: Vec::new(),
                    sum: None,
                    count: None,
                },
            });
            fam.series.len() - 1
        }
    };
    let series = &mut fam.series[j];
    let first = series.line;
    let Data::Histogram {
        buckets,
        sum,
        count,
    } = &mut series.data
    else {
        return Ok(());
    };
    let duplicate = Fault::Reason(ParseReason::DuplicateSeries(first));
    match suffix {
        "_bucket" => {
            let text = le.ok_or(Fault::Reason(ParseReason::MissingLe))?;
            let bound = parse_float(&text)
                .ok_or_else(|| Fault::Reason(ParseReason::BadLe(text.clone())))?;
            if buckets.iter().any(|b| same_bound(b.le, bound)) {
                return Err(duplicate);
            }
            buckets.push(Bucket {
                text,
                le: bound,
                count: sample.value,
            });
        }
        "_sum" if sum.is_none() => *sum = Some(sample.value),
        "_count" if count.is_none() => *count = Some(sample.value),
        _ => return Err(duplicate),
    }
    Ok(())
}
