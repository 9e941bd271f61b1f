/**
 * The per-row work that needs no rendering: pick the trace, tokenize and segment its reasoning, build the
 * assistant turns and count their tokens. Pure and serializable, so it runs on the main thread or in
 * worker threads alike (it is the JS tokenizer's time that dominates a build).
 */
import { qwen3Segmenter, segmentWithEnds } from '../segment.js'
import { countTextTokens } from '../text-tokens.js'
import { where, type InputRow, type RowPosition } from './openr1.js'
import { assistantTurns } from './samples.js'
import { pickTrace, type AnswerSource, type Criterion } from './trace.js'

export interface PrepareOptions {
  select: Criterion[]
  answer: AnswerSource
  segmentTokens: number
  thinkEverySegment: boolean
}

export interface SkippedRow {
  row: number
  id?: string
  /** `file:line` or `file row N`. */
  at: string
  reason: string
  detail: string
}

export interface PreparedRow {
  kind: 'row'
  pos: RowPosition
  id: string
  question: string
  turns: string[]
  turnTokens: number[]
  segmentTokens: number[]
  reasoningTokens: number
  questionTokens: number
}

export type Prepared = PreparedRow | { kind: 'skip'; skip: SkippedRow }

const THINK_OPEN_TOKENS = 2 // `<think>` and `\n`

export function prepare(rec: InputRow, o: PrepareOptions): Prepared {
  const skip = (pos: RowPosition, id: string | undefined, reason: string, detail: string): Prepared => ({
    kind: 'skip',
    skip: { row: pos.index, ...(id !== undefined ? { id } : {}), at: where(pos), reason, detail },
  })
  if (!rec.ok) return skip(rec.pos, rec.id, rec.reason, rec.detail)
  const row = rec.row
  const picked = pickTrace(row, o.select, o.answer)
  if (!picked.ok) return skip(row.pos, row.id, picked.reason, picked.detail)

  const reasoning = picked.trace.reasoning.normalize('NFC')
  const ends = qwen3Segmenter.tokenEnds(reasoning)
  const segments = segmentWithEnds(reasoning, ends, o.segmentTokens)
    .map((s) => ({ text: s.text.trim(), tokens: s.tokens }))
    .filter((s) => s.text.length > 0)
  if (segments.length === 0) return skip(row.pos, row.id, 'no-complete-reasoning', 'the reasoning is blank')
  const turns = assistantTurns(
    segments.map((s) => s.text),
    picked.trace.answer,
    { thinkEverySegment: o.thinkEverySegment },
  )
  const last = turns.length - 1
  const closing = countTextTokens(turns[last].slice(turns[last].lastIndexOf('\n</think>')))
  const turnTokens = segments.map((s, k) => s.tokens + (k === 0 || o.thinkEverySegment ? THINK_OPEN_TOKENS : 0) + (k === last ? closing : 0))
  return {
    kind: 'row',
    pos: row.pos,
    id: row.id,
    question: row.problem,
    turns,
    turnTokens,
    segmentTokens: segments.map((s) => s.tokens),
    reasoningTokens: ends.length,
    questionTokens: countTextTokens(row.problem.trim()),
  }
}
