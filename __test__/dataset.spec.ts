import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { buildDataset, FILES, SYSTEM_PROMPT, type BuildOptions, type SampleStats, type TrainingSample } from '../src/dataset/index.js'
import { VtcError } from '../src/errors.js'
import { visionTokens } from '../src/tokens.js'
import { pngHeader, readJsonl, SHARED } from './helpers.js'

const SAMPLE_JSONL = `${SHARED}data/openr1-sample.jsonl`
const SAMPLE_PARQUET = fileURLToPath(new URL('./fixtures/openr1-sample.parquet', import.meta.url))
const MATH500 = `${SHARED}data/math500-r1-traces.parquet`
const ROOT = fileURLToPath(new URL('..', import.meta.url))

const made: string[] = []
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'vtc-ds-'))
  made.push(d)
  return d
}
test.after.always(() => {
  for (const d of made) rmSync(d, { recursive: true, force: true })
})
// one worker by default: worker threads each load the tokenizer, too slow for many small builds at once
const build = (input: string | string[], outDir: string, extra: Partial<BuildOptions> = {}) => buildDataset({ input, outDir, workers: 1, ...extra })
const samplesOf = (dir: string) => readJsonl<TrainingSample>(join(dir, FILES.samples))

/** Every file of a build directory with a hash of its content (the YAMLs name the directory: normalized). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p, 'utf8').replaceAll(dir, '<DIR>')).digest('hex')
    }
  }
  walk(dir)
  return out
}

// one reference build of the real sample rows, shared by the structure tests
const reference = (async () => {
  const dir = tmp()
  const result = await build(SAMPLE_JSONL, dir, { workers: 2 }) // preparation on worker threads
  return { dir, result }
})()

test('samples have the VTC-R1 structure; one <image> per page, in order; the pages exist as PNGs', async (t) => {
  const { dir, result } = await reference
  const samples = samplesOf(dir)
  const stats = readJsonl<SampleStats>(join(dir, FILES.sampleStats))
  t.is(samples.length, stats.length)
  t.is(result.stats.samples, samples.length)
  t.is(result.stats.rows.used, 6)
  t.true(samples.length > 6, 'the long traces give several samples')

  const byRow = new Map<number, { sample: TrainingSample; stat: SampleStats }[]>()
  samples.forEach((sample, i) => {
    const row = stats[i].row
    if (!byRow.has(row)) byRow.set(row, [])
    byRow.get(row)!.push({ sample, stat: stats[i] })
  })
  const allPages = new Set<string>()
  for (const [row, items] of byRow) {
    t.is(items.length, items[0].stat.segments, `row ${row}: one sample per segment`)
    items.forEach(({ sample, stat }, k) => {
      const [system, user, assistant] = sample.messages
      t.deepEqual(
        sample.messages.map((m) => m.role),
        ['system', 'user', 'assistant'],
      )
      t.is(system.content, SYSTEM_PROMPT)
      t.is(user.content.split('<image>').length - 1, sample.images.length, '<image> count = images')
      t.true(user.content.endsWith('<image>'.repeat(sample.images.length)), 'question first, then the pages')
      t.is(stat.segment, k + 1)
      t.true(assistant.content.startsWith('<think>\n'), 'every round reopens the thinking')
      if (k < items.length - 1) {
        t.false(assistant.content.includes('</think>'), 'a non-final segment does not close the thinking')
        t.false(assistant.content.includes('<answer>'))
      } else {
        t.regex(assistant.content, /\n<\/think>\n\n<answer>[^<\n]+<\/answer>$/, 'the last segment closes with the answer')
      }
      // the memory grows by the pages of the previous segment, in order
      if (k > 0) {
        const prev = items[k - 1].sample.images
        t.deepEqual(sample.images.slice(0, prev.length), prev)
        t.true(sample.images.length > prev.length, 'each earlier segment has at least one page')
      } else t.deepEqual(sample.images, [])
      for (const img of sample.images) {
        t.false(img.startsWith('/'), 'paths are relative to the dataset directory')
        allPages.add(img)
      }
    })
  }
  // every page exists, is a PNG, and its size gives the recorded vision tokens (under image_max_pixels as
  // LLaMA-Factory applies it in training: the page shrunk first, then the processor)
  let qwen = 0
  for (const img of allPages) {
    const png = readFileSync(join(dir, img))
    const { width, height } = pngHeader(png)
    qwen += visionTokens(width, height, 'qwen3-vl', { imageMaxPixels: 262144 })
  }
  t.is(result.stats.pages, allPages.size)
  t.is(result.stats.vision.qwen3vlCapped, qwen)
  t.true(result.stats.compression.qwen3vlCapped > 0)
  t.deepEqual(JSON.parse(readFileSync(join(dir, FILES.stats), 'utf8')).samples, samples.length)
})

test('the answer is the generation’s final boxed answer', async (t) => {
  const { dir } = await reference
  const finals = samplesOf(dir)
    .map((s) => s.messages[2].content)
    .filter((c) => c.includes('</think>'))
    .map((c) => /<answer>(.*)<\/answer>$/.exec(c)![1])
  t.deepEqual(finals, ['4', '180', '8', 'D', '\\dfrac{1}{4}', '0'])
})

test('dataset_info.json is exactly the spec’s entry; the YAMLs carry the paper’s settings', async (t) => {
  const { dir } = await reference
  t.deepEqual(JSON.parse(readFileSync(join(dir, FILES.datasetInfo), 'utf8')), {
    'vtc-r1': {
      file_name: 'vtc-r1.jsonl',
      formatting: 'sharegpt',
      columns: { messages: 'messages', images: 'images' },
      tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant', system_tag: 'system' },
    },
  })
  const yaml = (f: string) =>
    Object.fromEntries(
      readFileSync(join(dir, f), 'utf8')
        .split('\n')
        .filter((l) => /^[a-z0-9_]+: /.test(l))
        .map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]),
    )
  const common = {
    stage: 'sft',
    finetuning_type: 'full',
    freeze_vision_tower: 'true',
    freeze_multi_modal_projector: 'true',
    freeze_language_model: 'false',
    image_max_pixels: '262144',
    cutoff_len: '32768',
    learning_rate: '1.0e-5',
    num_train_epochs: '1.0',
    lr_scheduler_type: 'cosine',
    warmup_ratio: '0.1',
    bf16: 'true',
    per_device_train_batch_size: '1',
    gradient_accumulation_steps: '8',
    dataset: 'vtc-r1',
    dataset_dir: JSON.stringify(dir),
    deepspeed: JSON.stringify(join(dir, FILES.deepspeed)),
  }
  t.like(yaml(FILES.yamlQwen), { ...common, template: 'qwen3_vl' })
  t.like(yaml(FILES.yamlGlyph), { ...common, template: 'glm4v' })
  t.is(JSON.parse(readFileSync(join(dir, FILES.deepspeed), 'utf8')).zero_optimization.stage, 3)
})

test('parquet and JSONL inputs give the same samples and pages', async (t) => {
  const { dir } = await reference
  const pq = tmp()
  await build(SAMPLE_PARQUET, pq, { workers: 1 })
  const a = snapshot(dir)
  const b = snapshot(pq)
  for (const f of [FILES.samples, FILES.sampleStats, FILES.stats]) t.is(b[f], a[f], f)
  const images = (s: Record<string, string>) => Object.entries(s).filter(([k]) => k.startsWith('images'))
  t.deepEqual(images(b), images(a))
})

test('the output is the same whatever the workers and batch size', async (t) => {
  const { dir } = await reference
  const other = tmp()
  await build(SAMPLE_JSONL, other, { workers: 1, batchRows: 1 })
  t.deepEqual(snapshot(other), snapshot(dir))
})

test('an interrupted build resumes to exactly the uninterrupted output', async (t) => {
  const { dir } = await reference
  // 1. Ctrl-C after the first committed row
  const out = tmp()
  const ac = new AbortController()
  const err = await t.throwsAsync(
    build(SAMPLE_JSONL, out, { batchRows: 1, signal: ac.signal, onProgress: (p) => p.rowsDone >= 1 && ac.abort() }),
    { instanceOf: VtcError },
  )
  t.is(err?.code, 'ABORT_ERR')
  const done = JSON.parse(readFileSync(join(out, FILES.manifest), 'utf8')).nextRow
  t.true(done >= 1 && done < 6, `stopped after ${done} rows`)
  t.false(existsSync(join(out, FILES.lock)), 'the lock is released')

  // 2. a crash mid-batch: a half-written line and a half-written page are left behind
  writeFileSync(join(out, FILES.samples), '{"messages": [{"role": "sys', { flag: 'a' })
  mkdirSync(join(out, 'images', '0000'), { recursive: true })
  writeFileSync(join(out, 'images', '0000', 'r0000005_s01_page_001.png.tmp4242'), 'partial')

  const resumed = await build(SAMPLE_JSONL, out)
  t.is(resumed.resumedFromRow, done)
  t.is(resumed.rowsThisRun, 6 - done, 'finished rows are not redone')
  t.deepEqual(snapshot(out), snapshot(dir))

  // 3. a finished build run again does nothing
  const again = await build(SAMPLE_JSONL, out)
  t.is(again.rowsThisRun, 0)
  t.deepEqual(snapshot(out), snapshot(dir))
})

test('--limit builds a prefix, and a later run extends it to the full output', async (t) => {
  const { dir } = await reference
  const out = tmp()
  const first = await build(SAMPLE_JSONL, out, { limit: 2 })
  t.false(first.complete)
  t.is(first.stats.rows.read, 2)
  const rest = await build(SAMPLE_JSONL, out)
  t.true(rest.complete)
  t.is(rest.resumedFromRow, 2)
  t.deepEqual(snapshot(out), snapshot(dir))
})

test('malformed rows are skipped, counted and reported with their line and id', async (t) => {
  const rows = readFileSync(SAMPLE_JSONL, 'utf8').trim().split('\n')
  const good = JSON.parse(rows[4])
  const lines = [
    rows[4],
    '{"uuid": "cut-off", "problem": "x", "generations": ["<think>', // line 2: not JSON
    '',
    '[1, 2, 3]', // line 4
    JSON.stringify({ uuid: 'no-problem', generations: good.generations, correctness_math_verify: [true] }),
    JSON.stringify({ ...good, uuid: 'bad-generations', generations: 42 }),
    JSON.stringify({ ...good, uuid: 'all-wrong', correctness_math_verify: [false] }),
    JSON.stringify({ ...good, uuid: 'unfinished', generations: ['<think>\nstill thinking'] }),
    JSON.stringify({ ...good, uuid: 'placeholder', problem: 'What is in <image>?' }),
    rows[3],
  ]
  const input = join(tmp(), 'bad.jsonl')
  writeFileSync(input, lines.join('\n') + '\n')
  const out = tmp()
  const r = await build(input, out)
  t.is(r.stats.rows.used, 2)
  t.deepEqual(r.stats.rows.skippedBy, {
    malformed: 3,
    'missing-field': 1,
    'no-complete-reasoning': 1,
    'no-correct-generation': 1,
    'reserved-text': 1,
  })
  const skipped = readJsonl<{ at: string; id?: string; reason: string }>(join(out, FILES.skipped))
  t.deepEqual(
    skipped.map((s) => [s.at, s.id ?? null, s.reason]),
    [
      ['bad.jsonl:2', null, 'malformed'],
      ['bad.jsonl:4', null, 'malformed'],
      ['bad.jsonl:5', 'no-problem', 'missing-field'],
      ['bad.jsonl:6', 'bad-generations', 'malformed'],
      ['bad.jsonl:7', 'all-wrong', 'no-correct-generation'],
      ['bad.jsonl:8', 'unfinished', 'no-complete-reasoning'],
      ['bad.jsonl:9', 'placeholder', 'reserved-text'],
    ],
  )
  t.is(r.skipped.length, 7)
  // the good rows around them still become samples
  t.deepEqual([...new Set(readJsonl<SampleStats>(join(out, FILES.sampleStats)).map((s) => s.id))], [good.uuid, JSON.parse(rows[3]).uuid])
})

test('math500-r1-traces.parquet works through a column mapping (traces without an opening <think>)', async (t) => {
  const out = tmp()
  const r = await build(MATH500, out, {
    limit: 12,
    columns: { problem: 'question', generations: 'raw_output', correctness_math_verify: 'correct', answer: 'ground_truth' },
  })
  t.is(r.stats.rows.read, 12)
  t.true(r.stats.rows.used > 0)
  t.is(r.stats.rows.used + (r.stats.rows.skippedBy['no-correct-generation'] ?? 0) + (r.stats.rows.skippedBy['no-complete-reasoning'] ?? 0), 12)
  for (const s of samplesOf(out)) {
    const a = s.messages[2].content
    t.true(a.startsWith('<think>\n'))
    t.is(a.split('<think>').length, 2, 'exactly one opening tag')
  }
})

test('an input without the columns the build reads is refused with its columns and the --map that fixes it', async (t) => {
  const out = join(tmp(), 'never-made')
  const err = await t.throwsAsync(build(MATH500, out), { instanceOf: VtcError })
  t.is(err?.code, 'ERR_VTC_INVALID_INPUT')
  t.true(err!.message.includes('math500-r1-traces.parquet has no column "problem", "generations", "correctness_math_verify"'), err!.message)
  t.regex(err!.message, /its columns are model, dataset, question, raw_output, .*ground_truth/)
  t.regex(err!.message, /--map problem=question --map generations=raw_output --map correctness_math_verify=correct/)
  t.false(existsSync(out), 'no output written')

  const jsonl = join(tmp(), 'other.jsonl')
  writeFileSync(jsonl, JSON.stringify({ question: 'q', output: '<think>r</think> \\boxed{1}' }) + '\n')
  const e2 = await t.throwsAsync(build(jsonl, tmp(), { select: ['any'] }), { instanceOf: VtcError })
  t.true(e2!.message.includes('other.jsonl has no column "problem", "generations"; its columns are question, output.'), e2!.message)
  t.regex(e2!.message, /--map problem=question --map generations=output$/)
})

test('a build that gives no sample is an error naming why, unless allowEmpty', async (t) => {
  const good = JSON.parse(readFileSync(SAMPLE_JSONL, 'utf8').split('\n')[0])
  const input = join(tmp(), 'all-wrong.jsonl')
  writeFileSync(input, [1, 2].map((i) => JSON.stringify({ ...good, uuid: `wrong-${i}`, correctness_math_verify: [false] })).join('\n') + '\n')
  const out = tmp()
  const err = await t.throwsAsync(build(input, out), { instanceOf: VtcError })
  t.is(err?.code, 'ERR_VTC_EMPTY_DATASET')
  t.regex(err!.message, /no samples: all 2 rows were skipped \(2 no-correct-generation; each is listed in skipped\.jsonl\)\. Pass --allow-empty/)
  t.false(existsSync(join(out, FILES.datasetInfo)), 'no dataset_info.json for an empty dataset')
  // the work is kept: allowing an empty dataset finishes it without reading the rows again
  const r = await build(input, out, { allowEmpty: true })
  t.is(r.rowsThisRun, 0)
  t.is(r.stats.samples, 0)
  t.true(existsSync(join(out, FILES.datasetInfo)))

  const empty = join(tmp(), 'empty.jsonl')
  writeFileSync(empty, '')
  const e2 = await t.throwsAsync(build(empty, tmp()), { instanceOf: VtcError })
  t.regex(e2!.message, /no samples: .*empty\.jsonl has no rows/)
})

test('a full disk stops the build with a clear error and leaves nothing half-written', async (t) => {
  const out = tmp()
  await build(SAMPLE_JSONL, out, { limit: 0 })
  const before = readFileSync(join(out, FILES.manifest), 'utf8')
  rmSync(join(out, FILES.samples))
  symlinkSync('/dev/full', join(out, FILES.samples)) // every write fails with ENOSPC
  const err = await t.throwsAsync(build(SAMPLE_JSONL, out), { instanceOf: VtcError })
  t.is(err?.code, 'ERR_VTC_DISK_FULL')
  t.regex(err!.message, /no space left.*vtc-r1\.jsonl.*rerun to resume/)
  t.is(readFileSync(join(out, FILES.manifest), 'utf8'), before, 'no row recorded as done')
  t.is(statSync(join(out, FILES.sampleStats)).size, 0, 'the other files were cut back too')
  t.false(existsSync(join(out, FILES.lock)))
})

test('bad output directories and mismatched resumes are refused with codes', async (t) => {
  const base = tmp()
  const file = join(base, 'a-file')
  writeFileSync(file, 'x')
  t.is((await t.throwsAsync(build(SAMPLE_JSONL, file), { instanceOf: VtcError }))?.code, 'ERR_VTC_IO')
  t.is((await t.throwsAsync(build(SAMPLE_JSONL, join(file, 'sub')), { instanceOf: VtcError }))?.code, 'ERR_VTC_IO')
  t.is((await t.throwsAsync(build(SAMPLE_JSONL, base), { instanceOf: VtcError }))?.code, 'ERR_VTC_INVALID_ARGUMENT', 'a foreign non-empty directory')

  const out = tmp()
  await build(SAMPLE_JSONL, out, { limit: 1 })
  const mismatch = await t.throwsAsync(build(SAMPLE_JSONL, out, { segmentTokens: 2048 }), { instanceOf: VtcError })
  t.is(mismatch?.code, 'ERR_VTC_RESUME_MISMATCH')
  t.regex(mismatch!.message, /segmentTokens: 4096 before, 2048 now/)

  writeFileSync(join(out, FILES.lock), String(process.ppid)) // a live process holds it
  t.is((await t.throwsAsync(build(SAMPLE_JSONL, out), { instanceOf: VtcError }))?.code, 'ERR_VTC_BUSY')
  rmSync(join(out, FILES.lock))
  t.is((await t.throwsAsync(build('/nonexistent/input.jsonl', tmp()), { instanceOf: VtcError }))?.code, 'ERR_VTC_IO')
  t.is((await t.throwsAsync(build(SAMPLE_JSONL, tmp(), { select: ['best' as 'any'] }), { instanceOf: VtcError }))?.code, 'ERR_VTC_INVALID_ARGUMENT')
})

test('CLI: vtc-r1 dataset build writes the dataset and prints the summary', (t) => {
  const out = tmp()
  const run = (args: string[]) =>
    spawnSync(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), 'dataset', 'build', ...args], { encoding: 'utf8', cwd: ROOT })
  const ok = run(['--input', SAMPLE_PARQUET, '--out', out, '--limit', '3', '--workers', '1'])
  t.is(ok.status, 0, ok.stderr)
  t.regex(ok.stdout, /rows +3 read, 3 used/)
  t.regex(ok.stdout, /compression ρ +Qwen3-VL/)
  t.regex(ok.stdout, /rows\/s, .* pages\/s/)
  t.true(existsSync(join(out, FILES.samples)))
  const bad = run(['--input', SAMPLE_PARQUET, '--out', out, '--segment-tokens', 'lots'])
  t.is(bad.status, 1)
  t.regex(bad.stderr, /vtc-r1: --segment-tokens lots: expected an integer/)
  const unmapped = run(['--input', MATH500, '--out', tmp()])
  t.is(unmapped.status, 1)
  t.regex(unmapped.stderr, /has no column "problem".*--map problem=question/)
  const empty = join(tmp(), 'empty.jsonl')
  writeFileSync(empty, '')
  t.is(run(['--input', empty, '--out', tmp()]).status, 1)
  const allowed = run(['--input', empty, '--out', tmp(), '--allow-empty'])
  t.is(allowed.status, 0, allowed.stderr)
  t.regex(allowed.stdout, /rows +0 read/)
})
