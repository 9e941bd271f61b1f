/**
 * The OpenAI-compatible backend against real HTTP servers on loopback: a raw scripted peer (writes exactly the
 * bytes a test gives it, like a recorded vLLM/SGLang session) and, end to end, our own server.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import test from 'ava'

import { apiRoot, OpenAIBackend } from '../src/backends/openai.js'
import { collect, GenerationError, type ChatModel, type GenerateRequest, type GenerationEvent } from '../src/backends/types.js'
import { renderText } from '../src/render.js'
import { createServer } from '../src/server/index.js'
import { pngHeader } from './helpers.js'

interface Received {
  method: string
  url: string
  headers: IncomingMessage['headers']
  body: any
}

/** A scripted peer: records each request and answers with `reply`. */
async function peer(reply: (res: ServerResponse, body: any, req: IncomingMessage) => void | Promise<void>) {
  const received: Received[] = []
  const closed: boolean[] = []
  const server: Server = createHttpServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8')
      const body = text ? JSON.parse(text) : undefined
      const i = received.push({ method: req.method!, url: req.url!, headers: req.headers, body }) - 1
      closed[i] = false
      res.on('close', () => (closed[i] = !res.writableFinished))
      void reply(res, body, req)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    received,
    /** Per request: whether the client went away before the reply ended. */
    closed,
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  }
}

const chunk = (delta: Record<string, unknown>, finish: string | null = null, extra: Record<string, unknown> = {}) =>
  `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 0, model: 'm', choices: [{ index: 0, delta, finish_reason: finish }], ...extra })}\n\n`

const sse = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream' })

const ask = (backend: OpenAIBackend, extra: Partial<GenerateRequest> = {}) =>
  backend.generate({ messages: [{ role: 'user', content: 'What is 6 × 7?' }], maxTokens: 64, ...extra })

async function failure(events: AsyncIterable<GenerationEvent>): Promise<{ err: GenerationError; seen: string }> {
  let seen = ''
  try {
    for await (const ev of events) if (ev.type === 'text') seen += ev.text
  } catch (err) {
    return { err: err as GenerationError, seen }
  }
  throw new Error('expected the generation to fail')
}

test('apiRoot: a bare origin gets /v1; a path is kept', (t) => {
  t.is(apiRoot('http://127.0.0.1:8000'), 'http://127.0.0.1:8000/v1')
  t.is(apiRoot('http://127.0.0.1:8000/'), 'http://127.0.0.1:8000/v1')
  t.is(apiRoot('https://h/api/v1/'), 'https://h/api/v1')
  t.throws(() => apiRoot('localhost:8000'), { code: 'ERR_VTC_INVALID_ARGUMENT' })
  t.throws(() => new OpenAIBackend({ baseUrl: 'http://h', model: '' }), { code: 'ERR_VTC_INVALID_ARGUMENT' })
})

test('request: streamed chat completion with usage, sampling fields, PNG pages as image_url data URLs', async (t) => {
  const p = await peer((res) => {
    sse(res)
    res.end(chunk({ content: 'ok' }, 'stop') + 'data: [DONE]\n\n')
  })
  t.teardown(p.close)
  const { pages } = await renderText('The first round of reasoning, rendered.\n\nA second paragraph.')
  const backend = new OpenAIBackend({ baseUrl: p.url, model: 'vtc-r1-glyph', apiKey: 'sk-test', extraBody: { repetition_penalty: 1.05 } })
  await collect(
    backend.generate({
      messages: [
        { role: 'system', content: 'system prompt' },
        { role: 'user', content: [{ type: 'text', text: 'Question?' }, ...pages.map((image) => ({ type: 'image' as const, image }))] },
      ],
      maxTokens: 8192,
      temperature: 0.6,
      topP: 0.95,
      topK: 20,
      seed: 3,
      stop: ['</answer>'],
    }),
  )
  const r = p.received[0]
  t.is(r.method, 'POST')
  t.is(r.url, '/v1/chat/completions')
  t.is(r.headers.authorization, 'Bearer sk-test')
  t.regex(String(r.headers['content-type']), /application\/json/)
  t.like(r.body, {
    model: 'vtc-r1-glyph',
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: 8192,
    temperature: 0.6,
    top_p: 0.95,
    top_k: 20,
    seed: 3,
    stop: ['</answer>'],
    repetition_penalty: 1.05,
  })
  t.deepEqual(r.body.messages[0], { role: 'system', content: 'system prompt' })
  const parts = r.body.messages[1].content
  t.deepEqual(parts[0], { type: 'text', text: 'Question?' })
  t.is(parts.length, 1 + pages.length)
  for (const [i, part] of parts.slice(1).entries()) {
    t.is(part.type, 'image_url')
    const m = /^data:image\/png;base64,(.+)$/.exec(part.image_url.url)
    t.truthy(m)
    const png = Buffer.from(m![1], 'base64')
    t.like(pngHeader(png), { width: pages[i].width, height: pages[i].height })
  }
  // text-only content is sent as a plain string
  await collect(ask(backend))
  t.is(p.received[1].body.messages[0].content, 'What is 6 × 7?')
})

