//! rustls server configurations per plane: TLS 1.2/1.3 only, mutual TLS against the configured
//! CAs, CRLs honoured, encrypted private keys, RSA keys under 3072 bits refused.
//!
//! This module owns turning a plane's [`TlsFiles`] into a rustls config: every file passes the
//! permission check first, then certificates, key, CAs and CRLs are loaded and cross-checked
//! (key matches certificate, leaf within its validity window, RSA ≥ 3072 bits). The ring
//! provider is the only crypto provider. Client configs (inter-instance links, tests) are here
//! too.
//!
//! Revocation: every CRL is used for the whole client chain; a client whose issuer has no CRL
//! configured is accepted (its status is "unknown", not "revoked"), and a warning at start-up
//! names such CAs. Expired CRLs are still applied (`check` warns about them).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use super::certinfo::{self, Validity};
use super::keys::{self, KeyError};
use super::perms::{FileRole, PermChecker, PermError};
use super::TlsFiles;

/// ALPN protocols offered by every server plane, in preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a TLS configuration could not be built. Every variant names the file(s) concerned.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Perm(#[from] PermError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{what} {path}: {reason}")]
    BadFile {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("certificate {path}: {}", certinfo::weak_rsa_message(*bits))]
    WeakRsa { path: PathBuf, bits: usize },
    #[error("certificate {path} expired on {not_after}; issue a new certificate")]
    Expired { path: PathBuf, not_after: String },
    #[error("certificate {path} is not valid before {not_before}; check the system clock")]
    NotYetValid { path: PathBuf, not_before: String },
    #[error(
        "private key {key} does not match certificate {cert}: the key's public key differs from \
         the certificate's (wrong key file, or the certificate was issued for another key)"
    )]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("no CA file given for {purpose}; configure the CA that signed the peer's certificate")]
    NoCa { purpose: &'static str },
    #[error("TLS setup with {files} failed: {reason}")]
    Rustls { files: String, reason: String },
}

/// The only crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Permission-checks every file of a plane: CAs and certificate as [`FileRole::Cert`], key as
/// [`FileRole::Key`], password as [`FileRole::Password`], CRLs as [`FileRole::Crl`].
pub fn check_files(files: &TlsFiles, checker: &mut PermChecker) -> Result<(), PermError> {
    for ca in &files.ca_files {
        checker.check(ca, FileRole::Cert)?;
    }
    checker.check(&files.cert, FileRole::Cert)?;
    checker.check(&files.key, FileRole::Key)?;
    if let Some(pw) = &files.key_password {
        checker.check(pw, FileRole::Password)?;
    }
    for crl in &files.crl_files {
        checker.check(crl, FileRole::Crl)?;
    }
    Ok(())
}

/// A server configuration for one plane: mutual TLS (client certificate required) when
/// `files.ca_files` is non-empty, else server-only TLS. ALPN offers `h2` and `http/1.1`.
pub fn server_config(
    files: &TlsFiles,
    checker: &mut PermChecker,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    check_files(files, checker)?;
    let (chain, key) = load_identity(&files.cert, &files.key, files.key_password.as_deref())?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|e| rustls_err(&[&files.cert], e))?;
    let builder = if files.ca_files.is_empty() {
        builder.with_no_client_auth()
    } else {
        let roots = Arc::new(load_roots(&files.ca_files)?);
        let crls = load_all_crls(&files.crl_files)?;
        warn_cas_without_crl(&files.ca_files, &crls);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider)
            .with_crls(crls.into_iter().map(|(_, c)| c))
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| TlsError::Rustls {
                files: join(files.ca_files.iter().chain(&files.crl_files)),
                reason: e.to_string(),
            })?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| rustls_err(&[&files.cert, &files.key], e))?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration (inter-instance links, tests): the server must chain to one of
/// `ca_files`; with `client_cert_and_key = Some((cert, key, password_file))` the client
/// presents that certificate. No permission checks here (see [`client_config_for`]).
pub fn client_config(
    ca_files: &[PathBuf],
    client_cert_and_key: Option<(&Path, &Path, Option<&Path>)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    build_client(ca_files, &[], client_cert_and_key)
}

/// A client configuration from a plane's files, permission-checked like a server's: the peer
/// must chain to `files.ca_files` and not be revoked by `files.crl_files`; the client presents
/// `files.cert`/`files.key`.
pub fn client_config_for(
    files: &TlsFiles,
    checker: &mut PermChecker,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    check_files(files, checker)?;
    build_client(
        &files.ca_files,
        &files.crl_files,
        Some((&files.cert, &files.key, files.key_password.as_deref())),
    )
}

