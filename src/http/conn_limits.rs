//! Per-connection limits of every listener against slow and abusive clients: how long a new
//! connection may stay silent, how long a TLS handshake and a request head may take, and how
//! large a request head may be. MindIE has no config key for these (its HTTP server reads
//! with a fixed 60 s timeout), so they come from the environment, checked at start:
//!
//! | variable | default | allowed | what it bounds |
//! |---|---|---|---|
//! | `MINDIE_HTTP_HEADER_TIMEOUT_S` | 60 | 1..=3600 | a new connection's first bytes, until HTTP/1.1 and HTTP/2 can be told apart ([`super::first_bytes`]); then each HTTP/1.1 request head, from its first byte or from the end of the previous reply on a kept-alive connection; HTTP/2: the ping interval and the wait for its answer |
//! | `MINDIE_TLS_HANDSHAKE_TIMEOUT_S` | 60 | 1..=3600 | the TLS handshake, from accept |
//! | `MINDIE_HTTP_MAX_HEADER_BYTES` | 65536 | 8192..=1048576 | request line plus headers (HTTP/1.1: the read buffer, past it 431; HTTP/2: the header list size) |
//!
//! The daemon parses them once ([`ConnLimits::from_env`]) and [`install`]s them before its
//! planes serve; a listener started without that (the Coordinator) uses the defaults.

use crate::config::Env;
use std::sync::OnceLock;
use std::time::Duration;

/// Env var: seconds a connection may take to show its HTTP version, and a request head may take.
pub const HEADER_TIMEOUT_ENV: &str = "MINDIE_HTTP_HEADER_TIMEOUT_S";
/// Env var: seconds a TLS handshake may take.
pub const TLS_HANDSHAKE_TIMEOUT_ENV: &str = "MINDIE_TLS_HANDSHAKE_TIMEOUT_S";
/// Env var: the largest request head, in bytes.
pub const MAX_HEADER_BYTES_ENV: &str = "MINDIE_HTTP_MAX_HEADER_BYTES";

const TIMEOUT_RANGE: (u64, u64) = (1, 3600);
/// hyper's read buffer cannot be smaller than 8 KiB.
const HEADER_BYTES_RANGE: (u64, u64) = (8192, 1024 * 1024);

/// A limit set to something unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "environment variable {var}={value:?} is not allowed: {why} (allowed {min}..={max} {unit})"
)]
pub struct ConnLimitError {
    pub var: &'static str,
    pub value: String,
    pub why: &'static str,
    pub min: u64,
    pub max: u64,
    pub unit: &'static str,
}

/// See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A connection's first bytes; then each HTTP/1.1 request head; the HTTP/2 ping interval.
    pub header_timeout: Duration,
    /// The TLS handshake, from accept.
    pub tls_handshake_timeout: Duration,
    /// Request line plus headers.
    pub max_header_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(60),
            tls_handshake_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
        }
    }
}

fn read(
    env: &Env,
    var: &'static str,
    (min, max): (u64, u64),
    unit: &'static str,
) -> Result<Option<u64>, ConnLimitError> {
    let Some(raw) = env.get(var) else {
        return Ok(None);
    };
    let err = |why| ConnLimitError {
        var,
        value: raw.to_string(),
        why,
        min,
        max,
        unit,
    };
    let n: u64 = raw.trim().parse().map_err(|_| err("not a whole number"))?;
    if !(min..=max).contains(&n) {
        return Err(err("out of range"));
    }
    Ok(Some(n))
}

impl ConnLimits {
    /// The limits the environment sets (defaults for unset variables).
    pub fn from_env(env: &Env) -> Result<Self, ConnLimitError> {
        let d = Self::default();
        let secs = |var| read(env, var, TIMEOUT_RANGE, "seconds");
        Ok(Self {
            header_timeout: secs(HEADER_TIMEOUT_ENV)?.map_or(d.header_timeout, Duration::from_secs),
            tls_handshake_timeout: secs(TLS_HANDSHAKE_TIMEOUT_ENV)?
                .map_or(d.tls_handshake_timeout, Duration::from_secs),
            max_header_bytes: read(env, MAX_HEADER_BYTES_ENV, HEADER_BYTES_RANGE, "bytes")?
                .map_or(d.max_header_bytes, |n| n as usize),
        })
    }
}

static INSTALLED: OnceLock<ConnLimits> = OnceLock::new();

/// Makes `limits` the ones every listener started afterwards uses (the first call wins).
pub fn install(limits: ConnLimits) {
    let _ = INSTALLED.set(limits);
}

/// The installed limits, or the defaults.
pub fn current() -> ConnLimits {
    INSTALLED.get().copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_unset() {
        let l = ConnLimits::from_env(&Env::from_pairs(Vec::<(String, String)>::new()));
        assert_eq!(l, Ok(ConnLimits::default()));
    }

    #[test]
    fn reads_each_variable() {
        let env = Env::from_pairs([
            (HEADER_TIMEOUT_ENV, "2"),
            (TLS_HANDSHAKE_TIMEOUT_ENV, " 3 "),
            (MAX_HEADER_BYTES_ENV, "16384"),
        ]);
        assert_eq!(
            ConnLimits::from_env(&env),
            Ok(ConnLimits {
                header_timeout: Duration::from_secs(2),
                tls_handshake_timeout: Duration::from_secs(3),
                max_header_bytes: 16384,
            })
        );
    }

    #[test]
    fn refuses_bad_values_naming_variable_value_and_range() {
        for (var, value) in [
            (HEADER_TIMEOUT_ENV, "0"),
            (HEADER_TIMEOUT_ENV, "3601"),
            (TLS_HANDSHAKE_TIMEOUT_ENV, "1.5"),
            (MAX_HEADER_BYTES_ENV, "100"),
            (MAX_HEADER_BYTES_ENV, "2000000"),
        ] {
            let e = ConnLimits::from_env(&Env::from_pairs([(var, value)]))
                .expect_err("a bad value is refused");
            let msg = e.to_string();
            assert!(msg.contains(var) && msg.contains(value), "{msg}");
            assert!(msg.contains("allowed"), "{msg}");
        }
    }
}
