//! The DMI headers the Coordinator puts on a prefill instance's inference requests
//! (SPEC-PD §2.1, §2.2): `req-type: prefill`, `req-id`, `d-target: <D ip>[;<D interCommPort>]`
//! and the optional `is-recompute`. [`parse`] reads and checks them; `d-port` is ignored, as
//! MindIE ignores it. Each [`DmiHeaderError`] says which header, the value found (shortened)
//! and what is allowed, and maps to 400 at the edge. [`check_role`] is the check MindIE makes
//! first on every inference route in dmi mode: no role yet → 503, not a prefill instance →
//! 400 ([`DmiRoleError`]).

use super::role::{Role, RoleStatus, RoleView};
use axum::http::HeaderMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Longest `req-id` accepted (MindIE: fewer than 1025 characters).
pub const MAX_REQ_ID_LEN: usize = 1024;

/// Longest piece of a header value quoted back in an error.
const QUOTE_LEN: usize = 64;

pub const REQ_TYPE: &str = "req-type";
pub const REQ_ID: &str = "req-id";
pub const D_TARGET: &str = "d-target";
pub const IS_RECOMPUTE: &str = "is-recompute";

/// The decode instance a prefilled request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DTarget {
    pub ip: Ipv4Addr,
    /// D's interCommPort when the Coordinator gave one.
    pub port: Option<u16>,
}

impl DTarget {
    /// Where to call `DecodeRequestChannel`: without a port, P's own interCommPort (as MindIE).
    pub fn grpc_addr(&self, own_inter_comm_port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, self.port.unwrap_or(own_inter_comm_port))
    }

    /// `d-target` names this instance (same ip, and same interCommPort when a port is given):
    /// the request is served locally (flex).
    pub fn is_local(&self, own_ip: Ipv4Addr, own_inter_comm_port: u16) -> bool {
        self.ip == own_ip && self.port.is_none_or(|p| p == own_inter_comm_port)
    }

    /// The `pNodeAddr` form of a P address: `ip` or `ip;port` (SPEC-PD §1.1 field 27).
    pub fn wire(&self) -> String {
        match self.port {
            Some(p) => format!("{};{p}", self.ip),
            None => self.ip.to_string(),
        }
    }
}

/// The checked DMI headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmiHeaders {
    /// The Coordinator's request id (hex digits; decimal in practice).
    pub req_id: String,
    pub d_target: DTarget,
    /// `is-recompute: true`: the body carries `"N,t1,…,tN,o1,…,oM"` instead of the prompt.
    pub is_recompute: bool,
}

/// Why the DMI headers were refused (400 at the edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmiHeaderError {
    #[error("DMI request must have req-type, req-id, d-target headers; missing: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
    #[error("header {header} is not visible ASCII text; allowed: {allowed}")]
    NotText {
        header: &'static str,
        allowed: &'static str,
    },
    #[error("Invalid req-id {0:?}: the characters of req-id must be hex digits [0-9, a-f, A-F]")]
    ReqIdNotHex(String),
    #[error("Invalid req-id: {0} characters; allowed 1 to 1024")]
    ReqIdLength(usize),
    #[error("Parameter req-type must be prefill but got {0:?}")]
    ReqType(String),
    #[error(
        "Parameter d-target must be an IPv4 address, optionally followed by ;<port>, but got {0:?}"
    )]
    DTargetIp(String),
    #[error("Parameter d-target {0:?}: the port after ';' must be an integer in [1, 65535]")]
    DTargetPort(String),
    #[error(
        "Parameter is-recompute is optional; when set it must be true or false, but got {0:?}"
    )]
    IsRecompute(String),
}

/// Why this instance takes no DMI (prefill) request now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmiRoleError {
    /// No role yet (503, MindIE's text).
    #[error("The server cannot process the inference request due to an unknown status.")]
    Unknown,
    /// Not a prefill instance (400).
    #[error(
        "DMI inference requests can be sent only to a prefill instance or a flex instance \
         with p_percentage > 0; this instance is {0}"
    )]
    NotPrefill(String),
}

/// The role check of SPEC-PD §2.2, made before the headers: RoleUnknown refuses everything;
/// then only prefill, or flex with a non-zero prefill share (or none given), takes requests.
pub fn check_role(view: &RoleView) -> Result<(), DmiRoleError> {
    if view.status == RoleStatus::RoleUnknown {
        return Err(DmiRoleError::Unknown);
    }
    match (view.role, view.p_percentage) {
        (Some(Role::Prefill), _) => Ok(()),
        (Some(Role::Flex), p) if p != Some(0) => Ok(()),
        (Some(Role::Flex), _) => Err(DmiRoleError::NotPrefill("flex at 0 % prefill".into())),
        (role, _) => Err(DmiRoleError::NotPrefill(
            role.map_or("none", Role::as_str).into(),
        )),
    }
}

/// Shortens a value for an error message.
fn quote(v: &str) -> String {
    match v.char_indices().nth(QUOTE_LEN) {
        Some((i, _)) => format!("{}…", &v[..i]),
        None => v.to_string(),
    }
}

