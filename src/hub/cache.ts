/**
 * The Hugging Face hub cache, laid out as huggingface_hub writes it, so that a model downloaded by Python,
 * transformers.js or `vtc-r1 pull` is found by all of them:
 *
 *   <cache>/models--<org>--<name>/refs/<revision>            the commit a branch or tag resolved to (no newline)
 *   <cache>/models--<org>--<name>/blobs/<etag>               contents, named by sha256 (LFS files) or git sha1
 *   <cache>/models--<org>--<name>/snapshots/<commit>/<file>  a relative symlink to ../../blobs/<etag>
 *
 * `<cache>` is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
 */
import { existsSync, readFileSync } from 'node:fs'
import { copyFile, link, lstat, mkdir, readFile, rename, rm, stat, symlink } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, relative, sep } from 'node:path'

import { ioError, writeFileAtomic } from '../files.js'
import { VtcError } from '../errors.js'
import { indexShards, REQUIRED_FILES, WEIGHTS, WEIGHTS_INDEX } from '../model-files.js'

type Env = Record<string, string | undefined>

const expandHome = (p: string) => (p === '~' || p.startsWith('~/') ? join(homedir(), p.slice(1)) : p)

/** $HF_HOME, else $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface. */
export function hfHome(env: Env = process.env): string {
  return expandHome(env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'huggingface'))
}

/** The hub cache directory, as huggingface_hub resolves it. */
export function hubCacheDir(env: Env = process.env): string {
  const dir = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE
  return dir ? expandHome(dir) : join(hfHome(env), 'hub')
}

/** A token for the hub: $HF_TOKEN, else the one `huggingface-cli login` saved ($HF_TOKEN_PATH or $HF_HOME/token). */
export function hubToken(env: Env = process.env): string | undefined {
  const token = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN
  if (token) return token.trim()
  try {
    return readFileSync(env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH) : join(hfHome(env), 'token'), 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set to 1, true, yes or on. */
export function hubOffline(env: Env = process.env): boolean {
  return ['1', 'true', 'yes', 'on'].includes((env.HF_HUB_OFFLINE || env.TRANSFORMERS_OFFLINE || '').toLowerCase())
}

/** Whether `path` exists (a symlink: whether its target does). */
export const exists = (path: string) => stat(path).then(() => true, () => false)

export const isCommit = (revision: string) => /^[0-9a-f]{40}$/.test(revision)

/** `org/name`: one slash between two names of letters, digits, `-`, `_` and `.` (as the hub allows them). */
export function isModelId(ref: string): boolean {
  const parts = ref.split('/')
  return parts.length === 2 && parts.every((p) => /^[\w.-]{1,96}$/.test(p) && !p.startsWith('.') && !p.includes('..') && !p.includes('--'))
}

/** `<cache>/models--org--name`. */
export const repoFolder = (cacheDir: string, id: string) => join(cacheDir, `models--${id.replace('/', '--')}`)

/** The commit `revision` resolves to in the cache (a commit is itself; a branch or tag is read from refs/), if known. */
export function cachedCommit(repo: string, revision: string): string | undefined {
  if (isCommit(revision)) return revision
  try {
    const commit = readFileSync(join(repo, 'refs', revision), 'utf8').trim()
    return isCommit(commit) ? commit : undefined
  } catch {
    return undefined
  }
}

/** The files of a model directory the engine cannot do without that are absent (or dangling links); [] when it is complete. */
export async function missingFiles(dir: string): Promise<string[]> {
  const missing = REQUIRED_FILES.filter((f) => !existsSync(join(dir, f)))
  const index = join(dir, WEIGHTS_INDEX)
  if (!existsSync(index)) return existsSync(join(dir, WEIGHTS)) ? missing : [...missing, WEIGHTS]
  return [...missing, ...indexShards(await readFile(index, 'utf8'), index).filter((f) => !existsSync(join(dir, f)))]
}

/** A file name from the hub or an index, refused if it could leave the snapshot directory. */
export function checkRelativeName(name: string, what: string): string {
  if (!name || name.startsWith('/') || name.includes('\\') || name.split('/').some((p) => p === '' || p === '.' || p === '..')) {
    throw new VtcError('ERR_VTC_HUB_PROTOCOL', `${what}: the file name ${JSON.stringify(name)} is not a plain relative path`)
  }
  return name
}

/** `snapshots/<commit>/<file>`, made a relative symlink to `blob` (a hard link, or a copy, where symlinks are not allowed). */
export async function linkIntoSnapshot(repo: string, commit: string, file: string, blob: string): Promise<string> {
  const pointer = join(repo, 'snapshots', commit, ...file.split('/'))
  const tmp = `${pointer}.tmp${process.pid}`
  try {
    await mkdir(dirname(pointer), { recursive: true })
    await rm(tmp, { force: true })
    try {
      await symlink(relative(dirname(pointer), blob).split(sep).join('/'), tmp)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err
      await link(blob, tmp).catch(() => copyFile(blob, tmp)) // Windows without the symlink privilege
    }
    // a dangling link left where this file belongs is replaced; anything else there is kept
    const there = await lstat(pointer).catch(() => undefined)
    if (there && !there.isSymbolicLink()) {
      await rm(tmp, { force: true })
      return pointer
    }
    await rename(tmp, pointer)
    return pointer
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {})
    throw ioError(err, pointer, 'linking')
  }
}

/** `refs/<revision>` ← `commit`, replaced atomically (nothing for a commit, which needs no ref). */
export async function writeRef(repo: string, revision: string, commit: string): Promise<void> {
  if (revision === commit) return
  const path = join(repo, 'refs', ...revision.split('/'))
  try {
    await mkdir(dirname(path), { recursive: true })
  } catch (err) {
    throw ioError(err, path, 'writing')
  }
  await writeFileAtomic(path, commit)
}
