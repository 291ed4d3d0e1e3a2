//! [`AclError`]: a failed CANN call (API name, return code, `aclGetRecentErrMsg` text), and
//! how the backend turns it into a [`BackendError`].

use crate::backend::BackendError;

/// A CANN call that returned non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{api} failed with {code}{}: {message}", describe(*.code).map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct AclError {
    pub api: &'static str,
    pub code: i32,
    pub message: String,
}

/// CANN's names for the codes an operator meets (ASCEND.md §1, §2).
fn describe(code: i32) -> Option<&'static str> {
    Some(match code {
        100_000 => "ACL_ERROR_INVALID_PARAM",
        100_001 => "ACL_ERROR_UNINITIALIZE",
        100_002 => "ACL_ERROR_REPEAT_INITIALIZE",
        200_000 => "ACL_ERROR_BAD_ALLOC",
        200_002 => "ACL_ERROR_INVALID_DEVICE",
        207_001 => "device out of memory",
        500_003 => "ACL_ERROR_RT_FAILURE",
        507_014 => "AI core timeout",
        507_015 => "AI core exception",
        507_046 => "stream synchronize timeout",
        161_001 => "ACLNN_ERR_PARAM_NULLPTR",
        161_002 => "ACLNN_ERR_PARAM_INVALID",
        361_001 => "ACLNN_ERR_RUNTIME_ERROR",
        561_000..=561_999 => "ACLNN inner error",
        _ => return None,
    })
}

impl AclError {
    pub fn new(api: &'static str, code: i32, message: impl Into<String>) -> Self {
        AclError {
            api,
            code,
            message: message.into(),
        }
    }

    /// An optional CANN entry point the path in use needs is not exported.
    pub fn missing(api: &'static str) -> Self {
        AclError::new(api, 161_001, "not exported by the loaded CANN")
    }

    /// Device memory ran out.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self.code, 200_000 | 207_001)
    }

    /// As a failure while loading (weights, KV, set-up).
    pub fn at_load(self) -> BackendError {
        if self.is_out_of_memory() {
            BackendError::OutOfMemory(self.to_string())
        } else {
            BackendError::Other(format!("Ascend device: {self}"))
        }
    }

    /// As a failure during a step: any device error fails the step and marks the device
    /// lost (health abnormal); running out of memory is only the step's failure.
    pub fn in_step(self) -> BackendError {
        if self.is_out_of_memory() {
            BackendError::OutOfMemory(self.to_string())
        } else {
            BackendError::DeviceLost(format!("Ascend device: {self}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendErrorKind;

    #[test]
    fn errors_name_the_api_code_and_text() {
        let e = AclError::new("aclnnMatmul", 507_015, "core 3 trapped");
        assert_eq!(
            e.to_string(),
            "aclnnMatmul failed with 507015 (AI core exception): core 3 trapped"
        );
        assert_eq!(e.clone().in_step().kind(), BackendErrorKind::DeviceLost);
        let oom = AclError::new("aclrtMalloc", 207_001, "");
        assert_eq!(oom.in_step().kind(), BackendErrorKind::OutOfMemory);
        assert_eq!(
            AclError::new("x", 1, "y").to_string(),
            "x failed with 1: y",
            "unknown codes print bare"
        );
    }
}
