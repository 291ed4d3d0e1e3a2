//! `/v1/config` (what MindIE's Controller reads) and `/v1/status`, `/v2/status` (role and
//! resources), with the shapes of SPEC §2. The role is `RoleReady` only while the engine's
//! [`Condition`] serves requests (a stuck engine is `RoleUnknown`).
//!
//! In dmi mode ([`MgmtState::pd`]) `service` and `linkStatus` come from the PD role state
//! (SPEC-PD §3.3), weighed with the engine: no role yet, or an engine that is stopping or
//! abnormal, is `RoleUnknown`; a role taken while the engine still starts (the model loads
//! once the role is posted) is `RoleSwitching`; otherwise the role state's own status.

use super::condition::Condition;
use super::MgmtState;
use crate::pd::role::{self, RoleState, RoleStatus};
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

/// The role status shown in dmi mode: the role state's, unless the engine cannot serve.
fn dmi_role_status(role: RoleStatus, engine: &Condition) -> RoleStatus {
    match (role, engine) {
        (RoleStatus::RoleUnknown, _) => RoleStatus::RoleUnknown,
        (_, c) if c.serving() => role,
        (_, Condition::Init(_)) => RoleStatus::RoleSwitching,
        _ => RoleStatus::RoleUnknown,
    }
}

fn dmi_status(s: &MgmtState, pd: &RoleState, v2: bool) -> Value {
    let snap = pd.snapshot();
    let shown = dmi_role_status(snap.view.status, &Condition::of(s));
    json!({
        "service": role::status::service_json(&snap.view, shown, v2),
        "resource": resource(s, v2),
        "linkStatus": role::status::link_status_json(&snap.peers, v2),
    })
}

fn status(s: &MgmtState, v2: bool) -> Value {
    if let Some(pd) = &s.pd {
        return dmi_status(s, pd, v2);
    }
    let (role_status, current_role) = role(s);
    let mut v = json!({
        "service": { "roleStatus": role_status, "currentRole": current_role },
        "resource": resource(s, v2),
        "linkStatus": { "peers": [] },
    });
    if let (Some(nodes), Some(obj)) = (&s.multinode, v.as_object_mut()) {
        obj.insert("multiNode".into(), nodes.json());
    }
    v
}

/// GET `/v1/status`.
pub async fn status_v1(State(s): State<MgmtState>) -> Json<Value> {
    Json(status(&s, false))
}

/// GET `/v2/status`.
pub async fn status_v2(State(s): State<MgmtState>) -> Json<Value> {
    Json(status(&s, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_weighs_on_the_dmi_role_status() {
        use RoleStatus::*;
        let init = Condition::Init("loading".into());
        for c in [Condition::Idle, Condition::Serving, Condition::Busy] {
            assert_eq!(dmi_role_status(RoleReady, &c), RoleReady);
            assert_eq!(dmi_role_status(RoleSwitching, &c), RoleSwitching);
            assert_eq!(dmi_role_status(RoleUnknown, &c), RoleUnknown);
        }
        assert_eq!(dmi_role_status(RoleReady, &init), RoleSwitching);
        assert_eq!(dmi_role_status(RoleUnknown, &init), RoleUnknown);
        assert_eq!(
            dmi_role_status(RoleReady, &Condition::Stopping),
            RoleUnknown
        );
    }
}
