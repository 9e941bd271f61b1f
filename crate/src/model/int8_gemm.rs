//! Many activation rows (a prefill chunk) times a q8_0, q5_0 or q4k weight in 8-bit integers, where AVX-512 VNNI
//! runs. Each row is quantized to 32-value blocks as a decode step's row is ([`quantize_q8_0`]); each block of a
//! row against a block of a weight row is an exact integer dot product (`vpdpbusd`: 64 multiply-adds an
//! instruction, four times an f32 FMA's), scaled by the two blocks' scales and summed in f32, block after block
//! in order (q4k's 32-value sub-blocks also subtract their min times the activation block's sum). An output
//! depends only on its own activation row and weight row, so a token gets the same bits in any prefill chunk.
//!
//! Why our own: the other way, gemm on f32 values dequantized a panel at a time, is bound by f32 arithmetic, so
//! q8_0 prefill was 0.86× f32's on a 2-core AVX-512 Xeon; candle's many-row q8_0 product was slower still there
//! and keeps a repacked copy of every weight. This kernel reads the blocks as stored and repacks a panel of
//! 48 weight rows at a time into the layout `vpdpbusd` reads. On that Xeon, the 1024×8 bench model's q8_0 prefill
//! became 1.59× its f32 prefill (`bench/quant.js`; bench/README.md).

use std::arch::x86_64::*;

use candle_core::quantized::GgmlDType;
use rayon::prelude::*;

use super::qkernels::{quantize_q8_0, unpack_scales, x86::q5_0_values, Q4K_BYTES, Q5_0_BYTES, Q8_0_BYTES, QK8_0, QK_K};

/// Activation rows a tile.
const ROWS: usize = 4;
/// 16-column groups (one 512-bit vector of sums each) a panel; 4 rows × 3 groups of integer and f32 sums, the
/// weight vectors and a broadcast fill 28 of the 32 registers.
const GROUPS: usize = 3;
const PANEL: usize = 16 * GROUPS;
/// Blocks of 32 values a tile runs over before the next tile: a panel's 8 blocks (12 KiB) stay in L1 while every
/// tile of rows reads them.
const CHUNK_BLOCKS: usize = 8;

/// Whether this CPU runs [`many_rows`] for `dtype`.
pub fn runs(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4K)
        && crate::model::vectorized::avx512()
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("f16c")
}

/// `x · Wᵀ` `[m, n]` for `m` rows `x` (`m · k` values) and a weight of `n` rows of `k` values stored as `dtype`
/// blocks. Call only where [`runs`] says so.
pub fn many_rows(dtype: GgmlDType, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Vec<f32> {
    assert!(runs(dtype), "int8_gemm: {dtype:?} does not run on this CPU");
    assert!(k > 0 && k.is_multiple_of(QK8_0) && !x.is_empty() && x.len().is_multiple_of(k), "int8_gemm: {} values for rows of {k}", x.len());
    let (block_values, block_bytes) = match dtype {
        GgmlDType::Q8_0 => (QK8_0, Q8_0_BYTES),
        GgmlDType::Q5_0 => (QK8_0, Q5_0_BYTES),
        _ => (QK_K, Q4K_BYTES),
    };
    assert!(k.is_multiple_of(block_values), "int8_gemm: rows of {k} values in {dtype:?} blocks");
    assert_eq!(blocks.len(), n * k / block_values * block_bytes, "int8_gemm: {n} rows of {k} values in {} bytes", blocks.len());
    let m = x.len() / k;
    let rows = QuantizedRows::new(x, k, dtype == GgmlDType::Q4K);
    let mut y = vec![0f32; m * n];
    struct Out(*mut f32);
    // SAFETY: each panel writes only its own columns of `y`.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    let weights = Blocks { dtype, bytes: blocks, row_bytes: k / block_values * block_bytes, n, k };
    (0..n.div_ceil(PANEL)).into_par_iter().for_each_init(Panel::default, |panel, p| {
        let out = &out;
        // SAFETY: runs() checked the features; `weights` and `rows` hold what their shapes say, and y is [m, n].
        unsafe {
            panel.pack(&weights, p * PANEL);
            panel.times(&rows, out.0, n);
        }
    });
    y
}

/// The weight as stored.
struct Blocks<'a> {
    dtype: GgmlDType,
    bytes: &'a [u8],
    row_bytes: usize,
    n: usize,
    k: usize,
}

