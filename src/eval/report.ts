/**
 * Evaluation report: per-sample result rows → summary JSON (per benchmark × mode), a markdown table, and a
 * self-contained HTML page with inline SVG bar charts (no external assets, no scripts).
 */
import { VtcError } from '../errors.js'
import type { ExtractionSource } from '../answer.js'

export type RunMode = 'vtc' | 'baseline'

/** One graded sample of one question in one mode. */
export interface ResultRow {
  bench: string
  id: string
  sample: number
  mode: RunMode
  prediction: string
  gold: string
  correct: boolean
  outputTokens: number
  /** Wall time of the run; null when unknown (outputs recorded elsewhere, without timings). */
  latencyMs: number | null
  rounds: number
  visionTokens: number
  /** Set when the sample failed: it is counted in `errors`, not in the accuracy or the means. */
  error?: { code: string; message: string }
  /** Where the graded answer came from: `<answer>`, `\boxed{}`, or a fallback (`answer-is`, `last-number`). */
  answerSource?: ExtractionSource
  /** Whether the output ended on its own (false: cut off by a budget, or a recorded trace without its final answer). */
  finished?: boolean
  /** Outputs recorded elsewhere: the verdict that came with them (another grader's). */
  referenceCorrect?: boolean
}

export interface ModeSummary {
  /** Samples that ran to the end (failed ones are only counted in `errors`). */
  samples: number
  errors: number
  questions: number
  /** Mean over samples of each question, then over questions (the protocol's "mean over samples"). */
  accuracy: number
  meanOutputTokens: number
  /** Over the samples with a known latency (NaN when none has one). */
  meanLatencyMs: number
  meanRounds: number
  meanVisionTokens: number
  /** Samples by where their answer came from (rows that say so). */
  answerSources: Partial<Record<ExtractionSource, number>>
  /** Samples whose output did not finish (`finished: false`). */
  unfinished: number
  /**
   * Correct samples whose answer a fallback ("answer is", last number) took from an unfinished output, and the
   * part of `accuracy` they make: the protocol counts them, a reader should know how many there are.
   */
  fallbackCorrect: number
  fallbackAccuracy: number
}

/** vtc ÷ baseline on the questions both modes ran (the efficiency claim compares the same questions). */
export interface ModeRatios {
  pairedQuestions: number
  accuracy: number
  outputTokens: number
  latency: number
}

export interface BenchSummary {
  bench: string
  vtc?: ModeSummary
  baseline?: ModeSummary
  ratios?: ModeRatios
}

/** Our verdicts against the recorded ones (outputs graded elsewhere too), over the rows that carry one. */
export interface Agreement {
  rows: number
  agree: number
  disagreements: Disagreement[]
}

export type Disagreement = Pick<ResultRow, 'bench' | 'id' | 'mode' | 'sample' | 'prediction' | 'gold' | 'correct' | 'referenceCorrect' | 'answerSource' | 'finished'>

export interface EvalReport {
  generatedAt: string
  benches: BenchSummary[]
  agreement?: Agreement
  meta?: Record<string, unknown>
}

const MODES: RunMode[] = ['vtc', 'baseline']

export function summarize(
  rows: ResultRow[],
  opts: {
    /** Run information the report carries as `meta` (default: none). */
    meta?: Record<string, unknown>
    /** The report's `generatedAt` (default: now). */
    now?: Date
  } = {},
): EvalReport {
  rows.forEach(checkRow)
  const benches = [...new Set(rows.map((r) => r.bench))].sort()
  const agreement = agreementOf(rows)
  return {
    generatedAt: (opts.now ?? new Date()).toISOString(),
    benches: benches.map((bench) => summarizeBench(bench, rows.filter((r) => r.bench === bench))),
    ...(agreement ? { agreement } : {}),
    ...(opts.meta ? { meta: opts.meta } : {}),
  }
}

function agreementOf(rows: ResultRow[]): Agreement | undefined {
  const withRef = rows.filter((r) => typeof r.referenceCorrect === 'boolean' && !r.error)
  if (!withRef.length) return undefined
  const disagreements = withRef
    .filter((r) => r.correct !== r.referenceCorrect)
    .map(({ bench, id, mode, sample, prediction, gold, correct, referenceCorrect, answerSource, finished }) => ({
      bench, id, mode, sample, prediction, gold, correct, referenceCorrect, answerSource, finished,
    }))
  return { rows: withRef.length, agree: withRef.length - disagreements.length, disagreements }
}

export const agreementText = (a: Agreement): string =>
  `Agreement with the recorded verdicts: ${a.agree}/${a.rows} = ${((100 * a.agree) / a.rows).toFixed(1)}%`

