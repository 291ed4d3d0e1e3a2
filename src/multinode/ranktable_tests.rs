//! Unit tests of [`super`]: good tables, every kind of broken table (refused with its JSON
//! path), several problems at once, file rules, locating this node and the master.

use super::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

fn dev(id: u32, ip: &str, rank: u32) -> Value {
    json!({"device_id": id.to_string(), "device_ip": ip, "rank_id": rank.to_string()})
}

/// Two servers by IP server_id, two devices each, ranks 0..3.
fn two() -> Value {
    json!({
        "status": "completed", "version": "1.0", "server_count": "2",
        "server_list": [
            {"server_id": "10.0.0.1",
             "device": [dev(0, "29.0.0.1", 0), dev(1, "29.0.0.2", 1)]},
            {"server_id": "10.0.0.2",
             "device": [dev(0, "29.0.1.1", 2), dev(1, "29.0.1.2", 3)]}]})
}

/// Three servers named by hostnames, addressed by container_ip; numbers instead of strings;
/// rank 0 on the second server.
fn three() -> Value {
    json!({
        "server_count": 3,
        "server_list": [
            {"server_id": "node-a", "container_ip": "172.17.0.2",
             "device": [{"device_id": 4, "device_ip": "29.0.0.1", "rank_id": 2},
                        {"device_id": 5, "device_ip": "29.0.0.2", "rank_id": 3}]},
            {"server_id": "node-b", "container_ip": "172.17.0.3",
             "device": [{"device_id": 0, "device_ip": "29.0.1.1", "rank_id": 0},
                        {"device_id": 1, "device_ip": "29.0.1.2", "rank_id": 1}]},
            {"server_id": "node-c", "container_ip": "172.17.0.4", "extra": "ignored",
             "device": [{"device_id": 0, "device_ip": "29.0.2.1", "rank_id": 4}]}]})
}

fn ok(v: &Value) -> RankTable {
    parse(&v.to_string()).unwrap_or_else(|p| panic!("refused: {p:?}"))
}

fn problems(v: &Value) -> Vec<Problem> {
    match parse(&v.to_string()) {
        Ok(t) => panic!("accepted: {t:?}"),
        Err(p) => p,
    }
}

/// The one problem of `v`, which must be at `path`.
fn one_at(v: &Value, path: &str) -> Problem {
    let p = problems(v);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].path, path, "{p:#?}");
    p[0].clone()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn good_two_server_table() {
    let t = ok(&two());
    assert_eq!(t.servers.len(), 2);
    assert_eq!(t.servers[0].server_id, "10.0.0.1");
    assert_eq!(t.servers[0].container_ip, None);
    assert_eq!(t.servers[0].addr(), ip("10.0.0.1"));
    assert_eq!(
        t.servers[1].devices[1],
        RankDevice {
            device_id: 1,
            device_ip: ip("29.0.1.2"),
            rank_id: 3
        }
    );
    assert_eq!(t.servers[1].min_rank(), 2);
}

#[test]
fn good_three_server_table_with_numbers_and_container_ips() {
    let t = ok(&three());
    assert_eq!(t.servers.len(), 3);
    assert_eq!(t.servers[0].addr(), ip("172.17.0.2"));
    assert_eq!(t.servers[2].devices.len(), 1);
    // No status/version at all is fine; a BOM is skipped.
    let text = format!("\u{feff}{}", three());
    assert!(parse(&text).is_ok());
}

#[test]
fn server_count_mismatch_and_range() {
    let mut v = two();
    v["server_count"] = json!("3");
    let p = one_at(&v, "server_count");
    assert!(p.rule.contains("(2)"), "{p}");
    assert_eq!(p.value, "\"3\"");

    let mut v = two();
    v["server_count"] = json!(61);
    let p = one_at(&v, "server_count");
    assert!(p.rule.contains("[2, 60]"), "{p}");

    let mut v = two();
    v["server_list"] = json!([two()["server_list"][0]]);
    v["server_count"] = json!("1");
    one_at(&v, "server_count");

    let mut v = two();
    v.as_object_mut().expect("obj").remove("server_count");
    assert_eq!(one_at(&v, "server_count").value, "(absent)");

    let mut v = two();
    v["server_count"] = json!("two");
    one_at(&v, "server_count");
}

