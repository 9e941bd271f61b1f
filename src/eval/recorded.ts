/**
 * Result rows from model outputs recorded elsewhere (a .parquet or .jsonl file with a question and an output
 * per row, like ../shared/data/math500-r1-traces.parquet), so the grading and report path runs on real outputs
 * without a model: each output is matched to its benchmark question (by id, else by exact question text),
 * graded, and appended to results.jsonl like a sample of a live run. Output tokens are counted with the Qwen3
 * tokenizer; the latency is unknown (null). When the file carries another grader's verdict (`correct`), it is
 * kept in the row and the agreement is reported.
 *
 * Recorded traces are often cut off mid-sentence, and the protocol's fallbacks ("answer is", the last number)
 * still take an answer from them; so each row says whether its trace finished (inferred from its text, see
 * `traceFinished`), and the reports count those answers.
 */
import { readFile } from 'node:fs/promises'

import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet'

import { VtcError } from '../errors.js'
import { countTextTokens } from '../text-tokens.js'
import type { Benchmark, BenchItem } from './bench.js'
import { extractAnswer } from '../answer.js'
import type { EvalReport, RunMode } from './report.js'
import { ResultsFile, rowKey, writeReports, type EvalRow } from './results.js'
import { fileHash, gradedFields } from './runner.js'

const OUTPUT_COLUMNS = ['raw_output', 'output', 'response', 'generation', 'completion']
const QUESTION_COLUMNS = ['question', 'problem']
const ID_COLUMNS = ['id', 'unique_id']
const VERDICT_COLUMNS = ['correct', 'is_correct']

export interface RecordedOptions {
  /** The .parquet or .jsonl file of outputs (required). */
  path: string
  /** The benchmark the outputs answer (their gold answers come from it) (required). */
  bench: Benchmark
  /** Where results.jsonl and the reports go (created; rows already there are skipped) (required). */
  outDir: string
  /** The mode the outputs were produced in (default `baseline`: plain long chain-of-thought outputs). */
  mode?: RunMode
}

export interface RecordedOutcome {
  /** Rows graded this time (rows already in results.jsonl are skipped). */
  graded: number
  skipped: number
  report: EvalReport
  rows: EvalRow[]
}

export async function importRecorded(opts: RecordedOptions): Promise<RecordedOutcome> {
  const mode = opts.mode ?? 'baseline'
  const records = await readRecords(opts.path)
  if (!records.length) throw new VtcError('ERR_VTC_INVALID_INPUT', `${opts.path} has no rows`)
  const columns = Object.keys(records[0])
  const pick = (names: string[]) => names.find((n) => columns.includes(n))
  const outputCol = pick(OUTPUT_COLUMNS)
  if (!outputCol) {
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${opts.path}: no output column (looked for ${OUTPUT_COLUMNS.join(', ')}; it has ${columns.join(', ')})`)
  }
  const questionCol = pick(QUESTION_COLUMNS)
  const idCol = pick(ID_COLUMNS)
  const verdictCol = pick(VERDICT_COLUMNS)
  const byId = new Map(opts.bench.items.map((it) => [it.id, it]))
  const byQuestion = new Map(opts.bench.items.map((it) => [it.question.trim(), it]))
  // outputs of a reasoning model close their thinking; one of them that did not was cut off
  const thinking = records.some((r) => typeof r[outputCol] === 'string' && r[outputCol].includes(THINK_END))

  const store = await ResultsFile.open(opts.outDir, { recorded: opts.path, mode }, { [opts.bench.name]: await fileHash(opts.bench.path) })
  try {
    const done = new Set(store.rows.map(rowKey))
    const samples = new Map<string, number>() // the k-th output for a question is sample k
    let graded = 0
    let skipped = 0
    for (const [index, rec] of records.entries()) {
      const item = matchItem(rec, index)
      const sample = samples.get(item.id) ?? 0
      samples.set(item.id, sample + 1)
      const key = { bench: opts.bench.name, id: item.id, mode, sample }
      if (done.has(rowKey(key))) {
        skipped++
        continue
      }
      const output = rec[outputCol]
      if (typeof output !== 'string') throw new VtcError('ERR_VTC_INVALID_INPUT', `${opts.path} row ${index} (${item.id}): "${outputCol}" is not text`)
      const reference = verdictCol === undefined ? undefined : rec[verdictCol]
      const finished = traceFinished(output, thinking)
      await store.append({
        ...key,
        ...gradedFields(output, item),
        // inferred: a trace that ends before its final answer was, as a rule, cut off by a length limit
        finishReason: finished ? 'stop' : 'length',
        finished,
        outputTokens: countTextTokens(output),
        tokensEstimated: true,
        rounds: 1,
        visionTokens: 0,
        pages: 0,
        latencyMs: null,
        renderMs: 0,
        visionMs: 0,
        prefillMs: 0,
        decodeMs: 0,
        output,
        ...(typeof reference === 'boolean' ? { referenceCorrect: reference } : {}),
      })
      graded++
    }
    const { report, rows } = await writeReports(opts.outDir, store.info.options)
    return { graded, skipped, report, rows }
  } finally {
    await store.close()
  }

  function matchItem(rec: Record<string, unknown>, index: number): BenchItem {
    const id = idCol === undefined ? undefined : rec[idCol]
    const question = questionCol === undefined ? undefined : rec[questionCol]
    const item = (id !== undefined && byId.get(String(id))) || (typeof question === 'string' && byQuestion.get(question.trim()))
    if (!item) {
      const what = id !== undefined ? `id ${JSON.stringify(id)}` : typeof question === 'string' ? `question ${JSON.stringify(question.slice(0, 60))}` : 'no id or question column'
      throw new VtcError('ERR_VTC_INVALID_INPUT', `${opts.path} row ${index}: ${what} is not in ${opts.bench.name} (${opts.bench.path})`)
    }
    return item
  }
}

const THINK_END = '</think>'

/**
 * Whether a recorded trace finished: a final answer (`<answer>` or `\boxed{}`) after its reasoning, which
 * ends at the last `</think>` when the file's outputs use it (a trace without one there was cut off while
 * thinking, whatever it boxed on the way).
 */
export function traceFinished(output: string, thinking: boolean): boolean {
  const cut = output.lastIndexOf(THINK_END)
  if (thinking && cut < 0) return false
  return extractAnswer(output.slice(Math.max(cut, 0)), { requireFinal: true }).source !== 'none'
}

async function readRecords(path: string): Promise<Record<string, unknown>[]> {
  try {
    if (/\.parquet$/i.test(path)) {
      return (await parquetReadObjects({ file: await asyncBufferFromFile(path) })) as Record<string, unknown>[]
    }
    const text = await readFile(path, 'utf8')
    return text.split('\n').flatMap((line, i) => {
      if (!line.trim()) return []
      try {
        return [JSON.parse(line) as Record<string, unknown>]
      } catch (err) {
        throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} line ${i + 1}: not valid JSON (${(err as Error).message})`)
      }
    })
  } catch (err) {
    if (err instanceof VtcError) throw err
    throw new VtcError('ERR_VTC_INVALID_INPUT', `cannot read recorded outputs ${path}: ${(err as Error).message}`, { cause: err })
  }
}
