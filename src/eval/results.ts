/**
 * The output directory of an evaluation run:
 * - `results.jsonl`: one line per sample, appended as soon as the sample ends (a crash loses only the samples
 *   still running);
 * - `run.json`: the options the results depend on (model with a fingerprint of its files, loop and sampling
 *   options, a hash of each benchmark file); a rerun with other ones is refused, so one file never mixes two setups;
 * - `report.json`, `report.md`, `report.html`: written from results.jsonl.
 * Reopening cuts a torn last line (a write cut off by a crash) and hands back the rows already there, so a rerun
 * skips them. A later row for the same (bench, id, mode, sample) supersedes an earlier one (a retried failure).
 */
import { constants } from 'node:fs'
import { open, readdir, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'

import { acquireLock, differences, ensureDir, ioError, readIfExists, releaseLock, writeFileAtomic } from '../files.js'
import { VtcError } from '../errors.js'
import type { MemoryFinish } from '../memory.js'
import type { ExtractionSource } from '../answer.js'
import type { GradeMethod } from './grade.js'
import { reportHtml, reportMarkdown, summarize, type EvalReport, type ResultRow } from './report.js'

export const EVAL_FILES = {
  results: 'results.jsonl',
  run: 'run.json',
  reportJson: 'report.json',
  reportMd: 'report.md',
  reportHtml: 'report.html',
} as const

/** One line of results.jsonl: a graded sample (or a failed one, with `error`). */
export interface EvalRow extends ResultRow {
  /** The grader rule that decided (`empty` when there was no answer). */
  verdict: GradeMethod
  answerSource: ExtractionSource
  finishReason: MemoryFinish
  finished: boolean
  /** Pages rendered (vtc mode). */
  pages: number
  renderMs: number
  visionMs: number
  prefillMs: number
  decodeMs: number
  /** Output tokens were counted client-side with the Qwen3 tokenizer (the backend reported none). */
  tokensEstimated?: boolean
  /** The final output (the last round's text), as graded. */
  output: string
}

/** What run.json holds. */
export interface RunInfo {
  version: 1
  /** Options the results depend on; a resume must give the same. */
  options: Record<string, unknown>
  /** sha256 of each benchmark file by bench name; a resume must read the same files. */
  benches: Record<string, string>
}

export const rowKey = (r: { bench: string; id: string; mode: string; sample: number }): string =>
  JSON.stringify([r.bench, r.id, r.mode, r.sample])

/** The rows of results.jsonl; `validBytes` ends at the last complete line (a torn last line is not counted). */
export async function readResults(path: string): Promise<{ rows: EvalRow[]; validBytes: number; tornBytes: number }> {
  const text = await readIfExists(path)
  if (text === undefined) return { rows: [], validBytes: 0, tornBytes: 0 }
  // what follows the last newline is a line whose write was cut off: it does not count, the sample is redone
  const cut = text.lastIndexOf('\n') + 1
  const lines = text.slice(0, cut).split('\n').slice(0, -1)
  const rows: EvalRow[] = []
  for (const [i, line] of lines.entries()) {
    if (!line.trim()) continue
    let row: EvalRow
    try {
      row = JSON.parse(line) as EvalRow
    } catch (err) {
      // a complete line that does not parse was not written by us: do not guess
      throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} line ${i + 1}: not valid JSON (${(err as Error).message}); fix or remove that line`)
    }
    const bad = rowShapeError(row)
    if (bad) throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} line ${i + 1}: ${bad}; fix or remove that line`)
    rows.push(row)
  }
  const validBytes = Buffer.byteLength(text.slice(0, cut))
  return { rows, validBytes, tornBytes: Buffer.byteLength(text) - validBytes }
}

function rowShapeError(r: unknown): string | null {
  if (!r || typeof r !== 'object' || Array.isArray(r)) return 'not a JSON object'
  const o = r as Record<string, unknown>
  if (typeof o.bench !== 'string' || typeof o.id !== 'string') return 'missing "bench" or "id"'
  if (o.mode !== 'vtc' && o.mode !== 'baseline') return `"mode" must be vtc or baseline, got ${JSON.stringify(o.mode)}`
  if (!Number.isInteger(o.sample) || (o.sample as number) < 0) return `"sample" must be an integer ≥ 0, got ${JSON.stringify(o.sample)}`
  return null
}

/** The latest row of each sample, in file order of first appearance. */
export function latestRows<T extends ResultRow>(rows: T[]): T[] {
  const byKey = new Map<string, T>()
  for (const r of rows) byKey.set(rowKey(r), r)
  return [...byKey.values()]
}

/** An open run directory: rows already there, and an append-only handle on results.jsonl. */
export class ResultsFile {
  private writing: Promise<void> = Promise.resolve()

