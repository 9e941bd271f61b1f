import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import test from 'ava'

import { gradeTraces } from '../bench/grade-traces.js'
import { VtcError } from '../src/errors.js'
import { BenchmarkFormatError, loadBenchmark, parseBenchmark, UnknownBenchmarkError } from '../src/eval/bench.js'
import { SHARED } from './helpers.js'

const BENCH_DIR = `${SHARED}bench`

// Measured on the 500 traces (see bench/grade-traces.ts for the disagreement list):
// whole pipeline 460/500; with requireFinal 492/500; grader alone on their extracted answers 396/403.
test('agreement with the reference verdicts on 500 real MATH500 traces', async (t) => {
  const a = await gradeTraces()
  const n = a.rows.length
  t.is(n, 500)
  t.is(a.goldMismatches, 0, 'our MATH500 gold equals the ground_truth column on every row')
  t.true(a.graderOnly.agree / a.graderOnly.rows >= 0.98, `grader alone: ${a.graderOnly.agree}/${a.graderOnly.rows}`)
  t.true(a.finalOnly.agree / n >= 0.98, `requireFinal pipeline: ${a.finalOnly.agree}/${n}`)
  t.true(a.agree / n >= 0.915, `protocol pipeline: ${a.agree}/${n}`)
  // every answer their grader accepted, ours accepts too: the disagreements are all one way
  t.is(a.confusion.ft, 0)
  t.true(a.slowestMs < 1000, `slowest comparison ${a.slowestMs.toFixed(0)} ms`)
})

test('loaders: every benchmark file loads clean with the documented row counts', async (t) => {
  const expected = { math500: 500, aime25: 30, amc23: 40, gpqa_diamond: 198, gsm8k: 1319 }
  for (const [name, rows] of Object.entries(expected)) {
    const b = await loadBenchmark(name, { dir: BENCH_DIR, strict: true })
    t.is(b.items.length, rows, name)
    t.deepEqual(b.issues, [], name)
    t.is(new Set(b.items.map((i) => i.id)).size, rows, `${name}: ids unique`)
  }
})

test('loaders: gold answers per format', async (t) => {
  const math = await loadBenchmark(`${BENCH_DIR}/math500.jsonl`)
  t.is(math.name, 'math500')
  t.is(math.items[0].gold, '\\left( 3, \\frac{\\pi}{2} \\right)')
  t.is(math.items[0].id, 'test/precalculus/807.json')
  t.is(math.samplesPerQuestion, 1)
  const aime = await loadBenchmark('AIME25', { dir: BENCH_DIR })
  t.deepEqual([aime.items[0].gold, aime.items[0].id, aime.samplesPerQuestion], ['70', '0', 16])
  const amc = await loadBenchmark('amc23', { dir: BENCH_DIR })
  t.is(amc.items[0].gold, '27', '27.0 → 27')
  const gpqa = await loadBenchmark('gpqa-diamond', { dir: BENCH_DIR })
  t.is(gpqa.items[0].gold, 'D')
  t.is(gpqa.items[0].kind, 'choice')
  t.is(gpqa.items[0].id, '0', 'rows without an id are numbered')
  t.deepEqual(gpqa.items[0].choices, { A: 'd', B: 'a', C: 'b', D: 'c' })
  t.true(gpqa.items.every((i) => Object.keys(i.choices ?? {}).join('') === 'ABCD'))
  const gsm = await loadBenchmark('gsm8k', { dir: BENCH_DIR })
  t.is(gsm.items[2].gold, '70000')
  t.true(gsm.items.every((i) => /^-?\d+(\.\d+)?$/.test(i.gold)))
})

