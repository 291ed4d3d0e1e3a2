//! The inter-instance gRPC transport: tonic served and dialled over this project's own rustls
//! configurations (ring provider, CRL-aware verifiers from [`crate::security::tls`]), or plain
//! h2c when TLS is off.
//!
//! This module owns the connection level: the accept loop with a TLS handshake per connection
//! (bounded by [`HANDSHAKE_TIMEOUT`], failures logged and never ending the server), the server
//! settings of SPEC-PD §1.1 (16 MiB messages, 2000 concurrent streams), the connector that
//! dials a peer (TCP, then TLS with the peer's IP address as server name), and [`LinkError`],
//! the one error type callers of the cluster layer see.
//!
//! tonic's own TLS is not used: it has no CRL hook (a revoked client was accepted), and its
//! features pull aws-lc-rs. gRPC needs HTTP/2, so both sides narrow ALPN to `h2` on a copy of
//! the plane's config (the plane's server config also offers `http/1.1` for the HTTP planes).
//!
//! Both halves read their config from a [`crate::security::reload::Live`] holder per new
//! connection ([`serve_live`], [`dial_from_live`]), so a SIGHUP reload reaches new
//! connections and reconnects while open HTTP/2 connections keep the material they started
//! with.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::security::reload::{Live, LiveClient, LiveServer};
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Server, Uri};

/// Largest gRPC message either side accepts or sends (SPEC-PD §1.1: max receive 16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// HTTP/2 streams one connection may have open at once (SPEC-PD §1.1).
pub const MAX_CONCURRENT_STREAMS: u32 = 2000;
/// How long an accepted connection may take to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 flow-control windows: one KV chunk (4 MiB) in flight per stream, and a whole
/// maximal message per connection, so a pull is not throttled by the 64 KiB default.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame we accept (the default is 16 KiB): a 4 MiB KV chunk arrives in 4
/// frames instead of 256, so the sender makes far fewer writes.
const MAX_FRAME: u32 = 1 << 20;
/// Keep-alive pings while calls are open, so a dead peer is noticed. Not on idle
/// connections: gRPC C++ servers (a MindIE peer) answer frequent idle pings with GOAWAY
/// `too_many_pings`.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Back-off after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Buffer for the server's first bytes after a client handshake (one TLS record at most).
const FIRST_READ_BYTES: usize = 16 << 10;
/// The only ALPN protocol gRPC uses.
const H2: &[u8] = b"h2";

/// Why talking to a peer instance failed. Texts name the peer (where known) and the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("TLS refused: {reason}")]
    Tls { reason: String },
    #[error("peer answered {code:?}: {message}")]
    Status { code: tonic::Code, message: String },
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    #[error("KV layout mismatch: {0}")]
    Layout(String),
    #[error("malformed KV stream: {0}")]
    Protocol(String),
}

/// Why the gRPC server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("inter-instance gRPC server failed: {0}")]
pub struct ServeError(#[from] tonic::transport::Error);

/// What a handler can learn about its caller: `request.extensions().get::<PeerInfo>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// Whether the connection is TLS (the client's certificate was verified when the plane
    /// asks for mutual TLS).
    pub tls: bool,
}

/// Serves `routes` on `listener` until `shutdown` is cancelled (graceful: in-flight calls
/// finish). With `tls`, every connection is a rustls server stream (the config's verifier
/// decides which client certificates pass, CRLs included); without, plain h2c.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_live(listener, tls.map(Live::new), routes, shutdown).await
}

/// [`serve`] with swappable TLS: each new connection is accepted with the holder's current
/// config (SIGHUP reload, [`crate::security::reload`]); open connections keep theirs.
pub async fn serve_live(
    listener: TcpListener,
    tls: Option<LiveServer>,
    routes: Routes,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let acceptor = tls.map(GrpcAcceptor::new);
    let stop = shutdown.child_token();
    let (tx, rx) = tokio::sync::mpsc::channel::<ServerIo>(64);
    let accept = tokio::spawn(accept_loop(listener, acceptor, tx, stop.clone()));
    let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|io| (Ok::<_, io::Error>(io), rx))
    });
    let result = Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
        .await;
    stop.cancel();
    let _ = accept.await;
    result.map_err(ServeError)
}

/// The acceptor of a gRPC plane: the holder's current config with ALPN `h2` only, rebuilt
/// when the holder's config changes (compared by pointer), reused otherwise.
struct GrpcAcceptor {
    live: LiveServer,
    built: Option<(Arc<rustls::ServerConfig>, tokio_rustls::TlsAcceptor)>,
}

impl GrpcAcceptor {
    fn new(live: LiveServer) -> Self {
        Self { live, built: None }
    }

