import { readFileSync } from 'node:fs'

import test from 'ava'

import type { TokenLogprob } from '../src/backends/types.js'
import { loadModel, OpticalMemory, SYSTEM_PROMPT, VtcError } from '../src/index.js'
import { createServer } from '../src/server/index.js'
import { SHARED } from './helpers.js'

const E2E = `${SHARED}golden/qwen3vl/e2e/`
const golden = JSON.parse(readFileSync(`${E2E}golden.json`, 'utf8')) as {
  cases: Record<string, { greedy_text: string; pages: string[]; n_prompt_tokens: number }>
}

/** Shape of a tensor in a safetensors file, from its JSON header. */
function tensorShape(path: string, name: string): number[] {
  const buf = readFileSync(path)
  const len = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, { shape: number[] }>
  return header[name].shape
}

const QUESTION = 'Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$'

test('the embedded engine reproduces the reference greedy continuation of the e2e fixture', async (t) => {
  const model = await loadModel(E2E)
  try {
    const n = tensorShape(`${E2E}golden.safetensors`, 'text.greedy_tokens').at(-1)!
    let text = ''
    let done: { usage: { promptTokens?: number; completionTokens: number } } | undefined
    for await (const ev of model.chat(
      [
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: [{ type: 'text', text: QUESTION }] },
      ],
      { maxTokens: n, temperature: 0 },
    )) {
      if (ev.type === 'text') text += ev.text
      else if (ev.type === 'done') done = ev
    }
    t.is(text, golden.cases.text.greedy_text)
    t.is(done?.usage.promptTokens, golden.cases.text.n_prompt_tokens)
    t.is(done?.usage.completionTokens, n)
  } finally {
    model.dispose()
  }
})

test('a rendered page goes in as pixels and costs the reference number of prompt tokens', async (t) => {
  const model = await loadModel(E2E)
  try {
    const { readFile } = await import('node:fs/promises')
    const png = await readFile(`${E2E}${golden.cases.one_page.pages[0]}`)
    let done: { usage: { promptTokens?: number } } | undefined
    let text = ''
    for await (const ev of model.chat(
      [
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: [{ type: 'text', text: QUESTION }, { type: 'image', image: png }] },
      ],
      { maxTokens: 8, temperature: 0 },
    )) {
      if (ev.type === 'text') text += ev.text
      else if (ev.type === 'done') done = ev
    }
    t.is(done?.usage.promptTokens, golden.cases.one_page.n_prompt_tokens)
    t.true(golden.cases.one_page.greedy_text.startsWith(text) && text.length > 0, text)
  } finally {
    model.dispose()
  }
})

test('loading a directory that is not a model names what is missing', async (t) => {
  const err = await t.throwsAsync(loadModel(`${SHARED}golden/render`), { instanceOf: VtcError })
  t.regex(err!.message, /golden\/render\/(config|tokenizer)\.json/)
})

test('aborting a generation stops the engine between tokens with an abort error', async (t) => {
  const model = await loadModel(E2E)
  try {
    // Greedy on this fixture never meets EOS within 20000 tokens (~40 s), so only the abort can end the run.
    // Tokens the engine made before it saw the abort may still arrive: a loaded CI machine delays the JS thread
    // by hundreds of tokens, hence the wide bound.
    const maxTokens = 20000
    const controller = new AbortController()
    let pieces = 0
    const run = (async () => {
      for await (const ev of model.chat([{ role: 'user', content: QUESTION }], { maxTokens, temperature: 0, signal: controller.signal })) {
        if (ev.type === 'text' && ++pieces === 3) controller.abort()
      }
    })()
    const err = await t.throwsAsync(run)
    t.is((err as VtcError).code, 'ABORT_ERR')
    t.true(pieces < maxTokens / 4, `${pieces} pieces arrived after the abort`)
  } finally {
    model.dispose()
  }
})

