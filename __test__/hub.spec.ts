/**
 * Models by Hugging Face id: `vtc-r1 pull`, `loadModel('org/name')` and `--model org/name` against a hub on
 * loopback (fake-hub.ts) that serves the e2e fixture model, and against a cache laid out as Python's
 * huggingface_hub writes it, with no server at all. The loaded models run on the real engine.
 */
import { execFile } from 'node:child_process'
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test from 'ava'

import { collect } from '../src/backends/types.js'
import { hubCacheDir, loadModel, pullModel, type EmbeddedBackend, type HubOptions } from '../src/index.js'
import { commitOf, FakeHub, gitSha1, isLfs, sha256, type FakeRepo } from './fake-hub.js'
import { SHARED } from './helpers.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const E2E = `${SHARED}golden/qwen3vl/e2e/`
const MODEL_FILES = ['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors', 'preprocessor_config.json', 'tokenizer.json', 'tokenizer_config.json']
const FILES: Record<string, Buffer> = Object.fromEntries(MODEL_FILES.map((f) => [f, readFileSync(join(E2E, f))]))
/** A repository also holds files vtc-r1 does not read; pull leaves them. */
const REPO: FakeRepo = { files: { ...FILES, 'README.md': Buffer.from('# a model card\n') } }
const WEIGHTS_SHA = sha256(FILES['model.safetensors'])
/** A loopback address where nothing listens: a request there fails at once. */
const NOWHERE = await new Promise<string>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as AddressInfo
    s.close(() => resolve(`http://127.0.0.1:${port}`))
  })
})

// this file's process: no hub settings of the machine's
for (const k of Object.keys(process.env)) if (/^(HF_|HUGGING_FACE_|HUGGINGFACE_|TRANSFORMERS_OFFLINE)/.test(k)) delete process.env[k]
process.env.HF_HOME = mkdtempSync(join(tmpdir(), 'vtc-hf-home-'))

const tmp = () => mkdtempSync(join(tmpdir(), 'vtc-hub-'))
const repoDir = (cache: string, id: string) => join(cache, `models--${id.replace('/', '--')}`)

const cli = (args: string[], env: Record<string, string>) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, ['--import=tsx', join(ROOT, 'src/cli/main.ts'), ...args], { cwd: ROOT, env: { PATH: process.env.PATH!, ...env } }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  )

const PROMPT = [{ role: 'user' as const, content: 'What is 2+2?' }]
const greedy = async (model: EmbeddedBackend) => {
  try {
    return (await collect(model.chat(PROMPT, { maxTokens: 8, temperature: 0 }))).text
  } finally {
    model.dispose()
  }
}
let expected: Promise<string> | undefined
/** The fixture loaded from its directory: what a model by id must generate. */
const reference = () => (expected ??= loadModel(E2E).then(greedy))

/** Writes a hub cache as huggingface_hub does: blobs by sha256 / git sha1, relative symlinks, refs/main. */
function pythonCache(cache: string, id: string, files: Record<string, Buffer>): string {
  const repo = repoDir(cache, id)
  const commit = commitOf(id)
  mkdirSync(join(repo, 'blobs'), { recursive: true })
  mkdirSync(join(repo, 'snapshots', commit), { recursive: true })
  mkdirSync(join(repo, 'refs'))
  for (const [file, data] of Object.entries(files)) {
    const etag = isLfs(file) ? sha256(data) : gitSha1(data)
    writeFileSync(join(repo, 'blobs', etag), data)
    symlinkSync(`../../blobs/${etag}`, join(repo, 'snapshots', commit, file))
  }
  writeFileSync(join(repo, 'refs', 'main'), commit)
  mkdirSync(join(repo, '.no_exist', commit), { recursive: true })
  writeFileSync(join(repo, '.no_exist', commit, 'chat_template.json'), '') // what Python notes for an absent file
  return join(repo, 'snapshots', commit)
}

