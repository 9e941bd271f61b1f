//! JS bindings of the engine: `NativeEngine.load(dir)` and `engine.generate(request, onEvent)`,
//! in the shape `src/backends/embedded.ts` adapts to the `Backend` interface.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::{AbortSignal, AsyncTask, Buffer};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::bindgen_prelude::Object;
use napi::{Env, Status, Task};
use napi_derive::napi;

use super::guarded;
use crate::engine::{ChatRequest, Completion, DeviceKind, Engine, EngineOptions, ImageData, WeightDtype};
use crate::error::Error;
use crate::generate::{GenerationParams, SamplingRequest, TokenChoice, TokenEvent, TokenLogprob};
use crate::quant::Quantization;
use crate::tokenizer::{Content, Message, Part};

#[napi(object)]
#[derive(Default)]
pub struct NativeLoadOptions {
    /// `cpu` (default) or `cuda` (needs a build with the `cuda` feature).
    pub device: Option<String>,
    /// `f32` (default), `bf16` or `f16`: the type of every tensor that is not quantized.
    pub dtype: Option<String>,
    /// Quantize the decoder's linear weights and output head: `q8_0`, `q6k`, `q5k`, `q4k` or `q4_0`.
    pub quantize: Option<String>,
    /// Directory of the quantized-weight cache (default: the OS cache directory).
    pub quant_cache_dir: Option<String>,
    /// Reuse KV caches of earlier and running requests up to a shared prompt prefix (default true).
    pub prefix_reuse: Option<bool>,
    /// Megabytes the KV caches kept for prefix reuse may take (default 1024).
    pub prefix_cache_mb: Option<u32>,
    /// Sequences decoded together, 1 to 16 (default 8); more requests wait in the queue.
    pub max_batch: Option<u32>,
    /// Images whose vision features are cached (default 16; 0 turns the cache off).
    pub vision_cache_images: Option<u32>,
    /// Pixel budget per image, overriding `preprocessor_config.json` (`size.longest_edge`).
    pub max_pixels: Option<u32>,
    /// Smallest pixel count per image, overriding `preprocessor_config.json` (`size.shortest_edge`).
    pub min_pixels: Option<u32>,
    /// Downscale images to at most this many pixels before the processor, as LLaMA-Factory's
    /// `image_max_pixels` did in training (VTC-R1: 262144).
    pub image_max_pixels: Option<u32>,
    /// Prompt plus completion tokens a request may take, at most the model's `max_position_embeddings`.
    pub max_context: Option<u32>,
    /// The KV cache's dtype: `f32`, `bf16` or `f16` (default: `dtype`). bf16 or f16 halve the memory of long
    /// contexts and what an f32 model's decode step reads.
    pub kv_cache: Option<String>,
}

#[napi(object)]
pub struct NativeImage {
    /// Raw interleaved pixels (a rendered page), with `width`, `height`, `channels`.
    pub pixels: Option<Buffer>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub channels: Option<u32>,
    /// PNG or JPEG bytes.
    pub encoded: Option<Buffer>,
}

#[napi(object)]
pub struct NativePart {
    /// `text` or `image`.
    #[napi(ts_type = "'text' | 'image'")]
    pub r#type: String,
    pub text: Option<String>,
    pub image: Option<NativeImage>,
}

#[napi(object)]
pub struct NativeMessage {
    pub role: String,
    pub content: Vec<NativePart>,
}

#[napi(object)]
pub struct NativeGenerateRequest {
    pub messages: Vec<NativeMessage>,
    pub max_tokens: u32,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub seed: Option<i64>,
    pub stop: Option<Vec<String>>,
    /// Also return the log-probability of each token.
    pub logprobs: Option<bool>,
    /// With `logprobs`: this many most likely alternatives per token (0–20).
    pub top_logprobs: Option<u32>,
    /// Keep generating past end-of-turn tokens, to `max_tokens` (benchmarks with a fixed schedule).
    pub ignore_eos: Option<bool>,
    /// Share cached prompt entries only with requests of the same salt (e.g. one per tenant).
    pub cache_salt: Option<String>,
}

