/**
 * OpenR1-Math-220K → the VTC-R1 fine-tuning set for LLaMA-Factory.
 *
 * Rows stream in input order in batches. Each row: pick a verified-correct generation, segment its reasoning
 * (~4K tokens), build the assistant turns; the turns except the last are rendered to pages (in Rust, on
 * `workers` threads, while the next batch is being tokenized here); then the row's samples are committed in
 * row order. Every name and byte depends only on the input and the options, never on timing or `workers`.
 */
import { availableParallelism } from 'node:os'
import { readdir, rm } from 'node:fs/promises'
import { join, relative, resolve, sep } from 'node:path'

import { VtcError } from '../errors.js'
import { Renderer, type PngCompression, type RendererOptions } from '../render.js'
import { DEFAULT_SEGMENT_TOKENS } from '../segment.js'
import { countTextTokens } from '../text-tokens.js'
import { datasetInfo, trainYaml } from './llamafactory.js'
import { checkColumns, countRows, listInputs, readRows, where, type ColumnMap, type InputRow } from './openr1.js'
import { PreparePool } from './pool.js'
import { prepare, type Prepared, type PreparedRow, type SkippedRow } from './prepare.js'
import { SYSTEM_PROMPT, traceSamples } from './samples.js'
import { addVision, emptyTotals, pageVision, ratios, StatsAccumulator, zeroVision, type DatasetStats, type SampleStats, type VisionCounts } from './stats.js'
import { FILES, OutputStore } from './store.js'
import { CRITERIA, type AnswerSource, type Criterion } from './trace.js'

export interface BuildOptions extends RendererOptions {
  /** Parquet or JSONL files, or directories of them (read recursively, in path order) (required). */
  input: string | string[]
  /** Where the dataset goes (created; a directory of an earlier run with the same options is resumed) (required). */
  outDir: string
  /** Only the first N input rows; a later run with a larger limit, or none, continues (default: all rows). */
  limit?: number
  /** Rendering threads (default: all cores). */
  workers?: number
  /** Token budget of a segment (default 4096). */
  segmentTokens?: number
  /** Which generation to take (default `['math_verify']`). */
  select?: Criterion[]
  /** What goes inside `<answer>` (default `boxed`). */
  answer?: AnswerSource
  /** Input columns of OpenR1 fields, e.g. `{ problem: 'question' }` (default: none, OpenR1's own column names). */
  columns?: ColumnMap
  /** Put the pages before the question, as the evaluation code does (default false: after it, as `inference.py`). */
  imagesFirst?: boolean
  /**
   * Start every segment with `<think>\n`, as every round of the loop reopens its thinking; false: only the first
   * (default true; see `assistantTurns`).
   */
  thinkEverySegment?: boolean
  /** `image_max_pixels` of training, for the capped vision-token counts and the YAMLs (default 262144). */
  maxPixels?: number
  /** `cutoff_len` of training (default 32768). */
  cutoffLen?: number
  /** The dataset's name in dataset_info.json (default `vtc-r1`). */
  datasetName?: string
  /** Base models written into the training YAMLs (default: each backbone's below). */
  models?: {
    /** Local path or hub id of the Qwen3-VL model (default `Qwen/Qwen3-VL-8B-Instruct`). */
    qwen3vl?: string
    /** Local path or hub id of the Glyph model (default `zai-org/Glyph`). */
    glyph?: string
  }
  /** How hard the page PNGs are compressed (default `fast`). */
  pngCompression?: PngCompression
  /** Write the dataset even when it has no samples (default false: that is an error naming why). */
  allowEmpty?: boolean
  /** Rows per batch (default 32); only throughput depends on it. */
  batchRows?: number
  /** Aborting stops the build with code `ABORT_ERR`; rerunning the same build resumes it (default: none). */
  signal?: AbortSignal
  /** Called as rows are finished (default: none). */
  onProgress?: (p: BuildProgress) => void
}

export interface BuildProgress {
  /** Rows finished in this run, and the rows this run has to do (NaN when unknown). */
  rowsDone: number
  rowsTotal: number
  pagesDone: number
  samplesDone: number
  skippedDone: number
}

export type { SkippedRow }