#[test]
fn empty_or_missing_server_list() {
    let mut v = two();
    v["server_list"] = json!([]);
    one_at(&v, "server_list");
    let mut v = two();
    v["server_list"] = json!({"a": 1});
    one_at(&v, "server_list");
    let mut v = two();
    v["server_list"][1]["device"] = json!([]);
    let p = problems(&v);
    assert!(
        p.iter().any(|p| p.path == "server_list[1].device"),
        "{p:#?}"
    );
    let mut v = two();
    v["server_list"][0] = json!("10.0.0.1");
    let p = problems(&v);
    assert!(p.iter().any(|p| p.path == "server_list[0]"), "{p:#?}");
}

#[test]
fn duplicate_rank_refused() {
    let mut v = two();
    v["server_list"][1]["device"][1]["rank_id"] = json!("2");
    let p = problems(&v);
    let dup = p
        .iter()
        .find(|p| p.path == "server_list[1].device[1].rank_id")
        .unwrap_or_else(|| panic!("{p:#?}"));
    assert!(
        dup.rule.contains("server_list[1].device[0].rank_id"),
        "{dup}"
    );
    // And rank 3 is now missing.
    let gap = p
        .iter()
        .find(|p| p.path == "server_list[*].device[*].rank_id")
        .unwrap_or_else(|| panic!("{p:#?}"));
    assert!(gap.value.contains('3'), "{gap}");
    assert_eq!(p.len(), 2, "{p:#?}");
}

#[test]
fn gap_in_ranks_refused() {
    let mut v = two();
    v["server_list"][1]["device"][0]["rank_id"] = json!("4");
    v["server_list"][1]["device"][1]["rank_id"] = json!("5");
    let p = problems(&v);
    // 4 and 5 are beyond the last rank 3; 2 and 3 are missing.
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "server_list[1].device[0].rank_id",
            "server_list[1].device[1].rank_id",
            "server_list[*].device[*].rank_id"
        ],
        "{p:#?}"
    );
    assert!(p[2].value.contains("2..=3"), "{}", p[2]);
    assert!(p[0].rule.contains("0..=3"), "{}", p[0]);
}

#[test]
fn rank_out_of_range_refused() {
    let mut v = two();
    v["server_list"][0]["device"][1]["rank_id"] = json!(512);
    let p = one_at(&v, "server_list[0].device[1].rank_id");
    assert!(p.rule.contains("[0, 511]"), "{p}");
    let mut v = two();
    v["server_list"][0]["device"][1]["rank_id"] = json!("-1");
    one_at(&v, "server_list[0].device[1].rank_id");
}

#[test]
fn bad_device_ip_refused() {
    let mut v = two();
    v["server_list"][1]["device"][0]["device_ip"] = json!("29.0.1.300");
    let p = one_at(&v, "server_list[1].device[0].device_ip");
    assert_eq!(p.value, "\"29.0.1.300\"");
    let mut v = two();
    v["server_list"][1]["device"][0]
        .as_object_mut()
        .expect("obj")
        .remove("device_ip");
    one_at(&v, "server_list[1].device[0].device_ip");
}

#[test]
fn bad_container_ip_refused() {
    let mut v = three();
    v["server_list"][2]["container_ip"] = json!("node-c.local");
    let p = one_at(&v, "server_list[2].container_ip");
    assert!(p.rule.contains("IP"), "{p}");
}

