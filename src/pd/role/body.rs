//! The bodies of `POST /v1/role/{role}` and `POST /v2/role/{role}` (SPEC-PD §3.1, §3.2),
//! checked into a [`RoleRequest`]. MindIE answers every refusal with one fixed 422 text, so
//! each [`RoleBodyError`] names the field (a JSON path), the value found and the rule, for the
//! log.
//!
//! v1 rules (MindIE's, plus the ones marked *ours*): `local` an object; `server_ip` an IPv4
//! string; `id` (unsigned, ≤ 2³²−1) and `host_ip` (IPv4 string) both present or both absent;
//! `p_percentage` unsigned ≤ 100; `device` an array of objects with `device_id` and
//! `device_logical_id` decimal strings, `device_ip` an IPv4 string and an optional `rank_id`
//! decimal string; `peers` absent, null or an array checked alike. *Ours:* every peer has an
//! `id` and ids are distinct (links are keyed by it; MindIE fails later with a 503),
//! `peers` of another type is refused, and 0.0.0.0 is no address.
//!
//! v2: `local` a non-empty array of nodes, `peers` an array of such arrays (one per peer
//! instance); a node has `server_ip`, `host_ip` (IPv4 strings) and a non-empty `dp_inst_list`
//! of `{dp_inst_id (unsigned), device: [...]}`; the instance id is `dp_inst_id / 10000`.
//! *Ours:* every group of one instance gives the same id. Other fields (`super_pod_id`,
//! `sp_size`, …) are read by nobody yet and not checked.

use super::{Device, Instance, Role, RoleRequest};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// v2: `dp_inst_id = instance id * DP_ID_BASE + dp rank`.
pub const DP_ID_BASE: u64 = 10_000;

/// Longest rendering of a refused value in the log.
const QUOTE_LEN: usize = 80;

/// Why a role body was refused: the field, what it held and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value}: {rule}")]
pub struct RoleBodyError {
    pub field: String,
    pub value: String,
    pub rule: String,
}

fn quote(v: Option<&Value>) -> String {
    let text = match v {
        None => return "(absent)".into(),
        Some(v) => v.to_string(),
    };
    match text.char_indices().nth(QUOTE_LEN) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

fn err(field: &str, value: Option<&Value>, rule: impl Into<String>) -> RoleBodyError {
    RoleBodyError {
        field: field.to_string(),
        value: quote(value),
        rule: rule.into(),
    }
}

fn json(body: &[u8]) -> Result<Value, RoleBodyError> {
    serde_json::from_slice(body).map_err(|e| RoleBodyError {
        field: "body".into(),
        value: format!("{} bytes", body.len()),
        rule: format!("must be a JSON object: {e}"),
    })
}

fn object<'a>(v: Option<&'a Value>, field: &str) -> Result<&'a Map<String, Value>, RoleBodyError> {
    v.and_then(Value::as_object)
        .ok_or_else(|| err(field, v, "must be an object"))
}

fn array<'a>(v: Option<&'a Value>, field: &str) -> Result<&'a Vec<Value>, RoleBodyError> {
    v.and_then(Value::as_array)
        .ok_or_else(|| err(field, v, "must be an array"))
}

fn ipv4(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Ipv4Addr, RoleBodyError> {
    let v = obj.get(key);
    let field = format!("{path}.{key}");
    match v.and_then(Value::as_str).map(str::parse::<Ipv4Addr>) {
        Some(Ok(ip)) if !ip.is_unspecified() => Ok(ip),
        _ => Err(err(
            &field,
            v,
            "must be an IPv4 address string other than 0.0.0.0",
        )),
    }
}

/// A decimal string such as `"3"` (MindIE sends device ids as strings).
fn digits(obj: &Map<String, Value>, key: &str, path: &str) -> Result<u32, RoleBodyError> {
    let v = obj.get(key);
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            err(
                &format!("{path}.{key}"),
                v,
                "must be a string of decimal digits, at most 4294967295",
            )
        })
}