function checkRow(r: ResultRow, i: number): void {
  const bad = (what: string) => new VtcError('ERR_VTC_REPORT_ROW', `result row ${i} (${r?.bench}/${r?.id}): ${what}`)
  if (!r || typeof r !== 'object') throw bad('not an object')
  if (!r.bench || typeof r.bench !== 'string') throw bad('missing bench')
  if (typeof r.id !== 'string') throw bad('missing id')
  if (!MODES.includes(r.mode)) throw bad(`mode must be 'vtc' or 'baseline', got ${JSON.stringify(r.mode)}`)
  if (r.error) return // a failed sample only counts as a failure
  if (typeof r.correct !== 'boolean') throw bad('correct must be a boolean')
  for (const k of ['outputTokens', 'latencyMs', 'rounds', 'visionTokens'] as const) {
    if (k === 'latencyMs' && r[k] === null) continue
    const v = r[k] as number
    if (!Number.isFinite(v) || v < 0) throw bad(`${k} must be a finite number ≥ 0, got ${v}`)
  }
}

function summarizeBench(bench: string, all: ResultRow[]): BenchSummary {
  const out: BenchSummary = { bench }
  const rows = all.filter((r) => !r.error)
  for (const mode of MODES) {
    const m = all.filter((r) => r.mode === mode)
    if (m.length) out[mode] = summarizeMode(m.filter((r) => !r.error), m.filter((r) => r.error).length)
  }
  const vtcIds = new Set(rows.filter((r) => r.mode === 'vtc').map((r) => r.id))
  const paired = new Set(rows.filter((r) => r.mode === 'baseline' && vtcIds.has(r.id)).map((r) => r.id))
  if (paired.size) {
    const v = summarizeMode(rows.filter((r) => r.mode === 'vtc' && paired.has(r.id)))
    const b = summarizeMode(rows.filter((r) => r.mode === 'baseline' && paired.has(r.id)))
    out.ratios = {
      pairedQuestions: paired.size,
      accuracy: ratio(v.accuracy, b.accuracy),
      outputTokens: ratio(v.meanOutputTokens, b.meanOutputTokens),
      latency: ratio(v.meanLatencyMs, b.meanLatencyMs),
    }
  }
  return out
}

const FALLBACKS: (ExtractionSource | undefined)[] = ['answer-is', 'last-number']
const fallbackOnUnfinished = (r: ResultRow) => r.correct && r.finished === false && FALLBACKS.includes(r.answerSource)

function summarizeMode(rows: ResultRow[], errors = 0): ModeSummary {
  const byQuestion = new Map<string, ResultRow[]>()
  for (const r of rows) byQuestion.set(r.id, [...(byQuestion.get(r.id) ?? []), r])
  const accuracy = (correct: (r: ResultRow) => boolean) => mean([...byQuestion.values()].map((rs) => mean(rs.map((r) => (correct(r) ? 1 : 0)))))
  const answerSources: ModeSummary['answerSources'] = {}
  for (const r of rows) if (r.answerSource) answerSources[r.answerSource] = (answerSources[r.answerSource] ?? 0) + 1
  return {
    samples: rows.length,
    errors,
    questions: byQuestion.size,
    accuracy: accuracy((r) => r.correct),
    meanOutputTokens: mean(rows.map((r) => r.outputTokens)),
    meanLatencyMs: mean(rows.flatMap((r) => (r.latencyMs === null ? [] : [r.latencyMs]))),
    meanRounds: mean(rows.map((r) => r.rounds)),
    meanVisionTokens: mean(rows.map((r) => r.visionTokens)),
    answerSources,
    unfinished: rows.filter((r) => r.finished === false).length,
    fallbackCorrect: rows.filter(fallbackOnUnfinished).length,
    // these samples are correct, so the accuracy they alone would make is their part of `accuracy`
    fallbackAccuracy: accuracy(fallbackOnUnfinished),
  }
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN)
/** NaN (rendered "–") when the baseline is 0: a ratio to nothing is not a number. */
const ratio = (a: number, b: number) => (b === 0 ? NaN : a / b)

