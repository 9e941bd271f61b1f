//! Qwen3-VL (`Qwen3VLForConditionalGeneration`): vision encoder + text decoder written for this crate
//! on candle core ops (candle-transformers' port lacks the prefill causal mask and M-RoPE).

pub mod config;
pub mod rope;
pub mod text;
pub mod vision;

use std::path::Path;

use candle_core::{DType, Device, Tensor};

pub use config::{Qwen3VLConfig, TextConfig, VisionConfig};
pub use rope::MropePositions;
pub use vision::VisionFeatures;

use crate::error::{Error, Result};
use crate::generate::KvCache;
use crate::model::{Trace, VisionLanguageModel};
use crate::weights::Weights;
use text::{DeepstackChunk, TextModel};
use vision::VisionModel;

/// Default number of prompt tokens per prefill chunk: bounds activation memory on long prompts.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

pub struct Qwen3VL {
    pub config: Qwen3VLConfig,
    vision: VisionModel,
    text: TextModel,
    device: Device,
    dtype: DType,
    prefill_chunk: usize,
}

/// A tokenized prompt laid out for the decoder: rotary positions and, for image tokens, which row of
/// the vision features fills them.
pub struct Prompt {
    pub ids: Vec<u32>,
    pub positions: MropePositions,
    /// Per token: `Some(row)` into `vision.embeds` for image tokens.
    image_rows: Vec<Option<u32>>,
    pub vision: Option<VisionFeatures>,
}

impl Prompt {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Number of image placeholder tokens.
    pub fn vision_tokens(&self) -> usize {
        self.image_rows.iter().filter(|r| r.is_some()).count()
    }
}

impl Qwen3VL {
    /// Loads `config.json` and the safetensors weights of a model directory.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::io(dir, std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found")));
        }
        let config = Qwen3VLConfig::from_file(&config::config_path(dir))?;
        let weights = Weights::from_dir(dir, device, dtype)?;
        Self::from_weights(config, &weights)
        // `weights` (the mappings) is dropped here: the model holds its own tensors.
    }

    pub fn from_weights(config: Qwen3VLConfig, w: &Weights) -> Result<Self> {
        let vision = VisionModel::load(w, &config.vision, "model.visual")?;
        let text = TextModel::load(w, &config.text, "model.language_model", config.tie_word_embeddings)?;
        Ok(Self { config, vision, text, device: w.device().clone(), dtype: w.dtype(), prefill_chunk: DEFAULT_PREFILL_CHUNK })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Tokens per prefill chunk (results do not depend on it).
    pub fn set_prefill_chunk(&mut self, tokens: usize) {
        self.prefill_chunk = tokens.max(1);
    }

    pub fn new_cache(&self) -> KvCache {
        KvCache::new(self.config.text.num_hidden_layers, self.config.text.max_position_embeddings)
    }

    /// Vision encoder with an optional trace of intermediate tensors.
    pub fn encode_images_traced(&self, pixel_values: &Tensor, grids: &[[usize; 3]], trace: &mut Trace) -> Result<VisionFeatures> {
        self.vision.forward(pixel_values, grids, trace)
    }

    /// Runs prompt tokens `[cache.len(), end)` through the decoder in chunks, returning the final
    /// hidden states of those tokens (`[n, hidden]`).
    pub fn forward_prompt(&self, cache: &mut KvCache, prompt: &Prompt, end: usize, trace: &mut Trace) -> Result<Tensor> {
        let start = cache.len();
        if end > prompt.len() || start >= end {
            return Err(Error::Internal(format!("prefill range {start}..{end} outside prompt of {}", prompt.len())));
        }
        if end > cache.max_len() {
            return Err(Error::ContextLength { tokens: end, max: cache.max_len() });
        }
        let mut outs = Vec::new();
        let mut s = start;
        while s < end {
            let e = (s + self.prefill_chunk).min(end);
            outs.push(self.forward_chunk(cache, prompt, s, e, trace)?);
            s = e;
        }
        Ok(if outs.len() == 1 { outs.pop().unwrap() } else { Tensor::cat(&outs, 0)? })
    }

    fn forward_chunk(&self, cache: &mut KvCache, prompt: &Prompt, s: usize, e: usize, trace: &mut Trace) -> Result<Tensor> {
        let mut x = self.text.embed(&prompt.ids[s..e])?;
        let rows = &prompt.image_rows[s..e];
        let mut deepstack = None;
        if let (Some(vis), true) = (&prompt.vision, rows.iter().any(|r| r.is_some())) {
            // Gather each image token's vision row (row 0 as filler elsewhere) and select by mask.
            let idx: Vec<u32> = rows.iter().map(|r| r.unwrap_or(0)).collect();
            let mask: Vec<u8> = rows.iter().map(|r| r.is_some() as u8).collect();
            let idx = Tensor::from_vec(idx, e - s, &self.device)?;
            let mask = Tensor::from_vec(mask, (e - s, 1), &self.device)?;
            let img = vis.embeds.index_select(&idx, 0)?.to_dtype(self.dtype)?;
            x = mask.broadcast_as(x.shape())?.where_cond(&img, &x)?;
            let rows = vis
                .deepstack
                .iter()
                .map(|d| Ok(d.index_select(&idx, 0)?.to_dtype(self.dtype)?))
                .collect::<Result<Vec<_>>>()?;
            deepstack = Some(DeepstackChunk { mask, rows });
        }
        let p = &prompt.positions;
        let pos = [&p.t[s..e], &p.h[s..e], &p.w[s..e]];
        self.text.forward(&x, pos, cache, deepstack.as_ref(), trace)
    }

    /// Logits (f32) for every position of final hidden states.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.text.logits(hidden)
    }

    /// One decode step for `token` at KV index `cache.len()`: all three rotary axes use
    /// `cache.len() + rope_delta`. Returns the final hidden state `[1, hidden]`.
    pub fn forward_token(&self, cache: &mut KvCache, prompt: &Prompt, token: u32) -> Result<Tensor> {
        if token as usize >= self.config.text.vocab_size {
            return Err(Error::invalid("token", format!("id {token} is outside the vocabulary")));
        }
        let p = cache.len() as i64 + prompt.positions.rope_delta;
        let x = self.text.embed(&[token])?;
        self.text.forward(&x, [&[p], &[p], &[p]], cache, None, &mut Trace::off())
    }
}

