//! The process's one CANN runtime: CANN allows a single `aclInit` per process, so the
//! libraries are loaded once and shared by every Ascend backend of the process (a failed load
//! is not remembered: a later backend tries again).

use std::sync::{Arc, Mutex};

use super::ffi::Acl;
use super::locate::CannSearch;

static RUNTIME: Mutex<Option<Arc<Acl>>> = Mutex::new(None);

/// The loaded CANN (loading it on first use, searching as `search` says). `need_hccl`: the
/// collectives must be there (more than one device).
pub fn acl(search: &CannSearch, need_hccl: bool) -> Result<Arc<Acl>, String> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let acl = match slot.as_ref() {
        Some(a) => Arc::clone(a),
        None => {
            let a = Arc::new(Acl::load(&search.roles(need_hccl))?);
            *slot = Some(Arc::clone(&a));
            a
        }
    };
    if need_hccl && !acl.has_hccl() {
        return Err(
            "worldSize > 1 needs HCCL (libhccl.so: HcclCommInitAll, HcclAllReduce, \
             HcclCommDestroy), which the loaded CANN does not export; install CANN's HCCL or \
             set worldSize to 1"
                .into(),
        );
    }
    Ok(acl)
}
