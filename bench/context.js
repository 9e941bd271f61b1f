#!/usr/bin/env node
// The embedded engine against context length, and what that means for the optical-memory schedule; our engine
// only (no PyTorch). The machine is measured first (bench/machine.rs) and every rate is printed as a share of its
// limit (FLOPs and bytes counted from config.json by engine-common.js).
//
//   node bench/context.js [--family qwen3vl|glm4v] [--model DIR] [--dtype f32|bf16] [--threads N]
//                         [--kv-cache f32|bf16|f16] [--prefill 1600,16000] [--contexts 512,4096,16384,32768]
//                         [--decode 32] [--rounds 4] [--round-tokens 4096] [--paper 8x8192]
//                         [--image-max-pixels N] [--reps 1] [--python PY]
//
// (a) Prefill: prompts of --prefill tokens (text cut from ../shared/golden/render/texts.jsonl), each with its own
//     cache salt so nothing is reused: tok/s, achieved GFLOP/s and its share of the FMA peak.
// (b) Decode against context: a prompt of each --contexts length, then --decode greedy tokens (EOS ignored):
//     ms per decode token at the mean context (prompt + decode/2), the bytes a step reads (weights, output head,
//     embedding row, the KV cache at that context) and their rate as a share of the DRAM read bandwidth. The
//     prompts are nested prefixes of one text, shortest first, so each prefills only what the previous lacks.
// (c) The schedule: a text baseline of --rounds × --round-tokens (the model reasons with its whole history in
//     context: round r decodes from question + r·T to question + (r+1)·T tokens) against the optical-memory loop
//     (round r reads the question and the pages rendered from rounds 0..r-1, T tokens of reasoning text each, by the
//     loop's renderer and messages). Measured per round: the loop's prompt cost (vision encode of the new pages and
//     prefill of the uncached tokens, with the engine's prefix and vision caches on, as the loop runs), the render
//     time, and ms per decode token at the round's mid context (the prompt plus T/2 tokens of text after it, then
//     --decode tokens). A round's decode is projected as T × that ms/token; the totals are those sums.
//     --paper RxT (default 8x8192, the paper's schedule; 0x0: none) repeats the comparison from a least-squares line
//     through every decode point measured (ms/token against context), the vision and prefill GFLOP/s measured on the
//     loop's rounds, and pages counted by rendering that schedule's texts: printed as "projection from measured
//     points".
//
// --model defaults to the family's random bench model beside the checkout (../bench-models/qwen3vl-1024x8), built
// on first use with --python (default $VTC_BENCH_PYTHON or python3; needs torch and transformers). --kv-cache is
// passed to loadModel as `kvCache`. --image-max-pixels is loadModel's imageMaxPixels (VTC-R1 trained at 262144;
// default: the processor's budget, as bench/loop.ts). Build first: npm run build.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  cliOptions,
  decodeBytes,
  decoderLinearParams,
  DTYPE_BYTES,
  ensureModel,
  fmt,
  kvBytesPerToken,
  machineLine,
  measureMachine,
  pct,
  pickModel,
  prefillFlops,
  printTable,
  root,
  shared,
  textConfig,
  visionConfig,
  visionFlops,
} from './engine-common.js'

const args = process.argv.slice(2)
const opt = cliOptions(args)
const ints = (name, dflt) =>
  opt(name, dflt)
    .split(',')
    .map((x) => {
      const n = Number(x)
      if (!Number.isInteger(n) || n < 1) throw new Error(`--${name}: ${x} is not a positive whole number`)
      return n
    })
// AIME 2025 I, problem 1 (as bench/loop.ts and bench/batch.js)
const QUESTION = 'Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$'

if (args[0] === '--worker') {
  await work(JSON.parse(readFileSync(args[1], 'utf8')))
} else {
  await drive()
}

