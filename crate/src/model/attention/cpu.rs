//! Scaled dot-product attention kernels for the CPU, written over slices.
//!
//! Two kernels, both with the softmax computed online over fixed blocks of keys (a running maximum and sum
//! per query, no score buffer that grows with the context), both reading keys and values of f32, bf16 or f16
//! (the KV cache's dtype) and widening them to f32 as they go:
//! - [`tiled`] (prefill chunks, vision encoders): a tile of query rows times blocks of keys through gemm;
//!   causal blocks past a tile's last query are skipped.
//! - [`by_rows`] (decode steps): each query row dotted with each key; every KV head's keys are split into
//!   fixed spans that threads take, so a layer's cache is streamed once on all threads.
//!
//! A query's result never depends on the company it is computed in (the other rows of its chunk, batch or
//! tile, the thread count): tiles cover absolute query positions, so a query always sits at the same row of a
//! product of the same shape, and key blocks and spans are counted from key 0. That is what lets a prompt give
//! the same bits however it is chunked or shared, and a request the same tokens alone or in a batch.
//! Hand-written because candle has no CPU attention that skips masked blocks or streams a long cache once.

use std::sync::OnceLock;

use gemm::{gemm, Parallelism};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::model::vectorized::exp;
#[cfg(target_arch = "x86_64")]
use crate::model::vectorized::{avx2, avx512};

/// Elements keys and values are stored in.
pub trait Elem: Copy + Send + Sync + 'static {
    fn widen(self) -> f32;
    /// The values themselves when they are f32 already (gemm reads them in place).
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl Elem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    fn as_f32(x: &[Self]) -> Option<&[f32]> {
        Some(x)
    }
}

impl Elem for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: a shift, exact (half's to_f32 branches on NaN)
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

impl Elem for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Keys or values of one call, `[heads, keys, hd]`: rows `row_stride` elements apart, heads `head_stride`
/// apart, each row contiguous (a view of the KV cache's `[heads, capacity, hd]` buffer needs no copy).
#[derive(Clone, Copy)]
pub struct Kv<'a, T> {
    pub data: &'a [T],
    pub head_stride: usize,
    pub row_stride: usize,
}

impl<T: Elem> Kv<'_, T> {
    #[inline(always)]
    fn row(&self, head: usize, key: usize, hd: usize) -> &[T] {
        let at = head * self.head_stride + key * self.row_stride;
        &self.data[at..at + hd]
    }
}

/// One attention call: `q` is `[groups, rep, queries, hd]` (the `rep` query heads of a group share its KV
/// head); keys `[groups, keys, hd]`. With `causal_offset = Some(o)`, query `i` sits at key index `o + i` and
/// sees keys `0..=o+i`; `None`: every query sees every key.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub groups: usize,
    pub rep: usize,
    pub queries: usize,
    pub keys: usize,
    pub hd: usize,
    pub scale: f32,
    pub causal_offset: Option<usize>,
}

impl Dims {
    /// Keys query `i` sees.
    #[inline(always)]
    fn visible(&self, i: usize) -> usize {
        match self.causal_offset {
            Some(o) => (o + i + 1).min(self.keys),
            None => self.keys,
        }
    }

    fn q_row<'a>(&self, q: &'a [f32], group: usize, r: usize, i: usize) -> &'a [f32] {
        let at = ((group * self.rep + r) * self.queries + i) * self.hd;
        &q[at..at + self.hd]
    }
}

/// The shape of [`tiled`]'s tiles: query rows per tile (gemm runs near its peak from about 128 rows) and keys per
/// block. A tile's queries and a block's keys, values and scores stay in the core's L2 cache beside gemm's packed
/// panels, so the shape follows the L2 size gemm detects, per logical CPU (sysfs, else CPUID; an L2 shared by
/// two hyperthreads counts half). bench/attention.rs: 128 × 128 is the best on a Zen 3 with 512 KiB; with 2 MiB,
/// on a Xeon, 256 × 256 prefills 16K-token contexts about a fifth faster. A query's bits depend on the shape, so
/// it is fixed for the process (and machines with other caches may give other bits, as with gemm's kernels).
#[derive(Clone, Copy, Debug)]
struct Blocking {
    tile_rows: usize,
    key_block: usize,
}

impl Blocking {
    const SMALL_L2: Blocking = Blocking { tile_rows: 128, key_block: 128 };
    /// 1 MiB or more.
    const LARGE_L2: Blocking = Blocking { tile_rows: 256, key_block: 256 };
}

