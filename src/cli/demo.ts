/**
 * `vtc-r1 demo`: the optical-memory loop on the bundled default. With no model, a real reasoning trace is replayed
 * through the loop round by round (each finished round rendered into pages that replace its text in the next
 * round's context); with `--model`, the loop runs on that model.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'

import { TraceReplay } from '../backends/replay.js'
import { splitThink } from '../dataset/trace.js'
import { VtcError } from '../errors.js'
import { lastBoxed } from '../latex.js'
import { OpticalMemory, SYSTEM_PROMPT, type MemoryResult } from '../memory.js'
import { countTextTokens } from '../text-tokens.js'
import { reasonCommand, summaryText, writeReport } from './reason.js'

const DEMO = new URL('../../assets/demo-trace.json', import.meta.url)
/** Tokens per round: the segment length VTC-R1's training data was cut at. */
const ROUND_TOKENS = 4096

export const DEMO_HELP = `usage: vtc-r1 demo [--out DIR] [--model DIR|ORG/NAME]
  Runs the VTC-R1 optical-memory loop on a bundled real reasoning trace (OpenR1-Math). With no model, the trace is
  replayed round by round (${ROUND_TOKENS} tokens a round, as VTC-R1 trains): each finished round is rendered into
  page images that replace its text in the next round's context. Prints per round the text tokens the pages
  replaced, the vision tokens they cost and the context the next round starts from against the baseline's, then
  writes the pages and an HTML report to DIR (default ./vtc-r1-demo).
  --model DIR|ORG/NAME  run the real loop on the trace's question with this model instead (see vtc-r1 reason)`

export async function demoCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { out: { type: 'string' }, model: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    console.log(DEMO_HELP)
    return
  }
  const out = values.out ?? 'vtc-r1-demo'
  const demo = JSON.parse(await readFile(DEMO, 'utf8')) as { problem: string; generation: string; source: string; answer: string }
  await mkdir(out, { recursive: true })
  const report = join(out, 'report.html')
  if (values.model) return reasonCommand([demo.problem, '--model', values.model, '--html', report])

  const split = splitThink(demo.generation)
  if (!split) throw new VtcError('ERR_VTC_INVALID_INPUT', `${DEMO.pathname}: the trace has no <think>…</think>`)
  const answer = lastBoxed(split.solution) ?? demo.answer
  const replay = TraceReplay.fromTrace(split.reasoning, answer, ROUND_TOKENS)
  console.log(`question: ${demo.problem.split('\n')[0].slice(0, 100)}…`)
  console.log(`trace:    ${demo.source}, replayed in ${replay.turns.length} rounds of at most ${ROUND_TOKENS} tokens\n`)

  const result = await new OpticalMemory(replay, { roundTokens: ROUND_TOKENS, maxRounds: replay.turns.length }).solve(demo.problem)
  console.log(roundTable(result, countTextTokens(`${SYSTEM_PROMPT}\n${demo.problem}`)))
  // a replay has no model time: the latency lines would only time the rendering
  const summary = summaryText(result).split('\n').filter((line) => !/^(latency|throughput)/.test(line))
  console.log(`\nanswer: ${result.answer}\n${summary.join('\n')}`)

  let written = 0
  for (const round of result.rounds) {
    for (const [i, page] of round.pages.entries()) {
      await writeFile(join(out, `round${round.index}_page_${String(i + 1).padStart(3, '0')}.png`), await page.png())
      written++
    }
  }
  await writeReport(report, result, replay.name)
  console.log(`\n${written} pages and ${report} written to ${out}/`)
  console.log('on a real model: vtc-r1 demo --model DIR|ORG/NAME (a Qwen3-VL or GLM-4.1V / VTC-R1-Glyph checkpoint)')
}

/**
 * Per round: its text tokens, the pages they became and those pages' vision tokens, and the context the next
 * round starts from (question plus every earlier round's pages) against the baseline's (question plus every
 * earlier round's text). Context figures count the system prompt and question as text tokens (no template).
 */
function roundTable(r: MemoryResult, promptTokens: number): string {
  const rows = [['round', 'text tokens', 'pages', 'vision tokens', 'next context', 'baseline', 'saved']]
  let memory = promptTokens
  let baseline = promptTokens
  for (const round of r.rounds) {
    memory += round.pageTokens
    baseline += round.tokens
    const rendered = round.pages.length > 0
    rows.push([
      String(round.index),
      String(round.tokens),
      rendered ? String(round.pages.length) : '-',
      rendered ? String(round.pageTokens) : '-',
      rendered ? String(memory) : '(answered)',
      rendered ? String(baseline) : '',
      rendered ? `${(baseline / memory).toFixed(2)}×` : '',
    ])
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => row[c].length)))
  return rows.map((row) => row.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n')
}
