//! The engine's worker thread: loads the model, then runs requests in continuous batches. A request is
//! admitted while fewer than `max_batch` run (images → preprocessing → vision features → chat template);
//! then every turn of the loop runs one prefill chunk of the oldest sequence still prefilling (starting from
//! the longest prefix a cached or running sequence shares with it) and one decode step of every sequence that
//! has a token to feed, all together. Finished and cancelled sequences leave between turns, their KV caches
//! kept in the prefix cache.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use candle_core::{DType, Device};
use rayon::prelude::*;

use super::prefix_cache::{image_key, Contents, PrefixCache, VisionCache};
use super::request::{ChatRequest, Completion, ImageData, Job, Usage};
use super::{lock, DeviceKind, EngineOptions, LiveFlags, ModelInfo, WeightDtype, MAX_BATCH_LIMIT};
use crate::error::{catch_panic, Error, Result};
use crate::generate::{FinishReason, Generation, GenerationDefaults, Sequence};
use crate::model::{KvCache, LoadOptions, Prompt, Trace, VisionFeatures, VisionLanguageModel};
use crate::tokenizer::{expand_image_tokens, Tokenizer};
use crate::vision::{image_dimensions, image_tokens, preprocess, to_tensor, ImageInput, PreprocessorConfig, ProcessedImage, RgbImage};

pub(super) struct Worker {
    model: Box<dyn VisionLanguageModel>,
    pub(super) tokenizer: Arc<Tokenizer>,
    pub(super) info: ModelInfo,
    device: Device,
    image_token: u32,
    merge: usize,
    prefill_chunk: usize,
    max_batch: usize,
    /// `None` when prefix reuse is off.
    prefix_cache: Option<PrefixCache>,
    vision_cache: VisionCache,
    /// Keys the salted image hashes (random per engine, so keys cannot be forged offline).
    salt_hasher: std::collections::hash_map::RandomState,
    /// What new KV caches keep their entries in.
    kv_dtype: DType,
}

/// A request being served.
struct Active {
    job: Job,
    prompt: Prompt,
    /// What `cache` holds, or will once prefilled: the prompt, then each generated token fed back.
    contents: Contents,
    cache: KvCache,
    seq: Sequence,
    /// The sampled token to feed in the next decode step (`None` while prefilling).
    next: Option<u32>,
    /// Whether the prefix caches were consulted (at the sequence's first prefill turn).
    prefix_looked_up: bool,
    usage: Usage,
    started: Instant,
    /// Set once the sequence is finished.
    done: Option<Result<Generation>>,
}

