/**
 * One file of a model into the cache's blobs/. The bytes go to `blobs/<etag>.incomplete`, which a later try (or
 * a later run) resumes with an HTTP Range request, and become `blobs/<etag>` only once their size and hash are
 * what the hub announced: the sha256 of an LFS file, the git blob sha1 of another. A lock file in the cache's
 * .locks/ keeps two processes from writing the same blob; the second waits and then finds it done.
 */
import { createHash, type Hash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

import { ioError, lockFile } from '../files.js'
import { VtcError } from '../errors.js'
import { exists } from './cache.js'
import { hubFetch, HubError, idleTimer, retrying, transferError, type FileMeta, type HubConnection } from './http.js'

/**
 * Makes `blob` hold `file`'s verified bytes, downloading what is missing. `onBytes` gets each change of the bytes
 * on disk (negative when a server that ignores Range makes it start over).
 */
export async function downloadBlob(conn: HubConnection, meta: FileMeta, file: string, blob: string, onBytes: (delta: number) => void): Promise<void> {
  // <cache>/.locks/models--org--name/, where huggingface_hub keeps its own <etag>.lock (a name we leave alone)
  const repo = dirname(dirname(blob))
  const lock = join(dirname(repo), '.locks', basename(repo), `${meta.etag}.vtc-r1.lock`)
  await takeLock(conn, lock, file)
  try {
    if (await exists(blob)) return // another process finished it while we waited
    const part = `${blob}.incomplete`
    const digest = await retrying(conn, () => fetchInto(conn, meta, file, part, onBytes))
    const expected = meta.etag.toLowerCase()
    if (digest !== undefined && digest !== expected) {
      await rm(part, { force: true })
      throw new VtcError(
        'ERR_VTC_HUB_INTEGRITY',
        `${conn.id} ${file}: the downloaded bytes do not match the hub's checksum (expected ${expected}, got ${digest}); ` +
          'the partial file was removed, rerun to download it again',
      )
    }
    await rename(part, blob).catch((err) => {
      throw ioError(err, blob, 'writing')
    })
  } finally {
    await rm(lock, { force: true }).catch(() => {})
    held.delete(lock)
  }
}

/** Lock files this process holds (the lock file's pid cannot tell two of our own downloads apart). */
const held = new Set<string>()

/** Waits while another download, in this process or a live other one, holds the blob's lock. */
async function takeLock(conn: HubConnection, lock: string, file: string): Promise<void> {
  try {
    await mkdir(dirname(lock), { recursive: true })
  } catch (err) {
    throw ioError(err, dirname(lock), 'creating')
  }
  for (;;) {
    if (!held.has(lock)) {
      try {
        held.add(lock)
        return await lockFile(lock, `downloading ${conn.id} ${file}`)
      } catch (err) {
        held.delete(lock)
        if ((err as VtcError).code !== 'ERR_VTC_BUSY') throw err
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 250))
    if (conn.signal?.aborted) throw new VtcError('ABORT_ERR', `download of ${conn.id} aborted`, { cause: conn.signal.reason })
  }
}

/**
 * One try: appends the rest of the file to `part` (from where it ends) and returns the hex digest of the whole,
 * or undefined where the etag is no hash we know (a mirror's).
 */
async function fetchInto(conn: HubConnection, meta: FileMeta, file: string, part: string, onBytes: (delta: number) => void): Promise<string | undefined> {
  let have = (await stat(part).catch(() => undefined))?.size ?? 0
  if (meta.size !== undefined && have > meta.size) have = 0 // not the bytes announced: start over
  let hash = hasher(meta)
  if (have > 0 && hash) await hashPrefix(part, have, hash)
  if (meta.size !== undefined && have === meta.size) return hash?.digest('hex')

  const timer = idleTimer(conn)
  const fh = await open(part, have > 0 ? 'r+' : 'w').catch((err) => {
    throw ioError(err, part, 'writing')
  })
  try {
    await fh.truncate(have).catch((err) => {
      throw ioError(err, part, 'writing')
    })
    const res = await hubFetch(conn, meta.url, { headers: have > 0 ? { range: `bytes=${have}-` } : {} }, { file }, timer)
    const start = res.status === 206 ? Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]) : 0
    if (start !== have) {
      // the server sent the whole file (or another range): start over from its first byte
      if (start !== 0) {
        await res.body?.cancel().catch(() => {})
        throw new HubError('ERR_VTC_HUB_PROTOCOL', `${meta.url}: asked for bytes from ${have}, got a range from ${res.headers.get('content-range')}`, true)
      }
      onBytes(-have)
      have = 0
      hash = hasher(meta)
      await fh.truncate(0)
    }
    let pos = have
    try {
      for await (const chunk of res.body ?? []) {
        timer.touch()
        await fh.write(chunk, 0, chunk.length, pos).catch((err) => {
          throw ioError(err, part, 'writing')
        })
        pos += chunk.length
        hash?.update(chunk)
        onBytes(chunk.length)
      }
    } catch (err) {
      if (err instanceof VtcError) throw err // the disk, not the network
      const lost = transferError(conn, timer, meta.url, err)
      if (lost.code === 'ABORT_ERR' || timer.timedOut()) throw lost
      throw new HubError('ERR_VTC_HUB_TRANSFER', `${conn.id} ${file}: the connection broke after ${pos} of ${meta.size ?? '?'} bytes; rerun to resume`, true, { cause: err })
    }
    if (meta.size !== undefined && pos !== meta.size) {
      const short = pos < meta.size
      throw new HubError('ERR_VTC_HUB_TRANSFER', `${conn.id} ${file}: got ${pos} bytes, the hub announced ${meta.size}${short ? '; rerun to resume' : ''}`, short)
    }
    await fh.sync()
    return hash?.digest('hex')
  } finally {
    timer.clear()
    await fh.close().catch(() => {})
  }
}

/** sha256 for an LFS file's etag; git's blob sha1 (`blob <size>\0` + bytes) for another's. */
function hasher(meta: FileMeta): Hash | undefined {
  if (/^[0-9a-f]{64}$/i.test(meta.etag)) return createHash('sha256')
  if (/^[0-9a-f]{40}$/i.test(meta.etag) && meta.size !== undefined) return createHash('sha1').update(`blob ${meta.size}\0`)
  return undefined
}

async function hashPrefix(path: string, bytes: number, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer)
}