/** The fixture's weights as two shards and their index, as large checkpoints are published. */
function sharded(): Record<string, Buffer> {
  const whole = FILES['model.safetensors']
  const n = Number(whole.readBigUInt64LE(0))
  const header = JSON.parse(whole.subarray(8, 8 + n).toString()) as Record<string, { data_offsets: [number, number] }>
  const data = whole.subarray(8 + n)
  const names = Object.keys(header).filter((k) => k !== '__metadata__')
  const groups = [names.filter((k) => k.includes('embed_tokens')), names.filter((k) => !k.includes('embed_tokens'))]
  const out: Record<string, Buffer> = {}
  const weightMap: Record<string, string> = {}
  groups.forEach((group, i) => {
    const file = `model-0000${i + 1}-of-00002.safetensors`
    const h: Record<string, unknown> = { __metadata__: { format: 'pt' } }
    const parts: Buffer[] = []
    let offset = 0
    for (const k of group) {
      const [b, e] = header[k].data_offsets
      h[k] = { ...header[k], data_offsets: [offset, offset + e - b] }
      parts.push(data.subarray(b, e))
      offset += e - b
      weightMap[k] = file
    }
    let json = JSON.stringify(h)
    json += ' '.repeat((8 - (json.length % 8)) % 8)
    const len = Buffer.alloc(8)
    len.writeBigUInt64LE(BigInt(json.length))
    out[file] = Buffer.concat([len, Buffer.from(json), ...parts])
  })
  out['model.safetensors.index.json'] = Buffer.from(JSON.stringify({ metadata: { total_size: data.length }, weight_map: weightMap }))
  return out
}

/** A fake hub serving `repos`, closed after the test. */
async function hubFor(t: { teardown: (fn: () => Promise<void>) => void }, repos: Record<string, FakeRepo>): Promise<FakeHub> {
  const hub = await FakeHub.start(repos)
  t.teardown(() => hub.close())
  return hub
}

test.serial('vtc-r1 pull writes the cache as huggingface_hub does, resumes a broken transfer, and loadModel(id) then needs no network', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  hub.cut.set(WEIGHTS_SHA, 5_000_000) // the first transfer of the weights breaks off
  const home = tmp()
  const env = { HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_TOKEN: 'hf_secret' }
  const r = await cli(['pull', 'org/model'], env)
  t.is(r.code, 0, r.stderr)

  const repo = repoDir(join(home, 'hub'), 'org/model')
  const commit = commitOf('org/model')
  const snapshot = join(repo, 'snapshots', commit)
  t.is(r.stdout.trim(), snapshot)
  t.is(readFileSync(join(repo, 'refs', 'main'), 'utf8'), commit, 'refs/main holds the commit, no newline')
  t.deepEqual(readdirSync(snapshot).sort(), MODEL_FILES, 'the files the engine reads, not the model card')
  for (const file of MODEL_FILES) {
    const etag = isLfs(file) ? sha256(FILES[file]) : gitSha1(FILES[file])
    t.true(lstatSync(join(snapshot, file)).isSymbolicLink(), file)
    t.is(readlinkSync(join(snapshot, file)), `../../blobs/${etag}`, file)
    t.true(readFileSync(join(repo, 'blobs', etag)).equals(FILES[file]), file)
    t.regex(r.stderr, new RegExp(`${file.replace('.', '\\.')}.*: downloaded`))
  }
  t.deepEqual(readdirSync(join(repo, 'blobs')).filter((f) => f.endsWith('.incomplete')), [])

  // the broken transfer was resumed from where it stopped, not restarted
  const weights = hub.requests.filter((q) => q.server === 'cdn' && q.path.includes(WEIGHTS_SHA) && q.method === 'GET')
  t.is(weights.length, 2)
  t.is(weights[0].range, undefined)
  const from = Number(/^bytes=(\d+)-$/.exec(weights[1].range ?? '')?.[1])
  t.true(from > 0 && from <= 5_000_000, weights[1].range)
  // the token goes to the hub only, never to the CDN's signed URLs
  t.true(hub.requests.filter((q) => q.server === 'hub').every((q) => q.authorization === 'Bearer hf_secret'))
  t.true(hub.requests.filter((q) => q.server === 'cdn').every((q) => q.authorization === undefined))

  // a second pull asks only which commit main is, and downloads nothing
  const before = hub.requests.length
  const again = await cli(['pull', 'org/model'], env)
  t.is(again.code, 0, again.stderr)
  t.regex(again.stderr, /0 files downloaded, 7 already in/)
  t.deepEqual(hub.requests.slice(before).map((q) => q.path), [`/api/models/org/model/revision/main`])

  // with HF_HOME pointing at that cache, loadModel by id loads the pulled snapshot with the hub gone
  await hub.close()
  process.env.HF_HOME = home
  process.env.HF_ENDPOINT = NOWHERE
  try {
    t.is(hubCacheDir(), join(home, 'hub'))
    const model = await loadModel('org/model')
    t.is(model.name, 'org/model')
    t.is(model.dir, snapshot)
    t.is(await greedy(model), await reference())
  } finally {
    delete process.env.HF_ENDPOINT
  }
})

