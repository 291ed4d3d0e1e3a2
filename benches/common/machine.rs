//! The machine's ceilings, measured where the benchmark runs: DRAM read bandwidth (what
//! bounds batch-1 decode: every weight byte is read once per token) and the matmul kernel's
//! arithmetic rate with every thread busy (what bounds prefill and large batches). Shared by
//! `benches/decode.rs` and the load generator's `--limits` mode.

use std::sync::Arc;
use std::time::Instant;

use mindie::backend::cpu::hugepages;
use mindie::backend::cpu::linear::{matmul_with, Dot};
use mindie::backend::cpu::weights::{Buf, Matrix, WeightData};
use mindie::backend::cpu::SimdLevel;
use rayon::prelude::*;

/// Best-of-N read bandwidth over a buffer far larger than the caches, in GB/s: a wrapping sum
/// of u64 lanes (one add per 8 bytes, so arithmetic is not the limit), each task reading
/// `STREAMS` far-apart sub-ranges in lockstep so enough cache misses are in flight (one plain
/// stream per core is latency-bound on this VM and understates what the memory delivers).
/// `STREAMS × LANES` accumulators fit the baseline's 16 SSE registers (more spill, and the
/// probe then measures its own stores instead of memory).
pub fn read_bandwidth(pool: &rayon::ThreadPool) -> f64 {
    const STREAMS: usize = 8;
    const LANES: usize = 2;
    let n = 1usize << 27; // 1 GiB of u64
                          // On huge pages where the system gives them, as the daemon's weights are: a probe on
                          // small pages reads slower (TLB misses), and would set the ceiling too low.
    let mut data: Vec<u64> = hugepages::zeroed_vec(n).expect("1 GiB for the bandwidth probe");
    for (i, d) in data.iter_mut().enumerate() {
        *d = i as u64;
    }
    let mut best = 0f64;
    for _ in 0..8 {
        let t = Instant::now();
        let sum: u64 = pool.install(|| {
            data.par_chunks(1 << 20)
                .map(|c| {
                    let len = c.len() / STREAMS / LANES * LANES;
                    let parts: Vec<&[u64]> =
                        (0..STREAMS).map(|s| &c[s * len..(s + 1) * len]).collect();
                    let mut acc = [[0u64; LANES]; STREAMS];
                    for i in (0..len).step_by(LANES) {
                        for (a, p) in acc.iter_mut().zip(&parts) {
                            for l in 0..LANES {
                                a[l] = a[l].wrapping_add(p[i + l]);
                            }
                        }
                    }
                    acc.iter().flatten().fold(0u64, |a, &v| a.wrapping_add(v))
                })
                .reduce(|| 0, u64::wrapping_add)
        });
        std::hint::black_box(sum);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// The matmul kernel's rate in GFLOP/s with `threads` threads each multiplying 16 rows by its
/// own L2-resident 512 × 896 weight (bf16 when `bf16`, else f32), at `level` with or without
/// the bf16 dot-product path: the arithmetic ceiling, memory out of the way.
pub fn kernel_peak_gflops(threads: usize, level: SimdLevel, bf16: bool, dot: bool) -> f64 {
    let (n, k, m) = (512usize, 896usize, 16usize);
    let x: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 16.0).collect();
    let weight = |seed: usize| {
        let vals = (0..n * k).map(move |i| (((i * 31 + seed * 7) % 97) as f32 - 48.0) / 1000.0);
        let data = if bf16 {
            WeightData::Bf16(Buf::Owned(Arc::new(
                vals.map(|v| (v.to_bits() >> 16) as u16).collect(),
            )))
        } else {
            WeightData::F32(Buf::Owned(Arc::new(vals.collect())))
        };
        Matrix {
            rows: n,
            cols: k,
            data,
        }
    };
    let iters = 300;
    let run = |seed: usize| {
        let w = weight(seed);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let mut out = vec![0f32; m * n];
        one.install(|| {
            // One untimed pass brings the weight into cache.
            matmul_with(level, Dot::fast(dot), &x, m, &w, &mut out);
        });
        let t = Instant::now();
        one.install(|| {
            for _ in 0..iters {
                matmul_with(level, Dot::fast(dot), &x, m, &w, &mut out);
            }
        });
        std::hint::black_box(&out);
        t.elapsed().as_secs_f64()
    };
    let secs: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|i| s.spawn(move || run(i)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("peak thread"))
            .collect()
    });
    let slowest = secs.iter().copied().fold(0f64, f64::max);
    (2 * m * n * k * iters * threads.max(1)) as f64 / slowest / 1e9
}
