/**
 * Rendering reasoning text into the page images VTC-R1 models read ("optical memory").
 * The work happens in Rust, off the JS thread; pages come back as Buffers without copies.
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'

import { native, nativeSync, VtcError } from './errors.js'
import { findFont } from './font-path.js'
import * as core from './native.js'

export type Preset = 'vtc-r1' | 'glyph'
export type PngCompression = 'none' | 'fast' | 'balanced' | 'best'

/**
 * The VTC-R1 / Glyph render config format (`config_en.json`); every key is optional here, and a key left out
 * keeps the preset's value (the defaults below are the `vtc-r1` preset's). Lengths are in points (1/72 inch).
 */
export interface RenderConfigJson {
  /** Page width and height in points, as `"w,h"` (default `"595,842"`, A4). */
  'page-size'?: string
  /** Raster resolution in dots per inch (default 72: one pixel per point). */
  dpi?: number
  /** Left and right page margin (default 10). */
  'margin-x'?: number
  /** Top and bottom page margin (default 10). */
  'margin-y'?: number
  /** The main font file; a relative or bare name is looked up as the README's "Font files" says (default: the bundled DejaVu Sans). */
  'font-path'?: string
  /** Font size (default 9). */
  'font-size'?: number
  /** Distance between baselines (default 10). */
  'line-height'?: number
  /** Text colour as `"#RRGGBB"` (default `"#000000"`). */
  'font-color'?: string
  /** Paragraph alignment (default `LEFT`). */
  alignment?: 'LEFT' | 'CENTER' | 'RIGHT' | 'JUSTIFY'
  /** Glyph width factor (default 1). */
  'horizontal-scale'?: number
  /** Extra indent of each paragraph's first line (default 0; negative hangs). */
  'first-line-indent'?: number
  /** Paragraph indent from the left margin (default 0). */
  'left-indent'?: number
  /** Paragraph indent from the right margin (default 0). */
  'right-indent'?: number
  /** Space after each paragraph (default 0). */
  'space-after'?: number
  /** Space before each paragraph (default 0). */
  'space-before'?: number
  /** Width of the paragraph border (default 0: none). */
  'border-width'?: number
  /** Space between a paragraph and its border (default 0). */
  'border-padding'?: number
  /** Page background as `"#RRGGBB"` (default `"#FFFFFF"`). */
  'page-bg-color'?: string
  /** Paragraph background as `"#RRGGBB"` (default `"#FFFFFF"`). */
  'para-bg-color'?: string
  /** Paragraph border colour as `"#RRGGBB"`, or `null` for none (default `null`). */
  'para-border-color'?: string | null
  /** Crop each page's width to its text, as the reference does (default true). */
  'auto-crop-width'?: boolean
  /** Crop the last page's height to its text (default true). */
  'auto-crop-last-page'?: boolean
  /** Accepted for the reference format's sake: a newline always breaks the line as reportlab's `<br/>` does (default `"<br/>"`). */
  'newline-markup'?: string
}

export interface RendererOptions {
  /** `vtc-r1` (DejaVu Sans, shipped) or `glyph` (same layout, Verdana: give `fontPath`) (default `vtc-r1`). */
  preset?: Preset
  /** A config object, or the path of a config JSON file; its keys override the preset's (default: none). */
  config?: RenderConfigJson | string
  /** The main font file; overrides the config's `font-path` (default: the config's, else DejaVu Sans). */
  fontPath?: string
  /** Font files tried in order for characters the main font lacks, for example a CJK font (default: none). */
  fallbackFonts?: string[]
}

export interface RenderOptions extends RendererOptions {
  /** 1 = grey, 3 = RGB, as the reference PNGs (default 3). */
  channels?: 1 | 3
  /** Encode PNGs together with the pixels, otherwise `page.png()` encodes on demand (default false). */
  png?: boolean
  /** Compression of the PNGs that `png: true` makes (default `fast`). */
  pngCompression?: PngCompression
  /**
   * `render()` / `renderText()` only: the most pages returned (default 1000, 1.5 GB of RGB pages). Every page
   * is held in memory until the call returns, so a longer text is an `ERR_VTC_INVALID_ARGUMENT` as soon as the
   * limit is passed; `renderer.pages(text)` streams any length.
   */
  maxPages?: number
  /** Stops the rendering between pages; the call rejects with a `VtcError` of code `ABORT_ERR` (default: none). */
  signal?: AbortSignal
}

/** One rendered page: raw pixels, row-major, `channels` bytes per pixel. */
export class Page {
  constructor(
    readonly width: number,
    readonly height: number,
    readonly channels: 1 | 3,
    readonly data: Buffer,
    private encoded?: Buffer,
  ) {}

  /** The page as PNG (encoded off the JS thread, once). */
  async png(compression: PngCompression = 'fast'): Promise<Buffer> {
    this.encoded ??= await native(() =>
      core.encodePngAsync(this.data, this.width, this.height, this.channels, compression),
    )
    return this.encoded
  }
}

