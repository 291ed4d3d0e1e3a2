//! The broadcast form of the AVX-512 BF16 kernel (`vdpbf16ps`), for matmuls of many rows on
//! CPUs without AMX: weights in tile order (`weights::Bf16Tiles`: 16-row blocks of 32-column
//! steps) times activations packed as one bf16 term in the AMX layout (`gemm::pack_amx`, one
//! 64-byte row of a step = one column pair of 16 activation rows). Each weight column pair is
//! broadcast from memory into the instruction, so one `vdpbf16ps` adds 32 products into the 16
//! activation rows' sums for one weight row: the sums come out as whole vectors (no lane sums,
//! as the dot-product form in `dot` needs), and one activation load serves a group of weight
//! rows. The exact variant ([`tile_fma`]) has f32 activations (`gemm::pack_pairs`, a column
//! pair as two vectors of 16 rows) and widens each broadcast weight pair in registers for two
//! FMAs per activation block. Entered only through `super::gemm_panel_tiles_bcast` and
//! `super::gemm_panel_tiles_bcast_exact`.
#![allow(unsafe_code)]
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use crate::backend::cpu::kernels::amx::transpose16;
use crate::backend::cpu::kernels::column_panel::ColumnPanel;
use crate::backend::cpu::kernels::gemm::PAIRS_STEP;
use crate::backend::cpu::kernels::{TILES_PREFETCH_L1, TILES_PREFETCH_L2};

/// u16 of one step in both layouts: 16 rows × 32 columns (weights), 16 column pairs × 16
/// rows × 2 (activations).
const STEP: usize = 512;

/// Steps of the columns per pass where the activations are more than one 16-row block: every
/// weight block of the panel goes past one pass of the activation blocks' columns (at most
/// 3 × 28 KiB, from L2) before the next, the partial sums kept in between. Rows
/// of up to 896 columns (Qwen2-0.5B's hidden size) go in one pass. Chosen on the decode
/// bench's matmul loop on a Zen 4 (2,048 rows, `MINDIE_CPU_BF16_DOT=1 BENCH_GEMM_TILED=1
/// BENCH_GEMM_M=2048 BENCH_GEMM_NK=896,4864`): 8 steps 323 GFLOP/s, 16: 354, 28: 364, 56: 341.
const PASS_STEPS: usize = 28;

/// [`PASS_STEPS`] for f32 activations (2 KiB a step and block, so 32 KiB a pass of two
/// blocks): 4, 8 and 16 steps gave the same 185–192 GFLOP/s (9728 × 896) and 167–184
/// (896 × 4864) at 2,048 rows on the Zen 4.
const PASS_STEPS_F32: usize = 8;

/// `acc[r][b] += Σ` over `steps` steps of weight row `r` (from `w`, rows 32 u16 apart within a
/// step) times activation block `b` (from `x`, blocks `ldx` u16 apart): lane `l` of `acc[r][b]`
/// is the sum for the block's row `l`.
///
/// # Safety
/// `w` points at row 0 of `R` consecutive rows of a step of a tile-order block with `steps`
/// steps of [`STEP`] u16 from there inside the block; `x` at a step of an activation block
/// with `steps` steps after it, and `B - 1` more blocks `ldx` u16 apart, each as long.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
unsafe fn tile<const R: usize, const B: usize>(
    acc: &mut [[__m512; B]; R],
    x: *const u16,
    ldx: usize,
    w: *const u16,
    steps: usize,
    lead: bool,
) {
    for c in 0..steps {
        // SAFETY: step `c` lies inside the block and the activations (contract).
        let (wc, xc) = unsafe { (w.add(c * STEP), x.add(c * STEP)) };
        prefetch::<R>(wc, lead);
        for q in 0..16 {
            let mut xv = [_mm512_setzero_si512(); B];
            for b in 0..B {
                // SAFETY: row `q` of the step of block `b`: 32 u16 inside it (contract).
                xv[b] = unsafe { _mm512_loadu_si512(xc.add(b * ldx + q * 32).cast()) };
            }
            for r in 0..R {
                // SAFETY: columns `2q`, `2q + 1` of row `r` of the step (contract); an
                // unaligned 4-byte read.
                let pair = unsafe { wc.add(r * 32 + 2 * q).cast::<i32>().read_unaligned() };
                let wv = bh(_mm512_set1_epi32(pair));
                for b in 0..B {
                    // (The broadcast as the second source, which may be a memory operand: with
                    // one block the compiler folds it into the instruction.)
                    acc[r][b] = _mm512_dpbf16_ps(acc[r][b], bh(xv[b]), wv);
                }
            }
        }
    }
}