test('a cache written by Python loads with no server, in-process and as --model org/name', async (t) => {
  const cache = tmp()
  const snapshot = pythonCache(cache, 'Qwen/Qwen3-VL-Tiny', FILES)
  const model = await loadModel('Qwen/Qwen3-VL-Tiny', { hub: { cacheDir: cache, endpoint: NOWHERE } })
  t.is(model.dir, snapshot)
  t.is(await greedy(model), await reference())

  const r = await cli(['reason', '--model', 'Qwen/Qwen3-VL-Tiny', '--max-rounds', '1', '--round-tokens', '4', '--quiet', 'What is 2+2?'], {
    HF_HUB_CACHE: cache,
    HF_ENDPOINT: NOWHERE,
  })
  t.is(r.code, 0, r.stderr)
  t.regex(r.stdout, /output tokens/)
  t.notRegex(r.stderr, /downloaded/)

  // eval records the id and fingerprints the snapshot's files, so a resumed run cannot mix models
  const out = tmp()
  const e = await cli(['eval', '--model', 'Qwen/Qwen3-VL-Tiny', '--bench', 'math500', '--limit', '1', '--mode', 'vtc', '--max-rounds', '1', '--round-tokens', '4', '--out', out], {
    HF_HUB_CACHE: cache,
    HF_ENDPOINT: NOWHERE,
  })
  t.is(e.code, 0, e.stderr)
  const run = JSON.parse(readFileSync(join(out, 'run.json'), 'utf8')) as { options: { model: string; modelFiles: Record<string, string> } }
  t.is(run.options.model, 'Qwen/Qwen3-VL-Tiny')
  t.deepEqual(Object.keys(run.options.modelFiles).sort(), MODEL_FILES)
})

test.serial('an existing directory wins over an id; a path that is neither is named in the error', async (t) => {
  const cwd = tmp()
  const dir = join(cwd, 'org', 'model')
  mkdirSync(dir, { recursive: true })
  for (const [f, data] of Object.entries(FILES)) writeFileSync(join(dir, f), data)
  const prev = process.cwd()
  process.chdir(cwd)
  try {
    // "org/model" exists here as a directory: it is loaded as one, with no cache and no hub
    const model = await loadModel('org/model', { hub: { cacheDir: join(cwd, 'no-cache'), endpoint: NOWHERE } })
    t.is(model.dir, 'org/model')
    model.dispose()
  } finally {
    process.chdir(prev)
  }
  await t.throwsAsync(loadModel(join(cwd, 'missing', 'model')), {
    code: 'ERR_VTC_MODEL_NOT_FOUND',
    message: `${join(cwd, 'missing', 'model')}: no such directory, and not a Hugging Face model id (org/name)`,
  })
})

test('a pull stopped midway keeps its partial file and leaves no ref; the next run resumes it with a Range request', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  const cacheDir = tmp()
  const stop = new AbortController()
  const options: HubOptions = { cacheDir, endpoint: hub.endpoint }
  const err = await t.throwsAsync(
    pullModel('org/model', {
      ...options,
      signal: stop.signal,
      onProgress: (p) => {
        if (p.file === 'model.safetensors' && p.bytes > 14_000_000) stop.abort()
      },
    }),
  )
  t.is((err as { code?: string }).code, 'ABORT_ERR')
  const repo = repoDir(cacheDir, 'org/model')
  const partial = statSync(join(repo, 'blobs', `${WEIGHTS_SHA}.incomplete`)).size
  t.true(partial > 0 && partial < FILES['model.safetensors'].length)
  t.false(existsSync(join(repo, 'refs', 'main')), 'no ref names an incomplete snapshot')
  t.false(existsSync(join(repo, 'snapshots', commitOf('org/model'), 'model.safetensors')))
  await t.throwsAsync(loadModel('org/model', { hub: { ...options, offline: true } }), {
    code: 'ERR_VTC_OFFLINE',
    message: /org\/model is not a directory, so it was taken as a Hugging Face model id; .* has no snapshot of main\) and HF_HUB_OFFLINE is set: run vtc-r1 pull org\/model/,
  })

  const done: string[] = []
  const r = await pullModel('org/model', { ...options, onProgress: (p) => p.status === 'done' && done.push(p.file) })
  t.deepEqual(done, ['model.safetensors'], 'only the unfinished file is downloaded')
  const resumed = hub.requests.find((q) => q.server === 'cdn' && q.path.includes(WEIGHTS_SHA) && q.range)
  t.is(resumed?.range, `bytes=${partial}-`)
  t.true(readFileSync(join(r.dir, 'model.safetensors')).equals(FILES['model.safetensors']))
  t.is(await greedy(await loadModel('org/model', { hub: { ...options, offline: true } })), await reference())
})

