//! Models the engine can run. [`load`] reads a model directory's `config.json`, picks the family by its
//! `model_type` and opens the weights; each family lives in its own folder, builds from its parsed config and
//! a weight source, and does no I/O. The engine drives every family through [`VisionLanguageModel`] and
//! learns what it needs (token ids, image geometry, template quirks) from its [`ModelSpec`].

pub mod activation;
pub mod config_keys;
#[cfg(target_arch = "x86_64")]
pub mod few_rows;
pub mod glm4v;
pub mod kv_cache;
pub mod linear;
pub mod norm;
pub mod prompt;
pub mod qkernels;
pub mod qwen3_vl;
pub mod rope;
pub mod vision_tower;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::json_file::{read_json, Keys};
use crate::quant::{Quantization, QuantizedWeights};
use crate::vision::PreprocessorConfig;
use crate::weights::Weights;

pub use glm4v::Glm4v;
pub use kv_cache::KvCache;
pub use norm::{rms_norm, LayerNorm};
pub use prompt::{Prompt, VisionFeatures};
pub use qwen3_vl::Qwen3VL;

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Model(e.to_string())
    }
}

/// A model family: how `config.json` names it, and how to build it from that config and the weights.
struct Family {
    model_type: &'static str,
    /// The `architectures` entry of checkpoints without a `model_type`.
    architecture: &'static str,
    build: fn(config: &Value, path: &Path, weights: &Weights) -> Result<Box<dyn VisionLanguageModel>>,
}

/// Every family the engine runs. A new family is one folder and one entry here.
const FAMILIES: &[Family] = &[
    Family { model_type: "qwen3_vl", architecture: "Qwen3VLForConditionalGeneration", build: qwen3_vl::build },
    Family { model_type: "glm4v", architecture: "Glm4vForConditionalGeneration", build: glm4v::build },
];

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// The type of every tensor that is not quantized.
    pub dtype: DType,
    /// Quantize the decoder's linear weights and the output head (see `crate::quant`).
    pub quantize: Option<Quantization>,
    /// Where the quantized weights are cached (the OS cache directory when `None`).
    pub quant_cache_dir: Option<PathBuf>,
}

/// Loads a Hugging Face model directory: `config.json` picks the family, the weights (`model.safetensors`
/// or shards with an index) are converted to `dtype` on `device`.
pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Box<dyn VisionLanguageModel>> {
    load_with(dir, &LoadOptions { device: device.clone(), dtype, quantize: None, quant_cache_dir: None })
}

/// [`load`] with every option. Quantized weights are made tensor by tensor from the mapped files (or read
/// from a valid cache), and the cache is written once the model is built.
pub fn load_with(dir: &Path, opts: &LoadOptions) -> Result<Box<dyn VisionLanguageModel>> {
    if !dir.is_dir() {
        return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
    }
    let path = dir.join("config.json");
    let config = read_json(&path)?;
    let family = family_of(&Keys::new(&path, &config))?;
    let mut weights = Weights::from_dir(dir, &opts.device, opts.dtype)?;
    if let Some(q) = opts.quantize {
        weights.set_quantization(QuantizedWeights::open(q, &weights.source_files(), opts.quant_cache_dir.as_deref())?);
    }
    let model = (family.build)(&config, &path, &weights)?;
    if let Some(q) = weights.quantization() {
        q.finish()?;
    }
    Ok(model)
    // `weights` (the mappings) is dropped here: the model holds its own tensors.
}

/// The family named by `model_type` (or, without one, by `architectures`).
fn family_of(k: &Keys) -> Result<&'static Family> {
    let supported = || FAMILIES.iter().map(|f| format!("\"{}\"", f.model_type)).collect::<Vec<_>>().join(", ");
    if let Some(mt) = k.get("model_type") {
        let name = mt.as_str().ok_or_else(|| k.err("model_type", format!("expected a string, got {mt}")))?;
        return FAMILIES
            .iter()
            .find(|f| f.model_type == name)
            .ok_or_else(|| k.err("model_type", format!("unsupported architecture \"{name}\" (supported: {})", supported())));
    }
    if let Some(archs) = k.get("architectures") {
        let names: Vec<&str> = archs.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
        return FAMILIES.iter().find(|f| names.contains(&f.architecture)).ok_or_else(|| {
            k.err("architectures", format!("unsupported architecture {archs} (supported model_type: {})", supported()))
        });
    }
    Err(k.err("model_type", format!("missing (supported: {})", supported())))
}

