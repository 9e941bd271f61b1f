/**
 * A `ChatModel` over any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, the vtc-r1 server):
 * `POST {baseUrl}/chat/completions` with `stream: true`, images as `image_url` parts carrying data URLs,
 * the reply read as server-sent events. Uses Node's built-in fetch; nothing is retried.
 */
import { VtcError } from '../errors.js'
import { countTextTokens } from '../text-tokens.js'
import { imageDataUrl } from './images.js'
import {
  abortError,
  GenerationError,
  type ChatMessage,
  type ChatModel,
  type FinishReason,
  type GenerateRequest,
  type GenerationEvent,
  type TokenChoice,
  type TokenLogprob,
  type Usage,
} from './types.js'

export interface OpenAIBackendOptions {
  /**
   * The server's API root: `http://host:8000/v1` (a bare `http://host:8000` gets `/v1` appended)
   * (default `$OPENAI_BASE_URL`; without either the constructor throws).
   */
  baseUrl?: string
  /**
   * The `model` id to request (default: the one model the server lists at `GET /models`, asked on the first
   * request or by `resolveModel()`; vtc-r1 serve's `<name>:vtc` beside `<name>` does not count).
   */
  model?: string
  /** Sent as `Authorization: Bearer …` (default `$OPENAI_API_KEY`, else none). */
  apiKey?: string
  /** Extra HTTP headers of every request; they override the defaults, `authorization` included (default: none). */
  headers?: Record<string, string>
  /**
   * The model's context window, if known (the loop checks its budgets against it) (default: what the server
   * lists for the model, vLLM's `max_model_len`, once the model was taken from its list; else unknown).
   */
  contextLength?: number
  /** Name reported by `backend.name` (default: `model`). */
  name?: string
  /** Extra fields merged into every request body (for example vLLM's `repetition_penalty`) (default: none). */
  extraBody?: Record<string, unknown>
  /**
   * Servers with a reasoning parser stream the thinking as `reasoning_content` and strip the tags. With this
   * on (default) such deltas are merged back as `<think>…</think>` followed by the content, so the text is the
   * model's raw output (which the loop's completion check and rendering expect).
   */
  mergeReasoning?: boolean
}

/** Options of `OpenAIBackend.listModels` and `OpenAIBackend.models`. */
export interface ModelsOptions {
  /** Sent as `Authorization: Bearer …` (default: none; unlike the constructor, `$OPENAI_API_KEY` is not read). */
  apiKey?: string
  /** Aborting cancels the request, which then rejects with code `ABORT_ERR` (default: none). */
  signal?: AbortSignal
}

/** `http://h:p` → `http://h:p/v1`; `http://h:p/v1/` → `http://h:p/v1`. */
export function apiRoot(baseUrl: string): string {
  let url: URL
  try {
    url = new URL(baseUrl)
  } catch {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `base URL ${JSON.stringify(baseUrl)} is not a valid URL (expected e.g. http://127.0.0.1:8000/v1)`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `base URL ${baseUrl}: only http and https are supported`)
  }
  let path = url.pathname.replace(/\/+$/, '')
  if (path === '') path = '/v1'
  return `${url.origin}${path}`
}

export class OpenAIBackend implements ChatModel {
  readonly root: string
  private modelId?: string
  private listing?: Promise<string>
  private listedContextLength?: number
  private readonly options: OpenAIBackendOptions
  private readonly apiKey?: string
  private readonly headers: Record<string, string>
  private readonly extraBody: Record<string, unknown>
  private readonly mergeReasoning: boolean

