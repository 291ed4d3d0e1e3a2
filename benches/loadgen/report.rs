//! Presentation of the results: a text block per concurrency level, a one-line-per-level
//! summary table, and the JSON document (`{"run": {...}, "levels": [...]}`) written by
//! `--json`.
//!
//! Pure code, included by `tests/loadgen.rs`.

use std::fmt::Write;

use serde_json::{json, Value};

use crate::stats::{Dist, LevelSummary};

/// The detailed block for one level.
pub fn level_text(s: &LevelSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "concurrency {}: {} requests, {} ok, {} short, {} errors in {:.2} s | {:.2} req/s, \
         {:.1} output tok/s, {:.1} input tok/s",
        s.concurrency,
        s.requests,
        s.ok,
        s.short,
        s.errors,
        s.wall.as_secs_f64(),
        s.req_per_s,
        s.output_tok_per_s,
        s.input_tok_per_s,
    );
    let _ = writeln!(
        out,
        "  {:<9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "ms", "mean", "min", "p50", "p90", "p99", "max"
    );
    for (name, d) in [("TTFT", &s.ttft), ("TPOT", &s.tpot), ("e2e", &s.e2e)] {
        let _ = writeln!(out, "  {:<9}{}", name, dist_cells(d));
    }
    if s.errors > 0 {
        let kinds: Vec<String> = s
            .errors_by_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(out, "  errors: {}", kinds.join(" "));
        for (kind, msg) in &s.error_samples {
            let _ = writeln!(out, "    e.g. {kind}: {msg}");
        }
    }
    out
}

fn dist_cells(d: &Dist) -> String {
    if d.n == 0 {
        return format!("{:>10}", "-");
    }
    [d.mean, d.min, d.p50, d.p90, d.p99, d.max]
        .iter()
        .map(|v| format!("{v:>10.1}"))
        .collect()
}

/// One line per level.
pub fn summary_table(levels: &[LevelSummary]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:>6} {:>5} {:>6} {:>5} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "conc",
        "reqs",
        "ok",
        "short",
        "err",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "e2e p50",
        "e2e p99"
    );
    for s in levels {
        let _ = writeln!(
            out,
            "{:>5} {:>6} {:>5} {:>6} {:>5} {:>8.2} {:>10.1} {} {} {}",
            s.concurrency,
            s.requests,
            s.ok,
            s.short,
            s.errors,
            s.req_per_s,
            s.output_tok_per_s,
            p50_p99(&s.ttft),
            p50_p99(&s.tpot),
            p50_p99(&s.e2e),
        );
    }
    out.push_str("(latencies in ms)\n");
    out
}

fn p50_p99(d: &Dist) -> String {
    if d.n == 0 {
        format!("{:>9} {:>9}", "-", "-")
    } else {
        format!("{:>9.1} {:>9.1}", d.p50, d.p99)
    }
}

/// The JSON document: the run's parameters and every level.
pub fn json_doc(run: Value, levels: &[LevelSummary]) -> Value {
    json!({
        "run": run,
        "levels": levels.iter().map(LevelSummary::to_json).collect::<Vec<_>>(),
    })
}
