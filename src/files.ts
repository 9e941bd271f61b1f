/**
 * File helpers shared by the dataset builder, eval and the model cache: errors that name the path and say what to
 * do, whole-or-nothing writes, and lock files that a crashed holder cannot leave stuck.
 */
import { mkdir, open, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { VtcError } from './errors.js'

/** The lock file a writer holds in an output directory. */
export const LOCK_FILE = '.vtc-r1.lock'

/** Maps a file-system error to a VtcError that names the path and says what to do. */
export function ioError(err: unknown, path: string, doing: string): VtcError {
  const code = (err as NodeJS.ErrnoException)?.code
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new VtcError('ERR_VTC_DISK_FULL', `no space left on the device while ${doing} ${path}; free space and rerun to resume`, { cause: err })
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new VtcError('ERR_VTC_IO', `cannot write ${path} (${code === 'EROFS' ? 'read-only file system' : 'permission denied'})`, { cause: err })
  }
  return new VtcError('ERR_VTC_IO', `error while ${doing} ${path}: ${(err as Error)?.message ?? err}`, { cause: err })
}

/** Writes a file whole or not at all: a temporary file beside it, flushed, then renamed over it. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp${process.pid}`
  let fh: FileHandle | undefined
  try {
    fh = await open(tmp, 'w')
    await fh.writeFile(data)
    await fh.sync()
    await fh.close()
    fh = undefined
    await rename(tmp, path)
  } catch (err) {
    await fh?.close().catch(() => {})
    await unlink(tmp).catch(() => {})
    throw ioError(err, path, 'writing')
  }
}

export async function ensureDir(dir: string): Promise<void> {
  try {
    const st = await stat(dir).catch(() => undefined)
    if (st && !st.isDirectory()) throw new VtcError('ERR_VTC_IO', `${dir} exists and is not a directory`)
    await mkdir(dir, { recursive: true })
  } catch (err) {
    if (err instanceof VtcError) throw err
    throw ioError(err, dir, 'creating the output directory')
  }
}

/** A file's text, or undefined when it does not exist. */
export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw ioError(err, path, 'reading')
  }
}

export function differences(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort()
  return keys
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => `${k}: ${short(a[k])} before, ${short(b[k])} now`)
}

const short = (v: unknown) => {
  const s = JSON.stringify(v) ?? 'none'
  return s.length > 80 ? `${s.slice(0, 77)}…` : s
}

export async function acquireLock(dir: string): Promise<void> {
  await lockFile(join(dir, LOCK_FILE), `writing ${dir}`, 'writing to the output directory')
}

/**
 * Creates the lock file `path` holding our pid; one left by a process that died is taken over. A live holder is
 * an ERR_VTC_BUSY that says it is `busy`.
 */
export async function lockFile(path: string, busy: string, doing = 'creating the lock file'): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, String(process.pid), { flag: 'wx' })
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, dirname(path), doing)
    }
    const pid = Number((await readFile(path, 'utf8').catch(() => '')).trim())
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && alive(pid)) {
      throw new VtcError('ERR_VTC_BUSY', `another vtc-r1 process (pid ${pid}) is ${busy}`)
    }
    await rm(path, { force: true }) // left by a process that died
  }
  throw new VtcError('ERR_VTC_BUSY', `cannot lock ${path}`)
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export async function releaseLock(dir: string): Promise<void> {
  await rm(join(dir, LOCK_FILE), { force: true }).catch(() => {})
}
