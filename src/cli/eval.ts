/** `vtc-r1 eval`: run benchmarks in vtc and/or baseline mode, grade every sample, write results and reports. */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

import { EmbeddedBackend } from '../backends/embedded.js'
import { VtcError } from '../errors.js'
import { BENCHMARKS, benchmarkName, BenchmarkFormatError, loadBenchmark, type Benchmark } from '../eval/bench.js'
import { importRecorded } from '../eval/recorded.js'
import { reportMarkdown, type RunMode } from '../eval/report.js'
import { EVAL_FILES, writeReports } from '../eval/results.js'
import { runEval } from '../eval/runner.js'
import { stopOnInterrupt } from './interrupt.js'
import { ProgressBar } from './progress.js'
import { BACKEND_OPTIONS, backendFromArgs, LOOP_OPTIONS, memoryOptionsFromArgs, positiveInt } from './reason.js'

/** The public math sets shipped with the package (`benchmarks/` beside `dist/`). */
export const BUNDLED_BENCH_DIR = fileURLToPath(new URL('../../benchmarks/', import.meta.url))
const BUNDLED = ['math500', 'aime25', 'amc23']

export const EVAL_HELP = `usage: vtc-r1 eval (--model DIR|ORG/NAME | --base-url URL [--api-model NAME]) --bench LIST [options]
       vtc-r1 eval --report-only [--out DIR]
       vtc-r1 eval --from-outputs FILE --bench NAME [--out DIR]
  Runs each question of the benchmarks with the optical-memory loop (vtc) and/or the long-context baseline,
  grades every sample (math-evaluation-harness rules), appends one JSON line per sample to DIR/results.jsonl
  as soon as it ends, and writes DIR/report.json, report.md and report.html (accuracy, mean output tokens,
  mean latency per benchmark and mode, vtc/baseline ratios, charts).
  Resume: rerun the same command; samples already in results.jsonl are skipped (a line cut off by a crash is
  dropped and redone). A sample that fails is written as a row with "error" and stops the run (a prompt too
  long for the model only fails its sample); rerunning goes on with the rest, and --retry-failed redoes the
  failed samples too. Ctrl-C stops the samples in flight; they are not written and a rerun does them.

  --bench LIST          comma-separated: ${BENCHMARKS.join(', ')} (or .jsonl paths);
                        ${BUNDLED.join(', ')} ship with the package, others need --bench-dir or --bench-file
  --bench-file NAME=PATH  the file of benchmark NAME (repeatable); NAME is its format
  --bench-dir DIR       directory holding NAME.jsonl files (the format of the bundled benchmarks/*.jsonl)
  --skip-bad-rows       run without the malformed rows of a benchmark file (default: refuse, listing them)
  --mode M              vtc, baseline or both (default both)
  --samples N           samples per question (default: the protocol's, AIME25/AMC23 16, others 1)
  --limit N             only the first N questions of each benchmark
  --concurrency N       samples at once (default 8). With --model the engine decodes them together, up to 16
                        (its batch); with --base-url the server batches them. Latency includes time queued.
  --out DIR             output directory (default vtc-r1-eval)
  --retry-failed        redo the samples recorded as failed
  --report-only         only (re)write the reports from DIR/results.jsonl
  --from-outputs FILE   grade outputs recorded elsewhere (.parquet/.jsonl with question or id, and
                        raw_output/output; a "correct" column is compared with our verdicts) instead of running;
                        whether each trace finished (a final answer after its reasoning) is read from its text
  --model DIR|ORG/NAME, --device, --dtype, --kv-cache T, --quantize Q, --quant-cache-dir DIR, --image-max-pixels N,
  --max-pixels N, --base-url URL, --api-model NAME,
  --api-key KEY, --context-length N: as for reason
  --max-rounds N (8), --round-tokens N (8192), --temperature T (0.6), --top-p P (0.95), --top-k K,
  --seed N (sample k uses N + k), --images-first, --preset, --render-config FILE, --font FILE: as for reason`

