/**
 * Splits a reasoning trace into segments of about N tokens (VTC-R1 trains on ~4K-token segments), at the most
 * natural boundary that fits: a blank line (paragraph), then a line break or sentence end, then a space, then any
 * token boundary. No boundary is taken inside a `$…$`, `$$…$$`, `\(…\)`, `\[…\]` or `\begin{…}…\end{…}` formula
 * unless the formula alone exceeds the budget.
 *
 * The text is tokenized once; segment token counts are the tokens of the whole trace that end inside each
 * segment, so they add up to the trace's count exactly (tokenizing a segment alone can differ by a token or two
 * at its edges, where BPE merges across the cut).
 */
import { VtcError } from './errors.js'
import { qwen3Tokenizer } from './text-tokens.js'

/** Turns a text into the UTF-16 offsets where its tokens end (ascending; the last is `text.length`). */
export interface SegmentTokenizer {
  tokenEnds(text: string): Uint32Array
}

export interface SegmentOptions {
  /** Token budget of one segment (default 4096). */
  maxTokens?: number
  /**
   * A boundary of a higher kind (paragraph over sentence over space) is taken only if the segment it closes
   * has at least this fraction of the budget (default 0.5), so one short paragraph before a long one does not
   * become a segment of its own.
   */
  minFill?: number
  /** What counts the tokens: each token's end offset in the text (default: the Qwen3 tokenizer). */
  tokenizer?: SegmentTokenizer
}

export interface Segment {
  /** `text.slice(start, end)`; segments are contiguous and join back to the input. */
  text: string
  start: number
  end: number
  tokens: number
  /** The kind of boundary that ends this segment (`end` for the last one). */
  boundary: BoundaryKind
}

export type BoundaryKind = 'paragraph' | 'sentence' | 'space' | 'token' | 'hard' | 'end'

export const DEFAULT_SEGMENT_TOKENS = 4096

/**
 * Segments `text`. The input is NFC-normalized first (the Qwen tokenizer normalizes to NFC, and offsets must
 * refer to the text the tokens came from), so the segments join to `text.normalize('NFC')`.
 */
export function segmentText(text: string, options: SegmentOptions = {}): Segment[] {
  const maxTokens = options.maxTokens ?? DEFAULT_SEGMENT_TOKENS
  if (!Number.isInteger(maxTokens) || maxTokens < 1) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `maxTokens must be a positive integer, got ${maxTokens}`)
  }
  const minFill = options.minFill ?? 0.5
  if (typeof text !== 'string') throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `text must be a string, got ${typeof text}`)
  if (!text.isWellFormed()) throw new VtcError('ERR_VTC_INVALID_TEXT', 'text is not valid UTF-16 (lone surrogate)')
  const src = text.normalize('NFC')
  if (src.length === 0) return []
  const ends = (options.tokenizer ?? qwen3Segmenter).tokenEnds(src)
  return segmentWithEnds(src, ends, maxTokens, minFill)
}

/** Segments a text whose token end offsets are already known (for callers that tokenized it anyway). */
export function segmentWithEnds(text: string, ends: Uint32Array, maxTokens: number, minFill = 0.5): Segment[] {
  const total = ends.length
  const math = mathSpans(text)
  const breaks = boundaryCandidates(text, math)
  const segments: Segment[] = []
  let start = 0
  let startTok = 0
  while (total - startTok > maxTokens) {
    // the furthest position this segment may reach: the end of its maxTokens-th token
    const limit = ends[startTok + maxTokens - 1]
    const minTokens = Math.max(1, Math.floor(maxTokens * minFill))
    const { cut, kind } = chooseCut(text, ends, breaks, math, start, startTok, limit, minTokens)
    const cutTok = tokensUpTo(ends, cut)
    segments.push({ text: text.slice(start, cut), start, end: cut, tokens: cutTok - startTok, boundary: kind })
    start = cut
    startTok = cutTok
  }
  if (start < text.length) {
    segments.push({ text: text.slice(start), start, end: text.length, tokens: total - startTok, boundary: 'end' })
  }
  return segments
}

