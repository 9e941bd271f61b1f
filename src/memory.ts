/**
 * The VTC-R1 optical-memory reasoning loop. Each round the model writes one reasoning segment; an unfinished
 * segment is rendered into page images with the training config and fed back, with the question, to the next
 * round. Earlier text never re-enters the context.
 *
 * ```
 * images = []
 * for round in 1..maxRounds:
 *     out = generate([system: SYSTEM_PROMPT, user: question + images], roundTokens)
 *     if complete(out): return out          # '</think>' then a non-empty <answer>…</answer>
 *     pages = render(out); if no pages: return out
 *     images += pages
 * return last out
 * ```
 * Baseline mode runs the same backend once, without images, with `maxRounds × roundTokens` tokens.
 */
import { VtcError } from './errors.js'
import { extractAnswer, type ExtractionSource } from './answer.js'
import { Renderer, type Page, type RendererOptions } from './render.js'
import { countTextTokens } from './text-tokens.js'
import { visionTokens, type PixelLimits, type VisionModel } from './tokens.js'
import type { ChatMessage, ChatModel, ContentPart, FinishReason, Timings } from './backends/types.js'

/** The VTC-R1 system prompt, verbatim (`inference.py`, `evaluation/math_eval.py`). */
export const SYSTEM_PROMPT =
  'These images record your previous reasoning process. Based on this reasoning, continue and complete the final answer. ' +
  'Do not restart the reasoning.\nIf no images are provided, start the reasoning from scratch.'

/** Where the pages go in the user turn: after the question (`inference.py`, default) or before it (the evaluation code). */
export type ImageOrder = 'question-first' | 'images-first'

export type MemoryMode = 'vtc' | 'baseline'

export interface OpticalMemoryOptions {
  /** Most rounds (default 8). */
  maxRounds?: number
  /** Token budget of one round (default 8192). Baseline mode gets `maxRounds × roundTokens`. */
  roundTokens?: number
  /**
   * Output tokens of the whole run, over all rounds (default: no limit beyond `maxRounds × roundTokens`). Each
   * round gets what is left, at most `roundTokens`; a run that spends it without an answer ends as `length`.
   */
  maxTokens?: number
  /** The system message; an empty string sends none (default: `SYSTEM_PROMPT`, VTC-R1's, verbatim). */
  systemPrompt?: string
  /** Where the pages go in the user turn (default `question-first`, as VTC-R1's `inference.py`). */
  imageOrder?: ImageOrder
  /** How pages are rendered: a loaded `Renderer`, or options for one (default: the `vtc-r1` training preset). */
  render?: Renderer | RendererOptions
  /** Sampling temperature of every round; 0 = greedy (default 0.6, the paper's). */
  temperature?: number
  /** Nucleus sampling mass of every round (default 0.95, the paper's). */
  topP?: number
  /** Keep only the k most likely tokens (default: the backend's, see `GenerateRequest.topK`). */
  topK?: number
  /** Seed of every round's sampler (default: the backend's, see `GenerateRequest.seed`). */
  seed?: number
  /** Stop strings of every round (default: none). */
  stop?: string[]
  /**
   * Generate every round's full budget, past end-of-turn (benchmarks: a fixed token schedule, so the loop and
   * the baseline do the same generation work). The backend must support it (`GenerateRequest.ignoreEos`)
   * (default false).
   */
  ignoreEos?: boolean
  /**
   * How vision tokens are estimated when the backend does not report them, and for the context-length check:
   * the model family and pixel limits (default: Qwen3-VL, and `imageMaxPixels` 262144 as VTC-R1 trains unless
   * `maxPixels` or `imageMaxPixels` is given).
   */
  vision?: {
    /** The family whose image processor counts the tokens (default `qwen3-vl`). */
    model?: VisionModel
  } & PixelLimits
}

export interface SolveOptions {
  /**
   * Aborting ends the run; `solve` then rejects with a `MemoryError` (code `ABORT_ERR`) holding the partial result
   * (default: none).
   */
  signal?: AbortSignal
  /** Called with every event, in order (the same events `stream()` yields) (default: none). */
  onEvent?: (event: MemoryEvent) => void
  /** `vtc` (default): the optical-memory loop; `baseline`: one long round without images. */
  mode?: MemoryMode
}

