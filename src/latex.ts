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

// `\boxedfoo` is another command, but `\boxed5` boxes `5`: a TeX command name ends at the first non-letter
const BOX_COMMANDS = /\\(?:boxed|fbox)(?![A-Za-z])/g
// a brace-less argument runs to a space, the `$` closing inline math, or a `\)` / `\]` closing the math
const BARE_ARGUMENT = /^(?:\\[^\s)\]]|[^\s$\\])+/

/**
 * The box of the command at `at` (`length` characters long): 'unclosed' when its `{` never closes, null when
 * no argument follows.
 */
function boxAt(s: string, at: number, length: number): BoxedSpan | 'unclosed' | null {
  let i = at + length
  // TeX skips spaces after a command name: `\boxed {x}` is `\boxed{x}`
  while (s[i] === ' ' || s[i] === '\t') i++
  if (s[i] === '{') {
    const close = matchBrace(s, i)
    return close < 0 ? 'unclosed' : { content: s.slice(i + 1, close), start: at, end: close + 1 }
  }
  const bare = BARE_ARGUMENT.exec(s.slice(i))?.[0] ?? ''
  // `\boxed 5.` at the end of a sentence: the period is punctuation, not part of the answer
  const content = bare.replace(/[.,;]+$/, '')
  return content ? { content, start: at, end: i + bare.length } : null
}

/**
 * Every `\boxed{…}` (nested braces; escaped `\{` `\}` do not count), `\boxed 5` / `\boxed5` (brace-less: the
 * next token) and `\fbox{…}`, in order of their commands. Unclosed boxes (`\boxed{` in a truncated output) and
 * commands with no argument are left out.
 */
export function boxedSpans(s: string): BoxedSpan[] {
  const spans: BoxedSpan[] = []
  for (const m of s.matchAll(BOX_COMMANDS)) {
    const b = boxAt(s, m.index, m[0].length)
    if (b && b !== 'unclosed') spans.push(b)
  }
  return spans
}

/**
 * The final answer of a text: the content of its last `\boxed{…}` / `\fbox{…}` (as MATH's
 * `last_boxed_only_string`), verbatim, or null.
 * - Boxes are ordered by where their command starts, so in `\boxed{\boxed{5}}` the inner `5` is last;
 *   `\fbox` counts like `\boxed` (MATH only looks at `\fbox` when there is no `\boxed`; the later one is the answer).
 * - An empty box (`\boxed{}`, `\boxed{ }`) is skipped: it is the prompt's "put your answer within \boxed{}"
 *   echoed in the reasoning, never an answer (math_verify's box pattern also needs content).
 * - An unclosed last box (`\boxed{12` in an output cut off mid-answer) gives null, as in MATH: the answer was
 *   lost, and an earlier box is one the text went past.
 */
export function lastBoxed(s: string): string | null {
  const commands = [...s.matchAll(BOX_COMMANDS)]
  for (let k = commands.length - 1; k >= 0; k--) {
    const b = boxAt(s, commands[k].index, commands[k][0].length)
    if (b === 'unclosed') return null
    if (b?.content.trim()) return b.content
  }
  return null
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
