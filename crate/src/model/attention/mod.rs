//! Scaled dot-product attention with grouped heads: the decoder's causal attention over its KV cache and the
//! vision towers' full attention. On the CPU it runs our kernels ([`cpu`]); elsewhere candle's ops.

pub mod cpu;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use half::{bf16, f16};

use super::{KvCache, Step};
use crate::error::{Error, Result};

/// Scaled dot-product attention with grouped heads.
/// `q`: `[kv_heads, rep, lq, hd]`; `k`, `v`: `[kv_heads, lk, hd]` (rows may be strided, as views of the KV
/// cache are). With `causal_offset = Some(o)`, query `i` sits at key index `o + i` and sees keys `0..=o+i`;
/// `None` means full (non-causal). Softmax runs in f32 as in transformers. Returns `[kv_heads, rep, lq, hd]`
/// in `q`'s dtype.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>) -> Result<Tensor> {
    attention_as(q, k, v, scale, causal_offset, Kernel::Tiled)
}

/// [`attention`] as a causal prefill chunk at `offset` runs it (for benchmarks).
pub fn attention_for_prefill(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, offset: usize) -> Result<Tensor> {
    attention_as(q, k, v, scale, Some(offset), Kernel::Tiled)
}

/// [`attention`] as a decode step at `offset` runs it (for benchmarks).
pub fn attention_for_decode(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, offset: usize) -> Result<Tensor> {
    attention_as(q, k, v, scale, Some(offset), Kernel::ByRows)
}

/// Which CPU kernel runs, so a token's result never depends on its company: prefill chunks and vision
/// encoders go through gemm tiles, decode steps through per-row dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Tiled,
    ByRows,
}

fn attention_as(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>, kernel: Kernel) -> Result<Tensor> {
    if q.device().is_cpu() {
        let op = CpuAttention { scale: scale as f32, causal_offset, kernel };
        return Ok(q.contiguous()?.apply_op3_no_bwd(k, v, &op)?);
    }
    // Off the CPU (a KV cache may hold another dtype than the model computes in).
    let (k, v) = (k.to_dtype(q.dtype())?, v.to_dtype(q.dtype())?);
    attention_with_budget(q, &k, &v, scale, causal_offset, SCORE_BUDGET)
}

/// Causal self-attention of one decoder layer over its KV cache: appends this chunk's `k`, `v`
/// (`[kv_heads, len, hd]`) to layer `layer` of `cache`, attends with `q` (`[heads, len, hd]`; the query
/// heads sharing a KV head are adjacent, as transformers' `repeat_kv` has them) at the KV indices after
/// the committed ones, and returns `[len, heads·hd]`.
pub fn cached_attention(cache: &mut KvCache, layer: usize, q: &Tensor, k: &Tensor, v: &Tensor, step: Step) -> Result<Tensor> {
    let (nh, len, hd) = q.dims3()?;
    let nkv = k.dim(0)?;
    let offset = cache.len();
    let (k, v) = cache.append(layer, k, v)?;
    let q = q.reshape((nkv, nh / nkv, len, hd))?;
    let kernel = match step {
        Step::Prefill => Kernel::Tiled,
        Step::Decode => Kernel::ByRows,
    };
    let attn = attention_as(&q, &k, &v, 1.0 / (hd as f64).sqrt(), Some(offset), kernel)?;
    Ok(attn.reshape((nh, len, hd))?.transpose(0, 1)?.reshape((len, nh * hd))?)
}