test('SSE parsing: chunks split anywhere (mid-character, CRLF), comments, usage chunk, [DONE]', async (t) => {
  const body =
    ': keep-alive comment\r\n\r\n' +
    chunk({ role: 'assistant', content: '' }).replace(/\n\n$/, '\r\n\r\n') +
    chunk({ content: 'Six times seven is ' }) +
    chunk({ content: '42 — café ∑ 🎉' }) +
    chunk({}, 'stop') +
    `data: ${JSON.stringify({ id: 'c1', choices: [], usage: { prompt_tokens: 21, completion_tokens: 9, total_tokens: 30 } })}\n\n` +
    'data: [DONE]\n\n'
  const bytes = Buffer.from(body, 'utf8')
  const p = await peer(async (res) => {
    sse(res)
    // 7-byte writes split multi-byte characters and CRLF pairs
    for (let i = 0; i < bytes.length; i += 7) {
      res.write(bytes.subarray(i, i + 7))
      if (i % 70 === 0) await sleep(1)
    }
    res.end()
  })
  t.teardown(p.close)
  const events: GenerationEvent[] = []
  for await (const ev of ask(new OpenAIBackend({ baseUrl: `${p.url}/v1`, model: 'm' }))) events.push(ev)
  const done = events.at(-1)!
  t.is(
    events
      .filter((e) => e.type === 'text')
      .map((e) => (e as { text: string }).text)
      .join(''),
    'Six times seven is 42 — café ∑ 🎉',
  )
  t.like(done, { type: 'done', finishReason: 'stop', usage: { promptTokens: 21, completionTokens: 9 } })
  t.falsy((done as any).usage.estimated)
  t.is(typeof (done as any).timings.prefillMs, 'number')
})

test('no usage from the server: completion tokens counted with the Qwen3 tokenizer, marked estimated', async (t) => {
  const p = await peer((res) => {
    sse(res)
    res.end(chunk({ content: 'Hello' }) + chunk({ content: ' world' }, 'length') + 'data: [DONE]\n\n')
  })
  t.teardown(p.close)
  const r = await collect(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' })))
  t.is(r.text, 'Hello world')
  t.is(r.finishReason, 'length')
  t.deepEqual(r.usage, { completionTokens: 2, estimated: true })
})

test('reasoning_content (servers with a reasoning parser) is merged back as <think>…</think>', async (t) => {
  const p = await peer((res) => {
    sse(res)
    res.end(
      chunk({ reasoning_content: '\nLet me compute. ' }) +
        chunk({ reasoning_content: '6 × 7 = 42.\n' }) +
        chunk({ content: '\n\n<answer>42</answer>' }, 'stop') +
        'data: [DONE]\n\n',
    )
  })
  t.teardown(p.close)
  const r = await collect(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' })))
  t.is(r.text, '<think>\nLet me compute. 6 × 7 = 42.\n</think>\n\n<answer>42</answer>')
  const raw = await collect(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm', mergeReasoning: false })))
  t.is(raw.text, '\n\n<answer>42</answer>')
})

test('a server that ignores stream:true and answers JSON is still understood', async (t) => {
  const p = await peer((res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ choices: [{ message: { role: 'assistant', content: 'forty-two' }, finish_reason: 'stop' }], usage: { prompt_tokens: 5, completion_tokens: 3 } }))
  })
  t.teardown(p.close)
  const r = await collect(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' })))
  t.is(r.text, 'forty-two')
  t.deepEqual(r.usage, { completionTokens: 3, promptTokens: 5 })
})

test('HTTP errors: the status and the server message, as a GenerationError', async (t) => {
  const p = await peer((res, body) => {
    if (body.model === 'fastapi') {
      res.writeHead(422, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ detail: [{ loc: ['body', 'messages'], msg: 'field required' }] }))
    }
    if (body.model === 'text') {
      res.writeHead(502)
      return void res.end('Bad Gateway from the proxy')
    }
    res.writeHead(400, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ error: { message: "This model's maximum context length is 32768 tokens", type: 'BadRequestError', code: 400 } }))
  })
  t.teardown(p.close)
  const a = await failure(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' })))
  t.true(a.err instanceof GenerationError)
  t.is(a.err.code, 'ERR_VTC_BACKEND_HTTP')
  t.is(a.err.status, 400)
  t.regex(a.err.message, /HTTP 400: This model's maximum context length is 32768 tokens$/)
  const b = await failure(ask(new OpenAIBackend({ baseUrl: p.url, model: 'fastapi' })))
  t.regex(b.err.message, /HTTP 422: .*field required/)
  const c = await failure(ask(new OpenAIBackend({ baseUrl: p.url, model: 'text' })))
  t.regex(c.err.message, /HTTP 502: Bad Gateway from the proxy/)
})

