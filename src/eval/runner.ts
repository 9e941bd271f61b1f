/**
 * The evaluation runner: every (benchmark, question, sample, mode) runs the optical-memory loop (`vtc`) or the
 * long-context baseline on one backend, is graded, and lands as one line of `results.jsonl` the moment it ends.
 *
 * Resume: samples already in results.jsonl are skipped; failed ones (rows with `error`) only when `retryFailed`
 * is not set. Failures: a sample whose prompt does not fit the model's context is recorded as failed and the
 * run goes on; any other failure (the backend is down, the engine failed) is recorded as a failed row, stops
 * the run (samples already running finish and are written), and the outcome says why. Aborting the signal stops
 * the samples in flight; they are not written, so a rerun does them.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'

import type { ChatModel } from '../backends/types.js'
import { VtcError } from '../errors.js'
import { MemoryError, OpticalMemory, type MemoryResult, type OpticalMemoryOptions } from '../memory.js'
import { Renderer } from '../render.js'
import type { Benchmark, BenchItem } from './bench.js'
import { contentHash, modelFingerprint } from './fingerprint.js'
import { gradeResponse } from './grade.js'
import type { EvalReport, RunMode } from './report.js'
import { latestRows, ResultsFile, rowKey, writeReports, type EvalRow } from './results.js'

export interface EvalOptions {
  /** The model every sample runs on (required). */
  backend: ChatModel
  /** The benchmarks to run, from `loadBenchmark` (required). */
  benches: Benchmark[]
  /** Output directory (created; a directory of an earlier run with the same options is resumed) (required). */
  outDir: string
  /** `vtc` (the optical-memory loop) and/or `baseline` (one long round) (default: both, vtc first). */
  modes?: RunMode[]
  /** Samples per question (default: the protocol's, per benchmark: AIME25 and AMC23 16, others 1). */
  samples?: number
  /** Only the first N questions of each benchmark (default: all). */
  limit?: number
  /** Samples run at once (default 1: the embedded engine runs one request at a time anyway). */
  concurrency?: number
  /**
   * Options of the loop. With `seed`, sample k uses seed + k (samples differ, and a rerun repeats them)
   * (default: the loop's defaults, see `OpticalMemoryOptions`).
   */
  memory?: OpticalMemoryOptions
  /** Redo the samples recorded as failed (default false: a resumed run skips them). */
  retryFailed?: boolean
  /** What identifies the backend in run.json (default `{ model: backend.name }`). */
  backendInfo?: Record<string, unknown>
  /**
   * The embedded model's directory: a fingerprint of its weights, config, tokenizer and chat template goes into
   * run.json, so a resume with another model of the same name is refused (default: none, no fingerprint).
   */
  modelDir?: string
  /** Aborting stops the run; finished samples stay recorded and the outcome's status is `aborted` (default: none). */
  signal?: AbortSignal
  /** Called once before the first sample (the totals), then after each sample (default: none). */
  onProgress?: (p: EvalProgress) => void
}

export interface EvalProgress {
  /** Samples this run set out to do (finished ones of earlier runs excluded). */
  total: number
  /** Ended this run (graded or failed). */
  done: number
  failed: number
  /** The row just written. */
  row?: EvalRow
}

export interface EvalOutcome {
  /** `complete`: every sample ran; `stopped`: a failure stopped the run; `aborted`: the signal did. */
  status: 'complete' | 'stopped' | 'aborted'
  /** What stopped the run. */
  error?: { code: string; message: string }
  /** Samples found finished in results.jsonl and skipped. */
  skipped: number
  /** Samples this run set out to do, and how many of them ended (written) and failed. */
  total: number
  done: number
  failed: number
  /** Failed samples in results.jsonl after this run (the latest row of each sample). */
  failedRows: EvalRow[]
  /** Bytes of a torn last line of results.jsonl cut away on opening. */
  tornBytes: number
  report: EvalReport
  outDir: string
}

