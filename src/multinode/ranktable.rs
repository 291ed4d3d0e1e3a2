//! The per-instance multi-node ranktable (`RANK_TABLE_FILE`, HCCL's seed format; SPEC §6
//! "Multi-node", ASCEND.md "Rank table"): reading it under the ranktable's file rules (mode
//! ≤ 640, own user, no symlink, at most 10 MB), checking every entry (all problems at once,
//! each with its JSON path), and placing this node in it: which server is local
//! (`MIES_CONTAINER_IP` = `container_ip`, else `HOST_IP` = `server_id`) and which is the master
//! (the holder of rank 0).
//!
//! This is not the Controller's *global* ranktable (`controller::ranktable`, another format).

use crate::config::Env;
use crate::security::perms::{FileRole, PermChecker, PermError};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// The environment variable naming the ranktable.
pub const RANK_TABLE_ENV: &str = "RANK_TABLE_FILE";
/// The container's address; matched against `container_ip`.
pub const CONTAINER_IP_ENV: &str = "MIES_CONTAINER_IP";
/// The host's address; matched against `server_id`.
pub const HOST_IP_ENV: &str = "HOST_IP";
/// Largest ranktable accepted: 10 MiB, as config.json.
pub const MAX_RANKTABLE_BYTES: u64 = 10 * 1024 * 1024;
/// `server_count` range.
pub const MIN_SERVERS: u64 = 2;
pub const MAX_SERVERS: u64 = 60;
/// Largest `device_id` (physical chip id).
pub const MAX_DEVICE_ID: u64 = 63;
/// Largest `rank_id`.
pub const MAX_RANK_ID: u64 = 511;

/// The path of a problem about the document as a whole.
const ROOT: &str = "(root)";

/// A checked ranktable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankTable {
    /// In file order.
    pub servers: Vec<RankServer>,
}

/// One server (node) of the ranktable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankServer {
    pub server_id: String,
    pub container_ip: Option<IpAddr>,
    /// In file order.
    pub devices: Vec<RankDevice>,
}

impl RankServer {
    /// The node's address: `container_ip`, else `server_id` (which [`parse`] has checked is
    /// an IP in that case). A hand-built server with neither gives `0.0.0.0`.
    pub fn addr(&self) -> IpAddr {
        self.container_ip
            .or_else(|| self.server_id.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    /// The smallest `rank_id` of its devices (`u32::MAX` for a hand-built server with none).
    pub fn min_rank(&self) -> u32 {
        self.devices
            .iter()
            .map(|d| d.rank_id)
            .min()
            .unwrap_or(u32::MAX)
    }

    /// "server_id 10.0.0.1" or "server_id node_0 (container_ip 10.0.0.1)", for messages.
    fn describe(&self) -> String {
        match self.container_ip {
            Some(ip) => format!("server_id {} (container_ip {ip})", self.server_id),
            None => format!("server_id {}", self.server_id),
        }
    }
}

/// One device (NPU) of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankDevice {
    /// Physical chip id, 0..=63.
    pub device_id: u32,
    pub device_ip: IpAddr,
    /// Global rank, 0..=511; the table's ranks are exactly 0..N−1.
    pub rank_id: u32,
}

/// One problem found in a ranktable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path, e.g. `server_list[1].device[0].rank_id`.
    pub path: String,
    /// The value found, as JSON (or `(absent)`).
    pub value: String,
    /// What is allowed.
    pub rule: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}: {}", self.path, self.value, self.rule)
    }
}

/// Why the ranktable cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RankTableError {
    #[error(
        "multi-node inference (BackendConfig.multiNodesInferEnabled) needs a ranktable: set \
         the environment variable {var} to its path"
    )]
    Missing { var: &'static str },
    #[error("ranktable {path} ({RANK_TABLE_ENV}): {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    Perm(#[from] PermError),
    #[error(
        "ranktable {file} ({RANK_TABLE_ENV}) has {} problem(s):\n  {}",
        .problems.len(),
        .problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
    #[error(
        "this node is not in ranktable {file}: {ip_env} = {ip} matches none of its servers \
         ({}); fix: set {CONTAINER_IP_ENV} to this node's container_ip or {HOST_IP_ENV} to its \
         server_id",
        .servers.join("; ")
    )]
    NotFound {
        file: String,
        ip_env: String,
        ip: String,
        servers: Vec<String>,
    },
    #[error(
        "ranktable {file}: {ip_env} = {ip} matches several servers ({}); fix: set \
         {CONTAINER_IP_ENV} to this node's container_ip",
        .servers.join("; ")
    )]
    Ambiguous {
        file: String,
        ip_env: String,
        ip: String,
        servers: Vec<String>,
    },
}

