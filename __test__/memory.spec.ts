/**
 * The optical-memory loop, end to end over HTTP: OpticalMemory → OpenAIBackend → our server → a scripted
 * model. The scripted model is a test peer replaying a fixed token schedule (like a recorded model) and records
 * what reached it; the loop, the real renderer, the backend and the server are the product code.
 */
import { setTimeout as sleep } from 'node:timers/promises'

import test from 'ava'

import { EmbeddedBackend, type NativeEngine, type NativeGenerateRequest, type NativeGenerationEvent } from '../src/backends/embedded.js'
import { OpenAIBackend } from '../src/backends/openai.js'
import { memoryReportHtml, summaryText } from '../src/cli/reason.js'
import { abortError, GenerationError, type ChatModel, type GenerateRequest, type GenerationEvent } from '../src/backends/types.js'
import { isComplete, MemoryError, OpticalMemory, SYSTEM_PROMPT, type MemoryEvent, type OpticalMemoryOptions } from '../src/memory.js'
import { Renderer } from '../src/render.js'
import { createServer } from '../src/server/index.js'
import { pngHeader } from './helpers.js'

interface Turn {
  pieces: string[]
  finish?: string
  delayMs?: number
  failAfter?: number
}

/** Test peer: one scripted turn per call; records requests and aborts. */
class ScriptedModel implements ChatModel {
  readonly name = 'scripted'
  readonly requests: GenerateRequest[] = []
  readonly aborted: boolean[] = []
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
      if (turn.failAfter === i) throw new GenerationError('ERR_TEST_MODEL', 'the scripted model ran out of memory', { partialText: text })
      if (turn.delayMs) await sleep(turn.delayMs)
      if (req.signal?.aborted) throw abortError(text)
      text += piece
      yield { type: 'text', text: piece, tokens: 1 }
    }
    yield {
      type: 'done',
      finishReason: turn.finish ?? 'stop',
      usage: { promptTokens: 100 + call, completionTokens: turn.pieces.length * 10 },
      timings: { prefillMs: 1, decodeMs: 1 },
    }
  }
}

/** The loop over HTTP to `model`, with our server in between. */
async function loop(t: { teardown: (f: () => Promise<void>) => void }, model: ScriptedModel, options: OpticalMemoryOptions = {}, contextLength?: number) {
  const server = createServer(model)
  const { url } = await server.listen()
  t.teardown(() => server.close())
  const backend = new OpenAIBackend({ baseUrl: url, model: 'scripted', contextLength })
  return { memory: new OpticalMemory(backend, options), backend }
}

const paragraph = (k: number) =>
  `Step ${k}: we substitute x = ${k} into the polynomial, expand every product term by term, and collect the ` +
  `powers of x; the constant terms cancel and the linear coefficient is ${k * 7}. Checking the boundary case again.`
/** A round of reasoning long enough for pages (several paragraphs). */
const reasoning = (from: number, n: number) => Array.from({ length: n }, (_, i) => paragraph(from + i)).join('\n\n')

const round1 = `<think>\n${reasoning(1, 40)}`
const round2 = `\n${reasoning(41, 6)}`
const final = ['So the answer is 42.\n</think>\n\n', '<answer>', '42', '</answer>']
const question = 'Find the linear coefficient of the polynomial.'

function imageParts(req: GenerateRequest): Buffer[] {
  const user = req.messages.find((m) => m.role === 'user')!
  return typeof user.content === 'string' ? [] : user.content.flatMap((p) => (p.type === 'image' ? [p.image as Buffer] : []))
}

test('isComplete: </think> followed by a non-empty <answer>', (t) => {
  t.true(isComplete('<think>\nwork\n</think>\n\n<answer>42</answer>'))
  t.true(isComplete('work</think><answer>\\boxed{x+1}</answer>'))
  t.false(isComplete('<think>\nwork, still going'))
  t.false(isComplete('<answer>42</answer> then </think>'))
  t.false(isComplete('work</think>\n\n<answer>  </answer>'))
  t.false(isComplete('work</think>\n\n<answer>42'))
  t.false(isComplete('work</think> the answer is 42'))
})

