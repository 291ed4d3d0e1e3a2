//! What the Controller asks of a server instance on its management port (SPEC-PD §3.1,
//! §3.3, §3.4 step 2): `GET /v1/config`, `GET /v1/status`, `POST /v1/role/{role}` and
//! `GET /stopService?mode=Force`. Replies are checked with Motor's ranges; a reply outside
//! them counts as no reply.

use super::roles::Role;
use crate::motor::client::HttpClient;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// Largest `availSlotsNum` Motor accepts.
const MAX_SLOTS: u64 = 5000;
const MAX_U32: u64 = 4_294_967_295;

/// Why a server did not answer usefully.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("{addr}{path}: {reason}")]
    Unreachable {
        addr: SocketAddr,
        path: String,
        reason: String,
    },
    #[error("{addr}{path}: HTTP {status}: {body}")]
    Refused {
        addr: SocketAddr,
        path: String,
        status: u16,
        body: String,
    },
    /// `detail` names the field, its value and the rule.
    #[error("{addr}{path}: {detail}")]
    Invalid {
        addr: SocketAddr,
        path: String,
        detail: String,
    },
}

/// `GET /v1/config`, the instance's static facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticConfig {
    pub max_seq_len: u64,
    pub max_output_len: u64,
    pub block_size: u64,
    pub model_name: String,
}

/// `service.roleStatus` of `/v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleStatus {
    Unknown,
    Switching,
    Ready,
}

/// `GET /v1/status`, what the Controller reads of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub role_status: RoleStatus,
    /// `currentRole`: prefill, decode, flex or none.
    pub current_role: String,
    pub avail_slots: u64,
    pub avail_blocks: u64,
    pub waiting: u64,
    pub running: u64,
    /// Peers whose link is `ok`.
    pub ok_links: BTreeSet<u64>,
    /// Peers whose link is listed but not `ok`.
    pub failed_links: BTreeSet<u64>,
}

impl Status {
    /// Ready in `role`.
    pub fn ready_as(&self, role: Role) -> bool {
        self.role_status == RoleStatus::Ready && self.current_role == role.name()
    }
}

fn invalid(
    addr: SocketAddr,
    path: &str,
    field: &str,
    value: Option<&Value>,
    rule: &str,
) -> AskError {
    AskError::Invalid {
        addr,
        path: path.to_string(),
        detail: format!(
            "{field} = {}: {rule}",
            value.map_or_else(|| "(absent)".into(), Value::to_string)
        ),
    }
}

fn int_in(
    v: &Value,
    ptr: &str,
    min: u64,
    max: u64,
    addr: SocketAddr,
    path: &str,
) -> Result<u64, AskError> {
    let got = v.pointer(ptr);
    got.and_then(Value::as_u64)
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            invalid(
                addr,
                path,
                ptr,
                got,
                &format!("must be an integer in {min}..={max}"),
            )
        })
}

/// The instance's management client: one [`HttpClient`] and the retry count.
#[derive(Clone)]
pub struct Servers {
    pub client: HttpClient,
    /// Extra tries for role posts and stop requests (`http_retries`).
    pub retries: u64,
}

impl Servers {
    async fn get_json(&self, addr: SocketAddr, path: &str) -> Result<Value, AskError> {
        let reply = self
            .client
            .get(addr, path)
            .await
            .map_err(|e| AskError::Unreachable {
                addr,
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        if reply.status != 200 {
            return Err(AskError::Refused {
                addr,
                path: path.to_string(),
                status: reply.status,
                body: reply.text(),
            });
        }
        reply
            .json::<Value>()
            .map_err(|e| invalid(addr, path, "body", None, &format!("must be JSON: {e}")))
    }

    /// `GET /v1/config`.
    pub async fn config(&self, addr: SocketAddr) -> Result<StaticConfig, AskError> {
        const PATH: &str = "/v1/config";
        let v = self.get_json(addr, PATH).await?;
        let model = v.get("modelName");
        Ok(StaticConfig {
            max_seq_len: int_in(&v, "/maxSeqLen", 0, MAX_U32, addr, PATH)?,
            max_output_len: int_in(&v, "/maxOutputLen", 1, MAX_U32 - 1, addr, PATH)?,
            block_size: int_in(&v, "/cacheBlockSize", 1, 128, addr, PATH)?,
            model_name: model
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    invalid(
                        addr,
                        PATH,
                        "/modelName",
                        model,
                        "must be a non-empty string",
                    )
                })?
                .to_string(),
        })
    }