test('network errors: an unreachable server is ERR_VTC_BACKEND_UNREACHABLE naming the URL', async (t) => {
  const p = await peer((res) => res.end())
  const url = p.url
  await p.close()
  const { err } = await failure(ask(new OpenAIBackend({ baseUrl: url, model: 'm' })))
  t.is(err.code, 'ERR_VTC_BACKEND_UNREACHABLE')
  t.regex(err.message, new RegExp(`cannot reach ${url}/v1/chat/completions: ECONNREFUSED`))
})

test('failures mid-stream keep the partial text: malformed chunk, error event, cut connection, missing end', async (t) => {
  const p = await peer((res, body, req) => {
    sse(res)
    res.write(chunk({ content: 'partial ' }) + chunk({ content: 'text' }))
    switch (body.model) {
      case 'malformed':
        return void res.end('data: {"choices": [\n\n')
      case 'error':
        return void res.end(`data: ${JSON.stringify({ error: { message: 'CUDA out of memory', type: 'InternalServerError', code: 500 } })}\n\ndata: [DONE]\n\n`)
      case 'cut':
        return void setTimeout(() => req.socket.destroy(), 20)
      case 'truncated':
        return void res.end()
    }
  })
  t.teardown(p.close)
  const run = (model: string) => failure(ask(new OpenAIBackend({ baseUrl: p.url, model })))

  const malformed = await run('malformed')
  t.is(malformed.err.code, 'ERR_VTC_BACKEND_PROTOCOL')
  t.regex(malformed.err.message, /malformed stream chunk \(not JSON\): \{"choices": \[/)
  t.is(malformed.err.partialText, 'partial text')
  t.is(malformed.seen, 'partial text')

  const error = await run('error')
  t.is(error.err.code, 'ERR_VTC_BACKEND_ERROR')
  t.regex(error.err.message, /CUDA out of memory/)
  t.is(error.err.status, 500)
  t.is(error.err.partialText, 'partial text')

  const cut = await run('cut')
  t.is(cut.err.code, 'ERR_VTC_BACKEND_STREAM')
  t.is(cut.err.partialText, 'partial text')

  const truncated = await run('truncated')
  t.is(truncated.err.code, 'ERR_VTC_BACKEND_STREAM')
  t.regex(truncated.err.message, /ended before the completion did/)
  t.is(truncated.err.partialText, 'partial text')
})

test('AbortSignal cancels the request mid-stream: ABORT_ERR with the partial text, the connection is closed', async (t) => {
  const p = await peer(async (res) => {
    sse(res)
    for (let i = 0; i < 500 && !res.destroyed; i++) {
      res.write(chunk({ content: `${i} ` }))
      await sleep(5)
    }
    res.end('data: [DONE]\n\n')
  })
  t.teardown(p.close)
  const controller = new AbortController()
  let seen = ''
  const err = await t.throwsAsync(async () => {
    for await (const ev of ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' }), { signal: controller.signal })) {
      if (ev.type === 'text') seen += ev.text
      if (seen.length > 10) controller.abort()
    }
  })
  t.is((err as GenerationError).code, 'ABORT_ERR')
  t.is((err as GenerationError).partialText, seen)
  for (let i = 0; i < 100 && !p.closed[0]; i++) await sleep(5)
  t.true(p.closed[0], 'the peer saw the client go away')

  // aborted before the start: nothing is sent
  const before = new AbortController()
  before.abort()
  const e2 = await failure(ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' }), { signal: before.signal }))
  t.is(e2.err.code, 'ABORT_ERR')
  t.is(p.received.length, 1)
})

test('breaking out of the loop closes the connection', async (t) => {
  const p = await peer(async (res) => {
    sse(res)
    for (let i = 0; i < 500 && !res.destroyed; i++) {
      res.write(chunk({ content: `${i} ` }))
      await sleep(5)
    }
    res.end('data: [DONE]\n\n')
  })
  t.teardown(p.close)
  for await (const ev of ask(new OpenAIBackend({ baseUrl: p.url, model: 'm' }))) if (ev.type === 'text') break
  for (let i = 0; i < 100 && !p.closed[0]; i++) await sleep(5)
  t.true(p.closed[0])
})

test('listModels reads GET /v1/models', async (t) => {
  const p = await peer((res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ object: 'list', data: [{ id: 'VTC-R1-Glyph' }, { id: 'other' }] }))
  })
  t.teardown(p.close)
  t.deepEqual(await OpenAIBackend.listModels(p.url), ['VTC-R1-Glyph', 'other'])
  t.is(p.received[0].url, '/v1/models')
})

