//! What a caller hands the engine and gets back: the request, its images, the completion with token
//! counts and timings, and the handle to cancel or wait for it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::generate::{FinishReason, GenerationParams, TokenEvent, TokenLogprob};
use crate::tokenizer::Message;

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
    /// Cached KV entries and vision features are shared only among requests with the same salt (e.g. one
    /// per API key), so one tenant cannot learn from cache hits what another's prompts held.
    pub cache_salt: Option<String>,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>, images: Vec<ImageData>, params: GenerationParams) -> Self {
        Self { messages, images, params, template_kwargs: Default::default(), add_generation_prompt: true, cache_salt: None }
    }
}

/// Token counts and timings of one request (milliseconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: usize,
    /// Image placeholder tokens within the prompt.
    pub vision_tokens: usize,
    /// Prompt tokens whose KV entries were reused from an earlier request or a sequence running beside it.
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

pub(super) type TokenCallback = Box<dyn FnMut(&TokenEvent) + Send>;

/// Receives a request's result, once, on the worker thread.
pub(super) type DoneCallback = Box<dyn FnOnce(Result<Completion>) + Send>;

pub(super) struct Job {
    pub(super) request: ChatRequest,
    pub(super) on_token: TokenCallback,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) on_done: DoneCallback,
    pub(super) queued_at: Instant,
}

/// A submitted request: cancel it or wait for its completion.
pub struct RequestHandle {
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) result: mpsc::Receiver<Result<Completion>>,
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

