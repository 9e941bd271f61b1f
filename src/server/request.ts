/**
 * Validation of OpenAI chat-completions requests: every problem is a 400 naming the field at fault. Images are
 * taken from data URLs and (when allowed) local files; remote URLs are refused, never fetched.
 */
import { resolve } from 'node:path'

import { VtcError } from '../errors.js'
import { decodeDataUrl, insideDir, isRemoteUrl, localPath, readImageFile } from '../backends/images.js'
import type { ChatMessage, ContentPart, Role } from '../backends/types.js'
import type { ImageOrder } from '../memory.js'

/** An error that becomes an HTTP response `{error: {message, type, param, code}}`. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly type = status >= 500 ? 'server_error' : 'invalid_request_error',
    readonly code: string | null = null,
  ) {
    super(message)
    this.name = 'HttpError'
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } }
  }
}

const bad = (param: string, message: string) => new HttpError(400, `${param}: ${message}`, param)

export interface VtcRequestOptions {
  maxRounds?: number
  roundTokens?: number
  imageOrder?: ImageOrder
}

export interface ChatRequest {
  /** The model id as requested (undefined if absent). */
  model?: string
  /** Optical-memory mode (`<name>:vtc` or a `vtc` field). */
  vtc?: VtcRequestOptions
  messages: ChatMessage[]
  maxTokens?: number
  temperature?: number
  topP?: number
  topK?: number
  seed?: number
  stop?: string[]
  stream: boolean
  includeUsage: boolean
  logprobs: boolean
  /** Alternatives per token with `logprobs` (0–20). */
  topLogprobs?: number
}

export interface ParseOptions {
  /** Local image files: false (none), true (any path), or a directory they must lie in (relative paths resolve there). */
  localImages: boolean | string
}

type Json = Record<string, unknown>

const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x)

/** Parses and validates a request body; reads local image files. */
export async function parseChatRequest(body: unknown, options: ParseOptions): Promise<ChatRequest> {
  if (!isObject(body)) throw new HttpError(400, 'the request body must be a JSON object')
  const b = body
  const req: ChatRequest = { messages: [], stream: false, includeUsage: false, logprobs: false }

  if (b.model !== undefined && b.model !== null) {
    if (typeof b.model !== 'string') throw bad('model', 'must be a string')
    req.model = b.model
  }
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw bad('messages', 'must be a non-empty array')
  for (let i = 0; i < b.messages.length; i++) req.messages.push(await parseMessage(b.messages[i], `messages[${i}]`, options))

  const maxTokens = b.max_completion_tokens ?? b.max_tokens
  if (maxTokens !== undefined && maxTokens !== null) {
    const name = b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens'
    req.maxTokens = int(maxTokens, name, 1)
  }
  if (b.temperature !== undefined && b.temperature !== null) req.temperature = num(b.temperature, 'temperature', 0, 2)
  if (b.top_p !== undefined && b.top_p !== null) {
    req.topP = num(b.top_p, 'top_p', 0, 1)
    if (req.topP === 0) throw bad('top_p', 'must be greater than 0')
  }
  if (b.top_k !== undefined && b.top_k !== null) {
    const k = int(b.top_k, 'top_k', -1)
    if (k > 0) req.topK = k // 0 and -1 mean "no top-k" (vLLM)
  }
  if (b.seed !== undefined && b.seed !== null) req.seed = int(b.seed, 'seed', Number.MIN_SAFE_INTEGER)
  if (b.stop !== undefined && b.stop !== null) {
    const stop = typeof b.stop === 'string' ? [b.stop] : b.stop
    if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string' && s.length > 0)) {
      throw bad('stop', 'must be a non-empty string or an array of non-empty strings')
    }
    req.stop = stop as string[]
  }
  if (b.n !== undefined && b.n !== null && b.n !== 1) throw bad('n', 'only n = 1 is supported')
  // not implemented: refused rather than silently ignored (values that ask for nothing pass)
  if (Array.isArray(b.tools) ? b.tools.length : b.tools != null) throw bad('tools', 'tool calling is not supported by this server')
  if (b.tool_choice != null && b.tool_choice !== 'none' && b.tool_choice !== 'auto') throw bad('tool_choice', 'tool calling is not supported by this server')
  if (b.response_format != null && !(isObject(b.response_format) && b.response_format.type === 'text')) {
    throw bad('response_format', 'structured output (json_object, json_schema) is not supported by this server; only {"type": "text"}')
  }
  for (const name of ['max_rounds', 'round_tokens', 'image_order']) {
    if (b[name] !== undefined) throw bad(name, `the vtc mode's options go in the "vtc" object: {"vtc": {"${name}": …}}`)
  }
  if (b.stream !== undefined && b.stream !== null) {
    if (typeof b.stream !== 'boolean') throw bad('stream', 'must be a boolean')
    req.stream = b.stream
  }
  if (b.stream_options !== undefined && b.stream_options !== null) {
    if (!isObject(b.stream_options)) throw bad('stream_options', 'must be an object')
    const iu = b.stream_options.include_usage
    if (iu !== undefined && typeof iu !== 'boolean') throw bad('stream_options.include_usage', 'must be a boolean')
    req.includeUsage = iu === true
  }
  if (b.logprobs !== undefined && b.logprobs !== null) {
    if (typeof b.logprobs !== 'boolean') throw bad('logprobs', 'must be a boolean')
    req.logprobs = b.logprobs
  }
  if (b.top_logprobs !== undefined && b.top_logprobs !== null) {
    const n = int(b.top_logprobs, 'top_logprobs', 0)
    if (n > 20) throw bad('top_logprobs', `must be at most 20, got ${n}`)
    if (!req.logprobs) throw bad('top_logprobs', 'needs "logprobs": true')
    req.topLogprobs = n
  }
  if (b.vtc !== undefined && b.vtc !== null && b.vtc !== false) {
    if (b.vtc === true) req.vtc = {}
    else if (isObject(b.vtc)) {
      const v = b.vtc
      req.vtc = {}
      if (v.max_rounds !== undefined) req.vtc.maxRounds = int(v.max_rounds, 'vtc.max_rounds', 1)
      if (v.round_tokens !== undefined) req.vtc.roundTokens = int(v.round_tokens, 'vtc.round_tokens', 1)
      if (v.image_order !== undefined) {
        if (v.image_order !== 'question-first' && v.image_order !== 'images-first') {
          throw bad('vtc.image_order', "must be 'question-first' or 'images-first'")
        }
        req.vtc.imageOrder = v.image_order
      }
    } else throw bad('vtc', 'must be true or an object {max_rounds, round_tokens, image_order}')
  }
  return req
}