fn blocking() -> Blocking {
    static BLOCKING: OnceLock<Blocking> = OnceLock::new();
    *BLOCKING.get_or_init(|| if gemm_common::cache::CACHE_INFO[1].cache_bytes >= 1 << 20 { Blocking::LARGE_L2 } else { Blocking::SMALL_L2 })
}

/// Keys per span of [`by_rows`]: enough work per task to amortize its set-up, short enough that a 4K context
/// keeps a few threads busy per KV head.
const KEY_SPAN: usize = 512;

/// Attention for a chunk of queries through gemm, in tiles of query rows (all `rep` heads of a group at a run
/// of positions) times blocks of keys. Returns `[groups, rep, queries, hd]`.
pub fn tiled<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims) -> Vec<f32> {
    tiled_with(q, k, v, d, blocking())
}

/// [`tiled`] with a given tile shape.
fn tiled_with<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, b: Blocking) -> Vec<f32> {
    let positions = (b.tile_rows / d.rep).max(1);
    // Tiles cover absolute positions from a multiple of `positions`, so a query sits at the same tile row
    // however its prompt was chunked (gemm's result for a row may depend on where in the product it sits).
    let first = d.causal_offset.unwrap_or(0);
    let (tile0, tile_end) = (first / positions, (first + d.queries).div_ceil(positions));
    let tiles = tile_end - tile0;
    let parts: Vec<Vec<f32>> = (0..d.groups * tiles)
        .into_par_iter()
        .map_init(
            || Scratch::new(positions * d.rep, d.hd, b.key_block),
            |scratch, task| {
                let (group, tile) = (task / tiles, tile0 + task % tiles);
                tile_dispatch(q, k, v, d, group, tile * positions, positions, scratch)
            },
        )
        .collect();
    let mut out = vec![0f32; d.groups * d.rep * d.queries * d.hd];
    for (task, part) in parts.iter().enumerate() {
        let (group, tile) = (task / tiles, tile0 + task % tiles);
        for p in 0..positions {
            let Some(i) = (tile * positions + p).checked_sub(first).filter(|&i| i < d.queries) else { continue };
            for r in 0..d.rep {
                let at = ((group * d.rep + r) * d.queries + i) * d.hd;
                let row = (r * positions + p) * d.hd;
                out[at..at + d.hd].copy_from_slice(&part[row..row + d.hd]);
            }
        }
    }
    out
}

/// Per-thread buffers of [`tiled`].
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    /// Keys per block (`scores` is `[rows, key_block]`).
    key_block: usize,
    max: Vec<f32>,
    sum: Vec<f32>,
    visible: Vec<usize>,
}

