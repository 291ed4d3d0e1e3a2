//! The two input files of `gen-cert`: `gen_cert.json` (which CA signs, where the output goes)
//! and `cert_info.json` (what the new certificate says), plus the `--ip` list.
//!
//! This module owns reading and validating them: every refusal names the file, the field,
//! the value found and what is allowed. Relative paths in `gen_cert.json` resolve against the
//! folder holding `gen_cert.json` (in MindIE's usage that is the install home, where the tool
//! is run from). Unknown keys are warnings (returned in [`GenCertConfig::warnings`]).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::CertGenError;

/// Longest certificate lifetime accepted in `expired_time` (20 years, as MindIE's CA example).
pub const MAX_EXPIRED_DAYS: u64 = 7300;

/// `gen_cert.json`, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenCertConfig {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub ca_key_pwd: PathBuf,
    pub cert_config: PathBuf,
    pub output_path: PathBuf,
    /// Notes for the user (unknown keys, ignored KMC files).
    pub warnings: Vec<String>,
}

/// The subject's distinguished name, in the order OpenSSL writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub country: Option<String>,
    pub state: Option<String>,
    pub locality: Option<String>,
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub common_name: Option<String>,
}

/// `cert_info.json`, validated, with the `--ip` addresses merged into `ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: Subject,
    pub days: u64,
    pub serial: u64,
    /// IP subject alternative names: `alt_names.IP` then `--ip`, duplicates removed.
    pub ips: Vec<IpAddr>,
    /// DNS subject alternative names, duplicates removed.
    pub dns: Vec<String>,
    pub warnings: Vec<String>,
}

const GEN_CERT_KEYS: [&str; 5] = [
    "ca_cert",
    "ca_key",
    "ca_key_pwd",
    "cert_config",
    "output_path",
];
const KMC_KEYS: [&str; 2] = ["kmc_ksf_master", "kmc_ksf_standby"];
const CERT_INFO_KEYS: [&str; 5] = [
    "subject",
    "expired_time",
    "serial_number",
    "req_distinguished_name",
    "alt_names",
];
/// `req_distinguished_name` keys with their RFC 5280 upper length bounds (characters).
const DN_KEYS: [(&str, usize); 6] = [
    ("C", 2),
    ("ST", 128),
    ("L", 128),
    ("O", 64),
    ("OU", 64),
    ("CN", 64),
];

/// Reads a JSON object from `path` (`what` names the file kind in messages).
pub fn read_object(path: &Path, what: &'static str) -> Result<Map<String, Value>, CertGenError> {
    let text = std::fs::read_to_string(path).map_err(|source| CertGenError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_json::from_str(&text).map_err(|e| CertGenError::Json {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    match value {
        Value::Object(map) => Ok(map),
        other => Err(CertGenError::Json {
            what,
            path: path.to_path_buf(),
            reason: format!("expected a JSON object, found {}", kind(&other)),
        }),
    }
}

/// Parses `gen_cert.json` at `path`.
pub fn gen_cert_config(path: &Path) -> Result<GenCertConfig, CertGenError> {
    let map = read_object(path, "gen_cert.json")?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let field = |name: &'static str| -> Result<PathBuf, CertGenError> {
        let bad = |reason: String| CertGenError::Field {
            what: "gen_cert.json",
            path: path.to_path_buf(),
            field: name.to_string(),
            reason,
        };
        match map.get(name) {
            None => Err(bad("missing; expected a file path".into())),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(bad("is empty; expected a file path".into()))
            }
            Some(Value::String(s)) => Ok(base.join(s)),
            Some(other) => Err(bad(format!(
                "expected a path string, found {}",
                kind(other)
            ))),
        }
    };
    let mut warnings = Vec::new();
    for key in map.keys() {
        if KMC_KEYS.contains(&key.as_str()) {
            warnings.push(format!(
                "{}: `{key}` is ignored: Huawei KMC is not supported (the CA key's password \
                 is read as plain text from `ca_key_pwd`)",
                path.display()
            ));
        } else if !GEN_CERT_KEYS.contains(&key.as_str()) {
            warnings.push(format!(
                "{}: unknown key `{key}` ignored (known: {})",
                path.display(),
                GEN_CERT_KEYS.join(", ")
            ));
        }
    }
    Ok(GenCertConfig {
        ca_cert: field("ca_cert")?,
        ca_key: field("ca_key")?,
        ca_key_pwd: field("ca_key_pwd")?,
        cert_config: field("cert_config")?,
        output_path: field("output_path")?,
        warnings,
    })
}

/// Parses the `--ip` list (empty entries, as from `--ip=`, are skipped).
pub fn parse_ip_flag(values: &[String]) -> Result<Vec<IpAddr>, CertGenError> {
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<IpAddr>().map_err(|_| CertGenError::IpFlag {
                value: v.to_string(),
            })
        })
        .collect()
}

