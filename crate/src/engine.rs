//! A loaded model on its own worker thread. Requests queue up and run one at a time; each has a
//! cancellation flag and streams tokens through a callback (called on the worker thread). The worker
//! keeps the KV cache of the last conversation so a follow-up sharing its prefix (same text and same
//! images) only prefills the new part, and caches vision features per image so a page is encoded once.
//! No candle types cross this API.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use candle_core::{DType, Device};
use serde_json::Value;

use crate::error::{catch_panic, Error, Result};
use crate::generate::{FinishReason, GenerationDefaults, GenerationParams, Generator, KvCache, TokenEvent, TokenLogprob};
use crate::model::{Qwen3VL, VisionFeatures, VisionLanguageModel};
use crate::tokenizer::{expand_image_tokens, Message, Tokenizer};
use crate::vision::{preprocess, to_tensor, ImageInput, PreprocessorConfig, ProcessedImage, RgbImage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// A CUDA device by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    BF16,
    F16,
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: DeviceKind,
    pub dtype: WeightDtype,
    /// Prompt tokens per prefill step.
    pub prefill_chunk: usize,
    /// Override `preprocessor_config.json`'s pixel budget per image.
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// Images whose vision features are kept for reuse (0: encode every image every time).
    pub vision_cache_images: usize,
    /// Reuse the previous request's KV cache up to the longest shared prefix (off: prefill every
    /// prompt from scratch, for measuring what reuse saves).
    pub reuse_prefix: bool,
    /// Cap on prompt + generated tokens (defaults to the model's maximum).
    pub max_context: Option<usize>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: WeightDtype::F32,
            prefill_chunk: crate::model::qwen3_vl::DEFAULT_PREFILL_CHUNK,
            min_pixels: None,
            max_pixels: None,
            vision_cache_images: 16,
            reuse_prefix: true,
            max_context: None,
        }
    }
}

/// What was loaded.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub dir: PathBuf,
    pub model_type: String,
    pub device: String,
    pub dtype: String,
    pub max_context: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub defaults: GenerationDefaults,
    pub preprocessor: PreprocessorConfig,
}

/// An image attached to a request; the i-th image part of the messages uses the i-th image.
#[derive(Debug, Clone)]
pub enum ImageData {
    /// Interleaved 8-bit pixels (channels 1 or 3), e.g. a rendered page: no PNG round trip.
    Raw { width: u32, height: u32, channels: u8, data: Vec<u8> },
    /// PNG or JPEG bytes.
    Encoded(Vec<u8>),
    File(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub images: Vec<ImageData>,
    pub params: GenerationParams,
    /// Extra chat-template variables (e.g. `enable_thinking`).
    pub template_kwargs: serde_json::Map<String, Value>,
    /// Append the assistant turn opener (normally true).
    pub add_generation_prompt: bool,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>, images: Vec<ImageData>, params: GenerationParams) -> Self {
        Self { messages, images, params, template_kwargs: Default::default(), add_generation_prompt: true }
    }
}

/// Token counts and timings of one request (milliseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Image placeholder tokens within the prompt.
    pub vision_tokens: usize,
    /// Prompt tokens whose KV entries were reused from the previous request.
    pub cached_tokens: usize,
    /// Images whose vision features came from the cache.
    pub cached_images: usize,
    pub completion_tokens: usize,
    pub queue_ms: f64,
    pub preprocess_ms: f64,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub first_token_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub logprobs: Vec<TokenLogprob>,
    pub usage: Usage,
}

type TokenCallback = Box<dyn FnMut(&TokenEvent) + Send>;

struct Job {
    request: ChatRequest,
    on_token: TokenCallback,
    cancel: Arc<AtomicBool>,
    reply: mpsc::Sender<Result<Completion>>,
    queued_at: Instant,
}

/// A submitted request: cancel it or wait for its completion.
pub struct RequestHandle {
    cancel: Arc<AtomicBool>,
    result: mpsc::Receiver<Result<Completion>>,
}

impl RequestHandle {
    /// Asks the worker to stop this request (before it starts, between prefill chunks, or between
    /// tokens). The completion then has `finish_reason == Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The flag behind [`cancel`](Self::cancel), to share with other threads.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Blocks until the request finishes.
    pub fn wait(self) -> Result<Completion> {
        self.result.recv().unwrap_or_else(|_| Err(Error::Internal("the engine worker stopped".into())))
    }

    /// The result if the request has finished.
    pub fn try_result(&self) -> Option<Result<Completion>> {
        self.result.try_recv().ok()
    }
}

/// Cancellation flags of requests not yet finished, so shutting down stops them promptly.
type LiveFlags = Arc<std::sync::Mutex<Vec<Arc<AtomicBool>>>>;