/// The activation rows as `vpdpbusd` takes them: unsigned bytes `q + 128` (the weights are the signed side; the
/// panel's offsets take the 128 back out), each block's scale and, for weights with mins, each block's sum
/// (scale · Σ q).
struct QuantizedRows {
    shifted: Vec<u8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
    m: usize,
    k: usize,
}

impl QuantizedRows {
    fn new(x: &[f32], k: usize, with_sums: bool) -> Self {
        let m = x.len() / k;
        let nb = k / QK8_0;
        let mut shifted = vec![0u8; m * k];
        let mut scales = vec![0f32; m * nb];
        let mut sums = vec![0f32; m * nb];
        shifted.par_chunks_mut(k).zip(scales.par_chunks_mut(nb)).zip(sums.par_chunks_mut(nb)).zip(x.par_chunks(k)).for_each(|(((u, d), s), row)| {
            let (q, scale) = quantize_q8_0(row);
            for (u, &q) in u.iter_mut().zip(&q) {
                *u = (q as u8) ^ 0x80;
            }
            d.copy_from_slice(&scale);
            if with_sums {
                for ((s, q), d) in s.iter_mut().zip(q.chunks_exact(QK8_0)).zip(&scale) {
                    *s = d * q.iter().map(|&v| v as i32).sum::<i32>() as f32;
                }
            }
        });
        Self { shifted, scales, sums, m, k }
    }
}

/// [`PANEL`] weight rows over all of `k`, per block of 32 values: the values `[GROUPS][8][16][4]` (group, four
/// values at a time, weight row, value), each row's scale `[GROUPS][16]`, `−128 ·` each row's sum of values
/// `[GROUPS][16]` (what the activations' shift by 128 adds), and for q4k each row's min `[GROUPS][16]`.
#[derive(Default)]
struct Panel {
    values: Vec<i8>,
    scales: Vec<f32>,
    offsets: Vec<i32>,
    mins: Vec<f32>,
    /// Weight rows of the panel that exist (the last panel of a weight may be short; the rest are zeros).
    width: usize,
    first_col: usize,
}

const GROUP_VALUES: usize = 16 * QK8_0;

