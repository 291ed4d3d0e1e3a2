//! Certificate inspection for `check` and start-up: chain, validity window, key match, key size.
//!
//! This module owns reading certificates and CRLs from disk (PEM or DER) and the facts the
//! rest of the security layer needs about them ([`CertFacts`]); [`inspect`] turns one plane's
//! [`TlsFiles`] into a list of [`Finding`]s for the `check` subcommand. Nothing here panics on
//! malformed files: every failure becomes an error finding or an `Err(String)`.
//!
//! Chain checks verify signatures (x509-parser's `verify` feature, backed by ring, which rustls
//! already uses) and require the issuer name to match the CA's subject.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::keys;
use super::TlsFiles;

/// Leaf certificates expiring within this many days get a warning.
pub const EXPIRY_WARNING_DAYS: i64 = 30;
/// RSA keys below this size are refused (SPEC §4).
pub const MIN_RSA_BITS: usize = 3072;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}

/// One line of the `check` report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// The file the finding is about.
    pub subject: String,
    pub message: String,
}

/// The public key's algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAlg {
    Rsa,
    /// Elliptic curve, with the curve's name (P-256, P-384, P-521, or its OID).
    Ec(String),
    Ed25519,
    /// Anything else, by OID.
    Other(String),
}

/// What the security layer needs to know about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub subject: String,
    pub issuer: String,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    /// Serial number bytes, leading zero bytes removed.
    pub serial: Vec<u8>,
    /// Validity window, seconds since the Unix epoch, and as text.
    pub not_before: i64,
    pub not_after: i64,
    pub not_before_text: String,
    pub not_after_text: String,
    pub key_alg: KeyAlg,
    /// Key size in bits (RSA modulus, EC field), 0 when unknown.
    pub key_bits: usize,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// The SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

impl CertFacts {
    /// "RSA 3072 bits", "EC P-256", ...
    pub fn key_description(&self) -> String {
        match &self.key_alg {
            KeyAlg::Rsa => format!("RSA {} bits", self.key_bits),
            KeyAlg::Ec(curve) => format!("EC {curve}"),
            KeyAlg::Ed25519 => "Ed25519".to_string(),
            KeyAlg::Other(oid) => format!("key algorithm {oid}"),
        }
    }
}

/// Where a certificate stands in its validity window at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    NotYetValid,
    Expired {
        days_ago: i64,
    },
    /// Valid, with whole days left.
    Valid {
        days_left: i64,
    },
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where `facts` stands at `now` (seconds since the epoch).
pub fn validity_at(facts: &CertFacts, now: i64) -> Validity {
    if now < facts.not_before {
        Validity::NotYetValid
    } else if now > facts.not_after {
        Validity::Expired {
            days_ago: (now - facts.not_after) / 86_400,
        }
    } else {
        Validity::Valid {
            days_left: (facts.not_after - now) / 86_400,
        }
    }
}

/// Parses one DER certificate.
pub fn cert_facts(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.public_key();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let (key_alg, key_bits) = match alg_oid.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                (KeyAlg::Rsa, unsigned_bits(rsa.modulus))
            }
            _ => (KeyAlg::Rsa, 0),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| x509_parser::der_parser::oid::Oid::try_from(p).ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            let (name, bits) = match curve.as_str() {
                "1.2.840.10045.3.1.7" => ("P-256".to_string(), 256),
                "1.3.132.0.34" => ("P-384".to_string(), 384),
                "1.3.132.0.35" => ("P-521".to_string(), 521),
                other => (other.to_string(), 0),
            };
            (KeyAlg::Ec(name), bits)
        }
        "1.3.101.112" => (KeyAlg::Ed25519, 256),
        other => (KeyAlg::Other(other.to_string()), 0),
    };
    let validity = cert.validity();
    let serial: Vec<u8> = strip_zeros(cert.raw_serial()).to_vec();
    Ok(CertFacts {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        subject_raw: cert.subject().as_raw().to_vec(),
        issuer_raw: cert.issuer().as_raw().to_vec(),
        serial,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        not_before_text: validity.not_before.to_string(),
        not_after_text: validity.not_after.to_string(),
        key_alg,
        key_bits,
        is_ca: cert.is_ca(),
        spki: spki.raw.to_vec(),
    })
}