export interface BuildResult {
  outDir: string
  stats: DatasetStats
  /** The whole input has been turned into samples (false after a --limit that stopped early). */
  complete: boolean
  resumedFromRow: number
  rowsThisRun: number
  pagesThisRun: number
  seconds: number
  /** Rows skipped in this run (all of them are in skipped.jsonl). */
  skipped: SkippedRow[]
}

/** Rows whose pages go to one directory: keeps directories at a few thousand files. */
const ROWS_PER_IMAGE_DIR = 1000
interface Rendered {
  rows: Prepared[]
  /** Per prepared row: page files (relative) and sizes of each rendered turn. */
  pages: Map<number, { files: string[][]; sizes: [number, number][][] }>
  nextRow: number
}

export async function buildDataset(options: BuildOptions): Promise<BuildResult> {
  const t0 = performance.now()
  const o = resolveOptions(options)
  const files = await listInputs(Array.isArray(options.input) ? options.input : [options.input])
  await checkColumns(files, o.select, o.columns)
  const fingerprint = {
    inputs: files.map((f) => ({ file: f.path.split(sep).slice(-2).join('/'), size: f.size })),
    columns: o.columns,
    select: o.select,
    answer: o.answer,
    segmentTokens: o.segmentTokens,
    imagesFirst: o.imagesFirst,
    thinkEverySegment: o.thinkEverySegment,
    render: { preset: options.preset ?? 'vtc-r1', config: options.config ?? null, font: options.fontPath ?? null, fallback: options.fallbackFonts ?? [] },
    png: o.pngCompression,
  }
  const store = await OutputStore.open(o.outDir, fingerprint, emptyTotals)
  try {
    const startRow = store.manifest.nextRow
    const stats = new StatsAccumulator(structuredClone(store.manifest.totals), o.cutoffLen)
    const skippedThisRun: SkippedRow[] = []
    let rowsThisRun = 0
    let pagesThisRun = 0

    const end = o.limit ?? Infinity
    const done = store.manifest.inputExhausted || startRow >= end
    if (!done) {
      const stop = new AbortController()
      const signal = o.signal ? AbortSignal.any([o.signal, stop.signal]) : stop.signal
      if (store.resumed) await removeTempFiles(o.outDir, startRow, 2 * o.batchRows)
      const renderer = await Renderer.create(options)
      const rowsTotal = Math.min(end, await countRows(files)) - startRow
      const systemTokens = countTextTokens(SYSTEM_PROMPT)
      const report = () =>
        o.onProgress?.({ rowsDone: rowsThisRun, rowsTotal, pagesDone: pagesThisRun, samplesDone: stats.t.samples, skippedDone: skippedThisRun.length })

      const commit = async (r: Rendered, inputExhausted?: boolean) => {
        const out = { samples: '', sampleStats: '', skipped: '' }
        for (const [i, p] of r.rows.entries()) {
          if (p.kind === 'skip') {
            stats.skip(p.skip.reason)
            skippedThisRun.push(p.skip)
            out.skipped += JSON.stringify(p.skip) + '\n'
            continue
          }
          const pages = r.pages.get(i)!
          const emitted = emitRow(p, pages, o, systemTokens, stats)
          out.samples += emitted.samples
          out.sampleStats += emitted.stats
          pagesThisRun += pages.files.reduce((a, f) => a + f.length, 0)
        }
        await store.commit(out, { nextRow: r.nextRow, totals: stats.t, inputExhausted })
        rowsThisRun += r.rows.length
        report()
      }

      // stages overlap: batches are prepared (tokenized, segmented) on worker threads, or here with one
      // worker, while the native threads render earlier batches one after another; commits follow input order
      const prepOptions = { select: o.select, answer: o.answer, segmentTokens: o.segmentTokens, thinkEverySegment: o.thinkEverySegment }
      const pool = o.workers > 1 ? new PreparePool(o.workers, prepOptions) : undefined
      const window = o.workers + 1
      const inflight: Promise<Rendered>[] = []
      let renderChain: Promise<unknown> = Promise.resolve()
      let nextRow = startRow
      let batch: InputRow[] = []
      const flush = async () => {
        const rows = batch
        const upTo = nextRow
        batch = []
        const prepared = pool ? pool.prepare(rows) : Promise.resolve(rows.map((r) => prepare(r, prepOptions)))
        const rendered = renderChain.then(() => prepared).then((p) => renderRows(renderer, p, upTo, o, signal))
        rendered.catch(() => {}) // awaited in order below; not unhandled meanwhile
        renderChain = rendered.catch(() => {})
        inflight.push(rendered)
        while (inflight.length > window) await commit(await inflight.shift()!)
      }
      try {
        for await (const rec of readRows(files, { columns: o.columns, start: startRow, end })) {
          signal.throwIfAborted()
          batch.push(rec)
          nextRow = (rec.ok ? rec.row.pos.index : rec.pos.index) + 1
          if (batch.length >= o.batchRows) await flush()
        }
        if (batch.length) await flush()
        // the reader stops before the end of the input only at --limit
        const exhausted = !(Number.isFinite(end) && nextRow >= end)
        while (inflight.length > 1) await commit(await inflight.shift()!)
        if (inflight.length) await commit(await inflight.shift()!, exhausted)
        else await store.commit({ samples: '', sampleStats: '', skipped: '' }, { nextRow, totals: stats.t, inputExhausted: exhausted })
      } catch (err) {
        // stop the native threads before the output directory is released
        stop.abort()
        await Promise.allSettled(inflight)
        throw err
      } finally {
        await pool?.close()
      }
    }

    const finalStats = stats.stats()
    // rows were read (or the input has none) and gave nothing: refuse rather than write an empty dataset
    if (finalStats.samples === 0 && (rowsThisRun > 0 || store.manifest.inputExhausted) && !options.allowEmpty) {
      throw new VtcError('ERR_VTC_EMPTY_DATASET', emptyMessage(finalStats, files.map((f) => f.path)))
    }
    await writeFinalFiles(store, o, finalStats)
    return {
      outDir: o.outDir,
      stats: finalStats,
      complete: store.manifest.inputExhausted,
      resumedFromRow: startRow,
      rowsThisRun,
      pagesThisRun,
      seconds: (performance.now() - t0) / 1000,
      skipped: skippedThisRun,
    }
  } catch (err) {
    if (options.signal?.aborted && !(err instanceof VtcError && err.code !== 'ABORT_ERR' && err.code !== 'ERR_VTC_CANCELLED')) {
      throw new VtcError('ABORT_ERR', `interrupted; ${store.manifest.nextRow} rows are done, rerun the same command to resume`, { cause: err })
    }
    throw err
  } finally {
    await store.close()
  }
}

