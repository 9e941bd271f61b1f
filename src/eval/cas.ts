/**
 * Symbolic equality through the Compute Engine CAS (@cortex-js/compute-engine), bounded in time.
 *
 * Time bound: CE calls are synchronous and cannot be interrupted, so each one is kept small instead:
 * inputs over MAX_CAS_CHARS, with integer exponents over MAX_EXPONENT, factorials over MAX_FACTORIAL, or
 * with sums/integrals/limits are refused before parsing; `simplify()` only runs on inputs up to
 * MAX_SIMPLIFY_CHARS with exponents up to MAX_SIMPLIFY_EXPONENT; evaluation at points uses compiled
 * JavaScript (no CE optimizer); and the caller's deadline is checked between every step (parse, exact check,
 * simplify, each evaluation point), so a comparison stops at the first step boundary past its budget
 * (verdict false, method 'cas-timeout'). Measured: the slowest of the 500 MATH500 traces takes ~30 ms
 * (the first CAS call, which warms the engine); the pathological inputs of grader.spec.ts stay under 1 s.
 */
import { ComputeEngine } from '@cortex-js/compute-engine'

// the package's nested .d.ts re-exports do not resolve under NodeNext: derive the type from parse()
type BoxedExpression = ReturnType<ComputeEngine['parse']>

export const MAX_CAS_CHARS = 240
export const MAX_SIMPLIFY_CHARS = 120
export const MAX_EXPONENT = 1000
/** simplify() expands powers: `(x+y+z)^{40}` takes seconds, so it only sees small exponents. */
export const MAX_SIMPLIFY_EXPONENT = 8
export const MAX_FACTORIAL = 170
const POINTS = 6
const MIN_VALID_POINTS = 3
const REL_TOL = 1e-4
/** Floating noise when the true value is 0 (`\sin\pi` evaluates to 1.2e-16). */
const ABS_TOL = 1e-9

export type CasMethod =
  | 'cas-same'
  | 'cas-numeric'
  | 'cas-simplify'
  | 'cas-points'
  | 'cas-different'
  | 'cas-refused'
  | 'cas-unparsed'
  | 'cas-timeout'

export interface CasOutcome {
  equal: boolean
  method: CasMethod
}

let engine: ComputeEngine | undefined
function ce(): ComputeEngine {
  engine ??= new ComputeEngine()
  return engine
}