const ROLES: Record<string, Role> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' }

async function parseMessage(m: unknown, at: string, options: ParseOptions): Promise<ChatMessage> {
  if (!isObject(m)) throw bad(at, 'must be an object with role and content')
  if (typeof m.role !== 'string') throw bad(`${at}.role`, 'must be a string')
  const role = ROLES[m.role]
  if (!role) throw bad(`${at}.role`, `unsupported role ${JSON.stringify(m.role)}; expected system, user or assistant`)
  const content = m.content
  if (typeof content === 'string') return { role, content }
  if ((content === null || content === undefined) && role === 'assistant') return { role, content: '' }
  if (!Array.isArray(content)) throw bad(`${at}.content`, 'must be a string or an array of content parts')
  const parts: ContentPart[] = []
  for (let j = 0; j < content.length; j++) {
    const p = content[j]
    const pat = `${at}.content[${j}]`
    if (!isObject(p) || typeof p.type !== 'string') throw bad(pat, 'must be an object with a string "type"')
    if (p.type === 'text' || p.type === 'input_text') {
      if (typeof p.text !== 'string') throw bad(`${pat}.text`, 'must be a string')
      parts.push({ type: 'text', text: p.text })
    } else if (p.type === 'image_url' || p.type === 'image') {
      if (role !== 'user') throw bad(pat, `images are only accepted in user messages, not ${m.role}`)
      let url: unknown
      let field: string
      if (p.type === 'image_url') {
        field = `${pat}.image_url`
        url = p.image_url
        if (isObject(url)) {
          field += '.url'
          url = url.url
        }
      } else {
        field = `${pat}.image`
        url = p.image
      }
      if (typeof url !== 'string' || !url) throw bad(field, 'must be a data URL or a local file path')
      parts.push({ type: 'image', image: await loadImage(url, field, options) })
    } else {
      throw bad(`${pat}.type`, `unsupported content part type ${JSON.stringify(p.type)}; expected text or image_url`)
    }
  }
  return { role, content: parts }
}

async function loadImage(url: string, field: string, options: ParseOptions): Promise<Buffer> {
  try {
    if (/^data:/i.test(url)) return decodeDataUrl(url, field).bytes
    if (isRemoteUrl(url)) throw bad(field, 'remote image URLs are not fetched; send a data URL (data:image/png;base64,…)')
    if (options.localImages === false) {
      throw bad(field, 'local image paths are disabled on this server; send a data URL (data:image/png;base64,…)')
    }
    let path = localPath(url)
    if (path === undefined) throw bad(field, 'not a data URL or a local file path')
    if (typeof options.localImages === 'string') {
      if (!/^file:\/\//i.test(url)) path = resolve(options.localImages, url)
      if (!insideDir(path, options.localImages)) throw bad(field, `local image paths must lie inside the server's image directory`)
    }
    return (await readImageFile(path, field)).bytes
  } catch (err) {
    if (err instanceof HttpError) throw err
    if (err instanceof VtcError) throw new HttpError(400, err.message, field)
    throw err
  }
}

function num(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw bad(name, `must be a number in [${min}, ${max}], got ${JSON.stringify(v)}`)
  return v
}

function int(v: unknown, name: string, min: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw bad(name, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`)
  return v
}
