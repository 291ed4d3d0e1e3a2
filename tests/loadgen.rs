//! The serving load generator (`benches/loadgen`) against a fake OpenAI SSE server on a real
//! socket: the fake streams text chunks split at odd byte boundaries (several events per
//! write, events cut mid-line) and, by arrival order, fails in every way the generator must
//! count (non-2xx, error event, truncated stream, missing usage, short reply). Also: the SSE
//! parser and percentiles in isolation, the report, chat mode, transport errors, and
//! `--serve`'s config driving the real daemon binary to readiness and back down.
//! No timing assertions.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

#[allow(dead_code)]
#[path = "../benches/loadgen/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../benches/loadgen/fake.rs"]
mod fake;
#[allow(dead_code)]
#[path = "../benches/loadgen/limits.rs"]
mod limits;
#[allow(dead_code)]
#[path = "../benches/loadgen/record.rs"]
mod record;
#[allow(dead_code)]
#[path = "../benches/loadgen/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../benches/loadgen/runner.rs"]
mod runner;
#[allow(dead_code)]
#[path = "../benches/loadgen/serve.rs"]
mod serve;
#[allow(dead_code)]
#[path = "../benches/loadgen/sse.rs"]
mod sse;
#[allow(dead_code)]
#[path = "../benches/loadgen/stats.rs"]
mod stats;
#[allow(dead_code)]
#[path = "../benches/loadgen/workload.rs"]
mod workload;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use client::Endpoint;
use fake::{fake_app, start_fake_with, Fake};
use record::{ErrorKind, Outcome, Tracker};
use runner::{run_level, Level};
use sse::{classify, Event, SseParser};
use stats::{percentile, Dist, LevelSummary};
use workload::{Workload, FALLBACK_IDS};

// ---------------------------------------------------------------- fake server

async fn start_fake() -> (SocketAddr, Arc<Fake>) {
    start_fake_with(Fake::default(), 0).await
}

/// The fake behind rustls (`tls`), one hyper connection per accepted TLS stream.
async fn start_fake_tls(tls: Arc<rustls::ServerConfig>) -> (SocketAddr, Arc<Fake>) {
    let fake = Arc::new(Fake::default());
    let app = fake_app(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            });
        }
    });
    (addr, fake)
}

fn workload(chat: bool) -> Arc<Workload> {
    Arc::new(Workload {
        model: "fake-model".into(),
        prompt_tokens: 16,
        output_tokens: 8,
        chat,
        ignore_eos: true,
        seed: 7,
        vocab: FALLBACK_IDS.collect(),
        pieces: None,
    })
}

fn level(concurrency: usize, requests: u64) -> Level {
    Level {
        concurrency,
        requests,
        duration: None,
        request_timeout: Duration::from_secs(60),
        first_index: 0,
    }
}

fn assert_ordered(d: &Dist) {
    assert!(d.n > 0);
    assert!(
        d.min <= d.p50 && d.p50 <= d.p90 && d.p90 <= d.p99 && d.p99 <= d.max,
        "{d:?}"
    );
    assert!(d.min <= d.mean && d.mean <= d.max, "{d:?}");
}

// ---------------------------------------------------------------- against the fake