test('a transfer that stalls is given up after HF_HUB_DOWNLOAD_TIMEOUT and resumed; an unreachable hub is named', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  hub.stall.set(WEIGHTS_SHA, 3_000_000)
  const home = tmp()
  const r = await cli(['pull', 'org/model'], { HF_HOME: home, HF_ENDPOINT: hub.endpoint, HF_HUB_DOWNLOAD_TIMEOUT: '1' })
  t.is(r.code, 0, r.stderr)
  const weights = hub.requests.filter((q) => q.server === 'cdn' && q.path.includes(WEIGHTS_SHA))
  t.is(weights.length, 2)
  t.regex(weights[1].range ?? '', /^bytes=[1-9]\d*-$/)
  t.true(readFileSync(join(r.stdout.trim(), 'model.safetensors')).equals(FILES['model.safetensors']))

  await t.throwsAsync(pullModel('org/model', { cacheDir: tmp(), endpoint: NOWHERE }), {
    code: 'ERR_VTC_HUB_UNREACHABLE',
    message: `cannot reach ${NOWHERE} for org/model (ECONNREFUSED); check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the cache`,
  })
})

test('a sharded checkpoint is pulled through its index and loads', async (t) => {
  const files = { ...FILES, ...sharded() }
  delete files['model.safetensors']
  const hub = await hubFor(t, { 'org/sharded': { files } })
  const cacheDir = tmp()
  const r = await pullModel('org/sharded', { cacheDir, endpoint: hub.endpoint })
  t.deepEqual(readdirSync(r.dir).filter((f) => f.includes('safetensors')).sort(), [
    'model-00001-of-00002.safetensors',
    'model-00002-of-00002.safetensors',
    'model.safetensors.index.json',
  ])
  t.is(await greedy(await loadModel('org/sharded', { hub: { cacheDir, endpoint: NOWHERE } })), await reference())
})

test('a renamed repository is followed through the hub relative redirects', async (t) => {
  const hub = await hubFor(t, { 'org/model': { ...REPO, renamedFrom: 'old-org/model' } })
  const r = await pullModel('old-org/model', { cacheDir: tmp(), endpoint: hub.endpoint })
  t.true(readFileSync(join(r.dir, 'config.json')).equals(FILES['config.json']))
  t.true(hub.requests.some((q) => q.path.startsWith('/org/model/resolve/')))
})

test('two loads of one id at once download each file once', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  const options = { cacheDir: tmp(), endpoint: hub.endpoint }
  const [a, b] = await Promise.all([pullModel('org/model', options), pullModel('org/model', options)])
  t.is(a.dir, b.dir)
  t.is(hub.requests.filter((q) => q.server === 'cdn' && q.path.includes(WEIGHTS_SHA)).length, 1)
  t.true(readFileSync(join(a.dir, 'model.safetensors')).equals(FILES['model.safetensors']))
})