  constructor(options: OpenAIBackendOptions = {}) {
    const baseUrl = options.baseUrl ?? process.env.OPENAI_BASE_URL
    if (!baseUrl) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'OpenAIBackend: give `baseUrl` (or set OPENAI_BASE_URL), e.g. http://127.0.0.1:8000/v1')
    if (options.model !== undefined && (typeof options.model !== 'string' || !options.model)) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', "OpenAIBackend: `model` must be a non-empty string, or left out to take the server's only model")
    }
    this.root = apiRoot(baseUrl)
    this.options = options
    this.modelId = options.model
    this.apiKey = options.apiKey ?? process.env.OPENAI_API_KEY
    this.headers = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}),
      ...options.headers,
    }
    this.extraBody = options.extraBody ?? {}
    this.mergeReasoning = options.mergeReasoning ?? true
  }

  /** The model id requested: the one given, or the server's once `resolveModel()` or a request has asked for it. */
  get model(): string | undefined {
    return this.modelId
  }

  /** `options.name`, else the model id, else (before the server was asked) the API root. */
  get name(): string {
    return this.options.name ?? this.modelId ?? this.root
  }

  get contextLength(): number | undefined {
    return this.options.contextLength ?? this.listedContextLength
  }

  /** The model id to request: the one given, or the only model the server lists (asked once). */
  resolveModel(): Promise<string> {
    if (this.modelId) return Promise.resolve(this.modelId)
    this.listing ??= OpenAIBackend.models(this.root, { apiKey: this.apiKey }).then((all) => {
      // vtc-r1 serve lists its model's optical-memory mode beside it
      const models = all.filter((m) => !(m.id.endsWith(':vtc') && all.some((x) => `${x.id}:vtc` === m.id)))
      if (models.length !== 1) {
        const found = models.length ? `several models (${models.map((m) => m.id).join(', ')})` : 'no models'
        throw new VtcError('ERR_VTC_BACKEND_PROTOCOL', `${this.root}/models lists ${found}; give OpenAIBackend the \`model\` to use`)
      }
      this.modelId = models[0].id
      this.listedContextLength = models[0].contextLength
      return this.modelId
    })
    // a failed listing is asked again by the next request
    this.listing.catch(() => (this.listing = undefined))
    return this.listing
  }

  /** The model ids a server lists at `GET /models`. */
  static async listModels(baseUrl: string, options: ModelsOptions = {}): Promise<string[]> {
    return (await OpenAIBackend.models(baseUrl, options)).map((m) => m.id)
  }

  /** The models a server lists at `GET /models`, with their context length where it says (vLLM: `max_model_len`). */
  static async models(baseUrl: string, options: ModelsOptions = {}): Promise<{ id: string; contextLength?: number }[]> {
    const url = `${apiRoot(baseUrl)}/models`
    let res: Response
    try {
      res = await fetch(url, {
        headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
        signal: options.signal,
      })
    } catch (err) {
      if (options.signal?.aborted) throw abortError('', err)
      throw new VtcError('ERR_VTC_BACKEND_UNREACHABLE', `cannot reach ${url}: ${describeNetworkError(err)}`, { cause: err })
    }
    if (!res.ok) throw new VtcError('ERR_VTC_BACKEND_HTTP', `GET ${url}: HTTP ${res.status}: ${await errorMessage(res)}`)
    const body = (await res.json().catch(() => null)) as { data?: { id?: unknown; max_model_len?: unknown }[] } | null
    if (!body || !Array.isArray(body.data)) throw new VtcError('ERR_VTC_BACKEND_PROTOCOL', `GET ${url}: expected {"data": [{"id": …}]}`)
    return body.data.flatMap((m) =>
      typeof m?.id === 'string'
        ? [{ id: m.id, ...(Number.isInteger(m.max_model_len) && (m.max_model_len as number) > 0 ? { contextLength: m.max_model_len as number } : {}) }]
        : [],
    )
  }

  /** The JSON body of a request (images encoded as data URLs). */
  async requestBody(req: GenerateRequest): Promise<Record<string, unknown>> {
    checkRequest(req)
    const body: Record<string, unknown> = {
      model: await this.resolveModel(),
      messages: await Promise.all(req.messages.map((m, i) => toOpenAIMessage(m, i))),
      stream: true,
      stream_options: { include_usage: true },
      max_tokens: req.maxTokens,
    }
    if (req.temperature !== undefined) body.temperature = req.temperature
    if (req.topP !== undefined) body.top_p = req.topP
    if (req.topK !== undefined) body.top_k = req.topK
    if (req.seed !== undefined) body.seed = req.seed
    if (req.stop?.length) body.stop = req.stop
    if (req.logprobs) body.logprobs = true
    if (req.topLogprobs !== undefined) body.top_logprobs = req.topLogprobs
    if (req.cacheSalt !== undefined) body.cache_salt = req.cacheSalt
    if (req.ignoreEos) body.ignore_eos = true
    return { ...body, ...this.extraBody }
  }

  async *generate(req: GenerateRequest): AsyncGenerator<GenerationEvent> {
    const url = `${this.root}/chat/completions`
    const signal = req.signal
    if (signal?.aborted) throw abortError('', signal.reason)
    const controller = new AbortController()
    const onAbort = () => controller.abort(signal?.reason)
    signal?.addEventListener('abort', onAbort, { once: true })

    let text = ''
    let reasoning = false
    const fail = (code: string, message: string, extra: { status?: number; cause?: unknown } = {}) =>
      new GenerationError(code, message, { partialText: text, ...extra })
    const t0 = performance.now()
    let tFirst: number | undefined
    try {
      const body = JSON.stringify(await this.requestBody(req))
      let res: Response
      try {
        res = await fetch(url, { method: 'POST', headers: this.headers, body, signal: controller.signal })
      } catch (err) {
        if (signal?.aborted) throw abortError(text, err)
        throw fail('ERR_VTC_BACKEND_UNREACHABLE', `cannot reach ${url}: ${describeNetworkError(err)}`, { cause: err })
      }
      if (!res.ok) {
        throw fail('ERR_VTC_BACKEND_HTTP', `POST ${url}: HTTP ${res.status}: ${await errorMessage(res)}`, { status: res.status })
      }
      let finishReason: FinishReason | undefined
      let usage: Chunk['usage']
      let done = false
      let tokens = 0
      let counted = true

      /** Turns one chunk (or a whole non-streamed completion) into text events. */
      const merge = this.mergeReasoning
      const handle = function* (obj: Chunk): Generator<GenerationEvent> {
        if (obj.error !== undefined) {
          const e = obj.error as { message?: unknown; code?: unknown } | string
          const msg = typeof e === 'string' ? e : typeof e?.message === 'string' ? e.message : JSON.stringify(e)
          const status = typeof e === 'object' && typeof e?.code === 'number' ? e.code : undefined
          throw fail('ERR_VTC_BACKEND_ERROR', `${url}: the server reported an error mid-stream: ${msg}`, { status })
        }
        if (obj.usage && typeof obj.usage === 'object') usage = obj.usage
        const choice = Array.isArray(obj.choices) ? obj.choices[0] : undefined
        if (!choice) return
        const delta = choice.delta ?? choice.message ?? {}
        const think = delta.reasoning_content ?? delta.reasoning
        let piece = ''
        if (merge && typeof think === 'string' && think) {
          if (!reasoning) piece += '<think>'
          reasoning = true
          piece += think
        }
        if (typeof delta.content === 'string' && delta.content) {
          if (reasoning) {
            piece += '</think>'
            reasoning = false
          }
          piece += delta.content
        }
        const lp = choice.logprobs?.content
        const logprobs: TokenLogprob[] | undefined = Array.isArray(lp)
          ? lp.map((x) => ({ ...tokenChoice(x), topLogprobs: Array.isArray(x.top_logprobs) ? x.top_logprobs.map(tokenChoice) : [] }))
          : undefined
        if (logprobs) tokens += logprobs.length
        else if (piece) counted = false
        if (choice.finish_reason) {
          finishReason = choice.finish_reason
          if (reasoning) {
            piece += '</think>'
            reasoning = false
          }
        }
        // a chunk with no text may still carry logprobs (the end-of-turn token)
        if (piece || logprobs?.length) {
          tFirst ??= performance.now()
          text += piece
          yield { type: 'text', text: piece, ...(logprobs ? { tokens: logprobs.length, logprobs } : {}) }
        }
      }

      const type = res.headers.get('content-type') ?? ''
      if (/application\/json/i.test(type)) {
        // a server that ignored `stream: true`
        let obj: Chunk
        try {
          obj = (await res.json()) as Chunk
        } catch (err) {
          throw fail('ERR_VTC_BACKEND_PROTOCOL', `${url}: the response is not valid JSON`, { cause: err })
        }
        yield* handle(obj)
        done = true
      } else {
        if (!res.body) throw fail('ERR_VTC_BACKEND_PROTOCOL', `${url}: the response has no body`)
        try {
          for await (const data of sseData(res.body)) {
            if (data === '[DONE]') {
              done = true
              break
            }
            let obj: Chunk
            try {
              obj = JSON.parse(data) as Chunk
            } catch (err) {
              throw fail('ERR_VTC_BACKEND_PROTOCOL', `${url}: malformed stream chunk (not JSON): ${snippet(data)}`, { cause: err })
            }
            if (!obj || typeof obj !== 'object') throw fail('ERR_VTC_BACKEND_PROTOCOL', `${url}: malformed stream chunk: ${snippet(data)}`)
            yield* handle(obj)
          }
        } catch (err) {
          if (err instanceof GenerationError) throw err
          if (signal?.aborted) throw abortError(text, err)
          throw fail('ERR_VTC_BACKEND_STREAM', `${url}: the stream broke off: ${describeNetworkError(err)}`, { cause: err })
        }
      }
      if (!done && finishReason === undefined) {
        throw fail('ERR_VTC_BACKEND_STREAM', `${url}: the stream ended before the completion did (no finish_reason, no [DONE])`)
      }
      const tEnd = performance.now()
      const u: Usage =
        usage && typeof usage.completion_tokens === 'number'
          ? {
              completionTokens: usage.completion_tokens,
              ...(typeof usage.prompt_tokens === 'number' ? { promptTokens: usage.prompt_tokens } : {}),
              ...(typeof usage.prompt_tokens_details?.cached_tokens === 'number' ? { cachedTokens: usage.prompt_tokens_details.cached_tokens } : {}),
            }
          : counted && tokens > 0
            ? { completionTokens: tokens }
            : { completionTokens: countTextTokens(text), estimated: true }
      yield {
        type: 'done',
        finishReason: finishReason ?? 'stop',
        usage: u,
        timings: { prefillMs: (tFirst ?? tEnd) - t0, decodeMs: tFirst === undefined ? 0 : tEnd - tFirst },
      }
    } catch (err) {
      if (signal?.aborted && !(err instanceof GenerationError && err.code === 'ABORT_ERR')) throw abortError(text, err)
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
      // ends the response body if the consumer stopped early (the server sees the disconnect)
      controller.abort()
    }
  }
}