/// [`tile`] for f32 activations packed by `gemm::pack_pairs` (a step's column pair `q` as
/// two vectors of 16 rows, columns `2q` and `2q + 1`; blocks `ldx` floats apart): each weight
/// pair is broadcast once and widened in registers (`<< 16` for the even column, the high half
/// for the odd one), then two FMAs per activation block. Exact: every product and sum in f32.
///
/// # Safety
/// As for [`tile`], with `x` at a step of an f32 block of `gemm::PAIRS_STEP` floats a step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
unsafe fn tile_fma<const R: usize, const B: usize>(
    acc: &mut [[__m512; B]; R],
    x: *const f32,
    ldx: usize,
    w: *const u16,
    steps: usize,
    lead: bool,
) {
    let hi = _mm512_set1_epi32(0xffff_0000_u32 as i32);
    for c in 0..steps {
        // SAFETY: step `c` lies inside the block and the activations (contract).
        let (wc, xc) = unsafe { (w.add(c * STEP), x.add(c * PAIRS_STEP)) };
        prefetch::<R>(wc, lead);
        for q in 0..16 {
            let mut xe = [_mm512_setzero_ps(); B];
            let mut xo = [_mm512_setzero_ps(); B];
            for b in 0..B {
                // SAFETY: pair `q` of the step of block `b`: 32 floats inside it (contract).
                unsafe {
                    xe[b] = _mm512_loadu_ps(xc.add(b * ldx + q * 32));
                    xo[b] = _mm512_loadu_ps(xc.add(b * ldx + q * 32 + 16));
                }
            }
            for r in 0..R {
                // SAFETY: as in `tile`.
                let pair = unsafe { wc.add(r * 32 + 2 * q).cast::<i32>().read_unaligned() };
                let v = _mm512_set1_epi32(pair);
                let we = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                let wo = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
                for b in 0..B {
                    acc[r][b] = _mm512_fmadd_ps(we, xe[b], acc[r][b]);
                    acc[r][b] = _mm512_fmadd_ps(wo, xo[b], acc[r][b]);
                }
            }
        }
    }
}

/// The prefetches of a register tile over `R` rows of a weight step at `wc`: the rows
/// `TILES_PREFETCH_L1` steps on into L1 and, for a block's first tile (`lead`), the whole step
/// `TILES_PREFETCH_L2` on into L2. Wrapping arithmetic: past the block these are other
/// weights or nothing, and a prefetch never faults.
#[inline(always)]
fn prefetch<const R: usize>(wc: *const u16, lead: bool) {
    let l1 = wc.wrapping_add(TILES_PREFETCH_L1 * STEP);
    for r in 0..R {
        // SAFETY: prefetching is not a memory access (see above).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(l1.wrapping_add(r * 32).cast()) };
    }
    if lead {
        let l2 = wc.wrapping_add(TILES_PREFETCH_L2 * STEP);
        for l in 0..16 {
            // SAFETY: as above.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(l2.wrapping_add(l * 32).cast()) };
        }
    }
}

/// The bits of `v` as a `vdpbf16ps` operand.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: `__m512i` and `__m512bh` are both 64-byte vectors of plain bits; every bit
    // pattern is a valid value of either.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// The packed activations of one panel: one bf16 term per value (`gemm::pack_amx`, for
