import test from 'ava'

import { VtcError } from '../src/errors.js'
import { reportHtml, reportMarkdown, summarize, type ResultRow } from '../src/eval/report.js'

const row = (bench: string, id: string, sample: number, mode: 'vtc' | 'baseline', correct: boolean, outputTokens: number, latencyMs: number, rounds = 1, visionTokens = 0): ResultRow => ({
  bench, id, sample, mode, prediction: correct ? '1' : '2', gold: '1', correct, outputTokens, latencyMs, rounds, visionTokens,
})

// aime25: q0 has 4 samples (3 right in vtc), q1 has 4 samples (1 right); math500: 3 questions, one only in vtc
const ROWS: ResultRow[] = [
  row('aime25', '0', 0, 'vtc', true, 1000, 2000, 2, 500),
  row('aime25', '0', 1, 'vtc', true, 1200, 2200, 2, 500),
  row('aime25', '0', 2, 'vtc', true, 800, 1800, 1, 0),
  row('aime25', '0', 3, 'vtc', false, 1000, 2000, 3, 1000),
  row('aime25', '1', 0, 'vtc', false, 2000, 4000, 4, 1500),
  row('aime25', '1', 1, 'vtc', true, 2000, 4000, 4, 1500),
  row('aime25', '1', 2, 'vtc', false, 2000, 4000, 4, 1500),
  row('aime25', '1', 3, 'vtc', false, 2000, 4000, 4, 1500),
  ...[0, 1, 2, 3].map((s) => row('aime25', '0', s, 'baseline', s < 2, 4000, 8000)),
  ...[0, 1, 2, 3].map((s) => row('aime25', '1', s, 'baseline', false, 8000, 16000)),
  row('math500', 'a', 0, 'vtc', true, 300, 600),
  row('math500', 'b', 0, 'vtc', false, 500, 1000),
  row('math500', 'c', 0, 'vtc', true, 700, 1400),
  row('math500', 'a', 0, 'baseline', true, 900, 1800),
  row('math500', 'b', 0, 'baseline', true, 1500, 3000),
]

test('summary: accuracy is the mean over samples per question, then over questions', (t) => {
  const r = summarize(ROWS, { now: new Date('2026-01-01T00:00:00Z') })
  t.is(r.generatedAt, '2026-01-01T00:00:00.000Z')
  t.deepEqual(r.benches.map((b) => b.bench), ['aime25', 'math500'])
  const aime = r.benches[0]
  t.is(aime.vtc!.samples, 8)
  t.is(aime.vtc!.questions, 2)
  t.is(aime.vtc!.accuracy, (3 / 4 + 1 / 4) / 2)
  t.is(aime.baseline!.accuracy, (2 / 4 + 0) / 2)
  t.is(aime.vtc!.meanOutputTokens, 12000 / 8)
  t.is(aime.vtc!.meanLatencyMs, 24000 / 8)
  t.is(aime.vtc!.meanRounds, 24 / 8)
  t.is(aime.vtc!.meanVisionTokens, 8000 / 8)
  t.is(aime.baseline!.meanOutputTokens, 6000)
  t.is(aime.ratios!.pairedQuestions, 2)
  t.is(aime.ratios!.accuracy, 0.5 / 0.25)
  t.is(aime.ratios!.outputTokens, 1500 / 6000)
  t.is(aime.ratios!.latency, 3000 / 12000)
})

test('summary: ratios compare only the questions both modes ran', (t) => {
  const math = summarize(ROWS).benches[1]
  t.is(math.vtc!.questions, 3)
  t.is(math.vtc!.accuracy, 2 / 3, 'the summary itself keeps every question')
  t.is(math.ratios!.pairedQuestions, 2)
  t.is(math.ratios!.outputTokens, 400 / 1200, 'question c (vtc only) is left out of the ratio')
  t.is(math.ratios!.accuracy, 0.5 / 1)
})

test('summary: a bench with one mode has no ratios; bad rows are rejected with their index', (t) => {
  const r = summarize([row('gsm8k', '1', 0, 'vtc', true, 10, 20)])
  t.is(r.benches[0].baseline, undefined)
  t.is(r.benches[0].ratios, undefined)
  const err = t.throws(() => summarize([ROWS[0], { ...ROWS[1], latencyMs: Number.NaN }]), { instanceOf: VtcError })
  t.is(err?.code, 'ERR_VTC_REPORT_ROW')
  t.regex(err!.message, /row 1/)
  t.throws(() => summarize([{ ...ROWS[0], mode: 'other' as 'vtc' }]), { message: /mode/ })
})