fn text<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    allowed: &'static str,
) -> Result<Option<&'a str>, DmiHeaderError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| DmiHeaderError::NotText {
                header: name,
                allowed,
            })
        })
        .transpose()
}

/// Reads the DMI headers: `None` when none of `req-type`, `req-id`, `d-target` is present (a
/// plain request), an error when some but not all are, or any is malformed. Checks in
/// MindIE's order: presence, `req-id`, `req-type`, `d-target`, `is-recompute`.
pub fn parse(headers: &HeaderMap) -> Result<Option<DmiHeaders>, DmiHeaderError> {
    let req_type = text(headers, REQ_TYPE, "prefill")?;
    let req_id = text(headers, REQ_ID, "hex digits")?;
    let d_target = text(headers, D_TARGET, "<IPv4>[;<port>]")?;
    let (req_type, req_id, d_target) = match (req_type, req_id, d_target) {
        (None, None, None) => return Ok(None),
        (Some(t), Some(i), Some(d)) => (t, i, d),
        (t, i, d) => {
            let missing = [(REQ_TYPE, t), (REQ_ID, i), (D_TARGET, d)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(n, _)| n)
                .collect();
            return Err(DmiHeaderError::Missing(missing));
        }
    };

    if !req_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DmiHeaderError::ReqIdNotHex(quote(req_id)));
    }
    if req_id.is_empty() || req_id.len() > MAX_REQ_ID_LEN {
        return Err(DmiHeaderError::ReqIdLength(req_id.len()));
    }
    if req_type != "prefill" {
        return Err(DmiHeaderError::ReqType(quote(req_type)));
    }
    let d_target = parse_d_target(d_target)?;
    let is_recompute = match text(headers, IS_RECOMPUTE, "true or false")? {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(DmiHeaderError::IsRecompute(quote(other))),
    };
    Ok(Some(DmiHeaders {
        req_id: req_id.to_string(),
        d_target,
        is_recompute,
    }))
}

