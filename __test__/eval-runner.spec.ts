/**
 * `vtc-r1 eval` end to end: the real CLI and runner on the e2e fixture model (a small random Qwen3-VL in the
 * embedded engine), over HTTP through our server, and on 500 recorded real outputs. The only test peer is the
 * HTTP server's model in the failure test (it answers by script and fails on a chosen request); the runner,
 * loop, renderer, backends, server, grader and reports are the product code.
 */
import { execFile, spawn, spawnSync } from 'node:child_process'
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { loadModel } from '../src/backends/embedded.js'
import { GenerationError, type ChatModel, type GenerateRequest, type GenerationEvent } from '../src/backends/types.js'
import { evalCommand } from '../src/cli/eval.js'
import { loadBenchmark } from '../src/eval/bench.js'
import { modelFingerprint } from '../src/eval/fingerprint.js'
import { importRecorded } from '../src/eval/recorded.js'
import type { EvalReport } from '../src/eval/report.js'
import { readResults, rowKey, type EvalRow } from '../src/eval/results.js'
import { runEval } from '../src/eval/runner.js'
import { createServer } from '../src/server/index.js'
import { SHARED } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const E2E = `${SHARED}golden/qwen3vl/e2e`
const tmp = () => mkdtempSync(join(tmpdir(), 'vtc-eval-'))
const results = (dir: string) => readFileSync(join(dir, 'results.jsonl'), 'utf8')
const rowsOf = (dir: string) => results(dir).trim().split('\n').map((l) => JSON.parse(l) as EvalRow)
const reportOf = (dir: string) => JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as EvalReport

const cliArgs = (args: string[]) => ['--import=tsx', join(ROOT, 'src/cli/main.ts'), 'eval', ...args]
/** The CLI in a child process, synchronously (nothing in this process needs to run meanwhile). */
const cli = (args: string[]) => spawnSync(process.execPath, cliArgs(args), { encoding: 'utf8', cwd: ROOT })
/** The CLI in a child process while this process serves HTTP. */
const cliAsync = (args: string[]) =>
  new Promise<{ status: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, cliArgs(args), { cwd: ROOT }, (err, stdout, stderr) =>
      resolve({ status: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    )
  })

test('e2e fixture model, both modes: one graded row per sample, reports, and a rerun with a larger --limit only adds the new questions', (t) => {
  const out = tmp()
  const args = ['--model', E2E, '--bench', 'math500', '--round-tokens', '16', '--max-rounds', '2', '--seed', '1', '--out', out]
  const first = cli([...args, '--limit', '2'])
  t.is(first.status, 0, first.stderr)
  t.regex(first.stdout, /4 samples run \(0 failed\)/)
  // a random model writes no answer: the real verdict is wrong, 16 tokens a round
  t.regex(first.stdout, /\| math500 \| 0\.0% \| 0\.0% \| 32 \| 32 \|/)

  const math = readFileSync(join(ROOT, 'benchmarks/math500.jsonl'), 'utf8').split('\n').slice(0, 3).map((l) => JSON.parse(l) as { unique_id: string })
  const rows = rowsOf(out)
  // samples run concurrently: rows are written in the order they finish
  const keys = (rs: typeof rows) => rs.map((r) => `${r.id} ${r.mode} ${r.sample}`).sort()
  t.deepEqual(keys(rows), [`${math[0].unique_id} baseline 0`, `${math[0].unique_id} vtc 0`, `${math[1].unique_id} baseline 0`, `${math[1].unique_id} vtc 0`].sort())
  t.is(rows.find((r) => r.id === math[0].unique_id)!.gold, '\\left( 3, \\frac{\\pi}{2} \\right)')
  for (const r of rows) {
    t.false(r.correct)
    t.is(r.error, undefined)
    t.is(r.outputTokens, 32, 'two 16-token rounds, or one 32-token baseline round')
    t.true(r.latencyMs! > 0 && r.decodeMs > 0 && r.latencyMs! >= r.decodeMs)
    t.true(r.output.length > 0)
  }
  for (const r of rows.filter((x) => x.mode === 'vtc')) {
    t.like(r, { rounds: 2, pages: 1, finishReason: 'rounds-exhausted', finished: false })
    t.true(r.visionTokens > 0, 'round 2 read the rendered page of round 1')
  }
  for (const r of rows.filter((x) => x.mode === 'baseline')) t.like(r, { rounds: 1, pages: 0, visionTokens: 0, finishReason: 'length', finished: false })

  const report = reportOf(out)
  t.is(report.benches.length, 1)
  t.like(report.benches[0], { bench: 'math500', vtc: { samples: 2, errors: 0, accuracy: 0, meanOutputTokens: 32, meanRounds: 2 }, baseline: { samples: 2 } })
  t.like(report.benches[0].ratios, { pairedQuestions: 2, outputTokens: 1 })
  t.like(report.meta, { model: 'e2e', backend: 'embedded', roundTokens: 16, maxRounds: 2, seed: 1 })
  t.is(readFileSync(join(out, 'report.md'), 'utf8').split('\n')[2].slice(0, 36), '| math500 | 0.0% | 0.0% | 32 | 32 | ')
  t.is((readFileSync(join(out, 'report.html'), 'utf8').match(/<svg /g) ?? []).length, 3)

  const before = results(out)
  const second = cli([...args, '--limit', '3'])
  t.is(second.status, 0, second.stderr)
  t.regex(second.stdout, /2 samples run \(0 failed\), 4 already done/)
  const after = results(out)
  t.true(after.startsWith(before), 'finished rows are kept as they were')
  t.deepEqual(keys(rowsOf(out).slice(4)), [`${math[2].unique_id} baseline 0`, `${math[2].unique_id} vtc 0`])
  t.is(reportOf(out).benches[0].vtc!.questions, 3)

  const other = cli([...args, '--limit', '3', '--round-tokens', '32'])
  t.is(other.status, 1)
  t.regex(other.stderr, /holds results of another setup \(roundTokens: 16 before, 32 now\)/)
})