/// Parses `cert_info.json` at `path`, adding `extra_ips` (from `--ip`) to its IP names.
pub fn cert_info(path: &Path, extra_ips: &[IpAddr]) -> Result<CertInfo, CertGenError> {
    let map = read_object(path, "cert_info.json")?;
    let bad = |field: &str, reason: String| CertGenError::Field {
        what: "cert_info.json",
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let mut warnings = Vec::new();
    for key in map.keys() {
        if !CERT_INFO_KEYS.contains(&key.as_str()) {
            warnings.push(format!(
                "{}: unknown key `{key}` ignored (known: {})",
                path.display(),
                CERT_INFO_KEYS.join(", ")
            ));
        }
    }
    let days = positive_int(map.get("expired_time"), MAX_EXPIRED_DAYS)
        .map_err(|r| bad("expired_time", format!("{r} (days)")))?;
    let serial = positive_int(map.get("serial_number"), i64::MAX.unsigned_abs())
        .map_err(|r| bad("serial_number", r))?;
    let label = match map.get("subject") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(other) => {
            return Err(bad(
                "subject",
                format!("expected a string, found {}", kind(other)),
            ))
        }
    };
    let mut subject = distinguished_name(map.get("req_distinguished_name"), &bad)?;
    if subject.common_name.is_none() {
        // MindIE's `subject` is a label; it stands in for a missing CN.
        subject.common_name = label;
    }
    if subject == Subject::default() {
        return Err(bad(
            "req_distinguished_name",
            "is empty; give at least `CN` (or `subject`)".into(),
        ));
    }
    let (mut ips, dns) = alt_names(map.get("alt_names"), &bad)?;
    for ip in extra_ips {
        if !ips.contains(ip) {
            ips.push(*ip);
        }
    }
    if ips.is_empty() && dns.is_empty() {
        warnings.push(format!(
            "{}: no `alt_names` and no --ip: TLS clients that check the server's name \
             (rustls, curl) will refuse this certificate for a server",
            path.display()
        ));
    }
    Ok(CertInfo {
        subject,
        days,
        serial,
        ips,
        dns,
        warnings,
    })
}

fn positive_int(value: Option<&Value>, max: u64) -> Result<u64, String> {
    let allowed = format!("expected an integer in 1..={max}");
    match value {
        None => Err(format!("missing; {allowed}")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (1..=max).contains(&v) => Ok(v),
            _ => Err(format!("{n} is out of range; {allowed}")),
        },
        Some(other) => Err(format!("{allowed}, found {}", kind(other))),
    }
}

fn distinguished_name(
    value: Option<&Value>,
    bad: &dyn Fn(&str, String) -> CertGenError,
) -> Result<Subject, CertGenError> {
    let map = match value {
        None | Some(Value::Null) => return Ok(Subject::default()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(bad(
                "req_distinguished_name",
                format!("expected an object, found {}", kind(other)),
            ))
        }
    };
    if let Some(key) = map
        .keys()
        .find(|k| !DN_KEYS.iter().any(|(name, _)| name == k))
    {
        let known: Vec<&str> = DN_KEYS.iter().map(|(n, _)| *n).collect();
        return Err(bad(
            &format!("req_distinguished_name.{key}"),
            format!("unknown name attribute; allowed: {}", known.join(", ")),
        ));
    }
    let mut out = Subject::default();
    for (name, max_len) in DN_KEYS {
        let field = format!("req_distinguished_name.{name}");
        let text = match map.get(name) {
            None | Some(Value::Null) => continue,
            Some(Value::String(s)) => s.trim().to_string(),
            Some(other) => {
                return Err(bad(
                    &field,
                    format!("expected a string, found {}", kind(other)),
                ))
            }
        };
        if text.is_empty() {
            continue;
        }
        let chars = text.chars().count();
        if chars > max_len {
            return Err(bad(
                &field,
                format!("`{text}` has {chars} characters, at most {max_len} are allowed"),
            ));
        }
        if text.chars().any(char::is_control) {
            return Err(bad(&field, format!("{text:?} holds control characters")));
        }
        if name == "C" && !(chars == 2 && text.chars().all(|c| c.is_ascii_alphabetic())) {
            return Err(bad(
                &field,
                format!("`{text}` is not a two-letter country code (ISO 3166, e.g. CN)"),
            ));
        }
        let slot = match name {
            "C" => &mut out.country,
            "ST" => &mut out.state,
            "L" => &mut out.locality,
            "O" => &mut out.organization,
            "OU" => &mut out.organizational_unit,
            _ => &mut out.common_name,
        };
        *slot = Some(text);
    }
    Ok(out)
}

