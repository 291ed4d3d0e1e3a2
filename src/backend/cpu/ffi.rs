//! The only place in the crate with `unsafe`: memory-mapping weight files, viewing mapped bytes
//! as typed slices, entering kernels compiled for CPU features detected at run time, the
//! AVX-512 GEMM micro-kernels (intrinsics with pointer loads; module `x86`), the AMX BF16
//! tile kernel (inline `asm!`, after asking Linux for the tile state with `arch_prctl`;
//! [`has_amx`], [`gemm_panel_amx`]), its 16 × 16 register transpose, and the disjoint column
//! panels it writes through from several threads ([`split_columns`]).
//!
//! Every `unsafe` carries a `// SAFETY:` argument. The GEMM kernels are entered only through
//! [`gemm_panel_bf16`] / [`gemm_panel_f32`] / [`gemm_panel_bf16_dot`] / [`gemm_panel_amx`],
//! which check the slice bounds (and, for the last two, the CPU features) the kernels rely on;
//! the rest of the logic (packing, panels, threads) lives in safe code (`linear.rs`,
//! `kernels/`).

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

/// The best level this CPU supports, capped by `MINDIE_CPU_KERNELS` (`portable`, `avx2`) when
/// set, so the fallback kernels can be exercised (parity tests, comparisons) on any machine.
pub fn simd_level() -> SimdLevel {
    let detected = detected_level();
    match std::env::var("MINDIE_CPU_KERNELS").as_deref() {
        Ok("portable") => SimdLevel::Portable,
        Ok("avx2") if detected != SimdLevel::Portable => SimdLevel::Avx2,
        _ => detected,
    }
}

