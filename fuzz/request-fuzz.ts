/**
 * Fuzz driver for the OpenAI request parser (`parseChatRequest`, src/server/request.ts), issue #17.
 *
 * It mutates the seed request bodies in fuzz/seeds/request (structure-aware: values swapped for other types,
 * extremes, long strings, paths that try to leave the media directory, corrupt data URLs; and byte-level edits of
 * the JSON text) and calls the parser on each, with a media directory that holds an image, a FIFO, a folder, a link
 * to an image outside it and a file over the media budget. It checks that the parser only ever:
 *   - resolves with a well-formed ChatRequest (non-empty messages, safe integers, images as bytes that are a data
 *     URL's payload or a file inside the media directory — never the outside image), or
 *   - rejects with the HttpError it documents (status 400 or 413, a message, a string or null param).
 * Anything else (a TypeError, a VtcError that leaked, a hang past --timeout-ms, a file read from outside) is a
 * crash: the body is saved under fuzz/crashes/ (one file per kind of problem), the run goes on, and the driver
 * exits 1 at the end.
 *
 *   node --import=tsx fuzz/request-fuzz.ts [--seconds 60] [--iterations N] [--seed 1] [--replay FILE]
 *
 * The bodies in fuzz/regressions/request-*.json (earlier crashes) are replayed first and reported while they fail.
 * Coverage-less (random mutation of seeds) and deterministic for a given --seed.
 */
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { HttpError, parseChatRequest, type ParseOptions } from '../src/server/request.js'

const here = dirname(fileURLToPath(import.meta.url))
const args = new Map<string, string>()
for (let i = 2; i < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1] ?? '')
const seconds = Number(args.get('seconds') ?? 60)
const iterations = Number(args.get('iterations') ?? Infinity)
const timeoutMs = Number(args.get('timeout-ms') ?? 5000)
let state = (Number(args.get('seed') ?? 1) >>> 0) || 1

/** xorshift32: the same run for the same --seed. */
function rand(n: number): number {
  state ^= state << 13
  state ^= state >>> 17
  state ^= state << 5
  return (state >>> 0) % n
}
const pick = <T>(xs: readonly T[]): T => xs[rand(xs.length)]

// The media directory and an image outside it.
const root = mkdtempSync(join(tmpdir(), 'vtc-request-fuzz-'))
const media = join(root, 'media')
mkdirSync(join(media, 'sub'), { recursive: true })
const page = readFileSync(join(here, '../crate/fuzz/seeds/image/page-grey.png'))
const outside = readFileSync(join(here, '../crate/fuzz/seeds/image/page-palette.png'))
writeFileSync(join(media, 'page.png'), page)
writeFileSync(join(media, 'sub', 'nested.jpg'), readFileSync(join(here, '../crate/fuzz/seeds/image/page-grey.jpg')))
writeFileSync(join(media, 'big.png'), Buffer.concat([page, Buffer.alloc(200_000)]))
writeFileSync(join(root, 'outside.png'), outside)
symlinkSync(join(root, 'outside.png'), join(media, 'link-out.png'))
symlinkSync(join(media, 'page.png'), join(media, 'link-in.png'))
try {
  execFileSync('mkfifo', [join(media, 'fifo')])
} catch {
  // no mkfifo: the FIFO case is skipped
}
process.on('exit', () => rmSync(root, { recursive: true, force: true }))
const insideFiles = [page, readFileSync(join(media, 'sub', 'nested.jpg'))]

const options: ParseOptions[] = [
  {},
  { mediaDir: media, maxImages: 4, maxImagePixels: 1_000_000, maxMediaBytes: 100_000 },
  { mediaDir: media, maxImages: 1, maxImagePixels: 100 },
]

const seeds: unknown[] = readdirSync(join(here, 'seeds/request'))
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(here, 'seeds/request', f), 'utf8')))
const dataUrls = collectStrings(seeds).filter((s) => s.startsWith('data:'))

