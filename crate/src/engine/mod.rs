//! A loaded model on its own worker thread. Requests queue up and up to `max_batch` run together,
//! continuously batched: their decode steps run as one (the weights are read once per step for all of
//! them), a newcomer joins between steps and prefills in chunks between them, a finished one leaves. Each
//! request has a cancellation flag and streams tokens through a callback (called on the worker thread), and
//! its tokens do not depend on the company it runs in. The worker keeps the KV caches of finished requests
//! (within a byte budget) so a prompt sharing a prefix with one of them or with a running one (same text and
//! same images) only prefills the rest, and caches vision features per image so a page is encoded once.
//! No candle types cross this API, and no model family is named here: the model's [`ModelSpec`] says
//! what the engine needs to know.
//!
//! [`ModelSpec`]: crate::model::ModelSpec

mod allocator;
mod prefix_cache;
mod request;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::Value;

pub use request::{ChatRequest, Completion, ImageData, RequestHandle, Usage};

use crate::error::{catch_panic, Error, Result};
use crate::generate::{GenerationDefaults, TokenEvent};
use crate::quant::Quantization;
use crate::tokenizer::{Message, Tokenizer};
use crate::vision::PreprocessorConfig;
use request::Job;
use worker::Worker;

/// Default number of prompt tokens per prefill step: bounds activation memory on long prompts, and
/// cancellation is checked between steps.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Default number of sequences decoded together.
pub const DEFAULT_MAX_BATCH: usize = 8;

/// Largest `max_batch`: the decode kernels keep a row's result independent of its company up to this many
/// rows.
pub const MAX_BATCH_LIMIT: usize = crate::model::linear::MAX_FEW_ROWS;

/// Default byte budget of the prefix cache (KV caches of finished requests).
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Cpu,
    /// A CUDA device by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

/// A floating-point type the engine keeps tensors in: weights that are not quantized, the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    BF16,
    F16,
}

impl WeightDtype {
    /// `f32`, `bf16` or `f16`; `what` names the option in the error.
    pub fn parse(what: &str, name: &str) -> Result<Self> {
        match name {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::BF16),
            "f16" => Ok(Self::F16),
            other => Err(Error::invalid(what, format!("unknown dtype {other:?}; allowed: f32, bf16, f16"))),
        }
    }

    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::BF16 => candle_core::DType::BF16,
            Self::F16 => candle_core::DType::F16,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub device: DeviceKind,
    pub dtype: WeightDtype,
    /// Quantize the decoder's linear weights and the output head (the rest stays in `dtype`).
    pub quantize: Option<Quantization>,
    /// Where quantized weights are cached for the next load (the OS cache directory when `None`).
    pub quant_cache_dir: Option<PathBuf>,
    /// Prompt tokens per prefill step.
    pub prefill_chunk: usize,
    /// Override `preprocessor_config.json`'s pixel budget per image (`size.shortest_edge`,
    /// `size.longest_edge`).
    pub min_pixels: Option<usize>,
    pub max_pixels: Option<usize>,
    /// Downscale images to at most this many pixels before the processor, as LLaMA-Factory's
    /// `image_max_pixels` did when VTC-R1 was trained (262,144).
    pub image_max_pixels: Option<usize>,
    /// Images whose vision features are kept for reuse (0: encode every image every time).
    pub vision_cache_images: usize,
    /// Reuse KV caches of finished and running requests up to the longest shared prefix (off: prefill every
    /// prompt from scratch, for measuring what reuse saves).
    pub reuse_prefix: bool,
    /// Bytes the KV caches kept for prefix reuse may take; the least recently used go first.
    pub prefix_cache_bytes: usize,
    /// Sequences decoded together (1 to [`MAX_BATCH_LIMIT`]); more requests wait in the queue.
    pub max_batch: usize,
    /// Cap on prompt + generated tokens (defaults to the model's maximum).
    pub max_context: Option<usize>,
    /// The KV cache's dtype (default: `dtype`); bf16 or f16 halve what a long-context f32 decode step reads.
    pub kv_cache: Option<WeightDtype>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            device: DeviceKind::Cpu,
            dtype: WeightDtype::F32,
            quantize: None,
            quant_cache_dir: None,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            min_pixels: None,
            max_pixels: None,
            image_max_pixels: None,
            vision_cache_images: 16,
            reuse_prefix: true,
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            max_context: None,
            kv_cache: None,
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
    /// The KV cache's dtype.
    pub kv_dtype: String,
    /// The quantization of the decoder's linear weights, if any.
    pub quantization: Option<String>,
    pub max_context: usize,
    pub vocab_size: usize,
    pub eos_token_ids: Vec<u32>,
    pub defaults: GenerationDefaults,
    pub preprocessor: PreprocessorConfig,
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
        allocator::keep_freed_memory();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(ModelInfo, Arc<Tokenizer>)>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_w = queued.clone();
        let live: LiveFlags = Arc::default();
        let live_w = live.clone();
        let threads = rayon::current_num_threads();
        let worker = std::thread::Builder::new()
            .name("vtc-r1-engine".into())
            .spawn(move || {
                let run = move || {
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
                };
                // The engine thread is one of the threads of its own pool, so it does a share of every parallel
                // step instead of handing the step to the global pool and sleeping until it is done: one thread
                // woken per step rather than two (decode of q4k 1024×8 13% faster, f32 prefill 8%, 2-core Xeon).
                // Same thread count as the global pool (RAYON_NUM_THREADS), so the kernels split work as before.
                match rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().thread_name(|i| format!("vtc-r1-engine-{i}")).build() {
                    Ok(pool) => pool.install(run),
                    Err(_) => run(),
                }
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
        let (reply, result) = mpsc::channel();
        self.submit_then(request, cancel.clone(), on_token, move |r| {
            let _ = reply.send(r);
        })?;
        Ok(RequestHandle { cancel, result })
    }

    /// Queues a request whose result goes to `on_done` (called once, on the worker thread) instead of a
    /// handle to wait on: no thread of the caller's waits while it runs (the Node binding resolves a promise
    /// from it, so any number of requests can be in flight).
    pub fn submit_then(
        &self,
        request: ChatRequest,
        cancel: Arc<AtomicBool>,
        on_token: impl FnMut(&TokenEvent) + Send + 'static,
        on_done: impl FnOnce(Result<Completion>) + Send + 'static,
    ) -> Result<()> {
        request.params.validate()?;
        let job = Job { request, on_token: Box::new(on_token), cancel: cancel.clone(), on_done: Box::new(on_done), queued_at: Instant::now() };
        self.queued.fetch_add(1, Ordering::Relaxed);
        lock(&self.live).push(cancel.clone());
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok()).unwrap_or(false);
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            lock(&self.live).retain(|f| !Arc::ptr_eq(f, &cancel));
            return Err(Error::Internal("the engine worker stopped".into()));
        }
        Ok(())
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

