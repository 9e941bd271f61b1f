/**
 * Agreement of our grader with another grader's verdicts on 500 real R1-style traces on MATH500
 * (../shared/data/math500-r1-traces.parquet, column `correct`).
 *
 *   npx tsx bench/grade-traces.ts [--all] [--json]
 *
 * Rows map to MATH500 by exact question text (`question` = `problem`); the gold is the MATH500 loader's
 * (last \boxed{} of the solution), checked against the parquet's `ground_truth`.
 * Prints agreement (whole pipeline, and the grader alone on their extracted answers), the confusion matrix
 * and every disagreement (prediction, gold, both verdicts).
 */
import { fileURLToPath, pathToFileURL } from 'node:url'

import { asyncBufferFromFile, parquetReadObjects } from 'hyparquet'

import { loadBenchmark } from '../src/eval/bench.js'
import { gradeAnswer, gradeResponse, type ResponseVerdict } from '../src/eval/grade.js'

const SHARED = fileURLToPath(new URL('../../shared/', import.meta.url))
export const TRACES = `${SHARED}data/math500-r1-traces.parquet`
export const MATH500 = `${SHARED}bench/math500.jsonl`

export interface TraceRow {
  index: number
  id: string
  gold: string
  theirs: boolean
  theirPrediction: string
  ours: ResponseVerdict
  /** Our verdict with `requireFinal`. */
  oursFinal: boolean
  /** Our verdict on their extracted answer (null when they had none). */
  oursOnTheirs: boolean | null
  ms: number
}

export interface Agreement {
  rows: TraceRow[]
  agree: number
  /** [ours][theirs] counts: tt = both correct, tf = ours correct / theirs wrong, … */
  confusion: { tt: number; tf: number; ft: number; ff: number }
  goldMismatches: number
  slowestMs: number
  /**
   * The grader alone: their extracted `predicted_answer` graded by us, on the rows where they found a
   * boxed answer (their 'no_boxed' rows are failed by extraction, not by grading).
   */
  graderOnly: { agree: number; rows: number }
  /** Whole pipeline with `requireFinal` (no fallbacks into a truncated chain of thought). */
  finalOnly: { agree: number; confusion: { tt: number; tf: number; ft: number; ff: number } }
}

export async function gradeTraces(tracesPath = TRACES, mathPath = MATH500): Promise<Agreement> {
  const bench = await loadBenchmark(mathPath, { format: 'math500' })
  const byQuestion = new Map(bench.items.map((it) => [it.question, it]))
  const file = await asyncBufferFromFile(tracesPath)
  const records = (await parquetReadObjects({ file })) as Array<Record<string, unknown>>
  const rows: TraceRow[] = []
  let goldMismatches = 0
  for (const [index, r] of records.entries()) {
    const item = byQuestion.get(String(r.question))
    if (!item) throw new Error(`trace row ${index}: question not found in MATH500`)
    if (item.gold !== r.ground_truth) goldMismatches++
    const t0 = performance.now()
    const ours = gradeResponse(String(r.raw_output ?? ''), item.gold)
    const ms = performance.now() - t0
    const theirPrediction = String(r.predicted_answer)
    const oursOnTheirs = theirPrediction === 'no_boxed' ? null : gradeAnswer(theirPrediction, item.gold).correct
    const oursFinal = gradeResponse(String(r.raw_output ?? ''), item.gold, { requireFinal: true }).correct
    rows.push({ index, id: item.id, gold: item.gold, theirs: r.correct === true, theirPrediction, ours, oursFinal, oursOnTheirs, ms })
  }
  const c = confusion(rows.map((r) => [r.ours.correct, r.theirs]))
  const cf = confusion(rows.map((r) => [r.oursFinal, r.theirs]))
  return {
    rows,
    agree: c.tt + c.ff,
    confusion: c,
    finalOnly: { agree: cf.tt + cf.ff, confusion: cf },
    goldMismatches,
    slowestMs: Math.max(...rows.map((r) => r.ms)),
    graderOnly: {
      rows: rows.filter((r) => r.oursOnTheirs !== null).length,
      agree: rows.filter((r) => r.oursOnTheirs !== null && r.oursOnTheirs === r.theirs).length,
    },
  }
}