interface Task {
  bench: string
  item: BenchItem
  mode: RunMode
  sample: number
}

/** Errors that belong to one question (its prompt is too long), not to the backend: the run goes on. */
const SAMPLE_ERRORS = new Set(['ERR_VTC_CONTEXT_LENGTH'])

export async function runEval(opts: EvalOptions): Promise<EvalOutcome> {
  const modes = opts.modes ?? ['vtc', 'baseline']
  if (!modes.length || modes.some((m) => m !== 'vtc' && m !== 'baseline')) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `modes must be vtc and/or baseline, got ${JSON.stringify(modes)}`)
  }
  const concurrency = opts.concurrency ?? 1
  for (const [k, v] of [['concurrency', concurrency], ['samples', opts.samples], ['limit', opts.limit]] as const) {
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${k} must be a positive integer, got ${v}`)
  }
  const names = opts.benches.map((b) => b.name)
  const twice = names.find((n, i) => names.indexOf(n) !== i)
  if (twice) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `benchmark ${twice} is given twice`)

  const memoryOptions = opts.memory ?? {}
  // renderer options are recorded; a Renderer instance cannot be (its config is the caller's)
  const { render, ...loopOptions } = memoryOptions
  const options = {
    ...(opts.backendInfo ?? { model: opts.backend.name }),
    // it decides which prompts fit (a sample that does not fit fails)
    ...(opts.backend.contextLength !== undefined ? { contextLength: opts.backend.contextLength } : {}),
    ...(opts.modelDir !== undefined ? { modelFiles: await modelFingerprint(opts.modelDir) } : {}),
    ...loopOptions,
    render: render instanceof Renderer ? 'custom Renderer' : (render ?? { preset: 'vtc-r1' }),
    // the page size and layout come from the render config's content, not its path
    ...(render && !(render instanceof Renderer) && typeof render.config === 'string' ? { renderConfig: await contentHash(render.config, 'render config') } : {}),
  }
  const hashes: Record<string, string> = {}
  for (const b of opts.benches) hashes[b.name] = await fileHash(b.path)

  const store = await ResultsFile.open(opts.outDir, options, hashes)
  try {
    const finished = new Map(latestRows(store.rows).map((r) => [rowKey(r), r]))
    const tasks: Task[] = []
    let skipped = 0
    for (const b of opts.benches) {
      const samples = opts.samples ?? b.samplesPerQuestion
      for (const item of b.items.slice(0, opts.limit ?? b.items.length)) {
        for (let sample = 0; sample < samples; sample++) {
          for (const mode of modes) {
            const prev = finished.get(rowKey({ bench: b.name, id: item.id, mode, sample }))
            if (prev && !(prev.error && opts.retryFailed)) skipped++
            else tasks.push({ bench: b.name, item, mode, sample })
          }
        }
      }
    }

    // one renderer for every sample (fonts and glyph cache are loaded once)
    const renderer = !modes.includes('vtc') || !tasks.length ? undefined : render instanceof Renderer ? render : await Renderer.create({ preset: 'vtc-r1', ...render })
    const progress = { total: tasks.length, done: 0, failed: 0 }
    let stop: EvalOutcome['error']
    let aborted = false
    let fatal: unknown // results.jsonl cannot be written (disk full, …): nothing more may run
    let next = 0
    const worker = async () => {
      while (!stop && !aborted && !fatal && next < tasks.length) {
        const task = tasks[next++]
        const row = await runSample(opts.backend, task, { ...loopOptions, ...(renderer ? { render: renderer } : {}) }, opts.signal)
        if (row === 'aborted') {
          aborted = true
          return
        }
        await store.append(row)
        progress.done++
        if (row.error) {
          progress.failed++
          if (!SAMPLE_ERRORS.has(row.error.code)) stop ??= { code: row.error.code, message: `${task.bench} ${task.item.id} (${task.mode}, sample ${task.sample}): ${row.error.message}` }
        }
        opts.onProgress?.({ ...progress, row })
      }
    }
    opts.onProgress?.({ ...progress })
    const guarded = () => worker().catch((err: unknown) => (fatal ??= err))
    await Promise.all(Array.from({ length: Math.min(concurrency, Math.max(tasks.length, 1)) }, guarded))
    if (fatal) throw fatal

    const reported = store.rows.length ? await writeReports(opts.outDir, store.info.options) : undefined
    return {
      status: aborted ? 'aborted' : stop ? 'stopped' : 'complete',
      ...(aborted ? { error: { code: 'ABORT_ERR', message: 'the run was aborted' } } : stop ? { error: stop } : {}),
      skipped,
      ...progress,
      failedRows: (reported?.rows ?? []).filter((r) => r.error),
      tornBytes: store.tornBytes,
      report: reported?.report ?? { generatedAt: new Date().toISOString(), benches: [] },
      outDir: opts.outDir,
    }
  } finally {
    await store.close()
  }
}

/** One sample: run, grade, and build its row; 'aborted' when the signal stopped it (nothing to write). */
async function runSample(backend: ChatModel, task: Task, memory: OpticalMemoryOptions, signal?: AbortSignal): Promise<EvalRow | 'aborted'> {
  if (signal?.aborted) return 'aborted'
  const seed = memory.seed === undefined ? {} : { seed: memory.seed + task.sample }
  const loop = new OpticalMemory(backend, { ...memory, ...seed })
  try {
    const result = await loop.solve(task.item.question, { mode: task.mode, signal })
    return resultRow(task, result)
  } catch (err) {
    if (signal?.aborted) return 'aborted'
    const code = typeof (err as VtcError)?.code === 'string' ? (err as VtcError).code : 'ERR_VTC_BACKEND'
    const error = { code, message: (err as Error)?.message ?? String(err) }
    if (err instanceof MemoryError) return { ...resultRow(task, err.partial), correct: false, error }
    return { ...resultRow(task, undefined), error }
  }
}

/** The fields of a row that come from grading `output` against the question's gold answer. */
export function gradedFields(output: string, item: BenchItem): Pick<EvalRow, 'prediction' | 'gold' | 'correct' | 'verdict' | 'answerSource'> {
  const v = gradeResponse(output, item.gold, { kind: item.kind, choices: item.choices })
  return { prediction: v.extraction.answer, gold: item.gold, correct: v.correct, verdict: v.method, answerSource: v.extraction.source }
}

function resultRow(task: Task, r: MemoryResult | undefined): EvalRow {
  const { item } = task
  const output = r?.text ?? ''
  const t = r?.totals
  const finishReason = r?.finishReason ?? 'error'
  return {
    bench: task.bench,
    id: item.id,
    mode: task.mode,
    sample: task.sample,
    ...gradedFields(output, item),
    finishReason,
    // a complete answer, or the model stopped by itself; not cut off by the round or token budget
    finished: finishReason === 'complete' || finishReason === 'stop',
    outputTokens: t?.outputTokens ?? 0,
    rounds: t?.rounds ?? 0,
    visionTokens: t?.visionTokens ?? 0,
    pages: t?.pages ?? 0,
    latencyMs: round(t?.latencyMs ?? 0),
    renderMs: round(t?.renderMs ?? 0),
    visionMs: round(t?.visionMs ?? 0),
    prefillMs: round(t?.prefillMs ?? 0),
    decodeMs: round(t?.decodeMs ?? 0),
    ...(r?.rounds.some((x) => x.tokensEstimated) ? { tokensEstimated: true } : {}),
    output,
  }
}

const round = (ms: number) => Math.round(ms * 10) / 10

export async function fileHash(path: string): Promise<string> {
  try {
    return createHash('sha256').update(await readFile(path)).digest('hex')
  } catch (err) {
    throw new VtcError('ERR_VTC_BENCH_READ', `cannot read benchmark file ${path}: ${(err as Error).message}`, { cause: err })
  }
}