test.serial('the loop on the embedded engine: KV-prefix reuse and the vision cache change no output, and they happen', async (t) => {
  // Serial: its CPU load would starve the JS thread of the abort test running beside it.
  // Greedy, a fixed 24 tokens per round (the reference continuation's length), 3 rounds: rounds 2 and 3 read
  // the pages our renderer made of the earlier rounds.
  const run = async (options: Parameters<typeof loadModel>[1]) => {
    const model = await loadModel(E2E, options)
    try {
      const memory = new OpticalMemory(model, { maxRounds: 3, roundTokens: 24, temperature: 0, ignoreEos: true })
      return await memory.solve(QUESTION)
    } finally {
      model.dispose()
    }
  }
  const on = await run({})
  const off = await run({ prefixReuse: false, visionCache: false })
  t.is(on.finishReason, 'rounds-exhausted')
  t.is(on.rounds.length, 3)
  t.is(on.rounds[0].text, golden.cases.text.greedy_text)
  for (const [i, r] of on.rounds.entries()) {
    t.is(r.tokens, 24, `round ${i + 1} generates its full budget`)
    t.is(r.text, off.rounds[i].text, `round ${i + 1}`)
    t.is(r.promptTokens, off.rounds[i].promptTokens)
    t.like(off.rounds[i], { cachedTokens: 0, cachedImages: 0 })
  }
  t.true(on.rounds[0].pages.length >= 1 && on.rounds[1].pages.length >= 1, 'rounds 1 and 2 were rendered into pages')
  // round 2 reuses the system prompt and question, round 3 also round 1's pages (KV entries and vision features)
  const [, r2, r3] = on.rounds
  t.true(r2.cachedTokens! >= golden.cases.text.n_prompt_tokens - 5, `${r2.cachedTokens}`)
  t.is(r2.cachedImages, 0)
  t.true(r3.cachedTokens! >= r2.promptTokens! - 5, `${r3.cachedTokens} of ${r3.promptTokens}`)
  t.is(r3.cachedImages, on.rounds[0].pages.length)
})

test('kvCache: the engine keeps its KV cache in the type asked for, and refuses an unknown one', async (t) => {
  // Fidelity of a bf16 or f16 cache is checked against the reference in crate/tests/golden_e2e.rs; here: the
  // option reaches the engine and generation runs to its budget with it.
  const n = 12
  for (const kvCache of ['bf16', 'f16'] as const) {
    const model = await loadModel(E2E, { kvCache })
    try {
      let tokens = 0
      for await (const ev of model.chat([{ role: 'user', content: [{ type: 'text', text: QUESTION }] }], { maxTokens: n, temperature: 0, ignoreEos: true })) {
        if (ev.type === 'done') tokens = ev.usage.completionTokens
      }
      t.is(tokens, n, kvCache)
    } finally {
      model.dispose()
    }
  }
  await t.throwsAsync(loadModel(E2E, { kvCache: 'f8' as never }), { message: /kvCache.*"f8".*f32, bf16, f16/ })
})

