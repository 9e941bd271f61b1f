#!/usr/bin/env node
// Continuous batching on the embedded engine, each configuration in its own process (for its peak RSS):
// 1. decode: B requests submitted at once (different prompts, greedy, a fixed number of tokens past end-of-turn)
//    with maxBatch B, for each B of --batches: aggregate decode tok/s while all B decode together (from the last
//    sequence's first token to the first sequence's end), per-sequence tok/s, the worst gap between two streamed
//    events of any sequence (newcomers prefill in chunks between decode steps), and peak RSS. The ratios are
//    against B = 1 in the same run.
// 2. loop: one AIME-style question × --loop-samples samples through the optical-memory loop with a fixed token
//    schedule (--rounds rounds of --round-tokens, past end-of-turn; sampled, seed per sample), all samples at
//    once with maxBatch = samples, against the same samples one at a time (maxBatch 1); wall time of each.
//
//   node bench/batch.js [--model DIR] [--dtype f32] [--quantize Q] [--batches 1,4,8,16] [--decode 128]
//                       [--prompt-tokens 64] [--loop-samples 16] [--rounds 2] [--round-tokens 256] [--no-loop]
//
// --model defaults to the 1024×8 random GLM-4.1V bench model (see engine.js). Build first: npm run build.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { fmt, machineLine, measureMachine, pickModel, printTable, shared } from './engine-common.js'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : dflt
}
const QUESTION = 'Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$'

if (args[0] === '--worker') {
  const spec = JSON.parse(readFileSync(args[1], 'utf8'))
  console.log(JSON.stringify(spec.kind === 'loop' ? await loopWorker(spec) : await decodeWorker(spec)))
} else {
  await drive()
}

async function drive() {
  const { model } = pickModel(opt('family', opt('model') ? undefined : 'glm4v'), opt('model'))
  const batches = opt('batches', '1,4,8,16').split(',').map(Number)
  const decode = Number(opt('decode', 128))
  const promptTokens = Number(opt('prompt-tokens', 64))
  const engine = { dtype: opt('dtype', 'f32'), ...(opt('quantize') ? { quantize: opt('quantize') } : {}) }
  const machine = measureMachine()
  console.log(machineLine(machine))
  console.log(`model ${model}, ${engine.dtype}${engine.quantize ? ` + ${engine.quantize}` : ''}`)

  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-batch-'))
  const worker = (spec) => {
    const file = join(dir, 'spec.json')
    writeFileSync(file, JSON.stringify({ model, engine, ...spec }))
    const env = { ...process.env, RAYON_NUM_THREADS: String(availableParallelism()) }
    const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--worker', file], { env, encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] })
    return JSON.parse(out.trim().split('\n').pop())
  }

  // different prompts of about promptTokens words each, cut from the reasoning texts
  const texts = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
  const words = texts.join(' ').split(/\s+/)
  const prompts = Array.from({ length: Math.max(...batches) + 1 }, (_, i) => words.slice(i * promptTokens, (i + 1) * promptTokens).join(' '))

  console.log(`\ndecode: B requests at once, prompts of ${promptTokens} words, ${decode} tokens each`)
  const rows = batches.map((b) => ({ b, ...worker({ kind: 'decode', batch: b, decode, prompts }) }))
  const one = rows.find((r) => r.b === 1)
  const table = [['batch', 'aggregate tok/s', 'per sequence', 'vs batch 1', 'worst gap ms', 'peak RSS MB']]
  for (const r of rows) {
    table.push([String(r.b), fmt(r.aggregate), fmt(r.aggregate / r.b), one ? `${(r.aggregate / one.aggregate).toFixed(2)}×` : '–', fmt(r.worst_gap_ms), fmt(r.peak_rss_mb)])
  }
  printTable(table)

  if (!args.includes('--no-loop')) {
    const samples = Number(opt('loop-samples', 16))
    const loop = { kind: 'loop', samples, rounds: Number(opt('rounds', 2)), roundTokens: Number(opt('round-tokens', 256)) }
    console.log(`\nloop: one question × ${samples} samples, ${loop.rounds} rounds × ${loop.roundTokens} tokens each (fixed schedule)`)
    const batched = worker({ ...loop, batch: Math.min(samples, 16) })
    const alone = worker({ ...loop, batch: 1 })
    printTable([
      ['', 'wall s', 'tokens', 'pages', 'peak RSS MB'],
      ['one at a time', fmt(alone.wall_s), String(alone.tokens), String(alone.pages), fmt(alone.peak_rss_mb)],
      [`batched (${Math.min(samples, 16)})`, fmt(batched.wall_s), String(batched.tokens), String(batched.pages), fmt(batched.peak_rss_mb)],
    ])
    console.log(`batched is ${(alone.wall_s / batched.wall_s).toFixed(2)}× faster; time in vision encode (one at a time): ${fmt(alone.vision_s)} s, which batching does not share`)
    if (batched.tokens !== alone.tokens) throw new Error('the two runs generated different token counts: the schedule was not kept')
  }
  rmSync(dir, { recursive: true, force: true })
}

