//! The management router in process, without a socket, in standard and dmi mode: role posts
//! (accepted, bad bodies, oversized bodies, first assignment without peers, unknown roles) and
//! the PD parts of `/v1/status` and `/v2/status`.

use crate::config::{validate, Env, Loaded};
use crate::engine::{EngineMonitor, EngineStatus};
use crate::lifecycle::Lifecycle;
use crate::mgmt::{router, MgmtState};
use crate::pd::role::{Instance, LinkTiming, Linker, RoleState};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures_util::future::BoxFuture;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const BAD_BODY: &str = r#"{"error":"Req body converts to json fail. Reset to previous node status.","error_type":"Input validation error"}"#;

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

/// Links every peer at once, except instance 9, which always fails with `2001`.
struct TestLinker;

impl Linker for TestLinker {
    fn link(&self, _local: &Instance, peer: &Instance) -> BoxFuture<'static, Result<(), String>> {
        let fail = peer.id == Some(9);
        Box::pin(async move {
            if fail {
                Err("2001".to_string())
            } else {
                Ok(())
            }
        })
    }

    fn unlink(&self, _peer_id: u32) {}
}

fn loaded() -> Arc<Loaded> {
    let doc: Value =
        serde_json::from_str(include_str!("../../../conf/config.json")).expect("config JSON");
    let checked = validate::check(doc, &Env::default()).expect("stock config");
    Arc::new(Loaded {
        config: checked.config,
        path: "config.json".into(),
        home: ".".into(),
        warnings: Vec::new(),
    })
}

fn state(pd: Option<RoleState>) -> MgmtState {
    MgmtState {
        config: loaded(),
        engine: Arc::new(ReadyEngine),
        life: Lifecycle::new(),
        drain_deadline: Duration::from_secs(1),
        probe: None,
        metrics: None,
        stall_after: None,
        log: None,
        pd,
        multinode: None,
    }
}

fn dmi() -> (axum::Router, RoleState) {
    let timing = LinkTiming {
        link_timeout: Duration::from_millis(100),
        retry_interval: Duration::from_millis(20),
    };
    let role = RoleState::new(Arc::new(TestLinker), timing);
    (router(state(Some(role.clone()))), role)
}