impl Panel {
    /// Repacks weight rows `first_col..first_col + PANEL` (those that exist).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,f16c")]
    unsafe fn pack(&mut self, w: &Blocks, first_col: usize) {
        let nb = w.k / QK8_0;
        self.first_col = first_col;
        self.width = (w.n - first_col).min(PANEL);
        self.values.resize(nb * GROUPS * GROUP_VALUES, 0);
        self.scales.resize(nb * PANEL, 0.0);
        self.offsets.resize(nb * PANEL, 0);
        self.mins.resize(if w.dtype == GgmlDType::Q4K { nb * PANEL } else { 0 }, 0.0);
        // one block of 16 weight rows as i8 rows of 32, then read out four values of each row at a time
        let mut block = [0i8; GROUP_VALUES];
        let lanes = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(QK8_0 as i32));
        let ones = _mm512_set1_epi8(1);
        for g in 0..GROUPS {
            let rows = self.width.saturating_sub(16 * g).min(16);
            for b in 0..nb {
                let (mut scales, mut mins) = ([0f32; 16], [0f32; 16]);
                for l in 0..16 {
                    let dst = block.as_mut_ptr().add(l * QK8_0) as *mut __m256i;
                    if l >= rows {
                        _mm256_storeu_si256(dst, _mm256_setzero_si256());
                        continue;
                    }
                    let row = w.bytes.as_ptr().add((first_col + 16 * g + l) * w.row_bytes);
                    let f16_at = |p: *const u8| half::f16::from_le_bytes([*p, *p.add(1)]).to_f32();
                    let values = match w.dtype {
                        GgmlDType::Q8_0 => {
                            let blk = row.add(b * Q8_0_BYTES);
                            scales[l] = f16_at(blk);
                            _mm256_loadu_si256(blk.add(2) as *const __m256i)
                        }
                        GgmlDType::Q5_0 => {
                            let blk = row.add(b * Q5_0_BYTES);
                            scales[l] = f16_at(blk);
                            q5_0_values(blk)
                        }
                        _ => {
                            // sub-block j of a 256-value block: the low (j even) or high nibbles of 32 bytes,
                            // value = d · scale_j · q − dmin · min_j (as `dequantize`)
                            let (blk, j) = (row.add(b / 8 * Q4K_BYTES), b % 8);
                            let packed = unpack_scales(std::slice::from_raw_parts(blk.add(4), 12));
                            let byte = |i: usize| (packed[i / 4] >> (8 * (i % 4))) as u8;
                            scales[l] = f16_at(blk) * byte(j) as f32;
                            mins[l] = f16_at(blk.add(2)) * byte(8 + j) as f32;
                            let qs = _mm256_loadu_si256(blk.add(16 + 32 * (j / 2)) as *const __m256i);
                            let qs = if j % 2 == 0 { qs } else { _mm256_srli_epi16::<4>(qs) };
                            _mm256_and_si256(qs, _mm256_set1_epi8(0x0F))
                        }
                    };
                    _mm256_storeu_si256(dst, values);
                }
                let at = (b * GROUPS + g) * 16;
                _mm512_storeu_ps(self.scales.as_mut_ptr().add(at), _mm512_loadu_ps(scales.as_ptr()));
                if !self.mins.is_empty() {
                    _mm512_storeu_ps(self.mins.as_mut_ptr().add(at), _mm512_loadu_ps(mins.as_ptr()));
                }
                let values = self.values.as_mut_ptr().add((b * GROUPS + g) * GROUP_VALUES);
                let mut sums = _mm512_setzero_si512();
                for quad in 0..QK8_0 / 4 {
                    let v = _mm512_i32gather_epi32::<1>(_mm512_add_epi32(lanes, _mm512_set1_epi32(4 * quad as i32)), block.as_ptr() as *const i32);
                    _mm512_storeu_si512(values.add(quad * 64) as *mut __m512i, v);
                    sums = _mm512_dpbusd_epi32(sums, ones, v);
                }
                _mm512_storeu_si512(self.offsets.as_mut_ptr().add(at) as *mut __m512i, _mm512_mullo_epi32(sums, _mm512_set1_epi32(-128)));
            }
        }
    }

    /// Every row of `rows` times the panel into columns `first_col..first_col + width` of `y` (`[m, n]`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn times(&self, rows: &QuantizedRows, y: *mut f32, n: usize) {
        let nb = rows.k / QK8_0;
        let masks: [__mmask16; GROUPS] = std::array::from_fn(|g| {
            let cols = self.width.saturating_sub(16 * g).min(16);
            ((1u32 << cols) - 1) as __mmask16
        });
        for b0 in (0..nb).step_by(CHUNK_BLOCKS) {
            let chunk = b0..(b0 + CHUNK_BLOCKS).min(nb);
            let mut r = 0;
            while r < rows.m {
                let tile = Tile { rows, first_row: r, blocks: chunk.clone(), y: y.add(r * n + self.first_col), n, masks, first: b0 == 0 };
                match (rows.m - r, self.mins.is_empty()) {
                    (1, true) => self.tile::<1, false>(&tile),
                    (2, true) => self.tile::<2, false>(&tile),
                    (3, true) => self.tile::<3, false>(&tile),
                    (_, true) => self.tile::<ROWS, false>(&tile),
                    (1, false) => self.tile::<1, true>(&tile),
                    (2, false) => self.tile::<2, true>(&tile),
                    (3, false) => self.tile::<3, true>(&tile),
                    (_, false) => self.tile::<ROWS, true>(&tile),
                }
                r += ROWS;
            }
        }
    }

    /// `R` rows times the panel over a chunk of blocks, added to the sums in `y` (or from zero at the first
    /// chunk): per block, `sum += (integer dot) · (weight scale · row scale)`, and with `MINS`,
    /// `sum −= weight min · row block sum`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[inline]
    unsafe fn tile<const R: usize, const MINS: bool>(&self, t: &Tile) {
        let k = t.rows.k;
        let nb = k / QK8_0;
        let xs = t.rows.shifted.as_ptr().add(t.first_row * k);
        let dx = t.rows.scales.as_ptr().add(t.first_row * nb);
        let mut acc = [[_mm512_setzero_ps(); GROUPS]; R];
        if !t.first {
            for (r, a) in acc.iter_mut().enumerate() {
                for (g, a) in a.iter_mut().enumerate() {
                    *a = _mm512_maskz_loadu_ps(t.masks[g], t.y.add(r * t.n + 16 * g));
                }
            }
        }
        for b in t.blocks.clone() {
            let at = b * GROUPS * 16;
            let mut dots = [[_mm512_setzero_si512(); GROUPS]; R];
            for d in dots.iter_mut() {
                for (g, d) in d.iter_mut().enumerate() {
                    *d = _mm512_loadu_si512(self.offsets.as_ptr().add(at + 16 * g) as *const __m512i);
                }
            }
            let values = self.values.as_ptr().add(b * GROUPS * GROUP_VALUES);
            for quad in 0..QK8_0 / 4 {
                let w: [__m512i; GROUPS] = std::array::from_fn(|g| _mm512_loadu_si512(values.add(g * GROUP_VALUES + quad * 64) as *const __m512i));
                for (r, d) in dots.iter_mut().enumerate() {
                    let a = _mm512_set1_epi32((xs.add(r * k + b * QK8_0 + 4 * quad) as *const i32).read_unaligned());
                    for (d, w) in d.iter_mut().zip(&w) {
                        *d = _mm512_dpbusd_epi32(*d, a, *w);
                    }
                }
            }
            for g in 0..GROUPS {
                let scales = _mm512_loadu_ps(self.scales.as_ptr().add(at + 16 * g));
                for r in 0..R {
                    let scale = _mm512_mul_ps(scales, _mm512_set1_ps(*dx.add(r * nb + b)));
                    acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots[r][g]), scale, acc[r][g]);
                }
                if MINS {
                    let mins = _mm512_loadu_ps(self.mins.as_ptr().add(at + 16 * g));
                    for r in 0..R {
                        acc[r][g] = _mm512_fnmadd_ps(mins, _mm512_set1_ps(*t.rows.sums.as_ptr().add((t.first_row + r) * nb + b)), acc[r][g]);
                    }
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (g, a) in a.iter().enumerate() {
                _mm512_mask_storeu_ps(t.y.add(r * t.n + 16 * g), t.masks[g], *a);
            }
        }
    }
}

