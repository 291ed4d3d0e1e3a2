//! Multi-node inference with real processes on loopback "machines" (127.0.0.1 master,
//! 127.0.0.3 and 127.0.0.4 slaves): one model split by layers, parity with the HF references
//! through the OpenAI API (one request at a time and all at once), each node holding only its
//! share; the slave refuses users; mutual TLS with CRLs on the interNode link (revoked and
//! foreign certificates refused); broken ranktables refused with their JSON paths; a slave
//! that stops answering or dies makes the master unready and fails requests fast, and a
//! slave that comes back makes it ready again with the same answers; SIGTERM on the master
//! stops the slaves.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::client::{get, post_json as post, send};
use common::daemon::Daemon;
use common::install::{readme_block, Install};
use common::multinode::{ranktable, write_0640, MultiNode};
use common::parity::{api_parity, case_request, check_reply, refs};
use common::pki::Pki;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MASTER: &str = "127.0.0.1";
const SLAVE: &str = "127.0.0.3";
const SLAVE2: &str = "127.0.0.4";

async fn status(addr: SocketAddr) -> Value {
    get(addr, "/v1/status").await.json()
}

/// Polls `path` on `addr` until it answers `code`; panics after `limit`.
async fn wait_code(addr: SocketAddr, path: &str, code: u16, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        let got = send(addr, None, "GET", path, None).await.map(|r| r.status);
        if got == Ok(code) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{addr}{path}: {got:?}, not {code} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Bytes of all tensors, and of the decoder layers' tensors, in a safetensors file (from its
/// header).
fn tensor_bytes(path: &std::path::Path) -> (u64, u64) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let (mut total, mut layers) = (0, 0);
    for (name, t) in header.as_object().unwrap() {
        let Some(off) = t["data_offsets"].as_array() else {
            continue;
        };
        let len = off[1].as_u64().unwrap() - off[0].as_u64().unwrap();
        total += len;
        if name.starts_with("model.layers.") {
            layers += len;
        }
    }
    (total, layers)
}

fn hello(model: &str) -> Value {
    json!({"model": model, "prompt": "Hello, my name is", "max_tokens": 8, "temperature": 0})
}

#[tokio::test]
async fn two_nodes_match_hf_and_each_holds_its_share() {
    let pki = Pki::shared();
    let mn = MultiNode::new("tiny-llama", &[MASTER, SLAVE], pki);
    let nodes = mn.start_all(&[("MINDIE_PIPELINE_LAYERS", "1,1")]);
    api_parity("tiny-llama", mn.business()).await;

    // Each node reports its share: the master layer 0 and the ends, the slave layer 1 only.
    let m = status(mn.mgmt(MASTER)).await;
    let mn_view = &m["multiNode"];
    assert_eq!(mn_view["role"], "master", "{m}");
    assert_eq!(mn_view["master"]["layers"], json!([0, 1]), "{m}");
    assert_eq!(mn_view["slaves"][0]["layers"], json!([1, 2]), "{m}");
    assert_eq!(mn_view["slaves"][0]["state"], "ready", "{m}");
    let s = status(mn.mgmt(SLAVE)).await;
    assert_eq!(s["multiNode"]["role"], "slave", "{s}");
    assert_eq!(s["multiNode"]["layers"], json!([1, 2]), "{s}");
    let (mw, sw) = (
        mn_view["master"]["weight_bytes"].as_u64().unwrap(),
        s["multiNode"]["weight_bytes"].as_u64().unwrap(),
    );
    // The two shares add up to the checkpoint, and the slave's one layer is half the layers.
    let (total, layers) = tensor_bytes(&mn.home.path().join("tiny-llama/model.safetensors"));
    assert_eq!(mw + sw, total, "{m}\n{s}");
    assert_eq!(sw * 2, layers, "{s}");
    assert_eq!(get(mn.mgmt(SLAVE), "/health").await.status, 200);
    // Activations moved for every step: tokens × hidden (64) f32 each way.
    let t = &mn_view["traffic"];
    let (stages, sent) = (
        t["stages"].as_u64().unwrap(),
        t["bytes_sent"].as_u64().unwrap(),
    );
    assert!(stages > 0 && sent >= stages * 64 * 4, "{m}");
    assert_eq!(t["bytes_received"], t["bytes_sent"], "{m}");

    // The slave serves no business plane: a user request to it is refused.
    let slave_business: SocketAddr = format!("{SLAVE}:{}", mn.home.port).parse().unwrap();
    let refused = send(
        slave_business,
        None,
        "POST",
        "/v1/completions",
        Some(&hello("tiny-llama").to_string()),
    )
    .await;
    assert!(refused.is_err(), "the slave answered a user: {refused:?}");

    // SIGTERM on the master: it drains, tells the slave to stop, and both exit 0.
    let [mut master, mut slave]: [Daemon; 2] = nodes.try_into().ok().unwrap();
    master.signal(Signal::SIGTERM);
    let ms = master
        .wait_exit(Duration::from_secs(20))
        .expect("master exits");
    assert!(ms.success(), "master: {ms}\n{}", master.output());
    let ss = slave
        .wait_exit(Duration::from_secs(20))
        .expect("slave stops with its master");
    assert!(ss.success(), "slave: {ss}\n{}", slave.output());
    assert!(slave.stdout().contains("finalised"), "{}", slave.stdout());
}