test('the loop renders each unfinished round into real pages and sends them, question first, to the next round', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1], finish: 'length' }, { pieces: [round2], finish: 'length' }, { pieces: final }])
  const { memory } = await loop(t, model)
  const events: MemoryEvent[] = []
  const result = await memory.solve(question, { onEvent: (e) => events.push(e) })

  t.is(result.finishReason, 'complete')
  t.is(result.answer, '42')
  t.is(result.answerSource, 'answer-tag')
  t.is(result.mode, 'vtc')
  t.is(result.text, final.join(''))
  t.is(result.rounds.length, 3)
  t.is(model.requests.length, 3)

  // what the model received, round by round
  const [r1, r2, r3] = result.rounds
  t.true(r1.pages.length >= 2, `round 1 rendered to several pages (${r1.pages.length})`)
  t.true(r2.pages.length >= 1, 'round 2 rendered to pages')
  t.deepEqual(r3.pages, [], 'the final round is not rendered')
  for (const [i, req] of model.requests.entries()) {
    t.deepEqual(req.messages[0], { role: 'system', content: SYSTEM_PROMPT }, `round ${i + 1}: system prompt verbatim`)
    t.is(req.messages.length, 2)
    t.like(req, { maxTokens: 8192, temperature: 0.6, topP: 0.95 })
  }
  t.is(model.requests[0].messages[1].content, question, 'round 1: the bare question, no images')
  const expected = [[], r1.pages, [...r1.pages, ...r2.pages]]
  for (const [i, req] of model.requests.entries()) {
    const images = imageParts(req)
    t.is(images.length, expected[i].length, `round ${i + 1}: one image part per page rendered so far`)
    for (const [j, png] of images.entries()) {
      const page = expected[i][j]
      t.like(pngHeader(png), { width: page.width, height: page.height })
      t.true(png.equals(await page.png()), `round ${i + 1} image ${j + 1} is that page`)
    }
    if (i > 0) {
      const content = req.messages[1].content as { type: string; text?: string }[]
      t.deepEqual(content[0], { type: 'text', text: question }, 'question first')
      t.true(content.slice(1).every((p) => p.type === 'image'))
    }
  }
  // the pages are the round's text rendered with the training config
  const again = await (await Renderer.create({ preset: 'vtc-r1' })).render(round1)
  t.is(again.pages.length, r1.pages.length)
  t.true(again.pages[0].data.equals(r1.pages[0].data))

  // rounds and totals
  t.deepEqual(
    result.rounds.map((r) => [r.index, r.tokens, r.images, r.complete]),
    [
      [1, 10, 0, false],
      [2, 10, r1.pages.length, false],
      [3, 40, r1.pages.length + r2.pages.length, true],
    ],
  )
  t.is(r1.visionTokens, 0)
  t.true(r2.visionTokens > 0)
  t.is(r3.promptTokens, 102)
  t.is(result.totals.outputTokens, 60)
  t.is(result.totals.visionTokens, r2.visionTokens + r3.visionTokens)
  t.is(result.totals.pages, r1.pages.length + r2.pages.length)
  t.true(result.totals.latencyMs >= result.totals.renderMs + 0 && result.totals.renderMs > 0)

  // events, in order
  const kinds = events.map((e) => (e.type === 'text' ? 'text' : `${e.type}${'round' in e ? ` ${typeof e.round === 'number' ? e.round : e.round.index}` : ''}`))
  t.deepEqual(kinds, [
    'round-start 1',
    'text',
    'pages 1',
    'round-end 1',
    'round-start 2',
    'text',
    'pages 2',
    'round-end 2',
    'round-start 3',
    'text',
    'text',
    'text',
    'text',
    'round-end 3',
    'done',
  ])
  t.like(events[4], { type: 'round-start', round: 2, images: r1.pages.length, maxTokens: 8192 })
  t.is(
    events
      .filter((e) => e.type === 'text' && e.round === 1)
      .map((e) => (e as { text: string }).text)
      .join(''),
    round1,
  )
})

