//! The signing CA of `gen-cert`: its certificate and encrypted RSA key, checked before use.
//!
//! This module owns the refusals about the CA (not a CA, outside its validity window, not
//! allowed to sign certificates, not RSA, RSA under 3072 bits, key not matching the
//! certificate, wrong password) and turns an accepted CA into an rcgen [`Issuer`]: the CA's
//! subject name re-encoded attribute by attribute with its original string types, its subject
//! key identifier (for the new certificate's authority key identifier) and its key, signing
//! with sha256WithRSAEncryption through ring.

use std::path::Path;

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, DnValue, Issuer, KeyIdMethod, KeyPair,
    PKCS_RSA_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::CertGenError;
use crate::security::certinfo::{self, CertFacts, KeyAlg, Validity, MIN_RSA_BITS};
use crate::security::keys;

/// An accepted CA: its certificate (DER), facts and rcgen issuer.
pub struct Ca {
    pub der: CertificateDer<'static>,
    pub facts: CertFacts,
    pub issuer: Issuer<'static, KeyPair>,
}

/// Loads and checks the CA certificate `cert`, its key `key` and the key's password file.
pub fn load(cert: &Path, key: &Path, password: &Path, now: i64) -> Result<Ca, CertGenError> {
    let bad = |reason: String| CertGenError::Ca {
        path: cert.to_path_buf(),
        reason,
    };
    let der = certinfo::read_certs(cert)
        .map_err(bad)?
        .into_iter()
        .next()
        .ok_or_else(|| bad("holds no certificate".into()))?;
    let facts = certinfo::cert_facts(&der).map_err(bad)?;
    let (_, x509) = X509Certificate::from_der(&der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    if !facts.is_ca {
        return Err(bad(format!(
            "\"{}\" is not a CA certificate (no basicConstraints CA:TRUE); give the CA's \
             certificate, made with `-extensions v3_ca`",
            facts.subject
        )));
    }
    if let Ok(Some(ku)) = x509.key_usage() {
        if !ku.value.key_cert_sign() {
            return Err(bad(format!(
                "\"{}\" has keyUsage without keyCertSign: it may not sign certificates",
                facts.subject
            )));
        }
    }
    match certinfo::validity_at(&facts, now) {
        Validity::NotYetValid => {
            return Err(bad(format!(
                "the CA certificate is not valid before {}; check the system clock",
                facts.not_before_text
            )))
        }
        Validity::Expired { .. } => {
            return Err(bad(format!(
                "the CA certificate expired on {}; make a new CA",
                facts.not_after_text
            )))
        }
        Validity::Valid { .. } => {}
    }
    if facts.key_alg != KeyAlg::Rsa {
        return Err(bad(format!(
            "the CA key is {}; gen-cert signs with sha256WithRSAEncryption and needs an RSA CA",
            facts.key_description()
        )));
    }
    if facts.key_bits < MIN_RSA_BITS {
        return Err(bad(format!(
            "the CA key is RSA {} bits, at least {MIN_RSA_BITS} are required; make the CA \
             with `openssl genrsa -aes256 -out ca.key.pem 4096`",
            facts.key_bits
        )));
    }
    let private = keys::load_private_key(key, Some(password))?;
    if keys::public_key_spki(&private).as_ref().map(|s| s.as_ref()) != Some(facts.spki.as_slice()) {
        return Err(CertGenError::CaKey {
            path: key.to_path_buf(),
            reason: format!(
                "does not match the CA certificate {} (its public key differs)",
                cert.display()
            ),
        });
    }
    let signing_key = rsa_key_pair(&private).map_err(|reason| CertGenError::CaKey {
        path: key.to_path_buf(),
        reason,
    })?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name(x509.subject()).map_err(bad)?;
    params.key_identifier_method = match subject_key_id(&x509) {
        Some(id) => KeyIdMethod::PreSpecified(id),
        None => KeyIdMethod::Sha256,
    };
    Ok(Ca {
        der,
        facts,
        issuer: Issuer::new(params, signing_key),
    })
}

/// An RSA key (PKCS#8, or PKCS#1 wrapped into PKCS#8) as an rcgen signing key.
fn rsa_key_pair(key: &PrivateKeyDer<'_>) -> Result<KeyPair, String> {
    let pkcs8 = match key {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => {
            use pkcs8::der::Encode;
            pkcs8::PrivateKeyInfo::new(rsa::pkcs1::ALGORITHM_ID, k.secret_pkcs1_der())
                .to_der()
                .map_err(|e| format!("cannot re-encode the RSA key as PKCS#8: {e}"))?
        }
        _ => return Err("is not an RSA key".into()),
    };
    let pkcs8 = pkcs8::der::zeroize::Zeroizing::new(pkcs8);
    KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8.as_slice()),
        &PKCS_RSA_SHA256,
    )
    .map_err(|e| format!("cannot be used to sign with sha256WithRSAEncryption: {e}"))
}

fn subject_key_id(x509: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x509.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// The CA's subject as an rcgen name, each attribute with its original string type. Names
/// rcgen cannot reproduce (multi-valued RDNs, repeated attribute types) are refused here or
/// caught by the byte comparison after signing.
fn name(subject: &X509Name<'_>) -> Result<DistinguishedName, String> {
    let mut dn = DistinguishedName::new();
    let mut count = 0;
    for rdn in subject.iter_rdn() {
        if rdn.iter().count() != 1 {
            return Err(unsupported_name(subject, "a multi-valued name component"));
        }
        for attr in rdn.iter() {
            let arcs: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(|i| i.collect())
                .ok_or_else(|| unsupported_name(subject, "an attribute type OID out of range"))?;
            let ty = DnType::from_oid(&arcs);
            if dn.get(&ty).is_some() {
                return Err(unsupported_name(subject, "a repeated attribute type"));
            }
            let data = attr.attr_value().data.to_vec();
            let text = || String::from_utf8(data.clone()).map_err(|_| "invalid text".to_string());
            let value = match attr.attr_value().tag().0 {
                12 => DnValue::Utf8String(text()?),
                19 => DnValue::PrintableString(
                    PrintableString::try_from(text()?).map_err(|e| e.to_string())?,
                ),
                22 => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(|e| e.to_string())?),
                20 => DnValue::TeletexString(
                    TeletexString::try_from(text()?).map_err(|e| e.to_string())?,
                ),
                30 => DnValue::BmpString(BmpString::from_utf16be(data).map_err(|e| e.to_string())?),
                28 => DnValue::UniversalString(
                    UniversalString::from_utf32be(data).map_err(|e| e.to_string())?,
                ),
                tag => {
                    return Err(unsupported_name(
                        subject,
                        &format!("a value of ASN.1 tag {tag}"),
                    ))
                }
            };
            dn.push(ty, value);
            count += 1;
        }
    }
    if count == 0 {
        return Err("the CA certificate's subject name is empty".into());
    }
    Ok(dn)
}

fn unsupported_name(subject: &X509Name<'_>, what: &str) -> String {
    format!(
        "the CA's subject name \"{subject}\" has {what}, which gen-cert cannot reproduce as the \
         new certificate's issuer name; make the CA with a plain subject such as \
         `-subj \"/C=CN/O=My Org/CN=my-ca\"`"
    )
}