function collectStrings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v)
  else if (Array.isArray(v)) v.forEach((x) => collectStrings(x, out))
  else if (v && typeof v === 'object') Object.values(v).forEach((x) => collectStrings(x, out))
  return out
}

const KEYS = ['model', 'messages', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'top_k', 'seed', 'stop', 'n', 'tools',
  'tool_choice', 'response_format', 'max_rounds', 'stream', 'stream_options', 'include_usage', 'logprobs', 'top_logprobs', 'cache_salt',
  'vtc', 'round_tokens', 'image_order', 'role', 'content', 'type', 'text', 'image_url', 'image', 'url', '__proto__', 'constructor',
  'toString', 'length', '0']
const STRINGS = ['', 'user', 'assistant', 'system', 'developer', 'tool', 'text', 'input_text', 'image_url', 'image', 'none', 'auto',
  'question-first', 'images-first', 'page.png', 'link-in.png', 'link-out.png', 'fifo', 'sub', 'sub/nested.jpg', 'big.png', '../outside.png',
  'sub/../../outside.png', '/etc/passwd', '/dev/zero', '/proc/self/environ', 'file:///etc/passwd', `file://${media}/page.png`,
  `file://${root}/outside.png`, 'file://%00', 'file://host/x', `${media}/page.png`, `${media}/../outside.png`, './page.png', 'page.png\0',
  'http://127.0.0.1/x.png', 'data:', 'data:image/png,abc', 'data:image/png;base64,', 'data:image/png;base64,%%%', 'data:;base64,iVBORw0KGgo=',
  'DATA:IMAGE/PNG;BASE64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==',
  '<|im_start|>', '\u{FFFF}\u{D800}', 'x'.repeat(10_000), '__proto__', 'constructor']
const NUMBERS = [0, -0, 1, -1, 0.5, 2, 2.000001, 20, 21, 1e308, -1e308, 5e-324, 2 ** 31, 2 ** 32 + 1, 2 ** 53, 2 ** 53 + 2,
  Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, -(2 ** 63), 1.5, 1e21]

function randomValue(depth = 0): unknown {
  switch (rand(depth > 2 ? 4 : 7)) {
    case 0: return pick(NUMBERS)
    case 1: return pick(STRINGS)
    case 2: return pick([null, true, false])
    case 3: return pick(dataUrls)
    case 4: return Array.from({ length: rand(4) }, () => randomValue(depth + 1))
    case 5: return Object.fromEntries(Array.from({ length: rand(4) }, () => [pick(KEYS), randomValue(depth + 1)]))
    default: return { role: pick(STRINGS.slice(1, 6)), content: rand(2) ? pick(STRINGS) : [{ type: pick(STRINGS.slice(5, 10)), [pick(KEYS)]: randomValue(depth + 1) }] }
  }
}

/** Every container in `v` with its keys, so a mutation can reach any depth. */
function containers(v: unknown, out: (Record<string, unknown> | unknown[])[] = []): (Record<string, unknown> | unknown[])[] {
  if (Array.isArray(v)) {
    out.push(v)
    v.forEach((x) => containers(x, out))
  } else if (v && typeof v === 'object') {
    out.push(v as Record<string, unknown>)
    Object.values(v).forEach((x) => containers(x, out))
  }
  return out
}

function mutateDataUrl(url: string): string {
  const comma = url.indexOf(',')
  const bytes = Buffer.from(url.slice(comma + 1), 'base64')
  for (let i = 0, n = 1 + rand(8); i < n && bytes.length; i++) {
    const at = rand(bytes.length)
    bytes[at] = rand(4) === 0 ? pick([0, 0xff, 0x7f, 0x80]) : bytes[at] ^ (1 << rand(8))
  }
  // IHDR width/height of a PNG: gigapixel declarations
  if (rand(4) === 0 && bytes.length > 24) bytes.writeUInt32BE(pick([0, 1, 65536, 0x7fffffff, 0xffffffff]), 16 + 4 * rand(2))
  return url.slice(0, comma + 1) + bytes.subarray(0, rand(3) ? bytes.length : rand(bytes.length + 1)).toString('base64')
}

