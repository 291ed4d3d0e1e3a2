//! The deadline for a new connection's first bytes. hyper bounds an HTTP/1.1 request head
//! (`header_read_timeout`), but only once it knows the connection speaks HTTP/1.1; before that,
//! the listener reads until it can tell HTTP/1.1 from HTTP/2 (the 24-byte HTTP/2 preface), with
//! no time limit at all. [`FirstBytes`] wraps a connection's stream (TCP or TLS) and fails its
//! reads with `TimedOut` when that point is not reached by the deadline: a client that connects
//! and sends nothing, or trickles an HTTP/2 preface, is closed.
//!
//! The deadline ends for good as soon as the bytes read tell the version: the first byte that
//! differs from the HTTP/2 preface (HTTP/1.1, from there on under hyper's own head timeout), or
//! the whole preface (HTTP/2). It never bounds a request or reply after that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What an HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A stream whose reads fail once `timeout` has passed without the HTTP version being known.
pub struct FirstBytes<S> {
    inner: S,
    /// `None` once the version is known.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Bytes of the preface matched so far.
    matched: usize,
}

impl<S> FirstBytes<S> {
    /// Wraps `inner`; the deadline starts now.
    pub fn new(inner: S, timeout: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
            matched: 0,
        }
    }

    /// Takes note of `bytes`, the next bytes read; ends the deadline once they tell the version.
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if H2_PREFACE.get(self.matched) != Some(&b) {
                self.deadline = None;
                return;
            }
            self.matched += 1;
            if self.matched == H2_PREFACE.len() {
                self.deadline = None;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_none() {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                if filled.len() == before {
                    // End of stream: nothing left to wait for.
                    this.deadline = None;
                } else {
                    let new = filled[before..].to_vec();
                    this.saw(&new);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent no request in time",
                ))),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_after(first: &[u8], wait: Duration) -> io::Result<Vec<u8>> {
        let (client, server) = tokio::io::duplex(1024);
        let mut s = FirstBytes::new(server, Duration::from_millis(200));
        let first = first.to_vec();
        let writer = tokio::spawn(async move {
            let mut client = client;
            client.write_all(&first).await.ok();
            tokio::time::sleep(wait).await;
            client.write_all(b"more").await.ok();
            client
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"more") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        drop(writer.await);
        Ok(got)
    }

    #[tokio::test]
    async fn silence_times_out() {
        let e = read_after(b"", Duration::from_secs(2))
            .await
            .expect_err("a silent client is cut off");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn a_trickled_http2_preface_times_out() {
        let e = read_after(b"PRI * HTTP", Duration::from_secs(2))
            .await
            .expect_err("half a preface is not enough");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn http1_bytes_end_the_deadline() {
        let got = read_after(b"GE", Duration::from_millis(500))
            .await
            .expect("read");
        assert_eq!(got, b"GEmore");
    }

    #[tokio::test]
    async fn a_whole_http2_preface_ends_the_deadline() {
        let got = read_after(H2_PREFACE, Duration::from_millis(500))
            .await
            .expect("read");
        assert!(got.starts_with(H2_PREFACE) && got.ends_with(b"more"));
    }
}
