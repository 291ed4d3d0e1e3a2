//! Effective values derived from the config: the management and metrics addresses, which planes
//! share a listener, the model served, defaults MindIE fills in (`maxPrefillBatchSize` 0,
//! `maxInputTokenLen` capped by `maxSeqLen`), and each plane's TLS files resolved against the
//! install home.

use super::paths::{resolve, resolve_in};
use super::{Config, ModelConfig, ModelDeployConfig, Plane, ScheduleConfig, ServerConfig};
use crate::security::TlsFiles;
use std::net::IpAddr;
use std::path::Path;

/// One HTTP listener and the planes it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSocket {
    pub ip: String,
    pub port: u16,
    /// Among Business, Management, Metrics.
    pub planes: Vec<Plane>,
}

impl ServerConfig {
    /// The management address: `MIES_CONTAINER_MANAGEMENT_IP` (applied at load), else
    /// `managementIpAddress`, else `ipAddress`.
    pub fn management_ip(&self) -> &str {
        self.management_ip_address
            .as_deref()
            .unwrap_or(&self.ip_address)
    }

    /// `managementPort`, defaulting to `port`.
    pub fn management_port(&self) -> u16 {
        self.management_port.unwrap_or(self.port)
    }

    /// Metrics are served on the management address.
    pub fn metrics_ip(&self) -> &str {
        self.management_ip()
    }

    /// Whether business and management have the same ip:port, so one server hosts both.
    pub fn business_and_management_shared(&self) -> bool {
        same_ip(&self.ip_address, self.management_ip()) && self.port == self.management_port()
    }

    /// Whether business, management and metrics all have the same ip:port (one server).
    pub fn all_planes_shared(&self) -> bool {
        self.business_and_management_shared() && self.metrics_port == self.port
    }

    /// The HTTP listeners to open, in the order business, management, metrics; planes with
    /// the same ip:port share one.
    pub fn http_sockets(&self) -> Vec<HttpSocket> {
        let wanted = [
            (self.ip_address.as_str(), self.port, Plane::Business),
            (
                self.management_ip(),
                self.management_port(),
                Plane::Management,
            ),
            (self.metrics_ip(), self.metrics_port, Plane::Metrics),
        ];
        let mut out: Vec<HttpSocket> = Vec::new();
        for (ip, port, plane) in wanted {
            match out
                .iter_mut()
                .find(|s| same_ip(&s.ip, ip) && s.port == port)
            {
                Some(s) => s.planes.push(plane),
                None => out.push(HttpSocket {
                    ip: ip.to_string(),
                    port,
                    planes: vec![plane],
                }),
            }
        }
        out
    }

    /// NPU usage threshold for health (0 = off): `HealthCheckConfig.npuUsageThreshold`, else
    /// the older top-level spelling.
    pub fn npu_usage_threshold(&self) -> u32 {
        match self.health_check_config.npu_usage_threshold {
            0 => self.npu_usage_threshold.unwrap_or(0),
            n => n,
        }
    }
}

