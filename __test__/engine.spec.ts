import { readFileSync } from 'node:fs'

import test from 'ava'

import { loadModel, SYSTEM_PROMPT, VtcError } from '../src/index.js'
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
    const controller = new AbortController()
    let pieces = 0
    const run = (async () => {
      for await (const ev of model.chat([{ role: 'user', content: QUESTION }], { maxTokens: 5000, temperature: 0, signal: controller.signal })) {
        if (ev.type === 'text' && ++pieces === 3) controller.abort()
      }
    })()
    const err = await t.throwsAsync(run)
    t.is((err as VtcError).code, 'ABORT_ERR')
    t.true(pieces < 100, `${pieces} pieces arrived after the abort`)
  } finally {
    model.dispose()
  }
})
