//! Text generation: sampling, stop rules, `generation_config.json` defaults, and the prefill + decode loop
//! that streams text deltas.
//!
//! Sampling values are resolved per value, in this order: what the request sets; else the checkpoint's
//! `generation_config.json` (temperature, top_p and top_k only where it says `do_sample: true`, as
//! transformers does; repetition_penalty always); else greedy decoding with no penalties.

pub mod sampler;
pub mod stop;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::Value;

pub use sampler::{logprobs, SamplingParams, SamplingRequest, TokenChoice, TokenLogprob};
pub use stop::StopRules;

use crate::error::{Error, Result};
use crate::json_file::read_json;
use crate::model::{KvCache, Prompt, VisionLanguageModel};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// Defaults a checkpoint ships in `generation_config.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationDefaults {
    pub eos_token_ids: Vec<u32>,
    pub sampling: SamplingParams,
    pub max_new_tokens: Option<usize>,
}

impl GenerationDefaults {
    /// Reads `generation_config.json` from a model directory; a missing file gives greedy defaults.
    /// Follows transformers: without `do_sample: true` decoding is greedy whatever the temperature;
    /// with it, unset values fall back to temperature 1, top_p 1, top_k 50.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let json = read_json(&path)?;
        let err = |key: &str, v: &Value| Error::ModelConfig { path: path.clone(), key: key.into(), message: format!("unexpected value {v}") };
        let num = |key: &str, default: f64| -> Result<f64> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v.as_f64().ok_or_else(|| err(key, v)),
            }
        };
        let eos_token_ids = match json.get("eos_token_id") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(|x| x.as_u64().map(|x| x as u32).ok_or_else(|| err("eos_token_id", x))).collect::<Result<_>>()?,
            Some(v) => vec![v.as_u64().ok_or_else(|| err("eos_token_id", v))? as u32],
        };
        let do_sample = json.get("do_sample").and_then(|v| v.as_bool()).unwrap_or(false);
        let sampling = SamplingParams {
            temperature: if do_sample { num("temperature", 1.0)? as f32 } else { 0.0 },
            top_p: num("top_p", 1.0)? as f32,
            top_k: if do_sample { num("top_k", 50.0)? as usize } else { 0 },
            repetition_penalty: num("repetition_penalty", 1.0)? as f32,
            presence_penalty: num("presence_penalty", 0.0)? as f32,
            frequency_penalty: num("frequency_penalty", 0.0)? as f32,
            seed: 0,
        };
        sampling.validate().map_err(|e| Error::ModelConfig { path: path.clone(), key: "(sampling)".into(), message: e.to_string() })?;
        let max_new_tokens = json.get("max_new_tokens").and_then(|v| v.as_u64()).map(|x| x as usize);
        Ok(Self { eos_token_ids, sampling, max_new_tokens })
    }
}

impl GenerationDefaults {
    /// Request parameters that take every default of the checkpoint.
    pub fn params(&self) -> GenerationParams {
        GenerationParams { max_tokens: self.max_new_tokens.unwrap_or(GenerationParams::default().max_tokens), ..Default::default() }
    }
}

/// Per-request generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    pub max_tokens: usize,
    /// Values left unset take the checkpoint's defaults (see the module docs).
    pub sampling: SamplingRequest,
    /// Stop when the text contains one of these (the stop string is not returned).
    pub stop: Vec<String>,
    /// Extra token ids that end generation, besides the model's EOS ids.
    pub stop_token_ids: Vec<u32>,
    /// Keep going past EOS ids (benchmarks).
    pub ignore_eos: bool,
    /// Return log-probabilities with this many alternatives per token.
    pub logprobs: Option<usize>,
    pub skip_special_tokens: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 512,
            sampling: SamplingRequest::default(),
            stop: Vec::new(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            logprobs: None,
            skip_special_tokens: true,
        }
    }
}

impl GenerationParams {
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 {
            return Err(Error::invalid("max_tokens", "must be at least 1"));
        }
        if self.logprobs.is_some_and(|n| n > 100) {
            return Err(Error::invalid("logprobs", "at most 100 alternatives per token"));
        }
        self.sampling.validate()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An EOS id or a stop string.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// One generated token as streamed: `text` is the newly releasable text (may be empty while a
/// multi-byte character or a possible stop string is incomplete, or hold several tokens' text).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    pub token: u32,
    pub text: String,
    pub logprob: Option<TokenLogprob>,
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub text: String,
    /// Every sampled token, including a final EOS.
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub logprobs: Vec<TokenLogprob>,
    pub prefill_ms: f64,
    pub decode_ms: f64,
    /// From the start of prefill to the first sampled token.
    pub first_token_ms: f64,
}

impl Generation {
    fn empty() -> Self {
        Self { text: String::new(), tokens: Vec::new(), finish_reason: FinishReason::Length, logprobs: Vec::new(), prefill_ms: 0.0, decode_ms: 0.0, first_token_ms: 0.0 }
    }
}

/// One sequence being generated, fed one logits row per step: its sampler, stop rules, streamed text and
/// timings. The engine steps many of them together (a batched decode step gives each its own row); the
/// tokens a sequence produces depend only on its own logits.
pub struct Sequence {
    params: GenerationParams,
    sampler: sampler::Sampler,
    rules: StopRules,
    decoder: StreamDecoder,
    /// Bytes of `out.text` already streamed.
    emitted: usize,
    max_ctx: usize,
    out: Generation,
    started: Instant,
    decode_started: Option<Instant>,
}