pub struct Engine {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    info: ModelInfo,
    tokenizer: Arc<Tokenizer>,
    queued: Arc<AtomicUsize>,
    live: LiveFlags,
}

impl Engine {
    /// Loads a model directory (config, weights, tokenizer, chat template, preprocessor and
    /// generation configs) on a new worker thread and returns once it is ready.
    pub fn load(dir: impl AsRef<Path>, options: EngineOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(ModelInfo, Arc<Tokenizer>)>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_w = queued.clone();
        let live: LiveFlags = Arc::default();
        let live_w = live.clone();
        let worker = std::thread::Builder::new()
            .name("vtc-r1-engine".into())
            .spawn(move || {
                let worker = match catch_panic(|| Worker::load(&dir, &options)) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok((w.info.clone(), w.tokenizer.clone())));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                worker.serve(jobs_rx, queued_w, live_w);
            })
            .map_err(|e| Error::Internal(format!("cannot start the engine thread: {e}")))?;
        let (info, tokenizer) = ready_rx.recv().unwrap_or_else(|_| Err(Error::Internal("the engine thread died while loading".into())))?;
        Ok(Self { jobs: Some(jobs_tx), worker: Some(worker), info, tokenizer, queued, live })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Requests waiting or running.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The prompt text the chat template produces (no model work; runs on the caller's thread).
    pub fn render_prompt(&self, messages: &[Message], add_generation_prompt: bool, kwargs: &serde_json::Map<String, Value>) -> Result<String> {
        self.tokenizer.apply_chat_template(messages, add_generation_prompt, kwargs)
    }

    /// Token ids of plain text.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text)
    }

    pub fn detokenize(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special_tokens)
    }

    /// Queues a request; `on_token` is called on the worker thread for every generated token.
    pub fn submit(&self, request: ChatRequest, on_token: impl FnMut(&TokenEvent) + Send + 'static) -> Result<RequestHandle> {
        self.submit_with_cancel(request, Arc::new(AtomicBool::new(false)), on_token)
    }

    /// Like [`submit`](Self::submit), stopped when the caller's `cancel` flag is set (for example by a
    /// JS AbortSignal that exists before the request is queued).
    pub fn submit_with_cancel(
        &self,
        request: ChatRequest,
        cancel: Arc<AtomicBool>,
        on_token: impl FnMut(&TokenEvent) + Send + 'static,
    ) -> Result<RequestHandle> {
        request.params.validate()?;
        let (reply, result) = mpsc::channel();
        let job = Job { request, on_token: Box::new(on_token), cancel: cancel.clone(), reply, queued_at: Instant::now() };
        self.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).push(cancel.clone());
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(Error::Internal("the engine worker stopped".into()));
        }
        Ok(RequestHandle { cancel, result })
    }

    /// Runs a request to completion (blocking), without streaming.
    pub fn generate(&self, request: ChatRequest) -> Result<Completion> {
        self.submit(request, |_| {})?.wait()
    }

    /// Cancels running and queued requests, stops the worker and frees the model (also on drop).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for flag in lock(&self.live).iter() {
            flag.store(true, Ordering::Relaxed);
        }
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// KV cache of the previous request and what it holds, for prefix reuse.
struct Session {
    cache: KvCache,
    /// Token ids in the cache.
    ids: Vec<u32>,
    /// Per cached token: `Some(image key)` for image tokens, so equal ids with different images
    /// never count as a shared prefix.
    image_keys: Vec<Option<u64>>,
}

/// Vision features of recently seen images, by content hash.
struct VisionCache {
    capacity: usize,
    order: VecDeque<u64>,
    map: HashMap<u64, VisionFeatures>,
}

impl VisionCache {
    fn get(&mut self, key: u64) -> Option<VisionFeatures> {
        let hit = self.map.get(&key).cloned();
        if hit.is_some() {
            self.order.retain(|&k| k != key);
            self.order.push_back(key);
        }
        hit
    }

    fn put(&mut self, key: u64, features: VisionFeatures) {
        if self.capacity == 0 {
            return;
        }
        if self.map.insert(key, features).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }
}

struct Worker {
    model: Box<dyn VisionLanguageModel>,
    tokenizer: Arc<Tokenizer>,
    info: ModelInfo,
    device: Device,
    image_token: u32,
    merge: usize,
    prefill_chunk: usize,
    reuse_prefix: bool,
    session: Option<Session>,
    vision_cache: VisionCache,
}

