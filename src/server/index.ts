/**
 * An OpenAI-compatible HTTP server over any `ChatModel` (the embedded engine, or a remote backend), on node:http.
 *
 * - `POST /v1/chat/completions`: JSON or server-sent events (`stream: true`, `stream_options.include_usage`);
 *   text and image parts, images as data URLs or (when enabled) local file paths; remote URLs are refused.
 * - `GET /v1/models`, `GET /health`.
 * - Optical-memory mode: request the model `<name>:vtc` (or send `"vtc": true | {max_rounds, round_tokens,
 *   image_order}`) and the server runs the VTC-R1 loop itself. The question is the last user message's text
 *   (no images, no assistant turns); a system message replaces the VTC-R1 system prompt. `max_tokens` counts
 *   the completion tokens of all rounds together (each round gets what is left, at most `round_tokens`);
 *   `vtc.max_rounds` and `vtc.round_tokens` may ask for less than the operator's `vtc.maxRounds` /
 *   `vtc.roundTokens`, never more (larger values are capped). The content is every round's output joined by a
 *   blank line (streamed as it is generated), and the response carries a `vtc` object: answer, the limits
 *   applied, rounds, totals.
 *
 * A client that disconnects aborts its generation. `close()` stops accepting requests, lets running ones finish
 * for a grace period, then aborts them.
 */
import { randomUUID } from 'node:crypto'
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

import { VtcError } from '../errors.js'
import { Renderer } from '../render.js'
import {
  DEFAULT_MAX_ROUNDS,
  DEFAULT_ROUND_TOKENS,
  MemoryError,
  OpticalMemory,
  type MemoryFinish,
  type MemoryResult,
  type OpticalMemoryOptions,
} from '../memory.js'
import { GenerationError, type ChatModel, type GenerateRequest, type TokenLogprob } from '../backends/types.js'
import { HttpError, parseChatRequest, type ChatRequest } from './request.js'

export { HttpError, parseChatRequest, type ChatRequest } from './request.js'

export interface ServerOptions {
  /** Largest request body in bytes (default 64 MiB: a rendered page is ~50–150 KB as a data URL). Larger → 413. */
  maxBodyBytes?: number
  /**
   * Images given as local file paths (or `file://` URLs): false (default) refuses them, true reads any path the
   * server process can read, a directory reads only files inside it. Only enable on a trusted network.
   */
  localImages?: boolean | string
  /** `max_tokens` when a request gives none (default 8192, the VTC-R1 round budget). */
  defaultMaxTokens?: number
  /**
   * The optical-memory mode (`<name>:vtc`): options of the loop, or false to turn it off. Default: on, paper
   * defaults. Its `maxRounds` and `roundTokens` (default 8 and 8192) are the most a request may ask for.
   */
  vtc?: OpticalMemoryOptions | false
  /** The model id `/v1/models` lists and requests must use (or omit); default: the model's name. */
  servedModelName?: string
  /** Called with one line per request (method, path, status, duration). */
  log?: (line: string) => void
  /**
   * Chat requests admitted at once, running or queued at the model (default 64). The embedded engine decodes up
   * to its `maxBatch` of them together; one more is answered 429 with a `Retry-After`, never left waiting
   * without bound.
   */
  maxQueue?: number
}

export interface CloseOptions {
  /** How long running requests may continue before they are aborted (default 10 s). */
  graceMs?: number
}

const JSON_HEADERS = { 'content-type': 'application/json; charset=utf-8' }

export class VtcServer {
  readonly http: Server
  /** The model id clients see (`servedModelName`, or the model's name). */
  readonly name: string
  private readonly maxBodyBytes: number
  private readonly defaultMaxTokens: number
  private readonly maxQueue: number
  private readonly running = new Set<AbortController>()
  private closing = false
  /** Requests received and not yet answered. */
  private active = 0
  private closed?: Promise<void>
  private sharedRenderer?: Promise<Renderer>

