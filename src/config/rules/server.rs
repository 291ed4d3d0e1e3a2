//! `ServerConfig` rules: addresses, listener conflicts, complete TLS sets per plane, KMC keys.

use super::{be, problem, quoted, sv, IpOrigin, Rules};
use crate::config::view::same_ip;
use std::net::IpAddr;

/// Warning for a KMC key, which is accepted and not used.
pub(super) const KMC_IGNORED: &str =
    "ignored (KMC not supported; key passphrase files are plain text, SPEC §0.7)";

impl Rules<'_> {
    pub(super) fn server(&mut self) {
        self.addresses();
        self.listeners();
        self.https();
        self.links();
        let c = self.c;
        let s = &c.server_config;
        for (key, v) in [
            ("kmcKsfMaster", &s.kmc_ksf_master),
            ("kmcKsfStandby", &s.kmc_ksf_standby),
        ] {
            if v.is_some() {
                self.warn(format!("{}: {KMC_IGNORED}", sv(key)));
            }
        }
        if c.version != "1.0.0" {
            self.warn(format!(
                "Version {}: this daemon reads the 1.0.0 format; read as such",
                quoted(&c.version)
            ));
        }
    }

    /// `ipAddress` and the management address are IP literals, not all-zero unless allowed.
    fn addresses(&mut self) {
        let c = self.c;
        let s = &c.server_config;
        let o = self.origins;
        self.address("ipAddress", &s.ip_address, o.ip);
        // A management address taken from the file's ipAddress was checked just above,
        // unless MIES_CONTAINER_IP replaced that one.
        if !(o.management_ip == IpOrigin::IpAddress && o.ip == IpOrigin::Json) {
            self.address("managementIpAddress", s.management_ip(), o.management_ip);
        }
    }

    fn address(&mut self, key: &str, ip: &str, origin: IpOrigin) {
        let path = sv(key);
        let mut operands = vec![path.clone()];
        if origin == IpOrigin::IpAddress {
            operands.push(sv("ipAddress"));
        }
        let value = match origin {
            IpOrigin::Json => quoted(ip),
            IpOrigin::Env(var) => format!("{} (from {var})", quoted(ip)),
            IpOrigin::IpAddress => format!("{} (from ipAddress)", quoted(ip)),
        };
        let parsed = ip.parse::<IpAddr>();
        self.rule(&operands, parsed.is_ok(), || {
            problem(path.clone(), &value, "an IPv4 or IPv6 address")
        });
        let zero = parsed.is_ok_and(|a| a.is_unspecified());
        let allowed = self.c.server_config.allow_all_zero_ip_listening;
        operands.push(sv("allowAllZeroIpListening"));
        self.rule(&operands, !zero || allowed, || {
            problem(
                path.clone(),
                &value,
                "not 0.0.0.0 or :: unless allowAllZeroIpListening is true",
            )
        });
    }

    /// Business, management and metrics listeners must not collide. Business and management
    /// may be the same ip:port (one server hosts both); metrics needs its own unless all three
    /// are the same ip:port.
    fn listeners(&mut self) {
        let c = self.c;
        let s = &c.server_config;
        let (ip, port) = (s.ip_address.as_str(), s.port);
        let (mip, mport, xport) = (s.management_ip(), s.management_port(), s.metrics_port);
        let operands = [
            sv("ipAddress"),
            sv("managementIpAddress"),
            sv("port"),
            sv("managementPort"),
            sv("metricsPort"),
        ];
        if s.all_planes_shared() {
            return;
        }
        let shared = s.business_and_management_shared();
        self.rule(&operands, shared || !overlap(ip, port, mip, mport), || {
            problem(
                sv("managementPort"),
                mport,
                format!(
                    "a port other than port ({port}): management {mip}:{mport} overlaps \
                     business {ip}:{port} (give both the same ip:port to share one server)"
                ),
            )
        });
        let with_management = overlap(mip, xport, mip, mport);
        self.rule(&operands, !with_management, || {
            problem(
                sv("metricsPort"),
                xport,
                format!(
                    "a port other than managementPort ({mport}) on {mip}: metrics needs its own \
                     listener unless business, management and metrics share one ip:port"
                ),
            )
        });
        self.rule(
            &operands,
            with_management || !overlap(mip, xport, ip, port),
            || {
                problem(
                    sv("metricsPort"),
                    xport,
                    format!("a port other than port ({port}): {mip}:{xport} overlaps business {ip}:{port}"),
                )
            },
        );
    }

    /// With HTTPS on, each plane with its own listener needs a certificate, a key and (mutual
    /// TLS, as MindIE) at least one CA file.
    fn https(&mut self) {
        let c = self.c;
        let s = &c.server_config;
        if !s.https_enabled {
            return;
        }
        let on = sv("httpsEnabled");
        let why = "when httpsEnabled is true";
        self.non_empty(&[on.as_str()], sv("tlsCert"), &s.tls_cert, why);
        self.non_empty(&[on.as_str()], sv("tlsPk"), &s.tls_pk, why);
        self.some_files(&[on.as_str()], sv("tlsCaFile"), &s.tls_ca_file, why);
        let plane_keys = [
            on,
            sv("ipAddress"),
            sv("managementIpAddress"),
            sv("port"),
            sv("managementPort"),
        ];
        if !s.business_and_management_shared() {
            let why = "when httpsEnabled is true and management has its own ip:port";
            let ms = &s.management_tls_cert;
            self.non_empty(&plane_keys, sv("managementTlsCert"), ms, why);
            let mk = &s.management_tls_pk;
            self.non_empty(&plane_keys, sv("managementTlsPk"), mk, why);
            let mc = &s.management_tls_ca_file;
            self.some_files(&plane_keys, sv("managementTlsCaFile"), mc, why);
        }
        if s.metrics_port != s.management_port() && !s.metrics_tls_cert.is_empty() {
            let why = "when metricsTlsCert is set";
            let operands = [sv("metricsTlsCert"), sv("metricsPort")];
            self.non_empty(&operands, sv("metricsTlsPk"), &s.metrics_tls_pk, why);
        }
    }

    /// gRPC links (PD on interCommPort, multi-node on multiNodesInferPort): ports apart from the
    /// HTTP ones, complete TLS sets when TLS is on, a ranktable for multi-node.
    fn links(&mut self) {
        let c = self.c;
        let s = &c.server_config;
        let b = &c.backend_config;
        let http = [s.port, s.management_port(), s.metrics_port];
        let http_keys = [sv("port"), sv("managementPort"), sv("metricsPort")];
        let dmi = s.infer_mode == "dmi";
        if dmi {
            let mut operands = http_keys.to_vec();
            operands.extend([sv("interCommPort"), sv("inferMode")]);
            let p = s.inter_comm_port;
            self.rule(&operands, !http.contains(&p), || {
                problem(
                    sv("interCommPort"),
                    p,
                    format!(
                        "a port other than port ({}), managementPort ({}) and metricsPort ({}) \
                         when inferMode is \"dmi\"",
                        http[0], http[1], http[2]
                    ),
                )
            });
            if s.inter_comm_tls_enabled {
                let operands = [sv("inferMode"), sv("interCommTLSEnabled")];
                let why = "when inferMode is \"dmi\" and interCommTLSEnabled is true";
                let (cert, key) = (&s.inter_comm_tls_cert, &s.inter_comm_pk);
                self.non_empty(&operands, sv("interCommTlsCert"), cert, why);
                self.non_empty(&operands, sv("interCommPk"), key, why);
                let cas = &s.inter_comm_tls_ca_files;
                self.some_files(&operands, sv("interCommTlsCaFiles"), cas, why);
            }
        }
        if !b.multi_nodes_infer_enabled {
            return;
        }
        let on = be("multiNodesInferEnabled");
        let mut taken = http.to_vec();
        let mut operands = http_keys.to_vec();
        operands.extend([be("multiNodesInferPort"), on.clone()]);
        if dmi {
            taken.push(s.inter_comm_port);
            operands.push(sv("interCommPort"));
        }
        let p = b.multi_nodes_infer_port;
        self.rule(&operands, !taken.contains(&p), || {
            let list: Vec<String> = taken.iter().map(u16::to_string).collect();
            problem(
                be("multiNodesInferPort"),
                p,
                format!(
                    "a port other than the daemon's other ports ({})",
                    list.join(", ")
                ),
            )
        });
        let has_ranktable = self.env.get("RANK_TABLE_FILE").is_some();
        self.rule(&[on.as_str()], has_ranktable, || {
            problem(
                on.clone(),
                true,
                "false unless the environment variable RANK_TABLE_FILE names the ranktable",
            )
        });
        if b.inter_node_tls_enabled {
            let operands = [on, be("interNodeTLSEnabled")];
            let why = "when multiNodesInferEnabled and interNodeTLSEnabled are true";
            let (cert, key) = (&b.inter_node_tls_cert, &b.inter_node_tls_pk);
            self.non_empty(&operands, be("interNodeTlsCert"), cert, why);
            self.non_empty(&operands, be("interNodeTlsPk"), key, why);
            let cas = &b.inter_node_tls_ca_files;
            self.some_files(&operands, be("interNodeTlsCaFiles"), cas, why);
        }
    }

    fn non_empty<S: AsRef<str>>(&mut self, operands: &[S], path: String, v: &str, why: &str) {
        let mut ops: Vec<&str> = operands.iter().map(AsRef::as_ref).collect();
        ops.push(&path);
        self.rule(&ops, !v.is_empty(), || {
            problem(path.clone(), quoted(v), format!("a file path {why}"))
        });
    }

    fn some_files<S: AsRef<str>>(&mut self, operands: &[S], path: String, v: &[String], why: &str) {
        let mut ops: Vec<&str> = operands.iter().map(AsRef::as_ref).collect();
        ops.push(&path);
        self.rule(&ops, v.iter().any(|f| !f.is_empty()), || {
            let value = serde_json::Value::from(v.to_vec()).to_string();
            problem(path.clone(), value, format!("at least one file name {why}"))
        });
    }
}

/// Whether two listeners would fight over a port: same port and the same address, or either
/// address is the wildcard.
fn overlap(a_ip: &str, a_port: u16, b_ip: &str, b_port: u16) -> bool {
    let wildcard = |ip: &str| ip.parse::<IpAddr>().is_ok_and(|a| a.is_unspecified());
    a_port == b_port && (same_ip(a_ip, b_ip) || wildcard(a_ip) || wildcard(b_ip))
}