async function decodeWorker(spec) {
  const { NativeEngine } = await import('../index.js')
  const engine = await NativeEngine.load(spec.model, { ...spec.engine, maxBatch: spec.batch })
  const request = (text, maxTokens) => ({ messages: [{ role: 'user', content: [{ type: 'text', text }] }], maxTokens, ignoreEos: true, temperature: 0 })
  await engine.generate(request(spec.prompts[spec.prompts.length - 1], 4), () => {}) // warm-up
  const t0 = performance.now()
  const streams = Array.from({ length: spec.batch }, () => [])
  const results = await Promise.all(
    streams.map((times, i) =>
      engine.generate(request(spec.prompts[i], spec.decode), (ev) => {
        times.push([performance.now() - t0, ev.tokens])
      }),
    ),
  )
  engine.dispose()
  for (const r of results) if (r.completionTokens !== spec.decode) throw new Error(`a sequence stopped after ${r.completionTokens} tokens`)
  // the window in which every sequence decodes: from the last first token to the first end
  const start = Math.max(...streams.map((s) => s[0][0]))
  const end = Math.min(...streams.map((s) => s[s.length - 1][0]))
  let aggregate
  if (end > start) {
    const tokens = streams.flatMap((s) => s.filter(([t]) => t > start && t <= end).map(([, n]) => n)).reduce((a, b) => a + b, 0)
    aggregate = tokens / ((end - start) / 1000)
  } else {
    aggregate = (spec.batch * spec.decode) / ((Math.max(...streams.map((s) => s[s.length - 1][0])) - start) / 1000)
  }
  const gaps = streams.flatMap((s) => s.slice(1).map(([t], i) => t - s[i][0]))
  return { aggregate, worst_gap_ms: Math.max(0, ...gaps), peak_rss_mb: process.resourceUsage().maxRSS / 1024 }
}

async function loopWorker(spec) {
  const { loadModel, OpticalMemory } = await import('../dist/index.js')
  const model = await loadModel(spec.model, { ...spec.engine, maxBatch: spec.batch })
  const options = (k) => ({ maxRounds: spec.rounds, roundTokens: spec.roundTokens, temperature: 0.6, topP: 0.95, seed: k, ignoreEos: true })
  const solve = (k) => new OpticalMemory(model, options(k)).solve(QUESTION)
  await new OpticalMemory(model, { ...options(999), maxRounds: 1, roundTokens: 4 }).solve(QUESTION) // warm-up
  const t0 = performance.now()
  const runs = []
  if (spec.batch === 1) {
    for (let k = 0; k < spec.samples; k++) runs.push(await solve(k))
  } else {
    runs.push(...(await Promise.all(Array.from({ length: spec.samples }, (_, k) => solve(k)))))
  }
  const wall_s = (performance.now() - t0) / 1000
  model.dispose()
  const tokens = runs.reduce((n, r) => n + r.rounds.reduce((m, x) => m + x.tokens, 0), 0)
  const pages = runs.reduce((n, r) => n + (r.totals.pages ?? 0), 0)
  const vision_s = runs.reduce((n, r) => n + r.totals.visionMs, 0) / 1000
  return { wall_s, tokens, pages, vision_s, peak_rss_mb: process.resourceUsage().maxRSS / 1024 }
}
