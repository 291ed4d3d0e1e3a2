//! Tensor meta (`libnnopbase.so`): descriptors over device memory, host int arrays, scalars
//! and tensor lists, each destroyed on drop. A descriptor is checked here against its buffer
//! (the view must stay inside it) before CANN sees it.

#![allow(unsafe_code)]

use std::ffi::c_void;

use super::{Acl, DeviceBuf, Raw};
use crate::backend::ascend::error::AclError;

/// `aclDataType` values the backend uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclDType {
    F32 = 0,
    F16 = 1,
    I8 = 2,
    I32 = 3,
    I64 = 9,
    Bf16 = 27,
}

impl AclDType {
    pub fn size(self) -> usize {
        match self {
            AclDType::F32 | AclDType::I32 => 4,
            AclDType::F16 | AclDType::Bf16 => 2,
            AclDType::I8 => 1,
            AclDType::I64 => 8,
        }
    }
}

/// `aclFormat` ACL_FORMAT_ND.
const FORMAT_ND: i32 = 2;

/// A tensor descriptor (`aclTensor*`) over device memory; destroyed on drop.
pub struct Tensor<'a> {
    acl: &'a Acl,
    pub(crate) raw: Raw,
}

impl Drop for Tensor<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from aclCreateTensor and is destroyed once; descriptors may be
        // destroyed as soon as the operator that used them has been launched.
        unsafe {
            (self.acl.fns.aclDestroyTensor)(self.raw);
        }
    }
}

/// How a tensor sees its buffer: `dims`, element `strides`, the first element at
/// `byte_base + offset · size` bytes into the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub dims: Vec<i64>,
    pub strides: Vec<i64>,
    /// Elements from the descriptor's base address (`aclCreateTensor`'s 5th argument).
    pub offset: i64,
    pub dtype: AclDType,
    /// Bytes from the buffer's start to the descriptor's base address (32-B aligned).
    pub byte_base: usize,
}

impl View {
    /// A row-major (contiguous) view of `dims` at the buffer's start.
    pub fn contiguous(dims: &[usize], dtype: AclDType) -> View {
        let mut strides = vec![1i64; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1] as i64;
        }
        View {
            dims: dims.iter().map(|&d| d as i64).collect(),
            strides,
            offset: 0,
            dtype,
            byte_base: 0,
        }
    }

    /// A weight `[n, k]` stored row-major seen as its transpose `[k, n]` (strides `{1, k}`).
    pub fn transposed(n: usize, k: usize, dtype: AclDType) -> View {
        View {
            dims: vec![k as i64, n as i64],
            strides: vec![1, k as i64],
            offset: 0,
            dtype,
            byte_base: 0,
        }
    }

    /// The same view starting `bytes` further into the buffer.
    pub fn at(mut self, bytes: usize) -> View {
        self.byte_base += bytes;
        self
    }

    /// Elements from the base the view can reach, plus one (0 for an empty view).
    fn extent(&self) -> Option<i64> {
        if self.dims.contains(&0) {
            return Some(0);
        }
        let mut last = self.offset;
        for (&d, &s) in self.dims.iter().zip(&self.strides) {
            if d < 0 || s < 0 {
                return None;
            }
            last = last.checked_add((d - 1).checked_mul(s)?)?;
        }
        last.checked_add(1)
    }
}

