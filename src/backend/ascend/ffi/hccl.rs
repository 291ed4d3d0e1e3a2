//! HCCL (`libhccl.so`): one communicator per rank of a single-node group made from one
//! thread with `HcclCommInitAll`, and the in-place sum all-reduce tensor parallelism needs.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::sync::Arc;

use super::meta::AclDType;
use super::{c_text, Acl, DevPtr, Raw, Stream};
use crate::backend::ascend::error::AclError;

/// `HcclReduceOp` SUM.
const SUM: i32 = 0;

/// `HcclDataType` of an `aclDataType` (floats only: activations).
fn hccl_dtype(d: AclDType) -> Result<i32, AclError> {
    match d {
        AclDType::F16 => Ok(3),
        AclDType::F32 => Ok(4),
        AclDType::Bf16 => Ok(11),
        other => Err(AclError::new(
            "HcclAllReduce",
            1,
            format!("no all-reduce of {other:?} in the backend"),
        )),
    }
}

/// One rank's communicator; destroyed on drop.
pub struct Comm {
    acl: Arc<Acl>,
    raw: Raw,
}

// SAFETY: a communicator is a process-wide handle used with its rank's stream; the engine
// thread uses it after making that rank's context current.
unsafe impl Send for Comm {}

impl Acl {
    /// Communicators for `devices` (rank `i` ↔ `devices[i]`), made from this one thread.
    pub fn comm_init_all(self: &Arc<Self>, devices: &[i32]) -> Result<Vec<Comm>, AclError> {
        let Some(init) = self.fns.HcclCommInitAll else {
            return Err(AclError::missing("HcclCommInitAll"));
        };
        let mut ids = devices.to_vec();
        let mut raws: Vec<Raw> = vec![std::ptr::null_mut(); devices.len()];
        // SAFETY: `ids` and `raws` hold `devices.len()` elements each; HCCL fills `raws`.
        let rc = unsafe { init(ids.len() as u32, ids.as_mut_ptr(), raws.as_mut_ptr()) };
        self.check_hccl("HcclCommInitAll", rc)?;
        Ok(raws
            .into_iter()
            .map(|raw| Comm {
                acl: Arc::clone(self),
                raw,
            })
            .collect())
    }

    fn check_hccl(&self, api: &'static str, rc: i32) -> Result<(), AclError> {
        if rc == 0 {
            return Ok(());
        }
        let text = match self.fns.HcclGetErrorString {
            // SAFETY: returns a static NUL-terminated string for any code.
            Some(f) => c_text(unsafe { f(rc) } as *const c_char),
            None => String::new(),
        };
        let recent = self
            .check(api, rc)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        Err(AclError::new(
            api,
            rc,
            format!("{text} {recent}").trim().to_string(),
        ))
    }
}

impl Comm {
    /// Sums `count` elements at `buf` across the group, in place, ordered on `stream`.
    pub fn all_reduce_sum(
        &self,
        buf: DevPtr,
        count: usize,
        dtype: AclDType,
        stream: &Stream,
    ) -> Result<(), AclError> {
        let Some(f) = self.acl.fns.HcclAllReduce else {
            return Err(AclError::missing("HcclAllReduce"));
        };
        let dt = hccl_dtype(dtype)?;
        // SAFETY: `buf` is device memory of this rank holding `count` elements of `dtype`
        // (in-place: send = recv), the communicator and stream are live.
        let rc = unsafe {
            f(
                buf.raw(),
                buf.raw(),
                count as u64,
                dt,
                SUM,
                self.raw,
                stream.raw(),
            )
        };
        self.acl.check_hccl("HcclAllReduce", rc)
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        if let Some(f) = self.acl.fns.HcclCommDestroy {
            // SAFETY: `raw` is a live communicator, destroyed once.
            unsafe {
                f(self.raw);
            }
        }
    }
}
