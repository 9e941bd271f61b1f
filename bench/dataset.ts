/**
 * Throughput of `vtc-r1 dataset build` on ../shared/data/math500-r1-traces.parquet (raw_output as the trace),
 * where the time goes (reading, Qwen3 tokenization, segmentation, rendering, PNG encoding + writing), and the
 * projected time for OpenR1-Math-220K on this machine.
 *   npx tsx bench/dataset.ts [--rows N] [--workers N] [--repeat N]
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { buildDataset } from '../src/dataset/build.js'
import { listInputs, readRows, type InputRow, type OpenR1Row } from '../src/dataset/openr1.js'
import { PreparePool } from '../src/dataset/pool.js'
import { assistantTurns } from '../src/dataset/samples.js'
import { pickTrace } from '../src/dataset/trace.js'
import { Renderer } from '../src/render.js'
import { qwen3Segmenter, segmentWithEnds } from '../src/segment.js'
import { qwen3Tokenizer } from '../src/text-tokens.js'

const SHARED = fileURLToPath(new URL('../../shared/', import.meta.url))
const INPUT = `${SHARED}data/math500-r1-traces.parquet`
const OPENR1_SAMPLE = `${SHARED}data/openr1-sample.jsonl`
const COLUMNS = { problem: 'question', generations: 'raw_output', correctness_math_verify: 'correct', answer: 'ground_truth' }
const TARGET_ROWS = 220_000

const { values } = parseArgs({ options: { rows: { type: 'string' }, workers: { type: 'string' }, repeat: { type: 'string' } } })
const limit = values.rows ? Number(values.rows) : undefined
const workers = values.workers ? Number(values.workers) : availableParallelism()
// the whole build reads the file this many times over, so worker start-up (~1 s) does not dominate
const repeat = values.repeat ? Number(values.repeat) : 4

const secs = (t0: number) => (performance.now() - t0) / 1000
const fmt = (s: number) => (s >= 3600 ? `${(s / 3600).toFixed(2)} h` : s >= 60 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(2)} s`)
const line = (label: string, s: string) => console.log(`${label.padEnd(34)} ${s}`)

console.log(`machine: ${cpus()[0]?.model ?? '?'} × ${availableParallelism()} cores; workers ${workers}; node ${process.version}`)
qwen3Tokenizer() // load once (~0.3 s), not part of any stage

// 1. reading + selection
let t0 = performance.now()
const files = await listInputs([INPUT])
const rows: OpenR1Row[] = []
for await (const r of readRows(files, { columns: COLUMNS, end: limit })) if (r.ok) rows.push(r.row)
const tRead = secs(t0)
const traces = rows.flatMap((row) => {
  const p = pickTrace(row, ['any'])
  return p.ok ? [{ row, trace: p.trace }] : []
})
const reasoningChars = traces.reduce((a, x) => a + x.trace.reasoning.length, 0)

// 2. tokenization (Qwen3, JS) and segmentation
t0 = performance.now()
const ends = traces.map((x) => qwen3Segmenter.tokenEnds(x.trace.reasoning.normalize('NFC')))
const tTok = secs(t0)
const tokens = ends.reduce((a, e) => a + e.length, 0)
t0 = performance.now()
const turns = traces.map((x, i) =>
  assistantTurns(
    segmentWithEnds(x.trace.reasoning.normalize('NFC'), ends[i], 4096).map((s) => s.text),
    x.trace.answer,
  ),
)
const tSeg = secs(t0)
const rendered = turns.flatMap((ts, i) => ts.slice(0, -1).map((text, k) => ({ id: `r${i}_s${k}`, text })))
const renderedChars = rendered.reduce((a, x) => a + x.text.length, 0)

// 3. rendering: pixels only, then with PNG encoding and writing
const renderer = await Renderer.create()
t0 = performance.now()
const pixels = await renderer.renderBatch(rendered, { threads: workers })
const tRender = secs(t0)
const pages = pixels.reduce((a, r) => a + r.pageSizes.length, 0)
const pngDir = mkdtempSync(join(tmpdir(), 'vtc-bench-png-'))
t0 = performance.now()
await renderer.renderBatch(rendered, { threads: workers, outDir: pngDir })
const tRenderPng = secs(t0)
rmSync(pngDir, { recursive: true, force: true })
let tRender1 = NaN
if (workers > 1) {
  t0 = performance.now()
  await renderer.renderBatch(rendered, { threads: 1 })
  tRender1 = secs(t0)
}

// 4. preparation on worker threads (does the tokenizer scale across cores here?)
const prepOptions = { select: ['any' as const], answer: 'boxed' as const, segmentTokens: 4096, thinkEverySegment: true }
const inputRows: InputRow[] = []
for await (const r of readRows(files, { columns: COLUMNS, end: limit })) inputRows.push(r)
const batches = Array.from({ length: Math.ceil(inputRows.length / 32) }, (_, i) => inputRows.slice(i * 32, i * 32 + 32))
const poolTimes: Record<number, number> = {}
for (const n of workers > 1 ? [1, workers] : [1]) {
  const pool = new PreparePool(n, prepOptions)
  await pool.prepare(batches[0]) // start-up and warm-up excluded
  t0 = performance.now()
  await Promise.all(batches.map((b) => pool.prepare(b)))
  poolTimes[n] = secs(t0)
  await pool.close()
}

// 5. the whole build, 1 worker and `workers`
const builds: Record<number, { s: number; read: number; used: number; pages: number; samples: number }> = {}
for (const n of workers > 1 ? [1, workers] : [1]) {
  const out = mkdtempSync(join(tmpdir(), 'vtc-bench-ds-'))
  t0 = performance.now()
  const r = await buildDataset({ input: Array(repeat).fill(INPUT), outDir: out, columns: COLUMNS, select: ['any'], limit, workers: n })
  builds[n] = { s: secs(t0), read: r.stats.rows.read, used: r.stats.rows.used, pages: r.stats.pages, samples: r.stats.samples }
  rmSync(out, { recursive: true, force: true })
}
const best = Object.entries(builds).reduce((a, b) => (b[1].s < a[1].s ? b : a))
const tBuild = best[1].s / repeat

console.log(`\ninput: ${rows.length} rows, ${traces.length} with a complete <think> (used); ${reasoningChars} reasoning chars, ${tokens} tokens`)
console.log(`rendered segments: ${rendered.length} (${renderedChars} chars) → ${pages} pages\n`)
line('read parquet + normalize', `${fmt(tRead)}  (${(rows.length / tRead).toFixed(0)} rows/s)`)
line('Qwen3 tokenization (native, 1 thread)', `${fmt(tTok)}  (${(tokens / tTok / 1000).toFixed(0)}K tokens/s, ${(reasoningChars / tTok / 1e6).toFixed(2)}M chars/s)`)
line('segmentation (given tokens)', `${fmt(tSeg)}`)
line(`render, pixels only (${workers} threads)`, `${fmt(tRender)}  (${(pages / tRender).toFixed(0)} pages/s)`)
if (workers > 1) line('render, pixels only (1 thread)', `${fmt(tRender1)}  (${(pages / tRender1).toFixed(0)} pages/s)`)
line(`render + PNG encode/write (${workers} thr)`, `${fmt(tRenderPng)}  (${(pages / tRenderPng).toFixed(0)} pages/s; PNG ≈ ${fmt(Math.max(0, tRenderPng - tRender))})`)
for (const [n, t] of Object.entries(poolTimes)) line(`prepare on ${n} worker thread(s)`, `${fmt(t)}  (${(reasoningChars / t / 1e6).toFixed(2)}M chars/s)`)
for (const [n, b] of Object.entries(builds)) {
  line(
    `whole build ×${repeat}, ${n} worker(s)`,
    `${fmt(b.s)}  (${(b.read / b.s).toFixed(1)} rows/s, ${(b.used / b.s).toFixed(1)} used rows/s, ${(b.pages / b.s).toFixed(0)} pages/s, ${b.samples} samples)`,
  )
}

// 6. projection to OpenR1-Math-220K, stage by stage: tokenization scales with the reasoning's length,
// rendering with the part of it that is rendered (all segments but the last), the rest with the rows
const openr1 = readFileSync(OPENR1_SAMPLE, 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as { generations: string[] })
let o1Chars = 0
let o1Rendered = 0
for (const x of openr1) {
  const reasoning = x.generations[0].slice('<think>'.length, x.generations[0].indexOf('</think>')).normalize('NFC')
  const segs = segmentWithEnds(reasoning, qwen3Segmenter.tokenEnds(reasoning), 4096)
  o1Chars += reasoning.length
  o1Rendered += segs.slice(0, -1).reduce((a, seg) => a + seg.text.length, 0)
}
o1Chars /= openr1.length
o1Rendered /= openr1.length
const one = builds[1]
const perRowOther = Math.max(0, one.s / repeat - tTok - tSeg - tRenderPng - tRead) / rows.length
const tokPart = (tTok / reasoningChars) * o1Chars * TARGET_ROWS
const segPart = (tSeg / reasoningChars) * o1Chars * TARGET_ROWS
const renderPart = (tRenderPng / renderedChars) * o1Rendered * TARGET_ROWS
const otherPart = (perRowOther + tRead / rows.length) * TARGET_ROWS
const serial = tokPart + segPart + renderPart + otherPart
const speedup = one.s / best[1].s
console.log(
  `\nprojection to ${TARGET_ROWS} OpenR1 rows: reasoning ${(o1Chars / 1000).toFixed(1)}K chars per row, ` +
    `${(o1Rendered / 1000).toFixed(1)}K of them rendered (openr1-sample.jsonl; math500 here: ` +
    `${(reasoningChars / traces.length / 1000).toFixed(1)}K, ${(renderedChars / traces.length / 1000).toFixed(1)}K)`,
)
line('  Qwen3 tokenization (native)', fmt(tokPart))
line('  segmentation', fmt(segPart))
line('  rendering + PNG', fmt(renderPart))
line('  reading, JSON, stats, commits', fmt(otherPart))
line('  total, one worker', fmt(serial))
line(`  total, ${best[0]} workers (measured ×${speedup.toFixed(2)})`, `${fmt(serial / speedup)}  (target: < 1 h on 2 cores)`)