test('imageOrder images-first puts the pages before the question', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1] }, { pieces: final }])
  const { memory } = await loop(t, model, { imageOrder: 'images-first' })
  const result = await memory.solve(question)
  const content = model.requests[1].messages[1].content as { type: string; text?: string }[]
  t.is(content.length, result.rounds[0].pages.length + 1)
  t.true(content.slice(0, -1).every((p) => p.type === 'image'))
  t.deepEqual(content.at(-1), { type: 'text', text: question })
})

test('rounds exhausted: the last output is the result, the answer extracted by the protocol fallbacks', async (t) => {
  const model = new ScriptedModel([
    { pieces: [round1], finish: 'length' },
    { pieces: ['\nStill checking; so far the coefficient looks like 41 or 42, and the answer is 42. Let me verify'], finish: 'length' },
  ])
  const { memory } = await loop(t, model, { maxRounds: 2, roundTokens: 300 })
  const result = await memory.solve(question)
  t.is(result.finishReason, 'rounds-exhausted')
  t.is(model.requests.length, 2)
  t.is(result.rounds.length, 2)
  t.is(result.text, result.rounds[1].text)
  t.is(result.answer, '42')
  t.is(result.answerSource, 'answer-is')
  t.deepEqual(result.rounds[1].pages, [])
  t.deepEqual(
    model.requests.map((r) => r.maxTokens),
    [300, 300],
  )
})

test('an answer without </think>, or an empty answer, does not end the loop', async (t) => {
  const model = new ScriptedModel([
    { pieces: ['<think>\nI guess <answer>41</answer> but let me check the expansion again.'] },
    { pieces: ['\nRechecked.\n</think>\n\n<answer> </answer>'] },
    { pieces: final },
  ])
  const { memory } = await loop(t, model)
  const result = await memory.solve(question)
  t.is(result.rounds.length, 3)
  t.deepEqual(
    result.rounds.map((r) => r.complete),
    [false, false, true],
  )
  t.is(result.answer, '42')
})

test('a round that renders to no page ends the run (no-pages)', async (t) => {
  const model = new ScriptedModel([{ pieces: [''] }, { pieces: final }])
  const { memory } = await loop(t, model)
  const result = await memory.solve(question)
  t.is(result.finishReason, 'no-pages')
  t.is(model.requests.length, 1)
  t.is(result.answer, '')
})

test('baseline: one round on the same backend, no images, maxRounds × roundTokens tokens', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1, round2, ...final] }])
  const { memory } = await loop(t, model, { maxRounds: 4, roundTokens: 1000 })
  const result = await memory.baseline(question)
  t.is(result.mode, 'baseline')
  t.is(result.finishReason, 'complete')
  t.is(result.answer, '42')
  t.is(model.requests.length, 1)
  t.is(model.requests[0].maxTokens, 4000)
  t.deepEqual(model.requests[0].messages, [
    { role: 'system', content: SYSTEM_PROMPT },
    { role: 'user', content: question },
  ])
  t.is(result.totals.pages, 0)
  t.is(result.totals.visionTokens, 0)
  t.is(result.totals.renderMs, 0)

  const cut = new ScriptedModel([{ pieces: [round1], finish: 'length' }])
  const truncated = await (await loop(t, cut)).memory.solve(question, { mode: 'baseline' })
  t.is(truncated.finishReason, 'length')
  t.is(cut.requests[0].maxTokens, 8 * 8192)
})

