import { spawnSync } from 'node:child_process'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { countTextTokens, Renderer, renderText, VtcError } from '../src/index.js'
import { goldenLayouts, goldenTexts, pngHeader } from './helpers.js'

const texts = goldenTexts()
const layouts = new Map(goldenLayouts().map((l) => [l.id, l]))

test('pages match the reference page count and cropped sizes within ±2 px', async (t) => {
  const renderer = await Renderer.create()
  const results = await renderer.renderBatch(texts)
  for (const r of results) {
    const ref = layouts.get(r.id)!
    t.is(r.pageSizes.length, ref.sizes.length, `${r.id}: page count`)
    r.pageSizes.forEach(([w, h], i) => {
      const [rw, rh] = ref.sizes[i] ?? [NaN, NaN]
      t.true(Math.abs(w - rw) <= 2 && Math.abs(h - rh) <= 2, `${r.id} page ${i + 1}: ${w}×${h} vs reference ${rw}×${rh}`)
    })
  }
})

test('layout() returns the reference lines for a real trace', async (t) => {
  const text = texts.find((x) => x.id === 'openr1-0')!.text
  const pages = await (await Renderer.create()).layout(text)
  t.deepEqual(pages, layouts.get('openr1-0')!.pages)
})

test('a page is raw pixels without PNG, and encodes to a valid PNG on request', async (t) => {
  const { pages } = await renderText('Hello, optical memory.', { channels: 1 })
  t.is(pages.length, 1)
  const [p] = pages
  t.is(p.channels, 1)
  t.is(p.data.length, p.width * p.height)
  t.true(p.data.some((v) => v < 128), 'some ink')
  const png = await p.png()
  t.deepEqual(pngHeader(png), { width: p.width, height: p.height, colorType: 0 })
  const rgb = (await renderText('Hello, optical memory.', { png: true })).pages[0]
  t.is(rgb.data.length, rgb.width * rgb.height * 3)
  t.is(pngHeader(await rgb.png()).colorType, 2)
})

test('empty text gives zero pages and no error', async (t) => {
  const r = await renderText('')
  t.is(r.pages.length, 0)
})

test('NUL and control characters do not crash the renderer', async (t) => {
  const r = await renderText('a\u0000b\u0001c\u0007d\u001be\r\nf\u000bg\u000ch\u007f')
  t.true(r.pages.length >= 1)
})

test('lone UTF-16 surrogates are rejected with the position', async (t) => {
  const err = await t.throwsAsync(renderText('ok \ud800 bad'), { instanceOf: VtcError })
  t.is(err!.code, 'ERR_VTC_INVALID_TEXT')
  t.regex(err!.message, /U\+D800 at code point 3/)
})

test('an unknown config key is named with the allowed keys', async (t) => {
  const err = await t.throwsAsync(Renderer.create({ config: { 'font-szie': 9 } as never }), { instanceOf: VtcError })
  t.is(err!.code, 'ERR_VTC_CONFIG')
  t.regex(err!.message, /`font-szie`.*allowed keys: page-size/)
})

test('a bad config value is named', async (t) => {
  const err = await t.throwsAsync(Renderer.create({ config: { 'page-size': '595x842' } }), { instanceOf: VtcError })
  t.regex(err!.message, /`page-size`/)
})

test('a corrupt or missing font file is named in the error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-font-'))
  const bad = join(dir, 'broken.ttf')
  writeFileSync(bad, Buffer.from('definitely not a font'))
  const e1 = await t.throwsAsync(Renderer.create({ fontPath: bad }), { instanceOf: VtcError })
  t.is(e1!.code, 'ERR_VTC_FONT')
  t.true(e1!.message.includes(bad))
  const missing = join(dir, 'missing.ttf')
  const e2 = await t.throwsAsync(Renderer.create({ fallbackFonts: [missing] }), { instanceOf: VtcError })
  t.true(e2!.message.includes(missing))
})

// the reference config_en.json (spec/rendering.md), which names its font bare
const CONFIG_EN = {
  'page-size': '595,842', dpi: 72, 'margin-x': 10, 'margin-y': 10, 'font-path': 'DejaVuSans.ttf', 'font-size': 9,
  'line-height': 10, 'font-color': '#000000', alignment: 'LEFT', 'horizontal-scale': 1.0, 'first-line-indent': 0,
  'left-indent': 0, 'right-indent': 0, 'space-after': 0, 'space-before': 0, 'border-width': 0, 'border-padding': 0,
  'page-bg-color': '#FFFFFF', 'para-bg-color': '#FFFFFF', 'auto-crop-width': true, 'auto-crop-last-page': true,
}
const BUNDLED_FONT = fileURLToPath(new URL('../fonts/DejaVuSans.ttf', import.meta.url))

