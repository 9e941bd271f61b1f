import test from 'ava'

import { lastBoxed as datasetLastBoxed, pickTrace, type OpenR1Row } from '../src/dataset/index.js'
import { lastBoxed, unwrapBoxes } from '../src/latex.js'

/**
 * (text, last box, why). The one extraction the dataset builder, the loop's answer and the evaluation share; the
 * edge cases on which the two earlier copies (src/latex.ts, src/dataset/trace.ts) disagreed are marked.
 */
const CASES: [text: string, expected: string | null, why: string][] = [
  ['no box here', null, 'no box'],
  ['so \\boxed{\\frac{1}{2}}.', '\\frac{1}{2}', 'nested braces'],
  ['\\boxed{\\{1, 2\\}}', '\\{1, 2\\}', 'escaped braces are set braces, not groups'],
  ['first \\boxed{1}, then \\boxed{2}', '2', 'the last box'],
  ['\\boxed{\\boxed{5}}', '5', 'a box in a box: the inner one starts last'],
  ['\\boxed{ 5 }', ' 5 ', 'content verbatim'],
  ['so the answer is $\\boxed 5$', '5', 'brace-less: the next token, up to the closing $'],
  ['$\\boxed5$', '5', 'brace-less without a space: the command name ends at the digit'],
  ['the answer is \\boxed 5.', '5', 'brace-less at the end of a sentence (trace.ts kept the period)'],
  ['\\(\\boxed 5\\)', '5', 'brace-less up to the \\) closing the math (both copies kept "\\)")'],
  ['$\\boxed\\pi$', '\\pi', 'brace-less command argument'],
  ['\\boxedfoo{1}', null, 'another command (trace.ts took "foo{1}")'],
  ['\\boxed {x}', 'x', 'TeX skips the space after a command name'],
  ['\\boxed\t{x}', 'x', 'a tab too (trace.ts gave null)'],
  ['final: \\fbox{42}', '42', '\\fbox is a box'],
  ['\\boxed{1} and \\fbox{2}', '2', 'the later of \\boxed and \\fbox'],
  ['\\boxed{7}. I was asked to answer within \\boxed{}', '7', 'an empty box is skipped (trace.ts gave "")'],
  ['\\boxed{7} \\boxed{ }', '7', 'a blank box is skipped (trace.ts gave " ")'],
  ['put the answer within \\boxed{}', null, 'only empty boxes'],
  ['\\boxed{2}, then a bare \\boxed $', '2', 'a command with no argument is skipped (trace.ts gave null)'],
  ['\\boxed{3}. Wait, it is \\boxed{\\frac{1}{', null, 'an unclosed last box: the answer was cut off (latex.ts gave "3")'],
  ['an unfinished \\boxed{3 + ', null, 'unclosed'],
  ['\\boxed{a\\}', null, 'an escaped brace does not close the box'],
]

for (const [text, expected, why] of CASES) {
  test(`lastBoxed: ${why}`, (t) => {
    t.is(lastBoxed(text), expected, JSON.stringify(text))
  })
}

test('the dataset module re-exports the same lastBoxed', (t) => {
  t.is(datasetLastBoxed, lastBoxed)
})

test('unwrapBoxes keeps the math delimiters around a brace-less box', (t) => {
  t.is(unwrapBoxes('\\(\\boxed 5\\)'), '\\(5\\)')
  t.is(unwrapBoxes('\\boxed{\\boxed{x}} = \\fbox{y}'), 'x = y')
})

test('the training answer is the last box with content of the solution, not the reasoning’s', (t) => {
  const row: OpenR1Row = {
    pos: { index: 0, file: 'mem' },
    id: 'r',
    problem: 'What is 2 + 2?',
    generations: ['<think>Maybe \\boxed{5}? No: 2 + 2 = 4.</think>\nThe answer is \\boxed{4}, written within \\boxed{} as asked.'],
    answer: '4',
    correctness_math_verify: [true],
  }
  const r = pickTrace(row)
  t.true(r.ok)
  if (r.ok) t.is(r.trace.answer, '4')
})