impl Scratch {
    fn new(rows: usize, hd: usize, key_block: usize) -> Self {
        Self {
            q: vec![0.0; rows * hd],
            k: vec![0.0; key_block * hd],
            v: vec![0.0; key_block * hd],
            scores: vec![0.0; rows * key_block],
            key_block,
            max: vec![0.0; rows],
            sum: vec![0.0; rows],
            visible: vec![0; rows],
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tile_dispatch<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, start: usize, positions: usize, s: &mut Scratch) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F, AVX2 and FMA are present.
        return unsafe { tile_avx512(q, k, v, d, group, start, positions, s) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 and FMA are present.
        return unsafe { tile_avx2(q, k, v, d, group, start, positions, s) };
    }
    tile(q, k, v, d, group, start, positions, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, start: usize, positions: usize, s: &mut Scratch) -> Vec<f32> {
    tile(q, k, v, d, group, start, positions, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, start: usize, positions: usize, s: &mut Scratch) -> Vec<f32> {
    tile(q, k, v, d, group, start, positions, s)
}

/// One tile: the queries at absolute positions `start..start + positions` (rows for those outside the chunk
/// are zero and see no keys) of every head of `group`. Returns the tile's `[rows, hd]` outputs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, start: usize, positions: usize, s: &mut Scratch) -> Vec<f32> {
    let (hd, rows) = (d.hd, positions * d.rep);
    let first = d.causal_offset.unwrap_or(0);
    let mut out = vec![0f32; rows * hd];
    for r in 0..d.rep {
        for p in 0..positions {
            let row = r * positions + p;
            let dst = &mut s.q[row * hd..(row + 1) * hd];
            match (start + p).checked_sub(first).filter(|&i| i < d.queries) {
                Some(i) => {
                    dst.copy_from_slice(d.q_row(q, group, r, i));
                    s.visible[row] = d.visible(i);
                }
                None => {
                    dst.fill(0.0);
                    s.visible[row] = 0;
                }
            }
        }
    }
    s.max.fill(f32::NEG_INFINITY);
    s.sum.fill(0.0);
    let keys = s.visible.iter().copied().max().unwrap_or(0);
    let kb = s.key_block;
    for block in (0..keys).step_by(kb) {
        let n = kb.min(d.keys - block);
        let (keys_at, key_stride) = block_f32(k, group, block, n, hd, &mut s.k);
        // scores = scale · q · kᵀ, [rows, kb]; the product always has this shape (zero keys past n).
        // SAFETY: the buffers hold rows·hd and rows·kb values, the keys kb rows of hd values
        // `key_stride` apart, with these strides.
        unsafe {
            gemm(rows, kb, hd, s.scores.as_mut_ptr(), 1, kb as isize, false, s.q.as_ptr(), 1, hd as isize, keys_at, key_stride as isize, 1, 0.0, d.scale, false, false, false, Parallelism::None);
        }
        for row in 0..rows {
            let seen = s.visible[row].saturating_sub(block).min(kb);
            let scores = &mut s.scores[row * kb..(row + 1) * kb];
            if seen == 0 {
                // A row that sees none of this block adds exact zeros: its bits do not depend on whether
                // tile-mates made the block run.
                scores.fill(0.0);
                continue;
            }
            let block_max = max(&scores[..seen]);
            let new_max = s.max[row].max(block_max);
            if new_max > s.max[row] {
                let fix = exp(s.max[row] - new_max);
                s.sum[row] *= fix;
                out[row * hd..(row + 1) * hd].iter_mut().for_each(|o| *o *= fix);
                s.max[row] = new_max;
            }
            s.sum[row] += exp_in_place(&mut scores[..seen], new_max);
            scores[seen..].fill(0.0);
        }
        let (values_at, value_stride) = block_f32(v, group, block, n, hd, &mut s.v);
        // out += p · v
        // SAFETY: as above; out holds rows·hd values.
        unsafe {
            gemm(rows, hd, kb, out.as_mut_ptr(), 1, hd as isize, true, s.scores.as_ptr(), 1, kb as isize, values_at, 1, value_stride as isize, 1.0, 1.0, false, false, false, Parallelism::None);
        }
    }
    for (row, o) in out.chunks_exact_mut(hd).enumerate() {
        if s.sum[row] > 0.0 {
            let inv = 1.0 / s.sum[row];
            o.iter_mut().for_each(|x| *x *= inv);
        }
    }
    out
}

/// Keys (or values) `block..block + n` of `group` as a block of `dst.len() / hd` rows of f32: a pointer to the
/// first and the distance between rows. f32 rows of a full block are read in place; others are widened into
/// `dst` (zeros after `n`).
#[inline(always)]
fn block_f32<T: Elem>(kv: Kv<T>, group: usize, block: usize, n: usize, hd: usize, dst: &mut [f32]) -> (*const f32, usize) {
    if n * hd == dst.len() {
        if let Some(data) = T::as_f32(kv.data) {
            return (data[group * kv.head_stride + block * kv.row_stride..].as_ptr(), kv.row_stride);
        }
    }
    for (j, out) in dst.chunks_exact_mut(hd).enumerate() {
        if j < n {
            out.iter_mut().zip(kv.row(group, block + j, hd)).for_each(|(o, &x)| *o = x.widen());
        } else {
            out.fill(0.0);
        }
    }
    (dst.as_ptr(), hd)
}

/// Attention for a few query rows (decode steps), each dotted with every key it sees. The work is split by
/// KV head and by fixed spans of [`KEY_SPAN`] keys, each span's keys and values read once for all rows; the
/// spans' partial softmax sums are merged in order. Returns `[groups, rep, queries, hd]`.
pub fn by_rows<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims) -> Vec<f32> {
    let keys = (0..d.queries).map(|i| d.visible(i)).max().unwrap_or(0);
    let spans = keys.div_ceil(KEY_SPAN).max(1);
    let parts: Vec<Span> = (0..d.groups * spans).into_par_iter().map(|task| span_dispatch(q, k, v, d, task / spans, task % spans)).collect();
    let (rows, hd) = (d.rep * d.queries, d.hd);
    let mut out = vec![0f32; d.groups * rows * hd];
    for (group, parts) in parts.chunks_exact(spans).enumerate() {
        for row in 0..rows {
            let max = parts.iter().map(|p| p.max[row]).fold(f32::NEG_INFINITY, f32::max);
            let o = &mut out[(group * rows + row) * hd..(group * rows + row + 1) * hd];
            let mut sum = 0.0;
            for p in parts.iter().filter(|p| p.sum[row] > 0.0) {
                let w = exp(p.max[row] - max);
                sum += p.sum[row] * w;
                o.iter_mut().zip(&p.out[row * hd..(row + 1) * hd]).for_each(|(a, &b)| *a += b * w);
            }
            if sum > 0.0 {
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|x| *x *= inv);
            }
        }
    }
    out
}

