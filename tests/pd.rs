//! PD disaggregation on real binaries (SPEC-PD §2–3): a prefill and a decode instance on two
//! loopback "hosts" (127.0.0.1 and 127.0.0.3, the same interCommPort) linked over gRPC with
//! mutual TLS and a CRL, driven as the Coordinator drives them (role POSTs, DMI headers, a
//! `/dresult` reader). Their answers are compared token for token with a standard instance
//! of the same model, streamed and not, for chat and completions, with logprobs, stop strings
//! and seeded sampling; cancels and failures leave no KV block held on either side.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::daemon::Home;
use common::pd::{
    assert_all_blocks_free, client_reply, dmi_headers, link_pair, open_dresult, send, sse_events,
    status, Instance,
};
use common::pki::Pki;
use serde_json::{json, Value};
use std::time::Duration;

/// A standard instance of the same model, for reference answers.
fn standard(model: &str) -> Home {
    let mut h = Home::new();
    h.use_fixture_model(model);
    h
}

/// The parts of a reply that must be equal between PD and one instance: every choice's text,
/// finish reason and logprobs, and the usage; streamed replies are folded first.
fn essence(reply: &Value) -> Value {
    let c = &reply["choices"][0];
    json!({
        "text": c["message"]["content"].as_str().or(c["text"].as_str()),
        "finish_reason": c["finish_reason"],
        "logprobs": c["logprobs"],
        "usage": reply["usage"],
    })
}

fn fold_stream(events: &[Value]) -> Value {
    let mut text = String::new();
    let mut finish = Value::Null;
    let mut logprobs: Vec<Value> = Vec::new();
    let mut tokens: Vec<Value> = Vec::new();
    let mut usage = Value::Null;
    let ids: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert!(
        ids.len() <= 1,
        "one reply id across P's and D's chunks: {ids:?}"
    );
    for e in events.iter().filter(|e| e.is_object()) {
        if !e["usage"].is_null() {
            usage = e["usage"].clone();
        }
        let Some(c) = e["choices"].get(0) else {
            continue;
        };
        if let Some(t) = c["delta"]["content"].as_str().or(c["text"].as_str()) {
            text.push_str(t);
        }
        if !c["finish_reason"].is_null() {
            finish = c["finish_reason"].clone();
        }
        if let Some(lp) = c["logprobs"]["content"].as_array() {
            logprobs.extend(lp.iter().cloned());
        }
        if let Some(lp) = c["logprobs"]["tokens"].as_array() {
            tokens.extend(lp.iter().cloned());
        }
    }
    json!({"text": text, "finish_reason": finish, "logprobs": logprobs, "tokens": tokens, "usage": usage})
}

async fn standard_reply(s: &Home, path: &str, body: &Value) -> Value {
    let r = send(s.business(), "POST", path, Some(body), &[]).await;
    assert_eq!(r.status, 200, "standard {path}: {}", r.text());
    if body["stream"] == json!(true) {
        fold_stream(&sse_events(&r.text()))
    } else {
        essence(&r.json())
    }
}

