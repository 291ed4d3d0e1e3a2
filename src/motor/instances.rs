//! The instance list the Controller pushes to the Coordinator's `POST /v1/instances/refresh`
//! (SPEC-PD §4; Motor's `CoordinatorRequestHandler`): `{ids, instances:[…]}`. Ports travel as
//! strings, the role as the character code of `P`/`D`/`F`/`U` in a JSON number. Fields Motor
//! sends that we do not use are accepted and ignored; missing optional ones default to 0.

use serde::{Deserialize, Serialize};

/// Role codes of `static_info.role`.
pub mod role {
    pub const PREFILL: u8 = b'P';
    pub const DECODE: u8 = b'D';
    pub const FLEX: u8 = b'F';
    pub const UNKNOWN: u8 = b'U';
}

/// The refresh body: every instance the Coordinator may use now. An instance that is not
/// listed is offline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Refresh {
    pub ids: Vec<u64>,
    pub instances: Vec<Instance>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: u64,
    /// Business (and management) IP.
    pub ip: String,
    /// Business port.
    pub port: String,
    #[serde(default)]
    pub metric_port: String,
    #[serde(default)]
    pub inter_comm_port: String,
    #[serde(default)]
    pub model_name: String,
    pub static_info: StaticInfo,
    #[serde(default)]
    pub dynamic_info: DynamicInfo,
}

/// What does not change while the instance keeps its role.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StaticInfo {
    pub group_id: u64,
    pub max_seq_len: u64,
    pub max_output_len: u64,
    pub total_slots_num: u64,
    pub total_block_num: u64,
    pub block_size: u64,
    /// [`role`] code.
    pub role: u8,
    pub p_percentage: u64,
    pub label: u64,
    pub virtual_id: u64,
}

/// What the Controller saw at its last status poll.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynamicInfo {
    /// Ids this instance is linked with, both ends `ok`.
    pub peers: Vec<u64>,
    pub avail_slots_num: u64,
    pub avail_block_num: u64,
    pub waiting_request_num: u64,
    pub running_request_num: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_motor_shaped_refresh() {
        let body = r#"{"ids":[0,1],"instances":[
          {"id":0,"ip":"10.0.0.1","port":"1025","metric_port":"1027","inter_comm_port":"1121",
           "model_name":"llama","static_info":{"group_id":0,"max_seq_len":2560,"virtual_id":0,
           "max_output_len":512,"total_slots_num":200,"total_block_num":1024,"block_size":128,
           "label":2,"role":80,"p_percentage":0},
           "dynamic_info":{"peers":[1],"avail_slots_num":200,"avail_block_num":1000,
           "waiting_request_num":0,"running_request_num":0,"swapped_request_num":0,
           "free_npu_block_nums":0,"free_cpu_block_nums":0,"total_npu_block_nums":0,
           "total_cpu_block_nums":0}},
          {"id":1,"ip":"10.0.0.2","port":"1025","static_info":{"role":68}}]}"#;
        let r: Refresh = serde_json::from_str(body).expect("parse");
        assert_eq!(r.ids, vec![0, 1]);
        assert_eq!(r.instances[0].static_info.role, role::PREFILL);
        assert_eq!(r.instances[0].dynamic_info.peers, vec![1]);
        assert_eq!(r.instances[1].static_info.role, role::DECODE);
        let back = serde_json::to_value(&r).expect("ser");
        assert_eq!(back["instances"][0]["static_info"]["role"], 80);
        assert_eq!(back["instances"][0]["port"], "1025");
    }
}