/// `vdpbf16ps`) or f32 (`gemm::pack_pairs`, for the exact FMA kernel).
#[derive(Clone, Copy)]
pub(super) enum Acts {
    Bf16(*const u16),
    F32(*const f32),
}

/// One panel: `blocks` whole tile-order weight blocks at `w` (`kb` steps each) against every
/// activation row (`m`, packed at `xp`, `kb` steps a block), the results into `out` (`m` rows,
/// the panel's columns; padding rows of the last weight block dropped).
///
/// Order: register tiles of 8 weight rows × up to 3 activation blocks with bf16 activations,
/// 2 with f32 ones (16 weight rows × 1 block for a single block); with several blocks their
/// columns go in passes of [`PASS_STEPS`] ([`PASS_STEPS_F32`]) steps, every weight block of the
/// panel through one pass before the next, the partial sums kept in `part`.
///
/// # Safety
/// `xp` holds `m.div_ceil(16)` activation blocks of `kb` steps; `w` holds `blocks` weight
/// blocks of `kb` steps; `out.width() <= blocks * 16` and `out.rows() == m`. The CPU has
/// avx512f/bw/vl and fma, and avx512bf16 for bf16 activations.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
pub(super) unsafe fn panel(
    xp: Acts,
    m: usize,
    kb: usize,
    w: *const u16,
    blocks: usize,
    out: &mut ColumnPanel<'_>,
) {
    let mbs = m.div_ceil(16);
    let (max_blocks, x_block) = match xp {
        Acts::Bf16(_) => (3, kb * STEP),
        Acts::F32(_) => (2, kb * PAIRS_STEP),
    };
    let mut part = PART.with(|s| s.take());
    part.resize(blocks * max_blocks * 256, 0.0);
    let mut mb = 0;
    while mb < mbs {
        let nb = (mbs - mb).min(max_blocks);
        let sweep = Sweep {
            kb,
            w,
            blocks,
            part: part.as_mut_ptr(),
        };
        let at = mb * x_block;
        // SAFETY: `nb` blocks from `mb` exist (their first element at `at`); `part` holds
        // `blocks × nb × 256` floats; the CPU features as the contract says.
        unsafe {
            match (xp, nb) {
                (Acts::Bf16(x), 1) => sweep.run_dot::<16, 1>(x.add(at)),
                (Acts::Bf16(x), 2) => sweep.run_dot::<8, 2>(x.add(at)),
                (Acts::Bf16(x), _) => sweep.run_dot::<8, 3>(x.add(at)),
                (Acts::F32(x), 1) => sweep.run_fma::<16, 1>(x.add(at)),
                (Acts::F32(x), _) => sweep.run_fma::<8, 2>(x.add(at)),
            }
        }
        // Block `b`'s tile of weight block `j`: rows `r` × lanes `l` at `(j * nb + b) * 256`.
        for j in 0..blocks {
            let cols = out.width().saturating_sub(j * 16).min(16);
            for b in 0..nb {
                let tile: &[f32; 256] = part[(j * nb + b) * 256..][..256]
                    .try_into()
                    .expect("256 floats");
                let mut t = [[0f32; 16]; 16];
                transpose16(tile, &mut t);
                let r0 = (mb + b) * 16;
                for (l, row) in t.iter().enumerate().take(m.saturating_sub(r0)) {
                    out.row_mut(r0 + l)[j * 16..j * 16 + cols].copy_from_slice(&row[..cols]);
                }
            }
        }
        mb += nb;
    }
    PART.with(|s| s.replace(part));
}

/// One sweep of [`panel`]: a group of activation blocks against the panel's weight blocks,
/// partial sums in `part`.
struct Sweep {
    kb: usize,
    w: *const u16,
    blocks: usize,
    part: *mut f32,
}