/** A model directory `dir` with the e2e fixture's files, linked, except `own` (copied, for editing). */
function modelCopy(dir: string, own: string[] = []): string {
  mkdirSync(dir, { recursive: true })
  for (const f of readdirSync(E2E)) {
    if (own.includes(f)) copyFileSync(join(E2E, f), join(dir, f))
    else symlinkSync(join(E2E, f), join(dir, f))
  }
  return dir
}

test('resume: another model of the same directory name is refused, naming the file that differs; the same files elsewhere resume', (t) => {
  const root = tmp()
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const out = join(root, 'out')
  const runA = modelCopy(join(root, 'runA', 'hf'))
  // other weights: one value of a layer norm changed in its lowest mantissa byte (still a valid model)
  const runB = modelCopy(join(root, 'runB', 'hf'), ['model.safetensors'])
  const weights = readFileSync(join(runB, 'model.safetensors'))
  const dataStart = 8 + Number(weights.readBigUInt64LE(0))
  const header = JSON.parse(weights.subarray(8, dataStart).toString()) as Record<string, { data_offsets: [number, number] }>
  weights[dataStart + header['model.language_model.layers.0.input_layernorm.weight'].data_offsets[0]] ^= 1
  writeFileSync(join(runB, 'model.safetensors'), weights)
  // the same files as runA, copied (another path and modification time)
  const runC = modelCopy(join(root, 'runC', 'hf'), ['model.safetensors'])

  const args = (model: string) => ['--model', model, '--bench', 'math500', '--mode', 'baseline', '--limit', '1', '--round-tokens', '4', '--max-rounds', '1', '--out', out]
  const first = cli(args(runA))
  t.is(first.status, 0, first.stderr)
  const other = cli(args(runB))
  t.is(other.status, 1, 'runB/hf has other weights than runA/hf')
  t.regex(other.stderr, /holds results of another setup \(modelFiles\.model\.safetensors: "20340232 B, sha256:\w+" before, "20340232 B, sha256:\w+" now\)/)
  const same = cli(args(runC))
  t.is(same.status, 0, same.stderr)
  t.regex(same.stdout, /0 samples run \(0 failed\), 1 already done/)
  t.is(rowsOf(out).length, 1)
})

