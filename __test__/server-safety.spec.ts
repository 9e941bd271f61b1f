/**
 * The server as an attacker meets it (issue #17), over HTTP on loopback with the real embedded engine on the e2e
 * fixture model (a small random Qwen3-VL): each attack gets its 4xx, and the server then still answers a normal
 * request promptly. The last tests run `vtc-r1 serve` in a child process, as an operator would.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { loadModel } from '../src/index.js'
import { createServer, type ServerOptions } from '../src/server/index.js'
import { blackPng, SHARED } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const E2E = `${SHARED}golden/qwen3vl/e2e/`
const PAGE = readFileSync(`${E2E}m500-011_page_002.png`)
const dataUrl = (bytes: Buffer) => `data:image/png;base64,${bytes.toString('base64')}`
const json = { 'content-type': 'application/json' }

const post = (url: string, body: unknown, headers: Record<string, string> = json) =>
  fetch(`${url}/v1/chat/completions`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) })
const ask = (text: string, ...images: Buffer[]) => ({
  messages: [{ role: 'user', content: [{ type: 'text', text }, ...images.map((b) => ({ type: 'image_url', image_url: { url: dataUrl(b) } }))] }],
  max_tokens: 2,
})

/** A server over the e2e model, loaded with `contextLength` when given. */
async function serveE2E(t: ExecutionContext, options: ServerOptions = {}, dir = E2E, contextLength?: number): Promise<string> {
  const model = await loadModel(dir, contextLength ? { contextLength } : {})
  const server = createServer(model, options)
  const { url } = await server.listen(0, '127.0.0.1')
  t.teardown(async () => {
    await server.close()
    model.dispose()
  })
  return url
}

/** The refused request's status and error; then a normal request with a page image must answer within a second or two. */
async function refusedThenNormal(t: ExecutionContext, url: string, res: Promise<Response>, headers = json): Promise<{ status: number; error: any }> {
  const r = await res
  const error = ((await r.json()) as any).error
  const t0 = performance.now()
  const ok = await post(url, ask('What does the page say?', PAGE), headers)
  t.is(ok.status, 200, 'a normal request afterwards')
  t.true(performance.now() - t0 < 5000, `answered in ${(performance.now() - t0).toFixed(0)} ms`)
  return { status: r.status, error }
}