  private constructor(
    readonly dir: string,
    readonly rows: EvalRow[],
    readonly info: RunInfo,
    private readonly fh: FileHandle,
    /** Bytes of a torn last line that were cut away on opening. */
    readonly tornBytes: number,
  ) {}

  /**
   * Opens (or starts) a run in `dir`. Refused when run.json records other options, or another file for a bench
   * of the same name; a directory with other files but no run.json is refused too (it is not an eval run).
   */
  static async open(dir: string, options: Record<string, unknown>, benches: Record<string, string>): Promise<ResultsFile> {
    await ensureDir(dir)
    await acquireLock(dir)
    try {
      const runPath = join(dir, EVAL_FILES.run)
      const resultsPath = join(dir, EVAL_FILES.results)
      let info = await readRunInfo(runPath)
      if (info) {
        const diff = differences(flatten(info.options), flatten(options))
        for (const [name, hash] of Object.entries(benches)) {
          if (info.benches[name] !== undefined && info.benches[name] !== hash) diff.push(`${name}: another benchmark file than before`)
        }
        if (diff.length) {
          throw new VtcError(
            'ERR_VTC_RESUME_MISMATCH',
            `${dir} holds results of another setup (${diff.join('; ')}); rerun with the same options, or use a new --out directory`,
          )
        }
        info = { ...info, benches: { ...info.benches, ...benches } }
      } else {
        const others = (await readdir(dir)).filter((f) => !f.startsWith('.vtc-r1'))
        if (others.length) {
          throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${dir} is not empty and has no ${EVAL_FILES.run}, so it is not an eval run; give a new or empty --out directory`)
        }
        info = { version: 1, options, benches }
      }
      await writeFileAtomic(runPath, JSON.stringify(info, null, 2) + '\n')
      const { rows, validBytes, tornBytes } = await readResults(resultsPath)
      let fh: FileHandle
      try {
        fh = await open(resultsPath, constants.O_RDWR | constants.O_CREAT)
        if (tornBytes) await fh.truncate(validBytes)
      } catch (err) {
        throw ioError(err, resultsPath, 'opening')
      }
      return new ResultsFile(dir, rows, info, fh, tornBytes)
    } catch (err) {
      await releaseLock(dir)
      throw err
    }
  }

  /** Appends one row (writes are queued, so concurrent samples never interleave their lines). */
  append(row: EvalRow): Promise<void> {
    const line = Buffer.from(JSON.stringify(row) + '\n', 'utf8')
    const path = join(this.dir, EVAL_FILES.results)
    const write = this.writing.then(async () => {
      try {
        const { size } = await this.fh.stat()
        // no fsync per row: a killed process loses nothing written, and a torn line is redone on resume
        await this.fh.write(line, 0, line.length, size)
      } catch (err) {
        throw ioError(err, path, 'appending to')
      }
      this.rows.push(row)
    })
    this.writing = write.catch(() => {})
    return write
  }

  async close(): Promise<void> {
    await this.writing
    await this.fh.datasync().catch(() => {})
    await this.fh.close().catch(() => {})
    await releaseLock(this.dir)
  }
}

/** Nested options as dotted keys (`modelFiles.config.json`), so a refusal names the field that differs. */
function flatten(o: Record<string, unknown>, prefix = ''): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(o).flatMap(([k, v]) =>
      v && typeof v === 'object' && !Array.isArray(v) ? Object.entries(flatten(v as Record<string, unknown>, `${prefix}${k}.`)) : [[`${prefix}${k}`, v]],
    ),
  )
}

async function readRunInfo(path: string): Promise<RunInfo | undefined> {
  const text = await readIfExists(path)
  if (text === undefined) return undefined
  try {
    const info = JSON.parse(text) as RunInfo
    if (info.version !== 1 || typeof info.options !== 'object' || typeof info.benches !== 'object') throw new Error('unknown format')
    return info
  } catch (err) {
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} is damaged (${(err as Error).message}); use a new --out directory`)
  }
}

/**
 * Writes report.json, report.md and report.html from the latest row of each sample in `dir`/results.jsonl.
 * `meta` (default: the run's options from run.json) goes into the JSON and the HTML.
 */
export async function writeReports(dir: string, meta?: Record<string, unknown>): Promise<{ report: EvalReport; rows: EvalRow[] }> {
  const { rows: all } = await readResults(join(dir, EVAL_FILES.results))
  if (!all.length) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${join(dir, EVAL_FILES.results)} has no results to report`)
  const rows = latestRows(all)
  const report = summarize(rows, { meta: meta ?? (await readRunInfo(join(dir, EVAL_FILES.run)))?.options })
  await writeFileAtomic(join(dir, EVAL_FILES.reportJson), JSON.stringify(report, null, 2) + '\n')
  await writeFileAtomic(join(dir, EVAL_FILES.reportMd), reportMarkdown(report))
  await writeFileAtomic(join(dir, EVAL_FILES.reportHtml), reportHtml(report))
  return { report, rows }
}
