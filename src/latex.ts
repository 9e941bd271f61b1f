/** Small LaTeX scanning helpers shared by extraction, normalization and grading. */

/** Index of the `}` closing the `{` at `open`, or -1 when unbalanced. Escaped braces (`\{`) do not count. */
export function matchBrace(s: string, open: number): number {
  let depth = 0
  for (let i = open; i < s.length; i++) {
    const c = s[i]
    if (c === '\\') {
      i++ // skip the escaped character: `\{` and `\}` are literal set braces
      continue
    }
    if (c === '{') depth++
    else if (c === '}' && --depth === 0) return i
  }
  return -1
}

/** One `\boxed…` / `\fbox…` occurrence: its content and where it sits in the text. */
export interface BoxedSpan {
  content: string
  start: number
  end: number
}

const BOX_COMMANDS = /\\(?:boxed|fbox)(?![A-Za-z])/g

/**
 * Every `\boxed{…}` (nested braces), `\boxed 5` (brace-less: the next token up to whitespace or `$`)
 * and `\fbox{…}` in order. An unclosed `\boxed{` (a truncated output) yields nothing.
 */
export function boxedSpans(s: string): BoxedSpan[] {
  const spans: BoxedSpan[] = []
  for (const m of s.matchAll(BOX_COMMANDS)) {
    let i = m.index + m[0].length
    while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++
    if (s[i] === '{') {
      const close = matchBrace(s, i)
      if (close < 0) continue
      spans.push({ content: s.slice(i + 1, close), start: m.index, end: close + 1 })
    } else {
      const tok = /^[^\s$]+/.exec(s.slice(i))
      if (!tok) continue
      // `\boxed 5.` at the end of a sentence: the period is punctuation, not part of the answer
      const content = tok[0].replace(/[.,;]+$/, '')
      if (content) spans.push({ content, start: m.index, end: i + tok[0].length })
    }
  }
  return spans
}

/** Content of the last non-empty box, or null. */
export function lastBoxed(s: string): string | null {
  const spans = boxedSpans(s).filter((b) => b.content.trim() !== '')
  return spans.length ? spans[spans.length - 1].content : null
}

/** Replace every `\boxed{X}` / `\fbox{X}` in `s` by `X` (innermost content kept verbatim). */
export function unwrapBoxes(s: string): string {
  let out = s
  // a box may contain a box: iterate until stable (bounded by the number of boxes)
  for (let guard = 0; guard < 16; guard++) {
    const spans = boxedSpans(out)
    if (!spans.length) break
    const b = spans[0]
    out = out.slice(0, b.start) + b.content + out.slice(b.end)
  }
  return out
}

/**
 * Split on `sep` characters that sit at depth 0 of (), [], {} (and \left…\right pairs, which are brackets
 * too). Interval brackets may be mismatched (`(3,4]`), so depth counts any opener against any closer.
 */
export function splitTopLevel(s: string, sep: string): string[] {
  const parts: string[] = []
  let depth = 0
  let last = 0
  // a command separator (`\\pm`) must not match the start of a longer command (`\\pmod`)
  const isCommand = /^\\[a-zA-Z]+$/.test(sep)
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (depth === 0 && s.startsWith(sep, i) && !(isCommand && /[a-zA-Z]/.test(s[i + sep.length] ?? ''))) {
      parts.push(s.slice(last, i))
      last = i + sep.length
      i += sep.length - 1
      continue
    }
    if (c === '\\') {
      // `\{` and `\}` are set braces: they nest like any bracket
      if (s[i + 1] === '{') depth++
      else if (s[i + 1] === '}') depth--
      i++
      continue
    }
    if (c === '(' || c === '[' || c === '{') depth++
    else if (c === ')' || c === ']' || c === '}') depth--
  }
  parts.push(s.slice(last))
  return parts
}

/** True when the opener at 0 is closed exactly at the last character (so `(1)(2)` is not one group). */
export function wrapsWhole(s: string): boolean {
  if (s.length < 2) return false
  let depth = 0
  for (let i = 0; i < s.length; i++) {
    const c = s[i]
    if (c === '\\') {
      i++
      continue
    }
    if (c === '(' || c === '[' || c === '{') depth++
    else if (c === ')' || c === ']' || c === '}') {
      depth--
      if (depth === 0 && i < s.length - 1) return false
    }
  }
  return depth === 0
}
