//! Quantized products candle's kernels do slowly on CPUs without AVX-512, measured by `bench/quant_kernels.rs`
//! (on a 2-core Zen 3 whose DRAM delivers 28 GB/s, candle's one-row q8_0 and q4k products stream 11-14 GB/s, and
//! its many-row q8_0 product is 5× slower than f32):
//! - One activation row times a q8_0, q5_0 or q4k weight (decode steps): the weight's ggml blocks are streamed
//!   once, in memory order, on all threads. The row is quantized once per call as ggml does (q8_0 and q5_0:
//!   32-value blocks; q4k: 256-value blocks with per-32 sums), then integer dot products over each block
//!   (`maddubs`) are scaled and summed in f32. candle has no SIMD q5_0 kernel (its scalar one streams a third as
//!   fast), and q5_0 is what a q4k model's weights of rows that are not a multiple of 256 get.
//! - A few activation rows (a batched decode step): the same, each weight row dotted with every row while in
//!   cache; a row's result does not depend on the others.
//! - Many rows times a q8_0, q5_0 or q4k weight (prefill chunks): where AVX-512 VNNI runs, in 8-bit integers
//!   ([`int8_gemm`](crate::model::int8_gemm)); elsewhere gemm on f32 values, dequantized a cache-sized panel of
//!   weight rows at a time (q4k only where AVX-512 runs).
//!
//! Only the AVX2 + FMA + F16C paths are ours; other CPUs use candle's kernels. Where AVX-512 BW and VNNI run,
//! q4k has a 512-bit kernel. candle 0.11's own VNNI kernels are as fast there, but they repack each weight into
//! a second, larger copy (6 bits a weight, plus an 8-bit one for AMX prefill) kept beside the 4.5-bit blocks;
//! ours read the blocks as stored.

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

/// Bytes of one ggml block, and values it holds.
pub(super) const Q8_0_BYTES: usize = 34;
pub(super) const Q5_0_BYTES: usize = 22;
pub(super) const Q4K_BYTES: usize = 144;
pub(super) const QK8_0: usize = 32;
pub(super) const QK_K: usize = 256;

/// `x · Wᵀ` `[m, n]` for rows `x` (`m · k` values) and a weight of `n` rows of `k` values stored as `dtype`
/// blocks: what [`few_rows`] (decode steps) and [`many_rows`] (prefill chunks) compute.
pub type Product = fn(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32>;

/// Whether [`one_row`] runs `dtype` on this CPU.
pub fn supports(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4K) && has_avx2()
}

/// AVX2 + FMA (the check the other kernels share) and F16C, for the blocks' f16 scales.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    crate::model::vectorized::avx2() && is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

/// `x · Wᵀ` for one row `x` (`k` values) and a weight of `n` rows of `k` values stored as `dtype` blocks in
/// `blocks`. Call only where [`supports`] says so.
pub fn one_row(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    assert!(x.len() == k, "one_row: a row of {} values for a weight of {k} columns", x.len());
    few_rows(dtype, blocks, n, k, x)
}

/// `x · Wᵀ` for `m` rows `x` (`m · k` values; a batched decode step), `[m, n]`: each weight row is streamed
/// once and dotted with every row while in cache. A row's result is the same bits for any `m`.
pub fn few_rows(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    assert!(supports(dtype) && k > 0 && !x.is_empty() && x.len() % k == 0, "few_rows: unsupported call");
    let m = x.len() / k;
    // [n, m] while computing, so each task writes whole weight rows' outputs.
    let mut yt = vec![0f32; n * m];
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(threads * 8).max(1);
    match dtype {
        GgmlDType::Q8_0 | GgmlDType::Q5_0 => {
            let (block_bytes, dot): (usize, unsafe fn(&[u8], &[i8], &[f32]) -> f32) = match dtype {
                GgmlDType::Q8_0 => (Q8_0_BYTES, x86::dot_q8_0),
                _ => (Q5_0_BYTES, x86::dot_q5_0),
            };
            let row_bytes = k / QK8_0 * block_bytes;
            assert_eq!(blocks.len(), n * row_bytes);
            let xs: Vec<_> = x.chunks_exact(k).map(quantize_q8_0).collect();
            yt.par_chunks_mut(rows_per_task * m).zip(blocks.par_chunks(rows_per_task * row_bytes)).for_each(|(out, rows)| {
                for (o, row) in out.chunks_exact_mut(m).zip(rows.chunks_exact(row_bytes)) {
                    for (o, (xq, dx)) in o.iter_mut().zip(&xs) {
                        // SAFETY: supports() checked AVX2, FMA and F16C; the row holds k / 32 whole blocks.
                        *o = unsafe { dot(row, xq, dx) };
                    }
                }
            });
        }
        GgmlDType::Q4K => {
            let row_bytes = k / QK_K * Q4K_BYTES;
            assert_eq!(blocks.len(), n * row_bytes);
            let wide = has_avx512_vnni();
            let xs: Vec<_> = x.chunks_exact(k).map(|x| quantize_q8k(x, wide)).collect();
            yt.par_chunks_mut(rows_per_task * m).zip(blocks.par_chunks(rows_per_task * row_bytes)).for_each(|(out, rows)| {
                for (o, row) in out.chunks_exact_mut(m).zip(rows.chunks_exact(row_bytes)) {
                    for (o, xq) in o.iter_mut().zip(&xs) {
                        // SAFETY: as above (and AVX-512 BW + VNNI where `wide`); the row holds k / 256 whole
                        // blocks, and `xq` was quantized for the kernel chosen.
                        *o = unsafe { if wide { x86::dot_q4k_512(row, xq) } else { x86::dot_q4k(row, xq) } };
                    }
                }
            });
        }
        _ => unreachable!("checked by supports()"),
    }
    outputs_by_row(yt, n, m)
}

