//! Private keys from PEM: clear PKCS#8/PKCS#1/SEC1, encrypted PKCS#8, and traditional OpenSSL
//! `Proc-Type: 4,ENCRYPTED` keys, with the passphrase from a password file.
//!
//! The password file holds the passphrase as plain text (SPEC §0.7: KMC is not implemented);
//! trailing whitespace is stripped. The passphrase is kept in zeroizing buffers and never
//! logged or put into an error. The traditional decoder (OpenSSL's `EVP_BytesToKey` with MD5
//! and one iteration, then AES/3DES-CBC) is in [`decrypt_traditional`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cbc::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
use md5::{Digest, Md5};
use pkcs8::der::zeroize::Zeroizing;
use rustls::pki_types::{
    PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
    SubjectPublicKeyInfoDer,
};

use super::pem::{self, PemBlock};

/// Why a private key could not be loaded. Every variant names the key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read private key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read key password file {path} (for key {key}): {source}")]
    ReadPassword {
        key: PathBuf,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key password file {path} (for key {key}) is empty")]
    EmptyPassword { key: PathBuf, path: PathBuf },
    #[error("{path} is not a valid PEM file: {reason}")]
    BadPem { path: PathBuf, reason: String },
    #[error(
        "no private key found in {path} (found: {found}); expected a PEM block \
         `PRIVATE KEY`, `ENCRYPTED PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`"
    )]
    NoKey { path: PathBuf, found: String },
    #[error(
        "private key {path} is encrypted but no password file is configured: set tlsPkPwd \
         (or the plane's *TlsPkPwd key) to a file holding the passphrase as plain text, mode 600"
    )]
    PasswordNeeded { path: PathBuf },
    #[error(
        "wrong passphrase for key {path} (password file {password_file}); the file must hold \
         the passphrase as plain text (KMC-encrypted password files are not supported)"
    )]
    WrongPassphrase {
        path: PathBuf,
        password_file: PathBuf,
    },
    #[error("private key {path} uses an unsupported encryption: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("private key {path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// Loads the private key in `pem_path`, decrypting it with the passphrase in `password_file`
/// when it is encrypted.
pub fn load_private_key(
    pem_path: &Path,
    password_file: Option<&Path>,
) -> Result<PrivateKeyDer<'static>, KeyError> {
    let text = Zeroizing::new(std::fs::read(pem_path).map_err(|source| KeyError::Read {
        path: pem_path.to_path_buf(),
        source,
    })?);
    let blocks = pem::parse(&text).map_err(|e| KeyError::BadPem {
        path: pem_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let Some(block) = blocks.iter().find(|b| is_key_label(&b.label)) else {
        let found: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
        let found = if found.is_empty() {
            "no PEM blocks".to_string()
        } else {
            found.join(", ")
        };
        return Err(KeyError::NoKey {
            path: pem_path.to_path_buf(),
            found,
        });
    };
    let encrypted = block.label == "ENCRYPTED PRIVATE KEY"
        || block
            .header("Proc-Type")
            .is_some_and(|v| v.contains("ENCRYPTED"));
    if !encrypted {
        if let Some(pw) = password_file {
            tracing::warn!(
                "key password file {} is configured but private key {} is not encrypted; \
                 consider encrypting the key (openssl pkey -aes256)",
                pw.display(),
                pem_path.display()
            );
        }
        let key = clear_key(&block.label, block.der.clone(), pem_path)?;
        check_loadable(&key, pem_path)?;
        return Ok(key);
    }
    let Some(pw_path) = password_file else {
        return Err(KeyError::PasswordNeeded {
            path: pem_path.to_path_buf(),
        });
    };
    let password = read_password(pw_path, pem_path)?;
    let key = if block.label == "ENCRYPTED PRIVATE KEY" {
        decrypt_pkcs8(&block.der, &password, pem_path, pw_path)?
    } else {
        let der = decrypt_traditional(block, &password).map_err(|e| match e {
            TraditionalError::WrongPassphrase => KeyError::WrongPassphrase {
                path: pem_path.to_path_buf(),
                password_file: pw_path.to_path_buf(),
            },
            TraditionalError::Unsupported(reason) => KeyError::Unsupported {
                path: pem_path.to_path_buf(),
                reason,
            },
            TraditionalError::Malformed(reason) => KeyError::Malformed {
                path: pem_path.to_path_buf(),
                reason,
            },
        })?;
        clear_key(&block.label, der.to_vec(), pem_path)?
    };
    check_loadable(&key, pem_path)?;
    Ok(key)
}

/// The SubjectPublicKeyInfo (DER) of a private key, to compare with a certificate's; `None`
/// when the key type is not supported by the ring provider.
pub fn public_key_spki(key: &PrivateKeyDer<'_>) -> Option<SubjectPublicKeyInfoDer<'static>> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key).ok()?;
    signer.public_key().map(|spki| spki.into_owned())
}