#[napi(object)]
pub struct NativeGenerationEvent {
    /// Newly releasable text (may be empty while a character or a stop string is incomplete).
    pub text: String,
    /// Tokens this event stands for.
    pub tokens: u32,
    /// One entry per token, when `logprobs` was asked for.
    pub logprobs: Option<Vec<NativeTokenLogprob>>,
}

/// A token's text (lossy where its bytes are not UTF-8 alone), its bytes and log-probability.
#[napi(object)]
pub struct NativeTokenChoice {
    pub token: String,
    pub bytes: Vec<u32>,
    pub logprob: f64,
}

#[napi(object)]
pub struct NativeTokenLogprob {
    pub token: String,
    pub bytes: Vec<u32>,
    pub logprob: f64,
    /// The most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<NativeTokenChoice>,
}

fn token_choice(c: &TokenChoice) -> NativeTokenChoice {
    NativeTokenChoice { token: String::from_utf8_lossy(&c.bytes).into_owned(), bytes: c.bytes.iter().map(|&b| b as u32).collect(), logprob: c.logprob as f64 }
}

fn token_logprob(lp: &TokenLogprob) -> NativeTokenLogprob {
    let NativeTokenChoice { token, bytes, logprob } = token_choice(&lp.chosen);
    NativeTokenLogprob { token, bytes, logprob, top_logprobs: lp.top.iter().map(token_choice).collect() }
}

#[napi(object)]
pub struct NativeGenerationResult {
    /// `stop`, `length` or `cancelled`.
    pub finish_reason: String,
    pub text: String,
    pub prompt_tokens: u32,
    pub vision_tokens: u32,
    /// Prompt tokens whose KV entries were reused from the previous request.
    pub cached_tokens: u32,
    /// Images whose vision features came from the cache.
    pub cached_images: u32,
    pub completion_tokens: u32,
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// A model loaded into the engine's own worker thread.
#[napi]
pub struct NativeEngine {
    inner: Mutex<Option<Arc<Engine>>>,
    name: String,
    model_type: String,
    context_length: u32,
}

#[napi]
impl NativeEngine {
    /// Loads a Hugging Face model directory (off the JS thread).
    #[napi(ts_return_type = "Promise<NativeEngine>")]
    pub fn load(dir: String, options: Option<NativeLoadOptions>, signal: Option<AbortSignal>) -> napi::Result<AsyncTask<LoadTask>> {
        let o = options.unwrap_or_default();
        let device = match o.device.as_deref().unwrap_or("cpu") {
            "cpu" => DeviceKind::Cpu,
            "cuda" => DeviceKind::Cuda(0),
            other => return guarded(|| Err(Error::invalid("device", format!("unknown device {other:?}; allowed: cpu, cuda")))),
        };
        let dtype = match WeightDtype::parse("dtype", o.dtype.as_deref().unwrap_or("f32")) {
            Ok(d) => d,
            Err(e) => return guarded(|| Err(e)),
        };
        let kv_cache = match o.kv_cache.as_deref().map(|d| WeightDtype::parse("kvCache", d)).transpose() {
            Ok(d) => d,
            Err(e) => return guarded(|| Err(e)),
        };
        let quantize = match o.quantize.as_deref().map(Quantization::parse).transpose() {
            Ok(q) => q,
            Err(e) => return guarded(|| Err(e)),
        };
        let defaults = EngineOptions::default();
        let options = EngineOptions {
            device,
            dtype,
            quantize,
            quant_cache_dir: o.quant_cache_dir.map(PathBuf::from),
            reuse_prefix: o.prefix_reuse.unwrap_or(defaults.reuse_prefix),
            prefix_cache_bytes: o.prefix_cache_mb.map_or(defaults.prefix_cache_bytes, |mb| mb as usize * (1 << 20)),
            max_batch: o.max_batch.map_or(defaults.max_batch, |n| n as usize),
            vision_cache_images: o.vision_cache_images.map_or(defaults.vision_cache_images, |n| n as usize),
            max_pixels: o.max_pixels.map(|n| n as usize),
            min_pixels: o.min_pixels.map(|n| n as usize),
            image_max_pixels: o.image_max_pixels.map(|n| n as usize),
            max_context: o.max_context.map(|n| n as usize),
            kv_cache,
            ..defaults
        };
        Ok(AsyncTask::with_optional_signal(LoadTask { dir: PathBuf::from(dir), options }, signal))
    }

