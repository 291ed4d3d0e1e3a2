//! PD test support: dmi instances on loopback "hosts" (127.0.0.x) with mutual TLS on
//! interComm, role assignment as the Controller does it, requests as the Coordinator sends
//! them (DMI headers), and a `/dresult` reader that parses frames as the Coordinator does.
#![allow(dead_code)]

use super::client::Reply;
use super::daemon::{free_port, Daemon, Home};
use super::pki::Pki;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;
use mindie::pd::frames::{self, Frame, FrameKind};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

fn dir_and_name(p: &Path) -> (String, String) {
    (
        format!("{}/", p.parent().unwrap().display()),
        p.file_name().unwrap().to_string_lossy().into_owned(),
    )
}

/// One dmi instance's home: business/management/metrics on `ip`, interComm on
/// `ip:inter_port` with the test PKI's mutual TLS and CRL.
pub struct Instance {
    pub home: Home,
    pub ip: IpAddr,
    pub inter_port: u16,
}

impl Instance {
    pub fn new(pki: &Pki, ip: &str, inter_port: u16, model: Option<&str>) -> Self {
        let mut home = Home::new();
        if let Some(m) = model {
            home.use_fixture_model(m);
        }
        let (ca_dir, ca_name) = dir_and_name(&pki.ca);
        let (crl_dir, crl_name) = dir_and_name(&pki.crl);
        home.set("/ServerConfig/ipAddress", ip)
            .set("/ServerConfig/managementIpAddress", ip)
            .set("/ServerConfig/inferMode", "dmi")
            .set("/ServerConfig/interCommTLSEnabled", true)
            .set("/ServerConfig/interCommPort", inter_port)
            .set("/ServerConfig/interCommTlsCaPath", ca_dir.as_str())
            .set("/ServerConfig/interCommTlsCaFiles", json!([ca_name]))
            .set(
                "/ServerConfig/interCommTlsCert",
                pki.server_cert.to_str().unwrap(),
            )
            .set(
                "/ServerConfig/interCommPk",
                pki.server_key.to_str().unwrap(),
            )
            .set(
                "/ServerConfig/interCommPkPwd",
                pki.server_key_pwd_file.to_str().unwrap(),
            )
            .set("/ServerConfig/interCommTlsCrlPath", crl_dir.as_str())
            .set("/ServerConfig/interCommTlsCrlFiles", json!([crl_name]))
            .set(
                "/BackendConfig/ModelDeployConfig/ModelConfig/0/kv_trans_timeout",
                2,
            );
        Self {
            home,
            ip: ip.parse().unwrap(),
            inter_port,
        }
    }

    pub fn business(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.home.port)
    }

    pub fn mgmt(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.home.mgmt_port)
    }

    pub fn metrics(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.home.metrics_port)
    }

    pub fn inter_comm(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.inter_port)
    }

    pub fn start(&self) -> Daemon {
        self.home.start(&[])
    }

    pub fn start_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.home.start(env)
    }

    /// The role body entry naming this instance.
    pub fn entry(&self, id: u32) -> Value {
        let ip = self.ip.to_string();
        json!({"id": id, "server_ip": ip, "host_ip": ip,
               "device": [{"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"}]})
    }
}

/// A free port on every loopback address the tests use.
pub fn inter_port() -> u16 {
    free_port()
}

/// Sends one request with extra headers over plain HTTP.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> Reply {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .expect("send");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

/// Posts a role to an instance's management port.
pub async fn post_role(inst: &Instance, role: &str, body: &Value) -> Reply {
    send(
        inst.mgmt(),
        "POST",
        &format!("/v1/role/{role}"),
        Some(body),
        &[],
    )
    .await
}

/// `GET /v1/status` of an instance.
pub async fn status(inst: &Instance) -> Value {
    let r = send(inst.mgmt(), "GET", "/v1/status", None, &[]).await;
    serde_json::from_slice(&r.body).unwrap_or(Value::Null)
}

