//! Transparent huge pages for the backend's large buffers: the weights in tile order and the
//! KV cache. Each decode step streams all weights (0.7 GB for Qwen2-0.5B) and every running
//! sequence's cache; on 4 KiB pages that is a TLB miss every 4 KiB, and in a VM each miss is a
//! two-level page walk. [`zeroed_vec`] asks the kernel (`madvise(MADV_HUGEPAGE)`, before any
//! page is touched) to back a buffer with 2 MiB pages. This matters where the system's THP
//! setting is `madvise` (many distributions' default); under `always` it changes nothing, and
//! under `never`, or on systems without THP, the buffer simply keeps small pages.
#![allow(unsafe_code)]

use std::collections::TryReserveError;

/// Buffers smaller than this are left alone (one huge page).
const HUGE_PAGE: usize = 2 << 20;

/// A `len`-value buffer of `T::default()`, its memory advised for huge pages before it is
/// first written. Fails only as `Vec::try_reserve_exact` does.
pub fn zeroed_vec<T: Copy + Default>(len: usize) -> Result<Vec<T>, TryReserveError> {
    let mut v: Vec<T> = Vec::new();
    v.try_reserve_exact(len)?;
    advise(v.as_ptr().cast(), len * std::mem::size_of::<T>());
    v.resize(len, T::default());
    Ok(v)
}

/// The system's transparent-huge-page mode (`always`, `madvise` or `never`, the bracketed
/// word of `/sys/kernel/mm/transparent_hugepage/enabled`), for the load log: `madvise` and
/// `always` give the buffers above 2 MiB pages, `never` (or "unknown") small ones.
pub fn thp_mode() -> &'static str {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
    let text = text.unwrap_or_default();
    ["always", "madvise", "never"]
        .into_iter()
        .find(|m| text.contains(&format!("[{m}]")))
        .unwrap_or("unknown")
}

/// `madvise(MADV_HUGEPAGE)` over the whole 4 KiB pages inside `bytes` bytes from `p`; whether
/// the kernel honours it is its business (the advice is a hint, and an error, such as THP not
/// built into the kernel, leaves the memory as it was).
fn advise(p: *const u8, bytes: usize) {
    const PAGE: usize = 4096;
    let start = (p as usize).next_multiple_of(PAGE);
    let end = (p as usize + bytes) / PAGE * PAGE;
    let addr = std::ptr::NonNull::new(start as *mut std::ffi::c_void);
    let Some(addr) = addr.filter(|_| bytes >= HUGE_PAGE && end > start) else {
        return;
    };
    #[cfg(target_os = "linux")]
    {
        use nix::sys::mman::{madvise, MmapAdvise};
        // SAFETY: `start .. end` lies inside the allocation of `bytes` bytes at `p`, which the
        // caller owns and nothing else uses yet, on page boundaries as `madvise` requires;
        // MADV_HUGEPAGE changes how the kernel backs the range, never its contents or its
        // validity.
        let r = unsafe { madvise(addr, end - start, MmapAdvise::MADV_HUGEPAGE) };
        if let Err(e) = r {
            tracing::debug!(error = %e, bytes, "MADV_HUGEPAGE refused; small pages");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = addr;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size gives a zeroed buffer of exactly `len` values (the advice never changes
    /// contents), below and above the huge-page threshold and at odd byte counts.
    #[test]
    fn zeroed_vec_is_zeroed_and_exact() {
        for len in [0usize, 1, 4095, HUGE_PAGE / 2 + 3, 3 * HUGE_PAGE / 2 + 7] {
            let v: Vec<u16> = zeroed_vec(len).expect("allocates");
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0), "len {len}");
        }
        let f: Vec<f32> = zeroed_vec(HUGE_PAGE).expect("allocates");
        assert!(f.iter().all(|&x| x == 0.0));
    }
}
