//! The PD parts of `/v1/status` and `/v2/status` (SPEC-PD §3.3): `service` and `linkStatus`.
//!
//! - `service`: `{"roleStatus", "currentRole"}` plus, in v1 for a flex instance,
//!   `p_percentage` (as MindIE). `currentRole` is `flex` for flex (MindIE says `none`, §7).
//! - `linkStatus`: `{"peers": [{"target": <instance id>, "link": "ok" | "failed : <reason>"}]}`
//!   by instance id; peers still linking are left out. Failures are reported by instance id,
//!   never by device IP (§7).
//! - v2 lists an instance only when all its data-parallel groups are linked. Links here are
//!   made per peer *instance* (all its groups at once, keyed by `dp_inst_id / 10000`), so that
//!   is exactly the instances whose link is ok; failed ones are left out, as MindIE does.

use super::{LinkState, PeerLink, Role, RoleStatus, RoleView};
use serde_json::{json, Value};

/// `service`, with `status` as the caller judged it (the engine's condition weighs in).
pub fn service_json(view: &RoleView, status: RoleStatus, v2: bool) -> Value {
    let mut service = json!({
        "roleStatus": status.as_str(),
        "currentRole": view.role.map_or("none", Role::as_str),
    });
    if let (false, Some(Role::Flex), Some(p)) = (v2, view.role, view.p_percentage) {
        service["p_percentage"] = json!(p);
    }
    service
}

/// `linkStatus`.
pub fn link_status_json(peers: &[PeerLink], v2: bool) -> Value {
    let peers: Vec<Value> = peers
        .iter()
        .filter_map(|p| {
            let link = match &p.state {
                LinkState::Ok => "ok".to_string(),
                LinkState::Failed(reason) if !v2 => format!("failed : {reason}"),
                LinkState::Failed(_) | LinkState::Linking => return None,
            };
            Some(json!({ "target": p.id, "link": link }))
        })
        .collect();
    json!({ "peers": peers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pd::role::Instance;
    use std::net::Ipv4Addr;

    fn peer(id: u32, state: LinkState) -> PeerLink {
        PeerLink {
            id,
            state,
            instance: Instance {
                id: Some(id),
                server_ip: Ipv4Addr::new(10, 0, 0, 1),
                host_ip: None,
                p_percentage: None,
                devices: Vec::new(),
                dp_inst_ids: vec![u64::from(id) * 10_000],
            },
        }
    }

    #[test]
    fn service() {
        let view = RoleView::default();
        assert_eq!(
            service_json(&view, RoleStatus::RoleUnknown, false).to_string(),
            r#"{"roleStatus":"RoleUnknown","currentRole":"none"}"#
        );
        let decode = RoleView {
            status: RoleStatus::RoleReady,
            role: Some(Role::Decode),
            p_percentage: Some(40),
        };
        assert_eq!(
            service_json(&decode, RoleStatus::RoleReady, false).to_string(),
            r#"{"roleStatus":"RoleReady","currentRole":"decode"}"#
        );
        let flex = RoleView {
            role: Some(Role::Flex),
            ..decode
        };
        assert_eq!(
            service_json(&flex, RoleStatus::RoleSwitching, false).to_string(),
            r#"{"roleStatus":"RoleSwitching","currentRole":"flex","p_percentage":40}"#
        );
        assert_eq!(
            service_json(&flex, RoleStatus::RoleReady, true).to_string(),
            r#"{"roleStatus":"RoleReady","currentRole":"flex"}"#
        );
    }

    #[test]
    fn links() {
        let peers = [
            peer(3, LinkState::Ok),
            peer(5, LinkState::Linking),
            peer(7, LinkState::Failed("2001".into())),
        ];
        assert_eq!(
            link_status_json(&peers, false).to_string(),
            r#"{"peers":[{"target":3,"link":"ok"},{"target":7,"link":"failed : 2001"}]}"#
        );
        assert_eq!(
            link_status_json(&peers, true).to_string(),
            r#"{"peers":[{"target":3,"link":"ok"}]}"#
        );
        assert_eq!(link_status_json(&[], false).to_string(), r#"{"peers":[]}"#);
    }
}
