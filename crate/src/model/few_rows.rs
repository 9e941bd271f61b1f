//! AVX2 + FMA kernels for a few activation rows times a dense f32 or bf16 weight (decode steps of up to 16
//! sequences). A product of one row is bound by the weight's bytes; of 16, by arithmetic, so the rows are
//! register-blocked (each weight vector loaded once for four rows). Every output is one sequence of fused
//! multiply-adds in a fixed order that depends on the weight's shape only, so a row gets the same bits whatever
//! rows share the product: that is what lets a request decode in any batch and give the tokens it gives alone.
//! Hand-written because gemm takes other paths (other bits) for one row than for several, and is slow for both.

use std::arch::x86_64::*;

use half::bf16;

/// Whether this CPU runs these kernels.
pub fn supported() -> bool {
    crate::model::vectorized::avx2()
}

/// Weight elements the kernels load eight at a time, as f32.
pub trait Lanes: Copy + Send + Sync {
    /// Eight values from `p` widened to f32.
    ///
    /// # Safety
    /// AVX2 is available and eight values are readable at `p`.
    unsafe fn load8(p: *const Self) -> __m256;
    /// Sixteen values from `p` widened to f32.
    ///
    /// # Safety
    /// AVX-512F is available and sixteen values are readable at `p`.
    unsafe fn load16(p: *const Self) -> __m512;
    fn to_f32(self) -> f32;
}