/** A scripted model (test peer) behind our server. */
class EchoModel implements ChatModel {
  readonly name = 'echo'
  readonly requests: GenerateRequest[] = []
  async *generate(req: GenerateRequest): AsyncGenerator<GenerationEvent> {
    this.requests.push(req)
    for (const piece of ['<think>\nsix sevens', ' are 42\n</think>\n\n', '<answer>42</answer>']) {
      yield { type: 'text', text: piece, tokens: 1, ...(req.logprobs ? { logprobs: [{ token: piece, bytes: [...Buffer.from(piece)], logprob: -1, topLogprobs: [] }] } : {}) }
    }
    yield { type: 'done', finishReason: 'stop', usage: { promptTokens: 123, completionTokens: 3 }, timings: {} }
  }
}

test('end to end: our server streams, our backend parses it (text, images, usage, logprobs)', async (t) => {
  const model = new EchoModel()
  const server = createServer(model)
  const { url } = await server.listen()
  t.teardown(() => server.close())
  const backend = new OpenAIBackend({ baseUrl: url, model: 'echo' })
  const { pages } = await renderText('Round one, rendered.')
  const events: GenerationEvent[] = []
  for await (const ev of backend.generate({
    messages: [{ role: 'user', content: [{ type: 'text', text: 'Q' }, { type: 'image', image: pages[0] }] }],
    maxTokens: 77,
    temperature: 0.6,
    logprobs: true,
    topLogprobs: 2,
  })) {
    events.push(ev)
  }
  const text = events.flatMap((e) => (e.type === 'text' ? [e.text] : [])).join('')
  t.is(text, '<think>\nsix sevens are 42\n</think>\n\n<answer>42</answer>')
  t.like(events.at(-1), { type: 'done', finishReason: 'stop', usage: { promptTokens: 123, completionTokens: 3 } })
  t.like(events[0], { type: 'text', tokens: 1, logprobs: [{ token: '<think>\nsix sevens', bytes: [...Buffer.from('<think>\nsix sevens')], logprob: -1, topLogprobs: [] }] })
  const got = model.requests[0]
  t.like(got, { maxTokens: 77, temperature: 0.6, logprobs: true, topLogprobs: 2 })
  const image = (got.messages[0].content as any[])[1].image as Buffer
  t.true(image.equals(await pages[0].png()))

  const bad = await failure(new OpenAIBackend({ baseUrl: url, model: 'nope' }).generate({ messages: [{ role: 'user', content: 'x' }], maxTokens: 1 }))
  t.is(bad.err.status, 404)
  t.regex(bad.err.message, /model "nope" does not exist/)
})

test('proxy: our server in front of a remote backend passes its client errors through, the rest as 502', async (t) => {
  const p = await peer((res, body) => {
    if (body.max_tokens > 1000) {
      res.writeHead(400, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ error: { message: 'max_tokens is too large: 5000 > 4096 - 20' } }))
    }
    if (body.temperature === 0) {
      res.writeHead(500)
      return void res.end('upstream exploded')
    }
    sse(res)
    res.end(chunk({ content: 'pong' }, 'stop') + 'data: [DONE]\n\n')
  })
  t.teardown(p.close)
  const server = createServer(new OpenAIBackend({ baseUrl: p.url, model: 'remote' }))
  const { url } = await server.listen()
  t.teardown(() => server.close())
  const post = (body: Record<string, unknown>) =>
    fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'ping' }], ...body }),
    })
  const ok = await post({ max_tokens: 10 })
  t.is(((await ok.json()) as any).choices[0].message.content, 'pong')
  const tooLong = await post({ max_tokens: 5000 })
  t.is(tooLong.status, 400)
  t.regex(((await tooLong.json()) as any).error.message, /max_tokens is too large/)
  const broken = await post({ max_tokens: 10, temperature: 0 })
  t.is(broken.status, 502)
  t.regex(((await broken.json()) as any).error.message, /HTTP 500: upstream exploded/)
})