  constructor(
    readonly model: ChatModel,
    private readonly options: ServerOptions = {},
  ) {
    if (!model || typeof model.generate !== 'function' || typeof model.name !== 'string') {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'the server needs a model with a name and a generate() method')
    }
    if (options.servedModelName !== undefined && (typeof options.servedModelName !== 'string' || !options.servedModelName.trim())) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `servedModelName must be a non-empty string, got ${JSON.stringify(options.servedModelName)}`)
    }
    this.name = options.servedModelName ?? model.name
    this.maxBodyBytes = options.maxBodyBytes ?? 64 * 1024 * 1024
    this.defaultMaxTokens = options.defaultMaxTokens ?? 8192
    this.maxQueue = options.maxQueue ?? 64
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 1) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `maxQueue must be a whole number of requests, at least 1; got ${JSON.stringify(options.maxQueue)}`)
    }
    this.http = createHttpServer((req, res) => {
      const t0 = performance.now()
      res.on('finish', () => options.log?.(`${req.method} ${req.url} ${res.statusCode} ${(performance.now() - t0).toFixed(0)}ms`))
      this.active++
      res.on('close', () => {
        this.active--
        // during shutdown, connections are closed as soon as no request is left
        if (this.closing && this.active === 0) setImmediate(() => this.http.closeAllConnections())
      })
      this.handle(req, res).catch((err: unknown) => this.fail(res, err))
    })
  }

  /** Names served at `/v1/models`: the model, and `<name>:vtc` when the optical-memory mode is on. */
  get modelIds(): string[] {
    return this.options.vtc === false ? [this.name] : [this.name, `${this.name}:vtc`]
  }

  /** Starts listening (default: an ephemeral port on 127.0.0.1); resolves with the base URL. */
  listen(port = 0, host = '127.0.0.1'): Promise<{ url: string; port: number; host: string }> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(new VtcError('ERR_VTC_LISTEN', `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }))
      this.http.once('error', onError)
      this.http.listen(port, host, () => {
        this.http.off('error', onError)
        const a = this.http.address() as AddressInfo
        const h = a.family === 'IPv6' ? `[${a.address}]` : a.address
        resolve({ url: `http://${h}:${a.port}`, port: a.port, host: a.address })
      })
    })
  }

  /** Generations running now. */
  get inflight(): number {
    return this.running.size
  }

  /** Graceful shutdown: refuse new requests, let running ones finish within `graceMs`, then abort them. */
  close(options: CloseOptions = {}): Promise<void> {
    if (this.closed) return this.closed
    this.closing = true
    const graceMs = options.graceMs ?? 10_000
    this.closed = new Promise<void>((resolve) => {
      if (!this.http.listening) return resolve()
      this.http.close(() => resolve())
      // keep-alive and pre-opened connections without a request would hold the server open
      if (this.active === 0) this.http.closeAllConnections()
      else this.http.closeIdleConnections()
      const timer = setTimeout(() => {
        for (const c of this.running) c.abort(new VtcError('ERR_VTC_SHUTDOWN', 'the server is shutting down'))
        setTimeout(() => this.http.closeAllConnections(), 100).unref()
      }, graceMs)
      timer.unref()
      this.http.once('close', () => clearTimeout(timer))
    })
    return this.closed
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.closing) res.setHeader('connection', 'close')
    const path = (req.url ?? '/').split('?')[0].replace(/\/+$/, '') || '/'
    const route = (method: string) => {
      if (req.method !== method) {
        res.setHeader('allow', method)
        throw new HttpError(405, `${req.method} ${path}: method not allowed; use ${method}`)
      }
    }
    switch (path) {
      case '/health':
        route('GET')
        return this.json(res, this.closing ? 503 : 200, {
          status: this.closing ? 'shutting-down' : 'ok',
          model: this.name,
          inflight: this.running.size,
        })
      case '/v1/models':
        route('GET')
        return this.json(res, 200, {
          object: 'list',
          data: this.modelIds.map((id) => ({
            id,
            object: 'model',
            created: 0,
            owned_by: 'vtc-r1',
            ...(this.model.contextLength ? { max_model_len: this.model.contextLength } : {}),
          })),
        })
      case '/v1/chat/completions':
        route('POST')
        if (this.closing) throw new HttpError(503, 'the server is shutting down', null, 'server_error', 'shutting_down')
        return this.chat(req, res)
      default:
        throw new HttpError(404, `no route ${req.method} ${path}; routes: POST /v1/chat/completions, GET /v1/models, GET /health`, null, 'invalid_request_error', 'not_found')
    }
  }

  private async chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.running.size >= this.maxQueue) {
      // a full queue answers now: the client retries later, or goes elsewhere
      res.setHeader('retry-after', '1')
      req.resume()
      throw new HttpError(429, `the server is busy: ${this.running.size} requests running or queued (the limit); retry shortly`, null, 'server_error', 'queue_full')
    }
    const raw = await readBody(req, this.maxBodyBytes)
    let body: unknown
    try {
      body = JSON.parse(raw.toString('utf8'))
    } catch (err) {
      throw new HttpError(400, `the request body is not valid JSON: ${(err as Error).message}`)
    }
    const request = await parseChatRequest(body, { localImages: this.options.localImages ?? false })
    const vtcModel = request.model !== undefined && request.model === `${this.name}:vtc`
    if (request.model !== undefined && request.model !== this.name && !vtcModel) {
      throw new HttpError(404, `model ${JSON.stringify(request.model)} does not exist; this server serves ${this.modelIds.join(', ')}`, 'model', 'invalid_request_error', 'model_not_found')
    }
    if ((vtcModel || request.vtc) && this.options.vtc === false) throw new HttpError(400, 'the optical-memory (vtc) mode is disabled on this server', 'model')
    const vtc = vtcModel || request.vtc ? (request.vtc ?? {}) : undefined

    // the client going away aborts the generation
    const controller = new AbortController()
    const onClose = () => {
      if (!res.writableFinished) controller.abort(new VtcError('ABORT_ERR', 'the client disconnected'))
    }
    res.on('close', onClose)
    this.running.add(controller)
    try {
      const id = `chatcmpl-${randomUUID().replace(/-/g, '')}`
      const created = Math.floor(Date.now() / 1000)
      const model = request.model ?? this.name
      const out = request.stream ? new SseWriter(res, { id, created, model }) : undefined
      if (vtc) await this.runVtc(request, vtc, controller.signal, { id, created, model, res, out })
      else await this.runPlain(request, controller.signal, { id, created, model, res, out })
    } finally {
      this.running.delete(controller)
      res.off('close', onClose)
    }
  }

  private async runPlain(request: ChatRequest, signal: AbortSignal, ctx: ReplyContext): Promise<void> {
    const gen: GenerateRequest = {
      messages: request.messages,
      maxTokens: request.maxTokens ?? this.defaultMaxTokens,
      signal,
      ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
      ...(request.topP !== undefined ? { topP: request.topP } : {}),
      ...(request.topK !== undefined ? { topK: request.topK } : {}),
      ...(request.seed !== undefined ? { seed: request.seed } : {}),
      ...(request.stop ? { stop: request.stop } : {}),
      ...(request.logprobs ? { logprobs: true, topLogprobs: request.topLogprobs ?? 0 } : {}),
    }
    let text = ''
    const logprobs: TokenLogprob[] = []
    try {
      for await (const ev of this.model.generate(gen)) {
        if (ev.type === 'text') {
          text += ev.text
          if (ev.logprobs) logprobs.push(...ev.logprobs)
          if (ctx.out) await ctx.out.delta(ev.text, request.logprobs ? ev.logprobs : undefined)
        } else {
          const usage = openaiUsage(ev.usage.promptTokens ?? 0, ev.usage.completionTokens, ev.usage.cachedTokens)
          if (ctx.out) return ctx.out.finish(ev.finishReason, request.includeUsage ? usage : undefined)
          return this.json(ctx.res, 200, {
            id: ctx.id,
            object: 'chat.completion',
            created: ctx.created,
            model: ctx.model,
            choices: [
              {
                index: 0,
                message: { role: 'assistant', content: text },
                logprobs: request.logprobs ? openaiLogprobs(logprobs) : null,
                finish_reason: ev.finishReason,
              },
            ],
            usage,
          })
        }
      }
      throw new VtcError('ERR_VTC_BACKEND_PROTOCOL', `${this.model.name}: the generation ended without a done event`)
    } catch (err) {
      if (ctx.out) return ctx.out.error(err)
      throw err
    }
  }

  private async runVtc(request: ChatRequest, vtc: NonNullable<ChatRequest['vtc']>, signal: AbortSignal, ctx: ReplyContext): Promise<void> {
    const { question, system } = vtcQuestion(request)
    const base = this.options.vtc || {}
    // the operator's limits; a request may ask for less
    const cap = (asked: number | undefined, most: number | undefined) => (asked === undefined ? most : Math.min(asked, most ?? asked))
    const memory = new OpticalMemory(this.model, {
      ...base,
      maxRounds: cap(vtc.maxRounds, base.maxRounds ?? DEFAULT_MAX_ROUNDS),
      roundTokens: cap(vtc.roundTokens, base.roundTokens ?? DEFAULT_ROUND_TOKENS),
      maxTokens: cap(request.maxTokens, base.maxTokens),
      render: await this.renderer(),
      ...(system !== undefined ? { systemPrompt: system } : {}),
      ...(vtc.imageOrder ? { imageOrder: vtc.imageOrder } : {}),
      ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
      ...(request.topP !== undefined ? { topP: request.topP } : {}),
      ...(request.topK !== undefined ? { topK: request.topK } : {}),
      ...(request.seed !== undefined ? { seed: request.seed } : {}),
      ...(request.stop ? { stop: request.stop } : {}),
    })
    try {
      let result: MemoryResult | undefined
      const it = memory.stream(question, { signal })
      for (;;) {
        const r = await it.next()
        if (r.done) {
          result = r.value
          break
        }
        const ev = r.value
        if (ctx.out && ev.type === 'round-start' && ev.round > 1) await ctx.out.delta('\n\n')
        if (ctx.out && ev.type === 'text') await ctx.out.delta(ev.text)
      }
      const summary = vtcSummary(result, memory.options)
      const cached = result.rounds.some((r) => r.cachedTokens !== undefined)
        ? result.rounds.reduce((n, r) => n + (r.cachedTokens ?? 0), 0)
        : undefined
      const usage = openaiUsage(
        result.rounds.reduce((n, r) => n + (r.promptTokens ?? 0), 0),
        result.totals.outputTokens,
        cached,
      )
      const finish = vtcFinish(result.finishReason)
      if (ctx.out) return ctx.out.finish(finish, request.includeUsage ? usage : undefined, { vtc: summary })
      return this.json(ctx.res, 200, {
        id: ctx.id,
        object: 'chat.completion',
        created: ctx.created,
        model: ctx.model,
        choices: [{ index: 0, message: { role: 'assistant', content: result.rounds.map((r) => r.text).join('\n\n') }, logprobs: null, finish_reason: finish }],
        usage,
        vtc: summary,
      })
    } catch (err) {
      if (ctx.out) return ctx.out.error(err)
      throw err
    }
  }

  /** One renderer for every vtc-mode request (fonts load once, the glyph cache is shared). */
  private renderer(): Promise<Renderer> {
    if (!this.sharedRenderer) {
      const r = (this.options.vtc || {}).render
      this.sharedRenderer = r instanceof Renderer ? Promise.resolve(r) : Renderer.create({ preset: 'vtc-r1', ...r })
      this.sharedRenderer.catch(() => (this.sharedRenderer = undefined))
    }
    return this.sharedRenderer
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    if (res.headersSent) return void res.end()
    const data = JSON.stringify(body)
    res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(data) })
    res.end(data)
  }

  private fail(res: ServerResponse, err: unknown): void {
    if (res.headersSent) {
      res.end()
      return
    }
    const e = toHttpError(err)
    if (e.status === 413) res.setHeader('connection', 'close')
    this.json(res, e.status, e.body())
  }
}