/** A config file in a fresh directory (not the working directory), with `files` copied beside it. */
function configDir(config: object, files: Record<string, string> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-config-'))
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config))
  for (const [name, from] of Object.entries(files)) copyFileSync(from, join(dir, name))
  return join(dir, 'config.json')
}

test('the reference config_en.json works from any directory: a bare font name falls back to the bundled font', async (t) => {
  const config = configDir(CONFIG_EN)
  const [a, b] = await Promise.all([
    (await Renderer.create({ config })).render(texts[0].text),
    (await Renderer.create()).render(texts[0].text),
  ])
  t.deepEqual(a.pages.map((p) => p.data), b.pages.map((p) => p.data))
})

test('a font named in a config file is found beside the config file first', async (t) => {
  const config = configDir({ ...CONFIG_EN, 'font-path': 'MyFont.ttf' }, { 'MyFont.ttf': BUNDLED_FONT })
  const r = await (await Renderer.create({ config })).render('beside the config')
  t.is(r.pages.length, 1)
})

test.serial('a bare font name is looked up in the system font directories; a miss names every place searched', async (t) => {
  const data = mkdtempSync(join(tmpdir(), 'vtc-xdg-'))
  mkdirSync(join(data, 'fonts/truetype/some-family'), { recursive: true })
  copyFileSync(BUNDLED_FONT, join(data, 'fonts/truetype/some-family/SystemOnly.ttf'))
  const saved = process.env.XDG_DATA_DIRS
  process.env.XDG_DATA_DIRS = data
  try {
    const config = configDir({ ...CONFIG_EN, 'font-path': 'systemonly.TTF' })
    t.is((await (await Renderer.create({ config })).render('a system font')).pages.length, 1)
    t.is((await (await Renderer.create({ fontPath: 'SystemOnly.ttf' })).render('a system font')).pages.length, 1)

    const missing = configDir({ ...CONFIG_EN, 'font-path': 'NoSuchFont.ttf' })
    const err = await t.throwsAsync(Renderer.create({ config: missing }), { instanceOf: VtcError })
    t.is(err!.code, 'ERR_VTC_FONT')
    t.true(err!.message.includes(`"font-path" of ${missing} "NoSuchFont.ttf"`), err!.message)
    for (const place of [dirname(missing), process.cwd(), dirname(BUNDLED_FONT), join(data, 'fonts')]) {
      t.true(err!.message.includes(place), `${place} in: ${err!.message}`)
    }
  } finally {
    if (saved === undefined) delete process.env.XDG_DATA_DIRS
    else process.env.XDG_DATA_DIRS = saved
  }
})

test('the glyph preset asks for Verdana instead of guessing a font', async (t) => {
  const err = await t.throwsAsync(Renderer.create({ preset: 'glyph' }), { instanceOf: VtcError })
  t.regex(err!.message, /Verdana/)
})

test('characters no font has are counted and drawn as boxes; a fallback font removes them', async (t) => {
  const text = '设函数 f(x) 满足 f(x+1)=2f(x)'
  const plain = await renderText(text)
  t.is(plain.missingGlyphs, 5)
  t.true(plain.pages[0].data.some((v) => v < 128))
})

const MONO = '/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf'
const BUNDLED = fileURLToPath(new URL('../fonts/DejaVuSans.ttf', import.meta.url))

test('fallback fonts are chosen per character', async (t) => {
  // DejaVu Sans Mono lacks these Cyrillic letters; the bundled DejaVu Sans has them.
  const text = 'Ѡѡ Ѥ and ascii'
  const alone = await renderText(text, { fontPath: MONO })
  t.is(alone.missingGlyphs, 3)
  const withFallback = await renderText(text, { fontPath: MONO, fallbackFonts: [BUNDLED] })
  t.is(withFallback.missingGlyphs, 0)
  t.notDeepEqual(withFallback.pages[0].data, alone.pages[0].data)
})

test('renderBatch writes pages atomically, reports progress and per-text results', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-batch-'))
  const items = texts.slice(0, 6)
  const seen: number[] = []
  const results = await (await Renderer.create()).renderBatch(items, {
    outDir: dir,
    onProgress: (p) => seen.push(p.textsDone),
  })
  t.is(results.length, items.length)
  t.is(Math.max(...seen), items.length)
  const files = readdirSync(dir).sort()
  t.is(files.length, results.reduce((n, r) => n + r.files.length, 0))
  t.false(files.some((f) => f.includes('.tmp')))
  const first = results[0]
  t.is(first.files.length, first.pageSizes.length)
  const h = pngHeader(readFileSync(first.files[0]))
  t.deepEqual([h.width, h.height], first.pageSizes[0])
})

