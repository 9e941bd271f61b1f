/**
 * Final-answer extraction from a model output, in the order of the VTC-R1 evaluation protocol:
 * `<answer>…</answer>` after the last `</think>` → last `\boxed{…}` → "the answer is …" → last number.
 */
import { lastBoxed } from './latex.js'

export type ExtractionSource = 'answer-tag' | 'boxed' | 'answer-is' | 'last-number' | 'none'

export interface Extraction {
  /** The answer text, lightly cleaned (delimiters, a leading `:` and a trailing `.` removed); '' when none. */
  answer: string
  source: ExtractionSource
}

const ANSWER_TAG = /<answer>([\s\S]*?)<\/answer>/g
const ANSWER_IS = /\b(?:final\s+answer|answer)\s*(?:is|:)\s*:?/gi

export interface ExtractOptions {
  /**
   * Only a final answer counts (`<answer>` or `\boxed`): no "the answer is" / last-number fallbacks, which
   * the protocol applies and which can pick a number out of a truncated chain of thought (default false).
   */
  requireFinal?: boolean
}

export function extractAnswer(text: string, opts: ExtractOptions = {}): Extraction {
  const tagged = answerTag(text)
  if (tagged) return { answer: clean(tagged), source: 'answer-tag' }

  const boxed = lastBoxed(text)
  if (boxed !== null) return { answer: clean(boxed), source: 'boxed' }
  if (opts.requireFinal) return { answer: '', source: 'none' }

  const said = answerIs(text)
  if (said) return { answer: clean(said), source: 'answer-is' }

  const num = lastNumber(text)
  if (num !== null) return { answer: num, source: 'last-number' }
  return { answer: '', source: 'none' }
}

/** Content of the last complete `<answer>` block after the last `</think>`, its `\boxed` unwrapped. */
function answerTag(text: string): string | null {
  const cut = text.lastIndexOf('</think>')
  if (cut < 0) return null
  const tail = text.slice(cut + '</think>'.length)
  let content: string | null = null
  for (const m of tail.matchAll(ANSWER_TAG)) content = m[1]
  if (content === null) return null
  const inner = lastBoxed(content) ?? content
  return inner.trim() ? inner : null
}

/** What follows the last "answer is" / "final answer:" up to the end of its sentence or line. */
function answerIs(text: string): string | null {
  let rest: string | null = null
  for (const m of text.matchAll(ANSWER_IS)) rest = text.slice(m.index + m[0].length)
  if (rest === null) return null
  let line = rest.split('\n')[0]
  // a sentence ends at a period followed by a space (`3.5` is kept whole), or at ? or !
  const stop = /\.\s|[?!](?:\s|$)/.exec(line)
  if (stop) line = line.slice(0, stop.index)
  line = line.replace(/\*\*/g, '').trim()
  return line || null
}

/** Last number in the text; thousands separators (`1,234`) are joined first, decimals kept. */
export function lastNumber(text: string): string | null {
  let joined = text
  for (let i = 0; i < 4 && /\d,\d{3}(?!\d)/.test(joined); i++) joined = joined.replace(/(\d),(\d{3})(?!\d)/g, '$1$2')
  const all = joined.match(/-?\d*\.?\d+/g)
  return all ? all[all.length - 1] : null
}

/** Strip math delimiters and sentence punctuation around an extracted answer. */
function clean(s: string): string {
  let a = s.replace(/\n\s*/g, ' ').trim()
  for (let changed = true; changed; ) {
    const before = a
    a = a
      .replace(/^\$+|\$+$/g, '')
      .replace(/^\\\(|\\\)$/g, '')
      .replace(/^\\\[|\\\]$/g, '')
      .replace(/^:/, '')
      .replace(/[.\/]$/, '')
      .trim()
    changed = a !== before
  }
  return a
}