test('model fingerprint: config, template and weights count, paths do not; a 32 GiB weight file is fingerprinted without reading it whole', async (t) => {
  const root = tmp()
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const base = await modelFingerprint(E2E)
  t.deepEqual(Object.keys(base).sort(), ['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json'])
  const edited = modelCopy(join(root, 'edited'), ['chat_template.jinja', 'model.safetensors'])
  t.deepEqual(await modelFingerprint(edited), base)
  appendFileSync(join(edited, 'chat_template.jinja'), ' ')
  // the last value of the largest tensor (the embedding's last row, where added tokens are trained)
  const fh = await open(join(edited, 'model.safetensors'), 'r+')
  const { size } = await fh.stat()
  await fh.write(Buffer.from([7]), 0, 1, size - 1)
  await fh.close()
  const changed = await modelFingerprint(edited)
  t.deepEqual(Object.keys(base).filter((k) => base[k] !== changed[k]), ['chat_template.jinja', 'model.safetensors'])

  // a sparse 32 GiB shard: hashing it whole would read 32 GiB (over 10 s)
  const big = join(root, 'big')
  mkdirSync(big)
  const head = Buffer.from(JSON.stringify({ w: { dtype: 'BF16', shape: [131072, 131072], data_offsets: [0, 2 ** 35] } }))
  const len = Buffer.alloc(8)
  len.writeBigUInt64LE(BigInt(head.length))
  writeFileSync(join(big, 'model.safetensors'), Buffer.concat([len, head]))
  truncateSync(join(big, 'model.safetensors'), 8 + head.length + 2 ** 35)
  const t0 = performance.now()
  const fp = await modelFingerprint(big)
  t.true(performance.now() - t0 < 5000, `${Math.round(performance.now() - t0)} ms`)
  t.regex(fp['model.safetensors'], /^34359738\d{3} B, sha256:[0-9a-f]{32}$/)
})

test('resume: a render config file with other content is refused, naming it', async (t) => {
  const model = await loadModel(E2E)
  t.teardown(() => model.dispose())
  const bench = await loadBenchmark('math500', { dir: join(ROOT, 'benchmarks') })
  const dir = tmp()
  const config = join(dir, 'render.json')
  writeFileSync(config, JSON.stringify({ dpi: 72 }))
  const options = { backend: model, benches: [bench], outDir: join(dir, 'out'), limit: 1, modes: ['baseline' as const], memory: { roundTokens: 4, maxRounds: 1, render: { config } } }
  t.is((await runEval(options)).status, 'complete')
  writeFileSync(config, JSON.stringify({ dpi: 96 }))
  await t.throwsAsync(runEval(options), { message: /another setup \(renderConfig: "sha256:\w+" before, "sha256:\w+" now\)/ })
})

test('aborted mid-run: the finished sample stays, a torn last line is dropped, and the rerun does only the rest', async (t) => {
  const model = await loadModel(E2E)
  t.teardown(() => model.dispose())
  const bench = await loadBenchmark('math500', { dir: join(ROOT, 'benchmarks') })
  const out = tmp()
  const options = { backend: model, benches: [bench], outDir: out, limit: 2, memory: { roundTokens: 16, maxRounds: 2, seed: 3 } }
  const controller = new AbortController()
  const first = await runEval({
    ...options,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.done === 1) controller.abort()
    },
  })
  t.is(first.status, 'aborted')
  t.is(first.done, 1)
  const kept = rowsOf(out)
  t.is(kept.length, 1, 'the sample in flight when aborted is not written')
  // a crash in the middle of writing a line
  appendFileSync(join(out, 'results.jsonl'), '{"bench":"math500","id":"test/intermediate_alg')

  const second = await runEval(options)
  t.is(second.status, 'complete')
  t.like(second, { skipped: 1, total: 3, done: 3, failed: 0 })
  t.true(second.tornBytes > 0)
  const rows = rowsOf(out)
  t.is(rows.length, 4)
  t.deepEqual(rows[0], kept[0])
  t.is(new Set(rows.map(rowKey)).size, 4, 'every sample once')
  t.like(second.report.benches[0], { vtc: { samples: 2 }, baseline: { samples: 2 } })
})

