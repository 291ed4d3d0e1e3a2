//! Life cycle of the real binary: SIGTERM drains and exits 0, `/stopService` graceful and
//! Force, port conflicts fail the start with ip:port named, env address overrides.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{finish_slow_request, get, slow_request};
use common::daemon::Home;
use nix::sys::signal::Signal;
use std::net::TcpStream;
use std::time::Duration;

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let home = Home::new();
    let mut d = home.start(&[]);
    let inflight = slow_request(home.business());
    tokio::time::sleep(Duration::from_millis(300)).await;

    d.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        d.wait_exit(Duration::from_millis(10)).is_none(),
        "must wait for the in-flight request"
    );
    let ready = get(home.mgmt(), "/v2/health/ready").await;
    assert_eq!(ready.status, 503, "not ready while draining");
    assert!(ready.text().contains("stopping"), "{}", ready.text());
    let refused = get(home.business(), "/v1/models").await;
    assert_eq!(refused.status, 503, "new work refused while draining");

    let reply = finish_slow_request(inflight);
    assert!(
        reply.starts_with("HTTP/1.1 404"),
        "in-flight request still answered: {reply}"
    );
    let status = d
        .wait_exit(Duration::from_secs(15))
        .expect("daemon exits after draining");
    assert!(status.success(), "exit status {status}\n{}", d.stdout());
}

#[tokio::test]
async fn stop_service_graceful_and_force() {
    let home = Home::new();
    let mut d = home.start(&[]);
    let r = get(home.mgmt(), "/stopService").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("stopped"), "{}", r.text());
    let st = d
        .wait_exit(Duration::from_secs(15))
        .expect("exits after /stopService");
    assert!(st.success());

    let home = Home::new();
    let mut d = home.start(&[]);
    let _held = slow_request(home.business());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = get(home.mgmt(), "/stopService?mode=Force").await;
    assert_eq!(r.status, 200);
    let st = d
        .wait_exit(Duration::from_secs(15))
        .expect("Force does not wait for in-flight requests");
    assert!(st.success());

    let home = Home::new();
    let _d = home.start(&[]);
    let bad = get(home.mgmt(), "/stopService?mode=Later").await;
    assert_eq!(bad.status, 422);
    assert_eq!(
        get(home.mgmt(), "/v2/health/live").await.status,
        200,
        "bad mode does not stop"
    );
}

/// A fresh home whose port (`addr` of it) this test holds. A port picked free can be taken
/// by a parallel test before the bind, so a few homes are tried.
fn home_holding(addr: fn(&Home) -> std::net::SocketAddr) -> (Home, std::net::TcpListener) {
    let mut last = None;
    for _ in 0..20 {
        let home = Home::new();
        match std::net::TcpListener::bind(addr(&home)) {
            Ok(l) => return (home, l),
            Err(e) => last = Some(e),
        }
    }
    panic!("no free port to hold: {last:?}");
}

#[test]
fn port_conflict_fails_the_start_naming_ip_port() {
    let (home, _holder) = home_holding(Home::business);
    home.write();
    let (st, _out, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    let want = format!("127.0.0.1:{}", home.port);
    assert!(
        err.contains(&want) && err.contains("business"),
        "stderr: {err}"
    );
    assert!(
        err.lines().filter(|l| !l.trim().is_empty()).count() <= 2,
        "short message: {err}"
    );

    let (home, _holder) = home_holding(Home::metrics);
    home.write();
    let (st, _, err) = home.run_to_exit(&[], &[]);
    assert!(!st.success());
    assert!(
        err.contains(&format!("127.0.0.1:{}", home.metrics_port)) && err.contains("metrics"),
        "{err}"
    );
}

#[tokio::test]
async fn container_ip_env_overrides_addresses() {
    let mut home = Home::new();
    home.set("/ServerConfig/managementIpAddress", "127.0.0.1");
    let _d = home.start(&[
        ("MIES_CONTAINER_IP", "127.0.0.7"),
        ("MIES_CONTAINER_MANAGEMENT_IP", "127.0.0.8"),
    ]);
    let business = std::net::SocketAddr::from(([127, 0, 0, 7], home.port));
    let mgmt = std::net::SocketAddr::from(([127, 0, 0, 8], home.mgmt_port));
    assert_eq!(get(business, "/v1/models").await.status, 200);
    assert_eq!(get(mgmt, "/v1/config").await.status, 200);
    assert!(
        TcpStream::connect(home.business()).is_err(),
        "not on the config's address"
    );
}