fn detected_level() -> SimdLevel {
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

/// Whether this CPU has the AVX-512 base of the GEMM kernels and the AVX-512 BF16 dot products
/// (`vdpbf16ps`) of the opt-in bf16-activation path ([`gemm_panel_bf16_dot`]).
pub fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        detected_level() == SimdLevel::Avx512 && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX BF16 tile kernel ([`gemm_panel_amx`]) can run: the CPU reports AMX-TILE and
/// AMX-BF16 and the kernel grants this process the tile data state (`arch_prctl
/// ARCH_REQ_XCOMP_PERM`, once; Linux only). Cached.
pub fn has_amx() -> bool {
    static AMX: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            use std::arch::x86_64::__cpuid_count;
            let max_leaf = __cpuid_count(0, 0).eax;
            if max_leaf < 7 {
                return false;
            }
            let edx = __cpuid_count(7, 0).edx;
            let (tile, bf16) = (edx & (1 << 24) != 0, edx & (1 << 22) != 0);
            if !(tile && bf16) {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: nix::libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: nix::libc::c_long = 18;
            // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` only asks the kernel
            // to allow the AMX tile state for this process; it takes two integers, touches no
            // memory of ours, and fails cleanly (non-zero) where unsupported.
            let r = unsafe {
                nix::libc::syscall(
                    nix::libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            r == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    })
}

/// `level`, lowered to what this CPU actually has: `SimdLevel` is a public enum, so the entry
/// points below never trust a caller's value to prove a CPU feature (detection is cached, so
/// this costs an atomic load or two).
fn verified(level: SimdLevel) -> SimdLevel {
    match (level, detected_level()) {
        (SimdLevel::Portable, _) | (_, SimdLevel::Portable) => SimdLevel::Portable,
        (SimdLevel::Avx512, SimdLevel::Avx512) => SimdLevel::Avx512,
        _ => SimdLevel::Avx2,
    }
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
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { panel_avx512::<F>(p) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx2 only when avx2 and fma were detected.
        SimdLevel::Avx2 => unsafe { panel_avx2::<F>(p) },
        _ => kernels::matmul_panel::<F, false>(p),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn attend_avx512(a: kernels::AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    kernels::attend_group::<true>(a, out, scratch)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(a: kernels::AttendArgs<'_>, out: &mut [f32], scratch: &mut Vec<f32>) {
    kernels::attend_group::<true>(a, out, scratch)
}

/// Attention of one GQA group of query heads over its context, with the best instruction set
/// available.
pub fn attend_group(
    level: SimdLevel,
    a: kernels::AttendArgs<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    match verified(level) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx512 only when avx512f/bw/vl and fma were detected.
        SimdLevel::Avx512 => unsafe { attend_avx512(a, out, scratch) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `verified` returns Avx2 only when avx2 and fma were detected.
        SimdLevel::Avx2 => unsafe { attend_avx2(a, out, scratch) },
        _ => kernels::attend_group::<false>(a, out, scratch),
    }
}

/// Weight rows × activation rows of one GEMM panel for the AVX-512 kernels (see
/// [`kernels::gemm`] for the packed activation layouts and the driver).
pub struct GemmPanel<'a, W, X = f32> {
    /// Activations packed by [`kernels::gemm::pack`] (f32) or [`kernels::gemm::pack_bf16`]
    /// (bf16 bits, for [`gemm_panel_bf16_dot`]); `m` rows, `k` columns.
    pub xp: &'a [X],
    pub m: usize,
    pub k: usize,
    /// Consecutive weight rows, `rows × k`, bf16 bits (`u16`) or f32.
    pub w: &'a [W],
    /// Output, transposed: `rows × m`.
    pub out_t: &'a mut [f32],
}

/// Runs one panel with the AVX-512 bf16-weight kernel; `false` (nothing done) when `level` has
/// no such kernel.
pub fn gemm_panel_bf16(level: SimdLevel, p: GemmPanel<'_, u16>) -> bool {
    gemm_panel::<u16, true>(level, p)
}

/// Runs one panel with the AVX-512 f32-weight kernel; `false` when `level` has none.
pub fn gemm_panel_f32(level: SimdLevel, p: GemmPanel<'_, f32>) -> bool {
    gemm_panel::<f32, false>(level, p)
}

/// Runs one panel with the AVX-512 BF16 dot-product kernel (`vdpbf16ps`: bf16 weights times
/// activations rounded to bf16, f32 accumulation); `false` (nothing done) when `level` is not
/// AVX-512 or the CPU lacks `avx512bf16`.
pub fn gemm_panel_bf16_dot(level: SimdLevel, p: GemmPanel<'_, u16, u16>) -> bool {
    if verified(level) != SimdLevel::Avx512 || !has_avx512_bf16() || p.k == 0 || p.m == 0 {
        return false;
    }
    let rows = p.w.len() / p.k;
    assert_eq!(p.w.len(), rows * p.k, "weight panel is not whole rows");
    assert_eq!(p.out_t.len(), rows * p.m, "output is not rows × m");
    assert!(
        p.xp.len() >= kernels::gemm::packed_len(p.m, p.k),
        "packed x too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `verified` returned Avx512 and `has_avx512_bf16` held, so avx512f/bw/vl, fma
        // and avx512bf16 were detected. The asserts above establish the bounds
        // `x86::panel_dot` relies on: `w` holds `rows × k` u16, `out_t` `rows × m` floats, and
        // `xp` the whole packed bf16 layout of `m × k`.
        unsafe {
            x86::panel_dot(
                p.xp.as_ptr(),
                p.m,
                p.k,
                p.w.as_ptr(),
                rows,
                p.out_t.as_mut_ptr(),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows and columns of one AMX tile block (16 rows of 64 bytes).
const AMX_T: usize = 16;

/// Fewest 16-row activation blocks for which the AMX kernel copies misaligned weights.
const AMX_ALIGN_MIN_BLOCKS: usize = 4;

/// Weight rows × activation rows of one AMX panel (see [`gemm_panel_amx`]).
pub struct AmxPanel<'a> {
    /// Activations packed by [`kernels::gemm::pack_amx`] with `pieces` bf16 terms per value;
    /// `m` rows, `k` columns.
    pub xp: &'a [u16],
    pub m: usize,
    pub k: usize,
    /// 1 (activations rounded to bf16) or 3 (bf16 terms summing to the f32 value).
    pub pieces: usize,
    /// Consecutive weight rows, `rows × k`, bf16 bits.
    pub w: &'a [u16],
    /// Output: `m` rows, `rows` columns of the destination matrix.
    pub out: ColumnPanel<'a>,
}

/// One writable column range of a row-major matrix, made by [`split_columns`]. The panels of
/// one split cover disjoint columns, so each may be written from its own thread.
pub struct ColumnPanel<'a> {
    base: *mut f32,
    rows: usize,
    stride: usize,
    first: usize,
    width: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a panel reaches only its own columns of a buffer that its split borrowed mutably for
// `'a`; no other panel of the split reaches them, so moving it to another thread races nothing.
unsafe impl Send for ColumnPanel<'_> {}

impl ColumnPanel<'_> {
    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// Row `i` of this panel's columns.
    pub fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} of {}", self.rows);
        // SAFETY: `split_columns` checked that the buffer holds `rows × stride` floats and that
        // `first + width <= stride`, so the range is inside row `i`; it belongs to this panel
        // alone (panels of a split are disjoint) and `&mut self` makes it the only live slice
        // of the panel.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.add(i * self.stride + self.first), self.width)
        }
    }
}

/// Splits `out` (row-major, rows of `stride` floats) into consecutive column panels of the
/// given widths, from column 0; the widths must add up to at most `stride`.
pub fn split_columns(
    out: &mut [f32],
    stride: usize,
    widths: impl IntoIterator<Item = usize>,
) -> Vec<ColumnPanel<'_>> {
    assert!(
        stride > 0 && out.len().is_multiple_of(stride),
        "not whole rows"
    );
    let rows = out.len() / stride;
    let base = out.as_mut_ptr();
    let mut first = 0;
    let mut panels = Vec::new();
    for width in widths {
        assert!(first + width <= stride, "panels wider than the rows");
        panels.push(ColumnPanel {
            base,
            rows,
            stride,
            first,
            width,
            _out: std::marker::PhantomData,
        });
        first += width;
    }
    panels
}

/// Runs one panel with the AMX BF16 tile kernel (`tdpbf16ps`: bf16 × bf16 products with f32
/// accumulation) over activations packed by [`kernels::gemm::pack_amx`]; every piece of a
/// value multiplies the same weight tile into the same accumulator, so with 3 pieces the sum
/// is the f32 activation's product, and with 1 the bf16-rounded one's.
///
/// Blocking: blocks of 32 weight rows × 32 activation rows accumulate in four 16 × 16 tiles.
/// For each pair of activation blocks, the columns go in passes of a few 32-column steps whose
/// activation tiles stay in L1 while every weight block of the panel streams past from L2; the
/// C tiles wait in an aligned buffer between passes, and finished ones are transposed in
/// registers straight into the panel's columns of the output. Weight rows are read in place
/// when they are 64-byte aligned whole blocks, else from an aligned, zero-padded copy.
/// `false` (nothing done) when AMX is unavailable.
pub fn gemm_panel_amx(p: AmxPanel<'_>) -> bool {
    if !has_amx() || p.k == 0 || p.m == 0 {
        return false;
    }
    let (m, k, pieces) = (p.m, p.k, p.pieces);
    assert!(pieces == 1 || pieces == 3, "pieces must be 1 or 3");
    let rows = p.w.len() / k;
    assert_eq!(p.w.len(), rows * k, "weight panel is not whole rows");
    assert!(
        p.out.rows() == m && p.out.width() == rows,
        "output is not m × rows"
    );
    let mut out = p.out;
    let kb = k.div_ceil(2 * AMX_T);
    let mbs = m.div_ceil(AMX_T);
    assert!(
        p.xp.len() >= kernels::gemm::amx_packed_len(m, k, pieces),
        "packed x too short"
    );
    let kp = kb * 2 * AMX_T;
    let nblocks = rows.div_ceil(2 * AMX_T);
    // Tile rows must start on 64-byte boundaries: a row that straddles two cache lines makes
    // every tile load several times slower (measured ~6× here). Weights used in place only when
    // they are aligned whole 16-row blocks of `kp` columns; else an aligned, zero-padded copy
    // of the panel (safetensors data is only 8-byte aligned).
    let mut scratch = AMX_SCRATCH.with(|s| s.take());
    // (With few activation blocks the copy costs more than it saves: each weight tile is
    // loaded only `mbs` times.)
    let aligned = (p.w.as_ptr() as usize).is_multiple_of(64) || mbs < AMX_ALIGN_MIN_BLOCKS;
    let in_place = k == kp && rows.is_multiple_of(AMX_T) && aligned;
    let (w, ldw): (&[u16], usize) = if in_place {
        (p.w, k)
    } else {
        let len = rows.div_ceil(AMX_T) * AMX_T * kp;
        let buf = kernels::gemm::aligned64(&mut scratch.0, len);
        for (dst, src) in buf.chunks_exact_mut(kp).zip(p.w.chunks_exact(k)) {
            dst[..k].copy_from_slice(src);
            dst[k..].fill(0);
        }
        buf[rows * kp..].fill(0);
        (&*buf, kp)
    };
    let block_u16 = pieces * kb * AMX_T * 2 * AMX_T;
    // Column steps per pass: an activation pair's tiles of one pass (2 × pieces × steps KiB)
    // stay in L1 while every weight block of the panel streams past them from L2.
    let steps = if mbs == 1 { kb } else { (12 / pieces).max(1) };
    // The four C tiles of every weight block, kept between passes (64-byte aligned too).
    let acc = kernels::gemm::aligned64(&mut scratch.1, nblocks * 4 * AMX_T * AMX_T);
    let mut t = [[0f32; AMX_T]; AMX_T];
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission.
    unsafe {
        x86::amx_config()
    };
    for mb0 in (0..mbs).step_by(2) {
        let mb = (mbs - mb0).min(2);
        let xb = &p.xp[mb0 * block_u16..];
        assert!(xb.len() >= mb * block_u16);
        for t0 in (0..kb).step_by(steps) {
            let t1 = (t0 + steps).min(kb);
            for (bi, c) in acc.chunks_exact_mut(4 * AMX_T * AMX_T).enumerate() {
                let n0 = bi * 2 * AMX_T;
                let nb = (rows - n0).div_ceil(AMX_T).min(2);
                let wb = &w[n0 * ldw..];
                assert!(wb.len() >= (nb * AMX_T - 1) * ldw + kp);
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `has_amx` verified AMX-TILE/BF16 and the OS permission, and
                // `amx_config` ran on this thread above (nothing between releases the tiles).
                // Bounds: `wb` holds `nb` blocks of 16 rows, `ldw` u16 apart, each with
                // `kb * 32` readable u16 (the assert above); `xb` holds `mb` packed blocks of
                // `pieces * kb` 16 × 32 tiles (the assert above); `c` holds four 16 × 16 f32
                // tiles (1024 floats).
                unsafe {
                    x86::amx_block(
                        x86::AmxBlock {
                            nb,
                            mb,
                            w: wb.as_ptr(),
                            ldw_bytes: ldw * 2,
                            xb: xb.as_ptr(),
                            kb,
                            pieces,
                            steps: t0..t1,
                        },
                        c.as_mut_ptr(),
                    );
                }
            }
        }
        for (bi, c) in acc.chunks_exact(4 * AMX_T * AMX_T).enumerate() {
            let n0 = bi * 2 * AMX_T;
            let nr = (rows - n0).min(2 * AMX_T);
            for bj in 0..mb {
                let m0 = (mb0 + bj) * AMX_T;
                for bi2 in 0..nr.div_ceil(AMX_T) {
                    let ni = AMX_T.min(nr - bi2 * AMX_T);
                    let n = n0 + bi2 * AMX_T;
                    let tile: &[f32; AMX_T * AMX_T] = c[(bi2 * 2 + bj) * AMX_T * AMX_T..]
                        [..AMX_T * AMX_T]
                        .try_into()
                        .expect("tile is 256 floats");
                    transpose16(tile, &mut t);
                    for (j, col) in t.iter().take((m - m0).min(AMX_T)).enumerate() {
                        let row = &mut out.row_mut(m0 + j)[n..n + ni];
                        if ni == AMX_T {
                            // Fixed length: inline vector moves, not a `memmove` call.
                            let dst: &mut [f32; AMX_T] = row.try_into().expect("16 floats");
                            *dst = *col;
                        } else {
                            row.copy_from_slice(&col[..ni]);
                        }
                    }
                }
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: as for `amx_config` above.
    unsafe {
        x86::amx_release()
    };
    AMX_SCRATCH.with(|s| s.replace(scratch));
    true
}

thread_local! {
    /// The AMX kernel's aligned weight copy and C tiles, reused across calls on this thread
    /// (fresh large allocations page-fault).
    static AMX_SCRATCH: std::cell::Cell<(Vec<u16>, Vec<f32>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// `dst[j][i] = src[i * 16 + j]`: one 16 × 16 f32 tile transposed (AVX-512 shuffles where
/// available, else scalar).
pub fn transpose16(src: &[f32; 256], dst: &mut [[f32; 16]; 16]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: avx512f was just detected; the function reads 256 floats from `src` and
        // writes 256 into `dst`, both whole arrays.
        unsafe { x86::transpose16(src.as_ptr(), dst.as_mut_ptr().cast()) };
        return;
    }
    for (j, row) in dst.iter_mut().enumerate() {
        for (i, v) in row.iter_mut().enumerate() {
            *v = src[i * 16 + j];
        }
    }
}

fn gemm_panel<W: Pod, const BF16: bool>(level: SimdLevel, p: GemmPanel<'_, W>) -> bool {
    debug_assert_eq!(std::mem::size_of::<W>(), if BF16 { 2 } else { 4 });
    if verified(level) != SimdLevel::Avx512 || p.k == 0 || p.m == 0 {
        return false;
    }
    let rows = p.w.len() / p.k;
    assert_eq!(p.w.len(), rows * p.k, "weight panel is not whole rows");
    assert_eq!(p.out_t.len(), rows * p.m, "output is not rows × m");
    assert!(
        p.xp.len() >= kernels::gemm::packed_len(p.m, p.k),
        "packed x too short"
    );
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `verified` returned Avx512, so avx512f/bw/vl and fma were detected. The
        // asserts above establish the bounds `x86::panel` relies on: `w` holds `rows × k`
        // elements of `size_of::<W>()` bytes, `out_t` holds `rows × m` floats, and `xp` holds
        // the whole packed layout of `m × k`.
        unsafe {
            x86::panel::<BF16>(
                p.xp.as_ptr(),
                p.m,
                p.k,
                p.w.as_ptr().cast::<u8>(),
                rows,
                p.out_t.as_mut_ptr(),
            );
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX-512 GEMM micro-kernels. Weights are read in their stored format and widened in
/// registers: a 64-byte load of 32 bf16 holds, per 32-bit lane, an even element in the low
/// half and an odd one in the high half, so `lane << 16` and `lane & 0xffff0000` are exact
/// f32 values of the even and odd elements. Activations are packed to match (even/odd split for
/// bf16, plain for f32), and each (weight row, activation row) pair accumulates in one zmm.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod x86 {
    use std::arch::x86_64::*;

    use super::kernels::gemm::{CHUNK, TILE_M};

    /// How many weight rows ahead of the current ones to prefetch (two 4-row groups).
    const PREFETCH_ROWS: usize = 8;

    /// Loads the weights `[at, at + min(n, 32))` of one row as (even, odd) or (first 16, next
    /// 16) f32 vectors, zero beyond `n`.
    ///
    /// # Safety
    /// `p` points at element `at` of a row with at least `min(n, 32)` readable elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn load_w<const BF16: bool>(p: *const u8, n: usize) -> (__m512, __m512) {
        if BF16 {
            // SAFETY: the caller guarantees `min(n, 32)` readable u16 at `p`; masked lanes are
            // not accessed (AVX-512 masked loads suppress faults).
            let v = unsafe {
                if n >= CHUNK {
                    _mm512_loadu_si512(p.cast())
                } else {
                    _mm512_maskz_loadu_epi16((1u32 << n) - 1, p.cast())
                }
            };
            let hi = _mm512_set1_epi32(0xffff_0000_u32 as i32);
            (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
                _mm512_castsi512_ps(_mm512_and_si512(v, hi)),
            )
        } else {
            let p = p.cast::<f32>();
            // SAFETY: as above, for f32 elements; masked lanes are not accessed.
            unsafe {
                if n >= CHUNK {
                    (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
                } else {
                    let lo = (1u32 << n.min(16)) - 1;
                    let hi = (1u32 << n.saturating_sub(16)) - 1;
                    (
                        _mm512_maskz_loadu_ps(lo as u16, p),
                        _mm512_maskz_loadu_ps(hi as u16, p.add(16)),
                    )
                }
            }
        }
    }

    /// Accumulates chunk `c` (`n` elements, at most `CHUNK`) of `R` weight rows against `MT`
    /// packed activation rows.
    ///
    /// # Safety
    /// As for [`tile`]; chunk `c` starts inside the rows and has `n` elements in them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn step<const BF16: bool, const R: usize, const MT: usize>(
        acc: &mut [[__m512; MT]; R],
        xp: *const f32,
        w: *const u8,
        ldw: usize,
        c: usize,
        n: usize,
    ) {
        let es = if BF16 { 2 } else { 4 };
        let mut we = [_mm512_setzero_ps(); R];
        let mut wo = [_mm512_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: row `r` has `c * CHUNK + n` elements or more, `ldw` bytes after row 0.
            (we[r], wo[r]) = unsafe { load_w::<BF16>(w.add(r * ldw + c * CHUNK * es), n) };
            // The same chunk `PREFETCH_ROWS` rows on, so it is in cache when its turn comes
            // (the hardware prefetcher does not follow a dozen short row streams well). The
            // address may lie past the panel: it is computed with wrapping arithmetic and a
            // prefetch never faults or reads anything architecturally.
            let ahead = w.wrapping_add((r + PREFETCH_ROWS) * ldw + c * CHUNK * es);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            if !BF16 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
            }
        }
        // SAFETY: chunk `c` of the packed tile is `MT × CHUNK` floats inside it.
        let xc = unsafe { xp.add(c * MT * CHUNK) };
        for i in 0..MT {
            // SAFETY: row `i` of the chunk is `CHUNK` floats at `i * CHUNK`.
            let (xe, xo) = unsafe {
                (
                    _mm512_loadu_ps(xc.add(i * CHUNK)),
                    _mm512_loadu_ps(xc.add(i * CHUNK + 16)),
                )
            };
            for r in 0..R {
                acc[r][i] = _mm512_fmadd_ps(we[r], xe, acc[r][i]);
                acc[r][i] = _mm512_fmadd_ps(wo[r], xo, acc[r][i]);
            }
        }
    }

    /// `out[r * ldo + i] = Σ_t w_r[t] · x_i[t]` for `R` weight rows and one packed tile of `MT`
    /// activation rows.
    ///
    /// # Safety
    /// `xp` points at a packed tile of `MT` rows (`k.div_ceil(CHUNK)` chunks of
    /// `MT × CHUNK` floats); `w` at `R` rows of `k` elements `ldw` bytes apart; `out` at `R`
    /// rows of `MT` writable floats `ldo` floats apart.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn tile<const BF16: bool, const R: usize, const MT: usize>(
        xp: *const f32,
        k: usize,
        w: *const u8,
        ldw: usize,
        out: *mut f32,
        ldo: usize,
    ) {
        let full = k / CHUNK;
        let mut acc = [[_mm512_setzero_ps(); MT]; R];
        for c in 0..full {
            // SAFETY: forwarded contract; chunk `c` is whole.
            unsafe { step::<BF16, R, MT>(&mut acc, xp, w, ldw, c, CHUNK) };
        }
        if full * CHUNK < k {
            // SAFETY: forwarded contract; the last chunk has `k - full * CHUNK` elements.
            unsafe { step::<BF16, R, MT>(&mut acc, xp, w, ldw, full, k - full * CHUNK) };
        }
        // SAFETY: forwarded contract (`R` output rows of `MT` floats, `ldo` apart).
        unsafe { store_acc(&acc, out, ldo) };
    }

    /// `out[r * ldo + i] = ` the lane sum of `acc[r][i]`.
    ///
    /// # Safety
    /// `out` points at `R` rows of `MT` writable floats, `ldo` floats apart.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn store_acc<const R: usize, const MT: usize>(
        acc: &[[__m512; MT]; R],
        out: *mut f32,
        ldo: usize,
    ) {
        for (r, row) in acc.iter().enumerate() {
            if MT == 8 {
                let sums = hsum8(std::array::from_fn(|i| row[i]));
                // SAFETY: the caller guarantees `R` output rows of `MT` = 8 floats, `ldo` apart.
                unsafe { _mm256_storeu_ps(out.add(r * ldo), sums) };
                continue;
            }
            for (i, a) in row.iter().enumerate() {
                // SAFETY: the caller guarantees `R` output rows of `MT` floats, `ldo` apart.
                unsafe { *out.add(r * ldo + i) = _mm512_reduce_add_ps(*a) };
            }
        }
    }

    /// Loads the AMX tile configuration of [`amx_block`] (palette 1, tiles 0–7 all 16 rows ×
    /// 64 bytes) on this thread.
    ///
    /// # Safety
    /// AMX-TILE is present and permitted for this process.
    pub unsafe fn amx_config() {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
        }
        // SAFETY: `cfg` is a valid 64-byte palette-1 configuration; the instruction only reads it.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
        }
    }

    /// Returns this thread's tile state to init (frees it for context switches).
    ///
    /// # Safety
    /// AMX-TILE is present and permitted for this process.
    pub unsafe fn amx_release() {
        // SAFETY: `tilerelease` touches no memory; the caller guarantees AMX is usable.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }

    /// How many 64-byte column steps ahead the AMX kernel prefetches its weight rows.
    const AMX_PREFETCH: usize = 4;

    /// Operands of one [`amx_block`] call.
    pub struct AmxBlock {
        /// Blocks of 16 weight rows (1–2) and of 16 activation rows (1–2).
        pub nb: usize,
        pub mb: usize,
        /// The first weight row; rows `ldw_bytes` apart.
        pub w: *const u16,
        pub ldw_bytes: usize,
        /// The first packed activation block (`pieces * kb` tiles of 1 KiB, piece-major).
        pub xb: *const u16,
        pub kb: usize,
        pub pieces: usize,
        /// The 32-column steps of this pass.
        pub steps: std::ops::Range<usize>,
    }

    /// One pass of the AMX kernel: C tiles `(bi, bj)` (16 × 16 f32, row = weight row, at
    /// `c + (bi * 2 + bj) * 256`) accumulate weight block `bi` × activation block `bj` over
    /// the pass's column steps, each step multiplying the weight tiles by the `pieces`
    /// activation tiles of that step; the first pass (`steps.start == 0`) starts from zero,
    /// later ones from the tiles in `c`. Stores all four tiles back.
    ///
    /// # Safety
    /// AMX-TILE/BF16 are present and permitted and [`amx_config`] ran on this thread since
    /// the last [`amx_release`]; `w` points at `nb` blocks of 16 rows, `ldw_bytes` apart, each
    /// row with `kb * 32` readable bf16; `xb` at `mb` consecutive packed blocks of
    /// `pieces * kb` tiles of 16 × 32 bf16; `steps.end <= kb`; `c` at 1024 floats, readable
    /// and writable.
    pub unsafe fn amx_block(b: AmxBlock, c: *mut f32) {
        use std::arch::asm;
        let AmxBlock {
            nb,
            mb,
            w,
            ldw_bytes,
            xb,
            kb,
            pieces,
            steps,
        } = b;
        let w1 = w.wrapping_byte_add(16 * ldw_bytes);
        let xstride = pieces * kb * 1024; // bytes between activation blocks
        let xb1 = xb.wrapping_byte_add(xstride);
        // SAFETY: the tiles are configured (contract); tile loads read 16 rows of 64 bytes
        // at `w(1) + t * 64` with stride `ldw_bytes` and at `xb(1) + (piece * kb + t) * 1024`
        // with stride 64, inside the buffers by the contract (only the blocks `nb`/`mb` name
        // are touched); C loads and stores move 1 KiB tiles within `c`. Tile registers are not
        // used by compiler-generated code, so they keep their values between the `asm!` blocks.
        unsafe {
            if steps.start == 0 {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            } else {
                asm!(
                    "tileloadd tmm0, [{c0} + {x}*1]",
                    "tileloadd tmm1, [{c1} + {x}*1]",
                    "tileloadd tmm2, [{c2} + {x}*1]",
                    "tileloadd tmm3, [{c3} + {x}*1]",
                    c0 = in(reg) c, c1 = in(reg) c.add(256), c2 = in(reg) c.add(512),
                    c3 = in(reg) c.add(768), x = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
            for t in steps {
                let (a0, a1) = (w.byte_add(t * 64), w1.wrapping_byte_add(t * 64));
                // The weight rows' chunk `AMX_PREFETCH` steps on (32 short row streams defeat
                // the hardware prefetcher); wrapping arithmetic, and a prefetch never faults.
                for r in 0..16 * nb {
                    let ahead = w.wrapping_byte_add(r * ldw_bytes + (t + AMX_PREFETCH) * 64);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                if nb == 2 {
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        "tileloadd tmm5, [{a1} + {s}*1]",
                        a0 = in(reg) a0, a1 = in(reg) a1, s = in(reg) ldw_bytes,
                        options(nostack, readonly)
                    );
                } else {
                    asm!(
                        "tileloadd tmm4, [{a0} + {s}*1]",
                        a0 = in(reg) a0, s = in(reg) ldw_bytes,
                        options(nostack, readonly)
                    );
                }
                for piece in 0..pieces {
                    let off = (piece * kb + t) * 1024;
                    let (b0, b1) = (xb.byte_add(off), xb1.wrapping_byte_add(off));
                    match (nb, mb) {
                        (2, 2) => asm!(
                            "tileloadd tmm6, [{b0} + {x}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            "tileloadd tmm7, [{b1} + {x}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            "tdpbf16ps tmm3, tmm5, tmm7",
                            b0 = in(reg) b0, b1 = in(reg) b1, x = in(reg) 64usize,
                            options(nostack, readonly)
                        ),
                        (2, _) => asm!(
                            "tileloadd tmm6, [{b0} + {x}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tdpbf16ps tmm2, tmm5, tmm6",
                            b0 = in(reg) b0, x = in(reg) 64usize,
                            options(nostack, readonly)
                        ),
                        (_, 2) => asm!(
                            "tileloadd tmm6, [{b0} + {x}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            "tileloadd tmm7, [{b1} + {x}*1]",
                            "tdpbf16ps tmm1, tmm4, tmm7",
                            b0 = in(reg) b0, b1 = in(reg) b1, x = in(reg) 64usize,
                            options(nostack, readonly)
                        ),
                        _ => asm!(
                            "tileloadd tmm6, [{b0} + {x}*1]",
                            "tdpbf16ps tmm0, tmm4, tmm6",
                            b0 = in(reg) b0, x = in(reg) 64usize,
                            options(nostack, readonly)
                        ),
                    }
                }
            }
            asm!(
                "tilestored [{c0} + {x}*1], tmm0",
                "tilestored [{c1} + {x}*1], tmm1",
                "tilestored [{c2} + {x}*1], tmm2",
                "tilestored [{c3} + {x}*1], tmm3",
                c0 = in(reg) c, c1 = in(reg) c.add(256), c2 = in(reg) c.add(512),
                c3 = in(reg) c.add(768), x = in(reg) 64usize,
                options(nostack)
            );
        }
    }

    /// `dst[j * 16 + i] = src[i * 16 + j]` for a 16 × 16 f32 tile: 32-bit then 64-bit
    /// unpacks give each 128-bit lane a 4 × 4 sub-block transposed, then two rounds of
    /// 128-bit lane shuffles put the sub-blocks in place.
    ///
    /// # Safety
    /// avx512f is present; `src` has 256 readable floats and `dst` 256 writable ones.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn transpose16(src: *const f32, dst: *mut f32) {
        // SAFETY: 16 loads and 16 stores of 16 floats, inside the 256 the contract grants.
        unsafe {
            let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * 16)));
            // t[2g], t[2g+1]: rows 2g, 2g+1 interleaved per lane (columns 4L, 4L+1 / 4L+2, 4L+3).
            let t: [__m512; 16] = std::array::from_fn(|i| {
                let (a, b) = (r[i & !1], r[i | 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // u[4g + c], lane L: column 4L + c of rows 4g..4g+4.
            let u: [__m512; 16] = std::array::from_fn(|i| {
                let (g, c) = (i / 4, i % 4);
                let a = _mm512_castps_pd(t[4 * g + c / 2]);
                let b = _mm512_castps_pd(t[4 * g + 2 + c / 2]);
                _mm512_castpd_ps(if c % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                })
            });
            for c in 0..4 {
                let (a, b, cc, d) = (u[c], u[4 + c], u[8 + c], u[12 + c]);
                let p0 = _mm512_shuffle_f32x4::<0x44>(a, b);
                let p1 = _mm512_shuffle_f32x4::<0xEE>(a, b);
                let p2 = _mm512_shuffle_f32x4::<0x44>(cc, d);
                let p3 = _mm512_shuffle_f32x4::<0xEE>(cc, d);
                let rows = [
                    _mm512_shuffle_f32x4::<0x88>(p0, p2),
                    _mm512_shuffle_f32x4::<0xDD>(p0, p2),
                    _mm512_shuffle_f32x4::<0x88>(p1, p3),
                    _mm512_shuffle_f32x4::<0xDD>(p1, p3),
                ];
                for (l, v) in rows.into_iter().enumerate() {
                    _mm512_storeu_ps(dst.add((4 * l + c) * 16), v);
                }
            }
        }
    }

    /// 32 bf16 (64 bytes) at `p`, zero past `n`, as a `vdpbf16ps` operand.
    ///
    /// # Safety
    /// `p` points at `min(n, 32)` readable u16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn load_bh(p: *const u16, n: usize) -> __m512bh {
        // SAFETY: the caller guarantees `min(n, 32)` readable u16 at `p`; masked lanes are not
        // accessed (AVX-512 masked loads suppress faults).
        let v = unsafe {
            if n >= CHUNK {
                _mm512_loadu_si512(p.cast())
            } else {
                _mm512_maskz_loadu_epi16((1u32 << n) - 1, p.cast())
            }
        };
        // SAFETY: `__m512i` and `__m512bh` are both 64-byte vectors of plain bits; every bit
        // pattern is a valid value of either.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// The dot-product kernel's step: chunk `c` (`n` elements, at most `CHUNK`) of `R` bf16
    /// weight rows against `MT` packed bf16 activation rows. Lane `l` of `acc[r][i]`
    /// accumulates the products of elements `2l` and `2l + 1` of every chunk, so one 64-byte
    /// load of each side feeds one `vdpbf16ps` (32 multiply-adds) per (row, row) pair.
    ///
    /// # Safety
    /// As for [`tile_dot`]; chunk `c` starts inside the rows and has `n` elements in them.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn step_dot<const R: usize, const MT: usize>(
        acc: &mut [[__m512; MT]; R],
        xp: *const u16,
        w: *const u16,
        k: usize,
        c: usize,
        n: usize,
    ) {
        // SAFETY: a zeroed vector is a valid (all +0.0) bf16 vector; see `load_bh`.
        let mut wv: [__m512bh; R] =
            unsafe { [std::mem::transmute::<__m512i, __m512bh>(_mm512_setzero_si512()); R] };
        for r in 0..R {
            // SAFETY: row `r` (`k` elements, `k` after row 0) has `c * CHUNK + n` or more.
            wv[r] = unsafe { load_bh(w.add(r * k + c * CHUNK), n) };
            // As in `step`: the same chunk `PREFETCH_ROWS` rows on; wrapping arithmetic, and
            // a prefetch never faults.
            let ahead = w.wrapping_add((r + PREFETCH_ROWS) * k + c * CHUNK);
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        }
        // SAFETY: chunk `c` of the packed tile is `MT × CHUNK` u16 inside it.
        let xc = unsafe { xp.add(c * MT * CHUNK) };
        for i in 0..MT {
            // SAFETY: row `i` of the chunk is `CHUNK` u16 at `i * CHUNK` (zero past `k`).
            let xv = unsafe { load_bh(xc.add(i * CHUNK), CHUNK) };
            for r in 0..R {
                acc[r][i] = _mm512_dpbf16_ps(acc[r][i], wv[r], xv);
            }
        }
    }

    /// [`tile`] for the dot-product kernel: `out[r * ldo + i] = Σ_t w_r[t] · bf16(x_i[t])`.
    ///
    /// # Safety
    /// `xp` points at a packed bf16 tile of `MT` rows (`k.div_ceil(CHUNK)` chunks of
    /// `MT × CHUNK` u16); `w` at `R` rows of `k` bf16, consecutive; `out` at `R` rows of `MT`
    /// writable floats `ldo` floats apart.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn tile_dot<const R: usize, const MT: usize>(
        xp: *const u16,
        k: usize,
        w: *const u16,
        out: *mut f32,
        ldo: usize,
    ) {
        let full = k / CHUNK;
        let mut acc = [[_mm512_setzero_ps(); MT]; R];
        for c in 0..full {
            // SAFETY: forwarded contract; chunk `c` is whole.
            unsafe { step_dot::<R, MT>(&mut acc, xp, w, k, c, CHUNK) };
        }
        if full * CHUNK < k {
            // SAFETY: forwarded contract; the last chunk has `k - full * CHUNK` elements.
            unsafe { step_dot::<R, MT>(&mut acc, xp, w, k, full, k - full * CHUNK) };
        }
        // SAFETY: forwarded contract.
        unsafe { store_acc(&acc, out, ldo) };
    }

    /// [`panel`] for the dot-product kernel (bf16 weights, bf16-packed activations), with the
    /// same tiling: one `vdpbf16ps` per (weight row, activation row) and chunk, where the
    /// widening kernel spends two FMAs and the widening itself.
    ///
    /// # Safety
    /// `xp` holds the packed bf16 layout of `m × k`, `w` `rows × k` bf16, `out_t` `rows × m`
    /// writable floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    pub unsafe fn panel_dot(
        xp: *const u16,
        m: usize,
        k: usize,
        w: *const u16,
        rows: usize,
        out_t: *mut f32,
    ) {
        let tile_len = k.div_ceil(CHUNK) * TILE_M * CHUNK;
        for t0 in (0..m).step_by(TILE_M) {
            let mt = (m - t0).min(TILE_M);
            let mut j = 0;
            while j < rows {
                let r = if rows - j >= 4 { 4 } else { 1 };
                // SAFETY: as in `panel`: the tile, weight rows `j .. j + r` and output rows
                // `j .. j + r` (columns `t0 .. t0 + mt`) lie inside the buffers.
                unsafe {
                    let x = xp.add(t0 / TILE_M * tile_len);
                    dispatch_dot(r, mt, x, k, w.add(j * k), out_t.add(j * m + t0), m);
                }
                j += r;
            }
        }
    }

    /// [`dispatch`] for the dot-product kernel. One weight vector per row (not two), so
    /// 4 × mt runs up to mt = 4 and 2 × mt halves above, as there.
    ///
    /// # Safety
    /// As for [`tile_dot`] with `R = r`, `MT = mt`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16,fma")]
    unsafe fn dispatch_dot(
        r: usize,
        mt: usize,
        x: *const u16,
        k: usize,
        w: *const u16,
        o: *mut f32,
        ldo: usize,
    ) {
        macro_rules! four {
            ($mt:literal) => {
                // SAFETY: forwarded contract.
                unsafe { tile_dot::<4, $mt>(x, k, w, o, ldo) }
            };
        }
        macro_rules! two_twos {
            ($mt:literal) => {
                // SAFETY: forwarded contract; the second half starts 2 rows further.
                unsafe {
                    tile_dot::<2, $mt>(x, k, w, o, ldo);
                    tile_dot::<2, $mt>(x, k, w.add(2 * k), o.add(2 * ldo), ldo);
                }
            };
        }
        macro_rules! one {
            ($mt:literal) => {
                // SAFETY: forwarded contract.
                unsafe { tile_dot::<1, $mt>(x, k, w, o, ldo) }
            };
        }
        match (r, mt) {
            (4, 1) => four!(1),
            (4, 2) => four!(2),
            (4, 3) => four!(3),
            (4, 4) => four!(4),
            (4, 5) => two_twos!(5),
            (4, 6) => two_twos!(6),
            (4, 7) => two_twos!(7),
            (4, 8) => two_twos!(8),
            (_, 1) => one!(1),
            (_, 2) => one!(2),
            (_, 3) => one!(3),
            (_, 4) => one!(4),
            (_, 5) => one!(5),
            (_, 6) => one!(6),
            (_, 7) => one!(7),
            _ => one!(8),
        }
    }

    /// The lane sums of 8 vectors, as one 8-float vector: a transposing shuffle tree (about 25
    /// instructions instead of 8 separate reductions' 64).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    fn hsum8(a: [__m512; 8]) -> __m256 {
        // [x.l0 + x.l2, x.l1 + x.l3, y.l0 + y.l2, y.l1 + y.l3] in 128-bit lanes.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn pair(x: __m512, y: __m512) -> __m512 {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
            )
        }
        // From two pairs' results: one 128-bit lane of 4 partial sums per input vector.
        #[inline]
        #[target_feature(enable = "avx512f")]
        fn quad(p: __m512, q: __m512) -> __m512 {
            _mm512_add_ps(
                _mm512_shuffle_f32x4::<0b10_00_10_00>(p, q),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(p, q),
            )
        }
        let t1 = quad(pair(a[0], a[1]), pair(a[2], a[3]));
        let t2 = quad(pair(a[4], a[5]), pair(a[6], a[7]));
        // Lane L: [t1.L (e0+e1), t1.L (e2+e3), t2.L (e0+e1), t2.L (e2+e3)].
        let w = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(t1, t2),
            _mm512_shuffle_ps::<0xDD>(t1, t2),
        );
        // Lane L: [sum a[L], sum a[4 + L], (repeated)].
        let y = _mm512_add_ps(
            _mm512_shuffle_ps::<0x88>(w, w),
            _mm512_shuffle_ps::<0xDD>(w, w),
        );
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        _mm512_castps512_ps256(_mm512_permutexvar_ps(idx, y))
    }

    /// All activation rows against `rows` weight rows: tile by tile of packed activations (the
    /// tile stays in L1), groups of 4 weight rows (1 at the end) streamed against it. The
    /// driver keeps panels small enough that the weights stay in L2 from one tile to the next.
    ///
    /// # Safety
    /// `xp` holds the packed layout of `m × k`, `w` `rows × k` weights (bf16 when
    /// `BF16`, else f32), `out_t` `rows × m` writable floats.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    pub unsafe fn panel<const BF16: bool>(
        xp: *const f32,
        m: usize,
        k: usize,
        w: *const u8,
        rows: usize,
        out_t: *mut f32,
    ) {
        let ldw = k * if BF16 { 2 } else { 4 };
        let tile_len = k.div_ceil(CHUNK) * TILE_M * CHUNK;
        for t0 in (0..m).step_by(TILE_M) {
            let mt = (m - t0).min(TILE_M);
            let mut j = 0;
            while j < rows {
                let r = if rows - j >= 4 { 4 } else { 1 };
                // SAFETY: tile `t0 / TILE_M` starts at `(t0 / TILE_M) * tile_len` inside `xp`
                // and holds `mt` packed rows; weight rows `j .. j + r` and output rows
                // `j .. j + r` (columns `t0 .. t0 + mt`) lie inside `w` and `out_t` by the
                // function's contract.
                unsafe {
                    let x = xp.add(t0 / TILE_M * tile_len);
                    let wj = w.add(j * ldw);
                    let o = out_t.add(j * m + t0);
                    dispatch::<BF16>(r, mt, x, k, wj, ldw, o, m);
                }
                j += r;
            }
        }
    }

    /// Picks the register tile for `r` (4 or 1) weight rows × `mt` (1..=8) activation rows:
    /// 4 × mt up to 4 rows, two 2 × mt halves above (at most 16 accumulators + 4–8 widened
    /// weight vectors live, within the 32 zmm registers).
    ///
    /// # Safety
    /// As for [`tile`] with `R = r`, `MT = mt`.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn dispatch<const BF16: bool>(
        r: usize,
        mt: usize,
        x: *const f32,
        k: usize,
        w: *const u8,
        ldw: usize,
        o: *mut f32,
        ldo: usize,
    ) {
        macro_rules! four {
            ($mt:literal) => {
                // SAFETY: forwarded contract.
                unsafe { tile::<BF16, 4, $mt>(x, k, w, ldw, o, ldo) }
            };
        }
        macro_rules! two_twos {
            ($mt:literal) => {
                // SAFETY: forwarded contract; the second half starts 2 rows further.
                unsafe {
                    tile::<BF16, 2, $mt>(x, k, w, ldw, o, ldo);
                    tile::<BF16, 2, $mt>(x, k, w.add(2 * ldw), ldw, o.add(2 * ldo), ldo);
                }
            };
        }
        macro_rules! one {
            ($mt:literal) => {
                // SAFETY: forwarded contract.
                unsafe { tile::<BF16, 1, $mt>(x, k, w, ldw, o, ldo) }
            };
        }
        match (r, mt) {
            (4, 1) => four!(1),
            (4, 2) => four!(2),
            (4, 3) => four!(3),
            (4, 4) => four!(4),
            (4, 5) => two_twos!(5),
            (4, 6) => two_twos!(6),
            (4, 7) => two_twos!(7),
            (4, 8) => two_twos!(8),
            (_, 1) => one!(1),
            (_, 2) => one!(2),
            (_, 3) => one!(3),
            (_, 4) => one!(4),
            (_, 5) => one!(5),
            (_, 6) => one!(6),
            (_, 7) => one!(7),
            _ => one!(8),
        }
    }
}
