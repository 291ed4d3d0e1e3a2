//! The daemon with `backendType: "atb"` (and MindIE-accepted `"npu"`) on the emulated CANN,
//! found as a real CANN is (`ASCEND_TOOLKIT_HOME` etc. from its `set_env.sh`): HF parity
//! through the OpenAI API on two devices (tensor parallel), `/info` naming the device as
//! emulated, and a device error injected mid-step (`EMUACL_FAIL`) failing only that step's
//! request with a 500, turning health abnormal, and leaving every KV block free. (Without
//! CANN the start is refused: `tests/daemon_refuse.rs`.)
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use common::client::{get, post_json};
use common::daemon::{Daemon, Home};
use common::emuacl;
use common::parity::api_parity;
use serde_json::{json, Value};

const MODEL: &str = "/BackendConfig/ModelDeployConfig/ModelConfig/0";

/// A home serving fixture `model` on the emulated CANN with `backend_type` over `devices`.
fn home(model: &str, backend_type: &str, devices: &[u32]) -> Home {
    let mut home = Home::new();
    home.use_fixture_model(model);
    home.set(&format!("{MODEL}/backendType"), backend_type)
        .set(&format!("{MODEL}/modelName"), model)
        .set(&format!("{MODEL}/worldSize"), devices.len())
        .set("/BackendConfig/npuDeviceIds", json!([devices]));
    home
}

