/**
 * Benchmark loaders for the VTC-R1 evaluation sets (jsonl, one question per line).
 * Each row becomes { id, question, gold }; rows that cannot be used are reported in `issues` with their
 * line number and id, never dropped silently.
 */
import { readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'

import { VtcError } from '../errors.js'
import { lastBoxed } from '../latex.js'
import { normalizeAnswer } from './normalize.js'

export const BENCHMARKS = ['math500', 'aime25', 'amc23', 'gpqa_diamond', 'gsm8k'] as const
export type BenchmarkName = (typeof BENCHMARKS)[number]

/** Samples per question in the paper's protocol (accuracy is the mean over samples). */
export const SAMPLES_PER_QUESTION: Record<BenchmarkName, number> = {
  math500: 1,
  aime25: 16,
  amc23: 16,
  gpqa_diamond: 1,
  gsm8k: 1,
}

const ALIASES: Record<string, BenchmarkName> = {
  math500: 'math500',
  math: 'math500',
  aime25: 'aime25',
  aime2025: 'aime25',
  amc23: 'amc23',
  amc2023: 'amc23',
  gpqadiamond: 'gpqa_diamond',
  gpqad: 'gpqa_diamond',
  gpqa: 'gpqa_diamond',
  gsm8k: 'gsm8k',
}

export interface BenchItem {
  id: string
  /** 1-based line in the source file. */
  line: number
  /** The prompt: the bare question (GPQA options are part of it). */
  question: string
  /** The gold answer as the grader expects it (LaTeX for math, a letter for multiple choice). */
  gold: string
  kind: 'math' | 'choice'
  /** Option texts by letter (multiple choice only). */
  choices?: Record<string, string>
  /** Other fields of the row worth keeping (subject, level, url, …). */
  meta?: Record<string, unknown>
}

export interface RowIssue {
  line: number
  id?: string
  /** 'error': the row was skipped; 'warning': kept, but something in it is suspicious. */
  severity: 'error' | 'warning'
  message: string
}

export interface Benchmark {
  name: BenchmarkName
  path: string
  items: BenchItem[]
  issues: RowIssue[]
  samplesPerQuestion: number
}

export interface LoadOptions {
  /**
   * Directory holding `<name>.jsonl` files, used when a known name (not a path) is given (default: none, a known
   * name then throws `ERR_VTC_BENCH_DIR`).
   */
  dir?: string
  /**
   * Format of a file whose name does not say it (`loadBenchmark('./x.jsonl', { format: 'gsm8k' })`) (default: the
   * format the file name says, else the one its rows look like).
   */
  format?: BenchmarkName
  /** Throw a BenchmarkFormatError when any row had to be skipped (default false: skipped rows are in `issues`). */
  strict?: boolean
}

export class UnknownBenchmarkError extends VtcError {
  readonly known: readonly string[] = BENCHMARKS
  constructor(name: string) {
    super('ERR_VTC_UNKNOWN_BENCHMARK', `unknown benchmark "${name}"; known: ${BENCHMARKS.join(', ')} (or give a .jsonl path)`)
    this.name = 'UnknownBenchmarkError'
  }
}

export class BenchmarkFormatError extends VtcError {
  readonly issues: RowIssue[]
  constructor(path: string, issues: RowIssue[]) {
    const errors = issues.filter((i) => i.severity === 'error')
    const first = errors.slice(0, 3).map((i) => `line ${i.line}${i.id ? ` (id ${i.id})` : ''}: ${i.message}`)
    super('ERR_VTC_BENCH_MALFORMED', `${path}: ${errors.length} malformed row(s): ${first.join('; ')}`)
    this.name = 'BenchmarkFormatError'
    this.issues = issues
  }
}

/** Canonical name for a benchmark name or alias (case, `-` and `_` ignored), or null. */
export function benchmarkName(name: string): BenchmarkName | null {
  return ALIASES[name.toLowerCase().replace(/[-_ ]/g, '')] ?? null
}

/** Load a benchmark by known name (resolved in `opts.dir`) or by path to its jsonl file. */
export async function loadBenchmark(nameOrPath: string, opts: LoadOptions = {}): Promise<Benchmark> {
  const looksLikePath = /[\\/]/.test(nameOrPath) || /\.jsonl?$/i.test(nameOrPath)
  let path: string
  let name: BenchmarkName | null
  if (looksLikePath) {
    path = nameOrPath
    name = opts.format ?? benchmarkName(basename(nameOrPath).replace(/\.jsonl?$/i, '').replace(/[._-]?test$/i, ''))
  } else {
    name = benchmarkName(nameOrPath)
    if (!name) throw new UnknownBenchmarkError(nameOrPath)
    if (!opts.dir) {
      throw new VtcError('ERR_VTC_BENCH_DIR', `benchmark "${name}" is not bundled: pass { dir } holding ${name}.jsonl, or a path`)
    }
    path = join(opts.dir, `${name}.jsonl`)
  }
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new VtcError('ERR_VTC_BENCH_READ', `cannot read benchmark file ${path}: ${(err as Error).message}`, { cause: err })
  }
  name ??= sniffFormat(text)
  if (!name) throw new UnknownBenchmarkError(basename(path))
  const bench = parseBenchmark(name, text, path)
  if (opts.strict && bench.issues.some((i) => i.severity === 'error')) throw new BenchmarkFormatError(path, bench.issues)
  return bench
}