/** Creates an OpenAI-compatible server over `model`; call `listen()` to start it. */
export function createServer(model: ChatModel, options: ServerOptions = {}): VtcServer {
  return new VtcServer(model, options)
}

interface ReplyContext {
  id: string
  created: number
  model: string
  res: ServerResponse
  out?: SseWriter
}

/** Server-sent events in OpenAI's chunk format; waits for the socket to drain when the client reads slowly. */
class SseWriter {
  private started = false

  constructor(
    private readonly res: ServerResponse,
    private readonly meta: { id: string; created: number; model: string },
  ) {}

  private async send(payload: unknown): Promise<void> {
    const res = this.res
    if (res.destroyed || res.writableEnded) return
    if (!this.started) {
      this.started = true
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-accel-buffering': 'no' })
      if (payload !== '[DONE]') await this.send(this.chunk({ role: 'assistant', content: '' }, null))
    }
    const line = `data: ${typeof payload === 'string' ? payload : JSON.stringify(payload)}\n\n`
    if (!res.write(line)) {
      await new Promise<void>((resolve) => {
        const done = () => {
          res.off('drain', done)
          res.off('close', done)
          resolve()
        }
        res.on('drain', done)
        res.on('close', done)
      })
    }
  }

  private chunk(delta: Record<string, unknown>, finish: string | null, logprobs?: TokenLogprob[]): Record<string, unknown> {
    return {
      id: this.meta.id,
      object: 'chat.completion.chunk',
      created: this.meta.created,
      model: this.meta.model,
      choices: [
        {
          index: 0,
          delta,
          logprobs: logprobs ? openaiLogprobs(logprobs) : null,
          finish_reason: finish,
        },
      ],
    }
  }

