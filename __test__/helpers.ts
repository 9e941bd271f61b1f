import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** ../shared beside the checkout: reference data (tests only; the product never needs it). */
export const SHARED = fileURLToPath(new URL('../../shared/', import.meta.url))
export const GOLDEN_RENDER = `${SHARED}golden/render/`

export interface GoldenLayout {
  id: string
  pages: string[][]
  sizes: [number, number][]
}

export function readJsonl<T>(path: string): T[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as T)
}

export const goldenTexts = () => readJsonl<{ id: string; text: string }>(`${GOLDEN_RENDER}texts.jsonl`)
export const goldenLayouts = () => readJsonl<GoldenLayout>(`${GOLDEN_RENDER}layout.jsonl`)

/** Width, height and colour type from a PNG's IHDR chunk. */
export function pngHeader(png: Buffer): { width: number; height: number; colorType: number } {
  if (png.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a') throw new Error('not a PNG')
  return { width: png.readUInt32BE(16), height: png.readUInt32BE(20), colorType: png.readUInt8(25) }
}