/** Guess the format from the fields of the first row. */
function sniffFormat(text: string): BenchmarkName | null {
  const first = text.split('\n').find((l) => l.trim())
  if (!first) return null
  let row: Record<string, unknown>
  try {
    row = JSON.parse(first) as Record<string, unknown>
  } catch {
    return null
  }
  if (typeof row.solution === 'string' && typeof row.problem === 'string') return 'math500'
  if (typeof row.answer === 'string' && row.answer.includes('####')) return 'gsm8k'
  if (typeof row.answer === 'string' && /^[A-D]$/.test(row.answer.trim())) return 'gpqa_diamond'
  if (typeof row.problem === 'string' && row.answer !== undefined) return 'aime25'
  if (typeof row.question === 'string' && typeof row.answer === 'number') return 'amc23'
  return null
}

/** Parse jsonl text in the given format. Never throws for bad rows: they land in `issues`. */
export function parseBenchmark(name: BenchmarkName, text: string, path = `${name}.jsonl`): Benchmark {
  const items: BenchItem[] = []
  const issues: RowIssue[] = []
  const seen = new Map<string, number>()
  const lines = text.split('\n')
  let index = -1 // 0-based row number: the id of rows that carry none (GPQA)
  lines.forEach((raw, i) => {
    const line = i + 1
    if (!raw.trim()) return
    index++
    let row: unknown
    try {
      row = JSON.parse(raw)
    } catch (err) {
      issues.push({ line, severity: 'error', message: `invalid JSON: ${(err as Error).message}` })
      return
    }
    if (typeof row !== 'object' || row === null || Array.isArray(row)) {
      issues.push({ line, severity: 'error', message: 'row is not a JSON object' })
      return
    }
    const r = row as Record<string, unknown>
    const result = PARSERS[name](r, index)
    if ('error' in result) {
      issues.push({ line, id: result.id, severity: 'error', message: result.error })
      return
    }
    for (const w of result.warnings ?? []) issues.push({ line, id: result.item.id, severity: 'warning', message: w })
    const dup = seen.get(result.item.id)
    if (dup !== undefined) {
      issues.push({ line, id: result.item.id, severity: 'error', message: `duplicate id (first on line ${dup})` })
      return
    }
    seen.set(result.item.id, line)
    items.push({ ...result.item, line })
  })
  return { name, path, items, issues, samplesPerQuestion: SAMPLES_PER_QUESTION[name] }
}

type Parsed =
  | { item: Omit<BenchItem, 'line'>; warnings?: string[] }
  | { error: string; id?: string }
type RowParser = (r: Record<string, unknown>, index: number) => Parsed

const str = (v: unknown): string | null => (typeof v === 'string' && v.trim() ? v : null)
const idOf = (v: unknown, fallback: number): string =>
  typeof v === 'string' || typeof v === 'number' ? String(v) : String(fallback)

