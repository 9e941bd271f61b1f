/**
 * OpenR1-Math-220K as users download it: parquet shards (`data/*.parquet`) or JSONL, read as a stream of rows
 * (one parquet row group or one line at a time), with a column mapping for other trace sets (for example
 * question/raw_output/correct). A row that cannot be used comes out as a `BadRow` with its position, so the
 * builder can count and report it instead of stopping.
 */
import { createReadStream } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { basename, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'

import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet'

import { VtcError } from '../errors.js'
import { CRITERION_FIELD, type Criterion } from './trace.js'

/** The OpenR1 fields the builder uses. */
export const OPENR1_FIELDS = [
  'uuid',
  'problem',
  'answer',
  'generations',
  'correctness_math_verify',
  'correctness_llama',
  'is_reasoning_complete',
  'finish_reasons',
] as const
export type OpenR1Field = (typeof OPENR1_FIELDS)[number]

/** Field → input column, e.g. `{ problem: 'question', generations: 'raw_output' }`; unmapped fields keep their name. */
export type ColumnMap = Partial<Record<OpenR1Field, string>>

export interface RowPosition {
  /** 0-based position over all input files, in order; the row's key for resuming and file names. */
  index: number
  file: string
  /** 1-based line of a JSONL file. */
  line?: number
  /** 0-based row of a parquet file. */
  row?: number
}

export interface OpenR1Row {
  pos: RowPosition
  /** `uuid`, or `row-<index>` when the input has none. */
  id: string
  problem: string
  generations: string[]
  answer?: string
  correctness_math_verify?: (boolean | null)[]
  correctness_llama?: (boolean | null)[]
  is_reasoning_complete?: (boolean | null)[]
  finish_reasons?: (string | null)[]
}

export interface BadRow {
  pos: RowPosition
  id?: string
  reason: 'malformed' | 'missing-field'
  detail: string
}

export type InputRow = { ok: true; row: OpenR1Row } | ({ ok: false } & BadRow)

export interface ReadOptions {
  columns?: ColumnMap
  /** Skip the first `start` rows (cheaply: whole parquet row groups are not decoded). */
  start?: number
  /** Stop before row `end` (exclusive). */
  end?: number
}

export interface InputFile {
  path: string
  kind: 'parquet' | 'jsonl'
  size: number
}

/** The input files in reading order: files as given, directories searched recursively, sorted by path. */
export async function listInputs(inputs: string[]): Promise<InputFile[]> {
  if (inputs.length === 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'no input given')
  const out: InputFile[] = []
  for (const input of inputs) {
    const path = resolve(input)
    const st = await statOrThrow(path)
    if (st.isDirectory()) {
      const found = (await walk(path)).filter((f) => kindOf(f) !== undefined).sort()
      if (found.length === 0) throw new VtcError('ERR_VTC_INVALID_INPUT', `${input}: no .parquet or .jsonl files in this directory`)
      for (const f of found) out.push({ path: f, kind: kindOf(f)!, size: (await stat(f)).size })
    } else {
      const kind = kindOf(path)
      if (!kind) throw new VtcError('ERR_VTC_INVALID_INPUT', `${input}: expected a .parquet, .jsonl or .json (lines) file`)
      out.push({ path, kind, size: st.size })
    }
  }
  return out
}

function kindOf(path: string): InputFile['kind'] | undefined {
  if (/\.parquet$/i.test(path)) return 'parquet'
  if (/\.(jsonl|ndjson|json)$/i.test(path)) return 'jsonl'
  return undefined
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.')) continue
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...(await walk(p)))
    else if (e.isFile()) out.push(p)
  }
  return out
}

