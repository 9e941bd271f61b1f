// Shared by the engine benchmarks (engine.js, quant.js, batch.js, context.js): the model families, the cases
// (prompts cut from the reasoning texts, pages rendered by our renderer), our side as a child process, the summary
// of its runs, the machine's limits (bench/machine.rs) and the work of a forward pass (FLOPs, bytes) to state
// figures against them.
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { availableParallelism, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('..', import.meta.url))
export const shared = join(root, '../shared')

/** The architectures the benchmark knows: config.json model_type, default directory, the script that builds it
 */
export const FAMILIES = {
  qwen3vl: { modelType: 'qwen3_vl', dir: '../bench-models/qwen3vl-1024x8', script: 'scripts/make-random-qwen3vl.py' },
  glm4v: { modelType: 'glm4v', dir: '../bench-models/glm4v-1024x8', script: 'scripts/make-random-glm4v.py' },
}

/**
 * reps + 1 prompts of about `promptTokens` tokens (cut from the reasoning texts at paragraph ends) and reps + 1
 * rendered pages (the first page of different texts, as raw pixels for us and PNG for transformers) in `dir`.
 * The first of each is a warm-up.
 */
export async function buildCases(model, reps, promptTokens, dir) {
  const { Renderer } = await import('../dist/index.js')
  const { NativeTokenizer } = await import('../index.js')
  const texts = readFileSync(join(shared, 'golden/render/texts.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).text)
  const tok = NativeTokenizer.fromFile(join(model, 'tokenizer.json'))

  // reps + 1 different prompts of about promptTokens tokens, cut from the reasoning texts at paragraph ends
  const paragraphs = texts.flatMap((t) => t.split('\n\n')).filter((p) => p.trim())
  const textCases = []
  let at = 0
  for (let i = 0; i <= reps; i++) {
    let text = ''
    while (tok.count(text) < promptTokens) text += paragraphs[at++ % paragraphs.length] + '\n\n'
    textCases.push({ text: text.trim() })
  }
  // reps + 1 rendered pages (the first page of different texts), as raw pixels for us and PNG for transformers
  const renderer = await Renderer.create({ preset: 'vtc-r1' })
  const pageCases = []
  for (let i = 0; pageCases.length <= reps; i++) {
    const { pages } = await renderer.render(texts[i], { channels: 3 })
    const page = pages[0]
    const png = join(dir, `page${i}.png`)
    writeFileSync(png, await page.png())
    const raw = join(dir, `page${i}.rgb`)
    writeFileSync(raw, page.data)
    pageCases.push({ png, pixels: { file: raw, width: page.width, height: page.height, channels: page.channels }, text: 'Continue the reasoning.' })
  }
  return { textCases, pageCases, tokenizer: tok }
}

/** Our side, in a child process: the same cases as engine_ref.py, through the napi engine. */
export async function runOurs(spec) {
  const { NativeEngine } = await import('../index.js')
  const t0 = performance.now()
  const engine = await NativeEngine.load(spec.model, {
    dtype: spec.dtype,
    ...(spec.device ? { device: spec.device } : {}),
    ...(spec.quantize ? { quantize: spec.quantize, quantCacheDir: spec.quant_cache_dir } : {}),
  })
  const loadS = (performance.now() - t0) / 1000
  const run = (content, maxTokens) =>
    engine.generate({ messages: [{ role: 'user', content }], maxTokens, ignoreEos: true }, () => {})
  const textRuns = []
  for (const [i, c] of spec.text_cases.entries()) {
    const r = await run([{ type: 'text', text: c.text }], spec.decode_tokens)
    if (i > 0) textRuns.push({ prompt_tokens: r.promptTokens, cached_tokens: r.cachedTokens, prefill_ms: r.prefillMs, decode_ms: r.decodeMs, completion_tokens: r.completionTokens, text: r.text })
  }
  const pageRuns = []
  for (const [i, c] of spec.page_cases.entries()) {
    const p = c.pixels
    const image = { pixels: readFileSync(p.file), width: p.width, height: p.height, channels: p.channels }
    const r = await run([{ type: 'image', image }, { type: 'text', text: c.text }], 1)
    if (i > 0) pageRuns.push({ prompt_tokens: r.promptTokens, vision_tokens: r.visionTokens, vision_ms: r.visionMs, first_token_ms: r.visionMs + r.prefillMs })
  }
  engine.dispose()
  const threads = process.env.RAYON_NUM_THREADS ?? availableParallelism()
  const out = { engine: `vtc-r1 (candle, ${threads} threads)`, load_s: loadS, text_runs: textRuns, page_runs: pageRuns, peak_rss_mb: process.resourceUsage().maxRSS / 1024 }
  console.log(JSON.stringify(out))
}

/**
 * The family and model directory: --family if given, else the model_type of --model's config.json when it
 * exists, else qwen3vl; --model defaults to the family's random bench model beside the checkout.
 */
export function pickModel(familyOpt, modelOpt) {
  const byType = (t) => Object.keys(FAMILIES).find((f) => FAMILIES[f].modelType === t)
  const model = modelOpt ? resolve(modelOpt) : undefined
  const config = model && join(model, 'config.json')
  const detected = config && existsSync(config) ? JSON.parse(readFileSync(config, 'utf8')).model_type : undefined
  if (detected !== undefined && !byType(detected)) throw new Error(`${config}: model_type "${detected}" is not one of ${Object.values(FAMILIES).map((f) => f.modelType).join(', ')}`)
  const family = familyOpt ? (FAMILIES[familyOpt] ? familyOpt : byType(familyOpt)) : (byType(detected) ?? 'qwen3vl')
  if (!family) throw new Error(`--family ${familyOpt}: expected one of ${Object.keys(FAMILIES).join(', ')}`)
  if (detected !== undefined && byType(detected) !== family) throw new Error(`--family ${familyOpt}, but ${config} has model_type "${detected}"`)
  return { family, model: model ?? resolve(join(root, FAMILIES[family].dir)) }
}

/** A bench's `--name value` options: `opt(name, default)` gives the value after `--name`, else the default. */
export function cliOptions(args) {
  return (name, dflt) => {
    const i = args.indexOf(`--${name}`)
    return i >= 0 ? args[i + 1] : dflt
  }
}

/** Builds the family's random bench model into `model` with `python` (torch, transformers) unless it is there. */
export function ensureModel(family, model, python) {
  if (existsSync(join(model, 'config.json'))) return
  console.log(`building the random ${family} model in ${model} ...`)
  execFileSync(python, [join(root, FAMILIES[family].script), model, '--seed', '0'], { stdio: 'inherit' })
}

/** Best of the runs (fastest), per figure. */
export function summarize(res, decode) {
  const t = res.text_runs
  const p = res.page_runs
  for (const run of t) if (run.completion_tokens !== decode) throw new Error(`a run produced ${run.completion_tokens} tokens, not ${decode}`)
  return {
    prompt: t[0].prompt_tokens,
    prefill: Math.max(...t.map((x) => x.prompt_tokens / (x.prefill_ms / 1000))),
    decode: Math.max(...t.map((x) => (decode - 1) / (x.decode_ms / 1000))),
    visionTokens: p[0].vision_tokens,
    visionMs: Math.min(...p.map((x) => x.vision_ms)),
    pagePrompt: p[0].prompt_tokens,
    pageTtft: Math.min(...p.map((x) => x.first_token_ms)),
  }
}

export function fmt(x) {
  return x >= 100 ? x.toFixed(0) : x.toFixed(1)
}

export function commonPrefix(a, b) {
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return i
}

/** Prints rows of strings as columns: the first left-aligned, the rest right-aligned. */
export function printTable(table) {
  const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)))
  for (const row of table) console.log(row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  '))
}

