//! The `gen-cert` subcommand: MindIE's gen_cert tool (SPEC-CLUSTER §6). From `gen_cert.json`
//! (the CA's certificate, encrypted key and password file, the `cert_info.json` describing the
//! new certificate, the output folder) it makes a new RSA key, has the CA sign a certificate
//! for it, and writes `cert.pem`, `cert.key.pem` (encrypted) and `cert_passwd.txt` (the key's
//! random password) into the output folder, mode 0400.
//!
//! This module owns the order of the steps and the error type; [`input`] reads the JSON
//! files, [`ca`] checks and loads the CA, [`issue`] makes the key and certificate, [`random`]
//! the randomness and password, [`output`] the writing. Every input that carries trust (both
//! JSON files, the CA's certificate, key and password, the output folder) passes the
//! permission check first, as the daemon's own files do (`MINDIE_CHECK_INPUTFILES_PERMISSION=0`
//! turns refusals into warnings). Huawei KMC is not supported: `kmc_ksf_*` keys are ignored.

pub mod ca;
pub mod input;
pub mod issue;
pub mod output;
pub mod random;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::certinfo;
use super::keys::KeyError;
use super::perms::{FileRole, PermChecker, PermError, PERMISSION_CHECK_ENV};

/// Why `gen-cert` refused or failed. Every variant names the file (and field) concerned; no
/// message ever holds a password.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    #[error("{field}: {source}")]
    Perm {
        /// Which input this is (`gen_cert.json \`ca_cert\``, ...).
        field: String,
        source: PermError,
    },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {path} is not valid JSON: {reason}")]
    Json {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path}: field `{field}` {reason}")]
    Field {
        what: &'static str,
        path: PathBuf,
        field: String,
        reason: String,
    },
    #[error("--ip: `{value}` is not an IPv4 or IPv6 address (give --ip=IP1,IP2)")]
    IpFlag { value: String },
    #[error("CA certificate {path} (gen_cert.json `ca_cert`): {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("CA key {path} (gen_cert.json `ca_key`): {reason}")]
    CaKey { path: PathBuf, reason: String },
    #[error("CA key (gen_cert.json `ca_key` / `ca_key_pwd`): {0}")]
    Key(#[from] KeyError),
    #[error("output folder {path} (gen_cert.json `output_path`): {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to read random number from system.")]
    Entropy,
    #[error("cannot make the certificate: {reason}")]
    Sign { reason: String },
}

/// What a successful run wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub password: PathBuf,
    /// Notes printed before the summary (ignored keys, waived permission findings).
    pub warnings: Vec<String>,
}

/// Entry point of `mindieservice_daemon gen-cert <gen_cert.json> [--ip=IP1,IP2]`.
pub fn main(config: &Path, ips: &[String]) -> ExitCode {
    let enforce =
        PermChecker::enforce_from_env_value(std::env::var(PERMISSION_CHECK_ENV).ok().as_deref());
    match run(config, ips, enforce) {
        Ok(w) => {
            for warning in &w.warnings {
                eprintln!("mindieservice_daemon gen-cert: warning: {warning}");
            }
            println!(
                "gen-cert: wrote (mode 0400)\n  certificate:  {}\n  private key:  {} \
                 (encrypted)\n  key password: {}",
                w.cert.display(),
                w.key.display(),
                w.password.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mindieservice_daemon gen-cert: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The whole command: read and check the inputs, sign, write. Nothing is written unless
/// every check passed.
pub fn run(config: &Path, ips: &[String], enforce: bool) -> Result<Written, CertGenError> {
    let mut checker = PermChecker::new(enforce);
    let extra_ips = input::parse_ip_flag(ips)?;
    check(
        &mut checker,
        config,
        FileRole::Config,
        "gen_cert.json (the gen-cert argument)",
    )?;
    let cfg = input::gen_cert_config(config)?;
    let field = |name: &str| format!("gen_cert.json `{name}`");
    check(
        &mut checker,
        &cfg.cert_config,
        FileRole::Config,
        &field("cert_config"),
    )?;
    let info = input::cert_info(&cfg.cert_config, &extra_ips)?;
    check(
        &mut checker,
        &cfg.ca_cert,
        FileRole::Cert,
        &field("ca_cert"),
    )?;
    check(&mut checker, &cfg.ca_key, FileRole::Key, &field("ca_key"))?;
    check(
        &mut checker,
        &cfg.ca_key_pwd,
        FileRole::Password,
        &field("ca_key_pwd"),
    )?;
    match std::fs::metadata(&cfg.output_path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CertGenError::Output {
                path: cfg.output_path.clone(),
                reason: "is not a folder".into(),
            })
        }
        Err(e) => {
            return Err(CertGenError::Output {
                path: cfg.output_path.clone(),
                reason: format!("{e}; create it first (mkdir -m 700)"),
            })
        }
    }
    check(
        &mut checker,
        &cfg.output_path,
        FileRole::SecurityDir,
        &field("output_path"),
    )?;

    let now = certinfo::now_unix();
    let ca = ca::load(&cfg.ca_cert, &cfg.ca_key, &cfg.ca_key_pwd, now)?;
    let mut warnings = cfg.warnings.clone();
    warnings.extend(info.warnings.iter().cloned());
    let days = i64::try_from(info.days).unwrap_or(i64::MAX);
    if now.saturating_add(days.saturating_mul(86_400)) > ca.facts.not_after {
        warnings.push(format!(
            "the new certificate ({} days) outlives its CA {} (valid until {}): it will not \
             verify after that date",
            info.days,
            cfg.ca_cert.display(),
            ca.facts.not_after_text
        ));
    }
    let identity = issue::issue(&ca, &info, now)?;
    let written = output::write_all(
        &cfg.output_path,
        &[
            (output::CERT_FILE, identity.cert_pem.as_bytes()),
            (output::KEY_FILE, identity.key_pem.as_bytes()),
            (
                output::PASSWORD_FILE,
                format!("{}\n", identity.password.as_str()).as_bytes(),
            ),
        ],
    )?;
    warnings.extend(checker.warnings);
    let path = |i: usize| {
        let p = written.get(i).cloned().unwrap_or_default();
        std::path::absolute(&p).unwrap_or(p)
    };
    Ok(Written {
        cert: path(0),
        key: path(1),
        password: path(2),
        warnings,
    })
}

fn check(
    checker: &mut PermChecker,
    path: &Path,
    role: FileRole,
    field: &str,
) -> Result<(), CertGenError> {
    checker
        .check(path, role)
        .map_err(|source| CertGenError::Perm {
            field: field.to_string(),
            source,
        })
}