fn build_client(
    ca_files: &[PathBuf],
    crl_files: &[PathBuf],
    identity: Option<(&Path, &Path, Option<&Path>)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    if ca_files.is_empty() {
        return Err(TlsError::NoCa {
            purpose: "verifying the server of an outgoing TLS connection",
        });
    }
    let provider = provider();
    let roots = Arc::new(load_roots(ca_files)?);
    let crls = load_all_crls(crl_files)?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls.into_iter().map(|(_, c)| c))
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| TlsError::Rustls {
                files: join(ca_files.iter().chain(crl_files)),
                reason: e.to_string(),
            })?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| rustls_err(&[], e))?
        .with_webpki_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key_path, pw)) => {
            let (chain, key) = load_identity(cert, key_path, pw)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| rustls_err(&[cert, key_path], e))?
        }
    };
    Ok(Arc::new(config))
}

/// Loads and cross-checks a certificate chain and its key: leaf validity, RSA size, match.
pub fn load_identity(
    cert: &Path,
    key_path: &Path,
    password: Option<&Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certinfo::read_certs(cert).map_err(|reason| TlsError::BadFile {
        what: "certificate",
        path: cert.to_path_buf(),
        reason,
    })?;
    let leaf = chain
        .first()
        .map(|c| certinfo::cert_facts(c))
        .transpose()
        .map_err(|reason| TlsError::BadFile {
            what: "certificate",
            path: cert.to_path_buf(),
            reason,
        })?
        .ok_or_else(|| TlsError::BadFile {
            what: "certificate",
            path: cert.to_path_buf(),
            reason: "empty".into(),
        })?;
    if leaf.key_alg == certinfo::KeyAlg::Rsa && leaf.key_bits < certinfo::MIN_RSA_BITS {
        return Err(TlsError::WeakRsa {
            path: cert.to_path_buf(),
            bits: leaf.key_bits,
        });
    }
    match certinfo::validity_at(&leaf, certinfo::now_unix()) {
        Validity::NotYetValid => {
            return Err(TlsError::NotYetValid {
                path: cert.to_path_buf(),
                not_before: leaf.not_before_text,
            })
        }
        Validity::Expired { .. } => {
            return Err(TlsError::Expired {
                path: cert.to_path_buf(),
                not_after: leaf.not_after_text,
            })
        }
        Validity::Valid { days_left } if days_left < certinfo::EXPIRY_WARNING_DAYS => {
            tracing::warn!(
                "certificate {} expires in {days_left} days ({}); renew it soon",
                cert.display(),
                leaf.not_after_text
            );
        }
        Validity::Valid { .. } => {}
    }
    let key = keys::load_private_key(key_path, password)?;
    let signer = keys::signing_key(&key, key_path)?;
    let certified = rustls::sign::CertifiedKey::new(chain.clone(), signer);
    if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
        certified.keys_match()
    {
        return Err(TlsError::KeyMismatch {
            key: key_path.to_path_buf(),
            cert: cert.to_path_buf(),
        });
    }
    Ok((chain, key))
}

fn load_roots(ca_files: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in ca_files {
        let certs = certinfo::read_certs(path).map_err(|reason| TlsError::BadFile {
            what: "CA file",
            path: path.clone(),
            reason,
        })?;
        for cert in certs {
            roots.add(cert).map_err(|e| TlsError::BadFile {
                what: "CA file",
                path: path.clone(),
                reason: format!("unusable as a trust anchor: {e}"),
            })?;
        }
    }
    Ok(roots)
}

/// Every CRL of every file, each file checked on its own so a bad one is named.
fn load_all_crls(
    crl_files: &[PathBuf],
) -> Result<Vec<(PathBuf, CertificateRevocationListDer<'static>)>, TlsError> {
    let mut out = Vec::new();
    for path in crl_files {
        let crls = certinfo::read_crls(path).map_err(|reason| TlsError::BadFile {
            what: "CRL",
            path: path.clone(),
            reason,
        })?;
        out.extend(crls.into_iter().map(|c| (path.clone(), c)));
    }
    Ok(out)
}

fn warn_cas_without_crl(
    ca_files: &[PathBuf],
    crls: &[(PathBuf, CertificateRevocationListDer<'static>)],
) {
    if crls.is_empty() {
        return;
    }
    let issuers: Vec<Vec<u8>> = crls
        .iter()
        .filter_map(|(_, c)| x509_parser::parse_x509_crl(c.as_ref()).ok())
        .map(|(_, crl)| crl.issuer().as_raw().to_vec())
        .collect();
    for path in ca_files {
        for ca in certinfo::read_certs(path).unwrap_or_default() {
            let Ok(f) = certinfo::cert_facts(&ca) else {
                continue;
            };
            if !issuers.contains(&f.subject_raw) {
                tracing::warn!(
                    "no CRL configured for CA \"{}\" ({}): revocation of its client \
                     certificates is not checked",
                    f.subject,
                    path.display()
                );
            }
        }
    }
}

fn rustls_err(paths: &[&Path], e: rustls::Error) -> TlsError {
    TlsError::Rustls {
        files: join(paths.iter()),
        reason: e.to_string(),
    }
}

fn join<P: AsRef<Path>>(paths: impl Iterator<Item = P>) -> String {
    let v: Vec<String> = paths.map(|p| p.as_ref().display().to_string()).collect();
    if v.is_empty() {
        "(no files)".into()
    } else {
        v.join(", ")
    }
}