  delta(text: string, logprobs?: TokenLogprob[]): Promise<void> {
    return this.send(this.chunk({ content: text }, null, logprobs))
  }

  async finish(reason: string, usage?: OpenAIUsage, extra: Record<string, unknown> = {}): Promise<void> {
    await this.send({ ...this.chunk({}, reason), ...extra })
    if (usage) await this.send({ id: this.meta.id, object: 'chat.completion.chunk', created: this.meta.created, model: this.meta.model, choices: [], usage })
    await this.send('[DONE]')
    this.res.end()
  }

  /** An error after the stream started: an `{error}` event (as vLLM sends), then `[DONE]`. */
  async error(err: unknown): Promise<void> {
    if (this.res.destroyed) return
    const e = toHttpError(err)
    if (!this.started) {
      // nothing sent yet: a plain HTTP error is clearer
      if (!this.res.headersSent) {
        const data = JSON.stringify(e.body())
        this.res.writeHead(e.status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(data) })
        this.res.end(data)
        return
      }
    }
    await this.send({ error: { ...e.body().error, code: e.status } })
    await this.send('[DONE]')
    this.res.end()
  }
}

interface OpenAIUsage {
  prompt_tokens: number
  completion_tokens: number
  total_tokens: number
  /** As OpenAI and vLLM report prompt caching: prompt tokens whose KV entries were reused. */
  prompt_tokens_details?: { cached_tokens: number }
}