impl Sweep {
    /// [`Sweep::run`] with `vdpbf16ps` ([`tile`]) over the bf16 activation blocks from `x`.
    ///
    /// # Safety
    /// As for [`Sweep::run`]; the CPU has avx512bf16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn run_dot<const R: usize, const B: usize>(&self, x: *const u16) {
        let ldx = self.kb * STEP;
        let pass = if B == 1 { self.kb } else { PASS_STEPS };
        // SAFETY: forwarded contract: `tile`'s operands are the steps and rows `run` names.
        unsafe {
            self.run::<R, B>(pass, |acc, c0, steps, wj, lead| {
                tile::<R, B>(acc, x.add(c0 * STEP), ldx, wj, steps, lead)
            })
        }
    }

    /// [`Sweep::run`] with f32 FMAs ([`tile_fma`]) over the f32 activation blocks from `x`.
    ///
    /// # Safety
    /// As for [`Sweep::run`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,fma")]
    unsafe fn run_fma<const R: usize, const B: usize>(&self, x: *const f32) {
        let ldx = self.kb * PAIRS_STEP;
        let pass = if B == 1 { self.kb } else { PASS_STEPS_F32 };
        // SAFETY: forwarded contract, as in `run_dot`.
        unsafe {
            self.run::<R, B>(pass, |acc, c0, steps, wj, lead| {
                tile_fma::<R, B>(acc, x.add(c0 * PAIRS_STEP), ldx, wj, steps, lead)
            })
        }
    }

    /// Register tiles of `R` weight rows × `B` activation blocks over the panel, the columns
    /// in passes of `pass` steps, each tile run by `tile(acc, c0, steps, w, lead)` (steps
    /// `c0 .. c0 + steps` of the blocks, weight rows from `w`, a weight block's first tile
    /// `lead`); the sums of weight block `j`, activation block `b` land as rows × lanes at
    /// `(j * B + b) * 256`.
    ///
    /// # Safety
    /// `B` activation blocks of `kb` steps at the activations `tile` reads; `blocks` weight
    /// blocks of `kb` steps from `w`; `part` holds `blocks × B × 256` floats. `R` divides 16.
    /// `tile` reads only the steps and rows it is given.
    #[inline(always)]
    unsafe fn run<const R: usize, const B: usize>(
        &self,
        pass: usize,
        tile: impl Fn(&mut [[__m512; B]; R], usize, usize, *const u16, bool),
    ) {
        let Sweep {
            kb,
            w,
            blocks,
            part,
        } = *self;
        for c0 in (0..kb).step_by(pass) {
            let steps = pass.min(kb - c0);
            for j in 0..blocks {
                for h in (0..16).step_by(R) {
                    // SAFETY: the sums of rows `h ..  h + R` of weight block `j` sit at
                    // `(j * B + b) * 256 + r * 16` inside `part` (contract).
                    let at =
                        |r: usize, b: usize| unsafe { part.add((j * B + b) * 256 + (h + r) * 16) };
                    let mut acc = [[_mm512_setzero_ps(); B]; R];
                    if c0 > 0 {
                        for r in 0..R {
                            for b in 0..B {
                                // SAFETY: see `at`.
                                acc[r][b] = unsafe { _mm512_loadu_ps(at(r, b)) };
                            }
                        }
                    }
                    // Rows `h ..` of step `c0` of weight block `j`, `steps` steps on inside it
                    // (contract).
                    let wj = w.wrapping_add(j * kb * STEP + c0 * STEP + h * 32);
                    tile(&mut acc, c0, steps, wj, h == 0);
                    for r in 0..R {
                        for b in 0..B {
                            // SAFETY: see `at`.
                            unsafe { _mm512_storeu_ps(at(r, b), acc[r][b]) };
                        }
                    }
                }
            }
        }
    }
}

thread_local! {
    /// [`panel`]'s partial sums, reused across calls on this thread.
    static PART: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}
