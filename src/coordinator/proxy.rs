//! Requests that go to one instance whole: every request in single-node mode, and
//! `/v1/tokenizer` in PD mode. The instance's answer (status, content type, body) streams back
//! as it is; the user hanging up closes the upstream connection, which cancels the request on
//! the instance. `first_token_timeout` bounds the wait for the answer's head, `timeout` (the
//! route's: inference or tokenizer) the whole request.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};

use super::out::Out;
use super::registry::Member;
use super::relay::UserRequest;
use super::shared::Shared;
use crate::motor::client::ClientError;

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
    let _load = target.hold();
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

async fn forward(
    shared: &Arc<Shared>,
    req: &UserRequest,
    target: &Member,
    out: &mut Out,
) -> Result<(), (StatusCode, String)> {
    let err = |status: StatusCode, msg: &str| (status, msg.to_string());
    let build = || -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = shared.business.uri(target.business, &req.target)?;
        let mut upstream = Request::builder()
            .method(req.method.clone())
            .uri(uri)
            .body(Full::new(req.body.clone()))
            .map_err(|e| ClientError::BadPath {
                path: req.target.clone(),
                reason: e.to_string(),
            })?;
        upstream.headers_mut().insert(
            header::CONTENT_TYPE,
            req.content_type
                .clone()
                .unwrap_or(HeaderValue::from_static("application/json")),
        );
        Ok(upstream)
    };
    let head = async {
        match shared
            .business
            .send_connecting(super::relay::CONNECT_ATTEMPTS, build)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) if e.is_connect() => {
                shared.registry.suspect(target.id);
                tracing::warn!(instance = target.id, "instance refused connections: {e}");
                Err(err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Connect to instance failed",
                ))
            }
            Err(e) => Err(err(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
        }
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