interface Breaks {
  paragraph: number[]
  sentence: number[]
  space: number[]
}

function chooseCut(
  text: string,
  ends: Uint32Array,
  breaks: Breaks,
  math: Span[],
  start: number,
  startTok: number,
  limit: number,
  minTokens: number,
): { cut: number; kind: BoundaryKind } {
  const filled = (p: number) => tokensUpTo(ends, p) - startTok >= minTokens
  const kinds = ['paragraph', 'sentence', 'space'] as const
  // first pass: the best kind that also fills the segment well; second pass: the best kind at all
  for (const needFill of [true, false]) {
    for (const kind of kinds) {
      const p = lastIn(breaks[kind], start, limit)
      if (p !== undefined && (!needFill || filled(p))) return { cut: p, kind }
    }
    const t = lastTokenEndOutsideMath(ends, math, start, startTok, limit)
    if (t !== undefined && (!needFill || filled(t))) return { cut: t, kind: 'token' }
  }
  // a formula longer than the budget: cut it at the token limit
  return { cut: limit, kind: 'hard' }
}

/** Number of tokens that end at or before `pos`. */
function tokensUpTo(ends: Uint32Array, pos: number): number {
  let lo = 0
  let hi = ends.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (ends[mid] <= pos) lo = mid + 1
    else hi = mid
  }
  return lo
}

/** The largest value in sorted `xs` with start < x <= limit. */
function lastIn(xs: number[], start: number, limit: number): number | undefined {
  let lo = 0
  let hi = xs.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (xs[mid] <= limit) lo = mid + 1
    else hi = mid
  }
  const i = lo - 1
  return i >= 0 && xs[i] > start ? xs[i] : undefined
}

function lastTokenEndOutsideMath(ends: Uint32Array, math: Span[], start: number, startTok: number, limit: number): number | undefined {
  for (let i = tokensUpTo(ends, limit) - 1; i >= startTok && ends[i] > start; i--) {
    if (!insideSpan(math, ends[i])) return ends[i]
  }
  return undefined
}

// ---------------------------------------------------------------------------------------------------------
// Formulas

export type Span = [start: number, end: number]

const ENV = /\\begin\{([A-Za-z*]+)\}/y

/**
 * The formula spans of `text`, sorted and disjoint. An opener without a closer is not a formula (`$` only
 * within its paragraph, since TeX inline math cannot cross a blank line); `\$` is a literal dollar.
 */
export function mathSpans(text: string): Span[] {
  const spans: Span[] = []
  const n = text.length
  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === 0x5c /* \ */) {
      const d = text[i + 1]
      let close = -1
      if (d === '(' || d === '[') {
        close = findClose(text, i + 2, d === '(' ? '\\)' : '\\]', 20000)
        if (close >= 0) close += 2
      } else if (d === 'b') {
        ENV.lastIndex = i
        const m = ENV.exec(text)
        if (m) {
          const endTag = `\\end{${m[1]}}`
          close = findClose(text, i + m[0].length, endTag, 20000)
          if (close >= 0) close += endTag.length
        }
      }
      if (close >= 0) {
        spans.push([i, close])
        i = close
      } else {
        i += 2 // skip the escaped character (`\$` is not a delimiter)
      }
    } else if (c === 0x24 /* $ */) {
      const display = text[i + 1] === '$'
      const open = display ? 2 : 1
      const paragraphEnd = nextBlankLine(text, i + open)
      let close = findClose(text, i + open, display ? '$$' : '$', paragraphEnd - i - open)
      if (close >= 0) {
        close += open
        spans.push([i, close])
        i = close
      } else {
        i += open
      }
    } else {
      i++
    }
  }
  return spans
}

