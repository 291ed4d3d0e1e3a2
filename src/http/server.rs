//! Listeners. Each plane binds its own socket and runs its own accept loop, optionally behind
//! its own rustls configuration, serving HTTP/1.1 and HTTP/2 (ALPN) with hyper. Connections are
//! watched so a graceful stop lets in-flight requests finish. The TLS config is read per
//! connection from the plane's [`LiveServer`], so a SIGHUP reload
//! ([`crate::security::reload`]) applies to new connections while open ones keep theirs.
//! Slow and abusive clients meet the limits of [`super::conn_limits`]: a TLS handshake, a
//! connection's first bytes ([`super::first_bytes`]) or an HTTP/1.1 request head that takes too
//! long is closed, an oversized head gets 431, and an HTTP/2 peer that stops answering pings is
//! dropped.

use super::first_bytes::FirstBytes;
use crate::security::reload::LiveServer;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// A listener that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {plane} plane: {source}{hint}")]
pub struct BindError {
    pub plane: String,
    pub addr: SocketAddr,
    pub source: std::io::Error,
    pub hint: &'static str,
}

/// Binds `addr` for `plane`, with a message that names ip:port and the likely fix.
pub async fn bind(plane: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process holds this port: stop it, e.g. a leftover daemon, or change the port in config.json)"
            }
            std::io::ErrorKind::AddrNotAvailable => {
                " (this machine has no such address: set an address of this host in config.json)"
            }
            std::io::ErrorKind::PermissionDenied => " (permission denied for this address/port)",
            _ => "",
        };
        BindError { plane: plane.to_string(), addr, source, hint }
    })
}

/// One plane ready to serve.
pub struct Plane {
    /// The planes this listener serves, e.g. `business+management`.
    pub name: String,
    pub listener: TcpListener,
    /// The plane's TLS, read for each new connection; `None`: plain HTTP.
    pub tls: Option<LiveServer>,
    pub router: Router,
}

/// Accepts connections until `stop` is cancelled, then returns the handle that waits for the
/// plane's open connections to finish.
pub async fn serve(plane: Plane, stop: CancellationToken) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let limits = super::conn_limits::current();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(true);
    // HTTP/2: the same head limit; a peer that stops answering pings is dropped.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let tls = plane.tls;
    let name: Arc<str> = plane.name.into();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = plane.listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(plane = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(plane.router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|live| TlsAcceptor::from(live.current()));
        let name = name.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, handshake)
                        .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::info!(plane = %name, %peer, error = %e, "TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::info!(plane = %name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = FirstBytes::new(tls, limits.header_timeout);
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(plane = %name, %peer, error = %e, "connection ended with error");
                    }
                }
                None => {
                    let io = FirstBytes::new(tcp, limits.header_timeout);
                    let conn = builder.serve_connection(TokioIo::new(io), svc);
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(plane = %name, %peer, error = %e, "connection ended with error");
                    }
                }
            }
        });
    }
    graceful
}
