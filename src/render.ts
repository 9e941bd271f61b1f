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

/** The VTC-R1 / Glyph render config format (`config_en.json`); every key is optional here. */
export interface RenderConfigJson {
  'page-size'?: string
  dpi?: number
  'margin-x'?: number
  'margin-y'?: number
  'font-path'?: string
  'font-size'?: number
  'line-height'?: number
  'font-color'?: string
  alignment?: 'LEFT' | 'CENTER' | 'RIGHT' | 'JUSTIFY'
  'horizontal-scale'?: number
  'first-line-indent'?: number
  'left-indent'?: number
  'right-indent'?: number
  'space-after'?: number
  'space-before'?: number
  'border-width'?: number
  'border-padding'?: number
  'page-bg-color'?: string
  'para-bg-color'?: string
  'para-border-color'?: string
  'auto-crop-width'?: boolean
  'auto-crop-last-page'?: boolean
  'newline-markup'?: string
}

export interface RendererOptions {
  /** `vtc-r1` (default: DejaVu Sans, shipped) or `glyph` (same layout, Verdana: give `fontPath`). */
  preset?: Preset
  /** A config object, or the path of a config JSON file; its keys override the preset's. */
  config?: RenderConfigJson | string
  /** The main font file (overrides the config's `font-path`). */
  fontPath?: string
  /** Font files tried in order for characters the main font lacks (for example a CJK font). */
  fallbackFonts?: string[]
}

export interface RenderOptions extends RendererOptions {
  /** 1 = grey, 3 = RGB (default, as the reference PNGs). */
  channels?: 1 | 3
  /** Encode PNGs together with the pixels (otherwise `page.png()` encodes on demand). */
  png?: boolean
  pngCompression?: PngCompression
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
    const r = await native(() =>
      this.inner.render(
        text,
        { channels: options.channels ?? 3, png: options.png, pngCompression: options.pngCompression },
        options.signal,
      ),
    )
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
  async layout(text: string, options: { signal?: AbortSignal } = {}): Promise<string[][]> {
    checkText(text)
    return native(() => this.inner.layout(text, options.signal))
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
    const results = await native(() =>
      this.inner.renderBatch(
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
      ),
    )
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
  /** Write pages here as `<id>_page_<NNN>.png` (or, `raw`, uncompressed binary `.pgm` grey / `.ppm` RGB). */
  outDir?: string
  format?: 'png' | 'raw'
  pngCompression?: PngCompression
  channels?: 1 | 3
  /** Worker threads (default: all cores). */
  threads?: number
  /** Keep the pages' pixels in the results. */
  keepPages?: boolean
  onProgress?: (p: BatchProgress) => void
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
export async function layoutText(text: string, options: RendererOptions & { signal?: AbortSignal } = {}): Promise<string[][]> {
  return (await rendererFor(options)).layout(text, options)
}
