/**
 * Answer grading with the semantics of math-evaluation-harness `math_equal` (the grader VTC-R1 used):
 * normalized strings → multiple choice → numbers (relative 1e-4) → structures element-wise (tuples,
 * intervals, sets, unions, matrices, ±) → equations → symbolic equality via the CAS.
 *
 * Deliberate departures, each one a case where the harness accepts a wrong answer:
 * - percentage variants (gold/100, gold×100) only when either side mentions a percent;
 * - two integer literals must be equal exactly (the 1e-4 tolerance would accept 32349 for 32348);
 * - interval brackets must match: `(3,4]` is not `[3,4]`;
 * - different unknowns never match (`3R^2` vs `3r^2`); units are only stripped after a number.
 */
import { casEqual, type CasMethod } from './cas.js'
import { extractAnswer, type Extraction } from '../answer.js'
import { splitTopLevel, wrapsWhole } from '../latex.js'
import { normalizeAnswer } from './normalize.js'

export type AnswerKind = 'math' | 'choice'

export interface GradeOptions {
  /**
   * 'choice': the gold is a letter and the prediction is read as a letter; 'math': compared as math (default:
   * 'choice' when the gold is a letter A–E, alone or in parentheses, else 'math').
   */
  kind?: AnswerKind
  /**
   * Option texts by letter (GPQA), so a prediction that repeats an option's text counts as that letter (default:
   * none, only letters count).
   */
  choices?: Record<string, string>
  /** Time budget of one comparison in ms (CAS steps stop at the first step past it) (default 1000). */
  timeBudgetMs?: number
  /** gradeResponse only: no "answer is" / last-number fallbacks (see ExtractOptions) (default false). */
  requireFinal?: boolean
}

export type GradeMethod =
  | 'empty'
  | 'string'
  | 'choice'
  | 'text'
  | 'numeric'
  | 'structure'
  | 'equation'
  | CasMethod

export interface Verdict {
  correct: boolean
  /** The rule that decided. */
  method: GradeMethod
  /** Normalized prediction and gold, as compared. */
  prediction: string
  gold: string
}

export interface ResponseVerdict extends Verdict {
  extraction: Extraction
}

const DEFAULT_BUDGET_MS = 1000
const REL_TOL = 1e-4
const CHOICE = /^\(?([A-E])\)?$/
const INTEGER = /^[-+]?\d+$/

/** Grade an already-extracted answer against the gold answer. */
export function gradeAnswer(prediction: string, gold: string, opts: GradeOptions = {}): Verdict {
  const p = normalizeAnswer(prediction)
  const g = normalizeAnswer(gold)
  const deadline = performance.now() + (opts.timeBudgetMs ?? DEFAULT_BUDGET_MS)
  const percent = /%|percent/i.test(prediction) || /%|percent/i.test(gold)
  const verdict = (correct: boolean, method: GradeMethod): Verdict => ({ correct, method, prediction: p, gold: g })

  if (!p) return verdict(false, 'empty')
  const kind = opts.kind ?? (CHOICE.test(g) ? 'choice' : 'math')
  if (kind === 'choice') {
    const letter = choiceLetter(prediction, opts.choices)
    const goldLetter = choiceLetter(gold) ?? g
    return verdict(letter === goldLetter, 'choice')
  }
  const r = equal(p, g, { percent, deadline })
  return verdict(r.equal, r.method)
}

/** Extract the final answer from a full model output, then grade it. */
export function gradeResponse(output: string, gold: string, opts: GradeOptions = {}): ResponseVerdict {
  const extraction = extractAnswer(output, { requireFinal: opts.requireFinal })
  return { ...gradeAnswer(extraction.answer, gold, opts), extraction }
}

export function isEquivalent(prediction: string, gold: string, opts?: GradeOptions): boolean {
  return gradeAnswer(prediction, gold, opts).correct
}

/**
 * The letter a multiple-choice prediction names: `B`, `(B)`, `B.`, `B) text`, `\text{(B)}`,
 * "the answer is B", "Option B", or the text of one option when `choices` is given.
 */
export function choiceLetter(prediction: string, choices?: Record<string, string>): string | null {
  const s = normalizeAnswer(prediction).replace(/\\text\{|\}/g, '')
  const patterns = [
    /^\(?([A-E])\)?(?:[.:)]|$)/,
    /^(?:option|choice)\(?([A-E])\)?\b/i,
    /(?:answer|choice|option)(?:is|:)?\(?([A-E])\)?(?:[.:)]|$)/i,
  ]
  for (const re of patterns) {
    const m = re.exec(s)
    if (m) return m[1].toUpperCase()
  }
  if (choices) {
    for (const [letter, text] of Object.entries(choices)) {
      if (normalizeAnswer(text).toLowerCase() === s.toLowerCase()) return letter
    }
  }
  return null
}

