//! `/health`, `/v2/health/live`, `/v2/health/ready`: the truth about whether this instance
//! should get traffic, from the engine's [`Condition`] (stuck engines included).
//!
//! | condition | `/health` | `/v2/health/live` | `/v2/health/ready` |
//! |-----------|-----------|-------------------|--------------------|
//! | idle, serving | 200 (empty) | 200 | 200 |
//! | busy | 200 (empty) | 200 "alive but busy" | 503 |
//! | initialising | 503 | 200 | 503 |
//! | stopping | 503 | 503 | 503 |
//! | abnormal (stuck, gone) | 500 | 500 | 500 |
//! | abnormal: a multi-node slave is down ([`NODE_DOWN`]) | 500 | 200 | 503 |
//!
//! Every non-200 reply is `{"message": ...}` saying why.

use super::condition::{Condition, NODE_DOWN};
use super::MgmtState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

fn message(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

/// GET `/health`: 200 with an empty body when serving; 503 when starting or stopping; 500
/// when the engine is stuck or gone.
pub async fn health(State(s): State<MgmtState>) -> Response {
    let c = Condition::of(&s);
    match &c {
        Condition::Idle | Condition::Serving | Condition::Busy => StatusCode::OK.into_response(),
        Condition::Abnormal(_) => message(StatusCode::INTERNAL_SERVER_ERROR, c.describe()),
        Condition::Init(_) | Condition::Stopping => {
            message(StatusCode::SERVICE_UNAVAILABLE, c.describe())
        }
    }
}

/// GET `/v2/health/live`: the process and its engine are alive (busy included).
pub async fn live(State(s): State<MgmtState>) -> Response {
    let c = Condition::of(&s);
    match &c {
        Condition::Idle | Condition::Serving | Condition::Init(_) => {
            message(StatusCode::OK, "Service is alive".into())
        }
        Condition::Busy => message(StatusCode::OK, c.describe()),
        Condition::Abnormal(f) if f.code == NODE_DOWN => message(StatusCode::OK, c.describe()),
        Condition::Abnormal(_) => message(StatusCode::INTERNAL_SERVER_ERROR, c.describe()),
        Condition::Stopping => message(StatusCode::SERVICE_UNAVAILABLE, c.describe()),
    }
}

/// GET `/v2/health/ready`: 200 when requests will be served at once, else why not.
pub async fn ready(State(s): State<MgmtState>) -> Response {
    let c = Condition::of(&s);
    match &c {
        Condition::Idle | Condition::Serving => message(StatusCode::OK, c.describe()),
        Condition::Abnormal(f) if f.code == NODE_DOWN => {
            message(StatusCode::SERVICE_UNAVAILABLE, c.describe())
        }
        Condition::Abnormal(_) => message(StatusCode::INTERNAL_SERVER_ERROR, c.describe()),
        Condition::Busy | Condition::Init(_) | Condition::Stopping => {
            message(StatusCode::SERVICE_UNAVAILABLE, c.describe())
        }
    }
}
