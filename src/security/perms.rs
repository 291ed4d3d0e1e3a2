//! Permission checks of files the daemon trusts (SPEC §0.8, §5): owner, maximum mode, no
//! symlinks. Each refusal names the file, what was found, what is allowed and the fix.

use std::path::PathBuf;

/// What a file is; decides its maximum mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRole {
    /// The daemon's config.json (≤ 640).
    Config,
    /// A model folder's config.json (≤ 750).
    ModelConfig,
    /// Ranktable (≤ 640).
    Ranktable,
    /// Certificate or CA certificate (≤ 640).
    Cert,
    /// CRL (≤ 640).
    Crl,
    /// Private key (≤ 600).
    Key,
    /// Key passphrase file (≤ 600).
    Password,
    /// A folder of the security layout (≤ 750).
    SecurityDir,
}

/// A refused file.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct PermError {
    pub path: PathBuf,
    pub message: String,
}