fn unsigned(v: Option<&Value>, field: &str, max: u64) -> Result<u64, RoleBodyError> {
    v.and_then(Value::as_u64)
        .filter(|&n| n <= max)
        .ok_or_else(|| {
            err(
                field,
                v,
                format!("must be an unsigned integer, at most {max}"),
            )
        })
}

fn devices(
    obj: &Map<String, Value>,
    path: &str,
    dp_inst_id: Option<u64>,
) -> Result<Vec<Device>, RoleBodyError> {
    let field = format!("{path}.device");
    array(obj.get("device"), &field)?
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let path = format!("{field}[{i}]");
            let d = object(Some(d), &path)?;
            let rank_id = match d.get("rank_id") {
                None => None,
                Some(_) => Some(digits(d, "rank_id", &path)?),
            };
            Ok(Device {
                device_logical_id: digits(d, "device_logical_id", &path)?,
                device_id: digits(d, "device_id", &path)?,
                device_ip: ipv4(d, "device_ip", &path)?,
                rank_id,
                dp_inst_id,
            })
        })
        .collect()
}

/// One v1 instance (`local` or a peer).
fn instance_v1(v: Option<&Value>, path: &str, peer: bool) -> Result<Instance, RoleBodyError> {
    let obj = object(v, path)?;
    let p_percentage = match obj.get("p_percentage") {
        None => None,
        Some(p) => Some(unsigned(Some(p), &format!("{path}.p_percentage"), 100)? as u8),
    };
    let server_ip = ipv4(obj, "server_ip", path)?;
    let (id, host_ip) = match (obj.get("id"), obj.get("host_ip")) {
        (None, None) if peer => {
            return Err(err(
                &format!("{path}.id"),
                None,
                "every peer needs an id (and a host_ip)",
            ))
        }
        (None, None) => (None, None),
        (Some(id), Some(_)) => (
            Some(unsigned(Some(id), &format!("{path}.id"), u32::MAX.into())? as u32),
            Some(ipv4(obj, "host_ip", path)?),
        ),
        (id, _) => {
            return Err(err(
                &format!("{path}.{}", if id.is_some() { "host_ip" } else { "id" }),
                None,
                "id and host_ip must both be present or both be absent",
            ))
        }
    };
    Ok(Instance {
        id,
        server_ip,
        host_ip,
        p_percentage,
        devices: devices(obj, path, None)?,
        dp_inst_ids: Vec::new(),
    })
}

/// `peers` absent or null: none; otherwise an array.
fn peers_array(root: &Map<String, Value>) -> Result<&[Value], RoleBodyError> {
    match root.get("peers") {
        None | Some(Value::Null) => Ok(&[]),
        p => Ok(array(p, "peers")?),
    }
}

