//! The one place this crate calls CANN: the libraries opened with `libloading`, every symbol
//! resolved once into a typed table ([`Acl`]), and safe wrappers that own each handle (device
//! memory, contexts, streams, tensor descriptors, communicators) and turn every non-zero
//! return into an [`AclError`] carrying `aclGetRecentErrMsg`'s text. All of the backend's
//! `unsafe` lives in this module tree; nothing outside it sees a raw pointer.
//!
//! - this file: the symbol table, loading ([`Acl::load`]), the runtime (devices, contexts,
//!   streams, memory, copies) and [`DeviceBuf`];
//! - [`meta`]: tensor descriptors, int arrays, scalars, tensor lists (`libnnopbase.so`);
//! - [`ops`]: the aclnn two-phase operator calls and the stream's workspace (`libopapi*.so`);
//! - [`hccl`]: communicators and all-reduce (`libhccl.so`).
//!
//! C signatures, enum values and error codes are CANN's (`../shared/ASCEND.md` §1, §2, §4).
//! Device addresses are opaque here ([`DevPtr`]): Rust never dereferences them.

#![allow(unsafe_code)]

pub mod hccl;
pub mod meta;
pub mod ops;

use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::sync::Arc;

use super::error::AclError;

/// `aclError` / `aclnnStatus` / `HcclResult`.
type Rc = i32;
type Raw = *mut c_void;

/// A device address (or an offset into device memory): only ever handed back to CANN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPtr(usize);

impl DevPtr {
    /// The address `bytes` further on.
    pub fn add(self, bytes: usize) -> DevPtr {
        DevPtr(self.0 + bytes)
    }

    fn raw(self) -> Raw {
        self.0 as Raw
    }
}

/// `aclrtMemcpyKind`.
#[derive(Debug, Clone, Copy)]
enum CopyKind {
    HostToDevice = 1,
    DeviceToHost = 2,
    DeviceToDevice = 3,
}

/// `aclrtMemMallocPolicy` ACL_MEM_MALLOC_HUGE_FIRST.
const MALLOC_HUGE_FIRST: i32 = 0;
/// `aclrtMemAttr` ACL_HBM_MEM.
const HBM_MEM: i32 = 1;

/// Declares the symbol table: one typed function pointer per C symbol, resolved by name.
macro_rules! symbols {
    (
        required { $( $name:ident : fn( $( $arg:ty ),* ) -> $ret:ty ; )* }
        optional { $( $oname:ident : fn( $( $oarg:ty ),* ) -> $oret:ty ; )* }
    ) => {
        /// Every CANN entry point the backend calls.
        #[allow(non_snake_case)]
        pub(crate) struct Fns {
            $( pub(crate) $name: unsafe extern "C" fn( $( $arg ),* ) -> $ret, )*
            $( pub(crate) $oname: Option<unsafe extern "C" fn( $( $oarg ),* ) -> $oret>, )*
        }

        impl Fns {
            fn resolve(libs: &[Opened]) -> Result<Fns, String> {
                Ok(Fns {
                    $( $name: find(libs, stringify!($name))
                        .ok_or_else(|| missing_symbol(libs, stringify!($name)))?, )*
                    $( $oname: find(libs, stringify!($oname)), )*
                })
            }
        }
    };
}

