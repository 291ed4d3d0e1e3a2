//! The business router in process over the StandardMock engine and the tiny-llama fixture's
//! tokenizer (no socket): what tests/http_router.rs and tests/fuzz_http.rs drive with
//! `tower::ServiceExt::oneshot`. Included with `#[path]` by the tests that need it.

use axum::Router;
use mindie::backend::BackendKind;
use mindie::config::{self, Env, Loaded};
use mindie::daemon::engine::{build_engine, ModelSource};
use mindie::engine::defaults;
use mindie::http::admission::Admission;
use mindie::http::openai::models::ModelCard;
use mindie::http::session::{Limits, Serving};
use mindie::http::{business_router, BusinessState};
use mindie::lifecycle::Lifecycle;
use mindie::tokenizer::{Tokenizer, TokenizerPool, DEFAULT_ENCODE_TIMEOUT};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The model name the mock serves.
pub const MODEL: &str = "mock-model";

/// The tiny-llama fixture folder (its tokenizer feeds the mock).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/tiny-llama")
}

/// The shipped config.json turned to the StandardMock engine on the fixture, written to and
/// loaded from `home`.
pub fn mock_config(home: &Path) -> Loaded {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(root.join("conf/config.json")).expect("config"))
            .expect("config json");
    let m = &mut cfg["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0];
    m["modelInstanceType"] = "StandardMock".into();
    m["modelName"] = MODEL.into();
    m["modelWeightPath"] = fixture().to_str().expect("utf8 path").into();
    let path = home.join("config.json");
    std::fs::write(&path, cfg.to_string()).expect("write config");
    config::load(&path, home, &Env::default()).expect("load config")
}

/// The business router of a daemon serving the mock engine, answering every request with
/// `reply`'s tokens then EOS when given; the temporary home holds its config and must outlive
/// it. Call it inside a tokio runtime.
pub fn mock_business(reply: Option<&str>) -> (Router, tempfile::TempDir) {
    let home = tempfile::tempdir().expect("tempdir");
    let loaded = mock_config(home.path());
    let fixture = fixture();
    let tok = Tokenizer::load(&fixture).expect("tokenizer");
    // The mock's scripted reply goes through its env var, as in the daemon.
    let reply_file = home.path().join("reply.txt");
    let env = match reply {
        Some(text) => {
            std::fs::write(&reply_file, text).expect("write reply");
            Env::from_pairs([(
                "MIES_MOCK_REPLY_FILE",
                reply_file.to_string_lossy().into_owned(),
            )])
        }
        None => Env::default(),
    };
    let source = ModelSource {
        kind: BackendKind::Mock,
        dir: fixture.clone(),
    };
    let engine = build_engine(&loaded.config, &source, &tok, &env).expect("mock engine");
    let serving = Arc::new(Serving {
        engine: Arc::new(engine),
        tokenizer: TokenizerPool::new(tok, 1, DEFAULT_ENCODE_TIMEOUT),
        model_name: MODEL.into(),
        limits: Limits::from_config(&loaded.config),
        metrics: None,
        sampling_defaults: defaults::sampling_defaults(&fixture),
        registry: Default::default(),
        json_mode: Default::default(),
        stop_hook: None,
    });
    let sc = &loaded.config.server_config;
    let admission = Admission::new(
        sc.max_link_num as usize,
        sc.max_request_length as usize,
        Lifecycle::new(),
    );
    let router = business_router(BusinessState {
        serving,
        card: Arc::new(ModelCard {
            name: MODEL.into(),
            created: 0,
            root: MODEL.into(),
        }),
        config: Arc::new(loaded),
        admission,
    });
    (router, home)
}
