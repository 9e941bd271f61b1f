/**
 * `pullModel('org/name')`: downloads the files of a Hugging Face model that the engine reads into the hub cache,
 * laid out as huggingface_hub's snapshot_download writes them (blobs, a snapshot of symlinks, refs/<revision>).
 * Files already in the cache are not asked for again; refs/<revision> is written last, so a pull that fails
 * leaves a ref (if any) that still names a complete snapshot, and its partial file for the next run to resume.
 */
import { mkdir, readFile, stat, statfs } from 'node:fs/promises'
import { join } from 'node:path'

import { ioError } from '../files.js'
import { VtcError } from '../errors.js'
import { indexShards, MODEL_FILES, REQUIRED_FILES, WEIGHTS, WEIGHTS_INDEX } from '../model-files.js'
import { checkRelativeName, exists, hubCacheDir, hubOffline, hubToken, isModelId, linkIntoSnapshot, repoFolder, writeRef } from './cache.js'
import { downloadBlob } from './download.js'
import { DEFAULT_ENDPOINT, fileMeta, repoInfo, type FileMeta, type HubConnection } from './http.js'

/** Where and how a model given by id is found and downloaded; every default comes from the environment, as for huggingface_hub. */
export interface HubOptions {
  /** Branch, tag or commit (default `main`). */
  revision?: string
  /** The hub cache (default `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`). */
  cacheDir?: string
  /** The hub or a mirror (default `$HF_ENDPOINT`, else `https://huggingface.co`). */
  endpoint?: string
  /** Token for gated and private models (default `$HF_TOKEN`, else the one `huggingface-cli login` saved). */
  token?: string
  /** Use the cache only, never the network (default: `$HF_HUB_OFFLINE` is 1). */
  offline?: boolean
  /** Called as files are found in the cache or downloaded (default: none). */
  onProgress?: (progress: PullProgress) => void
  /** Aborting stops the downloads, which then reject with code `ABORT_ERR` (default: none). */
  signal?: AbortSignal
}

export interface PullProgress {
  file: string
  /** `cached`: already in the cache; `downloading`: bytes arrived; `done`: downloaded and verified. */
  status: 'cached' | 'downloading' | 'done'
  /** The file's size in bytes, when the hub announced it. */
  size?: number
  /** Bytes of this pull's downloads on disk, and all they will be (partial files of earlier runs included). */
  bytes: number
  totalBytes: number
}

export interface PullResult {
  id: string
  revision: string
  commit: string
  /** The snapshot directory: `loadModel(dir)` loads it. */
  dir: string
  downloaded: string[]
  cached: string[]
}

interface Planned {
  file: string
  meta?: FileMeta
  /** Bytes of the file an earlier run left in its .incomplete file. */
  partial: number
}

