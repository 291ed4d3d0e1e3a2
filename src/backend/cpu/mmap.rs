//! Memory-mapped weight files: mapping a file read-only ([`map_file`]) and viewing a range of
//! the mapped bytes as a typed slice ([`MappedSlice`]), with the bounds, alignment and
//! endianness checks that make the view sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::marker::PhantomData;
use std::sync::Arc;

use memmap2::Mmap;

use super::pod::Pod;

/// Maps a whole file read-only.
pub fn map_file(file: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is private and read-only, so nothing we do can write through it. The
    // remaining hazard of any file mapping is another process truncating or rewriting the file
    // while it is mapped; model folders are read-only inputs that the daemon checks for owner
    // and permissions before loading (the same contract every mmap-based loader relies on).
    unsafe { Mmap::map(file) }
}

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