/// Waits until every KV block of `inst` is free (nothing leased, nothing running); panics
/// after 20 s naming `what`.
pub async fn assert_all_blocks_free(inst: &Instance, what: &str) {
    let t0 = Instant::now();
    loop {
        let s = status(inst).await;
        let r = &s["resource"];
        if r["freeNpuBlockNums"] == r["totalNpuBlockNums"] && !r["freeNpuBlockNums"].is_null() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: KV blocks still held: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the instance reports `RoleReady` (panics after `limit`).
pub async fn wait_ready(inst: &Instance, limit: Duration) -> Value {
    let t0 = Instant::now();
    loop {
        let s = status(inst).await;
        if s.pointer("/service/roleStatus").and_then(Value::as_str) == Some("RoleReady") {
            return s;
        }
        assert!(t0.elapsed() < limit, "not RoleReady after {limit:?}: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Assigns P prefill and D decode, peers of each other, and waits until both are ready.
pub async fn link_pair(p: &Instance, d: &Instance) {
    let (pe, de) = (p.entry(1), d.entry(2));
    let r = post_role(p, "prefill", &json!({"local": pe, "peers": [de]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = post_role(d, "decode", &json!({"local": de, "peers": [pe]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    wait_ready(p, Duration::from_secs(30)).await;
    wait_ready(d, Duration::from_secs(30)).await;
}

/// The Coordinator's headers for a request handed to `d`.
pub fn dmi_headers(req_id: &str, d: &Instance) -> Vec<(&'static str, String)> {
    vec![
        ("req-type", "prefill".to_string()),
        ("req-id", req_id.to_string()),
        ("d-target", format!("{};{}", d.ip, d.inter_port)),
        ("d-port", d.home.port.to_string()),
    ]
}

/// Frames read from one decode instance's `/dresult`, by req-id.
#[derive(Clone, Default)]
pub struct Frames(Arc<Mutex<HashMap<String, Vec<Frame>>>>);

impl Frames {
    /// Every frame of `req_id` up to its last one (`lastData:` or `error:`).
    pub async fn finished(&self, req_id: &str, limit: Duration) -> Vec<Frame> {
        let t0 = Instant::now();
        loop {
            if let Some(fs) = self.0.lock().unwrap().get(req_id) {
                if fs
                    .iter()
                    .any(|f| matches!(f.kind, FrameKind::LastData | FrameKind::Error))
                {
                    return fs.clone();
                }
            }
            assert!(
                t0.elapsed() < limit,
                "no last frame for {req_id} after {limit:?}: {:?}",
                self.0.lock().unwrap().get(req_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn all(&self, req_id: &str) -> Vec<Frame> {
        self.0
            .lock()
            .unwrap()
            .get(req_id)
            .cloned()
            .unwrap_or_default()
    }
}

/// Opens `GET /dresult` on `d` and collects its frames on a task (ended by dropping the
/// returned handle's task).
pub async fn open_dresult(d: &Instance) -> (Frames, tokio::task::JoinHandle<()>) {
    let addr = d.business();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get("/dresult")
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.expect("GET /dresult");
    assert_eq!(resp.status(), 200, "GET /dresult");
    let frames = Frames::default();
    let sink = frames.clone();
    let task = tokio::spawn(async move {
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(b) = f.into_data() {
                buf.extend_from_slice(&b);
                let (got, used) = frames::parse(&buf);
                buf.drain(..used);
                let mut m = sink.0.lock().unwrap();
                for f in got {
                    m.entry(f.req_id.clone()).or_default().push(f);
                }
            }
        }
    });
    (frames, task)
}

/// The client's whole reply of a PD request: P's answer `output` (streamed) and D's frames.
pub fn client_reply(p_answer: &Value, frames: &[Frame]) -> String {
    let mut text = String::new();
    if p_answer["isStream"] == json!(true) {
        text.push_str(p_answer["output"].as_str().unwrap_or(""));
    }
    for f in frames {
        match f.kind {
            FrameKind::Data | FrameKind::LastData => text.push_str(&f.payload),
            FrameKind::Error => panic!("error frame: {}", f.payload),
            _ => {}
        }
    }
    text
}

/// The JSON events of an SSE text (`[DONE]` kept as a string).
pub fn sse_events(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .map(|d| {
            if d == "[DONE]" {
                Value::String(d)
            } else {
                serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad event {d:?}: {e}"))
            }
        })
        .collect()
}
