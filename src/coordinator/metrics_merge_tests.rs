//! Tests of `metrics_merge`: real expositions from the daemon's own registry, and hand-written
//! edge cases of the text format.

use super::*;
use crate::metrics::Metrics;

const M: &str = "m";

fn registry() -> Metrics {
    Metrics::new(&[M]).expect("registry")
}

fn render(m: &Metrics) -> String {
    m.render().expect("render")
}

/// Records one instance's worth of traffic.
struct Traffic {
    received: u64,
    failed: u64,
    running: f64,
    cache: f64,
    radix_all: f64,
    radix_hits: f64,
    ttft: &'static [f64],
    kv_bytes: u64,
}

fn record(m: &Metrics, t: &Traffic) {
    let l = [M];
    m.request_received.with_label_values(&l).inc_by(t.received);
    m.request_failed.with_label_values(&l).inc_by(t.failed);
    m.request_success
        .with_label_values(&l)
        .inc_by(t.received - t.failed);
    m.num_requests_running.with_label_values(&l).set(t.running);
    m.npu_cache_usage_perc.with_label_values(&l).set(t.cache);
    m.all_radix_match_num.with_label_values(&l).set(t.radix_all);
    m.npu_radix_match_hit_num
        .with_label_values(&l)
        .set(t.radix_hits);
    m.npu_prefix_cache_hit_rate
        .with_label_values(&l)
        .set(if t.radix_all > 0.0 {
            t.radix_hits / t.radix_all
        } else {
            0.0
        });
    m.failed_request_perc
        .with_label_values(&l)
        .set(t.failed as f64 / t.received as f64);
    for &x in t.ttft {
        m.time_to_first_token.with_label_values(&l).observe(x);
    }
    m.kv_transfer(t.kv_bytes, std::time::Duration::from_millis(3));
}

const A: Traffic = Traffic {
    received: 2,
    failed: 1,
    running: 2.0,
    cache: 0.5,
    radix_all: 10.0,
    radix_hits: 4.0,
    ttft: &[0.03, 0.5],
    kv_bytes: 1000,
};

const B: Traffic = Traffic {
    received: 3,
    failed: 0,
    running: 3.0,
    cache: 0.25,
    radix_all: 10.0,
    radix_hits: 1.0,
    ttft: &[0.002],
    kv_bytes: 24,
};

/// The exposition a single instance would write had it seen A's and B's traffic, with the
/// ratio gauges set to what the merge derives.
fn reference(cache: f64) -> String {
    let r = registry();
    record(&r, &A);
    for &x in B.ttft {
        r.time_to_first_token.with_label_values(&[M]).observe(x);
    }
    r.kv_transfer(B.kv_bytes, std::time::Duration::from_millis(3));
    let l = [M];
    r.request_received.with_label_values(&l).inc_by(B.received);
    r.request_failed.with_label_values(&l).inc_by(B.failed);
    r.request_success
        .with_label_values(&l)
        .inc_by(B.received - B.failed);
    r.num_requests_running
        .with_label_values(&l)
        .set(A.running + B.running);
    r.all_radix_match_num
        .with_label_values(&l)
        .set(A.radix_all + B.radix_all);
    r.npu_radix_match_hit_num
        .with_label_values(&l)
        .set(A.radix_hits + B.radix_hits);
    r.npu_cache_usage_perc.with_label_values(&l).set(cache);
    // (4 + 1) / (10 + 10) and 1 / (2 + 3).
    r.npu_prefix_cache_hit_rate.with_label_values(&l).set(0.25);
    r.failed_request_perc.with_label_values(&l).set(0.2);
    render(&r)
}

fn instance(t: &Traffic) -> String {
    let m = registry();
    record(&m, t);
    render(&m)
}

#[test]
fn two_daemon_expositions_merge_into_the_combined_one() {
    let (a, b) = (instance(&A), instance(&B));
    let merged = merge(&[&a, &b], "").expect("merge");
    // Plain mean of 0.5 and 0.25 without block counts.
    assert_eq!(merged, reference(0.375));
}