function emptyMessage(stats: DatasetStats, inputs: string[]): string {
  const { read, skippedBy } = stats.rows
  const why = Object.entries(skippedBy)
    .map(([reason, n]) => `${n} ${reason}`)
    .join(', ')
  const what = read === 0 ? `${inputs.join(', ')} has no rows` : `all ${read} rows were skipped (${why}; each is listed in ${FILES.skipped})`
  return `no samples: ${what}. Pass --allow-empty (allowEmpty) to write an empty dataset anyway`
}

type Resolved = Required<
  Pick<BuildOptions, 'outDir' | 'segmentTokens' | 'select' | 'answer' | 'imagesFirst' | 'thinkEverySegment' | 'maxPixels' | 'cutoffLen' | 'datasetName' | 'batchRows' | 'workers' | 'pngCompression'>
> &
  Pick<BuildOptions, 'limit' | 'columns' | 'models' | 'signal' | 'onProgress'>

function resolveOptions(options: BuildOptions): Resolved {
  const int = (name: string, v: number | undefined, dflt: number, min = 1) => {
    const n = v ?? dflt
    if (!Number.isInteger(n) || n < min) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${name} must be an integer ≥ ${min}, got ${v}`)
    return n
  }
  if (!options.outDir) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'outDir is required')
  const select = options.select ?? ['math_verify']
  for (const c of select) {
    if (!CRITERIA.includes(c)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `unknown selection "${c}"; allowed: ${CRITERIA.join(', ')}`)
  }
  if (select.length === 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'select needs at least one criterion')
  const answer = options.answer ?? 'boxed'
  if (!['boxed', 'field', 'solution'].includes(answer)) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `unknown answer source "${answer}"; allowed: boxed, field, solution`)
  }
  return {
    outDir: resolve(options.outDir),
    limit: options.limit === undefined ? undefined : int('limit', options.limit, 0, 0),
    workers: int('workers', options.workers, availableParallelism()),
    segmentTokens: int('segmentTokens', options.segmentTokens, DEFAULT_SEGMENT_TOKENS, 16),
    select,
    answer,
    columns: options.columns,
    imagesFirst: options.imagesFirst ?? false,
    thinkEverySegment: options.thinkEverySegment ?? true,
    maxPixels: int('maxPixels', options.maxPixels, 262144),
    cutoffLen: int('cutoffLen', options.cutoffLen, 32768),
    datasetName: options.datasetName ?? 'vtc-r1',
    models: options.models,
    pngCompression: options.pngCompression ?? 'fast',
    batchRows: int('batchRows', options.batchRows, 32),
    signal: options.signal,
    onProgress: options.onProgress,
  }
}

const imageDir = (index: number) => join(FILES.images, String(Math.floor(index / ROWS_PER_IMAGE_DIR)).padStart(4, '0'))
const turnId = (index: number, k: number) => `r${String(index).padStart(7, '0')}_s${String(k + 1).padStart(2, '0')}`

/** Renders every turn but the last of each row into its image directory. */
async function renderRows(renderer: Renderer, rows: Prepared[], nextRow: number, o: Resolved, signal: AbortSignal): Promise<Rendered> {
  const byDir = new Map<string, { row: number; turn: number; id: string; text: string }[]>()
  rows.forEach((p, row) => {
    if (p.kind !== 'row') return
    for (let k = 0; k < p.turns.length - 1; k++) {
      const dir = imageDir(p.pos.index)
      let items = byDir.get(dir)
      if (!items) byDir.set(dir, (items = []))
      items.push({ row, turn: k, id: turnId(p.pos.index, k), text: p.turns[k] })
    }
  })
  const pages: Rendered['pages'] = new Map()
  rows.forEach((p, row) => {
    if (p.kind === 'row') pages.set(row, { files: p.turns.slice(0, -1).map(() => []), sizes: p.turns.slice(0, -1).map(() => []) })
  })
  for (const [dir, items] of byDir) {
    const results = await renderer.renderBatch(items, {
      outDir: join(o.outDir, dir),
      threads: o.workers,
      pngCompression: o.pngCompression,
      signal,
    })
    results.forEach((r, i) => {
      const it = items[i]
      if (r.error) {
        const disk = /No space left|os error 28|Disk quota/i.test(r.error)
        throw new VtcError(disk ? 'ERR_VTC_DISK_FULL' : 'ERR_VTC_IO', `writing the pages of ${it.id}: ${r.error}`)
      }
      const entry = pages.get(it.row)!
      entry.files[it.turn] = r.files.map((f) => relative(o.outDir, f).split(sep).join('/'))
      entry.sizes[it.turn] = r.pageSizes
    })
  }
  // a turn that gave no page would leave its successors without their memory: drop the row instead
  const checked = rows.map((p, row): Prepared => {
    if (p.kind !== 'row' || !pages.get(row)!.files.some((f) => f.length === 0)) return p
    pages.delete(row)
    return { kind: 'skip', skip: { row: p.pos.index, id: p.id, at: where(p.pos), reason: 'render-empty', detail: 'a segment rendered to no page' } }
  })
  return { rows: checked, pages, nextRow }
}

/** The JSONL lines (samples and their stats) of one rendered row; updates the totals. */
function emitRow(
  p: PreparedRow,
  pages: { files: string[][]; sizes: [number, number][][] },
  o: Resolved,
  systemTokens: number,
  stats: StatsAccumulator,
): { samples: string; stats: string } {
  const turnVision: VisionCounts[] = pages.sizes.map((sizes) => sizes.map((s) => pageVision(s, o.maxPixels)).reduce(addVision, zeroVision()))
  const rendered = p.turnTokens.slice(0, -1)
  stats.row({
    reasoningTokens: p.reasoningTokens,
    segmentTokens: p.segmentTokens,
    renderedTokens: rendered.reduce((a, b) => a + b, 0),
    pages: pages.files.reduce((a, f) => a + f.length, 0),
    vision: turnVision.reduce(addVision, zeroVision()),
  })
  const samples = traceSamples(p.question, p.turns, pages.files, { imagesFirst: o.imagesFirst })
  let lines = ''
  let statLines = ''
  let memoryText = 0
  let memoryVision = zeroVision()
  let images = 0
  for (const [k, sample] of samples.entries()) {
    // chat-template overhead: role headers and end markers of three turns, and 2 tokens around each image
    const estimated = systemTokens + p.questionTokens + 15 + memoryVision.qwen3vlCapped + 2 * images + p.turnTokens[k]
    const s: SampleStats = {
      row: p.pos.index,
      id: p.id,
      segment: k + 1,
      segments: samples.length,
      targetTokens: p.turnTokens[k],
      images,
      memoryTextTokens: memoryText,
      memoryVision,
      compression: ratios(memoryText, memoryVision),
      estimatedTokens: estimated,
    }
    stats.sample(s)
    lines += JSON.stringify(sample) + '\n'
    statLines += JSON.stringify(s) + '\n'
    if (k < samples.length - 1) {
      memoryText += p.turnTokens[k]
      memoryVision = addVision(memoryVision, turnVision[k])
      images += pages.files[k].length
    }
  }
  return { samples: lines, stats: statLines }
}

/** dataset_info.json, the training YAMLs, the DeepSpeed config and stats.json (all written atomically). */
async function writeFinalFiles(store: OutputStore, o: Resolved, stats: DatasetStats): Promise<void> {
  const dir = store.dir
  await store.writeFile(FILES.datasetInfo, JSON.stringify(datasetInfo(o.datasetName, FILES.samples), null, 2) + '\n')
  await store.writeFile(FILES.deepspeed, JSON.stringify(DS_Z3, null, 2) + '\n')
  const common = { dataset: o.datasetName, datasetDir: dir, deepspeed: join(dir, FILES.deepspeed), imageMaxPixels: o.maxPixels, cutoffLen: o.cutoffLen }
  await store.writeFile(FILES.yamlQwen, trainYaml({ ...common, backbone: 'qwen3-vl', model: o.models?.qwen3vl }))
  await store.writeFile(FILES.yamlGlyph, trainYaml({ ...common, backbone: 'glyph', model: o.models?.glyph }))
  const summary = {
    complete: store.manifest.inputExhausted,
    rowsDone: store.manifest.nextRow,
    options: {
      segmentTokens: o.segmentTokens,
      select: o.select,
      answer: o.answer,
      imagesFirst: o.imagesFirst,
      thinkEverySegment: o.thinkEverySegment,
      maxPixels: o.maxPixels,
      cutoffLen: o.cutoffLen,
    },
    ...stats,
  }
  await store.writeFile(FILES.stats, JSON.stringify(summary, null, 2) + '\n')
}

/** Page files cut off by a crash (`*.png.tmp<pid>`) in the image directories of the rows still to do. */
async function removeTempFiles(outDir: string, fromRow: number, window: number): Promise<void> {
  const first = Math.floor(fromRow / ROWS_PER_IMAGE_DIR)
  const last = Math.floor((fromRow + window) / ROWS_PER_IMAGE_DIR)
  for (let d = first; d <= last; d++) {
    const dir = join(outDir, imageDir(d * ROWS_PER_IMAGE_DIR))
    const names = await readdir(dir).catch(() => [] as string[])
    for (const n of names) if (/\.tmp\d+$/.test(n)) await rm(join(dir, n), { force: true })
  }
}

/** LLaMA-Factory's `examples/deepspeed/ds_z3_config.json` (ZeRO-3), written beside the data so the YAMLs work from anywhere. */
const DS_Z3 = {
  train_batch_size: 'auto',
  train_micro_batch_size_per_gpu: 'auto',
  gradient_accumulation_steps: 'auto',
  gradient_clipping: 'auto',
  zero_allow_untested_optimizer: true,
  fp16: { enabled: 'auto', loss_scale: 0, loss_scale_window: 1000, initial_scale_power: 16, hysteresis: 2, min_loss_scale: 1 },
  bf16: { enabled: 'auto' },
  zero_optimization: {
    stage: 3,
    overlap_comm: false,
    contiguous_gradients: true,
    sub_group_size: 1e9,
    reduce_bucket_size: 'auto',
    stage3_prefetch_bucket_size: 'auto',
    stage3_param_persistence_threshold: 'auto',
    stage3_max_live_parameters: 1e9,
    stage3_max_reuse_distance: 1e9,
    stage3_gather_16bit_weights_on_model_save: true,
  },
}
