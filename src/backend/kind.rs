//! Which backend a configuration selects, decided once from `ModelConfig` so no other code
//! compares `backendType` / `modelInstanceType` strings.

use crate::config::ModelConfig;

/// The backend that runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// `backendType: "cpu"`: the host CPU backend.
    Cpu,
    /// `modelInstanceType: "StandardMock"` (any `backendType`): no model, deterministic tokens.
    Mock,
    /// MindIE's NPU backends (`atb`, and `torch`/`ms` which also run on CANN): Ascend.
    Ascend,
}

impl BackendKind {
    /// `modelInstanceType: "StandardMock"` wins over `backendType`, as in MindIE (the mock
    /// replaces the model whatever the device).
    pub fn of(model: &ModelConfig) -> BackendKind {
        Self::from_names(&model.backend_type, &model.model_instance_type)
    }

    /// See [`BackendKind::of`]; config validation has already limited both to MindIE's values.
    pub fn from_names(backend_type: &str, model_instance_type: &str) -> BackendKind {
        if model_instance_type == "StandardMock" {
            BackendKind::Mock
        } else if backend_type == "cpu" {
            BackendKind::Cpu
        } else {
            BackendKind::Ascend
        }
    }

    /// Whether a model is run (and so its folder must be a full model, not just a tokenizer).
    pub fn runs_a_model(self) -> bool {
        self != BackendKind::Mock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_wins_then_cpu_then_ascend() {
        assert_eq!(
            BackendKind::from_names("atb", "StandardMock"),
            BackendKind::Mock
        );
        assert_eq!(BackendKind::from_names("cpu", "Standard"), BackendKind::Cpu);
        for npu in ["atb", "torch", "ms"] {
            assert_eq!(
                BackendKind::from_names(npu, "Standard"),
                BackendKind::Ascend
            );
        }
        assert!(!BackendKind::Mock.runs_a_model());
        assert!(BackendKind::Cpu.runs_a_model());
    }
}