interface Chunk {
  error?: unknown
  usage?: { prompt_tokens?: number; completion_tokens?: number; prompt_tokens_details?: { cached_tokens?: number } | null }
  choices?: {
    delta?: Delta
    message?: Delta
    finish_reason?: string | null
    logprobs?: { content?: (WireTokenChoice & { top_logprobs?: WireTokenChoice[] | null })[] | null } | null
  }[]
}

interface WireTokenChoice {
  token: unknown
  logprob: unknown
  bytes?: unknown
}

/** An OpenAI logprob entry; a server that sends no `bytes` gets the token's UTF-8. */
function tokenChoice(x: WireTokenChoice): TokenChoice {
  const token = String(x.token)
  const bytes = Array.isArray(x.bytes) && x.bytes.every((b) => Number.isInteger(b)) ? (x.bytes as number[]) : [...Buffer.from(token, 'utf8')]
  return { token, bytes, logprob: Number(x.logprob) }
}

interface Delta {
  content?: string | null
  reasoning_content?: string | null
  reasoning?: string | null
}

function checkRequest(req: GenerateRequest): void {
  if (!req || !Array.isArray(req.messages) || req.messages.length === 0) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'generate: `messages` must be a non-empty array')
  }
  if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `generate: maxTokens must be a positive integer, got ${req.maxTokens}`)
  }
}

