//! What can go wrong in a backend, typed so the engine can tell a request's bad step from a
//! dead device ([`BackendError::kind`]).

use std::path::PathBuf;

/// A backend failure: at load (files, config, weights) or in a step.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model config: {0}")]
    Config(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("model weights: {0}")]
    Weights(String),
    #[error("invalid step batch: {0}")]
    InvalidBatch(String),
    #[error("KV cache: {0}")]
    KvCache(String),
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// The device stopped answering or reported a fatal error: nothing more will run on it.
    #[error("device lost: {0}")]
    DeviceLost(String),
    /// Another node of this instance (multi-node) is gone or did not answer; steps fail until
    /// it is back, and then they run again.
    #[error("node unavailable: {0}")]
    NodeUnavailable(String),
    #[error("backend: {0}")]
    Other(String),
}

/// The class of a [`BackendError`], for the engine's reaction: a bad input fails the requests
/// of the step; a lost device also turns the engine's health abnormal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The model folder, the batch or the KV data handed in is wrong.
    BadInput,
    /// Memory (host or device) ran out.
    OutOfMemory,
    /// The device is gone; later steps cannot succeed.
    DeviceLost,
    /// The model or request asks for something this backend cannot do.
    Unsupported,
    /// A part of the instance on another node is unavailable for now (health follows the
    /// node, not the engine).
    NodeUnavailable,
}

impl BackendError {
    pub fn kind(&self) -> BackendErrorKind {
        match self {
            BackendError::Io { .. }
            | BackendError::Config(_)
            | BackendError::Weights(_)
            | BackendError::InvalidBatch(_)
            | BackendError::KvCache(_)
            | BackendError::Other(_) => BackendErrorKind::BadInput,
            BackendError::OutOfMemory(_) => BackendErrorKind::OutOfMemory,
            BackendError::DeviceLost(_) => BackendErrorKind::DeviceLost,
            BackendError::Unsupported(_) => BackendErrorKind::Unsupported,
            BackendError::NodeUnavailable(_) => BackendErrorKind::NodeUnavailable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_separate_a_bad_step_from_a_dead_device() {
        assert_eq!(
            BackendError::InvalidBatch("x".into()).kind(),
            BackendErrorKind::BadInput
        );
        assert_eq!(
            BackendError::DeviceLost("x".into()).kind(),
            BackendErrorKind::DeviceLost
        );
        assert_eq!(
            BackendError::OutOfMemory("x".into()).kind(),
            BackendErrorKind::OutOfMemory
        );
        assert_eq!(
            BackendError::Unsupported("x".into()).kind(),
            BackendErrorKind::Unsupported
        );
    }
}
