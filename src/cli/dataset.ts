/** `vtc-r1 dataset build`: OpenR1-Math-220K (parquet or JSONL) → VTC-R1 training set for LLaMA-Factory. */
import { parseArgs } from 'node:util'

import { buildDataset, type BuildOptions } from '../dataset/build.js'
import { OPENR1_FIELDS, type ColumnMap, type OpenR1Field } from '../dataset/openr1.js'
import { formatStats } from '../dataset/stats.js'
import { FILES } from '../dataset/store.js'
import { CRITERIA, type AnswerSource, type Criterion } from '../dataset/trace.js'
import { VtcError } from '../errors.js'
import type { Preset } from '../render.js'
import { stopOnInterrupt } from './interrupt.js'
import { formatSeconds, ProgressBar } from './progress.js'

export const DATASET_HELP = `usage: vtc-r1 dataset build --input PATH --out DIR [options]
  Builds the VTC-R1 fine-tuning set: each verified-correct trace is cut into ~4K-token
  segments; segment k is a sample whose user turn holds the question and the rendered
  pages of segments 1..k-1. Writes LLaMA-Factory sharegpt JSONL, images, dataset_info.json,
  training YAMLs (Qwen3-VL, Glyph) and stats.json. Interrupted builds resume where they
  stopped when rerun with the same command.

  --input PATH          .parquet / .jsonl file or a directory of them (repeatable)
  --out DIR             output directory (new, empty, or a build to resume)
  --limit N             only the first N input rows (a later run can extend it)
  --workers N           rendering threads (default: all cores)
  --segment-tokens N    token budget of a segment (default 4096)
  --select LIST         which generation to take, first match wins, comma-separated from
                        ${CRITERIA.join(', ')} (default math_verify)
  --answer SRC          <answer> content: boxed (default), field, solution
  --map FIELD=COLUMN    read FIELD from another column (repeatable), e.g. for
                        math500-r1-traces.parquet: --map problem=question
                        --map generations=raw_output --map correctness_math_verify=correct
  --allow-empty         write the dataset even if no row gives a sample (otherwise an error)
  --images-first        pages before the question in the user turn
  --preset NAME         render preset vtc-r1 (default) or glyph (needs --font)
  --config FILE         render config JSON;  --font FILE  main font
  --max-pixels N        image_max_pixels of training (default 262144)
  --cutoff-len N        cutoff_len of training (default 32768)
  --qwen-model PATH     base model in the Qwen3-VL YAML;  --glyph-model PATH  in the Glyph YAML`

export async function datasetCommand(argv: string[]): Promise<void> {
  const [sub, ...rest] = argv
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    console.log(DATASET_HELP)
    return
  }
  if (sub !== 'build') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `unknown dataset command "${sub}"; try: vtc-r1 dataset build --help`)
  const { values } = parseArgs({
    args: rest,
    options: {
      input: { type: 'string', multiple: true },
      out: { type: 'string' },
      limit: { type: 'string' },
      workers: { type: 'string' },
      'segment-tokens': { type: 'string' },
      select: { type: 'string' },
      answer: { type: 'string' },
      map: { type: 'string', multiple: true },
      'images-first': { type: 'boolean' },
      preset: { type: 'string' },
      config: { type: 'string' },
      font: { type: 'string' },
      'fallback-font': { type: 'string', multiple: true },
      'max-pixels': { type: 'string' },
      'cutoff-len': { type: 'string' },
      'qwen-model': { type: 'string' },
      'glyph-model': { type: 'string' },
      'batch-rows': { type: 'string' },
      'allow-empty': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(DATASET_HELP)
    return
  }
  if (!values.input?.length) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', '--input is required (see vtc-r1 dataset build --help)')
  if (!values.out) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', '--out is required (see vtc-r1 dataset build --help)')

  const interrupt = stopOnInterrupt('stopping after the current batch…')

  let bar: ProgressBar | undefined
  const options: BuildOptions = {
    input: values.input,
    outDir: values.out,
    limit: optInt('--limit', values.limit, 0),
    workers: optInt('--workers', values.workers),
    segmentTokens: optInt('--segment-tokens', values['segment-tokens']),
    select: values.select?.split(',').map((s) => s.trim()) as Criterion[] | undefined,
    answer: values.answer as AnswerSource | undefined,
    columns: parseMap(values.map ?? []),
    imagesFirst: values['images-first'],
    preset: values.preset as Preset | undefined,
    config: values.config,
    fontPath: values.font,
    fallbackFonts: values['fallback-font'],
    maxPixels: optInt('--max-pixels', values['max-pixels']),
    cutoffLen: optInt('--cutoff-len', values['cutoff-len']),
    models: { qwen3vl: values['qwen-model'], glyph: values['glyph-model'] },
    batchRows: optInt('--batch-rows', values['batch-rows']),
    allowEmpty: values['allow-empty'],
    signal: interrupt.signal,
    onProgress: (p) => {
      bar ??= new ProgressBar('dataset', p.rowsTotal, 'rows')
      bar.update(p.rowsDone, { pages: p.pagesDone })
    },
  }
  try {
    const r = await buildDataset(options)
    bar?.done()
    bar = undefined
    if (r.resumedFromRow > 0) console.log(r.rowsThisRun ? `resumed at row ${r.resumedFromRow}` : `nothing to do: ${r.resumedFromRow} rows were already done`)
    console.log(formatStats(r.stats))
    const secs = Math.max(r.seconds, 1e-9)
    console.log(
      `this run       ${r.rowsThisRun} rows, ${r.pagesThisRun} pages in ${formatSeconds(r.seconds)} ` +
        `(${(r.rowsThisRun / secs).toFixed(1)} rows/s, ${(r.pagesThisRun / secs).toFixed(1)} pages/s)`,
    )
    if (r.skipped.length) {
      const shown = r.skipped.slice(0, 10).map((s) => `${s.at}${s.id ? ` (${s.id})` : ''}: ${s.reason}: ${s.detail}`)
      const more = r.skipped.length > shown.length ? `\n  … ${r.skipped.length - shown.length} more` : ''
      console.log(`skipped rows (all in ${FILES.skipped}):\n  ${shown.join('\n  ')}${more}`)
    }
    console.log(
      `${r.complete ? 'done' : 'partial (--limit)'}: ${r.outDir}/${FILES.samples}, ${FILES.datasetInfo}, ` +
        `${FILES.yamlQwen}, ${FILES.yamlGlyph}, ${FILES.stats}`,
    )
  } finally {
    bar?.done()
    interrupt.release()
  }
}

function optInt(flag: string, v: string | undefined, min = 1): number | undefined {
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected an integer ≥ ${min}`)
  return n
}

function parseMap(pairs: string[]): ColumnMap | undefined {
  if (!pairs.length) return undefined
  const map: ColumnMap = {}
  for (const p of pairs) {
    const m = /^([^=]+)=(.+)$/.exec(p)
    if (!m || !(OPENR1_FIELDS as readonly string[]).includes(m[1])) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--map ${p}: expected FIELD=COLUMN with FIELD one of ${OPENR1_FIELDS.join(', ')}`)
    }
    map[m[1] as OpenR1Field] = m[2]
  }
  return map
}