const pct = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(1)}%`)
const num = (x: number | undefined, digits = 0) =>
  x === undefined || Number.isNaN(x) ? '–' : x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
const times = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? '–' : `${x.toFixed(2)}×`)
const secs = (ms: number | undefined) => (ms === undefined || Number.isNaN(ms) ? '–' : `${(ms / 1000).toFixed(1)} s`)

const points = (x: number) => (Number.isNaN(x) ? '–' : `${(100 * x).toFixed(1)} points`)

const ANSWER_HEAD = ['benchmark', 'mode', 'answer tag', 'boxed', 'answer is', 'last number', 'none', 'unfinished', 'correct by a fallback on an unfinished output']
const SOURCES: ExtractionSource[] = ['answer-tag', 'boxed', 'answer-is', 'last-number', 'none']
const ANSWER_NOTE =
  'Answers by source (the `<answer>` tag, the last `\\boxed{}`, or the protocol\'s fallbacks "answer is" and last number); ' +
  'unfinished: outputs cut off before they ended:'

/** A row per benchmark × mode whose rows say where their answers came from. */
function answerRows(report: EvalReport): string[][] {
  return report.benches.flatMap((b) =>
    MODES.flatMap((m) => {
      const s = b[m]
      if (!s || !Object.keys(s.answerSources).length) return []
      const sources = SOURCES.map((k) => num(s.answerSources[k] ?? 0))
      return [[b.bench, m, ...sources, num(s.unfinished), `${num(s.fallbackCorrect)} (${points(s.fallbackAccuracy)} of accuracy)`]]
    }),
  )
}

const DISAGREEMENT_HEAD = ['benchmark', 'id', 'mode', 'sample', 'prediction', 'gold', 'ours', 'recorded', 'answer from', 'finished']

function disagreementRows(a: Agreement): string[][] {
  const verdict = (c: boolean | undefined) => (c ? 'correct' : 'wrong')
  return a.disagreements.map((d) => [
    d.bench, d.id, d.mode, String(d.sample), d.prediction || '–', d.gold, verdict(d.correct), verdict(d.referenceCorrect),
    d.answerSource ?? '–', d.finished === undefined ? '–' : d.finished ? 'yes' : 'no',
  ])
}

/** A row per benchmark, both modes side by side, then the vtc/baseline ratios; `column` is the accuracy ratio or the vision tokens. */
function summaryTable(report: EvalReport, column: 'acc ratio' | 'vision tokens vtc'): [string[], string[][]] {
  const head = ['benchmark', 'acc vtc', 'acc baseline', 'tokens vtc', 'tokens baseline', 'latency vtc', 'latency baseline', 'rounds vtc', column, 'token ratio', 'latency ratio']
  const rows = report.benches.map((b) => [
    b.bench,
    pct(b.vtc?.accuracy),
    pct(b.baseline?.accuracy),
    num(b.vtc?.meanOutputTokens),
    num(b.baseline?.meanOutputTokens),
    secs(b.vtc?.meanLatencyMs),
    secs(b.baseline?.meanLatencyMs),
    num(b.vtc?.meanRounds, 2),
    column === 'acc ratio' ? times(b.ratios?.accuracy) : num(b.vtc?.meanVisionTokens),
    times(b.ratios?.outputTokens),
    times(b.ratios?.latency),
  ])
  return [head, rows]
}

const mdCell = (c: string) => c.replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ')
const mdTable = (head: string[], rows: string[][]) =>
  [head, head.map(() => '---'), ...rows].map((cells) => `| ${cells.map(mdCell).join(' | ')} |`)

/**
 * A markdown table per benchmark with both modes side by side and the vtc/baseline ratios; where the answers
 * came from; the agreement with recorded verdicts and its disagreements (`disagreements: false`: only their count).
 */
export function reportMarkdown(
  report: EvalReport,
  opts: {
    /** List the disagreements with the recorded verdicts; false: only their count (default true). */
    disagreements?: boolean
  } = {},
): string {
  const [head, lines] = summaryTable(report, 'acc ratio')
  const failed = failures(report)
  const answers = answerRows(report)
  const a = report.agreement
  const listed = opts.disagreements ?? true
  return (
    [
      ...mdTable(head, lines),
      ...(failed ? ['', failed] : []),
      ...(answers.length ? ['', ANSWER_NOTE, '', ...mdTable(ANSWER_HEAD, answers)] : []),
      ...(a ? ['', agreementText(a)] : []),
      ...(a?.disagreements.length && !listed ? [`${a.disagreements.length} disagreements, listed in report.md and report.html`] : []),
      ...(a?.disagreements.length && listed ? ['', `Disagreements (${a.disagreements.length}):`, '', ...mdTable(DISAGREEMENT_HEAD, disagreementRows(a))] : []),
    ].join('\n') + '\n'
  )
}

/** "Failed samples (not counted): aime25 vtc 2, …", or '' when every sample ran. */
function failures(report: EvalReport): string {
  const parts = report.benches.flatMap((b) => MODES.flatMap((m) => (b[m]?.errors ? [`${b.bench} ${m} ${b[m]!.errors}`] : [])))
  return parts.length ? `Failed samples (not counted; see results.jsonl): ${parts.join(', ')}` : ''
}

const esc = (s: string) =>
  s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;')

const COLORS: Record<RunMode, string> = { vtc: '#2b6cb0', baseline: '#a0aec0' }

interface ChartSpec {
  title: string
  value: (m: ModeSummary) => number
  label: (x: number) => string
  /** Fixed maximum (accuracy: 1), otherwise the largest value. */
  max?: number
}

/** A grouped bar chart: one group per benchmark, one bar per mode. */
function barChart(report: EvalReport, spec: ChartSpec): string {
  const W = 640
  const H = 260
  const top = 44 // room for the legend above the value labels of full-height bars
  const bottom = 40
  const left = 20
  const plotH = H - top - bottom
  const groups = report.benches
  const values = groups.flatMap((b) => MODES.map((m) => (b[m] ? spec.value(b[m]!) : NaN))).filter(Number.isFinite)
  const max = spec.max ?? Math.max(...values, 0)
  const groupW = (W - 2 * left) / Math.max(groups.length, 1)
  const barW = Math.min(48, (groupW - 16) / MODES.length)
  const bars: string[] = []
  groups.forEach((b, gi) => {
    const gx = left + gi * groupW + (groupW - barW * MODES.length) / 2
    MODES.forEach((mode, mi) => {
      const s = b[mode]
      if (!s) return
      const v = spec.value(s)
      const h = max > 0 && Number.isFinite(v) ? (v / max) * plotH : 0
      const x = gx + mi * barW
      const y = top + plotH - h
      bars.push(
        `<rect x="${x.toFixed(1)}" y="${y.toFixed(1)}" width="${(barW - 4).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[mode]}"><title>${esc(`${b.bench} ${mode}: ${spec.label(v)}`)}</title></rect>`,
        `<text x="${(x + (barW - 4) / 2).toFixed(1)}" y="${(y - 4).toFixed(1)}" text-anchor="middle" font-size="11">${esc(spec.label(v))}</text>`,
      )
    })
    bars.push(
      `<text x="${(left + gi * groupW + groupW / 2).toFixed(1)}" y="${H - bottom + 18}" text-anchor="middle" font-size="12">${esc(b.bench)}</text>`,
    )
  })
  const axis = `<line x1="${left}" y1="${top + plotH}" x2="${W - left}" y2="${top + plotH}" stroke="#4a5568"/>`
  const legend = MODES.map(
    (m, i) =>
      `<rect x="${W - 170 + i * 85}" y="8" width="12" height="12" fill="${COLORS[m]}"/><text x="${W - 153 + i * 85}" y="18" font-size="12">${m}</text>`,
  ).join('')
  return (
    `<figure><figcaption>${esc(spec.title)}</figcaption>` +
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(spec.title)}">` +
    `${axis}${bars.join('')}${legend}</svg></figure>`
  )
}

