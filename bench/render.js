#!/usr/bin/env node
// Renderer throughput against the reference pipeline (reportlab + pdftoppm, ../shared/tools/ref_render.py),
// both measured in this run on the same texts. Usage: node bench/render.js [N_TEXTS] [--no-ref]
// Both sides write their files under TMPDIR (Node's os.tmpdir() and Python's tempfile honour it), so
// `TMPDIR=/dev/shm node bench/render.js` measures both without disk file-creation costs. When TMPDIR is
// on a disk, single-thread PNG is also measured with its files on tmpfs (/dev/shm), in the same run.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Renderer } from '../dist/index.js'

const shared = fileURLToPath(new URL('../../shared/', import.meta.url))
const args = process.argv.slice(2)
const n = Number(args.find((a) => /^\d+$/.test(a)) ?? Infinity)
const all = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
const texts = all.slice(0, n)

const renderer = await Renderer.create()
await renderer.renderBatch(texts.slice(0, 2)) // warm the glyph cache once, as a long-running service would be

// Each mode runs `repeat` times and reports the median run: on a shared VM single runs vary by ±15%.
async function measure(label, opts, repeat) {
  const runs = []
  for (let i = 0; i < repeat; i++) {
    const dir = opts.png ? mkdtempSync(join(opts.dir ?? tmpdir(), 'vtc-bench-')) : undefined
    const t0 = performance.now()
    const res = await renderer.renderBatch(texts, { ...opts.batch, outDir: dir })
    const secs = (performance.now() - t0) / 1000
    runs.push({ secs, pages: res.reduce((s, r) => s + r.pageSizes.length, 0) })
    if (dir) rmSync(dir, { recursive: true, force: true })
  }
  runs.sort((a, b) => b.pages / b.secs - a.pages / a.secs)
  const { secs, pages } = runs[Math.floor(runs.length / 2)]
  const rate = pages / secs
  console.log(`${label.padEnd(50)} ${String(pages).padStart(6)} pages ${secs.toFixed(3).padStart(7)} s ${rate.toFixed(1).padStart(9)} pages/s  (median of ${repeat})`)
  return rate
}

console.log(`${texts.length} texts from golden/render/texts.jsonl, ${availableParallelism()} cores, files under ${tmpdir()}`)
const pngOne = await measure('vtc-r1, PNG files, 1 thread', { png: true, batch: { threads: 1, format: 'png' } }, 9)
// Writing 3000+ PNG files a second is 200+ MB/s: on a VM disk that is often the limit (file creation
// there ranges from 35 to 900 µs). The same run on tmpfs shows the renderer's own speed.
const shm = '/dev/shm'
const onTmpfs = tmpdir().startsWith(shm) || !existsSync(shm)
const pngOneShm = onTmpfs
  ? undefined
  : await measure(`vtc-r1, PNG files on tmpfs ${shm}, 1 thread`, { png: true, dir: shm, batch: { threads: 1, format: 'png' } }, 9)
await measure(`vtc-r1, PNG files, ${availableParallelism()} threads`, { png: true, batch: { format: 'png' } }, 9)
const rgbAll = await measure(`vtc-r1, raw RGB in memory, ${availableParallelism()} threads`, { batch: { channels: 3 } }, 9)
const greyAll = await measure(`vtc-r1, raw grey in memory, ${availableParallelism()} threads`, { batch: { channels: 1 } }, 9)

if (!args.includes('--no-ref')) {
  const file = join(mkdtempSync(join(tmpdir(), 'vtc-ref-')), 'texts.jsonl')
  writeFileSync(file, texts.map((t) => JSON.stringify(t)).join('\n') + '\n')
  let ref
  try {
    ref = JSON.parse(execFileSync('python3', [join(shared, 'tools/ref_render.py'), 'bench', file], { encoding: 'utf8' }))
  } catch (err) {
    console.log(`reference pipeline not runnable here (${err.message.split('\n')[0]}); install: pip install reportlab pillow numpy; apt-get install poppler-utils`)
    process.exit(0)
  }
  console.log(`${'reference (reportlab + pdftoppm), PNG files'.padEnd(50)} ${String(ref.pages).padStart(6)} pages ${ref.seconds.toFixed(2).padStart(7)} s ${ref.pages_per_s.toFixed(1).padStart(9)} pages/s`)
  console.log(`ratio PNG, 1 thread vs reference:   ${(pngOne / ref.pages_per_s).toFixed(1)}×`)
  if (pngOneShm) console.log(`ratio PNG on tmpfs, 1 thread vs reference: ${(pngOneShm / ref.pages_per_s).toFixed(1)}×`)
  console.log(`ratio raw grey, all cores vs reference: ${(greyAll / ref.pages_per_s).toFixed(1)}×`)
  console.log(`ratio raw RGB, all cores vs reference:  ${(rgbAll / ref.pages_per_s).toFixed(1)}×`)
}
