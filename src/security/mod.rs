//! Trust on disk and on the wire: permission checks of every file the daemon trusts
//! ([`perms`]), and rustls server configurations per plane ([`tls`]) built from certificate,
//! encrypted key, CA and CRL files ([`keys`] decrypts private keys, [`certinfo`] inspects
//! certificates for `check` and start-up warnings), and their rotation on SIGHUP without a
//! restart ([`reload`]).

pub mod certgen;
pub mod certinfo;
pub mod keys;
pub mod pem;
pub mod perms;
pub mod reload;
pub mod tls;

use std::path::PathBuf;

/// The files one plane's TLS needs, with paths already resolved against the install home.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates that client certificates must chain to. Empty: no client auth.
    pub ca_files: Vec<PathBuf>,
    /// The server certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, encrypted PKCS#8, PKCS#1/SEC1, or traditional encrypted).
    pub key: PathBuf,
    /// File holding the key's passphrase as plain text (SPEC §0.7); `None` for clear keys.
    pub key_password: Option<PathBuf>,
    /// CRLs (PEM or DER) whose revoked client certificates are refused.
    pub crl_files: Vec<PathBuf>,
}
