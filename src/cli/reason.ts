/** `vtc-r1 reason`: solve one question with the optical-memory loop (or the baseline), streaming the reasoning. */
import { writeFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

import { loadModel, type Quantization } from '../backends/embedded.js'
import { OpenAIBackend } from '../backends/openai.js'
import type { ChatModel } from '../backends/types.js'
import { VtcError } from '../errors.js'
import { MemoryError, OpticalMemory, type MemoryEvent, type MemoryResult, type OpticalMemoryOptions } from '../memory.js'
import type { Preset } from '../render.js'
import { stopOnInterrupt } from './interrupt.js'
import { pullReporter } from './pull.js'

export const REASON_HELP = `usage: vtc-r1 reason (--model DIR|ORG/NAME | --base-url URL [--api-model NAME]) [QUESTION|-] [options]
  Solves a question with the VTC-R1 optical-memory loop: each round's reasoning streams to the terminal,
  is rendered into page images and fed back; prints the answer and a token/latency summary.

  QUESTION|-            the question text, or - (or nothing, with a pipe) to read it from standard input
  --model DIR|ORG/NAME  a Hugging Face model directory, or a model id from the Hugging Face cache (downloaded
                        into it when missing, see vtc-r1 pull), run in-process by the embedded engine
  --device cpu|cuda     embedded engine device (default cpu)
  --dtype f32|bf16|f16  embedded engine weight type (default f32)
  --kv-cache f32|bf16|f16  embedded engine: the KV cache's type (default: --dtype)
  --quantize Q          embedded engine: quantize the decoder's weights (q8_0, q6k, q5k, q4k, q4_0)
  --quant-cache-dir DIR where quantized weights are cached (default: the OS cache directory)
  --image-max-pixels N  embedded engine: shrink each page to at most N pixels first, as LLaMA-Factory's
                        image_max_pixels did in training (VTC-R1 checkpoints: 262144)
  --max-pixels N        embedded engine: the image processor's pixel budget (size.longest_edge)
  --base-url URL        an OpenAI-compatible server instead (vLLM, SGLang, vtc-r1 serve): http://HOST:PORT/v1
  --api-model NAME      the server's model id (default: the first one it lists)
  --api-key KEY         bearer token for the server (default: $OPENAI_API_KEY)
  --context-length N    the context window to plan with: budgets that do not fit are refused before starting,
                        and later rounds get what the pages leave (default: the model's, or what the server lists;
                        with --model at most its max_position_embeddings)
  --baseline            the standard long-context mode: one round, no images, max-rounds × round-tokens tokens
  --max-rounds N        most rounds (default 8)
  --round-tokens N      tokens per round (default 8192)
  --temperature T       default 0.6
  --top-p P             default 0.95
  --top-k K             default: the backend's
  --seed N              sampling seed
  --images-first        put the pages before the question (the evaluation code's order; default after)
  --preset NAME         page rendering preset: vtc-r1 (default, the training config) or glyph (needs --font)
  --render-config FILE  a VTC-R1/Glyph render config JSON
  --font FILE           main font file for rendering
  --html FILE           write a self-contained report: each round's text beside its rendered pages
  --json                print the result as JSON instead of streaming
  --quiet               do not stream the reasoning; print only the answer and the summary`

export const BACKEND_OPTIONS = {
  model: { type: 'string' },
  device: { type: 'string' },
  dtype: { type: 'string' },
  'kv-cache': { type: 'string' },
  quantize: { type: 'string' },
  'quant-cache-dir': { type: 'string' },
  'image-max-pixels': { type: 'string' },
  'max-pixels': { type: 'string' },
  'base-url': { type: 'string' },
  'api-model': { type: 'string' },
  'api-key': { type: 'string' },
  'context-length': { type: 'string' },
} as const

export interface BackendArgs {
  model?: string
  device?: string
  dtype?: string
  'kv-cache'?: string
  quantize?: string
  'quant-cache-dir'?: string
  'image-max-pixels'?: string
  'max-pixels'?: string
  'base-url'?: string
  'api-model'?: string
  'api-key'?: string
  'context-length'?: string
}

/**
 * The backend the flags name: the embedded engine (`--model DIR`) or an OpenAI-compatible server (`--base-url`).
 * `maxBatch`: how many requests the embedded engine decodes together (its default when not given).
 */
export async function backendFromArgs(v: BackendArgs, command: string, maxBatch?: number): Promise<ChatModel> {
  if (v.model && v['base-url']) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${command}: give either --model DIR or --base-url URL, not both`)
  const contextLength = v['context-length'] === undefined ? undefined : positiveInt('--context-length', v['context-length'])
  if (v.model) {
    for (const flag of ['api-model', 'api-key'] as const) {
      if (v[flag] !== undefined) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${command}: --${flag} applies to a server (--base-url URL), not to the embedded engine (--model DIR)`)
    }
    const device = v.device ?? 'cpu'
    if (device !== 'cpu' && device !== 'cuda') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--device ${device}: allowed values are cpu, cuda`)
    const dtype = v.dtype ?? 'f32'
    if (dtype !== 'f32' && dtype !== 'bf16' && dtype !== 'f16') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--dtype ${dtype}: allowed values are f32, bf16, f16`)
    const kvCache = v['kv-cache']
    if (kvCache !== undefined && kvCache !== 'f32' && kvCache !== 'bf16' && kvCache !== 'f16') {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--kv-cache ${kvCache}: allowed values are f32, bf16, f16`)
    }
    return loadModel(v.model, {
      device,
      dtype,
      ...(kvCache !== undefined ? { kvCache } : {}),
      ...(v.quantize !== undefined ? { quantize: v.quantize as Quantization } : {}),
      ...(v['quant-cache-dir'] !== undefined ? { quantCacheDir: v['quant-cache-dir'] } : {}),
      ...(v['image-max-pixels'] !== undefined ? { imageMaxPixels: positiveInt('--image-max-pixels', v['image-max-pixels']) } : {}),
      ...(v['max-pixels'] !== undefined ? { maxPixels: positiveInt('--max-pixels', v['max-pixels']) } : {}),
      ...(maxBatch !== undefined ? { maxBatch } : {}),
      ...(contextLength !== undefined ? { contextLength } : {}),
      hub: { onProgress: pullReporter(v.model) },
    }).catch((err: unknown) => {
      // the flag, not the function, is what the user gave
      if (err instanceof VtcError && err.code === 'ERR_VTC_MODEL_NOT_FOUND') throw new VtcError(err.code, `--model ${err.message}`, { cause: err })
      throw err
    })
  }
  for (const flag of ['device', 'dtype', 'kv-cache', 'quantize', 'quant-cache-dir', 'image-max-pixels', 'max-pixels'] as const) {
    // the server preprocesses images itself; these would be silently ignored
    if (v[flag] !== undefined) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${command}: --${flag} applies to the embedded engine (--model DIR), not to --base-url`)
  }
  const baseUrl = v['base-url']
  if (!baseUrl) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${command}: give --model DIR (embedded engine) or --base-url URL (an OpenAI-compatible server)`)
  const apiKey = v['api-key'] ?? process.env.OPENAI_API_KEY
  let model = v['api-model']
  let listed: number | undefined
  if (!model || contextLength === undefined) {
    // the model id (when not given) and its context length (vLLM lists max_model_len)
    const models = await OpenAIBackend.models(baseUrl, { apiKey }).catch((err: unknown) => {
      if (!model) throw err
      return []
    })
    if (!model && !models.length) throw new VtcError('ERR_VTC_BACKEND_PROTOCOL', `${baseUrl} lists no models; give --api-model NAME`)
    const m = model ? models.find((x) => x.id === model) : models[0]
    model ??= models[0].id
    listed = m?.contextLength
  }
  return new OpenAIBackend({ baseUrl, model, apiKey, contextLength: contextLength ?? listed })
}

/** The flags of the loop's options (rounds, budgets, sampling, rendering), shared by `reason` and `eval`. */
export const LOOP_OPTIONS = {
  'max-rounds': { type: 'string' },
  'round-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  'top-k': { type: 'string' },
  seed: { type: 'string' },
  'images-first': { type: 'boolean' },
  preset: { type: 'string' },
  'render-config': { type: 'string' },
  font: { type: 'string' },
} as const

export type LoopArgs = { [K in keyof typeof LOOP_OPTIONS]?: (typeof LOOP_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string }

export function memoryOptionsFromArgs(values: LoopArgs): OpticalMemoryOptions {
  const preset = (values.preset ?? 'vtc-r1') as Preset
  if (preset !== 'vtc-r1' && preset !== 'glyph') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--preset ${preset}: allowed values are vtc-r1, glyph`)
  const options: OpticalMemoryOptions = {
    render: { preset, config: values['render-config'], fontPath: values.font },
    imageOrder: values['images-first'] ? 'images-first' : 'question-first',
  }
  if (values['max-rounds'] !== undefined) options.maxRounds = positiveInt('--max-rounds', values['max-rounds'])
  if (values['round-tokens'] !== undefined) options.roundTokens = positiveInt('--round-tokens', values['round-tokens'])
  if (values.temperature !== undefined) options.temperature = number('--temperature', values.temperature)
  if (values['top-p'] !== undefined) options.topP = number('--top-p', values['top-p'])
  if (values['top-k'] !== undefined) options.topK = positiveInt('--top-k', values['top-k'])
  if (values.seed !== undefined) options.seed = integer('--seed', values.seed)
  return options
}