/** MATH500: gold = last `\boxed{}` of the solution; the `answer` field, when present, must agree. */
const parseMath500: RowParser = (r, index) => {
  const id = idOf(r.unique_id ?? r.id, index)
  const question = str(r.problem)
  const solution = str(r.solution)
  if (!question) return { id, error: 'missing "problem"' }
  const boxed = solution ? lastBoxed(solution) : null
  const answer = str(r.answer)
  const warnings: string[] = []
  let gold = boxed
  if (boxed === null) {
    if (!answer) return { id, error: solution ? 'no \\boxed{} in "solution" and no "answer"' : 'missing "solution"' }
    warnings.push('no \\boxed{} in "solution": gold taken from "answer"')
    gold = answer
  } else if (answer && answer.trim() !== boxed.trim() && normalizeAnswer(answer) !== normalizeAnswer(boxed)) {
    warnings.push(`"answer" ${JSON.stringify(answer)} differs from the boxed solution ${JSON.stringify(boxed)}`)
  }
  const meta: Record<string, unknown> = {}
  for (const k of ['subject', 'level']) if (r[k] !== undefined) meta[k] = r[k]
  return { item: { id, question, gold: gold!, kind: 'math', meta }, warnings }
}

/** AIME25: integer `answer`. */
const parseAime: RowParser = (r, index) => {
  const id = idOf(r.id, index)
  const question = str(r.problem ?? r.question)
  if (!question) return { id, error: 'missing "problem"' }
  const gold = integerAnswer(r.answer)
  if (gold === null) return { id, error: `"answer" is not an integer: ${JSON.stringify(r.answer)}` }
  return { item: { id, question, gold, kind: 'math' } }
}

/** AMC23: float `answer`, `27.0` → `27`. */
const parseAmc: RowParser = (r, index) => {
  const id = idOf(r.id, index)
  const question = str(r.question ?? r.problem)
  if (!question) return { id, error: 'missing "question"' }
  const n = typeof r.answer === 'number' ? r.answer : typeof r.answer === 'string' ? Number(r.answer.trim()) : NaN
  if (!Number.isFinite(n) || (typeof r.answer === 'string' && !r.answer.trim())) {
    return { id, error: `"answer" is not a number: ${JSON.stringify(r.answer)}` }
  }
  const meta = r.url !== undefined ? { url: r.url } : undefined
  return { item: { id, question, gold: String(n), kind: 'math', meta } }
}

/** GPQA-Diamond: the gold is a letter A–D; the options are lines `A. …` … `D. …` inside the question. */
const parseGpqa: RowParser = (r, index) => {
  const id = idOf(r.id ?? r.idx, index)
  const question = str(r.question ?? r.problem)
  if (!question) return { id, error: 'missing "question"' }
  const letter = typeof r.answer === 'string' ? r.answer.trim().replace(/^\(?([A-Da-d])\)?\.?$/, '$1').toUpperCase() : ''
  if (!/^[A-D]$/.test(letter)) return { id, error: `"answer" is not a letter A–D: ${JSON.stringify(r.answer)}` }
  const choices = parseChoices(question)
  if (!choices) return { id, error: 'options A. … D. not found in the question text' }
  return { item: { id, question, gold: letter, kind: 'choice', choices } }
}

/** GSM8K: gold = text after `####` in `answer`, thousands separators removed. */
const parseGsm8k: RowParser = (r, index) => {
  const id = idOf(r.idx ?? r.id, index)
  const question = str(r.question)
  if (!question) return { id, error: 'missing "question"' }
  const answer = str(r.answer)
  const parts = answer?.split('####')
  if (!parts || parts.length !== 2 || !parts[1].trim()) return { id, error: 'no "#### <answer>" in "answer"' }
  const gold = parts[1].trim().replace(/,/g, '')
  const warnings = /^-?\d+(\.\d+)?$/.test(gold) ? [] : [`gold ${JSON.stringify(gold)} is not a plain number`]
  return { item: { id, question, gold, kind: 'math' }, warnings }
}

const PARSERS: Record<BenchmarkName, RowParser> = {
  math500: parseMath500,
  aime25: parseAime,
  amc23: parseAmc,
  gpqa_diamond: parseGpqa,
  gsm8k: parseGsm8k,
}

function integerAnswer(v: unknown): string | null {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() ? Number(v.trim()) : NaN
  return Number.isInteger(n) ? String(n) : null
}

/** Options `A. text` … `D. text` from a question: the last line starting with each letter, in order. */
export function parseChoices(question: string): Record<string, string> | null {
  const starts: number[] = []
  let from = question.length
  for (const L of ['D', 'C', 'B', 'A']) {
    const at = question.lastIndexOf(`\n${L}. `, from - 1)
    if (at < 0) return null
    starts.unshift(at)
    from = at
  }
  const choices: Record<string, string> = {}
  starts.forEach((at, k) => {
    const end = k < 3 ? starts[k + 1] : question.length
    choices['ABCD'[k]] = question.slice(at + 4, end).trim()
  })
  return choices
}