test('loadModel rejects bad reuse options', async (t) => {
  await t.throwsAsync(loadModel(E2E, { visionCache: -1 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /visionCache/ })
  await t.throwsAsync(loadModel(E2E, { prefixReuse: 'no' as never }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /prefixReuse/ })
})

test('logprobs: one entry per generated token with its text, bytes and top alternatives, in the API and the server', async (t) => {
  const model = await loadModel(E2E)
  t.teardown(() => model.dispose())
  const greedy = golden.cases.text.greedy_text
  const messages = [
    { role: 'system' as const, content: SYSTEM_PROMPT },
    { role: 'user' as const, content: [{ type: 'text' as const, text: QUESTION }] },
  ]
  // A stop string the output begins with but never completes holds text back: events with no text.
  const stop = `${greedy.slice(0, 30)}\u0000never`
  let text = ''
  let silent = 0
  const entries: TokenLogprob[] = []
  let completionTokens = 0
  for await (const ev of model.chat(messages, { maxTokens: 24, temperature: 0, logprobs: true, topLogprobs: 3, stop: [stop] })) {
    if (ev.type === 'done') completionTokens = ev.usage.completionTokens
    else {
      text += ev.text
      if (!ev.text) silent++
      entries.push(...(ev.logprobs ?? []))
    }
  }
  t.is(text, greedy)
  t.true(silent > 0, 'some tokens released no text')
  t.is(entries.length, completionTokens)
  t.is(Buffer.from(entries.flatMap((e) => e.bytes)).toString('utf8'), greedy)
  for (const e of entries) {
    t.is(e.token, Buffer.from(e.bytes).toString('utf8'))
    t.is(e.topLogprobs.length, 3)
    // greedy: the chosen token is the most likely one
    t.deepEqual(e.topLogprobs[0], { token: e.token, bytes: e.bytes, logprob: e.logprob })
    t.true(e.logprob <= 0 && e.topLogprobs[1].logprob <= e.logprob)
  }

  // The server reports the same entries in OpenAI's shape, streamed and not.
  const server = createServer(model)
  const { url } = await server.listen(0, '127.0.0.1')
  t.teardown(() => server.close())
  const body = { messages, max_tokens: 24, temperature: 0, logprobs: true, top_logprobs: 3, stop: [stop] }
  const wire = entries.map((e) => ({
    token: e.token,
    logprob: e.logprob,
    bytes: e.bytes,
    top_logprobs: e.topLogprobs.map((a) => ({ token: a.token, logprob: a.logprob, bytes: a.bytes })),
  }))
  const post = (b: unknown) => fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b) })
  const plain = (await (await post(body)).json()) as { choices: { logprobs: { content: unknown[] } }[] }
  t.deepEqual(plain.choices[0].logprobs.content, wire)
  const sse = await (await post({ ...body, stream: true })).text()
  const streamed = sse
    .split('\n\n')
    .filter((e) => e.startsWith('data: {'))
    .flatMap((e) => (JSON.parse(e.slice(6)) as { choices: { logprobs?: { content: unknown[] } | null }[] }).choices[0]?.logprobs?.content ?? [])
  t.deepEqual(streamed, wire)
  const tooMany = await post({ ...body, top_logprobs: 21 })
  t.is(tooMany.status, 400)
  t.regex(((await tooMany.json()) as { error: { message: string } }).error.message, /top_logprobs/)
})

test('contextLength holds every request to it: generation stops there, a longer prompt is refused', async (t) => {
  const model = await loadModel(E2E, { contextLength: 90 })
  t.teardown(() => model.dispose())
  t.is(model.contextLength, 90)
  const messages = [
    { role: 'system' as const, content: SYSTEM_PROMPT },
    { role: 'user' as const, content: [{ type: 'text' as const, text: QUESTION }] },
  ]
  let done: { finishReason: string; usage: { promptTokens?: number; completionTokens: number } } | undefined
  for await (const ev of model.chat(messages, { maxTokens: 100, temperature: 0 })) if (ev.type === 'done') done = ev
  t.is(done?.finishReason, 'length')
  t.is((done?.usage.promptTokens ?? 0) + (done?.usage.completionTokens ?? 0), 90)
  const long = [{ role: 'user' as const, content: QUESTION.repeat(8) }]
  await t.throwsAsync(async () => {
    for await (const _ of model.chat(long, { maxTokens: 4 })) void _
  }, { message: /context/ })
})

const onCuda = process.env.VTC_TEST_DEVICE === 'cuda'
;(onCuda ? test : test.skip)('on CUDA: the embedded engine reproduces the reference greedy continuation with a page (runs with VTC_TEST_DEVICE=cuda; scripts/gpu-check.sh)', async (t) => {
  const model = await loadModel(E2E, { device: 'cuda' })
  t.teardown(() => model.dispose())
  // the one-page case: its top-1 margin (0.23) leaves room for the GPU's other summation order
  const png = readFileSync(`${E2E}${golden.cases.one_page.pages[0]}`)
  const n = tensorShape(`${E2E}golden.safetensors`, 'one_page.greedy_tokens').at(-1)!
  let text = ''
  for await (const ev of model.chat(
    [
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: [{ type: 'text', text: QUESTION }, { type: 'image', image: png }] },
    ],
    { maxTokens: n, temperature: 0 },
  )) {
    if (ev.type === 'text') text += ev.text
  }
  t.is(text, golden.cases.one_page.greedy_text)
})