// Pointer-typed parameters: `Raw` for CANN handles and device addresses.
symbols! {
    required {
        aclInit: fn(*const c_char) -> Rc;
        aclGetRecentErrMsg: fn() -> *const c_char;
        aclrtGetDeviceCount: fn(*mut u32) -> Rc;
        aclrtSetDevice: fn(i32) -> Rc;
        aclrtResetDevice: fn(i32) -> Rc;
        aclrtCreateContext: fn(*mut Raw, i32) -> Rc;
        aclrtDestroyContext: fn(Raw) -> Rc;
        aclrtSetCurrentContext: fn(Raw) -> Rc;
        aclrtCreateStream: fn(*mut Raw) -> Rc;
        aclrtDestroyStream: fn(Raw) -> Rc;
        aclrtSynchronizeStream: fn(Raw) -> Rc;
        aclrtMalloc: fn(*mut Raw, usize, i32) -> Rc;
        aclrtFree: fn(Raw) -> Rc;
        aclrtMemcpy: fn(Raw, usize, *const c_void, usize, i32) -> Rc;
        aclrtGetMemInfo: fn(i32, *mut usize, *mut usize) -> Rc;
        aclrtGetSocName: fn() -> *const c_char;
        aclCreateTensor: fn(*const i64, u64, i32, *const i64, i64, i32, *const i64, u64, Raw) -> Raw;
        aclDestroyTensor: fn(Raw) -> Rc;
        aclCreateIntArray: fn(*const i64, u64) -> Raw;
        aclDestroyIntArray: fn(Raw) -> Rc;
        aclCreateScalar: fn(*mut c_void, i32) -> Raw;
        aclDestroyScalar: fn(Raw) -> Rc;
        aclCreateTensorList: fn(*const Raw, u64) -> Raw;
        aclDestroyTensorList: fn(Raw) -> Rc;
        aclnnEmbeddingGetWorkspaceSize: fn(Raw, Raw, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnEmbedding: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnIndexSelectGetWorkspaceSize: fn(Raw, i64, Raw, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnIndexSelect: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnRmsNormGetWorkspaceSize: fn(Raw, Raw, f64, Raw, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnRmsNorm: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnAddRmsNormGetWorkspaceSize: fn(Raw, Raw, Raw, f64, Raw, Raw, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnAddRmsNorm: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnMatmulGetWorkspaceSize: fn(Raw, Raw, Raw, i8, *mut u64, *mut Raw) -> Rc;
        aclnnMatmul: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnAddmmGetWorkspaceSize: fn(Raw, Raw, Raw, Raw, Raw, Raw, i8, *mut u64, *mut Raw) -> Rc;
        aclnnAddmm: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnFusedInferAttentionScoreV3GetWorkspaceSize: fn(
            Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw,
            Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw,
            Raw, Raw, Raw, Raw, Raw, Raw, Raw,
            i64, f64, i64, i64, *mut c_char, i64, i64, i64, i64, i64, bool, i64, i64,
            Raw, Raw, *mut u64, *mut Raw
        ) -> Rc;
        aclnnFusedInferAttentionScoreV3: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnSwiGluGetWorkspaceSize: fn(Raw, i64, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnSwiGlu: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnCastGetWorkspaceSize: fn(Raw, i32, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnCast: fn(Raw, u64, Raw, Raw) -> Rc;
    }
    optional {
        aclnnRopeWithSinCosCacheGetWorkspaceSize: fn(
            Raw, Raw, Raw, Raw, Raw, i64, bool, Raw, Raw, *mut u64, *mut Raw
        ) -> Rc;
        aclnnRopeWithSinCosCache: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnApplyRotaryPosEmbV2GetWorkspaceSize: fn(
            Raw, Raw, Raw, Raw, i64, *mut c_char, *mut u64, *mut Raw
        ) -> Rc;
        aclnnApplyRotaryPosEmbV2: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnScatterPaKvCacheGetWorkspaceSize: fn(
            Raw, Raw, Raw, Raw, Raw, Raw, Raw, Raw, *mut c_char, *mut c_char, Raw, Raw,
            *mut u64, *mut Raw
        ) -> Rc;
        aclnnScatterPaKvCache: fn(Raw, u64, Raw, Raw) -> Rc;
        aclnnInplaceIndexCopyGetWorkspaceSize: fn(Raw, i64, Raw, Raw, *mut u64, *mut Raw) -> Rc;
        aclnnInplaceIndexCopy: fn(Raw, u64, Raw, Raw) -> Rc;
        HcclCommInitAll: fn(u32, *mut i32, *mut Raw) -> Rc;
        HcclAllReduce: fn(Raw, Raw, u64, i32, i32, Raw, Raw) -> Rc;
        HcclCommDestroy: fn(Raw) -> Rc;
        HcclGetErrorString: fn(i32) -> *const c_char;
        emuaclBuildInfo: fn() -> *const c_char;
    }
}

/// One kind of CANN library: the files that may provide it, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub paths: Vec<PathBuf>,
    /// Start-up fails when none of `paths` opens.
    pub required: bool,
    /// The message for that failure (names the library and the fix).
    pub missing: String,
}

/// One opened library.
struct Opened {
    path: PathBuf,
    lib: libloading::os::unix::Library,
}

/// The first library (in opening order) exporting `name`, as a function pointer of type `T`.
fn find<T: Copy>(libs: &[Opened], name: &str) -> Option<T> {
    libs.iter().find_map(|o| {
        // SAFETY: `T` is the function-pointer type the `symbols!` table declares for `name`,
        // transcribed from CANN's headers (ASCEND.md §1, §2, §4); the pointer stays valid
        // while the library is open, and `Acl` keeps every library open as long as the table.
        unsafe { o.lib.get::<T>(name.as_bytes()) }.ok().map(|s| *s)
    })
}

fn missing_symbol(libs: &[Opened], name: &str) -> String {
    let paths: Vec<String> = libs.iter().map(|o| o.path.display().to_string()).collect();
    format!(
        "CANN symbol `{name}` not found in {}: this CANN is too old or incomplete for the \
         Ascend backend (it needs the aclnn operator library, ASCEND.md §0)",
        paths.join(", ")
    )
}

/// The CANN libraries, opened and resolved; `aclInit` done. One per process (CANN allows one
/// `aclInit`): see [`super::runtime`].
pub struct Acl {
    pub(crate) fns: Fns,
    /// What was opened, for logs.
    pub paths: Vec<PathBuf>,
    /// `emuaclBuildInfo()` when the emulated CANN is what was loaded.
    pub emulated: Option<String>,
    // Keeps the libraries open for as long as `fns` is used; dropped last.
    _libs: Vec<Opened>,
}

impl std::fmt::Debug for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acl")
            .field("paths", &self.paths)
            .field("emulated", &self.emulated)
            .finish()
    }
}

/// Copies a C string CANN returned (NULL → empty).
fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: CANN returns NUL-terminated strings it owns (thread-local or static buffers);
    // we copy the text at once, before any other call could reuse the buffer.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Acl {
    /// Opens every candidate of every role that can be opened (`RTLD_NOW | RTLD_GLOBAL`, as
    /// CANN's libraries resolve each other's symbols), resolves the table and calls
    /// `aclInit(NULL)`. A required role of which nothing opens fails with its message.
    pub fn load(roles: &[Role]) -> Result<Acl, String> {
        let mut libs: Vec<Opened> = Vec::new();
        for role in roles {
            let mut opened = 0;
            let mut last_error = String::new();
            for path in &role.paths {
                let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL;
                // SAFETY: opening a CANN library runs its initialisers; these are the
                // vendor's runtime libraries (or the emulated CANN), loaded as CANN's own
                // tools load them.
                match unsafe { libloading::os::unix::Library::open(Some(path), flags) } {
                    Ok(lib) => {
                        opened += 1;
                        libs.push(Opened {
                            path: path.clone(),
                            lib,
                        });
                    }
                    Err(e) => last_error = e.to_string(),
                }
            }
            if opened == 0 && role.required {
                return Err(format!(
                    "{} (last loader error: {last_error})",
                    role.missing
                ));
            }
        }
        let fns = Fns::resolve(&libs)?;
        // SAFETY: aclInit(NULL) is CANN's documented process initialisation (no config file).
        let rc = unsafe { (fns.aclInit)(std::ptr::null()) };
        // 100002: already initialised (by another user of CANN in this process) is fine.
        if rc != 0 && rc != 100_002 {
            // SAFETY: returns a NUL-terminated string owned by CANN (see `c_text`).
            let msg = c_text(unsafe { (fns.aclGetRecentErrMsg)() });
            return Err(format!("aclInit failed with {rc}: {msg}"));
        }
        let emulated = fns.emuaclBuildInfo.map(|f| {
            // SAFETY: the emulator's build-info function returns a static string.
            c_text(unsafe { f() })
        });
        Ok(Acl {
            fns,
            paths: libs.iter().map(|o| o.path.clone()).collect(),
            emulated,
            _libs: libs,
        })
    }

    /// `Err` with the recent error text when `rc` is not 0.
    pub(crate) fn check(&self, api: &'static str, rc: Rc) -> Result<(), AclError> {
        if rc == 0 {
            return Ok(());
        }
        // SAFETY: no arguments; returns a NUL-terminated string owned by CANN.
        let message = c_text(unsafe { (self.fns.aclGetRecentErrMsg)() });
        Err(AclError::new(api, rc, message))
    }

    /// Whether the optional HCCL entry points are all there.
    pub fn has_hccl(&self) -> bool {
        self.fns.HcclCommInitAll.is_some()
            && self.fns.HcclAllReduce.is_some()
            && self.fns.HcclCommDestroy.is_some()
    }

    pub fn device_count(&self) -> Result<u32, AclError> {
        let mut n = 0u32;
        // SAFETY: writes one u32 to a valid location.
        let rc = unsafe { (self.fns.aclrtGetDeviceCount)(&mut n) };
        self.check("aclrtGetDeviceCount", rc).map(|()| n)
    }

    /// The SoC name (e.g. `Ascend910B4`).
    pub fn soc_name(&self) -> String {
        // SAFETY: no arguments; returns a static NUL-terminated string (or NULL).
        c_text(unsafe { (self.fns.aclrtGetSocName)() })
    }

    /// `aclrtSetDevice(id)` then a context of its own for that device.
    pub fn open_device(self: &Arc<Self>, id: i32) -> Result<Context, AclError> {
        // SAFETY: plain integer argument.
        let rc = unsafe { (self.fns.aclrtSetDevice)(id) };
        self.check("aclrtSetDevice", rc)?;
        let mut raw: Raw = std::ptr::null_mut();
        // SAFETY: writes one handle to a valid location.
        let rc = unsafe { (self.fns.aclrtCreateContext)(&mut raw, id) };
        self.check("aclrtCreateContext", rc)?;
        Ok(Context {
            acl: Arc::clone(self),
            raw,
            device: id,
        })
    }

    /// `(free, total)` bytes of the current device's HBM.
    pub fn mem_info(&self) -> Result<(usize, usize), AclError> {
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two usize values to valid locations.
        let rc = unsafe { (self.fns.aclrtGetMemInfo)(HBM_MEM, &mut free, &mut total) };
        self.check("aclrtGetMemInfo", rc).map(|()| (free, total))
    }

    /// `bytes` of device memory on the current device.
    pub fn malloc(self: &Arc<Self>, bytes: usize) -> Result<DeviceBuf, AclError> {
        let mut raw: Raw = std::ptr::null_mut();
        // SAFETY: writes one pointer to a valid location; size and policy are plain values.
        let rc = unsafe { (self.fns.aclrtMalloc)(&mut raw, bytes.max(1), MALLOC_HUGE_FIRST) };
        self.check("aclrtMalloc", rc)?;
        Ok(DeviceBuf {
            acl: Arc::clone(self),
            ptr: DevPtr(raw as usize),
            bytes,
        })
    }

    fn memcpy(
        &self,
        dst: Raw,
        dst_max: usize,
        src: *const c_void,
        count: usize,
        kind: CopyKind,
    ) -> Result<(), AclError> {
        if count == 0 {
            return Ok(());
        }
        // SAFETY: callers pass a destination of `dst_max ≥ count` bytes and a source of
        // `count` bytes, host or device as `kind` says (checked by the wrappers below).
        let rc = unsafe { (self.fns.aclrtMemcpy)(dst, dst_max, src, count, kind as i32) };
        self.check("aclrtMemcpy", rc)
    }

    /// Host bytes → `dst` at byte `offset` (synchronous).
    pub fn upload(&self, dst: &DeviceBuf, offset: usize, src: &[u8]) -> Result<(), AclError> {
        dst.check_range(offset, src.len())?;
        self.memcpy(
            dst.ptr.add(offset).raw(),
            dst.bytes - offset,
            src.as_ptr().cast(),
            src.len(),
            CopyKind::HostToDevice,
        )
    }

    /// `src` from byte `offset` → host bytes (synchronous: waits for the device).
    pub fn download(&self, dst: &mut [u8], src: &DeviceBuf, offset: usize) -> Result<(), AclError> {
        src.check_range(offset, dst.len())?;
        self.memcpy(
            dst.as_mut_ptr().cast(),
            dst.len(),
            src.ptr.add(offset).raw().cast_const(),
            dst.len(),
            CopyKind::DeviceToHost,
        )
    }

    /// Device → device, `count` bytes (synchronous).
    pub fn copy_device(
        &self,
        dst: &DeviceBuf,
        dst_off: usize,
        src: &DeviceBuf,
        src_off: usize,
        count: usize,
    ) -> Result<(), AclError> {
        dst.check_range(dst_off, count)?;
        src.check_range(src_off, count)?;
        self.memcpy(
            dst.ptr.add(dst_off).raw(),
            dst.bytes - dst_off,
            src.ptr.add(src_off).raw().cast_const(),
            count,
            CopyKind::DeviceToDevice,
        )
    }
}

/// A device's context (made by [`Acl::open_device`]); destroyed and the device reset on drop.
pub struct Context {
    acl: Arc<Acl>,
    raw: Raw,
    device: i32,
}

// SAFETY: an ACL context is a process-wide handle; any thread may make it current
// (`aclrtSetCurrentContext`), which is how the engine thread drives every rank.
unsafe impl Send for Context {}

impl Context {
    pub fn device(&self) -> i32 {
        self.device
    }

    /// Makes this context (and so its device) the calling thread's current one.
    pub fn make_current(&self) -> Result<(), AclError> {
        // SAFETY: `raw` is a live context made by aclrtCreateContext.
        let rc = unsafe { (self.acl.fns.aclrtSetCurrentContext)(self.raw) };
        self.acl.check("aclrtSetCurrentContext", rc)
    }

    /// A stream on this context's device (the context is made current first).
    pub fn stream(&self) -> Result<Stream, AclError> {
        self.make_current()?;
        let mut raw: Raw = std::ptr::null_mut();
        // SAFETY: writes one handle to a valid location.
        let rc = unsafe { (self.acl.fns.aclrtCreateStream)(&mut raw) };
        self.acl.check("aclrtCreateStream", rc)?;
        Ok(Stream {
            acl: Arc::clone(&self.acl),
            raw,
        })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live context; after this it is never used again. Errors at
        // teardown are logged by nobody: the device is being released anyway.
        unsafe {
            (self.acl.fns.aclrtDestroyContext)(self.raw);
            (self.acl.fns.aclrtResetDevice)(self.device);
        }
    }
}

/// A stream; synchronised and destroyed on drop.
pub struct Stream {
    acl: Arc<Acl>,
    raw: Raw,
}

// SAFETY: a stream handle may be used from any thread whose current context is its device's
// (the backend makes the context current before every use).
unsafe impl Send for Stream {}

impl Stream {
    pub(crate) fn raw(&self) -> Raw {
        self.raw
    }

    /// Waits until every task queued on the stream is done; a failed task reports here.
    pub fn synchronize(&self) -> Result<(), AclError> {
        // SAFETY: `raw` is a live stream.
        let rc = unsafe { (self.acl.fns.aclrtSynchronizeStream)(self.raw) };
        self.acl.check("aclrtSynchronizeStream", rc)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: `raw` is a live stream, synchronised first as CANN asks; never used after.
        unsafe {
            (self.acl.fns.aclrtSynchronizeStream)(self.raw);
            (self.acl.fns.aclrtDestroyStream)(self.raw);
        }
    }
}

/// Device memory from `aclrtMalloc`; freed on drop.
pub struct DeviceBuf {
    acl: Arc<Acl>,
    ptr: DevPtr,
    bytes: usize,
}

// SAFETY: device memory is addressed by value; freeing it from another thread is allowed.
unsafe impl Send for DeviceBuf {}

impl std::fmt::Debug for DeviceBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuf({:#x}, {} bytes)", self.ptr.0, self.bytes)
    }
}

impl DeviceBuf {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn ptr(&self) -> DevPtr {
        self.ptr
    }

    fn check_range(&self, offset: usize, len: usize) -> Result<(), AclError> {
        if offset.checked_add(len).is_some_and(|end| end <= self.bytes) {
            Ok(())
        } else {
            Err(AclError::new(
                "DeviceBuf",
                100_000,
                format!(
                    "{len} bytes at offset {offset} overrun a {}-byte buffer",
                    self.bytes
                ),
            ))
        }
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from aclrtMalloc and is freed exactly once, here.
        unsafe {
            (self.acl.fns.aclrtFree)(self.ptr.raw());
        }
    }
}
