// Shared by the engine benchmarks (engine.js, quant.js): the model families, the cases (prompts cut from the
// reasoning texts, pages rendered by our renderer), our side as a child process, and the summary of its runs.
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('..', import.meta.url))
export const shared = join(root, '../shared')

/** The architectures the benchmark knows: config.json model_type, default directory, the script that builds it
 */
export const FAMILIES = {
  qwen3vl: { modelType: 'qwen3_vl', dir: '../bench-models/qwen3vl-1024x8', script: 'scripts/make-random-qwen3vl.py' },
  glm4v: { modelType: 'glm4v', dir: '../bench-models/glm4v-1024x8', script: 'scripts/make-random-glm4v.py' },
}

/**
 * reps + 1 prompts of about `promptTokens` tokens (cut from the reasoning texts at paragraph ends) and reps + 1
 * rendered pages (the first page of different texts, as raw pixels for us and PNG for transformers) in `dir`.
 * The first of each is a warm-up.
 */
export async function buildCases(model, reps, promptTokens, dir) {
  const { Renderer } = await import('../dist/index.js')
  const { NativeTokenizer } = await import('../index.js')
  const texts = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
  const tok = NativeTokenizer.fromFile(join(model, 'tokenizer.json'))

  // reps + 1 different prompts of about promptTokens tokens, cut from the reasoning texts at paragraph ends
  const paragraphs = texts.flatMap((t) => t.split('\n\n')).filter((p) => p.trim())
  const textCases = []
  let at = 0
  for (let i = 0; i <= reps; i++) {
    let text = ''
    while (tok.count(text) < promptTokens) text += paragraphs[at++ % paragraphs.length] + '\n\n'
    textCases.push({ text: text.trim() })
  }
  // reps + 1 rendered pages (the first page of different texts), as raw pixels for us and PNG for transformers
  const renderer = await Renderer.create({ preset: 'vtc-r1' })
  const pageCases = []
  for (let i = 0; pageCases.length <= reps; i++) {
    const { pages } = await renderer.render(texts[i], { channels: 3 })
    const page = pages[0]
    const png = join(dir, `page${i}.png`)
    writeFileSync(png, await page.png())
    const raw = join(dir, `page${i}.rgb`)
    writeFileSync(raw, page.data)
    pageCases.push({ png, pixels: { file: raw, width: page.width, height: page.height, channels: page.channels }, text: 'Continue the reasoning.' })
  }
  return { textCases, pageCases, tokenizer: tok }
}

/** Our side, in a child process: the same cases as engine_ref.py, through the napi engine. */
export async function runOurs(spec) {
  const { NativeEngine } = await import('../index.js')
  const t0 = performance.now()
  const engine = await NativeEngine.load(spec.model, {
    dtype: spec.dtype,
    ...(spec.device ? { device: spec.device } : {}),
    ...(spec.quantize ? { quantize: spec.quantize, quantCacheDir: spec.quant_cache_dir } : {}),
  })
  const loadS = (performance.now() - t0) / 1000
  const run = (content, maxTokens) =>
    engine.generate({ messages: [{ role: 'user', content }], maxTokens, ignoreEos: true }, () => {})
  const textRuns = []
  for (const [i, c] of spec.text_cases.entries()) {
    const r = await run([{ type: 'text', text: c.text }], spec.decode_tokens)
    if (i > 0) textRuns.push({ prompt_tokens: r.promptTokens, cached_tokens: r.cachedTokens, prefill_ms: r.prefillMs, decode_ms: r.decodeMs, completion_tokens: r.completionTokens, text: r.text })
  }
  const pageRuns = []
  for (const [i, c] of spec.page_cases.entries()) {
    const p = c.pixels
    const image = { pixels: readFileSync(p.file), width: p.width, height: p.height, channels: p.channels }
    const r = await run([{ type: 'image', image }, { type: 'text', text: c.text }], 1)
    if (i > 0) pageRuns.push({ prompt_tokens: r.promptTokens, vision_tokens: r.visionTokens, vision_ms: r.visionMs, first_token_ms: r.visionMs + r.prefillMs })
  }
  engine.dispose()
  const threads = process.env.RAYON_NUM_THREADS ?? availableParallelism()
  const out = { engine: `vtc-r1 (candle, ${threads} threads)`, load_s: loadS, text_runs: textRuns, page_runs: pageRuns, peak_rss_mb: process.resourceUsage().maxRSS / 1024 }
  console.log(JSON.stringify(out))
}

/**
 * The family and model directory: --family if given, else the model_type of --model's config.json when it
 * exists, else qwen3vl; --model defaults to the family's random bench model beside the checkout.
 */
export function pickModel(familyOpt, modelOpt) {
  const byType = (t) => Object.keys(FAMILIES).find((f) => FAMILIES[f].modelType === t)
  const model = modelOpt ? resolve(modelOpt) : undefined
  const config = model && join(model, 'config.json')
  const detected = config && existsSync(config) ? JSON.parse(readFileSync(config, 'utf8')).model_type : undefined
  if (detected !== undefined && !byType(detected)) throw new Error(`${config}: model_type "${detected}" is not one of ${Object.values(FAMILIES).map((f) => f.modelType).join(', ')}`)
  const family = familyOpt ? (FAMILIES[familyOpt] ? familyOpt : byType(familyOpt)) : (byType(detected) ?? 'qwen3vl')
  if (!family) throw new Error(`--family ${familyOpt}: expected one of ${Object.keys(FAMILIES).join(', ')}`)
  if (detected !== undefined && byType(detected) !== family) throw new Error(`--family ${familyOpt}, but ${config} has model_type "${detected}"`)
  return { family, model: model ?? resolve(join(root, FAMILIES[family].dir)) }
}

/** Best of the runs (fastest), per figure. */
export function summarize(res, decode) {
  const t = res.text_runs
  const p = res.page_runs
  for (const run of t) if (run.completion_tokens !== decode) throw new Error(`a run produced ${run.completion_tokens} tokens, not ${decode}`)
  return {
    prompt: t[0].prompt_tokens,
    prefill: Math.max(...t.map((x) => x.prompt_tokens / (x.prefill_ms / 1000))),
    decode: Math.max(...t.map((x) => (decode - 1) / (x.decode_ms / 1000))),
    visionTokens: p[0].vision_tokens,
    visionMs: Math.min(...p.map((x) => x.vision_ms)),
    pagePrompt: p[0].prompt_tokens,
    pageTtft: Math.min(...p.map((x) => x.first_token_ms)),
  }
}

export function fmt(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1)
}

export function commonPrefix(a, b) {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return i
}

/** Prints rows of strings as columns: the first left-aligned, the rest right-aligned. */
export function printTable(table) {
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)))
  for (const row of table) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '))
}