/// What the engine needs to know about a model, in terms no family owns.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// `config.json`'s `model_type`.
    pub model_type: &'static str,
    pub vocab_size: usize,
    pub num_layers: usize,
    /// Longest sequence (prompt + generated) the model accepts.
    pub max_context: usize,
    /// The placeholder the chat template writes for an image, expanded to one token per merged patch.
    pub image_token_id: u32,
    /// Image preprocessing as the family's checkpoints do it (patch, merge and temporal patch sizes,
    /// pixel budget, mean/std); a model directory's `preprocessor_config.json` overrides it key by key.
    pub image_processor: PreprocessorConfig,
    /// Tokens that always end generation, by their text (looked up in the tokenizer), besides
    /// `generation_config.json`'s `eos_token_id`.
    pub stop_tokens: &'static [&'static str],
    /// The chat template reads message content as a string (GLM-4.1V's does for system and assistant
    /// turns): messages whose parts are all text are passed as one string, the parts joined, as vLLM does
    /// for such templates. Otherwise a list would be printed as its Python repr.
    pub text_content_as_string: bool,
}

/// What a model must offer the engine: encode images, lay out a prompt, run chunks of it through the
/// decoder filling a KV cache, then single decode steps.
pub trait VisionLanguageModel: Send {
    fn spec(&self) -> &ModelSpec;

    /// Runs the vision encoder on preprocessed pixels of one or more images (`[n_patches, C·T·P·P]` in the
    /// processor's block-major order, `grids` in patches), recording intermediate tensors in `trace`.
    fn encode_images_traced(&self, pixel_values: &Tensor, grids: &[[usize; 3]], trace: &mut Trace) -> Result<VisionFeatures>;

    /// Runs prompt tokens `[cache.len(), end)` through the decoder, appending to the cache; returns their
    /// final-normed hidden states `[n, hidden]`.
    fn forward_prompt(&self, cache: &mut KvCache, prompt: &Prompt, end: usize, trace: &mut Trace) -> Result<Tensor>;

    /// One generated token for each of several sequences, decoded together (their linear layers run as one
    /// product, so the weights are read once for all): `tokens[i]` at KV index `caches[i].len()` of the
    /// sequence whose prompt is `prompts[i]` (every rotary axis at `caches[i].len() + rope_delta`). Returns
    /// their final hidden states `[n, hidden]`. A sequence's result does not depend on the others.
    fn forward_tokens(&self, caches: &mut [&mut KvCache], prompts: &[&Prompt], tokens: &[u32]) -> Result<Tensor>;

    /// f32 logits `[n, vocab]` of final hidden states `[n, hidden]`.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor>;