test('loaders: MATH500 gold is the last \\boxed{} of the solution, nested braces intact', (t) => {
  const row = (o: object) => JSON.stringify(o)
  const text = [
    row({ problem: 'p1', solution: 'first \\boxed{1}, then $\\boxed{\\frac{\\sqrt{2}}{2}}$.', answer: '\\frac{\\sqrt{2}}{2}', unique_id: 'a' }),
    row({ problem: 'p2', solution: 'so \\boxed{\\dfrac{1}{2}}', answer: '\\frac12', unique_id: 'b' }),
    row({ problem: 'p3', solution: 'so \\boxed{5}', answer: '6', unique_id: 'c' }),
    row({ problem: 'p4', solution: 'no box here', answer: '7', unique_id: 'd' }),
  ].join('\n')
  const b = parseBenchmark('math500', text)
  t.deepEqual(b.items.map((i) => i.gold), ['\\frac{\\sqrt{2}}{2}', '\\dfrac{1}{2}', '5', '7'])
  t.deepEqual(
    b.issues.map((i) => [i.line, i.id, i.severity]),
    [
      [3, 'c', 'warning'],
      [4, 'd', 'warning'],
    ],
    'an equivalent answer field (\\frac12 vs \\dfrac{1}{2}) is consistent; 6 vs 5 is reported',
  )
  t.regex(b.issues[0].message, /differs/)
})

test('loaders: malformed rows are collected with line numbers and ids, not dropped silently', async (t) => {
  const text = [
    '{"question":"q0","answer":"A"}',
    '{"question":"q1","answer":"B"',
    '',
    '{"question":"q2 without options\\nA. x\\nB. y","answer":"C"}',
    '{"question":"ok\\nA. 1\\nB. 2\\nC. 3\\nD. 4","answer":"E"}',
    '[1,2]',
    '{"question":"ok\\nA. 1\\nB. 2\\nC. 3\\nD. 4","answer":"(b)"}',
  ].join('\n')
  const b = parseBenchmark('gpqa_diamond', text)
  t.deepEqual(b.items.map((i) => [i.line, i.gold]), [[7, 'B']])
  t.deepEqual(
    b.issues.map((i) => [i.line, i.severity]),
    [
      [1, 'error'],
      [2, 'error'],
      [4, 'error'],
      [5, 'error'],
      [6, 'error'],
    ],
  )
  t.regex(b.issues[1].message, /invalid JSON/)
  t.regex(b.issues[3].message, /not a letter/)
  t.is(b.issues[2].id, '2')

  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-'))
  writeFileSync(join(dir, 'gsm8k.jsonl'), '{"question":"q","answer":"x #### 1,234","idx":5}\n{"question":"q","answer":"no marker","idx":6}\n{"question":"q","answer":"#### 2","idx":5}\n')
  const g = await loadBenchmark('gsm8k', { dir })
  t.deepEqual(g.items.map((i) => [i.id, i.gold]), [['5', '1234']])
  t.deepEqual(g.issues.map((i) => [i.line, i.id]), [[2, '6'], [3, '5']])
  t.regex(g.issues[1].message, /duplicate id/)
  const err = await t.throwsAsync(loadBenchmark('gsm8k', { dir, strict: true }), { instanceOf: BenchmarkFormatError })
  t.is(err?.code, 'ERR_VTC_BENCH_MALFORMED')
  t.is(err?.issues.length, 2)
})

test('loaders: names, paths and errors', async (t) => {
  const unknown = await t.throwsAsync(loadBenchmark('math5000', { dir: BENCH_DIR }), { instanceOf: UnknownBenchmarkError })
  t.is(unknown?.code, 'ERR_VTC_UNKNOWN_BENCHMARK')
  t.deepEqual([...unknown!.known], ['math500', 'aime25', 'amc23', 'gpqa_diamond', 'gsm8k'])
  t.regex(unknown!.message, /math500, aime25, amc23, gpqa_diamond, gsm8k/)
  const noDir = await t.throwsAsync(loadBenchmark('math500'), { instanceOf: VtcError })
  t.is(noDir?.code, 'ERR_VTC_BENCH_DIR')
  const missing = await t.throwsAsync(loadBenchmark('/nonexistent/math500.jsonl'), { instanceOf: VtcError })
  t.is(missing?.code, 'ERR_VTC_BENCH_READ')
  // a file whose name says nothing: the format is read from its fields, or given
  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-'))
  writeFileSync(join(dir, 'test.jsonl'), '{"id":3,"answer":12.0,"question":"q?"}\n')
  t.is((await loadBenchmark(join(dir, 'test.jsonl'))).name, 'amc23')
  t.is((await loadBenchmark(join(dir, 'test.jsonl'), { format: 'aime25' })).items[0].gold, '12')
})