fn start(home: &Home, extra: &[(&str, &str)]) -> Daemon {
    let mut env = emuacl::cann_env();
    env.push(("EMUACL_HBM_TOTAL".into(), (512u64 << 20).to_string()));
    for (k, v) in extra {
        env.push((k.to_string(), v.to_string()));
    }
    let pairs = emuacl::pairs(&env);
    home.start(&pairs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_emulated_npus_serve_hf_parity_through_the_openai_api() {
    let model = "tiny-qwen2";
    let h = home(model, "atb", &[0, 1]);
    let trace = h.path().join("emuacl-trace.jsonl");
    let trace_s = trace.to_string_lossy().to_string();
    let _d = start(
        &h,
        &[
            ("EMUACL_F32", "1"),
            ("MINDIE_ASCEND_DTYPE", "f32"),
            ("EMUACL_TRACE", &trace_s),
        ],
    );
    let info = get(h.mgmt(), "/info").await.json();
    assert_eq!(
        info["models"][0]["model_device_type"], "npu-emulated",
        "{info}"
    );

    api_parity(model, h.business()).await;
    assert!(emuacl::trace_count(&trace, "aclnnFusedInferAttentionScoreV3") > 0);
    assert!(emuacl::trace_count(&trace, "HcclAllReduce") > 0);
    blocks_free(&h).await;
}

/// Polls `/v1/status` until every KV block is free (10 s at most).
async fn blocks_free(h: &Home) -> Value {
    let t0 = Instant::now();
    loop {
        let s = get(h.mgmt(), "/v1/status").await.json();
        let res = &s["resource"];
        if res["totalNpuBlockNums"].as_u64().unwrap_or(0) > 0
            && res["freeNpuBlockNums"] == res["totalNpuBlockNums"]
        {
            return s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "blocks still held: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// tiny-llama launches 13 aclnnMatmul per step (6 per layer, the LM head); failing the 44th
/// fails the fourth step of the first request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operator_fails_its_step_and_turns_health_abnormal() {
    let h = home("tiny-llama", "npu", &[0]);
    let _d = start(&h, &[("EMUACL_FAIL", "aclnnMatmul:44:507015")]);
    assert_eq!(get(h.mgmt(), "/health").await.status, 200);
    let body = json!({"model": "tiny-llama", "prompt": "hello there", "max_tokens": 12,
                      "temperature": 0, "ignore_eos": true});
    let failed = post_json(h.business(), "/v1/completions", &body).await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    assert!(failed.text().contains("aclnnMatmul"), "{}", failed.text());
    let health = get(h.mgmt(), "/health").await;
    assert_eq!(health.status, 500, "{}", health.text());
    assert!(health.text().contains("507015"), "{}", health.text());
    blocks_free(&h).await;
    // The injected failure was one call: the device works again, later requests complete.
    let ok = post_json(h.business(), "/v1/completions", &body).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["usage"]["completion_tokens"], 12);
    blocks_free(&h).await;
}

/// Without CANN's environment the start fails at once, naming the library and the fix; a
/// library lacking CANN's symbols is refused naming the symbol; with CANN, the same binary
/// runs.
#[test]
fn the_same_binary_runs_with_cann_and_refuses_without() {
    let h = home("tiny-llama", "atb", &[0]);
    h.write();
    let (st, out, err) = h.run_to_exit(&[], &[]);
    assert!(!st.success() && !out.contains("Daemon start success!"));
    assert!(
        err.contains("libascendcl.so")
            && err.contains("set_env.sh")
            && err.contains("\"backendType\": \"cpu\""),
        "{err}"
    );
    // `check` says the same before a start, and with CANN names it (emulated here).
    let (st, out, _) = h.run_to_exit(&["check"], &[]);
    assert!(
        !st.success() && out.contains("[ERROR] Ascend: the Ascend runtime is not available"),
        "{out}"
    );
    let env = emuacl::cann_env();
    let pairs = emuacl::pairs(&env);
    let (st, out, _) = h.run_to_exit(&["check"], &pairs);
    assert!(st.success(), "{out}");
    assert!(
        out.contains("[ok   ] Ascend: CANN loaded") && out.contains("EMULATED CANN"),
        "{out}"
    );
    // A library without CANN's symbols: the missing symbol is named.
    let (st, _, err) = h.run_to_exit(&[], &[("MINDIE_RS_ACL_LIBS", "libm.so.6")]);
    assert!(!st.success());
    assert!(
        err.contains("CANN symbol `aclInit` not found in libm.so.6"),
        "{err}"
    );
    let d = start(&h, &[]);
    assert!(d.output().contains("EMULATED CANN"), "{}", d.output());
    assert!(
        emuacl::home().join("set_env.sh").is_file(),
        "the emulator ships set_env.sh"
    );
}

/// PD between two emulated-NPU instances with different `worldSize` (P on two devices, D on
/// one: the exported KV layout does not depend on the split), driven as the Coordinator
/// drives them, over gRPC with mutual TLS: the client's reply equals a CPU instance's (the
/// f32 emulator matches it within 1e-4) token for token, and no block stays held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_between_emulated_npu_instances_matches_one_cpu_instance() {
    use common::pd::{
        assert_all_blocks_free, client_reply, dmi_headers, link_pair, open_dresult, send, Instance,
    };
    let model = "tiny-qwen2";
    let pki = common::pki::Pki::shared();
    let port = common::pd::inter_port();
    let npu = |ip: &str, devices: &[u32]| {
        let mut i = Instance::new(pki, ip, port, Some(model));
        i.home
            .set(&format!("{MODEL}/backendType"), "atb")
            .set(&format!("{MODEL}/worldSize"), devices.len())
            .set("/BackendConfig/npuDeviceIds", json!([devices]));
        i
    };
    let (p, d) = (npu("127.0.0.1", &[0, 1]), npu("127.0.0.3", &[0]));
    let mut cpu = Home::new();
    cpu.use_fixture_model(model);
    let f32_mode = [("EMUACL_F32", "1"), ("MINDIE_ASCEND_DTYPE", "f32")];
    let (_pd, _dd, _cd) = (
        start(&p.home, &f32_mode),
        start(&d.home, &f32_mode),
        cpu.start(&[]),
    );
    link_pair(&p, &d).await;
    let (frames, _reader) = open_dresult(&d).await;
    for (i, prompt) in [
        "Once upon a time",
        "The sea and the sky, and a long way home",
    ]
    .iter()
    .enumerate()
    {
        let body = json!({"model": "mock-model", "prompt": prompt, "max_tokens": 16,
                          "temperature": 0, "logprobs": 2, "ignore_eos": true});
        let want = post_json(cpu.business(), "/v1/completions", &body)
            .await
            .json();
        let req_id = format!("{:x}", 0xb000 + i);
        let r = send(
            p.business(),
            "POST",
            "/v1/completions",
            Some(&body),
            &dmi_headers(&req_id, &d),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let fs = frames.finished(&req_id, Duration::from_secs(60)).await;
        let got: Value = serde_json::from_str(&client_reply(&r.json(), &fs)).unwrap();
        let (w, g) = (&want["choices"][0], &got["choices"][0]);
        assert_eq!(g["text"], w["text"], "case {i}: {got}");
        let lp = |v: &Value| -> Vec<f64> {
            v["logprobs"]["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (lw, lg) = (lp(w), lp(g));
        assert_eq!(lw.len(), 16);
        for (a, b) in lw.iter().zip(&lg) {
            assert!((a - b).abs() < 1e-4, "case {i}: {lw:?} vs {lg:?}");
        }
    }
    assert_all_blocks_free(&p, "prefill").await;
    assert_all_blocks_free(&d, "decode").await;
}

/// On two devices a failed operator leaves the devices at different collectives: the step
/// fails, and every later step fails at once (no all-reduce pairing the wrong calls or
/// waiting forever) until the instance is restarted; health stays abnormal, blocks free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_on_two_devices_fails_fast_afterwards() {
    let h = home("tiny-llama", "atb", &[0, 1]);
    // 13 matmuls per device per step, devices alternating per half layer: the 30th is
    // within the third step.
    let _d = start(&h, &[("EMUACL_FAIL", "aclnnMatmul:30:507015")]);
    let body = json!({"model": "tiny-llama", "prompt": "hello there", "max_tokens": 12,
                      "temperature": 0, "ignore_eos": true});
    let failed = post_json(h.business(), "/v1/completions", &body).await;
    assert_eq!(failed.status, 500, "{}", failed.text());
    let t0 = Instant::now();
    let again = post_json(h.business(), "/v1/completions", &body).await;
    assert_eq!(again.status, 500, "{}", again.text());
    assert!(again.text().contains("out of step"), "{}", again.text());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "failed fast: {:?}",
        t0.elapsed()
    );
    assert_eq!(get(h.mgmt(), "/health").await.status, 500);
    blocks_free(&h).await;
}

/// With the emulator queueing all work until a synchronize (`EMUACL_DEFER=1`), a missing
/// synchronisation (logits read, a buffer freed or reused before the device is done) shows
/// as wrong answers or refused calls: the API parity still holds on one device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_streams_still_give_hf_parity() {
    let model = "tiny-llama";
    let h = home(model, "atb", &[0]);
    let _d = start(
        &h,
        &[
            ("EMUACL_F32", "1"),
            ("MINDIE_ASCEND_DTYPE", "f32"),
            ("EMUACL_DEFER", "1"),
        ],
    );
    api_parity(model, h.business()).await;
    blocks_free(&h).await;
}

/// Layouts the backend cannot run are refused at start with the setting to change: a
/// `worldSize` that does not divide the heads, a block size the paged attention operator does
/// not take, a device CANN does not have, too little device memory for one KV block, an
/// unknown compute dtype.
#[test]
fn impossible_layouts_are_refused_naming_the_setting() {
    let env = emuacl::cann_env();
    let pairs = emuacl::pairs(&env);
    let refused = |h: &Home| {
        h.write();
        let (st, out, err) = h.run_to_exit(&[], &pairs);
        assert!(
            !st.success() && !out.contains("Daemon start success!"),
            "{out}"
        );
        err
    };
    let err = refused(&home("tiny-llama", "atb", &[0, 1, 2]));
    assert!(
        err.contains("worldSize 3") && err.contains("num_attention_heads (4)"),
        "{err}"
    );
    let mut h = home("tiny-llama", "atb", &[0]);
    h.set("/BackendConfig/ScheduleConfig/cacheBlockSize", 64);
    let err = refused(&h);
    assert!(
        err.contains("cacheBlockSize = 64") && err.contains("multiple of 128"),
        "{err}"
    );
    let err = refused(&home("tiny-llama", "atb", &[9]));
    assert!(
        err.contains("npuDeviceIds: device 9 does not exist"),
        "{err}"
    );
    // Too little device memory for any KV block with npuMemSize -1, and an unknown dtype.
    let h = home("tiny-llama", "atb", &[0]);
    h.write();
    let mut small = env.clone();
    small.push(("EMUACL_HBM_TOTAL".into(), (6u64 << 20).to_string()));
    let (st, _, err) = h.run_to_exit(&[], &emuacl::pairs(&small));
    assert!(!st.success());
    assert!(
        err.contains("npuMemSize -1") && err.contains("nothing for the KV cache"),
        "{err}"
    );
    let mut bad = env.clone();
    bad.push(("MINDIE_ASCEND_DTYPE".into(), "int4".into()));
    let (st, _, err) = h.run_to_exit(&[], &emuacl::pairs(&bad));
    assert!(!st.success());
    assert!(err.contains("MINDIE_ASCEND_DTYPE = \"int4\""), "{err}");
}