/// Whether `child` names `issuer` as its issuer and carries a valid signature by its key.
pub fn signed_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok((_, c)), Ok((_, i))) = (
        X509Certificate::from_der(child),
        X509Certificate::from_der(issuer),
    ) else {
        return false;
    };
    c.issuer().as_raw() == i.subject().as_raw() && c.verify_signature(Some(i.public_key())).is_ok()
}

/// Certificates in a file: PEM `CERTIFICATE` blocks, or one DER certificate.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateDer::from(bytes)]);
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err(
            "no certificate found (expected PEM `-----BEGIN CERTIFICATE-----` or DER)".into(),
        );
    }
    Ok(certs)
}

/// CRLs in a file: PEM `X509 CRL` blocks, or one DER CRL. Each is checked to parse.
pub fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let crls = if bytes.first() == Some(&0x30) {
        vec![CertificateRevocationListDer::from(bytes)]
    } else {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("bad PEM: {e}"))?
    };
    if crls.is_empty() {
        return Err("no CRL found (expected PEM `-----BEGIN X509 CRL-----` or DER)".into());
    }
    for crl in &crls {
        x509_parser::parse_x509_crl(crl.as_ref()).map_err(|e| format!("not a valid CRL: {e}"))?;
    }
    Ok(crls)
}