fn alt_names(
    value: Option<&Value>,
    bad: &dyn Fn(&str, String) -> CertGenError,
) -> Result<(Vec<IpAddr>, Vec<String>), CertGenError> {
    let map = match value {
        None | Some(Value::Null) => return Ok((Vec::new(), Vec::new())),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(bad(
                "alt_names",
                format!(
                    "expected an object {{\"IP\": [...], \"DNS\": [...]}}, found {}",
                    kind(other)
                ),
            ))
        }
    };
    if let Some(key) = map.keys().find(|k| *k != "IP" && *k != "DNS") {
        return Err(bad(
            &format!("alt_names.{key}"),
            "unknown name type; allowed: IP, DNS".into(),
        ));
    }
    let mut ips = Vec::new();
    for (i, text) in string_list(map.get("IP"), "alt_names.IP", bad)?
        .iter()
        .enumerate()
    {
        let ip = text.parse::<IpAddr>().map_err(|_| {
            bad(
                &format!("alt_names.IP[{i}]"),
                format!("`{text}` is not an IPv4 or IPv6 address"),
            )
        })?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut seen = BTreeSet::new();
    let mut dns = Vec::new();
    for (i, text) in string_list(map.get("DNS"), "alt_names.DNS", bad)?
        .into_iter()
        .enumerate()
    {
        if !is_dns_name(&text) {
            return Err(bad(
                &format!("alt_names.DNS[{i}]"),
                format!(
                    "`{text}` is not a DNS name (labels of letters, digits and `-`, at most \
                     63 characters each, 253 in all; `*.` allowed in front)"
                ),
            ));
        }
        if seen.insert(text.to_ascii_lowercase()) {
            dns.push(text);
        }
    }
    Ok((ips, dns))
}

fn string_list(
    value: Option<&Value>,
    field: &str,
    bad: &dyn Fn(&str, String) -> CertGenError,
) -> Result<Vec<String>, CertGenError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.trim().to_string()),
                other => Err(bad(
                    &format!("{field}[{i}]"),
                    format!("expected a string, found {}", kind(other)),
                )),
            })
            .collect(),
        Some(other) => Err(bad(
            field,
            format!("expected a list of strings, found {}", kind(other)),
        )),
    }
}

/// A host name for a certificate: ASCII letters, digits and `-` in dot-separated labels, an
/// optional leading `*.` wildcard.
fn is_dns_name(name: &str) -> bool {
    let body = name.strip_prefix("*.").unwrap_or(name);
    !body.is_empty()
        && name.len() <= 253
        && body.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_name("localhost"));
        assert!(is_dns_name("*.mindie.svc.cluster.local"));
        assert!(!is_dns_name("bad name"));
        assert!(!is_dns_name("-x.example"));
        assert!(!is_dns_name("a..b"));
        assert!(!is_dns_name("*."));
    }

    #[test]
    fn ip_flag() {
        let ok = parse_ip_flag(&["10.0.0.3".into(), " ::1 ".into(), String::new()]);
        assert_eq!(ok.ok().map(|v| v.len()), Some(2));
        let err = parse_ip_flag(&["10.0.0.300".into()])
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("10.0.0.300") && e.contains("--ip")));
    }

    #[test]
    fn integers() {
        assert_eq!(positive_int(Some(&Value::from(365)), 7300), Ok(365));
        assert!(positive_int(Some(&Value::from(0)), 7300).is_err());
        assert!(positive_int(Some(&Value::from(-3)), 7300).is_err());
        assert!(positive_int(Some(&Value::from(7301)), 7300).is_err());
        assert!(positive_int(Some(&Value::from("365")), 7300).is_err());
        assert!(positive_int(Some(&Value::from(1.5)), 7300).is_err());
        assert!(positive_int(None, 7300).is_err());
    }
}
