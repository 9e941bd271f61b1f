//! The machine's limits, measured, for the engine benchmarks to state their figures against: the CPU (vendor,
//! family, model from /proc/cpuinfo), the f32 FMA peak on all threads, and the DRAM read bandwidth on all threads.
//! Prints one JSON line.
//!
//!   cd crate && cargo run --release --example machine
//!
//! FMA peak: on each thread, 12 independent chains of fused multiply-adds on the widest vectors the CPU has
//! (512-bit with AVX-512F, else 256-bit with AVX2+FMA), enough chains to cover the FMA latency on both ports.
//! Bandwidth: each thread sums its own 512 MB buffer (far beyond any cache) with wide loads; best of 5 passes.
//!
//!   cd crate && cargo run --release --example machine -- --gemm
//!
//! adds a second line: how much of the FMA peak an f32 matrix product can reach here. A register-blocked
//! microkernel (14 rows × 32 columns of sums with AVX-512, 6 × 16 with AVX2: the shapes BLIS-style kernels use)
//! over operands that stay in L1, so nothing but its own loads, broadcasts and FMAs costs time: the ceiling of any
//! f32 matrix product on this CPU. Then gemm's product (the one our f32 prefill runs) on the shapes of a
//! 512-token prefill chunk of the 1024×8 and 4,096-wide bench models, and the dot-product instructions' peaks
//! (AVX-512 BF16 and VNNI, counted as 2 operations a product) where the CPU has them.

use std::time::Instant;

use rayon::prelude::*;

fn main() {
    let threads = rayon::current_num_threads();
    let cpu = cpu_name();
    let fma = fma_peak_gflops(threads);
    let read = read_bandwidth_gbs(threads);
    println!(r#"{{"cpu": {cpu:?}, "threads": {threads}, "isa": {:?}, "fma_gflops": {fma:.1}, "read_gbs": {read:.1}}}"#, isa());
    if std::env::args().any(|a| a == "--gemm") {
        gemm_ceiling(threads, fma);
    }
}

/// Prints the microkernel's and gemm's GFLOP/s, each also as a share of the FMA peak `fma`.
fn gemm_ceiling(threads: usize, fma: f64) {
    let mut best = 0f64;
    for _ in 0..3 {
        let t = Instant::now();
        let flops: f64 = (0..threads).into_par_iter().map(|_| microkernel_flops()).sum();
        best = best.max(flops / t.elapsed().as_secs_f64() / 1e9);
    }
    let mut shapes = Vec::new();
    for (m, k, n) in [(512, 1024, 1280), (512, 1024, 6848), (512, 3424, 1024), (512, 4096, 4608), (512, 4096, 27392)] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0f32; m * n];
        let mut fastest = f64::MAX;
        for _ in 0..4 {
            let t = Instant::now();
            // SAFETY: a is [m, k], b [k, n], c [m, n], all row-major and as long as that.
            unsafe {
                gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, gemm::Parallelism::Rayon(threads));
            }
            fastest = fastest.min(t.elapsed().as_secs_f64());
        }
        let gflops = 2.0 * (m * k * n) as f64 / fastest / 1e9;
        shapes.push(format!(r#"{{"m": {m}, "k": {k}, "n": {n}, "gflops": {gflops:.1}, "of_peak": {:.3}}}"#, gflops / fma));
    }
    let (bf16, int8) = dot_peaks(threads);
    println!(
        r#"{{"microkernel_gflops": {best:.1}, "microkernel_of_peak": {:.3}, "gemm": [{}], "bf16_dot_gflops": {bf16:.1}, "int8_dot_gops": {int8:.1}}}"#,
        best / fma,
        shapes.join(", ")
    );
}