async function toOpenAIMessage(m: ChatMessage, i: number): Promise<{ role: string; content: unknown }> {
  if (!m || !['system', 'user', 'assistant'].includes(m.role)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `messages[${i}].role must be system, user or assistant`)
  }
  if (typeof m.content === 'string') return { role: m.role, content: m.content }
  if (!Array.isArray(m.content)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `messages[${i}].content must be a string or an array of parts`)
  // text-only content goes as a plain string: some chat templates reject part lists in system turns
  if (m.content.every((p) => p.type === 'text')) return { role: m.role, content: m.content.map((p) => (p as { text: string }).text).join('') }
  const parts = await Promise.all(
    m.content.map(async (p, j) => {
      if (p.type === 'text') return { type: 'text', text: p.text }
      if (p.type === 'image') return { type: 'image_url', image_url: { url: await imageDataUrl(p.image, `messages[${i}].content[${j}].image`) } }
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `messages[${i}].content[${j}].type must be text or image`)
    }),
  )
  return { role: m.role, content: parts }
}

/** The `data` payloads of a server-sent-event stream, one per event. */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let buf = ''
  let data: string[] = []
  const line = function* (l: string): Generator<string> {
    if (l === '') {
      if (data.length) yield data.join('\n')
      data = []
      return
    }
    if (l.startsWith(':')) return
    const colon = l.indexOf(':')
    const field = colon < 0 ? l : l.slice(0, colon)
    let value = colon < 0 ? '' : l.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'data') data.push(value)
  }
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true })
    let nl: number
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      // a lone \r at the end of the buffer may be the first half of \r\n
      if (buf[nl] === '\r' && nl === buf.length - 1) break
      const l = buf.slice(0, nl)
      buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1))
      yield* line(l)
    }
  }
  buf += decoder.decode()
  if (buf) yield* line(buf.replace(/\r$/, ''))
  if (data.length) yield data.join('\n')
}

/** The error message in an HTTP error response (OpenAI `{error: {message}}`, FastAPI `{detail}`, or text). */
export async function errorMessage(res: Response): Promise<string> {
  const text = await res.text().catch(() => '')
  try {
    const j = JSON.parse(text) as { error?: { message?: unknown } | string; message?: unknown; detail?: unknown }
    if (typeof j.error === 'string') return j.error
    if (j.error && typeof j.error.message === 'string') return j.error.message
    if (typeof j.message === 'string') return j.message
    if (j.detail !== undefined) return typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail)
  } catch {
    // not JSON
  }
  return snippet(text) || res.statusText || 'no message'
}

function snippet(s: string, n = 200): string {
  const t = s.trim()
  return t.length > n ? `${t.slice(0, n)}…` : t
}

function describeNetworkError(err: unknown): string {
  const e = err as { cause?: { code?: string; message?: string }; message?: string; code?: string }
  const c = e?.cause
  if (c?.code) return `${c.code}${c.message && !c.message.includes(c.code) ? ` (${c.message})` : ''}`
  if (c?.message) return c.message
  return e?.code ?? e?.message ?? String(err)
}