/// Three nodes on the byte-balanced default plan: tiny-qwen2's embedding outweighs its layers,
/// so the master keeps only the ends and each slave one layer. The interNode link runs plain
/// here (interNodeTLSEnabled false), with the loud warning.
#[tokio::test]
async fn three_nodes_with_the_default_split_match_hf() {
    let pki = Pki::shared();
    let mut mn = MultiNode::new("tiny-qwen2", &[MASTER, SLAVE, SLAVE2], pki);
    mn.home.set("/BackendConfig/interNodeTLSEnabled", false);
    mn.home.write();
    let nodes = mn.start_all(&[]);
    assert!(
        nodes[0].stdout().contains("PLAIN gRPC"),
        "{}",
        nodes[0].stdout()
    );
    api_parity("tiny-qwen2", mn.business()).await;
    let m = status(mn.mgmt(MASTER)).await;
    assert_eq!(m["multiNode"]["master"]["layers"], json!([0, 0]), "{m}");
    assert_eq!(m["multiNode"]["slaves"][0]["layers"], json!([0, 1]), "{m}");
    assert_eq!(m["multiNode"]["slaves"][1]["layers"], json!([1, 2]), "{m}");
}

/// The untied head's extra rows (ids past the tokenizer) are chosen as HF chooses them.
#[tokio::test]
async fn two_nodes_untied_head_match_hf() {
    let pki = Pki::shared();
    let mn = MultiNode::new("tiny-qwen2-untied", &[MASTER, SLAVE], pki);
    let _nodes = mn.start_all(&[("MINDIE_PIPELINE_LAYERS", "1,1")]);
    api_parity("tiny-qwen2-untied", mn.business()).await;
}

