/**
 * What `loadModel(ref)` and `--model ref` load: an existing path is a model directory; otherwise `org/name` (one
 * slash) is a Hugging Face model id, found in the hub cache (no network when it is there, complete) or downloaded
 * into it, unless offline.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'

import { VtcError } from '../errors.js'
import { cachedCommit, hubCacheDir, hubOffline, isModelId, missingFiles, repoFolder } from './cache.js'
import { pullModel, type HubOptions } from './pull.js'

export interface ResolvedModel {
  /** The directory to load. */
  dir: string
  /** The model id, when `ref` was one. */
  id?: string
}

export async function resolveModel(ref: string, options: HubOptions = {}): Promise<ResolvedModel> {
  if (existsSync(ref)) return { dir: ref }
  if (!isModelId(ref)) {
    throw new VtcError('ERR_VTC_MODEL_NOT_FOUND', `${ref}: no such directory, and not a Hugging Face model id (org/name)`)
  }
  const revision = options.revision ?? 'main'
  const repo = repoFolder(options.cacheDir ?? hubCacheDir(), ref)
  const commit = cachedCommit(repo, revision)
  const snapshot = commit && join(repo, 'snapshots', commit)
  const missing = snapshot && existsSync(snapshot) ? await missingFiles(snapshot) : undefined
  if (snapshot && missing?.length === 0) return { dir: snapshot, id: ref }

  const taken = `${ref} is not a directory, so it was taken as a Hugging Face model id`
  if (options.offline ?? hubOffline()) {
    const state = missing ? `its snapshot ${snapshot} lacks ${missing.join(', ')}` : `${repo} has no snapshot of ${revision}`
    throw new VtcError(
      'ERR_VTC_OFFLINE',
      `${taken}; it is not in the hub cache (${state}) and HF_HUB_OFFLINE is set: run vtc-r1 pull ${ref} where the hub is reachable, or give a model directory`,
    )
  }
  try {
    return { dir: (await pullModel(ref, options)).dir, id: ref }
  } catch (err) {
    if (err instanceof VtcError && err.code === 'ERR_VTC_MODEL_NOT_FOUND') throw new VtcError(err.code, `${taken}: ${err.message}`, { cause: err })
    throw err
  }
}
