#!/usr/bin/env node
/** The `vtc-r1` command line. */
import { readFileSync } from 'node:fs'

import { VtcError } from '../errors.js'
import { datasetCommand } from './dataset.js'
import { demoCommand } from './demo.js'
import { evalCommand } from './eval.js'
import { pullCommand } from './pull.js'
import { reasonCommand } from './reason.js'
import { renderCommand } from './render.js'
import { serveCommand } from './serve.js'

const HELP = `usage: vtc-r1 <command> [options]      (vtc-r1 <command> --help for its options)

commands:
  demo     the optical-memory loop on a bundled real reasoning trace: rounds, pages and the tokens they save
  render   render text into VTC-R1 page images
  reason   solve a question with the optical-memory loop on a model, streaming each round
  serve    serve a model over an OpenAI-compatible HTTP API
  eval     run benchmarks in vtc and baseline mode, grade, and report accuracy, tokens and latency
  dataset  build the VTC-R1 training set from OpenR1-Math-220K
  pull     download a Hugging Face model (org/name) into the Hugging Face cache

  --version  print the version`

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

const COMMANDS: Record<string, (argv: string[]) => Promise<void>> = {
  demo: demoCommand,
  render: renderCommand,
  dataset: datasetCommand,
  reason: reasonCommand,
  eval: evalCommand,
  serve: serveCommand,
  pull: pullCommand,
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.log(HELP)
    return
  }
  if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
    console.log(VERSION)
    return
  }
  const run = COMMANDS[cmd]
  if (!run) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `unknown command "${cmd}"; commands: ${Object.keys(COMMANDS).join(', ')}`)
  await run(rest)
}

main(process.argv.slice(2)).catch((err: unknown) => {
  const e = err as { code?: string; message?: string }
  if (e && typeof e.code === 'string' && (e.code.startsWith('ERR_') || e.code === 'ABORT_ERR')) {
    console.error(`vtc-r1: ${e.message}`)
  } else {
    console.error(err)
  }
  process.exit(1)
})