/// One span's unnormalized softmax: per row its maximum score, the sum of `exp(score - max)` and the
/// values weighted by those.
struct Span {
    max: Vec<f32>,
    sum: Vec<f32>,
    out: Vec<f32>,
}

fn span_dispatch<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, span: usize) -> Span {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: AVX-512F, AVX2 and FMA are present.
        return unsafe { span_avx512(q, k, v, d, group, span) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 and FMA are present.
        return unsafe { span_avx2(q, k, v, d, group, span) };
    }
    span_rows(q, k, v, d, group, span)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn span_avx512<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, span: usize) -> Span {
    span_rows(q, k, v, d, group, span)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn span_avx2<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, span: usize) -> Span {
    span_rows(q, k, v, d, group, span)
}

#[inline(always)]
fn span_rows<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims, group: usize, span: usize) -> Span {
    let (rows, hd) = (d.rep * d.queries, d.hd);
    let first = span * KEY_SPAN;
    let n = (first + KEY_SPAN).min(d.keys).saturating_sub(first);
    // Row r·queries + i is head r's query i; it sees the span's first seen[row] keys.
    let seen: Vec<usize> = (0..rows).map(|row| d.visible(row % d.queries).saturating_sub(first).min(n)).collect();
    let queries: Vec<&[f32]> = (0..rows).map(|row| d.q_row(q, group, row / d.queries, row % d.queries)).collect();
    let mut scores = vec![0f32; rows * n];
    for j in 0..n {
        let key = k.row(group, first + j, hd);
        for (row, query) in queries.iter().enumerate() {
            if j < seen[row] {
                scores[row * n + j] = dot(query, key) * d.scale;
            }
        }
    }
    let mut span = Span { max: vec![f32::NEG_INFINITY; rows], sum: vec![0.0; rows], out: vec![0.0; rows * hd] };
    for (row, &seen) in seen.iter().enumerate() {
        if seen > 0 {
            let s = &mut scores[row * n..row * n + seen];
            span.max[row] = max(s);
            span.sum[row] = exp_in_place(s, span.max[row]);
        }
    }
    for j in 0..n {
        let value = v.row(group, first + j, hd);
        for (row, out) in span.out.chunks_exact_mut(hd).enumerate() {
            if j < seen[row] {
                let p = scores[row * n + j];
                out.iter_mut().zip(value).for_each(|(o, &x)| *o += p * x.widen());
            }
        }
    }
    span
}

/// Independent running values per loop, so the compiler vectorizes (one running value is a serial chain).
const LANES: usize = 16;

/// `a · b`, `b` widened as it is read.
#[inline(always)]
fn dot<T: Elem>(a: &[f32], b: &[T]) -> f32 {
    let mut sums = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y.widen()).sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in sums.iter_mut().zip(xa).zip(xb) {
            *s += x * y.widen();
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (m, &v) in maxima.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    maxima.into_iter().fold(tail, f32::max)
}