export async function pullModel(id: string, options: HubOptions = {}): Promise<PullResult> {
  if (!isModelId(id)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${JSON.stringify(id)} is not a Hugging Face model id (org/name)`)
  const revision = options.revision ?? 'main'
  if (!/^[\w.\-/]+$/.test(revision) || revision.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `${JSON.stringify(revision)} is not a revision (a branch, tag or commit)`)
  }
  if (options.offline ?? hubOffline()) {
    throw new VtcError('ERR_VTC_OFFLINE', `cannot download ${id}: offline (HF_HUB_OFFLINE is set); unset it, or pull the model where the hub is reachable`)
  }
  const timeoutS = Number(process.env.HF_HUB_DOWNLOAD_TIMEOUT) || 10
  const conn: HubConnection = {
    endpoint: (options.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, ''),
    id,
    token: options.token ?? hubToken(),
    signal: options.signal,
    timeoutMs: timeoutS * 1000,
  }
  const repo = repoFolder(options.cacheDir ?? hubCacheDir(), id)
  const { commit, files } = await repoInfo(conn, revision)
  const snapshot = join(repo, 'snapshots', commit)
  const listed = new Set(files)
  const listing = `its files: ${files.slice(0, 20).join(', ')}${files.length > 20 ? ', …' : ''}`
  for (const f of REQUIRED_FILES) {
    if (!listed.has(f)) throw new VtcError('ERR_VTC_MODEL', `${id} (${revision}) has no ${f}, which vtc-r1 needs; ${listing}`)
  }
  if (!listed.has(WEIGHTS_INDEX) && !listed.has(WEIGHTS)) {
    throw new VtcError('ERR_VTC_MODEL', `${id} (${revision}) has no ${WEIGHTS} or ${WEIGHTS_INDEX} (vtc-r1 reads safetensors weights); ${listing}`)
  }

  const cached: string[] = []
  const downloaded: string[] = []
  let bytes = 0
  let totalBytes = 0
  const report = (file: string, status: PullProgress['status'], size?: number) =>
    options.onProgress?.({ file, status, ...(size !== undefined ? { size } : {}), bytes, totalBytes })

  /** The file's metadata, or nothing when the snapshot has it already (a blob of another snapshot is linked in). */
  const plan = async (file: string): Promise<Planned> => {
    if (await exists(join(snapshot, ...file.split('/')))) return { file, partial: 0 }
    const meta = await fileMeta(conn, commit, file)
    const blob = join(repo, 'blobs', meta.etag)
    if (await exists(blob)) {
      await linkIntoSnapshot(repo, commit, file, blob)
      return { file, partial: 0 }
    }
    return { file, meta, partial: (await stat(`${blob}.incomplete`).catch(() => undefined))?.size ?? 0 }
  }
  const fetchAll = async (items: Planned[]) => {
    const todo = items.filter((p) => p.meta)
    for (const p of items.filter((p) => !p.meta)) {
      cached.push(p.file)
      report(p.file, 'cached')
    }
    const need = todo.reduce((n, p) => n + Math.max((p.meta!.size ?? 0) - p.partial, 0), 0)
    await checkSpace(id, join(repo, 'blobs'), need)
    totalBytes += todo.reduce((n, p) => n + (p.meta!.size ?? p.partial), 0)
    bytes += todo.reduce((n, p) => n + p.partial, 0)
    for (const p of todo) {
      const blob = join(repo, 'blobs', p.meta!.etag)
      await downloadBlob(conn, p.meta!, p.file, blob, (delta) => {
        bytes += delta
        report(p.file, 'downloading', p.meta!.size)
      })
      await linkIntoSnapshot(repo, commit, p.file, blob)
      downloaded.push(p.file)
      report(p.file, 'done', p.meta!.size)
    }
  }

  // the index names the shards, so it comes first
  const indexed = listed.has(WEIGHTS_INDEX)
  if (indexed) await fetchAll([await plan(WEIGHTS_INDEX)])
  const weights = indexed ? await shardsOf(id, snapshot, listed) : [WEIGHTS]
  const rest: Planned[] = []
  for (const file of [...MODEL_FILES.filter((f) => f !== WEIGHTS_INDEX && listed.has(f)), ...weights]) rest.push(await plan(file))
  await fetchAll(rest)
  await writeRef(repo, revision, commit)
  return { id, revision, commit, dir: snapshot, downloaded, cached }
}

/** The shard files the snapshot's index names, each of which the repository must have. */
async function shardsOf(id: string, snapshot: string, listed: Set<string>): Promise<string[]> {
  const path = join(snapshot, WEIGHTS_INDEX)
  const shards = indexShards(await readFile(path, 'utf8'), path).map((f) => checkRelativeName(f, path))
  const absent = shards.filter((f) => !listed.has(f))
  if (absent.length) throw new VtcError('ERR_VTC_MODEL', `${id}: ${WEIGHTS_INDEX} names shards the repository lacks: ${absent.join(', ')}`)
  return shards
}

/** Refuses to start a download the disk cannot hold. */
async function checkSpace(id: string, dir: string, need: number): Promise<void> {
  let free: number
  try {
    await mkdir(dir, { recursive: true })
    const fs = await statfs(dir)
    free = fs.bavail * fs.bsize
  } catch (err) {
    throw ioError(err, dir, 'creating')
  }
  if (need > free) {
    throw new VtcError(
      'ERR_VTC_DISK_FULL',
      `${id} needs ${gb(need)} more in ${dir}, which has ${gb(free)} free; free space or set HF_HUB_CACHE to a larger disk, then rerun`,
    )
  }
}

const gb = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${(n / 1e6).toFixed(1)} MB`)
