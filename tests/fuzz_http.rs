//! Fuzzes every request body the daemon reads from the network, in process: each POST route
//! of the business router (OpenAI, TGI, vLLM's legacy `/generate`, MindIE-native, the
//! tokenizer, Triton) over the StandardMock engine, and the management router's role posts
//! (dmi mode) and `/v1/log-level`. Inputs are the seeds of `tests/fuzz/http/<route>/` and
//! `tests/fuzz/mgmt/<target>/` mutated (see `tests/fuzz/mod.rs`), plus random bytes, sent
//! with `application/json`, without a content type, or as `text/plain`.
//!
//! Invariant for every input: an answer within 10 s, never a 5xx, and a 4xx carries a JSON
//! body with a non-empty error message. A valid request may succeed (2xx): that is fine too.
//! `MINDIE_FUZZ_CASES` scales the case count (see the README's "Fuzzing").
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod fuzz;
#[path = "common/mock_router.rs"]
mod mock_router;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use futures_util::future::BoxFuture;
use fuzz::{show, Input};
use http_body_util::BodyExt;
use mindie::engine::{EngineMonitor, EngineStatus};
use mindie::lifecycle::Lifecycle;
use mindie::logging::{self, LogSettings};
use mindie::mgmt::log_level::LogControl;
use mindie::mgmt::{self, MgmtState};
use mindie::pd::role::{Instance, LinkTiming, Linker, RoleState};
use mock_router::{mock_business, mock_config};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// How long one request may take before it counts as a hang.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// The business router over the mock engine, built once for every route's test.
fn business() -> Router {
    static ROUTER: OnceLock<(Router, tempfile::TempDir)> = OnceLock::new();
    let (router, _home) = ROUTER.get_or_init(|| rt().block_on(async { mock_business(None) }));
    router.clone()
}

struct ReadyEngine;

impl EngineMonitor for ReadyEngine {
    fn status(&self) -> EngineStatus {
        EngineStatus {
            ready: true,
            free_slots: 8,
            progress_at: Some(Instant::now()),
            ..EngineStatus::default()
        }
    }
}

/// Links every peer at once (the role posts' bodies are what is fuzzed, not the links).
struct InstantLinker;

impl Linker for InstantLinker {
    fn link(&self, _local: &Instance, _peer: &Instance) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn unlink(&self, _peer_id: u32) {}
}

/// The management router in dmi mode (role routes) with run-time log level control.
fn management() -> Router {
    static ROUTER: OnceLock<(Router, tempfile::TempDir)> = OnceLock::new();
    let (router, _home) = ROUTER.get_or_init(|| {
        let home = tempfile::tempdir().expect("tempdir");
        let loaded = mock_config(home.path());
        let handle = logging::init(&LogSettings {
            level: "info".into(),
            to_stdout: false,
            to_file: false,
            dir: home.path().join("log"),
            rotate_bytes: 1 << 20,
            rotate_keep: 1,
            format: Default::default(),
            format_refused: None,
        })
        .expect("log subscriber");
        let log = LogControl::new(handle, &loaded.config.log_config);
        let timing = LinkTiming {
            link_timeout: Duration::from_millis(100),
            retry_interval: Duration::from_millis(20),
        };
        let router = rt().block_on(async {
            let role = RoleState::new(Arc::new(InstantLinker), timing);
            mgmt::router(MgmtState {
                config: Arc::new(loaded),
                engine: Arc::new(ReadyEngine),
                life: Lifecycle::new(),
                drain_deadline: Duration::from_secs(1),
                probe: None,
                metrics: None,
                stall_after: None,
                log: Some(log),
                pd: Some(role),
                multinode: None,
            })
        });
        (router, home)
    });
    router.clone()
}