fn distinct_ids(peers: &[Instance]) -> Result<(), RoleBodyError> {
    let mut seen = BTreeSet::new();
    for (i, p) in peers.iter().enumerate() {
        if let Some(id) = p.id {
            if !seen.insert(id) {
                return Err(RoleBodyError {
                    field: format!("peers[{i}].id"),
                    value: id.to_string(),
                    rule: "peer ids must be distinct".into(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a `POST /v1/role/{role}` body.
pub fn parse_v1(role: Role, body: &[u8]) -> Result<RoleRequest, RoleBodyError> {
    let root = json(body)?;
    let root = object(Some(&root), "body")?;
    let local = instance_v1(root.get("local"), "local", false)?;
    let peers = peers_array(root)?
        .iter()
        .enumerate()
        .map(|(i, p)| instance_v1(Some(p), &format!("peers[{i}]"), true))
        .collect::<Result<Vec<_>, _>>()?;
    distinct_ids(&peers)?;
    Ok(RoleRequest { role, local, peers })
}

/// One v2 instance: an array of nodes, each with its data-parallel groups.
fn instance_v2(v: Option<&Value>, path: &str) -> Result<Instance, RoleBodyError> {
    let nodes = array(v, path)?;
    let mut instance: Option<Instance> = None;
    for (n, node) in nodes.iter().enumerate() {
        let path = format!("{path}[{n}]");
        let obj = object(Some(node), &path)?;
        let server_ip = ipv4(obj, "server_ip", &path)?;
        let host_ip = ipv4(obj, "host_ip", &path)?;
        let groups_field = format!("{path}.dp_inst_list");
        let groups = array(obj.get("dp_inst_list"), &groups_field)?;
        if groups.is_empty() {
            return Err(err(
                &groups_field,
                obj.get("dp_inst_list"),
                "must list at least one data-parallel group",
            ));
        }
        for (g, group) in groups.iter().enumerate() {
            let path = format!("{groups_field}[{g}]");
            let gobj = object(Some(group), &path)?;
            let id_field = format!("{path}.dp_inst_id");
            let dp = unsigned(gobj.get("dp_inst_id"), &id_field, u64::MAX)?;
            let id = u32::try_from(dp / DP_ID_BASE).map_err(|_| {
                err(
                    &id_field,
                    gobj.get("dp_inst_id"),
                    "dp_inst_id / 10000 (the instance id) must be at most 4294967295",
                )
            })?;
            let inst = instance.get_or_insert_with(|| Instance {
                id: Some(id),
                server_ip,
                host_ip: Some(host_ip),
                p_percentage: None,
                devices: Vec::new(),
                dp_inst_ids: Vec::new(),
            });
            if inst.id != Some(id) {
                return Err(err(
                    &id_field,
                    gobj.get("dp_inst_id"),
                    format!(
                        "every group of one instance must have dp_inst_id / 10000 = {}",
                        inst.id.unwrap_or_default()
                    ),
                ));
            }
            inst.dp_inst_ids.push(dp);
            inst.devices.extend(devices(gobj, &path, Some(dp))?);
        }
    }
    instance.ok_or_else(|| err(path, v, "must list at least one node"))
}

/// Checks a `POST /v2/role/{role}` body.
pub fn parse_v2(role: Role, body: &[u8]) -> Result<RoleRequest, RoleBodyError> {
    let root = json(body)?;
    let root = object(Some(&root), "body")?;
    let local = instance_v2(root.get("local"), "local")?;
    let peers = peers_array(root)?
        .iter()
        .enumerate()
        .map(|(i, p)| instance_v2(Some(p), &format!("peers[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    distinct_ids(&peers)?;
    Ok(RoleRequest { role, local, peers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn device(ip: &str) -> Value {
        json!({"device_id": "0", "device_ip": ip, "device_logical_id": "0", "rank_id": "0"})
    }

    fn v1_body() -> Value {
        json!({
            "local": {"id": 3, "server_ip": "10.0.0.3", "host_ip": "10.0.0.3",
                      "super_pod_id": "0", "instance_idx_in_pod": 0, "num_instances_per_pod": 1,
                      "is_single_container": false, "device": [device("29.0.0.3")]},
            "peers": [
                {"id": 7, "server_ip": "10.0.0.7", "host_ip": "10.0.0.7",
                 "device": [device("29.0.0.7"),
                            {"device_id": "1", "device_ip": "29.0.0.8", "device_logical_id": "1"}]},
                {"id": 8, "server_ip": "10.0.0.8", "host_ip": "10.0.0.8", "device": []}
            ]
        })
    }

    fn v1(body: &Value) -> Result<RoleRequest, RoleBodyError> {
        parse_v1(Role::Decode, body.to_string().as_bytes())
    }

    /// The body with `edit` applied; expects a refusal naming `field`.
    fn refused(edit: impl FnOnce(&mut Value), field: &str) -> RoleBodyError {
        let mut b = v1_body();
        edit(&mut b);
        let e = v1(&b).expect_err(field);
        assert_eq!(e.field, field, "{e}");
        e
    }

    #[test]
    fn a_full_v1_body() {
        let r = v1(&v1_body()).unwrap();
        assert_eq!(r.role, Role::Decode);
        assert_eq!(r.local.id, Some(3));
        assert_eq!(r.local.server_ip, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(r.local.host_ip, Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(r.local.devices[0].rank_id, Some(0));
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.peers[0].id, Some(7));
        assert_eq!(r.peers[0].devices[1].device_id, 1);
        assert_eq!(r.peers[0].devices[1].rank_id, None);
        assert_eq!(r.peers[0].devices[1].device_ip, Ipv4Addr::new(29, 0, 0, 8));
    }

    #[test]
    fn optional_parts() {
        // No peers (absent or null), local without id and host_ip, flex percentage.
        let body = json!({"local": {"server_ip": "10.0.0.3", "p_percentage": 50, "device": []}});
        let r = parse_v1(Role::Flex, body.to_string().as_bytes()).unwrap();
        assert_eq!(r.local.id, None);
        assert_eq!(r.local.p_percentage, Some(50));
        assert!(r.peers.is_empty());
        let mut b = v1_body();
        b["peers"] = Value::Null;
        assert!(v1(&b).unwrap().peers.is_empty());
    }

    #[test]
    fn v1_rules() {
        assert_eq!(parse_v1(Role::Decode, b"{").unwrap_err().field, "body");
        assert_eq!(parse_v1(Role::Decode, b"[]").unwrap_err().field, "body");
        assert_eq!(parse_v1(Role::Decode, b"").unwrap_err().field, "body");
        refused(|b| b["local"] = json!([]), "local");
        refused(
            |b| drop(b.as_object_mut().unwrap().remove("local")),
            "local",
        );
        refused(
            |b| b["local"]["server_ip"] = json!("10.0.0"),
            "local.server_ip",
        );
        refused(
            |b| b["local"]["server_ip"] = json!(167772163),
            "local.server_ip",
        );
        refused(
            |b| b["local"]["server_ip"] = json!("0.0.0.0"),
            "local.server_ip",
        );
        refused(
            |b| drop(b["local"].as_object_mut().unwrap().remove("host_ip")),
            "local.host_ip",
        );
        refused(
            |b| drop(b["local"].as_object_mut().unwrap().remove("id")),
            "local.id",
        );
        refused(|b| b["local"]["id"] = json!(-1), "local.id");
        refused(|b| b["local"]["id"] = json!("3"), "local.id");
        refused(|b| b["local"]["id"] = json!(4294967296u64), "local.id");
        refused(|b| b["local"]["host_ip"] = json!("host"), "local.host_ip");
        refused(
            |b| b["local"]["p_percentage"] = json!(101),
            "local.p_percentage",
        );
        refused(
            |b| b["local"]["p_percentage"] = json!(null),
            "local.p_percentage",
        );
        refused(
            |b| b["local"]["p_percentage"] = json!(5.5),
            "local.p_percentage",
        );
        refused(|b| b["local"]["device"] = json!({}), "local.device");
        refused(
            |b| drop(b["local"].as_object_mut().unwrap().remove("device")),
            "local.device",
        );
        refused(
            |b| b["local"]["device"][0]["device_id"] = json!(0),
            "local.device[0].device_id",
        );
        refused(
            |b| b["local"]["device"][0]["device_logical_id"] = json!("a1"),
            "local.device[0].device_logical_id",
        );
        refused(
            |b| b["local"]["device"][0]["device_logical_id"] = json!(""),
            "local.device[0].device_logical_id",
        );
        refused(
            |b| b["local"]["device"][0]["device_ip"] = json!("29.0.0.300"),
            "local.device[0].device_ip",
        );
        refused(
            |b| b["local"]["device"][0]["rank_id"] = json!(null),
            "local.device[0].rank_id",
        );
        refused(
            |b| b["local"]["device"][0]["rank_id"] = json!("-1"),
            "local.device[0].rank_id",
        );
        refused(|b| b["peers"] = json!({}), "peers");
        refused(
            |b| b["peers"][1]["server_ip"] = json!(""),
            "peers[1].server_ip",
        );
        refused(
            |b| b["peers"][0]["device"][1]["device_ip"] = json!(null),
            "peers[0].device[1].device_ip",
        );
        refused(
            |b| {
                let p = b["peers"][1].as_object_mut().unwrap();
                p.remove("id");
                p.remove("host_ip");
            },
            "peers[1].id",
        );
        refused(|b| b["peers"][1]["id"] = json!(7), "peers[1].id");
        // The message carries field, value and rule.
        let e = refused(
            |b| b["local"]["p_percentage"] = json!(250),
            "local.p_percentage",
        );
        assert_eq!(
            e.to_string(),
            "local.p_percentage = 250: must be an unsigned integer, at most 100"
        );
    }

    fn node(server: &str, groups: Value) -> Value {
        json!({"server_ip": server, "host_ip": server, "sp_size": 1, "cp_size": 1, "dp_inst_list": groups})
    }

    fn v2_body() -> Value {
        json!({
            "local": [node("10.0.0.3", json!([
                {"dp_inst_id": 30000, "device": [device("29.0.0.3")]},
                {"dp_inst_id": 30001, "device": [device("29.0.0.4")]}
            ]))],
            "peers": [
                [node("10.0.0.7", json!([{"dp_inst_id": 70000, "device": [device("29.0.0.7")]}])),
                 node("10.0.0.9", json!([{"dp_inst_id": 70001, "device": [device("29.0.0.9")]}]))],
                [node("10.0.0.8", json!([{"dp_inst_id": 80000, "device": []}]))]
            ]
        })
    }

    fn v2(body: &Value) -> Result<RoleRequest, RoleBodyError> {
        parse_v2(Role::Prefill, body.to_string().as_bytes())
    }

    #[test]
    fn a_full_v2_body() {
        let r = v2(&v2_body()).unwrap();
        assert_eq!(r.local.id, Some(3));
        assert_eq!(r.local.dp_inst_ids, vec![30000, 30001]);
        assert_eq!(r.local.devices.len(), 2);
        assert_eq!(r.local.devices[1].dp_inst_id, Some(30001));
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.peers[0].id, Some(7));
        assert_eq!(r.peers[0].server_ip, Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(r.peers[0].dp_inst_ids, vec![70000, 70001]);
        assert_eq!(r.peers[0].devices.len(), 2);
        assert_eq!(r.peers[1].id, Some(8));
    }

    #[test]
    fn v2_rules() {
        let refused2 = |edit: &dyn Fn(&mut Value), field: &str| {
            let mut b = v2_body();
            edit(&mut b);
            let e = v2(&b).expect_err(field);
            assert_eq!(e.field, field, "{e}");
        };
        refused2(&|b| b["local"] = json!({}), "local");
        refused2(&|b| b["local"] = json!([]), "local");
        refused2(
            &|b| b["local"][0]["server_ip"] = json!("x"),
            "local[0].server_ip",
        );
        refused2(
            &|b| drop(b["local"][0].as_object_mut().unwrap().remove("host_ip")),
            "local[0].host_ip",
        );
        refused2(
            &|b| b["local"][0]["dp_inst_list"] = json!([]),
            "local[0].dp_inst_list",
        );
        refused2(
            &|b| b["local"][0]["dp_inst_list"] = json!(1),
            "local[0].dp_inst_list",
        );
        refused2(
            &|b| b["local"][0]["dp_inst_list"][1]["dp_inst_id"] = json!("30001"),
            "local[0].dp_inst_list[1].dp_inst_id",
        );
        refused2(
            &|b| b["local"][0]["dp_inst_list"][1]["dp_inst_id"] = json!(40001),
            "local[0].dp_inst_list[1].dp_inst_id",
        );
        refused2(
            &|b| b["local"][0]["dp_inst_list"][0]["device"][0]["device_ip"] = json!("1.2.3"),
            "local[0].dp_inst_list[0].device[0].device_ip",
        );
        refused2(&|b| b["peers"][0] = json!({}), "peers[0]");
        refused2(&|b| b["peers"][1] = json!([]), "peers[1]");
        refused2(
            &|b| b["peers"][1][0]["dp_inst_list"][0]["dp_inst_id"] = json!(70002),
            "peers[1].id",
        );
        refused2(
            &|b| b["peers"][0][0]["dp_inst_list"][0]["dp_inst_id"] = json!(u64::MAX),
            "peers[0][0].dp_inst_list[0].dp_inst_id",
        );
    }
}
