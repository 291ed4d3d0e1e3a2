//! The business plane of a dmi instance (SPEC-PD §2.2): inference requests pass only with a
//! role; a prefill instance takes them with the DMI headers (`req-type`, `req-id`,
//! `d-target`) and runs them through [`super::prefill_route`]; a decode instance takes its
//! work over gRPC and answers on `GET /dresult`. Every other route is served as in standard
//! mode, except `GET /health`, which answers here as on vLLM.

use super::headers::{self, DmiHeaders};
use super::node::PdNode;
use super::role::{Role, RoleStatus, RoleView};
use super::route::RouteKind;
use super::vllm;
use crate::engine::EngineMonitor;
use crate::http::error::{ApiError, ErrorStyle};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// An error reply in the style of `path`'s flavour.
pub(super) fn refuse(status: StatusCode, path: &str, msg: impl Into<String>) -> Response {
    ApiError::new(status, msg)
        .style(ErrorStyle::for_path(path))
        .into_response()
}

/// A request body read whole, at most `ServerConfig.maxRequestLength` (413 beyond).
pub(super) async fn read_body(node: &PdNode, path: &str, body: Body) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, node.settings.max_request_bytes)
        .await
        .map_err(|e| {
            refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                path,
                format!("request body: {e} (ServerConfig.maxRequestLength)"),
            )
        })
}

/// The gate in front of a dmi instance's business routes.
pub async fn business_gate(State(node): State<Arc<PdNode>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if req.method() == Method::GET && path == "/dresult" {
        return dresult(&node);
    }
    if req.method() == Method::GET && path == "/health" {
        // Liveness on the business port, which routers speaking vLLM's protocol probe before
        // they send work: 200 while the instance serves (the management plane's `/health`,
        // which answers here instead when both planes share a port, is the full check).
        return if node.engine.status().ready {
            StatusCode::OK.into_response()
        } else {
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        };
    }
    let Some(kind) = RouteKind::of(req.method(), &path) else {
        return next.run(req).await;
    };
    let dmi = headers::parse(req.headers());
    let req = if matches!(dmi, Ok(None)) {
        // Without DMI headers: maybe vLLM's protocol (`kv_transfer_params`, any role).
        let (parts, body) = req.into_parts();
        let bytes = match read_body(&node, &path, body).await {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match vllm::side(&json) {
            Err(msg) => return refuse(StatusCode::BAD_REQUEST, &path, msg),
            Ok(Some(vllm::Side::Prefill)) => {
                return vllm::prefill(node, parts, Body::from(bytes), next).await
            }
            Ok(Some(vllm::Side::Decode(remote))) => {
                return vllm::decode(node, parts, Body::from(bytes), remote, next).await
            }
            Ok(None) => Request::from_parts(parts, Body::from(bytes)),
        }
    } else {
        req
    };
    let view = node.role.view();
    if view.status == RoleStatus::RoleUnknown {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &path,
            "this dmi instance has no role yet: the Controller assigns one with POST \
             /v1/role/{prefill|decode|flex} on the management port",
        );
    }
    if !takes_prefill(&view) {
        return refuse(
            StatusCode::BAD_REQUEST,
            &path,
            format!(
                "this instance's role is {}: inference requests go to a prefill instance \
                 (with the req-type, req-id and d-target headers); a decode instance takes \
                 its work over gRPC",
                role_name(&view)
            ),
        );
    }
    let dmi = match dmi {
        Ok(Some(h)) => h,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                &path,
                "a prefill instance needs the headers req-type: prefill, req-id: <hex> and \
                 d-target: <decode ip>[;<interCommPort>]",
            )
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, &path, e.to_string()),
    };
    if is_self(&node, &dmi) {
        // A flex instance that is its own decode side serves the request whole.
        return next.run(req).await;
    }
    super::prefill_route::prefill(node, kind, dmi, req, next).await
}

/// `d-target` names this very instance (its ip, and its interCommPort when a port is given).
fn is_self(node: &PdNode, h: &DmiHeaders) -> bool {
    h.d_target.ip == node.settings.ip
        && h.d_target
            .port
            .is_none_or(|p| p == node.settings.inter_comm_port)
}

/// The role's name for messages (`none` before the first assignment).
fn role_name(view: &RoleView) -> &'static str {
    view.role.map_or("none", Role::as_str)
}

/// A prefill instance, or a flex one with some prefill share (SPEC-PD §2.2; flex without a
/// percentage takes both phases).
fn takes_prefill(view: &RoleView) -> bool {
    match view.role {
        Some(Role::Prefill) => true,
        Some(Role::Flex) => view.p_percentage != Some(0),
        _ => false,
    }
}

/// A decode instance, or a flex one with some decode share.
pub fn takes_decode(view: &RoleView) -> bool {
    match view.role {
        Some(Role::Decode) => true,
        Some(Role::Flex) => view.p_percentage != Some(100),
        _ => false,
    }
}

/// `GET /dresult`: decode and flex instances only.
fn dresult(node: &PdNode) -> Response {
    let view = node.role.view();
    if !takes_decode(&view) {
        return refuse(
            StatusCode::BAD_REQUEST,
            "/dresult",
            format!(
                "GET /dresult is served by decode instances; this instance's role is {}",
                role_name(&view)
            ),
        );
    }
    node.hub.connect()
}