/// A slave that stops answering, or dies, makes the master unready within seconds, fails
/// in-flight requests with an error and new ones with 503 at once; when it is back the
/// master is ready again without a restart and answers as before (the KV made before is
/// forgotten, so cached prefixes are recomputed on every node).
#[tokio::test]
async fn a_lost_slave_fails_requests_fast_and_rejoins() {
    let pki = Pki::shared();
    let mn = MultiNode::new("tiny-llama", &[MASTER, SLAVE], pki);
    let env = [
        ("MINDIE_PIPELINE_LAYERS", "1,1"),
        ("MINDIE_MULTINODE_STEP_TIMEOUT", "3"),
    ];
    let mut nodes = mn.start_all(&env);
    let refs = refs("tiny-llama");
    let case = &refs["cases"][0];
    let (path, body) = case_request("tiny-llama", case, false);
    let r = post(mn.business(), path, &body).await;
    check_reply("tiny-llama", case, &r.json());

    // Stopped (SIGSTOP): a request in flight ends with an error after the step timeout.
    nodes[1].signal(Signal::SIGSTOP);
    let t0 = Instant::now();
    let r = post(mn.business(), path, &body).await;
    let took = t0.elapsed();
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(
        took < Duration::from_secs(8),
        "in-flight request took {took:?}"
    );
    wait_code(
        mn.mgmt(MASTER),
        "/v2/health/ready",
        503,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(get(mn.mgmt(MASTER), "/health").await.status, 500);
    let t0 = Instant::now();
    let r = post(mn.business(), path, &body).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(t0.elapsed() < Duration::from_secs(1));
    // Resumed: it notices its stream is gone, registers again, and the master is ready.
    nodes[1].signal(Signal::SIGCONT);
    wait_code(
        mn.mgmt(MASTER),
        "/v2/health/ready",
        200,
        Duration::from_secs(30),
    )
    .await;
    let r = post(mn.business(), path, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_reply("tiny-llama", case, &r.json());

    // Killed: unready within seconds; a new slave process joins and the answers still match.
    nodes[1].signal(Signal::SIGKILL);
    let _ = nodes[1].wait_exit(Duration::from_secs(5));
    let unready = wait_code(
        mn.mgmt(MASTER),
        "/v2/health/ready",
        503,
        Duration::from_secs(10),
    )
    .await;
    assert!(
        unready < Duration::from_secs(5),
        "unready after {unready:?}"
    );
    let r = post(mn.business(), path, &body).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let mut again = mn.spawn(SLAVE, &env);
    again.wait_for("Daemon start success!", Duration::from_secs(60));
    wait_code(
        mn.mgmt(MASTER),
        "/v2/health/ready",
        200,
        Duration::from_secs(30),
    )
    .await;
    api_parity("tiny-llama", mn.business()).await;
    let m = status(mn.mgmt(MASTER)).await;
    assert!(
        m["multiNode"]["slaves"][0]["registrations"]
            .as_u64()
            .unwrap()
            >= 3,
        "{m}"
    );
    assert_eq!(
        m["resource"]["freeNpuBlockNums"], m["resource"]["totalNpuBlockNums"],
        "{m}"
    );
}

/// Slaves with a revoked or a foreign certificate cannot join (the master's TLS refuses
/// them); they give up after their join window with an error, and the master keeps waiting
/// until a good slave joins.
#[tokio::test]
async fn revoked_and_foreign_slaves_are_refused() {
    let pki = Pki::shared();
    let mut mn = MultiNode::new("tiny-llama", &[MASTER, SLAVE], pki);
    let good = mn.home.config.clone();
    let mut master = mn.spawn(MASTER, &[("MINDIE_PIPELINE_LAYERS", "1,1")]);
    for (what, cert, key) in [
        ("revoked", &pki.revoked_client_cert, &pki.revoked_client_key),
        (
            "foreign",
            &pki.other_ca_client_cert,
            &pki.other_ca_client_key,
        ),
    ] {
        mn.home.config = good.clone();
        mn.home
            .set("/BackendConfig/interNodeTlsCert", cert.to_str().unwrap())
            .set("/BackendConfig/interNodeTlsPk", key.to_str().unwrap())
            .set("/BackendConfig/interNodeTlsPkPwd", "");
        let bad_config = mn.home.path().join(format!("conf/{what}.json"));
        write_0640(&bad_config, &serde_json::to_vec(&mn.home.config).unwrap());
        let mut bad = mn.spawn(
            SLAVE,
            &[
                ("MIES_CONFIG_JSON_PATH", bad_config.to_str().unwrap()),
                ("MINDIE_MULTINODE_JOIN_SECONDS", "3"),
            ],
        );
        let st = bad
            .wait_exit(Duration::from_secs(30))
            .expect("the bad slave gives up");
        assert!(!st.success(), "{what}: {}", bad.output());
        assert!(!bad.stdout().contains("Daemon start success!"), "{what}");
        assert!(
            bad.output().contains("unreachable"),
            "{what}: {}",
            bad.output()
        );
        assert!(!master.stdout().contains("Daemon start success!"), "{what}");
    }
    let mut slave = mn.spawn(SLAVE, &[("MINDIE_PIPELINE_LAYERS", "1,1")]);
    slave.wait_for("Daemon start success!", Duration::from_secs(60));
    master.wait_for("Daemon start success!", Duration::from_secs(60));
    assert!(
        master.stdout().contains("handshake"),
        "the master logs the refused handshakes: {}",
        master.stdout()
    );
    let r = post(mn.business(), "/v1/completions", &hello("tiny-llama")).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Broken ranktables stop the start with every problem's JSON path; so does a ranktable
/// anyone can read, and a node the ranktable does not name.
#[test]
fn broken_ranktables_are_refused_with_their_paths() {
    let pki = Pki::shared();
    let mn = MultiNode::new("tiny-llama", &[MASTER, SLAVE], pki);
    let mut dup = ranktable(&[MASTER, SLAVE]);
    dup["server_list"][1]["device"][0]["rank_id"] = "0".into();
    let mut count = ranktable(&[MASTER, SLAVE]);
    count["server_count"] = "3".into();
    let mut ip = ranktable(&[MASTER, SLAVE]);
    ip["server_list"][1]["device"][0]["device_ip"] = "10.0.0.300".into();
    for (doc, path) in [
        (dup, "server_list[1].device[0].rank_id"),
        (count, "server_count"),
        (ip, "server_list[1].device[0].device_ip"),
    ] {
        write_0640(&mn.ranktable, &serde_json::to_vec(&doc).unwrap());
        let mut d = mn.spawn(MASTER, &[]);
        let st = d
            .wait_exit(Duration::from_secs(30))
            .expect("refused at start");
        assert!(!st.success());
        assert!(d.output().contains(path), "{path}: {}", d.output());
    }
    write_0640(
        &mn.ranktable,
        &serde_json::to_vec(&ranktable(&[MASTER, SLAVE])).unwrap(),
    );
    std::fs::set_permissions(
        &mn.ranktable,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let mut d = mn.spawn(MASTER, &[]);
    assert!(!d
        .wait_exit(Duration::from_secs(30))
        .expect("refused")
        .success());
    assert!(d.output().contains("0644"), "{}", d.output());
    write_0640(
        &mn.ranktable,
        &serde_json::to_vec(&ranktable(&[MASTER, SLAVE])).unwrap(),
    );
    let mut d = mn.spawn("127.0.0.9", &[]);
    assert!(!d
        .wait_exit(Duration::from_secs(30))
        .expect("refused")
        .success());
    assert!(
        d.output().contains(SLAVE),
        "the servers are listed: {}",
        d.output()
    );
}

/// The README's multi-node quick start, run verbatim in a copy of the install layout: the
/// master answers as one node does.
#[tokio::test]
async fn the_readme_quickstart_serves_one_model_on_two_nodes() {
    let inst = Install::new(
        &["conf/multinode", "tests/fixtures/models/tiny-llama"],
        &["conf/multinode/config.json"],
    );
    inst.bash(&readme_block("multinode-quickstart"));
    let t0 = Instant::now();
    while !(inst.log("master.log").contains("Daemon start success!")
        && inst.log("slave.log").contains("Daemon start success!"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not started:\n{}",
            inst.logs(&["master.log", "slave.log"])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refs = refs("tiny-llama");
    let case = &refs["cases"][0];
    let (path, body) = case_request("tiny-llama", case, false);
    let r = post("127.0.0.1:1025".parse().unwrap(), path, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    check_reply("tiny-llama", case, &r.json());
    let m = status("127.0.0.2:1026".parse().unwrap()).await;
    assert_eq!(m["multiNode"]["slaves"][0]["state"], "ready", "{m}");
    assert!(inst.log("master.log").contains("PLAIN gRPC"));
}
