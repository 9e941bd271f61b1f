/**
 * `vtc-r1 reason` as a user runs it: the CLI in a child process on the e2e fixture model (a small random
 * Qwen3-VL: its text is noise, the work is real).
 */
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { SHARED } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const E2E = `${SHARED}golden/qwen3vl/e2e`

const reason = (args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), 'reason', ...args], { cwd: ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  )

test('--context-length bounds the embedded engine: a round budget that does not fit is refused before generating', async (t) => {
  const r = await reason(['--model', E2E, '--context-length', '200', '--round-tokens', '300', '--max-rounds', '1', '--quiet', 'What is 2+2?'])
  t.is(r.code, 1, r.stdout)
  t.regex(r.stderr, /round budget of 300 tokens .* exceeds e2e's context length of 200 tokens/)
  t.notRegex(r.stdout, /output tokens/, 'nothing was generated')

  const over = await reason(['--model', E2E, '--context-length', '300000', 'What is 2+2?'])
  t.is(over.code, 1)
  t.regex(over.stderr, /context length 300000 exceeds e2e's context window of 262144 tokens/)
})

test('server flags are refused with --model instead of being ignored', async (t) => {
  for (const flag of ['--api-model', '--api-key']) {
    const r = await reason(['--model', E2E, flag, 'x', '--round-tokens', '1', '--max-rounds', '1', 'What is 2+2?'])
    t.is(r.code, 1)
    t.regex(r.stderr, new RegExp(`${flag} applies to a server \\(--base-url URL\\), not to the embedded engine`))
  }
})

test('the summary states the text tokens the pages replaced against the vision tokens they cost', async (t) => {
  const r = await reason(['--model', E2E, '--dtype', 'bf16', '--round-tokens', '200', '--max-rounds', '2', '--seed', '1', '--quiet', 'What is 2+2?'])
  t.is(r.code, 0, r.stderr)
  const m = /^pages replaced (\d+) text tokens of 1 round with (\d+) pages? of (\d+) vision tokens \((\d+\.\d\d)× fewer\)$/m.exec(r.stdout)
  t.truthy(m, r.stdout)
  const [, text, , vision, ratio] = m!
  t.is(Number(text), 200, 'round 1, rendered into the pages round 2 read')
  t.regex(r.stdout, new RegExp(`^vision tokens  ${vision} read from`, 'm'), 'the engine-reported cost of the pages round 2 read')
  t.is(ratio, (Number(text) / Number(vision)).toFixed(2))
  t.regex(r.stdout, /^latency .*\(render .*, vision .*, prefill .*, decode .*\)$/m)
})