test('Ctrl-C: the CLI stops with exit code 130, keeps the finished samples, and the rerun goes on from there', async (t) => {
  const out = tmp()
  // 30 questions of ~3 s each: far more than can finish between the first row and the signal, even when the
  // loaded test process notices the row seconds late (at 48 tokens a sample, all 30 once ended first in CI)
  const args = ['--model', E2E, '--bench', 'aime25', '--samples', '1', '--mode', 'baseline', '--round-tokens', '400', '--max-rounds', '1', '--out', out]
  const child = spawn(process.execPath, cliArgs([...args, '--limit', '30']), { cwd: ROOT })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  // interrupt as soon as the first sample is written
  for (let i = 0; i < 1200 && !(existsSync(join(out, 'results.jsonl')) && results(out).includes('\n')); i++) await sleep(50)
  child.kill('SIGINT')
  t.is(await exited, 130, stderr)
  t.regex(stderr, /interrupted; .*finished samples are saved; rerun the same command to resume/s)
  const kept = rowsOf(out)
  t.true(kept.length >= 1 && kept.length < 30, `${kept.length} rows kept`)

  // the same setup, one question past the last kept one (of the 30): only the questions not kept run. Samples
  // run 8 at a time, so the kept ones need not be the first ones (question 1 can finish before question 0).
  const limit = Math.min(Math.max(...kept.map((r) => Number(r.id))) + 2, 30)
  const rerun = cli([...args, '--limit', String(limit)])
  t.is(rerun.status, 0, rerun.stderr)
  t.regex(rerun.stdout, new RegExp(`${limit - kept.length} samples run \\(0 failed\\), ${kept.length} already done`))
  const rows = rowsOf(out)
  t.deepEqual(rows.slice(0, kept.length), kept, 'the kept rows are left as they were')
  t.deepEqual(rows.map((r) => Number(r.id)).sort((a, b) => a - b), Array.from({ length: limit }, (_, i) => i))
})

// ---- a backend that fails mid-run, over HTTP -----------------------------------------------------------------

/** Test peer behind our server: answers every question with "42"; request number `failOn` (0-based) fails. */
class FailingPeer implements ChatModel {
  readonly name = 'peer'
  requests = 0
  failOn = -1
  async *generate(req: GenerateRequest): AsyncGenerator<GenerationEvent> {
    const call = this.requests++
    yield { type: 'text', text: '<think>\nadding up the cases\n</think>\n\n' }
    if (call === this.failOn) throw new GenerationError('ERR_TEST_PEER', 'the peer lost its GPU')
    yield { type: 'text', text: '<answer>42</answer>' }
    yield { type: 'done', finishReason: 'stop', usage: { completionTokens: 12 }, timings: {} }
  }
}

test('a backend failing mid-run: finished rows are kept, the failure is a row and a non-zero exit, reruns go on and --retry-failed redoes it', async (t) => {
  const peer = new FailingPeer()
  const server = createServer(peer)
  const { url } = await server.listen()
  t.teardown(() => server.close())
  const dir = tmp()
  const benchFile = join(dir, 'aime-like.jsonl')
  // gold 42 twice (the peer is right), 7 twice (wrong)
  writeFileSync(benchFile, ['42', '7', '42', '7'].map((a, i) => JSON.stringify({ id: `q${i}`, problem: `Question ${i}?`, answer: Number(a) })).join('\n') + '\n')
  const out = join(dir, 'out')
  const args = ['--base-url', url, '--bench-file', `aime25=${benchFile}`, '--samples', '1', '--concurrency', '1', '--out', out]

  peer.failOn = 3 // the 4th request: q1 baseline
  const first = await cliAsync(args)
  t.is(first.status, 1)
  t.regex(first.stderr, /the run stopped: aime25 q1 \(baseline, sample 0\): .*the peer lost its GPU/)
  t.regex(first.stderr, /rerun the same command/)
  const rows = rowsOf(out)
  t.is(rows.length, 4)
  t.deepEqual(rows.slice(0, 3).map((r) => [r.id, r.mode, r.correct, r.prediction]), [
    ['q0', 'vtc', true, '42'],
    ['q0', 'baseline', true, '42'],
    ['q1', 'vtc', false, '42'],
  ])
  t.like(rows[3], { id: 'q1', mode: 'baseline', correct: false, error: { code: 'ERR_VTC_BACKEND_ERROR' } })
  t.like(reportOf(out).benches[0], { vtc: { samples: 2, errors: 0 }, baseline: { samples: 1, errors: 1, accuracy: 1 } })
  t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /Failed samples \(not counted; see results\.jsonl\): aime25 baseline 1/)

  peer.failOn = -1
  const second = await cliAsync(args)
  t.is(second.status, 1, 'a failed sample is left: exit non-zero until it is redone')
  t.regex(second.stdout, /4 samples run \(0 failed\), 4 already done/)
  t.regex(second.stderr, /1 samples failed .* --retry-failed redoes them/)
  t.is(rowsOf(out).length, 8)

  const third = await cliAsync([...args, '--retry-failed'])
  t.is(third.status, 0, third.stderr)
  t.regex(third.stdout, /1 samples run \(0 failed\), 7 already done/)
  t.is(rowsOf(out).length, 9, 'the retry is appended; the latest row of a sample counts')
  const report = reportOf(out)
  t.like(report.benches[0], { vtc: { samples: 4, errors: 0, accuracy: 0.5 }, baseline: { samples: 4, errors: 0, accuracy: 0.5 } })
  t.is(peer.requests, 4 + 4 + 1)
})

