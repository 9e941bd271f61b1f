/** `vtc-r1 pull org/name`: download a Hugging Face model into the hub cache, where `--model org/name` finds it. */
import { parseArgs } from 'node:util'

import { VtcError } from '../errors.js'
import { hubCacheDir, pullModel, type PullProgress } from '../hub/index.js'
import { stopOnInterrupt } from './interrupt.js'
import { ProgressBar } from './progress.js'

export const PULL_HELP = `usage: vtc-r1 pull ORG/NAME [--revision REV]
  Downloads the files of a Hugging Face model that vtc-r1 reads (config.json, the safetensors weights or their
  shards, tokenizer, chat template, preprocessor and generation configs) into the Hugging Face cache, laid out as
  huggingface_hub lays it out, so Python and other tools share them. --model ORG/NAME and loadModel('ORG/NAME')
  then load it with no network. Files already in the cache are not downloaded again, an interrupted download
  resumes where it stopped, and every file is checked against the size and hash the hub gives. Prints the
  snapshot directory.

  --revision REV        branch, tag or commit (default main)
  environment: HF_HUB_CACHE or HF_HOME (the cache: $HF_HOME/hub, default ~/.cache/huggingface/hub),
               HF_ENDPOINT (a mirror), HF_TOKEN (gated or private models), HF_HUB_OFFLINE=1 (never download)`

export async function pullCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { revision: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  })
  if (values.help) {
    console.log(PULL_HELP)
    return
  }
  if (positionals.length !== 1) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'pull: give one model id, e.g. vtc-r1 pull Qwen/Qwen3-VL-2B-Instruct')
  const id = positionals[0]
  const interrupt = stopOnInterrupt('vtc-r1: interrupted; the partial download is kept and a rerun resumes it')
  try {
    const r = await pullModel(id, { revision: values.revision, onProgress: pullReporter(id), signal: interrupt.signal })
    console.error(`vtc-r1: ${id} (${r.revision}, commit ${r.commit.slice(0, 12)}): ${r.downloaded.length} files downloaded, ${r.cached.length} already in ${hubCacheDir()}`)
    console.log(r.dir)
  } finally {
    interrupt.release()
  }
}

/** Download progress on stderr: a bar while bytes arrive (on a terminal) and a line per file. */
export function pullReporter(id: string): (p: PullProgress) => void {
  let bar: ProgressBar | undefined
  let total = -1
  const mb = (n: number) => n / 1e6
  return (p) => {
    if (p.status === 'downloading') {
      if (p.totalBytes !== total) {
        total = p.totalBytes
        bar = new ProgressBar(`pull ${id}`, mb(total), 'MB')
      }
      bar!.update(mb(p.bytes))
      return
    }
    const size = p.size === undefined ? '' : ` (${p.size >= 1e6 ? `${mb(p.size).toFixed(1)} MB` : `${p.size} B`})`
    // on a terminal, over the bar's line; the bar is redrawn by the next bytes
    const clear = process.stderr.isTTY ? '\r\x1b[K' : ''
    process.stderr.write(`${clear}  ${p.file}${size}: ${p.status === 'cached' ? 'in the cache' : 'downloaded'}\n`)
  }
}
