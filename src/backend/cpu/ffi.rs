//! The only place in the crate with `unsafe`: memory-mapping weight files, viewing mapped bytes
//! as typed slices, and entering kernels compiled for CPU features detected at run time.
//!
//! Everything here is a thin shim with a `// SAFETY:` argument; the logic lives in safe code
//! (`weights.rs`, `kernels/`).

use std::fs::File;
use std::marker::PhantomData;
use std::sync::Arc;

use memmap2::Mmap;

use super::kernels::{self, Fmt};

/// Maps a whole file read-only.
pub fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is private and read-only, so nothing we do can write through it. The
    // remaining hazard of any file mapping is another process truncating or rewriting the file
    // while it is mapped; model folders are read-only inputs that the daemon checks for owner
    // and permissions before loading (the same contract every mmap-based loader relies on).
    unsafe { Mmap::map(file) }
}

/// Element types a mapped weight may be viewed as: every bit pattern is a valid value.
pub trait Pod: Copy + Send + Sync + 'static {}
impl Pod for f32 {}
impl Pod for u16 {}

/// A typed, aligned view into a shared memory map; keeps the map alive.
pub struct MappedSlice<T: Pod> {
    map: Arc<Mmap>,
    offset: usize,
    len: usize,
    _elem: PhantomData<T>,
}

impl<T: Pod> MappedSlice<T> {
    /// Views `map[offset .. offset + len * size_of::<T>()]` as `[T]`. `None` if the range is out
    /// of bounds, misaligned for `T`, or the target is big-endian (file data is little-endian).
    pub fn new(map: Arc<Mmap>, offset: usize, len: usize) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        let end = offset.checked_add(bytes)?;
        if end > map.len() || cfg!(target_endian = "big") {
            return None;
        }
        let addr = (map.as_ptr() as usize).checked_add(offset)?;
        if addr % std::mem::align_of::<T>() != 0 {
            return None;
        }
        Some(Self {
            map,
            offset,
            len,
            _elem: PhantomData,
        })
    }

    pub fn as_slice(&self) -> &[T] {
        let bytes = &self.map[self.offset..self.offset + self.len * std::mem::size_of::<T>()];
        // SAFETY: `new` checked that this byte range lies inside the map and that its start is
        // aligned for `T`; `T: Pod` (f32 or u16) has no invalid bit patterns; the map is
        // read-only and outlives the returned borrow because `self` holds an `Arc` to it.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<T>(), self.len) }
    }
}

impl<T: Pod> Clone for MappedSlice<T> {
    fn clone(&self) -> Self {
        Self {
            map: Arc::clone(&self.map),
            offset: self.offset,
            len: self.len,
            _elem: PhantomData,
        }
    }
}

/// Which instruction-set level the kernels were entered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimdLevel {
    Avx512,
    Avx2,
    Portable,
}

pub fn simd_level() -> SimdLevel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return SimdLevel::Avx2;
        }
    }
    SimdLevel::Portable
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn panel_avx512<F: Fmt>(p: kernels::PanelArgs<'_, F>) {
    kernels::matmul_panel::<F, true>(p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn panel_avx2<F: Fmt>(p: kernels::PanelArgs<'_, F>) {
    kernels::matmul_panel::<F, true>(p)
}

/// Runs one weight panel of a matmul with the best instruction set this CPU has.
pub fn matmul_panel<F: Fmt>(level: SimdLevel, p: kernels::PanelArgs<'_, F>) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is Avx512 only when `simd_level` detected avx512f/bw/vl and fma.
        SimdLevel::Avx512 => unsafe { panel_avx512::<F>(p) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is Avx2 only when `simd_level` detected avx2 and fma.
        SimdLevel::Avx2 => unsafe { panel_avx2::<F>(p) },
        _ => kernels::matmul_panel::<F, false>(p),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn attend_avx512(a: kernels::AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    kernels::attend_one::<true>(a, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(a: kernels::AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    kernels::attend_one::<true>(a, out, scratch)
}

/// Attention of one query head over its context, with the best instruction set available.
pub fn attend_one(
    level: SimdLevel,
    a: kernels::AttendArgs<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is Avx512 only when `simd_level` detected avx512f/bw/vl and fma.
        SimdLevel::Avx512 => unsafe { attend_avx512(a, out, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `level` is Avx2 only when `simd_level` detected avx2 and fma.
        SimdLevel::Avx2 => unsafe { attend_avx2(a, out, scratch) },
        _ => kernels::attend_one::<false>(a, out, scratch),
    }
}