export async function reasonCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...BACKEND_OPTIONS,
      ...LOOP_OPTIONS,
      baseline: { type: 'boolean' },
      html: { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(REASON_HELP)
    return
  }
  if (positionals.length > 1) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `reason: one question expected, got ${positionals.length} arguments (quote the question)`)
  }
  const options = memoryOptionsFromArgs(values)
  const question = (await readQuestion(positionals[0])).trim()
  if (!question) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'reason: the question is empty')

  const backend = await backendFromArgs(values, 'reason')
  const memory = new OpticalMemory(backend, options)
  const mode = values.baseline ? 'baseline' : 'vtc'
  const interrupt = stopOnInterrupt('vtc-r1: interrupted; stopping')
  const printer = values.json || values.quiet ? undefined : new StreamPrinter(backend.name, mode)
  let result: MemoryResult
  try {
    result = await memory.solve(question, { mode, signal: interrupt.signal, onEvent: printer ? (e) => printer.event(e) : undefined })
  } catch (err) {
    if (!(err instanceof MemoryError)) throw err
    printer?.end()
    if (values.html) await writeReport(values.html, err.partial, backend.name, err)
    if (values.json) console.log(JSON.stringify(resultJson(err.partial, err), null, 2))
    else console.log(`\n${summaryText(err.partial)}`)
    if (err.code === 'ABORT_ERR') {
      process.exitCode = 130
      return
    }
    throw err
  } finally {
    interrupt.release()
  }
  printer?.end()
  if (values.html) await writeReport(values.html, result, backend.name)
  if (values.json) console.log(JSON.stringify(resultJson(result), null, 2))
  else console.log(`\nanswer: ${result.answer || '(none)'}\n${summaryText(result)}`)
  if (values.html && !values.json) console.log(`report written to ${values.html}`)
}

