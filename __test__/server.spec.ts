/**
 * The OpenAI-compatible server, over HTTP on loopback. The model behind it is a scripted ChatModel (a test
 * peer that replays a fixed token schedule, like a recorded model); the server code is the real one.
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import test, { type ExecutionContext } from 'ava'

import { OpenAIBackend } from '../src/backends/openai.js'
import { abortError, GenerationError, type ChatModel, type GenerateRequest, type GenerationEvent } from '../src/backends/types.js'
import { renderText } from '../src/render.js'
import { createServer, type ServerOptions, type VtcServer } from '../src/server/index.js'
import { blackPng, pngHeader } from './helpers.js'

interface Turn {
  pieces: string[]
  finish?: string
  /** Delay before each piece. */
  delayMs?: number
  /** Throw after this many pieces. */
  failAfter?: number
  /** Prompt tokens the model reports as reused from its KV cache. */
  cached?: number
}

/** A test peer: replays one scripted turn per call, records what it was asked and whether it was aborted. */
class ScriptedModel implements ChatModel {
  readonly name = 'scripted'
  readonly requests: GenerateRequest[] = []
  readonly aborted: boolean[] = []
  finished = 0
  constructor(
    private readonly script: Turn[],
    readonly contextLength?: number,
  ) {}

  async *generate(req: GenerateRequest): AsyncGenerator<GenerationEvent> {
    const call = this.requests.push(req) - 1
    this.aborted[call] = false
    req.signal?.addEventListener('abort', () => (this.aborted[call] = true))
    const turn = this.script[Math.min(call, this.script.length - 1)]
    let text = ''
    for (const [i, piece] of turn.pieces.entries()) {
      if (turn.failAfter === i) throw new GenerationError('ERR_TEST_MODEL', 'scripted model failure', { partialText: text })
      if (turn.delayMs) await sleep(turn.delayMs)
      if (req.signal?.aborted) throw abortError(text)
      text += piece
      yield { type: 'text', text: piece, tokens: 1, ...(req.logprobs ? { logprobs: [{ token: piece, bytes: [...Buffer.from(piece)], logprob: -0.5, topLogprobs: [] }] } : {}) }
    }
    this.finished++
    yield {
      type: 'done',
      finishReason: turn.finish ?? 'stop',
      usage: { promptTokens: 10, completionTokens: turn.pieces.length, ...(turn.cached !== undefined ? { cachedTokens: turn.cached } : {}) },
      timings: { prefillMs: 1, decodeMs: 2 },
    }
  }
}

async function serve(model: ChatModel, options: ServerOptions = {}): Promise<{ server: VtcServer; url: string }> {
  const server = createServer(model, options)
  const { url } = await server.listen(0, '127.0.0.1')
  return { server, url }
}

const post = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  })

const hello = { messages: [{ role: 'user', content: 'Say hello.' }] }

/** The `data:` payloads of an SSE body. */
function sseEvents(body: string): string[] {
  return body
    .split('\n\n')
    .map((e) => e.trim())
    .filter(Boolean)
    .map((e) => {
      if (!e.startsWith('data: ')) throw new Error(`not an SSE data event: ${e}`)
      return e.slice(6)
    })
}

test('GET /health and /v1/models', async (t) => {
  const { server, url } = await serve(new ScriptedModel([{ pieces: ['x'] }], 32768))
  t.teardown(() => server.close())
  const health = await fetch(`${url}/health`)
  t.is(health.status, 200)
  t.like(await health.json(), { status: 'ok', model: 'scripted', inflight: 0 })
  const models = (await (await fetch(`${url}/v1/models`)).json()) as { object: string; data: { id: string; max_model_len: number }[] }
  t.is(models.object, 'list')
  t.deepEqual(
    models.data.map((m) => m.id),
    ['scripted', 'scripted:vtc'],
  )
  t.is(models.data[0].max_model_len, 32768)
  t.is((await fetch(`${url}/nope`)).status, 404)
  const wrong = await fetch(`${url}/v1/chat/completions`)
  t.is(wrong.status, 405)
  t.is(wrong.headers.get('allow'), 'POST')
})

