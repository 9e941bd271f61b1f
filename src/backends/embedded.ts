/**
 * The embedded backend: a vision-language model (Qwen3-VL or GLM-4.1V / Glyph) running in-process in the native engine (crate/src/engine.rs, bound in
 * crate/src/node/). This file only adapts the binding to the `Backend` interface; the binding it expects is
 * `NativeEngineBinding` below. Until the native module exports it, `loadModel` fails with
 * `ERR_VTC_ENGINE_UNAVAILABLE`.
 */
import { fromNative, VtcError } from '../errors.js'
import { resolveModel, type HubOptions } from '../hub/index.js'
import * as core from '../native.js'
import { imageBytes } from './images.js'
import {
  abortError,
  GenerationError,
  type ChatMessage,
  type ChatModel,
  type GenerateRequest,
  type GenerationEvent,
  type ImageInput,
  type TokenLogprob,
} from './types.js'

// ---- the contract with the native module -------------------------------------------------------------------

/** `NativeEngine` as the native module must export it (a napi class with a static async factory). */
export interface NativeEngineBinding {
  /** Loads a Hugging Face model directory (config.json, safetensors, tokenizer.json, chat template, preprocessor config). */
  load(dir: string, options: NativeLoadOptions, signal?: AbortSignal | null): Promise<NativeEngine>
}

export interface NativeLoadOptions {
  device?: 'cpu' | 'cuda'
  dtype?: 'f32' | 'bf16' | 'f16'
  /** Quantize the decoder's linear weights and output head. */
  quantize?: string
  /** Directory of the quantized-weight cache. */
  quantCacheDir?: string
  /** Reuse the KV cache of the previous request's shared prompt prefix (default true). */
  prefixReuse?: boolean
  /** Images whose vision features are cached (default 16; 0: off). */
  visionCacheImages?: number
  /** Pixel budget per image, overriding `preprocessor_config.json`'s `size.longest_edge`. */
  maxPixels?: number
  /** Smallest pixel count per image, overriding `preprocessor_config.json`'s `size.shortest_edge`. */
  minPixels?: number
  /** Downscale images to at most this many pixels before the processor, as LLaMA-Factory's `image_max_pixels` did in training. */
  imageMaxPixels?: number
  /** Prompt plus completion tokens a request may take, at most the model's window. */
  maxContext?: number
}

/** One loaded model on its own worker thread, with a request queue. */
export interface NativeEngine {
  /** The model's name (directory name or `_name_or_path`). */
  readonly name: string
  /** `config.json`'s `model_type`: `qwen3_vl` or `glm4v`. */
  readonly modelType: string
  /** `max_position_embeddings` of the text model. */
  readonly contextLength: number
  /**
   * Queues one generation. `onEvent` is called on the JS thread for every decoded piece of text (a
   * threadsafe function, in order); the promise resolves after the last piece. Aborting `signal` stops decoding
   * between tokens and resolves with `finishReason: 'cancelled'` (the adapter turns that into an AbortError).
   */
  generate(request: NativeGenerateRequest, onEvent: (event: NativeGenerationEvent) => void, signal?: AbortSignal | null): Promise<NativeGenerationResult>
  /** Frees the weights; later calls fail. */
  dispose(): void
}

export interface NativeGenerateRequest {
  /** Rendered with the model's chat template (`add_generation_prompt`). */
  messages: NativeMessage[]
  maxTokens: number
  temperature?: number
  topP?: number
  topK?: number
  seed?: number
  stop?: string[]
  logprobs?: boolean
  topLogprobs?: number
  ignoreEos?: boolean
  cacheSalt?: string
}

export interface NativeMessage {
  role: string
  content: NativePart[]
}

export interface NativePart {
  type: 'text' | 'image'
  text?: string
  image?: NativeImage
}

/** Raw pixels (rendered pages go straight in, no PNG round trip) or encoded bytes (PNG/JPEG/WebP/GIF). */
export interface NativeImage {
  pixels?: Buffer
  width?: number
  height?: number
  /** 1 (grey) or 3 (RGB). */
  channels?: number
  encoded?: Buffer
}

export interface NativeGenerationEvent {
  /** Newly decoded text (may be empty while a multi-byte character is incomplete). */
  text: string
  /** Tokens this piece spans. */
  tokens: number
  /** One entry per token, when requested. */
  logprobs?: TokenLogprob[]
}

