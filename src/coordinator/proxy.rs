//! Requests that go to one instance whole: every request in single-node mode, and
//! `/v1/tokenizer` in PD mode. The instance's answer (status, content type, body) streams back
//! as it is; the user hanging up closes the upstream connection, which cancels the request on
//! the instance. `first_token_timeout` bounds the wait for the answer's head, `timeout` (the
//! route's: inference or tokenizer) the whole request.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::out::Out;
use super::registry::Member;
use super::relay::UserRequest;
use super::shared::Shared;

/// Which timeout text applies.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Inference,
    Tokenizer,
}

/// Serves `req` on `target`.
pub async fn run(shared: Arc<Shared>, req: UserRequest, target: Member, kind: Kind, mut out: Out) {
    let (limit, text) = match kind {
        Kind::Inference => (
            shared.cfg.exceptions.infer_timeout,
            "Request inference timeout",
        ),
        Kind::Tokenizer => (
            shared.cfg.exceptions.tokenizer_timeout,
            "Request tokenizer timeout",
        ),
    };
    let _load = {
        target
            .load
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LoadGuard(target.load.clone())
    };
    let work = forward(&shared, &req, &target, &mut out);
    let result = match limit {
        Some(l) => tokio::time::timeout(l, work)
            .await
            .unwrap_or(Err((StatusCode::REQUEST_TIMEOUT, text.to_string()))),
        None => work.await,
    };
    match result {
        Ok(()) => shared.metrics.success.inc(),
        Err((status, msg)) => {
            shared.metrics.failed.inc();
            out.fail(status, &msg).await;
        }
    }
    out.finish();
}

struct LoadGuard(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn forward(
    shared: &Arc<Shared>,
    req: &UserRequest,
    target: &Member,
    out: &mut Out,
) -> Result<(), (StatusCode, String)> {
    let err = |status: StatusCode, msg: &str| (status, msg.to_string());
    let uri = shared
        .business
        .uri(target.business, &req.target)
        .map_err(|e| err(StatusCode::BAD_REQUEST, &e.to_string()))?;
    let mut upstream = Request::builder()
        .method(req.method.clone())
        .uri(uri)
        .body(Full::new(req.body.clone()))
        .map_err(|e| err(StatusCode::BAD_REQUEST, &e.to_string()))?;
    upstream.headers_mut().insert(
        header::CONTENT_TYPE,
        req.content_type
            .clone()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    let head = async {
        let mut last = None;
        for attempt in 0..super::relay::CONNECT_ATTEMPTS {
            match shared.business.send(clone_req(&upstream)).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() => {
                    last = Some(e);
                    if attempt + 1 < super::relay::CONNECT_ATTEMPTS {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Err(e) => return Err(err(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
            }
        }
        shared.registry.suspect(target.id);
        tracing::warn!(
            instance = target.id,
            "instance refused connections: {last:?}"
        );
        Err(err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Connect to instance failed",
        ))
    };
    let head = tokio::select! {
        h = async {
            match shared.cfg.exceptions.first_token_timeout {
                Some(l) => tokio::time::timeout(l, head).await.unwrap_or(Err(err(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request first token timeout",
                ))),
                None => head.await,
            }
        } => h?,
        _ = out.closed() => return Ok(()),
    };
    let status = head.status();
    let ct = head
        .headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/json"));
    if !out.start_stream(status, ct) {
        return Ok(());
    }
    let mut body = head.into_body();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = out.closed() => return Ok(()),
        };
        match frame {
            None => return Ok(()),
            Some(Err(e)) => {
                return Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("instance {} broke off its answer: {e}", target.id),
                ))
            }
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    if !out.chunk(data).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn clone_req(r: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut b = Request::builder()
        .method(r.method().clone())
        .uri(r.uri().clone());
    if let Some(h) = b.headers_mut() {
        *h = r.headers().clone();
    }
    b.body(r.body().clone())
        .unwrap_or_else(|_| Request::new(r.body().clone()))
}
