import test from 'ava'

import { extractAnswer } from '../src/answer.js'
import { choiceLetter, gradeAnswer, gradeResponse, parseNumber } from '../src/eval/grade.js'
import { normalizeAnswer } from '../src/eval/normalize.js'

/**
 * (prediction, gold, verdict, rule). Part 1: answers extracted from the real R1 traces of
 * ../shared/data/math500-r1-traces.parquet against their MATH500 gold, verbatim. Part 2: MATH500 gold answers
 * against predictions written the ways models write them, including wrong ones a sloppy grader accepts.
 */
type Case = [prediction: string, gold: string, verdict: boolean, rule: string]

const REAL: Case[] = [
  ['[-2, 7]', 'x \\in [-2,7]', true, 'x\\in prefix of a set'],
  ['30', '30^\\circ', true, 'degrees'],
  ['-\\dfrac{\\pi}{6}', '-\\frac{\\pi}{6}', true, 'dfrac'],
  ['1', '3', false, 'wrong number'],
  ['\\dfrac{448}{15625}', '\\frac{448}{15625}', true, 'dfrac'],
  ['\\dfrac{\\sqrt{21}}{5}', '\\frac{\\sqrt{21}}{5}', true, 'dfrac with sqrt'],
  ['288\\pi', '288 \\pi', true, 'spaces'],
  ['-13x + 3', '-13x+3', true, 'spaces in a polynomial'],
  ['C', '\\text{(C)}', true, 'multiple choice letter'],
  ['189', '21', false, 'wrong number'],
  ['ellipse', '\\text{ellipse}', true, 'text answer'],
  ['Evelyn', '\\text{Evelyn}', true, 'text answer'],
  ['110', '80', false, 'wrong number'],
  ['\\begin{pmatrix} \\dfrac{1}{5} \\\\ -\\dfrac{18}{5} \\end{pmatrix}', '\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}', true, 'matrix, a/b vs dfrac'],
  ['4210_5', '4210_{5}', true, 'base subscript braces'],
  ['\\dfrac{1}{4}', '\\frac14', true, 'frac without braces'],
  ['\\dfrac{3}{4}', '\\frac 34', true, 'frac with a space'],
  ['\\dfrac{4}{3}', '\\frac43', true, 'frac without braces'],
  ['11\\sqrt{2}', '11\\sqrt2', true, 'sqrt without braces'],
  ['76', '76^\\circ', true, 'degrees'],
  ['10080', '10,\\!080', true, 'thousands separator with \\!'],
  ['36', '\\$36', true, 'dollar sign'],
  ['(2, 4)', '(2,4)', true, 'tuple spaces'],
  ['(15, -29)', '(15,-29)', true, 'tuple with a negative'],
  ['6 + 9i', '6+9i', true, 'complex number'],
  ['B', '\\text{(B)}', true, 'multiple choice letter'],
  ['Navin', '\\text{Navin}', true, 'text answer'],
  ['864', '864 \\mbox{ inches}^2', true, 'unit in \\mbox with a power'],
  ['137\\frac{1}{2}', '137 \\frac{1}{2}', true, 'mixed number'],
  ['\\begin{pmatrix} \\dfrac{16}{49} \\\\ \\dfrac{48}{49} \\\\ \\dfrac{24}{49} \\end{pmatrix}', '\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}', true, 'column vector'],
  ['10\\%', '10', true, 'percent sign'],
  ['\\begin{pmatrix} -\\dfrac{1}{3} \\\\ \\dfrac{2}{3} \\\\ \\dfrac{5}{3} \\end{pmatrix}', '\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}', true, 'column vector with negatives'],
  ['\\dfrac{11 + 9a}{20}', '\\frac{11+9a}{20}', true, 'symbolic fraction'],
  ['32349', '\\$32,\\!348', false, 'off by one within 1e-4: integers must match exactly'],
  ['(2, 12) \\cup (12, 102)', '(2,12) \\cup (12,102)', true, 'union of intervals'],
  ['(1, -16, -4, 43)', '(1,-16,-4,43)', true, '4-tuple'],
  ['\\left( \\dfrac{3}{5}, \\dfrac{8}{3} \\right]', '\\left(\\frac{3}{5},\\frac{8}{3}\\right]', true, 'half-open interval, \\left \\right'],
  ['1', '1,-2', false, 'one of two solutions'],
  ['\\left( \\dfrac{3}{2}, -13 \\right)', '\\left( \\frac{3}{2}, -13 \\right)', true, 'point'],
  ['\\dfrac{20000}{\\pi}', '\\frac{20000}{\\pi}', true, 'pi in a fraction'],
  ['(5, \\infty)', '(5,\\infty)', true, 'interval to infinity'],
  ['(a + 5)(b + 2)', '(a+5)(b+2)', true, 'factored form'],
  ['\\dfrac{6}{5}', '\\frac65', true, 'frac without braces'],
  ['(3, \\frac{\\pi}{2})', '\\left( 3, \\frac{\\pi}{2} \\right)', true, 'polar point'],
  ['6r^2 - 4r - 24', '6r^2-4r-24', true, 'polynomial'],
  ['18.90', '\\$18.90', true, 'dollars with cents'],
  ['\\left[ \\dfrac{\\pi^2}{8}, \\dfrac{5\\pi^2}{4} \\right]', '\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]', true, 'closed interval with pi'],
  ['\\dfrac{9}{19}', '\\frac9{19}', true, 'frac with one braced argument'],
  ['(0, 9) \\cup (9, 36)', '(0,9) \\cup (9,36)', true, 'union'],
  ['204', '204_5', false, 'base subscript dropped (as the harness)'],
  ['15', '15\\mbox{ cm}^2', true, 'unit in \\mbox'],
  ['11\\left(\\sqrt{5} + 1\\right)', '11 \\sqrt{5} + 11', true, 'factored surd'],
  ['\\dfrac{1}{6}', '\\frac{1}{3}', false, 'wrong fraction'],
  ['7', '3, 5, 7', false, 'one of three solutions'],
  ['58500', '58,500', true, 'thousands separator'],
  ['5', 'x=5', true, 'bare value for x=5'],
  ['2k + 2', '2k+2', true, 'linear expression'],
  ['1 + 2i', '1+2i', true, 'complex number'],
  ['0.0000672', '.0000672', true, 'leading dot'],
  ['0.35625', '.35625', true, 'leading dot'],
  ['5.4', '5.4 \\text{ cents}', true, 'unit in \\text'],
  ['1', '-2,1', false, 'one of two solutions'],
  ['12^{\\mathrm{th}}', '12', true, 'ordinal'],
  ['\\cot x', '\\cot x', true, 'same function'],
  ['x^3 + 3x - 6', 'x^3+3x-6', true, 'polynomial'],
  ['2516₈', '2516_8', true, 'unicode subscript base'],
  ['59 cents', '59', true, 'unit word'],
  ['pi', '\\pi', true, 'spelled-out pi'],
  ['180 degrees', '180^\\circ', true, 'degrees in words'],
  ['18 + 2π', '18+2\\pi', true, 'unicode pi'],
  ['5/9', '\\frac 59', true, 'slash fraction'],
  ['1/3', '\\frac{1}{3}', true, 'slash fraction'],
  ['x = 3 + 2√2, 3 - 2√2, -3 + 2√2, -3 - 2√2', '3 \\pm 2 \\sqrt{2}', false, 'extra solutions'],
  ['(106/39, 591/13, 5/13)', '(6,31,-1)', false, 'wrong tuple'],
  ['\\frac{1}{4}(a^2 + b^2 + c^2 + 3R^2)', '3R^2', false, 'different expression'],
  ['150 degrees', '120', false, 'wrong angle'],
  ['26°', '116', false, 'wrong angle'],
  ['64/27', '0', false, 'wrong value'],
  ['-0.00000000000000', '5', false, 'zero vs five'],
  ['0.447', '1\\frac{4}{5}', false, 'wrong decimal'],
  ['\\dfrac{3}{56}', '\\frac{3}{56}', true, 'dfrac'],
  ['(-1, 6)', '(-1,6)', true, 'tuple'],
  ['0.5', '17', false, 'wrong value'],
]

