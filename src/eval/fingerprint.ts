/**
 * What identifies a model directory in run.json, so that a resumed eval run never mixes the outputs of two
 * models (`runA/hf` and `runB/hf` share a directory name, not their weights).
 *
 * Hashing every weight would read the whole model at each start (18 GB for a 9B model: minutes on a disk). So
 * each weight file is identified by its size, its safetensors header (every tensor's name, dtype, shape and
 * offsets) and the bytes of 4 KiB blocks: at the start and the end of every tensor, and 64 spread over the
 * file. Two trainings of one architecture differ in every tensor they trained, so this tells them apart after
 * reading a few MB; an edit confined to the inside of one tensor would go unnoticed. The small files that shape
 * the outputs (config, generation config, tokenizer, chat template, image processor, shard index) are hashed
 * whole. Unlike the quantization cache's fingerprint (crate/src/quant.rs: names, sizes, modification times),
 * no modification time is used: a copied model is the same model.
 */
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { open, readFile } from 'node:fs/promises'
import { basename, join } from 'node:path'

import { VtcError } from '../errors.js'
import { indexShards, MODEL_FILES, WEIGHTS, WEIGHTS_INDEX } from '../model-files.js'

const BLOCK = 4096
const SPREAD = 64

/** File name → fingerprint, for the files of `dir` that determine the model's outputs. */
export async function modelFingerprint(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const name of MODEL_FILES) {
    if (existsSync(join(dir, name))) out[name] = await contentHash(join(dir, name), 'model file')
  }
  for (const path of await weightFiles(dir, out[WEIGHTS_INDEX] !== undefined)) {
    out[basename(path)] = await weightFingerprint(path)
  }
  return out
}

/** `sha256:<hash>` of a whole file (128 bits of it: plenty to tell files apart, short enough to read). */
export async function contentHash(path: string, what: string): Promise<string> {
  try {
    return `sha256:${createHash('sha256').update(await readFile(path)).digest('hex').slice(0, 32)}`
  } catch (err) {
    throw new VtcError('ERR_VTC_IO', `cannot read ${what} ${path}: ${(err as Error).message}`, { cause: err })
  }
}

/** The engine's choice (crate/src/weights.rs): the shards the index names, else model.safetensors. */
async function weightFiles(dir: string, indexed: boolean): Promise<string[]> {
  if (!indexed) return [join(dir, WEIGHTS)]
  const indexPath = join(dir, WEIGHTS_INDEX)
  return indexShards(await readFile(indexPath, 'utf8'), indexPath).map((f) => join(dir, f))
}

/** `<size> B, sha256:<hash of the header and the sampled blocks>` of one safetensors file. */
async function weightFingerprint(path: string): Promise<string> {
  const bad = (what: string) => new VtcError('ERR_VTC_INVALID_INPUT', `${path}: not a valid safetensors file (${what})`)
  let fh
  try {
    fh = await open(path, 'r')
  } catch (err) {
    throw new VtcError('ERR_VTC_IO', `cannot read model weights ${path}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const { size } = await fh.stat()
    const read = async (start: number, end: number) => {
      const buf = Buffer.alloc(end - start)
      const { bytesRead } = await fh.read(buf, 0, buf.length, start)
      return buf.subarray(0, bytesRead)
    }
    if (size < 8) throw bad('shorter than its 8-byte header length')
    const dataStart = 8 + Number((await read(0, 8)).readBigUInt64LE())
    if (dataStart > size) throw bad(`header length ${dataStart - 8} exceeds the file's ${size} bytes`)
    const header = await read(8, dataStart)
    let tensors: Record<string, { data_offsets?: unknown }>
    try {
      tensors = JSON.parse(header.toString('utf8')) as typeof tensors
    } catch {
      throw bad('its header is not JSON')
    }
    const ranges: [number, number][] = []
    const add = (start: number, end: number) => ranges.push([Math.max(start, dataStart), Math.min(end, size)])
    for (const [name, t] of Object.entries(tensors)) {
      if (name === '__metadata__') continue
      const [b, e] = Array.isArray(t?.data_offsets) ? (t.data_offsets as number[]) : []
      if (!Number.isInteger(b) || !Number.isInteger(e)) throw bad(`tensor ${name} has no data_offsets`)
      add(dataStart + b, dataStart + Math.min(e, b + BLOCK))
      add(dataStart + Math.max(b, e - BLOCK), dataStart + e)
    }
    const span = Math.max(size - dataStart - BLOCK, 0)
    for (let i = 0; i < SPREAD; i++) {
      const start = dataStart + Math.floor((span * i) / (SPREAD - 1))
      add(start, start + BLOCK)
    }
    const hash = createHash('sha256').update(header)
    for (const [start, end] of merge(ranges)) hash.update(await read(start, end))
    return `${size} B, sha256:${hash.digest('hex').slice(0, 32)}`
  } finally {
    await fh.close()
  }
}

/** Sorted, overlapping or touching ranges joined, so every byte is read once. */
function merge(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = []
  for (const [s, e] of ranges.filter(([s, e]) => e > s).sort((a, b) => a[0] - b[0])) {
    const last = out[out.length - 1]
    if (last && s <= last[1]) last[1] = Math.max(last[1], e)
    else out.push([s, e])
  }
  return out
}
