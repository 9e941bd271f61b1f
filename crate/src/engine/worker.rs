//! The engine's worker thread: loads the model, then runs queued requests one at a time (images →
//! preprocessing → vision features → chat template → prefill reusing the cached prefix → decode).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use candle_core::{DType, Device};

use super::prefix_cache::{image_key, Session, VisionCache};
use super::request::{ChatRequest, Completion, ImageData, Job, TokenCallback, Usage};
use super::{lock, DeviceKind, EngineOptions, LiveFlags, ModelInfo, WeightDtype};
use crate::error::{catch_panic, Error, Result};
use crate::generate::{FinishReason, GenerationDefaults, Generator};
use crate::model::{KvCache, LoadOptions, VisionFeatures, VisionLanguageModel};
use crate::tokenizer::{expand_image_tokens, Tokenizer};
use crate::vision::{preprocess, to_tensor, ImageInput, PreprocessorConfig, ProcessedImage, RgbImage};

pub(super) struct Worker {
    model: Box<dyn VisionLanguageModel>,
    pub(super) tokenizer: Arc<Tokenizer>,
    pub(super) info: ModelInfo,
    device: Device,
    image_token: u32,
    merge: usize,
    prefill_chunk: usize,
    reuse_prefix: bool,
    session: Option<Session>,
    vision_cache: VisionCache,
}

impl Worker {
    pub(super) fn load(dir: &Path, opts: &EngineOptions) -> Result<Self> {
        let device = match opts.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(i) => Device::new_cuda(i).map_err(|e| Error::invalid("device", format!("cuda:{i} is not available: {e}")))?,
        };
        let dtype = match opts.dtype {
            WeightDtype::F32 => DType::F32,
            WeightDtype::BF16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        };
        let mut tokenizer = Tokenizer::from_dir(dir)?;
        let defaults = GenerationDefaults::from_dir(dir)?;
        let load = LoadOptions { device: device.clone(), dtype, quantize: opts.quantize, quant_cache_dir: opts.quant_cache_dir.clone() };
        let model = crate::model::load_with(dir, &load)?;
        let spec = model.spec();
        tokenizer.set_text_content_as_string(spec.text_content_as_string);
        let preprocessor = preprocessor(dir, &spec.image_processor, opts)?;
        // generation_config.json's ids first, then the family's end-of-turn tokens it may not list.
        let mut eos_token_ids = defaults.eos_token_ids.clone();
        for id in spec.stop_tokens.iter().filter_map(|t| tokenizer.token_to_id(t)) {
            if !eos_token_ids.contains(&id) {
                eos_token_ids.push(id);
            }
        }
        let max_context = opts.max_context.unwrap_or(usize::MAX).min(spec.max_context);
        let info = ModelInfo {
            dir: dir.to_path_buf(),
            model_type: spec.model_type.into(),
            device: match opts.device {
                DeviceKind::Cpu => "cpu".into(),
                DeviceKind::Cuda(i) => format!("cuda:{i}"),
            },
            dtype: format!("{dtype:?}").to_lowercase(),
            quantization: opts.quantize.map(|q| q.name().to_string()),
            max_context,
            vocab_size: spec.vocab_size,
            eos_token_ids,
            defaults,
            preprocessor,
        };
        Ok(Self {
            image_token: spec.image_token_id,
            merge: spec.image_processor.merge_size,
            model,
            tokenizer: Arc::new(tokenizer),
            info,
            device,
            prefill_chunk: opts.prefill_chunk.max(1),
            reuse_prefix: opts.reuse_prefix,
            session: None,
            vision_cache: VisionCache::new(opts.vision_cache_images),
        })
    }

    pub(super) fn serve(mut self, jobs: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>, live: LiveFlags) {
        while let Ok(mut job) = jobs.recv() {
            let queue_ms = job.queued_at.elapsed().as_secs_f64() * 1000.0;
            let result = if job.cancel.load(Ordering::Relaxed) {
                Ok(cancelled_before_start(queue_ms))
            } else {
                catch_panic(|| self.run(&job.request, &job.cancel, &mut job.on_token, queue_ms))
            };
            if result.is_err() {
                // A failed request may have left the cache half-written.
                self.session = None;
            }
            queued.fetch_sub(1, Ordering::Relaxed);
            lock(&live).retain(|f| !Arc::ptr_eq(f, &job.cancel));
            let _ = job.reply.send(result);
        }
    }

    fn run(&mut self, req: &ChatRequest, cancel: &AtomicBool, on_token: &mut TokenCallback, queue_ms: f64) -> Result<Completion> {
        let t0 = Instant::now();
        let parts: usize = req.messages.iter().map(|m| m.image_count()).sum();
        if parts != req.images.len() {
            return Err(Error::invalid("images", format!("the messages have {parts} image parts but {} images were given", req.images.len())));
        }
        let images = req
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let name = format!("image {i}");
                let rgb = match img {
                    ImageData::Raw { width, height, channels, data } => {
                        RgbImage::load(&ImageInput::Raw { width: *width, height: *height, channels: *channels, data }, &name)?
                    }
                    ImageData::Encoded(bytes) => RgbImage::load(&ImageInput::Encoded(bytes), &name)?,
                    ImageData::File(path) => RgbImage::load(&ImageInput::File(path), &name)?,
                };
                preprocess(&rgb, &self.info.preprocessor)
            })
            .collect::<Result<Vec<_>>>()?;
        let keys: Vec<u64> = images.iter().map(image_key).collect();
        let counts: Vec<usize> = images.iter().map(|i| i.num_tokens(self.merge)).collect();

        let text = self.tokenizer.apply_chat_template(&req.messages, req.add_generation_prompt, &req.template_kwargs)?;
        let ids = expand_image_tokens(&self.tokenizer.encode(&text)?, self.image_token, &counts)?;
        if ids.len() >= self.info.max_context {
            return Err(Error::ContextLength { tokens: ids.len(), max: self.info.max_context });
        }
        let preprocess_ms = ms(t0);

        let t1 = Instant::now();
        let (vision, cached_images) = if images.is_empty() {
            (None, 0)
        } else {
            let (f, hits) = self.vision_features(&images, &keys)?;
            (Some(f), hits)
        };
        let vision_ms = ms(t1);
        let prompt = self.model.prepare_prompt(&ids, vision)?;
        let image_keys = per_token_image_keys(&ids, self.image_token, &counts, &keys);

        // Reuse the previous request's cache up to the longest shared prefix.
        let mut session = match self.session.take() {
            Some(s) if self.reuse_prefix => s,
            _ => Session::new(KvCache::new(self.model.spec().num_layers, self.info.max_context)),
        };
        let shared = session.reuse_for(&ids, &image_keys);

        let generator = Generator {
            model: self.model.as_ref(),
            tokenizer: &self.tokenizer,
            eos_ids: &self.info.eos_token_ids,
            defaults: &self.info.defaults.sampling,
            prefill_chunk: self.prefill_chunk,
        };
        let out = generator.run(&mut session.cache, &prompt, &req.params, cancel, &mut |ev| on_token(ev))?;

        session.remember(&ids, &image_keys, &out.tokens);
        self.session = Some(session);

        Ok(Completion {
            usage: Usage {
                prompt_tokens: ids.len(),
                vision_tokens: counts.iter().sum(),
                cached_tokens: shared,
                cached_images,
                completion_tokens: out.tokens.len(),
                queue_ms,
                preprocess_ms,
                vision_ms,
                prefill_ms: out.prefill_ms,
                decode_ms: out.decode_ms,
                first_token_ms: out.first_token_ms,
                total_ms: ms(t0),
            },
            text: out.text,
            tokens: out.tokens,
            finish_reason: out.finish_reason,
            logprobs: out.logprobs,
        })
    }

    /// Features of all images, encoding only those not in the cache (each image on its own: the
    /// encoder never attends across images, so this equals encoding them together).
    /// Also returns how many came from the cache.
    fn vision_features(&mut self, images: &[ProcessedImage], keys: &[u64]) -> Result<(VisionFeatures, usize)> {
        let mut parts = Vec::with_capacity(images.len());
        let mut hits = 0;
        for (img, &key) in images.iter().zip(keys) {
            let f = match self.vision_cache.get(key) {
                Some(f) => {
                    hits += 1;
                    f
                }
                None => {
                    let (px, grids) = to_tensor(std::slice::from_ref(img), &self.device)?;
                    let f = self.model.encode_images(&px, &grids)?;
                    self.vision_cache.put(key, f.clone());
                    f
                }
            };
            parts.push(f);
        }
        Ok((VisionFeatures::concat(&parts)?, hits))
    }
}

