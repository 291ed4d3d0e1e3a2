//! The real binary's `check` subcommand on a multi-node config (`multiNodesInferEnabled`):
//! it loads the ranktable named by `RANK_TABLE_FILE`, places this node in it, and reports a
//! broken or too-open ranktable as errors.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

fn multi_node_home() -> Home {
    let mut home = Home::new();
    home.set("/ServerConfig/httpsEnabled", false)
        .set("/BackendConfig/multiNodesInferEnabled", true)
        .set("/BackendConfig/interNodeTLSEnabled", false);
    home.write();
    home
}

/// Two servers by IP, two devices each; rank 0 on the second server.
fn table() -> Value {
    json!({
        "status": "completed", "version": "1.0", "server_count": "2",
        "server_list": [
            {"server_id": "10.0.0.1", "device": [
                {"device_id": "0", "device_ip": "29.0.0.1", "rank_id": "2"},
                {"device_id": "1", "device_ip": "29.0.0.2", "rank_id": "3"}]},
            {"server_id": "10.0.0.2", "device": [
                {"device_id": "0", "device_ip": "29.0.1.1", "rank_id": "0"},
                {"device_id": "1", "device_ip": "29.0.1.2", "rank_id": "1"}]}]})
}

fn write_table(home: &Home, v: &Value, mode: u32) -> PathBuf {
    let p = home.path().join("ranktable.json");
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn check(home: &Home, table: &std::path::Path, host_ip: &str) -> (bool, String) {
    let (st, out, err) = home.run_to_exit(
        &["check"],
        &[
            ("RANK_TABLE_FILE", table.to_str().unwrap()),
            ("HOST_IP", host_ip),
        ],
    );
    (st.success(), format!("{out}{err}"))
}

/// The report lines about the ranktable file.
fn lines_about<'a>(out: &'a str, table: &std::path::Path) -> Vec<&'a str> {
    let name = table.display().to_string();
    out.lines().filter(|l| l.contains(&name)).collect()
}

#[test]
fn good_table_is_reported_ok_with_the_role() {
    let home = multi_node_home();
    let rt = write_table(&home, &table(), 0o640);
    let (ok, out) = check(&home, &rt, "10.0.0.1");
    assert!(ok, "{out}");
    assert!(out.contains("0 error(s)"), "{out}");
    // One line: the file rules are checked as part of loading it.
    let lines = lines_about(&out, &rt);
    assert_eq!(lines.len(), 1, "{out}");
    let rt_line = lines[0];
    assert!(rt_line.contains("ranktable valid"), "{rt_line}");
    assert!(rt_line.starts_with("[ok   ]"), "{rt_line}");
    assert!(rt_line.contains("world size 4"), "{rt_line}");
    assert!(rt_line.contains("slave 1 of 1"), "{rt_line}");
    assert!(rt_line.contains("10.0.0.2:1120"), "{rt_line}");

    let (ok, out) = check(&home, &rt, "10.0.0.2");
    assert!(ok, "{out}");
    assert!(out.contains("the master"), "{out}");

    // A node the table does not name is an error that lists the servers.
    let (ok, out) = check(&home, &rt, "10.0.0.9");
    assert!(!ok, "{out}");
    assert!(
        out.contains("[ERROR]") && out.contains("not in ranktable"),
        "{out}"
    );
    assert!(
        out.contains("10.0.0.1") && out.contains("10.0.0.2"),
        "{out}"
    );
}

#[test]
fn broken_table_names_each_problem() {
    let home = multi_node_home();
    let mut bad = table();
    bad["server_count"] = json!("3");
    bad["server_list"][0]["device"][1]["device_ip"] = json!("29.0.0.999");
    let rt = write_table(&home, &bad, 0o600);
    let (ok, out) = check(&home, &rt, "10.0.0.1");
    assert!(!ok, "{out}");
    assert!(out.contains("2 error(s)"), "{out}");
    for path in ["server_count", "server_list[0].device[1].device_ip"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("[ERROR]") && l.contains(&format!("ranktable: {path} ="))),
            "{path} not reported: {out}"
        );
    }
}

#[test]
fn too_open_table_is_refused_for_its_mode() {
    let home = multi_node_home();
    let rt = write_table(&home, &table(), 0o644);
    let (ok, out) = check(&home, &rt, "10.0.0.1");
    assert!(!ok, "{out}");
    let err = out
        .lines()
        .find(|l| l.starts_with("[ERROR]"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(err.contains("ranktable"), "{err}");
    assert!(err.contains("mode is 0644"), "{err}");
    assert!(err.contains("chmod 640"), "{err}");
    assert!(!out.contains("ranktable valid"), "{out}");
}

#[test]
fn single_node_warns_about_an_unreadable_rank_table_file() {
    let home = Home::new();
    home.write();
    let gone = home.path().join("no-such-ranktable.json");
    let (ok, out) = check(&home, &gone, "10.0.0.1");
    assert!(ok, "a warning only: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("[WARN ] RANK_TABLE_FILE") && l.contains("model library")),
        "{out}"
    );
}
