//! The predict port (users): MindIE's inference routes and `/v1/tokenizer`, admission
//! (`max_requests` → 429 `Too many requests`), the body limit, then the relay across a P/D
//! pair ([`super::relay`]) or one instance ([`super::proxy`]). Any other route → 400
//! `Invalid request`. The Coordinator's own errors are `text/plain`, as Motor's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::affinity::Affinity;
use super::config::Algorithm;
use super::out::{self, Out};
use super::proxy;
use super::relay::{self, UserRequest};
use super::shared::Shared;

/// The predict port's state.
#[derive(Clone)]
pub struct Predict {
    shared: Arc<Shared>,
    affinity: Arc<Affinity>,
}

/// The predict port's router.
pub fn router(shared: Arc<Shared>) -> Router {
    let affinity = Arc::new(Affinity::new(shared.cfg.cache_size));
    Router::new()
        .fallback(handle)
        .with_state(Predict { shared, affinity })
}

/// Which user route a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Inference,
    Tokenizer,
}

fn route(method: &Method, path: &str) -> Option<Route> {
    if method != Method::POST {
        return None;
    }
    match path {
        "/v1/chat/completions"
        | "/v1/completions"
        | "/generate"
        | "/generate_stream"
        | "/"
        | "/infer"
        | "/infer_token" => Some(Route::Inference),
        "/v1/tokenizer" => Some(Route::Tokenizer),
        _ => {
            let rest = path.strip_prefix("/v2/models/")?;
            let (model, tail) = rest.split_once('/')?;
            (!model.is_empty() && matches!(tail, "generate" | "generate_stream" | "infer"))
                .then_some(Route::Inference)
        }
    }
}

/// Releases an admission slot when the request ends.
struct Admitted(Arc<Shared>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle(State(st): State<Predict>, req: Request) -> Response {
    let shared = st.shared.clone();
    let Some(kind) = route(req.method(), req.uri().path()) else {
        return out::text(StatusCode::BAD_REQUEST, "Invalid request");
    };
    shared.metrics.received.inc();
    if shared.in_flight.fetch_add(1, Ordering::Relaxed) >= shared.max_requests() {
        shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        shared.metrics.failed.inc();
        return out::text(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
    }
    let admitted = Admitted(shared.clone());
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, shared.cfg.body_limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            shared.metrics.failed.inc();
            let mut resp = out::text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "Request body is larger than request_limit.body_limit ({} MB)",
                    shared.cfg.body_limit / (1024 * 1024)
                ),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            shared.metrics.failed.inc();
            return out::text(StatusCode::BAD_REQUEST, "Request format is invalid");
        }
    };
    let user = UserRequest {
        method: parts.method.clone(),
        target: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.path().to_string()),
        content_type: parts.headers.get(header::CONTENT_TYPE).cloned(),
        body,
    };
    let (out, head) = Out::new();
    let rr = shared.cfg.algorithm == Algorithm::RoundRobin;
    if kind == Route::Tokenizer || shared.single_node() {
        let target = match kind {
            Route::Inference if shared.cfg.algorithm == Algorithm::CacheAffinity => {
                pick_affine(&st, &json)
            }
            _ => shared.registry.pick_one(rr),
        };
        let Some(target) = target else {
            shared.metrics.failed.inc();
            return not_ready();
        };
        let proxy_kind = match kind {
            Route::Tokenizer => proxy::Kind::Tokenizer,
            Route::Inference => proxy::Kind::Inference,
        };
        tokio::spawn(async move {
            let _admitted = admitted;
            proxy::run(shared, user, target, proxy_kind, out).await;
        });
    } else {
        tokio::spawn(async move {
            let _admitted = admitted;
            relay::run(shared, user, out).await;
        });
    }
    match head.await {
        Ok(resp) => resp,
        Err(_) => out::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "request ended without an answer",
        ),
    }
}

fn not_ready() -> Response {
    out::text(
        StatusCode::SERVICE_UNAVAILABLE,
        "MindIE-MS Coordinator is not ready",
    )
}

fn pick_affine(st: &Predict, body: &Value) -> Option<super::registry::Member> {
    let reg = &st.shared.registry;
    let key = Affinity::key(body);
    if let Some(k) = key {
        if let Some(m) = st.affinity.get(k).and_then(|id| reg.get(id)) {
            if m.has_room() {
                return Some(m);
            }
        }
    }
    let m = reg.pick_one(false)?;
    if let Some(k) = key {
        st.affinity.put(k, m.id);
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_routes_are_motors() {
        for p in [
            "/v1/chat/completions",
            "/v1/completions",
            "/generate",
            "/generate_stream",
            "/",
            "/infer",
            "/infer_token",
            "/v2/models/llama/generate",
            "/v2/models/llama/generate_stream",
            "/v2/models/llama/infer",
        ] {
            assert_eq!(route(&Method::POST, p), Some(Route::Inference), "{p}");
        }
        assert_eq!(
            route(&Method::POST, "/v1/tokenizer"),
            Some(Route::Tokenizer)
        );
        for p in [
            "/v1/models",
            "/v2/models//infer",
            "/v2/models/m/ready",
            "/metrics",
        ] {
            assert_eq!(route(&Method::POST, p), None, "{p}");
        }
        assert_eq!(route(&Method::GET, "/v1/completions"), None);
    }
}
