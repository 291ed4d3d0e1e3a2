//! Health that tells the truth (SPEC §0.12) and the run-time log level, on the real binary:
//! a mock engine stalled through `MIES_MOCK_STALL_FILE` turns `/health`, readiness,
//! liveness, running-status and `/health/timed` unhealthy, and they recover when it resumes;
//! the log level follows `/v1/log-level` and config.json edits, and expires.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, send};
use common::daemon::{Daemon, Home};
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, up to `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let t0 = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stuck_engine_turns_health_unhealthy_and_recovers() {
    let home = Home::new();
    let stall = home.path().join("stall");
    let stall_env = stall.to_str().unwrap().to_string();
    let _d = home.start(&[
        ("MIES_MOCK_STALL_FILE", &stall_env),
        ("MIES_ENGINE_STALL_SECONDS", "1"),
    ]);
    let mgmt = home.mgmt();

    let r = get(mgmt, "/health/timed-5").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(mgmt, "/v2/health/ready").await.status, 200);

    // Stall the engine with a request in it.
    std::fs::write(&stall, b"").unwrap();
    let business = home.business();
    let request = tokio::spawn(async move {
        let body = r#"{"model":"mock-model","prompt":"hi","max_tokens":4}"#;
        send(business, None, "POST", "/v1/completions", Some(body)).await
    });

    let ready = eventually(Duration::from_secs(20), "readiness turns 500", || async {
        let r = get(mgmt, "/v2/health/ready").await;
        (r.status == 500).then_some(r)
    })
    .await;
    let msg = ready.json()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("stuck"), "{msg}");
    assert!(
        msg.contains("1 running") || msg.contains("1 waiting"),
        "{msg}"
    );
    assert_eq!(get(mgmt, "/health").await.status, 500);
    assert_eq!(get(mgmt, "/v2/health/live").await.status, 500);
    let rs = get(mgmt, "/v1/engine-server/running-status").await.json();
    assert_eq!(rs["status"], 2, "ABNORMAL: {rs}");
    assert_eq!(rs["errors"][0]["errCode"], "ENGINE_STALLED", "{rs}");
    assert!(rs["errors"][0]["timestamp"].as_u64().unwrap() > 0, "{rs}");
    assert_eq!(rs["errors"][0]["createdBy"], "engine", "{rs}");
    let st = get(mgmt, "/v1/status").await.json();
    assert_eq!(st["service"]["roleStatus"], "RoleUnknown", "{st}");
    assert_eq!(st["resource"]["runningRequestNum"], 1, "{st}");
    assert_eq!(get(mgmt, "/v2/models/mock-model/ready").await.status, 503);

    // The probe inference cannot finish while the engine is stuck.
    let t0 = Instant::now();
    let probe = get(mgmt, "/health/timed-1").await;
    assert_eq!(probe.status, 500, "{}", probe.text());
    let j = probe.json();
    assert_eq!(j["status"], "unhealthy");
    assert!(j["error"].as_str().unwrap().contains("within 1 s"), "{j}");
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the probe honours its deadline"
    );

    // Resume: the request finishes and health recovers.
    std::fs::remove_file(&stall).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("request finishes after the stall")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    eventually(Duration::from_secs(20), "readiness recovers", || async {
        (get(mgmt, "/v2/health/ready").await.status == 200).then_some(())
    })
    .await;
    assert_eq!(get(mgmt, "/health").await.status, 200);
    assert_eq!(get(mgmt, "/v2/health/live").await.status, 200);
    let r = get(mgmt, "/health/timed-5").await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually(Duration::from_secs(10), "running-status READY", || async {
        let rs = get(mgmt, "/v1/engine-server/running-status").await.json();
        (rs["status"] == 0 && rs["errors"] == json!([])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn stall_threshold_must_be_valid() {
    let home = Home::new();
    home.write();
    let (status, _out, err) = home.run_to_exit(&[], &[("MIES_ENGINE_STALL_SECONDS", "soon")]);
    assert!(!status.success());
    assert!(err.contains("MIES_ENGINE_STALL_SECONDS"), "{err}");
}

const PROBE_DEBUG_LINE: &str = "health probe inference finished";

/// Runs a probe and reports whether its debug line reached stdout.
async fn probe_logs_debug(home: &Home, d: &Daemon, expect: bool) {
    let before = d.stdout().matches(PROBE_DEBUG_LINE).count();
    assert_eq!(get(home.mgmt(), "/health/timed").await.status, 200);
    if expect {
        eventually(Duration::from_secs(5), "the debug line", || async {
            (d.stdout().matches(PROBE_DEBUG_LINE).count() > before).then_some(())
        })
        .await;
    } else {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            d.stdout().matches(PROBE_DEBUG_LINE).count(),
            before,
            "no debug line at the start level"
        );
    }
}

async fn post_level(home: &Home, body: &str) -> common::client::Reply {
    send(home.mgmt(), None, "POST", "/v1/log-level", Some(body))
        .await
        .expect("POST /v1/log-level")
}

#[tokio::test]
async fn log_level_route_changes_and_expires() {
    let home = Home::new();
    let d = home.start(&[]);
    let view = get(home.mgmt(), "/v1/log-level").await.json();
    assert_eq!(view["level"], "info", "{view}");
    assert_eq!(view["startLevel"], "info");
    assert_eq!(view["source"], "start");
    assert_eq!(view["expiresInSeconds"], Value::Null);
    probe_logs_debug(&home, &d, false).await;

    let r = post_level(&home, r#"{"level":"debug","validHours":1}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["level"], "debug");
    assert_eq!(v["source"], "route");
    let left = v["expiresInSeconds"].as_u64().unwrap();
    assert!((3500..=3600).contains(&left), "{v}");
    assert!(v["validUntil"].as_u64().unwrap() > 0);
    assert_eq!(
        get(home.mgmt(), "/v1/log-level").await.json()["level"],
        "debug"
    );
    probe_logs_debug(&home, &d, true).await;

    let r = send(home.mgmt(), None, "DELETE", "/v1/log-level", None)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["level"], "info");
    probe_logs_debug(&home, &d, false).await;

    for (body, needle) in [
        (r#"{"level":"verbose"}"#, "verbose"),
        (r#"{"level":"debug","validHours":0}"#, "validHours"),
        (r#"{"level":"debug","validHours":200}"#, "validHours"),
        (r#"{"validHours":1}"#, "level"),
        ("{", "body"),
    ] {
        let r = post_level(&home, body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        let j = r.json();
        assert_eq!(j["error_type"], "Input Validation Error", "{j}");
        assert!(j["error"].as_str().unwrap().contains(needle), "{body}: {j}");
    }

    // A level valid for ~1.8 s goes back to the start level by itself.
    let r = post_level(&home, r#"{"level":"warn","validHours":0.0005}"#).await;
    assert_eq!(r.json()["level"], "warn");
    eventually(Duration::from_secs(15), "the level expires", || async {
        let v = get(home.mgmt(), "/v1/log-level").await.json();
        (v["level"] == "info" && v["source"] == "start").then_some(())
    })
    .await;
}

#[tokio::test]
async fn log_level_follows_config_json() {
    let mut home = Home::new();
    let d = home.start(&[]);
    let before = std::fs::read(home.config_path()).unwrap();

    home.set("/LogConfig/dynamicLogLevel", "debug")
        .set("/LogConfig/dynamicLogLevelValidHours", 1);
    home.write();
    let v = eventually(Duration::from_secs(15), "config level applied", || async {
        let v = get(home.mgmt(), "/v1/log-level").await.json();
        (v["source"] == "config").then_some(v)
    })
    .await;
    assert_eq!(v["level"], "debug", "{v}");
    assert!(v["expiresInSeconds"].as_u64().unwrap() > 3500, "{v}");
    probe_logs_debug(&home, &d, true).await;

    // Emptying it returns to the start level; the daemon never wrote the file itself.
    home.set("/LogConfig/dynamicLogLevel", "");
    home.write();
    eventually(
        Duration::from_secs(15),
        "back to the start level",
        || async {
            let v = get(home.mgmt(), "/v1/log-level").await.json();
            (v["level"] == "info" && v["source"] == "start").then_some(())
        },
    )
    .await;
    let after: Value = serde_json::from_slice(&std::fs::read(home.config_path()).unwrap()).unwrap();
    assert_eq!(after, home.config);
    assert_ne!(before, std::fs::read(home.config_path()).unwrap());
}