impl Sequence {
    /// A sequence whose prefill starts now. `max_ctx` caps prompt + generated tokens.
    pub fn new(prompt: &Prompt, params: &GenerationParams, eos_ids: &[u32], defaults: &SamplingParams, max_ctx: usize) -> Result<Self> {
        if prompt.len() >= max_ctx {
            return Err(Error::ContextLength { tokens: prompt.len(), max: max_ctx });
        }
        params.validate()?;
        let sampler = sampler::Sampler::new(params.sampling.resolve(defaults), &prompt.ids)?;
        let eos = if params.ignore_eos { Vec::new() } else { eos_ids.to_vec() };
        let rules = StopRules::new(eos.into_iter().chain(params.stop_token_ids.iter().copied()), params.stop.clone());
        Ok(Self {
            decoder: StreamDecoder::new(params.skip_special_tokens),
            params: params.clone(),
            sampler,
            rules,
            emitted: 0,
            max_ctx,
            out: Generation::empty(),
            started: Instant::now(),
            decode_started: None,
        })
    }

    /// Tokens sampled so far.
    pub fn tokens(&self) -> &[u32] {
        &self.out.tokens
    }

    /// Samples the next token from `logits` (the f32 row after the last token that went through the model;
    /// the cache now holds `cache_len` tokens), streams it through `on_token`, and says whether the sequence
    /// is finished. Otherwise the token is to go through the model next.
    pub fn step(&mut self, logits: &[f32], cache_len: usize, tokenizer: &Tokenizer, on_token: &mut dyn FnMut(&TokenEvent)) -> Result<Option<FinishReason>> {
        if self.decode_started.is_none() {
            self.out.prefill_ms = ms(self.started);
            self.decode_started = Some(Instant::now());
        }
        let token = self.sampler.sample(logits)?;
        self.sampler.accept(token);
        if self.out.tokens.is_empty() {
            self.out.first_token_ms = ms(self.started);
        }
        self.out.tokens.push(token);
        let logprob = self.params.logprobs.map(|n| logprobs(logits, token, n, &|id| tokenizer.token_bytes(id)));
        if let Some(lp) = &logprob {
            self.out.logprobs.push(lp.clone());
        }

        let mut finish = None;
        if self.rules.is_eos(token) {
            finish = Some(FinishReason::Stop);
        } else {
            let before = self.out.text.len();
            self.out.text.push_str(&self.decoder.push(tokenizer, token)?);
            if let Some(at) = self.rules.find_stop(&self.out.text, before) {
                self.out.text.truncate(at);
                finish = Some(FinishReason::Stop);
            }
        }
        if finish.is_none() && (self.out.tokens.len() >= self.params.max_tokens || cache_len + 1 >= self.max_ctx) {
            finish = Some(FinishReason::Length);
        }
        // Release text that can no longer turn out to be part of a stop string.
        let safe = if finish.is_some() { self.out.text.len() } else { self.rules.safe_len(&self.out.text) };
        let text = if safe > self.emitted { self.out.text[self.emitted..safe].to_string() } else { String::new() };
        self.emitted = self.emitted.max(safe);
        on_token(&TokenEvent { token, text, logprob });
        if let Some(f) = finish {
            self.out.finish_reason = f;
        }
        Ok(finish)
    }

    /// The result, finished for `reason` (a stop rule's, or `Cancelled`); the sequence is spent.
    pub fn finish(&mut self, reason: FinishReason) -> Generation {
        self.out.finish_reason = reason;
        match self.decode_started {
            Some(t) => self.out.decode_ms = ms(t),
            None => self.out.prefill_ms = ms(self.started),
        }
        std::mem::replace(&mut self.out, Generation::empty())
    }
}

/// Everything the single-sequence loop needs besides the model.
pub struct Generator<'a> {
    pub model: &'a dyn VisionLanguageModel,
    pub tokenizer: &'a Tokenizer,
    pub eos_ids: &'a [u32],
    /// The checkpoint's sampling defaults, for values the request leaves unset.
    pub defaults: &'a SamplingParams,
    /// Prompt tokens per prefill step (cancellation is checked between steps).
    pub prefill_chunk: usize,
}

impl Generator<'_> {
    /// Prefills `prompt` from `cache.len()` (tokens before it are reused) and decodes until a stop
    /// rule fires. `on_token` sees every sampled token. On return the cache holds the prompt and
    /// every generated token except the last.
    pub fn run(
        &self,
        cache: &mut KvCache,
        prompt: &Prompt,
        params: &GenerationParams,
        cancel: &AtomicBool,
        on_token: &mut dyn FnMut(&TokenEvent),
    ) -> Result<Generation> {
        let max_ctx = self.model.spec().max_context.min(cache.max_len());
        if cache.len() >= prompt.len() {
            return Err(Error::Internal("the cache already covers the whole prompt".into()));
        }
        let mut seq = Sequence::new(prompt, params, self.eos_ids, self.defaults, max_ctx)?;
        let mut logits = None;
        while cache.len() < prompt.len() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(seq.finish(FinishReason::Cancelled));
            }
            let end = (cache.len() + self.prefill_chunk.max(1)).min(prompt.len());
            logits = self.model.prefill(cache, prompt, end)?;
        }
        let mut logits = logits.ok_or_else(|| Error::Internal("no prefill logits".into()))?;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Ok(seq.finish(FinishReason::Cancelled));
            }
            if let Some(reason) = seq.step(&logits.to_vec1::<f32>()?, cache.len(), self.tokenizer, on_token)? {
                return Ok(seq.finish(reason));
            }
            let token = *seq.tokens().last().expect("a token was sampled");
            logits = self.model.decode(cache, prompt, token)?;
        }
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