test('image bombs and broken images are 400s before the engine spends anything on them', async (t) => {
  const url = await serveE2E(t)
  // 32 KB declaring 65536×4096: ~140 s and 1.9 GB of engine time before
  const bomb = blackPng(65536, 4096)
  t.true(bomb.length < 40_000)
  const t0 = performance.now()
  const one = await refusedThenNormal(t, url, post(url, ask('Read this.', bomb)))
  t.true(performance.now() - t0 < 5000)
  t.is(one.status, 400)
  t.regex(one.error.message, /a 65536×4096 image \(268435456 pixels\) is over the server's limit of 16777216 pixels per image \(--image-pixel-limit\)/)
  const eight = await refusedThenNormal(t, url, post(url, ask('Read these.', ...Array(8).fill(bomb))))
  t.is(eight.status, 400)
  t.is(eight.error.code, 'image_too_large')
  const many = await refusedThenNormal(t, url, post(url, ask('Read these.', ...Array(65).fill(blackPng(64, 64)))))
  t.is(many.status, 400)
  t.regex(many.error.message, /more than 64 images in one request, the server's limit \(--max-images\)/)

  // a header the server can size, pixels the engine cannot decode: the request's fault, a 400 (clients retry 500s)
  const truncated = PAGE.subarray(0, 200)
  const broken = await refusedThenNormal(t, url, post(url, ask('Read this.', truncated)))
  t.is(broken.status, 400)
  t.is(broken.error.code, 'ERR_VTC_IMAGE')
  // a whole VP8X header (flags, then width − 1 and height − 1 in 3 bytes each): 64×64
  const webp = Buffer.concat([Buffer.from('RIFF\x24\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00', 'latin1'), Buffer.from('000000003f00003f0000', 'hex')])
  const unsupported = await refusedThenNormal(t, url, post(url, ask('Read this.', webp)))
  t.is(unsupported.status, 400)
  t.regex(unsupported.error.message, /WebP is not supported/)
  // a header cut short is refused from the bytes given, never sized from memory past their end
  const cut = await refusedThenNormal(t, url, post(url, ask('Read this.', webp.subarray(0, 29))))
  t.is(cut.status, 400)
  t.regex(cut.error.message, /cannot read the image's size from its header/)
})

test('a prompt over the context and a max_tokens over it are 400s; 2^32 + 1 is not read as 1', async (t) => {
  const url = await serveE2E(t, {}, E2E, 600)
  const long = await refusedThenNormal(t, url, post(url, ask('word '.repeat(2000))))
  t.is(long.status, 400)
  t.is(long.error.code, 'ERR_VTC_CONTEXT_LENGTH')
  t.regex(long.error.message, /context is 600 tokens/)
  const huge = await refusedThenNormal(t, url, post(url, { ...ask('Hi'), max_tokens: 2 ** 32 + 1 }))
  t.is(huge.status, 400)
  t.regex(huge.error.message, /^max_tokens: 4294967297 is more than the model's context of 600 tokens \(--context-length\)/)
})

/** The e2e model with another chat template (its other files linked). */
function withTemplate(template: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'vtc-template-'))
  for (const f of readdirSync(E2E)) if (f !== 'chat_template.jinja') symlinkSync(join(E2E, f), join(dir, f))
  writeFileSync(join(dir, 'chat_template.jinja'), template)
  return dir
}

test('messages a chat template refuses, or that run it out of fuel, are 400s; a template that does not parse is a 500', async (t) => {
  // refuses a conversation that opens with the assistant, and is quadratic in a message's length
  const picky = withTemplate(
    "{% for message in messages %}{% if loop.first and message['role'] == 'assistant' %}{{ raise_exception('Conversations must start with a user message.') }}{% endif %}" +
      "<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}" +
      "{% for a in range(c['text']|length) %}{% for b in range(c['text']|length) %}{% endfor %}{% endfor %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n" +
      '{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}',
  )
  const url = await serveE2E(t, {}, picky)
  const opener = await refusedThenNormal(t, url, post(url, { messages: [{ role: 'assistant', content: 'Hi' }], max_tokens: 2 }))
  t.is(opener.status, 400)
  t.is(opener.error.code, 'ERR_VTC_CHAT_TEMPLATE')
  t.regex(opener.error.message, /raise_exception: Conversations must start with a user message/)
  const fuel = await refusedThenNormal(t, url, post(url, ask('x'.repeat(10_000))))
  t.is(fuel.status, 400)
  t.regex(fuel.error.message, /the template ran out of its budget of \d+ steps/)

  const broken = await serveE2E(t, {}, withTemplate('{% for message in messages %}{{ message }}{% endfor %'))
  const res = await post(broken, ask('Hi'))
  t.is(res.status, 500)
  t.regex(((await res.json()) as any).error.message, /syntax error/)
})

test('cached_tokens reveals nothing across API keys or cache_salt values', async (t) => {
  const url = await serveE2E(t, { apiKeys: ['key-alice', 'key-bob'] })
  const prompt = { ...ask('Find the sum of all integer bases b>9 for which 17_b is a divisor of 97_b. '.repeat(4)), max_tokens: 1 }
  const cached = async (key: string, extra: Record<string, unknown> = {}) => {
    const res = await post(url, { ...prompt, ...extra }, { ...json, authorization: `Bearer ${key}` })
    t.is(res.status, 200)
    return ((await res.json()) as any).usage.prompt_tokens_details.cached_tokens as number
  }
  t.is(await cached('key-alice'), 0)
  t.true((await cached('key-alice')) > 100, 'the same key reuses its cache')
  t.is(await cached('key-bob'), 0, "another key does not see alice's prompt")
  t.is(await cached('key-alice', { cache_salt: 'project-2' }), 0, 'nor another cache_salt')
  t.true((await cached('key-alice', { cache_salt: 'project-2' })) > 100)
})

/** `vtc-r1 serve` in a child process; resolves once it listens, with its URL and everything it printed. */
async function serveCli(t: ExecutionContext, args: string[], env: Record<string, string> = {}): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  // V8 grows its young generation (up to 48 MB) with the allocation rate; held at 2 MB semi-spaces, the RSS shows
  // what the server keeps rather than how far the collector let garbage pile up
  const node = ['--max-semi-space-size=2', '--import=tsx']
  const child = spawn(process.execPath, [...node, join(ROOT, 'src/cli/main.ts'), 'serve', '--model', E2E, '--port', '0', '--quiet', ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
  })
  t.teardown(() => void child.kill('SIGKILL'))
  let stderr = ''
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d) => {
      stderr += d
      const m = / at (http:\/\/\S+)\/v1\n/.exec(stderr)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`serve exited with ${code}: ${stderr}`)))
  })
  return { child, url, stderr: () => stderr }
}