/// The signing key as rustls uses it (RSA, ECDSA P-256/P-384, Ed25519).
pub fn signing_key(
    key: &PrivateKeyDer<'_>,
    path: &Path,
) -> Result<Arc<dyn rustls::sign::SigningKey>, KeyError> {
    rustls::crypto::ring::sign::any_supported_type(key).map_err(|e| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: format!("not a usable RSA/ECDSA/Ed25519 key: {e}"),
    })
}

fn is_key_label(label: &str) -> bool {
    matches!(
        label,
        "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
    )
}

fn clear_key(label: &str, der: Vec<u8>, path: &Path) -> Result<PrivateKeyDer<'static>, KeyError> {
    match label {
        "PRIVATE KEY" => Ok(PrivatePkcs8KeyDer::from(der).into()),
        "RSA PRIVATE KEY" => Ok(PrivatePkcs1KeyDer::from(der).into()),
        "EC PRIVATE KEY" => Ok(PrivateSec1KeyDer::from(der).into()),
        other => Err(KeyError::Malformed {
            path: path.to_path_buf(),
            reason: format!("unexpected PEM label `{other}`"),
        }),
    }
}

fn check_loadable(key: &PrivateKeyDer<'_>, path: &Path) -> Result<(), KeyError> {
    signing_key(key, path).map(|_| ())
}

fn read_password(pw_path: &Path, key: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut raw =
        Zeroizing::new(
            std::fs::read(pw_path).map_err(|source| KeyError::ReadPassword {
                key: key.to_path_buf(),
                path: pw_path.to_path_buf(),
                source,
            })?,
        );
    while raw.last().is_some_and(|b| b.is_ascii_whitespace()) {
        raw.pop();
    }
    if raw.is_empty() {
        return Err(KeyError::EmptyPassword {
            key: key.to_path_buf(),
            path: pw_path.to_path_buf(),
        });
    }
    Ok(raw)
}