    fn encode_images(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<VisionFeatures> {
        self.encode_images_traced(pixel_values, grids, &mut Trace::off())
    }

    /// Positions and image-row mapping of a token sequence (image tokens already expanded).
    fn prepare_prompt(&self, ids: &[u32], vision: Option<VisionFeatures>) -> Result<Prompt> {
        let s = self.spec();
        Prompt::new(ids, vision, s.image_token_id, s.image_processor.merge_size, s.vocab_size)
    }

    /// An empty KV cache sized for this model.
    fn new_cache(&self) -> KvCache {
        KvCache::new(self.spec().num_layers, self.spec().max_context)
    }

    /// Runs prompt tokens `[cache.len(), end)` through the decoder. When `end` is the prompt's end,
    /// returns the f32 logits `[vocab]` of its last token (the output head is skipped otherwise).
    fn prefill(&self, cache: &mut KvCache, prompt: &Prompt, end: usize) -> Result<Option<Tensor>> {
        let hidden = self.forward_prompt(cache, prompt, end, &mut Trace::off())?;
        if end < prompt.len() {
            return Ok(None);
        }
        let last = hidden.narrow(0, hidden.dim(0)? - 1, 1)?;
        Ok(Some(self.logits(&last)?.squeeze(0)?))
    }

    /// One generated token at the end of the cache; returns its f32 logits `[vocab]`.
    fn decode(&self, cache: &mut KvCache, prompt: &Prompt, token: u32) -> Result<Tensor> {
        Ok(self.decode_batch(&mut [cache], &[prompt], &[token])?.squeeze(0)?)
    }

    /// [`forward_tokens`](Self::forward_tokens) and the output head: f32 logits `[n, vocab]`.
    fn decode_batch(&self, caches: &mut [&mut KvCache], prompts: &[&Prompt], tokens: &[u32]) -> Result<Tensor> {
        let hidden = self.forward_tokens(caches, prompts, tokens)?;
        self.logits(&hidden)
    }
}

/// The checks every family's `forward_prompt` starts with: a non-empty range inside the prompt that fits
/// the cache.
pub(crate) fn check_prompt_range(cache: &KvCache, prompt: &Prompt, end: usize) -> Result<usize> {
    let start = cache.len();
    if end > prompt.len() || start >= end {
        return Err(Error::Internal(format!("prefill range {start}..{end} outside prompt of {}", prompt.len())));
    }
    if end > cache.max_len() {
        return Err(Error::ContextLength { tokens: end, max: cache.max_len() });
    }
    Ok(start)
}

/// What every family's `forward_tokens` starts with: checks the tokens and returns their rotary position
/// (the same on every axis), each at the end of its own cache.
pub(crate) fn decode_positions(caches: &[&mut KvCache], prompts: &[&Prompt], tokens: &[u32], vocab_size: usize) -> Result<Vec<i64>> {
    if caches.len() != tokens.len() || prompts.len() != tokens.len() || tokens.is_empty() {
        return Err(Error::Internal(format!("a decode step of {} tokens for {} caches and {} prompts", tokens.len(), caches.len(), prompts.len())));
    }
    if let Some(&t) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(Error::invalid("token", format!("id {t} is outside the vocabulary")));
    }
    Ok(caches.iter().zip(prompts).map(|(c, p)| c.len() as i64 + p.positions.rope_delta).collect())
}

/// Which kind of decoder step runs, so each picks kernels whose result for a token never depends on the
/// company: prefill chunks multiply through gemm whatever their length (its result for a row is the same
/// for any number of rows from 2 up, so a prompt gives the same bits however it is chunked or shared), and
/// decode steps through the few-row kernels (the same bits alone or in a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Prefill,
    Decode,
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
    // bf16 prefill widens to f32 at any chunk length (one-token chunks too), decode never does.
    let widen = is_cpu_with(&q, DType::BF16) && step == Step::Prefill;
    let min_rows = if step == Step::Prefill { PREFILL_MIN_SCORE_ROWS } else { 1 };
    let attn = attention_in(&q, &k, &v, 1.0 / (hd as f64).sqrt(), Some(offset), widen, min_rows)?;
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
    attention_in(q, k, v, scale, causal_offset, is_cpu_with(q, DType::BF16) && q.dim(2)? > 1, 1)
}

/// Query rows below which gemm multiplies by the transposed keys another way, with other bits (one row: a
/// gemv; rows × keys ≤ 256: dot-product kernels): a short prefill chunk (the last token after a shared
/// prefix) is padded with zero rows to this many, so its scores equal those of a long chunk.
const PREFILL_MIN_SCORE_ROWS: usize = 32;

