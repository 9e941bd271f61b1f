//! GLM-4.1V (`Glm4vForConditionalGeneration`): the architecture of GLM-4.1V-9B, Glyph and the VTC-R1-Glyph
//! release. Vision encoder and text decoder written for this crate on candle core ops, following
//! spec/glm4v.md (transformers' glm4v).

pub mod config;
pub mod text;
pub mod vision;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};
use serde_json::Value;

pub use config::{Glm4vConfig, TextConfig, VisionConfig};

use crate::error::Result;
use crate::model::{check_prompt_range, decode_positions, KvCache, ModelSpec, Prompt, Step, Trace, VisionFeatures, VisionLanguageModel};
use crate::vision::PreprocessorConfig;
use crate::weights::Weights;
use text::TextModel;
use vision::VisionModel;

pub struct Glm4v {
    pub config: Glm4vConfig,
    spec: ModelSpec,
    vision: VisionModel,
    text: TextModel,
    dtype: DType,
}

/// The loader's entry: parses `config.json` and builds the model from the weights.
pub(crate) fn build(config: &Value, path: &Path, weights: &Weights) -> Result<Box<dyn VisionLanguageModel>> {
    Ok(Box::new(Glm4v::new(Glm4vConfig::from_json(config, path)?, weights)?))
}

/// `Glm4vImageProcessor`'s settings: CLIP mean and std, a pixel budget that counts the two temporal frames
/// of a still image, small images scaled up (transformers ≥ 5). The budget is GLM-4.1V-9B-Thinking's
/// `size` (spec/glm4v.md §5); a checkpoint's `preprocessor_config.json` overrides it.
pub fn image_processor(cfg: &VisionConfig) -> PreprocessorConfig {
    PreprocessorConfig {
        min_pixels: 112 * 112,
        max_pixels: 28 * 28 * 2 * 30_000,
        patch_size: cfg.patch_size,
        temporal_patch_size: cfg.temporal_patch_size,
        merge_size: cfg.spatial_merge_size,
        image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
        // CLIP's values as the processor config writes them (f32 keeps ~7 digits of them)
        #[allow(clippy::excessive_precision)]
        image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        rescale_factor: 1.0 / 255.0,
        do_resize: true,
        do_rescale: true,
        do_normalize: true,
        budget_frames: 2,
        upscale_small: true,
        image_max_pixels: None,
    }
}

impl Glm4v {
    pub fn new(config: Glm4vConfig, w: &Weights) -> Result<Self> {
        let vision = VisionModel::load(w, &config.vision, "model.visual")?;
        let text = TextModel::load(w, &config.text, "model.language_model", config.tie_word_embeddings)?;
        let spec = ModelSpec {
            model_type: "glm4v",
            vocab_size: config.text.vocab_size,
            num_layers: config.text.num_hidden_layers,
            max_context: config.text.max_position_embeddings,
            image_token_id: config.image_token_id,
            image_processor: image_processor(&config.vision),
            // GLM-4 ends a turn with any of these (zai-org/GLM-4#398), listed in generation_config or not.
            stop_tokens: &["<|endoftext|>", "<|user|>", "<|observation|>"],
            // The official template prints system and assistant content as a string.
            text_content_as_string: true,
        };
        Ok(Self { config, spec, vision, text, dtype: w.dtype() })
    }
}

impl VisionLanguageModel for Glm4v {
    fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    fn encode_images_or_cancel(&self, pixel_values: &Tensor, grids: &[[usize; 3]], cancel: &AtomicBool, trace: &mut Trace) -> Result<VisionFeatures> {
        self.vision.forward(pixel_values, grids, cancel, trace)
    }

    fn forward_prompt(&self, cache: &mut KvCache, prompt: &Prompt, end: usize, trace: &mut Trace) -> Result<Tensor> {
        let s = check_prompt_range(cache, prompt, end)?;
        let x = self.text.embed(&prompt.ids[s..end])?;
        let (x, _) = prompt.scatter_images(x, s, end, self.dtype)?;
        self.text.forward(&x, prompt.positions(s, end), &mut [cache], &[end - s], Step::Prefill, trace)
    }

    fn forward_tokens(&self, caches: &mut [&mut KvCache], prompts: &[&Prompt], tokens: &[u32]) -> Result<Tensor> {
        let pos = decode_positions(caches, prompts, tokens, self.config.text.vocab_size)?;
        let x = self.text.embed(tokens)?;
        self.text.forward(&x, [&pos, &pos, &pos], caches, &vec![1; tokens.len()], Step::Decode, &mut Trace::off())
    }

    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.text.logits(hidden)
    }
}