#[test]
fn cache_usage_is_weighted_by_total_blocks() {
    let (a, b) = (instance(&A), instance(&B));
    let scrapes = [
        Scrape {
            text: &a,
            total_blocks: Some(100),
        },
        Scrape {
            text: &b,
            total_blocks: Some(300),
        },
    ];
    let merged = merge_weighted(&scrapes, "").expect("merge");
    // (0.5 * 100 + 0.25 * 300) / 400
    assert_eq!(merged.text, reference(0.3125));
    assert!(merged.unweighted.is_empty(), "{:?}", merged.unweighted);
}

#[test]
fn a_missing_block_count_falls_back_to_the_plain_mean_and_says_so() {
    let (a, b) = (instance(&A), instance(&B));
    for weights in [[Some(100), None], [Some(0), Some(0)]] {
        let scrapes = [
            Scrape {
                text: &a,
                total_blocks: weights[0],
            },
            Scrape {
                text: &b,
                total_blocks: weights[1],
            },
        ];
        let merged = merge_weighted(&scrapes, "").expect("merge");
        assert!(merged
            .text
            .contains("\nnpu_cache_usage_perc{model_name=\"m\"} 0.375\n"));
        assert_eq!(
            merged.unweighted,
            // The registry writes families sorted by name.
            vec![
                "cpu_cache_usage_perc{model_name=\"m\"}".to_string(),
                "npu_cache_usage_perc{model_name=\"m\"}".to_string()
            ]
        );
    }
}

#[test]
fn own_families_replace_the_instances_in_place() {
    let (a, b) = (instance(&A), instance(&B));
    let own = "# HELP request_received_total Count of received requests.\n\
               # TYPE request_received_total counter\n\
               request_received_total{model_name=\"m\"} 40\n\
               # HELP request_failed_total Count of failed requests.\n\
               # TYPE request_failed_total counter\n\
               request_failed_total{model_name=\"m\"} 10\n\
               # TYPE coordinator_only gauge\n\
               coordinator_only 7\n";
    let merged = merge(&[&a, &b], own).expect("merge");
    assert!(merged.contains("\nrequest_received_total{model_name=\"m\"} 40\n"));
    assert!(merged.contains("\nrequest_failed_total{model_name=\"m\"} 10\n"));
    // Not replaced: still the instances' sum.
    assert!(merged.contains("\nrequest_success_total{model_name=\"m\"} 4\n"));
    // Derived from the own counters.
    assert!(merged.contains("\nfailed_request_perc{model_name=\"m\"} 0.25\n"));
    // Same family order as the instances' (MindIE's), the own-only family last.
    let order: Vec<&str> = merged
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    let expected: Vec<&str> = a
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .chain(["coordinator_only gauge"])
        .collect();
    assert_eq!(order, expected);
    assert!(merged.ends_with("# TYPE coordinator_only gauge\ncoordinator_only 7\n"));
}

#[test]
fn own_family_is_emitted_as_given_even_for_a_derived_name() {
    let inst = "# TYPE failed_request_perc gauge\nfailed_request_perc 0.5\n";
    let own = "# TYPE failed_request_perc gauge\nfailed_request_perc 0.125\n";
    assert_eq!(
        merge(&[inst, inst], own).expect("merge"),
        "# TYPE failed_request_perc gauge\nfailed_request_perc 0.125\n"
    );
}

#[test]
fn counters_and_gauges_are_summed_with_label_sets_kept_apart() {
    let a = "# HELP c Count.\n# TYPE c counter\nc{model_name=\"x\"} 1\nc{model_name=\"y\"} 2\n\
             # TYPE g gauge\ng{a=\"1\",b=\"2\"} 0.5\n";
    let b = "# HELP c Count.\n# TYPE c counter\nc{model_name=\"z\"} 4\nc{model_name=\"x\"} 10\n\
             # TYPE g gauge\ng{b=\"2\",a=\"1\"} 0.25\ng 3\n";
    let merged = merge(&[a, b], "").expect("merge");
    assert_eq!(
        merged,
        "# HELP c Count.\n# TYPE c counter\n\
         c{model_name=\"x\"} 11\nc{model_name=\"y\"} 2\nc{model_name=\"z\"} 4\n\
         # TYPE g gauge\ng{a=\"1\",b=\"2\"} 0.75\ng 3\n"
    );
}

