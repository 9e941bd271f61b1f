//! Models the engine can run. Today only Qwen3-VL; the engine drives it through [`VisionLanguageModel`]
//! so later families (e.g. GLM-4V) plug in beside it. No I/O here beyond reading the model directory.

pub mod activation;
pub mod linear;
pub mod qwen3_vl;

use candle_core::{DType, Tensor, D};

use crate::error::{Error, Result};
use crate::generate::KvCache;

pub use qwen3_vl::{Prompt, Qwen3VL, VisionFeatures};

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Model(e.to_string())
    }
}

/// What a model must offer the engine: encode images, lay out a prompt, run chunks of it through the
/// decoder filling a KV cache, then single decode steps.
pub trait VisionLanguageModel: Send {
    /// Longest sequence (prompt + generated) the model accepts.
    fn max_context(&self) -> usize;
    fn num_layers(&self) -> usize;
    fn image_token_id(&self) -> u32;
    /// Runs the vision encoder on preprocessed pixels of one or more images.
    fn encode_images(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<VisionFeatures>;
    /// Positions and image-row mapping of a token sequence (image tokens already expanded).
    fn prepare_prompt(&self, ids: &[u32], vision: Option<VisionFeatures>) -> Result<Prompt>;
    /// Runs prompt tokens `[cache.len(), end)` through the decoder. When `end` is the prompt's end,
    /// returns the f32 logits `[vocab]` of its last token (the output head is skipped otherwise).
    fn prefill(&self, cache: &mut KvCache, prompt: &Prompt, end: usize) -> Result<Option<Tensor>>;
    /// One generated token at the end of the cache; returns its f32 logits `[vocab]`.
    fn decode(&self, cache: &mut KvCache, prompt: &Prompt, token: u32) -> Result<Tensor>;
}

/// Records named intermediate tensors when enabled (fidelity tests); free otherwise.
#[derive(Default)]
pub struct Trace {
    enabled: bool,
    pub tensors: Vec<(String, Tensor)>,
}

impl Trace {
    pub fn off() -> Self {
        Self::default()
    }
    pub fn on() -> Self {
        Self { enabled: true, tensors: Vec::new() }
    }
    pub fn record(&mut self, name: impl FnOnce() -> String, t: &Tensor) {
        if self.enabled {
            self.tensors.push((name(), t.clone()));
        }
    }
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// A tensor of `dtype` on the CPU: where our CPU kernels (and bf16's widening to f32) apply.
pub(crate) fn is_cpu_with(x: &Tensor, dtype: DType) -> bool {
    x.device().is_cpu() && x.dtype() == dtype
}

/// Upper bound on attention-score elements materialised at once; longer queries are processed in
/// row chunks so a 64K-patch image or a long context never needs a quadratic buffer. 16 MB of f32: glibc
/// serves blocks this size from its heap, while 64 MB ones were mapped and zeroed afresh for every chunk
/// (page faults took ~15% of a vision encode).
const SCORE_BUDGET: usize = 1 << 22;

/// Scaled dot-product attention with grouped heads.
/// `q`: `[kv_heads, rep, lq, hd]`; `k`, `v`: `[kv_heads, lk, hd]`. With `causal_offset = Some(o)`,
/// query `i` sits at key index `o + i` and sees keys `0..=o+i`; `None` means full (non-causal).
/// Softmax runs in f32 as in transformers. Returns `[kv_heads, rep, lq, hd]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>) -> Result<Tensor> {
    if is_cpu_with(q, DType::BF16) && q.dim(2)? > 1 {
        // candle's CPU bf16 matmul is far slower than its f32 one: widen, attend, round once. Not for a
        // single query (decode), where widening the whole KV cache costs more than it saves.
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let out = attention_with_budget(&f(q)?, &f(k)?, &f(v)?, scale, causal_offset, SCORE_BUDGET)?;
        return Ok(out.to_dtype(DType::BF16)?);
    }
    attention_with_budget(q, k, v, scale, causal_offset, SCORE_BUDGET)
}

fn attention_with_budget(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>, budget: usize) -> Result<Tensor> {
    let (g, rep, lq, hd) = q.dims4()?;
    let lk = k.dim(1)?;
    let chunk = (budget / (g * rep * lk).max(1)).clamp(1, lq.max(1));
    let kt = k.t()?;
    let mut outs = Vec::with_capacity(lq.div_ceil(chunk));
    for start in (0..lq).step_by(chunk) {
        let c = chunk.min(lq - start);
        let qc = q.narrow(2, start, c)?.contiguous()?.reshape((g, rep * c, hd))?;
        let scores = qc.matmul(&kt)?.to_dtype(DType::F32)?;
        let probs = if scores.device().is_cpu() {
            scaled_masked_softmax_cpu(scores, scale, causal_offset.map(|o| o + start), c, lk)?
        } else {
            let mut scores = (scores * scale)?.reshape((g, rep, c, lk))?;
            if let Some(offset) = causal_offset {
                if c > 1 || offset + start + 1 < lk {
                    scores = scores.broadcast_add(&causal_mask(offset + start, c, lk, q.device())?)?;
                }
            }
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let probs = probs.to_dtype(v.dtype())?;
        let out = probs.reshape((g, rep * c, lk))?.matmul(v)?;
        outs.push(out.reshape((g, rep, c, hd))?);
    }
    Ok(if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(&outs, 2)? })
}

/// Independent running maxima and sums per softmax row, so the compiler vectorizes the loops.
const LANES: usize = 16;

/// `softmax(scores · scale + causal mask)` over the last dim in one pass on the CPU (candle's separate
/// scale, mask-add and softmax ops each allocate and traverse the whole score matrix, and dominated long
/// prefills). `scores` is f32 `[.., c, lk]`; row `i` of each `c`-row block sees keys `0..=first + i`
/// when `causal_first = Some(first)`. Masked keys get probability 0 without computing their exp.
fn scaled_masked_softmax_cpu(scores: Tensor, scale: f64, causal_first: Option<usize>, c: usize, lk: usize) -> Result<Tensor> {
    use rayon::prelude::*;
    let shape = scores.shape().clone();
    let mut data = scores.flatten_all()?.to_vec1::<f32>()?;
    let scale = scale as f32;
    data.par_chunks_mut(lk).enumerate().for_each(|(r, row)| {
        let visible = match causal_first {
            Some(first) => (first + r % c + 1).min(lk),
            None => lk,
        };
        let (seen, hidden) = row.split_at_mut(visible);
        // LANES independent maxima and sums so the compiler vectorizes (one running value is a serial chain).
        let mut maxima = [f32::NEG_INFINITY; LANES];
        let mut chunks = seen.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (x, m) in c.iter_mut().zip(&mut maxima) {
                *x *= scale;
                *m = if *x > *m { *x } else { *m };
            }
        }
        let mut max = maxima.into_iter().fold(f32::NEG_INFINITY, f32::max);
        for x in chunks.into_remainder() {
            *x *= scale;
            max = max.max(*x);
        }
        let mut sums = [0f32; LANES];
        let mut chunks = seen.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (x, s) in c.iter_mut().zip(&mut sums) {
                *x = (*x - max).exp();
                *s += *x;
            }
        }
        let mut sum: f32 = sums.iter().sum();
        for x in chunks.into_remainder() {
            *x = (*x - max).exp();
            sum += *x;
        }
        let inv = 1.0 / sum;
        seen.iter_mut().for_each(|x| *x *= inv);
        hidden.fill(0.0);
    });
    Ok(Tensor::from_vec(data, shape, &candle_core::Device::Cpu)?)
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

