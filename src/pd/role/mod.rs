//! Role assignment for a dmi instance (SPEC-PD §3.1–3.3): the Controller posts
//! `/v1/role/{prefill|decode|flex}` or `/v2/role/{prefill|decode}` to the management port;
//! the instance takes the role and links to its peers (the decode instances of a prefill
//! instance, and the other way round).
//!
//! - [`body`]: the role bodies, v1 and v2, checked into one [`RoleRequest`].
//! - [`state`]: [`RoleState`], the shared role, status and peer links; re-posts are diffs;
//!   links run in the background through a [`Linker`] with retry until the link timeout.
//! - [`status`]: the `service` and `linkStatus` parts of `/v1/status` and `/v2/status`.
//!
//! The HTTP side (routes, the fixed MindIE error bodies) lives in `mgmt::role`.

pub mod body;
pub mod state;
pub mod status;

pub use body::{parse_v1, parse_v2, RoleBodyError};
pub use state::{
    ApplyError, LinkState, LinkTiming, Linker, PeerLink, RoleDiff, RoleSnapshot, RoleState,
};

use std::net::Ipv4Addr;

/// The role of a dmi instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Prefill,
    Decode,
    /// Both, `p_percentage` of the work being prefill.
    Flex,
}

impl Role {
    /// The name in paths and in `currentRole`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Prefill => "prefill",
            Role::Decode => "decode",
            Role::Flex => "flex",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "prefill" => Role::Prefill,
            "decode" => Role::Decode,
            "flex" => Role::Flex,
            _ => return None,
        })
    }

    /// Whether an instance in this role can work only through peer links: prefill and decode
    /// always; flex only at 0 % or 100 % prefill (it is then a pure decode or prefill
    /// instance). Flex in between, or without a percentage, serves both phases itself.
    pub fn needs_peers(self, p_percentage: Option<u8>) -> bool {
        match self {
            Role::Prefill | Role::Decode => true,
            Role::Flex => matches!(p_percentage, Some(0 | 100)),
        }
    }
}

/// `roleStatus` of `/v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoleStatus {
    /// No role yet (or the engine is unusable): inference is refused with 503.
    #[default]
    RoleUnknown,
    /// Taking a role, or links are being made.
    RoleSwitching,
    /// The role is taken and its links are made.
    RoleReady,
}

impl RoleStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleStatus::RoleUnknown => "RoleUnknown",
            RoleStatus::RoleSwitching => "RoleSwitching",
            RoleStatus::RoleReady => "RoleReady",
        }
    }
}

/// What listeners of [`RoleState::subscribe`] see: enough for the business plane and the
/// `/dresult` hub to react to a role change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleView {
    pub status: RoleStatus,
    /// `None` until the first assignment.
    pub role: Option<Role>,
    /// Flex only: the share of prefill work, 0..=100.
    pub p_percentage: Option<u8>,
}

/// Which role API a body came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    /// `/v1/role/...`: one node per instance.
    V1,
    /// `/v2/role/...`: instances of one or more nodes, each with data-parallel groups.
    V2,
}

/// One NPU (or, on the CPU backend, one rank) of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: u32,
    pub device_ip: Ipv4Addr,
    pub device_logical_id: u32,
    pub rank_id: Option<u32>,
    /// v2: the data-parallel group (`dp_inst_id`) the device belongs to.
    pub dp_inst_id: Option<u64>,
}

/// This instance or a peer, as the Controller describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance id; every peer has one (v2: `dp_inst_id / 10000`).
    pub id: Option<u32>,
    /// Where the instance serves (its `ipAddress`); v2: the first node's.
    pub server_ip: Ipv4Addr,
    pub host_ip: Option<Ipv4Addr>,
    /// Flex only (in `local`): the share of prefill work.
    pub p_percentage: Option<u8>,
    pub devices: Vec<Device>,
    /// v2: the instance's data-parallel group ids, `id * 10000 + dp rank`.
    pub dp_inst_ids: Vec<u64>,
}

/// A checked role post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRequest {
    pub role: Role,
    pub local: Instance,
    /// Distinct ids, each `Some`.
    pub peers: Vec<Instance>,
}