/** Why an input is not given to the CAS, or null when it may be. */
export function casRefusal(latex: string): string | null {
  if (latex.length > MAX_CAS_CHARS) return 'too long'
  if (/\\(?:int|sum|prod|lim|begin|cup|cap|dots|cdots|ldots)(?![a-zA-Z])|[=<>,;]|\\[lg]e(?![a-zA-Z])/.test(latex)) {
    return 'not a single expression'
  }
  for (const m of latex.matchAll(/\^\s*\{?\s*-?(\d+)/g)) if (Number(m[1]) > MAX_EXPONENT) return 'exponent too large'
  for (const m of latex.matchAll(/(\d+)\s*!/g)) if (Number(m[1]) > MAX_FACTORIAL) return 'factorial too large'
  return null
}

/** Are two single LaTeX expressions mathematically equal? `deadline` is a `performance.now()` time. */
export function casEqual(a: string, b: string, deadline: number): CasOutcome {
  if (casRefusal(a) || casRefusal(b)) return { equal: false, method: 'cas-refused' }
  const ea = parse(a)
  const eb = parse(b)
  if (!ea || !eb) return { equal: false, method: 'cas-unparsed' }
  if (performance.now() > deadline) return { equal: false, method: 'cas-timeout' }
  if (ea.isSame(eb)) return { equal: true, method: 'cas-same' }

  // different unknowns (2x vs 2y, 3R^2 vs 3r^2) are different answers
  const va = [...ea.freeVariables].sort()
  const vb = [...eb.freeVariables].sort()
  if (va.join() !== vb.join()) return { equal: false, method: 'cas-different' }

  if (va.length === 0) {
    const x = value(ea)
    const y = value(eb)
    // no finite value (a typo'd expression, 2^{2^{30}}): nothing to compare numerically
    return { equal: !!x && !!y && close(x, y), method: 'cas-numeric' }
  }

  if (a.length + b.length <= MAX_SIMPLIFY_CHARS && maxExponent(a + b) <= MAX_SIMPLIFY_EXPONENT) {
    const diff = ce().box(['Subtract', ea, eb]).simplify()
    if (diff.is(0)) return { equal: true, method: 'cas-simplify' }
    if (performance.now() > deadline) return { equal: false, method: 'cas-timeout' }
  }

  // random points: deterministic, away from 0, 1 and integers where special cases hide
  const fa = evaluator(ea)
  const fb = evaluator(eb)
  const rand = mulberry32(0x5eed)
  let valid = 0
  for (let k = 0; k < POINTS * 2 && valid < POINTS; k++) {
    if (performance.now() > deadline) return { equal: false, method: 'cas-timeout' }
    const point: Record<string, number> = {}
    for (const v of va) point[v] = 0.37 + 2.5 * rand()
    const x = fa(point)
    const y = fb(point)
    if (!x || !y) continue
    if (!close(x, y)) return { equal: false, method: 'cas-points' }
    valid++
  }
  return { equal: valid >= MIN_VALID_POINTS, method: 'cas-points' }
}

function parse(latex: string): BoxedExpression | null {
  try {
    const e = ce().parse(latex)
    if (!e.isValid) return null
    // structures (tuples, sets, relations) are compared element-wise by the grader, not here
    if (['Tuple', 'Set', 'List', 'Equal', 'Sequence', 'Delimiter', 'Pair', 'Triple'].includes(e.operator)) return null
    return e
  } catch {
    return null
  }
}

type Complex = [re: number, im: number]

/**
 * Value of an expression at a point: compiled to JavaScript without CE's optimizer (which expands
 * `(x+1)^{200}` for seconds), or by substitution and N() when it does not compile (complex numbers,
 * factorials).
 */
function evaluator(e: BoxedExpression): (point: Record<string, number>) => Complex | null {
  try {
    const f = e.compile({ optimize: [] })
    if (f) {
      return (point) => {
        try {
          const v = Number(f(point))
          return Number.isFinite(v) ? [v, 0] : null
        } catch {
          return null
        }
      }
    }
  } catch {
    // not compilable: fall through to substitution
  }
  return (point) => {
    const sub: Record<string, BoxedExpression> = {}
    for (const [k, v] of Object.entries(point)) sub[k] = ce().number(v)
    return value(e.subs(sub))
  }
}

function maxExponent(latex: string): number {
  let max = 0
  for (const m of latex.matchAll(/\^\s*\{?\s*-?(\d+)/g)) max = Math.max(max, Number(m[1]))
  return max
}

function value(e: BoxedExpression): Complex | null {
  try {
    const n = e.N()
    const re = n.re
    const im = n.im
    if (!Number.isFinite(re) || !Number.isFinite(im)) return null
    return [re, im]
  } catch {
    return null
  }
}

function close([ar, ai]: Complex, [br, bi]: Complex): boolean {
  const d = Math.hypot(ar - br, ai - bi)
  return d <= ABS_TOL || d <= REL_TOL * Math.max(Math.hypot(ar, ai), Math.hypot(br, bi))
}

function mulberry32(seed: number): () => number {
  let t = seed >>> 0
  return () => {
    t = (t + 0x6d2b79f5) >>> 0
    let r = Math.imul(t ^ (t >>> 15), 1 | t)
    r = (r + Math.imul(r ^ (r >>> 7), 61 | r)) ^ r
    return ((r ^ (r >>> 14)) >>> 0) / 4294967296
  }
}
