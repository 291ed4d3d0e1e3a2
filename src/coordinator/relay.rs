//! One user request across a prefill and a decode instance (SPEC-PD §2.1–2.7, §4):
//!
//! 1. Pick a pair ([`super::registry::Registry::pick_pair`]); none → 503 at once.
//! 2. Wait for the decode instance's frames under a fresh `req-id`, then send the user's
//!    request (path, query and body unchanged) to the prefill instance's business port with
//!    `req-type: prefill`, `req-id`, `d-target`, `d-port`. A refused connection is tried 4
//!    times, then the prefill instance is left out for a moment and another pair is tried
//!    (`max_retry` times); then 500 `Connect to p instance failed`.
//! 3. The prefill instance's answer: not 200 → relayed as it is; `isLastResp: true` → its
//!    `output` is the whole answer; streamed → `output` is the user's first chunk, followed by
//!    the decode instance's `data:` frames until `lastData:`; not streamed → the `lastData:`
//!    body is the answer. `error:` ends the request with an error; `retry:` resends its body
//!    to the prefill instance with `is-recompute: true` (after 1 s, up to `max_retry` times).
//! 4. The user hanging up, `first_token_timeout` (until the prefill answer) or
//!    `infer_timeout` (the whole request) cancel on both instances at once (`stopInfer`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::mpsc;

use super::cancel;
use super::out::Out;
use super::registry::Member;
use super::shared::Shared;
use crate::motor::client::{ClientError, Reply};
use crate::pd::frames::{Frame, FrameKind};

/// Connect attempts toward one prefill instance (Motor's RequestRepeater).
pub const CONNECT_ATTEMPTS: u32 = 4;

/// The user's request as it will be repeated.
#[derive(Debug, Clone)]
pub struct UserRequest {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// How a request failed, as the user sees it.
pub struct Failure {
    pub status: StatusCode,
    pub text: String,
    /// Whether instances may still hold the request (cancel them).
    pub cancel: bool,
}

impl Failure {
    fn new(status: StatusCode, text: impl Into<String>, cancel: bool) -> Self {
        Failure {
            status,
            text: text.into(),
            cancel,
        }
    }
}

/// One request's relay.
pub struct Relay {
    shared: Arc<Shared>,
    req: UserRequest,
    req_id: String,
    pair: Option<(Member, Member)>,
}

/// Runs one request to its end, writing to `out`.
pub async fn run(shared: Arc<Shared>, req: UserRequest, mut out: Out) {
    let req_id = shared.next_req_id();
    let mut relay = Relay {
        shared: shared.clone(),
        req,
        req_id,
        pair: None,
    };
    let deadline = shared.cfg.exceptions.infer_timeout;
    let result = {
        let drive = relay.drive(&mut out);
        match deadline {
            Some(limit) => match tokio::time::timeout(limit, drive).await {
                Ok(r) => r,
                Err(_) => Err(Failure::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "Request inference timeout",
                    true,
                )),
            },
            None => drive.await,
        }
    };
    shared.waiters.unregister(&relay.req_id);
    match result {
        Ok(()) => {
            shared.metrics.success.inc();
        }
        Err(f) => {
            shared.metrics.failed.inc();
            if f.cancel {
                relay.cancel();
            }
            if f.status != StatusCode::OK {
                tracing::info!(req_id = %relay.req_id, status = f.status.as_u16(), "request failed: {}", f.text);
            }
            out.fail(f.status, &f.text).await;
        }
    }
    out.finish();
}

impl Relay {
    fn cancel(&self) {
        if let Some((p, d)) = &self.pair {
            cancel::stop_infer(&self.shared, &self.req_id, &[p, d]);
        }
    }