#[tokio::test]
async fn sweep_level_counts_every_outcome() {
    let (addr, fake) = start_fake().await;
    let ep = Endpoint::parse(&format!("http://{addr}"), None, None).unwrap();
    let (status, models) = ep.get_json("/v1/models").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], "fake-model");

    let (recs, wall) = run_level(&ep, &workload(false), level(4, 40)).await;
    let s = LevelSummary::new(4, &recs, wall);
    assert_eq!(s.requests, 40);
    assert_eq!((s.ok, s.short, s.errors), (20, 4, 16), "{s:#?}");
    for kind in ["http", "truncated", "error_event", "missing_usage"] {
        assert_eq!(s.errors_by_kind.get(kind), Some(&4), "{kind}: {s:#?}");
    }
    assert_eq!(s.completion_tokens, 20 * 8 + 4 * 7);
    assert!(s.output_tok_per_s > 0.0 && s.req_per_s > 0.0);
    assert_eq!((s.ttft.n, s.tpot.n, s.e2e.n), (24, 24, 24));
    for d in [&s.ttft, &s.tpot, &s.e2e] {
        assert_ordered(d);
    }
    assert!(s.ttft.p50 <= s.e2e.p50);
    assert_eq!(s.error_samples.len(), 4, "{:?}", s.error_samples);
    assert!(
        s.error_samples["http"].contains("boom"),
        "{:?}",
        s.error_samples
    );
    assert_eq!(s.error_samples["error_event"], "engine died");

    // Every request had a 16-id prompt, all different.
    let prompts = fake.prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), 40);
    for p in &prompts {
        let ids = p.as_array().expect("prompt is an id array");
        assert_eq!(ids.len(), 16);
        assert!(ids.iter().all(|i| i
            .as_u64()
            .is_some_and(|i| FALLBACK_IDS.contains(&(i as u32)))));
    }
    let distinct: HashSet<String> = prompts.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len(), 40);

    // The report renders it.
    let text = report::level_text(&s);
    assert!(
        text.contains("concurrency 4: 40 requests, 20 ok, 4 short, 16 errors"),
        "{text}"
    );
    assert!(text.contains("error_event=4"), "{text}");
    let table = report::summary_table(std::slice::from_ref(&s));
    assert_eq!(table.lines().count(), 3, "{table}");
    let doc = report::json_doc(json!({"model": "fake-model"}), &[s]);
    assert_eq!(doc["levels"][0]["ok"], 20);
    assert_eq!(doc["levels"][0]["errors_by_kind"]["http"], 4);
    assert!(doc["levels"][0]["ttft_ms"]["p99"].as_f64().is_some());
}

#[tokio::test]
async fn chat_mode_reads_deltas() {
    let (addr, fake) = start_fake().await;
    let ep = Endpoint::parse(&format!("http://{addr}/"), None, None).unwrap();
    let (recs, wall) = run_level(&ep, &workload(true), level(2, 10)).await;
    let s = LevelSummary::new(2, &recs, wall);
    assert_eq!((s.ok, s.short, s.errors), (5, 1, 4), "{s:#?}");
    assert_eq!(s.completion_tokens, 5 * 8 + 7);
    let prompts = fake.prompts.lock().unwrap().clone();
    assert!(prompts
        .iter()
        .all(|p| p.as_str().is_some_and(|t| !t.is_empty())));
}

#[tokio::test]
async fn duration_ends_a_level_early() {
    let (addr, _fake) = start_fake().await;
    let ep = Endpoint::parse(&format!("http://{addr}"), None, None).unwrap();
    let mut l = level(2, 1_000_000);
    l.duration = Some(Duration::from_millis(200));
    let (recs, _) = run_level(&ep, &workload(false), l).await;
    assert!(!recs.is_empty() && recs.len() < 1_000_000);
}

#[tokio::test]
async fn refused_connections_are_transport_errors() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}"), None, None).unwrap();
    let (recs, wall) = run_level(&ep, &workload(false), level(3, 9)).await;
    let s = LevelSummary::new(3, &recs, wall);
    assert_eq!((s.requests, s.errors, s.ok), (9, 9, 0));
    assert_eq!(s.errors_by_kind.get("transport"), Some(&9));
    assert_eq!(s.ttft.n, 0);
    assert!(report::level_text(&s).contains("transport=9"));
}