/// Sends `body` to P as the Coordinator would and assembles the client's reply from P's
/// answer and D's frames.
async fn pd_reply(
    p: &Instance,
    d: &Instance,
    frames: &common::pd::Frames,
    req_id: &str,
    path: &str,
    body: &Value,
) -> Value {
    let r = send(
        p.business(),
        "POST",
        path,
        Some(body),
        &dmi_headers(req_id, d),
    )
    .await;
    assert_eq!(r.status, 200, "P {path}: {}", r.text());
    let answer = r.json();
    assert_eq!(answer["reqId"], json!(req_id), "{answer}");
    let stream = body["stream"] == json!(true);
    assert_eq!(answer["isStream"], json!(stream), "{answer}");
    // Every case here runs past its first token: P hands it to D.
    assert_ne!(answer["isLastResp"], json!(true), "not handed on: {answer}");
    let fs = frames.finished(req_id, Duration::from_secs(60)).await;
    let text = client_reply(&answer, &fs);
    if stream {
        fold_stream(&sse_events(&text))
    } else {
        essence(&serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
    }
}

async fn parity_on(model: &str) {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, Some(model));
    let d = Instance::new(pki, "127.0.0.3", port, Some(model));
    let s = standard(model);
    let (_pd, _dd, _sd) = (p.start(), d.start(), s.start(&[]));
    link_pair(&p, &d).await;
    let (frames, _reader) = open_dresult(&d).await;

    let chat = |extra: Value| {
        let mut b = json!({"model": "mock-model",
            "messages": [{"role": "user", "content": "Tell me about the sea and the sky"}],
            "max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let comp = |extra: Value| {
        let mut b = json!({"model": "mock-model", "prompt": "Once upon a time",
            "max_tokens": 12, "temperature": 0, "logprobs": 2});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let mut cases = vec![
        ("/v1/chat/completions", chat(json!({}))),
        ("/v1/chat/completions", chat(json!({"stream": true}))),
        ("/v1/completions", comp(json!({}))),
        ("/v1/completions", comp(json!({"stream": true}))),
        // Beyond MindIE: seeded sampling carries P's sampler state to D.
        (
            "/v1/chat/completions",
            chat(json!({"temperature": 0.9, "top_k": 20, "seed": 7, "stream": true})),
        ),
        (
            "/v1/completions",
            comp(json!({"temperature": 1.1, "seed": 11})),
        ),
    ];
    // A stop string from the middle of the reference answer.
    let reference = standard_reply(&s, "/v1/completions", &comp(json!({}))).await;
    let text = reference["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 8 {
        let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
        cases.push(("/v1/completions", comp(json!({"stop": [stop.clone()]}))));
        cases.push((
            "/v1/completions",
            comp(json!({"stop": [stop], "stream": true})),
        ));
    }
    for (i, (path, body)) in cases.iter().enumerate() {
        let want = standard_reply(&s, path, body).await;
        let req_id = format!("{:x}", 0xa000 + i);
        let got = pd_reply(&p, &d, &frames, &req_id, path, body).await;
        assert_eq!(got, want, "{model} case {i}: {path} {body}");
    }
    assert_all_blocks_free(&p, "prefill").await;
    assert_all_blocks_free(&d, "decode").await;
    // Both sides count what they did.
    let pm = send(p.metrics(), "GET", "/metrics", None, &[]).await.text();
    assert!(
        pm.contains(&format!(
            "pd_handoffs_total{{model_name=\"mock-model\"}} {}",
            cases.len()
        )),
        "{pm}"
    );
    let dm = send(d.metrics(), "GET", "/metrics", None, &[]).await.text();
    assert!(
        dm.contains("pd_kv_transfer_seconds_count{model_name=\"mock-model\"}"),
        "{dm}"
    );
    assert!(
        !dm.contains("pd_kv_transfer_bytes_total{model_name=\"mock-model\"} 0\n"),
        "{dm}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_equals_one_instance_tiny_llama() {
    parity_on("tiny-llama").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_equals_one_instance_tiny_qwen2() {
    parity_on("tiny-qwen2").await;
}

/// A client configuration for the interComm plane with `cert`/`key` (or none).
fn inter_comm_client(
    pki: &Pki,
    cert: Option<(&std::path::Path, &std::path::Path, Option<&std::path::Path>)>,
) -> std::sync::Arc<rustls::ClientConfig> {
    mindie::security::tls::client_config(std::slice::from_ref(&pki.ca), cert).unwrap()
}

/// What a decode instance gets from a prefill instance that is not there.
fn orphan_params(req_id: &str, p_node_addr: &str) -> mindie::cluster::proto::pd::DecodeParameters {
    let rs = json!({
        "version": 1, "path": "/v1/completions",
        "body": json!({"model": "mock-model", "prompt": "hi", "max_tokens": 4}).to_string(),
        "content_type": "application/json", "identity": null, "sent_chunks": 0,
        "first": {"id": 5, "logprob": null, "top": []},
    });
    mindie::cluster::proto::pd::DecodeParameters {
        req_id: req_id.into(),
        tokens: vec![1, 2, 3],
        first_token: vec![5],
        msg_type: 6,
        p_node_addr: p_node_addr.into(),
        mindie_rs_handoff: rs.to_string().into_bytes(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_failures_end_with_errors_and_free_every_block() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, None);
    let d = Instance::new(pki, "127.0.0.3", port, None);
    let slow = [("MIES_MOCK_STEP_TIME_MS", "40")];
    let _pd = p.start_env(&slow);
    let dd = d.start_env(&slow);
    link_pair(&p, &d).await;
    let (frames, _reader) = open_dresult(&d).await;

    // interComm refuses clients without a good certificate; the good one links.
    use mindie::cluster::{kv, transport};
    let good = inter_comm_client(
        pki,
        Some((
            &pki.client_cert,
            &pki.client_key,
            Some(&pki.client_key_pwd_file),
        )),
    );
    let layout_probe = transport::dial(d.inter_comm(), Some(good.clone()), Duration::from_secs(5))
        .await
        .unwrap();
    let refused = [
        (
            "revoked",
            Some((
                pki.revoked_client_cert.as_path(),
                pki.revoked_client_key.as_path(),
                None,
            )),
        ),
        (
            "foreign",
            Some((
                pki.other_ca_client_cert.as_path(),
                pki.other_ca_client_key.as_path(),
                None,
            )),
        ),
        ("missing", None),
    ];
    for (what, cert) in refused {
        let cfg = inter_comm_client(pki, cert);
        let r = async {
            let ch = transport::dial(d.inter_comm(), Some(cfg), Duration::from_secs(5)).await?;
            kv::decode_request(ch, orphan_params("ab", "127.0.0.1"), Duration::from_secs(5)).await
        }
        .await;
        assert!(
            r.is_err(),
            "{what} client certificate accepted on interComm: {r:?}"
        );
    }

    // P unreachable from D: an `error:` frame, D's blocks free.
    let reply = kv::decode_request(
        layout_probe,
        orphan_params("dead01", "127.0.0.9;1"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(reply.is_valid_decode_parameters, "{reply:?}");
    let fs = frames.finished("dead01", Duration::from_secs(30)).await;
    assert!(
        fs.iter()
            .any(|f| f.kind == mindie::pd::frames::FrameKind::Error
                && f.payload == "Pull kv failed reversibly."),
        "{fs:?}"
    );
    assert_all_blocks_free(&d, "decode after a failed pull").await;

    // stopInfer on D mid-stream ends the request on both sides.
    let body = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 400,
                      "stream": true, "ignore_eos": true});
    let r = send(
        p.business(),
        "POST",
        "/v1/completions",
        Some(&body),
        &dmi_headers("c0ffee", &d),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = std::time::Instant::now();
    while frames.all("c0ffee").len() < 3 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no frames from D");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stop = send(
        d.business(),
        "POST",
        "/v2/models/mock-model/stopInfer",
        Some(&json!({"id": "c0ffee"})),
        &[],
    )
    .await;
    assert_eq!(stop.status, 200, "{}", stop.text());
    frames.finished("c0ffee", Duration::from_secs(20)).await;
    assert_all_blocks_free(&p, "prefill after stopInfer on D").await;
    assert_all_blocks_free(&d, "decode after stopInfer").await;

    // D killed mid-stream: P holds nothing afterwards (within the lease at the latest).
    let r = send(
        p.business(),
        "POST",
        "/v1/completions",
        Some(&body),
        &dmi_headers("dead02", &d),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    dd.signal(nix::sys::signal::Signal::SIGKILL);
    assert_all_blocks_free(&p, "prefill after its decode instance died").await;

    // D gone: the next hand-off fails at P with MindIE's text, nothing held.
    let r = send(
        p.business(),
        "POST",
        "/v1/completions",
        Some(&body),
        &dmi_headers("dead03", &d),
    )
    .await;
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(
        r.text().starts_with("[P Node] Send D request failed:"),
        "{}",
        r.text()
    );
    assert_all_blocks_free(&p, "prefill after a failed hand-off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_refuses_to_link_a_peer_with_another_kv_layout() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let mut p = Instance::new(pki, "127.0.0.1", port, Some("tiny-llama"));
    let mut d = Instance::new(pki, "127.0.0.3", port, None);
    // Links are retried until kv_link_timeout; a short one lets the failure show soon.
    p.home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/kv_link_timeout",
        3,
    );
    d.home.set(
        "/BackendConfig/ModelDeployConfig/ModelConfig/0/kv_link_timeout",
        3,
    );
    let (_pd, _dd) = (p.start(), d.start());
    let (pe, de) = (p.entry(1), d.entry(2));
    let r = common::pd::post_role(&p, "prefill", &json!({"local": pe, "peers": [de]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t0 = std::time::Instant::now();
    loop {
        let s = status(&p).await;
        let link = s
            .pointer("/linkStatus/peers/0/link")
            .and_then(Value::as_str)
            .unwrap_or("");
        if link.starts_with("failed") {
            assert!(
                link.contains("num_layers") || link.contains("layout"),
                "{s}"
            );
            assert_ne!(s["service"]["roleStatus"], json!("RoleReady"), "{s}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no failed link: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Inference without a ready role is refused with a clear error, and standard routes serve.
    let r = send(p.business(), "GET", "/v1/models", None, &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmi_instance_without_role_refuses_inference_with_503() {
    let pki = Pki::shared();
    let p = Instance::new(pki, "127.0.0.1", common::pd::inter_port(), None);
    let _pd = p.start();
    let s = status(&p).await;
    assert_eq!(s["service"]["roleStatus"], json!("RoleUnknown"), "{s}");
    let body = json!({"model": "mock-model", "prompt": "hi", "max_tokens": 2});
    let r = send(p.business(), "POST", "/v1/completions", Some(&body), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    // A first assignment without peers is refused as MindIE does.
    let r = common::pd::post_role(&p, "prefill", &json!({"local": p.entry(1)})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    let r =
        common::pd::post_role(&p, "prefill", &json!({"local": {"server_ip": "not-an-ip"}})).await;
    assert_eq!(r.status, 422, "{}", r.text());
}

/// A reply without what differs between two runs of one request (timings, ids, clocks, the
/// random seed of a request that named none).
fn without_clocks(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !(k.contains("time")
                        || k.contains("cost")
                        || ["created", "id", "seed"].contains(&k.as_str()))
                })
                .map(|(k, v)| (k.clone(), without_clocks(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_clocks).collect()),
        other => other.clone(),
    }
}

/// The events of a streamed reply (SSE `data:` events, or NUL-separated JSON), normalised.
fn events_of(text: &str) -> Vec<Value> {
    let evs = if text.contains("data:") {
        sse_events(text)
    } else {
        text.split(['\0', '\n'])
            .filter(|s| !s.trim().is_empty())
            .map(|s| serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s:?}")))
            .collect()
    };
    evs.iter().map(without_clocks).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_serves_every_flavour_like_one_instance() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, Some("tiny-llama"));
    let d = Instance::new(pki, "127.0.0.3", port, Some("tiny-llama"));
    let s = standard("tiny-llama");
    let (_pd, _dd, _sd) = (p.start(), d.start(), s.start(&[]));
    link_pair(&p, &d).await;
    let (frames, _reader) = open_dresult(&d).await;
    let prompt = "Once upon a time";
    let params = json!({"max_new_tokens": 8, "details": true});
    let cases: Vec<(&str, Value, bool)> = vec![
        (
            "/generate",
            json!({"inputs": prompt, "parameters": params}),
            false,
        ),
        (
            "/generate_stream",
            json!({"inputs": prompt, "parameters": params}),
            true,
        ),
        (
            "/",
            json!({"inputs": prompt, "parameters": params, "stream": false}),
            false,
        ),
        (
            "/generate",
            json!({"prompt": prompt, "max_tokens": 8, "temperature": 0}),
            false,
        ),
        (
            "/infer",
            json!({"inputs": prompt, "parameters": {"max_new_tokens": 8}}),
            false,
        ),
        (
            "/infer",
            json!({"inputs": prompt, "stream": true, "parameters": {"max_new_tokens": 8}}),
            true,
        ),
        (
            "/v2/models/mock-model/generate",
            json!({"id": "t-1", "text_input": prompt, "parameters": {"max_new_tokens": 8}}),
            false,
        ),
        (
            "/v2/models/mock-model/generate_stream",
            json!({"text_input": prompt, "parameters": {"max_new_tokens": 8}}),
            true,
        ),
    ];
    for (i, (path, body, stream)) in cases.iter().enumerate() {
        let want = send(s.business(), "POST", path, Some(body), &[]).await;
        assert_eq!(want.status, 200, "standard {path}: {}", want.text());
        let req_id = format!("{:x}", 0xf000 + i);
        let r = send(
            p.business(),
            "POST",
            path,
            Some(body),
            &dmi_headers(&req_id, &d),
        )
        .await;
        assert_eq!(r.status, 200, "P {path}: {}", r.text());
        let answer = r.json();
        assert_eq!(answer["isStream"], json!(stream), "{path}: {answer}");
        assert_ne!(
            answer["isLastResp"],
            json!(true),
            "{path}: not handed on: {answer}"
        );
        let fs = frames.finished(&req_id, Duration::from_secs(60)).await;
        let got = client_reply(&answer, &fs);
        if *stream {
            assert_eq!(events_of(&got), events_of(&want.text()), "{path} {body}");
        } else {
            let got: Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got}"));
            assert_eq!(
                without_clocks(&got),
                without_clocks(&want.json()),
                "{path} {body}"
            );
        }
    }
    assert_all_blocks_free(&p, "prefill").await;
    assert_all_blocks_free(&d, "decode").await;
}

/// A decode instance that accepts every hand-off and never pulls (a D that hangs after the
/// RPC): P's lease must end by `stopInfer` or by its expiry.
struct SilentDecode;

impl mindie::cluster::kv::DecodeHandler for SilentDecode {
    fn decode_request(
        &self,
        _p: mindie::cluster::proto::pd::DecodeParameters,
    ) -> futures_util::future::BoxFuture<'static, mindie::cluster::proto::pd::DecodeRequestResponse>
    {
        Box::pin(async {
            mindie::cluster::proto::pd::DecodeRequestResponse {
                is_valid_decode_parameters: true,
                error_message: String::new(),
            }
        })
    }
}

struct NoKv;

impl mindie::cluster::kv::KvSource for NoKv {
    fn layout(&self) -> mindie::cluster::kv::KvLayout {
        mindie::cluster::kv::KvLayout {
            model_name: String::new(),
            num_layers: 0,
            num_kv_heads: 0,
            head_dim: 0,
            dtype: String::new(),
            block_size: 0,
            tp_size: 1,
            layout: String::new(),
            bytes_per_block: 0,
        }
    }
    fn instance_id(&self) -> u32 {
        9
    }
    fn export(
        &self,
        _req_id: &str,
        _src: &[i64],
        _n: u64,
    ) -> futures_util::future::BoxFuture<
        'static,
        Result<mindie::engine::KvExport, mindie::cluster::kv::KvSourceError>,
    > {
        Box::pin(async { Err(mindie::cluster::kv::KvSourceError::NotFound("none".into())) })
    }
    fn release(&self, _req_id: &str) -> futures_util::future::BoxFuture<'static, bool> {
        Box::pin(async { false })
    }
}

/// KV blocks in use on an instance now.
async fn blocks_in_use(inst: &Instance) -> u64 {
    let s = status(inst).await;
    let r = &s["resource"];
    r["totalNpuBlockNums"].as_u64().unwrap() - r["freeNpuBlockNums"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_lease_ends_by_stop_infer_or_expiry() {
    let pki = Pki::shared();
    let port = common::pd::inter_port();
    let p = Instance::new(pki, "127.0.0.1", port, None);
    let _pd = p.start();
    // The silent D on 127.0.0.3, same interComm port, same PKI.
    let mut checker = mindie::security::perms::PermChecker::new(false);
    let tls = mindie::security::tls::server_config(&pki.server_files(true), &mut checker).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.3", port))
        .await
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let routes =
        mindie::cluster::kv::routes(std::sync::Arc::new(SilentDecode), std::sync::Arc::new(NoKv));
    tokio::spawn(mindie::cluster::transport::serve(
        listener,
        Some(tls),
        routes,
        stop.clone(),
    ));
    let d = common::pd::Instance::new(pki, "127.0.0.3", port, None);
    let r = common::pd::post_role(
        &p,
        "prefill",
        &json!({"local": p.entry(1), "peers": [d.entry(2)]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let body = json!({"model": "mock-model", "prompt": "Once upon a time", "max_tokens": 40});
    let r = send(
        p.business(),
        "POST",
        "/v1/completions",
        Some(&body),
        &dmi_headers("beef01", &d),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        blocks_in_use(&p).await > 0,
        "the lease holds the prompt's blocks"
    );
    let stop_reply = send(
        p.business(),
        "POST",
        "/v2/models/mock-model/stopInfer",
        Some(&json!({"id": "beef01"})),
        &[],
    )
    .await;
    assert_eq!(stop_reply.status, 200, "{}", stop_reply.text());
    assert_all_blocks_free(&p, "prefill after stopInfer").await;

    // No release and no stop: the lease expires after kv_trans_timeout (2 s) + 10 s.
    let r = send(
        p.business(),
        "POST",
        "/v1/completions",
        Some(&body),
        &dmi_headers("beef02", &d),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(blocks_in_use(&p).await > 0);
    let t0 = std::time::Instant::now();
    while blocks_in_use(&p).await > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the lease never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = t0.elapsed();
    assert!(
        waited > Duration::from_secs(5),
        "freed too early ({waited:?}): no pull came"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pm = send(p.metrics(), "GET", "/metrics", None, &[]).await.text();
    assert!(
        pm.contains("pd_kv_leases_expired_total{model_name=\"mock-model\"} 1"),
        "{pm}"
    );
    stop.cancel();
}