/// `<IPv4>` or `<IPv4>;<port>`; an empty port (`ip;`) counts as none.
fn parse_d_target(v: &str) -> Result<DTarget, DmiHeaderError> {
    let (ip, port) = match v.split_once(';') {
        Some((ip, port)) => (ip, Some(port)),
        None => (v, None),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| DmiHeaderError::DTargetIp(quote(v)))?;
    let port = match port {
        None | Some("") => None,
        Some(text) => match text.parse::<u16>() {
            // Plain digits only: no sign, no leading zeros.
            Ok(p) if p > 0 && p.to_string() == text => Some(p),
            _ => return Err(DmiHeaderError::DTargetPort(quote(v))),
        },
    };
    Ok(DTarget { ip, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn dmi(extra: &[(&'static str, &str)]) -> Result<Option<DmiHeaders>, DmiHeaderError> {
        let mut pairs = vec![
            (REQ_TYPE, "prefill"),
            (REQ_ID, "1234567890"),
            (D_TARGET, "10.0.0.7"),
        ];
        for (k, v) in extra {
            pairs.retain(|(n, _)| n != k);
            pairs.push((k, v));
        }
        parse(&headers(&pairs))
    }

    #[test]
    fn plain_requests_have_none() {
        assert_eq!(parse(&HeaderMap::new()), Ok(None));
        // d-port and is-recompute alone do not make a DMI request.
        assert_eq!(
            parse(&headers(&[("d-port", "1025"), (IS_RECOMPUTE, "true")])),
            Ok(None)
        );
    }

    #[test]
    fn a_full_set() {
        let h = dmi(&[("d-port", "1025")]).unwrap().unwrap();
        assert_eq!(h.req_id, "1234567890");
        assert_eq!(
            h.d_target,
            DTarget {
                ip: Ipv4Addr::new(10, 0, 0, 7),
                port: None
            }
        );
        assert!(!h.is_recompute);
        let h = dmi(&[(D_TARGET, "10.0.0.7;1121"), (IS_RECOMPUTE, "true")])
            .unwrap()
            .unwrap();
        assert_eq!(h.d_target.port, Some(1121));
        assert!(h.is_recompute);
        assert_eq!(h.d_target.wire(), "10.0.0.7;1121");
        assert_eq!(
            h.d_target.grpc_addr(2000),
            "10.0.0.7:1121".parse::<SocketAddrV4>().unwrap()
        );
        let h = dmi(&[(IS_RECOMPUTE, "")]).unwrap().unwrap();
        assert!(!h.is_recompute);
        let h = dmi(&[(IS_RECOMPUTE, "false"), (REQ_ID, "DeadBeef")])
            .unwrap()
            .unwrap();
        assert!(!h.is_recompute);
        assert_eq!(h.req_id, "DeadBeef");
    }

    #[test]
    fn some_but_not_all() {
        let e = parse(&headers(&[(REQ_TYPE, "prefill")])).unwrap_err();
        assert_eq!(e, DmiHeaderError::Missing(vec![REQ_ID, D_TARGET]));
        assert!(e.to_string().contains("missing: req-id, d-target"), "{e}");
        let e = parse(&headers(&[(REQ_ID, "1"), (D_TARGET, "1.2.3.4")])).unwrap_err();
        assert_eq!(e, DmiHeaderError::Missing(vec![REQ_TYPE]));
    }

    #[test]
    fn req_id_rules() {
        assert!(matches!(
            dmi(&[(REQ_ID, "12g4")]),
            Err(DmiHeaderError::ReqIdNotHex(v)) if v == "12g4"
        ));
        assert!(matches!(
            dmi(&[(REQ_ID, "-12")]),
            Err(DmiHeaderError::ReqIdNotHex(_))
        ));
        assert_eq!(dmi(&[(REQ_ID, "")]), Err(DmiHeaderError::ReqIdLength(0)));
        let long = "a".repeat(1024);
        assert!(dmi(&[(REQ_ID, &long)]).unwrap().is_some());
        let too_long = "a".repeat(1025);
        assert_eq!(
            dmi(&[(REQ_ID, &too_long)]),
            Err(DmiHeaderError::ReqIdLength(1025))
        );
        // Long bad values are shortened in the message.
        let bad = format!("{}z", "a".repeat(2000));
        let e = dmi(&[(REQ_ID, &bad)]).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("hex digits"), "{e}");
    }

    #[test]
    fn req_type_rule() {
        let e = dmi(&[(REQ_TYPE, "decode")]).unwrap_err();
        assert_eq!(e, DmiHeaderError::ReqType("decode".into()));
        assert!(e.to_string().contains("must be prefill"));
        assert!(dmi(&[(REQ_TYPE, "Prefill")]).is_err());
    }

    #[test]
    fn d_target_rules() {
        for bad in [
            "",
            "localhost",
            "10.0.0",
            "10.0.0.256",
            "::1",
            "10.0.0.1:1121",
        ] {
            assert!(
                matches!(dmi(&[(D_TARGET, bad)]), Err(DmiHeaderError::DTargetIp(_))),
                "{bad:?}"
            );
        }
        for bad in [
            "10.0.0.1;x",
            "10.0.0.1;0",
            "10.0.0.1;65536",
            "10.0.0.1;1;2",
            "10.0.0.1;+5",
        ] {
            assert!(
                matches!(dmi(&[(D_TARGET, bad)]), Err(DmiHeaderError::DTargetPort(_))),
                "{bad:?}"
            );
        }
        let h = dmi(&[(D_TARGET, "10.0.0.1;")]).unwrap().unwrap();
        assert_eq!(h.d_target.port, None);
        let h = dmi(&[(D_TARGET, "10.0.0.1;65535")]).unwrap().unwrap();
        assert_eq!(h.d_target.port, Some(65535));
    }

    #[test]
    fn is_recompute_rule() {
        let e = dmi(&[(IS_RECOMPUTE, "yes")]).unwrap_err();
        assert_eq!(e, DmiHeaderError::IsRecompute("yes".into()));
        assert!(dmi(&[(IS_RECOMPUTE, "TRUE")]).is_err());
    }

    #[test]
    fn non_text_values() {
        let mut h = headers(&[(REQ_TYPE, "prefill"), (D_TARGET, "1.2.3.4")]);
        h.insert(REQ_ID, HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert!(matches!(
            parse(&h),
            Err(DmiHeaderError::NotText { header: REQ_ID, .. })
        ));
    }

    #[test]
    fn role_checks() {
        let view = |status, role, p| RoleView {
            status,
            role,
            p_percentage: p,
        };
        use RoleStatus::*;
        assert_eq!(
            check_role(&view(RoleUnknown, None, None)),
            Err(DmiRoleError::Unknown)
        );
        assert_eq!(
            check_role(&view(RoleSwitching, Some(Role::Prefill), None)),
            Ok(())
        );
        assert_eq!(
            check_role(&view(RoleReady, Some(Role::Flex), Some(30))),
            Ok(())
        );
        assert_eq!(check_role(&view(RoleReady, Some(Role::Flex), None)), Ok(()));
        let e = check_role(&view(RoleReady, Some(Role::Flex), Some(0))).unwrap_err();
        assert!(
            e.to_string()
                .ends_with("this instance is flex at 0 % prefill"),
            "{e}"
        );
        assert_eq!(
            check_role(&view(RoleReady, Some(Role::Decode), None)),
            Err(DmiRoleError::NotPrefill("decode".into()))
        );
    }

    #[test]
    fn local_targets() {
        let own = Ipv4Addr::new(10, 0, 0, 1);
        let t = |ip: [u8; 4], port| DTarget {
            ip: ip.into(),
            port,
        };
        assert!(t([10, 0, 0, 1], None).is_local(own, 1121));
        assert!(t([10, 0, 0, 1], Some(1121)).is_local(own, 1121));
        assert!(!t([10, 0, 0, 1], Some(1122)).is_local(own, 1121));
        assert!(!t([10, 0, 0, 2], None).is_local(own, 1121));
    }
}