#[tokio::test]
async fn https_with_mutual_tls() {
    let pki = common::pki::Pki::shared();
    let server = mindie::security::tls::server_config(
        &pki.server_files(true),
        &mut mindie::security::perms::PermChecker::new(true),
    )
    .unwrap();
    let (addr, _fake) = start_fake_tls(server).await;
    let url = format!("https://127.0.0.1:{}", addr.port());
    let identity = (
        pki.client_cert.as_path(),
        pki.client_key.as_path(),
        Some(pki.client_key_pwd_file.as_path()),
    );
    let with_cert =
        mindie::security::tls::client_config(std::slice::from_ref(&pki.ca), Some(identity))
            .unwrap();
    let ep = Endpoint::parse(&url, Some(with_cert.clone()), None).unwrap();
    let (recs, wall) = run_level(&ep, &workload(false), level(2, 10)).await;
    let s = LevelSummary::new(2, &recs, wall);
    assert_eq!((s.ok, s.short, s.errors), (5, 1, 4), "{s:#?}");

    // Checked against the name given instead of the URL's host.
    let ep = Endpoint::parse(&url, Some(with_cert), Some("localhost")).unwrap();
    assert_eq!(ep.get_json("/v1/models").await.unwrap().0, 200);

    // No client certificate: the handshake fails, every request is a transport error.
    let no_cert =
        mindie::security::tls::client_config(std::slice::from_ref(&pki.ca), None).unwrap();
    let ep = Endpoint::parse(&url, Some(no_cert), None).unwrap();
    let (recs, wall) = run_level(&ep, &workload(false), level(2, 4)).await;
    let s = LevelSummary::new(2, &recs, wall);
    assert_eq!(s.errors_by_kind.get("transport"), Some(&4), "{s:#?}");
}

#[test]
fn urls_are_checked() {
    assert!(Endpoint::parse("ftp://x:1", None, None).is_err());
    assert!(Endpoint::parse("http://x:1/v1", None, None).is_err());
    assert!(
        Endpoint::parse("https://x:1", None, None).is_err(),
        "https needs a TLS config"
    );
    assert!(Endpoint::parse("http://[::1]:8080", None, None).is_ok());
}

// ---------------------------------------------------------------- pure parts

#[test]
fn sse_parser_survives_any_split() {
    let wire =
        b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n: ping\r\nevent: x\r\ndata: [DONE]\r\n\r\n";
    for cut in 0..wire.len() {
        let mut p = SseParser::new();
        let mut ev = p.push(&wire[..cut]);
        ev.extend(p.push(&wire[cut..]));
        assert_eq!(
            ev,
            vec!["{\"choices\":[{\"text\":\"a\"}]}", "[DONE]"],
            "cut {cut}"
        );
        assert_eq!(p.finish(), None);
    }
    // Multi-line data joins with \n; an unterminated last event is delivered by finish().
    let mut p = SseParser::new();
    assert_eq!(p.push(b"data: a\ndata:b\n\ndata: tail"), vec!["a\nb"]);
    assert_eq!(p.finish().as_deref(), Some("tail"));
}

