//! The global ranktable (SPEC-CLUSTER §4): group "0" names the Coordinator, group "1" the
//! Controller, groups "2" and up the server instances. Each server's ports default to the
//! `ms_controller.json` values when absent; `inter_comm_port` defaults to MindIE's 1121.
//! Instance ids are kept by [`IdBook`]: order of first sight of `server_ip` + `mgmt_port`,
//! from 0, stable across re-reads.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;

/// MindIE's default `interCommPort`, used when a ranktable server names none.
pub const DEFAULT_INTER_COMM_PORT: u16 = 1121;

/// A refused ranktable entry: the file, the JSON path, what it held and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field} = {value}: {rule}")]
pub struct RankTableError {
    pub file: String,
    pub field: String,
    pub value: String,
    pub rule: String,
}

/// Ports a server takes when the ranktable names none.
#[derive(Debug, Clone, Copy)]
pub struct DefaultPorts {
    pub predict: u16,
    pub mgmt: u16,
    pub metric: u16,
}

/// One server instance of the ranktable.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub group_id: u64,
    pub server_ip: IpAddr,
    /// `server_id` (the host's IP), else `server_ip`: the role body's `host_ip`.
    pub host_ip: String,
    pub predict_port: u16,
    pub mgmt_port: u16,
    pub metric_port: u16,
    pub inter_comm_port: u16,
    pub super_pod_id: Option<String>,
    /// Device objects as the role body carries them (`device_id`, `device_ip`,
    /// `device_logical_id`, `rank_id`, `super_device_id`).
    pub devices: Vec<Value>,
}

impl Server {
    /// The key that names an instance across re-reads.
    pub fn key(&self) -> (IpAddr, u16) {
        (self.server_ip, self.mgmt_port)
    }
}