impl Worker {
    pub(super) fn load(dir: &Path, opts: &EngineOptions) -> Result<Self> {
        if !(1..=MAX_BATCH_LIMIT).contains(&opts.max_batch) {
            return Err(Error::invalid("maxBatch", format!("{} sequences; from 1 to {MAX_BATCH_LIMIT} decode together", opts.max_batch)));
        }
        let device = match opts.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(i) => Device::new_cuda(i).map_err(|e| Error::invalid("device", format!("cuda:{i} is not available: {e}")))?,
        };
        let dtype = opts.dtype.dtype();
        let kv_dtype = opts.kv_cache.map_or(dtype, WeightDtype::dtype);
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
        let max_context = match opts.max_context {
            Some(n) if n > spec.max_context || n == 0 => {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                return Err(Error::invalid(
                    "contextLength",
                    format!("the context length {n} exceeds {name}'s context window of {} tokens (max_position_embeddings)", spec.max_context),
                ));
            }
            Some(n) => n,
            None => spec.max_context,
        };
        let info = ModelInfo {
            dir: dir.to_path_buf(),
            model_type: spec.model_type.into(),
            device: match opts.device {
                DeviceKind::Cpu => "cpu".into(),
                DeviceKind::Cuda(i) => format!("cuda:{i}"),
            },
            dtype: format!("{dtype:?}").to_lowercase(),
            kv_dtype: format!("{kv_dtype:?}").to_lowercase(),
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
            max_batch: opts.max_batch.max(1),
            prefix_cache: opts.reuse_prefix.then(|| PrefixCache::new(opts.prefix_cache_bytes)),
            vision_cache: VisionCache::new(opts.vision_cache_images),
            salt_hasher: Default::default(),
            kv_dtype,
        })
    }

    pub(super) fn serve(mut self, jobs: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>, live: LiveFlags) {
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut active: Vec<Active> = Vec::new();
        let mut open = true;
        loop {
            if active.is_empty() && waiting.is_empty() {
                match jobs.recv() {
                    Ok(job) if open => waiting.push_back(job),
                    _ => break,
                }
            }
            while open {
                match jobs.try_recv() {
                    Ok(job) => waiting.push_back(job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => open = false,
                }
            }
            while active.len() < self.max_batch {
                let Some(job) = waiting.pop_front() else { break };
                let queue_ms = ms(job.queued_at);
                if job.cancel.load(Ordering::Relaxed) {
                    finish_job(job, Ok(cancelled_before_start(queue_ms)), &queued, &live);
                    continue;
                }
                match catch_panic(|| self.admit(&job.request, &job.cancel, queue_ms)) {
                    Ok(Some(a)) => active.push(a(job)),
                    Ok(None) => finish_job(job, Ok(cancelled_before_start(queue_ms)), &queued, &live),
                    Err(e) => finish_job(job, Err(e), &queued, &live),
                }
            }
            for a in active.iter_mut().filter(|a| a.done.is_none() && a.job.cancel.load(Ordering::Relaxed)) {
                a.done = Some(Ok(a.seq.finish(FinishReason::Cancelled)));
            }
            if let Some(i) = active.iter().position(|a| a.done.is_none() && a.next.is_none()) {
                if let Err(e) = catch_panic(|| self.prefill_turn(&mut active, i)) {
                    active[i].done = Some(Err(e));
                }
            }
            let decoding: Vec<usize> = (0..active.len()).filter(|&i| active[i].done.is_none() && active[i].next.is_some()).collect();
            if !decoding.is_empty() {
                if let Err(e) = catch_panic(|| self.decode_turn(&mut active, &decoding)) {
                    // Every sequence of the failed step gets the error (the message, where several share it).
                    let msg = e.to_string();
                    let mut first = Some(e);
                    for &i in &decoding {
                        active[i].done = Some(Err(first.take().filter(|_| decoding.len() == 1).unwrap_or_else(|| Error::Model(msg.clone()))));
                    }
                }
            }
            let mut i = 0;
            while i < active.len() {
                if active[i].done.is_some() {
                    let a = active.swap_remove(i);
                    self.retire(a, &queued, &live);
                } else {
                    i += 1;
                }
            }
            // Keep the oldest first (swap_remove moved the last one forward): prefill goes by age.
            active.sort_by_key(|a| a.job.queued_at);
        }
        for job in waiting {
            let queue_ms = ms(job.queued_at);
            finish_job(job, Ok(cancelled_before_start(queue_ms)), &queued, &live);
        }
    }

    /// Everything before the model runs: images, chat template, token ids, vision features, the sequence's
    /// sampler. Returns the request's state, to be joined with its job.
    fn admit(&mut self, req: &ChatRequest, cancel: &AtomicBool, queue_ms: f64) -> Result<Option<impl FnOnce(Job) -> Active>> {
        let t0 = Instant::now();
        let parts: usize = req.messages.iter().map(|m| m.image_count()).sum();
        if parts != req.images.len() {
            return Err(Error::invalid("images", format!("the messages have {parts} image parts but {} images were given", req.images.len())));
        }
        // The prompt's length from the images' headers: one too long for the context is refused before any
        // pixel is decoded.
        let counts = req
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let (w, h) = image_dimensions(&image_input(img), &format!("image {i}"))?;
                image_tokens(w as usize, h as usize, &self.info.preprocessor)
            })
            .collect::<Result<Vec<usize>>>()?;
        let ids = self.tokenizer.encode_chat(&req.messages, req.add_generation_prompt, &req.template_kwargs, self.info.max_context)?;
        let ids = expand_image_tokens(&ids, self.image_token, &counts)?;
        if ids.len() >= self.info.max_context {
            return Err(Error::ContextLength { tokens: ids.len(), max: self.info.max_context });
        }
        let mut images = Vec::with_capacity(req.images.len());
        for (i, img) in req.images.iter().enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let processed = preprocess(&RgbImage::load(&image_input(img), &format!("image {i}"))?, &self.info.preprocessor)?;
            if processed.num_tokens(self.merge) != counts[i] {
                return Err(Error::Internal(format!("image {i}: {} tokens after decoding, {} from its header", processed.num_tokens(self.merge), counts[i])));
            }
            images.push(processed);
        }
        let salt: Option<Arc<str>> = req.cache_salt.as_deref().map(Arc::from);
        // Salted image keys keep one tenant's cached vision features from answering another's images.
        let keys: Vec<u64> = images.iter().map(|img| salt.as_ref().map_or(image_key(img), |s| self.salt_hasher.hash_one((s, image_key(img))))).collect();
        let preprocess_ms = ms(t0);

        let t1 = Instant::now();
        let (vision, cached_images) = if images.is_empty() {
            (None, 0)
        } else {
            let Some((f, hits)) = self.vision_features(&images, &keys, cancel)? else { return Ok(None) };
            (Some(f), hits)
        };
        let vision_ms = ms(t1);
        let prompt = self.model.prepare_prompt(&ids, vision)?;
        let contents = Contents { image_keys: per_token_image_keys(&ids, self.image_token, &counts, &keys), ids, salt };
        let cache = self.model.new_cache().with_dtype(Some(self.kv_dtype));
        let max_ctx = self.info.max_context.min(cache.max_len());
        let seq = Sequence::new(&prompt, &req.params, &self.info.eos_token_ids, &self.info.defaults.sampling, max_ctx)?;
        let usage = Usage {
            prompt_tokens: contents.ids.len(),
            vision_tokens: counts.iter().sum(),
            cached_images,
            queue_ms,
            preprocess_ms,
            vision_ms,
            ..Default::default()
        };
        Ok(Some(move |job| Active { job, prompt, contents, cache, seq, next: None, prefix_looked_up: false, usage, started: t0, done: None }))
    }

    /// One prefill chunk of `active[i]`. At its first turn the sequence starts from the longest prefix that a
    /// cached sequence or one running beside it shares (a copy of those KV entries), so 16 samples of one
    /// question prefill the question once. At least the prompt's last token is left to run, for its logits.
    fn prefill_turn(&mut self, active: &mut [Active], i: usize) -> Result<()> {
        if !active[i].prefix_looked_up {
            active[i].prefix_looked_up = true;
            if let Some(pc) = self.prefix_cache.as_mut() {
                let a = &active[i];
                let limit = a.contents.ids.len().saturating_sub(1);
                let cached = pc.best(&a.contents).map(|(e, n)| (e, n.min(limit)));
                let running = active
                    .iter()
                    .enumerate()
                    .filter(|&(j, b)| j != i && b.done.is_none())
                    .map(|(j, b)| (j, b.contents.truncated(b.cache.len()).shared_with(&a.contents).min(limit)))
                    .max_by_key(|&(_, n)| n);
                let copy = match (cached, running) {
                    (Some((e, n)), r) if n > 0 && r.is_none_or(|(_, m)| n >= m) => Some(pc.copy(e, n)?),
                    (_, Some((j, n))) if n > 0 => Some(active[j].cache.copy_prefix(n)?),
                    _ => None,
                };
                if let Some(cache) = copy {
                    active[i].usage.cached_tokens = cache.len();
                    active[i].cache = cache;
                }
            }
        }
        let chunk = self.prefill_chunk;
        let a = &mut active[i];
        let end = (a.cache.len() + chunk).min(a.prompt.len());
        if let Some(logits) = self.model.prefill(&mut a.cache, &a.prompt, end)? {
            let row = logits.to_vec1::<f32>()?;
            a.sample(&row, &self.tokenizer)?;
        }
        Ok(())
    }

    /// One decode step of the sequences `which`, together: each feeds its sampled token and samples the next.
    fn decode_turn(&mut self, active: &mut [Active], which: &[usize]) -> Result<()> {
        let mut batch: Vec<&mut Active> = active.iter_mut().enumerate().filter(|(i, _)| which.contains(i)).map(|(_, a)| a).collect();
        let tokens: Vec<u32> = batch.iter().map(|a| a.next.expect("a sequence with a token to feed")).collect();
        let (mut caches, prompts): (Vec<&mut KvCache>, Vec<&Prompt>) = batch.iter_mut().map(|a| (&mut a.cache, &a.prompt)).unzip();
        let rows = self.model.decode_batch(&mut caches, &prompts, &tokens)?.to_vec2::<f32>()?;
        // Each sequence samples from its own row with its own sampler, so they sample on all threads: a top-p
        // draw from a flat distribution sorts the whole vocabulary (~5 ms), which at 16 sequences took as long
        // as the decode step itself.
        let tokenizer = &self.tokenizer;
        let sampled: Vec<Result<()>> = batch
            .par_iter_mut()
            .zip(rows.par_iter())
            .zip(tokens.par_iter())
            .map(|((a, row), &fed)| {
                a.next = None;
                a.contents.push_generated(fed);
                a.sample(row, tokenizer)
            })
            .collect();
        sampled.into_iter().collect()
    }

    /// Replies to a finished request and keeps its KV cache for prefix reuse.
    fn retire(&mut self, mut a: Active, queued: &AtomicUsize, live: &LiveFlags) {
        let result = match a.done.take().expect("retired when done") {
            Ok(out) => {
                if let Some(pc) = self.prefix_cache.as_mut() {
                    pc.insert(a.contents.truncated(a.cache.len()), std::mem::replace(&mut a.cache, KvCache::new(0, 0)));
                }
                let mut usage = a.usage;
                usage.completion_tokens = out.tokens.len();
                usage.prefill_ms = out.prefill_ms;
                usage.decode_ms = out.decode_ms;
                usage.first_token_ms = out.first_token_ms;
                usage.total_ms = ms(a.started);
                Ok(Completion { usage, text: out.text, tokens: out.tokens, finish_reason: out.finish_reason, logprobs: out.logprobs })
            }
            // The failed sequence's cache may be half-written: it is dropped (the cached entries are copies).
            Err(e) => Err(e),
        };
        finish_job(a.job, result, queued, live);
    }

    /// Features of all images, encoding only those not in the cache (each image on its own: the
    /// encoder never attends across images, so this equals encoding them together).
    /// Also returns how many came from the cache.
    /// `None` once `cancel` is set: it is checked between images and between the encoder's blocks.
    fn vision_features(&mut self, images: &[ProcessedImage], keys: &[u64], cancel: &AtomicBool) -> Result<Option<(VisionFeatures, usize)>> {
        let mut parts = Vec::with_capacity(images.len());
        let mut hits = 0;
        for (img, &key) in images.iter().zip(keys) {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let f = match self.vision_cache.get(key) {
                Some(f) => {
                    hits += 1;
                    f
                }
                None => {
                    let (px, grids) = to_tensor(std::slice::from_ref(img), &self.device)?;
                    let f = match self.model.encode_images_or_cancel(&px, &grids, cancel, &mut Trace::off()) {
                        Err(Error::Cancelled) => return Ok(None),
                        f => f?,
                    };
                    self.vision_cache.put(key, f.clone());
                    f
                }
            };
            parts.push(f);
        }
        Ok(Some((VisionFeatures::concat(&parts)?, hits)))
    }
}

fn image_input(img: &ImageData) -> ImageInput<'_> {
    match img {
        ImageData::Raw { width, height, channels, data } => ImageInput::Raw { width: *width, height: *height, channels: *channels, data },
        ImageData::Encoded(bytes) => ImageInput::Encoded(bytes),
        ImageData::File(path) => ImageInput::File(path),
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

impl Active {
    /// Samples from a logits row (streaming the token); a finished sequence is marked done, otherwise the
    /// token waits for the next decode step.
    fn sample(&mut self, row: &[f32], tokenizer: &crate::tokenizer::Tokenizer) -> Result<()> {
        let on_token = &mut self.job.on_token;
        match self.seq.step(row, self.cache.len(), tokenizer, &mut |ev| on_token(ev))? {
            Some(reason) => self.done = Some(Ok(self.seq.finish(reason))),
            None => self.next = self.seq.tokens().last().copied(),
        }
        Ok(())
    }

}

/// Sends a request's result and forgets it.
fn finish_job(job: Job, result: Result<Completion>, queued: &AtomicUsize, live: &LiveFlags) {
    queued.fetch_sub(1, Ordering::Relaxed);
    lock(live).retain(|f| !Arc::ptr_eq(f, &job.cancel));
    (job.on_done)(result);
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