interface Ctx {
  percent: boolean
  deadline: number
}
interface Outcome {
  equal: boolean
  method: GradeMethod
}

/** Compare two normalized answers. */
function equal(p: string, g: string, ctx: Ctx): Outcome {
  if (p === g) return { equal: true, method: 'string' }

  // plain words ("Evelyn", "even", "No"): a case-insensitive match; from three letters on, nothing else
  // (two letters may be a product of unknowns, "ab" vs "ba", and go on to the CAS)
  const word = /^[a-zA-Z][a-zA-Z ]*[a-zA-Z]$/
  if (word.test(p) && word.test(g)) {
    if (p.toLowerCase() === g.toLowerCase()) return { equal: true, method: 'text' }
    if (p.length > 2 && g.length > 2) return { equal: false, method: 'text' }
  }

  const np = parseNumber(p)
  const ng = parseNumber(g)
  if (np !== null && ng !== null) {
    // two integers are equal or not: 32349 is not 32348, although within 1e-4
    if (INTEGER.test(p) && INTEGER.test(g) && !ctx.percent) return { equal: np === ng, method: 'numeric' }
    const targets = ctx.percent ? [ng, ng / 100, ng * 100] : [ng]
    return { equal: targets.some((t) => numericEqual(np, t)), method: 'numeric' }
  }

  const structural = compareStructures(p, g, ctx)
  if (structural) return structural

  const eq = compareEquations(p, g, ctx)
  if (eq) return eq

  return casEqual(p, g, ctx.deadline)
}

/** Python `math.isclose(a, b, rel_tol=1e-4)`, the harness's numeric test. */
export function numericEqual(a: number, b: number, relTol = REL_TOL): boolean {
  return Math.abs(a - b) <= relTol * Math.max(Math.abs(a), Math.abs(b))
}

/** A plain number literal: `-12`, `3.5`, `1e-3`, `\frac{3}{4}`, `-\frac{3}{4}`, `1\frac{4}{5}`. */
export function parseNumber(s: string): number | null {
  if (/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(s)) return Number(s)
  const frac = /^([-+]?)(?:(\d+))?\\frac\{(\d+)\}\{(\d+)\}$/.exec(s)
  if (frac) {
    const [, sign, whole, num, den] = frac
    if (Number(den) === 0) return null
    const v = (whole ? Number(whole) : 0) + Number(num) / Number(den)
    return sign === '-' ? -v : v
  }
  return null
}

type Bracketed = { open: string; close: string; items: string[] }

/** Tuples/intervals `(a,b]`, sets `{a,b}`, bare lists `a, b`, unions, matrices, and ± forms. */
function compareStructures(p: string, g: string, ctx: Ctx): Outcome | null {
  const mp = matrix(p)
  const mg = matrix(g)
  if (mp || mg) {
    const a = mp ?? vectorOf(p)
    const b = mg ?? vectorOf(g)
    if (!a || !b) return { equal: false, method: 'structure' }
    return { equal: sameMatrix(a, b, ctx), method: 'structure' }
  }

  const up = splitTopLevel(p, '\\cup')
  const ug = splitTopLevel(g, '\\cup')
  if (up.length > 1 || ug.length > 1) {
    return { equal: sameUnordered(up, ug, ctx), method: 'structure' }
  }

  const bp = bracketed(p)
  const bg = bracketed(g)
  if (bp || bg) {
    // a bare list answers a tuple ("6,31,-1" for "(6,31,-1)") or a set, but an interval needs its brackets
    const other = (bp ?? bg)!
    const a = bp ?? bareAs(p, other.open, other.close)
    const b = bg ?? bareAs(g, other.open, other.close)
    if (!a || !b || a.open !== b.open || a.close !== b.close) return { equal: false, method: 'structure' }
    const setLike = a.open === '{'
    const same = setLike ? sameUnordered(a.items, b.items, ctx) : sameOrdered(a.items, b.items, ctx)
    return { equal: same, method: 'structure' }
  }

  const lp = expandList(p)
  const lg = expandList(g)
  if (lp.length > 1 || lg.length > 1) {
    // "Enter all solutions separated by commas": order does not matter
    return { equal: sameUnordered(lp, lg, ctx), method: 'structure' }
  }
  return null
}