/// [`cached_attention`] for several sequences at once: the rows of `q`, `k`, `v` (`[heads, rows, hd]`) are
/// consecutive segments, `lens[i]` rows continuing `caches[i]`; each segment attends to its own cache only.
/// Returns `[rows, heads·hd]`.
pub fn batched_attention(caches: &mut [&mut KvCache], lens: &[usize], layer: usize, q: &Tensor, k: &Tensor, v: &Tensor, step: Step) -> Result<Tensor> {
    if let [cache] = caches {
        return cached_attention(cache, layer, q, k, v, step);
    }
    let mut outs = Vec::with_capacity(caches.len());
    let mut at = 0;
    for (cache, &n) in caches.iter_mut().zip(lens) {
        let rows = |t: &Tensor| -> Result<Tensor> { Ok(t.narrow(1, at, n)?.contiguous()?) };
        outs.push(cached_attention(cache, layer, &rows(q)?, &rows(k)?, &rows(v)?, step)?);
        at += n;
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// [`attention`] on the CPU as a candle op over the three tensors' storage (keys and values read in place).
struct CpuAttention {
    scale: f32,
    causal_offset: Option<usize>,
    kernel: Kernel,
}

impl CustomOp3 for CpuAttention {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, sq: &CpuStorage, lq: &Layout, sk: &CpuStorage, lk: &Layout, sv: &CpuStorage, lv: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (groups, rep, queries, hd) = lq.shape().dims4()?;
        let (Some((qa, qb)), true) = (lq.contiguous_offsets(), lk.shape() == lv.shape()) else {
            candle_core::bail!("attention: q must be contiguous and k, v of one shape (q {:?}, k {:?}, v {:?})", lq.shape(), lk.shape(), lv.shape());
        };
        let (kg, keys, khd) = lk.shape().dims3()?;
        if kg != groups || khd != hd || keys == 0 {
            candle_core::bail!("attention: q {:?} with k {:?}", lq.shape(), lk.shape());
        }
        let d = cpu::Dims { groups, rep, queries, keys, hd, scale: self.scale, causal_offset: self.causal_offset };
        let q: std::borrow::Cow<[f32]> = match sq {
            CpuStorage::F32(x) => (&x[qa..qb]).into(),
            CpuStorage::BF16(x) => x[qa..qb].iter().map(|v| v.to_f32()).collect::<Vec<_>>().into(),
            CpuStorage::F16(x) => x[qa..qb].iter().map(|v| v.to_f32()).collect::<Vec<_>>().into(),
            _ => candle_core::bail!("attention: queries of dtype {:?}", sq.dtype()),
        };
        let out = match (sk, sv) {
            (CpuStorage::F32(k), CpuStorage::F32(v)) => self.run(&q, kv(k, lk)?, kv(v, lv)?, &d),
            (CpuStorage::BF16(k), CpuStorage::BF16(v)) => self.run(&q, kv(k, lk)?, kv(v, lv)?, &d),
            (CpuStorage::F16(k), CpuStorage::F16(v)) => self.run(&q, kv(k, lk)?, kv(v, lv)?, &d),
            _ => candle_core::bail!("attention: keys of dtype {:?} with values of dtype {:?}", sk.dtype(), sv.dtype()),
        };
        let out = match sq {
            CpuStorage::BF16(_) => CpuStorage::BF16(out.into_iter().map(bf16::from_f32).collect()),
            CpuStorage::F16(_) => CpuStorage::F16(out.into_iter().map(f16::from_f32).collect()),
            _ => CpuStorage::F32(out),
        };
        Ok((out, lq.shape().clone()))
    }
}

impl CpuAttention {
    fn run<T: cpu::Elem>(&self, q: &[f32], k: cpu::Kv<T>, v: cpu::Kv<T>, d: &cpu::Dims) -> Vec<f32> {
        match self.kernel {
            Kernel::Tiled => cpu::tiled(q, k, v, d),
            Kernel::ByRows => cpu::by_rows(q, k, v, d),
        }
    }
}

/// A `[heads, keys, hd]` view with contiguous rows, read in place.
fn kv<'a, T>(data: &'a [T], l: &Layout) -> candle_core::Result<cpu::Kv<'a, T>> {
    let (heads, keys, hd) = l.shape().dims3()?;
    let &[head_stride, row_stride, col] = l.stride() else { unreachable!("a 3-d layout has 3 strides") };
    if col != 1 && hd > 1 {
        candle_core::bail!("attention: keys and values need contiguous rows (strides {:?})", l.stride());
    }
    let end = l.start_offset() + (heads - 1) * head_stride + (keys - 1) * row_stride + hd;
    if end > data.len() {
        candle_core::bail!("attention: a view of {end} elements over a buffer of {}", data.len());
    }
    Ok(cpu::Kv { data: &data[l.start_offset()..end], head_stride, row_stride })
}

/// Upper bound on attention-score elements materialised at once by the candle path (off the CPU); longer
/// queries are processed in row chunks so a 64K-patch image or a long context never needs a quadratic buffer.
const SCORE_BUDGET: usize = 1 << 22;

/// [`attention`] through candle's ops, in query chunks of at most `budget` scores.
fn attention_with_budget(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>, budget: usize) -> Result<Tensor> {
    let (g, rep, lq, hd) = q.dims4()?;
    let lk = k.dim(1)?;
    let chunk = (budget / (g * rep * lk).max(1)).clamp(1, lq.max(1));
    let kt = k.t()?;
    let mut outs = Vec::with_capacity(lq.div_ceil(chunk));
    for start in (0..lq).step_by(chunk) {
        let c = chunk.min(lq - start);
        let qc = q.narrow(2, start, c)?.contiguous()?.reshape((g, rep * c, hd))?;
        let mut scores = (qc.matmul(&kt)?.to_dtype(DType::F32)? * scale)?.reshape((g, rep, c, lk))?;
        if let Some(offset) = causal_offset {
            if c > 1 || offset + start + 1 < lk {
                scores = scores.broadcast_add(&causal_mask(offset + start, c, lk, q.device())?)?;
            }
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?.reshape((g, rep * c, lk))?;
        outs.push(probs.matmul(v)?.reshape((g, rep, c, hd))?);
    }
    if outs.is_empty() {
        return Err(Error::Internal("attention with no queries".into()));
    }
    Ok(if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(&outs, 2)? })
}

