#!/usr/bin/env node
// Quantized weights against f32 and bf16, on the same model, the same prompts and pages, in one run: load time
// (the first load quantizes and writes the cache, the second reads it), peak RSS, vision encode per page, text
// prefill and decode tok/s, and decode against this machine's bandwidth bound (bytes a decode step reads: the
// decoder's weights at their stored types, the output head, the KV cache; divided by the DRAM read bandwidth the
// bench measures first, with bench/machine.rs). With --llama, llama.cpp runs the same text decoder at the same
// quantization on the same token ids (bench/llamacpp_ref.py) and the ratio is printed; --llama-no-repack turns off
// its weights repacked at load (AMX and wider kernels), where they crash.
//
//   node bench/quant.js [--family glm4v|qwen3vl] [--model DIR] [--configs f32,bf16,q8_0,q4k] [--reps 2]
//                       [--decode 32] [--prompt-tokens 1500] [--llama PY --gguf-dir DIR [--llama-no-repack]] [--load-only]
//                       [--dtype f32|bf16]
//   node bench/quant.js --quality [--model DIR] [--configs q8_0,q4k] [--trace-tokens 2500]
//
// --model defaults to the family's random bench model (see engine.js). --load-only loads each configuration
// twice (quantizing, then from the cache) and reports only load time and peak RSS: for checkpoints too large to
// run here (a 9B-shaped model). --dtype is the type of what a quantized configuration leaves unquantized
// (embeddings, norms, vision tower; default f32). Each configuration runs in its own processes.
// --quality measures what each quantization does to the next-token distributions instead (bench/quant_quality.rs):
// the first correct trace of ../shared/data/math500-r1-traces.parquet with at least --trace-tokens tokens,
// teacher-forced as the assistant turn after its own first page rendered by our renderer; top-1 agreement with
// f32, mean KL(f32 ‖ quantized), largest |Δ logit| over every trace position.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { buildCases, fmt, machineLine, measureMachine, pickModel, printTable, root, runOurs, summarize, textConfig } from './engine-common.js'

