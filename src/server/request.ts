/**
 * Validation of OpenAI chat-completions requests: every problem is a 400 naming the field at fault. Images are
 * taken from data URLs and (when the operator names a media directory) local files inside it; remote URLs are
 * refused, never fetched. Each image's size is read from its header and checked before any pixel is decoded.
 */
import { constants, type FileHandle, open, realpath } from 'node:fs/promises'
import { resolve } from 'node:path'

import { VtcError } from '../errors.js'
import { decodeDataUrl, imageDimensions, insideDir, isRemoteUrl, localPath } from '../backends/images.js'
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
  /** The field `maxTokens` came from (`max_tokens` or `max_completion_tokens`), for errors. */
  maxTokensParam?: string
  /** vLLM's `cache_salt`: cached prompt entries are shared only among requests with the same salt. */
  cacheSalt?: string
}

export interface ParseOptions {
  /**
   * Image parts may name local files inside this directory (a real path: links resolved); relative names resolve
   * there. Absent: local paths are refused.
   */
  mediaDir?: string
  /** Most image parts in one request. */
  maxImages?: number
  /** Most pixels (width × height, from the header) of one image. */
  imagePixelLimit?: number
  /** Most bytes of local files one request may read, all together. */
  maxMediaBytes?: number
}

/** What one request has used of the limits so far. */
interface Budget extends ParseOptions {
  images: number
  mediaBytes: number
}

type Json = Record<string, unknown>

const isObject = (x: unknown): x is Json => typeof x === 'object' && x !== null && !Array.isArray(x)

/** Parses and validates a request body; reads local image files. */
export async function parseChatRequest(body: unknown, options: ParseOptions): Promise<ChatRequest> {
  if (!isObject(body)) throw new HttpError(400, 'the request body must be a JSON object')
  const b = body
  const req: ChatRequest = { messages: [], stream: false, includeUsage: false, logprobs: false }
  const budget: Budget = { ...options, images: 0, mediaBytes: 0 }

  if (b.model !== undefined && b.model !== null) {
    if (typeof b.model !== 'string') throw bad('model', 'must be a string')
    req.model = b.model
  }
  if (!Array.isArray(b.messages) || b.messages.length === 0) throw bad('messages', 'must be a non-empty array')
  for (let i = 0; i < b.messages.length; i++) req.messages.push(await parseMessage(b.messages[i], `messages[${i}]`, budget))

  const maxTokens = b.max_completion_tokens ?? b.max_tokens
  if (maxTokens !== undefined && maxTokens !== null) {
    const name = b.max_completion_tokens !== undefined && b.max_completion_tokens !== null ? 'max_completion_tokens' : 'max_tokens'
    req.maxTokens = int(maxTokens, name, 1)
    req.maxTokensParam = name
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
  if (b.cache_salt !== undefined && b.cache_salt !== null) {
    if (typeof b.cache_salt !== 'string' || !b.cache_salt) throw bad('cache_salt', 'must be a non-empty string')
    req.cacheSalt = b.cache_salt
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

async function parseMessage(m: unknown, at: string, budget: Budget): Promise<ChatMessage> {
  if (!isObject(m)) throw bad(at, 'must be an object with role and content')
  if (typeof m.role !== 'string') throw bad(`${at}.role`, 'must be a string')
  // own keys only: a role of "constructor" or "__proto__" must not find Object.prototype's
  const role = Object.hasOwn(ROLES, m.role) ? ROLES[m.role] : undefined
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
      if (budget.maxImages !== undefined && ++budget.images > budget.maxImages) {
        throw new HttpError(400, `${field}: more than ${budget.maxImages} images in one request, the server's limit (--max-images)`, field, 'invalid_request_error', 'too_many_images')
      }
      parts.push({ type: 'image', image: await loadImage(url, field, budget) })
    } else {
      throw bad(`${pat}.type`, `unsupported content part type ${JSON.stringify(p.type)}; expected text or image_url`)
    }
  }
  return { role, content: parts }
}

async function loadImage(url: string, field: string, budget: Budget): Promise<Buffer> {
  try {
    let bytes: Buffer
    if (/^data:/i.test(url)) bytes = decodeDataUrl(url, field).bytes
    else if (isRemoteUrl(url)) throw bad(field, 'remote image URLs are not fetched; send a data URL (data:image/png;base64,…)')
    else if (budget.mediaDir === undefined) {
      throw bad(field, "local image paths are disabled on this server (the operator's --allowed-media-dir); send a data URL (data:image/png;base64,…)")
    } else bytes = await readMediaFile(url, field, budget)
    // the header's size, before anything decodes the pixels: a few KB can declare gigapixels
    const { width, height } = imageDimensions(bytes, field)
    if (budget.imagePixelLimit !== undefined && width * height > budget.imagePixelLimit) {
      throw new HttpError(
        400,
        `${field}: a ${width}×${height} image (${width * height} pixels) is over the server's limit of ${budget.imagePixelLimit} pixels per image (--image-pixel-limit)`,
        field,
        'invalid_request_error',
        'image_too_large',
      )
    }
    return bytes
  } catch (err) {
    if (err instanceof HttpError) throw err
    if (err instanceof VtcError) throw new HttpError(400, err.message, field)
    throw err
  }
}

/**
 * A local image file named by a request, read only from inside the media directory: the name resolves there, links
 * are followed and the file must still lie inside; regular files only, within the request's media budget. Every
 * refusal reads the same, so the answer tells nothing about files outside the directory.
 */
async function readMediaFile(name: string, field: string, budget: Budget): Promise<Buffer> {
  const root = budget.mediaDir!
  const refused = () => bad(field, "no readable file by that name in the server's media directory (--allowed-media-dir)")
  const path = /^file:\/\//i.test(name) ? localPath(name) : resolve(root, name)
  // refused by name first, so a path outside is never touched
  if (path === undefined || !insideDir(path, root)) throw refused()
  let file: FileHandle
  try {
    const real = await realpath(path)
    if (!insideDir(real, root)) throw refused()
    // O_NONBLOCK: a FIFO opens at once instead of waiting for a writer; O_NOFOLLOW: no link swapped in since
    file = await open(real, constants.O_RDONLY | constants.O_NONBLOCK | (constants.O_NOFOLLOW ?? 0))
  } catch {
    throw refused()
  }
  try {
    const { size } = await file.stat().then((st) => (st.isFile() ? st : Promise.reject(refused())))
    const left = (budget.maxMediaBytes ?? Infinity) - budget.mediaBytes
    if (size > left) {
      throw new HttpError(
        413,
        `${field}: the local files of one request may total at most ${budget.maxMediaBytes} bytes, the server's body limit (--max-body-mb)`,
        field,
        'invalid_request_error',
        'request_too_large',
      )
    }
    budget.mediaBytes += size
    // read what stat promised and no more (a file that grows meanwhile is cut there)
    const bytes = Buffer.alloc(size)
    let n = 0
    for (let r = 1; n < size && r > 0; n += r) r = (await file.read(bytes, n, size - n, n)).bytesRead
    return bytes.subarray(0, n)
  } finally {
    await file.close()
  }
}

function num(v: unknown, name: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw bad(name, `must be a number in [${min}, ${max}], got ${JSON.stringify(v)}`)
  return v
}

function int(v: unknown, name: string, min: number): number {
  // safe integers only: 2**32 + 1 would reach the engine as 1
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) throw bad(name, `must be an integer ≥ ${min}, got ${JSON.stringify(v)}`)
  return v
}