export interface NativeGenerationResult {
  /** `stop` (EOS / end of turn / a stop string) or `length`. */
  finishReason: string
  /** The whole completion (what the events add up to). */
  text?: string
  promptTokens: number
  visionTokens: number
  /** Prompt tokens whose KV entries came from the previous request. */
  cachedTokens?: number
  /** Images whose vision features came from the cache. */
  cachedImages?: number
  completionTokens: number
  visionMs: number
  prefillMs: number
  decodeMs: number
}

/** The binding, if this build of the native module has it. */
export function engineBinding(): NativeEngineBinding | undefined {
  // Typed, not cast: tsc fails here when the generated binding and this contract drift apart.
  const b: NativeEngineBinding | undefined = core.NativeEngine
  return b && typeof b.load === 'function' ? b : undefined
}

// ---- the adapter -----------------------------------------------------------------------------------------------

export type Quantization = 'q8_0' | 'q6k' | 'q5k' | 'q4k' | 'q4_0'

export interface LoadModelOptions {
  device?: 'cpu' | 'cuda'
  /** Type of every tensor that is not quantized (default f32). */
  dtype?: 'f32' | 'bf16' | 'f16'
  /**
   * Quantize the text decoder's linear weights and the output head at load time (llama.cpp's block formats, run
   * by candle's quantized kernels); embeddings, norms and the vision tower stay in `dtype`. The result is cached
   * (see `quantCacheDir`), so a second load of the same files reads it instead of quantizing again.
   */
  quantize?: Quantization
  /** Directory of the quantized-weight cache (default: `vtc-r1/quantized` in the OS cache directory). */
  quantCacheDir?: string
  /**
   * Reuse the KV cache of the prompt prefix a request shares with an earlier or a running one (default true),
   * so a round of the loop only prefills its new pages and 16 samples of one question prefill it once. Off:
   * every prompt is prefilled from scratch.
   */
  prefixReuse?: boolean
  /** Megabytes the KV caches kept for prefix reuse may take (default 1024); the least recently used go first. */
  prefixCacheMb?: number
  /**
   * Requests decoded together, 1 to 16 (default 8). Their decode steps share one pass over the weights, so on a
   * CPU 8 sequences cost little more than one; more requests wait in the queue. A request's tokens do not depend
   * on the others in its batch.
   */
  maxBatch?: number
  /** Cache vision features per page image so each is encoded once per run: `true` (default, 16 images), a number of images, or `false`. */
  visionCache?: boolean | number
  /**
   * Pixel budget per image: the image processor's `max_pixels` (`size.longest_edge` of `preprocessor_config.json`),
   * which an image larger than it is resized under. GLM-4.1V's processor counts the two temporal frames of a still
   * image, so for it the budget per image is half this number. See the README's "Models" section for what VTC-R1
   * checkpoints use.
   */
  maxPixels?: number
  /** Smallest pixel count per image (`size.shortest_edge`); smaller images are scaled up. */
  minPixels?: number
  /**
   * Downscale each image to at most this many pixels before the processor sees it, exactly as LLaMA-Factory's
   * `image_max_pixels` does in training. VTC-R1 checkpoints were trained with 262144: a full page is then 330
   * vision tokens for GLM-4.1V / Glyph and 247 for Qwen3-VL, as in training (the processor defaults give 630 and
   * 468). Off by default.
   */
  imageMaxPixels?: number
  /**
   * The context window (prompt + completion tokens), at most the model's `max_position_embeddings`: the engine
   * holds every request to it, and the optical-memory loop and the server's vtc mode check their budgets against
   * it. Default: the model's.
   */
  contextLength?: number
  /**
   * For a model given by Hugging Face id: the revision (default `main`), the cache, the endpoint, the token,
   * offline mode and download progress. Defaults come from the environment as for huggingface_hub (`HF_HUB_CACHE`,
   * `HF_HOME`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`).
   */
  hub?: Omit<HubOptions, 'signal'>
  signal?: AbortSignal
}

/**
 * Loads a model into the embedded engine: a model directory, or a Hugging Face model id (`org/name`) from the hub
 * cache, which is downloaded into the cache first when it is not there (see `pullModel`). An existing path is
 * always a directory.
 */