/** A table whose first column heads its rows. */
function htmlTable(head: string[], rows: string[][]): string {
  const tr = (cells: string[]) => `<tr>${cells.map((c, i) => (i ? `<td>${esc(c)}</td>` : `<th>${esc(c)}</th>`)).join('')}</tr>`
  return `<table>\n<thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead>\n<tbody>\n${rows.map(tr).join('\n')}\n</tbody>\n</table>`
}

/** A self-contained HTML page: summary table and accuracy / output tokens / latency charts. */
export function reportHtml(
  report: EvalReport,
  opts: {
    /** The page's title and heading (default `vtc-r1 evaluation`). */
    title?: string
  } = {},
): string {
  const title = opts.title ?? 'vtc-r1 evaluation'
  const failed = failures(report)
  const [head, rows] = summaryTable(report, 'vision tokens vtc')
  const answers = answerRows(report)
  const a = report.agreement
  const charts = [
    barChart(report, { title: 'Accuracy', value: (m) => m.accuracy, label: (x) => pct(x), max: 1 }),
    barChart(report, { title: 'Mean output tokens', value: (m) => m.meanOutputTokens, label: (x) => num(x) }),
    barChart(report, { title: 'Mean latency', value: (m) => m.meanLatencyMs, label: (x) => secs(x) }),
  ].join('\n')
  const meta = report.meta
    ? `<pre>${esc(JSON.stringify(report.meta, null, 2))}</pre>`
    : ''
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${esc(title)}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1a202c; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #cbd5e0; padding: 4px 10px; text-align: right; }
th:first-child, thead th { text-align: left; }
figure { margin: 1.5rem 0; }
figcaption { font-weight: 600; margin-bottom: 4px; }
pre { background: #f7fafc; padding: 8px; }
</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p>Generated ${esc(report.generatedAt)}. Ratios are vtc ÷ baseline on the questions both modes ran.</p>
${failed ? `<p>${esc(failed)}</p>` : ''}
${htmlTable(head, rows)}
${answers.length ? `<p>${esc(ANSWER_NOTE)}</p>\n${htmlTable(ANSWER_HEAD, answers)}` : ''}
${a ? `<p>${esc(agreementText(a))}</p>` : ''}
${a?.disagreements.length ? `<h2>Disagreements (${a.disagreements.length})</h2>\n${htmlTable(DISAGREEMENT_HEAD, disagreementRows(a))}` : ''}
${charts}
${meta}
</body>
</html>
`
}