/// The AVX-512 BF16 (`vdpbf16ps`: 32 products a vector) and VNNI (`vpdpbusd`: 64) dot-product peaks on all
/// threads, as the FMA peak is measured (independent chains); 0 where the CPU lacks them.
fn dot_peaks(threads: usize) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        const ITERS: usize = 20_000_000;
        let peak = |ops_per_call: f64, run: fn(usize)| {
            let t = Instant::now();
            (0..threads).into_par_iter().for_each(|_| run(ITERS));
            threads as f64 * ops_per_call / t.elapsed().as_secs_f64() / 1e9
        };
        let bf16 = if is_x86_feature_detected!("avx512bf16") {
            // SAFETY: the CPU has AVX-512 BF16 (checked here).
            peak((ITERS * 12 * 32 * 2) as f64, |n| unsafe { x86::bf16_dots(n) })
        } else {
            0.0
        };
        let int8 = if is_x86_feature_detected!("avx512vnni") {
            // SAFETY: the CPU has AVX-512 VNNI (checked here).
            peak((ITERS * 12 * 64 * 2) as f64, |n| unsafe { x86::int8_dots(n) })
        } else {
            0.0
        };
        (bf16, int8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (0.0, 0.0)
}

/// Runs the microkernel on this thread for a while; returns the FLOPs done.
fn microkernel_flops() -> f64 {
    const KC: usize = 256;
    const CALLS: usize = 40_000;
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            let (a, b, mut c) = (vec![0.5f32; 14 * KC], vec![0.25f32; 32 * KC], vec![0f32; 14 * 32]);
            for _ in 0..CALLS {
                // SAFETY: AVX-512F is present; the buffers hold KC steps of 14 and 32 values and a 14 × 32 tile.
                unsafe { x86::tile512(KC, &a, &b, &mut c) };
            }
            std::hint::black_box(&c);
            return (CALLS * KC * 14 * 32 * 2) as f64;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            let (a, b, mut c) = (vec![0.5f32; 6 * KC], vec![0.25f32; 16 * KC], vec![0f32; 6 * 16]);
            for _ in 0..CALLS * 4 {
                // SAFETY: AVX2 and FMA are present; the buffers hold KC steps of 6 and 16 values and a 6 × 16 tile.
                unsafe { x86::tile256(KC, &a, &b, &mut c) };
            }
            std::hint::black_box(&c);
            return (CALLS * 4 * KC * 6 * 16 * 2) as f64;
        }
    }
    0.0
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

    /// `c` (14 × 32) += `a` (`kc` steps of 14 values) times `b` (`kc` steps of 32), sums in 28 registers.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile512(kc: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let mut acc = [[_mm512_setzero_ps(); 2]; 14];
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = [_mm512_loadu_ps(c.as_ptr().add(32 * r)), _mm512_loadu_ps(c.as_ptr().add(32 * r + 16))];
        }
        for i in 0..kc {
            let (b0, b1) = (_mm512_loadu_ps(b.as_ptr().add(32 * i)), _mm512_loadu_ps(b.as_ptr().add(32 * i + 16)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.get_unchecked(14 * i + r));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(c.as_mut_ptr().add(32 * r), acc[0]);
            _mm512_storeu_ps(c.as_mut_ptr().add(32 * r + 16), acc[1]);
        }
    }

    /// `c` (6 × 16) += `a` (`kc` steps of 6 values) times `b` (`kc` steps of 16), sums in 12 registers.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile256(kc: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        let mut acc = [[_mm256_setzero_ps(); 2]; 6];
        for (r, acc) in acc.iter_mut().enumerate() {
            *acc = [_mm256_loadu_ps(c.as_ptr().add(16 * r)), _mm256_loadu_ps(c.as_ptr().add(16 * r + 8))];
        }
        for i in 0..kc {
            let (b0, b1) = (_mm256_loadu_ps(b.as_ptr().add(16 * i)), _mm256_loadu_ps(b.as_ptr().add(16 * i + 8)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_ps(*a.get_unchecked(6 * i + r));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(c.as_mut_ptr().add(16 * r), acc[0]);
            _mm256_storeu_ps(c.as_mut_ptr().add(16 * r + 8), acc[1]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn bf16_dots(iters: usize) {
        let b: __m512bh = std::mem::transmute(_mm512_set1_epi32(0x3f80_3f80));
        let mut a = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for x in &mut a {
                *x = _mm512_dpbf16_ps(*x, b, b);
            }
        }
        std::hint::black_box(a);
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn int8_dots(iters: usize) {
        let b = _mm512_set1_epi8(1);
        let mut a = [_mm512_setzero_si512(); 12];
        for _ in 0..iters {
            for x in &mut a {
                *x = _mm512_dpbusd_epi32(*x, b, b);
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
