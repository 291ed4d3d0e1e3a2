//! The body of `POST /v1/role/{prefill|decode}` the Controller sends (SPEC-PD §3.1): `local`
//! names the instance (id, server_ip, host_ip, devices, pod placement), `peers` the
//! instances of the other role it should link to.

use super::ranktable::Server;
use serde_json::{json, Map, Value};

fn entry(id: u64, s: &Server) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), id.into());
    m.insert("server_ip".into(), s.server_ip.to_string().into());
    m.insert("host_ip".into(), s.host_ip.clone().into());
    if let Some(sp) = &s.super_pod_id {
        m.insert("super_pod_id".into(), sp.clone().into());
    }
    m.insert("device".into(), Value::Array(s.devices.clone()));
    m
}

/// The role body for instance `id` on `server` with `peers`.
pub fn build(id: u64, server: &Server, peers: &[(u64, &Server)]) -> Value {
    let mut local = entry(id, server);
    local.insert("instance_idx_in_pod".into(), 0.into());
    local.insert("num_instances_per_pod".into(), 1.into());
    local.insert("is_single_container".into(), false.into());
    let peers: Vec<Value> = peers
        .iter()
        .map(|(pid, s)| Value::Object(entry(*pid, s)))
        .collect();
    json!({"local": local, "peers": peers})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pd::role::{body::parse_v1, Role};

    fn server(ip: &str) -> Server {
        Server {
            group_id: 2,
            server_ip: ip.parse().expect("ip"),
            host_ip: ip.to_string(),
            predict_port: 1025,
            mgmt_port: 1026,
            metric_port: 1027,
            inter_comm_port: 1121,
            super_pod_id: None,
            devices: vec![
                json!({"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"}),
            ],
        }
    }

    #[test]
    fn the_daemon_accepts_the_body() {
        let (p, d) = (server("10.0.0.3"), server("10.0.0.4"));
        let body = build(0, &p, &[(1, &d)]);
        let req = parse_v1(Role::Prefill, body.to_string().as_bytes()).expect("accepted");
        assert_eq!(req.local.id, Some(0));
        assert_eq!(req.peers.len(), 1);
        assert_eq!(req.peers[0].id, Some(1));
        assert_eq!(body["peers"][0]["server_ip"], "10.0.0.4");
    }
}
