//! Admission to the business plane: refuse while stopping, cap concurrent requests at
//! `maxLinkNum` (the next one gets 503 + `Retry-After` at once, SPEC §0.4), cap bodies at
//! `maxRequestLength` MB (413), and count each request in flight until its reply body ends, so
//! a graceful stop can drain streams too. Also tags every reply with a `RequestUUID`. Each 503
//! refusal is counted in `request_refused_total` (the project's own series): such a request
//! never reaches the engine, so MindIE's `request_received_total` does not count it.

use super::error::{ApiError, ErrorStyle};
use super::REQUEST_UUID;
use crate::lifecycle::{InflightGuard, Lifecycle};
use crate::metrics::Metrics;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

/// The id of one request, in request extensions and the `RequestUUID` reply header.
#[derive(Debug, Clone)]
pub struct RequestUuid(pub String);

/// Admission limits of the business plane.
#[derive(Clone)]
pub struct Admission {
    permits: Arc<Semaphore>,
    max_links: usize,
    body_limit: usize,
    life: Arc<Lifecycle>,
    /// Where refusals are counted (`request_refused_total`); `None` with metrics off.
    metrics: Option<Arc<Metrics>>,
}

impl Admission {
    /// `max_links` concurrent requests, bodies up to `max_request_mb` MB.
    pub fn new(max_links: usize, max_request_mb: usize, life: Arc<Lifecycle>) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_links)),
            max_links,
            body_limit: max_request_mb.saturating_mul(1024 * 1024),
            life,
            metrics: None,
        }
    }

    /// Counts every 503 refusal in `metrics` (`request_refused_total`).
    pub fn count_refusals(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }

    fn refused(&self) {
        if let Some(m) = &self.metrics {
            m.request_refused.with_label_values(&[m.model()]).inc();
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("max_links", &self.max_links)
            .field("body_limit", &self.body_limit)
            .field("counts_refusals", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

/// A client-sent request id kept as it is: 1 to 128 visible ASCII characters (else `None`,
/// and the caller makes its own).
pub fn usable_request_id(v: &str) -> Option<&str> {
    (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())).then_some(v)
}

/// Outermost layer of every plane: gives the request an id and puts it on the reply.
pub async fn tag_request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_UUID)
        .and_then(|v| v.to_str().ok())
        .and_then(usable_request_id)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestUuid(id.clone()));
    // Everything logged while the request is handled carries its id (JSON logs show it as
    // `span.request_id`); the answer is logged at debug level.
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_UUID, v);
    }
    resp
}

fn too_large(limit: usize, style: ErrorStyle) -> Response {
    let mb = limit / (1024 * 1024);
    let msg = format!(
        "Request body too large: the limit is {mb} MB (ServerConfig.maxRequestLength, allowed 1..100)"
    );
    match style {
        ErrorStyle::OpenAi => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg)
            .style(style)
            .into_response(),
        ErrorStyle::MindIe => (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(serde_json::json!({
                "message": msg,
                "error": msg,
                "error_type": ApiError::mindie_type(StatusCode::PAYLOAD_TOO_LARGE),
            })),
        )
            .into_response(),
    }
}

/// The business plane's gate (see module docs).
pub async fn business_gate(State(adm): State<Admission>, req: Request, next: Next) -> Response {
    let style = ErrorStyle::for_path(req.uri().path());
    if adm.life.is_stopping() {
        adm.refused();
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Service is stopping")
            .style(style)
            .retry_after(5)
            .into_response();
    }
    let Ok(permit) = adm.permits.clone().try_acquire_owned() else {
        adm.refused();
        tracing::warn!(
            max_link_num = adm.max_links,
            "request refused: too many concurrent requests"
        );
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Too many concurrent requests: {} are being served (ServerConfig.maxLinkNum = {}); retry later",
                adm.max_links, adm.max_links
            ),
        )
        .style(style)
        .retry_after(1)
        .into_response();
    };
    let inflight = adm.life.enter();

    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > adm.body_limit as u64) {
        return too_large(adm.body_limit, style);
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = match Limited::new(body, adm.body_limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => return too_large(adm.body_limit, style),
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("failed to read request body: {e}"),
            )
            .style(style)
            .into_response()
        }
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (parts, body) = resp.into_parts();
    let held = HeldBody {
        inner: body,
        _permit: permit,
        _inflight: inflight,
    };
    Response::from_parts(parts, Body::new(held))
}

/// A reply body that keeps the request's permit and in-flight count until it is done or
/// dropped (client gone).
struct HeldBody {
    inner: Body,
    _permit: OwnedSemaphorePermit,
    _inflight: InflightGuard,
}

impl HttpBody for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
