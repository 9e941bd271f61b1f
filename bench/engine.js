#!/usr/bin/env node
// The embedded engine against the transformers/PyTorch CPU reference, both measured in this run on the same
// random model directory (Qwen3-VL or GLM-4.1V), the same prompts and the same rendered pages, each in its own
// process (so peak RSS means something): vision encode ms per page, time to first token with a page, prefill
// tok/s, decode tok/s.
//
//   node bench/engine.js [--family qwen3vl|glm4v] [--model DIR] [--dtype f32,bf16] [--python PY] [--reps 3]
//                        [--decode 64] [--prompt-tokens 1500] [--threads N] [--device cpu|cuda]
//
// --family picks the architecture (default: the model_type in --model's config.json when --model exists, else
// qwen3vl). --model defaults to ../bench-models/qwen3vl-1024x8 (qwen3vl) or ../bench-models/glm4v-1024x8 (glm4v)
// beside the checkout, built on first use with scripts/make-random-qwen3vl.py (hidden 1024, 8 layers, vision depth
// 8, real Qwen3 vocabulary) or scripts/make-random-glm4v.py (hidden 1024, 8 layers, GLM-4.1V's head_dim, GQA,
// partial M-RoPE and vision widths, vision depth 8, real GLM-4.1V vocabulary size and token ids). --python must
// have torch, torchvision, transformers (>= 4.57 for Qwen3-VL, >= 5 to build the GLM-4.1V model), pillow (see
// bench/README.md: Engine); engine_ref.py picks the model class from config.json. Each figure is the best of
// --reps runs after one warm-up run; every run uses a different prompt and page, so neither the prefix cache nor
// the vision cache of our engine can help.
//
// The machine is measured first (bench/machine.rs: CPU, FMA peak and DRAM read bandwidth on --threads threads) and
// every figure is also printed as a share of its limit: vision encode, page prompt and prefill as achieved GFLOP/s
// of the FMA peak (FLOPs counted from config.json: engine-common.js prefillFlops, visionFlops), decode as bytes
// read per second (weights, output head, embedding row, the KV cache at the mean context: decodeBytes) of the DRAM
// bandwidth, peak RSS of the machine's memory. On --device cuda the limits are the host CPU's and no shares are
// printed.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import {
  buildCases,
  cliOptions,
  commonPrefix,
  decodeBytes,
  DTYPE_BYTES,
  ensureModel,
  fmt,
  machineLine,
  measureMachine,
  pct,
  pickModel,
  prefillFlops,
  root,
  runOurs,
  summarize,
  textConfig,
  visionConfig,
  visionFlops,
} from './engine-common.js'

const args = process.argv.slice(2)
const opt = cliOptions(args)

if (args[0] === '--worker') {
  await runOurs(JSON.parse(readFileSync(args[1], 'utf8')))
} else {
  await drive()
}

