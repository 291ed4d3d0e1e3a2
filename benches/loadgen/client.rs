//! The HTTP side of the generator: an [`Endpoint`] (http:// or https:// with a rustls client
//! config) that opens HTTP/1.1 connections with hyper, fetches small JSON documents, and runs
//! one streaming request, timing every SSE event as it arrives into a [`Record`]. A worker
//! keeps its connection alive between requests and reconnects when the server closed it.
//!
//! No `unwrap` on anything from the network: failures become [`ErrorKind`]s in the record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::record::{ErrorKind, Record, Tracker};
use crate::sse::{classify, clip, SseParser};

/// A live HTTP/1.1 connection.
pub type Conn = SendRequest<Full<Bytes>>;

/// Where requests go.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

impl Endpoint {
    /// From `http://host:port` or `https://host:port` (no path). `https` needs `tls`;
    /// `server_name` overrides the name the certificate is checked against (default: host).
    pub fn parse(
        url: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
        server_name: Option<&str>,
    ) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("URL {url}: scheme must be http or https")),
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(format!("URL {url}: give the server root, without a path"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("URL {url} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = match (https, tls) {
            (false, _) => None,
            (true, None) => return Err(format!("URL {url} is https but no TLS config")),
            (true, Some(cfg)) => {
                let name = server_name.unwrap_or(&host).to_string();
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("TLS server name {name}: {e}"))?;
                Some((tokio_rustls::TlsConnector::from(cfg), name))
            }
        };
        Ok(Endpoint { host, port, tls })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens a connection (TCP, then TLS for https).
    pub async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connect {}: {e}", self.authority()))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let s = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.authority()))?;
                handshake(TokioIo::new(s)).await
            }
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.authority())
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(Full::new(body))
            .map_err(|e| e.to_string())
    }

    /// GET `path` on a fresh connection: status and the body as JSON.
    pub async fn get_json(&self, path: &str) -> Result<(u16, Value), String> {
        let mut conn = self.connect().await?;
        let resp = conn
            .send_request(self.request("GET", path, Bytes::new())?)
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("GET {path}: body: {e}"))?
            .to_bytes();
        let v = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "GET {path}: {status}, body is not JSON ({e}): {}",
                clip(&String::from_utf8_lossy(&body))
            )
        })?;
        Ok((status, v))
    }

    /// A sender ready for a request: `conn` if it is still open, else a new connection.
    async fn ready(&self, conn: &mut Option<Conn>) -> Result<(Conn, bool), String> {
        if let Some(mut c) = conn.take() {
            if !c.is_closed() && c.ready().await.is_ok() {
                return Ok((c, true));
            }
        }
        Ok((self.connect().await?, false))
    }

    /// POSTs `body` to `path` and reads the SSE reply, timing each event from the moment the
    /// request is about to be sent. `expected` is the exact output length (ignore_eos).
    /// `conn` is reused when open and left open for the next request when the reply was read
    /// to its end.
    pub async fn stream(
        &self,
        conn: &mut Option<Conn>,
        path: &str,
        body: Bytes,
        expected: Option<u64>,
        timeout: Duration,
    ) -> Record {
        let start = Instant::now();
        let run = self.stream_inner(conn, path, body, expected, start);
        match tokio::time::timeout(timeout, run).await {
            Ok(Ok(rec)) => rec,
            Ok(Err((kind, msg))) => Record::failed(kind, msg, start.elapsed()),
            Err(_) => {
                *conn = None;
                Record::failed(
                    ErrorKind::Transport,
                    format!("no complete reply within {} s", timeout.as_secs_f64()),
                    start.elapsed(),
                )
            }
        }
    }

    async fn stream_inner(
        &self,
        conn: &mut Option<Conn>,
        path: &str,
        body: Bytes,
        expected: Option<u64>,
        start: Instant,
    ) -> Result<Record, (ErrorKind, String)> {
        let transport = |m: String| (ErrorKind::Transport, m);
        let (mut sender, reused) = self.ready(conn).await.map_err(transport)?;
        let req = self
            .request("POST", path, body.clone())
            .map_err(transport)?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            // A kept-alive connection the server closed meanwhile: one retry on a new one.
            Err(_) if reused => {
                sender = self.connect().await.map_err(transport)?;
                let req = self.request("POST", path, body).map_err(transport)?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| transport(format!("POST {path}: {e}")))?
            }
            Err(e) => return Err(transport(format!("POST {path}: {e}"))),
        };
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let text = match body.collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => format!("(body unreadable: {e})"),
            };
            *conn = Some(sender);
            return Err((ErrorKind::Http, format!("{status}: {}", clip(text.trim()))));
        }
        let mut parser = SseParser::new();
        let mut tracker = Tracker::new();
        let mut over = false;
        while !over {
            match body.frame().await {
                None => break,
                Some(Err(e)) => {
                    tracker.fail(ErrorKind::Transport, format!("reading the stream: {e}"));
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    for ev in parser.push(&data) {
                        if tracker.on_event(classify(&ev), start.elapsed()) {
                            over = true;
                            break;
                        }
                    }
                }
            }
        }
        if !over {
            if let Some(ev) = parser.finish() {
                tracker.on_event(classify(&ev), start.elapsed());
            }
        }
        let rec = tracker.finish(start.elapsed(), expected);
        // Keep the connection when the reply ends right after [DONE] (the usual case).
        if over && rec.completed() && drained(body).await {
            *conn = Some(sender);
        }
        Ok(rec)
    }
}

/// Reads what is left of a body (after `[DONE]` only the end of the chunked encoding);
/// `true` when it ended cleanly within a second.
async fn drained(mut body: hyper::body::Incoming) -> bool {
    let rest = async {
        while let Some(f) = body.frame().await {
            if f.is_err() {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(1), rest)
        .await
        .unwrap_or(false)
}

async fn handshake<I>(io: I) -> Result<Conn, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