async function statOrThrow(path: string) {
  try {
    return await stat(path)
  } catch (err) {
    throw new VtcError('ERR_VTC_IO', `cannot read input ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** Columns other trace sets use for a field, suggested when the field's column is missing. */
const COLUMN_ALIASES: Partial<Record<OpenR1Field, string[]>> = {
  problem: ['question', 'prompt', 'query', 'input'],
  generations: ['raw_output', 'output', 'outputs', 'response', 'responses', 'completion', 'completions', 'generation'],
  correctness_math_verify: ['correct', 'is_correct', 'correctness'],
}

/**
 * Refuses an input whose every row would be skipped for a missing column: `problem`, `generations`, or the
 * flag that `select` reads. The error names the file, the columns it has and the `--map` that would fix it.
 */
export async function checkColumns(files: InputFile[], select: readonly Criterion[], columns: ColumnMap = {}): Promise<void> {
  const col = (f: OpenR1Field) => columns[f] ?? f
  const flags = select.includes('any') ? [] : [...new Set(select.map((c) => CRITERION_FIELD[c]!))]
  for (const file of files) {
    const found = await inputColumns(file)
    if (found.size === 0) continue // no rows to judge by
    const missing = (['problem', 'generations'] as OpenR1Field[]).filter((f) => !found.has(col(f)))
    if (flags.length && !flags.some((f) => found.has(col(f)))) missing.push(flags[0])
    if (!missing.length) continue
    const names = missing.map((f) => `"${col(f)}"${f === flags[0] ? ` (read by --select ${select.join(',')})` : ''}`)
    const fix = missing.map((f) => `--map ${f}=${COLUMN_ALIASES[f]?.find((c) => found.has(c)) ?? 'COLUMN'}`)
    throw new VtcError(
      'ERR_VTC_INVALID_INPUT',
      `${file.path} has no column ${names.join(', ')}; its columns are ${[...found].join(', ')}. ` +
        `Say which column holds each field: ${fix.join(' ')}${missing.includes(flags[0]) ? ' (or --select any to take unverified traces)' : ''}`,
    )
  }
}

/** A parquet file's columns, or the keys of a JSONL file's first 100 objects (empty when unreadable: reported later). */
async function inputColumns(file: InputFile): Promise<Set<string>> {
  if (file.kind === 'parquet') {
    try {
      return new Set(parquetSchema(await parquetMetadataAsync(await asyncBufferFromFile(file.path))).children.map((c) => c.element.name))
    } catch {
      return new Set()
    }
  }
  const keys = new Set<string>()
  const stream = createReadStream(file.path, { encoding: 'utf8' })
  try {
    let n = 0
    for await (const line of createInterface({ input: stream, crlfDelay: Infinity })) {
      if (!line.trim()) continue
      try {
        const obj: unknown = JSON.parse(line)
        if (obj && typeof obj === 'object' && !Array.isArray(obj)) for (const k of Object.keys(obj)) keys.add(k)
      } catch {
        // a malformed line is counted by the build
      }
      if (++n >= 100) break
    }
  } catch {
    // unreadable: the build reports it
  } finally {
    stream.destroy()
  }
  return keys
}

/** Rows in the input files (parquet: counted from metadata; JSONL: non-empty lines). */
export async function countRows(files: InputFile[]): Promise<number> {
  let n = 0
  for (const f of files) n += f.kind === 'parquet' ? await parquetRows(f.path) : await countLines(f.path)
  return n
}

async function parquetRows(path: string): Promise<number> {
  const md = await parquetMetadataAsync(await asyncBufferFromFile(path))
  return Number(md.num_rows)
}

async function countLines(path: string): Promise<number> {
  let n = 0
  let blank = true
  for await (const chunk of createReadStream(path)) {
    const buf = chunk as Buffer
    for (let i = 0; i < buf.length; i++) {
      const b = buf[i]
      if (b === 0x0a) {
        if (!blank) n++
        blank = true
      } else if (b !== 0x20 && b !== 0x0d && b !== 0x09) blank = false
    }
  }
  return blank ? n : n + 1
}

/** Streams rows from every input file in order; row indices run on across files. */
export async function* readRows(files: InputFile[], options: ReadOptions = {}): AsyncGenerator<InputRow> {
  const start = options.start ?? 0
  const end = options.end ?? Infinity
  let base = 0
  for (const f of files) {
    if (base >= end) return
    const gen = f.kind === 'parquet' ? readParquet(f.path, base, start, end, options.columns) : readJsonl(f.path, base, start, end, options.columns)
    // each reader returns the index after its last row, where the next file's rows begin
    for (let r = await gen.next(); ; r = await gen.next()) {
      if (r.done) {
        base = r.value
        break
      }
      yield r.value
    }
  }
}

async function* readJsonl(path: string, base: number, start: number, end: number, columns?: ColumnMap): AsyncGenerator<InputRow, number> {
  const stream = createReadStream(path, { encoding: 'utf8' })
  await new Promise<void>((res, rej) => {
    stream.once('open', () => res())
    stream.once('error', (err) => rej(new VtcError('ERR_VTC_IO', `cannot read ${path}: ${err.message}`, { cause: err })))
  })
  let line = 0
  let index = base
  for await (const text of createInterface({ input: stream, crlfDelay: Infinity })) {
    line++
    if (!text.trim()) continue // blank lines are not rows
    const pos: RowPosition = { index: index++, file: path, line }
    if (pos.index < start) continue
    if (pos.index >= end) break
    let obj: unknown
    try {
      obj = JSON.parse(text)
    } catch (err) {
      yield { ok: false, pos, reason: 'malformed', detail: `not valid JSON (${(err as Error).message})` }
      continue
    }
    yield normalizeRow(obj, pos, columns)
  }
  stream.destroy()
  return index
}

async function* readParquet(path: string, base: number, start: number, end: number, columns?: ColumnMap): AsyncGenerator<InputRow, number> {
  let file
  let md
  try {
    file = await asyncBufferFromFile(path)
    md = await parquetMetadataAsync(file)
  } catch (err) {
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}: not a readable parquet file (${(err as Error).message})`, { cause: err })
  }
  const present = new Set(parquetSchema(md).children.map((c) => c.element.name))
  const wanted = OPENR1_FIELDS.map((f) => columns?.[f] ?? f).filter((c) => present.has(c))
  let groupStart = 0
  for (const group of md.row_groups) {
    const rows = Number(group.num_rows)
    const from = Math.max(groupStart, start - base)
    const to = Math.min(groupStart + rows, end - base)
    if (from < to) {
      // one row group at a time: the traces of a whole shard never sit in memory together
      let objs: Record<string, unknown>[]
      try {
        objs = await parquetReadObjects({ file, metadata: md, columns: wanted, rowStart: from, rowEnd: to })
      } catch (err) {
        throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}: cannot decode rows ${from}–${to - 1} (${(err as Error).message})`, {
          cause: err,
        })
      }
      for (let i = 0; i < objs.length; i++) {
        yield normalizeRow(objs[i], { index: base + from + i, file: path, row: from + i }, columns)
      }
    }
    groupStart += rows
    if (base + groupStart >= end) break
  }
  return base + Number(md.num_rows)
}

/** Checks and coerces one input object into an `OpenR1Row` (a lone trace string becomes a one-item list). */
export function normalizeRow(obj: unknown, pos: RowPosition, columns?: ColumnMap): InputRow {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    return { ok: false, pos, reason: 'malformed', detail: `expected a JSON object, got ${describe(obj)}` }
  }
  const o = obj as Record<string, unknown>
  const col = (f: OpenR1Field) => columns?.[f] ?? f
  const get = (f: OpenR1Field) => o[col(f)]

  const rawId = get('uuid')
  const id = typeof rawId === 'string' && rawId ? rawId : typeof rawId === 'number' ? String(rawId) : `row-${pos.index}`
  const bad = (reason: BadRow['reason'], detail: string): InputRow => ({ ok: false, pos, id, reason, detail })

  const problem = get('problem')
  if (problem === undefined || problem === null) return bad('missing-field', `no "${col('problem')}"`)
  if (typeof problem !== 'string') return bad('malformed', `"${col('problem')}" is ${describe(problem)}, expected a string`)
  if (!problem.trim()) return bad('missing-field', `"${col('problem')}" is empty`)

  let generations = get('generations')
  if (generations === undefined || generations === null) return bad('missing-field', `no "${col('generations')}"`)
  if (typeof generations === 'string') generations = [generations]
  if (!Array.isArray(generations) || generations.some((g) => typeof g !== 'string' && g !== null)) {
    return bad('malformed', `"${col('generations')}" is ${describe(generations)}, expected a list of strings`)
  }

  const row: OpenR1Row = { pos, id, problem, generations: (generations as (string | null)[]).map((g) => g ?? '') }
  const answer = get('answer')
  if (typeof answer === 'string' || typeof answer === 'number') row.answer = String(answer)
  for (const f of ['correctness_math_verify', 'correctness_llama', 'is_reasoning_complete'] as const) {
    const v = flags(get(f), 'boolean')
    if (v === 'bad') return bad('malformed', `"${col(f)}" is ${describe(get(f))}, expected a list of booleans`)
    if (v) row[f] = v as (boolean | null)[]
  }
  const fr = flags(get('finish_reasons'), 'string')
  if (fr === 'bad') return bad('malformed', `"${col('finish_reasons')}" is ${describe(get('finish_reasons'))}, expected a list of strings`)
  if (fr) row.finish_reasons = fr as (string | null)[]
  return { ok: true, row }
}

/** A per-generation flag list; a lone value (one trace per row, as in math500-r1-traces) becomes a list. */
function flags(v: unknown, type: 'boolean' | 'string'): unknown[] | undefined | 'bad' {
  if (v === undefined || v === null) return undefined
  if (typeof v === type) return [v]
  if (Array.isArray(v) && v.every((x) => typeof x === type || x === null)) return v
  return 'bad'
}

function describe(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return 'a list'
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`
}

/** A short label for messages: `train-00000-of-00010.parquet row 12` or `sample.jsonl:4`. */
export function where(pos: RowPosition): string {
  const f = basename(pos.file)
  return pos.line !== undefined ? `${f}:${pos.line}` : `${f} row ${pos.row}`
}
