import test from 'ava'

import { VtcError } from '../src/errors.js'
import { mathSpans, segmentText, type Segment, type SegmentTokenizer } from '../src/segment.js'
import { countTextTokens } from '../src/text-tokens.js'
import { readJsonl, SHARED } from './helpers.js'

/** One token per UTF-16 unit: budgets become character counts, so the expected cuts are easy to state. */
const chars: SegmentTokenizer = { tokenEnds: (t) => Uint32Array.from({ length: t.length }, (_, i) => i + 1) }

const joined = (segs: Segment[]) => segs.map((s) => s.text).join('')
const traces = readJsonl<{ uuid: string; generations: string[] }>(`${SHARED}data/openr1-sample.jsonl`).map((r) => ({
  id: r.uuid,
  reasoning: r.generations[0].slice('<think>'.length, r.generations[0].indexOf('</think>')),
}))

function assertInvariants(t: import('ava').ExecutionContext, text: string, segs: Segment[], max: number) {
  t.is(joined(segs), text, 'segments join back to the input')
  segs.forEach((s, i) => {
    t.is(s.text, text.slice(s.start, s.end))
    if (i > 0) t.is(s.start, segs[i - 1].end, 'contiguous')
    t.true(s.tokens <= max, `segment ${i}: ${s.tokens} tokens > ${max}`)
    t.true(s.text.length > 0)
  })
}

test('a text within the budget is one segment', (t) => {
  const segs = segmentText('One short paragraph.\n\nAnother.', { maxTokens: 100, tokenizer: chars })
  t.is(segs.length, 1)
  t.like(segs[0], { start: 0, end: 30, tokens: 30, boundary: 'end' })
  t.deepEqual(segmentText('', { maxTokens: 10 }), [])
})

test('cuts at paragraph boundaries when paragraphs fit', (t) => {
  const para = (c: string) => `${c.repeat(20)} ${c.repeat(20)}.` // 42 chars
  const text = ['a', 'b', 'c', 'd', 'e'].map(para).join('\n\n')
  const segs = segmentText(text, { maxTokens: 100, tokenizer: chars })
  assertInvariants(t, text, segs, 100)
  t.deepEqual(
    segs.map((s) => s.boundary),
    ['paragraph', 'paragraph', 'end'],
  )
  for (const s of segs.slice(0, -1)) t.true(s.text.endsWith('.\n\n'), JSON.stringify(s.text.slice(-5)))
  t.true(segs[1].text.startsWith('c'), 'two whole paragraphs per segment')
})

test('a paragraph longer than the budget is split at sentence ends', (t) => {
  const sentence = (i: number) => `Sentence number ${i} says something.`
  const long = Array.from({ length: 12 }, (_, i) => sentence(i)).join(' ')
  const segs = segmentText(long, { maxTokens: 120, tokenizer: chars })
  assertInvariants(t, long, segs, 120)
  for (const s of segs.slice(0, -1)) {
    t.is(s.boundary, 'sentence')
    t.true(s.text.endsWith('.'), JSON.stringify(s.text.slice(-10)))
  }
})

test('line breaks inside a paragraph count as sentence boundaries', (t) => {
  const text = Array.from({ length: 10 }, (_, i) => `- item ${i} without a full stop`).join('\n')
  const segs = segmentText(text, { maxTokens: 80, tokenizer: chars })
  assertInvariants(t, text, segs, 80)
  for (const s of segs.slice(0, -1)) t.true(s.text.endsWith('\n') && s.boundary === 'sentence')
})

test('a short paragraph before a long one does not become a tiny segment (minFill)', (t) => {
  const long = Array.from({ length: 10 }, (_, i) => `This is sentence ${i} of the long paragraph.`).join(' ')
  const text = `Short one.\n\n${long}`
  const filled = segmentText(text, { maxTokens: 150, tokenizer: chars })
  assertInvariants(t, text, filled, 150)
  t.is(filled[0].boundary, 'sentence')
  t.true(filled[0].tokens >= 75, `first segment has ${filled[0].tokens} tokens`)
  // without the fill rule the paragraph boundary wins however early it is
  const strict = segmentText(text, { maxTokens: 150, tokenizer: chars, minFill: 0 })
  t.is(strict[0].text, 'Short one.\n\n')
  t.is(strict[0].boundary, 'paragraph')
})

test('falls back to spaces, then to any token, when there is no sentence end', (t) => {
  const words = Array.from({ length: 40 }, (_, i) => `word${i}`).join(' ')
  const bySpace = segmentText(words, { maxTokens: 50, tokenizer: chars })
  assertInvariants(t, words, bySpace, 50)
  for (const s of bySpace.slice(0, -1)) {
    t.is(s.boundary, 'space')
    t.regex(s.text, /\d$/, 'cut before the space, not inside a word')
  }
  const blob = 'x'.repeat(230)
  const byToken = segmentText(blob, { maxTokens: 100, tokenizer: chars })
  assertInvariants(t, blob, byToken, 100)
  t.deepEqual(
    byToken.map((s) => [s.tokens, s.boundary]),
    [
      [100, 'token'],
      [100, 'token'],
      [30, 'end'],
    ],
  )
})