/** The engine flags that change outputs, recorded in run.json so a rerun with other ones is refused (only those given). */
function engineSettings(v: { dtype?: string; 'kv-cache'?: string; quantize?: string; 'image-max-pixels'?: string; 'max-pixels'?: string }): Record<string, string> {
  const out: Record<string, string> = {}
  if (v.dtype !== undefined) out.dtype = v.dtype
  if (v['kv-cache'] !== undefined) out.kvCache = v['kv-cache']
  if (v.quantize !== undefined) out.quantize = v.quantize
  if (v['image-max-pixels'] !== undefined) out.imageMaxPixels = v['image-max-pixels']
  if (v['max-pixels'] !== undefined) out.maxPixels = v['max-pixels']
  return out
}

export async function evalCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...BACKEND_OPTIONS,
      ...LOOP_OPTIONS,
      bench: { type: 'string' },
      'bench-file': { type: 'string', multiple: true },
      'bench-dir': { type: 'string' },
      'skip-bad-rows': { type: 'boolean' },
      mode: { type: 'string' },
      samples: { type: 'string' },
      limit: { type: 'string' },
      concurrency: { type: 'string' },
      out: { type: 'string' },
      'retry-failed': { type: 'boolean' },
      'report-only': { type: 'boolean' },
      'from-outputs': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(EVAL_HELP)
    return
  }
  const out = values.out ?? 'vtc-r1-eval'

  if (values['report-only']) {
    const { report } = await writeReports(out)
    printReport(report, out)
    return
  }

  // recorded outputs are plain long chain-of-thought unless said otherwise
  const modes = parseMode(values.mode ?? (values['from-outputs'] ? 'baseline' : 'both'))
  const benches = await loadBenches(values.bench, values['bench-file'] ?? [], values['bench-dir'], values['skip-bad-rows'] === true)

  if (values['from-outputs']) {
    if (benches.length !== 1) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', '--from-outputs: give the one benchmark the outputs answer (--bench NAME)')
    if (modes.length !== 1) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', '--from-outputs: the outputs come from one mode: --mode vtc or baseline (default baseline)')
    const r = await importRecorded({ path: values['from-outputs'], bench: benches[0], outDir: out, mode: modes[0] })
    console.log(`graded ${r.graded} recorded outputs${r.skipped ? ` (${r.skipped} already in ${EVAL_FILES.results})` : ''}`)
    printReport(r.report, out)
    return
  }

  if (!values.model && !values['base-url']) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'eval: give --model DIR (embedded engine) or --base-url URL (an OpenAI-compatible server)')
  }
  if (values.model && values['base-url']) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'eval: give either --model DIR or --base-url URL, not both')
  const memory = memoryOptionsFromArgs(values)
  const concurrency = values.concurrency === undefined ? 8 : positiveInt('--concurrency', values.concurrency)
  const samples = values.samples === undefined ? undefined : positiveInt('--samples', values.samples)
  const limit = values.limit === undefined ? undefined : positiveInt('--limit', values.limit)
  // the samples in flight are the engine's batch (more than it decodes together wait in its queue)
  const backend = await backendFromArgs(values, 'eval', values.model ? Math.min(concurrency, 16) : undefined)

  const interrupt = stopOnInterrupt('vtc-r1: interrupted; stopping the samples in flight')
  let bar: ProgressBar | undefined
  try {
    const outcome = await runEval({
      backend,
      benches,
      outDir: out,
      modes,
      samples,
      limit,
      concurrency,
      memory,
      retryFailed: values['retry-failed'] === true,
      backendInfo: values.model ? { model: backend.name, backend: 'embedded', ...engineSettings(values) } : { model: backend.name, backend: values['base-url'] },
      ...(backend instanceof EmbeddedBackend && backend.dir ? { modelDir: backend.dir } : {}),
      signal: interrupt.signal,
      onProgress: (p) => {
        bar ??= new ProgressBar('eval', p.total, 'samples')
        bar.update(p.done)
      },
    })
    bar?.done()
    bar = undefined
    if (outcome.tornBytes) console.error(`vtc-r1: dropped a line of results.jsonl cut off by an earlier crash (${outcome.tornBytes} bytes); its sample is redone`)
    console.log(
      `${outcome.done} samples run (${outcome.failed} failed)` +
        `${outcome.skipped ? `, ${outcome.skipped} already done in ${join(out, EVAL_FILES.results)}` : ''}`,
    )
    printReport(outcome.report, out)
    if (outcome.status === 'aborted') {
      console.error(`vtc-r1: interrupted; ${outcome.done} finished samples are saved; rerun the same command to resume`)
      process.exitCode = 130
      return
    }
    if (outcome.status === 'stopped') {
      throw new VtcError(
        outcome.error!.code,
        `the run stopped: ${outcome.error!.message}\n  finished samples are kept in ${join(out, EVAL_FILES.results)}; ` +
          'rerun the same command to go on (add --retry-failed to redo the failed samples)',
      )
    }
    if (outcome.failedRows.length) {
      console.error(`vtc-r1: ${outcome.failedRows.length} samples failed (rows with "error" in ${EVAL_FILES.results}); --retry-failed redoes them`)
      process.exitCode = 1
    }
  } finally {
    bar?.done()
    interrupt.release()
    if ('dispose' in backend && typeof backend.dispose === 'function') backend.dispose()
  }
}

