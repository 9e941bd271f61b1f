//! The machine's limits, measured, for the engine benchmarks to state their figures against: the CPU (vendor,
//! family, model from /proc/cpuinfo), the f32 FMA peak on all threads, and the DRAM read bandwidth on all threads.
//! Prints one JSON line.
//!
//!   cd crate && cargo run --release --example machine
//!
//! FMA peak: on each thread, 12 independent chains of fused multiply-adds on the widest vectors the CPU has
//! (512-bit with AVX-512F, else 256-bit with AVX2+FMA), enough chains to cover the FMA latency on both ports.
//! Bandwidth: each thread sums its own 512 MB buffer (far beyond any cache) with wide loads; best of 5 passes.

use std::time::Instant;

use rayon::prelude::*;

fn main() {
    let threads = rayon::current_num_threads();
    let cpu = cpu_name();
    let fma = fma_peak_gflops(threads);
    let read = read_bandwidth_gbs(threads);
    println!(r#"{{"cpu": {cpu:?}, "threads": {threads}, "isa": {:?}, "fma_gflops": {fma:.1}, "read_gbs": {read:.1}}}"#, isa());
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| info.lines().find(|l| l.starts_with(k)).and_then(|l| l.split(':').nth(1)).map(|v| v.trim().to_string()).unwrap_or_default();
    format!("{} (family {}, model {})", field("model name"), field("cpu family"), field("model\t"))
}

fn isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2+fma";
        }
    }
    "scalar"
}

/// Best of 3 runs, all threads at once.
fn fma_peak_gflops(threads: usize) -> f64 {
    const ITERS: usize = 50_000_000;
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let flops: f64 = (0..threads).into_par_iter().map(|_| fma_chains(ITERS)).sum();
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Runs the chains; returns the FLOPs done (2 per lane per FMA).
fn fma_chains(iters: usize) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { x86::fma512(iters) };
            return (iters * 12 * 16 * 2) as f64;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { x86::fma256(iters) };
            return (iters * 12 * 8 * 2) as f64;
        }
    }
    let mut a = [1f32; 12];
    for _ in 0..iters {
        for x in &mut a {
            *x = x.mul_add(1.000_000_1, 1e-7);
        }
    }
    std::hint::black_box(a);
    (iters * 12 * 2) as f64
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize) {
        let (b, c) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(1e-7));
        let mut a = [_mm256_set1_ps(1.0); 12];
        for _ in 0..iters {
            for x in &mut a {
                *x = _mm256_fmadd_ps(*x, b, c);
            }
        }
        std::hint::black_box(a);
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: usize) {
        let (b, c) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-7));
        let mut a = [_mm512_set1_ps(1.0); 12];
        for _ in 0..iters {
            for x in &mut a {
                *x = _mm512_fmadd_ps(*x, b, c);
            }
        }
        std::hint::black_box(a);
    }
}

/// GB/s read by all threads together, each summing its own buffer; best of 5 passes.
fn read_bandwidth_gbs(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    let buffers: Vec<Vec<f32>> = (0..threads).into_par_iter().map(|_| vec![1f32; BYTES / 4]).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let total: f32 = buffers.par_iter().map(|b| sum(b)).sum();
        std::hint::black_box(total);
        best = best.max((threads * BYTES) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Sum with 16 independent lanes (vectorized loads, no serial dependency).
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for c in v.chunks_exact(16) {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum()
}