function mutate(body: unknown): unknown {
  const v = structuredClone(body)
  for (let i = 0, n = 1 + rand(4); i < n; i++) {
    const cs = containers(v)
    if (cs.length === 0) return randomValue()
    const c = pick(cs)
    const keys = Array.isArray(c) ? c.map((_, j) => j) : Object.keys(c)
    const r = rand(10)
    const set = (k: string | number, x: unknown) => ((c as Record<string | number, unknown>)[k] = x)
    if (r < 4 && keys.length) set(pick(keys), randomValue())
    else if (r < 5 && keys.length) {
      const k = pick(keys)
      if (Array.isArray(c)) c.splice(k as number, 1)
      else delete c[k as string]
    } else if (r < 7) set(Array.isArray(c) ? rand(c.length + 1) : pick(KEYS), randomValue())
    else if (r < 8 && keys.length) {
      const k = pick(keys)
      const x = (c as Record<string | number, unknown>)[k]
      if (typeof x === 'string' && x.startsWith('data:')) set(k, mutateDataUrl(x))
      else if (Array.isArray(c)) c.push(...Array.from({ length: rand(8) }, () => structuredClone(x)))
    } else if (r < 9 && keys.length) {
      const x = (c as Record<string | number, unknown>)[pick(keys)]
      set(pick(keys), structuredClone(x)) // move a value to another key
    } else if (cs.length > 1) {
      const other = pick(cs)
      if (other !== c && !containers(other).includes(c)) set(keys.length ? pick(keys) : 'messages', structuredClone(other))
    }
  }
  if (rand(8) === 0) {
    // byte-level: edit the JSON text, keep it if it still parses (the server parses before validating)
    const text = Buffer.from(JSON.stringify(v) ?? 'null')
    for (let i = 0, n = 1 + rand(4); i < n; i++) text[rand(text.length)] = pick([0x22, 0x5b, 0x5d, 0x7b, 0x7d, 0x2c, 0x3a, 0x30, 0x2d, rand(256)])
    try {
      return JSON.parse(text.toString())
    } catch {
      return v
    }
  }
  return v
}

const LEAKS = ['root:x:0:0', 'ENOENT', 'EACCES', 'ENOTDIR', 'EISDIR', 'ELOOP', 'ENXIO', 'EPERM', 'no such file', 'permission denied']

/** The documented outcome, or a description of what is wrong. */
async function check(body: unknown, opts: ParseOptions): Promise<string | undefined> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), timeoutMs)))
  try {
    const req = await Promise.race([parseChatRequest(body, opts), timeout])
    if (req === 'timeout') return `no answer within ${timeoutMs} ms`
    if (!Array.isArray(req.messages) || req.messages.length === 0) return 'resolved without messages'
    let images = 0
    for (const m of req.messages) {
      if (!['system', 'user', 'assistant'].includes(m.role)) return `role ${m.role}`
      if (typeof m.content === 'string') continue
      for (const p of m.content) {
        if (p.type === 'text' && typeof p.text !== 'string') return 'text part without text'
        if (p.type === 'image') {
          images++
          const bytes = p.image as unknown
          if (!Buffer.isBuffer(bytes)) return 'image part without bytes'
          if (bytes.equals(outside)) return 'read the image outside the media directory'
          const fromFile = insideFiles.some((f) => f.equals(bytes))
          const fromUrl = collectStrings(body).some((s) => /^data:/i.test(s) && Buffer.from(s.slice(s.indexOf(',') + 1), 'base64').equals(bytes))
          if (!fromFile && !fromUrl) return 'image bytes neither from a data URL of the body nor from a file in the media directory'
        }
      }
    }
    if (opts.maxImages !== undefined && images > opts.maxImages) return `${images} images over maxImages ${opts.maxImages}`
    for (const k of ['maxTokens', 'topK', 'seed', 'topLogprobs'] as const) {
      if (req[k] !== undefined && !Number.isSafeInteger(req[k])) return `${k} = ${req[k]}`
    }
    if (req.maxTokens !== undefined && req.maxTokens < 1) return `maxTokens = ${req.maxTokens}`
    if (req.temperature !== undefined && !(req.temperature >= 0 && req.temperature <= 2)) return `temperature = ${req.temperature}`
    if (req.topP !== undefined && !(req.topP > 0 && req.topP <= 1)) return `topP = ${req.topP}`
    if (req.topLogprobs !== undefined && !req.logprobs) return 'topLogprobs without logprobs'
    return undefined
  } catch (err) {
    if (!(err instanceof HttpError)) return `threw ${(err as Error)?.name}: ${(err as Error)?.message ?? String(err)}`
    if (err.status !== 400 && err.status !== 413) return `HttpError ${err.status}: ${err.message}`
    if (typeof err.message !== 'string' || !err.message) return 'HttpError without a message'
    if (err.param !== null && typeof err.param !== 'string') return `HttpError param ${String(err.param)}`
    // no file contents and no existence oracle (errno names) in what a client reads, unless it sent them itself
    const sent = JSON.stringify(body) ?? ''
    const leak = LEAKS.find((w) => err.message.includes(w) && !sent.includes(w))
    if (leak) return `the error tells about the file system (${leak}): ${err.message}`
    return undefined
  } finally {
    clearTimeout(timer)
  }
}