const args = process.argv.slice(2)
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`)
  return i >= 0 ? args[i + 1] : dflt
}

/** Bytes per weight of each ggml block type, and the type a quantization gives rows of `cols` values (as quant.rs);
 * declared before the top-level await below. */
const BYTES = { q8_0: 34 / 32, q4_0: 18 / 32, q5_0: 22 / 32, q5_1: 24 / 32, q4k: 144 / 256, q5k: 176 / 256, q6k: 210 / 256, f32: 4, bf16: 2, f16: 2 }
const FALLBACK = { q4k: 'q5_0', q5k: 'q8_0', q6k: 'q8_0' }

if (args[0] === '--worker') {
  await runOurs(JSON.parse(readFileSync(args[1], 'utf8')))
} else if (args.includes('--quality')) {
  await quality()
} else {
  await drive()
}

async function quality() {
  const { model } = pickModel(opt('family', opt('model') ? undefined : 'glm4v'), opt('model'))
  const configs = opt('configs', 'q8_0,q4k')
  const want = Number(opt('trace-tokens', 2500))
  const { asyncBufferFromFile, parquetReadObjects } = await import('hyparquet')
  const { Renderer } = await import('../dist/index.js')
  const { NativeTokenizer } = await import('../index.js')
  const tok = NativeTokenizer.fromFile(join(model, 'tokenizer.json'))
  const file = await asyncBufferFromFile(join(root, '../shared/data/math500-r1-traces.parquet'))
  const rows = await parquetReadObjects({ file, columns: ['raw_output', 'correct'] })
  const row = rows.find((r) => r.correct && tok.count(r.raw_output) >= want)
  if (!row) throw new Error(`no correct trace of ${want} tokens`)
  const trace = row.raw_output
  const renderer = await Renderer.create({ preset: 'vtc-r1' })
  const page = (await renderer.render(trace, { channels: 3 })).pages[0]
  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-quality-'))
  writeFileSync(join(dir, 'trace.txt'), trace)
  writeFileSync(join(dir, 'page.rgb'), page.data)
  console.log(`model ${model}; trace of ${tok.count(trace)} tokens after a ${page.width}×${page.height} page of it`)
  const out = execFileSync('cargo', ['run', '--release', '--quiet', '--example', 'quant_quality', '--', model, join(dir, 'trace.txt'), join(dir, 'page.rgb'), String(page.width), String(page.height), configs], {
    cwd: join(root, 'crate'),
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  rmSync(dir, { recursive: true, force: true })
  for (const line of out.trim().split('\n')) {
    const r = JSON.parse(line)
    console.log(`${r.quantization.padEnd(5)}  ${r.positions} positions: top-1 agreement ${(100 * r.top1_agreement).toFixed(2)}%, mean KL ${r.mean_kl.toExponential(2)} nats, max |Δ logit| ${r.max_abs_logit_diff.toFixed(3)}`)
  }
}

async function drive() {
  const { family, model } = pickModel(opt('family', opt('model') ? undefined : 'glm4v'), opt('model'))
  const configs = opt('configs', 'f32,bf16,q8_0,q4k').split(',')
  const reps = Number(opt('reps', 2))
  const decode = Number(opt('decode', 32))
  const promptTokens = Number(opt('prompt-tokens', 1500))
  const loadOnly = args.includes('--load-only')
  const restDtype = opt('dtype', 'f32')
  const threads = availableParallelism()
  const machine = measureMachine()
  console.log(machineLine(machine))

  const dir = mkdtempSync(join(tmpdir(), 'vtc-bench-quant-'))
  const { textCases, pageCases, tokenizer } = loadOnly ? { textCases: [], pageCases: [] } : await buildCases(model, reps, promptTokens, dir)
  console.log(`model ${model} (${family}); quantized configurations keep the rest in ${restDtype}; ${loadOnly ? 'load only' : `prompts ≈${promptTokens} tokens, decode ${decode} tokens, best of ${reps} after a warm-up`}`)
  const cfg = textConfig(model)
  const env = { ...process.env, RAYON_NUM_THREADS: String(threads) }
  const worker = (spec) => {
    const file = join(dir, 'spec.json')
    writeFileSync(file, JSON.stringify({ model, threads, decode_tokens: decode, text_cases: [], page_cases: [], ...spec }))
    const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--worker', file], { env, encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] })
    return JSON.parse(out.trim().split('\n').pop())
  }

  const rows = []
  for (const config of configs) {
    const quantize = ['f32', 'bf16', 'f16'].includes(config) ? undefined : config
    const base = { dtype: quantize ? restDtype : config, ...(quantize ? { quantize, quant_cache_dir: join(dir, 'cache') } : {}) }
    rmSync(join(dir, 'cache'), { recursive: true, force: true })
    // the first load of a quantized model quantizes and writes the cache; what follows reads the cache
    const first = worker(base)
    const run = loadOnly && !quantize ? first : worker({ ...base, text_cases: textCases, page_cases: pageCases })
    rows.push({ config, quantize, first, run, summary: loadOnly ? undefined : summarize(run, decode) })
  }

  let llama
  const llamaPython = opt('llama')
  if (llamaPython && !loadOnly) llama = runLlama(llamaPython, opt('gguf-dir'), configs, textCases, tokenizer, decode, dir)
  rmSync(dir, { recursive: true, force: true })

  console.log('')
  const head = ['', 'load', 'cached', 'peak RSS', 'quantizing', ...(loadOnly ? [] : ['vision/page', 'prefill', 'decode', 'B/token', 'of bound', 'llama.cpp'])]
  const table = [head, ['', 's', 's', 'MB', 'MB', ...(loadOnly ? [] : ['ms', 'tok/s', 'tok/s', 'MB', '', 'decode'])]]
  for (const r of rows) {
    // peak RSS of the process that loaded from the cache (and ran the cases), and of the one that quantized
    const cells = [r.config, r.first.load_s.toFixed(1), r.quantize ? r.run.load_s.toFixed(1) : '–', fmt(r.run.peak_rss_mb), r.quantize ? fmt(r.first.peak_rss_mb) : '–']
    if (!loadOnly) {
      const s = r.summary
      const bytes = decodeBytes(cfg, r.config, s.prompt + decode / 2)
      const bound = (machine.read_gbs * 1e9) / bytes
      const l = llama?.[r.config]
      cells.push(fmt(s.visionMs), fmt(s.prefill), fmt(s.decode), fmt(bytes / 1e6), `${Math.round((100 * s.decode) / bound)}%`, l ? `${fmt(l.decode_tok_s)} (${(s.decode / l.decode_tok_s).toFixed(2)}×)` : '–')
    }
    table.push(cells)
  }
  printTable(table)
  if (llama) {
    console.log('\nllama.cpp, same text decoder and token ids:')
    for (const [config, l] of Object.entries(llama)) {
      const s = rows.find((r) => r.config === config)?.summary
      console.log(`  ${config}: ${l.engine}; prefill ${fmt(l.prefill_tok_s)} tok/s (ours ${(s.prefill / l.prefill_tok_s).toFixed(2)}×), decode ${fmt(l.decode_tok_s)} tok/s (ours ${(s.decode / l.decode_tok_s).toFixed(2)}×)`)
    }
  }
}

function blockBytes(config, cols) {
  if (BYTES[config] === undefined) throw new Error(`unknown configuration ${config}`)
  if (['f32', 'bf16', 'f16'].includes(config)) return BYTES[config]
  const block = config.endsWith('k') ? 256 : 32
  if (cols % block === 0) return BYTES[config]
  const fb = FALLBACK[config]
  return fb && cols % 32 === 0 ? BYTES[fb] : 4
}

/** Bytes one decode step reads at KV length `ctx`: every decoder linear weight, the output head, the f32 KV cache. */
function decodeBytes(c, config, ctx) {
  const { hidden: h, heads, kv, headDim: hd, inter: i, layers, vocab } = c
  const linears = [
    [heads * hd, h], [kv * hd, h], [kv * hd, h], [h, heads * hd], [i, h], [i, h], [h, i],
  ]
  const perLayer = linears.reduce((n, [rows, cols]) => n + rows * cols * blockBytes(config, cols), 0)
  const head = vocab * h * blockBytes(config, h)
  const kvBytes = layers * 2 * kv * hd * ctx * 4
  return layers * perLayer + head + kvBytes
}

/** llama.cpp on the same token ids, for each quantization with a GGUF file in `ggufDir` (<config>.gguf). */
function runLlama(python, ggufDir, configs, textCases, tokenizer, decode, dir) {
  const out = {}
  for (const config of configs) {
    const gguf = join(ggufDir ?? '', `${config}.gguf`)
    if (!existsSync(gguf)) {
      console.log(`llama.cpp: no ${gguf}, skipped`)
      continue
    }
    const spec = join(dir, `llama-${config}.json`)
    const repack = !args.includes('--llama-no-repack')
    writeFileSync(spec, JSON.stringify({ gguf, threads: availableParallelism(), decode_tokens: decode, repack, prompt_ids: textCases.map((c) => Array.from(tokenizer.encode(c.text))) }))
    try {
      const res = execFileSync(python, [join(root, 'bench/llamacpp_ref.py'), spec], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })
      out[config] = JSON.parse(res.trim().split('\n').pop())
    } catch (e) {
      // our own rows are already measured: report llama.cpp's failure and go on
      console.log(`llama.cpp ${config}: failed (${e.signal ?? `exit ${e.status}`})${repack ? '; --llama-no-repack may help' : ''}`)
    }
  }
  return out
}