impl Lanes for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Lanes for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const Self) -> __m256 {
        // bf16 is the top half of an f32: widen the 16-bit values and shift them up (exact).
        let h = _mm_loadu_si128(p as *const __m128i);
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> __m512 {
        let h = _mm256_loadu_si256(p as *const __m256i);
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

/// Weight rows `first..last` of an `[k, n]` weight times columns `first..last` of the `m` rows of `x` (`[m, k]`),
/// added into `y` (`[m, n]`): `y[r][c] = fma(x[r][i], w[i][c], y[r][c])` for `i` in order.
///
/// # Safety
/// [`supported`] is true; the slices hold what the shapes say.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn in_out<W: Lanes>(x: &[f32], m: usize, k: usize, w: &[W], n: usize, first: usize, last: usize, y: &mut [f32]) {
    let full = n / 16 * 16;
    if m == 1 {
        // One row: stream each weight row whole (bandwidth-bound).
        for i in first..last {
            let xi = _mm256_set1_ps(x[i]);
            let row = w.as_ptr().add(i * n);
            let out = y.as_mut_ptr();
            let mut c = 0;
            while c < full {
                let a = _mm256_fmadd_ps(xi, W::load8(row.add(c)), _mm256_loadu_ps(out.add(c)));
                let b = _mm256_fmadd_ps(xi, W::load8(row.add(c + 8)), _mm256_loadu_ps(out.add(c + 8)));
                _mm256_storeu_ps(out.add(c), a);
                _mm256_storeu_ps(out.add(c + 8), b);
                c += 16;
            }
            for c in full..n {
                y[c] = x[i].mul_add(w[i * n + c].to_f32(), y[c]);
            }
        }
        return;
    }
    // Several rows: a tile of columns × rows of sums in registers over a run of weight rows that stays in L1 while
    // every row's tile of the same columns reads it; where AVX-512 runs, tiles of 32 columns × 8 rows first. The
    // run is short: its rows lie `n` values apart, and with `n` a multiple of 1024 (4 KiB of f32) they all fall in
    // one L1 set, so a long run evicts itself. On a 2-core Xeon, 16 sequences' aggregate decode of the 1024×8 f32
    // GLM bench model: 16 × 4 tiles over runs of 256, 87 tok/s; of 64, 32 and 16: 102, 122 and 126; 32 × 8 tiles
    // over runs of 32: 133 (runs of 256, 64, 16: 108, 113, 122). Not re-measured on an AVX2-only CPU. Each
    // column's sums are the same fused multiply-adds in the same order whatever the tile, run or vector width, so
    // the bits do not depend on the CPU.
    const RUN: usize = 32;
    let wide = crate::model::vectorized::avx512();
    for i0 in (first..last).step_by(RUN) {
        let i1 = (i0 + RUN).min(last);
        let mut c = 0;
        if wide {
            while c + 32 <= n {
                let mut r = 0;
                while r < m {
                    macro_rules! go {
                        ($rows:literal) => {
                            tile512::<W, $rows>(x, k, w, n, i0, i1, c, r, y)
                        };
                    }
                    match m - r {
                        1 => go!(1),
                        2 => go!(2),
                        3 => go!(3),
                        4 => go!(4),
                        5 => go!(5),
                        6 => go!(6),
                        7 => go!(7),
                        _ => go!(8),
                    }
                    r += 8;
                }
                c += 32;
            }
        }
        while c < full {
            let mut r = 0;
            while r < m {
                match m - r {
                    1 => tile::<W, 1>(x, k, w, n, i0, i1, c, r, y),
                    2 => tile::<W, 2>(x, k, w, n, i0, i1, c, r, y),
                    3 => tile::<W, 3>(x, k, w, n, i0, i1, c, r, y),
                    _ => tile::<W, 4>(x, k, w, n, i0, i1, c, r, y),
                }
                r += 4;
            }
            c += 16;
        }
        for r in 0..m {
            for c in full..n {
                let mut acc = y[r * n + c];
                for i in i0..i1 {
                    acc = x[r * k + i].mul_add(w[i * n + c].to_f32(), acc);
                }
                y[r * n + c] = acc;
            }
        }
    }
}

/// Rows `r..r + R` of `y`, columns `c..c + 16`, over weight rows `i0..i1`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<W: Lanes, const R: usize>(x: &[f32], k: usize, w: &[W], n: usize, i0: usize, i1: usize, c: usize, r: usize, y: &mut [f32]) {
    let out = y.as_mut_ptr();
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for (j, a) in acc.iter_mut().enumerate() {
        a[0] = _mm256_loadu_ps(out.add((r + j) * n + c));
        a[1] = _mm256_loadu_ps(out.add((r + j) * n + c + 8));
    }
    let xs = x.as_ptr();
    for i in i0..i1 {
        let row = w.as_ptr().add(i * n + c);
        let (w0, w1) = (W::load8(row), W::load8(row.add(8)));
        for (j, a) in acc.iter_mut().enumerate() {
            let xi = _mm256_set1_ps(*xs.add((r + j) * k + i));
            a[0] = _mm256_fmadd_ps(xi, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xi, w1, a[1]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(out.add((r + j) * n + c), a[0]);
        _mm256_storeu_ps(out.add((r + j) * n + c + 8), a[1]);
    }
}

/// Rows `r..r + R` of `y`, columns `c..c + 32`, over weight rows `i0..i1`, in 512-bit registers: [`tile`]'s sums,
/// two vectors of 16 columns a row.
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile512<W: Lanes, const R: usize>(x: &[f32], k: usize, w: &[W], n: usize, i0: usize, i1: usize, c: usize, r: usize, y: &mut [f32]) {
    let out = y.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for (j, a) in acc.iter_mut().enumerate() {
        a[0] = _mm512_loadu_ps(out.add((r + j) * n + c));
        a[1] = _mm512_loadu_ps(out.add((r + j) * n + c + 16));
    }
    let xs = x.as_ptr();
    for i in i0..i1 {
        let row = w.as_ptr().add(i * n + c);
        let (w0, w1) = (W::load16(row), W::load16(row.add(16)));
        for (j, a) in acc.iter_mut().enumerate() {
            let xi = _mm512_set1_ps(*xs.add((r + j) * k + i));
            a[0] = _mm512_fmadd_ps(xi, w0, a[0]);
            a[1] = _mm512_fmadd_ps(xi, w1, a[1]);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add((r + j) * n + c), a[0]);
        _mm512_storeu_ps(out.add((r + j) * n + c + 16), a[1]);
    }
}

/// Outputs `rows` of an `[n, k]` weight (its rows) for the `m` rows of `x` (`[m, k]`), written `[rows, m]` into
/// `out`: each output is eight lanes of fused multiply-adds over `k` in order, summed in a fixed order, then
/// the `k % 8` tail.
///
/// # Safety
/// [`supported`] is true; the slices hold what the shapes say.
pub unsafe fn out_in<W: Lanes>(x: &[f32], m: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: &mut [f32]) {
    if crate::model::vectorized::avx512() && is_x86_feature_detected!("avx512vl") {
        out_in_32_registers(x, m, k, w, rows, out)
    } else {
        out_in_16_registers(x, m, k, w, rows, out)
    }
}

/// [`out_in`] where AVX-512 runs: the same 256-bit instructions, which then have 32 registers, so a 4 × 4 block's
/// 16 sums and its 8 loaded vectors stay in registers (with 16 some spill). On a 2-core Xeon, 16 sequences'
/// aggregate decode of the 1024×8 f32 GLM bench model went from 134 to 138 tok/s (A/B alternated, noisy).
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn out_in_32_registers<W: Lanes>(x: &[f32], m: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: &mut [f32]) {
    out_in_blocks(x, m, k, w, rows, out)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn out_in_16_registers<W: Lanes>(x: &[f32], m: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: &mut [f32]) {
    out_in_blocks(x, m, k, w, rows, out)
}

#[inline(always)]
unsafe fn out_in_blocks<W: Lanes>(x: &[f32], m: usize, k: usize, w: &[W], rows: std::ops::Range<usize>, out: &mut [f32]) {
    let mut j = rows.start;
    while j < rows.end {
        let wr = (rows.end - j).min(4);
        let mut r = 0;
        while r < m {
            let xr = (m - r).min(4);
            macro_rules! go {
                ($a:literal, $b:literal) => {
                    dots::<W, $a, $b>(x, m, k, w, j, r, rows.start, out)
                };
            }
            match (wr, xr) {
                (4, 4) => go!(4, 4),
                (4, 3) => go!(4, 3),
                (4, 2) => go!(4, 2),
                (4, 1) => go!(4, 1),
                (3, 4) => go!(3, 4),
                (3, 3) => go!(3, 3),
                (3, 2) => go!(3, 2),
                (3, 1) => go!(3, 1),
                (2, 4) => go!(2, 4),
                (2, 3) => go!(2, 3),
                (2, 2) => go!(2, 2),
                (2, 1) => go!(2, 1),
                (1, 4) => go!(1, 4),
                (1, 3) => go!(1, 3),
                (1, 2) => go!(1, 2),
                _ => go!(1, 1),
            }
            r += 4;
        }
        j += 4;
    }
}

/// Dot products of weight rows `j..j + WR` with rows `r..r + XR` of `x`, into `out[(j - base) * m + r]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dots<W: Lanes, const WR: usize, const XR: usize>(x: &[f32], m: usize, k: usize, w: &[W], j: usize, r: usize, base: usize, out: &mut [f32]) {
    let full = k / 8 * 8;
    let mut acc = [[_mm256_setzero_ps(); XR]; WR];
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut kk = 0;
    while kk < full {
        let mut xv = [_mm256_setzero_ps(); XR];
        for (b, v) in xv.iter_mut().enumerate() {
            *v = _mm256_loadu_ps(xp.add((r + b) * k + kk));
        }
        for (a, accs) in acc.iter_mut().enumerate() {
            let wv = W::load8(wp.add((j + a) * k + kk));
            for (b, s) in accs.iter_mut().enumerate() {
                *s = _mm256_fmadd_ps(wv, xv[b], *s);
            }
        }
        kk += 8;
    }
    for (a, accs) in acc.iter().enumerate() {
        for (b, s) in accs.iter().enumerate() {
            let mut v = hsum(*s);
            for t in full..k {
                v = x[(r + b) * k + t].mul_add(w[(j + a) * k + t].to_f32(), v);
            }
            out[(j + a - base) * m + r + b] = v;
        }
    }
}

/// The eight lanes summed in a fixed order.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