/// Whether two addresses are the same: equal as IP addresses (`::1` and `0:0::1`), or equal as
/// text when either is not an address.
pub(crate) fn same_ip(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

impl ModelDeployConfig {
    /// `min(maxInputTokenLen, maxSeqLen - 1)`: at least one position is left for output.
    pub fn effective_max_input_token_len(&self) -> u32 {
        self.max_input_token_len
            .min(self.max_seq_len.saturating_sub(1))
    }
}

impl ScheduleConfig {
    /// `maxPrefillBatchSize`, where 0 means `maxBatchSize`.
    pub fn effective_max_prefill_batch_size(&self) -> u32 {
        match self.max_prefill_batch_size {
            0 => self.max_batch_size,
            n => n,
        }
    }
}

impl Config {
    /// The model served: the first `ModelConfig` (validation refuses an empty list).
    pub fn model(&self) -> Option<&ModelConfig> {
        self.backend_config.model_deploy_config.model_config.first()
    }

    /// See [`ModelDeployConfig::effective_max_input_token_len`].
    pub fn effective_max_input_token_len(&self) -> u32 {
        self.backend_config
            .model_deploy_config
            .effective_max_input_token_len()
    }

    /// See [`ScheduleConfig::effective_max_prefill_batch_size`].
    pub fn effective_max_prefill_batch_size(&self) -> u32 {
        self.backend_config
            .schedule_config
            .effective_max_prefill_batch_size()
    }

    /// `tokenTimeout` in seconds; 3600 when `EnableDynamicAdjustTimeoutConfig` is true.
    pub fn token_timeout_secs(&self) -> u32 {
        if self.enable_dynamic_adjust_timeout_config {
            3600
        } else {
            self.server_config.token_timeout
        }
    }

    /// `e2eTimeout` in seconds; 65535 when `EnableDynamicAdjustTimeoutConfig` is true.
    pub fn e2e_timeout_secs(&self) -> u32 {
        if self.enable_dynamic_adjust_timeout_config {
            65535
        } else {
            self.server_config.e2e_timeout
        }
    }

    /// The TLS files of `plane`, resolved against `home`; `None` when that plane runs without
    /// TLS (`httpsEnabled` for business/management/metrics, `interCommTLSEnabled`,
    /// `interNodeTLSEnabled`).
    ///
    /// Management uses the `management*` keys unless it shares business's ip:port (then the
    /// business set); its CA files live in `tlsCaPath` (MindIE has no management CA folder).
    /// Metrics uses the management set when it shares the management listener or has no
    /// `metricsTlsCert`, else the `metrics*` keys (CA files again in `tlsCaPath`).
    pub fn tls_files(&self, plane: Plane, home: &Path) -> Option<TlsFiles> {
        let s = &self.server_config;
        let b = &self.backend_config;
        let keys = match plane {
            Plane::Business | Plane::Management | Plane::Metrics if !s.https_enabled => {
                return None
            }
            Plane::Management if s.business_and_management_shared() => {
                return self.tls_files(Plane::Business, home)
            }
            Plane::Metrics
                if s.metrics_port == s.management_port() || s.metrics_tls_cert.is_empty() =>
            {
                return self.tls_files(Plane::Management, home)
            }
            Plane::InterComm if !s.inter_comm_tls_enabled => return None,
            Plane::InterNode if !b.inter_node_tls_enabled => return None,
            Plane::Business => Keys {
                ca_dir: &s.tls_ca_path,
                ca_files: &s.tls_ca_file,
                cert: &s.tls_cert,
                key: &s.tls_pk,
                password: &s.tls_pk_pwd,
                crl_dir: &s.tls_crl_path,
                crl_files: &s.tls_crl_files,
            },
            Plane::Management => Keys {
                ca_dir: &s.tls_ca_path,
                ca_files: &s.management_tls_ca_file,
                cert: &s.management_tls_cert,
                key: &s.management_tls_pk,
                password: &s.management_tls_pk_pwd,
                crl_dir: &s.management_tls_crl_path,
                crl_files: &s.management_tls_crl_files,
            },
            Plane::Metrics => Keys {
                ca_dir: &s.tls_ca_path,
                ca_files: &s.metrics_tls_ca_file,
                cert: &s.metrics_tls_cert,
                key: &s.metrics_tls_pk,
                password: &s.metrics_tls_pk_pwd,
                crl_dir: &s.metrics_tls_crl_path,
                crl_files: &s.metrics_tls_crl_files,
            },
            Plane::InterComm => Keys {
                ca_dir: &s.inter_comm_tls_ca_path,
                ca_files: &s.inter_comm_tls_ca_files,
                cert: &s.inter_comm_tls_cert,
                key: &s.inter_comm_pk,
                password: &s.inter_comm_pk_pwd,
                crl_dir: &s.inter_comm_tls_crl_path,
                crl_files: &s.inter_comm_tls_crl_files,
            },
            Plane::InterNode => Keys {
                ca_dir: &b.inter_node_tls_ca_path,
                ca_files: &b.inter_node_tls_ca_files,
                cert: &b.inter_node_tls_cert,
                key: &b.inter_node_tls_pk,
                password: &b.inter_node_tls_pk_pwd,
                crl_dir: &b.inter_node_tls_crl_path,
                crl_files: &b.inter_node_tls_crl_files,
            },
        };
        Some(keys.resolve(home))
    }
}

/// One plane's TLS keys as written in the config.
struct Keys<'a> {
    ca_dir: &'a str,
    ca_files: &'a [String],
    cert: &'a str,
    key: &'a str,
    /// Empty: a clear key.
    password: &'a str,
    crl_dir: &'a str,
    crl_files: &'a [String],
}

impl Keys<'_> {
    fn resolve(&self, home: &Path) -> TlsFiles {
        TlsFiles {
            ca_files: self
                .ca_files
                .iter()
                .map(|f| resolve_in(home, self.ca_dir, f))
                .collect(),
            cert: resolve(home, self.cert),
            key: resolve(home, self.key),
            key_password: (!self.password.is_empty()).then(|| resolve(home, self.password)),
            crl_files: self
                .crl_files
                .iter()
                .map(|f| resolve_in(home, self.crl_dir, f))
                .collect(),
        }
    }
}
