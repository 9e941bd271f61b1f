/**
 * An OpenAI-compatible HTTP server over any `ChatModel` (the embedded engine, or a remote backend), on node:http.
 *
 * - `POST /v1/chat/completions`: JSON or server-sent events (`stream: true`, `stream_options.include_usage`);
 *   text and image parts, images as data URLs or (when the operator names a media directory) local file paths;
 *   remote URLs are refused.
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
 *
 * Safe on a network: every limit (images, pixels, tokens, body, time, queue) answers a 4xx naming it and its
 * `serve` flag; API keys, a CORS policy that refuses foreign origins, JSON bodies only, and prompt caches kept per
 * API key and `cache_salt`.
 */
import { createHash, createHmac, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto'
import { realpathSync, statSync } from 'node:fs'
import { createServer as createHttpServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'

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
  /**
   * Largest request body in bytes (default 64 MiB: a rendered page is ~50–150 KB as a data URL). Larger → 413.
   * A request's local media files count toward it too.
   */
  maxBodyBytes?: number
  /**
   * Image parts may name local files (paths or `file://` URLs) inside this directory, like vLLM's
   * `--allowed-local-media-path`: relative names resolve there, links are followed and must stay inside, only
   * regular files are read (default: none, images come as data URLs only).
   */
  allowedMediaDir?: string
  /** Most image parts in one request (default 64: eight VTC-R1 rounds of pages). More → 400. */
  maxImages?: number
  /** Most pixels of one image, read from its header before any decoding (default 16,777,216: 4096×4096). More → 400. */
  imagePixelLimit?: number
  /** A chat request's deadline in ms, from its arrival to its last byte (default 600,000; 0: none). Past it, the generation is aborted → 408. */
  requestTimeoutMs?: number
  /** Time a client has to send a request's headers, in ms (default 10,000; 0: none). Past it → 408, connection closed. */
  headersTimeoutMs?: number
  /** Time a client has to send a whole request, body included, in ms (default 60,000; 0: none). Past it → 408. */
  bodyTimeoutMs?: number
  /**
   * API keys: every route but `/health` then needs `Authorization: Bearer KEY` (401 without). Cached prompts are
   * shared only among the requests of one key (default: none, no authentication).
   */
  apiKeys?: string[]
  /** Origins whose web pages may call the server (CORS; `'*'`: any) (default: none, a request with an `Origin` → 403). */
  allowedOrigins?: string[]
  /** `max_tokens` when a request gives none (default 8192, the VTC-R1 round budget). */
  defaultMaxTokens?: number
  /**
   * The optical-memory mode (`<name>:vtc`): options of the loop, or false to turn it off (default: on, with the
   * loop's defaults). Its `maxRounds` and `roundTokens` (default 8 and 8192) are the most a request may ask for.
   */
  vtc?: OpticalMemoryOptions | false
  /** The model id `/v1/models` lists and requests must use (or omit) (default: the model's name). */
  servedModelName?: string
  /** Called with one line per request (method, path, status, duration) (default: none, nothing is logged). */
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
  private readonly maxImages: number
  private readonly imagePixelLimit: number
  private readonly requestTimeoutMs: number
  private readonly mediaDir?: string
  private readonly keyDigests: Buffer[]
  private readonly allowedOrigins: Set<string>
  /** Keys the cache salts, so a salt tells nothing about the API key it stands for. */
  private readonly saltKey = randomBytes(32)
  /** The response in flight on each connection, for errors node raises on the socket. */
  private readonly responses = new WeakMap<Duplex, ServerResponse>()
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
    this.maxQueue = whole(options, 'maxQueue', 64, 1)
    this.maxImages = whole(options, 'maxImages', 64, 0)
    this.imagePixelLimit = whole(options, 'imagePixelLimit', 4096 * 4096, 1)
    this.requestTimeoutMs = whole(options, 'requestTimeoutMs', 600_000, 0)
    const headersTimeout = whole(options, 'headersTimeoutMs', 10_000, 0)
    const requestTimeout = whole(options, 'bodyTimeoutMs', 60_000, 0)
    if (headersTimeout && requestTimeout && headersTimeout > requestTimeout) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `headersTimeoutMs (${headersTimeout}) must not exceed bodyTimeoutMs (${requestTimeout}): the body timeout counts the headers too`)
    }
    if (options.allowedMediaDir !== undefined) {
      // the real path: links in the directory's own path are not mistaken for links out of it
      let dir: string | undefined
      try {
        dir = realpathSync(options.allowedMediaDir)
      } catch {
        // reported below
      }
      if (!dir || !statSync(dir).isDirectory()) {
        throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `allowedMediaDir ${JSON.stringify(options.allowedMediaDir)} is not a directory`)
      }
      this.mediaDir = dir
    }
    this.keyDigests = (options.apiKeys ?? []).map((k) => {
      if (typeof k !== 'string' || !k) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'apiKeys must be non-empty strings')
      return sha256(k)
    })
    this.allowedOrigins = new Set(options.allowedOrigins ?? [])
    // the timeouts are checked every second (node's default is 30 s, too coarse for a 10 s limit)
    this.http = createHttpServer({ headersTimeout, requestTimeout, connectionsCheckingInterval: 1000 }, (req, res) => {
      this.responses.set(req.socket, res)
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
    this.http.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      // what node answers itself otherwise, but naming the limit: headers or body too slow, headers too large;
      // nothing when the connection's request already has an answer (sent, or being sent)
      const res = this.responses.get(socket)
      const answered = res?.headersSent && !(res.writableFinished && res.req.complete)
      if (err.code !== 'ECONNRESET' && socket.writable && !answered) {
        const s = (ms: number) => (ms ? `${ms / 1000} s` : 'no limit')
        const e =
          err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
            ? new HttpError(408, `the request did not arrive in time: headers within ${s(headersTimeout)} (--header-timeout), all of it within ${s(requestTimeout)} (--body-timeout)`, null, 'invalid_request_error', 'request_timeout')
            : err.code === 'HPE_HEADER_OVERFLOW'
              ? new HttpError(431, 'the request headers are too large')
              : new HttpError(400, `malformed HTTP request (${err.code ?? err.message})`)
        const data = JSON.stringify(e.body())
        socket.write(`HTTP/1.1 ${e.status} ${STATUS_CODES[e.status]}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(data)}\r\nconnection: close\r\n\r\n${data}`)
      }
      socket.destroy()
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
    this.checkOrigin(req, res)
    if (req.method === 'OPTIONS') {
      // a CORS preflight (from an allowed origin, or none)
      const cors = req.headers.origin ? { 'access-control-allow-methods': 'GET, POST', 'access-control-allow-headers': 'authorization, content-type', 'access-control-max-age': '600' } : {}
      res.writeHead(204, { allow: 'GET, POST, OPTIONS', ...cors })
      return void res.end()
    }
    const tenant = path === '/health' ? undefined : this.authorize(req, res)
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
        return this.chat(req, res, tenant)
      default:
        throw new HttpError(404, `no route ${req.method} ${path}; routes: POST /v1/chat/completions, GET /v1/models, GET /health`, null, 'invalid_request_error', 'not_found')
    }
  }

  /** Browsers send `Origin` from web pages: only the operator's origins may call, so no page can use a server on the user's machine. */
  private checkOrigin(req: IncomingMessage, res: ServerResponse): void {
    const origin = req.headers.origin
    if (origin === undefined) return
    if (!this.allowedOrigins.has(origin) && !this.allowedOrigins.has('*')) {
      throw new HttpError(403, `origin ${origin} may not call this server (the operator's --allowed-origin)`, null, 'invalid_request_error', 'origin_not_allowed')
    }
    res.setHeader('access-control-allow-origin', origin)
    res.setHeader('vary', 'origin')
  }

  /** The digest of the request's API key (401 when the server has keys and it carries none of them); undefined when there are none. */
  private authorize(req: IncomingMessage, res: ServerResponse): Buffer | undefined {
    if (!this.keyDigests.length) return undefined
    const bearer = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '')?.[1]
    // digests have equal lengths, so each comparison takes the same time; every key is compared
    const digest = sha256(bearer ?? '')
    let match: Buffer | undefined
    for (const k of this.keyDigests) if (timingSafeEqual(k, digest)) match = k
    if (bearer !== undefined && match) return match
    res.setHeader('www-authenticate', 'Bearer')
    throw new HttpError(401, `${bearer === undefined ? 'no API key' : 'a wrong API key'}: send "Authorization: Bearer KEY" with a key the operator gave (--api-key)`, null, 'invalid_request_error', 'invalid_api_key')
  }

  /**
   * The salt of a request's cached prompt entries: one per API key and `cache_salt` (none without either: one shared
   * cache), so `cached_tokens` tells a tenant nothing about another's prompts. Keyed, so it never reveals the key.
   */
  private cacheSalt(tenant: Buffer | undefined, salt: string | undefined): string | undefined {
    if (!tenant && salt === undefined) return undefined
    return createHmac('sha256', this.saltKey).update(`${tenant?.toString('hex') ?? ''}:${salt ?? ''}`).digest('hex')
  }

  private async chat(req: IncomingMessage, res: ServerResponse, tenant: Buffer | undefined): Promise<void> {
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase()
    if (type !== 'application/json') {
      // a web page may post text/plain cross-site without a preflight; JSON needs one, which CORS then governs
      req.resume()
      throw new HttpError(415, `the request body must be JSON sent with content-type application/json, not ${type || 'none'}`, null, 'invalid_request_error', 'unsupported_media_type')
    }
    if (this.running.size >= this.maxQueue) {
      // a full queue answers now: the client retries later, or goes elsewhere
      res.setHeader('retry-after', '1')
      req.resume()
      throw new HttpError(429, `the server is busy: ${this.running.size} requests running or queued, the limit (--max-queue); retry shortly`, null, 'server_error', 'queue_full')
    }
    // the deadline runs from here: reading, queueing and generating
    const controller = new AbortController()
    const deadline = this.requestTimeoutMs
      ? setTimeout(() => {
          const e = new HttpError(408, `the request ran past the server's deadline of ${this.requestTimeoutMs / 1000} s (--request-timeout)`, null, 'invalid_request_error', 'request_timeout')
          controller.abort(e)
        }, this.requestTimeoutMs)
      : undefined
    try {
      const raw = await readBody(req, this.maxBodyBytes)
      let body: unknown
      try {
        body = JSON.parse(raw.toString('utf8'))
      } catch (err) {
        throw new HttpError(400, `the request body is not valid JSON: ${(err as Error).message}`)
      }
      const request = await parseChatRequest(body, {
        mediaDir: this.mediaDir,
        maxImages: this.maxImages,
        imagePixelLimit: this.imagePixelLimit,
        maxMediaBytes: this.maxBodyBytes,
      })
      const vtcModel = request.model !== undefined && request.model === `${this.name}:vtc`
      if (request.model !== undefined && request.model !== this.name && !vtcModel) {
        throw new HttpError(404, `model ${JSON.stringify(request.model)} does not exist; this server serves ${this.modelIds.join(', ')}`, 'model', 'invalid_request_error', 'model_not_found')
      }
      if ((vtcModel || request.vtc) && this.options.vtc === false) throw new HttpError(400, 'the optical-memory (vtc) mode is disabled on this server', 'model')
      const vtc = vtcModel || request.vtc ? (request.vtc ?? {}) : undefined
      // the vtc mode's max_tokens is the budget of all rounds; each round gets at most round_tokens of it
      const most = this.model.contextLength
      if (!vtc && request.maxTokens !== undefined && request.maxTokens > (most ?? 2 ** 32 - 1)) {
        const param = request.maxTokensParam ?? 'max_tokens'
        throw new HttpError(
          400,
          `${param}: ${request.maxTokens} is more than ${most ? `the model's context of ${most} tokens (--context-length)` : 'the most a generation may ask (2^32 - 1)'}`,
          param,
        )
      }
      const salt = this.cacheSalt(tenant, request.cacheSalt)
      if (controller.signal.aborted) throw controller.signal.reason

      // the client going away aborts the generation
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
        const ctx = { id, created, model, res, out, salt }
        if (vtc) await this.runVtc(request, vtc, controller.signal, ctx)
        else await this.runPlain(request, controller.signal, ctx)
      } finally {
        this.running.delete(controller)
        res.off('close', onClose)
      }
    } finally {
      clearTimeout(deadline)
    }
  }

  private async runPlain(request: ChatRequest, signal: AbortSignal, ctx: ReplyContext): Promise<void> {
    const gen: GenerateRequest = {
      messages: request.messages,
      maxTokens: request.maxTokens ?? this.defaultMaxTokens,
      signal,
      ...(ctx.salt !== undefined ? { cacheSalt: ctx.salt } : {}),
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
      return this.failed(abortReason(err, signal), ctx)
    }
  }

  private failed(err: unknown, ctx: ReplyContext): Promise<void> {
    if (ctx.out) return ctx.out.error(err)
    throw err
  }

  private async runVtc(request: ChatRequest, vtc: NonNullable<ChatRequest['vtc']>, signal: AbortSignal, ctx: ReplyContext): Promise<void> {
    const { question, system } = vtcQuestion(request)
    const base = this.options.vtc || {}
    // the operator's limits; a request may ask for less
    const cap = (asked: number | undefined, most: number | undefined) => (asked === undefined ? most : Math.min(asked, most ?? asked))
    // the loop's generations carry the request's cache salt
    const salted: ChatModel = {
      name: this.model.name,
      contextLength: this.model.contextLength,
      generate: (r) => this.model.generate(ctx.salt !== undefined ? { ...r, cacheSalt: ctx.salt } : r),
    }
    const memory = new OpticalMemory(salted, {
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
      return this.failed(abortReason(err, signal), ctx)
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
  /** The request's cache salt (`GenerateRequest.cacheSalt`). */
  salt?: string
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
  // the request's fault, so a 400 (OpenAI clients retry 500s): its arguments, images, length, or messages the
  // chat template refuses; a template that does not parse, or none, is the model directory's fault
  const request =
    code === 'ERR_VTC_INVALID_ARGUMENT' ||
    code === 'ERR_VTC_INVALID_IMAGE' ||
    code === 'ERR_VTC_IMAGE' ||
    code === 'ERR_VTC_CONTEXT_LENGTH' ||
    (code === 'ERR_VTC_CHAT_TEMPLATE' && !/syntax error|has no chat template/.test(message))
  if (request) return new HttpError(400, message, null, 'invalid_request_error', code)
  if (code === 'ABORT_ERR' || code === 'ERR_VTC_SHUTDOWN') return new HttpError(503, message, null, 'server_error', code)
  // a remote backend behind this server (proxy mode): its client errors pass through, the rest is a bad gateway
  const gen = err instanceof GenerationError ? err : err instanceof MemoryError && err.cause instanceof GenerationError ? err.cause : undefined
  if (gen?.status && gen.status >= 400 && gen.status < 500) return new HttpError(gen.status, message, null, 'invalid_request_error', code)
  if (code?.startsWith('ERR_VTC_BACKEND')) return new HttpError(502, message, null, 'server_error', code)
  if (err instanceof MemoryError || err instanceof VtcError) return new HttpError(500, message, null, 'server_error', code)
  return new HttpError(500, `internal error: ${message}`, null, 'server_error', code)
}

/** The error an aborted generation ends with: why it was aborted (deadline, disconnect, shutdown), when it was. */
function abortReason(err: unknown, signal: AbortSignal): unknown {
  return signal.aborted && signal.reason instanceof Error ? signal.reason : err
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

/** A whole-number option of at least `min`, or its default. */
function whole(options: ServerOptions, name: keyof ServerOptions, fallback: number, min: number): number {
  const v = options[name] ?? fallback
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${name} must be a whole number, at least ${min}; got ${JSON.stringify(options[name])}`)
  }
  return v
}

/**
 * The request body, refusing more than `limit` bytes with a 413. The rest is drained, not kept (the body timeout
 * bounds it), so a client still sending reads the 413 rather than a reset connection.
 */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new HttpError(413, `the request body exceeds the server's limit of ${limit} bytes (--max-body-mb)`, null, 'invalid_request_error', 'request_too_large')
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
    // a connection closed mid-body (or by the body timeout) settles it too
    req.on('close', () => reject(new HttpError(400, 'the connection closed before the request body ended')))
  })
}