// ---- recorded real outputs ---------------------------------------------------------------------------------

test('recorded outputs: 500 real MATH500 traces graded into results and reports, with agreement to their verdicts', async (t) => {
  const out = tmp()
  const traces = `${SHARED}data/math500-r1-traces.parquet`
  const run = () => cli(['--from-outputs', traces, '--bench', 'math500', '--out', out])
  const first = run()
  t.is(first.status, 0, first.stderr)
  t.regex(first.stdout, /graded 500 recorded outputs/)
  // the same figure bench/grade-traces.ts prints for the whole pipeline (see grade-traces.spec.ts)
  t.regex(first.stdout, /Agreement with the recorded verdicts: 460\/500 = 92\.0%/)
  const rows = rowsOf(out)
  t.is(rows.length, 500)
  t.true(rows.every((r) => r.mode === 'baseline' && r.latencyMs === null && r.outputTokens > 0 && typeof r.referenceCorrect === 'boolean'))
  const report = reportOf(out)
  const accuracy = rows.filter((r) => r.correct).length / 500
  t.like(report.benches[0], { bench: 'math500', baseline: { samples: 500, questions: 500, accuracy } })
  t.is(report.benches[0].baseline!.meanLatencyMs, null as unknown as number, 'no timings were recorded: no mean latency (NaN in JSON)')
  t.like(report.agreement, { rows: 500, agree: 460 })
  t.regex(readFileSync(join(out, 'report.md'), 'utf8'), /\| math500 \| – \| \d+\.\d% \| – \| [\d,]+ \| – \| – \|[\s\S]*Agreement with the recorded verdicts: 460\/500/)

  // 97 traces stop before </think> (cut off while thinking); the protocol's fallbacks still take an answer
  // from them, and 32 of those are right: 6.4 of the 85.4 points. Every row and report says so.
  const unfinished = rows.filter((r) => !r.output.includes('</think>'))
  t.is(unfinished.length, 97)
  t.true(unfinished.every((r) => r.finished === false && r.finishReason === 'length'))
  t.true(rows.filter((r) => r.output.includes('</think>')).every((r) => r.finished && r.finishReason === 'stop' && r.answerSource === 'boxed'))
  t.like(report.benches[0].baseline, { answerSources: { boxed: 404, 'answer-is': 35, 'last-number': 61 }, unfinished: 97, fallbackCorrect: 32, fallbackAccuracy: 0.064 })
  const answers = /\| math500 \| baseline \| 0 \| 404 \| 35 \| 61 \| 0 \| 97 \| 32 \(6\.4 points of accuracy\) \|/
  t.regex(first.stdout, answers)
  t.regex(first.stdout, /40 disagreements, listed in report\.md and report\.html/)
  const md = readFileSync(join(out, 'report.md'), 'utf8')
  t.regex(md, answers)
  t.regex(md, /Disagreements \(40\):/)
  t.is(report.agreement!.disagreements.length, 40)
  // every disagreement: we accept an answer the other grader rejected; 32 came by a fallback from an unfinished trace
  t.true(report.agreement!.disagreements.every((d) => d.correct && !d.referenceCorrect))
  t.is(report.agreement!.disagreements.filter((d) => d.finished === false && ['answer-is', 'last-number'].includes(d.answerSource!)).length, 32)
  t.regex(md, /\| math500 \| test\/geometry\/106\.json \| baseline \| 0 \| 31 \| 31 \| correct \| wrong \| last-number \| no \|/)
  const html = readFileSync(join(out, 'report.html'), 'utf8')
  t.regex(html, /<th>math500<\/th><td>baseline<\/td><td>0<\/td><td>404<\/td><td>35<\/td><td>61<\/td><td>0<\/td><td>97<\/td><td>32 \(6\.4 points of accuracy\)<\/td>/)
  t.regex(html, /<p>Agreement with the recorded verdicts: 460\/500 = 92\.0%<\/p>/)
  t.regex(html, /<h2>Disagreements \(40\)<\/h2>/)
  t.is((html.match(/<td>correct<\/td><td>wrong<\/td>/g) ?? []).length, 40)

  const again = run()
  t.is(again.status, 0, again.stderr)
  t.regex(again.stdout, /graded 0 recorded outputs \(500 already in results\.jsonl\)/)
  t.is(rowsOf(out).length, 500)
})

