import { readFileSync } from 'node:fs'

import test from 'ava'

import { countTextTokens, countTextTokensAsync, qwen3Tokenizer, tokenPieces } from '../src/text-tokens.js'
import { visionTokens, type VisionModel } from '../src/tokens.js'
import { goldenTexts, SHARED } from './helpers.js'

/** Image tokens of a golden e2e case: its prompt length minus the text-only case's and two markers a page. */
function goldenImageTokens(family: 'qwen3vl' | 'glm4v', name: string): number {
  const g = JSON.parse(readFileSync(`${SHARED}golden/${family}/e2e/golden.json`, 'utf8')) as {
    cases: Record<string, { n_prompt_tokens: number; pages: string[] }>
  }
  const c = g.cases[name]
  return c.n_prompt_tokens - g.cases.text.n_prompt_tokens - 2 * c.pages.length
}

test('page token counts follow the processors, checked against the transformers fixtures', (t) => {
  // Qwen3-VL: a 589×842 page, uncapped and under max_pixels 262144; a 436×276 page
  t.is(visionTokens(589, 842, 'qwen3-vl'), goldenImageTokens('qwen3vl', 'one_page'))
  t.is(visionTokens(589, 842, 'qwen3-vl', { maxPixels: 262144 }), goldenImageTokens('qwen3vl', 'one_page_capped'))
  t.is(visionTokens(589, 842, 'qwen3-vl') + visionTokens(436, 276, 'qwen3-vl'), goldenImageTokens('qwen3vl', 'two_pages'))
  // GLM-4.1V: 588×842 and 586×842 pages; its processor counts two frames in max_pixels
  t.is(visionTokens(588, 842, 'glm-4.1v'), goldenImageTokens('glm4v', 'one_page'))
  t.is(visionTokens(588, 842, 'glm-4.1v', { maxPixels: 262144 }), goldenImageTokens('glm4v', 'one_page_capped'))
  t.is(visionTokens(588, 842, 'glm-4.1v') + visionTokens(586, 842, 'glm-4.1v'), goldenImageTokens('glm4v', 'two_pages'))
})

test("LLaMA-Factory's image_max_pixels: the training budget of VTC-R1 checkpoints, checked against LLaMA-Factory", (t) => {
  // crate/tests/data/llamafactory/expected.json: the GLM-4.1V fixture pages through LLaMA-Factory 0.9.5 and the processor
  // and images of assorted sizes through its qwen3_vl and glm4v plugins
  const lf = JSON.parse(readFileSync(new URL('../crate/tests/data/llamafactory/expected.json', import.meta.url), 'utf8')) as {
    image_max_pixels: number
    pages: Record<string, { source: [number, number]; tokens: number }>
    sizes: Record<VisionModel, { source: [number, number]; tokens: number }[]>
  }
  const budget = { imageMaxPixels: lf.image_max_pixels }
  for (const [page, { source, tokens }] of Object.entries(lf.pages)) {
    t.is(visionTokens(source[0], source[1], 'glm-4.1v', budget), tokens, page)
  }
  for (const [family, rows] of Object.entries(lf.sizes) as [VisionModel, { source: [number, number]; tokens: number }[]][]) {
    for (const { source, tokens } of rows) t.is(visionTokens(source[0], source[1], family, budget), tokens, `${family} ${source.join('×')}`)
  }
})

test('text tokens counted piece by piece add up to the count of the whole text', async (t) => {
  // English, CJK, runs of spaces and blank lines, NUL and other control characters
  const texts = [...goldenTexts().map((x) => x.text), 'a\u0085 b\n\n  c\u3000d\r\n\r\ne \t f\u0000 g']
  for (const text of texts) {
    const whole = qwen3Tokenizer().count(text)
    const pieces = [...tokenPieces(text, 40)]
    t.is(pieces.join(''), text)
    t.true(pieces.length > 1 || text.length < 80)
    t.is(pieces.reduce((n, p) => n + qwen3Tokenizer().count(p), 0), whole, text.slice(0, 40))
    t.is(countTextTokens(text), whole)
  }
  const long = goldenTexts().map((x) => x.text).join('\n').repeat(3)
  const seen: number[] = []
  t.is(await countTextTokensAsync(long, (done) => seen.push(done)), qwen3Tokenizer().count(long))
  t.true(seen.length > 1 && seen.at(-1) === long.length)
})

test('counting the tokens of a long text takes bounded memory', (t) => {
  const base = goldenTexts().map((x) => x.text).join('\n')
  const text = base.repeat(Math.ceil(4e6 / base.length)) // 4 MB: 650 MB counted whole
  const peakBefore = process.resourceUsage().maxRSS
  t.true(countTextTokens(text) > 1e6)
  const growthMb = (process.resourceUsage().maxRSS - peakBefore) / 1024
  t.true(growthMb < 100, `peak RSS grew by ${growthMb.toFixed(0)} MB`)
})
