//! The HTTP/1.1 client the Controller and Coordinator use toward instances and each other:
//! pooled keep-alive connections, over rustls (mutual TLS with the `tls_config` item's
//! certificate, server name = the peer's IP) when a client config is given, plain otherwise.
//! Whole-body calls ([`HttpClient::get`], [`HttpClient::post_json`]) carry a timeout; streamed
//! calls ([`HttpClient::send`]) leave the body's pace to the caller.
//!
//! Certificate rotation: the TLS client config lives in a [`LiveClient`] that SIGHUP may
//! replace. Each call looks at it first; when it changed, the client starts a new connection
//! pool built on the new config, so the next call dials with the new material. The old pool's
//! idle connections are closed (they are not reused after a reload), while calls and streamed
//! bodies already under way finish on the connection they started on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::security::reload::{Live, LiveClient};

/// How long a TCP connect may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a call failed. `Connect` is kept apart: callers retry connects, not requests.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("{call}: no complete answer within {secs} s")]
    Timeout { call: String, secs: u64 },
    #[error("{call}: {reason}")]
    Http { call: String, reason: String },
    #[error("{uri}: answer {status} is not the JSON expected: {reason}")]
    Json {
        uri: String,
        status: u16,
        reason: String,
    },
    #[error("bad request path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
}

impl ClientError {
    /// Whether the connection could not be made at all (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    uri: Uri,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        serde_json::from_slice(&self.body).map_err(|e| ClientError::Json {
            uri: self.uri.to_string(),
            status: self.status,
            reason: e.to_string(),
        })
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

type Body = Full<Bytes>;
type TlsClient = Client<HttpsConnector<HttpConnector>, Body>;

#[derive(Clone)]
enum Inner {
    Plain(Box<Client<HttpConnector, Body>>),
    Tls(Arc<TlsPool>),
}

/// The pool of a TLS client and the config it was built on, renewed when the live config
/// changes.
struct TlsPool {
    live: LiveClient,
    pool: Mutex<(Arc<rustls::ClientConfig>, TlsClient)>,
}

impl TlsPool {
    fn new(live: LiveClient) -> Self {
        let cfg = live.current();
        let client = tls_client(&cfg);
        TlsPool {
            live,
            pool: Mutex::new((cfg, client)),
        }
    }

    /// The pool for the current config: the same one while the config is unchanged, a new one
    /// (dropping the old pool's idle connections) after a reload.
    fn client(&self) -> TlsClient {
        let now = self.live.current();
        let mut pool = match self.pool.lock() {
            Ok(g) => g,
            // The guarded pair is only ever assigned whole.
            Err(poisoned) => poisoned.into_inner(),
        };
        if !Arc::ptr_eq(&pool.0, &now) {
            tracing::debug!("client TLS material changed: new connections use it");
            let client = tls_client(&now);
            *pool = (now, client);
        }
        pool.1.clone()
    }
}

/// The TCP connector every client dials with.
fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http
}

/// A pool of keep-alive connections.
fn pool_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(64);
    builder
}

/// A pool whose connections handshake with `cfg` (HTTP/1.1 over TLS only).
fn tls_client(cfg: &rustls::ClientConfig) -> TlsClient {
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(cfg.clone())
        .https_only()
        .enable_http1()
        .wrap_connector(connector());
    pool_builder().build(https)
}

/// A pooled client; cheap to clone (clones share the pool).
#[derive(Clone)]
pub struct HttpClient {
    inner: Inner,
    timeout: Duration,
}

