//! Typed mirror of MindIE's `config.json` (SPEC §4). Field names are the snake_case of the JSON
//! keys; sections keep MindIE's names. Defaults are MindIE's. Ranges and cross-field rules live
//! in `validate.rs`, not here: this file only says what the file may contain.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Config {
    #[serde(rename = "Version", default = "d_version")]
    pub version: String,
    #[serde(rename = "ServerConfig")]
    pub server_config: ServerConfig,
    #[serde(rename = "BackendConfig")]
    pub backend_config: BackendConfig,
    #[serde(rename = "LogConfig", default)]
    pub log_config: LogConfig,
    #[serde(rename = "EnableDynamicAdjustTimeoutConfig", default)]
    pub enable_dynamic_adjust_timeout_config: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerConfig {
    pub ip_address: String,
    #[serde(default)]
    pub management_ip_address: Option<String>,
    pub port: u16,
    #[serde(default)]
    pub management_port: Option<u16>,
    pub metrics_port: u16,
    pub allow_all_zero_ip_listening: bool,
    pub max_link_num: u32,
    pub https_enabled: bool,
    #[serde(default)]
    pub full_text_enabled: bool,

    // Business plane TLS.
    #[serde(default = "d_tls_ca_path")]
    pub tls_ca_path: String,
    #[serde(default)]
    pub tls_ca_file: Vec<String>,
    #[serde(default)]
    pub tls_cert: String,
    #[serde(default)]
    pub tls_pk: String,
    #[serde(default)]
    pub tls_pk_pwd: String,
    #[serde(default)]
    pub tls_crl_path: String,
    #[serde(default)]
    pub tls_crl_files: Vec<String>,

    // Management plane TLS (used when the management plane is its own server).
    #[serde(default)]
    pub management_tls_ca_file: Vec<String>,
    #[serde(default)]
    pub management_tls_cert: String,
    #[serde(default)]
    pub management_tls_pk: String,
    #[serde(default)]
    pub management_tls_pk_pwd: String,
    #[serde(default)]
    pub management_tls_crl_path: String,
    #[serde(default)]
    pub management_tls_crl_files: Vec<String>,

    // Metrics plane TLS; when absent the metrics plane uses the management set.
    #[serde(default)]
    pub metrics_tls_ca_file: Vec<String>,
    #[serde(default)]
    pub metrics_tls_cert: String,
    #[serde(default)]
    pub metrics_tls_pk: String,
    #[serde(default)]
    pub metrics_tls_pk_pwd: String,
    #[serde(default)]
    pub metrics_tls_crl_path: String,
    #[serde(default)]
    pub metrics_tls_crl_files: Vec<String>,

    /// Huawei KMC key files: accepted and ignored with a warning (SPEC §0.7).
    #[serde(default)]
    pub kmc_ksf_master: Option<String>,
    #[serde(default)]
    pub kmc_ksf_standby: Option<String>,

    pub infer_mode: String,
    #[serde(rename = "interCommTLSEnabled", default = "d_true")]
    pub inter_comm_tls_enabled: bool,
    #[serde(default = "d_inter_comm_port")]
    pub inter_comm_port: u16,
    #[serde(default)]
    pub inter_comm_tls_ca_path: String,
    #[serde(default)]
    pub inter_comm_tls_ca_files: Vec<String>,
    #[serde(default)]
    pub inter_comm_tls_cert: String,
    #[serde(default)]
    pub inter_comm_pk: String,
    #[serde(default)]
    pub inter_comm_pk_pwd: String,
    #[serde(default)]
    pub inter_comm_tls_crl_path: String,
    #[serde(default)]
    pub inter_comm_tls_crl_files: Vec<String>,

    #[serde(default = "d_open_ai_support")]
    pub open_ai_support: String,
    pub token_timeout: u32,
    pub e2e_timeout: u32,
    /// Request body limit in MB, [1,100].
    #[serde(default = "d_max_request_length")]
    pub max_request_length: u32,
    #[serde(default)]
    pub max_json_depth: Option<u32>,
    #[serde(rename = "distDPServerEnabled", default)]
    pub dist_dp_server_enabled: bool,
    #[serde(rename = "HealthCheckConfig", default)]
    pub health_check_config: HealthCheckConfig,
    /// Older spelling of `HealthCheckConfig.npuUsageThreshold` (MindIE lists both); used when
    /// the nested one is 0 or absent (see `ServerConfig::npu_usage_threshold()`).
    #[serde(default)]
    pub npu_usage_threshold: Option<u32>,
    // Layer-wise disaggregation (niche MindIE feature): accepted, not used.
    #[serde(default)]
    pub layerwise_disaggregated: Option<bool>,
    #[serde(default)]
    pub layerwise_disaggregated_role_type: Option<String>,
    #[serde(default)]
    pub layerwise_disaggregated_master_ip_address: Option<String>,
    #[serde(default)]
    pub layerwise_disaggregated_slave_ip_address: Option<Vec<String>>,
    #[serde(default)]
    pub layerwise_disaggregated_data_port: Option<u16>,
    #[serde(default)]
    pub layerwise_disaggregated_crtl_port: Option<Vec<u16>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckConfig {
    #[serde(default)]
    pub npu_usage_threshold: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackendConfig {
    pub backend_name: String,
    #[serde(default = "d_one")]
    pub model_instance_number: u32,
    #[serde(default = "d_npu_device_ids")]
    pub npu_device_ids: Vec<Vec<u32>>,
    #[serde(default = "d_tokenizer_process_number")]
    pub tokenizer_process_number: u32,
    #[serde(default)]
    pub multi_nodes_infer_enabled: bool,
    #[serde(default = "d_multi_nodes_infer_port")]
    pub multi_nodes_infer_port: u16,
    #[serde(rename = "interNodeTLSEnabled", default = "d_true")]
    pub inter_node_tls_enabled: bool,
    #[serde(default)]
    pub inter_node_tls_ca_path: String,
    #[serde(default)]
    pub inter_node_tls_ca_files: Vec<String>,
    #[serde(default)]
    pub inter_node_tls_cert: String,
    #[serde(default)]
    pub inter_node_tls_pk: String,
    #[serde(default)]
    pub inter_node_tls_pk_pwd: String,
    #[serde(default)]
    pub inter_node_tls_crl_path: String,
    #[serde(default)]
    pub inter_node_tls_crl_files: Vec<String>,
    #[serde(default)]
    pub inter_node_kmc_ksf_master: Option<String>,
    #[serde(default)]
    pub inter_node_kmc_ksf_standby: Option<String>,
    #[serde(default)]
    pub kv_pool_config: Option<KvPoolConfig>,
    /// Layer-wise disaggregation settings (niche MindIE feature): accepted, not used.
    #[serde(default)]
    pub layerwise_disaggregated: Option<Value>,
    #[serde(rename = "ModelDeployConfig")]
    pub model_deploy_config: ModelDeployConfig,
    #[serde(rename = "ScheduleConfig")]
    pub schedule_config: ScheduleConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KvPoolConfig {
    #[serde(default)]
    pub backend: String,
    #[serde(default)]
    pub config_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeployConfig {
    pub max_seq_len: u32,
    pub max_input_token_len: u32,
    /// MindIE accepts a bool or -1/0/1; see [`Truncation`].
    #[serde(default)]
    pub truncation: Truncation,
    #[serde(default)]
    pub max_loras: Option<u32>,
    #[serde(default)]
    pub max_lora_rank: Option<u32>,
    #[serde(rename = "LoraModules", default)]
    pub lora_modules: Vec<LoraModule>,
    #[serde(default)]
    pub speculation_gamma: Option<u32>,
    #[serde(rename = "ModelConfig")]
    pub model_config: Vec<ModelConfig>,
}

/// Over-long input handling: reject (0/false), cut the right end (-1/true), cut the left (1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub enum Truncation {
    #[default]
    Reject,
    KeepLeft,
    KeepRight,
}

impl TryFrom<Value> for Truncation {
    type Error = String;
    fn try_from(v: Value) -> Result<Self, String> {
        match &v {
            Value::Bool(false) => Ok(Self::Reject),
            Value::Bool(true) => Ok(Self::KeepLeft),
            Value::Number(n) => match n.as_i64() {
                Some(0) => Ok(Self::Reject),
                Some(-1) => Ok(Self::KeepLeft),
                Some(1) => Ok(Self::KeepRight),
                _ => Err(format!("truncation {v}: allowed false/true or 0, -1, 1")),
            },
            _ => Err(format!("truncation {v}: allowed false/true or 0, -1, 1")),
        }
    }
}

impl From<Truncation> for Value {
    fn from(t: Truncation) -> Value {
        match t {
            Truncation::Reject => Value::Bool(false),
            Truncation::KeepLeft => Value::Bool(true),
            Truncation::KeepRight => Value::from(1),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoraModule {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub base_model_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    #[serde(default = "d_model_instance_type")]
    pub model_instance_type: String,
    pub model_name: String,
    pub model_weight_path: String,
    pub world_size: u32,
    /// GB of host memory for KV swap (CPU backend: see README for its meaning there).
    pub cpu_mem_size: u32,
    /// GB of device memory for KV; -1 = automatic.
    pub npu_mem_size: i64,
    pub backend_type: String,
    pub trust_remote_code: bool,
    #[serde(rename = "plugin_params", default)]
    pub plugin_params: Option<Value>,
    #[serde(rename = "async_scheduler_wait_time", default = "d_async_wait")]
    pub async_scheduler_wait_time: u32,
    #[serde(rename = "kv_trans_timeout", default = "d_kv_trans_timeout")]
    pub kv_trans_timeout: u32,
    #[serde(rename = "kv_link_timeout", default = "d_kv_link_timeout")]
    pub kv_link_timeout: u32,
    #[serde(default)]
    pub tp: Option<u32>,
    #[serde(default)]
    pub dp: Option<u32>,
    #[serde(default)]
    pub cp: Option<u32>,
    #[serde(default)]
    pub sp: Option<u32>,
    #[serde(rename = "moe_tp", default)]
    pub moe_tp: Option<u32>,
    #[serde(rename = "moe_ep", default)]
    pub moe_ep: Option<u32>,
    #[serde(default)]
    pub pp: Option<u32>,
    #[serde(default)]
    pub models: Option<Value>,
    /// Any other key: MindIE forwards these to the model as extra parameters.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleConfig {
    pub template_type: String,
    pub template_name: String,
    pub cache_block_size: u32,
    pub max_prefill_batch_size: u32,
    pub max_prefill_tokens: u32,
    pub prefill_time_ms_per_req: u32,
    pub prefill_policy_type: u32,
    pub decode_time_ms_per_req: u32,
    pub decode_policy_type: u32,
    pub max_batch_size: u32,
    pub max_iter_times: u32,
    pub max_preempt_count: u32,
    pub support_select_batch: bool,
    pub max_queue_delay_microseconds: u32,
    #[serde(default = "d_first_token_wait")]
    pub max_first_token_wait_time: u32,
    #[serde(rename = "maxN", default = "d_max_n")]
    pub max_n: u32,
    #[serde(default)]
    pub policy_type: Option<u32>,
    #[serde(default)]
    pub prefill_chunk_size: Option<u32>,
    #[serde(default)]
    pub max_num_partial_prefills: Option<u32>,
    #[serde(default)]
    pub max_long_partial_prefills: Option<u32>,
    #[serde(default)]
    pub long_prefill_token_threshold: Option<u32>,
    #[serde(default)]
    pub stage_select_policy: Option<u32>,
    #[serde(default)]
    pub dynamic_batch_size_enable: Option<bool>,
    #[serde(default)]
    pub buffer_response_enabled: Option<bool>,
    #[serde(default)]
    pub prefill_expected_time: Option<u32>,
    #[serde(default)]
    pub decode_expected_time: Option<u32>,
    #[serde(default)]
    pub distributed_enable: Option<bool>,
    /// Deprecated (MindIE): accepted, ignored with a warning.
    #[serde(default)]
    pub enable_prefix_cache: Option<bool>,
    /// Deprecated (MindIE): accepted, ignored with a warning.
    #[serde(default)]
    pub enable_split: Option<bool>,
    /// MindIE's own spelling (sic).
    #[serde(rename = "enablChunkedPrefill", default)]
    pub enabl_chunked_prefill: Option<bool>,
    #[serde(default)]
    pub split_type: Option<bool>,
    #[serde(default)]
    pub split_start_type: Option<bool>,
    #[serde(default)]
    pub split_chunk_tokens: Option<u32>,
    #[serde(default)]
    pub split_start_batch_size: Option<u32>,
    #[serde(default)]
    pub max_beam_width: Option<u32>,
    /// Layer-wise disaggregation settings (niche MindIE feature): accepted, not used.
    #[serde(default)]
    pub layerwise_disaggregated: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogConfig {
    #[serde(default)]
    pub dynamic_log_level: String,
    #[serde(default = "d_two")]
    pub dynamic_log_level_valid_hours: u32,
    #[serde(default)]
    pub dynamic_log_level_valid_time: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            dynamic_log_level: String::new(),
            dynamic_log_level_valid_hours: 2,
            dynamic_log_level_valid_time: String::new(),
        }
    }
}

fn d_version() -> String {
    "1.0.0".into()
}
fn d_true() -> bool {
    true
}
fn d_one() -> u32 {
    1
}
fn d_two() -> u32 {
    2
}
fn d_tls_ca_path() -> String {
    "security/ca/".into()
}
fn d_inter_comm_port() -> u16 {
    1121
}
fn d_open_ai_support() -> String {
    "vllm".into()
}
fn d_max_request_length() -> u32 {
    40
}
fn d_npu_device_ids() -> Vec<Vec<u32>> {
    vec![vec![0]]
}
fn d_tokenizer_process_number() -> u32 {
    8
}
fn d_multi_nodes_infer_port() -> u16 {
    1120
}
fn d_model_instance_type() -> String {
    "Standard".into()
}
fn d_async_wait() -> u32 {
    120
}
fn d_kv_trans_timeout() -> u32 {
    10
}
fn d_kv_link_timeout() -> u32 {
    1080
}
fn d_first_token_wait() -> u32 {
    2500
}
fn d_max_n() -> u32 {
    128
}