function confusion(pairs: [ours: boolean, theirs: boolean][]) {
  const c = { tt: 0, tf: 0, ft: 0, ff: 0 }
  for (const [o, t] of pairs) c[`${o ? 't' : 'f'}${t ? 't' : 'f'}` as keyof typeof c]++
  return c
}

function print(a: Agreement, all: boolean): void {
  const n = a.rows.length
  const { tt, tf, ft, ff } = a.confusion
  console.log(`traces: ${n}   gold mismatches vs ground_truth column: ${a.goldMismatches}`)
  console.log(`agreement: ${a.agree}/${n} = ${((100 * a.agree) / n).toFixed(1)}%`)
  const f = a.finalOnly
  console.log(`agreement with requireFinal (no fallbacks into truncated thinking): ${f.agree}/${n} = ${((100 * f.agree) / n).toFixed(1)}%` +
    `  [ours/theirs tt ${f.confusion.tt} tf ${f.confusion.tf} ft ${f.confusion.ft} ff ${f.confusion.ff}]`)
  const g = a.graderOnly
  console.log(`grader alone (their extracted answer, ${g.rows} rows with one): ${g.agree}/${g.rows} = ${((100 * g.agree) / g.rows).toFixed(1)}%`)
  console.log(`accuracy: ours ${((100 * (tt + tf)) / n).toFixed(1)}%   theirs ${((100 * (tt + ft)) / n).toFixed(1)}%`)
  console.log('\nconfusion (rows: ours, columns: theirs)')
  console.log('               theirs=true  theirs=false')
  console.log(`ours=true      ${String(tt).padStart(11)}  ${String(tf).padStart(12)}`)
  console.log(`ours=false     ${String(ft).padStart(11)}  ${String(ff).padStart(12)}`)
  const sources = new Map<string, number>()
  for (const r of a.rows) sources.set(r.ours.extraction.source, (sources.get(r.ours.extraction.source) ?? 0) + 1)
  console.log(`\nextraction sources: ${[...sources].map(([k, v]) => `${k} ${v}`).join(', ')}`)
  const slow = [...a.rows].sort((x, y) => y.ms - x.ms).slice(0, 3)
  console.log(`slowest comparisons: ${slow.map((r) => `#${r.index} ${r.ms.toFixed(0)} ms (${r.ours.method})`).join(', ')}`)
  const shown = a.rows.filter((r) => all || r.ours.correct !== r.theirs)
  console.log(`\n${all ? 'all rows' : 'disagreements'} (${shown.length}):`)
  for (const r of shown) {
    console.log(
      `#${r.index} ${r.id}  ours=${r.ours.correct} (${r.ours.method}, ${r.ours.extraction.source})  theirs=${r.theirs}\n` +
        `    pred:  ${JSON.stringify(r.ours.extraction.answer)}   [theirs: ${JSON.stringify(r.theirPrediction)}` +
        `${r.oursOnTheirs === null ? '' : `, which we grade ${r.oursOnTheirs}`}]\n` +
        `    gold:  ${JSON.stringify(r.gold)}\n` +
        `    norm:  ${JSON.stringify(r.ours.prediction)} vs ${JSON.stringify(r.ours.gold)}`,
    )
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const a = await gradeTraces()
  if (process.argv.includes('--json')) {
    const { rows, ...summary } = a
    console.log(JSON.stringify({ ...summary, disagreements: rows.filter((r) => r.ours.correct !== r.theirs) }, null, 2))
  } else {
    print(a, process.argv.includes('--all'))
  }
}
