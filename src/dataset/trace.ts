/**
 * From an OpenR1 row to the one trace a training example is made of: which generation to take, its reasoning
 * (inside `<think>`), and its final answer.
 */
import { lastBoxed } from '../latex.js'
import type { OpenR1Field, OpenR1Row } from './openr1.js'

/**
 * How a generation qualifies, tried in the given order (the first generation that passes the first
 * criterion wins; the next criterion is only tried when no generation passes the previous one):
 * - `math_verify`: `correctness_math_verify` is true (OpenR1's own verified-correct flag; the default)
 * - `llama`: `correctness_llama` is true (the Llama judge)
 * - `complete`: `is_reasoning_complete` is true
 * - `stop`: `finish_reasons` is `stop` (not cut by the length limit)
 * - `any`: the first generation with a complete `<think>…</think>`
 */
export type Criterion = 'math_verify' | 'llama' | 'complete' | 'stop' | 'any'
export const CRITERIA: readonly Criterion[] = ['math_verify', 'llama', 'complete', 'stop', 'any']
/** The field each criterion reads (`any` reads none). */
export const CRITERION_FIELD: Record<Criterion, OpenR1Field | undefined> = {
  math_verify: 'correctness_math_verify',
  llama: 'correctness_llama',
  complete: 'is_reasoning_complete',
  stop: 'finish_reasons',
  any: undefined,
}

/**
 * What goes inside `<answer>…</answer>`:
 * - `boxed` (default): the last `\boxed{…}` of the text after `</think>` (the answer math_verify checked),
 *   else of the reasoning, else the row's `answer` field
 * - `field`: the row's `answer` field, else as `boxed`
 * - `solution`: the whole text after `</think>` (the written-out solution)
 * VTC-R1's evaluation reads the whole `<answer>` content as the prediction, so the default is the bare answer.
 */
export type AnswerSource = 'boxed' | 'field' | 'solution'

export interface Trace {
  /** Index of the chosen generation in the row. */
  generation: number
  criterion: Criterion
  /** The text between `<think>` and `</think>` (the opening tag may be absent, as in R1-distill outputs). */
  reasoning: string
  /** The text after `</think>`. */
  solution: string
  answer: string
}

export type SkipReason =
  | 'no-correct-generation'
  | 'no-complete-reasoning'
  | 'no-answer'
  | 'invalid-text'
  | 'reserved-text'

export type TraceResult = { ok: true; trace: Trace } | { ok: false; reason: SkipReason; detail: string }

// placeholders LLaMA-Factory counts against the images, and chat-template tokens, must not occur in the text
const RESERVED = /<image>|<video>|<audio>|<\|[a-z_]+\|>/

export function pickTrace(row: OpenR1Row, criteria: readonly Criterion[] = ['math_verify'], answerFrom: AnswerSource = 'boxed'): TraceResult {
  if (!row.problem.isWellFormed()) return { ok: false, reason: 'invalid-text', detail: 'problem has a lone UTF-16 surrogate' }
  const problemReserved = RESERVED.exec(row.problem)
  if (problemReserved) return { ok: false, reason: 'reserved-text', detail: `problem contains "${problemReserved[0]}"` }

  let flagged = false
  let firstProblem: TraceResult | undefined
  for (const criterion of criteria) {
    for (let i = 0; i < row.generations.length; i++) {
      if (!passes(row, i, criterion)) continue
      flagged = true
      const r = traceOf(row, i, criterion, answerFrom)
      if (r.ok) return r
      firstProblem ??= r
    }
  }
  if (firstProblem) return firstProblem
  return {
    ok: false,
    reason: flagged ? 'no-complete-reasoning' : 'no-correct-generation',
    detail: `no generation of ${row.generations.length} passes ${criteria.join(' or ')}`,
  }
}

function passes(row: OpenR1Row, i: number, c: Criterion): boolean {
  switch (c) {
    case 'math_verify':
      return row.correctness_math_verify?.[i] === true
    case 'llama':
      return row.correctness_llama?.[i] === true
    case 'complete':
      return row.is_reasoning_complete?.[i] === true
    case 'stop':
      return row.finish_reasons?.[i] === 'stop'
    case 'any':
      return true
  }
}

function traceOf(row: OpenR1Row, i: number, criterion: Criterion, answerFrom: AnswerSource): TraceResult {
  const gen = row.generations[i]
  const split = splitThink(gen)
  if (!split) return { ok: false, reason: 'no-complete-reasoning', detail: `generation ${i} has no </think>` }
  if (!split.reasoning.trim()) return { ok: false, reason: 'no-complete-reasoning', detail: `generation ${i} has an empty <think>` }
  if (!gen.isWellFormed()) return { ok: false, reason: 'invalid-text', detail: `generation ${i} has a lone UTF-16 surrogate` }
  const reserved = RESERVED.exec(split.reasoning)
  if (reserved) return { ok: false, reason: 'reserved-text', detail: `generation ${i} contains "${reserved[0]}"` }
  if (/<\/?think>/.test(split.reasoning)) return { ok: false, reason: 'reserved-text', detail: `generation ${i} has nested <think> tags` }
  const answer = finalAnswer(split, row.answer, answerFrom)
  if (!answer) return { ok: false, reason: 'no-answer', detail: `generation ${i} has no final answer (no \\boxed{}, no answer field)` }
  if (RESERVED.test(answer) || /<\/?(answer|think)>/.test(answer)) {
    return { ok: false, reason: 'reserved-text', detail: `generation ${i}: the answer contains a reserved tag` }
  }
  return { ok: true, trace: { generation: i, criterion, reasoning: split.reasoning, solution: split.solution, answer } }
}

/** Reasoning and solution of a generation; null without `</think>` (the reasoning did not finish). */
export function splitThink(gen: string): { reasoning: string; solution: string } | null {
  const close = gen.indexOf('</think>')
  if (close < 0) return null
  const open = gen.lastIndexOf('<think>', close)
  return { reasoning: gen.slice(open < 0 ? 0 : open + '<think>'.length, close), solution: gen.slice(close + '</think>'.length) }
}

function finalAnswer(split: { reasoning: string; solution: string }, field: string | undefined, from: AnswerSource): string {
  const boxed = () => lastBoxed(split.solution)?.trim() || lastBoxed(split.reasoning)?.trim() || undefined
  const f = field?.trim() || undefined
  const a = from === 'solution' ? split.solution : from === 'field' ? (f ?? boxed()) : (boxed() ?? f)
  return a?.trim() ?? ''
}
