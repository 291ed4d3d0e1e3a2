//! Effective values: listeners, MindIE's implicit defaults, and each plane's TLS files.

use super::support::{accepted, default_doc, env, remove, set};
use crate::config::{Config, HttpSocket, Plane};
use crate::security::TlsFiles;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const HOME: &str = "/opt/mindie";

fn config(doc: &Value) -> Config {
    accepted(doc, &env(&[])).config
}

fn h(p: &str) -> PathBuf {
    Path::new(HOME).join(p)
}

fn tls(c: &Config, plane: Plane) -> Option<TlsFiles> {
    c.tls_files(plane, Path::new(HOME))
}

#[test]
fn business_tls_files() {
    let c = config(&default_doc());
    assert_eq!(
        tls(&c, Plane::Business),
        Some(TlsFiles {
            ca_files: vec![h("security/ca/ca.pem")],
            cert: h("security/certs/server.pem"),
            key: h("security/keys/server.key.pem"),
            key_password: Some(h("security/pass/key_pwd.txt")),
            crl_files: vec![h("security/certs/server_crl.pem")],
        })
    );
}

#[test]
fn management_tls_files_take_cas_from_tls_ca_path() {
    let c = config(&default_doc());
    let management = TlsFiles {
        ca_files: vec![h("security/ca/management_ca.pem")],
        cert: h("security/certs/management/server.pem"),
        key: h("security/keys/management/server.key.pem"),
        key_password: Some(h("security/pass/management/key_pwd.txt")),
        crl_files: vec![h("security/management/certs/server_crl.pem")],
    };
    assert_eq!(tls(&c, Plane::Management), Some(management.clone()));
    // No metricsTlsCert: metrics uses the management set.
    assert_eq!(tls(&c, Plane::Metrics), Some(management));
}

#[test]
fn metrics_tls_files_when_configured() {
    let mut doc = default_doc();
    set(
        &mut doc,
        "ServerConfig.metricsTlsCert",
        json!("security/certs/metrics/server.pem"),
    );
    set(
        &mut doc,
        "ServerConfig.metricsTlsPk",
        json!("/secure/metrics.key.pem"),
    );
    set(
        &mut doc,
        "ServerConfig.metricsTlsCaFile",
        json!(["metrics_ca.pem"]),
    );
    set(
        &mut doc,
        "ServerConfig.metricsTlsCrlPath",
        json!("security/metrics/certs/"),
    );
    set(
        &mut doc,
        "ServerConfig.metricsTlsCrlFiles",
        json!(["a.crl", "b.crl"]),
    );
    let c = config(&doc);
    assert_eq!(
        tls(&c, Plane::Metrics),
        Some(TlsFiles {
            ca_files: vec![h("security/ca/metrics_ca.pem")],
            cert: h("security/certs/metrics/server.pem"),
            key: PathBuf::from("/secure/metrics.key.pem"),
            key_password: None,
            crl_files: vec![
                h("security/metrics/certs/a.crl"),
                h("security/metrics/certs/b.crl")
            ],
        })
    );
}

#[test]
fn grpc_link_tls_files() {
    let c = config(&default_doc());
    assert_eq!(
        tls(&c, Plane::InterComm),
        Some(TlsFiles {
            ca_files: vec![h("security/grpc/ca/ca.pem")],
            cert: h("security/grpc/certs/server.pem"),
            key: h("security/grpc/keys/server.key.pem"),
            key_password: Some(h("security/grpc/pass/key_pwd.txt")),
            crl_files: vec![h("security/grpc/certs/server_crl.pem")],
        })
    );
    let node = tls(&c, Plane::InterNode).expect("inter-node TLS on");
    assert_eq!(node.key, h("security/grpc/keys/server.key.pem"));
    assert_eq!(
        node.key_password,
        Some(h("security/grpc/pass/mindie_server_key_pwd.txt"))
    );
}