async function drive() {
  const { family, model } = pickModel(opt('family'), opt('model'))
  const python = opt('python', process.env.VTC_BENCH_PYTHON ?? 'python3')
  const dtypes = opt('dtype', 'f32,bf16').split(',')
  const reps = Number(opt('reps', 3))
  const decode = Number(opt('decode', 64))
  const promptTokens = Number(opt('prompt-tokens', 1500))
  const threads = Number(opt('threads', availableParallelism()))
  // cuda: both sides on the GPU (ours needs a --features cuda build: npm run build:native:cuda)
  const device = opt('device', 'cpu')
  ensureModel(family, model, python)
  // the limits first, before anything else loads the machine
  const machine = measureMachine(threads)
  console.log(machineLine(machine))
  const onCpu = device === 'cpu'
  if (!onCpu) console.log(`(limits of the host CPU; no shares printed for --device ${device})`)
  const text = textConfig(model)
  const vision = visionConfig(model)

  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-engine-'))
  const { textCases, pageCases } = await buildCases(model, reps, promptTokens, dir)
  const sizes = pageCases.slice(1).map((c) => `${c.pixels.width}×${c.pixels.height}`).join(', ')
  console.log(`model ${model} (${family}); ${threads} threads; prompts ≈${promptTokens} tokens; decode ${decode} tokens (greedy, EOS ignored); pages ${sizes}`)
  console.log(`best of ${reps} runs after a warm-up, each process on its own`)

  const env = { ...process.env, RAYON_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) }
  const rows = []
  for (const dtype of dtypes) {
    const spec = join(dir, `spec-${dtype}.json`)
    writeFileSync(spec, JSON.stringify({ model, dtype, device, threads, decode_tokens: decode, text_cases: textCases, page_cases: pageCases }))
    const child = (cmd, argv) => JSON.parse(execFileSync(cmd, argv, { env, encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop())
    const a = child(process.execPath, [fileURLToPath(import.meta.url), '--worker', spec])
    const b = child(python, [join(root, 'bench/engine_ref.py'), spec])
    rows.push({ dtype, ours: summarize(a, decode), ref: summarize(b, decode), a, b })
  }
  rmSync(dir, { recursive: true, force: true })

  // achieved rates as shares of the machine's limits (FLOPs and bytes: engine-common.js)
  const fma = (flops, ms) => (onCpu ? pct(flops / (ms / 1000) / (machine.fma_gflops * 1e9)) : '')
  const shares = (dtype, s, decode) => ({
    vision: fma(visionFlops(vision, s.visionTokens), s.visionMs),
    page: fma(visionFlops(vision, s.visionTokens) + prefillFlops(text, s.pagePrompt), s.pageTtft),
    prefill: fma(prefillFlops(text, s.prompt), (1000 * s.prompt) / s.prefill),
    decode: onCpu ? pct((decodeBytes(text, s.prompt + decode / 2, DTYPE_BYTES[dtype]) * s.decode) / (machine.read_gbs * 1e9)) : '',
  })
  const rss = (mb) => (onCpu ? pct((mb * 2 ** 20) / (machine.memory_gb * 1e9)) : '')
  for (const { dtype, a, b, ours: o, ref: r } of rows) {
    console.log(`\n${dtype}:  ours = ${a.engine}, load ${a.load_s.toFixed(1)} s;  reference = ${b.engine}, load ${b.load_s.toFixed(1)} s`)
    const [so, sr] = [shares(dtype, o, decode), shares(dtype, r, decode)]
    const line = (name, x, y, unit, higher, limit, lo, lr) =>
      console.log(
        `  ${name.padEnd(34)} ${fmt(x).padStart(9)} ${fmt(y).padStart(9)} ${unit.padEnd(6)} ${((higher ? x / y : y / x).toFixed(2) + '×').padStart(7)}` +
          `  ${lo.padStart(5)} ${lr.padStart(7)}  ${onCpu ? limit : ''}`,
      )
    console.log(`  ${''.padEnd(34)} ${'ours'.padStart(9)} ${'PyTorch'.padStart(9)} ${''.padEnd(6)} ${'speedup'.padStart(7)}  ${'ours'.padStart(5)} ${'PyTorch'.padStart(7)}  ${onCpu ? 'of the limit' : ''}`)
    line(`vision encode per page (${o.visionTokens} tok)`, o.visionMs, r.visionMs, 'ms', false, 'FMA peak', so.vision, sr.vision)
    line(`page prompt to first token (${o.pagePrompt} tok)`, o.pageTtft, r.pageTtft, 'ms', false, 'FMA peak', so.page, sr.page)
    line(`prefill, text (${o.prompt} tok)`, o.prefill, r.prefill, 'tok/s', true, 'FMA peak', so.prefill, sr.prefill)
    line(`decode (${decode} tok after the prompt)`, o.decode, r.decode, 'tok/s', true, 'DRAM bandwidth', so.decode, sr.decode)
    line('peak RSS', a.peak_rss_mb, b.peak_rss_mb, 'MB', false, 'memory', rss(a.peak_rss_mb), rss(b.peak_rss_mb))
    // torch reports its own allocations; ours is read from nvidia-smi by scripts/gpu-check.sh
    if (b.peak_gpu_mb !== undefined) console.log(`  PyTorch peak GPU memory ${fmt(b.peak_gpu_mb)} MB`)
    const same = a.text_runs.map((t, i) => commonPrefix(t.text, b.text_runs[i].text))
    console.log(`  same greedy text as PyTorch: ${same.map((n, i) => `${n}/${b.text_runs[i].text.length}`).join(', ')} chars; prompt tokens ${o.prompt} vs ${r.prompt}, page tokens ${o.pagePrompt} vs ${r.pagePrompt}`)
    const gf = (x) => (x / 1e9).toFixed(0)
    console.log(
      `  work counted: vision ${gf(visionFlops(vision, o.visionTokens))} GFLOP a page; page prompt + vision ${gf(visionFlops(vision, o.visionTokens) + prefillFlops(text, o.pagePrompt))} GFLOP; ` +
        `prefill ${(prefillFlops(text, o.prompt) / o.prompt / 1e6).toFixed(0)} MFLOP a token; decode ${(decodeBytes(text, o.prompt + decode / 2, DTYPE_BYTES[dtype]) / 1e6).toFixed(0)} MB read a token (${dtype} weights and KV)`,
    )
  }
}
