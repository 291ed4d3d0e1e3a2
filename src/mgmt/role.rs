//! `POST /v1/role/{prefill|decode|flex}` and `POST /v2/role/{prefill|decode}` (SPEC-PD §3.1,
//! §3.2): the Controller assigns this dmi instance its role and peers. The routes exist only
//! in dmi mode ([`MgmtState::pd`] set); elsewhere, and for other roles (`/v2/role/flex`), the
//! plane's 404 answers, as for any unknown path.
//!
//! Replies are MindIE's, byte for byte, since the Controller reads them:
//! - 200 `{"result":"ok"}`: taken; links run in the background.
//! - 422 `{"error":"Req body converts to json fail. Reset to previous node status.",
//!   "error_type":"Input validation error"}` for any bad body (unreadable, over
//!   [`ROLE_BODY_LIMIT`], not JSON, or a broken rule). The text is fixed, so the exact
//!   reason (field, value, rule) goes to the log at warn.
//! - 503 `{"error":"Update pd info failed. Reset to previous node status.",
//!   "error_type":"Service Unavailable"}` (v2: `Parse req json failed. …`, MindIE's v2 text)
//!   when a first assignment lists no peers it needs; nothing changes.

use super::MgmtState;
use crate::pd::role::{parse_v1, parse_v2, ApiVersion, Role};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{post, MethodRouter};
use axum::{Json, Router};
use serde_json::json;

/// Largest role body read (a large cluster's peer list is well below this).
pub const ROLE_BODY_LIMIT: usize = 16 * 1024 * 1024;

const BAD_BODY: &str = "Req body converts to json fail. Reset to previous node status.";
const UPDATE_FAILED_V1: &str = "Update pd info failed. Reset to previous node status.";
const UPDATE_FAILED_V2: &str = "Parse req json failed. Reset to previous node status.";

/// The role routes, merged into the management router in dmi mode.
pub fn routes() -> Router<MgmtState> {
    Router::new()
        .route("/v1/role/prefill", route(ApiVersion::V1, Role::Prefill))
        .route("/v1/role/decode", route(ApiVersion::V1, Role::Decode))
        .route("/v1/role/flex", route(ApiVersion::V1, Role::Flex))
        .route("/v2/role/prefill", route(ApiVersion::V2, Role::Prefill))
        .route("/v2/role/decode", route(ApiVersion::V2, Role::Decode))
        .layer(DefaultBodyLimit::max(ROLE_BODY_LIMIT))
}

fn route(version: ApiVersion, role: Role) -> MethodRouter<MgmtState> {
    post(
        move |State(s): State<MgmtState>, body: Result<Bytes, BytesRejection>| {
            assign(s, version, role, body)
        },
    )
}

fn reply(status: StatusCode, error: &str, error_type: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_type": error_type })),
    )
        .into_response()
}

async fn assign(
    s: MgmtState,
    version: ApiVersion,
    role: Role,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(pd) = &s.pd else {
        // Not routed outside dmi mode; answer as the plane's fallback would.
        return StatusCode::NOT_FOUND.into_response();
    };
    let parsed = match body {
        Ok(body) => match version {
            ApiVersion::V1 => parse_v1(role, &body),
            ApiVersion::V2 => parse_v2(role, &body),
        }
        .map_err(|e| e.to_string()),
        Err(e) => Err(format!("body: {e}")),
    };
    let req = match parsed {
        Ok(req) => req,
        Err(reason) => {
            tracing::warn!(role = role.as_str(), ?version, %reason, "role post refused");
            return reply(
                StatusCode::UNPROCESSABLE_ENTITY,
                BAD_BODY,
                "Input validation error",
            );
        }
    };
    match pd.apply(req) {
        Ok(_) => (StatusCode::OK, Json(json!({ "result": "ok" }))).into_response(),
        Err(e) => {
            tracing::warn!(role = role.as_str(), ?version, reason = %e, "role post refused");
            let text = match version {
                ApiVersion::V1 => UPDATE_FAILED_V1,
                ApiVersion::V2 => UPDATE_FAILED_V2,
            };
            reply(StatusCode::SERVICE_UNAVAILABLE, text, "Service Unavailable")
        }
    }
}

#[cfg(test)]
mod tests;