async function drive() {
  const { family, model } = pickModel(opt('family'), opt('model'))
  const python = opt('python', process.env.VTC_BENCH_PYTHON ?? 'python3')
  const threads = Number(opt('threads', availableParallelism()))
  const dtype = opt('dtype', 'f32')
  if (!['f32', 'bf16'].includes(dtype)) throw new Error(`--dtype ${dtype}: expected f32 or bf16`)
  const kvCache = opt('kv-cache')
  if (kvCache !== undefined && !DTYPE_BYTES[kvCache]) throw new Error(`--kv-cache ${kvCache}: expected one of ${Object.keys(DTYPE_BYTES).join(', ')}`)
  const [paperRounds, paperTokens] = opt('paper', '8x8192').split('x').map(Number)
  if (!(Number.isInteger(paperRounds) && paperRounds >= 0 && Number.isInteger(paperTokens) && paperTokens >= 0)) throw new Error(`--paper ${opt('paper')}: expected ROUNDSxTOKENS, e.g. 8x8192 (0x0: none)`)
  const spec = {
    model,
    family,
    dtype,
    kvCache,
    threads,
    prefill: ints('prefill', '1600,16000'),
    contexts: ints('contexts', '512,4096,16384,32768').sort((a, b) => a - b),
    decode: ints('decode', '32')[0],
    rounds: ints('rounds', '4')[0],
    roundTokens: ints('round-tokens', '4096')[0],
    paper: { rounds: paperRounds, roundTokens: paperTokens },
    reps: ints('reps', '1')[0],
    imageMaxPixels: opt('image-max-pixels') === undefined ? undefined : ints('image-max-pixels')[0],
  }
  if (spec.decode < 2) throw new Error('--decode must be at least 2 (the first token comes from the prefill)')
  ensureModel(family, model, python)
  // the limits first, before the engine loads the machine
  spec.machine = measureMachine(threads)
  console.log(machineLine(spec.machine))
  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-context-'))
  try {
    const file = join(dir, 'spec.json')
    writeFileSync(file, JSON.stringify(spec))
    const env = { ...process.env, RAYON_NUM_THREADS: String(threads) }
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--worker', file], { env, stdio: 'inherit' })
    // on a shared machine the limits move: measured again, to show by how much
    console.log(`again after the run: ${machineLine(measureMachine(threads)).replace(/^machine: /, '')}`)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

async function work(spec) {
  const { loadModel, OpticalMemory, Renderer, visionTokens } = await import('../dist/index.js')
  const { NativeTokenizer } = await import('../index.js')
  const { machine, decode, rounds: R, roundTokens: T } = spec
  const cfg = textConfig(spec.model)
  const config = JSON.parse(readFileSync(join(spec.model, 'config.json'), 'utf8'))
  cfg.maxPositions = (config.text_config ?? config).max_position_embeddings
  const vcfg = visionConfig(spec.model)
  const peak = machine.fma_gflops * 1e9
  const bandwidth = machine.read_gbs * 1e9

  // ---- the text: the reference reasoning texts end to end, cut at token boundaries ----
  const tok = NativeTokenizer.fromFile(join(spec.model, 'tokenizer.json'))
  const texts = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
  // where each part's text starts, in tokens: (a) at 1000·(i + 1), the curve (b), the rounds' texts, the baseline's history
  const at = { curve: 1000 * (spec.prefill.length + 1) }
  at.rounds = at.curve + Math.max(...spec.contexts) + 1000
  at.history = at.rounds + Math.max(R * T, spec.paper.rounds * spec.paper.roundTokens)
  const need = Math.max(at.history + R * T, 1000 * spec.prefill.length + Math.max(...spec.prefill)) + 1000
  let corpus = texts.join('\n\n')
  while (tok.count(corpus) < need) corpus += '\n\n' + corpus
  const ends = tok.tokenEnds(corpus)
  /** `n` tokens of the corpus from token `start` (re-tokenized alone they may differ by a token at the cuts). */
  const cut = (start, n) => corpus.slice(start ? ends[start - 1] : 0, ends[start + n - 1])

  // ---- the engine ----
  const wb = DTYPE_BYTES[spec.dtype]
  let kvb = wb
  // the prefix cache must hold the previous, shorter prompt of the decode curve while the next one runs
  const maxContext = Math.max(...spec.contexts, ...spec.prefill, R * T + 1000) + decode
  const prefixCacheMb = Math.ceil((kvBytesPerToken(cfg, 4) * maxContext) / 2 ** 20) + 64
  const options = { dtype: spec.dtype, prefixCacheMb, ...(spec.imageMaxPixels ? { imageMaxPixels: spec.imageMaxPixels } : {}) }
  let model
  let kvNote
  if (spec.kvCache !== undefined) {
    try {
      model = await loadModel(spec.model, { ...options, kvCache: spec.kvCache })
      // napi-rs drops object fields the binding does not declare: when this build does not declare it, the KV cache
      // stays in the weights' type and is counted so
      const declared = /kvCache\??:/.test(readFileSync(join(root, 'index.d.ts'), 'utf8'))
      if (declared) kvb = DTYPE_BYTES[spec.kvCache]
      kvNote = declared
        ? `kvCache ${spec.kvCache}`
        : `kvCache ${spec.kvCache} passed, but this build's NativeLoadOptions (index.d.ts) has no kvCache, so the binding ignores it: KV counted in the weights' type (${spec.dtype})`
    } catch (err) {
      console.log(`loadModel rejected kvCache ${JSON.stringify(spec.kvCache)}: ${err.message}; continuing without it (KV in the weights' type)`)
    }
  }
  model ??= await loadModel(spec.model, options)
  const kvLabel = kvNote ?? `KV in the weights' type (${spec.dtype})`
  console.log(
    `model ${spec.model} (${spec.family}), ${spec.dtype}; ${kvLabel}, ${fmt(kvBytesPerToken(cfg, kvb) / 1024)} KiB a token; ` +
      `${spec.threads} threads; prefix cache ${prefixCacheMb} MB; ${spec.imageMaxPixels ? `imageMaxPixels ${spec.imageMaxPixels}` : "pages at the processor's pixel budget"}`,
  )
  const weightMb = (decodeBytes(cfg, 0, wb) / 1e6).toFixed(0)
  console.log(
    `work counted (engine-common.js): prefill ${((2 * decoderLinearParams(cfg)) / 1e6).toFixed(0)} MFLOP a token in linear maps ` +
      `+ ${((4 * cfg.heads * cfg.headDim * cfg.layers * 1000) / 1e6).toFixed(1)} MFLOP per 1K visible keys; a decode step reads ${weightMb} MB of weights ` +
      `+ ${fmt(kvBytesPerToken(cfg, kvb) / 1024)} KiB per token of context`,
  )
  if (spec.dtype !== 'f32') console.log(`(${spec.dtype} is widened to f32 for matmuls where the CPU has no ${spec.dtype} arithmetic: shares are of the f32 FMA peak)`)

  // vision tokens of a page: the package's arithmetic at the engine's pixel limits (preprocessor_config.json, imageMaxPixels)
  const pre = JSON.parse(readFileSync(join(spec.model, 'preprocessor_config.json'), 'utf8'))
  const limits = { minPixels: pre.size?.shortest_edge, maxPixels: pre.size?.longest_edge, ...(spec.imageMaxPixels ? { imageMaxPixels: spec.imageMaxPixels } : {}) }
  const pageTokens = (page) => visionTokens(page.width, page.height, vcfg.glm ? 'glm-4.1v' : 'qwen3-vl', limits)

  const generate = async (messages, maxTokens, salt) => {
    let done
    for await (const ev of model.generate({ messages, maxTokens, ignoreEos: true, temperature: 0, cacheSalt: salt })) if (ev.type === 'done') done = ev
    const u = done.usage
    if (u.completionTokens !== maxTokens) throw new Error(`a run produced ${u.completionTokens} tokens, not ${maxTokens}`)
    const t = done.timings
    return { prompt: u.promptTokens, cached: u.cachedTokens ?? 0, visionTokens: u.visionTokens ?? 0, cachedImages: u.cachedImages ?? 0, visionMs: t.visionMs ?? 0, prefillMs: t.prefillMs ?? 0, decodeMs: t.decodeMs ?? 0 }
  }
  const user = (text) => [{ role: 'user', content: [{ type: 'text', text }] }]
  const msPerToken = (r) => r.decodeMs / (decode - 1)
  /** Best of --reps decodes of `decode` tokens after `messages` (repeats find the prompt in the prefix cache). */
  const decodeAt = async (messages, salt) => {
    const runs = []
    for (let i = 0; i < spec.reps; i++) runs.push(await generate(messages, decode, salt))
    return runs.reduce((a, b) => (msPerToken(b) < msPerToken(a) ? b : a))
  }
  const points = [] // [mean context, ms per decode token] of every decode measured, for the projection
  let over = false // a share over 100%: the limits were measured at a busier moment
  const decodeRow = (label, r) => {
    const ctx = r.prompt + decode / 2
    const ms = msPerToken(r)
    points.push([ctx, ms])
    const bytes = decodeBytes(cfg, ctx, wb, kvb)
    const kv = ctx * kvBytesPerToken(cfg, kvb)
    over ||= bytes / (ms / 1000) > bandwidth
    return [label, String(Math.round(ctx)), ms.toFixed(1), fmt(1000 / ms), fmt(bytes / 1e6), pct(kv / bytes), fmt(bytes / ms / 1e6), pct(bytes / (ms / 1000) / bandwidth)]
  }
  const decodeHead = (first) => [
    [first, 'context', 'ms/token', 'tok/s', 'MB/token', 'KV share', 'GB/s', 'of DRAM bw'],
  ]

  // warm-up: touch the weights and the vision tower (salts of their own, so nothing below reuses them)
  const renderer = await Renderer.create({ preset: 'vtc-r1' })
  const warmPage = (await renderer.render(cut(0, 300))).pages[0]
  await generate(user(cut(0, 64)), 4, 'warm-up')
  await generate([{ role: 'user', content: [{ type: 'image', image: warmPage }, { type: 'text', text: 'Continue.' }] }], 2, 'warm-up')
  // template tokens around a user message's text
  const probe = cut(0, 200)
  const overhead = (await generate(user(probe), 2, 'probe')).prompt - tok.count(probe)

  // ---- (a) prefill ----
  console.log(`\n(a) prefill: one prompt of each length, nothing cached; best of ${spec.reps}`)
  const prefillTable = [['prompt tokens', 'prefill s', 'tok/s', 'MFLOP/token', 'GFLOP/s', 'of FMA peak']]
  for (const [i, n] of spec.prefill.entries()) {
    let best
    for (let k = 0; k < spec.reps; k++) {
      const r = await generate(user(cut(1000 * (i + 1), n - overhead)), 1, `prefill-${n}-${k}`)
      if (!best || r.prefillMs < best.prefillMs) best = r
    }
    const flops = prefillFlops(cfg, best.prompt - best.cached, best.cached)
    const rate = flops / (best.prefillMs / 1000)
    over ||= rate > peak
    prefillTable.push([String(best.prompt), (best.prefillMs / 1000).toFixed(2), fmt(best.prompt / (best.prefillMs / 1000)), fmt(flops / best.prompt / 1e6), fmt(rate / 1e9), pct(rate / peak)])
  }
  printTable(prefillTable)

  // ---- (b) decode against context ----
  console.log(`\n(b) decode against context: ${decode} greedy tokens after a prompt of each length (nested prompts, each prefills only what the previous lacks); best of ${spec.reps}`)
  const curve = decodeHead('prompt')
  for (const c of spec.contexts) {
    const r = await decodeAt(user(cut(at.curve, c - overhead)), 'curve')
    curve.push(decodeRow(String(r.prompt), r))
  }
  printTable(curve)

  // ---- (c) the schedule: long-context baseline against the optical-memory loop ----
  console.log(`\n(c) schedule: ${R} rounds × ${T} tokens; the baseline keeps the whole history in context, the loop reads earlier rounds as pages`)
  const memory = new OpticalMemory(model, { maxRounds: R, roundTokens: T })
  /** `messages` with `text` after the last user turn's parts: the T/2 tokens a round has written by its middle. */
  const withText = (messages, text) => {
    const last = messages.at(-1)
    return [...messages.slice(0, -1), { ...last, content: [...last.content, { type: 'text', text }] }]
  }
  const sum = (xs, f) => xs.reduce((n, x) => n + f(x), 0)

  // the baseline: the question alone, then decode at each round's mid context (question + (r + ½)·T), the history
  // one running text (nested prompts)
  const baseMessages = memory.messages(QUESTION, [])
  const basePrompt = await generate(baseMessages, 1, 'baseline-prompt')
  const baseTable = decodeHead('baseline round')
  const baseRounds = []
  for (let r = 0; r < R; r++) {
    const m = await decodeAt(withText(baseMessages, cut(at.history, Math.round((r + 0.5) * T))), 'baseline')
    baseTable.push(decodeRow(String(r), m))
    baseRounds.push({ decodeS: (T * msPerToken(m)) / 1000 })
  }

  // the loop: round r reads the pages rendered from the texts of rounds 0..r-1 (T tokens each), measured as the loop
  // runs it (one cache salt, so the prefix and vision caches work across rounds); then decode at its mid context
  const pages = []
  const vtcRounds = []
  const vtcTable = decodeHead('vtc round')
  const promptTable = [['vtc round prompt', 'pages read', 'encoded', 'vision tok', 'prompt tok', 'prefilled', 'vision s', 'prefill s', 'vision GFLOP/s', 'prefill GFLOP/s', 'render ms → pages']]
  let exactPages = true
  for (let r = 0; r < R; r++) {
    const messages = memory.messages(QUESTION, pages)
    const p = await generate(messages, 1, 'vtc')
    // vision tokens per page by the package's arithmetic at the engine's pixel limits, checked against the engine's count
    if (sum(pages, pageTokens) !== p.visionTokens) exactPages = false
    const encoded = pages.slice(p.cachedImages)
    const visionF = exactPages ? sum(encoded, (x) => visionFlops(vcfg, pageTokens(x))) : encoded.length * visionFlops(vcfg, p.visionTokens / Math.max(1, pages.length))
    const prefillF = prefillFlops(cfg, p.prompt - p.cached, p.cached)
    const m = await decodeAt(withText(messages, cut(at.rounds + r * T, Math.round(T / 2))), 'vtc')
    vtcTable.push(decodeRow(String(r), m))
    // the round's output rendered into pages for the rounds after it (the last round's is not)
    let rendered = []
    let renderMs = 0
    if (r < R - 1) {
      const t0 = performance.now()
      rendered = (await renderer.render(cut(at.rounds + r * T, T))).pages
      renderMs = performance.now() - t0
    }
    const rate = (flops, ms) => (ms > 0 && flops > 0 ? `${fmt(flops / (ms / 1000) / 1e9)} (${pct(flops / (ms / 1000) / peak)})` : '–')
    promptTable.push([
      String(r),
      String(pages.length),
      String(encoded.length),
      String(p.visionTokens),
      String(p.prompt),
      String(p.prompt - p.cached),
      (p.visionMs / 1000).toFixed(2),
      (p.prefillMs / 1000).toFixed(2),
      rate(visionF, p.visionMs),
      rate(prefillF, p.prefillMs),
      r < R - 1 ? `${renderMs.toFixed(0)} → ${rendered.length}` : '–',
    ])
    vtcRounds.push({ ...p, pages: pages.length, encoded: encoded.length, visionF, prefillF, renderMs, decodeS: (T * msPerToken(m)) / 1000 })
    pages.push(...rendered)
  }
  printTable(baseTable)
  console.log('')
  printTable(vtcTable)
  console.log('')
  printTable(promptTable)
  if (!exactPages) console.log("(the package's vision-token arithmetic did not match the engine's count: vision FLOPs use the mean tokens per page)")

  const baseDecode = sum(baseRounds, (x) => x.decodeS)
  const baseTotal = basePrompt.prefillMs / 1000 + baseDecode
  const vtcPrompt = sum(vtcRounds, (x) => x.visionMs + x.prefillMs) / 1000
  const vtcDecode = sum(vtcRounds, (x) => x.decodeS)
  const vtcRender = sum(vtcRounds, (x) => x.renderMs) / 1000
  const vtcTotal = vtcPrompt + vtcDecode + vtcRender
  console.log(
    `\ntotal, projected from the costs measured at each round's context (decode: ${T} tokens × the measured ms/token; prompts and renders as measured):\n` +
      `  baseline ${baseTotal.toFixed(1)} s (prompt ${(basePrompt.prefillMs / 1000).toFixed(2)} s, decode ${baseDecode.toFixed(1)} s)\n` +
      `  vtc      ${vtcTotal.toFixed(1)} s (vision + prefill ${vtcPrompt.toFixed(2)} s, decode ${vtcDecode.toFixed(1)} s, render ${vtcRender.toFixed(2)} s)\n` +
      `  baseline / vtc ${(baseTotal / vtcTotal).toFixed(2)}×`,
  )

  if (over) console.log('\n(shares over 100%: the limits were measured at a busier moment than the run; see the second measurement below)')
  if (spec.paper.rounds > 0 && spec.paper.roundTokens > 0) await paperSchedule()
  model.dispose()
  console.log(`\npeak RSS ${fmt(process.resourceUsage().maxRSS / 1024)} MB`)

  /**
   * The paper's schedule from the measured points: decode ms/token on the least-squares line through every decode
   * point above; vision encode and prefill at the FLOP rates measured on the loop's rounds; the template tokens
   * around each page and the tail of the prompt each round prefills again, as measured; pages counted by rendering
   * that schedule's texts (and the render timed).
   */
  async function paperSchedule() {
    const { rounds: PR, roundTokens: PT } = spec.paper
    const fit = leastSquares(points)
    const msAt = (c) => fit.a + fit.b * c
    const measuredMax = Math.max(...points.map((x) => x[0]))
    console.log(
      `\nthe paper's schedule, ${PR} rounds × ${PT} tokens: projection from measured points\n` +
        `  decode ms/token = ${fit.a.toFixed(2)} + ${(fit.b * 1000).toFixed(3)} per 1K tokens of context (least squares over the ${points.length} decode points above, ` +
        `contexts ${Math.round(Math.min(...points.map((x) => x[0])))}–${Math.round(measuredMax)}; R² ${fit.r2.toFixed(3)})`,
    )
    const far = basePrompt.prompt + PR * PT
    if (far > measuredMax) console.log(`  the baseline reaches ${far} tokens of context, beyond the ${Math.round(measuredMax)} measured: its last rounds are extrapolated along the line`)
    const window = cfg.maxPositions
    if (window !== undefined && far > window) console.log(`  (beyond this model's max_position_embeddings, ${window}: the engine would refuse it)`)
    let base = basePrompt.prefillMs / 1000
    for (let r = 0; r < PR; r++) base += (PT * msAt(basePrompt.prompt + (r + 0.5) * PT)) / 1000

    const later = vtcRounds.filter((x) => x.pages > 0)
    const encodedRounds = vtcRounds.filter((x) => x.visionMs > 0 && x.encoded > 0)
    if (!later.length || !encodedRounds.length || !exactPages) {
      console.log(`  baseline ${base.toFixed(0)} s (projection from measured points); the loop: ${exactPages ? 'no pages were encoded in the measured rounds (--rounds 1?)' : 'vision tokens per page unknown'}, not projected`)
      return
    }
    const visionRate = sum(encodedRounds, (x) => x.visionF) / (sum(encodedRounds, (x) => x.visionMs) / 1000)
    const prefillRate = sum(later, (x) => x.prefillF) / (sum(later, (x) => x.prefillMs) / 1000)
    // template tokens per page (image delimiters) and the tail each round prefills again (the end of the user turn)
    const perPage = sum(later, (x) => x.prompt - basePrompt.prompt - x.visionTokens) / sum(later, (x) => x.pages)
    const tail = sum(vtcRounds.slice(1).map((x, i) => vtcRounds[i].prompt - x.cached), (x) => x) / (vtcRounds.length - 1)
    let vtc = basePrompt.prefillMs / 1000
    let prompt = basePrompt.prompt
    let renderS = 0
    const counts = []
    for (let r = 0; r < PR; r++) {
      if (r > 0) {
        const fresh = counts.at(-1)
        const added = sum(fresh, pageTokens) + Math.round(perPage * fresh.length)
        const redo = Math.min(prompt, Math.max(0, Math.round(tail)))
        vtc += sum(fresh, (x) => visionFlops(vcfg, pageTokens(x))) / visionRate + prefillFlops(cfg, added + redo, prompt - redo) / prefillRate
        prompt += added
      }
      vtc += (PT * msAt(prompt + PT / 2)) / 1000
      if (r < PR - 1) {
        const t0 = performance.now()
        counts.push((await renderer.render(cut(at.rounds + r * PT, PT))).pages)
        renderS += (performance.now() - t0) / 1000
      }
    }
    vtc += renderS
    console.log(
      `  pages per round (rendered here from ${PT}-token texts, render ${renderS.toFixed(1)} s in all): ${counts.map((x) => x.length).join(', ')}; ` +
        `the last round reads ${prompt} prompt tokens\n` +
        `  vision encode at ${fmt(visionRate / 1e9)} GFLOP/s, prefill at ${fmt(prefillRate / 1e9)} GFLOP/s (measured on the loop's rounds); each page encoded once (the prefix cache covers earlier rounds' pages)\n` +
        `  baseline ${base.toFixed(0)} s, vtc ${vtc.toFixed(0)} s, baseline / vtc ${(base / vtc).toFixed(2)}× (projection from measured points)`,
    )
  }
}

/** The line y = a + b·x through [x, y] points, least squares, and its R². */
function leastSquares(points) {
  const n = points.length
  const mx = points.reduce((s, [x]) => s + x, 0) / n
  const my = points.reduce((s, [, y]) => s + y, 0) / n
  const sxx = points.reduce((s, [x]) => s + (x - mx) ** 2, 0)
  const sxy = points.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0)
  const b = sxx > 0 ? sxy / sxx : 0
  const a = my - b * mx
  const ssr = points.reduce((s, [x, y]) => s + (y - a - b * x) ** 2, 0)
  const sst = points.reduce((s, [, y]) => s + (y - my) ** 2, 0)
  return { a, b, r2: sst > 0 ? 1 - ssr / sst : 1 }
}