#[test]
fn planes_without_tls_have_no_files() {
    let mut doc = default_doc();
    set(&mut doc, "ServerConfig.httpsEnabled", json!(false));
    set(&mut doc, "ServerConfig.interCommTLSEnabled", json!(false));
    let c = config(&doc);
    for plane in [
        Plane::Business,
        Plane::Management,
        Plane::Metrics,
        Plane::InterComm,
    ] {
        assert_eq!(tls(&c, plane), None, "{plane:?}");
    }
    assert!(
        tls(&c, Plane::InterNode).is_some(),
        "inter-node TLS is its own switch"
    );
    set(&mut doc, "BackendConfig.interNodeTLSEnabled", json!(false));
    assert_eq!(tls(&config(&doc), Plane::InterNode), None);
}

#[test]
fn shared_listeners_share_the_business_set() {
    let mut doc = default_doc();
    remove(&mut doc, "ServerConfig.managementIpAddress");
    remove(&mut doc, "ServerConfig.managementPort");
    set(&mut doc, "ServerConfig.tlsPkPwd", json!(""));
    let c = config(&doc);
    let business = tls(&c, Plane::Business).expect("https");
    assert_eq!(
        business.key_password, None,
        "empty password path: clear key"
    );
    assert_eq!(tls(&c, Plane::Management), Some(business.clone()));
    // Metrics has its own port here, and no metrics set: the management (= business) set.
    assert_eq!(tls(&c, Plane::Metrics), Some(business));
}

#[test]
fn http_sockets_group_planes_by_ip_and_port() {
    let c = config(&default_doc());
    let socket = |ip: &str, port, planes: Vec<Plane>| HttpSocket {
        ip: ip.into(),
        port,
        planes,
    };
    assert_eq!(
        c.server_config.http_sockets(),
        vec![
            socket("127.0.0.1", 1025, vec![Plane::Business]),
            socket("127.0.0.2", 1026, vec![Plane::Management]),
            socket("127.0.0.2", 1027, vec![Plane::Metrics]),
        ]
    );
    let mut doc = default_doc();
    set(
        &mut doc,
        "ServerConfig.managementIpAddress",
        json!("127.0.0.1"),
    );
    set(&mut doc, "ServerConfig.managementPort", json!(1025));
    let c = config(&doc);
    assert!(c.server_config.business_and_management_shared());
    assert!(!c.server_config.all_planes_shared());
    assert_eq!(
        c.server_config.http_sockets(),
        vec![
            socket("127.0.0.1", 1025, vec![Plane::Business, Plane::Management]),
            socket("127.0.0.1", 1027, vec![Plane::Metrics]),
        ]
    );
    set(&mut doc, "ServerConfig.metricsPort", json!(1025));
    let c = config(&doc);
    assert!(c.server_config.all_planes_shared());
    assert_eq!(
        c.server_config.http_sockets(),
        vec![socket(
            "127.0.0.1",
            1025,
            vec![Plane::Business, Plane::Management, Plane::Metrics]
        )]
    );
}

#[test]
fn mindie_implicit_defaults() {
    let mut doc = default_doc();
    let c = config(&doc);
    assert_eq!(c.effective_max_prefill_batch_size(), 50);
    assert_eq!(c.effective_max_input_token_len(), 2048);
    assert_eq!((c.token_timeout_secs(), c.e2e_timeout_secs()), (600, 600));

    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.maxPrefillBatchSize",
        json!(0),
    );
    set(
        &mut doc,
        "BackendConfig.ModelDeployConfig.maxSeqLen",
        json!(2048),
    );
    set(
        &mut doc,
        "BackendConfig.ScheduleConfig.maxIterTimes",
        json!(2048),
    );
    set(&mut doc, "EnableDynamicAdjustTimeoutConfig", json!(true));
    set(
        &mut doc,
        "ServerConfig.HealthCheckConfig",
        json!({"npuUsageThreshold": 10}),
    );
    let c = config(&doc);
    assert_eq!(
        c.effective_max_prefill_batch_size(),
        200,
        "0 means maxBatchSize"
    );
    assert_eq!(
        c.effective_max_input_token_len(),
        2047,
        "capped at maxSeqLen - 1"
    );
    assert_eq!(
        (c.token_timeout_secs(), c.e2e_timeout_secs()),
        (3600, 65535)
    );
    assert_eq!(c.server_config.npu_usage_threshold(), 10);
    assert_eq!(c.server_config.management_port(), 1026);
}