/// RMSNorm with transformers' arithmetic: normalise in f32, cast back, then scale by the weight.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    Ok(normed.to_dtype(dtype)?.broadcast_mul(weight)?)
}

/// Maximum |a - b| over all elements (both converted to f32); for tests and diagnostics.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        return Err(Error::Internal(format!("shape mismatch {:?} vs {:?}", a.dims(), b.dims())));
    }
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?;
    Ok(d.to_scalar::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    /// Row-by-row softmax attention over the visible keys only.
    fn naive(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, offset: usize) -> Tensor {
        let (g, rep, lq, _) = q.dims4().unwrap();
        let mut rows = Vec::new();
        for gi in 0..g {
            for r in 0..rep {
                for i in 0..lq {
                    let n = offset + i + 1;
                    let qi = q.i((gi, r, i..i + 1)).unwrap();
                    let s = (qi.matmul(&k.i((gi, 0..n)).unwrap().t().unwrap()).unwrap() * scale).unwrap();
                    let p = candle_nn::ops::softmax_last_dim(&s).unwrap();
                    rows.push(p.matmul(&v.i((gi, 0..n)).unwrap()).unwrap());
                }
            }
        }
        Tensor::cat(&rows, 0).unwrap().reshape(q.dims()).unwrap()
    }

    #[test]
    fn causal_attention_in_query_chunks_matches_the_naive_form() {
        let dev = Device::Cpu;
        let (g, rep, lq, offset, hd) = (2, 3, 7, 5, 8);
        let q = Tensor::randn(0f32, 1.0, (g, rep, lq, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (g, offset + lq, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (g, offset + lq, hd), &dev).unwrap();
        let want = naive(&q, &k, &v, 0.3, offset);
        for budget in [1, 40, 200, usize::MAX] {
            let got = attention_with_budget(&q, &k, &v, 0.3, Some(offset), budget).unwrap();
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "budget {budget}");
        }
        // Non-causal: every query sees every key, chunked or not.
        let full = attention_with_budget(&q, &k, &v, 0.3, None, usize::MAX).unwrap();
        let chunked = attention_with_budget(&q, &k, &v, 0.3, None, 30).unwrap();
        assert_eq!(max_abs_diff(&full, &chunked).unwrap(), 0.0);
    }
}