test("without a model id, the backend takes the server's only model (vtc-r1 serve's <name>:vtc aside)", async (t) => {
  const model = new EchoModel()
  const server = createServer(model)
  const { url } = await server.listen()
  t.teardown(() => server.close())
  const backend = new OpenAIBackend({ baseUrl: url })
  t.is(backend.model, undefined)
  const { text } = await collect(backend.generate({ messages: [{ role: 'user', content: 'Q' }], maxTokens: 5 }))
  t.is(text, '<think>\nsix sevens are 42\n</think>\n\n<answer>42</answer>')
  t.is(backend.model, 'echo')
  t.is(backend.name, 'echo')

  // vLLM: one model, with its context length
  const one = await peer((res, _body, req) => {
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ data: [{ id: 'VTC-R1-Glyph', max_model_len: 65536 }] }))
    }
    sse(res)
    res.end(chunk({ content: 'ok' }, 'stop') + 'data: [DONE]\n\n')
  })
  t.teardown(one.close)
  const vllm = new OpenAIBackend({ baseUrl: one.url })
  t.is(await vllm.resolveModel(), 'VTC-R1-Glyph')
  t.is(vllm.contextLength, 65536)
  await collect(ask(vllm))
  t.is(one.received.at(-1)!.body.model, 'VTC-R1-Glyph')
  t.is(one.received.filter((r) => r.url === '/v1/models').length, 1, 'listed once')
})

test('without a model id, a server listing no model or several is a clear error', async (t) => {
  let data: { id: string }[] = []
  const p = await peer((res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ data }))
  })
  t.teardown(p.close)
  const backend = new OpenAIBackend({ baseUrl: p.url })
  await t.throwsAsync(collect(ask(backend)), { code: 'ERR_VTC_BACKEND_PROTOCOL', message: /\/v1\/models lists no models; give OpenAIBackend the `model` to use/ })
  data = [{ id: 'base' }, { id: 'lora-1' }]
  await t.throwsAsync(backend.resolveModel(), { message: /lists several models \(base, lora-1\); give OpenAIBackend the `model` to use/ })
  t.throws(() => new OpenAIBackend({ baseUrl: p.url, model: '' }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /`model` must be a non-empty string/ })
})

test.serial('OPENAI_BASE_URL and OPENAI_API_KEY stand in for absent options', async (t) => {
  const p = await peer((res) => {
    sse(res)
    res.end(chunk({ content: 'ok' }, 'stop') + 'data: [DONE]\n\n')
  })
  t.teardown(p.close)
  const saved = { url: process.env.OPENAI_BASE_URL, key: process.env.OPENAI_API_KEY }
  try {
    delete process.env.OPENAI_BASE_URL
    t.throws(() => new OpenAIBackend({ model: 'm' }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /give `baseUrl` \(or set OPENAI_BASE_URL\)/ })
    process.env.OPENAI_BASE_URL = `${p.url}/v1`
    process.env.OPENAI_API_KEY = 'sk-env'
    await collect(ask(new OpenAIBackend({ model: 'm' })))
    t.is(p.received[0].url, '/v1/chat/completions')
    t.is(p.received[0].headers.authorization, 'Bearer sk-env')
    await collect(ask(new OpenAIBackend({ model: 'm', apiKey: 'sk-given' })))
    t.is(p.received[1].headers.authorization, 'Bearer sk-given', 'an option wins over the environment')
  } finally {
    for (const [name, v] of [['OPENAI_BASE_URL', saved.url], ['OPENAI_API_KEY', saved.key]] as const) {
      if (v === undefined) delete process.env[name]
      else process.env[name] = v
    }
  }
})

test('models() reads the context length a server lists (vLLM max_model_len)', async (t) => {
  const p = await peer((res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ object: 'list', data: [{ id: 'VTC-R1-Glyph', max_model_len: 65536 }, { id: 'plain' }] }))
  })
  t.teardown(p.close)
  t.deepEqual(await OpenAIBackend.models(p.url), [{ id: 'VTC-R1-Glyph', contextLength: 65536 }, { id: 'plain' }])
})