test('raw pages are binary PGM/PPM whose header gives the page size', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-raw-'))
  const renderer = await Renderer.create()
  for (const channels of [1, 3] as const) {
    const [r] = await renderer.renderBatch([{ id: `c${channels}`, text: texts[0].text }], { outDir: dir, format: 'raw', channels })
    t.is(r.files.length, r.pageSizes.length)
    for (const [k, file] of r.files.entries()) {
      t.true(file.endsWith(channels === 1 ? '.pgm' : '.ppm'), file)
      const bytes = readFileSync(file)
      const m = /^(P[56])\n(\d+) (\d+)\n255\n/.exec(bytes.subarray(0, 32).toString('latin1'))
      t.truthy(m, `${file} starts with a netpbm header`)
      t.is(m![1], channels === 1 ? 'P5' : 'P6')
      t.deepEqual([Number(m![2]), Number(m![3])], r.pageSizes[k])
      t.is(bytes.length - m![0].length, r.pageSizes[k][0] * r.pageSizes[k][1] * channels)
    }
  }
})

test('renderBatch reports a bad text in its result and renders the others', async (t) => {
  const results = await (await Renderer.create()).renderBatch([
    { id: 'good', text: 'fine' },
    { id: 'bad', text: 'broken \udc00' },
  ])
  t.is(results[0].pageSizes.length, 1)
  t.regex(results[1].error ?? '', /lone surrogate/)
})

test('renderBatch refuses ids that would overwrite each other', async (t) => {
  const err = await t.throwsAsync((await Renderer.create()).renderBatch([
    { id: 'a/b', text: 'x' },
    { id: 'a_b', text: 'y' },
  ]))
  t.regex(err!.message, /same file name/)
})

test('an aborted batch stops with an abort error', async (t) => {
  const controller = new AbortController()
  const big = texts.map((x, i) => ({ id: `t${i}`, text: x.text.repeat(20) }))
  const run = (await Renderer.create()).renderBatch(big, {
    threads: 1,
    signal: controller.signal,
    onProgress: () => controller.abort(),
  })
  const err = await t.throwsAsync(run)
  t.true(err instanceof VtcError && err.code === 'ABORT_ERR', String(err))
})

test.serial('a signal aborted before the call, or during it, stops render, renderBatch and layout with ABORT_ERR', async (t) => {
  const renderer = await Renderer.create()
  const one = (await renderer.layout(texts[2].text)).length
  const text = texts[2].text.repeat(Math.ceil(500 / one)) // ~500 pages
  const aborted = AbortSignal.abort()
  for (const run of [
    () => renderer.render(text, { signal: aborted }),
    () => renderText(text, { signal: aborted }),
    () => renderer.renderBatch([{ id: 'a', text }], { signal: aborted }),
    () => renderer.layout(text, { signal: aborted }),
  ]) {
    const err = await t.throwsAsync(run())
    t.true(err instanceof VtcError && err.code === 'ABORT_ERR', String(err))
  }
  // Mid-render: the whole text takes far longer than the 20 ms before the abort.
  const whole = Date.now()
  const pages = (await renderer.render(text, { channels: 1, maxPages: 2000 })).pages.length
  const wholeMs = Date.now() - whole
  const controller = new AbortController()
  const started = Date.now()
  const run = renderer.render(text, { channels: 1, maxPages: 2000, signal: controller.signal })
  setTimeout(() => controller.abort(), 20)
  const err = await t.throwsAsync(run)
  t.true(err instanceof VtcError && err.code === 'ABORT_ERR', String(err))
  t.true(Date.now() - started < Math.max(20 + wholeMs / 2, 100), `aborted after ${Date.now() - started} ms; the whole ${pages} pages take ${wholeMs} ms`)
})

// Serial (before the concurrent tests): its 1,000 pages would count in the page stream's memory test.
test.serial('render() holds at most maxPages pages (default 1000) and says how to stream longer texts', async (t) => {
  const renderer = await Renderer.create()
  const text = texts.map((x) => x.text).join('\n')
  const n = (await renderer.render(text, { channels: 1 })).pages.length
  t.true(n > 3, `${n} pages`)
  t.is((await renderer.render(text, { channels: 1, maxPages: n })).pages.length, n)
  const err = await t.throwsAsync(renderer.render(text, { channels: 1, maxPages: n - 1 }))
  t.true(err instanceof VtcError && err.code === 'ERR_VTC_INVALID_ARGUMENT', String(err))
  t.regex(err!.message, new RegExp(`maxPages.*more than ${n - 1} pages.*renderer\\.pages\\(text\\)`))
  for (const bad of [0, -1, 1.5, 2 ** 32]) await t.throwsAsync(renderer.render(text, { maxPages: bad }), { message: /maxPages/ })
  // The default: a text of thousands of pages is refused once page 1,001 is drawn, not after all of them.
  const long = text.repeat(Math.ceil(1100 / n) + 1)
  const e2 = await t.throwsAsync(renderer.render(long, { channels: 1 }))
  t.regex(e2!.message, /more than 1000 pages/)
})

