//! Qwen3-VL (`Qwen3VLForConditionalGeneration`): vision encoder + text decoder written for this crate
//! on candle core ops (candle-transformers' port lacks the prefill causal mask and M-RoPE).

pub mod config;
pub mod rope;
pub mod text;
pub mod vision;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

pub use config::{Qwen3VLConfig, TextConfig, VisionConfig};

use crate::error::Result;
use crate::model::{check_prompt_range, decode_positions, KvCache, ModelSpec, Prompt, Step, Trace, VisionFeatures, VisionLanguageModel};
use crate::vision::PreprocessorConfig;
use crate::weights::Weights;
use text::{DeepstackChunk, TextModel};
use vision::VisionModel;

pub struct Qwen3VL {
    pub config: Qwen3VLConfig,
    spec: ModelSpec,
    vision: VisionModel,
    text: TextModel,
    device: Device,
    dtype: DType,
}

/// The loader's entry: parses `config.json` and builds the model from the weights.
pub(crate) fn build(config: &Value, path: &Path, weights: &Weights) -> Result<Box<dyn VisionLanguageModel>> {
    Ok(Box::new(Qwen3VL::new(Qwen3VLConfig::from_json(config, path)?, weights)?))
}

/// What Qwen3-VL checkpoints ship in `preprocessor_config.json` (not transformers' class defaults, which
/// are Qwen2-VL's).
pub fn image_processor(cfg: &VisionConfig) -> PreprocessorConfig {
    PreprocessorConfig {
        min_pixels: 65536,
        max_pixels: 16_777_216,
        patch_size: cfg.patch_size,
        temporal_patch_size: cfg.temporal_patch_size,
        merge_size: cfg.spatial_merge_size,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
        rescale_factor: 1.0 / 255.0,
        do_resize: true,
        do_rescale: true,
        do_normalize: true,
        budget_frames: 1,
        upscale_small: false,
        image_max_pixels: None,
    }
}

impl Qwen3VL {
    pub fn new(config: Qwen3VLConfig, w: &Weights) -> Result<Self> {
        let vision = VisionModel::load(w, &config.vision, "model.visual")?;
        let text = TextModel::load(w, &config.text, "model.language_model", config.tie_word_embeddings)?;
        let spec = ModelSpec {
            model_type: "qwen3_vl",
            vocab_size: config.text.vocab_size,
            num_layers: config.text.num_hidden_layers,
            max_context: config.text.max_position_embeddings,
            image_token_id: config.image_token_id,
            image_processor: image_processor(&config.vision),
            stop_tokens: &["<|im_end|>", "<|endoftext|>"],
            text_content_as_string: false,
        };
        Ok(Self { config, spec, vision, text, device: w.device().clone(), dtype: w.dtype() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

impl VisionLanguageModel for Qwen3VL {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn encode_images_or_cancel(&self, pixel_values: &Tensor, grids: &[[usize; 3]], cancel: &AtomicBool, trace: &mut Trace) -> Result<VisionFeatures> {
        self.vision.forward(pixel_values, grids, cancel, trace)
    }

    fn forward_prompt(&self, cache: &mut KvCache, prompt: &Prompt, end: usize, trace: &mut Trace) -> Result<Tensor> {
        let s = check_prompt_range(cache, prompt, end)?;
        let x = self.text.embed(&prompt.ids[s..end])?;
        let (x, rows) = prompt.scatter_images(x, s, end, self.dtype)?;
        // DeepStack rows are added to the image tokens' hidden states after the first decoder layers.
        let deepstack = match (rows, &prompt.vision) {
            (Some(rows), Some(vis)) => Some(DeepstackChunk {
                rows: vis.per_layer.iter().map(|d| Ok(d.index_select(&rows.index, 0)?.to_dtype(self.dtype)?)).collect::<Result<Vec<_>>>()?,
                mask: rows.mask,
            }),
            _ => None,
        };
        self.text.forward(&x, prompt.positions(s, end), &mut [cache], &[end - s], Step::Prefill, deepstack.as_ref(), trace)
    }

    fn forward_tokens(&self, caches: &mut [&mut KvCache], prompts: &[&Prompt], tokens: &[u32]) -> Result<Tensor> {
        let pos = decode_positions(caches, prompts, tokens, self.config.text.vocab_size)?;
        let x = self.text.embed(tokens)?;
        self.text.forward(&x, [&pos, &pos, &pos], caches, &vec![1; tokens.len()], Step::Decode, None, &mut Trace::off())
    }

    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.text.logits(hidden)
    }
}
