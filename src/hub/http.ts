/**
 * Requests to the Hugging Face hub (or a mirror at HF_ENDPOINT): the revision's commit and file list, each file's
 * metadata, and errors that say what the hub answered (401, 403 gated, 404 repository, revision or file).
 */
import { VtcError } from '../errors.js'

export const DEFAULT_ENDPOINT = 'https://huggingface.co'

/** Where and as whom the hub is asked, about which model. */
export interface HubConnection {
  endpoint: string
  id: string
  token?: string
  signal?: AbortSignal
  /** Milliseconds a request may wait for the server before it is given up (and retried). */
  timeoutMs: number
}

export interface RepoInfo {
  /** The commit the revision resolved to. */
  commit: string
  /** Every file of the repository at that commit. */
  files: string[]
}

export interface FileMeta {
  /** The blob's name in the cache: the sha256 of an LFS file, the git sha1 of another. */
  etag: string
  size?: number
  /** Where the bytes are: the resolve URL, or the CDN it redirects to. */
  url: string
}

/** A hub error; `retriable` for failures a second try may not meet (network, timeouts, 429, 5xx). */
export class HubError extends VtcError {
  constructor(
    code: string,
    message: string,
    readonly retriable = false,
    options?: { cause?: unknown },
  ) {
    super(code, message, options)
  }
}

/** The revision's commit and files: `GET /api/models/{id}/revision/{revision}`. */
export async function repoInfo(conn: HubConnection, revision: string): Promise<RepoInfo> {
  const url = `${conn.endpoint}/api/models/${conn.id}/revision/${encodeURIComponent(revision)}`
  const res = await retrying(conn, () => hubFetch(conn, url, { headers: { accept: 'application/json' } }, { revision }))
  let body: { sha?: unknown; siblings?: { rfilename?: unknown }[] }
  try {
    body = (await res.json()) as typeof body
  } catch (err) {
    throw new HubError('ERR_VTC_HUB_PROTOCOL', `${url}: the answer is not JSON (${(err as Error).message})`)
  }
  if (typeof body.sha !== 'string' || !/^[0-9a-f]{40}$/.test(body.sha) || !Array.isArray(body.siblings)) {
    throw new HubError('ERR_VTC_HUB_PROTOCOL', `${url}: the answer lacks the commit ("sha") or the file list ("siblings")`)
  }
  return { commit: body.sha, files: body.siblings.map((s) => String(s.rfilename)) }
}

/**
 * A file's blob name, size and location: `HEAD /{id}/resolve/{commit}/{file}`, as huggingface_hub asks it. The hub
 * answers an LFS file with a redirect to its CDN and the file's sha256 and size in X-Linked-Etag / X-Linked-Size,
 * and another file with its git sha1 in ETag. Relative redirects (a renamed repository) are followed.
 */