export async function loadModel(model: string, options: LoadModelOptions = {}): Promise<EmbeddedBackend> {
  const binding = engineBinding()
  if (!binding) {
    throw new VtcError(
      'ERR_VTC_ENGINE_UNAVAILABLE',
      'embedded engine not built yet: this build of the native module has no NativeEngine; ' +
        'use an OpenAI-compatible server instead (--base-url URL, or OpenAIBackend)',
    )
  }
  if (typeof model !== 'string' || !model) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'loadModel: give a model directory or a Hugging Face model id (org/name)')
  const { signal, hub, prefixReuse, visionCache, maxPixels, minPixels, imageMaxPixels, maxBatch, prefixCacheMb, contextLength, ...rest } = options
  if (prefixReuse !== undefined && typeof prefixReuse !== 'boolean') {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: prefixReuse must be a boolean, got ${JSON.stringify(prefixReuse)}`)
  }
  if (visionCache !== undefined && typeof visionCache !== 'boolean' && !(Number.isInteger(visionCache) && visionCache >= 0 && visionCache < 2 ** 32)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: visionCache must be a boolean or a whole number of images, got ${JSON.stringify(visionCache)}`)
  }
  if (contextLength !== undefined && !(Number.isInteger(contextLength) && contextLength > 0)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: contextLength must be a positive whole number of tokens, got ${JSON.stringify(contextLength)}`)
  }
  for (const [name, v] of [['maxPixels', maxPixels], ['minPixels', minPixels], ['imageMaxPixels', imageMaxPixels]] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v > 0 && v < 2 ** 31)) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: ${name} must be a positive whole number of pixels, got ${JSON.stringify(v)}`)
    }
  }
  if (maxBatch !== undefined && !(Number.isInteger(maxBatch) && maxBatch >= 1 && maxBatch <= 16)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: maxBatch must be a whole number of sequences from 1 to 16, got ${JSON.stringify(maxBatch)}`)
  }
  if (prefixCacheMb !== undefined && !(Number.isInteger(prefixCacheMb) && prefixCacheMb >= 0 && prefixCacheMb < 2 ** 32)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `loadModel: prefixCacheMb must be a whole number of megabytes, got ${JSON.stringify(prefixCacheMb)}`)
  }
  const load: NativeLoadOptions = {
    ...(maxPixels !== undefined ? { maxPixels } : {}),
    ...(minPixels !== undefined ? { minPixels } : {}),
    ...(imageMaxPixels !== undefined ? { imageMaxPixels } : {}),
    ...rest,
    ...(prefixReuse !== undefined ? { prefixReuse } : {}),
    ...(maxBatch !== undefined ? { maxBatch } : {}),
    ...(prefixCacheMb !== undefined ? { prefixCacheMb } : {}),
    ...(contextLength !== undefined ? { maxContext: contextLength } : {}),
    ...(visionCache === false ? { visionCacheImages: 0 } : typeof visionCache === 'number' ? { visionCacheImages: visionCache } : {}),
  }
  const { dir, id } = await resolveModel(model, { ...hub, signal })
  try {
    return new EmbeddedBackend(await binding.load(dir, load, signal), dir, id)
  } catch (err) {
    throw fromNative(err)
  }
}

/** A `Backend` over the in-process engine. */
export class EmbeddedBackend implements ChatModel {
  /** `dir`: the directory loaded; `id`: the Hugging Face model id it was loaded by, which is then its name. */
  constructor(
    readonly engine: NativeEngine,
    readonly dir?: string,
    private readonly id?: string,
  ) {}

  get name(): string {
    return this.id ?? this.engine.name
  }

  /** Prompt plus completion tokens a request may take (`LoadModelOptions.contextLength` or the model's window). */
  get contextLength(): number {
    return this.engine.contextLength
  }

  /** The model family, as `config.json` names it: `qwen3_vl` or `glm4v`. */
  get modelType(): string {
    return this.engine.modelType
  }

  /** `generate` with the messages first: `for await (const ev of model.chat(messages, { maxTokens }))`. */
  chat(messages: ChatMessage[], options: Omit<GenerateRequest, 'messages'>): AsyncGenerator<GenerationEvent> {
    return this.generate({ ...options, messages })
  }

  async *generate(req: GenerateRequest): AsyncGenerator<GenerationEvent> {
    const signal = req.signal
    if (signal?.aborted) throw abortError('', signal.reason)
    const request: NativeGenerateRequest = {
      messages: await Promise.all(req.messages.map((m, i) => toNativeMessage(m, i))),
      maxTokens: req.maxTokens,
      ...(req.temperature !== undefined ? { temperature: req.temperature } : {}),
      ...(req.topP !== undefined ? { topP: req.topP } : {}),
      ...(req.topK !== undefined ? { topK: req.topK } : {}),
      ...(req.seed !== undefined ? { seed: req.seed } : {}),
      ...(req.stop?.length ? { stop: req.stop } : {}),
      ...(req.logprobs ? { logprobs: true } : {}),
      ...(req.topLogprobs !== undefined ? { topLogprobs: req.topLogprobs } : {}),
      ...(req.cacheSalt !== undefined ? { cacheSalt: req.cacheSalt } : {}),
      ...(req.ignoreEos ? { ignoreEos: true } : {}),
    }
    // the engine pushes events; this generator pulls them
    const queue: NativeGenerationEvent[] = []
    let wake: (() => void) | undefined
    let settled: { ok: true; value: NativeGenerationResult } | { ok: false; error: unknown } | undefined
    // stops the engine when the consumer leaves early
    const stop = new AbortController()
    const onAbort = () => stop.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })
    let text = ''
    try {
      this.engine
        .generate(
          request,
          (ev) => {
            queue.push(ev)
            wake?.()
          },
          stop.signal,
        )
        .then(
          (value) => (settled = { ok: true, value }),
          (error: unknown) => (settled = { ok: false, error }),
        )
        .finally(() => wake?.())
      for (;;) {
        while (queue.length) {
          const ev = queue.shift()!
          // an event with no text still carries its token's logprob (EOS, part of a character)
          if (!ev.text && !ev.logprobs?.length) continue
          text += ev.text
          yield { type: 'text', text: ev.text, tokens: ev.tokens, ...(ev.logprobs ? { logprobs: ev.logprobs } : {}) }
        }
        if (settled) break
        await new Promise<void>((resolve) => (wake = resolve))
        wake = undefined
      }
      // events queued before the promise settled were drained above; settle now
      const s = settled as NonNullable<typeof settled>
      if (!s.ok) {
        if (signal?.aborted) throw abortError(text, s.error)
        const e = fromNative(s.error) as { code?: string; message?: string }
        throw new GenerationError(typeof e?.code === 'string' ? e.code : 'ERR_VTC_ENGINE', e?.message ?? String(e), { partialText: text, cause: s.error })
      }
      const r = s.value
      // The engine stops between tokens on abort and resolves 'cancelled': surface that as the abort it is.
      if (signal?.aborted) throw abortError(text, signal.reason)
      // The promise and the event callback reach the JS thread by separate queues, so the last pieces can still be
      // in flight when it settles: the result's text is the whole completion.
      if (r.text !== undefined && r.text.length > text.length && r.text.startsWith(text)) {
        const rest = r.text.slice(text.length)
        text = r.text
        yield { type: 'text', text: rest }
      }
      yield {
        type: 'done',
        finishReason: r.finishReason,
        usage: {
          promptTokens: r.promptTokens,
          visionTokens: r.visionTokens,
          completionTokens: r.completionTokens,
          ...(r.cachedTokens !== undefined ? { cachedTokens: r.cachedTokens } : {}),
          ...(r.cachedImages !== undefined ? { cachedImages: r.cachedImages } : {}),
        },
        timings: { visionMs: r.visionMs, prefillMs: r.prefillMs, decodeMs: r.decodeMs },
      }
    } finally {
      signal?.removeEventListener('abort', onAbort)
      if (!settled) stop.abort(new VtcError('ABORT_ERR', 'the consumer stopped reading'))
    }
  }

  dispose(): void {
    this.engine.dispose()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose()
  }
}

async function toNativeMessage(m: ChatMessage, i: number): Promise<NativeMessage> {
  if (typeof m.content === 'string') return { role: m.role, content: [{ type: 'text', text: m.content }] }
  return {
    role: m.role,
    content: await Promise.all(
      m.content.map(async (p, j): Promise<NativePart> => {
        if (p.type === 'text') return { type: 'text', text: p.text }
        return { type: 'image', image: await toNativeImage(p.image, `messages[${i}].content[${j}].image`) }
      }),
    ),
  }
}

async function toNativeImage(image: ImageInput, what: string): Promise<NativeImage> {
  if (typeof image === 'object' && image !== null && !(image instanceof Uint8Array)) {
    return { pixels: image.data, width: image.width, height: image.height, channels: image.channels }
  }
  return { encoded: (await imageBytes(image, what)).bytes }
}
