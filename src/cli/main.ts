#!/usr/bin/env node
/** The `vtc-r1` command line. */
import { VtcError } from '../errors.js'
import { datasetCommand } from './dataset.js'
import { demoCommand, DEMO_HELP } from './demo.js'
import { evalCommand, EVAL_HELP } from './eval.js'
import { pullCommand, PULL_HELP } from './pull.js'
import { reasonCommand, REASON_HELP } from './reason.js'
import { renderCommand, RENDER_HELP } from './render.js'
import { serveCommand, SERVE_HELP } from './serve.js'

const HELP = `usage: vtc-r1 <command> [options]

commands:
  demo     render a bundled real reasoning trace and print the compression it achieves
  render   render text into VTC-R1 page images (vtc-r1 render --help)
  dataset  build the VTC-R1 training set from OpenR1-Math-220K (vtc-r1 dataset build --help)
  reason   solve a question with the optical-memory loop, streaming each round (vtc-r1 reason --help)
  eval     run benchmarks in vtc and baseline mode, grade, and report accuracy/tokens/latency (vtc-r1 eval --help)
  serve    serve a model over an OpenAI-compatible HTTP API (vtc-r1 serve --help)
  pull     download a Hugging Face model (org/name) into the Hugging Face cache (vtc-r1 pull --help)

${DEMO_HELP}

${RENDER_HELP}

${REASON_HELP}

${EVAL_HELP}

${SERVE_HELP}

${PULL_HELP}`

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
