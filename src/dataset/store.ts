/**
 * The output directory of a build, crash-safe: samples are appended only together with a manifest update
 * (`progress.json`, replaced atomically) that records how many input rows are done and how many bytes of each
 * appended file belong to them. On reopening, bytes past the manifest (a batch cut off by a crash, Ctrl-C or a
 * full disk) are cut away, so no partial or duplicate line survives and finished rows are never redone.
 */
import { constants } from 'node:fs'
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises'
import { dirname, join } from 'node:path'

import { VtcError } from '../errors.js'
import type { Totals } from './stats.js'

export const FILES = {
  samples: 'vtc-r1.jsonl',
  sampleStats: 'samples.stats.jsonl',
  skipped: 'skipped.jsonl',
  manifest: 'progress.json',
  datasetInfo: 'dataset_info.json',
  stats: 'stats.json',
  deepspeed: 'ds_z3_config.json',
  yamlQwen: 'train_qwen3vl_full_sft.yaml',
  yamlGlyph: 'train_glyph_full_sft.yaml',
  lock: '.vtc-r1.lock',
  images: 'images',
} as const

const APPENDED = ['samples', 'sampleStats', 'skipped'] as const
export type AppendedFile = (typeof APPENDED)[number]

export interface Manifest {
  version: 1
  /** What the output depends on (inputs and options); a resume with anything else is refused. */
  fingerprint: Record<string, unknown>
  /** Rows with index < nextRow are done. */
  nextRow: number
  bytes: Record<AppendedFile, number>
  totals: Totals
  /** The whole input was read (not just up to --limit). */
  inputExhausted: boolean
}

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

export class OutputStore {
  private constructor(
    readonly dir: string,
    public manifest: Manifest,
    private readonly handles: Record<AppendedFile, FileHandle>,
    readonly resumed: boolean,
  ) {}

  /**
   * Opens (or starts) the build in `dir`. A directory that holds other files but no manifest is refused, as
   * is a manifest written for other inputs or options.
   */
  static async open(dir: string, fingerprint: Record<string, unknown>, fresh: () => Totals): Promise<OutputStore> {
    await ensureDir(dir)
    await acquireLock(dir)
    try {
      const manifestPath = join(dir, FILES.manifest)
      let manifest = await readManifest(manifestPath)
      const resumed = manifest !== undefined
      if (!manifest) {
        const others = (await readdir(dir)).filter((f) => f !== FILES.lock)
        if (others.length > 0) {
          throw new VtcError(
            'ERR_VTC_INVALID_ARGUMENT',
            `${dir} is not empty and has no ${FILES.manifest}, so it is not a dataset being built; give a new or empty --out directory`,
          )
        }
        manifest = { version: 1, fingerprint, nextRow: 0, bytes: { samples: 0, sampleStats: 0, skipped: 0 }, totals: fresh(), inputExhausted: false }
        await writeFileAtomic(manifestPath, JSON.stringify(manifest))
      } else {
        const diff = differences(manifest.fingerprint, fingerprint)
        if (diff.length) {
          throw new VtcError(
            'ERR_VTC_RESUME_MISMATCH',
            `${dir} was started with other input or options (${diff.join('; ')}); rerun with the same ones, or use a new --out directory`,
          )
        }
      }
      const handles = {} as Record<AppendedFile, FileHandle>
      for (const f of APPENDED) handles[f] = await openAppended(join(dir, FILES[f]), manifest.bytes[f])
      return new OutputStore(dir, manifest, handles, resumed)
    } catch (err) {
      await releaseLock(dir)
      throw err
    }
  }

  /** Appends one batch and records it as done, in this order, so a crash in between loses only this batch. */
  async commit(chunks: Record<AppendedFile, string>, next: { nextRow: number; totals: Totals; inputExhausted?: boolean }): Promise<void> {
    const bytes = { ...this.manifest.bytes }
    for (const f of APPENDED) {
      if (!chunks[f]) continue
      const buf = Buffer.from(chunks[f], 'utf8')
      const path = join(this.dir, FILES[f])
      try {
        await this.handles[f].write(buf, 0, buf.length, bytes[f])
        await this.handles[f].sync()
      } catch (err) {
        // leave the file as the manifest describes it: nothing half-written even if no resume follows
        await this.handles[f].truncate(this.manifest.bytes[f]).catch(() => {})
        throw ioError(err, path, 'appending to')
      }
      bytes[f] += buf.length
    }
    const manifest: Manifest = {
      ...this.manifest,
      nextRow: next.nextRow,
      bytes,
      totals: next.totals,
      inputExhausted: next.inputExhausted ?? this.manifest.inputExhausted,
    }
    try {
      await writeFileAtomic(join(this.dir, FILES.manifest), JSON.stringify(manifest))
    } catch (err) {
      for (const f of APPENDED) await this.handles[f].truncate(this.manifest.bytes[f]).catch(() => {})
      throw err
    }
    this.manifest = manifest
  }

  async writeFile(name: string, data: string): Promise<void> {
    await writeFileAtomic(join(this.dir, name), data)
  }

  async close(): Promise<void> {
    for (const f of APPENDED) await this.handles[f].close().catch(() => {})
    await releaseLock(this.dir)
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

async function readManifest(path: string): Promise<Manifest | undefined> {
  const text = await readIfExists(path)
  if (text === undefined) return undefined
  try {
    const m = JSON.parse(text) as Manifest
    if (m.version !== 1 || typeof m.nextRow !== 'number') throw new Error('unknown manifest version')
    return m
  } catch (err) {
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} is damaged (${(err as Error).message}); use a new --out directory`)
  }
}

/** Opens an appended file and cuts it back to the bytes the manifest vouches for. */
async function openAppended(path: string, committed: number): Promise<FileHandle> {
  let fh: FileHandle
  try {
    fh = await open(path, constants.O_RDWR | constants.O_CREAT)
    const { size } = await fh.stat()
    if (size < committed) {
      await fh.close()
      throw new VtcError('ERR_VTC_INVALID_INPUT', `${path} is shorter (${size} bytes) than ${FILES.manifest} records (${committed}); it was changed outside the build`)
    }
    if (size > committed) await fh.truncate(committed)
    return fh
  } catch (err) {
    if (err instanceof VtcError) throw err
    throw ioError(err, path, 'opening')
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
  await lockFile(join(dir, FILES.lock), `writing ${dir}`, 'writing to the output directory')
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
  await rm(join(dir, FILES.lock), { force: true }).catch(() => {})
}