/** Streams the reasoning with a header and a footer line per round. */
class StreamPrinter {
  private readonly dim: (s: string) => string
  private atLineStart = true

  constructor(
    private readonly name: string,
    private readonly mode: string,
  ) {
    const tty = process.stdout.isTTY === true && !process.env.NO_COLOR
    this.dim = tty ? (s) => `\x1b[2m${s}\x1b[0m` : (s) => s
  }

  private write(s: string): void {
    if (!s) return
    process.stdout.write(s)
    this.atLineStart = s.endsWith('\n')
  }

  private line(s: string): void {
    if (!this.atLineStart) this.write('\n')
    this.write(`${this.dim(s)}\n`)
  }

  event(e: MemoryEvent): void {
    switch (e.type) {
      case 'round-start':
        this.line(
          this.mode === 'baseline'
            ? `── ${this.name} · baseline: one round, up to ${e.maxTokens} tokens ──`
            : `── round ${e.round} · ${e.images} page${e.images === 1 ? '' : 's'} of memory (${e.visionTokens} vision tokens) ──`,
        )
        break
      case 'text':
        this.write(e.text)
        break
      case 'pages':
        this.line(`[rendered ${e.pages.length} page${e.pages.length === 1 ? '' : 's'} (${e.visionTokens} vision tokens) in ${e.renderMs.toFixed(0)} ms]`)
        break
      case 'round-end': {
        const r = e.round
        this.line(
          `── round ${r.index}: ${r.tokens} tokens${r.tokensEstimated ? ' (counted here)' : ''}, ${r.finishReason}` +
            `${r.complete ? ', answered' : ''}, ${seconds(r.ms)} ──`,
        )
        break
      }
      case 'done':
        break
    }
  }