test('recorded outputs: whether a trace finished is read from its text, with and without </think> in the file', async (t) => {
  const dir = tmp()
  const benchFile = join(dir, 'aime-like.jsonl')
  writeFileSync(benchFile, [0, 1].map((i) => JSON.stringify({ id: `q${i}`, problem: `Question ${i}?`, answer: 42 })).join('\n') + '\n')
  const bench = await loadBenchmark(benchFile, { format: 'aime25' })
  const grade = async (name: string, outputs: string[]) => {
    const path = join(dir, `${name}.jsonl`)
    writeFileSync(path, outputs.map((output, i) => JSON.stringify({ id: `q${i}`, output })).join('\n') + '\n')
    const r = await importRecorded({ path, bench, outDir: join(dir, name) })
    return r.rows.map((row) => [row.answerSource, row.finished, row.finishReason, row.correct])
  }
  // plain chain of thought: a final \boxed{} answer ends it
  t.deepEqual(await grade('plain', ['6 times 7 is 42, so the answer is $\\boxed{42}$.', 'First, 6 times 7 = 42, and then we']), [
    ['boxed', true, 'stop', true],
    ['last-number', false, 'length', true],
  ])
  // a reasoning model's file: a trace without </think> was cut off while thinking, even with a \boxed{} on the way
  t.deepEqual(await grade('thinking', ['6 times 7.\n</think>\n\nThe answer is $\\boxed{42}$.', 'So \\boxed{42}. Wait, let me check 6 times']), [
    ['boxed', true, 'stop', true],
    ['boxed', false, 'length', true],
  ])
})

// ---- bad input ----------------------------------------------------------------------------------------------

test('bad input: each error names what is wrong', async (t) => {
  const dir = tmp()
  const fails = async (argv: string[], message: RegExp) => {
    const err = await t.throwsAsync(evalCommand(argv))
    t.regex(err!.message, message)
  }
  await fails(['--model', E2E, '--bench', 'math500,nope'], /unknown benchmark "nope"; known: math500, aime25, amc23, gpqa_diamond, gsm8k/)
  await fails(['--model', E2E, '--base-url', 'http://127.0.0.1:9/v1', '--bench', 'math500'], /either --model DIR or --base-url URL, not both/)
  await fails(['--bench', 'math500'], /give --model DIR .* or --base-url URL/)
  await fails(['--model', join(dir, 'missing'), '--bench', 'math500'], /--model .*missing: no such directory/)
  await fails(['--model', E2E, '--bench', 'gsm8k'], /gsm8k does not ship with the package .* --bench-dir DIR or --bench-file gsm8k=PATH/)
  await fails(['--model', E2E, '--bench', 'math500', '--mode', 'fast'], /--mode fast: allowed values are vtc, baseline, both/)
  const bad = join(dir, 'bad.jsonl')
  writeFileSync(bad, [{ id: 'a', problem: 'p', answer: 3 }, { id: 'b', problem: 'p', answer: 'x' }, { id: 'c', answer: 4 }].map((r) => JSON.stringify(r)).join('\n'))
  await fails(['--model', E2E, '--bench-file', `aime25=${bad}`], /bad\.jsonl: 2 malformed row\(s\): line 2 \(id b\): "answer" is not an integer.*line 3 \(id c\): missing "problem".*--skip-bad-rows/)
  await fails(['--report-only', '--out', dir], /results\.jsonl has no results to report/)
  writeFileSync(join(dir, 'results.jsonl'), '{"bench":"math500","id":"a","mode":"vtc","sample":0}\nnot json\n')
  await t.throwsAsync(readResults(join(dir, 'results.jsonl')), { message: /results\.jsonl line 2: not valid JSON/ })
})