function bracketed(s: string): Bracketed | null {
  if (!wrapsWhole(s)) return null
  const open = s[0]
  const close = s[s.length - 1]
  if (!'([{'.includes(open)) return null
  const items = splitTopLevel(s.slice(1, -1), ',')
  // a single parenthesized expression "(a+5)" is not a tuple; a set "{5}" still is a set
  if (items.length < 2 && open !== '{') return null
  return { open, close, items }
}

function bareAs(s: string, open: string, close: string): Bracketed | null {
  if ((open !== '(' || close !== ')') && open !== '{') return null
  const items = splitTopLevel(s, ',')
  return items.length > 1 ? { open, close, items } : null
}

/** Top-level comma list with each `a \pm b` expanded to `a+b`, `a-b`. */
function expandList(s: string): string[] {
  return splitTopLevel(s, ',').flatMap(expandPm)
}

function expandPm(s: string): string[] {
  const parts = splitTopLevel(s, '\\pm')
  if (parts.length !== 2 || !parts[1]) return [s]
  const [a, b] = parts
  return a ? [`${a}+${b}`, `${a}-(${b})`] : [b, `-(${b})`]
}

/** Elements of a structure are answers in their own right: normalize, then compare. */
function same(x: string, y: string, ctx: Ctx): boolean {
  return equal(normalizeAnswer(x), normalizeAnswer(y), ctx).equal
}

function sameOrdered(a: string[], b: string[], ctx: Ctx): boolean {
  return a.length === b.length && a.every((x, i) => same(x, b[i], ctx))
}

/** Multiset equality under `equal`: every element of a matched to a distinct element of b. */
function sameUnordered(a: string[], b: string[], ctx: Ctx): boolean {
  const xs = a.flatMap(expandPm)
  const ys = b.flatMap(expandPm)
  if (xs.length !== ys.length) return false
  const used = new Array<boolean>(ys.length).fill(false)
  return xs.every((x) => {
    const j = ys.findIndex((y, k) => !used[k] && same(x, y, ctx))
    if (j < 0) return false
    used[j] = true
    return true
  })
}

function matrix(s: string): string[][] | null {
  const m = /^\\begin\{pmatrix\}([\s\S]*)\\end\{pmatrix\}$/.exec(s)
  if (!m) return null
  return m[1]
    .split('\\\\')
    .map((row) => row.trim())
    .filter(Boolean)
    .map((row) => row.split('&').map((c) => c.trim()))
}

/** An n-tuple `(a,b,c)` read as a column vector, so it can answer a pmatrix vector. */
function vectorOf(s: string): string[][] | null {
  const b = bracketed(s)
  return b && b.open === '(' && b.close === ')' ? b.items.map((x) => [x]) : null
}

function sameMatrix(a: string[][], b: string[][], ctx: Ctx): boolean {
  const flat = (m: string[][]) => (m.every((r) => r.length === 1) ? [m.map((r) => r[0])] : m)
  // a row vector and a column vector with the same entries both answer "the vector"
  const [x, y] = a.length === 1 || b.length === 1 ? [flat(a), flat(b)] : [a, b]
  return x.length === y.length && x.every((row, i) => sameOrdered(row, y[i], ctx))
}

/**
 * `y=2x+1` vs `2x+1=y` (same relation up to sign), `x=3` vs `3` (a variable's value against a bare value).
 * As in the harness, the left side of an assignment is at most two characters.
 */
function compareEquations(p: string, g: string, ctx: Ctx): Outcome | null {
  const ep = splitTopLevel(p, '=')
  const eg = splitTopLevel(g, '=')
  if (ep.length === 2 && eg.length === 2) {
    const dp = `${ep[0]}-(${ep[1]})`
    const dg = `${eg[0]}-(${eg[1]})`
    const same = equal(dp, dg, ctx).equal || equal(`-(${dp})`, dg, ctx).equal
    return { equal: same, method: 'equation' }
  }
  if (ep.length === 2 && eg.length === 1 && ep[0].length <= 2) {
    return { equal: equal(ep[1], g, ctx).equal, method: 'equation' }
  }
  if (eg.length === 2 && ep.length === 1 && eg[0].length <= 2) {
    return { equal: equal(p, eg[1], ctx).equal, method: 'equation' }
  }
  if (ep.length > 1 || eg.length > 1) return { equal: false, method: 'equation' }
  return null
}