/// The bit length of a big-endian unsigned integer.
fn unsigned_bits(bytes: &[u8]) -> usize {
    let b = strip_zeros(bytes);
    match b.first() {
        Some(first) => b.len() * 8 - first.leading_zeros() as usize,
        None => 0,
    }
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Everything worth saying about one plane's TLS files, for the `check` subcommand.
/// Permissions are not checked here (see [`super::perms`]).
pub fn inspect(files: &TlsFiles) -> Vec<Finding> {
    let mut r = Report::default();
    let now = now_unix();
    let cert_name = files.cert.display().to_string();
    let chain = match read_certs(&files.cert) {
        Ok(c) => c,
        Err(e) => {
            r.push(Severity::Error, &cert_name, e);
            Vec::new()
        }
    };
    let leaf = chain.first().and_then(|c| match cert_facts(c) {
        Ok(f) => Some(f),
        Err(e) => {
            r.push(Severity::Error, &cert_name, e);
            None
        }
    });
    if let Some(leaf) = &leaf {
        describe_cert(&mut r, &cert_name, leaf, now, true);
        for (i, pair) in chain.windows(2).enumerate() {
            if !signed_by(&pair[0], &pair[1]) {
                r.push(
                    Severity::Error,
                    &cert_name,
                    format!(
                        "certificate #{} in the chain is not signed by certificate #{}: the \
                         file must hold the leaf first, then its issuers in order",
                        i + 1,
                        i + 2
                    ),
                );
            }
        }
    }

    let cas = inspect_cas(&mut r, files, now);
    if let (Some(leaf), Some(top)) = (&leaf, chain.last()) {
        chain_to_cas(
            &mut r,
            &cert_name,
            leaf,
            top,
            &cas,
            files.ca_files.is_empty(),
        );
    }
    if let Some(leaf) = &leaf {
        key_matches(&mut r, files, leaf);
        inspect_crls(&mut r, files, leaf, &cas, now);
    }
    r.0
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn push(&mut self, severity: Severity, subject: &str, message: impl Into<String>) {
        self.0.push(Finding {
            severity,
            subject: subject.to_string(),
            message: message.into(),
        });
    }
}

fn describe_cert(r: &mut Report, file: &str, f: &CertFacts, now: i64, is_leaf: bool) {
    let what = if is_leaf { "certificate" } else { "CA" };
    r.push(
        Severity::Ok,
        file,
        format!(
            "{what} subject \"{}\", issuer \"{}\", valid {} to {}, {}",
            f.subject,
            f.issuer,
            f.not_before_text,
            f.not_after_text,
            f.key_description()
        ),
    );
    match validity_at(f, now) {
        Validity::NotYetValid => r.push(
            Severity::Error,
            file,
            format!(
                "{what} is not valid before {} (check the clock)",
                f.not_before_text
            ),
        ),
        Validity::Expired { days_ago } => r.push(
            Severity::Error,
            file,
            format!("{what} expired {days_ago} days ago ({})", f.not_after_text),
        ),
        Validity::Valid { days_left } if days_left < EXPIRY_WARNING_DAYS => r.push(
            Severity::Warning,
            file,
            format!("{what} expires in {days_left} days ({})", f.not_after_text),
        ),
        Validity::Valid { days_left } => r.push(
            Severity::Ok,
            file,
            format!("{what} valid for {days_left} more days"),
        ),
    }
    if is_leaf && f.key_alg == KeyAlg::Rsa && f.key_bits < MIN_RSA_BITS {
        r.push(Severity::Error, file, weak_rsa_message(f.key_bits));
    }
    if !is_leaf && !f.is_ca {
        r.push(
            Severity::Warning,
            file,
            format!("CA \"{}\" lacks basicConstraints CA:TRUE", f.subject),
        );
    }
}

/// The refusal text for a short RSA key.
pub fn weak_rsa_message(bits: usize) -> String {
    format!(
        "RSA key is {bits} bits, at least {MIN_RSA_BITS} are required; make a {MIN_RSA_BITS}-bit \
         key with `openssl genrsa -aes256 -out server.key.pem {MIN_RSA_BITS}` and issue a new \
         certificate for it"
    )
}

/// Parsed CA certificates with their file names.
type Cas = Vec<(String, CertificateDer<'static>, CertFacts)>;

fn inspect_cas(r: &mut Report, files: &TlsFiles, now: i64) -> Cas {
    let mut cas = Vec::new();
    for path in &files.ca_files {
        let name = path.display().to_string();
        match read_certs(path) {
            Err(e) => r.push(Severity::Error, &name, e),
            Ok(certs) => {
                for der in certs {
                    match cert_facts(&der) {
                        Ok(f) => {
                            describe_cert(r, &name, &f, now, false);
                            cas.push((name.clone(), der, f));
                        }
                        Err(e) => r.push(Severity::Error, &name, e),
                    }
                }
            }
        }
    }
    cas
}

fn chain_to_cas(
    r: &mut Report,
    cert_name: &str,
    leaf: &CertFacts,
    top: &CertificateDer<'_>,
    cas: &Cas,
    no_cas: bool,
) {
    if no_cas {
        r.push(
            Severity::Warning,
            cert_name,
            "no CA files configured: clients are not asked for certificates (no mutual TLS)",
        );
        return;
    }
    let hit = cas
        .iter()
        .find(|(_, ca, _)| ca.as_ref() == top.as_ref() || signed_by(top, ca));
    match hit {
        Some((file, _, f)) => r.push(
            Severity::Ok,
            cert_name,
            format!("certificate chains to CA \"{}\" ({file})", f.subject),
        ),
        None => r.push(
            Severity::Warning,
            cert_name,
            format!(
                "certificate (issuer \"{}\") is not issued by any configured CA; clients must \
                 trust its issuer by other means",
                leaf.issuer
            ),
        ),
    }
}

fn key_matches(r: &mut Report, files: &TlsFiles, leaf: &CertFacts) {
    let key_name = files.key.display().to_string();
    match keys::load_private_key(&files.key, files.key_password.as_deref()) {
        Err(e) => r.push(Severity::Error, &key_name, e.to_string()),
        Ok(key) => match keys::public_key_spki(&key) {
            Some(spki) if spki.as_ref() == leaf.spki.as_slice() => r.push(
                Severity::Ok,
                &key_name,
                format!("private key matches certificate {}", files.cert.display()),
            ),
            Some(_) => r.push(
                Severity::Error,
                &key_name,
                format!(
                    "private key does not match certificate {} (different public key)",
                    files.cert.display()
                ),
            ),
            None => r.push(
                Severity::Warning,
                &key_name,
                "private key loaded, but its type cannot be compared with the certificate",
            ),
        },
    }
}

fn inspect_crls(r: &mut Report, files: &TlsFiles, leaf: &CertFacts, cas: &Cas, now: i64) {
    for path in &files.crl_files {
        let name = path.display().to_string();
        let crls = match read_crls(path) {
            Ok(c) => c,
            Err(e) => {
                r.push(Severity::Error, &name, e);
                continue;
            }
        };
        for der in &crls {
            let Ok((_, crl)) = x509_parser::parse_x509_crl(der.as_ref()) else {
                continue; // read_crls already parsed it
            };
            let issuer = crl.issuer().to_string();
            let revoked = crl.iter_revoked_certificates().count();
            r.push(
                Severity::Ok,
                &name,
                format!("CRL issuer \"{issuer}\", {revoked} revoked certificate(s)"),
            );
            if let Some(next) = crl.next_update() {
                if next.timestamp() < now {
                    r.push(
                        Severity::Warning,
                        &name,
                        format!(
                            "CRL next update was due {next}; publish a fresh one \
                             (openssl ca -gencrl)"
                        ),
                    );
                }
            }
            let ca = cas
                .iter()
                .find(|(_, _, f)| f.subject_raw.as_slice() == crl.issuer().as_raw());
            match ca {
                None => r.push(
                    Severity::Warning,
                    &name,
                    format!("CRL issuer \"{issuer}\" is not among the configured CAs"),
                ),
                Some((ca_file, ca_der, _)) => {
                    let sig_ok = X509Certificate::from_der(ca_der)
                        .ok()
                        .is_some_and(|(_, c)| crl.verify_signature(c.public_key()).is_ok());
                    if !sig_ok {
                        r.push(
                            Severity::Error,
                            &name,
                            format!("CRL signature does not verify with CA {ca_file}"),
                        );
                    }
                }
            }
            let leaf_listed = crl.issuer().as_raw() == leaf.issuer_raw.as_slice()
                && crl
                    .iter_revoked_certificates()
                    .any(|rc| strip_zeros(rc.raw_serial()) == leaf.serial.as_slice());
            if leaf_listed {
                r.push(
                    Severity::Error,
                    &name,
                    format!(
                        "certificate {} (serial {}) is revoked by this CRL",
                        files.cert.display(),
                        hex(&leaf.serial)
                    ),
                );
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_of_moduli() {
        assert_eq!(unsigned_bits(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(unsigned_bits(&[0x01, 0x00]), 9);
        assert_eq!(unsigned_bits(&[]), 0);
        assert_eq!(unsigned_bits(&[0, 0]), 0);
    }

    #[test]
    fn garbage_files_are_findings_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let g = dir.path().join("garbage");
        std::fs::write(&g, b"\x30\x82\x01\x00garbage").unwrap();
        let p = dir.path().join("pemjunk");
        std::fs::write(
            &p,
            b"-----BEGIN CERTIFICATE-----\nZm9v\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let files = TlsFiles {
            ca_files: vec![g.clone(), p.clone(), dir.path().join("missing")],
            cert: p.clone(),
            key: g.clone(),
            key_password: None,
            crl_files: vec![g.clone(), p.clone()],
        };
        let findings = inspect(&files);
        assert!(findings.iter().any(|f| f.severity == Severity::Error));
        let files = TlsFiles {
            cert: g.clone(),
            ..files
        };
        assert!(!inspect(&files).is_empty());
        assert!(read_crls(&p).is_err());
        assert!(read_certs(&dir.path().join("missing")).is_err());
    }
}