fn decrypt_pkcs8(
    der: &[u8],
    password: &[u8],
    path: &Path,
    pw_path: &Path,
) -> Result<PrivateKeyDer<'static>, KeyError> {
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der).map_err(|e| KeyError::Malformed {
        path: path.to_path_buf(),
        reason: format!("bad EncryptedPrivateKeyInfo: {e}"),
    })?;
    match info.decrypt(password) {
        Ok(doc) => Ok(PrivatePkcs8KeyDer::from(doc.as_bytes().to_vec()).into()),
        // pkcs5 0.7 reports a bad CBC padding (the usual sign of a wrong passphrase) as
        // `EncryptFailed`; accept both spellings.
        Err(pkcs8::Error::EncryptedPrivateKey(
            pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
        ))
        | Err(pkcs8::Error::Asn1(_)) => Err(KeyError::WrongPassphrase {
            path: path.to_path_buf(),
            password_file: pw_path.to_path_buf(),
        }),
        Err(e) => Err(KeyError::Unsupported {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// Why a traditional encrypted key could not be decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraditionalError {
    /// Padding or DER check failed after decryption.
    WrongPassphrase,
    /// A `DEK-Info` cipher this decoder does not know.
    Unsupported(String),
    /// Missing or malformed `DEK-Info`.
    Malformed(String),
}

/// Decrypts a traditional OpenSSL encrypted PEM block (`Proc-Type: 4,ENCRYPTED` with
/// `DEK-Info: <cipher>,<iv hex>`), returning the inner DER (PKCS#1 or SEC1).
///
/// Key derivation is OpenSSL's `EVP_BytesToKey` with MD5, one iteration and the first 8 bytes
/// of the IV as salt. Ciphers: AES-128/192/256-CBC, DES-EDE3-CBC, DES-CBC.
pub fn decrypt_traditional(
    block: &PemBlock,
    password: &[u8],
) -> Result<Zeroizing<Vec<u8>>, TraditionalError> {
    let dek = block
        .header("DEK-Info")
        .ok_or_else(|| TraditionalError::Malformed("no DEK-Info header".into()))?;
    let (cipher, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| TraditionalError::Malformed(format!("bad DEK-Info `{dek}`")))?;
    let iv = decode_hex(iv_hex.trim())
        .ok_or_else(|| TraditionalError::Malformed(format!("bad IV in DEK-Info `{dek}`")))?;
    let cipher = cipher.trim().to_ascii_uppercase();
    let (key_len, iv_len) = match cipher.as_str() {
        "AES-128-CBC" => (16, 16),
        "AES-192-CBC" => (24, 16),
        "AES-256-CBC" => (32, 16),
        "DES-EDE3-CBC" => (24, 8),
        "DES-CBC" => (8, 8),
        other => {
            return Err(TraditionalError::Unsupported(format!(
                "cipher `{other}` (supported: AES-128/192/256-CBC, DES-EDE3-CBC, DES-CBC); \
                 convert the key with `openssl pkey -in old.pem -aes256 -out new.pem`"
            )))
        }
    };
    if iv.len() != iv_len {
        return Err(TraditionalError::Malformed(format!(
            "IV has {} bytes, {cipher} needs {iv_len}",
            iv.len()
        )));
    }
    let key = bytes_to_key(password, &iv[..8], key_len);
    let ct = &block.der;
    let plain = match cipher.as_str() {
        "AES-128-CBC" => cbc_decrypt::<aes::Aes128>(&key, &iv, ct),
        "AES-192-CBC" => cbc_decrypt::<aes::Aes192>(&key, &iv, ct),
        "AES-256-CBC" => cbc_decrypt::<aes::Aes256>(&key, &iv, ct),
        "DES-EDE3-CBC" => cbc_decrypt::<des::TdesEde3>(&key, &iv, ct),
        _ => cbc_decrypt::<des::Des>(&key, &iv, ct),
    }
    .ok_or(TraditionalError::WrongPassphrase)?;
    if !is_single_der_sequence(&plain) {
        return Err(TraditionalError::WrongPassphrase);
    }
    Ok(plain)
}

/// OpenSSL `EVP_BytesToKey(cipher, md5, salt, pass, count = 1)`, key part only:
/// `D_i = MD5(D_{i-1} || pass || salt)`, concatenated until `len` bytes.
fn bytes_to_key(password: &[u8], salt: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 16));
    let mut prev: Option<[u8; 16]> = None;
    while out.len() < len {
        let mut h = Md5::new();
        if let Some(p) = prev {
            h.update(p);
        }
        h.update(password);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        out.extend_from_slice(&d);
        prev = Some(d);
    }
    out.truncate(len);
    out
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Zeroizing<Vec<u8>>>
where
    C: cbc::cipher::BlockDecryptMut + cbc::cipher::BlockCipher + cbc::cipher::KeyInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).ok()?;
    dec.decrypt_padded_vec_mut::<Pkcs7>(ct)
        .ok()
        .map(Zeroizing::new)
}

/// Whether `der` is exactly one DER SEQUENCE (tag 0x30, definite length covering the rest).
fn is_single_der_sequence(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else {
        return false;
    };
    let (len, body) = if *first < 0x80 {
        (usize::from(*first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return false;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    len == body.len()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