/// Sends `body` to `path`; the status and the reply's bytes, or `None` past [`ANSWER_WITHIN`].
async fn send(
    router: Router,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Option<(StatusCode, Vec<u8>)> {
    let mut req = Request::post(path);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let req = req.body(Body::from(body)).expect("request");
    let call = async {
        let resp = router.oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map(|b| b.to_bytes());
        (status, bytes.map(|b| b.to_vec()).unwrap_or_default())
    };
    tokio::time::timeout(ANSWER_WITHIN, call).await.ok()
}

/// The error message of a 4xx body in any flavour's shape (OpenAI `error.message`, MindIE and
/// TGI `error`, or `message`).
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let m = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .or_else(|| v["message"].as_str())?;
    (!m.trim().is_empty()).then(|| m.to_string())
}

fn content_type(pick: u8) -> Option<&'static str> {
    match pick % 8 {
        6 => None,
        7 => Some("text/plain"),
        _ => Some("application/json"),
    }
}

/// MindIE's documented refusal of a role post the node cannot apply (e.g. a first assignment
/// without peers: SPEC-PD, `src/mgmt/role.rs`): a 503 that depends on the node's state, not on
/// a fault. Every other 5xx fails the harness.
fn documented_5xx(path: &str, status: StatusCode, body: &[u8]) -> bool {
    path.contains("/role/")
        && status == StatusCode::SERVICE_UNAVAILABLE
        && error_message(body).is_some_and(|m| {
            m == "Update pd info failed. Reset to previous node status."
                || m == "Parse req json failed. Reset to previous node status."
        })
}

/// Runs the fuzz target `target` (`tests/fuzz/<target>/` seeds) against `paths` of the router
/// `make` builds, `weight` times the base case count; prints how many cases ran and their
/// status classes.
fn fuzz_routes(make: fn() -> Router, target: &str, paths: &[&str], weight: f64) {
    let router = make();
    let seeds = fuzz::seeds(target);
    let tally: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let mut runner = TestRunner::new(fuzz::config(weight, file!()));
    let strategy = (fuzz::input(seeds.len()), 0..paths.len(), any::<u8>());
    let result = runner.run(&strategy, |(input, which, ct): (Input, usize, u8)| {
        let path = paths[which];
        let bytes = input.render(&seeds);
        let shown = show(&bytes);
        let ct = content_type(ct);
        let answer = rt().block_on(send(router.clone(), path, ct, bytes));
        let Some((status, body)) = answer else {
            return Err(TestCaseError::fail(format!(
                "{path}: no answer within {ANSWER_WITHIN:?} to {shown}"
            )));
        };
        *tally
            .lock()
            .unwrap()
            .entry(format!("{path} {}xx", status.as_u16() / 100))
            .or_default() += 1;
        if status.is_server_error() && !documented_5xx(path, status, &body) {
            return Err(TestCaseError::fail(format!(
                "{path} ({ct:?}) answered {status} ({}) to {shown}",
                show(&body)
            )));
        }
        if status.is_client_error() && error_message(&body).is_none() {
            return Err(TestCaseError::fail(format!(
                "{path} answered {status} without a JSON error message ({}) to {shown}",
                show(&body)
            )));
        }
        Ok(())
    });
    let tally = tally.into_inner().unwrap();
    let total: u64 = tally.values().sum();
    println!("fuzz {target}: {total} cases {tally:?}");
    if let Err(e) = result {
        panic!("fuzz {target}: {e}");
    }
}

/// Every committed seed is a request one of `paths` accepts (a seed that is refused would
/// only fuzz the first check).
fn seeds_are_accepted(make: fn() -> Router, target: &str, paths: &[&str]) {
    let router = make();
    for (i, seed) in fuzz::seeds(target).into_iter().enumerate() {
        let mut answers = Vec::new();
        for path in paths {
            let (status, body) = rt()
                .block_on(send(
                    router.clone(),
                    path,
                    Some("application/json"),
                    seed.clone(),
                ))
                .unwrap_or_else(|| panic!("{target} seed {i}: no answer from {path}"));
            if status.is_success() {
                break;
            }
            answers.push(format!("{path} -> {status} {}", show(&body)));
        }
        assert!(
            answers.len() < paths.len(),
            "{target} seed {i} ({}): {answers:?}",
            show(&seed)
        );
    }
}

