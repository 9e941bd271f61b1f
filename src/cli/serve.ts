/** `vtc-r1 serve`: the OpenAI-compatible HTTP server over the embedded engine (or a remote backend). */
import { parseArgs } from 'node:util'

import { VtcError } from '../errors.js'
import { createServer, type ServerOptions } from '../server/index.js'
import { BACKEND_OPTIONS, backendFromArgs, positiveInt } from './reason.js'

export const SERVE_HELP = `usage: vtc-r1 serve (--model DIR|ORG/NAME | --base-url URL [--api-model NAME]) [options]
  Serves the model over an OpenAI-compatible API: POST /v1/chat/completions (JSON or SSE streaming, text and
  image parts), GET /v1/models, GET /health. The model "<name>:vtc" (or a request field "vtc": true) runs the
  VTC-R1 optical-memory loop server-side and returns every round's output plus a "vtc" summary.

  --model DIR|ORG/NAME  a Hugging Face model directory, or a model id from the Hugging Face cache (downloaded
                        into it when missing, see vtc-r1 pull), run in-process by the embedded engine
  --device cpu|cuda     embedded engine device (default cpu)
  --dtype f32|bf16|f16  embedded engine weight type (default f32)
  --kv-cache f32|bf16|f16  embedded engine: the KV cache's type (default: --dtype)
  --quantize Q          embedded engine: quantize the decoder's weights (q8_0, q6k, q5k, q4k, q4_0)
  --quant-cache-dir DIR where quantized weights are cached (default: the OS cache directory)
  --image-max-pixels N  embedded engine: shrink each image to at most N pixels first, as LLaMA-Factory's
                        image_max_pixels did in training (VTC-R1 checkpoints: 262144)
  --max-pixels N        embedded engine: the image processor's pixel budget (size.longest_edge)
  --base-url URL        serve a remote OpenAI-compatible server instead (adds the vtc mode in front of it);
                        its bearer token is $OPENAI_API_KEY
  --api-model NAME      the remote model id (default: the first one it lists)
  --context-length N    the context window to plan with (the vtc mode's budget check; /v1/models lists it)
  --served-model-name NAME  the model id /v1/models lists and requests must use or omit (default: the
                        model directory's name, or the remote model id); NAME:vtc is its vtc mode
  --host HOST           default 127.0.0.1
  --port N              default 8000
  --max-body-mb N       largest request body (default 64)
  --max-batch N         embedded engine: requests decoded together, 1 to 16 (default 8)
  --max-queue N         requests admitted at once, running or waiting (default 64); more get 429 + Retry-After
  --api-key KEY         clients must send "Authorization: Bearer KEY" (repeatable: one key per client; or
                        $VTC_R1_API_KEY); prompt caches are kept apart per key. Without one, anyone who reaches
                        the port may use the model: a warning when --host is not loopback
  --allowed-origin URL  web pages of this origin may call the server (CORS, repeatable; * for any); a request
                        from any other origin gets 403 (default: none)
  --allowed-media-dir DIR  image parts may name local files inside DIR (links followed, must stay inside;
                        regular files only); default: data URLs only
  --max-images N        image parts in one request (default 64)
  --image-pixel-limit N pixels of one image, read from its header before decoding (default 16777216)
  --request-timeout S   a chat request's deadline in seconds, generation included (default 600; 0: none)
  --header-timeout S    time a client has to send the request headers (default 10)
  --body-timeout S      time a client has to send the whole request (default 60)
  --no-vtc              turn the optical-memory mode off
  --max-rounds N        vtc mode: most rounds (default 8); a request's vtc.max_rounds may ask fewer
  --round-tokens N      vtc mode: most tokens a round (default 8192); a request's vtc.round_tokens may ask
                        fewer. A request's max_tokens counts the tokens of all its rounds together
  --quiet               no request log`

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|localhost|::1|\[::1\])$/

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
      // the server's own keys; a remote backend's comes from $OPENAI_API_KEY
      'api-key': { type: 'string', multiple: true },
      'allowed-origin': { type: 'string', multiple: true },
      'allowed-media-dir': { type: 'string' },
      'max-images': { type: 'string' },
      'image-pixel-limit': { type: 'string' },
      'request-timeout': { type: 'string' },
      'header-timeout': { type: 'string' },
      'body-timeout': { type: 'string' },
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
  for (const flag of ['images-dir', 'local-images', 'no-local-images'] as const) {
    if (values[flag] !== undefined) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `serve: --${flag} is gone: local images are read only from --allowed-media-dir DIR`)
  }
  const apiKeys = values['api-key'] ?? (process.env.VTC_R1_API_KEY ? [process.env.VTC_R1_API_KEY] : [])
  const mediaDir = values['allowed-media-dir']
  for (const flag of ['max-rounds', 'round-tokens'] as const) {
    if (values['no-vtc'] && values[flag] !== undefined) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `serve: --${flag} applies to the vtc mode, which --no-vtc turns off`)
  }
  const options: ServerOptions = {
    apiKeys,
    allowedOrigins: values['allowed-origin'],
    allowedMediaDir: mediaDir,
    maxImages: values['max-images'] === undefined ? undefined : wholeNumber('--max-images', values['max-images']),
    imagePixelLimit: values['image-pixel-limit'] === undefined ? undefined : positiveInt('--image-pixel-limit', values['image-pixel-limit']),
    requestTimeoutMs: milliseconds('--request-timeout', values['request-timeout']),
    headersTimeoutMs: milliseconds('--header-timeout', values['header-timeout']),
    bodyTimeoutMs: milliseconds('--body-timeout', values['body-timeout']),
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
  const backend = await backendFromArgs({ ...values, 'api-key': undefined }, 'serve', maxBatch)
  const server = createServer(backend, options)
  const { url } = await server.listen(port, host)
  console.error(`vtc-r1: serving ${server.modelIds.join(', ')} at ${url}/v1`)
  console.error(`  images: data URLs${mediaDir === undefined ? '' : ` and local files in ${mediaDir}`}; Ctrl-C to stop`)
  if (!LOOPBACK.test(host) && !apiKeys.length) {
    console.error(`vtc-r1: warning: listening on ${host} without an API key: anyone who can reach this address can use the model; set --api-key KEY`)
  }

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

/** A flag in seconds (decimals allowed, 0: no limit) as milliseconds; undefined when absent. */
function milliseconds(flag: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const s = Number(v)
  if (!v.trim() || !Number.isFinite(s) || s < 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected seconds, 0 or more`)
  return Math.round(s * 1000)
}

function wholeNumber(flag: string, v: string): number {
  const n = Number(v)
  if (!v.trim() || !Number.isSafeInteger(n) || n < 0) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${flag} ${v}: expected a whole number, 0 or more`)
  return n
}