#[test]
fn server_id_must_be_an_ip_without_container_ip() {
    let mut v = three();
    v["server_list"][0]
        .as_object_mut()
        .expect("obj")
        .remove("container_ip");
    let p = one_at(&v, "server_list[0].server_id");
    assert!(p.rule.contains("container_ip is absent"), "{p}");
    let mut v = two();
    v["server_list"][1]["server_id"] = json!("");
    one_at(&v, "server_list[1].server_id");
}

#[test]
fn device_id_out_of_range_or_repeated() {
    let mut v = two();
    v["server_list"][0]["device"][0]["device_id"] = json!("64");
    let p = one_at(&v, "server_list[0].device[0].device_id");
    assert!(p.rule.contains("[0, 63]"), "{p}");
    // The same device_id on two servers is fine, twice in one server is not.
    let mut v = two();
    v["server_list"][0]["device"][1]["device_id"] = json!("0");
    let p = one_at(&v, "server_list[0].device[1].device_id");
    assert!(p.rule.contains("server_list[0].device[0].device_id"), "{p}");
}

#[test]
fn duplicate_address_refused() {
    let mut v = three();
    v["server_list"][2]["container_ip"] = json!("172.17.0.2");
    let p = one_at(&v, "server_list[2].container_ip");
    assert!(p.rule.contains("server_list[0]"), "{p}");
    // A container_ip equal to another server's IP server_id clashes too.
    let mut v = two();
    v["server_list"][1]["container_ip"] = json!("10.0.0.1");
    one_at(&v, "server_list[1].container_ip");
}

#[test]
fn wrong_status_refused_version_ignored() {
    let mut v = two();
    v["status"] = json!("initializing");
    let p = one_at(&v, "status");
    assert!(p.rule.contains("completed"), "{p}");
    let mut v = two();
    v["version"] = json!(["anything"]);
    ok(&v);
}

#[test]
fn non_object_refused() {
    for doc in [json!([1, 2]), json!("table"), json!(null)] {
        let p = one_at(&doc, "(root)");
        assert!(p.rule.contains("object"), "{p}");
    }
    let p = parse("{\"server_count\": ").expect_err("not JSON");
    assert_eq!(p.len(), 1);
    assert!(p[0].rule.contains("valid JSON"), "{}", p[0]);
}

#[test]
fn several_problems_at_once() {
    let mut v = two();
    v["status"] = json!("done");
    v["server_count"] = json!("5");
    v["server_list"][0]["device"][0]["device_ip"] = json!("nope");
    v["server_list"][1]["device"][1]["device_id"] = json!(99);
    v["server_list"][1]["server_id"] = json!("host-b");
    let p = problems(&v);
    let paths: Vec<&str> = p.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "status",
        "server_count",
        "server_list[0].device[0].device_ip",
        "server_list[1].device[1].device_id",
        "server_list[1].server_id",
    ] {
        assert!(paths.contains(&want), "{want} not in {paths:?}");
    }
    assert_eq!(p.len(), 5, "{p:#?}");
    // The error lists every problem, one per line, with the file.
    let e = RankTableError::Invalid {
        file: "/etc/rt.json".into(),
        problems: p,
    };
    let text = e.to_string();
    assert!(text.contains("/etc/rt.json"), "{text}");
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(
        text.contains("server_list[0].device[0].device_ip = \"nope\": "),
        "{text}"
    );
}

#[test]
fn locate_by_container_ip() {
    let e = env(&[(CONTAINER_IP_ENV, "172.17.0.4"), (HOST_IP_ENV, "10.9.9.9")]);
    let p = locate(ok(&three()), &e).expect("located");
    assert_eq!(p.local, 2);
    assert!(!p.is_master());
    assert_eq!(p.local_addr(), ip("172.17.0.4"));
    assert_eq!(p.local_device_ids(), vec![0]);
    assert_eq!(p.world_size(), 5);
}