test('serve warns when it listens beyond loopback without an API key', async (t) => {
  const open = await serveCli(t, ['--host', '0.0.0.0'])
  // the warning may follow the listening line by a moment on a busy machine
  for (let i = 0; i < 100 && !/warning:/.test(open.stderr()); i++) await new Promise((r) => setTimeout(r, 50))
  t.regex(open.stderr(), /warning: listening on 0\.0\.0\.0 without an API key: anyone who can reach this address can use the model; set --api-key KEY/)
  open.child.kill('SIGKILL')
  const keyed = await serveCli(t, ['--host', '0.0.0.0'], { VTC_R1_API_KEY: 'k' })
  const local = `http://127.0.0.1:${new URL(keyed.url).port}`
  t.is((await fetch(`${local}/v1/models`)).status, 401)
  t.is((await fetch(`${local}/v1/models`, { headers: { authorization: 'Bearer k' } })).status, 200)
  t.notRegex(keyed.stderr(), /warning/)
})

/** Resident memory of a process, in bytes (Linux). */
const rss = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024

test('1,000 mixed good and hostile requests: every one answered as it should be, memory flat after the first 100', async (t) => {
  const key = 'k-0123456789'
  const { child, url } = await serveCli(t, ['--api-key', key, '--context-length', '1024', '--max-body-mb', '1', '--max-images', '4'])
  const auth = { ...json, authorization: `Bearer ${key}` }
  const good = (i: number) => ({ ...ask('What does the page say?'), cache_salt: `tenant-${Math.floor(i / 20) % 5}` })
  const bomb = blackPng(65536, 4096)
  const kinds: [number, (i: number) => Promise<Response>][] = [
    [200, (i) => post(url, good(i), auth)],
    [200, (i) => post(url, { ...ask('Read this.', PAGE), cache_salt: good(i).cache_salt }, auth)],
    [200, (i) => post(url, { ...good(i), stream: true }, auth)],
    [400, () => post(url, ask('Read this.', bomb), auth)],
    [400, () => post(url, ask('Read these.', ...Array(5).fill(PAGE)), auth)],
    [400, () => post(url, ask('Read this.', PAGE.subarray(0, 300)), auth)],
    [400, () => post(url, ask('word '.repeat(3000)), auth)],
    [400, () => post(url, { ...ask('Hi'), max_tokens: 2 ** 32 + 1 }, auth)],
    [400, () => post(url, { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: '/etc/passwd' } }] }] }, auth)],
    [400, () => post(url, '{"messages": [', auth)],
    [413, () => post(url, ask('x'.repeat(1.1 * 2 ** 20)), auth)],
    [415, () => post(url, JSON.stringify(ask('Hi')), { authorization: auth.authorization, 'content-type': 'text/plain' })],
    [401, () => post(url, ask('Hi'))],
    [403, () => post(url, ask('Hi'), { ...auth, origin: 'https://evil.example' })],
  ]
  let next = 0
  const run = async (until: number) => {
    const worker = async () => {
      for (let i = next++; i < until; i = next++) {
        const [status, send] = kinds[i % kinds.length]
        const res = await send(i)
        await res.arrayBuffer()
        if (res.status !== status) t.fail(`request ${i} (kind ${i % kinds.length}): ${res.status}, expected ${status}`)
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker))
    await new Promise((r) => setTimeout(r, 500))
    return rss(child.pid!)
  }
  const after100 = await run(100)
  const after1000 = await run(1000)
  t.log(`RSS after 100: ${(after100 / 2 ** 20).toFixed(1)} MiB; after 1000: ${(after1000 / 2 ** 20).toFixed(1)} MiB`)
  t.true(after1000 <= after100 * 1.1, `RSS grew from ${after100} to ${after1000} bytes`)
  const t0 = performance.now()
  t.is((await post(url, good(0), auth)).status, 200)
  t.true(performance.now() - t0 < 5000)
})
