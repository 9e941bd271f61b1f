/**
 * The interface the optical-memory loop (and the HTTP server) talks to: one chat model that streams a
 * completion for a list of messages. Implementations: `OpenAIBackend` (any OpenAI-compatible server) and
 * `EmbeddedBackend` (the in-process native engine).
 *
 * Messages use the Hugging Face / OpenAI content-part style: a message's content is a string or a list of
 * `{type: 'text', text}` and `{type: 'image', image}` parts, in order.
 */
import { VtcError } from '../errors.js'
import type { Page } from '../render.js'

/**
 * An image: a rendered `Page` (raw pixels; encoded to PNG only if the backend needs bytes), an encoded image
 * (PNG/JPEG/WebP/GIF bytes), or a string: a local file path, a `file://` URL or a `data:image/…;base64,` URL.
 */
export type ImageInput = Page | Uint8Array | string

export interface TextPart {
  type: 'text'
  text: string
}

export interface ImagePart {
  type: 'image'
  image: ImageInput
}

export type ContentPart = TextPart | ImagePart

export type Role = 'system' | 'user' | 'assistant'

export interface ChatMessage {
  role: Role
  content: string | ContentPart[]
}

export interface GenerateRequest {
  /** The conversation, in order (required). */
  messages: ChatMessage[]
  /** Most tokens to generate (required). */
  maxTokens: number
  /**
   * Sampling temperature; 0 = greedy (default: the backend's; the embedded engine's is greedy unless the model's
   * `generation_config.json` sets `do_sample: true`, then its `temperature`, else 1; a server applies its own).
   */
  temperature?: number
  /**
   * Nucleus sampling: keep the most likely tokens up to this probability mass (default: the backend's; the
   * embedded engine's is the model's `top_p`, else 1).
   */
  topP?: number
  /**
   * Keep only the k most likely tokens; 0 = all (default: the backend's; the embedded engine's is the model's
   * `top_k` when it samples, else 50).
   */
  topK?: number
  /** Seed of the sampler: the same seed and request give the same tokens (default: the backend's; the embedded engine's is 0). */
  seed?: number
  /** Stop strings (not included in the output) (default: none). */
  stop?: string[]
  /**
   * Ask for the log-probability of each generated token: `text` events then carry `logprobs`, one entry per
   * token (an event may have empty text, e.g. for the end-of-turn token or part of a multi-byte character)
   * (default false).
   */
  logprobs?: boolean
  /** With `logprobs`: also this many most likely alternatives per token (0–20, as OpenAI) (default 0). */
  topLogprobs?: number
  /**
   * Cached prompt entries (KV and vision features) are shared only among requests with the same salt, so one
   * tenant's cache hits reveal nothing about another's prompts (vLLM's `cache_salt`). The embedded engine
   * honours it; OpenAI-compatible servers get `cache_salt` (default: none, one shared cache).
   */
  cacheSalt?: string
  /**
   * Keep generating past end-of-turn, to exactly `maxTokens` (benchmarks with a fixed token schedule).
   * The embedded engine honours it; OpenAI-compatible servers get vLLM's / SGLang's `ignore_eos` (default false).
   */
  ignoreEos?: boolean
  /** Aborting ends the generation; the iterator then throws a VtcError with code `ABORT_ERR` (default: none). */
  signal?: AbortSignal
}

/** Why a generation ended: `stop` (end of turn or a stop string), `length` (maxTokens), or what the backend said. */
export type FinishReason = 'stop' | 'length' | (string & {})

export interface Usage {
  /** Prompt tokens including image tokens, when the backend reports them. */
  promptTokens?: number
  /** Image tokens of the prompt, when the backend reports them. */
  visionTokens?: number
  /** Generated tokens. */
  completionTokens: number
  /** Prompt tokens whose KV entries were reused from an earlier request (the embedded engine, or an
   *  OpenAI-compatible server's `usage.prompt_tokens_details.cached_tokens`). */
  cachedTokens?: number
  /** Images whose vision features were reused instead of encoded again (embedded engine). */
  cachedImages?: number
  /** True when `completionTokens` was counted client-side (the server reported no usage). */
  estimated?: boolean
}

/** Milliseconds spent in each phase, as far as the backend can tell (remote backends measure client-side). */
export interface Timings {
  /** Image preprocessing and vision encoder. */
  visionMs?: number
  /** Prompt processing up to the first generated token (remote: includes network and queueing). */
  prefillMs?: number
  /** First generated token to the last. */
  decodeMs?: number
}

/** A token's text (lossy where its bytes are not UTF-8 alone), its bytes and log-probability. */
export interface TokenChoice {
  token: string
  /** The token's bytes (a piece of a multi-byte character is not valid UTF-8 alone). */
  bytes: number[]
  logprob: number
}

/** A generated token with its log-probability and, when asked, the most likely alternatives there. */
export interface TokenLogprob extends TokenChoice {
  /** Most likely first; empty unless `topLogprobs` was given. */
  topLogprobs: TokenChoice[]
}

/** A piece of generated text, in order; concatenating every `text` gives the completion. */
export interface TextEvent {
  type: 'text'
  text: string
  /** Tokens this piece spans, when known. */
  tokens?: number
  logprobs?: TokenLogprob[]
}

/** The last event of every successful generation. */
export interface DoneEvent {
  type: 'done'
  finishReason: FinishReason
  usage: Usage
  timings: Timings
}

export type GenerationEvent = TextEvent | DoneEvent

/**
 * A chat model. `generate()` streams `text` events and ends with exactly one `done` event; failures are thrown
 * from the iterator as a `GenerationError` carrying the text generated so far. Breaking out of the loop (or
 * aborting `signal`) cancels the generation.
 */
export interface ChatModel {
  /** The model's name (served as the OpenAI `model` id). */
  readonly name: string
  /** Context window in tokens (prompt + completion), when known. */
  readonly contextLength?: number
  generate(request: GenerateRequest): AsyncIterable<GenerationEvent>
}

/** A generation that failed part-way: `partialText` is everything generated before the failure. */
export class GenerationError extends VtcError {
  readonly partialText: string
  /** HTTP status, for remote backends. */
  readonly status?: number
  constructor(code: string, message: string, options: { partialText?: string; status?: number; cause?: unknown } = {}) {
    super(code, message, { cause: options.cause })
    this.name = 'GenerationError'
    this.partialText = options.partialText ?? ''
    if (options.status !== undefined) this.status = options.status
  }
}

/** The error every backend throws when its `signal` aborts. */
export function abortError(partialText = '', cause?: unknown): GenerationError {
  return new GenerationError('ABORT_ERR', 'the generation was aborted', { partialText, cause })
}

/** Collects a generation into its text and final event (convenience for non-streaming callers). */
export async function collect(events: AsyncIterable<GenerationEvent>): Promise<{ text: string } & Omit<DoneEvent, 'type'>> {
  let text = ''
  for await (const ev of events) {
    if (ev.type === 'text') text += ev.text
    else return { text, finishReason: ev.finishReason, usage: ev.usage, timings: ev.timings }
  }
  throw new GenerationError('ERR_VTC_BACKEND_PROTOCOL', 'the generation ended without a done event', { partialText: text })
}
