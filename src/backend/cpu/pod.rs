//! [`Pod`]: the element types a memory-mapped weight may be viewed as. A leaf module, so the
//! mapping code (`mmap`) and the kernels' weight formats (`kernels::Fmt`) share it without
//! depending on each other.

/// Element types a mapped weight may be viewed as: every bit pattern is a valid value.
pub trait Pod: Copy + Send + Sync + 'static {}
impl Pod for f32 {}
impl Pod for u16 {}
