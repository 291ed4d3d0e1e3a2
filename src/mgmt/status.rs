//! `/v1/config` (what MindIE's Controller reads) and `/v1/status`, `/v2/status` (role and
//! resources), with the shapes of SPEC §2. The role is `RoleReady` only while the engine's
//! [`Condition`] serves requests (a stuck engine is `RoleUnknown`).

use super::condition::Condition;
use super::MgmtState;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// GET `/v1/config`.
pub async fn config_view(State(s): State<MgmtState>) -> Json<Value> {
    let c = &s.config.config;
    let deploy = &c.backend_config.model_deploy_config;
    let model = c.model();
    Json(json!({
        "modelName": model.map(|m| m.model_name.as_str()).unwrap_or_default(),
        "maxSeqLen": deploy.max_seq_len,
        "npuMemSize": model.map(|m| m.npu_mem_size).unwrap_or(-1),
        "cpuMemSize": model.map(|m| m.cpu_mem_size).unwrap_or(0),
        "worldSize": model.map(|m| m.world_size).unwrap_or(1),
        "maxOutputLen": c.backend_config.schedule_config.max_iter_times,
        "cacheBlockSize": c.backend_config.schedule_config.cache_block_size,
    }))
}

fn role(s: &MgmtState) -> (&'static str, &'static str) {
    let ready = Condition::of(s).serving();
    // Standard (non-PD) instances have no PD role.
    (if ready { "RoleReady" } else { "RoleUnknown" }, "none")
}

fn resource(s: &MgmtState, v2: bool) -> Value {
    let st = s.engine.status();
    let mut r = json!({
        "availSlotsNum": st.free_slots,
        "availBlockNum": st.free_npu_blocks,
        "waitingRequestNum": st.waiting,
        "runningRequestNum": st.running,
        "swappedRequestNum": st.swapped,
        "freeNpuBlockNums": st.free_npu_blocks,
        "freeCpuBlockNums": st.free_cpu_blocks,
        "totalNpuBlockNums": st.total_npu_blocks,
        "totalCpuBlockNums": st.total_cpu_blocks,
    });
    if v2 {
        // One data-parallel instance (this one, dp rank 0): totals and maximum are its own.
        // MindIE serialises its `map<dp rank, remaining blocks>` as `[[rank, blocks], ...]`.
        r["totalAvailNpuSlotsNum"] = json!(st.free_slots);
        r["totalAvailNpuBlockNum"] = json!(st.free_npu_blocks);
        r["maxAvailNpuBlockNum"] = json!(st.free_npu_blocks);
        r["dpInstMap"] = json!([[0, st.free_npu_blocks]]);
    }
    r
}

fn status(s: &MgmtState, v2: bool) -> Value {
    let (role_status, current_role) = role(s);
    json!({
        "service": { "roleStatus": role_status, "currentRole": current_role },
        "resource": resource(s, v2),
        "linkStatus": { "peers": [] },
    })
}

/// GET `/v1/status`.
pub async fn status_v1(State(s): State<MgmtState>) -> Json<Value> {
    Json(status(&s, false))
}

/// GET `/v2/status`.
pub async fn status_v2(State(s): State<MgmtState>) -> Json<Value> {
    Json(status(&s, true))
}