function parseMode(mode: string): RunMode[] {
  if (mode === 'both') return ['vtc', 'baseline']
  if (mode === 'vtc' || mode === 'baseline') return [mode]
  throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--mode ${mode}: allowed values are vtc, baseline, both`)
}

/** The benchmarks named by --bench (names or paths) and --bench-file NAME=PATH. */
async function loadBenches(list: string | undefined, files: string[], dir: string | undefined, skipBadRows: boolean): Promise<Benchmark[]> {
  const fileOf = new Map<string, string>()
  for (const f of files) {
    const m = /^([^=]+)=(.+)$/.exec(f)
    const name = m ? benchmarkName(m[1]) : null
    if (!m || !name) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--bench-file ${f}: expected NAME=PATH with NAME one of ${BENCHMARKS.join(', ')}`)
    fileOf.set(name, m[2])
  }
  const entries = list?.split(',').map((s) => s.trim()).filter(Boolean) ?? []
  for (const name of fileOf.keys()) if (!entries.some((e) => benchmarkName(e) === name)) entries.push(name)
  if (!entries.length) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `eval: give --bench LIST (${BENCHMARKS.join(', ')})`)

  const benches: Benchmark[] = []
  for (const entry of entries) {
    const name = benchmarkName(entry)
    let source = entry
    let benchDir = dir
    if (name && fileOf.has(name)) source = fileOf.get(name)!
    else if (name && !dir) {
      if (!BUNDLED.includes(name)) {
        throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `benchmark ${name} does not ship with the package (${BUNDLED.join(', ')} do); give --bench-dir DIR or --bench-file ${name}=PATH`)
      }
      benchDir = BUNDLED_BENCH_DIR
    }
    const bench = await loadBenchmark(source, { dir: benchDir })
    const errors = bench.issues.filter((i) => i.severity === 'error')
    if (errors.length && !skipBadRows) {
      const err = new BenchmarkFormatError(bench.path, bench.issues)
      throw new VtcError(err.code, `${err.message}; fix them, or pass --skip-bad-rows to run without them`)
    }
    for (const i of bench.issues) {
      if (i.severity === 'warning' || skipBadRows) {
        console.error(`vtc-r1: ${bench.path} line ${i.line}${i.id ? ` (id ${i.id})` : ''}: ${i.severity === 'error' ? 'skipped: ' : ''}${i.message}`)
      }
    }
    if (!bench.items.length) throw new VtcError('ERR_VTC_INVALID_INPUT', `${bench.path}: no usable rows`)
    benches.push(bench)
  }
  return benches
}

function printReport(report: Parameters<typeof reportMarkdown>[0], out: string): void {
  console.log(`\n${reportMarkdown(report, { disagreements: false })}`)
  console.log(`reports: ${join(out, EVAL_FILES.reportJson)}, ${EVAL_FILES.reportMd}, ${EVAL_FILES.reportHtml}; samples: ${EVAL_FILES.results}`)
}