test('non-streaming completion: OpenAI response shape, sampling parameters passed to the model', async (t) => {
  const model = new ScriptedModel([{ pieces: ['Hel', 'lo', '!'], finish: 'stop' }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const res = await post(url, { ...hello, model: 'scripted', max_tokens: 50, temperature: 0.6, top_p: 0.95, top_k: 20, seed: 7, stop: 'END' })
  t.is(res.status, 200)
  const body = (await res.json()) as any
  t.is(body.object, 'chat.completion')
  t.regex(body.id, /^chatcmpl-/)
  t.is(body.model, 'scripted')
  t.deepEqual(body.choices[0].message, { role: 'assistant', content: 'Hello!' })
  t.is(body.choices[0].finish_reason, 'stop')
  t.deepEqual(body.usage, { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 })
  const req = model.requests[0]
  t.like(req, { maxTokens: 50, temperature: 0.6, topP: 0.95, topK: 20, seed: 7, stop: ['END'] })
  t.deepEqual(req.messages, [{ role: 'user', content: 'Say hello.' }])
})

test('streaming: role chunk, content chunks, finish chunk, usage chunk, [DONE]', async (t) => {
  const { server, url } = await serve(new ScriptedModel([{ pieces: ['a', 'β', 'c'], finish: 'length' }]))
  t.teardown(() => server.close())
  const res = await post(url, { ...hello, stream: true, stream_options: { include_usage: true } })
  t.is(res.status, 200)
  t.regex(res.headers.get('content-type') ?? '', /^text\/event-stream/)
  const events = sseEvents(await res.text())
  t.is(events.at(-1), '[DONE]')
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e))
  for (const c of chunks) t.is(c.object, 'chat.completion.chunk')
  t.is(new Set(chunks.map((c) => c.id)).size, 1)
  t.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' })
  t.deepEqual(
    chunks.slice(1, 4).map((c) => c.choices[0].delta.content),
    ['a', 'β', 'c'],
  )
  t.is(chunks[4].choices[0].finish_reason, 'length')
  t.deepEqual(chunks[5].choices, [])
  t.deepEqual(chunks[5].usage, { prompt_tokens: 10, completion_tokens: 3, total_tokens: 13 })
  t.is(chunks.length, 6)
})

test('reused prompt tokens are reported as usage.prompt_tokens_details.cached_tokens, and read back by the OpenAI backend', async (t) => {
  const model = new ScriptedModel([{ pieces: ['Hi'], cached: 8 }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const body = (await (await post(url, hello)).json()) as any
  t.deepEqual(body.usage, { prompt_tokens: 10, completion_tokens: 1, total_tokens: 11, prompt_tokens_details: { cached_tokens: 8 } })
  // the backend streams with include_usage, so this also covers the usage chunk
  const backend = new OpenAIBackend({ baseUrl: url, model: 'scripted' })
  let done: GenerationEvent | undefined
  for await (const ev of backend.generate({ messages: [{ role: 'user', content: 'Say hello.' }], maxTokens: 5 })) if (ev.type === 'done') done = ev
  t.like(done, { type: 'done', usage: { promptTokens: 10, completionTokens: 1, cachedTokens: 8 } })
})

test('streaming without include_usage sends no usage chunk; logprobs are passed through', async (t) => {
  const { server, url } = await serve(new ScriptedModel([{ pieces: ['x', 'y'] }]))
  t.teardown(() => server.close())
  const events = sseEvents(await (await post(url, { ...hello, stream: true, logprobs: true })).text())
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e))
  t.false(chunks.some((c) => c.usage))
  t.deepEqual(chunks[1].choices[0].logprobs.content[0], { token: 'x', logprob: -0.5, bytes: [120], top_logprobs: [] })
})

