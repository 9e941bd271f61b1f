/** `vtc-r1 render`: text → page images, with a compression summary. */
import { readdir, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { createReadStream } from 'node:fs'
import { parseArgs } from 'node:util'

import { VtcError } from '../errors.js'
import { Renderer, type BatchItem, type Preset } from '../render.js'
import { countTextTokensAsync } from '../text-tokens.js'
import { visionTokens } from '../tokens.js'
import { ProgressBar } from './progress.js'

export const RENDER_HELP = `usage: vtc-r1 render [FILE|-] [options]
  Renders reasoning text into VTC-R1 page images and prints pages, characters,
  text tokens vs. Qwen3-VL vision tokens (the compression ratio).

  FILE|-               a text file, or - for standard input
  --jsonl FILE         many texts: one {"id","text"} JSON object per line
  --preset NAME        vtc-r1 (default, DejaVu Sans) or glyph (needs --font)
  --config FILE        a VTC-R1/Glyph render config JSON (overrides the preset)
  --font FILE          main font file
  --fallback-font FILE font for characters the main font lacks (repeatable)
  --out DIR            write pages to DIR as <id>_page_NNN.png (default: no files); DIR must be empty or new
  --overwrite          let --out name a folder that is not empty: its earlier pages (*_page_NNN.png/pgm/ppm) are
                       removed first, other files are left alone
  --format png|raw     page file format: png (default), or raw pixels as binary PGM (grey) / PPM (RGB)
  --threads N          worker threads (default: all cores)
  --max-pixels N       Qwen3-VL pixel cap for the token count (default 262144, as VTC-R1 trains)
  --layout             print one JSON line per text, {id, pages: [[line…]…], sizes}, instead of images`

export async function renderCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      jsonl: { type: 'string' },
      preset: { type: 'string' },
      config: { type: 'string' },
      font: { type: 'string' },
      'fallback-font': { type: 'string', multiple: true },
      out: { type: 'string' },
      format: { type: 'string' },
      threads: { type: 'string' },
      'max-pixels': { type: 'string' },
      layout: { type: 'boolean' },
      overwrite: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(RENDER_HELP)
    return
  }
  const preset = (values.preset ?? 'vtc-r1') as Preset
  if (preset !== 'vtc-r1' && preset !== 'glyph') {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--preset ${preset}: allowed values are vtc-r1, glyph`)
  }
  const format = values.format ?? 'png'
  if (format !== 'png' && format !== 'raw') {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--format ${format}: allowed values are png, raw`)
  }
  const threads = values.threads === undefined ? undefined : positiveInt('--threads', values.threads)
  const maxPixels = values['max-pixels'] === undefined ? 262144 : positiveInt('--max-pixels', values['max-pixels'])

  const source = values.jsonl ?? (positionals[0] && positionals[0] !== '-' ? positionals[0] : 'standard input')
  const items = values.jsonl ? await readJsonl(values.jsonl) : [{ id: idFor(positionals[0]), text: await readInput(positionals[0]) }]
  if (items.every((it) => !it.text.trim())) {
    const what = items.length === 0 ? 'has no rows' : items.length > 1 ? 'has only empty texts' : 'has no text'
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${source} ${what}: nothing to render, no pages written`)
  }
  if (values.out && !values.layout) await prepareOutDir(values.out, values.overwrite === true)
  const renderer = await Renderer.create({
    preset,
    config: values.config,
    fontPath: values.font,
    fallbackFonts: values['fallback-font'],
  })

  // text tokens are counted on this thread while the native threads render; their bar shows once the
  // render bar (shown for many texts) is done
  const bar = new ProgressBar('render', items.length)
  const tokenBar = new ProgressBar('text tokens', items.reduce((n, it) => n + it.text.length, 0), 'chars')
  let rendered = false
  let tokenBarShown = false
  const counting = values.layout
    ? Promise.resolve([])
    : countTokens(items, (chars) => {
        if (!rendered && items.length > 1) return
        tokenBar.update(chars)
        tokenBarShown = true
      })
  counting.catch(() => {}) // awaited below, after rendering
  const results = await renderer.renderBatch(items, {
    outDir: values.layout ? undefined : values.out,
    format,
    threads,
    onProgress: items.length > 1 ? (p) => bar.update(p.textsDone, { pages: p.pagesDone }) : undefined,
  })
  rendered = true
  if (items.length > 1) bar.done()

  if (values.layout) {
    for (const [i, r] of results.entries()) {
      const pages = r.error ? [] : await renderer.layout(items[i].text)
      console.log(JSON.stringify({ id: r.id, pages, sizes: r.pageSizes, ...(r.error ? { error: r.error } : {}) }))
    }
    return
  }
  const tokens = await counting
  if (tokenBarShown) tokenBar.done()

  let pages = 0
  let chars = 0
  let textTokens = 0
  let vision = 0
  let visionUncapped = 0
  let missing = 0
  const failed: string[] = []
  const empty: string[] = []
  for (const [i, r] of results.entries()) {
    if (r.error) failed.push(`${r.id}: ${r.error}`)
    else if (r.pageSizes.length === 0) empty.push(r.id)
    else textTokens += tokens[i] // the ratio compares the texts that gave pages
    pages += r.pageSizes.length
    chars += r.chars
    missing += r.missingGlyphs
    for (const [w, h] of r.pageSizes) {
      vision += visionTokens(w, h, 'qwen3-vl', { maxPixels })
      visionUncapped += visionTokens(w, h, 'qwen3-vl')
    }
  }
  console.log(summary({ texts: items.length, pages, chars, textTokens, vision, visionUncapped, maxPixels, missing }))
  if (empty.length) console.log(`${empty.length} text(s) gave no page (nothing visible to render): ${empty.slice(0, 10).join(', ')}${empty.length > 10 ? ', …' : ''}`)
  const written = results.reduce((n, r) => n + r.files.length, 0)
  if (values.out) {
    const kind = format === 'png' ? 'PNG' : 'PGM/PPM'
    console.log(written ? `${written} pages written to ${values.out} as ${kind} (<id>_page_NNN)` : `no pages written to ${values.out}`)
  }
  if (failed.length) {
    console.error(`${failed.length} text(s) failed:\n  ${failed.join('\n  ')}`)
    process.exitCode = 1
  } else if (pages === 0) {
    console.error(`${source}: no text gave a page`)
    process.exitCode = 1
  }
}

/** Text tokens of each text (0 for one the renderer refuses), reporting the characters counted so far. */
async function countTokens(items: BatchItem[], onProgress: (chars: number) => void): Promise<number[]> {
  const counts: number[] = []
  let before = 0
  for (const { text } of items) {
    counts.push(text.isWellFormed() ? await countTextTokensAsync(text, (c) => onProgress(before + c)) : 0)
    before += text.length
  }
  return counts
}

export function summary(s: {
  texts: number
  pages: number
  chars: number
  textTokens: number
  vision: number
  visionUncapped: number
  maxPixels: number
  missing: number
}): string {
  const ratio = (a: number, b: number) => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a')
  return [
    `texts          ${s.texts}`,
    `pages          ${s.pages}`,
    `characters     ${s.chars}${s.missing ? ` (${s.missing} without a glyph, drawn as boxes)` : ''}`,
    `text tokens    ${s.textTokens} (Qwen3 tokenizer)`,
    `vision tokens  ${s.vision} (Qwen3-VL, max_pixels ${s.maxPixels}); ${s.visionUncapped} uncapped`,
    `compression    ${ratio(s.textTokens, s.vision)} text/vision tokens (${ratio(s.textTokens, s.visionUncapped)} uncapped)`,
  ].join('\n')
}

function positiveInt(flag: string, v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected a positive integer`)
  return n
}