test('abort mid-stream: ABORT_ERR with the partial result, the generation is cancelled at the model', async (t) => {
  const slow = Array.from({ length: 400 }, (_, i) => `word${i} `)
  const model = new ScriptedModel([{ pieces: [round1] }, { pieces: slow, delayMs: 5 }])
  const { memory } = await loop(t, model)
  const controller = new AbortController()
  let seen = 0
  const err = await t.throwsAsync(
    memory.solve(question, {
      signal: controller.signal,
      onEvent: (e) => {
        if (e.type === 'text' && e.round === 2 && ++seen === 5) controller.abort()
      },
    }),
  )
  t.true(err instanceof MemoryError)
  const e = err as MemoryError
  t.is(e.code, 'ABORT_ERR')
  t.is(e.partial.finishReason, 'aborted')
  t.is(e.partial.rounds.length, 2)
  t.is(e.partial.rounds[0].text, round1)
  t.true(e.partial.rounds[0].pages.length >= 1)
  const partial = e.partial.rounds[1]
  t.is(partial.finishReason, 'aborted')
  t.true(partial.text.startsWith('word0 word1 word2 word3 word4 '))
  t.true(partial.tokens > 0 && partial.tokensEstimated === true)
  t.is(e.partial.text, partial.text)
  for (let i = 0; i < 100 && !model.aborted[1]; i++) await sleep(5)
  t.true(model.aborted[1], 'the server aborted the model when the backend disconnected')

  // aborted before the start
  const before = new AbortController()
  before.abort()
  const e2 = await t.throwsAsync(memory.solve(question, { signal: before.signal }))
  t.is((e2 as MemoryError).code, 'ABORT_ERR')
  t.is(model.requests.length, 2)
})

test('a backend failure mid-run: the error carries the partial result, nothing lost', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1] }, { pieces: ['\nIn round two ', 'we got this far', ' and then'], failAfter: 2 }])
  const { memory } = await loop(t, model)
  const err = (await t.throwsAsync(memory.solve(question))) as MemoryError
  t.true(err instanceof MemoryError)
  t.is(err.code, 'ERR_VTC_BACKEND_ERROR')
  t.regex(err.message, /^round 2: .*the scripted model ran out of memory/)
  t.is(err.partial.finishReason, 'error')
  t.is(err.partial.rounds.length, 2)
  t.is(err.partial.rounds[0].text, round1)
  t.is(err.partial.rounds[1].text, '\nIn round two we got this far')
  t.is(err.partial.rounds[1].finishReason, 'error')
  t.true(err.cause instanceof GenerationError)
})

test('bad input: empty question, bad options, budgets over the context length fail before any request', async (t) => {
  const model = new ScriptedModel([{ pieces: final }])
  const { memory } = await loop(t, model, {}, 4096)
  await t.throwsAsync(memory.solve('   '), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /question must be a non-empty string/ })
  await t.throwsAsync(memory.solve(question), {
    code: 'ERR_VTC_CONTEXT_LENGTH',
    message: /round budget of 8192 tokens .* exceeds scripted's context length of 4096 tokens; lower roundTokens/,
  })
  const { memory: small } = await loop(t, model, { roundTokens: 2048 }, 4096)
  await t.throwsAsync(small.baseline(question), {
    code: 'ERR_VTC_CONTEXT_LENGTH',
    message: /baseline budget of 16384 tokens \(maxRounds 8 × roundTokens 2048\)/,
  })
  t.is(model.requests.length, 0)
  t.throws(() => new OpticalMemory(small.backend, { maxRounds: 0 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /maxRounds/ })
  t.throws(() => new OpticalMemory(small.backend, { topP: 1.5 }), { code: 'ERR_VTC_INVALID_ARGUMENT' })
  t.throws(() => new OpticalMemory(small.backend, { imageOrder: 'sideways' as never }), { code: 'ERR_VTC_INVALID_ARGUMENT' })
  // fits: runs
  const ok = await small.solve(question)
  t.is(ok.answer, '42')
  t.true(model.requests[0].maxTokens <= 2048)
})

test('stream(): events as an async iterator; breaking out cancels the generation', async (t) => {
  const model = new ScriptedModel([{ pieces: Array.from({ length: 400 }, (_, i) => `w${i} `), delayMs: 5 }])
  const { memory } = await loop(t, model)
  let texts = 0
  for await (const ev of memory.stream(question)) {
    if (ev.type === 'text' && ++texts === 3) break
  }
  for (let i = 0; i < 100 && !model.aborted[0]; i++) await sleep(5)
  t.true(model.aborted[0])
})