test('image parts: data URLs decoded for the model; local paths only when enabled; remote URLs refused', async (t) => {
  const png = await (await renderText('A page of optical memory.')).pages[0].png()
  const dataUrl = `data:image/png;base64,${png.toString('base64')}`
  const dir = mkdtempSync(join(tmpdir(), 'vtc-server-'))
  const file = join(dir, 'page.png')
  writeFileSync(file, png)
  const image = (url: string) => ({
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Read this.' }, { type: 'image_url', image_url: { url } }] }],
  })

  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const open = await serve(model, { allowedMediaDir: dir })
  t.teardown(() => open.server.close())
  t.is((await post(open.url, image(dataUrl))).status, 200)
  t.is((await post(open.url, image(file))).status, 200)
  t.is((await post(open.url, image(`file://${file}`))).status, 200)
  t.is(model.requests.length, 3)
  for (const req of model.requests) {
    const parts = req.messages[0].content as any[]
    t.deepEqual(parts[0], { type: 'text', text: 'Read this.' })
    t.true(Buffer.isBuffer(parts[1].image))
    t.true((parts[1].image as Buffer).equals(png))
  }
  // outside the image directory
  const outside = await post(open.url, image(join(tmpdir(), 'elsewhere.png')))
  t.is(outside.status, 400)
  t.regex(((await outside.json()) as any).error.message, /messages\[0\]\.content\[1\]\.image_url\.url: no readable file by that name in the server's media directory/)

  const closed = await serve(new ScriptedModel([{ pieces: ['ok'] }]))
  t.teardown(() => closed.server.close())
  const local = await post(closed.url, image(file))
  t.is(local.status, 400)
  const lb = (await local.json()) as any
  t.is(lb.error.param, 'messages[0].content[1].image_url.url')
  t.regex(lb.error.message, /local image paths are disabled/)
  const remote = await post(closed.url, image('https://example.com/cat.png'))
  t.is(remote.status, 400)
  t.regex(((await remote.json()) as any).error.message, /^messages\[0\]\.content\[1\]\.image_url\.url: remote image URLs are not fetched/)
  const notImage = await post(closed.url, image(`data:image/png;base64,${Buffer.from('hello world').toString('base64')}`))
  t.is(notImage.status, 400)
  t.regex(((await notImage.json()) as any).error.message, /not a PNG, JPEG, WebP or GIF/)
})

test('bad requests: 400 naming the field, 404 for an unknown model', async (t) => {
  const model = new ScriptedModel([{ pieces: ['x'] }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const cases: [unknown, number, RegExp][] = [
    ['{not json', 400, /not valid JSON/],
    [[1, 2], 400, /must be a JSON object/],
    [{}, 400, /^messages: must be a non-empty array/],
    [{ messages: [] }, 400, /^messages: must be a non-empty array/],
    [{ messages: [{ role: 'tool', content: 'x' }] }, 400, /^messages\[0\]\.role: unsupported role "tool"/],
    [{ messages: [{ role: 'user', content: 5 }] }, 400, /^messages\[0\]\.content: must be a string or an array/],
    [{ messages: [{ role: 'user', content: [{ type: 'audio' }] }] }, 400, /^messages\[0\]\.content\[0\]\.type: unsupported content part type "audio"/],
    [{ messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 400, /^messages\[0\]\.content\[0\]\.text: must be a string/],
    [{ ...hello, temperature: 5 }, 400, /^temperature: must be a number in \[0, 2\]/],
    [{ ...hello, max_tokens: 0 }, 400, /^max_tokens: must be an integer ≥ 1/],
    [{ ...hello, n: 2 }, 400, /^n: only n = 1/],
    [{ ...hello, stream: 'yes' }, 400, /^stream: must be a boolean/],
    [{ ...hello, model: 'scripted:vtc', max_rounds: 2 }, 400, /^max_rounds: the vtc mode's options go in the "vtc" object/],
    [{ ...hello, model: 'gpt-4' }, 404, /model "gpt-4" does not exist; this server serves scripted, scripted:vtc/],
  ]
  for (const [body, status, message] of cases) {
    const res = await post(url, body)
    t.is(res.status, status, JSON.stringify(body))
    const err = ((await res.json()) as any).error
    t.regex(err.message, message)
    t.is(typeof err.type, 'string')
  }
  // not implemented, so refused rather than ignored
  const unsupported: [string, unknown][] = [
    ['tools', [{ type: 'function', function: { name: 'f' } }]],
    ['tool_choice', 'required'],
    ['response_format', { type: 'json_object' }],
  ]
  for (const [param, value] of unsupported) {
    const res = await post(url, { ...hello, model: 'scripted:vtc', [param]: value })
    t.is(res.status, 400)
    const err = ((await res.json()) as any).error
    t.is(err.param, param)
    t.regex(err.message, new RegExp(`^${param}: .* not supported`))
  }
  t.is(model.requests.length, 0)
  // values that ask for nothing unsupported pass
  t.is((await post(url, { ...hello, tools: [], tool_choice: 'none', response_format: { type: 'text' } })).status, 200)
})

test('413 for a body over the limit, with or without a content-length', async (t) => {
  const { server, url } = await serve(new ScriptedModel([{ pieces: ['x'] }]), { maxBodyBytes: 1024 })
  t.teardown(() => server.close())
  const big = { messages: [{ role: 'user', content: 'x'.repeat(4096) }] }
  const res = await post(url, big)
  t.is(res.status, 413)
  t.regex(((await res.json()) as any).error.message, /exceeds the server's limit of 1024 bytes/)
  // chunked, no content-length
  const chunked = await new Promise<number>((resolve, reject) => {
    const req = httpRequest(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    for (let i = 0; i < 8; i++) req.write('x'.repeat(512))
    req.end()
  })
  t.is(chunked, 413)
  t.is((await post(url, hello)).status, 200)
})

test('a client that disconnects mid-stream aborts the generation', async (t) => {
  const model = new ScriptedModel([{ pieces: Array.from({ length: 200 }, (_, i) => `t${i} `), delayMs: 10 }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const client = new AbortController()
  const res = await post(url, { ...hello, stream: true }, { signal: client.signal })
  const reader = res.body!.getReader()
  await reader.read()
  await reader.read()
  client.abort()
  for (let i = 0; i < 100 && server.inflight > 0; i++) await sleep(10)
  t.is(server.inflight, 0)
  t.true(model.aborted[0], 'the model saw its signal abort')
  t.is(model.finished, 0)
})

test('a non-streaming client that disconnects also aborts the generation', async (t) => {
  const model = new ScriptedModel([{ pieces: Array.from({ length: 200 }, (_, i) => `t${i} `), delayMs: 10 }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const client = new AbortController()
  const pending = post(url, hello, { signal: client.signal }).catch((e: unknown) => e)
  for (let i = 0; i < 100 && server.inflight === 0; i++) await sleep(5)
  client.abort()
  await pending
  for (let i = 0; i < 100 && server.inflight > 0; i++) await sleep(10)
  t.is(server.inflight, 0)
  t.true(model.aborted[0])
})

test('a model error before any output is a 500 with the message; after output, an SSE error event', async (t) => {
  const model = new ScriptedModel([
    { pieces: ['a', 'b'], failAfter: 0 },
    { pieces: ['a', 'b', 'c'], failAfter: 2 },
  ])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const res = await post(url, hello)
  t.is(res.status, 500)
  t.like(((await res.json()) as any).error, { message: 'scripted model failure', code: 'ERR_TEST_MODEL', type: 'server_error' })
  const events = sseEvents(await (await post(url, { ...hello, stream: true })).text())
  t.is(events.at(-1), '[DONE]')
  const err = JSON.parse(events.at(-2)!)
  t.like(err.error, { message: 'scripted model failure', code: 500 })
  t.deepEqual(
    events
      .slice(1, -2)
      .map((e) => JSON.parse(e).choices[0].delta.content)
      .join(''),
    'ab',
  )
})

test('graceful shutdown: running requests finish, new ones are refused; after the grace period they are aborted', async (t) => {
  const model = new ScriptedModel([{ pieces: Array.from({ length: 10 }, (_, i) => `${i}`), delayMs: 20 }])
  const { server, url } = await serve(model)
  const running = post(url, hello)
  for (let i = 0; i < 100 && server.inflight === 0; i++) await sleep(5)
  const closing = server.close({ graceMs: 5000 })
  const refused = await post(url, hello).then(
    (r) => r.status,
    () => 'refused',
  )
  t.true(refused === 503 || refused === 'refused', `new request: ${refused}`)
  const res = await running
  t.is(res.status, 200)
  t.is(((await res.json()) as any).choices[0].message.content, '0123456789')
  await closing

  const slow = new ScriptedModel([{ pieces: Array.from({ length: 1000 }, () => 'x'), delayMs: 10 }])
  const s2 = await serve(slow)
  const pending = post(s2.url, hello).then(
    (r) => r.status,
    () => 'reset',
  )
  for (let i = 0; i < 100 && s2.server.inflight === 0; i++) await sleep(5)
  const t0 = performance.now()
  await s2.server.close({ graceMs: 50 })
  t.true(performance.now() - t0 < 3000)
  t.true(slow.aborted[0])
  const status = await pending
  t.true(status === 503 || status === 'reset', `aborted request: ${status}`)
})

test('a full queue answers 429 with Retry-After at once; the admitted requests finish and room opens again', async (t) => {
  const model = new ScriptedModel([{ pieces: ['a', 'b', 'c'], delayMs: 60 }])
  const { server, url } = await serve(model, { maxQueue: 2 })
  t.teardown(() => server.close({ graceMs: 0 }))
  const admitted = [post(url, hello), post(url, hello)]
  for (let i = 0; i < 200 && server.inflight < 2; i++) await sleep(5)
  const t0 = performance.now()
  const busy = await post(url, hello)
  t.true(performance.now() - t0 < 1000, 'answered without waiting for the queue')
  t.is(busy.status, 429)
  t.is(busy.headers.get('retry-after'), '1')
  const body = (await busy.json()) as any
  t.is(body.error.code, 'queue_full')
  t.regex(body.error.message, /2 requests/)
  for (const r of await Promise.all(admitted)) t.is(r.status, 200)
  t.is((await post(url, hello)).status, 200)
  t.throws(() => createServer(model, { maxQueue: 0 }), { message: /maxQueue/ })
})

test('vtc mode (model "<name>:vtc"): the server runs the optical-memory loop and reports the rounds', async (t) => {
  const round1 = '<think>\n' + 'We expand the product term by term and collect the powers of x. '.repeat(30)
  const model = new ScriptedModel([
    { pieces: [round1], finish: 'length' },
    { pieces: ['So the coefficient is 42.\n</think>\n\n', '<answer>42</answer>'] },
  ])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const res = await post(url, { model: 'scripted:vtc', messages: [{ role: 'user', content: 'What is the coefficient?' }], max_tokens: 100 })
  t.is(res.status, 200)
  const body = (await res.json()) as any
  t.is(body.model, 'scripted:vtc')
  t.is(body.choices[0].finish_reason, 'stop')
  t.is(body.choices[0].message.content, `${round1}\n\nSo the coefficient is 42.\n</think>\n\n<answer>42</answer>`)
  t.is(body.vtc.answer, '42')
  t.is(body.vtc.finish_reason, 'complete')
  t.is(body.vtc.rounds.length, 2)
  const pages = body.vtc.rounds[0].pages
  t.true(pages >= 1)
  t.is(body.vtc.rounds[1].images, pages)
  t.deepEqual(model.requests.map((r) => r.maxTokens), [100, 99], 'max_tokens is the budget of all rounds together')
  const parts = model.requests[1].messages[1].content as any[]
  t.is(parts.length, 1 + pages)
  t.deepEqual(parts[0], { type: 'text', text: 'What is the coefficient?' })
  for (const p of parts.slice(1)) t.is(typeof pngHeader(Buffer.isBuffer(p.image) ? p.image : await p.image.png()).width, 'number')

  // streamed: the rounds' text as it is generated, the summary on the finish chunk
  model.requests.length = 0 // replay round 1 (incomplete) once more
  const events = sseEvents(await (await post(url, { model: 'scripted', vtc: { max_rounds: 1 }, messages: [{ role: 'user', content: 'Q?' }], stream: true })).text())
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e))
  const finish = chunks.find((c) => c.choices[0]?.finish_reason)
  t.is(finish.choices[0].finish_reason, 'length')
  t.is(finish.vtc.finish_reason, 'rounds-exhausted')

  const conv = await post(url, { model: 'scripted:vtc', messages: [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }] })
  t.is(conv.status, 400)
  t.regex(((await conv.json()) as any).error.message, /no assistant turns/)
})

test('vtc mode: max_tokens counts the completion tokens of all rounds; a run that spends it ends as length', async (t) => {
  const long = (n: number) => Array.from({ length: n }, (_, i) => `Step ${i}: we expand the product term by term and collect the powers of x. `)
  const model = new ScriptedModel([{ pieces: long(10), finish: 'length' }, { pieces: ['So it is 42.\n</think>\n\n', '<answer>42</answer>'] }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const ask = { model: 'scripted:vtc', messages: [{ role: 'user', content: 'What is the coefficient?' }], max_tokens: 16 }
  const body = (await (await post(url, ask)).json()) as any
  t.deepEqual(
    model.requests.map((r) => r.maxTokens),
    [16, 6],
    'round 2 gets what round 1 left',
  )
  t.is(body.usage.completion_tokens, 12)
  t.is(body.vtc.finish_reason, 'complete')
  t.deepEqual(body.vtc.limits, { max_rounds: 8, round_tokens: 8192, max_tokens: 16 })

  // the budget spent without an answer: no further round, finish_reason length
  model.requests.length = 0
  const spent = (await (await post(url, { ...ask, max_tokens: 10 })).json()) as any
  t.is(model.requests.length, 1)
  t.is(spent.usage.completion_tokens, 10)
  t.is(spent.choices[0].finish_reason, 'length')
  t.is(spent.vtc.finish_reason, 'length')
  t.is(spent.vtc.totals.pages, 0, 'nothing rendered that no round would read')
})

test("vtc mode: a request's max_rounds and round_tokens are capped by the operator's limits", async (t) => {
  const unfinished = { pieces: ['<think>\n' + 'We expand the product term by term and collect the powers of x. '.repeat(30)], finish: 'length' }
  const model = new ScriptedModel([unfinished])
  const { server, url } = await serve(model, { vtc: { maxRounds: 2, roundTokens: 500 } })
  t.teardown(() => server.close())
  const ask = (vtc: unknown) => post(url, { model: 'scripted', vtc, messages: [{ role: 'user', content: 'Q?' }] }).then((r) => r.json() as Promise<any>)

  const capped = await ask({ max_rounds: 5, round_tokens: 1000 })
  t.deepEqual(model.requests.map((r) => r.maxTokens), [500, 500])
  t.deepEqual(capped.vtc.limits, { max_rounds: 2, round_tokens: 500, max_tokens: null })
  t.is(capped.vtc.finish_reason, 'rounds-exhausted')

  model.requests.length = 0
  const fewer = await ask({ max_rounds: 1, round_tokens: 300 })
  t.deepEqual(model.requests.map((r) => r.maxTokens), [300])
  t.deepEqual(fewer.vtc.limits, { max_rounds: 1, round_tokens: 300, max_tokens: null })
})

test('servedModelName: the id /v1/models lists and requests must use or omit', async (t) => {
  const model = new ScriptedModel([{ pieces: ['Hi'] }])
  const { server, url } = await serve(model, { servedModelName: 'glyph-9b' })
  t.teardown(() => server.close())
  const models = (await (await fetch(`${url}/v1/models`)).json()) as any
  t.deepEqual(
    models.data.map((m: { id: string }) => m.id),
    ['glyph-9b', 'glyph-9b:vtc'],
  )
  t.like(await (await fetch(`${url}/health`)).json(), { model: 'glyph-9b' })
  t.is(((await (await post(url, { ...hello, model: 'glyph-9b' })).json()) as any).model, 'glyph-9b')
  t.is(((await (await post(url, hello)).json()) as any).model, 'glyph-9b', 'omitted: the served name')
  const other = await post(url, { ...hello, model: 'scripted' })
  t.is(other.status, 404)
  t.regex(((await other.json()) as any).error.message, /this server serves glyph-9b, glyph-9b:vtc/)
  t.throws(() => createServer(model, { servedModelName: ' ' }), { message: /servedModelName must be a non-empty string/ })
})

/** A request with these image URLs after a line of text. */
const withImages = (...urls: string[]) => ({
  messages: [{ role: 'user', content: [{ type: 'text', text: 'Read this.' }, ...urls.map((url) => ({ type: 'image_url', image_url: { url } }))] }],
})
const dataUrl = (bytes: Buffer) => `data:image/png;base64,${bytes.toString('base64')}`

/** The status and error of a refused request, after which the server must still answer a normal one at once. */
async function refused(t: ExecutionContext, url: string, res: Response | Promise<Response>, init: RequestInit = {}): Promise<{ status: number; error: any }> {
  const r = await res
  const body = (await r.json()) as any
  const t0 = performance.now()
  const ok = await post(url, hello, init)
  t.is(ok.status, 200, 'the server answers a normal request afterwards')
  t.true(performance.now() - t0 < 5000, 'promptly (a wedged server never answers)')
  return { status: r.status, error: body.error }
}

test('images per request and pixels per image (read from the header, nothing decoded) are 400s naming the limit and flag', async (t) => {
  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const { server, url } = await serve(model, { maxImages: 2, imagePixelLimit: 1000 })
  t.teardown(() => server.close())
  const small = dataUrl(blackPng(40, 25))
  t.is((await post(url, withImages(small, small))).status, 200)

  const many = await refused(t, url, post(url, withImages(small, small, small)))
  t.is(many.status, 400)
  t.is(many.error.param, 'messages[0].content[3].image_url.url')
  t.regex(many.error.message, /more than 2 images in one request, the server's limit \(--max-images\)/)

  // a 32 KB PNG that declares 65536×4096 pixels
  const bomb = await refused(t, url, post(url, withImages(dataUrl(blackPng(65536, 4096)))))
  t.is(bomb.status, 400)
  t.is(bomb.error.code, 'image_too_large')
  t.regex(bomb.error.message, /^messages\[0\]\.content\[1\]\.image_url\.url: a 65536×4096 image \(268435456 pixels\) is over the server's limit of 1000 pixels per image \(--image-pixel-limit\)/)
  t.is((await post(url, withImages(dataUrl(blackPng(40, 26))))).status, 400, '1040 pixels')

  // formats the server cannot size are refused too
  for (const bytes of [Buffer.from('89504e470d0a1a0a0000', 'hex'), Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>'), Buffer.from('GIF89a')]) {
    const res = await refused(t, url, post(url, withImages(dataUrl(bytes))))
    t.is(res.status, 400)
    t.regex(res.error.message, /cannot read the image's size from its header|not a PNG, JPEG, WebP or GIF/)
  }
  t.is(model.requests.length, 1 + 5, 'only the normal requests reached the model: the first, one after each refusal')
  t.throws(() => createServer(model, { maxImages: -1 }), { message: /maxImages must be a whole number/ })
})

test('max_tokens must be a whole number within the model context (2^32 + 1 no longer becomes 1)', async (t) => {
  const model = new ScriptedModel([{ pieces: ['ok'] }], 32768)
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ max_tokens: 2 ** 32 + 1 }, 'max_tokens', /^max_tokens: 4294967297 is more than the model's context of 32768 tokens \(--context-length\)/],
    [{ max_completion_tokens: 32769 }, 'max_completion_tokens', /^max_completion_tokens: 32769 is more than the model's context/],
    [{ max_tokens: 1e300 }, 'max_tokens', /^max_tokens: must be an integer ≥ 1, got 1e\+300/],
    [{ max_tokens: 2 ** 53 }, 'max_tokens', /^max_tokens: must be an integer/],
  ]
  for (const [fields, param, message] of cases) {
    const res = await refused(t, url, post(url, { ...hello, ...fields }))
    t.is(res.status, 400)
    t.is(res.error.param, param)
    t.regex(res.error.message, message)
  }
  t.is((await post(url, { ...hello, max_tokens: 32768 })).status, 200)
  t.is(model.requests.at(-1)?.maxTokens, 32768)
  // the vtc mode's max_tokens is the budget of all rounds, which may exceed one context
  const vtc = await post(url, { model: 'scripted:vtc', messages: [{ role: 'user', content: 'Q?' }], max_tokens: 100_000 })
  t.is(vtc.status, 200)
  t.is(((await vtc.json()) as any).vtc.limits.max_tokens, 100_000)
})

test('local images only from --allowed-media-dir: links followed and checked, regular files only, size-capped, one answer for every refusal', async (t) => {
  const png = blackPng(40, 30)
  const root = mkdtempSync(join(tmpdir(), 'vtc-media-'))
  const dir = join(root, 'media')
  mkdirSync(dir)
  writeFileSync(join(dir, 'page.png'), png)
  writeFileSync(join(root, 'secret.png'), png)
  symlinkSync(join(root, 'secret.png'), join(dir, 'link-out.png'))
  symlinkSync('/dev/zero', join(dir, 'zero.png'))
  symlinkSync('/proc/self/environ', join(dir, 'environ.png'))
  symlinkSync(root, join(dir, 'up'))
  execFileSync('mkfifo', [join(dir, 'fifo.png')])
  writeFileSync(join(dir, 'big.png'), Buffer.concat([png, Buffer.alloc(4096)]))

  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const { server, url } = await serve(model, { allowedMediaDir: dir, maxBodyBytes: 2048 })
  t.teardown(() => server.close())
  for (const name of ['page.png', join(dir, 'page.png'), `file://${join(dir, 'page.png')}`]) {
    t.is((await post(url, withImages(name))).status, 200, name)
    t.true((model.requests.at(-1)!.messages[0].content[1] as any).image.equals(png))
  }
  // outside the directory, through a link, not a regular file, or not there: the same answer
  const names = ['/etc/passwd', '/proc/self/environ', '/dev/zero', '../secret.png', join(root, 'secret.png'), 'link-out.png', 'up/secret.png', 'zero.png', 'environ.png', 'fifo.png', 'missing.png', '/no/such/file.png']
  for (const name of names) {
    const t0 = performance.now()
    const res = await refused(t, url, post(url, withImages(name)))
    t.true(performance.now() - t0 < 5000, `${name} answered at once`)
    t.is(res.status, 400, name)
    t.is(res.error.message, "messages[0].content[1].image_url.url: no readable file by that name in the server's media directory (--allowed-media-dir)", name)
  }
  const big = await refused(t, url, post(url, withImages('big.png')))
  t.is(big.status, 413)
  t.regex(big.error.message, /the local files of one request may total at most 2048 bytes, the server's body limit \(--max-body-mb\)/)
  t.throws(() => createServer(model, { allowedMediaDir: join(dir, 'page.png') }), { message: /allowedMediaDir .* is not a directory/ })

  // without the flag, no local path is read
  const closed = await serve(model)
  t.teardown(() => closed.server.close())
  const off = await refused(t, closed.url, post(closed.url, withImages(join(dir, 'page.png'))))
  t.regex(off.error.message, /local image paths are disabled on this server \(the operator's --allowed-media-dir\)/)
})

test('request bodies must be application/json: a web page cannot post text/plain without a CORS preflight', async (t) => {
  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const { server, url } = await serve(model)
  t.teardown(() => server.close())
  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '']) {
    const res = await refused(t, url, fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: type ? { 'content-type': type } : {}, body: new Blob([JSON.stringify(hello)]) }))
    t.is(res.status, 415, type)
    t.regex(res.error.message, new RegExp(`must be JSON sent with content-type application/json, not ${type.split(';')[0] || 'none'}$`))
  }
  t.is((await post(url, hello, { headers: { 'content-type': 'Application/JSON; charset=utf-8' } })).status, 200)
  t.is(model.requests.length, 5)
})

test('API keys: Bearer auth on every route but /health, any of several keys; prompt caches kept apart per key and cache_salt', async (t) => {
  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const keys = ['key-alice-0123456789', 'key-bob-0123456789']
  const { server, url } = await serve(model, { apiKeys: keys })
  t.teardown(() => server.close())
  const as = (key: string) => ({ headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` } })
  for (const [init, message] of [
    [{}, /^no API key: send "Authorization: Bearer KEY" with a key the operator gave \(--api-key\)/],
    [as('key-alice-012345678'), /^a wrong API key/],
    [{ headers: { 'content-type': 'application/json', authorization: `Basic ${keys[0]}` } }, /^no API key/],
  ] as const) {
    const res = await refused(t, url, post(url, hello, init), as(keys[0]))
    t.is(res.status, 401)
    t.regex(res.error.message, message)
  }
  t.is((await fetch(`${url}/v1/models`)).status, 401)
  t.is((await fetch(`${url}/v1/models`)).headers.get('www-authenticate'), 'Bearer')
  t.is((await fetch(`${url}/v1/models`, as(keys[1]))).status, 200)
  t.is((await fetch(`${url}/health`)).status, 200)
  t.is(model.requests.length, 3, 'one normal request after each refusal')

  model.requests.length = 0
  for (const [key, salt] of [[keys[0]], [keys[0]], [keys[1]], [keys[0], 'team-a'], [keys[1], 'team-a']]) {
    t.is((await post(url, { ...hello, ...(salt ? { cache_salt: salt } : {}) }, as(key!))).status, 200)
  }
  const salts = model.requests.map((r) => r.cacheSalt!)
  t.is(salts[0], salts[1], 'one key, one cache')
  t.is(new Set(salts).size, 4, 'another key or cache_salt, another cache')
  for (const s of salts) {
    t.regex(s, /^[0-9a-f]{64}$/)
    for (const k of keys) t.not(s, createHash('sha256').update(k).digest('hex'), 'not the bare hash of the key')
  }
  const bad = await post(url, { ...hello, cache_salt: '' }, as(keys[0]))
  t.is(bad.status, 400)
  t.regex(((await bad.json()) as any).error.message, /^cache_salt: must be a non-empty string/)

  // without keys, requests share one cache unless they give a cache_salt
  const open = await serve(model)
  t.teardown(() => open.server.close())
  model.requests.length = 0
  await post(open.url, hello)
  await post(open.url, { ...hello, cache_salt: 'team-a' })
  t.is(model.requests[0].cacheSalt, undefined)
  t.regex(model.requests[1].cacheSalt!, /^[0-9a-f]{64}$/)
})

test('CORS: a request or preflight from a foreign origin is refused with 403; allowed origins get the CORS headers', async (t) => {
  const model = new ScriptedModel([{ pieces: ['ok'] }])
  const { server, url } = await serve(model, { allowedOrigins: ['https://app.example'] })
  t.teardown(() => server.close())
  const from = (origin: string) => ({ headers: { 'content-type': 'application/json', origin } })
  const foreign = await refused(t, url, post(url, hello, from('https://evil.example')))
  t.is(foreign.status, 403)
  t.regex(foreign.error.message, /^origin https:\/\/evil\.example may not call this server \(the operator's --allowed-origin\)/)
  const preflight = (origin: string) =>
    fetch(`${url}/v1/chat/completions`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' } })
  const evil = await preflight('https://evil.example')
  t.is(evil.status, 403)
  t.is(evil.headers.get('access-control-allow-origin'), null)
  t.is((await fetch(`${url}/v1/models`, from('null'))).status, 403)

  const ok = await preflight('https://app.example')
  t.is(ok.status, 204)
  t.is(ok.headers.get('access-control-allow-origin'), 'https://app.example')
  t.regex(ok.headers.get('access-control-allow-headers') ?? '', /authorization, content-type/)
  const res = await post(url, hello, from('https://app.example'))
  t.is(res.status, 200)
  t.is(res.headers.get('access-control-allow-origin'), 'https://app.example')
  t.is(model.requests.length, 2)

  // by default no origin may call
  const closed = await serve(model)
  t.teardown(() => closed.server.close())
  t.is((await post(closed.url, hello, from('http://localhost:3000'))).status, 403)
})

/** Sends raw bytes on a new connection; resolves with everything the server answers before it closes. */
function rawHttp(url: string, data: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const { hostname, port } = new URL(url)
    const socket = connect(Number(port), hostname, () => socket.write(data))
    let got = ''
    socket.on('data', (d) => (got += d.toString()))
    socket.on('close', () => resolve(got))
    socket.on('error', reject)
  })
}

test('deadlines: a request past --request-timeout is aborted with 408; headers and bodies that arrive too slowly get 408', async (t) => {
  // 10 s of output unless the deadline cuts it
  const model = new ScriptedModel([{ pieces: Array.from({ length: 500 }, () => 'x'), delayMs: 20 }, { pieces: ['ok'] }])
  const { server, url } = await serve(model, { requestTimeoutMs: 300, headersTimeoutMs: 500, bodyTimeoutMs: 1000 })
  t.teardown(() => server.close())
  const t0 = performance.now()
  const late = await post(url, hello)
  t.true(performance.now() - t0 < 5000)
  t.is(late.status, 408)
  t.regex(((await late.json()) as any).error.message, /^the request ran past the server's deadline of 0\.3 s \(--request-timeout\)/)
  t.true(model.aborted[0], 'the generation was aborted')
  // streamed: the output so far, then the error
  model.requests.length = 0
  model.aborted.length = 0
  const events = sseEvents(await (await post(url, { ...hello, stream: true })).text())
  t.is(events.at(-1), '[DONE]')
  t.like(JSON.parse(events.at(-2)!).error, { code: 408, message: "the request ran past the server's deadline of 0.3 s (--request-timeout)" })
  t.true(model.aborted[0])

  // a client that never finishes its headers, or its body
  const slowHeaders = await rawHttp(url, 'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n')
  t.regex(slowHeaders, /^HTTP\/1\.1 408 /)
  t.regex(slowHeaders, /headers within 0\.5 s \(--header-timeout\), all of it within 1 s \(--body-timeout\)/)
  const slowBody = await rawHttp(url, 'POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"messages"')
  t.regex(slowBody, /^HTTP\/1\.1 408 /)
  t.regex(slowBody, /--body-timeout/)
  t.is((await refused(t, url, post(url, '{'))).status, 400)
  t.throws(() => createServer(model, { headersTimeoutMs: 5000, bodyTimeoutMs: 1000 }), { message: /headersTimeoutMs \(5000\) must not exceed bodyTimeoutMs \(1000\)/ })
})

test('a role named after an Object.prototype key is refused like any unknown role', async (t) => {
  const { server, url } = await serve(new ScriptedModel([{ pieces: ['x'] }]))
  t.teardown(() => server.close())
  for (const role of ['constructor', '__proto__', 'toString']) {
    const res = await post(url, { messages: [{ role, content: 'hi' }] })
    t.is(res.status, 400, role)
    t.regex(((await res.json()) as { error: { message: string } }).error.message, /unsupported role/)
  }
})