/** OpenAI's `logprobs` object: one entry per token, with its bytes and the asked-for alternatives. */
function openaiLogprobs(logprobs: TokenLogprob[]): { content: unknown[] } {
  return {
    content: logprobs.map((l) => ({
      token: l.token,
      logprob: l.logprob,
      bytes: l.bytes,
      top_logprobs: l.topLogprobs.map((t) => ({ token: t.token, logprob: t.logprob, bytes: t.bytes })),
    })),
  }
}

function openaiUsage(prompt: number, completion: number, cached: number | undefined): OpenAIUsage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    ...(cached !== undefined ? { prompt_tokens_details: { cached_tokens: cached } } : {}),
  }
}

function vtcFinish(f: MemoryFinish): string {
  return f === 'rounds-exhausted' || f === 'length' ? 'length' : 'stop'
}

function vtcSummary(r: MemoryResult, o: OpticalMemory['options']): Record<string, unknown> {
  return {
    answer: r.answer,
    answer_source: r.answerSource,
    finish_reason: r.finishReason,
    limits: { max_rounds: o.maxRounds, round_tokens: o.roundTokens, max_tokens: o.maxTokens ?? null },
    rounds: r.rounds.map((x) => ({
      tokens: x.tokens,
      images: x.images,
      vision_tokens: x.visionTokens,
      pages: x.pages.length,
      complete: x.complete,
      finish_reason: x.finishReason,
      ms: Math.round(x.ms),
    })),
    totals: {
      rounds: r.totals.rounds,
      output_tokens: r.totals.outputTokens,
      vision_tokens: r.totals.visionTokens,
      pages: r.totals.pages,
      latency_ms: Math.round(r.totals.latencyMs),
      render_ms: Math.round(r.totals.renderMs),
    },
  }
}