#[test]
fn histograms_add_element_wise() {
    let a = "# TYPE h histogram\n\
             h_bucket{model_name=\"m\",le=\"0.1\"} 1\nh_bucket{model_name=\"m\",le=\"1\"} 3\n\
             h_bucket{model_name=\"m\",le=\"+Inf\"} 4\nh_sum{model_name=\"m\"} 2.5\n\
             h_count{model_name=\"m\"} 4\n";
    // Same bounds spelled differently, label order swapped.
    let b = "# TYPE h histogram\n\
             h_bucket{le=\"0.10\",model_name=\"m\"} 2\nh_bucket{le=\"1.0\",model_name=\"m\"} 2\n\
             h_bucket{le=\"+Inf\",model_name=\"m\"} 5\nh_sum{model_name=\"m\"} 7.25\n\
             h_count{model_name=\"m\"} 5\n\
             h_bucket{model_name=\"n\",le=\"5\"} 1\nh_bucket{model_name=\"n\",le=\"+Inf\"} 1\n\
             h_sum{model_name=\"n\"} 4\nh_count{model_name=\"n\"} 1\n";
    assert_eq!(
        merge(&[a, b], "").expect("merge"),
        "# TYPE h histogram\n\
         h_bucket{model_name=\"m\",le=\"0.1\"} 3\nh_bucket{model_name=\"m\",le=\"1\"} 5\n\
         h_bucket{model_name=\"m\",le=\"+Inf\"} 9\nh_sum{model_name=\"m\"} 9.75\n\
         h_count{model_name=\"m\"} 9\n\
         h_bucket{model_name=\"n\",le=\"5\"} 1\nh_bucket{model_name=\"n\",le=\"+Inf\"} 1\n\
         h_sum{model_name=\"n\"} 4\nh_count{model_name=\"n\"} 1\n"
    );
}