  end(): void {
    if (!this.atLineStart) this.write('\n')
  }
}

export function summaryText(r: MemoryResult): string {
  const t = r.totals
  const estimated = r.rounds.some((x) => x.tokensEstimated) ? ' (some counted with the Qwen3 tokenizer)' : ''
  const replaced = replacedText(r)
  return [
    `mode           ${r.mode}; ${r.finishReason}`,
    `rounds         ${t.rounds}`,
    `output tokens  ${t.outputTokens}${estimated}`,
    `vision tokens  ${t.visionTokens} read from ${t.pages} rendered page${t.pages === 1 ? '' : 's'}`,
    ...(replaced ? [`pages replaced ${replaced}`] : []),
    `latency        ${latencyText(t)}`,
    `throughput     ${t.latencyMs > 0 ? ((t.outputTokens / t.latencyMs) * 1000).toFixed(1) : '0'} output tokens/s`,
  ].join('\n')
}

/** The method's claim for this run: the text tokens the pages took the place of, against the vision tokens they cost. */
function replacedText(r: MemoryResult): string | undefined {
  const t = r.totals
  if (!t.pages) return undefined
  const rounds = r.rounds.filter((x) => x.pages.length).length
  const ratio = t.pageTokens > 0 ? ` (${(t.renderedTokens / t.pageTokens).toFixed(2)}× fewer)` : ''
  return (
    `${t.renderedTokens} text tokens of ${rounds} round${rounds === 1 ? '' : 's'} with ${t.pages} page${t.pages === 1 ? '' : 's'} ` +
    `of ${t.pageTokens} vision tokens${ratio}`
  )
}

/** Wall time and its phases (those the backend reports). */
function latencyText(t: MemoryResult['totals']): string {
  const phases = [`render ${seconds(t.renderMs)}`]
  if (t.visionMs) phases.push(`vision ${seconds(t.visionMs)}`)
  if (t.prefillMs) phases.push(`prefill ${seconds(t.prefillMs)}`)
  if (t.decodeMs) phases.push(`decode ${seconds(t.decodeMs)}`)
  return `${seconds(t.latencyMs)} (${phases.join(', ')})`
}

function resultJson(r: MemoryResult, err?: MemoryError): Record<string, unknown> {
  return {
    ...(err ? { error: { code: err.code, message: err.message } } : {}),
    mode: r.mode,
    question: r.question,
    answer: r.answer,
    answerSource: r.answerSource,
    finishReason: r.finishReason,
    text: r.text,
    rounds: r.rounds.map(({ pages, ...rest }) => ({ ...rest, pages: pages.map((p) => ({ width: p.width, height: p.height })) })),
    totals: r.totals,
  }
}