const CONSTRUCTED: Case[] = [
  // fractions, decimals, mixed numbers
  ['0.5', '\\frac{1}{2}', true, '0.5 vs frac'],
  ['\\frac12', '\\frac{1}{2}', true, 'frac12'],
  ['\\tfrac{1}{2}', '\\frac{1}{2}', true, 'tfrac'],
  ['1/2', '0.5', true, 'slash vs decimal'],
  ['5/10', '\\frac{1}{2}', true, 'unreduced fraction (numeric)'],
  ['\\frac{-1}{2}', '-\\frac{1}{2}', true, 'sign inside the fraction'],
  ['2', '\\frac{1}{2}', false, 'inverse'],
  ['0.25', '\\frac14', true, 'decimal quarter'],
  ['0.33', '\\frac{1}{3}', false, 'rounded beyond 1e-4'],
  ['0.33333', '\\frac{1}{3}', true, 'rounded within 1e-4'],
  ['4.67', '\\frac{14}{3}', false, 'rounded beyond 1e-4'],
  ['4.6667', '\\frac{14}{3}', true, 'rounded within 1e-4'],
  ['1.8', '1\\frac{4}{5}', true, 'mixed number as decimal'],
  ['\\frac{9}{5}', '1\\frac{4}{5}', true, 'mixed number as improper fraction'],
  ['\\frac{4}{5}', '1\\frac{4}{5}', false, 'mixed number is not a product'],
  ['137.5', '137 \\frac{1}{2}', true, 'mixed number'],
  ['3159.0', '3159', true, 'trailing .0'],
  ['0.0', '0', true, 'zero'],
  ['0.0001', '0', false, 'no tolerance around zero'],
  ['1', '-1', false, 'sign'],
  // equations and x= prefixes
  ['x=5', '5', true, 'x= prefix'],
  ['k = 3', '3', true, 'k= prefix'],
  ['y=5', 'x=5', false, 'different variable'],
  ['x = 5', 'x=5', true, 'same equation'],
  ['y=2x+3', 'y = 2x + 3', true, 'same line'],
  ['2x - y + 3 = 0', 'y = 2x + 3', true, 'line rearranged'],
  ['2x + 3 = y', 'y = 2x + 3', true, 'sides swapped'],
  ['y = 2x - 3', 'y = 2x + 3', false, 'different intercept'],
  ['2x+3', 'y = 2x + 3', true, 'right-hand side only (harness)'],
  ['y = 2x', 'y = -2x', false, 'different slope'],
  ['-5x + 7y - 11z - 4 = 0', '5x - 7y + 11z + 4 = 0', true, 'plane negated'],
  ['5x - 7y + 11z - 4 = 0', '5x - 7y + 11z + 4 = 0', false, 'different plane'],
  // degrees and units
  ['90^{\\circ}', '90^\\circ', true, 'braced circ'],
  ['90°', '90^\\circ', true, 'degree sign'],
  ['\\frac{\\pi}{2}', '90^\\circ', false, 'radians for degrees'],
  ['35', '145^\\circ', false, 'supplement'],
  ['\\frac{270}{7}', '\\frac{270}7\\text{ degrees}', true, 'unit text after frac'],
  ['38.5714', '\\frac{270}7\\text{ degrees}', true, 'decimal of a fraction'],
  ['36 dollars', '\\$36', true, 'currency word'],
  ['5.4 cents', '5.4 \\text{ cents}', true, 'unit word'],
  ['864 square inches', '864 \\mbox{ inches}^2', true, 'square unit'],
  ['865', '864 \\mbox{ inches}^2', false, 'wrong value with unit'],
  ['2m', '2', false, 'a variable is not a unit'],
  // percent
  ['10%', '10', true, 'percent sign'],
  ['0.1', '10\\%', true, 'percent as a fraction'],
  ['20\\%', '0.2', true, 'fraction as percent'],
  ['0.1', '10', false, 'no percent anywhere: 0.1 is not 10'],
  ['500', '5', false, 'x100 without a percent (harness accepts)'],
  // roots and pi
  ['\\sqrt2', '\\sqrt{2}', true, 'sqrt2'],
  ['2\\sqrt{2}', '\\sqrt{8}', true, 'simplified surd'],
  ['1.4142', '\\sqrt{2}', true, 'decimal surd within 1e-4'],
  ['1.41', '\\sqrt{2}', false, 'decimal surd beyond 1e-4'],
  ['\\frac{\\sqrt{3}}{3}', '\\frac{1}{\\sqrt{3}}', true, 'rationalized'],
  ['\\frac{\\sqrt{3}}{3}', '\\frac{\\sqrt{3}}{2}', false, 'different denominator'],
  ['\\sqrt{50}', '\\sqrt{51}', false, 'close surds'],
  ['\\sqrt{3}', '-\\sqrt{3}', false, 'sign'],
  ['3.14', '\\pi', false, 'pi rounded beyond 1e-4'],
  ['3.14159', '\\pi', true, 'pi within 1e-4'],
  ['22/7', '\\pi', false, '22/7 is not pi'],
  ['\\pi \\cdot 7', '7\\pi', true, 'commuted product'],
  ['36\\pi/3', '12\\pi', true, 'unreduced'],
  ['6\\pi', '12\\pi', false, 'half'],
  ['904.78', '288 \\pi', true, 'decimal of a pi multiple'],
  ['6366.2', '\\frac{20000}{\\pi}', true, 'decimal of a pi fraction'],
  ['8.124', '\\sqrt{66}', true, 'decimal of a surd'],
  ['\\frac{\\pi}{6}', '-\\frac{\\pi}{6}', false, 'sign'],
  // negatives, thousands separators
  ['-2', '2', false, 'sign'],
  ['- 2', '-2', true, 'spaced minus'],
  ['−2', '-2', true, 'unicode minus'],
  ['-0.375', '-\\frac{3}{8}', true, 'negative decimal'],
  ['0.375', '-\\frac{3}{8}', false, 'lost sign'],
  ['10{,}080', '10,\\!080', true, 'braced comma'],
  ['10,080', '10080', true, 'comma thousands'],
  ['11,111,111,100', '11,\\! 111,\\! 111,\\! 100', true, 'several separators'],
  ['1,2', '12', false, 'a list is not a thousands separator'],
  ['32,348', '\\$32,\\!348', true, 'thousands with dollars'],
  ['32348.00', '\\$32,\\!348', true, 'trailing zeros'],
  ['18.9', '\\$18.90', true, 'trailing zero cents'],
  ['18.09', '\\$18.90', false, 'swapped digits'],
  // tuples, lists, sets, intervals, unions
  ['(1,-2)', '(-2,1)', false, 'tuple order matters'],
  ['(8,-2)', '(-2,8)', false, 'point order matters'],
  ['6,31,-1', '(6,31,-1)', true, 'tuple without parentheses'],
  ['-2, 1', '1,-2', true, 'solution list order does not matter'],
  ['7, 5, 3', '3, 5, 7', true, 'solution list order does not matter'],
  ['3, 5', '3, 5, 7', false, 'missing solution'],
  ['3, 5, 7, 9', '3, 5, 7', false, 'extra solution'],
  ['1+\\sqrt{19}, 1-\\sqrt{19}', '1 \\pm \\sqrt{19}', true, 'pm expanded'],
  ['1-\\sqrt{19}, 1+\\sqrt{19}', '1 \\pm \\sqrt{19}', true, 'pm expanded, other order'],
  ['1+\\sqrt{19}', '1 \\pm \\sqrt{19}', false, 'half of pm'],
  ['3+2\\sqrt{2}, 3-2\\sqrt{2}', '3 \\pm 2 \\sqrt{2}', true, 'pm with coefficient'],
  ['-2, 1+\\sqrt{5}, 1-\\sqrt{5}', '\\{1\\pm\\sqrt{5},-2\\}', true, 'set with pm'],
  ['\\{-2, 1+\\sqrt5, 1-\\sqrt5\\}', '\\{1\\pm\\sqrt{5},-2\\}', true, 'set reordered'],
  ['1\\pm\\sqrt{5}', '\\{1\\pm\\sqrt{5},-2\\}', false, 'set missing an element'],
  ['[3,4]', '(3,4]', false, 'closed vs half-open (harness accepts)'],
  ['(3,4)', '(3,4]', false, 'open vs half-open'],
  ['(3, 4]', '(3,4]', true, 'same interval'],
  ['(0.6, 2.6667]', '\\left(\\frac{3}{5},\\frac{8}{3}\\right]', true, 'interval endpoints as decimals'],
  ['x \\in (2, \\infty)', '(2,\\infty)', true, 'x\\in prefix'],
  ['(2, \\infty)', '(-\\infty, 2)', false, 'other side'],
  ['x > 2', '(2,\\infty)', false, 'inequality for interval notation'],
  ['(-\\infty,0)', '(-\\infty, 0]', false, 'endpoint excluded'],
  ['(3, \\infty) \\cup (-\\infty, 2)', '(-\\infty, 2) \\cup (3, \\infty)', true, 'union order'],
  ['(-\\infty, 2) \\cup (3, \\infty)', '(-\\infty, 2] \\cup [3, \\infty)', false, 'union endpoints'],
  ['(-\\infty, 2)', '(-\\infty, 2) \\cup (3, \\infty)', false, 'half a union'],
  ['infinity', '\\infty', true, 'infinity word'],
  // matrices and vectors
  ['\\begin{bmatrix} -2 \\\\ -14 \\\\ -7 \\end{bmatrix}', '\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}', true, 'bmatrix vs pmatrix'],
  ['(-2, -14, -7)', '\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}', true, 'vector as tuple'],
  ['\\begin{pmatrix} -2 \\\\ -7 \\\\ -14 \\end{pmatrix}', '\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}', false, 'vector order'],
  ['\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}', '\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}', true, 'matrix spacing'],
  ['\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}', '\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}', false, 'matrix signs'],
  ['\\begin{pmatrix} -1 & 0 & 0 & -1 \\end{pmatrix}', '\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}', false, 'matrix shape'],
  ['\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}', '\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}', true, 'matrix decimals'],
  // multiple choice in MATH500
  ['(C)', '\\text{(C)}', true, 'parenthesized letter'],
  ['\\text{C}', '\\text{(C)}', true, 'letter in text'],
  ['D', '\\text{(C)}', false, 'other letter'],
  ['C', '\\text{(E)}', false, 'other letter'],
  // text answers
  ['evelyn', '\\text{Evelyn}', true, 'case'],
  ['Emily', '\\text{Evelyn}', false, 'other name'],
  ['west', '\\text{east}', false, 'opposite direction'],
  ['East', '\\text{east}', true, 'case'],
  ['odd', '\\text{even}', false, 'opposite parity'],
  ['parabola', '\\text{ellipse}', false, 'other conic'],
  ['no', '\\text{No}', true, 'yes/no case'],
  ['yes', '\\text{No}', false, 'yes is not no'],
  ['ba', 'ab', true, 'two letters are a product'],
  // symbolic
  ['\\frac{\\cos x}{\\sin x}', '\\cot x', true, 'cot identity'],
  ['\\tan x', '\\cot x', false, 'tan is not cot'],
  ['-q+p', 'p - q', true, 'commuted'],
  ['q - p', 'p - q', false, 'negated'],
  ['(x-1)(x^4+x^2+1)', 'x^5 - x^4 + x^3 - x^2 + x - 1', true, 'factored polynomial'],
  ['x^5 + x^4 + x^3 + x^2 + x + 1', 'x^5 - x^4 + x^3 - x^2 + x - 1', false, 'signs'],
  ['2(k+1)', '2k+2', true, 'factored'],
  ['2k+1', '2k+2', false, 'constant'],
  ['2n+2', '2k+2', false, 'different variable'],
  ['3r^2', '3R^2', false, 'case of a variable'],
  ['3R^{2}', '3R^2', true, 'braced exponent'],
  ['(b+2)(a+5)', '(a+5)(b+2)', true, 'factors commuted'],
  ['(a+2)(b+5)', '(a+5)(b+2)', false, 'constants swapped'],
  ['(+5)(b+2)', '(a+5)(b+2)', false, 'lost variable'],
  ['\\frac{11}{20}+\\frac{9a}{20}', '\\frac{11+9a}{20}', true, 'split fraction'],
  ['9i+6', '6+9i', true, 'complex commuted'],
  ['6-9i', '6+9i', false, 'conjugate'],
  ['\\sec^2 y', '\\tan^2 y+1', true, 'trig identity (points)'],
  ['x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x', 'x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1', false, 'missing constant'],
  // bases, boxes, punctuation
  ['52_{8}', '52_8', true, 'base braces'],
  ['42_8', '52_8', false, 'wrong digits'],
  ['\\boxed{5}', '5', true, 'box in the prediction'],
  ['5.', '5', true, 'trailing period'],
]