/// Checks a ranktable's text: the table, or every problem found.
pub fn parse(text: &str) -> Result<RankTable, Vec<Problem>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        vec![Problem {
            path: ROOT.into(),
            value: format!("(line {}, column {})", e.line(), e.column()),
            rule: format!("valid JSON ({e})"),
        }]
    })?;
    let mut c = Checker::default();
    let table = c.table(&doc);
    match table {
        Some(t) if c.problems.is_empty() => Ok(t),
        _ => Err(c.problems),
    }
}

/// Reads and checks the ranktable at `path`: file rules first (`checker`, as
/// [`FileRole::Ranktable`]), then size (0, 10 MB], then [`parse`].
pub fn load(path: &Path, checker: &mut PermChecker) -> Result<RankTable, RankTableError> {
    checker.check(path, FileRole::Ranktable)?;
    let shown = path.display().to_string();
    let read_err = |reason: String| RankTableError::Read {
        path: shown.clone(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| read_err(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_RANKTABLE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| read_err(e.to_string()))?;
    if bytes.is_empty() || bytes.len() as u64 > MAX_RANKTABLE_BYTES {
        let size = if bytes.is_empty() {
            "0 bytes".to_string()
        } else {
            format!("more than {MAX_RANKTABLE_BYTES} bytes")
        };
        return Err(read_err(format!("it is {size}: allowed (0, 10 MB]")));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| read_err(format!("not UTF-8 text ({e}): a ranktable is JSON")))?;
    parse(&text).map_err(|problems| RankTableError::Invalid {
        file: shown.clone(),
        problems,
    })
}

/// This node's place in a ranktable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub table: RankTable,
    /// Index of this node's server in `table.servers`.
    pub local: usize,
    /// Index of the master (the holder of rank 0) in `table.servers`.
    pub master: usize,
}

impl Placement {
    /// Whether this node is the master.
    pub fn is_master(&self) -> bool {
        self.local == self.master
    }

    /// The master's address (it serves `MasterService` on `multiNodesInferPort`).
    pub fn master_addr(&self) -> IpAddr {
        self.addr_of(self.master)
    }

    /// This node's address.
    pub fn local_addr(&self) -> IpAddr {
        self.addr_of(self.local)
    }

    /// Number of devices in the whole table (the model's world size).
    pub fn world_size(&self) -> usize {
        self.table.servers.iter().map(|s| s.devices.len()).sum()
    }

    /// This node's `device_id`s, in rank order.
    pub fn local_device_ids(&self) -> Vec<u32> {
        let Some(server) = self.table.servers.get(self.local) else {
            return Vec::new();
        };
        let mut devices = server.devices.clone();
        devices.sort_by_key(|d| d.rank_id);
        devices.iter().map(|d| d.device_id).collect()
    }

    /// The servers other than the master, in rank order (by their smallest rank).
    pub fn slaves(&self) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.table.servers.len())
            .filter(|&i| i != self.master)
            .collect();
        v.sort_by_key(|&i| self.table.servers[i].min_rank());
        v
    }

    fn addr_of(&self, i: usize) -> IpAddr {
        self.table
            .servers
            .get(i)
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), RankServer::addr)
    }
}