#[test]
fn locate_by_host_ip() {
    let p = locate(ok(&two()), &env(&[(HOST_IP_ENV, "10.0.0.2")])).expect("located");
    assert_eq!(p.local, 1);
    assert_eq!(p.master, 0);
    assert!(!p.is_master());
    assert_eq!(p.master_addr(), ip("10.0.0.1"));
    assert_eq!(p.slaves(), vec![1]);
    assert_eq!(p.local_device_ids(), vec![0, 1]);
    // A MIES_CONTAINER_IP that matches no container_ip falls back to HOST_IP; IPv6 compares
    // as addresses, not strings.
    let mut v = two();
    v["server_list"][0]["server_id"] = json!("fd00::1");
    let e = env(&[(CONTAINER_IP_ENV, "172.1.1.1"), (HOST_IP_ENV, "fd00:0::1")]);
    let p = locate(ok(&v), &e).expect("located");
    assert_eq!(p.local, 0);
    assert!(p.is_master());
    // Hostname server_ids compare as strings.
    let mut v = three();
    v["server_list"][0]["server_id"] = json!("node-x");
    let p = locate(ok(&v), &env(&[(HOST_IP_ENV, "node-x")])).expect("located");
    assert_eq!(p.local, 0);
}

#[test]
fn not_found_lists_the_servers() {
    let e = env(&[(RANK_TABLE_ENV, "/etc/rt.json"), (HOST_IP_ENV, "10.0.0.7")]);
    let err = locate(ok(&two()), &e).expect_err("not found");
    let RankTableError::NotFound {
        file,
        ip_env,
        ip,
        servers,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(file, "/etc/rt.json");
    assert_eq!(ip_env, HOST_IP_ENV);
    assert_eq!(ip, "10.0.0.7");
    assert_eq!(servers.len(), 2);
    let text = err.to_string();
    assert!(
        text.contains("10.0.0.1") && text.contains("10.0.0.2"),
        "{text}"
    );
    // Neither variable set.
    let err = locate(ok(&three()), &env(&[])).expect_err("not found");
    let text = err.to_string();
    assert!(text.contains("(unset)"), "{text}");
    assert!(text.contains("container_ip 172.17.0.3"), "{text}");
}

#[test]
fn ambiguous_host_ip_refused() {
    let mut v = three();
    v["server_list"][0]["server_id"] = json!("10.1.1.1");
    v["server_list"][1]["server_id"] = json!("10.1.1.1");
    let err = locate(ok(&v), &env(&[(HOST_IP_ENV, "10.1.1.1")])).expect_err("ambiguous");
    assert!(matches!(err, RankTableError::Ambiguous { .. }), "{err}");
    assert!(err.to_string().contains(CONTAINER_IP_ENV), "{err}");
}

#[test]
fn master_is_the_holder_of_rank_zero() {
    // three(): rank 0 is on server_list[1].
    let e = env(&[(CONTAINER_IP_ENV, "172.17.0.3")]);
    let p = locate(ok(&three()), &e).expect("located");
    assert_eq!(p.master, 1);
    assert!(p.is_master());
    assert_eq!(p.master_addr(), ip("172.17.0.3"));
    // Slaves in rank order: server 0 (ranks 2, 3), then server 2 (rank 4).
    assert_eq!(p.slaves(), vec![0, 2]);
    // The server listed first holds ranks 4.. here: slaves still come in rank order.
    let mut v = three();
    v["server_list"][0]["device"][0]["rank_id"] = json!(4);
    v["server_list"][2]["device"][0]["rank_id"] = json!(2);
    let p = locate(ok(&v), &e).expect("located");
    assert_eq!(p.slaves(), vec![2, 0]);
    assert_eq!(p.local_device_ids(), vec![0, 1]);
    // Device ids come in rank order, not file order.
    let mut v = three();
    v["server_list"][1]["device"][0]["rank_id"] = json!(1);
    v["server_list"][1]["device"][1]["rank_id"] = json!(0);
    let p = locate(ok(&v), &e).expect("located");
    assert_eq!(p.local_device_ids(), vec![1, 0]);
}

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

#[test]
fn load_applies_file_rules_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "rt.json", &two().to_string(), 0o640);
    let mut checker = PermChecker::new(true);
    assert_eq!(load(&good, &mut checker).expect("loads").servers.len(), 2);

    let open = write(dir.path(), "open.json", &two().to_string(), 0o644);
    let err = load(&open, &mut checker).expect_err("mode");
    assert!(matches!(err, RankTableError::Perm(_)), "{err}");
    assert!(err.to_string().contains("mode is 0644"), "{err}");
    assert!(err.to_string().contains("ranktable"), "{err}");
    // With the off switch it is only a warning.
    let mut lax = PermChecker::new(false);
    load(&open, &mut lax).expect("waived");
    assert_eq!(lax.warnings.len(), 1);

    let link = dir.path().join("link.json");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let err = load(&link, &mut checker).expect_err("symlink");
    assert!(err.to_string().contains("symlink"), "{err}");

    let empty = write(dir.path(), "empty.json", "", 0o600);
    let err = load(&empty, &mut checker).expect_err("empty");
    assert!(matches!(err, RankTableError::Read { .. }), "{err}");
    assert!(err.to_string().contains("(0, 10 MB]"), "{err}");

    let big = " ".repeat(MAX_RANKTABLE_BYTES as usize + 1);
    let big = write(dir.path(), "big.json", &big, 0o600);
    let err = load(&big, &mut checker).expect_err("big");
    assert!(err.to_string().contains("(0, 10 MB]"), "{err}");

    let mut bad = two();
    bad["server_list"][1]["device"][0]["rank_id"] = json!("9");
    let bad = write(dir.path(), "bad.json", &bad.to_string(), 0o600);
    let err = load(&bad, &mut checker).expect_err("invalid");
    let text = err.to_string();
    assert!(text.contains(&bad.display().to_string()), "{text}");
    assert!(text.contains("server_list[1].device[0].rank_id"), "{text}");

    let err = load(&dir.path().join("none.json"), &mut checker).expect_err("missing");
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn from_env_loads_and_locates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "rt.json", &three().to_string(), 0o600);
    let path = p.to_str().expect("utf8");
    let mut checker = PermChecker::new(true);
    let e = env(&[(RANK_TABLE_ENV, path), (CONTAINER_IP_ENV, "172.17.0.2")]);
    let placed = from_env(&e, &mut checker).expect("placed");
    assert_eq!((placed.local, placed.master), (0, 1));
    let err = from_env(&env(&[]), &mut checker).expect_err("missing");
    assert!(matches!(err, RankTableError::Missing { .. }), "{err}");
    assert!(err.to_string().contains(RANK_TABLE_ENV), "{err}");
}

#[test]
fn warn_if_unused_only_for_unreadable_files() {
    assert_eq!(warn_if_unused(&env(&[])), None);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "rt.json", &two().to_string(), 0o600);
    let readable = env(&[(RANK_TABLE_ENV, p.to_str().expect("utf8"))]);
    assert_eq!(warn_if_unused(&readable), None);

    let gone = dir.path().join("gone.json");
    let w =
        warn_if_unused(&env(&[(RANK_TABLE_ENV, gone.to_str().expect("utf8"))])).expect("warned");
    assert!(w.contains("gone.json"), "{w}");
    assert!(w.contains("model library"), "{w}");
    let folder = env(&[(RANK_TABLE_ENV, dir.path().to_str().expect("utf8"))]);
    let w = warn_if_unused(&folder).expect("warned");
    assert!(w.contains("not a regular file"), "{w}");
}

#[test]
fn ranges_compress() {
    assert_eq!(ranges(&[1, 3, 4, 5, 7, 9, 10]), "1, 3..=5, 7, 9..=10");
    assert_eq!(ranges(&[]), "");
}