/// A checked ranktable.
#[derive(Debug, Clone, PartialEq)]
pub struct RankTable {
    /// Group "0"'s first server.
    pub coordinator: Option<IpAddr>,
    pub servers: Vec<Server>,
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: &str, value: Option<&Value>, rule: &str) -> RankTableError {
        RankTableError {
            file: self.file.to_string(),
            field: field.to_string(),
            value: value.map_or_else(|| "(absent)".into(), Value::to_string),
            rule: rule.to_string(),
        }
    }

    /// A string or a number holding an unsigned integer (Motor writes strings; some tools
    /// write numbers).
    fn unsigned(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<u64>, RankTableError> {
        match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().map(Some).map_err(|_| {
                    self.err(
                        &format!("{path}.{key}"),
                        obj.get(key),
                        "must be an unsigned integer",
                    )
                })
            }
            v => Err(self.err(
                &format!("{path}.{key}"),
                v,
                "must be a string of decimal digits",
            )),
        }
    }

    fn port(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        default: u16,
    ) -> Result<u16, RankTableError> {
        match self.unsigned(obj, key, path)? {
            None => Ok(default),
            Some(p) if (1024..=65_535).contains(&p) => Ok(u16::try_from(p).unwrap_or(default)),
            Some(_) => Err(self.err(
                &format!("{path}.{key}"),
                obj.get(key),
                "must be a port in 1024..=65535",
            )),
        }
    }

    fn ip(
        &self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<IpAddr, RankTableError> {
        let v = obj.get(key);
        v.and_then(Value::as_str)
            .and_then(|s| s.trim().parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified())
            .ok_or_else(|| {
                self.err(
                    &format!("{path}.{key}"),
                    v,
                    "must be an IP address string other than 0.0.0.0",
                )
            })
    }

    fn digit_string(
        &self,
        d: &Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Result<Option<String>, RankTableError> {
        Ok(self.unsigned(d, key, path)?.map(|n| n.to_string()))
    }

    fn device(&self, v: &Value, path: &str) -> Result<Value, RankTableError> {
        let d = v
            .as_object()
            .ok_or_else(|| self.err(path, Some(v), "must be an object"))?;
        let device_id = self
            .digit_string(d, "device_id", path)?
            .ok_or_else(|| self.err(&format!("{path}.device_id"), None, "is required"))?;
        let device_ip = self.ip(d, "device_ip", path)?;
        let logical = self
            .digit_string(d, "device_logical_id", path)?
            .unwrap_or_else(|| device_id.clone());
        let mut out = Map::new();
        out.insert("device_id".into(), device_id.into());
        out.insert("device_ip".into(), device_ip.to_string().into());
        out.insert("device_logical_id".into(), logical.into());
        if let Some(rank) = self.digit_string(d, "rank_id", path)? {
            out.insert("rank_id".into(), rank.into());
        }
        if let Some(s) = d.get("super_device_id").and_then(Value::as_str) {
            out.insert("super_device_id".into(), s.into());
        }
        Ok(Value::Object(out))
    }
}

/// Checks a parsed ranktable read from `file`.
pub fn parse(root: &Value, file: &str, ports: DefaultPorts) -> Result<RankTable, RankTableError> {
    let c = Ctx { file };
    let groups = root
        .get("server_group_list")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            c.err(
                "server_group_list",
                root.get("server_group_list"),
                "must be an array",
            )
        })?;
    let mut table = RankTable {
        coordinator: None,
        servers: Vec::new(),
    };
    for (gi, g) in groups.iter().enumerate() {
        let gpath = format!("server_group_list[{gi}]");
        let g = g
            .as_object()
            .ok_or_else(|| c.err(&gpath, Some(g), "must be an object"))?;
        let group_id = c
            .unsigned(g, "group_id", &gpath)?
            .ok_or_else(|| c.err(&format!("{gpath}.group_id"), None, "is required"))?;
        let list = match g.get("server_list") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(a)) => a,
            v => return Err(c.err(&format!("{gpath}.server_list"), v, "must be an array")),
        };
        for (si, s) in list.iter().enumerate() {
            let path = format!("{gpath}.server_list[{si}]");
            let s = s
                .as_object()
                .ok_or_else(|| c.err(&path, Some(s), "must be an object"))?;
            let server_ip = c.ip(s, "server_ip", &path)?;
            match group_id {
                0 => {
                    table.coordinator.get_or_insert(server_ip);
                }
                1 => {}
                _ => {
                    let host_ip = match s.get("server_id") {
                        None | Some(Value::Null) => server_ip.to_string(),
                        Some(_) => c.ip(s, "server_id", &path)?.to_string(),
                    };
                    let devices = match s.get("device") {
                        None | Some(Value::Null) => Vec::new(),
                        Some(Value::Array(a)) => a
                            .iter()
                            .enumerate()
                            .map(|(di, d)| c.device(d, &format!("{path}.device[{di}]")))
                            .collect::<Result<_, _>>()?,
                        v => return Err(c.err(&format!("{path}.device"), v, "must be an array")),
                    };
                    let super_pod_id = s
                        .get("super_pod_id")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    table.servers.push(Server {
                        group_id,
                        server_ip,
                        host_ip,
                        predict_port: c.port(s, "predict_port", &path, ports.predict)?,
                        mgmt_port: c.port(s, "mgmt_port", &path, ports.mgmt)?,
                        metric_port: c.port(s, "metric_port", &path, ports.metric)?,
                        inter_comm_port: c.port(
                            s,
                            "inter_comm_port",
                            &path,
                            DEFAULT_INTER_COMM_PORT,
                        )?,
                        super_pod_id,
                        devices,
                    });
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for s in &table.servers {
        if !seen.insert(s.key()) {
            return Err(RankTableError {
                file: file.to_string(),
                field: "server_list".into(),
                value: format!("{}:{}", s.server_ip, s.mgmt_port),
                rule: "names the same server_ip and mgmt_port twice".into(),
            });
        }
    }
    Ok(table)
}

/// Instance ids: order of first sight of `server_ip` + `mgmt_port`, never reused.
#[derive(Debug, Clone, Default)]
pub struct IdBook {
    ids: HashMap<(IpAddr, u16), u64>,
    next: u64,
}

impl IdBook {
    /// The id of `key`, given now if it has none.
    pub fn id(&mut self, key: (IpAddr, u16)) -> u64 {
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let id = self.next;
        self.ids.insert(key, id);
        self.next += 1;
        id
    }

    /// Records an id remembered from an earlier run (process file).
    pub fn remember(&mut self, key: (IpAddr, u16), id: u64) {
        self.ids.insert(key, id);
        self.next = self.next.max(id + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PORTS: DefaultPorts = DefaultPorts {
        predict: 1025,
        mgmt: 1026,
        metric: 1027,
    };

    fn table(servers: Value) -> Value {
        json!({"version": "1.0", "status": "completed", "server_group_list": [
            {"group_id": "2", "server_count": "2", "server_list": servers},
            {"group_id": "1", "server_count": "1", "server_list": [{"server_ip": "10.0.0.1"}]},
            {"group_id": "0", "server_count": "1", "server_list": [{"server_ip": "10.0.0.2"}]}]})
    }

    #[test]
    fn reads_servers_with_defaults() {
        let t = parse(
            &table(json!([
                {"server_id": "10.0.0.3", "server_ip": "10.0.0.3", "mgmt_port": "2026",
                 "device": [{"device_id": "0", "device_ip": "29.0.0.1", "rank_id": "0"}]},
                {"server_ip": "10.0.0.4"}])),
            "rt.json",
            PORTS,
        )
        .expect("ok");
        assert_eq!(t.coordinator, Some("10.0.0.2".parse().expect("ip")));
        assert_eq!(t.servers.len(), 2);
        assert_eq!(t.servers[0].mgmt_port, 2026);
        assert_eq!(t.servers[0].devices[0]["device_logical_id"], "0");
        assert_eq!(t.servers[1].mgmt_port, 1026);
        assert_eq!(t.servers[1].host_ip, "10.0.0.4");
    }

    #[test]
    fn refusals_name_the_field() {
        let e = parse(
            &table(json!([{"server_ip": "10.0.0.999"}])),
            "rt.json",
            PORTS,
        )
        .expect_err("ip");
        assert_eq!(e.field, "server_group_list[0].server_list[0].server_ip");
        let e = parse(
            &table(json!([{"server_ip": "10.0.0.3", "mgmt_port": "80"}])),
            "rt.json",
            PORTS,
        )
        .expect_err("port");
        assert!(e.to_string().contains("mgmt_port"), "{e}");
        let e = parse(
            &table(json!([{"server_ip": "10.0.0.3"}, {"server_ip": "10.0.0.3"}])),
            "rt.json",
            PORTS,
        )
        .expect_err("twice");
        assert!(e.rule.contains("twice"));
    }

    #[test]
    fn ids_are_stable() {
        let mut b = IdBook::default();
        let a = ("10.0.0.3".parse().expect("ip"), 1026);
        let c = ("10.0.0.4".parse().expect("ip"), 1026);
        assert_eq!(b.id(c), 0);
        assert_eq!(b.id(a), 1);
        assert_eq!(b.id(c), 0);
    }
}