async function main(): Promise<void> {
  if (args.has('replay')) {
    const { body, option } = JSON.parse(readFileSync(args.get('replay')!, 'utf8'))
    const problem = await check(body, options[option])
    console.log(problem ?? 'ok')
    process.exit(problem ? 1 : 0)
  }
  // the bodies of earlier crashes, each a regression test: replayed first, reported while they still fail
  let crashes = 0
  const kinds = new Set<string>()
  for (const f of readdirSync(join(here, 'regressions')).filter((f) => f.startsWith('request-') && f.endsWith('.json')).sort()) {
    const { body, option } = JSON.parse(readFileSync(join(here, 'regressions', f), 'utf8'))
    const problem = await check(body, options[option])
    if (problem) {
      crashes++
      kinds.add(`regression ${f}`)
      console.error(`REGRESSION fuzz/regressions/${f} still fails: ${problem.slice(0, 300)}`)
    }
  }
  const start = performance.now()
  let n = 0
  let accepted = 0
  const corpus = [...seeds]
  while (n < iterations && performance.now() - start < seconds * 1000) {
    const base = pick(corpus)
    const body = rand(16) === 0 ? randomValue() : mutate(base)
    const option = rand(options.length)
    const problem = await check(body, options[option])
    n++
    if (problem) {
      crashes++
      // one file per kind of problem (the words of its description), so one run reports every distinct bug
      const kind = problem.replace(/[^A-Za-z ]+/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 60)
      if (!kinds.has(kind)) {
        kinds.add(kind)
        const text = JSON.stringify({ problem, option, body })
        const file = join(here, 'crashes', `request-${createHash('sha1').update(text).digest('hex').slice(0, 12)}.json`)
        mkdirSync(dirname(file), { recursive: true })
        writeFileSync(file, text)
        console.error(`CRASH at execution ${n}: ${problem.slice(0, 300)}\n  saved ${file}\n  replay: node --import=tsx fuzz/request-fuzz.ts --replay ${file}`)
      }
      continue
    }
    // bodies the parser accepts become new bases, so mutations go deeper than one step from a seed
    if (corpus.length < 2000 && rand(4) === 0) {
      try {
        await parseChatRequest(body, options[0])
        accepted++
        corpus.push(body)
      } catch {
        // refused: not kept
      }
    }
  }
  const s = (performance.now() - start) / 1000
  console.log(`request-fuzz: ${n} executions in ${s.toFixed(1)} s (${Math.round(n / s)}/s), ${crashes} crashes (${kinds.size} kinds), ${accepted} accepted bodies kept`)
  process.exit(crashes ? 1 : 0)
}

await main()
