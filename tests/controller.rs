//! The `controller` subcommand on real processes (SPEC-CLUSTER §1–2, §4; SPEC-PD §3.4): two
//! dmi daemons (127.0.0.1 and 127.0.0.3, StandardMock), a fake Coordinator that records the
//! refresh bodies, and the real Controller started from a working directory holding
//! `conf/ms_controller.json` and the global ranktable. Roles are assigned (one P, one D),
//! the refresh carries both with peers pointing at each other; a killed D leaves the list and
//! rejoins with its role after a restart; without TLS, SIGHUP is a logged no-op; SIGTERM stops
//! the Controller only; a restarted Controller recovers its decisions from the process file;
//! SIGUSR1 stops the cluster; bad files exit 1 naming the field. With TLS on its probe server,
//! SIGHUP rotates the probe's certificate for new connections.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::cluster::{rank_table, server_entry, ControllerHome, FakeCoordinator};
use common::pd::{send, status, Instance};
use common::pki::Pki;
use common::rotate::{
    fresh_get, good_client, issue, put, reload_report, serial_of, sighup_and_wait, Conn, Files,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn ids(v: &Value) -> Vec<u64> {
    let mut ids: Vec<u64> = v["ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

fn instance(v: &Value, id: u64) -> Value {
    v["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["id"] == json!(id)))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Both instances listed, P (id 0) and D (id 1) peers of each other.
fn pair_listed(v: &Value) -> bool {
    let (p, d) = (instance(v, 0), instance(v, 1));
    ids(v) == vec![0, 1]
        && p["static_info"]["role"] == json!(b'P')
        && d["static_info"]["role"] == json!(b'D')
        && p["dynamic_info"]["peers"] == json!([1])
        && d["dynamic_info"]["peers"] == json!([0])
}

async fn current_role(inst: &Instance) -> Value {
    status(inst).await["service"]["currentRole"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_assigns_roles_follows_failures_and_stops_the_cluster() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, None);
    let d = Instance::new(pki, "127.0.0.3", port, None);
    let (mut p_daemon, d_daemon) = (p.start(), d.start());
    let coord = FakeCoordinator::start().await;
    let home = ControllerHome::new(coord.port);
    home.write_config();
    home.write_rank_table(&rank_table(&[server_entry(&p), server_entry(&d)]));
    let mut ctl = home.start(&[]);
    let probe = std::net::SocketAddr::from(([127, 0, 0, 1], home.probe_port));
    for path in ["/v1/startup", "/v1/health"] {
        let r = send(probe, "GET", path, None, &[]).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.body.is_empty(), "{path}: {}", r.text());
    }

    // Roles: first in the ranktable is P (id 0), the second D (id 1); both linked.
    let t0 = Instant::now();
    let v = coord
        .refreshes
        .wait_for(t0, WAIT, "P and D listed", pair_listed)
        .await;
    let pi = instance(&v, 0);
    assert_eq!(pi["ip"], "127.0.0.1");
    assert_eq!(pi["port"], json!(p.home.port.to_string()));
    assert_eq!(pi["metric_port"], json!(p.home.metrics_port.to_string()));
    assert_eq!(pi["inter_comm_port"], json!(port.to_string()));
    assert_eq!(pi["model_name"], "mock-model");
    assert_eq!(pi["static_info"]["group_id"], 2);
    assert!(
        pi["static_info"]["block_size"].as_u64().unwrap() >= 1,
        "{pi}"
    );
    assert_eq!(instance(&v, 1)["ip"], "127.0.0.3");
    assert_eq!(current_role(&p).await, "prefill");
    assert_eq!(current_role(&d).await, "decode");
    let decided =
        std::fs::read_to_string(home.path().join("logs/controller_process_status.json")).unwrap();
    assert!(
        decided.contains("prefill") && decided.contains("decode"),
        "{decided}"
    );

    // The D dies: within seconds a refresh without it (its P has no linked peer left either).
    drop(d_daemon);
    let killed = Instant::now();
    let v = coord
        .refreshes
        .wait_for(killed, Duration::from_secs(10), "D left out", |v| {
            !ids(v).contains(&1)
        })
        .await;
    assert!(instance(&v, 1).is_null(), "{v}");

    // The D comes back without a role: it gets decode again, with P as its peer.
    let d_daemon = d.start();
    let back = Instant::now();
    let v = coord
        .refreshes
        .wait_for(back, WAIT, "D rejoins", pair_listed)
        .await;
    assert_eq!(instance(&v, 1)["dynamic_info"]["peers"], json!([0]));
    assert_eq!(current_role(&d).await, "decode");

    // SIGHUP (a fleet-wide certificate rotation) without TLS: logged, and it goes on.
    ctl.signal(Signal::SIGHUP);
    ctl.wait_for("nothing to reload", Duration::from_secs(10));
    assert!(
        ctl.wait_exit(Duration::from_millis(300)).is_none(),
        "{}",
        ctl.output()
    );

    // SIGTERM stops the Controller only.
    ctl.signal(Signal::SIGTERM);
    let st = ctl
        .wait_exit(Duration::from_secs(10))
        .expect("controller exits on SIGTERM");
    assert!(st.success(), "{st}\n{}", ctl.output());
    assert_eq!(current_role(&p).await, "prefill", "servers keep running");
    assert_eq!(current_role(&d).await, "decode");

    // A new Controller recovers the decisions (same ids and roles) and lists the pair.
    let mut ctl = home.start(&[]);
    let again = Instant::now();
    coord
        .refreshes
        .wait_for(again, WAIT, "pair listed after restart", pair_listed)
        .await;
    assert!(ctl.output().contains("recovered"), "{}", ctl.output());

    // SIGUSR1: stop the cluster (both servers get /stopService?mode=Force), then exit 0.
    ctl.signal(Signal::SIGUSR1);
    let st = ctl
        .wait_exit(Duration::from_secs(10))
        .expect("controller exits on SIGUSR1");
    assert!(st.success(), "{st}\n{}", ctl.output());
    assert!(
        p_daemon.wait_exit(Duration::from_secs(15)).is_some(),
        "P still running"
    );
    let mut d_daemon = d_daemon;
    assert!(
        d_daemon.wait_exit(Duration::from_secs(15)).is_some(),
        "D still running"
    );
}

#[test]
fn bad_files_exit_1_naming_the_field() {
    let home = ControllerHome::new(common::daemon::free_port());
    let good_table = rank_table(&[
        json!({"server_ip": "127.0.0.1", "mgmt_port": "2026"}),
        json!({"server_ip": "127.0.0.3", "mgmt_port": "2026"}),
    ]);
    home.write_rank_table(&good_table);

    let mut cfg = home.config.clone();
    cfg["default_p_rate"] = json!(20);
    std::fs::write(home.config_path(), cfg.to_string()).unwrap();
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let (st, out) = home.run_to_exit(&[]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("default_p_rate"), "{out}");

    cfg["default_p_rate"] = json!(800);
    cfg["default_d_rate"] = json!(1);
    std::fs::write(home.config_path(), cfg.to_string()).unwrap();
    let (st, out) = home.run_to_exit(&[]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(
        out.contains("default_p_rate") && out.contains("767"),
        "{out}"
    );

    // The environment's rates are checked like the file's.
    home.write_config();
    let (st, out) = home.run_to_exit(&[("MINDIE_MS_P_RATE", "3")]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("default_p_rate/default_d_rate"), "{out}");

    // A bad IP in the ranktable.
    home.write_rank_table(&rank_table(&[json!({"server_ip": "127.0.0.300"})]));
    let (st, out) = home.run_to_exit(&[]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(
        out.contains("server_list[0].server_ip") && out.contains("127.0.0.300"),
        "{out}"
    );
    home.write_rank_table(&good_table);

    // A bad POD_IP.
    let (st, out) = home.run_to_exit(&[("POD_IP", "pod")]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("POD_IP"), "{out}");

    // A group-writable config (0660) is refused; with the check off it is accepted.
    std::fs::set_permissions(home.config_path(), std::fs::Permissions::from_mode(0o660)).unwrap();
    let (st, out) = home.run_to_exit(&[]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("ms_controller.json"), "{out}");
    let mut ctl = home.start(&[("MINDIE_CHECK_INPUTFILES_PERMISSION", "0")]);
    ctl.signal(Signal::SIGTERM);
    assert!(
        ctl.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        ctl.output()
    );

    // The config file from the environment variable; a missing one is named.
    let (st, out) = home.run_to_exit(&[(
        "MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH",
        "/nonexistent/ms_controller.json",
    )]);
    assert_eq!(st.code(), Some(1), "{out}");
    assert!(out.contains("/nonexistent/ms_controller.json"), "{out}");
}

/// The probe server with mutual TLS on copies of the PKI's files: after a new certificate is
/// installed and SIGHUP sent, new connections get it; an open connection keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rotates_the_probe_certificate() {
    let pki = Pki::shared();
    let mut home = ControllerHome::new(common::daemon::free_port());
    let files = Files::copy_in(pki, &home.path().join("tls"));
    home.config["tls_config"]["http_server_tls_enable"] = json!(true);
    home.config["tls_config"]["http_server_tls_items"] = files.motor_item();
    home.write_config();
    home.write_rank_table(&rank_table(&[
        json!({"server_ip": "127.0.0.1", "mgmt_port": common::daemon::free_port().to_string()}),
        json!({"server_ip": "127.0.0.3", "mgmt_port": common::daemon::free_port().to_string()}),
    ]));
    let mut ctl = home.start(&[]);
    let probe = std::net::SocketAddr::from(([127, 0, 0, 1], home.probe_port));
    let serial_a = serial_of(&pki.server_cert);
    let mut kept = Conn::open(probe, good_client(pki)).await.unwrap();
    assert_eq!(kept.server_serial, serial_a);
    assert_eq!(kept.get("/v1/health").await.unwrap(), 200);

    let (cert_b, key_b) = issue(pki, &files.dir, "server-b", "server_ext");
    let serial_b = serial_of(&cert_b);
    assert_ne!(serial_a, serial_b);
    put(&key_b, &files.key, 0o600);
    put(&cert_b, &files.cert, 0o640);
    let out = sighup_and_wait(&mut ctl, 1);
    let report = reload_report(&out, 1);
    assert!(
        report.contains("TLS material reloaded: tls_config.http_server"),
        "{report}"
    );
    assert!(
        report.contains("every plane uses the new material"),
        "{report}"
    );
    let (serial, status) = fresh_get(probe, good_client(pki), "/v1/startup")
        .await
        .unwrap();
    assert_eq!((serial, status), (serial_b, 200));
    assert_eq!(kept.get("/v1/health").await.unwrap(), 200);
    assert_eq!(kept.server_serial, serial_a);
    ctl.signal(Signal::SIGTERM);
    assert!(
        ctl.wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "{}",
        ctl.output()
    );
}