/// `[m, n]` from outputs computed `[n, m]` (each weight row's outputs for every activation row together).
pub fn outputs_by_row(yt: Vec<f32>, n: usize, m: usize) -> Vec<f32> {
    if m == 1 {
        return yt;
    }
    let mut y = vec![0f32; m * n];
    for (j, o) in yt.chunks_exact(m).enumerate() {
        for (r, &v) in o.iter().enumerate() {
            y[r * n + j] = v;
        }
    }
    y
}

/// Whether a prefill chunk's product with a `dtype` weight runs through [`many_rows`] rather than candle's
/// quantized product. Measured: q8_0 everywhere our kernels run (candle's many-row q8_0 was 5× slower than f32 on
/// a 2-core Zen 3, and 1.5× slower than dequantizing on a 2-core AVX-512 Xeon) and q5_0 (candle's is scalar); q4k
/// where AVX-512 runs (dequantizing was 1.4× faster than candle's VNNI/AMX path on that Xeon, which also keeps
/// repacked copies of every weight beside the blocks), not on AVX2 alone (candle's q4k prefill was 1.12× f32 on
/// the Zen 3).
pub fn many_rows_beats_candle(dtype: GgmlDType) -> bool {
    match dtype {
        GgmlDType::Q8_0 | GgmlDType::Q5_0 => has_avx2(),
        GgmlDType::Q4K => has_avx2() && has_avx512(),
        _ => false,
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    crate::model::vectorized::avx512()
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

/// Whether the 512-bit q4k kernel runs: AVX-512 with byte/word operations and VNNI's fused i16 dot-add.
#[cfg(target_arch = "x86_64")]
fn has_avx512_vnni() -> bool {
    has_avx512() && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vnni")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512_vnni() -> bool {
    false
}

/// The f32 values of whole rows of q8_0, q5_0 or q4k blocks into `out` (as many values as the blocks hold), on this
/// thread; the same values as candle's `dequantize`.
fn dequantize(dtype: GgmlDType, blocks: &[u8], out: &mut [f32]) {
    // compiled for the widest vectors the CPU has (the crate's baseline is SSE2); the same values at any width
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: the features are present.
        return unsafe { dequantize_avx512(dtype, blocks, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the features are present.
        return unsafe { dequantize_avx2(dtype, blocks, out) };
    }
    dequantize_any(dtype, blocks, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn dequantize_avx512(dtype: GgmlDType, blocks: &[u8], out: &mut [f32]) {
    dequantize_any(dtype, blocks, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dequantize_avx2(dtype: GgmlDType, blocks: &[u8], out: &mut [f32]) {
    dequantize_any(dtype, blocks, out)
}

#[inline(always)]
fn dequantize_any(dtype: GgmlDType, blocks: &[u8], out: &mut [f32]) {
    let f16_at = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    match dtype {
        GgmlDType::Q8_0 => {
            assert_eq!(blocks.len() / Q8_0_BYTES * QK8_0, out.len(), "dequantize: q8_0 blocks for {} values", out.len());
            for (y, blk) in out.chunks_exact_mut(QK8_0).zip(blocks.chunks_exact(Q8_0_BYTES)) {
                let scale = f16_at(blk);
                for (v, &q) in y.iter_mut().zip(&blk[2..]) {
                    *v = scale * (q as i8) as f32;
                }
            }
        }
        GgmlDType::Q5_0 => {
            assert_eq!(blocks.len() / Q5_0_BYTES * QK8_0, out.len(), "dequantize: q5_0 blocks for {} values", out.len());
            for (y, blk) in out.chunks_exact_mut(QK8_0).zip(blocks.chunks_exact(Q5_0_BYTES)) {
                let scale = f16_at(blk);
                // bit j of `high` is value j's fifth bit; byte j of the nibbles holds values j (low) and j + 16 (high)
                let high = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
                let (lo, hi) = y.split_at_mut(16);
                for (j, ((l, h), &q)) in lo.iter_mut().zip(hi.iter_mut()).zip(&blk[6..]).enumerate() {
                    let fifth = |bit: usize| (((high >> bit) & 1) << 4) as i32;
                    *l = scale * (((q & 0xF) as i32 | fifth(j)) - 16) as f32;
                    *h = scale * (((q >> 4) as i32 | fifth(j + 16)) - 16) as f32;
                }
            }
        }
        GgmlDType::Q4K => {
            assert_eq!(blocks.len() / Q4K_BYTES * QK_K, out.len(), "dequantize: q4k blocks for {} values", out.len());
            for (y, blk) in out.chunks_exact_mut(QK_K).zip(blocks.chunks_exact(Q4K_BYTES)) {
                let (d, dmin) = (f16_at(&blk[0..2]), f16_at(&blk[2..4]));
                let mut packed = [0u8; 16];
                for (bytes, word) in packed.chunks_exact_mut(4).zip(unpack_scales(&blk[4..16])) {
                    bytes.copy_from_slice(&word.to_le_bytes());
                }
                let (scales, mins) = packed.split_at(8);
                // 32 bytes of 4-bit values per 64 outputs: low nibbles are sub-block 2c, high nibbles 2c + 1
                for (c, (qs, y)) in blk[16..].chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
                    let (lo, hi) = y.split_at_mut(32);
                    let (d1, m1) = (d * scales[2 * c] as f32, dmin * mins[2 * c] as f32);
                    let (d2, m2) = (d * scales[2 * c + 1] as f32, dmin * mins[2 * c + 1] as f32);
                    for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
                        *l = d1 * (q & 0xF) as f32 - m1;
                        *h = d2 * (q >> 4) as f32 - m2;
                    }
                }
            }
        }
        _ => unreachable!("dequantize: {dtype:?} is not dequantized here (see many_rows_beats_candle)"),
    }
}

/// The fewest weight rows a panel of [`many_rows`] has (unless the weight has fewer).
const MIN_PANEL: usize = 128;

/// `x · Wᵀ` `[m, n]` for `m` rows `x` (`m · k` values; a prefill chunk) and a weight of `n` rows of a type
/// [`many_rows_beats_candle`] takes: in 8-bit integers where AVX-512 VNNI runs
/// ([`int8_gemm`](crate::model::int8_gemm), rows quantized as a decode step's are), otherwise
/// [`dequantized_many_rows`].
pub fn many_rows(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if crate::model::int8_gemm::runs(dtype) {
        return crate::model::int8_gemm::many_rows(dtype, blocks, n, k, x);
    }
    dequantized_many_rows(dtype, blocks, n, k, x)
}

/// [`many_rows`] through gemm on the f32 values, dequantized a panel of weight rows at a time into a buffer that
/// stays in cache (the whole f32 weight would be written to memory and read back for every chunk), panels on
/// all threads.
fn dequantized_many_rows(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    assert!(k > 0 && !x.is_empty() && x.len().is_multiple_of(k), "many_rows: {} values for rows of {k}", x.len());
    assert!(n > 0, "many_rows: a weight of no rows");
    let m = x.len() / k;
    let row_bytes = blocks.len() / n;
    assert_eq!(row_bytes * n, blocks.len(), "many_rows: {n} rows in {} bytes", blocks.len());
    // Panels of ~512 KiB of f32 weight, but never 64 rows or fewer (unless the weight is): gemm sums a product
    // of at most 64 × 64 in other blocks of k than a larger one, so a narrow panel would give a token other bits
    // in a prefill chunk of 64 rows than in a longer one. Widths differ by at most one row.
    let panels = (n / (128 * 1024 / k).max(MIN_PANEL)).max(1);
    let (width, wider) = (n / panels, n % panels);
    let first_row = |p: usize| p * width + p.min(wider);
    let mut y = vec![0f32; m * n];
    struct Out(*mut f32);
    // SAFETY: each panel writes only its own columns of `y`.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    (0..panels).into_par_iter().for_each(|p| {
        let first = first_row(p);
        let rows = first_row(p + 1) - first;
        let mut w = vec![0f32; rows * k];
        dequantize(dtype, &blocks[first * row_bytes..(first + rows) * row_bytes], &mut w);
        let out = &out;
        // SAFETY: y is [m, n] (row stride n), this panel's columns first..first + rows; x is [m, k]; w is
        // [rows, k], read as its transpose [k, rows].
        unsafe {
            gemm::gemm(m, rows, k, out.0.add(first), 1, n as isize, false, x.as_ptr(), 1, k as isize, w.as_ptr(), k as isize, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None);
        }
    });
    y
}

/// The 8 scales (bytes 0..8) and 8 mins (bytes 8..16) of a q4k block's 12 packed scale bytes, unpacked
/// with 32-bit word operations (ggml's `get_scale_min_k4` for each sub-block; the tests compare).
#[inline(always)]
pub(super) fn unpack_scales(s: &[u8]) -> [u32; 4] {
    const M1: u32 = 0x3f3f_3f3f;
    const M2: u32 = 0x0f0f_0f0f;
    const M3: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    // scales 0..4: low 6 bits of bytes 0..4; scales 4..8: low nibbles of bytes 8..12 with the top 2 bits
    // of bytes 0..4; mins 0..4: low 6 bits of bytes 4..8; mins 4..8: high nibbles of 8..12, top bits of 4..8.
    [w0 & M1, (w2 & M2) | (((w0 >> 6) & M3) << 4), w1 & M1, ((w2 >> 4) & M2) | (((w1 >> 6) & M3) << 4)]
}

/// The row as 32-value blocks of i8 with an f32 scale each (symmetric, ±127).
pub(super) fn quantize_q8_0(x: &[f32]) -> (Vec<i8>, Vec<f32>) {
    quantize_blocks(x, QK8_0)
}

/// The row as blocks of `block` i8 values with an f32 scale each: `round(v / scale)`, `scale = max |v| / 127`.
fn quantize_blocks(x: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512() && block.is_multiple_of(16) {
        // SAFETY: AVX-512F runs.
        return unsafe { x86::quantize_blocks_avx512(x, block) };
    }
    quantize_blocks_scalar(x, block)
}

fn quantize_blocks_scalar(x: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = vec![0i8; x.len()];
    let mut d = Vec::with_capacity(x.len() / block);
    for (xs, qs) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)) {
        let amax = xs.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (q, &v) in qs.iter_mut().zip(xs) {
            *q = (v * inv).round() as i8;
        }
        d.push(scale);
    }
    (q, d)
}

/// The row as 256-value blocks of i8 with an f32 scale and the sums of each 32 values (ggml's Q8_K keeps
/// 16-value sums; a q4k sub-block spans 32).
pub(super) struct Q8K {
    /// For the 512-bit kernel, each block's 32-value groups in the order its weights come out of 64-byte loads:
    /// 0, 2, 1, 3, 4, 6, 5, 7 (see `dot_q4k_512`); in order for the 256-bit one.
    q: Vec<i8>,
    d: Vec<f32>,
    /// The sums of each 32 values, 8 per block in order, as i16 (at most 32 · 127 in magnitude).
    bsums: Vec<i16>,
}

/// `wide`: laid out for the 512-bit kernel.
fn quantize_q8k(x: &[f32], wide: bool) -> Q8K {
    let (mut q, d) = quantize_blocks(x, QK_K);
    let bsums = q.chunks_exact(32).map(|c| c.iter().map(|&v| v as i16).sum::<i16>()).collect();
    if wide {
        for block in q.chunks_exact_mut(QK_K) {
            for quarter in block.chunks_exact_mut(128) {
                // groups 0 1 2 3 -> 0 2 1 3
                let (first, second) = quarter.split_at_mut(64);
                first[32..].swap_with_slice(&mut second[..32]);
            }
        }
    }
    Q8K { q, d, bsums }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::{unpack_scales, Q8K, Q4K_BYTES, Q5_0_BYTES, Q8_0_BYTES, QK8_0, QK_K};

    #[target_feature(enable = "avx2,fma,f16c")]
    fn f16_at(b: &[u8]) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u16::from_le_bytes([b[0], b[1]]) as i32)))
    }

    /// Bytes ahead of the block being read that the kernels ask the cache for. The hardware prefetcher alone
    /// left a 2-core Xeon (AVX-512) waiting on the loads of the weight stream: software prefetch 2 KiB ahead made
    /// q4k decode of the 1024×8 bench model 1.3× faster (512 B: 1.15×, 4 KiB: 1.25×).
    const PREFETCH_AHEAD: usize = 2048;

    /// Asks for the cache lines of `bytes` bytes at `PREFETCH_AHEAD` past `p`; past the end of the weights the
    /// hint is dropped by the CPU (the address is only computed, never dereferenced).
    #[inline(always)]
    fn prefetch_ahead(p: *const u8, bytes: usize) {
        let mut off = 0;
        while off < bytes {
            // SAFETY: a prefetch hint does not fault, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH_AHEAD + off) as *const i8) };
            off += 64;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    /// [`quantize_blocks`](super::quantize_blocks) 16 values at a time, the same values: `v · inv` rounded half
    /// away from zero as `f32::round` does (truncate, then step away from zero where the dropped part is at least
    /// a half). A prefill chunk's rows are quantized for every quantized product, where the scalar loop's `round`
    /// calls cost 8% of a q8_0 prefill (perf, 2-core Xeon).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_blocks_avx512(x: &[f32], block: usize) -> (Vec<i8>, Vec<f32>) {
        let mut q = vec![0i8; x.len()];
        let mut d = Vec::with_capacity(x.len() / block);
        let sign = _mm512_set1_ps(-0.0);
        let (half, one) = (_mm512_set1_ps(0.5), _mm512_set1_ps(1.0));
        for (xs, qs) in x.chunks_exact(block).zip(q.chunks_exact_mut(block)) {
            let mut amax = _mm512_setzero_ps();
            for v in xs.chunks_exact(16) {
                amax = _mm512_max_ps(amax, _mm512_andnot_ps(sign, _mm512_loadu_ps(v.as_ptr())));
            }
            let scale = _mm512_reduce_max_ps(amax) / 127.0;
            let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            for (v, q) in xs.chunks_exact(16).zip(qs.chunks_exact_mut(16)) {
                let y = _mm512_mul_ps(_mm512_loadu_ps(v.as_ptr()), inv);
                let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_andnot_ps(sign, _mm512_sub_ps(y, t)), half);
                let r = _mm512_mask_add_ps(t, away, t, _mm512_or_ps(one, _mm512_and_ps(sign, y)));
                _mm_storeu_si128(q.as_mut_ptr() as *mut __m128i, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)));
            }
            d.push(scale);
        }
        (q, d)
    }

    /// One q8_0 row (its blocks: f16 scale, 32 × i8) against the quantized activation row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(row: &[u8], xq: &[i8], dx: &[f32]) -> f32 {
        // SAFETY (caller): 32 weight bytes after the block's scale
        dot_32_blocks::<Q8_0_BYTES>(row, xq, dx, |blk| _mm256_loadu_si256(blk.add(2) as *const __m256i))
    }

    /// One q5_0 row (its blocks: f16 scale, 32 fifth bits, 16 bytes of nibbles; value = 5 bits − 16) against the
    /// quantized activation row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q5_0(row: &[u8], xq: &[i8], dx: &[f32]) -> f32 {
        // SAFETY (caller): whole blocks
        dot_32_blocks::<Q5_0_BYTES>(row, xq, dx, |blk| q5_0_values(blk))
    }

    /// The 32 values of the q5_0 block at `blk` as i8 (−16..=15).
    ///
    /// # Safety
    /// AVX2 runs; a whole q5_0 block is readable at `blk`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn q5_0_values(blk: *const u8) -> __m256i {
        // byte i of a vector takes byte i / 8 of the fifth bits (shuffles stay within 128-bit lanes, and the
        // broadcast puts all four bytes in each), then tests bit i % 8 of it
        let byte_of_bit = _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0);
        let bit_of_byte = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        let high = std::ptr::read_unaligned(blk.add(2) as *const i32);
        let bits = _mm256_shuffle_epi8(_mm256_set1_epi32(high), byte_of_bit);
        let fifth = _mm256_cmpeq_epi8(_mm256_and_si256(bits, bit_of_byte), bit_of_byte);
        // values 0..16 from the low nibbles, 16..32 from the high ones
        let low = _mm_set1_epi8(0x0F);
        let q = _mm_loadu_si128(blk.add(6) as *const __m128i);
        let nibbles = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low), _mm_and_si128(q, low));
        // nibble + 16 · fifth − 16: without the fifth bit, the nibble with its top four bits set (as i8, −16)
        _mm256_or_si256(nibbles, _mm256_andnot_si256(fifth, _mm256_set1_epi8(-16)))
    }

    /// One row of 32-value blocks, each `BYTES` long and starting with its f16 scale, against the q8_0-quantized
    /// activation row; `weights` gives a block's 32 values as i8 (at most 127 in magnitude). Four blocks a step:
    /// their scales converted together, four independent accumulators.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn dot_32_blocks<const BYTES: usize>(row: &[u8], xq: &[i8], dx: &[f32], weights: impl Fn(*const u8) -> __m256i) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); 4];
        let block = |blk: *const u8, a: *const i8| -> __m256 {
            // SAFETY (caller): a whole block at `blk`, 32 activation values at `a`.
            let w = weights(blk);
            let a = _mm256_loadu_si256(a as *const __m256i);
            // |w| · (a with w's sign): u8 × i8 pairs without overflow (both at most 127 in magnitude)
            let p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
            _mm256_cvtepi32_ps(_mm256_madd_epi16(p, ones))
        };
        let blocks = row.len() / BYTES;
        let p = row.as_ptr();
        let scale16 = |b: usize| u16::from_le_bytes([*p.add(b * BYTES), *p.add(b * BYTES + 1)]) as i16;
        let mut b = 0;
        while b + 4 <= blocks {
            prefetch_ahead(p.add(b * BYTES), 4 * BYTES);
            let d = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, scale16(b + 3), scale16(b + 2), scale16(b + 1), scale16(b)));
            let s = _mm_mul_ps(d, _mm_loadu_ps(dx.as_ptr().add(b)));
            let s = [_mm_shuffle_ps::<0x00>(s, s), _mm_shuffle_ps::<0x55>(s, s), _mm_shuffle_ps::<0xAA>(s, s), _mm_shuffle_ps::<0xFF>(s, s)];
            for j in 0..4 {
                let v = block(p.add((b + j) * BYTES), xq.as_ptr().add((b + j) * QK8_0));
                acc[j] = _mm256_fmadd_ps(_mm256_set_m128(s[j], s[j]), v, acc[j]);
            }
            b += 4;
        }
        while b < blocks {
            let scale = _mm256_set1_ps(f16_at(&row[b * BYTES..]) * dx[b]);
            acc[0] = _mm256_fmadd_ps(scale, block(p.add(b * BYTES), xq.as_ptr().add(b * QK8_0)), acc[0]);
            b += 1;
        }
        hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])))
    }

    /// One q4k row (its blocks: f16 d, f16 dmin, 12 scale bytes, 128 bytes of 4-bit values) against the Q8_K row.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4k(row: &[u8], x: &Q8K) -> f32 {
        let low = _mm256_set1_epi8(0x0F);
        let mut acc = _mm256_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, blk) in row.chunks_exact(Q4K_BYTES).enumerate() {
            prefetch_ahead(blk.as_ptr(), Q4K_BYTES);
            let d = _mm256_set1_ps(f16_at(&blk[0..2]) * x.d[b]);
            let dmin = _mm_set1_ps(f16_at(&blk[2..4]) * x.d[b]);
            let u = unpack_scales(&blk[4..16]);
            // [8 scales, 8 mins] as 16 × i16
            let sm = _mm256_cvtepu8_epi16(_mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32));
            // mins · (sums of each 32 activations): the 16-value sums added in pairs
            let bs = x.bsums.as_ptr().add(b * 8);
            let sums32 = _mm_loadu_si128(bs as *const __m128i);
            let mins = _mm256_extracti128_si256(sm, 1);
            acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(_mm_madd_epi16(mins, sums32)), acc_m);
            let scales = _mm256_castsi256_si128(sm);
            let qs = blk.as_ptr().add(16);
            let aq = x.q.as_ptr().add(b * QK_K);
            let mut sumi = _mm256_setzero_si256();
            for i in 0..4 {
                // scales 2i and 2i+1 to every 16-bit lane
                let pair = _mm_shuffle_epi8(scales, _mm_set_epi8(
                    (4 * i + 3) as i8, (4 * i + 2) as i8, (4 * i + 3) as i8, (4 * i + 2) as i8,
                    (4 * i + 3) as i8, (4 * i + 2) as i8, (4 * i + 3) as i8, (4 * i + 2) as i8,
                    (4 * i + 1) as i8, (4 * i) as i8, (4 * i + 1) as i8, (4 * i) as i8,
                    (4 * i + 1) as i8, (4 * i) as i8, (4 * i + 1) as i8, (4 * i) as i8,
                ));
                let sc_lo = _mm256_broadcastq_epi64(pair);
                let sc_hi = _mm256_broadcastq_epi64(_mm_unpackhi_epi64(pair, pair));
                // 64 weights: the low nibbles are the first 32, the high nibbles the next 32
                let q4 = _mm256_loadu_si256(qs.add(32 * i) as *const __m256i);
                let lo = _mm256_and_si256(q4, low);
                let hi = _mm256_and_si256(_mm256_srli_epi16(q4, 4), low);
                let a_lo = _mm256_loadu_si256(aq.add(64 * i) as *const __m256i);
                let a_hi = _mm256_loadu_si256(aq.add(64 * i + 32) as *const __m256i);
                let p_lo = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, a_lo), sc_lo);
                let p_hi = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, a_hi), sc_hi);
                sumi = _mm256_add_epi32(sumi, _mm256_add_epi32(p_lo, p_hi));
            }
            acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sumi), acc);
        }
        let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        hsum(acc) - _mm_cvtss_f32(m)
    }

    /// [`dot_q4k`] with 512-bit registers, for a Q8K row quantized `wide`: a 64-byte load of 4-bit values gives
    /// two 32-byte chunks, whose low nibbles are sub-blocks 2c and whose high nibbles are 2c + 1, so the four
    /// 64-weight vectors of a block hold sub-blocks (0, 2), (1, 3), (4, 6), (5, 7), matched by the activation
    /// layout. Per vector: u8 × i8 pair sums (`maddubs`), then VNNI's `dpwssd` multiplies them by the
    /// sub-block's scale and accumulates, half the instructions of the 256-bit kernel for the same bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
    pub unsafe fn dot_q4k_512(row: &[u8], x: &Q8K) -> f32 {
        let low = _mm512_set1_epi8(0x0F);
        // permutation indices: scale `a` to the first 16 lanes of 16 bits (the first 32 bytes), `b` to the rest
        let pick = |a: i16, b: i16| _mm512_inserti64x4::<1>(_mm512_set1_epi16(a), _mm256_set1_epi16(b));
        let index = [pick(0, 2), pick(1, 3), pick(4, 6), pick(5, 7)];
        let mut acc = _mm512_setzero_ps();
        let mut acc_m = _mm_setzero_ps();
        for (b, blk) in row.chunks_exact(Q4K_BYTES).enumerate() {
            let d = _mm512_set1_ps(f16_at(&blk[0..2]) * x.d[b]);
            let dmin = _mm_set1_ps(f16_at(&blk[2..4]) * x.d[b]);
            let u = unpack_scales(&blk[4..16]);
            let sm = _mm256_cvtepu8_epi16(_mm_set_epi32(u[3] as i32, u[2] as i32, u[1] as i32, u[0] as i32));
            let sums32 = _mm_loadu_si128(x.bsums.as_ptr().add(b * 8) as *const __m128i);
            acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(_mm_madd_epi16(_mm256_extracti128_si256(sm, 1), sums32)), acc_m);
            let scales = _mm512_castsi256_si512(sm);
            let qs = blk.as_ptr().add(16);
            prefetch_ahead(blk.as_ptr(), Q4K_BYTES);
            let aq = x.q.as_ptr().add(b * QK_K);
            let (l0, l1) = (_mm512_loadu_si512(qs as *const _), _mm512_loadu_si512(qs.add(64) as *const _));
            let w = [
                _mm512_and_si512(l0, low),
                _mm512_and_si512(_mm512_srli_epi16(l0, 4), low),
                _mm512_and_si512(l1, low),
                _mm512_and_si512(_mm512_srli_epi16(l1, 4), low),
            ];
            let mut sumi = _mm512_setzero_si512();
            for j in 0..4 {
                let a = _mm512_loadu_si512(aq.add(64 * j) as *const _);
                let pairs = _mm512_maddubs_epi16(w[j], a);
                sumi = _mm512_dpwssd_epi32(sumi, pairs, _mm512_permutexvar_epi16(index[j], scales));
            }
            acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(sumi), acc);
        }
        let m = _mm_add_ps(acc_m, _mm_movehl_ps(acc_m, acc_m));
        let m = _mm_add_ss(m, _mm_movehdup_ps(m));
        _mm512_reduce_add_ps(acc) - _mm_cvtss_f32(m)
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::Q8K;
    pub unsafe fn dot_q8_0(_: &[u8], _: &[i8], _: &[f32]) -> f32 {
        unreachable!("supports() is false off x86-64")
    }
    pub unsafe fn dot_q5_0(_: &[u8], _: &[i8], _: &[f32]) -> f32 {
        unreachable!("supports() is false off x86-64")
    }
    pub unsafe fn dot_q4k(_: &[u8], _: &Q8K) -> f32 {
        unreachable!("supports() is false off x86-64")
    }
    pub unsafe fn dot_q4k_512(_: &[u8], _: &Q8K) -> f32 {
        unreachable!("supports() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    /// Both q4k kernels (the 256-bit one everywhere AVX2 runs, the 512-bit one where AVX-512 VNNI does) against
    /// the f32 product with the dequantized weight, each with the activation layout it reads.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_q4k_kernels_match_the_dequantized_product() {
        if !has_avx2() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C");
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (64, 1536);
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, k, &dev).unwrap().to_vec1().unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q4K).unwrap();
        let deq: Vec<f32> = q.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let blocks = q.data().unwrap();
        let row_bytes = k / QK_K * Q4K_BYTES;
        let mut kernels = vec![false];
        if has_avx512_vnni() {
            kernels.push(true);
        } else {
            eprintln!("512-bit kernel not tested: this CPU lacks AVX-512 BW/VNNI");
        }
        for wide in kernels {
            let xq = quantize_q8k(&x, wide);
            for r in 0..n {
                let want: f32 = deq[r * k..(r + 1) * k].iter().zip(&x).map(|(a, b)| a * b).sum();
                let row = &blocks[r * row_bytes..(r + 1) * row_bytes];
                // SAFETY: checked the CPU features above; the row holds k / 256 whole blocks.
                let got = unsafe { if wide { x86::dot_q4k_512(row, &xq) } else { x86::dot_q4k(row, &xq) } };
                // the activation's 8-bit rounding: well under 1% of the row's scale (|w| · |x| summed)
                let scale: f32 = deq[r * k..(r + 1) * k].iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                assert!((got - want).abs() < 0.01 * scale, "wide {wide}, row {r}: {got} against {want} (scale {scale})");
            }
        }
    }

    /// The dequantizing prefill product equals the f32 product with the dequantized weight (panels of any shape,
    /// the last one short), and a row's bits do not depend on how many rows share the chunk.
    #[test]
    fn many_rows_is_the_dequantized_product_and_chunk_independent() {
        let dev = Device::Cpu;
        // 4864 columns: panels as narrow as they get; 100 rows against 40 crosses gemm's 64-row small-product limit
        for (dtype, n, k) in [(GgmlDType::Q8_0, 1000, 96), (GgmlDType::Q4K, 300, 1024), (GgmlDType::Q4K, 129, 512), (GgmlDType::Q8_0, 300, 4864), (GgmlDType::Q5_0, 200, 3424)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let x = Tensor::randn(0f32, 1.0, (100, k), &dev).unwrap();
            let want: Vec<f32> = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let xs: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let got = dequantized_many_rows(dtype, &q.data().unwrap(), n, k, &xs);
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-3, "{dtype:?} {n}×{k}: max error {err}");
            let first = dequantized_many_rows(dtype, &q.data().unwrap(), n, k, &xs[..40 * k]);
            assert!(first.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?}: 40 rows alone differ");
            // what prefill runs on this CPU (8-bit rows where AVX-512 VNNI runs): within the rows' quantization
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let got = many_rows(dtype, &q.data().unwrap(), n, k, &xs);
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 0.02 * scale, "{dtype:?} {n}×{k}: many_rows off by {err} against output scale {scale}");
        }
    }

    /// A row's output is the same bits whatever rows share the product (a batched decode step).
    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() {
        if !has_avx2() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C, where candle's kernels run instead");
            return;
        }
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q5_0, GgmlDType::Q4K] {
            let (n, k, m) = (300, 1024, 5);
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, m * k, &dev).unwrap().to_vec1().unwrap();
            let together = few_rows(dtype, &q.data().unwrap(), n, k, &x);
            for (r, got) in together.chunks_exact(n).enumerate() {
                let alone = one_row(dtype, &q.data().unwrap(), n, k, &x[r * k..(r + 1) * k]);
                assert!(got.iter().zip(&alone).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?} row {r}");
            }
        }
    }

    /// The vectorized quantizer gives the scalar one's values: random rows, halves (ties round away from zero),
    /// a block of zeros.
    #[test]
    fn rows_quantize_to_the_same_values_at_any_width() {
        let dev = Device::Cpu;
        let mut x: Vec<f32> = Tensor::randn(0f32, 1.0, 4096, &dev).unwrap().to_vec1().unwrap();
        // block 1: values whose v / scale fall on halves (max 127 so scale 1)
        for (i, v) in x[32..64].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { (i as f32 - 16.0) + 0.5 };
        }
        x[64..96].fill(0.0);
        for block in [32, 256] {
            assert_eq!(quantize_blocks(&x, block), quantize_blocks_scalar(&x, block), "blocks of {block}");
        }
    }

    #[test]
    fn our_dequantizers_give_candles_values() {
        let dev = Device::Cpu;
        for (dtype, k) in [(GgmlDType::Q8_0, 96), (GgmlDType::Q5_0, 96), (GgmlDType::Q4K, 512)] {
            let w = Tensor::randn(0f32, 0.05, (19, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let want: Vec<f32> = q.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let mut got = vec![0f32; 19 * k];
            dequantize(dtype, &q.data().unwrap(), &mut got);
            assert_eq!(got, want, "{dtype:?}");
        }
    }

    /// The 6-bit scale and min of sub-block `j` (0..8) of a q4k block's 12 scale bytes (ggml's `get_scale_min_k4`).
    fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
        if j < 4 {
            (s[j] & 63, s[j + 4] & 63)
        } else {
            ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
        }
    }

    #[test]
    fn packed_scales_unpack_to_ggmls_values() {
        for seed in 0..64u32 {
            let s: Vec<u8> = (0..12u32).map(|i| (i.wrapping_mul(97).wrapping_add(seed.wrapping_mul(131)) % 256) as u8).collect();
            let u = unpack_scales(&s);
            let bytes: Vec<u8> = u.iter().flat_map(|w| w.to_le_bytes()).collect();
            for j in 0..8 {
                assert_eq!((bytes[j], bytes[8 + j]), scale_min_k4(j, &s), "seed {seed}, sub-block {j}");
            }
        }
    }

    /// Our kernel against the f32 product with the dequantized weight: the only difference is the row's own
    /// 8-bit quantization, a fraction of a percent of the output's scale.
    #[test]
    fn one_row_matches_the_dequantized_product() {
        if !has_avx2() {
            eprintln!("skipped: this CPU lacks AVX2/FMA/F16C, where candle's kernels run instead");
            return;
        }
        let dev = Device::Cpu;
        for (dtype, n, k) in [(GgmlDType::Q8_0, 37, 96), (GgmlDType::Q8_0, 300, 1024), (GgmlDType::Q5_0, 37, 96), (GgmlDType::Q5_0, 300, 3424), (GgmlDType::Q4K, 37, 256), (GgmlDType::Q4K, 300, 1024)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let x = Tensor::randn(0f32, 1.0, (1, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let want: Vec<f32> = x.matmul(&q.dequantize(&dev).unwrap().t().unwrap()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = one_row(dtype, &q.data().unwrap(), n, k, &x.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 0.02 * scale, "{dtype:?} {n}×{k}: max error {err} against output scale {scale}");
        }
    }
}