/// The model's image processor: its family's settings, overridden key by key by the directory's
/// `preprocessor_config.json`, then by the load options' pixel budgets. The patch geometry must agree with
/// the model's.
fn preprocessor(dir: &Path, family: &PreprocessorConfig, opts: &EngineOptions) -> Result<PreprocessorConfig> {
    let path = dir.join("preprocessor_config.json");
    let mut p = if path.is_file() { PreprocessorConfig::from_file(&path, family)? } else { family.clone() };
    for (key, file, model) in [
        ("patch_size", p.patch_size, family.patch_size),
        ("merge_size", p.merge_size, family.merge_size),
        ("temporal_patch_size", p.temporal_patch_size, family.temporal_patch_size),
    ] {
        if file != model {
            return Err(Error::ModelConfig { path, key: key.into(), message: format!("{file} differs from config.json's vision_config ({model})") });
        }
    }
    p.min_pixels = opts.min_pixels.unwrap_or(p.min_pixels);
    p.max_pixels = opts.max_pixels.unwrap_or(p.max_pixels);
    p.image_max_pixels = opts.image_max_pixels.or(p.image_max_pixels);
    if p.image_max_pixels == Some(0) {
        return Err(Error::invalid("imageMaxPixels", "must be at least 1 pixel"));
    }
    if p.min_pixels > p.max_pixels {
        return Err(Error::invalid("maxPixels", format!("{} is below the minimum of {} pixels per image", p.max_pixels, p.min_pixels)));
    }
    Ok(p)
}

/// The image each prompt token shows (`None` for text tokens), so prefixes with equal ids but other
/// images never count as shared.
fn per_token_image_keys(ids: &[u32], image_token: u32, counts: &[usize], keys: &[u64]) -> Vec<Option<u64>> {
    let mut per_token = Vec::with_capacity(ids.len());
    let (mut img, mut left) = (0, 0);
    for &t in ids {
        if t == image_token {
            while left == 0 {
                left = counts[img];
                img += 1;
            }
            left -= 1;
            per_token.push(Some(keys[img - 1]));
        } else {
            per_token.push(None);
        }
    }
    per_token
}

fn cancelled_before_start(queue_ms: f64) -> Completion {
    Completion {
        text: String::new(),
        tokens: Vec::new(),
        finish_reason: FinishReason::Cancelled,
        logprobs: Vec::new(),
        usage: Usage { queue_ms, ..Default::default() },
    }
}


fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