const ALL = [...REAL, ...CONSTRUCTED]

test('the table has at least 150 cases, a third of them false', (t) => {
  t.true(ALL.length >= 150, `${ALL.length} cases`)
  t.true(ALL.filter((c) => !c[2]).length >= ALL.length / 3)
})

for (const [i, [pred, gold, verdict, rule]] of ALL.entries()) {
  test(`#${i} ${rule}: ${JSON.stringify(pred)} vs ${JSON.stringify(gold)} → ${verdict}`, (t) => {
    const v = gradeAnswer(pred, gold)
    t.is(v.correct, verdict, `method ${v.method}; normalized ${JSON.stringify(v.prediction)} vs ${JSON.stringify(v.gold)}`)
  })
}

test('multiple choice (GPQA): letter forms, option text, and no lowercase sub-item letters', (t) => {
  const kind = 'choice' as const
  t.true(gradeAnswer('B', 'B', { kind }).correct)
  t.true(gradeAnswer('(B)', 'B', { kind }).correct)
  t.true(gradeAnswer('B.', 'B', { kind }).correct)
  t.true(gradeAnswer('B) ~0.39', 'B', { kind }).correct)
  t.true(gradeAnswer('\\text{B}', 'B', { kind }).correct)
  t.true(gradeAnswer('The answer is (B)', 'B', { kind }).correct)
  t.true(gradeAnswer('Option B', 'B', { kind }).correct)
  t.false(gradeAnswer('A', 'B', { kind }).correct)
  t.false(gradeAnswer('Both', 'B', { kind }).correct, 'a word starting with B is not B')
  t.false(gradeAnswer('b', 'B', { kind }).correct, 'lowercase letters name sub-items (a)…d)) inside GPQA options')
  const choices = { A: '~0.32', B: '~0.39', C: '~0.07', D: '~0.11' }
  t.true(gradeAnswer('~0.39', 'B', { kind, choices }).correct)
  t.false(gradeAnswer('~0.11', 'B', { kind, choices }).correct)
  t.is(choiceLetter('the answer is D.'), 'D')
  t.is(choiceLetter('12'), null)
})

