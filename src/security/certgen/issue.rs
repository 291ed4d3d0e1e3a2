//! Making the new identity: a fresh RSA key ([`KEY_BITS`] bits, from the `rsa` crate), the
//! X.509 v3 certificate the CA signs for it (rcgen), and the key encrypted as PKCS#8
//! (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC), which OpenSSL and the daemon's loader open.
//!
//! The certificate: subject from `req_distinguished_name`, SANs from `alt_names` and `--ip`,
//! valid from now for `expired_time` days, serial `serial_number`, basicConstraints CA:FALSE,
//! keyUsage digitalSignature + keyEncipherment, extendedKeyUsage serverAuth + clientAuth (one
//! certificate serves both ends of the mutual-TLS links between instances), subject and
//! authority key identifiers. After signing, the result is parsed back and its issuer name
//! and signature are checked against the CA certificate.

use pkcs8::der::pem::LineEnding;
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::EncodePrivateKey;
use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber, PKCS_RSA_SHA256,
};
use rustls::pki_types::PrivatePkcs8KeyDer;

use super::ca::Ca;
use super::input::{CertInfo, Subject};
use super::random::{self, SystemRng};
use super::CertGenError;
use crate::security::certinfo;

/// Size of the generated RSA key.
pub const KEY_BITS: usize = 3072;
/// PBKDF2 iterations protecting the new key (its password is 32 random characters).
pub const PBKDF2_ITERATIONS: u32 = 100_000;

/// What `gen-cert` writes: the certificate and the encrypted key as PEM, and the password.
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
    pub password: Zeroizing<String>,
}

/// Makes a key, has `ca` sign a certificate for it as `info` says, and encrypts the key.
pub fn issue(ca: &Ca, info: &CertInfo, now: i64) -> Result<Identity, CertGenError> {
    let key_der = new_key()?;
    let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(key_der.as_slice()),
        &PKCS_RSA_SHA256,
    )
    .map_err(|e| CertGenError::Sign {
        reason: format!("the generated key is not usable: {e}"),
    })?;
    let params = params(info, now)?;
    let cert = params
        .signed_by(&key_pair, &ca.issuer)
        .map_err(|e| CertGenError::Sign {
            reason: e.to_string(),
        })?;
    let der = cert.der();
    let facts = certinfo::cert_facts(der).map_err(|reason| CertGenError::Sign { reason })?;
    if facts.issuer_raw != ca.facts.subject_raw || !certinfo::signed_by(der, &ca.der) {
        return Err(CertGenError::Sign {
            reason: format!(
                "the signed certificate does not verify against the CA \"{}\" (its subject \
                 name could not be reproduced byte for byte)",
                ca.facts.subject
            ),
        });
    }
    let password = random::password()?;
    let key_pem = encrypt(&key_der, &password)?;
    Ok(Identity {
        cert_pem: pkcs8::der::pem::encode_string("CERTIFICATE", LineEnding::LF, der).map_err(
            |e| CertGenError::Sign {
                reason: format!("cannot PEM-encode the certificate: {e}"),
            },
        )?,
        key_pem,
        password,
    })
}

/// A fresh RSA key, PKCS#8 DER.
fn new_key() -> Result<Zeroizing<Vec<u8>>, CertGenError> {
    let mut rng = SystemRng::new();
    let key = rsa::RsaPrivateKey::new(&mut rng, KEY_BITS);
    if rng.failed() {
        return Err(CertGenError::Entropy);
    }
    let key = key.map_err(|e| CertGenError::Sign {
        reason: format!("RSA key generation failed: {e}"),
    })?;
    let der = key.to_pkcs8_der().map_err(|e| CertGenError::Sign {
        reason: format!("cannot encode the new key: {e}"),
    })?;
    Ok(Zeroizing::new(der.as_bytes().to_vec()))
}

fn encrypt(key_der: &[u8], password: &str) -> Result<Zeroizing<String>, CertGenError> {
    let fail = |e: String| CertGenError::Sign {
        reason: format!("cannot encrypt the new key: {e}"),
    };
    let salt = random::bytes(16)?;
    let iv_bytes = random::bytes(16)?;
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&iv_bytes);
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(PBKDF2_ITERATIONS, &salt, &iv)
            .map_err(|e| fail(e.to_string()))?;
    let info = pkcs8::PrivateKeyInfo::try_from(key_der).map_err(|e| fail(e.to_string()))?;
    let doc = info
        .encrypt_with_params(params, password.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    doc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .map_err(|e| fail(e.to_string()))
}

fn params(info: &CertInfo, now: i64) -> Result<CertificateParams, CertGenError> {
    let mut p = CertificateParams::default();
    let start = time::OffsetDateTime::from_unix_timestamp(now).map_err(|e| CertGenError::Sign {
        reason: format!("system clock out of range: {e}"),
    })?;
    let days = i64::try_from(info.days).unwrap_or(i64::MAX);
    p.not_before = start;
    p.not_after = start + time::Duration::days(days);
    let serial = info.serial.to_be_bytes();
    let first = serial
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(serial.len() - 1);
    p.serial_number = Some(SerialNumber::from_slice(&serial[first..]));
    p.distinguished_name = subject_name(&info.subject)?;
    p.subject_alt_names = info.ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
    for dns in &info.dns {
        let name = Ia5String::try_from(dns.as_str()).map_err(|e| CertGenError::Sign {
            reason: format!("DNS name `{dns}`: {e}"),
        })?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// The subject in OpenSSL's order, C as PrintableString (RFC 5280), the rest UTF8String.
fn subject_name(s: &Subject) -> Result<DistinguishedName, CertGenError> {
    let mut dn = DistinguishedName::new();
    if let Some(c) = &s.country {
        let c =
            PrintableString::try_from(c.to_ascii_uppercase()).map_err(|e| CertGenError::Sign {
                reason: format!("country `{c}`: {e}"),
            })?;
        dn.push(DnType::CountryName, DnValue::PrintableString(c));
    }
    let rest = [
        (DnType::StateOrProvinceName, &s.state),
        (DnType::LocalityName, &s.locality),
        (DnType::OrganizationName, &s.organization),
        (DnType::OrganizationalUnitName, &s.organizational_unit),
        (DnType::CommonName, &s.common_name),
    ];
    for (ty, value) in rest {
        if let Some(v) = value {
            dn.push(ty, DnValue::Utf8String(v.clone()));
        }
    }
    Ok(dn)
}
