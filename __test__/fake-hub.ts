/**
 * A Hugging Face hub on loopback for the tests (the real one is not reachable from here), answering as the hub
 * does: `GET /api/models/{id}/revision/{rev}` gives the commit and the files; `HEAD|GET /{id}/resolve/{rev}/{file}`
 * gives a small file with its git sha1 in ETag, and an LFS file (safetensors, tokenizer.json) as a 302 to a CDN
 * on another origin, with its sha256 and size in X-Linked-Etag / X-Linked-Size; errors carry X-Error-Code. The CDN
 * serves byte ranges. Every request is recorded; transfers can be cut, stalled, corrupted or announced too large.
 */
import { createHash } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface FakeRepo {
  files: Record<string, Buffer>
  /** Resolving files needs "Authorization: Bearer <gated>" (401 without a token, 403 with another). */
  gated?: string
  /** Requests for this old id are redirected (307, relative) to the repository's id, as after a rename. */
  renamedFrom?: string
}

export interface Recorded {
  server: 'hub' | 'cdn'
  method: string
  path: string
  range?: string
  authorization?: string
}

const hashes = new WeakMap<Buffer, string>()
export const sha256 = (b: Buffer) => hashes.get(b) ?? hashes.set(b, createHash('sha256').update(b).digest('hex')).get(b)!
export const gitSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex')
export const isLfs = (file: string) => file.endsWith('.safetensors') || file === 'tokenizer.json'
export const commitOf = (id: string) => createHash('sha1').update(`commit ${id}`).digest('hex')

export class FakeHub {
  readonly requests: Recorded[] = []
  /** LFS sha256 → bytes after which the next CDN transfer of it breaks off (once). */
  readonly cut = new Map<string, number>()
  /** LFS sha256 → bytes after which the next CDN transfer of it stalls, the connection left open (once). */
  readonly stall = new Map<string, number>()
  /** Files whose bytes are served altered (same size). */
  readonly corrupt = new Set<string>()
  /** File → the size the hub announces instead of its own. */
  readonly announce = new Map<string, number>()
  private constructor(
    private readonly repos: Record<string, FakeRepo>,
    private readonly hub: Server,
    private readonly cdn: Server,
  ) {}

  static async start(repos: Record<string, FakeRepo>): Promise<FakeHub> {
    let self: FakeHub | undefined
    const hub = createServer((req, res) => self!.onHub(req, res))
    const cdn = createServer((req, res) => self!.onCdn(req, res))
    self = new FakeHub(repos, hub, cdn)
    await Promise.all([hub, cdn].map((s) => new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))))
    return self
  }

  get endpoint(): string {
    return `http://127.0.0.1:${(this.hub.address() as AddressInfo).port}`
  }

  private get cdnOrigin(): string {
    return `http://127.0.0.1:${(this.cdn.address() as AddressInfo).port}`
  }

  async close(): Promise<void> {
    for (const s of [this.hub, this.cdn]) {
      s.closeAllConnections()
      await new Promise((resolve) => s.close(resolve))
    }
  }

  private record(server: Recorded['server'], req: IncomingMessage): void {
    this.requests.push({
      server,
      method: req.method!,
      path: decodeURIComponent(req.url!),
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
    })
  }

  private onHub(req: IncomingMessage, res: ServerResponse): void {
    this.record('hub', req)
    const fail = (status: number, code: string, message = code) => {
      res.writeHead(status, { ...(code ? { 'x-error-code': code } : {}), 'x-error-message': message, 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: message }))
    }
    if (req.headers.authorization?.startsWith('Bearer hf_invalid')) return fail(401, '', 'Invalid credentials in Authorization header')
    const parts = req.url!.split('?')[0].split('/').slice(1).map(decodeURIComponent)
    const api = parts[0] === 'api' && parts[1] === 'models'
    const [org, name, verb, rev, ...rest] = api ? parts.slice(2) : parts
    const id = `${org}/${name}`
    const renamed = Object.entries(this.repos).find(([, r]) => r.renamedFrom === id)
    if (renamed) {
      res.writeHead(307, { location: req.url!.replace(`/${id}/`, `/${renamed[0]}/`) })
      return void res.end()
    }
    const repo = this.repos[id]
    if (!repo) return fail(404, 'RepoNotFound', 'Repository not found')
    const commit = commitOf(id)
    if (rev !== 'main' && rev !== commit) return fail(404, 'RevisionNotFound', 'Invalid rev id')
    if (api && verb === 'revision') {
      res.writeHead(200, { 'content-type': 'application/json', 'x-repo-commit': commit })
      return void res.end(JSON.stringify({ id, sha: commit, siblings: Object.keys(repo.files).map((rfilename) => ({ rfilename })) }))
    }
    if (verb !== 'resolve') return fail(404, 'NotFound')
    if (repo.gated && req.headers.authorization !== `Bearer ${repo.gated}`) {
      return fail(req.headers.authorization ? 403 : 401, 'GatedRepo', `Access to model ${id} is restricted.`)
    }
    const file = rest.join('/')
    const data = repo.files[file]
    if (!data) return fail(404, 'EntryNotFound', `${file} does not exist on "${rev}"`)
    const size = String(this.announce.get(file) ?? data.length)
    if (isLfs(file)) {
      res.writeHead(302, {
        location: `${this.cdnOrigin}/blobs/${sha256(data)}?signature=x`,
        'x-linked-etag': `"${sha256(data)}"`,
        'x-linked-size': size,
        etag: `"${gitSha1(Buffer.from(`pointer ${sha256(data)}`))}"`,
        'x-repo-commit': commit,
      })
      return void res.end()
    }
    res.setHeader('etag', `"${gitSha1(data)}"`)
    res.setHeader('x-repo-commit', commit)
    this.send(req, res, this.corrupt.has(file) ? altered(data) : data, undefined)
  }

  private onCdn(req: IncomingMessage, res: ServerResponse): void {
    this.record('cdn', req)
    const hash = req.url!.split('?')[0].split('/').pop()
    for (const repo of Object.values(this.repos)) {
      for (const [file, data] of Object.entries(repo.files)) {
        if (sha256(data) === hash) return this.send(req, res, this.corrupt.has(file) ? altered(data) : data, hash)
      }
    }
    res.writeHead(404)
    res.end()
  }

  /** The bytes, or the range asked for; a transfer set to be cut breaks off after its bytes. */
  private send(req: IncomingMessage, res: ServerResponse, data: Buffer, hash: string | undefined): void {
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.range ?? '')?.[1] ?? 0)
    if (from > 0) res.writeHead(206, { 'content-range': `bytes ${from}-${data.length - 1}/${data.length}`, 'content-length': data.length - from })
    else res.writeHead(200, { 'content-length': data.length, 'accept-ranges': 'bytes' })
    if (req.method === 'HEAD') return void res.end()
    const body = data.subarray(from)
    const stall = hash === undefined ? undefined : this.stall.get(hash)
    if (stall !== undefined) {
      this.stall.delete(hash!)
      return void res.write(body.subarray(0, stall))
    }
    const cut = hash === undefined ? undefined : this.cut.get(hash)
    if (cut === undefined) return void res.end(body)
    this.cut.delete(hash!)
    res.write(body.subarray(0, cut), () => res.socket?.destroy())
  }
}

const altered = (data: Buffer) => {
  const out = Buffer.from(data)
  out[out.length - 1] ^= 0xff
  return out
}
