/**
 * The published shape: scripts/pack-check.sh packs the main package and the linux-x64-gnu binary package,
 * installs both into an empty directory with no cargo or rustc on PATH and runs the CLI demo, an ESM import and a
 * CJS require there. It packs dist/, so the TypeScript is compiled first.
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import test from 'ava'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

const supported = process.platform === 'linux' && process.arch === 'x64'
;(supported ? test : test.skip)('npm tarballs install and run with no Rust toolchain (linux x64)', (t) => {
  const tsc = spawnSync('npm', ['run', 'build:ts'], { cwd: ROOT, encoding: 'utf8' })
  t.is(tsc.status, 0, tsc.stdout + tsc.stderr)
  const r = spawnSync('bash', ['scripts/pack-check.sh'], { cwd: ROOT, encoding: 'utf8', timeout: 240_000 })
  t.log(r.stderr.trim())
  t.is(r.status, 0, r.stdout + r.stderr)
  t.regex(r.stdout, /installed into .* with no cargo or rustc on PATH/)
  t.regex(r.stdout, /ESM import: ok/)
  t.regex(r.stdout, /CJS require: ok/)
  t.regex(r.stderr, /vtc-r1-0\.1\.0\.tgz: [\d.]+ MB packed/)
  t.regex(r.stderr, /vtc-r1-linux-x64-gnu-0\.1\.0\.tgz: [\d.]+ MB packed/)
})
