/**
 * The output directory of a build, crash-safe: samples are appended only together with a manifest update
 * (`progress.json`, replaced atomically) that records how many input rows are done and how many bytes of each
 * appended file belong to them. On reopening, bytes past the manifest (a batch cut off by a crash, Ctrl-C or a
 * full disk) are cut away, so no partial or duplicate line survives and finished rows are never redone.
 */
import { constants } from 'node:fs'
import { open, readdir, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'

import { VtcError } from '../errors.js'
import { acquireLock, differences, ensureDir, ioError, LOCK_FILE, readIfExists, releaseLock, writeFileAtomic } from '../files.js'
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
  lock: LOCK_FILE,
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