// ---- the machine's limits ----------------------------------------------------------------------------------------

/**
 * The machine's limits, measured by bench/machine.rs on `threads` threads (RAYON_NUM_THREADS): `{ cpu, threads, isa,
 * fma_gflops, read_gbs, memory_gb }`; `cpu` names the model, family and model number from /proc/cpuinfo. Takes a few
 * seconds. The example uses nothing of the crate, so a binary built after bench/machine.rs last changed is run as it
 * is; otherwise cargo builds it (which builds the crate first), and when that fails (the crate mid-edit) an older
 * binary is run, and said so.
 */
export function measureMachine(threads = availableParallelism()) {
  const env = { ...process.env, RAYON_NUM_THREADS: String(threads) }
  const bin = join(root, 'crate/target/release/examples/machine')
  const fresh = existsSync(bin) && statSync(bin).mtimeMs > statSync(join(root, 'bench/machine.rs')).mtimeMs
  let out
  if (fresh) {
    out = execFileSync(bin, [], { env, encoding: 'utf8' })
  } else {
    try {
      out = execFileSync('cargo', ['run', '--release', '--quiet', '--example', 'machine'], { cwd: join(root, 'crate'), env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      if (!existsSync(bin)) throw err
      const why = String(err.stderr ?? '').split('\n').find((l) => l.startsWith('error')) ?? err.message.split('\n')[0]
      console.log(`(cargo could not build bench/machine.rs: ${why}; running the binary built before its last change, ${bin})`)
      out = execFileSync(bin, [], { env, encoding: 'utf8' })
    }
  }
  return { ...JSON.parse(out.trim().split('\n').pop()), memory_gb: totalmem() / 1e9 }
}

/** One line for the top of a bench's output. */
export function machineLine(m) {
  return `machine: ${m.cpu}, ${m.threads} threads, ${m.isa}; FMA peak ${m.fma_gflops} GFLOP/s, DRAM read ${m.read_gbs} GB/s (bench/machine.rs); ${m.memory_gb.toFixed(0)} GB memory`
}

/** A share of a limit as a percentage. */
export function pct(x) {
  return `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`
}

// ---- the work of a forward pass ------------------------------------------------------------------------------------
// Counted from config.json, both families. Matmuls only: 2 FLOPs per multiply-add; norms, rotary embeddings,
// activations and softmax are left out (a few per cent at most). Attention is QKᵀ plus the weighted sum of V, each
// 2 × head_dim FLOPs per query head and visible key.

/** Bytes per element of the unquantized types. */
export const DTYPE_BYTES = { f32: 4, bf16: 2, f16: 2 }

function readConfig(model) {
  return JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'))
}

/** The text decoder's shape from config.json (both families; GLM-4.1V's head_dim is hidden / heads). */
export function textConfig(model) {
  const c = readConfig(model)
  const t = c.text_config ?? c
  const heads = t.num_attention_heads
  const tied = c.tie_word_embeddings ?? t.tie_word_embeddings ?? false
  return { hidden: t.hidden_size, layers: t.num_hidden_layers, heads, kv: t.num_key_value_heads ?? heads, headDim: t.head_dim ?? t.hidden_size / heads, inter: t.intermediate_size, vocab: t.vocab_size, tied }
}

/** The vision tower's shape from config.json: Qwen3-VL (GELU MLP, DeepStack mergers) or GLM-4.1V (SwiGLU blocks, conv merge). */
export function visionConfig(model) {
  const c = readConfig(model)
  const v = c.vision_config
  const glm = c.model_type === 'glm4v'
  return {
    glm,
    hidden: v.hidden_size,
    depth: v.depth,
    inter: v.intermediate_size,
    out: v.out_hidden_size,
    patchDim: (v.in_channels ?? 3) * (v.temporal_patch_size ?? 2) * v.patch_size ** 2,
    merge: v.spatial_merge_size ?? 2,
    deepstack: glm ? 0 : (v.deepstack_visual_indexes ?? []).length,
  }
}

/** Parameters of one decoder layer's linear maps, as [rows, cols]: q, k, v, o, gate, up, down. */
export function layerLinears(c) {
  const { hidden: h, heads, kv, headDim: hd, inter: i } = c
  return [[heads * hd, h], [kv * hd, h], [kv * hd, h], [h, heads * hd], [i, h], [i, h], [h, i]]
}

/** Parameters of the decoder's linear maps (all layers, without the output head). */
export function decoderLinearParams(c) {
  return c.layers * layerLinears(c).reduce((n, [rows, cols]) => n + rows * cols, 0)
}

/**
 * FLOPs of prefilling `n` new prompt tokens after `cached` tokens already in the KV cache: 2 × the decoder's linear
 * parameters per token, attention 4 × heads × head_dim per visible key per token per layer (causal: token i of the
 * new ones sees cached + i keys, so a prompt of L sees ≈ L/2 on average), and the output head for the last token
 * only.
 */
export function prefillFlops(c, n, cached = 0) {
  const linear = 2 * n * decoderLinearParams(c)
  const keys = n * cached + (n * (n + 1)) / 2
  const attention = 4 * c.heads * c.headDim * keys * c.layers
  return linear + attention + 2 * c.vocab * c.hidden
}

/**
 * FLOPs of encoding one image of `tokens` vision tokens (after the merge, so merge² × tokens patches): the patch
 * embedding (a linear map of C·T·P² values per patch), per block qkv, proj, the MLP (Qwen3-VL: fc1, fc2 of
 * intermediate_size; GLM-4.1V: gate, up, down of out_hidden_size) and full, non-causal attention over the image's
 * patches; then the merger (Qwen3-VL: fc1 over merge²·hidden, fc2 to out_hidden, once plus once per DeepStack tap;
 * GLM-4.1V: the merge² conv, proj, and a SwiGLU of intermediate_size).
 */
export function visionFlops(v, tokens) {
  const m = tokens
  const n = m * v.merge ** 2
  const d = v.hidden
  const wide = v.merge ** 2 * d
  const mlp = v.glm ? 3 * 2 * n * d * v.out : 2 * 2 * n * d * v.inter
  const block = 2 * n * d * 3 * d + 2 * n * d * d + mlp + 4 * n * n * d
  const merger = v.glm
    ? 2 * m * wide * v.out + 2 * m * v.out * v.out + 3 * 2 * m * v.out * v.inter
    : (1 + v.deepstack) * (2 * m * wide * wide + 2 * m * wide * v.out)
  return 2 * n * v.patchDim * d + v.depth * block + merger
}

/** Bytes of K and V one token adds to the cache: 2 × layers × kv_heads × head_dim elements. */
export function kvBytesPerToken(c, kvBytes) {
  return 2 * c.layers * c.kv * c.headDim * kvBytes
}

/**
 * Bytes one decode step reads at KV length `context`: the decoder's linear weights and the output head at
 * `weightBytes` per element, the one embedding row, and the K and V of every cached token at `kvBytes` per element.
 * (Norm weights, a few thousand elements, are left out.)
 */
export function decodeBytes(c, context, weightBytes, kvBytes = weightBytes) {
  const weights = (decoderLinearParams(c) + c.vocab * c.hidden + c.hidden) * weightBytes
  return weights + context * kvBytesPerToken(c, kvBytes)
}