impl VisionLanguageModel for Qwen3VL {
    fn max_context(&self) -> usize {
        self.config.text.max_position_embeddings
    }

    fn num_layers(&self) -> usize {
        self.config.text.num_hidden_layers
    }

    fn image_token_id(&self) -> u32 {
        self.config.image_token_id
    }

    fn encode_images(&self, pixel_values: &Tensor, grids: &[[usize; 3]]) -> Result<VisionFeatures> {
        self.vision.forward(pixel_values, grids, &mut Trace::off())
    }

    fn prepare_prompt(&self, ids: &[u32], vision: Option<VisionFeatures>) -> Result<Prompt> {
        let vocab = self.config.text.vocab_size;
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::invalid("prompt", format!("token id {bad} is outside the vocabulary of {vocab}")));
        }
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "is empty"));
        }
        let img = self.config.image_token_id;
        let grids = vision.as_ref().map(|v| v.grids.clone()).unwrap_or_default();
        let positions = rope::rope_index(ids, img, &grids, self.config.vision.spatial_merge_size)?;
        let mut next = 0u32;
        let image_rows = ids
            .iter()
            .map(|&t| {
                (t == img).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        Ok(Prompt { ids: ids.to_vec(), positions, image_rows, vision })
    }

    fn prefill(&self, cache: &mut KvCache, prompt: &Prompt, end: usize) -> Result<Option<Tensor>> {
        let hidden = self.forward_prompt(cache, prompt, end, &mut Trace::off())?;
        if end < prompt.len() {
            return Ok(None);
        }
        let last = hidden.narrow(0, hidden.dim(0)? - 1, 1)?;
        Ok(Some(self.text.logits(&last)?.squeeze(0)?))
    }

    fn decode(&self, cache: &mut KvCache, prompt: &Prompt, token: u32) -> Result<Tensor> {
        let hidden = self.forward_token(cache, prompt, token)?;
        Ok(self.text.logits(&hidden)?.squeeze(0)?)
    }
}