#[test]
fn different_bucket_layouts_are_refused() {
    let a = "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 1\n";
    let b = "# TYPE h histogram\nh_sum 0\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\n";
    let err = merge(&[a, a, b], "").expect_err("layouts differ");
    assert_eq!(
        err,
        MergeError::BucketLayout {
            origin: Origin::Instance(2),
            line: 2,
            series: "h".into(),
            found: "2,+Inf".into(),
            expected: "1,+Inf".into(),
            first: Origin::Instance(0),
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("instance 2, line 2"), "{msg}");
    assert!(
        msg.contains("le=[2,+Inf]") && msg.contains("le=[1,+Inf]"),
        "{msg}"
    );
    // A layout with an extra bound is refused too.
    let c =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"+Inf\"} 1\n";
    assert!(matches!(
        merge(&[a, c], ""),
        Err(MergeError::BucketLayout { .. })
    ));
}

#[test]
fn mismatched_type_names_both_texts() {
    let a = "# TYPE x counter\nx 1\n";
    let b = "# HELP x Something.\n# TYPE x gauge\nx 1\n";
    let err = merge(&[a, b], "").expect_err("types differ");
    assert_eq!(
        err,
        MergeError::TypeMismatch {
            origin: Origin::Instance(1),
            line: 2,
            family: "x".into(),
            found: Kind::Gauge,
            expected: Kind::Counter,
            first: Origin::Instance(0),
        }
    );
    assert_eq!(
        err.to_string(),
        "/metrics of instance 1, line 2: `x` is a gauge here but a counter in instance 0"
    );
}

#[test]
fn a_broken_line_names_the_instance_and_line() {
    let good = instance(&A);
    let bad = "# HELP c Count.\n# TYPE c counter\nc{model_name=\"m\"} one\n";
    let err = merge(&[&good, bad], "").expect_err("broken");
    assert_eq!(
        err,
        MergeError::Parse {
            origin: Origin::Instance(1),
            line: 3,
            reason: ParseReason::BadValue("one".into()),
            text: "c{model_name=\"m\"} one".into(),
        }
    );
    assert!(err
        .to_string()
        .starts_with("/metrics of instance 1, line 3: sample value `one` is not a float"));
    let err = merge(&[], "x{a=\"1\" 2\n").expect_err("broken own");
    assert!(
        err.to_string()
            .starts_with("/metrics of the Coordinator's own metrics, line 1: expected `,` or `}`"),
        "{err}"
    );
}

fn reason(text: &str) -> ParseReason {
    match merge(&[text], "") {
        Err(MergeError::Parse { reason, .. }) => reason,
        other => panic!("{text:?}: expected a parse error, got {other:?}"),
    }
}

#[test]
fn parse_errors_say_what_is_wrong() {
    assert_eq!(reason("9x 1\n"), ParseReason::BadName);
    assert_eq!(reason("{a=\"1\"} 1\n"), ParseReason::BadName);
    assert_eq!(reason("x{9=\"1\"} 1\n"), ParseReason::BadLabelName(3));
    assert_eq!(
        reason("x{a=\"1\",a=\"2\"} 1\n"),
        ParseReason::DuplicateLabel("a".into())
    );
    assert_eq!(reason("x{a=\"\\t\"} 1\n"), ParseReason::BadEscape('t'));
    assert_eq!(reason("x{a=\"1} 1\n"), ParseReason::UnclosedValue);
    assert_eq!(
        reason("x{a=1} 1\n"),
        ParseReason::Expected {
            expected: "`\"`",
            column: 5
        }
    );
    assert_eq!(
        reason("x{a=\"1\"}\n"),
        ParseReason::Expected {
            expected: "a sample value",
            column: 9
        }
    );
    assert_eq!(
        reason("x 1 12.5\n"),
        ParseReason::BadTimestamp("12.5".into())
    );
    assert_eq!(reason("x 1 12 3\n"), ParseReason::Trailing("3".into()));
    assert_eq!(
        reason("# TYPE x countr\n"),
        ParseReason::BadType("countr".into())
    );
    assert_eq!(
        reason("x 1\n# TYPE x counter\n"),
        ParseReason::LateType("x".into())
    );
    assert_eq!(reason("x 1\nx 2\n"), ParseReason::DuplicateSeries(1));
    assert_eq!(
        reason("x{a=\"1\",b=\"2\"} 1\nx{b=\"2\",a=\"1\"} 2\n"),
        ParseReason::DuplicateSeries(1)
    );
    assert_eq!(
        reason("# TYPE h histogram\nh_bucket 1\n"),
        ParseReason::MissingLe
    );
    assert_eq!(
        reason("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n"),
        ParseReason::BadLe("x".into())
    );
    assert_eq!(
        reason("# TYPE h histogram\nh{le=\"1\"} 1\n"),
        ParseReason::BareHistogramSample("h".into())
    );
    assert_eq!(
        reason("# TYPE h histogram\nh_sum 1\nh_sum 2\n"),
        ParseReason::DuplicateSeries(2)
    );
}

#[test]
fn summaries_are_refused() {
    let s = "# TYPE s summary\ns{quantile=\"0.5\"} 1\ns_sum 1\ns_count 1\n";
    assert_eq!(
        merge(&[s], ""),
        Err(MergeError::Summary {
            origin: Origin::Instance(0),
            line: 2,
            family: "s".into()
        })
    );
}

#[test]
fn escapes_round_trip_and_match_across_instances() {
    // Label value: back\slash "quoted" and a newline.
    let a = "# HELP e Help with \\\\ and \\n kept.\n# TYPE e gauge\n\
             e{v=\"back\\\\slash \\\"quoted\\\"\\nline\"} 1\n";
    let b = "# TYPE e gauge\ne { v = \"back\\\\slash \\\"quoted\\\"\\nline\" , } 2\n";
    assert_eq!(
        merge(&[a, b], "").expect("merge"),
        "# HELP e Help with \\\\ and \\n kept.\n# TYPE e gauge\n\
         e{v=\"back\\\\slash \\\"quoted\\\"\\nline\"} 3\n"
    );
    // The registry's own escaping parses back to the same value.
    let m = Metrics::new(&["a\"b\\c\nd"]).expect("registry");
    m.request_received.with_label_values(&[m.model()]).inc();
    let text = render(&m);
    let merged = merge(&[&text, &text], "").expect("merge");
    assert!(merged.contains("request_received_total{model_name=\"a\\\"b\\\\c\\nd\"} 2\n"));
}

#[test]
fn special_values_timestamps_and_comments() {
    // The `prometheus` crate writes an infinite gauge as `inf`; others write `+Inf`, `NaN`.
    let a =
        "# a free comment\n\n# TYPE g gauge\ng{k=\"inf\"} inf\ng{k=\"nan\"} NaN 1700000000000\n\
             g{k=\"neg\"} -Inf\n  g{k=\"big\"} 1e21\n";
    let b = "# TYPE g gauge\ng{k=\"inf\"} 1\ng{k=\"nan\"} 1\ng{k=\"neg\"} +Inf\ng{k=\"big\"} 1\n";
    assert_eq!(
        merge(&[a, b], "").expect("merge"),
        "# TYPE g gauge\ng{k=\"inf\"} +Inf\ng{k=\"nan\"} NaN\ng{k=\"neg\"} NaN\n\
         g{k=\"big\"} 1000000000000000000000\n"
    );
}

#[test]
fn values_are_written_like_the_prometheus_crate() {
    assert_eq!(format_value(3.0), "3");
    assert_eq!(format_value(0.75), "0.75");
    assert_eq!(format_value(-0.5), "-0.5");
    assert_eq!(format_value(f64::INFINITY), "+Inf");
    assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    assert_eq!(format_value(f64::NAN), "NaN");
    // The crate's own rendering of an integer gauge, a fraction and a histogram sum.
    let m = registry();
    m.num_requests_waiting.with_label_values(&[M]).set(12.0);
    m.npu_cache_usage_perc.with_label_values(&[M]).set(0.1);
    let text = render(&m);
    assert_eq!(merge(&[&text], "").expect("merge"), text);
}

#[test]
fn untyped_samples_are_summed_without_a_type_line() {
    let a = "u 1\nv{a=\"1\"} 2\n";
    let b = "v{a=\"1\"} 3\nu 4\n";
    assert_eq!(merge(&[a, b], "").expect("merge"), "u 5\nv{a=\"1\"} 5\n");
}

#[test]
fn hit_rate_is_one_with_hits_but_no_matches_and_the_mean_without_counts() {
    let a = "# TYPE npu_prefix_cache_hit_rate gauge\nnpu_prefix_cache_hit_rate 0.5\n\
             # TYPE npu_radix_match_hit_num gauge\nnpu_radix_match_hit_num 2\n\
             # TYPE all_radix_match_num gauge\nall_radix_match_num 0\n";
    assert!(merge(&[a, a], "")
        .expect("merge")
        .contains("\nnpu_prefix_cache_hit_rate 1\n"));
    let no_counts = "# TYPE npu_prefix_cache_hit_rate gauge\nnpu_prefix_cache_hit_rate 0.5\n";
    let other = "# TYPE npu_prefix_cache_hit_rate gauge\nnpu_prefix_cache_hit_rate 0.25\n";
    assert_eq!(
        merge(&[no_counts, other], "").expect("merge"),
        "# TYPE npu_prefix_cache_hit_rate gauge\nnpu_prefix_cache_hit_rate 0.375\n"
    );
}

#[test]
fn failed_request_perc_is_zero_when_nothing_was_received() {
    let a = "# TYPE request_received_total counter\nrequest_received_total 0\n\
             # TYPE request_failed_total counter\nrequest_failed_total 0\n\
             # TYPE failed_request_perc gauge\nfailed_request_perc 0.5\n";
    assert!(merge(&[a, a], "")
        .expect("merge")
        .contains("\nfailed_request_perc 0\n"));
}

#[test]
fn no_instances_and_no_own_text_give_an_empty_exposition() {
    assert_eq!(merge(&[], "").expect("merge"), "");
}