test('the HTML report shows each round beside its pages, as PNG data URLs, self-contained', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1 + '\n<script>alert(1)</script> & x < y'] }, { pieces: final }])
  const { memory } = await loop(t, model)
  const result = await memory.solve('Is 2 < 3 & "true"?')
  const html = await memoryReportHtml(result, { model: 'scripted' })
  const imgs = [...html.matchAll(/<img [^>]*src="data:image\/png;base64,([A-Za-z0-9+/=]+)"/g)]
  t.is(imgs.length, result.totals.pages)
  t.like(pngHeader(Buffer.from(imgs[0][1], 'base64')), { width: result.rounds[0].pages[0].width })
  t.false(html.includes('<script>'))
  t.true(html.includes('&#60;script&#62;alert(1)&#60;/script&#62; &#38; x &#60; y'))
  t.true(html.includes('Is 2 &#60; 3 &#38; &#34;true&#34;?'))
  t.false(/(src|href)="https?:/.test(html), 'no external assets')
  t.is((html.match(/<section class="round">/g) ?? []).length, 2)
})

/**
 * A scripted native engine (test peer for the binding the embedded backend adapts): pushes events through the
 * callback as the napi threadsafe function will, and resolves with the result.
 */
class ScriptedEngine implements NativeEngine {
  readonly name = 'engine'
  readonly modelType = 'qwen3_vl'
  readonly contextLength = 65536
  readonly requests: NativeGenerateRequest[] = []
  stoppedEarly = false
  constructor(private readonly turns: string[][]) {}
  async generate(request: NativeGenerateRequest, onEvent: (e: NativeGenerationEvent) => void, signal?: AbortSignal | null) {
    const call = this.requests.push(request) - 1
    const pieces = this.turns[Math.min(call, this.turns.length - 1)]
    for (const text of pieces) {
      await sleep(1)
      if (signal?.aborted) {
        this.stoppedEarly = true
        throw Object.assign(new Error('the operation was aborted'), { name: 'AbortError' })
      }
      if (text === 'FAIL') throw new Error('[ERR_VTC_ENGINE_OOM] out of memory allocating the KV cache')
      onEvent({ text, tokens: 2 })
    }
    return { finishReason: 'stop', promptTokens: 300, visionTokens: 200 * call, completionTokens: pieces.length * 2, visionMs: 5, prefillMs: 7, decodeMs: 11 }
  }
  dispose() {}
}

test('embedded backend adapter: the loop hands the engine raw page pixels; usage and timings come back', async (t) => {
  const engine = new ScriptedEngine([[round1.slice(0, 2000), round1.slice(2000)], final])
  const memory = new OpticalMemory(new EmbeddedBackend(engine))
  const result = await memory.solve(question)
  t.is(result.answer, '42')
  t.is(engine.requests.length, 2)
  const [first, second] = engine.requests
  t.deepEqual(first.messages[0], { role: 'system', content: [{ type: 'text', text: SYSTEM_PROMPT }] })
  t.deepEqual(first.messages[1].content, [{ type: 'text', text: question }])
  const images = second.messages[1].content.filter((p) => p.type === 'image')
  const pages = result.rounds[0].pages
  t.is(images.length, pages.length)
  images.forEach((p, i) => {
    t.is(p.image!.pixels, pages[i].data, 'the page buffer itself, no PNG round trip')
    t.like(p.image, { width: pages[i].width, height: pages[i].height, channels: 3 })
  })
  t.like(second, { maxTokens: 8192, temperature: 0.6, topP: 0.95 })
  t.is(result.rounds[0].tokens, 4)
  t.is(result.rounds[1].visionTokens, 200, 'the engine-reported vision tokens win over the estimate')
  t.like(result.totals, { visionMs: 10, prefillMs: 14, decodeMs: 22 })
})

