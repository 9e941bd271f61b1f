/** `vtc-r1 serve`: the OpenAI-compatible HTTP server over the embedded engine (or a remote backend). */
import { parseArgs } from 'node:util'

import { VtcError } from '../errors.js'
import { createServer, type ServerOptions } from '../server/index.js'
import { BACKEND_OPTIONS, backendFromArgs, positiveInt } from './reason.js'

export const SERVE_HELP = `usage: vtc-r1 serve (--model DIR | --base-url URL [--api-model NAME]) [options]
  Serves the model over an OpenAI-compatible API: POST /v1/chat/completions (JSON or SSE streaming, text and
  image parts), GET /v1/models, GET /health. The model "<name>:vtc" (or a request field "vtc": true) runs the
  VTC-R1 optical-memory loop server-side and returns every round's output plus a "vtc" summary.

  --model DIR           a Hugging Face model directory, run in-process by the embedded engine
  --device cpu|cuda     embedded engine device (default cpu)
  --dtype f32|bf16|f16  embedded engine weight type (default f32)
  --quantize Q          embedded engine: quantize the decoder's weights (q8_0, q6k, q5k, q4k, q4_0)
  --quant-cache-dir DIR where quantized weights are cached (default: the OS cache directory)
  --image-max-pixels N  embedded engine: shrink each image to at most N pixels first, as LLaMA-Factory's
                        image_max_pixels did in training (VTC-R1 checkpoints: 262144)
  --max-pixels N        embedded engine: the image processor's pixel budget (size.longest_edge)
  --base-url URL        serve a remote OpenAI-compatible server instead (adds the vtc mode in front of it)
  --api-model NAME      the remote model id (default: the first one it lists)
  --api-key KEY         bearer token for the remote server (default: $OPENAI_API_KEY)
  --context-length N    the context window to plan with (the vtc mode's budget check; /v1/models lists it)
  --served-model-name NAME  the model id /v1/models lists and requests must use or omit (default: the
                        model directory's name, or the remote model id); NAME:vtc is its vtc mode
  --host HOST           default 127.0.0.1
  --port N              default 8000
  --max-body-mb N       largest request body (default 64)
  --max-batch N         embedded engine: requests decoded together, 1 to 16 (default 8)
  --max-queue N         requests admitted at once, running or waiting (default 64); more get 429 + Retry-After
  --images-dir DIR      accept image parts given as local file paths inside DIR
  --local-images        accept any local file path the server can read (default only on a loopback host)
  --no-local-images     accept data URLs only
  --no-vtc              turn the optical-memory mode off
  --max-rounds N        vtc mode: most rounds (default 8); a request's vtc.max_rounds may ask fewer
  --round-tokens N      vtc mode: most tokens a round (default 8192); a request's vtc.round_tokens may ask
                        fewer. A request's max_tokens counts the tokens of all its rounds together
  --quiet               no request log`

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]'])

export async function serveCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...BACKEND_OPTIONS,
      host: { type: 'string' },
      port: { type: 'string' },
      'max-body-mb': { type: 'string' },
      'max-batch': { type: 'string' },
      'max-queue': { type: 'string' },
      'images-dir': { type: 'string' },
      'local-images': { type: 'boolean' },
      'no-local-images': { type: 'boolean' },
      'no-vtc': { type: 'boolean' },
      'max-rounds': { type: 'string' },
      'round-tokens': { type: 'string' },
      'served-model-name': { type: 'string' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (values.help) {
    console.log(SERVE_HELP)
    return
  }
  if (positionals.length) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `serve: unexpected argument ${JSON.stringify(positionals[0])}`)
  const host = values.host ?? '127.0.0.1'
  const port = values.port === undefined ? 8000 : Number(values.port)
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--port ${values.port}: expected 0–65535`)
  const localImages: boolean | string = values['no-local-images']
    ? false
    : (values['images-dir'] ?? (values['local-images'] ? true : LOOPBACK.has(host)))
  for (const flag of ['max-rounds', 'round-tokens'] as const) {
    if (values['no-vtc'] && values[flag] !== undefined) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `serve: --${flag} applies to the vtc mode, which --no-vtc turns off`)
  }
  const options: ServerOptions = {
    localImages,
    maxBodyBytes: values['max-body-mb'] === undefined ? undefined : positiveInt('--max-body-mb', values['max-body-mb']) * 1024 * 1024,
    maxQueue: values['max-queue'] === undefined ? undefined : positiveInt('--max-queue', values['max-queue']),
    vtc: values['no-vtc']
      ? false
      : {
          ...(values['max-rounds'] !== undefined ? { maxRounds: positiveInt('--max-rounds', values['max-rounds']) } : {}),
          ...(values['round-tokens'] !== undefined ? { roundTokens: positiveInt('--round-tokens', values['round-tokens']) } : {}),
        },
    servedModelName: values['served-model-name'],
    log: values.quiet ? undefined : (line) => console.error(`${new Date().toISOString()} ${line}`),
  }

  if (values['max-batch'] !== undefined && !values.model) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', 'serve: --max-batch applies to the embedded engine (--model DIR)')
  const maxBatch = values['max-batch'] === undefined ? undefined : positiveInt('--max-batch', values['max-batch'])
  if (maxBatch !== undefined && maxBatch > 16) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `--max-batch ${maxBatch}: at most 16`)
  const backend = await backendFromArgs(values, 'serve', maxBatch)
  const server = createServer(backend, options)
  const { url } = await server.listen(port, host)
  console.error(`vtc-r1: serving ${server.modelIds.join(', ')} at ${url}/v1`)
  console.error(
    `  images: data URLs${localImages === false ? '' : localImages === true ? ' and local file paths' : ` and local files in ${localImages}`}; ` +
      `Ctrl-C to stop`,
  )

  await new Promise<void>((resolve) => {
    let stopping = false
    const stop = (signal: string) => {
      if (stopping) {
        console.error('vtc-r1: forced exit')
        process.exit(1)
      }
      stopping = true
      console.error(`vtc-r1: ${signal}: finishing ${server.inflight} running request(s), then stopping`)
      server.close({ graceMs: 10_000 }).then(async () => {
        await (backend as { dispose?: () => unknown }).dispose?.()
        resolve()
      })
    }
    process.on('SIGINT', () => stop('SIGINT'))
    process.on('SIGTERM', () => stop('SIGTERM'))
  })
}