impl Acl {
    /// A descriptor of `view` over `buf`; refused when the view leaves the buffer.
    pub fn tensor<'a>(&'a self, buf: &DeviceBuf, view: &View) -> Result<Tensor<'a>, AclError> {
        let bad = |m: String| Err(AclError::new("aclCreateTensor", 161_002, m));
        if view.dims.len() != view.strides.len() {
            return bad(format!(
                "{} dims but {} strides",
                view.dims.len(),
                view.strides.len()
            ));
        }
        let Some(extent) = view.extent() else {
            return bad(format!("negative or overflowing view {view:?}"));
        };
        let size = view.dtype.size();
        let fits = (extent as usize)
            .checked_mul(size)
            .and_then(|b| b.checked_add(view.byte_base))
            .is_some_and(|end| end <= buf.bytes());
        if !fits || !view.byte_base.is_multiple_of(32) {
            return bad(format!(
                "view {view:?} does not fit a {}-byte buffer with a 32-byte aligned base",
                buf.bytes()
            ));
        }
        let storage = [extent.max(1)];
        let data = buf.ptr().add(view.byte_base).raw();
        // SAFETY: dims/strides/storage point to arrays of the lengths passed; CANN copies them.
        // `data` is device memory of `buf` and the view stays inside it (checked above).
        let raw = unsafe {
            (self.fns.aclCreateTensor)(
                view.dims.as_ptr(),
                view.dims.len() as u64,
                view.dtype as i32,
                view.strides.as_ptr(),
                view.offset,
                FORMAT_ND,
                storage.as_ptr(),
                1,
                data,
            )
        };
        if raw.is_null() {
            self.check("aclCreateTensor", 161_001)?;
        }
        Ok(Tensor { acl: self, raw })
    }

    /// An `aclIntArray` of `values` (copied by CANN).
    pub fn int_array<'a>(&'a self, values: &[i64]) -> Result<IntArray<'a>, AclError> {
        // SAFETY: `values` is a live array of the length passed; CANN copies it.
        let raw = unsafe { (self.fns.aclCreateIntArray)(values.as_ptr(), values.len() as u64) };
        if raw.is_null() {
            self.check("aclCreateIntArray", 161_001)?;
        }
        Ok(IntArray { acl: self, raw })
    }

    /// An f32 `aclScalar`.
    pub fn scalar_f32<'a>(&'a self, value: f32) -> Result<Scalar<'a>, AclError> {
        let mut v = Box::new(value);
        let p: *mut f32 = &mut *v;
        // SAFETY: `p` points to a live f32 (boxed, kept as long as the scalar) of the dtype
        // passed.
        let raw = unsafe { (self.fns.aclCreateScalar)(p.cast::<c_void>(), AclDType::F32 as i32) };
        if raw.is_null() {
            self.check("aclCreateScalar", 161_001)?;
        }
        Ok(Scalar {
            acl: self,
            raw,
            _value: v,
        })
    }

    /// A tensor list owning `tensors` (CANN destroys them with the list).
    pub fn tensor_list<'a>(&'a self, tensors: Vec<Tensor<'a>>) -> Result<TensorList<'a>, AclError> {
        let raws: Vec<Raw> = tensors.iter().map(|t| t.raw).collect();
        // SAFETY: `raws` holds live descriptors; the list takes them over.
        let raw = unsafe { (self.fns.aclCreateTensorList)(raws.as_ptr(), raws.len() as u64) };
        if raw.is_null() {
            self.check("aclCreateTensorList", 161_001)?;
        }
        // aclDestroyTensorList frees the member tensors: their own drops must not run.
        for t in tensors {
            std::mem::forget(t);
        }
        Ok(TensorList { acl: self, raw })
    }
}

/// `aclIntArray*`; destroyed on drop.
pub struct IntArray<'a> {
    acl: &'a Acl,
    pub(crate) raw: Raw,
}

impl Drop for IntArray<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from aclCreateIntArray and is destroyed once.
        unsafe {
            (self.acl.fns.aclDestroyIntArray)(self.raw);
        }
    }
}

/// `aclScalar*`; destroyed on drop.
pub struct Scalar<'a> {
    acl: &'a Acl,
    pub(crate) raw: Raw,
    _value: Box<f32>,
}

impl Drop for Scalar<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from aclCreateScalar and is destroyed once.
        unsafe {
            (self.acl.fns.aclDestroyScalar)(self.raw);
        }
    }
}

/// `aclTensorList*` (owns its tensors); destroyed on drop.
pub struct TensorList<'a> {
    acl: &'a Acl,
    pub(crate) raw: Raw,
}

impl Drop for TensorList<'_> {
    fn drop(&mut self) {
        // SAFETY: `raw` came from aclCreateTensorList; destroying it frees its tensors once.
        unsafe {
            (self.acl.fns.aclDestroyTensorList)(self.raw);
        }
    }
}
