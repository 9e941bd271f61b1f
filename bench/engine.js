#!/usr/bin/env node
// The embedded engine against the transformers/PyTorch CPU reference, both measured in this run on the same
// random model directory (Qwen3-VL or GLM-4.1V), the same prompts and the same rendered pages, each in its own
// process (so peak RSS means something): vision encode ms per page, time to first token with a page, prefill
// tok/s, decode tok/s.
//
//   node bench/engine.js [--family qwen3vl|glm4v] [--model DIR] [--dtype f32,bf16] [--python PY] [--reps 3]
//                        [--decode 64] [--prompt-tokens 1500] [--threads N]
//
// --family picks the architecture (default: the model_type in --model's config.json when --model exists, else
// qwen3vl). --model defaults to ../bench-models/qwen3vl-1024x8 (qwen3vl) or ../bench-models/glm4v-1024x8 (glm4v)
// beside the checkout, built on first use with scripts/make-random-qwen3vl.py (hidden 1024, 8 layers, vision depth
// 8, real Qwen3 vocabulary) or scripts/make-random-glm4v.py (hidden 1024, 8 layers, GLM-4.1V's head_dim, GQA,
// partial M-RoPE and vision widths, vision depth 8, real GLM-4.1V vocabulary size and token ids). --python must
// have torch, torchvision, transformers (>= 4.57 for Qwen3-VL, >= 5 to build the GLM-4.1V model), pillow (see
// README: Benchmarks → engine); engine_ref.py picks the model class from config.json. Each figure is the best of
// --reps runs after one warm-up run; every run uses a different prompt and page, so neither the prefix cache nor
// the vision cache of our engine can help.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const shared = join(root, '../shared')
const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : dflt
}

/** The architectures the benchmark knows: config.json model_type, default directory, the script that builds it
 * (declared before the top-level await below, which runs drive()). */
const FAMILIES = {
  qwen3vl: { modelType: 'qwen3_vl', dir: '../bench-models/qwen3vl-1024x8', script: 'scripts/make-random-qwen3vl.py' },
  glm4v: { modelType: 'glm4v', dir: '../bench-models/glm4v-1024x8', script: 'scripts/make-random-glm4v.py' },
}

if (args[0] === '--worker') {
  await ours(JSON.parse(readFileSync(args[1], 'utf8')))
} else {
  await drive()
}

/** Our side, in a child process: the same cases as engine_ref.py, through the napi engine. */
async function ours(spec) {
  const { NativeEngine } = await import('../index.js')
  const t0 = performance.now()
  const engine = await NativeEngine.load(spec.model, { dtype: spec.dtype })
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

async function drive() {
  const { family, model } = pickModel(opt('family'), opt('model'))
  const python = opt('python', process.env.VTC_BENCH_PYTHON ?? 'python3')
  const dtypes = opt('dtype', 'f32,bf16').split(',')
  const reps = Number(opt('reps', 3))
  const decode = Number(opt('decode', 64))
  const promptTokens = Number(opt('prompt-tokens', 1500))
  const threads = Number(opt('threads', availableParallelism()))
  if (!existsSync(join(model, 'config.json'))) {
    console.log(`building the random ${family} model in ${model} ...`)
    execFileSync(python, [join(root, FAMILIES[family].script), model, '--seed', '0'], { stdio: 'inherit' })
  }

  const { Renderer } = await import('../dist/index.js')
  const { NativeTokenizer } = await import('../index.js')
  const texts = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
  const tok = NativeTokenizer.fromFile(join(model, 'tokenizer.json'))
  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-engine-'))

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
  const sizes = pageCases.slice(1).map((c) => `${c.pixels.width}×${c.pixels.height}`).join(', ')
  console.log(`model ${model} (${family}); ${threads} threads; prompts ≈${promptTokens} tokens; decode ${decode} tokens (greedy, EOS ignored); pages ${sizes}`)
  console.log(`best of ${reps} runs after a warm-up, each process on its own`)

  const env = { ...process.env, RAYON_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) }
  const rows = []
  for (const dtype of dtypes) {
    const spec = join(dir, `spec-${dtype}.json`)
    writeFileSync(spec, JSON.stringify({ model, dtype, threads, decode_tokens: decode, text_cases: textCases, page_cases: pageCases }))
    const child = (cmd, argv) => JSON.parse(execFileSync(cmd, argv, { env, encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop())
    const a = child(process.execPath, [fileURLToPath(import.meta.url), '--worker', spec])
    const b = child(python, [join(root, 'bench/engine_ref.py'), spec])
    rows.push({ dtype, ours: summarize(a, decode), ref: summarize(b, decode), a, b })
  }
  rmSync(dir, { recursive: true, force: true })

  for (const { dtype, a, b, ours: o, ref: r } of rows) {
    console.log(`\n${dtype}:  ours = ${a.engine}, load ${a.load_s.toFixed(1)} s;  reference = ${b.engine}, load ${b.load_s.toFixed(1)} s`)
    const line = (name, x, y, unit, higher = true) =>
      console.log(`  ${name.padEnd(34)} ${fmt(x).padStart(9)} ${fmt(y).padStart(9)} ${unit.padEnd(6)} ${((higher ? x / y : y / x).toFixed(2) + '×').padStart(7)}`)
    console.log(`  ${''.padEnd(34)} ${'ours'.padStart(9)} ${'PyTorch'.padStart(9)} ${''.padEnd(6)} ${'speedup'.padStart(7)}`)
    line(`vision encode per page (${o.visionTokens} tok)`, o.visionMs, r.visionMs, 'ms', false)
    line(`page prompt to first token (${o.pagePrompt} tok)`, o.pageTtft, r.pageTtft, 'ms', false)
    line(`prefill, text (${o.prompt} tok)`, o.prefill, r.prefill, 'tok/s')
    line(`decode (${decode} tok after the prompt)`, o.decode, r.decode, 'tok/s')
    line('peak RSS', a.peak_rss_mb, b.peak_rss_mb, 'MB', false)
    const same = a.text_runs.map((t, i) => commonPrefix(t.text, b.text_runs[i].text))
    console.log(`  same greedy text as PyTorch: ${same.map((n, i) => `${n}/${b.text_runs[i].text.length}`).join(', ')} chars; prompt tokens ${o.prompt} vs ${r.prompt}, page tokens ${o.pagePrompt} vs ${r.pagePrompt}`)
  }
}

/**
 * The family and model directory: --family if given, else the model_type of --model's config.json when it
 * exists, else qwen3vl; --model defaults to the family's random bench model beside the checkout.
 */
function pickModel(familyOpt, modelOpt) {
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
function summarize(res, decode) {
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

function fmt(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1)
}

function commonPrefix(a, b) {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return i
}