/// `[c, lk]` additive mask: 0 where key `j <= first + i`, -inf after.
fn causal_mask(first: usize, c: usize, lk: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mut m = vec![0f32; c * lk];
    for i in 0..c {
        for j in (first + i + 1).min(lk)..lk {
            m[i * lk + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Tensor::from_vec(m, (c, lk), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff;
    use candle_core::{Device, IndexOp};

    /// Row-by-row softmax attention over the visible keys only.
    fn naive(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, offset: Option<usize>) -> Tensor {
        let (g, rep, lq, _) = q.dims4().unwrap();
        let lk = k.dim(1).unwrap();
        let mut rows = Vec::new();
        for gi in 0..g {
            for r in 0..rep {
                for i in 0..lq {
                    let n = offset.map_or(lk, |o| o + i + 1);
                    let qi = q.i((gi, r, i..i + 1)).unwrap();
                    let s = (qi.matmul(&k.i((gi, 0..n)).unwrap().t().unwrap()).unwrap() * scale).unwrap();
                    let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
                    rows.push(p.matmul(&v.i((gi, 0..n)).unwrap()).unwrap());
                }
            }
        }
        Tensor::cat(&rows, 0).unwrap().reshape(q.dims()).unwrap()
    }

    fn random(shape: (usize, usize, usize, usize), keys: usize, seed: u64) -> (Tensor, Tensor, Tensor) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut t = |dims: &[usize]| {
            let n: usize = dims.iter().product();
            Tensor::from_vec((0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect::<Vec<_>>(), dims, &Device::Cpu).unwrap()
        };
        let (g, rep, lq, hd) = shape;
        (t(&[g, rep, lq, hd]), t(&[g, keys, hd]), t(&[g, keys, hd]))
    }

    #[test]
    fn both_kernels_and_the_candle_path_match_the_naive_form() {
        // Chunks past a key block and a key span, with a few heads per group, causal and not.
        for (g, rep, lq, offset, hd) in [(2, 3, 7, 5, 8), (2, 2, 150, 600, 16), (1, 5, 70, 0, 24)] {
            let (q, k, v) = random((g, rep, lq, hd), offset + lq, 7);
            let want = naive(&q, &k, &v, 0.3, Some(offset));
            for kernel in [Kernel::Tiled, Kernel::ByRows] {
                let got = attention_as(&q, &k, &v, 0.3, Some(offset), kernel).unwrap();
                assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "{kernel:?} {:?}", (g, rep, lq, offset, hd));
            }
            for budget in [1, 40, 200, usize::MAX] {
                let got = attention_with_budget(&q, &k, &v, 0.3, Some(offset), budget).unwrap();
                assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "candle path, budget {budget}");
            }
            let want = naive(&q, &k, &v, 0.3, None);
            let got = attention(&q, &k, &v, 0.3, None).unwrap();
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "non-causal {:?}", (g, rep, lq, offset, hd));
        }
    }

    #[test]
    fn a_query_gets_the_same_bits_in_any_chunk() {
        let (g, rep, len, hd) = (2, 2, 700, 32);
        let (q, k, v) = random((g, rep, len, hd), len, 11);
        let whole = attention_as(&q, &k, &v, 0.2, Some(0), Kernel::Tiled).unwrap();
        // Chunks starting anywhere, as a prompt prefilled in other chunks or after a shared prefix has them.
        for (start, n) in [(0, 1), (1, 300), (333, 5), (650, 50), (699, 1)] {
            let part = attention_as(&q.narrow(2, start, n).unwrap(), &k.narrow(1, 0, start + n).unwrap(), &v.narrow(1, 0, start + n).unwrap(), 0.2, Some(start), Kernel::Tiled).unwrap();
            assert_eq!(max_abs_diff(&part, &whole.narrow(2, start, n).unwrap()).unwrap(), 0.0, "chunk {start}+{n}");
        }
        // Decode rows: the same bits for a query alone as with others, over strided views of a larger buffer.
        let buf_k = Tensor::cat(&[&k, &k], 1).unwrap();
        let buf_v = Tensor::cat(&[&v, &v], 1).unwrap();
        let last = |t: &Tensor| t.narrow(2, len - 2, 2).unwrap();
        let pair = attention_as(&last(&q), &buf_k.narrow(1, 0, len).unwrap(), &buf_v.narrow(1, 0, len).unwrap(), 0.2, Some(len - 2), Kernel::ByRows).unwrap();
        let one = attention_as(&q.narrow(2, len - 1, 1).unwrap(), &k, &v, 0.2, Some(len - 1), Kernel::ByRows).unwrap();
        assert_eq!(max_abs_diff(&pair.narrow(2, 1, 1).unwrap(), &one).unwrap(), 0.0);
    }

    #[test]
    fn keys_and_values_in_bf16_or_f16_are_widened() {
        let (q, k, v) = random((2, 2, 40, 16), 90, 3);
        for dtype in [DType::BF16, DType::F16] {
            let (k, v) = (k.to_dtype(dtype).unwrap(), v.to_dtype(dtype).unwrap());
            let want = naive(&q, &k.to_dtype(DType::F32).unwrap(), &v.to_dtype(DType::F32).unwrap(), 0.3, Some(50));
            for kernel in [Kernel::Tiled, Kernel::ByRows] {
                let got = attention_as(&q, &k, &v, 0.3, Some(50), kernel).unwrap();
                assert_eq!(got.dtype(), DType::F32);
                assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "{dtype:?} {kernel:?}");
            }
        }
    }
}