macro_rules! business_target {
    ($name:ident, $target:literal, [$($path:literal),+], $weight:expr) => {
        #[test]
        fn $name() {
            fuzz_routes(business, concat!("http/", $target), &[$($path),+], $weight);
        }
    };
}

business_target!(openai_chat, "chat", ["/v1/chat/completions"], 1.0);
business_target!(openai_completions, "completions", ["/v1/completions"], 1.0);
business_target!(tgi_and_vllm_generate, "tgi_generate", ["/generate"], 1.0);
business_target!(
    tgi_generate_stream,
    "tgi_generate_stream",
    ["/generate_stream"],
    0.5
);
business_target!(tgi_general, "tgi_general", ["/"], 0.5);
business_target!(native_infer, "native_infer", ["/infer"], 0.75);
business_target!(
    native_infer_token,
    "native_infer_token",
    ["/infer_token"],
    0.75
);
business_target!(tokenizer, "tokenizer", ["/v1/tokenizer"], 0.5);
business_target!(
    triton_generate,
    "triton_generate",
    [
        "/v2/models/mock-model/generate",
        "/v2/models/mock-model/generate_stream"
    ],
    0.75
);
business_target!(
    triton_infer,
    "triton_infer",
    ["/v2/models/mock-model/infer"],
    0.75
);
/// stopInfer gets a router of its own: a fuzzed stop whose id matches a request another
/// target has in flight (their seeds share ids such as `req-1`) would legitimately cancel it.
fn stop_business() -> Router {
    static ROUTER: OnceLock<(Router, tempfile::TempDir)> = OnceLock::new();
    let (router, _home) = ROUTER.get_or_init(|| rt().block_on(async { mock_business(None) }));
    router.clone()
}

#[test]
fn triton_stop_infer() {
    fuzz_routes(
        stop_business,
        "http/triton_stop",
        &["/v2/models/mock-model/stopInfer"],
        0.25,
    );
}

#[test]
fn mgmt_role_posts() {
    fuzz_routes(
        management,
        "mgmt/role",
        &[
            "/v1/role/prefill",
            "/v1/role/decode",
            "/v1/role/flex",
            "/v2/role/prefill",
            "/v2/role/decode",
        ],
        1.0,
    );
}

#[test]
fn mgmt_log_level() {
    fuzz_routes(management, "mgmt/log_level", &["/v1/log-level"], 0.5);
}

#[test]
fn business_seeds_are_accepted() {
    for (target, path) in [
        ("http/chat", "/v1/chat/completions"),
        ("http/completions", "/v1/completions"),
        ("http/tgi_generate", "/generate"),
        ("http/tgi_generate_stream", "/generate_stream"),
        ("http/tgi_general", "/"),
        ("http/native_infer", "/infer"),
        ("http/native_infer_token", "/infer_token"),
        ("http/tokenizer", "/v1/tokenizer"),
        ("http/triton_generate", "/v2/models/mock-model/generate"),
        ("http/triton_infer", "/v2/models/mock-model/infer"),
    ] {
        seeds_are_accepted(business, target, &[path]);
    }
}

#[test]
fn mgmt_seeds_are_accepted() {
    seeds_are_accepted(management, "mgmt/log_level", &["/v1/log-level"]);
    seeds_are_accepted(
        management,
        "mgmt/role",
        &["/v1/role/decode", "/v2/role/prefill"],
    );
}

/// Found by `mgmt_log_level`: a body past axum's 2 MB default got axum's plain-text 413;
/// now the refusal is JSON with a message, like every other.
#[test]
fn oversized_log_level_body_is_a_json_413() {
    let body = format!("{{\"level\":\"{}\"}}", "a".repeat(3 << 20)).into_bytes();
    let (status, reply) = rt()
        .block_on(send(
            management(),
            "/v1/log-level",
            Some("application/json"),
            body,
        ))
        .expect("answer");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{}", show(&reply));
    assert!(error_message(&reply).is_some(), "{}", show(&reply));
}