    /// The model directory's name.
    #[napi(getter)]
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// `config.json`'s `model_type`: the model family (`qwen3_vl`, `glm4v`).
    #[napi(getter)]
    pub fn model_type(&self) -> String {
        self.model_type.clone()
    }

    /// Prompt plus generated tokens the model accepts.
    #[napi(getter)]
    pub fn context_length(&self) -> u32 {
        self.context_length
    }

    /// Generates a reply; `onEvent` receives the text as it is produced. Aborting `signal` stops
    /// generation between tokens and resolves with `finishReason: 'cancelled'`. The request goes straight to
    /// the engine's queue and the promise settles from its worker, so no Node thread waits while it runs
    /// and any number of requests can be in flight (the engine batches them).
    #[napi(ts_return_type = "Promise<NativeGenerationResult>")]
    pub fn generate<'env>(
        &self,
        env: &'env Env,
        request: NativeGenerateRequest,
        #[napi(ts_arg_type = "(event: NativeGenerationEvent) => void")] on_event: ThreadsafeFunction<
            NativeGenerationEvent,
            (),
            NativeGenerationEvent,
            Status,
            false,
        >,
        signal: Option<AbortSignal>,
    ) -> napi::Result<Object<'env>> {
        let engine = self.engine()?;
        let want_logprobs = request.logprobs.unwrap_or(false);
        let request = guarded(|| chat_request(request))?;
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(s) = &signal {
            let flag = cancel.clone();
            s.on_abort(move || flag.store(true, Ordering::Relaxed));
        }
        let (deferred, promise) = env.create_deferred()?;
        let on_token = move |ev: &TokenEvent| {
            let logprobs = want_logprobs.then(|| ev.logprob.iter().map(token_logprob).collect());
            on_event.call(NativeGenerationEvent { text: ev.text.clone(), tokens: 1, logprobs }, ThreadsafeFunctionCallMode::NonBlocking);
        };
        let on_done = move |result: crate::Result<Completion>| match result {
            Ok(c) => deferred.resolve(move |_| Ok(generation_result(c))),
            Err(e) => deferred.reject(super::to_napi(e)),
        };
        guarded(|| engine.submit_then(request, cancel, on_token, on_done))?;
        Ok(promise)
    }

    /// Frees the model once running requests finish; later calls fail.
    #[napi]
    pub fn dispose(&self) {
        if let Ok(mut e) = self.inner.lock() {
            e.take();
        }
    }

    fn engine(&self) -> napi::Result<Arc<Engine>> {
        let guard = self.inner.lock().map_err(|_| napi::Error::from_reason("engine lock poisoned"))?;
        guard.clone().ok_or_else(|| super::to_napi(Error::invalid("model", "this model was disposed")))
    }
}