test('every comparison returns within its budget, even on pathological input', (t) => {
  const hard: [string, string][] = [
    ['(x+y+z)^{40}', '(x+y+z)^{39}(x+y+z)'],
    ['(x+1)^{200}', '(x+2)^{200}'],
    ['2^{2^{30}}', '2^{2^{30}}+1'],
    ['10^{10^{10}}', '10'],
    ['1000!', '999!'],
    ['x'.repeat(5000), 'x'],
    ['\\sin(\\sin(\\sin(\\sin(\\sin(x)))))', '\\sin x'],
    [`(${Array.from({ length: 40 }, (_, k) => `x_${k}`).join('+')})^{8}`, '1'],
  ]
  for (const [a, b] of hard) {
    const t0 = performance.now()
    gradeAnswer(a, b, { timeBudgetMs: 500 })
    const ms = performance.now() - t0
    t.true(ms < 1500, `${a.slice(0, 40)}: ${ms.toFixed(0)} ms`)
  }
  t.true(gradeAnswer('(x+y+z)^{40}', '(x+y+z)^{39}(x+y+z)').correct, 'large powers compared at points, not expanded')
})

test('normalization', (t) => {
  t.is(normalizeAnswer('\\boxed{\\dfrac{1}{2}}'), '\\frac{1}{2}')
  t.is(normalizeAnswer('\\left( 3, \\frac{\\pi}{2} \\right)'), '(3,\\frac{\\pi}{2})')
  t.is(normalizeAnswer('10,\\!080'), '10080')
  t.is(normalizeAnswer('\\$18.90'), '18.9')
  t.is(normalizeAnswer('\\frac 59'), '\\frac{5}{9}')
  t.is(normalizeAnswer('\\frac{\\frac12}{3}'), '\\frac{\\frac{1}{2}}{3}')
  t.is(normalizeAnswer('864 \\mbox{ inches}^2'), '864')
  t.is(normalizeAnswer('\\text{Evelyn}'), 'Evelyn')
  t.is(normalizeAnswer('\\cot x'), '\\cot x', 'the space after a command survives')
  t.is(normalizeAnswer('\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}'), '\\begin{pmatrix}1\\\\2\\end{pmatrix}', 'row breaks survive')
  t.is(normalizeAnswer('five'), '5')
  t.is(normalizeAnswer('x\\in[-2,7]'), '[-2,7]')
  t.is(parseNumber('-\\frac{3}{8}'), -0.375)
  t.is(parseNumber('1\\frac{4}{5}'), 1.8)
  t.is(parseNumber('x'), null)
})