#[test]
fn events_are_classified() {
    assert_eq!(classify("[DONE]"), Event::Done);
    match classify(r#"{"choices":[{"index":0,"text":"hi","finish_reason":null}]}"#) {
        Event::Chunk(c) => assert!(c.has_text && c.choices == 1 && c.usage.is_none()),
        e => panic!("{e:?}"),
    }
    match classify(r#"{"choices":[{"index":0,"text":"","finish_reason":"stop"}]}"#) {
        Event::Chunk(c) => assert!(!c.has_text && c.choices == 1),
        e => panic!("{e:?}"),
    }
    match classify(
        r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#,
    ) {
        Event::Chunk(c) => assert_eq!(c.usage.map(|u| u.completion_tokens), Some(5)),
        e => panic!("{e:?}"),
    }
    assert_eq!(
        classify(r#"{"error":{"message":"x"}}"#),
        Event::Error("x".into())
    );
    assert!(matches!(classify("{not json"), Event::Malformed(_)));
    assert!(matches!(classify(r#"{"foo":1}"#), Event::Malformed(_)));
}

#[test]
fn tracker_times_and_judges() {
    let ms = Duration::from_millis;
    let text = || classify(r#"{"choices":[{"text":"x"}]}"#);
    let usage = |n: u64| {
        classify(&format!(
            r#"{{"choices":[],"usage":{{"prompt_tokens":4,"completion_tokens":{n}}}}}"#
        ))
    };
    let mut t = Tracker::new();
    assert!(!t.on_event(classify(r#"{"choices":[{"text":""}]}"#), ms(5)));
    for i in 0..5 {
        assert!(!t.on_event(text(), ms(10 + i * 10)));
    }
    assert!(!t.on_event(usage(5), ms(60)));
    assert!(t.on_event(Event::Done, ms(60)));
    let r = t.finish(ms(70), Some(5));
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.ttft, Some(ms(10)), "first chunk with text");
    assert_eq!(r.e2e, ms(60));
    assert_eq!(r.tpot(), Some(ms(50) / 4));
    assert_eq!(
        (r.completion_tokens, r.prompt_tokens, r.text_chunks),
        (5, Some(4), 5)
    );

    let mut t = Tracker::new();
    t.on_event(text(), ms(1));
    t.on_event(usage(1), ms(2));
    t.on_event(Event::Done, ms(2));
    let r = t.finish(ms(2), Some(5));
    assert_eq!(r.outcome, Outcome::Short);
    assert_eq!(r.tpot(), None, "one token has no TPOT");

    let mut t = Tracker::new();
    t.on_event(text(), ms(1));
    t.on_event(Event::Done, ms(2));
    let r = t.finish(ms(2), None);
    assert!(matches!(
        r.outcome,
        Outcome::Failed(ErrorKind::MissingUsage, _)
    ));
    assert_eq!(r.completion_tokens, 1, "falls back to text chunks");
}

#[test]
fn percentiles_interpolate_and_order() {
    let v = [1.0, 2.0, 3.0, 4.0, 5.0];
    assert_eq!(percentile(&v, 0.5), Some(3.0));
    assert_eq!(percentile(&v, 0.0), Some(1.0));
    assert_eq!(percentile(&v, 1.0), Some(5.0));
    assert_eq!(percentile(&v, 0.25), Some(2.0));
    assert_eq!(percentile(&[1.0, 2.0], 0.5), Some(1.5));
    assert_eq!(percentile(&[], 0.5), None);
    let d = Dist::of(vec![5.0, 1.0, 3.0, f64::NAN]);
    assert_eq!((d.n, d.mean, d.p50), (3, 3.0, 3.0));
    assert_ordered(&d);
    assert_eq!(Dist::of(Vec::new()).n, 0);
}

#[test]
fn prompts_are_deterministic_and_exact() {
    let w = workload(false);
    assert_eq!(w.prompt_ids(3), w.prompt_ids(3));
    assert_ne!(w.prompt_ids(3), w.prompt_ids(4));
    assert_eq!(w.prompt_ids(0).len(), 16);
    let b = w.body(0);
    assert_eq!(b["stream"], true);
    assert_eq!(b["ignore_eos"], true);
    assert_eq!(b["max_tokens"], 8);
    assert_eq!(b["stream_options"]["include_usage"], true);
    assert_eq!(b["prompt"].as_array().map(Vec::len), Some(16));
    assert_eq!(w.path(), "/v1/completions");

    // From a real tokenizer: no special ids.
    let tok = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/models/tiny-llama/tokenizer.json");
    let (ids, pieces) = workload::vocab_from_tokenizer(&tok, true).unwrap();
    let t = tokenizers::Tokenizer::from_file(&tok).unwrap();
    for (id, added) in t.get_added_tokens_decoder() {
        if added.special {
            assert!(
                !ids.contains(&id),
                "special id {id} in the prompt vocabulary"
            );
        }
    }
    assert_eq!(pieces.map(|p| p.len()), Some(ids.len()));
}

// ---------------------------------------------------------------- --serve

fn serve_options(model_dir: &Path) -> serve::ServeOptions {
    serve::ServeOptions {
        model_dir: model_dir.to_path_buf(),
        model_name: "bench".into(),
        base_config: Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/config.json"),
        daemon_bin: env!("CARGO_BIN_EXE_mindieservice_daemon").into(),
        cpu_mem_gb: 1,
        max_batch_size: 16,
        max_prefill_batch_size: 16,
        max_prefill_tokens: None,
        max_iter_times: None,
        max_seq_len: None,
        template: None,
        chunk_tokens: None,
        prompt_tokens: 128,
        output_tokens: 64,
        ready_timeout: Duration::from_secs(120),
    }
}

/// A copy of the tiny-llama fixture with a 0640 config.json.
fn fixture_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama");
    for f in std::fs::read_dir(src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let cfg = dir.path().join("config.json");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    dir
}

#[test]
fn serve_config_fits_the_sweep() {
    let model = fixture_model();
    let c = serve::build_config(&serve_options(model.path()), (11, 12, 13)).unwrap();
    assert_eq!(c["ServerConfig"]["port"], 11);
    assert_eq!(c["ServerConfig"]["managementPort"], 12);
    assert_eq!(c["ServerConfig"]["metricsPort"], 13);
    assert_eq!(c["ServerConfig"]["httpsEnabled"], false);
    let m = &c["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0];
    assert_eq!(m["modelName"], "bench");
    assert_eq!(m["cpuMemSize"], 1);
    assert_eq!(
        m["modelWeightPath"].as_str().map(Path::new),
        Some(model.path().canonicalize().unwrap().as_path())
    );
    let d = &c["BackendConfig"]["ModelDeployConfig"];
    assert!(d["maxSeqLen"].as_u64().unwrap() >= 192);
    let sc = &c["BackendConfig"]["ScheduleConfig"];
    assert_eq!(sc["maxBatchSize"], 16);
    assert!(sc["maxPrefillTokens"].as_u64().unwrap() >= 16 * 128);
    assert!(sc["maxIterTimes"].as_u64().unwrap() >= 64);
    assert_eq!(sc["templateType"], "Standard", "the base config's");
    assert!(sc.get("prefillChunkSize").is_none());

    let mut o = serve_options(model.path());
    o.template = Some("Mix".into());
    o.chunk_tokens = Some(96);
    let c = serve::build_config(&o, (11, 12, 13)).unwrap();
    let sc = &c["BackendConfig"]["ScheduleConfig"];
    assert_eq!(sc["templateType"], "Mix");
    assert_eq!(sc["prefillChunkSize"], 96);

    let mut o = serve_options(model.path());
    o.max_seq_len = Some(100);
    assert!(
        serve::build_config(&o, (1, 2, 3)).is_err(),
        "maxSeqLen below prompt + output"
    );
}

#[tokio::test]
async fn serve_starts_the_daemon_and_stops_it() {
    let model = fixture_model();
    let d = serve::Daemon::start(&serve_options(model.path()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ep = Endpoint::parse(&d.url(), None, None).unwrap();
    let (status, v) = ep.get_json("/v1/models").await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["id"], "bench");
    let log = d.log.clone();
    let st = d.finish(false).expect("exit status");
    assert!(
        st.contains("exit status: 0") || st.contains("exit code: 0"),
        "{st}"
    );
    assert!(!log.exists(), "the temp folder goes after a clean run");
}

#[tokio::test]
async fn serve_refuses_a_loose_model_config() {
    let model = fixture_model();
    let cfg = model.path().join("config.json");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = match serve::Daemon::start(&serve_options(model.path())).await {
        Ok(_) => panic!("started with a world-writable model config"),
        Err(e) => e,
    };
    assert!(err.contains("chmod 640"), "{err}");
}

/// `--limits`: the roofline the ceilings follow (memory-bound batch 1, compute-bound batches,
/// prefill at the kernel peak).
#[test]
fn ceilings_follow_the_roofline() {
    let l = limits::Limits {
        bandwidth_gbs: 40.0,
        peak_gflops: 400.0,
        threads: 2,
        weight_bytes: 1_000_000_000,
        params: 500_000_000.0,
        bf16: true,
        bf16_dot: false,
    };
    // Batch 1: memory bound, 25 ms per token.
    assert!((l.decode_step_floor(1) - 0.025).abs() < 1e-9);
    // 16 rows: 2·0.5e9·16 / 400e9 = 40 ms of math beats 25 ms of reading.
    assert!((l.decode_step_floor(16) - 0.040).abs() < 1e-9);
    // c=16, p=128, o=64: prefill 2·0.5e9·2048/400e9 = 5.12 s, decode 64·0.04 = 2.56 s.
    let want = 16.0 * 64.0 / (5.12 + 2.56);
    assert!((l.ceiling_tok_s(16, 128, 64) - want).abs() < 1e-6);
}
