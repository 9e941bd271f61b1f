//! Models the engine can run. [`load`] reads a model directory's `config.json`, picks the family by its
//! `model_type` and opens the weights; each family lives in its own folder, builds from its parsed config and
//! a weight source, and does no I/O. The engine drives every family through [`VisionLanguageModel`] and
//! learns what it needs (token ids, image geometry, template quirks) from its [`ModelSpec`].

pub mod activation;
pub mod attention;
pub mod config_keys;
#[cfg(target_arch = "x86_64")]
pub mod few_rows;
pub mod glm4v;
#[cfg(target_arch = "x86_64")]
pub mod int8_gemm;
pub mod kv_cache;
pub mod linear;
pub mod norm;
pub mod prompt;
pub mod qkernels;
pub mod qwen3_vl;
pub mod rope;
pub mod vectorized;
pub mod vision_tower;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::json_file::{read_json, Keys};
use crate::quant::{Quantization, QuantizedWeights};
use crate::vision::PreprocessorConfig;
use crate::weights::Weights;

pub use attention::{attention, batched_attention, cached_attention};
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
    /// Stops with [`Error::Cancelled`] before the next encoder block once `cancel` is set: one large page
    /// takes seconds, and a client that left must not hold the engine that long.
    fn encode_images_or_cancel(&self, pixel_values: &Tensor, grids: &[[usize; 3]], cancel: &AtomicBool, trace: &mut Trace) -> Result<VisionFeatures>;

    fn encode_images_traced(&self, pixel_values: &Tensor, grids: &[[usize; 3]], trace: &mut Trace) -> Result<VisionFeatures> {
        self.encode_images_or_cancel(pixel_values, grids, &AtomicBool::new(false), trace)
    }

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

/// Maximum |a - b| over all elements (both converted to f32); for tests and diagnostics.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    if a.dims() != b.dims() {
        return Err(Error::Internal(format!("shape mismatch {:?} vs {:?}", a.dims(), b.dims())));
    }
    let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?;
    Ok(d.to_scalar::<f32>()?)
}