function idFor(path: string | undefined): string {
  if (!path || path === '-') return 'stdin'
  return path.replace(/^.*[\\/]/, '').replace(/\.[^.]*$/, '') || 'text'
}

async function readInput(path: string | undefined): Promise<string> {
  if (!path || path === '-') {
    if (!path && process.stdin.isTTY) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'no input: give a FILE, - for standard input, or --jsonl FILE (see vtc-r1 render --help)')
    }
    const chunks: Buffer[] = []
    for await (const c of process.stdin) chunks.push(c as Buffer)
    return Buffer.concat(chunks).toString('utf8')
  }
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw new VtcError('ERR_VTC_IO', `cannot read ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Reads `{id, text}` rows; a malformed line is an error naming the file and line. */
export async function readJsonl(path: string): Promise<BatchItem[]> {
  const rows: BatchItem[] = []
  let n = 0
  const stream = createReadStream(path, { encoding: 'utf8' })
  const opened = new Promise<void>((resolve, reject) => {
    stream.once('open', () => resolve())
    stream.once('error', (err) => reject(new VtcError('ERR_VTC_IO', `cannot read ${path}: ${err.message}`, { cause: err })))
  })
  await opened
  for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
    n++
    if (!line.trim()) continue
    let row: unknown
    try {
      row = JSON.parse(line)
    } catch (err) {
      throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}:${n}: not valid JSON (${(err as Error).message})`)
    }
    const r = row as { id?: unknown; text?: unknown }
    if (typeof r?.text !== 'string') throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}:${n}: missing string field "text"`)
    rows.push({ id: r.id === undefined ? String(n) : String(r.id), text: r.text })
  }
  return rows
}

/** Page files a render run writes: `<id>_page_NNN.png`, `.pgm` or `.ppm`. */
const PAGE_FILE = /_page_\d{3,}\.(png|pgm|ppm)$/

/**
 * `--out` must not mix two runs' pages: a folder that is not empty is refused unless `overwrite`, and then the
 * earlier run's pages are removed (only those: other files in it are the user's).
 */
async function prepareOutDir(dir: string, overwrite: boolean): Promise<void> {
  let entries: string[]
  try {
    entries = await readdir(dir)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--out ${dir}: ${(err as Error).message}`)
  }
  if (entries.length === 0) return
  if (!overwrite) {
    const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? ', …' : '')
    throw new VtcError(
      'ERR_VTC_INVALID_ARGUMENT',
      `--out ${dir} is not empty (${entries.length} entries: ${shown}); pass --overwrite to replace an earlier run's pages, or choose a new folder`,
    )
  }
  await Promise.all(entries.filter((e) => PAGE_FILE.test(e)).map((e) => rm(join(dir, e), { force: true })))
}
