//! Backend construction: [`load`] turns a [`BackendSpec`] (which backend, with its options
//! already resolved from config and environment) into a running `Box<dyn Backend>`. The engine
//! never builds backends itself; it is handed one.

use super::ascend::{AscendBackend, AscendOptions};
use super::cpu::{CpuBackend, CpuOptions};
use super::mock::{MockBackend, MockOptions};
use super::{Backend, BackendError, BackendKind};
use std::path::PathBuf;

/// A backend to build, with everything it needs.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// The host CPU backend on the HF model folder `model_dir`.
    Cpu {
        model_dir: PathBuf,
        options: CpuOptions,
    },
    /// The model-free mock.
    Mock(MockOptions),
    /// Ascend NPUs through CANN (`backendType` `atb`/`npu`/`torch`/`ms`).
    Ascend(AscendOptions),
}

impl BackendSpec {
    pub fn kind(&self) -> BackendKind {
        match self {
            BackendSpec::Cpu { .. } => BackendKind::Cpu,
            BackendSpec::Mock(_) => BackendKind::Mock,
            BackendSpec::Ascend(_) => BackendKind::Ascend,
        }
    }
}

/// Builds the backend `spec` describes (loads weights, sizes the KV cache).
pub fn load(spec: BackendSpec) -> Result<Box<dyn Backend>, BackendError> {
    match spec {
        BackendSpec::Cpu { model_dir, options } => {
            Ok(Box::new(CpuBackend::load(&model_dir, options)?))
        }
        BackendSpec::Mock(options) => Ok(Box::new(MockBackend::new(options)?)),
        BackendSpec::Ascend(options) => Ok(Box::new(AscendBackend::load(options)?)),
    }
}