export async function fileMeta(conn: HubConnection, commit: string, file: string): Promise<FileMeta> {
  let url = `${conn.endpoint}/${conn.id}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`
  for (let hops = 0; hops < 5; hops++) {
    const res = await retrying(conn, () =>
      hubFetch(conn, url, { method: 'HEAD', redirect: 'manual', headers: { 'accept-encoding': 'identity' } }, { revision: commit, file }),
    )
    const location = res.headers.get('location')
    const redirect = res.status >= 300 && res.status < 400 && location !== null
    if (redirect && location.startsWith('/')) {
      url = new URL(location, url).href
      continue
    }
    const etag = (res.headers.get('x-linked-etag') ?? res.headers.get('etag'))?.replace(/^W\//, '').replace(/"/g, '')
    if (!etag || !/^[\w.-]+$/.test(etag) || /^\.+$/.test(etag)) {
      throw new HubError('ERR_VTC_HUB_PROTOCOL', `${url}: the hub gave no usable ETag for ${file} (${JSON.stringify(etag ?? null)})`)
    }
    const size = Number(res.headers.get('x-linked-size') ?? (redirect ? undefined : res.headers.get('content-length')) ?? NaN)
    return { etag, url: redirect ? new URL(location, url).href : url, ...(Number.isSafeInteger(size) && size >= 0 ? { size } : {}) }
  }
  throw new HubError('ERR_VTC_HUB_PROTOCOL', `${url}: too many redirects for ${file}`)
}

/**
 * One request, with the token only for the hub's own origin (a CDN gets signed URLs), no compression (sizes must
 * be the file's), a timeout for the answer to start, and errors that name the model and what the hub said.
 */
export async function hubFetch(
  conn: HubConnection,
  url: string,
  init: Omit<RequestInit, 'headers'> & { headers?: Record<string, string> },
  what: { revision?: string; file?: string },
  timer?: IdleTimer,
): Promise<Response> {
  const headers: Record<string, string> = { 'user-agent': 'vtc-r1', 'accept-encoding': 'identity', ...init.headers }
  if (conn.token && new URL(url).origin === new URL(conn.endpoint).origin) headers.authorization = `Bearer ${conn.token}`
  // a caller's timer goes on watching the body it reads; our own only the wait for the answer
  const watch = timer ?? idleTimer(conn)
  let res: Response
  try {
    res = await fetch(url, { ...init, headers, signal: watch.signal })
  } catch (err) {
    throw transferError(conn, watch, url, err)
  } finally {
    if (!timer) watch.clear()
  }
  if (res.ok || (init.redirect === 'manual' && res.status >= 300 && res.status < 400)) return res
  await res.body?.cancel().catch(() => {})
  throw statusError(conn, res, url, what)
}

export type IdleTimer = ReturnType<typeof idleTimer>

/** An abort signal that fires on the caller's signal or after `timeoutMs` without `touch()`. */
export function idleTimer(conn: HubConnection) {
  const controller = new AbortController()
  let timedOut = false
  let handle: NodeJS.Timeout | undefined
  const touch = () => {
    clearTimeout(handle)
    handle = setTimeout(() => {
      timedOut = true
      controller.abort(new Error('timeout'))
    }, conn.timeoutMs)
  }
  touch()
  const signal = conn.signal ? AbortSignal.any([conn.signal, controller.signal]) : controller.signal
  return { signal, touch, clear: () => clearTimeout(handle), timedOut: () => timedOut }
}

/** The error of a request or transfer that failed without an HTTP status: aborted, timed out, or the network. */
export function transferError(conn: HubConnection, timer: IdleTimer, url: string, err: unknown): VtcError {
  if (conn.signal?.aborted) return new VtcError('ABORT_ERR', `download of ${conn.id} aborted`, { cause: err })
  if (timer.timedOut()) return new HubError('ERR_VTC_HUB_UNREACHABLE', `${url}: no answer for ${conn.timeoutMs / 1000} s (HF_HUB_DOWNLOAD_TIMEOUT)`, true, { cause: err })
  if (err instanceof VtcError) return err
  const cause = (err as { cause?: { code?: string; message?: string } }).cause
  const reason = cause?.code ?? cause?.message ?? (err as Error).message
  return new HubError(
    'ERR_VTC_HUB_UNREACHABLE',
    `cannot reach ${new URL(url).origin} for ${conn.id} (${reason}); check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use only the cache`,
    true,
    { cause: err },
  )
}

/** What an HTTP error status means for this model, in words (X-Error-Code and X-Error-Message are the hub's). */
function statusError(conn: HubConnection, res: Response, url: string, what: { revision?: string; file?: string }): HubError {
  const code = res.headers.get('x-error-code')
  const said = res.headers.get('x-error-message')
  const status = `HTTP ${res.status}${code ? ` ${code}` : ''}${said ? `: ${said}` : ''}`
  const page = `${conn.endpoint}/${conn.id}`
  if (code === 'GatedRepo' || (res.status === 403 && !code)) {
    return new HubError(
      'ERR_VTC_HUB_AUTH',
      conn.token
        ? `${conn.id} is gated and the token sent (HF_TOKEN) has no access to it (${status}); accept its conditions at ${page} with that account`
        : `${conn.id} is gated (${status}); accept its conditions at ${page} and set HF_TOKEN to a token of that account`,
    )
  }
  if (code === 'RevisionNotFound') return new HubError('ERR_VTC_MODEL_NOT_FOUND', `${conn.id} has no revision "${what.revision}" on ${conn.endpoint} (${status})`)
  if (code === 'EntryNotFound') return new HubError('ERR_VTC_MODEL_NOT_FOUND', `${conn.id} has no file ${what.file} at ${what.revision} (${status})`)
  if (code === 'RepoNotFound' || res.status === 404 || res.status === 401) {
    if (res.status === 401 && conn.token && said?.includes('Invalid credentials')) {
      return new HubError('ERR_VTC_HUB_AUTH', `the hub refused the token (HF_TOKEN) for ${conn.id} (${status}); set a valid one`)
    }
    return new HubError(
      'ERR_VTC_MODEL_NOT_FOUND',
      `no model ${conn.id} on ${conn.endpoint} (${status}); check the id` +
        (conn.token ? ', and that the token sent (HF_TOKEN) can see it if it is private' : ', or set HF_TOKEN if it is private'),
    )
  }
  const retriable = res.status === 408 || res.status === 429 || res.status >= 500
  return new HubError('ERR_VTC_HUB_HTTP', `${url}: ${status} for ${conn.id}${what.file ? ` ${what.file}` : ''}`, retriable)
}

export const ATTEMPTS = 5

/** Runs `attempt` again after a retriable failure, up to ATTEMPTS times, waiting longer each time. */
export async function retrying<T>(conn: HubConnection, attempt: (n: number) => Promise<T>): Promise<T> {
  for (let n = 1; ; n++) {
    try {
      return await attempt(n)
    } catch (err) {
      if (!(err instanceof HubError && err.retriable) || n >= ATTEMPTS) throw err
      await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** (n - 1), 4000)))
      if (conn.signal?.aborted) throw new VtcError('ABORT_ERR', `download of ${conn.id} aborted`, { cause: conn.signal.reason })
    }
  }
}