/// Splits the JS messages into the template's messages and the ordered image list.
fn chat_request(r: NativeGenerateRequest) -> crate::Result<ChatRequest> {
    let mut images = Vec::new();
    let mut messages = Vec::with_capacity(r.messages.len());
    for (m, msg) in r.messages.into_iter().enumerate() {
        let mut parts = Vec::with_capacity(msg.content.len());
        for (p, part) in msg.content.into_iter().enumerate() {
            let at = || format!("messages[{m}].content[{p}]");
            match part.r#type.as_str() {
                "text" => parts.push(Part::Text { text: part.text.unwrap_or_default() }),
                "image" => {
                    let img = part.image.ok_or_else(|| Error::invalid(at(), "an image part needs `image`"))?;
                    images.push(image_data(img).map_err(|e| Error::invalid(at(), e.to_string()))?);
                    parts.push(Part::Image);
                }
                other => return Err(Error::invalid(at(), format!("unknown part type {other:?}; allowed: text, image"))),
            }
        }
        messages.push(Message { role: msg.role, content: Content::Parts(parts) });
    }
    let mut params = GenerationParams { max_tokens: r.max_tokens as usize, ..GenerationParams::default() };
    // Unset values take the checkpoint's generation_config.json defaults in the engine.
    params.sampling = SamplingRequest {
        temperature: r.temperature.map(|t| t as f32),
        top_p: r.top_p.map(|p| p as f32),
        top_k: r.top_k.map(|k| k as usize),
        repetition_penalty: r.repetition_penalty.map(|p| p as f32),
        presence_penalty: r.presence_penalty.map(|p| p as f32),
        frequency_penalty: None,
        seed: r.seed.map(|s| s as u64),
    };
    params.stop = r.stop.unwrap_or_default();
    params.ignore_eos = r.ignore_eos.unwrap_or(false);
    match (r.logprobs.unwrap_or(false), r.top_logprobs) {
        (_, Some(n)) if n > 20 => return Err(Error::invalid("topLogprobs", format!("{n}: at most 20 alternatives per token"))),
        (false, Some(n)) if n > 0 => return Err(Error::invalid("topLogprobs", "needs `logprobs: true`")),
        (true, n) => params.logprobs = Some(n.unwrap_or(0) as usize),
        _ => {}
    }
    let mut request = ChatRequest::new(messages, images, params);
    request.cache_salt = r.cache_salt;
    Ok(request)
}

fn image_data(img: NativeImage) -> crate::Result<ImageData> {
    if let Some(bytes) = img.encoded {
        return Ok(ImageData::Encoded(bytes.to_vec()));
    }
    match (img.pixels, img.width, img.height) {
        (Some(px), Some(width), Some(height)) => {
            let channels = img.channels.unwrap_or(3);
            if !(channels == 1 || channels == 3) || super::pixel_bytes(width, height, channels) != Some(px.len()) {
                return Err(Error::invalid(
                    "pixels",
                    format!("{} bytes do not hold {width}×{height}×{channels} pixels", px.len()),
                ));
            }
            Ok(ImageData::Raw { width, height, channels: channels as u8, data: px.to_vec() })
        }
        _ => Err(Error::invalid("image", "give `encoded` bytes or `pixels` with `width` and `height`")),
    }
}

pub struct LoadTask {
    dir: PathBuf,
    options: EngineOptions,
}

impl Task for LoadTask {
    type Output = Engine;
    type JsValue = NativeEngine;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| Engine::load(&self.dir, self.options.clone()))
    }

    fn resolve(&mut self, _env: Env, engine: Self::Output) -> napi::Result<Self::JsValue> {
        let name = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
        let context_length = engine.info().max_context.min(u32::MAX as usize) as u32;
        let model_type = engine.info().model_type.clone();
        Ok(NativeEngine { inner: Mutex::new(Some(Arc::new(engine))), name, model_type, context_length })
    }
}

/// The JS view of a finished request.
fn generation_result(c: Completion) -> NativeGenerationResult {
    let u = &c.usage;
    NativeGenerationResult {
        finish_reason: c.finish_reason.as_str().into(),
        text: c.text,
        prompt_tokens: u.prompt_tokens as u32,
        vision_tokens: u.vision_tokens as u32,
        cached_tokens: u.cached_tokens as u32,
        cached_images: u.cached_images as u32,
        completion_tokens: u.completion_tokens as u32,
        vision_ms: u.vision_ms,
        prefill_ms: u.prefill_ms,
        decode_ms: u.decode_ms,
    }
}