/// Rows `first_row..` of the activations over `blocks`, into `y` (their first output of the panel; row stride `n`).
struct Tile<'a> {
    rows: &'a QuantizedRows,
    first_row: usize,
    blocks: std::ops::Range<usize>,
    y: *mut f32,
    n: usize,
    masks: [__mmask16; GROUPS],
    first: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    fn skip() -> bool {
        if runs(GgmlDType::Q8_0) {
            return false;
        }
        eprintln!("skipped: this CPU lacks AVX-512 VNNI");
        true
    }

    /// The integer product equals, to f32 rounding, the sum over blocks of (row scale) · Σ (quantized activation ·
    /// candle's dequantized weight), computed in f64: every block's integer dot product is exact, whatever the
    /// panel, tile or chunk it falls in (shapes with short last panels, tiles and chunks).
    #[test]
    fn equals_the_product_with_the_rows_own_quantization() {
        if skip() {
            return;
        }
        let dev = Device::Cpu;
        for (dtype, n, k, m) in [(GgmlDType::Q8_0, 37, 96, 5), (GgmlDType::Q8_0, 300, 1024, 7), (GgmlDType::Q5_0, 49, 288, 3), (GgmlDType::Q5_0, 100, 3424, 6), (GgmlDType::Q8_0, 16, 32, 1), (GgmlDType::Q4K, 37, 256, 5), (GgmlDType::Q4K, 300, 1024, 7)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let deq: Vec<f32> = q.dequantize(&dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, m * k, &dev).unwrap().to_vec1().unwrap();
            let got = many_rows(dtype, &q.data().unwrap(), n, k, &x);
            for r in 0..m {
                let (xq, dx) = quantize_q8_0(&x[r * k..(r + 1) * k]);
                let want: Vec<f64> = (0..n)
                    .map(|j| (0..k).map(|i| dx[i / QK8_0] as f64 * xq[i] as f64 * deq[j * k + i] as f64).sum())
                    .collect();
                let scale = want.iter().fold(0f64, |s, v| s.max(v.abs()));
                for (j, (&g, &v)) in got[r * n..(r + 1) * n].iter().zip(&want).enumerate() {
                    assert!((g as f64 - v).abs() < 1e-5 * scale, "{dtype:?} {n}×{k}, row {r} col {j}: {g} against {v}");
                }
            }
        }
    }

    /// A row's outputs are the same bits whatever rows share the chunk (a prompt prefilled in other chunks
    /// gives the same cache).
    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() {
        if skip() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (100, 512);
        for dtype in [GgmlDType::Q8_0, GgmlDType::Q4K] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, 11 * k, &dev).unwrap().to_vec1().unwrap();
            let all = many_rows(dtype, &q.data().unwrap(), n, k, &x);
            for (first, rows) in [(0, 1), (3, 2), (5, 6)] {
                let some = many_rows(dtype, &q.data().unwrap(), n, k, &x[first * k..(first + rows) * k]);
                let same = some.iter().zip(&all[first * n..]).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{dtype:?}: rows {first}..{} alone differ", first + rows);
            }
        }
    }
}