test('hub errors name the model and what the hub answered: 404 repository and revision, 401 and 403 gated', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO, 'org/gated': { ...REPO, gated: 'hf_good' } })
  const base = { cacheDir: tmp(), endpoint: hub.endpoint }
  await t.throwsAsync(loadModel('org/nope', { hub: base }), {
    code: 'ERR_VTC_MODEL_NOT_FOUND',
    message: `org/nope is not a directory, so it was taken as a Hugging Face model id: no model org/nope on ${hub.endpoint} (HTTP 404 RepoNotFound: Repository not found); check the id, or set HF_TOKEN if it is private`,
  })
  await t.throwsAsync(pullModel('org/model', { ...base, revision: 'v9' }), {
    code: 'ERR_VTC_MODEL_NOT_FOUND',
    message: /^org\/model has no revision "v9" on .* \(HTTP 404 RevisionNotFound/,
  })
  await t.throwsAsync(pullModel('org/gated', base), {
    code: 'ERR_VTC_HUB_AUTH',
    message: `org/gated is gated (HTTP 401 GatedRepo: Access to model org/gated is restricted.); accept its conditions at ${hub.endpoint}/org/gated and set HF_TOKEN to a token of that account`,
  })
  await t.throwsAsync(pullModel('org/gated', { ...base, token: 'hf_other' }), {
    code: 'ERR_VTC_HUB_AUTH',
    message: /^org\/gated is gated and the token sent \(HF_TOKEN\) has no access to it \(HTTP 403 GatedRepo/,
  })
  await t.throwsAsync(pullModel('org/model', { ...base, token: 'hf_invalid_1' }), {
    code: 'ERR_VTC_HUB_AUTH',
    message: 'the hub refused the token (HF_TOKEN) for org/model (HTTP 401: Invalid credentials in Authorization header); set a valid one',
  })
  // the token huggingface-cli login saved in $HF_HOME/token opens the gate
  const home = tmp()
  writeFileSync(join(home, 'token'), 'hf_good\n')
  const r = await cli(['pull', 'org/gated'], { HF_HOME: home, HF_ENDPOINT: hub.endpoint })
  t.is(r.code, 0, r.stderr)
  t.true(readFileSync(join(r.stdout.trim(), 'config.json')).equals(FILES['config.json']))
})

test('a repository without safetensors weights is refused, naming what it has', async (t) => {
  const { 'model.safetensors': _, ...noWeights } = FILES
  const hub = await hubFor(t, { 'org/bin': { files: { ...noWeights, 'pytorch_model.bin': Buffer.from('x') } } })
  await t.throwsAsync(pullModel('org/bin', { cacheDir: tmp(), endpoint: hub.endpoint }), {
    code: 'ERR_VTC_MODEL',
    message: /^org\/bin \(main\) has no model\.safetensors or model\.safetensors\.index\.json \(vtc-r1 reads safetensors weights\); its files: .*pytorch_model\.bin/,
  })
})

test('bytes that do not match the hub checksum are refused and not kept', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  for (const [file, etag] of [
    ['model.safetensors', WEIGHTS_SHA],
    ['config.json', gitSha1(FILES['config.json'])],
  ]) {
    hub.corrupt.clear()
    hub.corrupt.add(file)
    const cacheDir = tmp()
    const repo = repoDir(cacheDir, 'org/model')
    await t.throwsAsync(pullModel('org/model', { cacheDir, endpoint: hub.endpoint }), {
      code: 'ERR_VTC_HUB_INTEGRITY',
      message: new RegExp(`^org/model ${file.replace('.', '\\.')}: the downloaded bytes do not match the hub's checksum \\(expected ${etag}, got [0-9a-f]+\\)`),
    })
    t.false(existsSync(join(repo, 'blobs', etag)), file)
    t.false(existsSync(join(repo, 'blobs', `${etag}.incomplete`)), file)
    t.false(existsSync(join(repo, 'snapshots', commitOf('org/model'), file)), file)
    t.false(existsSync(join(repo, 'refs', 'main')))
  }
})

test('a download the disk cannot hold is refused before it starts', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  hub.announce.set('model.safetensors', 2 ** 52)
  await t.throwsAsync(pullModel('org/model', { cacheDir: tmp(), endpoint: hub.endpoint }), {
    code: 'ERR_VTC_DISK_FULL',
    message: /^org\/model needs 4503599\.6 GB more in .*blobs, which has .* free; free space or set HF_HUB_CACHE to a larger disk, then rerun$/,
  })
  t.false(hub.requests.some((q) => q.server === 'cdn'), 'no weights were requested')
})

test('offline: pull refuses without a request, and a partial cache names the files it lacks', async (t) => {
  const hub = await hubFor(t, { 'org/model': REPO })
  await t.throwsAsync(pullModel('org/model', { cacheDir: tmp(), endpoint: hub.endpoint, offline: true }), {
    code: 'ERR_VTC_OFFLINE',
    message: /^cannot download org\/model: offline \(HF_HUB_OFFLINE is set\)/,
  })
  t.is(hub.requests.length, 0)

  const cache = tmp()
  const snapshot = pythonCache(cache, 'org/partial', { 'config.json': FILES['config.json'] }) // hf_hub_download of the config alone
  const r = await cli(['reason', '--model', 'org/partial', 'What is 2+2?'], { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: '1' })
  t.is(r.code, 1)
  t.regex(r.stderr, new RegExp(`its snapshot ${snapshot} lacks tokenizer\\.json, model\\.safetensors\\) and HF_HUB_OFFLINE is set`))
})