test('the report states the text tokens the pages replaced against the vision tokens they cost, and every phase of the latency', async (t) => {
  const engine = new ScriptedEngine([[round1.slice(0, 2000), round1.slice(2000)], final])
  const result = await new OpticalMemory(new EmbeddedBackend(engine)).solve(question)
  const [r1, r2] = result.rounds
  t.is(r1.pageTokens, 200, "the engine's count of the pages round 2 read wins over the estimate")
  t.is(r2.pageTokens, 0)
  t.like(result.totals, { renderedTokens: 4, pageTokens: 200 })
  const replaced = `4 text tokens of 1 round with ${r1.pages.length} page${r1.pages.length === 1 ? '' : 's'} of 200 vision tokens (0.02× fewer)`
  t.regex(summaryText(result), new RegExp(`^pages replaced ${replaced.replace(/[()]/g, '\\$&')}$`, 'm'))
  const html = await memoryReportHtml(result)
  t.true(html.includes(`<tr><th>pages replaced</th><td>${replaced}</td></tr>`))
  t.regex(html, /<tr><th>latency<\/th><td>\d+ ms \(render \d+ ms, vision 10 ms, prefill 14 ms, decode 22 ms\)<\/td><\/tr>/)
  t.true(html.includes(`rendered to ${r1.pages.length} page`))
})

test('maxTokens bounds the whole run: each round gets what is left, a spent budget ends it as length', async (t) => {
  const model = new ScriptedModel([{ pieces: [round1], finish: 'length' }, { pieces: [round2], finish: 'length' }, { pieces: final }])
  const { memory } = await loop(t, model, { maxTokens: 20, roundTokens: 15 })
  const result = await memory.solve(question)
  t.deepEqual(
    model.requests.map((r) => r.maxTokens),
    [15, 10],
    'the scripted rounds report 10 tokens each',
  )
  t.is(result.finishReason, 'length')
  t.is(result.totals.outputTokens, 20)
  t.deepEqual(result.rounds[1].pages, [], 'the last round is not rendered')
  t.throws(() => new OpticalMemory(memory.backend, { maxTokens: 0 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /maxTokens/ })
})

test('embedded backend adapter: engine errors keep the partial text and their code; abort stops the engine', async (t) => {
  const failing = new OpticalMemory(new EmbeddedBackend(new ScriptedEngine([['<think>\npartial ', 'work', 'FAIL']])))
  const err = (await t.throwsAsync(failing.solve(question))) as MemoryError
  t.is(err.code, 'ERR_VTC_ENGINE_OOM')
  t.is(err.partial.rounds[0].text, '<think>\npartial work')

  const engine = new ScriptedEngine([Array.from({ length: 300 }, (_, i) => `w${i} `)])
  const backend = new EmbeddedBackend(engine)
  const controller = new AbortController()
  const aborted = (await t.throwsAsync(
    new OpticalMemory(backend).solve(question, {
      signal: controller.signal,
      onEvent: (e) => e.type === 'text' && e.text === 'w3 ' && controller.abort(),
    }),
  )) as MemoryError
  t.is(aborted.code, 'ABORT_ERR')
  t.true(aborted.partial.rounds[0].text.startsWith('w0 w1 w2 w3 '))
  for (let i = 0; i < 100 && !engine.stoppedEarly; i++) await sleep(2)
  t.true(engine.stoppedEarly)

  // a consumer that stops reading stops the engine too
  const engine2 = new ScriptedEngine([Array.from({ length: 300 }, (_, i) => `w${i} `)])
  for await (const ev of new EmbeddedBackend(engine2).generate({ messages: [{ role: 'user', content: 'q' }], maxTokens: 10 })) {
    if (ev.type === 'text') break
  }
  for (let i = 0; i < 100 && !engine2.stoppedEarly; i++) await sleep(2)
  t.true(engine2.stoppedEarly)
})

test('embedded backend adapter: pieces still in flight when the engine settles come from the result text', async (t) => {
  // the napi promise can overtake the threadsafe-function events: the last piece never reaches onEvent in time
  const engine: NativeEngine = {
    name: 'engine',
    modelType: 'qwen3_vl',
    contextLength: 1000,
    async generate(_request, onEvent) {
      onEvent({ text: 'Hello', tokens: 1 })
      return { finishReason: 'length', text: 'Hello, world', promptTokens: 3, visionTokens: 0, completionTokens: 3, visionMs: 0, prefillMs: 1, decodeMs: 1 }
    },
    dispose() {},
  }
  let text = ''
  for await (const ev of new EmbeddedBackend(engine).generate({ messages: [{ role: 'user', content: 'q' }], maxTokens: 3 })) {
    if (ev.type === 'text') text += ev.text
  }
  t.is(text, 'Hello, world')
})
