//! A streaming client for server-sent events over a real socket: reads `data:` events as they
//! arrive; dropping it closes the connection (a client that goes away).

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::net::TcpStream;

pub struct SseStream {
    pub status: u16,
    pub content_type: String,
    /// The reply's `RequestUUID` header.
    pub request_uuid: String,
    body: Incoming,
    buf: Vec<u8>,
    conn: tokio::task::JoinHandle<()>,
}

impl SseStream {
    /// POSTs `body` to `path` and returns once the reply head arrived.
    pub async fn open(addr: SocketAddr, path: &str, body: &Value) -> SseStream {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .expect("handshake");
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method("POST")
            .uri(path)
            .header("host", addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("send");
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let request_uuid = resp
            .headers()
            .get("RequestUUID")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        SseStream {
            status,
            content_type,
            request_uuid,
            body: resp.into_body(),
            buf: Vec::new(),
            conn,
        }
    }

    /// The payload of the next `data:` event (`None` at the end of the body).
    pub async fn next_data(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(event).expect("utf8 event");
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(bytes) = frame.into_data() {
                        self.buf.extend_from_slice(&bytes);
                    }
                }
                Some(Err(e)) => panic!("stream error: {e}"),
                None => {
                    assert!(
                        self.buf.iter().all(|b| b.is_ascii_whitespace()),
                        "unterminated event: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    return None;
                }
            }
        }
    }

    /// Every event until the end; JSON events parsed, `[DONE]` kept as the string "[DONE]".
    pub async fn collect(mut self) -> Vec<Value> {
        let mut out = Vec::new();
        while let Some(d) = self.next_data().await {
            out.push(if d == "[DONE]" {
                Value::String(d)
            } else {
                serde_json::from_str(&d).unwrap_or_else(|e| panic!("bad event {d:?}: {e}"))
            });
        }
        out
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.conn.abort();
    }
}
