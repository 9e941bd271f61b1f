import { readFileSync } from 'node:fs'

import test from 'ava'

import { loadModel, OpticalMemory, SYSTEM_PROMPT } from '../src/index.js'
import { visionTokens } from '../src/tokens.js'
import { SHARED } from './helpers.js'

// GLM-4.1V (Glyph's and VTC-R1-Glyph's architecture) through the public API, on the e2e fixture: a small random
// model with GLM-4.1V's token ids, chat template and image geometry (shared/golden/glm4v/e2e, transformers 5.18).
const E2E = `${SHARED}golden/glm4v/e2e/`
const golden = JSON.parse(readFileSync(`${E2E}golden.json`, 'utf8')) as {
  question: string
  system_prompt: string
  cases: Record<string, { greedy_text: string; pages: string[]; n_prompt_tokens: number }>
}

test('a GLM-4.1V directory loads as glm4v and reproduces the reference greedy continuation with a page', async (t) => {
  const model = await loadModel(E2E)
  try {
    t.is(model.modelType, 'glm4v')
    t.is(SYSTEM_PROMPT, golden.system_prompt)
    const png = readFileSync(`${E2E}${golden.cases.one_page.pages[0]}`)
    let text = ''
    let promptTokens: number | undefined
    for await (const ev of model.chat(
      [
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: [{ type: 'text', text: golden.question }, { type: 'image', image: png }] },
      ],
      { maxTokens: 24, temperature: 0, ignoreEos: true },
    )) {
      if (ev.type === 'text') text += ev.text
      else promptTokens = ev.usage.promptTokens
    }
    t.is(text, golden.cases.one_page.greedy_text)
    t.is(promptTokens, golden.cases.one_page.n_prompt_tokens)
  } finally {
    model.dispose()
  }
})

test.serial('two optical-memory rounds on GLM-4.1V: round 2 reads round 1 as pages at the training budget', async (t) => {
  const model = await loadModel(E2E, { imageMaxPixels: 262144 })
  try {
    const memory = new OpticalMemory(model, { maxRounds: 2, roundTokens: 24, temperature: 0, ignoreEos: true })
    const run = await memory.solve(golden.question)
    t.is(run.rounds.length, 2)
    const [r1, r2] = run.rounds
    t.is(r1.text, golden.cases.text.greedy_text, 'round 1 is the reference continuation')
    t.is(r1.promptTokens, golden.cases.text.n_prompt_tokens)
    t.true(r1.pages.length >= 1, 'round 1 was rendered')
    // every page costs what LLaMA-Factory's image_max_pixels gave it in training (330 tokens for a full page)
    const expected = r1.pages.reduce((n, p) => n + visionTokens(p.width, p.height, 'glm-4.1v', { imageMaxPixels: 262144 }), 0)
    t.is(r2.visionTokens, expected)
    t.true(r2.cachedTokens! >= golden.cases.text.n_prompt_tokens - 5, `round 2 reused the question's KV entries (${r2.cachedTokens})`)
    t.is(r2.tokens, 24)
  } finally {
    model.dispose()
  }
})

test('loadModel refuses a bad page budget', async (t) => {
  await t.throwsAsync(loadModel(E2E, { imageMaxPixels: 0 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /imageMaxPixels/ })
  await t.throwsAsync(loadModel(E2E, { maxPixels: 1.5 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /maxPixels/ })
  await t.throwsAsync(loadModel(E2E, { maxPixels: 100 }), { code: 'ERR_VTC_INVALID_ARGUMENT', message: /maxPixels/ })
})
