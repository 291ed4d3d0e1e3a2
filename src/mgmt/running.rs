//! GET `/v1/engine-server/running-status` (SPEC §2): the engine's [`Condition`] as MindIE's
//! status code — 0 READY (idle), 1 NORMAL (serving), 2 ABNORMAL (stuck or gone), 3 PAUSE
//! (draining for a stop), 4 INIT (not started), 5 BUSY (batch full, requests queue) — with
//! `errors: [{timestamp, errCode, createdBy}]` describing an abnormal engine.

use super::condition::Condition;
use super::MgmtState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

pub async fn running_status(State(s): State<MgmtState>) -> Json<Value> {
    let c = Condition::of(&s);
    let errors: Vec<Value> = match &c {
        Condition::Abnormal(f) => vec![json!({
            "timestamp": f.since_ms,
            "errCode": f.code,
            "createdBy": "engine",
            "message": f.message,
        })],
        _ => Vec::new(),
    };
    Json(json!({ "status": c.code(), "errors": errors }))
}