impl Worker {
    fn load(dir: &Path, opts: &EngineOptions) -> Result<Self> {
        let device = match opts.device {
            DeviceKind::Cpu => Device::Cpu,
            DeviceKind::Cuda(i) => Device::new_cuda(i).map_err(|e| Error::invalid("device", format!("cuda:{i} is not available: {e}")))?,
        };
        let dtype = match opts.dtype {
            WeightDtype::F32 => DType::F32,
            WeightDtype::BF16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        };
        let tokenizer = Arc::new(Tokenizer::from_dir(dir)?);
        let mut preprocessor = match dir.join("preprocessor_config.json") {
            p if p.is_file() => PreprocessorConfig::from_file(&p)?,
            _ => PreprocessorConfig::default(),
        };
        preprocessor.min_pixels = opts.min_pixels.unwrap_or(preprocessor.min_pixels);
        preprocessor.max_pixels = opts.max_pixels.unwrap_or(preprocessor.max_pixels);
        let defaults = GenerationDefaults::from_dir(dir)?;
        let mut model = Qwen3VL::load(dir, &device, dtype)?;
        model.set_prefill_chunk(opts.prefill_chunk);
        let cfg = &model.config;
        if preprocessor.patch_size != cfg.vision.patch_size
            || preprocessor.merge_size != cfg.vision.spatial_merge_size
            || preprocessor.temporal_patch_size != cfg.vision.temporal_patch_size
        {
            return Err(Error::ModelConfig {
                path: dir.join("preprocessor_config.json"),
                key: "patch_size".into(),
                message: "patch, merge or temporal size differs from config.json's vision_config".into(),
            });
        }
        let eos_token_ids = if defaults.eos_token_ids.is_empty() {
            // No generation_config.json: fall back to the tokenizer's end-of-turn tokens.
            ["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tokenizer.token_to_id(t)).collect()
        } else {
            defaults.eos_token_ids.clone()
        };
        let max_context = opts.max_context.unwrap_or(usize::MAX).min(model.max_context());
        let info = ModelInfo {
            dir: dir.to_path_buf(),
            model_type: "qwen3_vl".into(),
            device: match opts.device {
                DeviceKind::Cpu => "cpu".into(),
                DeviceKind::Cuda(i) => format!("cuda:{i}"),
            },
            dtype: format!("{dtype:?}").to_lowercase(),
            max_context,
            vocab_size: cfg.text.vocab_size,
            eos_token_ids,
            defaults,
            preprocessor,
        };
        Ok(Self {
            image_token: cfg.image_token_id,
            merge: cfg.vision.spatial_merge_size,
            model: Box::new(model),
            tokenizer,
            info,
            device,
            prefill_chunk: opts.prefill_chunk.max(1),
            reuse_prefix: opts.reuse_prefix,
            session: None,
            vision_cache: VisionCache { capacity: opts.vision_cache_images, order: VecDeque::new(), map: HashMap::new() },
        })
    }

    fn serve(mut self, jobs: mpsc::Receiver<Job>, queued: Arc<AtomicUsize>, live: LiveFlags) {
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
        let image_keys: Vec<Option<u64>> = {
            let mut per_token = Vec::with_capacity(ids.len());
            let mut img = 0;
            let mut left = 0;
            for &t in &ids {
                if t == self.image_token {
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
        };

        // Reuse the previous request's cache up to the longest shared prefix (at least one token
        // must be run to get logits).
        let mut session = self.session.take().unwrap_or_else(|| Session {
            cache: KvCache::new(self.model.num_layers(), self.info.max_context),
            ids: Vec::new(),
            image_keys: Vec::new(),
        });
        let shared = if self.reuse_prefix {
            let cached = session.ids.iter().zip(&session.image_keys);
            cached.zip(ids.iter().zip(&image_keys)).take_while(|(a, b)| a == b).count().min(ids.len() - 1)
        } else {
            0
        };
        session.cache.truncate(shared);

        let generator = Generator { model: self.model.as_ref(), tokenizer: &self.tokenizer, eos_ids: &self.info.eos_token_ids, prefill_chunk: self.prefill_chunk };
        let out = generator.run(&mut session.cache, &prompt, &req.params, cancel, &mut |ev| on_token(ev))?;

        // Remember what the cache now holds.
        let n = session.cache.len();
        let mut all_ids = ids.clone();
        all_ids.extend_from_slice(&out.tokens);
        let mut all_keys = image_keys;
        all_keys.resize(all_ids.len(), None);
        session.ids = all_ids[..n].to_vec();
        session.image_keys = all_keys[..n].to_vec();
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

/// Content hash of a preprocessed image (its exact pixel values and grid).
fn image_key(img: &ProcessedImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    img.grid_thw.hash(&mut h);
    for v in &img.pixel_values {
        v.to_bits().hash(&mut h);
    }
    h.finish()
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