export interface MemoryRound {
  /** 1-based. */
  index: number
  /** The round's output. */
  text: string
  /** Output tokens of the round. */
  tokens: number
  /** True when `tokens` was counted client-side with the Qwen3 tokenizer (the backend reported no usage). */
  tokensEstimated?: boolean
  /** Why the backend stopped (`stop`, `length`, …; `aborted` / `error` in a partial result). */
  finishReason: FinishReason
  /** `</think>` followed by a non-empty `<answer>…</answer>`. */
  complete: boolean
  /** Page images the round read (all pages of earlier rounds). */
  images: number
  /** Vision tokens of those images: the backend's count if it reports one, else estimated from the page sizes. */
  visionTokens: number
  /** Prompt tokens, when the backend reports them. */
  promptTokens?: number
  /** Prompt tokens whose KV cache the backend reused from the previous round (embedded engine). */
  cachedTokens?: number
  /** Pages whose vision features the backend reused (embedded engine). */
  cachedImages?: number
  /** Pages rendered from this round's output (none for the round that ends the run). */
  pages: Page[]
  /**
   * Vision tokens of those pages, what each later round pays to read them instead of this round's `tokens`: the
   * backend's count when the next round reports one, else estimated from the page sizes.
   */
  pageTokens: number
  renderMs: number
  /** Wall time of the round, rendering included. */
  ms: number
  timings: Timings
}

export interface MemoryTotals {
  rounds: number
  /** Output tokens of all rounds: the token count of the run. */
  outputTokens: number
  /** Vision tokens read over all rounds. */
  visionTokens: number
  /** Pages rendered. */
  pages: number
  /** Output tokens of the rounds rendered into pages: the text the pages replaced in the context. */
  renderedTokens: number
  /** Vision tokens of those pages (the rounds' `pageTokens`): what the replaced text costs as images. */
  pageTokens: number
  /** Wall time of the whole run, rendering included. */
  latencyMs: number
  renderMs: number
  /** Sums of the backend's timings (0 where the backend does not report a phase). */
  visionMs: number
  prefillMs: number
  decodeMs: number
}

/**
 * How the run ended: `complete` (an answer after `</think>`), `rounds-exhausted`, `no-pages` (a round rendered
 * to nothing), `length` (`maxTokens` spent, or the baseline cut off), `stop` (baseline without a complete
 * answer), `aborted` / `error` (partial results).
 */
export type MemoryFinish = 'complete' | 'rounds-exhausted' | 'no-pages' | 'length' | 'stop' | 'aborted' | 'error'

export interface MemoryResult {
  mode: MemoryMode
  question: string
  /** The extracted final answer ('' when none), by the evaluation protocol's rules. */
  answer: string
  answerSource: ExtractionSource
  /** The final output: the last round's text (as the reference loop returns it). */
  text: string
  rounds: MemoryRound[]
  totals: MemoryTotals
  finishReason: MemoryFinish
}

export type MemoryEvent =
  | { type: 'round-start'; round: number; images: number; visionTokens: number; maxTokens: number }
  | { type: 'text'; round: number; text: string; tokens?: number }
  | { type: 'pages'; round: number; pages: Page[]; renderMs: number; visionTokens: number }
  | { type: 'round-end'; round: MemoryRound }
  | { type: 'done'; result: MemoryResult }

/** A run that failed or was aborted part-way; `partial` has every round (and partial round) so far. */
export class MemoryError extends VtcError {
  readonly partial: MemoryResult
  constructor(code: string, message: string, partial: MemoryResult, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'MemoryError'
    this.partial = partial
  }
}

/** The loop's completion test: `</think>` followed by a non-empty `<answer>…</answer>`. */
export function isComplete(text: string): boolean {
  return extractAnswer(text, { requireFinal: true }).source === 'answer-tag'
}

/** The paper's budgets: rounds, and tokens per round. */
export const DEFAULT_MAX_ROUNDS = 8
export const DEFAULT_ROUND_TOKENS = 8192

/** Chat-template tokens around the messages (role tags, image delimiters): a margin for the context check. */
const TEMPLATE_MARGIN = 64