/// Finds this node and the master in `table`. The local server is the one whose
/// `container_ip` equals `MIES_CONTAINER_IP`; failing that, the one whose `server_id` equals
/// `HOST_IP` (as strings, or as IP addresses). The master is the server holding rank 0.
pub fn locate(table: RankTable, env: &Env) -> Result<Placement, RankTableError> {
    let file = env.get(RANK_TABLE_ENV).unwrap_or("(ranktable)").to_string();
    let servers = &table.servers;
    let Some(master) = servers
        .iter()
        .position(|s| s.devices.iter().any(|d| d.rank_id == 0))
    else {
        return Err(RankTableError::Invalid {
            file,
            problems: vec![Problem {
                path: "server_list[*].device[*].rank_id".into(),
                value: "(no 0)".into(),
                rule: "one device must hold rank 0 (its server is the master)".into(),
            }],
        });
    };
    let container = env.get(CONTAINER_IP_ENV);
    let host = env.get(HOST_IP_ENV);
    let by_container: Vec<usize> = container
        .and_then(|c| c.trim().parse::<IpAddr>().ok())
        .map(|ip| {
            (0..servers.len())
                .filter(|&i| servers[i].container_ip == Some(ip))
                .collect()
        })
        .unwrap_or_default();
    let by_host: Vec<usize> = host
        .map(|h| {
            (0..servers.len())
                .filter(|&i| same_address(&servers[i].server_id, h))
                .collect()
        })
        .unwrap_or_default();
    let described = || servers.iter().map(RankServer::describe).collect::<Vec<_>>();
    let (matches, ip_env, ip) = match (container, host) {
        _ if !by_container.is_empty() => (by_container, CONTAINER_IP_ENV, container),
        (_, Some(h)) if !by_host.is_empty() => (by_host, HOST_IP_ENV, Some(h)),
        _ => {
            let tried: Vec<(&str, &str)> = [(CONTAINER_IP_ENV, container), (HOST_IP_ENV, host)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let (ip_env, ip) = if tried.is_empty() {
                (
                    format!("{CONTAINER_IP_ENV} / {HOST_IP_ENV}"),
                    "(unset)".into(),
                )
            } else {
                let names: Vec<&str> = tried.iter().map(|(k, _)| *k).collect();
                let values: Vec<&str> = tried.iter().map(|(_, v)| *v).collect();
                (names.join(" / "), values.join(" / "))
            };
            return Err(RankTableError::NotFound {
                file,
                ip_env,
                ip,
                servers: described(),
            });
        }
    };
    match matches.as_slice() {
        [local] => Ok(Placement {
            local: *local,
            master,
            table,
        }),
        _ => Err(RankTableError::Ambiguous {
            file,
            ip_env: ip_env.to_string(),
            ip: ip.unwrap_or_default().to_string(),
            servers: matches
                .iter()
                .map(|&i| format!("server_list[{i}]: {}", servers[i].describe()))
                .collect(),
        }),
    }
}

/// `RANK_TABLE_FILE` → [`load`] → [`locate`].
pub fn from_env(env: &Env, checker: &mut PermChecker) -> Result<Placement, RankTableError> {
    let path = env.get(RANK_TABLE_ENV).ok_or(RankTableError::Missing {
        var: RANK_TABLE_ENV,
    })?;
    let table = load(Path::new(path), checker)?;
    locate(table, env)
}

/// For a single-node start (`multiNodesInferEnabled` false): a warning when `RANK_TABLE_FILE`
/// is set but names no readable file. The daemon does not use it then, but MindIE's model
/// library reads the variable whenever it is set and would fail on it.
pub fn warn_if_unused(env: &Env) -> Option<String> {
    let path = env.get(RANK_TABLE_ENV)?;
    let problem = match std::fs::File::open(path).and_then(|f| f.metadata()) {
        Ok(m) if m.is_file() => return None,
        Ok(_) => "it is not a regular file".to_string(),
        Err(e) => format!("it cannot be read: {e}"),
    };
    Some(format!(
        "{RANK_TABLE_ENV} = {path} is set but {problem}. multiNodesInferEnabled is false, so \
         the daemon does not use it, but MindIE's model library reads {RANK_TABLE_ENV} \
         whenever it is set and would fail; fix: unset {RANK_TABLE_ENV} or point it at a \
         readable ranktable"
    ))
}

/// Whether `id` (a `server_id`) and `ip` name the same node: equal strings, or equal IPs.
fn same_address(id: &str, ip: &str) -> bool {
    let ip = ip.trim();
    if id == ip {
        return true;
    }
    match (id.parse::<IpAddr>(), ip.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A JSON value for a problem message, shortened when long; `(absent)` when missing.
fn render(v: Option<&Value>) -> String {
    const MAX: usize = 80;
    let Some(v) = v else {
        return "(absent)".into();
    };
    let s = v.to_string();
    if s.chars().count() <= MAX {
        s
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

/// "1, 3..=7, 9" for a sorted list of numbers.
fn ranges(nums: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && end.checked_add(1) == Some(nums[i + 1]) {
            i += 1;
            end = nums[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// Where a valid rank_id was seen.
struct RankSeen {
    rank: u32,
    path: String,
    value: String,
}

/// An address a server is known by, and where.
struct AddrSeen {
    ip: IpAddr,
    server: usize,
    path: String,
    value: String,
}

/// Collects problems while reading the document.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
    ranks: Vec<RankSeen>,
    /// Every device entry, valid or not (N of "ranks 0..N−1").
    devices: usize,
    /// Whether some rank_id was unreadable (then gaps are not reported: they would be noise).
    bad_rank: bool,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, value: String, rule: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            value,
            rule: rule.into(),
        });
    }

    /// A required integer in `min..=max`, as a number or a string of decimal digits.
    fn uint(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &str,
        min: u64,
        max: u64,
    ) -> Option<u32> {
        let v = obj.get(key);
        let n = match v {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().ok()
            }
            _ => None,
        };
        match n
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| u32::try_from(n).ok())
        {
            Some(n) => Some(n),
            None => {
                self.problem(
                    join(path, key),
                    render(v),
                    format!(
                        "an integer in [{min}, {max}] (a number or a string of decimal digits)"
                    ),
                );
                None
            }
        }
    }

    /// An IP address string (not 0.0.0.0 or ::).
    fn ip(&mut self, v: Option<&Value>, path: String, rule: &str) -> Option<IpAddr> {
        let ip = v
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<IpAddr>().ok())
            .filter(|ip| !ip.is_unspecified());
        if ip.is_none() {
            self.problem(path, render(v), rule);
        }
        ip
    }

    fn table(&mut self, doc: &Value) -> Option<RankTable> {
        let Some(obj) = doc.as_object() else {
            self.problem(ROOT, render(Some(doc)), "a JSON object (the ranktable)");
            return None;
        };
        if let Some(v) = obj.get("status") {
            if v.as_str() != Some("completed") {
                self.problem("status", render(Some(v)), "\"completed\" (or absent)");
            }
        }
        let count = self.uint(obj, "server_count", "", MIN_SERVERS, MAX_SERVERS);
        let list = match obj.get("server_list") {
            Some(Value::Array(a)) if !a.is_empty() => a.as_slice(),
            other => {
                self.problem("server_list", render(other), "a non-empty array of servers");
                &[]
            }
        };
        if let Some(n) = count {
            if !list.is_empty() && n as usize != list.len() {
                self.problem(
                    "server_count",
                    render(obj.get("server_count")),
                    format!("the number of servers in server_list ({})", list.len()),
                );
            }
        }
        let mut servers = Vec::with_capacity(list.len());
        let mut addrs = Vec::new();
        for (i, s) in list.iter().enumerate() {
            servers.push(self.server(s, i, &mut addrs));
        }
        self.unique_addresses(&addrs);
        self.rank_sequence();
        servers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|servers| RankTable { servers })
    }

    fn server(&mut self, v: &Value, i: usize, addrs: &mut Vec<AddrSeen>) -> Option<RankServer> {
        let path = format!("server_list[{i}]");
        let Some(obj) = v.as_object() else {
            self.problem(&path, render(Some(v)), "an object (a server)");
            return None;
        };
        let id_path = join(&path, "server_id");
        let server_id = match obj.get("server_id") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            other => {
                self.problem(&id_path, render(other), "a non-empty string");
                None
            }
        };
        let ip_path = join(&path, "container_ip");
        // `None`: present but not an IP (reported); `Some(None)`: absent.
        let container_ip = match obj.get("container_ip") {
            None | Some(Value::Null) => Some(None),
            v => self
                .ip(
                    v,
                    ip_path.clone(),
                    "an IP address (or leave container_ip out)",
                )
                .map(Some),
        };
        match (&server_id, container_ip) {
            (_, Some(Some(ip))) => addrs.push(AddrSeen {
                ip,
                server: i,
                path: ip_path,
                value: render(obj.get("container_ip")),
            }),
            (Some(id), Some(None)) => {
                match id.parse::<IpAddr>().ok().filter(|ip| !ip.is_unspecified()) {
                    Some(ip) => addrs.push(AddrSeen {
                        ip,
                        server: i,
                        path: id_path,
                        value: render(obj.get("server_id")),
                    }),
                    None => self.problem(
                        id_path,
                        render(obj.get("server_id")),
                        "an IP address, because container_ip is absent (the node needs an \
                         address)",
                    ),
                }
            }
            _ => {}
        }
        let devices = self.devices(obj, &path);
        Some(RankServer {
            server_id: server_id?,
            container_ip: container_ip?,
            devices: devices?,
        })
    }

    fn devices(&mut self, server: &Map<String, Value>, path: &str) -> Option<Vec<RankDevice>> {
        let list_path = join(path, "device");
        let list = match server.get("device") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            other => {
                self.problem(list_path, render(other), "a non-empty array of devices");
                return None;
            }
        };
        let mut ids: BTreeMap<u32, String> = BTreeMap::new();
        let mut out = Vec::with_capacity(list.len());
        for (j, d) in list.iter().enumerate() {
            self.devices += 1;
            let dpath = format!("{list_path}[{j}]");
            let Some(obj) = d.as_object() else {
                self.problem(&dpath, render(Some(d)), "an object (a device)");
                self.bad_rank = true;
                out.push(None);
                continue;
            };
            let device_id = self.uint(obj, "device_id", &dpath, 0, MAX_DEVICE_ID);
            if let Some(id) = device_id {
                let id_path = join(&dpath, "device_id");
                if let Some(first) = ids.get(&id) {
                    self.problem(
                        &id_path,
                        render(obj.get("device_id")),
                        format!("a device_id not used before in this server (also at {first})"),
                    );
                } else {
                    ids.insert(id, id_path);
                }
            }
            let device_ip = self.ip(
                obj.get("device_ip"),
                join(&dpath, "device_ip"),
                "an IP address (the device's NIC address)",
            );
            let rank_id = self.uint(obj, "rank_id", &dpath, 0, MAX_RANK_ID);
            match rank_id {
                Some(rank) => self.ranks.push(RankSeen {
                    rank,
                    path: join(&dpath, "rank_id"),
                    value: render(obj.get("rank_id")),
                }),
                None => self.bad_rank = true,
            }
            out.push(match (device_id, device_ip, rank_id) {
                (Some(device_id), Some(device_ip), Some(rank_id)) => Some(RankDevice {
                    device_id,
                    device_ip,
                    rank_id,
                }),
                _ => None,
            });
        }
        out.into_iter().collect()
    }

    /// Each server's address once.
    fn unique_addresses(&mut self, addrs: &[AddrSeen]) {
        let mut seen: HashMap<IpAddr, &AddrSeen> = HashMap::new();
        for a in addrs {
            if let Some(first) = seen.get(&a.ip).copied() {
                self.problem(
                    &a.path,
                    a.value.clone(),
                    format!(
                        "an address no other server has (server_list[{}] has it too: {})",
                        first.server, first.path
                    ),
                );
            } else {
                seen.insert(a.ip, a);
            }
        }
    }

    /// rank_ids: each once, and together exactly 0..N−1 for N devices.
    fn rank_sequence(&mut self) {
        let n = self.devices;
        let mut first: BTreeMap<u32, String> = BTreeMap::new();
        let mut found = Vec::new();
        for r in &self.ranks {
            if let Some(at) = first.get(&r.rank) {
                found.push(Problem {
                    path: r.path.clone(),
                    value: r.value.clone(),
                    rule: format!("a rank_id no other device has (also at {at})"),
                });
            } else {
                first.insert(r.rank, r.path.clone());
            }
        }
        if !self.bad_rank && n > 0 {
            let last = n - 1;
            for r in &self.ranks {
                if r.rank as usize > last {
                    found.push(Problem {
                        path: r.path.clone(),
                        value: r.value.clone(),
                        rule: format!(
                            "a rank_id in 0..={last}: the ranks are exactly 0..N-1 for the \
                             table's N = {n} devices"
                        ),
                    });
                }
            }
            let missing: Vec<u32> = (0..n)
                .filter_map(|r| u32::try_from(r).ok())
                .filter(|r| !first.contains_key(r))
                .collect();
            if !missing.is_empty() {
                found.push(Problem {
                    path: "server_list[*].device[*].rank_id".into(),
                    value: format!("(no device has {})", ranges(&missing)),
                    rule: format!("the ranks are exactly 0..={last}, one per device ({n} devices)"),
                });
            }
        }
        self.problems.extend(found);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
#[path = "ranktable_tests.rs"]
mod tests;