    fn current(&mut self) -> tokio_rustls::TlsAcceptor {
        let now = self.live.current();
        match &self.built {
            Some((seen, acceptor)) if Arc::ptr_eq(seen, &now) => acceptor.clone(),
            _ => {
                let mut cfg = (*now).clone();
                cfg.alpn_protocols = vec![H2.to_vec()];
                let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
                self.built = Some((now, acceptor.clone()));
                acceptor
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut acceptor: Option<GrpcAcceptor>,
    tx: tokio::sync::mpsc::Sender<ServerIo>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("inter-instance gRPC: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = acceptor.as_mut().map(GrpcAcceptor::current) else {
            if tx.send(ServerIo::plain(tcp, peer)).await.is_err() {
                return;
            }
            continue;
        };
        let (tx, stop) = (tx.clone(), stop.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
            let result = tokio::select! {
                () = stop.cancelled() => return,
                r = handshake => r,
            };
            match result {
                Ok(Ok(stream)) => {
                    let _ = tx.send(ServerIo::tls(stream, peer)).await;
                }
                Ok(Err(e)) => tracing::warn!(
                    "inter-instance gRPC: TLS handshake with {peer} failed: {}",
                    io_reason(&e)
                ),
                Err(_) => tracing::warn!(
                    "inter-instance gRPC: TLS handshake with {peer} did not finish within \
                     {HANDSHAKE_TIMEOUT:?}; connection closed"
                ),
            }
        });
    }
}

/// Opens a channel to the peer at `addr`: TCP (bounded by `connect_timeout`), then, with
/// `tls`, a rustls handshake that verifies the peer's certificate for `addr`'s IP address
/// (and presents ours when the config has one); else plain h2c. The channel reconnects on
/// its own later, through the same connector.
pub async fn dial(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
) -> Result<Channel, LinkError> {
    dial_from(addr, None, tls, connect_timeout).await
}

/// [`dial`] from the local address `local` (the connection's source IP; any port), so a peer
/// that checks where a caller connects from sees the address the caller names itself by.
pub async fn dial_from(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
) -> Result<Channel, LinkError> {
    dial_from_live(addr, local, tls.map(Live::new), connect_timeout).await
}

/// [`dial_from`] with swappable TLS: every connection the channel opens (the first and each
/// reconnect) uses the holder's current client config (SIGHUP reload,
/// [`crate::security::reload`]).
pub async fn dial_from_live(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    tls: Option<LiveClient>,
    connect_timeout: Duration,
) -> Result<Channel, LinkError> {
    let connector = tls.map(|live| Arc::new(GrpcConnector::new(live)));
    let scheme = if connector.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| LinkError::Connect {
            addr,
            reason: error_chain(&e),
        })?
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false);
    let service = tower::service_fn(move |_: Uri| {
        let connector = connector.as_ref().map(|c| c.current());
        async move {
            connect_io(addr, local, connector, connect_timeout)
                .await
                .map(TokioIo::new)
        }
    });
    endpoint
        .connect_with_connector(service)
        .await
        .map_err(|e| dial_error(addr, connect_timeout, &e))
}

/// The connector of a gRPC link: the holder's current client config with ALPN `h2` only,
/// rebuilt when the holder's config changes (compared by pointer), reused otherwise.
struct GrpcConnector {
    live: LiveClient,
    built: std::sync::Mutex<Option<(Arc<rustls::ClientConfig>, tokio_rustls::TlsConnector)>>,
}