/** The question of a vtc-mode request: the last user message's text; a system message overrides the prompt. */
function vtcQuestion(request: ChatRequest): { question: string; system?: string } {
  let system: string | undefined
  let question: string | undefined
  request.messages.forEach((m, i) => {
    const text = typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : '')).join('')
    if (m.role === 'assistant') throw new HttpError(400, `messages[${i}]: the vtc mode takes one question, not a conversation (no assistant turns)`, `messages[${i}].role`)
    if (typeof m.content !== 'string' && m.content.some((p) => p.type === 'image')) {
      throw new HttpError(400, `messages[${i}].content: the vtc mode takes a text question; it renders its own images`, `messages[${i}].content`)
    }
    if (m.role === 'system') system = (system === undefined ? '' : `${system}\n`) + text
    else question = text
  })
  if (!question?.trim()) throw new HttpError(400, 'messages: the vtc mode needs a user message with the question', 'messages')
  return { question, system }
}

function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err
  const e = err as { code?: unknown; message?: unknown; status?: unknown }
  const code = typeof e?.code === 'string' ? e.code : null
  const message = typeof e?.message === 'string' ? e.message : String(err)
  if (code === 'ERR_VTC_INVALID_ARGUMENT' || code === 'ERR_VTC_INVALID_IMAGE') return new HttpError(400, message, null, 'invalid_request_error', code)
  if (code === 'ERR_VTC_CONTEXT_LENGTH') return new HttpError(400, message, null, 'invalid_request_error', code)
  if (code === 'ABORT_ERR' || code === 'ERR_VTC_SHUTDOWN') return new HttpError(503, message, null, 'server_error', code)
  // a remote backend behind this server (proxy mode): its client errors pass through, the rest is a bad gateway
  const gen = err instanceof GenerationError ? err : err instanceof MemoryError && err.cause instanceof GenerationError ? err.cause : undefined
  if (gen?.status && gen.status >= 400 && gen.status < 500) return new HttpError(gen.status, message, null, 'invalid_request_error', code)
  if (code?.startsWith('ERR_VTC_BACKEND')) return new HttpError(502, message, null, 'server_error', code)
  if (err instanceof MemoryError || err instanceof VtcError) return new HttpError(500, message, null, 'server_error', code)
  return new HttpError(500, `internal error: ${message}`, null, 'server_error', code)
}

/** The request body, refusing more than `limit` bytes with a 413 (the rest is drained, not kept). */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new HttpError(413, `the request body exceeds the server's limit of ${limit} bytes`, null, 'invalid_request_error', 'request_too_large')
  const declared = Number(req.headers['content-length'])
  if (Number.isFinite(declared) && declared > limit) {
    req.resume()
    return Promise.reject(tooLarge())
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    let over = false
    req.on('data', (c: Buffer) => {
      if (over) return
      size += c.length
      if (size > limit) {
        over = true
        chunks.length = 0
        reject(tooLarge())
        return
      }
      chunks.push(c)
    })
    req.on('end', () => {
      if (!over) resolve(Buffer.concat(chunks))
    })
    req.on('error', (err) => reject(new HttpError(400, `reading the request body failed: ${err.message}`)))
  })
}