/// `x ← exp(x - max)`; returns the sum.
#[inline(always)]
fn exp_in_place(x: &mut [f32], max: f32) -> f32 {
    let mut sums = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (v, s) in c.iter_mut().zip(&mut sums) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-2, 2] (a logistic map), so the tests need no RNG.
    fn values(n: usize, seed: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = (x * 3.9 * (1.0 - x)).clamp(0.001, 0.999);
                x * 4.0 - 2.0
            })
            .collect()
    }

    fn kv<T>(data: &[T], keys: usize, hd: usize) -> Kv<'_, T> {
        Kv { data, head_stride: keys * hd, row_stride: hd }
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// On one machine, the 512-bit build of the kernels gives the bits of the 256-bit build, for every tile of a
    /// chunk and every decode span, from f32 and bf16 keys and values, with either tile shape.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_build_gives_the_bits_of_the_avx2_build() {
        if !avx512() {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let (groups, rep, queries, keys, hd) = (2, 3, 300, 1100, 64);
        let (q, k, v) = (values(groups * rep * queries * hd, 0.37), values(groups * keys * hd, 0.41), values(groups * keys * hd, 0.53));
        let (k16, v16): (Vec<bf16>, Vec<bf16>) = (k.iter().map(|&x| bf16::from_f32(x)).collect(), v.iter().map(|&x| bf16::from_f32(x)).collect());
        let d = Dims { groups, rep, queries, keys, hd, scale: 0.125, causal_offset: Some(keys - queries) };
        fn check<T: Elem>(q: &[f32], k: Kv<T>, v: Kv<T>, d: &Dims) {
            for group in 0..d.groups {
                for span in 0..d.keys.div_ceil(KEY_SPAN) {
                    // SAFETY: avx512() checked AVX-512F, AVX2 and FMA.
                    let (wide, narrow) = unsafe { (span_avx512(q, k, v, d, group, span), span_avx2(q, k, v, d, group, span)) };
                    assert!(same_bits(&wide.out, &narrow.out) && same_bits(&wide.sum, &narrow.sum), "span {span}");
                }
                for b in [Blocking::SMALL_L2, Blocking::LARGE_L2] {
                    let positions = b.tile_rows / d.rep;
                    let first = d.causal_offset.unwrap_or(0);
                    // every tile that holds a query of the chunk, as `tiled` runs them
                    for tile in first / positions..(first + d.queries).div_ceil(positions) {
                        let (mut s1, mut s2) = (Scratch::new(positions * d.rep, d.hd, b.key_block), Scratch::new(positions * d.rep, d.hd, b.key_block));
                        // SAFETY: as above.
                        let (wide, narrow) = unsafe {
                            (tile_avx512(q, k, v, d, group, tile * positions, positions, &mut s1), tile_avx2(q, k, v, d, group, tile * positions, positions, &mut s2))
                        };
                        assert!(wide.iter().any(|&x| x != 0.0), "tile {tile} holds queries");
                        assert!(same_bits(&wide, &narrow), "{b:?}, tile {tile}");
                    }
                }
            }
        }
        check(&q, kv(&k, keys, hd), kv(&v, keys, hd), &d);
        check(&q, kv(&k16, keys, hd), kv(&v16, keys, hd), &d);
    }

    /// Both tile shapes (a process uses only the one its L2 picks): the same values up to rounding, and with
    /// each, a query's bits do not depend on the chunk it is prefilled in.
    #[test]
    fn both_tile_shapes_agree_and_each_is_chunk_independent() {
        let (groups, rep, keys, hd) = (2, 2, 900, 32);
        let (q, k, v) = (values(groups * rep * keys * hd, 0.29), values(groups * keys * hd, 0.61), values(groups * keys * hd, 0.71));
        let (k, v) = (kv(&k, keys, hd), kv(&v, keys, hd));
        let whole = Dims { groups, rep, queries: keys, keys, hd, scale: 0.2, causal_offset: Some(0) };
        let shapes = [Blocking::SMALL_L2, Blocking::LARGE_L2];
        let outs: Vec<Vec<f32>> = shapes.iter().map(|&b| tiled_with(&q, k, v, &whole, b)).collect();
        assert!(outs[0].iter().zip(&outs[1]).all(|(a, b)| (a - b).abs() < 1e-5));
        for (b, out) in shapes.iter().zip(&outs) {
            for (start, n) in [(0, 1), (1, 300), (333, 5), (650, 250)] {
                // the chunk's queries, [groups, rep, n, hd], over the first start + n keys
                let mut part_q = Vec::new();
                for g in 0..groups {
                    for r in 0..rep {
                        let at = ((g * rep + r) * keys + start) * hd;
                        part_q.extend_from_slice(&q[at..at + n * hd]);
                    }
                }
                let d = Dims { queries: n, keys: start + n, causal_offset: Some(start), ..whole };
                let part = tiled_with(&part_q, k, v, &d, *b);
                for g in 0..groups {
                    for r in 0..rep {
                        let (at, from) = (((g * rep + r) * n) * hd, ((g * rep + r) * keys + start) * hd);
                        assert!(same_bits(&part[at..at + n * hd], &out[from..from + n * hd]), "{b:?}, chunk {start}+{n}");
                    }
                }
            }
        }
    }
}