export interface RenderResult {
  pages: Page[]
  chars: number
  /** Characters no font has; drawn as the font's .notdef box. */
  missingGlyphs: number
}

/** The config's non-empty `font-path`; a config that is not valid JSON is left for the native parser to report. */
function fontPathIn(configJson: string | undefined): string | undefined {
  try {
    const font = configJson && (JSON.parse(configJson) as Record<string, unknown>)['font-path']
    return typeof font === 'string' && font ? font : undefined
  } catch {
    return undefined
  }
}

function toPage(p: core.NativePage): Page {
  return new Page(p.width, p.height, p.channels as 1 | 3, p.data, p.png ?? undefined)
}

/** Lone UTF-16 surrogates cannot be rendered faithfully; name the first one instead of guessing. */
export function checkText(text: unknown, what = 'text'): string {
  if (typeof text !== 'string') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${what} must be a string, got ${typeof text}`)
  if (!text.isWellFormed()) {
    const i = [...text].findIndex((c) => c.length === 1 && c.charCodeAt(0) >= 0xd800 && c.charCodeAt(0) <= 0xdfff)
    throw new VtcError(
      'ERR_VTC_INVALID_TEXT',
      `${what} is not valid UTF-16: lone surrogate U+${text.codePointAt(i)?.toString(16).toUpperCase()} at code point ${i}`,
    )
  }
  return text
}

/** A loaded renderer (config + fonts). Reuse it: fonts load once, glyphs are cached across calls. */
export class Renderer {
  private readonly inner: core.NativeRenderer

  private constructor(inner: core.NativeRenderer) {
    this.inner = inner
  }

  static async create(options: RendererOptions = {}): Promise<Renderer> {
    let configJson: string | undefined
    const cwd = process.cwd()
    let configDir = cwd
    if (typeof options.config === 'string') {
      try {
        configJson = await readFile(options.config, 'utf8')
      } catch (err) {
        throw new VtcError('ERR_VTC_IO', `cannot read render config ${options.config}: ${(err as Error).message}`, { cause: err })
      }
      configDir = dirname(resolve(options.config))
    } else if (options.config) {
      configJson = JSON.stringify(options.config)
    }
    // the config's font-path is relative to the config file (then, as before, to the working directory);
    // the resolved path overrides it
    let fontPath = options.fontPath ? await findFont(options.fontPath, [cwd], 'font') : undefined
    const configFont = fontPathIn(configJson)
    if (!fontPath && configFont) {
      const where = typeof options.config === 'string' ? options.config : 'the config'
      fontPath = await findFont(configFont, [configDir, cwd], `"font-path" of ${where}`)
    }
    const fallbackFonts = options.fallbackFonts && (await Promise.all(options.fallbackFonts.map((f) => findFont(f, [cwd], 'fallback font'))))
    const inner = nativeSync(
      () =>
        new core.NativeRenderer({
          preset: options.preset,
          configJson,
          fontPath,
          fallbackFonts,
        }),
    )
    return new Renderer(inner)
  }

  async render(text: string, options: Omit<RenderOptions, keyof RendererOptions> = {}): Promise<RenderResult> {
    checkText(text)
    const { maxPages } = options
    if (maxPages !== undefined && !(Number.isInteger(maxPages) && maxPages >= 1 && maxPages < 2 ** 32)) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `maxPages must be a whole number of pages from 1 to ${2 ** 32 - 1}, got ${maxPages}`)
    }
    const r = await native(() => {
      // napi-rs only hears an abort that comes after the call
      options.signal?.throwIfAborted()
      return this.inner.render(
        text,
        { channels: options.channels ?? 3, png: options.png, pngCompression: options.pngCompression, maxPages: options.maxPages },
        options.signal,
      )
    })
    return { pages: r.pages.map(toPage), chars: r.chars, missingGlyphs: r.missingGlyphs }
  }

  /**
   * The pages of `text` one at a time, for texts of any length: rendering runs at most two pages ahead
   * of the reader, so memory stays bounded. Breaking out of the loop stops the rendering.
   */
  async *pages(text: string, options: Omit<RenderOptions, keyof RendererOptions> = {}): AsyncGenerator<Page> {
    checkText(text)
    const stream = nativeSync(() =>
      this.inner.stream(text, { channels: options.channels ?? 3, png: options.png, pngCompression: options.pngCompression }),
    )
    try {
      for (;;) {
        options.signal?.throwIfAborted()
        const p = await native(() => stream.next())
        if (!p) return
        yield toPage(p)
      }
    } finally {
      stream.close()
    }
  }

  /** Lines per page, in the schema of the reference `layout.jsonl` (no raster). */
  async layout(
    text: string,
    options: {
      /** Stops the layout before it starts; the call rejects with a `VtcError` of code `ABORT_ERR` (default: none). */
      signal?: AbortSignal
    } = {},
  ): Promise<string[][]> {
    checkText(text)
    return native(() => {
      options.signal?.throwIfAborted()
      return this.inner.layout(text, options.signal)
    })
  }

  /** Renders many texts in parallel on all cores. A text that fails is reported in its result. */
  async renderBatch(items: BatchItem[], options: BatchOptions = {}): Promise<BatchTextResult[]> {
    const valid: core.BatchItem[] = []
    const invalid = new Map<number, string>()
    items.forEach((item, i) => {
      try {
        valid.push({ id: String(item.id), text: checkText(item.text, `text of ${JSON.stringify(item.id)}`) })
      } catch (err) {
        invalid.set(i, (err as Error).message)
      }
    })
    // Progress calls from the worker threads are queued to this thread and may arrive after the batch
    // resolved: drop those, and report the final count ourselves, so the last report is always complete.
    let finished = false
    const results = await native(() => {
      options.signal?.throwIfAborted()
      return this.inner.renderBatch(
        valid,
        {
          outDir: options.outDir,
          format: options.format,
          pngCompression: options.pngCompression,
          channels: options.channels,
          threads: options.threads,
          keepPages: options.keepPages,
        },
        options.onProgress
          ? (p: core.NativeBatchProgress) => {
              if (!finished) options.onProgress!({ textsDone: p.textsDone + invalid.size, textsTotal: items.length, pagesDone: p.pagesDone })
            }
          : undefined,
        options.signal,
      )
    })
    finished = true
    const pagesDone = results.reduce((n, r) => n + r.widths.length, 0)
    options.onProgress?.({ textsDone: items.length, textsTotal: items.length, pagesDone })
    const out: BatchTextResult[] = []
    let k = 0
    items.forEach((item, i) => {
      const bad = invalid.get(i)
      if (bad !== undefined) {
        out.push({ id: String(item.id), chars: 0, missingGlyphs: 0, pageSizes: [], files: [], pages: [], error: bad })
        return
      }
      const r = results[k++]
      out.push({
        id: r.id,
        chars: r.chars,
        missingGlyphs: r.missingGlyphs,
        pageSizes: r.widths.map((w, j) => [w, r.heights[j]] as [number, number]),
        files: r.files,
        pages: r.pages.map(toPage),
        error: r.error ?? undefined,
      })
    })
    return out
  }
}

export interface BatchItem {
  id: string
  text: string
}

export interface BatchProgress {
  textsDone: number
  textsTotal: number
  pagesDone: number
}

export interface BatchOptions {
  /** Write pages here as `<id>_page_<NNN>.png` or, `raw`, `.pgm` / `.ppm` (default: none, nothing is written). */
  outDir?: string
  /** `png`, or `raw`: uncompressed binary PGM (grey) / PPM (RGB) (default `png`). */
  format?: 'png' | 'raw'
  /** PNG compression (default `fast`). */
  pngCompression?: PngCompression
  /** 1 = grey, 3 = RGB (default: 1 when the config's colours are all grey, the same pixels in a third of the bytes; else 3). */
  channels?: 1 | 3
  /** Worker threads (default: all cores). */
  threads?: number
  /** Keep the pages' pixels in the results (default false). */
  keepPages?: boolean
  /** Called after each text with the counts so far (default: none). */
  onProgress?: (p: BatchProgress) => void
  /** Stops the batch between pages; the call rejects with a `VtcError` of code `ABORT_ERR` (default: none). */
  signal?: AbortSignal
}

export interface BatchTextResult {
  id: string
  chars: number
  missingGlyphs: number
  /** [width, height] of each page in pixels. */
  pageSizes: [number, number][]
  files: string[]
  pages: Page[]
  error?: string
}

const defaultRenderers = new Map<string, Promise<Renderer>>()

function rendererFor(options: RendererOptions): Promise<Renderer> {
  const key = JSON.stringify([options.preset, options.config, options.fontPath, options.fallbackFonts])
  let r = defaultRenderers.get(key)
  if (!r) {
    r = Renderer.create(options)
    r.catch(() => defaultRenderers.delete(key))
    defaultRenderers.set(key, r)
  }
  return r
}

/** Renders `text` into pages with a preset (default `vtc-r1`) or config. */
export async function renderText(text: string, options: RenderOptions = {}): Promise<RenderResult> {
  return (await rendererFor(options)).render(text, options)
}

/** Renders many texts in parallel; see `Renderer.renderBatch`. */
export async function renderBatch(
  items: BatchItem[],
  options: BatchOptions & RendererOptions = {},
): Promise<BatchTextResult[]> {
  return (await rendererFor(options)).renderBatch(items, options)
}

/** Lines per page in the reference `layout.jsonl` schema. */
export async function layoutText(
  text: string,
  options: RendererOptions & {
    /** Stops the layout before it starts; the call rejects with a `VtcError` of code `ABORT_ERR` (default: none). */
    signal?: AbortSignal
  } = {},
): Promise<string[][]> {
  return (await rendererFor(options)).layout(text, options)
}