export class OpticalMemory {
  readonly options: Readonly<
    Required<Pick<OpticalMemoryOptions, 'maxRounds' | 'roundTokens' | 'systemPrompt' | 'imageOrder' | 'temperature' | 'topP'>>
  > &
    OpticalMemoryOptions
  private renderer?: Promise<Renderer>

  constructor(
    readonly backend: ChatModel,
    options: OpticalMemoryOptions = {},
  ) {
    if (!backend || typeof backend.generate !== 'function') {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'OpticalMemory needs a backend with a generate() method')
    }
    const o = {
      ...options,
      maxRounds: options.maxRounds ?? DEFAULT_MAX_ROUNDS,
      roundTokens: options.roundTokens ?? DEFAULT_ROUND_TOKENS,
      systemPrompt: options.systemPrompt ?? SYSTEM_PROMPT,
      imageOrder: options.imageOrder ?? 'question-first',
      temperature: options.temperature ?? 0.6,
      topP: options.topP ?? 0.95,
    }
    positiveInt('maxRounds', o.maxRounds)
    positiveInt('roundTokens', o.roundTokens)
    if (o.maxTokens !== undefined) positiveInt('maxTokens', o.maxTokens)
    if (o.imageOrder !== 'question-first' && o.imageOrder !== 'images-first') {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `imageOrder must be 'question-first' or 'images-first', got ${JSON.stringify(o.imageOrder)}`)
    }
    if (typeof o.systemPrompt !== 'string') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'systemPrompt must be a string')
    if (!(Number.isFinite(o.temperature) && o.temperature >= 0)) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `temperature must be a number ≥ 0, got ${o.temperature}`)
    }
    if (!(Number.isFinite(o.topP) && o.topP > 0 && o.topP <= 1)) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `topP must be in (0, 1], got ${o.topP}`)
    }
    if (o.topK !== undefined) positiveInt('topK', o.topK)
    if (o.render instanceof Renderer) this.renderer = Promise.resolve(o.render)
    this.options = o
  }

  /** Runs the loop (or the baseline) to the end. */
  async solve(question: string, options: SolveOptions = {}): Promise<MemoryResult> {
    const it = this.stream(question, options)
    for (;;) {
      const r = await it.next()
      if (r.done) return r.value
      try {
        options.onEvent?.(r.value)
      } catch (err) {
        await it.return(undefined as never) // a throwing listener ends the run (and its generation)
        throw err
      }
    }
  }

  /** The standard long-context baseline on the same backend: one round, no images, `maxRounds × roundTokens` tokens. */
  baseline(question: string, options: Omit<SolveOptions, 'mode'> = {}): Promise<MemoryResult> {
    return this.solve(question, { ...options, mode: 'baseline' })
  }

  /**
   * The run as events: `round-start`, `text` deltas, `pages` (the round's output rendered), `round-end`, …,
   * `done`; the iterator's return value is the result. Breaking out of the loop cancels the generation.
   */
  async *stream(question: string, options: Omit<SolveOptions, 'onEvent'> = {}): AsyncGenerator<MemoryEvent, MemoryResult, undefined> {
    if (typeof question !== 'string' || !question.trim()) {
      throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'the question must be a non-empty string')
    }
    const mode = options.mode ?? 'vtc'
    if (mode !== 'vtc' && mode !== 'baseline') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `mode must be 'vtc' or 'baseline', got ${JSON.stringify(mode)}`)
    const o = this.options
    const signal = options.signal
    const budget = Math.min(mode === 'baseline' ? o.maxRounds * o.roundTokens : o.roundTokens, o.maxTokens ?? Infinity)
    const ctx = this.backend.contextLength
    const textPrompt = ctx === undefined ? 0 : countTextTokens(o.systemPrompt) + countTextTokens(question) + TEMPLATE_MARGIN
    if (ctx !== undefined && textPrompt + budget > ctx) {
      const [from, lower] =
        budget === o.maxTokens
          ? ['maxTokens', 'maxTokens']
          : mode === 'baseline'
            ? [`maxRounds ${o.maxRounds} × roundTokens ${o.roundTokens}`, 'maxRounds or roundTokens']
            : ['roundTokens', 'roundTokens']
      throw new VtcError(
        'ERR_VTC_CONTEXT_LENGTH',
        `the ${mode === 'baseline' ? 'baseline' : 'round'} budget of ${budget} tokens (${from}) plus the prompt (~${textPrompt} tokens) ` +
          `exceeds ${this.backend.name}'s context length of ${ctx} tokens; lower ${lower}`,
      )
    }
    const t0 = performance.now()
    let tRound = t0
    const rounds: MemoryRound[] = []
    const images: Page[] = []
    let imageTokens = 0
    /** Output tokens of the rounds so far (against `maxTokens`). */
    let spent = 0
    let current: MemoryRound | undefined
    const result = (finishReason: MemoryFinish): MemoryResult => this.result(mode, question, current ? [...rounds, current] : rounds, finishReason, t0)

    try {
      signal?.throwIfAborted()
      const maxRounds = mode === 'baseline' ? 1 : o.maxRounds
      for (let index = 1; index <= maxRounds; index++) {
        tRound = performance.now()
        let maxTokens = Math.min(budget, (o.maxTokens ?? Infinity) - spent)
        if (ctx !== undefined) {
          // pages accumulate: later rounds get what is left of the context window
          maxTokens = Math.min(maxTokens, ctx - textPrompt - imageTokens)
          if (maxTokens < 1) {
            throw new VtcError(
              'ERR_VTC_CONTEXT_LENGTH',
              `round ${index}: the prompt (~${textPrompt} text + ~${imageTokens} vision tokens for ${images.length} pages) fills ` +
                `${this.backend.name}'s context length of ${ctx} tokens`,
            )
          }
        }
        current = {
          index,
          text: '',
          tokens: 0,
          finishReason: 'aborted',
          complete: false,
          images: images.length,
          visionTokens: imageTokens,
          pages: [],
          pageTokens: 0,
          renderMs: 0,
          ms: 0,
          timings: {},
        }
        yield { type: 'round-start', round: index, images: images.length, visionTokens: imageTokens, maxTokens }

        const events = this.backend.generate({
          messages: this.messages(question, images),
          maxTokens,
          temperature: o.temperature,
          topP: o.topP,
          ...(o.topK !== undefined ? { topK: o.topK } : {}),
          ...(o.seed !== undefined ? { seed: o.seed } : {}),
          ...(o.stop?.length ? { stop: o.stop } : {}),
          ...(o.ignoreEos ? { ignoreEos: true } : {}),
          signal,
        })
        let finished = false
        for await (const ev of events) {
          if (ev.type === 'text') {
            current.text += ev.text
            current.ms = performance.now() - tRound
            yield { type: 'text', round: index, text: ev.text, ...(ev.tokens !== undefined ? { tokens: ev.tokens } : {}) }
          } else if (ev.type === 'done') {
            finished = true
            current.finishReason = ev.finishReason
            current.tokens = ev.usage.completionTokens
            if (ev.usage.estimated) current.tokensEstimated = true
            if (ev.usage.promptTokens !== undefined) current.promptTokens = ev.usage.promptTokens
            if (ev.usage.visionTokens !== undefined) {
              // the backend's count of all pages read: what the previous round's pages really cost
              const prev = rounds.at(-1)
              if (prev) prev.pageTokens = ev.usage.visionTokens - prev.visionTokens
              current.visionTokens = ev.usage.visionTokens
            }
            if (ev.usage.cachedTokens !== undefined) current.cachedTokens = ev.usage.cachedTokens
            if (ev.usage.cachedImages !== undefined) current.cachedImages = ev.usage.cachedImages
            current.timings = ev.timings
            break
          }
        }
        if (!finished) throw new VtcError('ERR_VTC_BACKEND_PROTOCOL', `${this.backend.name}: the generation ended without a done event`)
        current.complete = isComplete(current.text)
        current.ms = performance.now() - tRound
        spent += current.tokens

        let finish: MemoryFinish | undefined
        if (current.complete) finish = 'complete'
        else if (mode === 'baseline') finish = current.finishReason === 'length' ? 'length' : 'stop'
        else if (index === maxRounds) finish = 'rounds-exhausted'
        else if (spent >= (o.maxTokens ?? Infinity)) finish = 'length'
        else {
          signal?.throwIfAborted()
          const tRender = performance.now()
          const renderer = await this.getRenderer()
          const { pages } = await renderer.render(current.text, { signal })
          current.renderMs = performance.now() - tRender
          current.pages = pages
          current.pageTokens = pages.reduce((n, p) => n + this.pageTokens(p), 0)
          current.ms = performance.now() - tRound
          yield { type: 'pages', round: index, pages, renderMs: current.renderMs, visionTokens: current.pageTokens }
          if (pages.length === 0) finish = 'no-pages'
          images.push(...pages)
          imageTokens += current.pageTokens
        }
        const done = current
        rounds.push(done)
        current = undefined
        yield { type: 'round-end', round: done }
        if (finish) {
          const r = result(finish)
          yield { type: 'done', result: r }
          return r
        }
      }
      /* c8 ignore next */
      throw new VtcError('ERR_VTC_INTERNAL', 'the loop ended without a result')
    } catch (err) {
      if (current) {
        // the partial round: what was generated before the failure
        if (current.finishReason === 'aborted') current.finishReason = signal?.aborted ? 'aborted' : 'error'
        if (!current.tokens && current.text) {
          current.tokens = countTextTokens(current.text)
          current.tokensEstimated = true
        }
        current.ms = performance.now() - tRound
      }
      if (signal?.aborted) {
        throw new MemoryError('ABORT_ERR', `the run was aborted${current ? ` in round ${current.index}` : ''}`, result('aborted'), { cause: err })
      }
      const code = typeof (err as VtcError)?.code === 'string' ? (err as VtcError).code : 'ERR_VTC_BACKEND'
      const msg = (err as Error)?.message ?? String(err)
      throw new MemoryError(code, current ? `round ${current.index}: ${msg}` : msg, result('error'), { cause: err })
    }
  }

  /** The messages of a round: system prompt, then the question with the pages read so far. */
  messages(question: string, images: readonly Page[]): ChatMessage[] {
    const q: ContentPart = { type: 'text', text: question }
    const pics: ContentPart[] = images.map((image) => ({ type: 'image', image }))
    const user: ChatMessage = { role: 'user', content: this.options.imageOrder === 'images-first' ? [...pics, q] : [q, ...pics] }
    return this.options.systemPrompt ? [{ role: 'system', content: this.options.systemPrompt }, user] : [user]
  }

  private pageTokens(p: Page): number {
    const v = this.options.vision ?? {}
    const trained = v.maxPixels === undefined && v.imageMaxPixels === undefined ? { imageMaxPixels: 262144 } : {}
    return visionTokens(p.width, p.height, v.model ?? 'qwen3-vl', { ...v, ...trained })
  }

  private getRenderer(): Promise<Renderer> {
    if (!this.renderer) {
      const r = this.options.render
      this.renderer = Renderer.create(r instanceof Renderer ? {} : { preset: 'vtc-r1', ...r })
      this.renderer.catch(() => (this.renderer = undefined))
    }
    return this.renderer
  }

  private result(mode: MemoryMode, question: string, rounds: MemoryRound[], finishReason: MemoryFinish, t0: number): MemoryResult {
    const last = rounds.at(-1)
    const text = last?.text ?? ''
    const { answer, source } = extractAnswer(text)
    const sum = (f: (r: MemoryRound) => number) => rounds.reduce((n, r) => n + f(r), 0)
    return {
      mode,
      question,
      answer,
      answerSource: source,
      text,
      rounds,
      finishReason,
      totals: {
        rounds: rounds.length,
        outputTokens: sum((r) => r.tokens),
        visionTokens: sum((r) => r.visionTokens),
        pages: sum((r) => r.pages.length),
        renderedTokens: sum((r) => (r.pages.length ? r.tokens : 0)),
        pageTokens: sum((r) => r.pageTokens),
        latencyMs: performance.now() - t0,
        renderMs: sum((r) => r.renderMs),
        visionMs: sum((r) => r.timings.visionMs ?? 0),
        prefillMs: sum((r) => r.timings.prefillMs ?? 0),
        decodeMs: sum((r) => r.timings.decodeMs ?? 0),
      },
    }
  }
}

function positiveInt(name: string, v: unknown): void {
  if (!Number.isInteger(v) || (v as number) < 1) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${name} must be a positive integer, got ${v}`)
}