/// [`attention`], in f32 when `widen` (bf16 inputs on the CPU): candle's CPU bf16 matmul is far slower than
/// its f32 one, so widen, attend, round once. Not worth it for a single query (decode), where widening the
/// whole KV cache costs more than it saves.
/// `min_rows`: score products of fewer query rows are padded to this many (see [`PREFILL_MIN_SCORE_ROWS`]).
fn attention_in(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>, widen: bool, min_rows: usize) -> Result<Tensor> {
    if widen {
        let f = |t: &Tensor| t.to_dtype(DType::F32);
        let out = attention_with_budget(&f(q)?, &f(k)?, &f(v)?, scale, causal_offset, SCORE_BUDGET, min_rows)?;
        return Ok(out.to_dtype(DType::BF16)?);
    }
    attention_with_budget(q, k, v, scale, causal_offset, SCORE_BUDGET, min_rows)
}

fn attention_with_budget(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal_offset: Option<usize>, budget: usize, min_rows: usize) -> Result<Tensor> {
    let (g, rep, lq, hd) = q.dims4()?;
    let lk = k.dim(1)?;
    let chunk = (budget / (g * rep * lk).max(1)).clamp(1, lq.max(1));
    let kt = k.t()?;
    let mut outs = Vec::with_capacity(lq.div_ceil(chunk));
    for start in (0..lq).step_by(chunk) {
        let c = chunk.min(lq - start);
        let qc = q.narrow(2, start, c)?.contiguous()?.reshape((g, rep * c, hd))?;
        let scores = if rep * c < min_rows {
            qc.pad_with_zeros(1, 0, min_rows - rep * c)?.matmul(&kt)?.narrow(1, 0, rep * c)?.contiguous()?
        } else {
            qc.matmul(&kt)?
        };
        let scores = scores.to_dtype(DType::F32)?;
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
        let probs = probs.to_dtype(v.dtype())?.reshape((g, rep * c, lk))?;
        let out = match causal_offset {
            Some(offset) => causal_probs_times_v(&probs, v, offset + start + c)?,
            None => probs.matmul(v)?,
        };
        outs.push(out.reshape((g, rep, c, hd))?);
    }
    Ok(if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(&outs, 2)? })
}

/// Keys per block of [`causal_probs_times_v`].
const KEY_BLOCK: usize = 256;

/// `probs · v` for causal rows that see only the first `visible` keys, in blocks of [`KEY_BLOCK`] keys counted
/// from key 0 (the last one padded with zeros), blocks past `visible` skipped. gemm sums a product's inner
/// dimension in pieces whose boundaries depend on its length, so one `[rows, lk] · [lk, hd]` product would
/// give a query other bits when the chunk it sits in ends elsewhere (a prompt prefilled in other chunks, or
/// after a shared prefix); fixed blocks make every query's sum the same whatever the chunking, and skip the
/// keys no query of the chunk sees.
fn causal_probs_times_v(probs: &Tensor, v: &Tensor, visible: usize) -> Result<Tensor> {
    let lk = v.dim(1)?;
    let visible = visible.min(lk);
    let mut out: Option<Tensor> = None;
    for start in (0..visible).step_by(KEY_BLOCK) {
        let n = KEY_BLOCK.min(lk - start);
        let (mut p, mut vb) = (probs.narrow(2, start, n)?, v.narrow(1, start, n)?);
        if n < KEY_BLOCK {
            p = p.pad_with_zeros(2, 0, KEY_BLOCK - n)?;
            vb = vb.pad_with_zeros(1, 0, KEY_BLOCK - n)?;
        }
        let part = p.contiguous()?.matmul(&vb.contiguous()?)?;
        out = Some(match out {
            Some(acc) => (acc + part)?,
            None => part,
        });
    }
    match out {
        Some(o) => Ok(o),
        None => Err(Error::Internal("attention with no visible keys".into())),
    }
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
            let got = attention_with_budget(&q, &k, &v, 0.3, Some(offset), budget, 1).unwrap();
            assert!(max_abs_diff(&got, &want).unwrap() < 1e-5, "budget {budget}");
        }
        // Non-causal: every query sees every key, chunked or not.
        let full = attention_with_budget(&q, &k, &v, 0.3, None, usize::MAX, 1).unwrap();
        let chunked = attention_with_budget(&q, &k, &v, 0.3, None, 30, 1).unwrap();
        assert_eq!(max_abs_diff(&full, &chunked).unwrap(), 0.0);
    }
}