async fn call(app: &axum::Router, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn post(app: &axum::Router, path: &str, body: &Value) -> (StatusCode, String) {
    call(app, "POST", path, body.to_string().into_bytes()).await
}

async fn get_json(app: &axum::Router, path: &str) -> Value {
    let (status, text) = call(app, "GET", path, Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

fn device(ip: &str) -> Value {
    json!({"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"})
}

fn v1_body(peers: &[u32]) -> Value {
    json!({
        "local": {"id": 3, "server_ip": "10.0.0.3", "host_ip": "10.0.0.3",
                  "device": [device("29.0.0.3")]},
        "peers": peers.iter().map(|id| json!({
            "id": id, "server_ip": format!("10.0.0.{id}"), "host_ip": format!("10.0.0.{id}"),
            "device": [device(&format!("29.0.0.{id}"))]
        })).collect::<Vec<_>>()
    })
}

fn v2_body(peers: &[u32]) -> Value {
    let node = |id: u32| {
        json!({"server_ip": format!("10.0.0.{id}"), "host_ip": format!("10.0.0.{id}"),
               "dp_inst_list": [{"dp_inst_id": id * 10000, "device": [device(&format!("29.0.0.{id}"))]}]})
    };
    json!({
        "local": [node(3)],
        "peers": peers.iter().map(|&id| json!([node(id)])).collect::<Vec<_>>()
    })
}

/// Polls `/v1/status` (or v2) until `roleStatus` is `want`.
async fn status_until(app: &axum::Router, path: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let j = get_json(app, path).await;
        if j["service"]["roleStatus"] == want {
            return j;
        }
        assert!(Instant::now() < deadline, "{path} never {want}: {j}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn standard_mode_has_no_role_routes_and_keeps_its_status() {
    let app = router(state(None));
    let (status, _) = post(&app, "/v1/role/decode", &v1_body(&[7])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/v2/role/prefill", &v2_body(&[7])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let j = get_json(&app, "/v1/status").await;
    assert_eq!(
        j["service"].to_string(),
        r#"{"roleStatus":"RoleReady","currentRole":"none"}"#
    );
    assert_eq!(j["linkStatus"].to_string(), r#"{"peers":[]}"#);
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["service", "resource", "linkStatus"]);
}

#[tokio::test]
async fn a_decode_role_is_taken_and_linked() {
    let (app, role) = dmi();
    let j = get_json(&app, "/v1/status").await;
    assert_eq!(
        j["service"].to_string(),
        r#"{"roleStatus":"RoleUnknown","currentRole":"none"}"#
    );
    let (status, text) = post(&app, "/v1/role/decode", &v1_body(&[7, 9])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(text, r#"{"result":"ok"}"#);
    // 7 links, 9 fails after the (short) link timeout: ready with one ok link.
    let j = status_until(&app, "/v1/status", "RoleReady").await;
    assert_eq!(j["service"]["currentRole"], "decode");
    assert!(j["service"].get("p_percentage").is_none(), "{j}");
    assert_eq!(
        j["linkStatus"].to_string(),
        r#"{"peers":[{"target":7,"link":"ok"},{"target":9,"link":"failed : 2001"}]}"#
    );
    assert!(j["resource"]["availSlotsNum"].is_number(), "{j}");
    // v2 lists only ok instances.
    let j = get_json(&app, "/v2/status").await;
    assert_eq!(
        j["linkStatus"].to_string(),
        r#"{"peers":[{"target":7,"link":"ok"}]}"#
    );
    assert!(j["resource"]["dpInstMap"].is_array(), "{j}");
    // The same post again: still ready, no new link.
    let (status, _) = post(&app, "/v1/role/decode", &v1_body(&[7])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        get_json(&app, "/v1/status").await["service"]["roleStatus"],
        "RoleReady"
    );
    assert_eq!(role.snapshot().peers.len(), 1);
}

#[tokio::test]
async fn flex_reports_its_percentage() {
    let (app, _) = dmi();
    let mut body = v1_body(&[]);
    body["local"]["p_percentage"] = json!(40);
    let (status, text) = post(&app, "/v1/role/flex", &body).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, r#"{"result":"ok"}"#)
    );
    let j = get_json(&app, "/v1/status").await;
    assert_eq!(
        j["service"].to_string(),
        r#"{"roleStatus":"RoleReady","currentRole":"flex","p_percentage":40}"#
    );
    let j = get_json(&app, "/v2/status").await;
    assert!(j["service"].get("p_percentage").is_none(), "{j}");
}

#[tokio::test]
async fn v2_posts() {
    let (app, role) = dmi();
    let (status, text) = post(&app, "/v2/role/prefill", &v2_body(&[7])).await;
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::OK, r#"{"result":"ok"}"#)
    );
    let j = status_until(&app, "/v2/status", "RoleReady").await;
    assert_eq!(j["service"]["currentRole"], "prefill");
    assert_eq!(
        j["linkStatus"].to_string(),
        r#"{"peers":[{"target":7,"link":"ok"}]}"#
    );
    assert_eq!(role.snapshot().local.unwrap().dp_inst_ids, vec![30000]);
    // No flex in v2: the plane's 404, like any unknown path.
    let (status, _) = post(&app, "/v2/role/flex", &v2_body(&[7])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = post(&app, "/v1/role/standard", &v1_body(&[7])).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&app, "GET", "/v1/role/decode", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bad_bodies_get_mindies_422() {
    let (app, role) = dmi();
    let mut bad_ip = v1_body(&[7]);
    bad_ip["peers"][0]["server_ip"] = json!("10.0.0");
    let mut v2_as_v1 = v2_body(&[7]);
    v2_as_v1["local"] = json!([]);
    for (path, body) in [
        ("/v1/role/decode", b"{".to_vec()),
        ("/v1/role/decode", b"".to_vec()),
        ("/v1/role/decode", b"\xff\xfe".to_vec()),
        ("/v1/role/decode", "[]".into()),
        ("/v1/role/prefill", bad_ip.to_string().into_bytes()),
        ("/v2/role/decode", v1_body(&[7]).to_string().into_bytes()),
        ("/v2/role/decode", v2_as_v1.to_string().into_bytes()),
        // Deeper than serde_json's recursion limit.
        ("/v1/role/decode", "[".repeat(200).into_bytes()),
        // Over the body limit.
        ("/v1/role/decode", vec![b' '; super::ROLE_BODY_LIMIT + 1]),
    ] {
        let (status, text) = call(&app, "POST", path, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {text}");
        assert_eq!(text, BAD_BODY, "{path}");
    }
    assert_eq!(role.view(), Default::default(), "nothing changed");
}

#[tokio::test]
async fn a_first_assignment_without_peers_gets_503() {
    let (app, role) = dmi();
    let (status, text) = post(&app, "/v1/role/decode", &v1_body(&[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text,
        r#"{"error":"Update pd info failed. Reset to previous node status.","error_type":"Service Unavailable"}"#
    );
    let (status, text) = post(&app, "/v2/role/prefill", &v2_body(&[])).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        text,
        r#"{"error":"Parse req json failed. Reset to previous node status.","error_type":"Service Unavailable"}"#
    );
    assert_eq!(role.view(), Default::default());
    assert_eq!(
        get_json(&app, "/v1/status").await["service"]["roleStatus"],
        "RoleUnknown"
    );
    // Once a role is taken, a post without peers is a diff that unlinks everything.
    let (status, _) = post(&app, "/v1/role/decode", &v1_body(&[7])).await;
    assert_eq!(status, StatusCode::OK);
    status_until(&app, "/v1/status", "RoleReady").await;
    let (status, _) = post(&app, "/v1/role/decode", &v1_body(&[])).await;
    assert_eq!(status, StatusCode::OK);
    let j = status_until(&app, "/v1/status", "RoleSwitching").await;
    assert_eq!(j["linkStatus"].to_string(), r#"{"peers":[]}"#);
}