test('a very long text streams page by page in bounded memory', async (t) => {
  // ~30 MB of real reasoning text: thousands of pages, never all in memory at once.
  const base = texts.map((x) => x.text).join('\n')
  const text = base.repeat(Math.ceil(30e6 / base.length))
  const renderer = await Renderer.create()
  const before = process.memoryUsage().rss
  let pages = 0
  let peak = before
  for await (const page of renderer.pages(text, { channels: 1 })) {
    pages++
    t.true(page.width > 0 && page.height > 0)
    if (pages % 200 === 0) peak = Math.max(peak, process.memoryUsage().rss)
  }
  t.true(pages > 3000, `${pages} pages`)
  const growthMb = (peak - before) / 2 ** 20
  t.true(growthMb < 400, `RSS grew by ${growthMb.toFixed(0)} MB while streaming ${pages} pages`)
})

test('breaking out of a page stream stops it', async (t) => {
  const renderer = await Renderer.create()
  let n = 0
  for await (const _ of renderer.pages(texts[2].text.repeat(50))) {
    if (++n === 3) break
  }
  t.is(n, 3)
})

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const cli = (args: string[], input?: string) =>
  spawnSync(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), 'render', ...args], { encoding: 'utf8', cwd: ROOT, input })

test('CLI: an empty input is an error that says so, and writes nothing', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-cli-'))
  const empty = join(dir, 'empty.txt')
  writeFileSync(empty, '')
  const out = join(dir, 'pages')
  const r = cli([empty, '--out', out])
  t.is(r.status, 1)
  t.regex(r.stderr, /empty\.txt has no text: nothing to render, no pages written/)
  t.notRegex(r.stdout, /written/)
  t.false(existsSync(out))
  const blank = cli(['-'], '\n  \n')
  t.is(blank.status, 1)
  t.regex(blank.stderr, /standard input has no text/)
})

test('CLI: render writes raw pages as PGM, says how many it wrote, and counts the text tokens', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-cli-'))
  const file = join(dir, 'trace.txt')
  writeFileSync(file, texts[0].text)
  const out = join(dir, 'pages')
  const r = cli([file, '--out', out, '--format', 'raw'])
  t.is(r.status, 0, r.stderr)
  const files = readdirSync(out)
  t.true(files.length > 0 && files.every((f) => /^trace_page_\d{3}\.pgm$/.test(f)), files.join(' '))
  t.true(r.stdout.includes(`${files.length} pages written to ${out} as PGM/PPM`), r.stdout)
  t.regex(r.stdout, new RegExp(`text tokens +${countTextTokens(texts[0].text)} `))
})

test('CLI: --out into a folder that is not empty is refused; --overwrite replaces the earlier pages and keeps other files', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-cli-'))
  const long = join(dir, 'run.txt')
  writeFileSync(long, texts[0].text.repeat(3))
  const out = join(dir, 'pages')
  t.is(cli([long, '--out', out]).status, 0)
  const first = readdirSync(out)
  t.true(first.length > 2, first.join(' '))
  writeFileSync(join(out, 'notes.md'), 'mine')
  const refused = cli([long, '--out', out])
  t.is(refused.status, 1)
  t.regex(refused.stderr, /--out .*pages is not empty \(\d+ entries: .*\); pass --overwrite/)
  // a shorter text: the earlier run's extra pages must not stay beside the new ones
  writeFileSync(long, texts[0].text.slice(0, 200))
  const again = cli([long, '--out', out, '--overwrite'])
  t.is(again.status, 0, again.stderr)
  t.deepEqual(readdirSync(out).sort(), ['notes.md', 'run_page_001.png'])
})

test('encodePngAsync checks its sizes: no wrapped product lets 13 bytes claim 3.6G × 3.4G pixels', async (t) => {
  const { encodePngAsync } = await import('../index.js')
  // 3633886365 × 3384208571 × 3 is 13 modulo 2^64
  await t.throwsAsync(async () => encodePngAsync(Buffer.alloc(13), 3633886365, 3384208571, 3), { message: /3633886365×3384208571/ })
  await t.throwsAsync(async () => encodePngAsync(Buffer.alloc(0), 0, 0, 3), { message: /width, height/ })
  await t.throwsAsync(async () => encodePngAsync(Buffer.alloc(12), 2, 2, 4), { message: /channels/ })
  await t.throwsAsync(async () => encodePngAsync(Buffer.alloc(11), 2, 2, 3), { message: /11 bytes do not hold 2×2×3 pixels/ })
  const png = await encodePngAsync(Buffer.alloc(12, 255), 2, 2, 3)
  t.deepEqual(pngHeader(png), { width: 2, height: 2, colorType: 2 })
})
