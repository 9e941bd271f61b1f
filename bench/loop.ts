/**
 * End-to-end latency of the optical-memory loop against the long-context baseline on the embedded engine, with a
 * fixed token schedule (every round generates its full budget, past end-of-turn), so both modes do the same
 * generation work: vtc = `rounds` rounds of `round-tokens`, baseline = one round of `rounds × round-tokens`.
 * Each mode runs with the engine's reuse on (KV prefix + vision-feature cache, the default) and off, and the
 * script prints where the time goes. Meant for a small random model (scripts/make-random-qwen3vl.py): the text
 * is noise, but the work (render, vision encode, prefill, decode) is the real work of a run.
 *   npx tsx bench/loop.ts --model DIR [--rounds 4] [--round-tokens 1024] [--repeat 1] [--question TEXT]
 */
import { availableParallelism } from 'node:os'
import { parseArgs } from 'node:util'

import { loadModel, type LoadModelOptions } from '../src/backends/embedded.js'
import { OpticalMemory, type MemoryMode, type MemoryResult } from '../src/memory.js'

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    rounds: { type: 'string', default: '4' },
    'round-tokens': { type: 'string', default: '1024' },
    repeat: { type: 'string', default: '1' },
    // AIME 2025 I, problem 1
    question: { type: 'string', default: 'Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$' },
  },
})
const int = (name: string, v: string) => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${v}`)
  return n
}
if (!values.model) throw new Error('usage: npx tsx bench/loop.ts --model DIR [--rounds 4] [--round-tokens 1024] [--repeat 1]')
const rounds = int('rounds', values.rounds)
const roundTokens = int('round-tokens', values['round-tokens'])
const repeat = int('repeat', values.repeat)

const CONFIGS: { label: string; options: LoadModelOptions }[] = [
  { label: 'reuse on', options: {} },
  { label: 'reuse off', options: { prefixReuse: false, visionCache: false } },
]
// The paper's sampling, seeded: greedy decoding of a random model tends to repeat whitespace, which renders
// to few pages; sampled noise fills pages about as densely as real reasoning.
const memoryOptions = { maxRounds: rounds, roundTokens, temperature: 0.6, topP: 0.95, seed: 0, ignoreEos: true }

const s = (ms: number) => (ms / 1000).toFixed(1)

function check(r: MemoryResult): void {
  const want = r.mode === 'vtc' ? rounds : 1
  const perRound = r.mode === 'vtc' ? roundTokens : rounds * roundTokens
  if (r.rounds.length !== want || r.rounds.some((x) => x.tokens !== perRound)) {
    throw new Error(
      `${r.mode}: the schedule was not kept (${r.finishReason}; tokens per round ${r.rounds.map((x) => x.tokens).join(', ')}): ` +
        'the timings would not compare like with like',
    )
  }
}

function breakdown(label: string, r: MemoryResult): void {
  const t = r.totals
  const other = t.latencyMs - t.renderMs - t.visionMs - t.prefillMs - t.decodeMs
  const prompt = r.rounds.reduce((n, x) => n + (x.promptTokens ?? 0), 0)
  const cached = r.rounds.reduce((n, x) => n + (x.cachedTokens ?? 0), 0)
  console.log(
    `${label.padEnd(20)} ${s(t.latencyMs).padStart(7)} ${s(t.renderMs).padStart(7)} ${s(t.visionMs).padStart(7)} ` +
      `${s(t.prefillMs).padStart(7)} ${s(t.decodeMs).padStart(7)} ${s(other).padStart(6)} ` +
      `${String(t.outputTokens).padStart(6)} ${String(t.pages).padStart(5)} ${String(prompt).padStart(7)} ${String(prompt - cached).padStart(8)}`,
  )
}

function perRound(r: MemoryResult): void {
  for (const x of r.rounds) {
    console.log(
      `    round ${x.index}: ${x.images} pages read (${x.visionTokens} vision tokens, ${x.cachedImages ?? 0} from the cache), ` +
        `prompt ${x.promptTokens} tokens, ${x.cachedTokens ?? 0} of them from the KV cache; ` +
        `vision ${s(x.timings.visionMs ?? 0)} s, prefill ${s(x.timings.prefillMs ?? 0)} s, decode ${s(x.timings.decodeMs ?? 0)} s, ` +
        `render ${(x.renderMs / 1000).toFixed(2)} s → ${x.pages.length} pages`,
    )
  }
}

console.log(
  `model ${values.model}; ${rounds} rounds × ${roundTokens} tokens (baseline: 1 × ${rounds * roundTokens}); ` +
    `${availableParallelism()} cores; ${repeat} repeat(s)`,
)
const runs = new Map<string, MemoryResult['totals'][]>()
for (let rep = 1; rep <= repeat; rep++) {
  for (const config of CONFIGS) {
    const model = await loadModel(values.model, config.options)
    try {
      const memory = new OpticalMemory(model, memoryOptions)
      // touch the weights once so the first measured run does not pay for page faults (another question: only
      // the system prompt is shared, as between any two questions a server answers)
      await new OpticalMemory(model, { ...memoryOptions, maxRounds: 1, roundTokens: 4 }).solve('What is 1 + 1?')
      console.log(`\n[${rep}/${repeat}] ${config.label}`)
      console.log(`${'run'.padEnd(20)} ${'total s'.padStart(7)} ${'render'.padStart(7)} ${'vision'.padStart(7)} ${'prefill'.padStart(7)} ${'decode'.padStart(7)} ${'other'.padStart(6)} ${'tokens'.padStart(6)} ${'pages'.padStart(5)} ${'prompt'.padStart(7)} ${'uncached'.padStart(8)}`)
      // alternate the order between repeats, so drift on a shared machine does not favour one mode
      const modes: MemoryMode[] = rep % 2 ? ['vtc', 'baseline'] : ['baseline', 'vtc']
      for (const mode of modes) {
        const r = await memory.solve(values.question, { mode })
        check(r)
        breakdown(mode, r)
        if (mode === 'vtc') perRound(r)
        const key = `${config.label}/${mode}`
        runs.set(key, [...(runs.get(key) ?? []), r.totals])
      }
    } finally {
      model.dispose()
    }
  }
}

// best of the repeats: on a shared machine other load only ever adds time
const best = (key: string, f: (t: MemoryResult['totals']) => number) => Math.min(...runs.get(key)!.map(f))
const all = (key: string) => runs.get(key)!.map((t) => s(t.latencyMs)).join(', ')
const latency = (t: MemoryResult['totals']) => t.latencyMs
console.log(`\nend-to-end latency, best of ${repeat} (all runs in s):`)
console.log(`${'engine'.padEnd(12)} ${'vtc'.padStart(8)} ${'baseline'.padStart(9)}  baseline / vtc`)
for (const { label } of CONFIGS) {
  const v = best(`${label}/vtc`, latency)
  const b = best(`${label}/baseline`, latency)
  console.log(`${label.padEnd(12)} ${s(v).padStart(8)} ${s(b).padStart(9)}  ${(b / v).toFixed(2)}×   (vtc ${all(`${label}/vtc`)}; baseline ${all(`${label}/baseline`)})`)
}
// vision + prefill is what reuse can save; decode is the same work in both, and the noisiest part
const reusable = (t: MemoryResult['totals']) => t.visionMs + t.prefillMs
const [on, off] = CONFIGS.map(({ label }) => best(`${label}/vtc`, latency))
const [onVp, offVp] = CONFIGS.map(({ label }) => best(`${label}/vtc`, reusable))
console.log(`vtc with reuse vs without: ${(off / on).toFixed(2)}× end to end; vision + prefill ${s(offVp)} s → ${s(onVp)} s (${(offVp / onVp).toFixed(2)}×)`)