impl GrpcConnector {
    fn new(live: LiveClient) -> Self {
        Self {
            live,
            built: std::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> tokio_rustls::TlsConnector {
        let now = self.live.current();
        let mut built = match self.built.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match &*built {
            Some((seen, connector)) if Arc::ptr_eq(seen, &now) => connector.clone(),
            _ => {
                let mut cfg = (*now).clone();
                cfg.alpn_protocols = vec![H2.to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
                *built = Some((now, connector.clone()));
                connector
            }
        }
    }
}

async fn tcp_connect(addr: SocketAddr, local: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let Some(local) = local else {
        return TcpStream::connect(addr).await;
    };
    let socket = if local.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(local, 0))?;
    socket.connect(addr).await
}

async fn connect_io(
    addr: SocketAddr,
    local: Option<std::net::IpAddr>,
    connector: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
) -> Result<ClientIo, DialFailure> {
    let tcp = match tokio::time::timeout(timeout, tcp_connect(addr, local)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(DialFailure::Connect(e.to_string())),
        Err(_) => return Err(DialFailure::Timeout),
    };
    let _ = tcp.set_nodelay(true);
    let Some(connector) = connector else {
        return Ok(ClientIo {
            stream: Stream::Plain(tcp),
            pending: Vec::new(),
            pos: 0,
        });
    };
    let name = ServerName::IpAddress(addr.ip().into());
    let mut tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(DialFailure::Tls(io_reason(&e))),
        Err(_) => return Err(DialFailure::Timeout),
    };
    // In TLS 1.3 the server judges our certificate after our side of the handshake is done:
    // a refusal (revoked, unknown CA) only shows on the first read. An HTTP/2 server sends
    // its SETTINGS at once, so read that first record here and report a refusal as a TLS
    // failure of the dial, not as a broken first call. A server that stays silent is left
    // to HTTP/2 (after waiting `timeout` once).
    let mut first = vec![0u8; FIRST_READ_BYTES];
    let n = match tokio::time::timeout(timeout, tls.read(&mut first)).await {
        Ok(Ok(0)) => {
            return Err(DialFailure::Tls(
                "the server closed the connection right after the handshake (our \
                 certificate refused?)"
                    .into(),
            ))
        }
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return Err(DialFailure::Tls(io_reason(&e))),
        Err(_) => 0,
    };
    first.truncate(n);
    Ok(ClientIo {
        stream: Stream::Tls(Box::new(tls)),
        pending: first,
        pos: 0,
    })
}

/// What the connector reports; recovered from tonic's error chain by [`dial_error`].
#[derive(Debug, thiserror::Error)]
enum DialFailure {
    #[error("{0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

fn dial_error(addr: SocketAddr, timeout: Duration, e: &(dyn StdError + 'static)) -> LinkError {
    match find_in_chain::<DialFailure>(e) {
        Some(DialFailure::Connect(reason)) => LinkError::Connect {
            addr,
            reason: reason.clone(),
        },
        Some(DialFailure::Timeout) => LinkError::ConnectTimeout { addr, timeout },
        Some(DialFailure::Tls(reason)) => LinkError::Tls {
            reason: format!("{addr}: {reason}"),
        },
        None => match find_rustls(e) {
            Some(tls) => LinkError::Tls {
                reason: format!("{addr}: {tls}"),
            },
            None => LinkError::Connect {
                addr,
                reason: error_chain(e),
            },
        },
    }
}

/// Turns a failed call into a [`LinkError`]: a TLS failure found anywhere in the status's
/// cause chain (e.g. a TLS 1.3 server refusing our certificate after the handshake) is
/// [`LinkError::Tls`]; a failed reconnect is what the connector said; DEADLINE_EXCEEDED is
/// [`LinkError::Deadline`]; anything else is the peer's status.
pub fn rpc_error(status: tonic::Status, deadline: Duration) -> LinkError {
    if let Some(tls) = find_rustls(&status) {
        return LinkError::Tls {
            reason: tls.to_string(),
        };
    }
    if let Some(f) = find_in_chain::<DialFailure>(&status) {
        return match f {
            DialFailure::Tls(reason) => LinkError::Tls {
                reason: reason.clone(),
            },
            other => LinkError::Status {
                code: status.code(),
                message: format!("{}: {other}", status.message()),
            },
        };
    }
    // tonic reports a `grpc-timeout` that ran out as CANCELLED "Timeout expired": on the
    // client with `TimeoutExpired` as the source, from a tonic server with the text only.
    if find_in_chain::<tonic::TimeoutExpired>(&status).is_some()
        || (status.code() == tonic::Code::Cancelled && status.message() == "Timeout expired")
    {
        return LinkError::Deadline(deadline);
    }
    match status.code() {
        tonic::Code::DeadlineExceeded => LinkError::Deadline(deadline),
        code => {
            let mut message = status.message().to_string();
            if let Some(src) = status.source() {
                message = format!("{message} ({})", error_chain(src));
            }
            LinkError::Status { code, message }
        }
    }
}

/// The first `T` in `e`'s cause chain, looking inside `io::Error`s too (whose `source()`
/// skips the wrapped error).
fn find_in_chain<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if let Some(t) = find_in_chain::<T>(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

fn find_rustls<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    find_in_chain::<rustls::Error>(e)
}

/// An I/O error's text, preferring the rustls error inside it.
fn io_reason(e: &io::Error) -> String {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// `e: cause: cause…`, without repeating a cause whose text the previous one already holds.
fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let text = err.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        cur = err.source();
    }
    out
}

/// An accepted connection as tonic sees it: TCP or TLS over TCP, with the peer's address.
struct ServerIo {
    stream: Stream<tokio_rustls::server::TlsStream<TcpStream>>,
    remote_addr: SocketAddr,
}

impl ServerIo {
    fn plain(tcp: TcpStream, remote_addr: SocketAddr) -> Self {
        ServerIo {
            stream: Stream::Plain(tcp),
            remote_addr,
        }
    }

    fn tls(tls: tokio_rustls::server::TlsStream<TcpStream>, remote_addr: SocketAddr) -> Self {
        ServerIo {
            stream: Stream::Tls(Box::new(tls)),
            remote_addr,
        }
    }
}

impl Connected for ServerIo {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        PeerInfo {
            remote_addr: self.remote_addr,
            tls: matches!(self.stream, Stream::Tls(_)),
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A dialled connection: TCP or TLS over TCP, with the bytes already read from it (the
/// server's first TLS record, see [`connect_io`]) handed out first.
struct ClientIo {
    stream: Stream<tokio_rustls::client::TlsStream<TcpStream>>,
    pending: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ClientIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.pending.len() {
            let n = buf.remaining().min(this.pending.len() - this.pos);
            buf.put_slice(&this.pending[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.pending.len() {
                this.pending = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ClientIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// A TCP stream, or a TLS stream `T` over one; tokio's I/O traits go to whichever it holds
/// (both are `Unpin`, so no projection is needed).
enum Stream<T> {
    Plain(TcpStream),
    Tls(Box<T>),
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