test('markdown: one row per benchmark with both modes and the ratios', (t) => {
  const md = reportMarkdown(summarize(ROWS))
  const lines = md.trim().split('\n')
  t.is(lines.length, 4)
  t.regex(lines[0], /^\| benchmark \| acc vtc \| acc baseline \|/)
  t.is(lines[2], '| aime25 | 50.0% | 25.0% | 1,500 | 6,000 | 3.0 s | 12.0 s | 3.00 | 2.00× | 0.25× | 0.25× |')
  t.regex(lines[3], /^\| math500 \| 66\.7% \| 100\.0% \|/)
  t.is(reportMarkdown(summarize([row('gsm8k', '1', 0, 'vtc', true, 10, 20)])).trim().split('\n')[2], '| gsm8k | 100.0% | – | 10 | – | 0.0 s | – | 1.00 | – | – | – |')
})

test('html: self-contained, three SVG charts with one bar per bench × mode, text escaped', (t) => {
  const rows = ROWS.map((r) => (r.bench === 'math500' ? { ...r, bench: 'math<500>&"x"' } : r))
  const html = reportHtml(summarize(rows, { meta: { model: 'Qwen3-VL <2B>' } }), { title: 'run <1>' })
  t.true(html.startsWith('<!doctype html>'))
  t.notRegex(html, /<script|<link|src=|href=|url\(/i, 'no external assets or scripts')
  t.is((html.match(/<svg /g) ?? []).length, 3)
  t.is((html.match(/<rect [^>]*fill="#2b6cb0"><title>/g) ?? []).length, 6, 'vtc bars: 2 benches × 3 charts')
  t.is((html.match(/<rect [^>]*fill="#a0aec0"><title>/g) ?? []).length, 6)
  t.true(html.includes('math&lt;500&gt;&amp;&quot;x&quot;'))
  t.false(html.includes('math<500>'))
  t.true(html.includes('<title>run &lt;1&gt;</title>'))
  t.true(html.includes('Qwen3-VL &lt;2B&gt;'))
  // accuracy bars are scaled to 100%: aime vtc 50% is half the plot height
  const m = /<rect x="[\d.]+" y="([\d.]+)" width="[\d.]+" height="([\d.]+)" fill="#2b6cb0"><title>aime25 vtc: 50\.0%<\/title>/.exec(html)
  t.truthy(m)
  t.is(Number(m![2]), 88, "half of the 176 px plot")
})

test('answers: where they came from, unfinished outputs, correct fallbacks on them, and the agreement with its disagreements', (t) => {
  const rows: ResultRow[] = [
    { ...row('math500', 'a', 0, 'baseline', true, 10, 20), answerSource: 'answer-tag', finished: true, referenceCorrect: true },
    { ...row('math500', 'b', 0, 'baseline', true, 10, 20), prediction: 'x<1 | y', answerSource: 'last-number', finished: false, referenceCorrect: false },
    { ...row('math500', 'c', 0, 'baseline', false, 10, 20), answerSource: 'none', finished: false, referenceCorrect: false },
    // a fallback answer of a finished output is no cut-off trace's guess
    { ...row('math500', 'd', 0, 'baseline', true, 10, 20), answerSource: 'answer-is', finished: true },
  ]
  const r = summarize(rows)
  t.like(r.benches[0].baseline, {
    accuracy: 0.75,
    answerSources: { 'answer-tag': 1, 'last-number': 1, none: 1, 'answer-is': 1 },
    unfinished: 2,
    fallbackCorrect: 1,
    fallbackAccuracy: 0.25,
  })
  t.like(r.agreement, { rows: 3, agree: 2 })
  t.deepEqual(r.agreement!.disagreements, [
    { bench: 'math500', id: 'b', mode: 'baseline', sample: 0, prediction: 'x<1 | y', gold: '1', correct: true, referenceCorrect: false, answerSource: 'last-number', finished: false },
  ])

  const md = reportMarkdown(r)
  t.regex(md, /\| math500 \| baseline \| 1 \| 0 \| 1 \| 1 \| 1 \| 2 \| 1 \(25\.0 points of accuracy\) \|/)
  t.regex(md, /Agreement with the recorded verdicts: 2\/3 = 66\.7%\n\nDisagreements \(1\):/)
  t.regex(md, /\| math500 \| b \| baseline \| 0 \| x<1 \\\| y \| 1 \| correct \| wrong \| last-number \| no \|/, 'a | in a cell is escaped')
  t.regex(reportMarkdown(r, { disagreements: false }), /2\/3 = 66\.7%\n1 disagreements, listed in report\.md and report\.html\n$/)
  const html = reportHtml(r)
  t.regex(html, /<th>math500<\/th><td>baseline<\/td><td>1<\/td><td>0<\/td><td>1<\/td><td>1<\/td><td>1<\/td><td>2<\/td><td>1 \(25\.0 points of accuracy\)<\/td>/)
  t.regex(html, /<p>Agreement with the recorded verdicts: 2\/3 = 66\.7%<\/p>/)
  t.regex(html, /<th>math500<\/th><td>b<\/td><td>baseline<\/td><td>0<\/td><td>x&lt;1 \| y<\/td>/)

  // rows that do not say where their answers came from (other tools' rows) get no such table
  t.false(reportMarkdown(summarize(ROWS)).includes('Answers by source'))
})
