/** `vtc-r1 demo`: the bundled trace replayed through the optical-memory loop, as a new user first sees it. */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

test('demo replays the trace through the loop: per-round token accounting, pages and an HTML report', (t) => {
  const out = join(mkdtempSync(join(tmpdir(), 'vtc-demo-')), 'demo')
  const r = spawnSync(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), 'demo', '--out', out], { encoding: 'utf8', cwd: ROOT })
  t.is(r.status, 0, r.stderr)
  // one row per round; every rendered round's next context is smaller than the baseline's
  const rows = r.stdout.split('\n').filter((l) => /^\d+ +\d+ /.test(l))
  t.true(rows.length >= 2, r.stdout)
  for (const row of rows.slice(0, -1)) {
    const [, textTokens, pages, vision, next, baseline] = row.trim().split(/ +/).map(Number)
    t.true(pages > 0 && vision > 0 && vision < textTokens, row)
    t.true(next < baseline, row)
  }
  t.regex(rows.at(-1)!, /\(answered\)/)
  t.regex(r.stdout, /^answer: 0$/m)
  t.regex(r.stdout, /pages replaced \d+ text tokens of \d+ rounds with \d+ pages of \d+ vision tokens/)
  const files = readdirSync(out)
  t.true(files.some((f) => /^round1_page_001\.png$/.test(f)), files.join(' '))
  t.true(existsSync(join(out, 'report.html')))
  t.regex(readFileSync(join(out, 'report.html'), 'utf8'), /Round 1[\s\S]*data:image\/png;base64/)
  t.regex(r.stdout, /vtc-r1 demo --model/)
})

test('vtc-r1 --help lists the commands in a screen; --version prints the package version', (t) => {
  const cli = (args: string[]) => spawnSync(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), ...args], { encoding: 'utf8', cwd: ROOT })
  const help = cli(['--help'])
  t.is(help.status, 0)
  const lines = help.stdout.trim().split('\n')
  t.true(lines.length <= 24, `${lines.length} lines`)
  for (const cmd of ['demo', 'render', 'reason', 'serve', 'eval', 'dataset', 'pull']) t.regex(help.stdout, new RegExp(`^  ${cmd} `, 'm'))
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  t.is(cli(['--version']).stdout.trim(), version)
  t.regex(cli(['serve', '--help']).stdout, /^usage: vtc-r1 serve/)
})