    async fn drive(&mut self, out: &mut Out) -> Result<(), Failure> {
        let shared = self.shared.clone();
        let rr = shared.cfg.algorithm == super::config::Algorithm::RoundRobin;
        let mut tries = 0;
        let (p, d, answer, mut frames) = loop {
            let Some((p, d)) = shared.registry.pick_pair(rr) else {
                return Err(Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "MindIE-MS Coordinator is not ready",
                    false,
                ));
            };
            self.pair = Some((p.clone(), d.clone()));
            let frames = shared
                .waiters
                .register(&self.req_id, d.id)
                .map_err(|e| Failure::new(StatusCode::BAD_REQUEST, e.to_string(), false))?;
            let _p_load = p.hold();
            let sent = tokio::select! {
                r = self.first_answer(&p, &d, false, None) => r,
                _ = out.closed() => return Err(gone()),
            };
            match sent {
                Ok(answer) => break (p, d, answer, frames),
                Err(e) if e.is_connect() && tries < shared.cfg.exceptions.max_retry => {
                    tracing::warn!(instance = p.id, "prefill instance refused connections: {e}");
                    shared.registry.suspect(p.id);
                    shared.waiters.unregister(&self.req_id);
                    self.pair = None;
                    tries += 1;
                }
                Err(e) if e.is_connect() => {
                    shared.registry.suspect(p.id);
                    return Err(Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Connect to p instance failed",
                        false,
                    ));
                }
                Err(SendError::Timeout) => {
                    return Err(Failure::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "Request first token timeout",
                        true,
                    ))
                }
                Err(e) => {
                    tracing::warn!(instance = p.id, req_id = %self.req_id, "prefill instance failed: {e}");
                    return Err(Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "P instance error",
                        true,
                    ));
                }
            }
        };
        let _d_load = d.hold();
        let mut first = self.read_answer(answer)?;
        let mut retries = 0;
        while let Some(first_now) = first.take() {
            match first_now {
                PAnswer::Whole { stream, output } => {
                    let ct = content_type(stream);
                    let resp = axum::http::Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, ct)
                        .body(axum::body::Body::from(output));
                    if let Ok(resp) = resp {
                        out.respond(resp);
                    }
                    return Ok(());
                }
                PAnswer::Started { stream, output } => {
                    if stream
                        && out.fresh()
                        && !out.start_stream(StatusCode::OK, content_type(true))
                    {
                        return Err(gone());
                    }
                    if stream && !out.chunk(Bytes::from(output)).await {
                        return Err(gone());
                    }
                    match self.follow(out, &mut frames, stream).await? {
                        Next::Done => return Ok(()),
                        Next::Retry(body) => {
                            retries += 1;
                            first = Some(self.retry(&p, &d, body, retries).await?);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the request (or a recompute body) to `p` and reads its whole answer, within
    /// `first_token_timeout`; connects are tried [`CONNECT_ATTEMPTS`] times.
    async fn first_answer(
        &self,
        p: &Member,
        d: &Member,
        recompute: bool,
        body: Option<Bytes>,
    ) -> Result<Reply, SendError> {
        let shared = &self.shared;
        let body = body.unwrap_or_else(|| self.req.body.clone());
        let send = async {
            shared
                .business
                .whole_connecting(CONNECT_ATTEMPTS, || {
                    self.build(p, d, recompute, body.clone())
                })
                .await
                .map_err(SendError::Client)
        };
        match shared.cfg.exceptions.first_token_timeout {
            Some(limit) => tokio::time::timeout(limit, send)
                .await
                .unwrap_or(Err(SendError::Timeout)),
            None => send.await,
        }
    }

    fn build(
        &self,
        p: &Member,
        d: &Member,
        recompute: bool,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let uri = self.shared.business.uri(p.business, &self.req.target)?;
        let mut built = Request::builder()
            .method(self.req.method.clone())
            .uri(uri)
            .body(Full::new(body))
            .map_err(|e| ClientError::BadPath {
                path: self.req.target.clone(),
                reason: e.to_string(),
            })?;
        let headers = built.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            self.req
                .content_type
                .clone()
                .unwrap_or(HeaderValue::from_static("application/json")),
        );
        // P and D are always two instances (a flex instance is not paired with itself).
        let h = |v: &str| HeaderValue::from_str(v).ok();
        let pairs = [
            ("req-type", h("prefill")),
            ("req-id", h(&self.req_id)),
            ("d-target", h(&d.d_target)),
            ("d-port", h(&d.business.port().to_string())),
            (
                "is-recompute",
                recompute.then(|| HeaderValue::from_static("true")),
            ),
        ];
        for (name, value) in pairs {
            if let Some(v) = value {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        Ok(built)
    }

    /// The prefill instance's 200 answer, or its other answers relayed as they are.
    fn read_answer(&self, answer: Reply) -> Result<Option<PAnswer>, Failure> {
        if answer.status != 200 {
            return Err(Failure {
                status: StatusCode::from_u16(answer.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                text: answer.text(),
                cancel: false,
            });
        }
        let v: Value = answer.json().map_err(|e| {
            tracing::warn!(req_id = %self.req_id, "prefill answer is not the expected JSON: {e}");
            Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "P instance error", true)
        })?;
        let stream = v.get("isStream").and_then(Value::as_bool).unwrap_or(false);
        let last = v
            .get("isLastResp")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let output = v
            .get("output")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Ok(Some(if last {
            PAnswer::Whole { stream, output }
        } else {
            PAnswer::Started { stream, output }
        }))
    }

    /// Relays the decode instance's frames until the request ends or asks for a recompute.
    async fn follow(
        &self,
        out: &mut Out,
        frames: &mut mpsc::UnboundedReceiver<Frame>,
        stream: bool,
    ) -> Result<Next, Failure> {
        loop {
            let frame = tokio::select! {
                f = frames.recv() => f,
                _ = out.closed() => return Err(gone()),
            };
            let Some(frame) = frame else {
                return Err(Failure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "decode instance stopped answering",
                    true,
                ));
            };
            match frame.kind {
                FrameKind::Data => {
                    if stream && !out.chunk(Bytes::from(frame.payload)).await {
                        return Err(gone());
                    }
                }
                FrameKind::LastData => {
                    if stream {
                        if !out.chunk(Bytes::from(frame.payload)).await {
                            return Err(gone());
                        }
                    } else {
                        let resp = axum::http::Response::builder()
                            .status(StatusCode::OK)
                            .header(header::CONTENT_TYPE, content_type(false))
                            .body(axum::body::Body::from(frame.payload));
                        if let Ok(resp) = resp {
                            out.respond(resp);
                        }
                    }
                    return Ok(Next::Done);
                }
                FrameKind::Error => {
                    return Err(Failure::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        frame.payload,
                        true,
                    ))
                }
                FrameKind::Retry => return Ok(Next::Retry(Bytes::from(frame.payload))),
                FrameKind::Ka | FrameKind::Close => {}
            }
        }
    }

    /// Resends a recompute body to the prefill instance: after 1 s, up to `max_retry` times.
    async fn retry(
        &self,
        p: &Member,
        d: &Member,
        body: Bytes,
        round: u32,
    ) -> Result<PAnswer, Failure> {
        let max = self.shared.cfg.exceptions.max_retry;
        if round > max {
            return Err(Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Request retry failed",
                true,
            ));
        }
        for _ in 0..=max {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if let Ok(answer) = self.first_answer(p, d, true, Some(body.clone())).await {
                if answer.status == 200 {
                    if let Ok(Some(a)) = self.read_answer(answer) {
                        return Ok(a);
                    }
                }
            }
        }
        Err(Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Request retry failed",
            true,
        ))
    }
}

/// Why the prefill instance's answer did not come.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Client(ClientError),
    #[error("first token timeout")]
    Timeout,
}

impl SendError {
    fn is_connect(&self) -> bool {
        matches!(self, SendError::Client(e) if e.is_connect())
    }
}

enum PAnswer {
    /// The whole answer (the request ended at the prefill instance).
    Whole { stream: bool, output: String },
    /// The first part (stream) or nothing yet (not streamed); the decode instance follows.
    Started { stream: bool, output: String },
}

enum Next {
    Done,
    Retry(Bytes),
}

fn gone() -> Failure {
    Failure::new(StatusCode::OK, "the user hung up", true)
}

fn content_type(stream: bool) -> HeaderValue {
    if stream {
        HeaderValue::from_static("text/event-stream")
    } else {
        HeaderValue::from_static("application/json")
    }
}