/** Index of the first unescaped `closer` at or after `from`, looking at most `window` characters ahead. */
function findClose(text: string, from: number, closer: string, window: number): number {
  const stop = Math.min(text.length, from + window)
  let j = text.indexOf(closer, from)
  while (j >= 0 && j + closer.length <= stop) {
    if (closer[0] !== '$' || text[j - 1] !== '\\') return j
    j = text.indexOf(closer, j + 1)
  }
  return -1
}

function nextBlankLine(text: string, from: number): number {
  BLANK_LINE.lastIndex = from
  const m = BLANK_LINE.exec(text)
  return m ? m.index : text.length
}

const BLANK_LINE = /\n[ \t]*\n/g

function insideSpan(spans: Span[], pos: number): boolean {
  let lo = 0
  let hi = spans.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (spans[mid][0] < pos) lo = mid + 1
    else hi = mid
  }
  const s = spans[lo - 1]
  return s !== undefined && pos < s[1]
}

// ---------------------------------------------------------------------------------------------------------
// Boundaries

// a run of blank lines (and the indentation after it): the cut goes after the run, so the next segment starts with text
const PARAGRAPH = /\n[ \t]*\n\s*/g
// a single line break
const LINE = /\n(?![ \t]*\n)[ \t]*/g
// a sentence end: punctuation (with closing quotes/brackets) followed by whitespace; the cut goes before the space
const SENTENCE = /[.!?。！？…][)"'”’\]]*(?=\s)/g
const SPACE = /\s+/g
const ABBREVIATION = /(?:^|[^A-Za-z])(?:e\.g|i\.e|etc|vs|cf|resp|approx|Mr|Mrs|Ms|Dr|Prof|Fig|Eq|Eqs|No|St|Thm|Lem|Def|Prop|Sec|Ch)\.$/

/** Candidate cut positions of each kind, sorted, none inside a formula. */
function boundaryCandidates(text: string, math: Span[]): Breaks {
  const paragraph: number[] = []
  for (const m of text.matchAll(PARAGRAPH)) {
    const p = m.index + m[0].length
    if (p < text.length && !insideSpan(math, m.index) && !insideSpan(math, p)) paragraph.push(p)
  }
  const sentence: number[] = []
  for (const m of text.matchAll(LINE)) {
    const p = m.index + m[0].length
    if (p < text.length && !insideSpan(math, p)) sentence.push(p)
  }
  for (const m of text.matchAll(SENTENCE)) {
    const p = m.index + m[0].length
    if (insideSpan(math, p) || isAbbreviation(text, m.index + 1) || isEnumerator(text, m.index)) continue
    sentence.push(p)
  }
  sentence.sort((a, b) => a - b)
  const space: number[] = []
  for (const m of text.matchAll(SPACE)) {
    // cut before the space: BPE attaches a space to the word after it
    if (m.index > 0 && !insideSpan(math, m.index)) space.push(m.index)
  }
  return { paragraph, sentence, space }
}

function isAbbreviation(text: string, dotEnd: number): boolean {
  if (text[dotEnd - 1] !== '.') return false
  return ABBREVIATION.test(text.slice(Math.max(0, dotEnd - 8), dotEnd))
}

/** `1.` or `(a).` at the start of a line: a list marker, not a sentence end. */
function isEnumerator(text: string, dot: number): boolean {
  if (text[dot] !== '.') return false
  let i = dot - 1
  while (i >= 0 && /[0-9A-Za-z()]/.test(text[i]) && dot - i <= 4) i--
  return i < dot - 1 && (i < 0 || text[i] === '\n') && /^[0-9]+$|^[A-Za-z]$|^\(?[0-9a-z]+\)$/.test(text.slice(i + 1, dot))
}

// ---------------------------------------------------------------------------------------------------------
// Qwen3 token offsets

/** Token end offsets with the real Qwen3 tokenizer (the Rust `tokenizers` crate, through the native module). */
export const qwen3Segmenter: SegmentTokenizer = {
  tokenEnds(text: string): Uint32Array {
    return qwen3Tokenizer().tokenEnds(text)
  },
}