test('never cuts inside $…$, $$…$$, \\(…\\), \\[…\\] when avoidable', (t) => {
  const formulas = [
    '$a. b. c. d. e. f + g$',
    '$$x = 1. y = 2. z = 3.$$',
    '\\(p. q. r. s. t. u\\)',
    '\\[\nm = 1.\nn = 2.\no = 3.\n\\]',
    '\\begin{align} a &= b. \\\\ c &= d. \\end{align}',
  ]
  for (const f of formulas) {
    // a budget that would land inside the formula if formulas were ignored
    const text = `Start here. We get ${f} and then. More text follows here. ${f} again. End.`
    const spans = mathSpans(text)
    t.is(spans.length, 2, `${f}: both formulas found`)
    for (let max = 14; max <= 60; max += 3) {
      const segs = segmentText(text, { maxTokens: max, tokenizer: chars })
      assertInvariants(t, text, segs, max)
      for (const s of segs.slice(0, -1)) {
        const inside = spans.some(([a, b]) => a < s.end && s.end < b)
        if (s.boundary !== 'hard') t.false(inside, `${f} max ${max}: cut at ${s.end} inside a formula`)
        else t.true(spans.some(([a, b]) => b - a > max), 'a hard cut only for a formula longer than the budget')
      }
    }
  }
})

test('a formula longer than the budget is cut hard, at the token limit', (t) => {
  const f = `$${'x+'.repeat(60)}y$`
  const segs = segmentText(`Intro. ${f}`, { maxTokens: 40, tokenizer: chars })
  assertInvariants(t, `Intro. ${f}`, segs, 40)
  t.true(segs.some((s) => s.boundary === 'hard'))
})

test('mathSpans: escaped dollars, unclosed openers, no inline math across a blank line', (t) => {
  t.deepEqual(mathSpans('costs \\$5 and \\$6'), [])
  t.deepEqual(mathSpans('a $x$ b'), [[2, 5]])
  t.deepEqual(mathSpans('$$\\frac12$$ and $y$'), [
    [0, 11],
    [16, 19],
  ])
  t.deepEqual(mathSpans('unclosed $x\n\nnext $y$'), [[18, 21]])
  t.deepEqual(mathSpans('\\( a \\) \\[ b \\]'), [
    [0, 7],
    [8, 15],
  ])
  t.deepEqual(mathSpans('\\(never closed'), [])
  t.deepEqual(mathSpans('x \\begin{cases} 1 \\end{cases} y'), [[2, 29]])
})

test('abbreviations and list numbers are not sentence ends', (t) => {
  const text = `${'Use a method, e.g. this one or i.e. that one, for the value'.repeat(2)}\n1. first item and more words here`
  const segs = segmentText(text, { maxTokens: 60, tokenizer: chars })
  assertInvariants(t, text, segs, 60)
  for (const s of segs.slice(0, -1)) {
    t.false(/(e\.g|i\.e)\.$/.test(s.text), `cut after an abbreviation: ${JSON.stringify(s.text.slice(-8))}`)
    t.false(/\n1\.$/.test(s.text), 'cut after a list number')
  }
})

test('real traces with the Qwen3 tokenizer: budgets kept, paragraphs preferred, counts exact', (t) => {
  for (const max of [512, 1024, 4096]) {
    for (const { id, reasoning } of traces) {
      const segs = segmentText(reasoning, { maxTokens: max })
      assertInvariants(t, reasoning, segs, max)
      t.is(
        segs.reduce((a, s) => a + s.tokens, 0),
        countTextTokens(reasoning),
        `${id}: segment tokens add up to the trace's tokens`,
      )
      for (const s of segs) {
        // tokenized alone, a segment can differ at its cut edges only
        t.true(Math.abs(countTextTokens(s.text) - s.tokens) <= 2, `${id} max ${max}: ${countTextTokens(s.text)} vs ${s.tokens}`)
      }
      const cuts = segs.slice(0, -1)
      if (cuts.length) {
        const paragraphs = cuts.filter((s) => s.boundary === 'paragraph').length
        t.true(paragraphs / cuts.length >= 0.8, `${id} max ${max}: only ${paragraphs}/${cuts.length} cuts at paragraphs`)
        for (const s of cuts) t.true(s.tokens >= max / 2, `${id} max ${max}: a segment of ${s.tokens} tokens`)
      }
    }
  }
  // the 4K budget of the paper: the long traces split into several segments, the short ones stay whole
  const long = traces.find((x) => x.id === '8a564f954ade4683')!
  t.true(segmentText(long.reasoning).length >= 4)
})

test('offsets stay on code points for CJK, emoji and combining text (NFC)', (t) => {
  const text = Array.from({ length: 30 }, (_, i) => `第${i}步：计算 😀 résumé e\u0301 ${'数学'.repeat(5)}。`).join('')
  const segs = segmentText(text, { maxTokens: 40 })
  t.is(joined(segs), text.normalize('NFC'))
  for (const s of segs) {
    t.true(s.text.isWellFormed(), 'no split surrogate pair')
    t.true(s.tokens <= 40)
  }
  t.true(segs.length > 3)
})

test('bad arguments are VtcErrors with codes', (t) => {
  t.is(t.throws(() => segmentText('x', { maxTokens: 0 }), { instanceOf: VtcError })?.code, 'ERR_VTC_INVALID_ARGUMENT')
  t.is(t.throws(() => segmentText('bad \ud800 text'), { instanceOf: VtcError })?.code, 'ERR_VTC_INVALID_TEXT')
})
