//! Environment overrides of the listening addresses, and where the config file and the
//! install home are found.

use super::support::{accepted, at, default_doc, env, problems, remove, set};
use crate::config::paths::{locate, resolve, resolve_in};
use crate::config::ConfigError;
use serde_json::json;
use std::path::{Path, PathBuf};

#[test]
fn container_ip_replaces_ip_address() {
    let c = accepted(&default_doc(), &env(&[("MIES_CONTAINER_IP", "10.1.2.3")])).config;
    assert_eq!(c.server_config.ip_address, "10.1.2.3");
    assert_eq!(c.server_config.management_ip(), "127.0.0.2");
}

#[test]
fn container_management_ip_wins_over_the_file() {
    let e = env(&[("MIES_CONTAINER_MANAGEMENT_IP", "10.1.2.4")]);
    let c = accepted(&default_doc(), &e).config;
    assert_eq!(c.server_config.management_ip(), "10.1.2.4");
    assert_eq!(c.server_config.metrics_ip(), "10.1.2.4");
    assert_eq!(c.server_config.ip_address, "127.0.0.1");
}

#[test]
fn management_falls_back_to_the_files_ip_address() {
    let mut doc = default_doc();
    remove(&mut doc, "ServerConfig.managementIpAddress");
    let c = accepted(&doc, &env(&[])).config;
    assert_eq!(c.server_config.management_ip(), "127.0.0.1");
    // As MindIE: the fallback is the file's ipAddress, not MIES_CONTAINER_IP.
    let c = accepted(&doc, &env(&[("MIES_CONTAINER_IP", "10.1.2.3")])).config;
    assert_eq!(c.server_config.ip_address, "10.1.2.3");
    assert_eq!(c.server_config.management_ip(), "127.0.0.1");
}

#[test]
fn overridden_addresses_are_validated_and_named() {
    let p = problems(&default_doc(), &env(&[("MIES_CONTAINER_IP", "0.0.0.0")]));
    assert_eq!(p.len(), 1, "{p:#?}");
    let ip = at(&p, "ServerConfig.ipAddress");
    assert_eq!(ip.value, "\"0.0.0.0\" (from MIES_CONTAINER_IP)");
    let p = problems(
        &default_doc(),
        &env(&[("MIES_CONTAINER_MANAGEMENT_IP", "mgmt.local")]),
    );
    let m = at(&p, "ServerConfig.managementIpAddress");
    assert_eq!(
        m.value,
        "\"mgmt.local\" (from MIES_CONTAINER_MANAGEMENT_IP)"
    );
    assert_eq!(m.allowed, "an IPv4 or IPv6 address");
}

#[test]
fn environment_can_make_planes_collide() {
    // Management moved onto the business address with the business port.
    let mut doc = default_doc();
    set(&mut doc, "ServerConfig.managementPort", json!(1025));
    set(&mut doc, "ServerConfig.metricsPort", json!(1025));
    let e = env(&[("MIES_CONTAINER_MANAGEMENT_IP", "127.0.0.1")]);
    // All three on 127.0.0.1:1025: one server, allowed.
    let c = accepted(&doc, &e).config;
    assert!(c.server_config.all_planes_shared());
    set(&mut doc, "ServerConfig.metricsPort", json!(1027));
    set(&mut doc, "ServerConfig.managementPort", json!(1027));
    let p = problems(&doc, &e);
    assert_eq!(at(&p, "ServerConfig.metricsPort").value, "1027");
}

/// A scratch folder laid out like an install: `bin/`, `conf/`, optional `__init__.py`.
fn install(with_init: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("bin")).expect("bin");
    if with_init {
        std::fs::write(dir.path().join("__init__.py"), "").expect("init");
    }
    let root = dir.path().canonicalize().expect("canonical");
    (dir, root)
}

#[test]
fn locate_precedence() {
    let (_exe_dir, exe_root) = install(false);
    let exe = exe_root.join("bin").join("mindieservice_daemon");
    let (_llm, llm_home) = install(true);
    let (_plain, plain) = install(false);
    let llm = llm_home.to_str().expect("utf-8");
    let plain_s = plain.to_str().expect("utf-8");

    // Nothing set: the binary's folder's parent.
    let l = locate(None, &env(&[]), &exe).expect("locate");
    assert_eq!(l.home, exe_root);
    assert_eq!(l.config, exe_root.join("conf/config.json"));

    // MIES_INSTALL_PATH beats the binary's location.
    let l = locate(None, &env(&[("MIES_INSTALL_PATH", plain_s)]), &exe).expect("locate");
    assert_eq!(l.home, plain);
    assert_eq!(l.config, plain.join("conf/config.json"));

    // MINDIE_LLM_HOME_PATH beats it, but only with __init__.py inside.
    let both = [
        ("MINDIE_LLM_HOME_PATH", llm),
        ("MIES_INSTALL_PATH", plain_s),
    ];
    let l = locate(None, &env(&both), &exe).expect("locate");
    assert_eq!(l.home, llm_home);
    assert_eq!(l.config, llm_home.join("conf/config.json"));
    let no_init = [
        ("MINDIE_LLM_HOME_PATH", plain_s),
        ("MIES_INSTALL_PATH", llm),
    ];
    let l = locate(None, &env(&no_init), &exe).expect("locate");
    assert_eq!(l.home, llm_home, "a home without __init__.py is skipped");

    // MIES_CONFIG_JSON_PATH names the file; the home is still found as above.
    let mut with_json = both.to_vec();
    with_json.push(("MIES_CONFIG_JSON_PATH", "/etc/mindie/config.json"));
    let l = locate(None, &env(&with_json), &exe).expect("locate");
    assert_eq!(l.config, PathBuf::from("/etc/mindie/config.json"));
    assert_eq!(l.home, llm_home);

    // --config-file beats everything.
    let cli = Path::new("my/config.json");
    let l = locate(Some(cli), &env(&with_json), &exe).expect("locate");
    assert_eq!(l.config, cli);
    assert_eq!(l.home, llm_home);
}

#[test]
fn locate_without_a_binary_folder_asks_for_the_install_path() {
    let e = locate(None, &env(&[]), Path::new("/")).expect_err("no parent");
    assert!(matches!(e, ConfigError::Home(_)), "{e:?}");
    let l = locate(
        None,
        &env(&[("MIES_INSTALL_PATH", "/opt/m")]),
        Path::new("/"),
    )
    .expect("ok");
    assert_eq!(l.home, PathBuf::from("/opt/m"));
}

#[test]
fn relative_paths_resolve_against_home() {
    let home = Path::new("/opt/mindie");
    assert_eq!(
        resolve(home, "security/certs/server.pem"),
        home.join("security/certs/server.pem")
    );
    assert_eq!(
        resolve(home, "/etc/ssl/server.pem"),
        PathBuf::from("/etc/ssl/server.pem")
    );
    assert_eq!(
        resolve_in(home, "security/ca/", "ca.pem"),
        home.join("security/ca/ca.pem")
    );
    assert_eq!(
        resolve_in(home, "security/ca", "ca.pem"),
        home.join("security/ca/ca.pem")
    );
    assert_eq!(
        resolve_in(home, "/etc/ca", "ca.pem"),
        PathBuf::from("/etc/ca/ca.pem")
    );
    assert_eq!(
        resolve_in(home, "security/ca", "/x/ca.pem"),
        PathBuf::from("/x/ca.pem")
    );
    assert_eq!(resolve_in(home, "", "ca.pem"), home.join("ca.pem"));
}