    /// `GET /v1/status`.
    pub async fn status(&self, addr: SocketAddr) -> Result<Status, AskError> {
        const PATH: &str = "/v1/status";
        let v = self.get_json(addr, PATH).await?;
        let rs = v.pointer("/service/roleStatus");
        let role_status = match rs.and_then(Value::as_str) {
            Some("RoleUnknown") => RoleStatus::Unknown,
            Some("RoleSwitching") => RoleStatus::Switching,
            Some("RoleReady") => RoleStatus::Ready,
            _ => {
                return Err(invalid(
                    addr,
                    PATH,
                    "/service/roleStatus",
                    rs,
                    "must be RoleUnknown, RoleSwitching or RoleReady",
                ))
            }
        };
        let cr = v.pointer("/service/currentRole");
        let current_role = match cr.and_then(Value::as_str) {
            Some(r @ ("prefill" | "decode" | "flex" | "none")) => r.to_string(),
            _ => {
                return Err(invalid(
                    addr,
                    PATH,
                    "/service/currentRole",
                    cr,
                    "must be prefill, decode, flex or none",
                ))
            }
        };
        let opt = |ptr: &str| v.pointer(ptr).and_then(Value::as_u64).unwrap_or(0);
        let mut ok_links = BTreeSet::new();
        let mut failed_links = BTreeSet::new();
        if let Some(peers) = v.pointer("/linkStatus/peers").and_then(Value::as_array) {
            for p in peers {
                let Some(target) = p.get("target").and_then(Value::as_u64) else {
                    continue;
                };
                if p.get("link").and_then(Value::as_str) == Some("ok") {
                    ok_links.insert(target);
                } else {
                    failed_links.insert(target);
                }
            }
        }
        Ok(Status {
            role_status,
            current_role,
            avail_slots: int_in(&v, "/resource/availSlotsNum", 0, MAX_SLOTS, addr, PATH)?,
            avail_blocks: int_in(&v, "/resource/availBlockNum", 0, MAX_U32, addr, PATH)?,
            waiting: opt("/resource/waitingRequestNum"),
            running: opt("/resource/runningRequestNum"),
            ok_links,
            failed_links,
        })
    }

    /// `POST /v1/role/{role}`; needs 200 with `"result":"ok"`. Tried `1 + retries` times.
    pub async fn post_role(
        &self,
        addr: SocketAddr,
        role: Role,
        body: &Value,
    ) -> Result<(), AskError> {
        let path = format!("/v1/role/{}", role.name());
        let mut last = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            match self.client.post_json(addr, &path, body).await {
                Err(e) => {
                    last = Some(AskError::Unreachable {
                        addr,
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
                Ok(r) => {
                    let ok = r.status == 200
                        && r.json::<Value>()
                            .ok()
                            .and_then(|v| v.get("result").cloned())
                            == Some(Value::from("ok"));
                    if ok {
                        return Ok(());
                    }
                    // A refusal is the server's answer: trying again changes nothing.
                    return Err(AskError::Refused {
                        addr,
                        path,
                        status: r.status,
                        body: r.text(),
                    });
                }
            }
        }
        Err(last.unwrap_or(AskError::Unreachable {
            addr,
            path,
            reason: "no attempt".into(),
        }))
    }

    /// `GET /stopService?mode=Force`.
    pub async fn stop(&self, addr: SocketAddr) -> Result<(), AskError> {
        const PATH: &str = "/stopService?mode=Force";
        let r = self
            .client
            .get(addr, PATH)
            .await
            .map_err(|e| AskError::Unreachable {
                addr,
                path: PATH.into(),
                reason: e.to_string(),
            })?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(AskError::Refused {
                addr,
                path: PATH.into(),
                status: r.status,
                body: r.text(),
            })
        }
    }
}