export async function writeReport(path: string, r: MemoryResult, model: string, err?: MemoryError): Promise<void> {
  try {
    await writeFile(path, await memoryReportHtml(r, { model, error: err ? `${err.code}: ${err.message}` : undefined }))
  } catch (e) {
    throw new VtcError('ERR_VTC_IO', `cannot write ${path}: ${(e as Error).message}`, { cause: e })
  }
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** A self-contained HTML page (no scripts, no external assets): each round's text beside its rendered pages. */
export async function memoryReportHtml(r: MemoryResult, meta: { model?: string; error?: string } = {}): Promise<string> {
  const t = r.totals
  const rounds: string[] = []
  for (const round of r.rounds) {
    const imgs: string[] = []
    for (const [i, p] of round.pages.entries()) {
      const png = await p.png()
      imgs.push(
        `<figure><img alt="round ${round.index} page ${i + 1}" width="${p.width}" height="${p.height}" src="data:image/png;base64,${png.toString('base64')}">` +
          `<figcaption>page ${i + 1} · ${p.width}×${p.height}</figcaption></figure>`,
      )
    }
    const facts = [
      `${round.tokens} output tokens${round.tokensEstimated ? ' (counted here)' : ''}`,
      `read ${round.images} page${round.images === 1 ? '' : 's'} (${round.visionTokens} vision tokens)`,
      `finish: ${round.finishReason}${round.complete ? ', answered' : ''}`,
      ...(round.pages.length ? [`rendered to ${round.pages.length} page${round.pages.length === 1 ? '' : 's'} of ${round.pageTokens} vision tokens`] : []),
      seconds(round.ms),
    ]
    rounds.push(`<section class="round">
<h2>Round ${round.index}</h2>
<p class="facts">${facts.map(esc).join(' · ')}</p>
<div class="cols"><pre class="text">${esc(round.text)}</pre>
<div class="pages">${imgs.length ? imgs.join('\n') : `<p class="none">${r.mode === 'baseline' ? 'baseline: nothing rendered' : 'not rendered (last round)'}</p>`}</div></div>
</section>`)
  }
  const row = (k: string, v: string) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vtc-r1 reasoning report</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:20px}h2{font-size:17px;margin:0 0 4px}
table{border-collapse:collapse;margin:8px 0 20px}th,td{text-align:left;padding:3px 12px 3px 0;vertical-align:top}th{color:#555;font-weight:600}
.question,.answer{white-space:pre-wrap;background:#fff;border:1px solid #ddd;padding:8px 12px;border-radius:4px}
.answer{font-weight:600}.error{color:#a00}
.round{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px;margin:16px 0}
.facts{color:#555;margin:0 0 8px}
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:16px;align-items:start}
.text{white-space:pre-wrap;word-break:break-word;font:13px/1.4 ui-monospace,monospace;margin:0;max-height:90vh;overflow:auto;background:#f6f6f6;padding:8px}
.pages figure{margin:0 0 12px}.pages img{max-width:100%;height:auto;border:1px solid #ccc;background:#fff}
figcaption,.none{color:#777;font-size:12px}
</style></head><body>
<h1>vtc-r1 · ${esc(r.mode === 'baseline' ? 'baseline (long context)' : 'optical memory')}${meta.model ? ` · ${esc(meta.model)}` : ''}</h1>
${meta.error ? `<p class="error">stopped early: ${esc(meta.error)}</p>` : ''}
<h2>Question</h2><div class="question">${esc(r.question)}</div>
<h2 style="margin-top:12px">Answer</h2><div class="answer">${esc(r.answer || '(none)')}</div>
<table>
${row('finish', r.finishReason)}
${row('rounds', String(t.rounds))}
${row('output tokens', String(t.outputTokens))}
${row('vision tokens read', String(t.visionTokens))}
${row('pages rendered', String(t.pages))}
${row('pages replaced', replacedText(r) ?? 'nothing (no round was rendered)')}
${row('latency', latencyText(t))}
</table>
${rounds.join('\n')}
</body></html>
`
}

function seconds(ms: number): string {
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(1)} s`
}

async function readQuestion(arg: string | undefined): Promise<string> {
  if (arg !== undefined && arg !== '-') return arg
  if (arg === undefined && process.stdin.isTTY) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'reason: no question; give it as an argument, or - to read standard input (see vtc-r1 reason --help)')
  }
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8')
}

export function positiveInt(flag: string, v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n) || n <= 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected a positive integer`)
  return n
}

function integer(flag: string, v: string): number {
  const n = Number(v)
  if (!Number.isInteger(n)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected an integer`)
  return n
}

function number(flag: string, v: string): number {
  const n = Number(v)
  if (!Number.isFinite(n)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected a number`)
  return n
}