impl HttpClient {
    /// A client over TLS with fixed material when `tls` is given (`https://` to peers), plain
    /// HTTP otherwise; `timeout` bounds each whole-body call.
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration) -> Self {
        Self::live(tls.map(Live::new), timeout)
    }

    /// A client over TLS when `tls` is given, taking its config from the holder for every new
    /// connection (see the module docs for what a reload does to pooled connections); plain
    /// HTTP otherwise.
    pub fn live(tls: Option<LiveClient>, timeout: Duration) -> Self {
        let inner = match tls {
            Some(live) => Inner::Tls(Arc::new(TlsPool::new(live))),
            None => Inner::Plain(Box::new(pool_builder().build(connector()))),
        };
        HttpClient { inner, timeout }
    }

    /// Whether calls go over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    /// The whole-body timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The URI of `path` (with its query) on `addr`, `https` when this client uses TLS.
    pub fn uri(&self, addr: SocketAddr, path: &str) -> Result<Uri, ClientError> {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{addr}{path}")
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| ClientError::BadPath {
                path: path.to_string(),
                reason: e.to_string(),
            })
    }

    /// Sends `req` (its URI made by [`Self::uri`]) and returns the head as soon as it arrives;
    /// the body streams. Only the connect is bounded here.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let result = match &self.inner {
            Inner::Plain(c) => c.request(req).await,
            Inner::Tls(pool) => pool.client().request(req).await,
        };
        result.map_err(|e| {
            if e.is_connect() {
                let addr = uri
                    .authority()
                    .and_then(|a| a.as_str().parse().ok())
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                ClientError::Connect {
                    addr,
                    reason: error_chain(&e),
                }
            } else {
                ClientError::Http {
                    call: format!("{method} {uri}"),
                    reason: error_chain(&e),
                }
            }
        })
    }

    /// `GET path` on `addr`, whole body, within the client's timeout.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<Reply, ClientError> {
        let req = Request::get(self.uri(addr, path)?)
            .body(Full::new(Bytes::new()))
            .map_err(|e| bad_path(path, e))?;
        self.whole(req).await
    }

    /// `POST path` on `addr` with a JSON body, whole answer, within the client's timeout.
    pub async fn post_json<T: Serialize + ?Sized>(
        &self,
        addr: SocketAddr,
        path: &str,
        body: &T,
    ) -> Result<Reply, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| bad_path(path, e))?;
        let req = Request::post(self.uri(addr, path)?)
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| bad_path(path, e))?;
        self.whole(req).await
    }

    /// Sends `req` and reads the whole answer within the client's timeout.
    pub async fn whole(&self, req: Request<Body>) -> Result<Reply, ClientError> {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.whole_untimed(req)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                call: format!("{method} {uri}"),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Sends `req` and reads the whole answer; the caller bounds the time.
    pub async fn whole_untimed(&self, req: Request<Body>) -> Result<Reply, ClientError> {
        let call = format!("{} {}", req.method(), req.uri());
        let uri = req.uri().clone();
        let resp = self.send(req).await?;
        read_whole(resp, uri, call).await
    }

    /// Sends the request `make` builds, making the connection up to `attempts` times (50 ms
    /// apart). Only connects are repeated: a request that reached the peer is never sent twice.
    pub async fn send_connecting(
        &self,
        attempts: u32,
        make: impl Fn() -> Result<Request<Body>, ClientError>,
    ) -> Result<Response<Incoming>, ClientError> {
        self.send_made(attempts, make)
            .await
            .map(|(resp, _, _)| resp)
    }

    /// [`Self::send_connecting`], then the whole answer; the caller bounds the time.
    pub async fn whole_connecting(
        &self,
        attempts: u32,
        make: impl Fn() -> Result<Request<Body>, ClientError>,
    ) -> Result<Reply, ClientError> {
        let (resp, uri, call) = self.send_made(attempts, make).await?;
        read_whole(resp, uri, call).await
    }

    async fn send_made(
        &self,
        attempts: u32,
        make: impl Fn() -> Result<Request<Body>, ClientError>,
    ) -> Result<(Response<Incoming>, Uri, String), ClientError> {
        let mut tried = 1;
        loop {
            let req = make()?;
            let uri = req.uri().clone();
            let call = format!("{} {uri}", req.method());
            match self.send(req).await {
                Ok(resp) => return Ok((resp, uri, call)),
                Err(e) if e.is_connect() && tried < attempts => {
                    tried += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

async fn read_whole(
    resp: Response<Incoming>,
    uri: Uri,
    call: String,
) -> Result<Reply, ClientError> {
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http {
            call,
            reason: format!("reading the answer: {e}"),
        })?
        .to_bytes();
    Ok(Reply { status, body, uri })
}

fn bad_path(path: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::BadPath {
        path: path.to_string(),
        reason: e.to_string(),
    }
}

/// An error and its sources, joined, so "connection refused" is not lost behind "client error".
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