// extraction, on real output tails from the traces and on the VTC-R1 <answer> format
const EXTRACT: [output: string, answer: string, source: string][] = [
  ['Thus, the value of \\(\\tan A\\) is \\(\\boxed{2}\\).', '2', 'boxed'],
  ['Thus, the solution to the inequality is the interval \\([-2, 7]\\).\n\n\\[\n\\boxed{[-2, 7]}\n\\]', '[-2, 7]', 'boxed'],
  ['is \\(\\boxed{-\\dfrac{\\pi}{6}}\\).', '-\\dfrac{\\pi}{6}', 'boxed'],
  ['first \\boxed{1} then \\boxed{\\frac{a}{\\sqrt{b^{2}}}} done', '\\frac{a}{\\sqrt{b^{2}}}', 'boxed'],
  ['so the answer is $\\boxed 5$.', '5', 'boxed'],
  ['final: \\fbox{42}', '42', 'boxed'],
  ['<think>long reasoning \\boxed{3}</think>\n<answer>\\boxed{\\frac{1}{2}}</answer>', '\\frac{1}{2}', 'answer-tag'],
  ['<think>reasoning</think><answer> 17 </answer>', '17', 'answer-tag'],
  ['<think>a <answer>9</answer> inside thinking</think> then \\boxed{8}', '8', 'boxed'],
  ['<think>r</think><answer></answer> the boxed \\boxed{4}', '4', 'boxed'],
  ['<think>r</think><answer>5', '5', 'last-number'],
  ['Therefore, the answer is 23. But wait, let me check', '23', 'answer-is'],
  ['the remaining cents would be 59. So the answer is 59 cents? But that seems too', '59 cents', 'answer-is'],
  ['The final answer is: $\\frac{3}{4}$', '\\frac{3}{4}', 'answer-is'],
  ['Therefore, the perimeter is 31.\n\nBut wait, hold on. Let me check the', '31', 'last-number'],
  ['He has 1,234,567 apples and 2.5 pears', '2.5', 'last-number'],
  ['total 1,000,000', '1000000', 'last-number'],
  ['an unfinished \\boxed{3 + ', '3', 'last-number'],
  ['no digits here', '', 'none'],
]

for (const [i, [output, answer, source]] of EXTRACT.entries()) {
  test(`extract #${i}: ${source} ${JSON.stringify(answer)}`, (t) => {
    t.deepEqual(extractAnswer(output), { answer, source })
  })
}

test('gradeResponse: extraction then grading, on a VTC-R1 style output', (t) => {
  const out = '<think>Let me compute... 2/4 = 0.5</think>\nThe probability is \\(\\boxed{\\frac12}\\).\n<answer>\\boxed{\\dfrac{1}{2}}</answer>'
  const v = gradeResponse(out, '\\frac{1}{2}')
  t.true(v.correct)
  t.is(v.extraction.source, 'answer-tag')
  t.false(gradeResponse('<think>x</think><answer>\\boxed{\\frac{1}{3}}</answer>', '\\frac{1}{2}').correct)
})
