import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { crc32, deflateSync } from 'node:zlib'

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

/**
 * A valid black 1-bit greyscale PNG of any size: its pixels compress ~1000:1, so a 65536×4096 image (an image
 * bomb of 268 M pixels) is 33 KB.
 */
export function blackPng(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data])
    const len = Buffer.alloc(4)
    len.writeUInt32BE(data.length)
    const crc = Buffer.alloc(4)
    crc.writeUInt32BE(crc32(body))
    return Buffer.concat([len, body, crc])
  }
  const ihdr = Buffer.alloc(13)
  ihdr.writeUInt32BE(width, 0)
  ihdr.writeUInt32BE(height, 4)
  ihdr.writeUInt8(1, 8) // bit depth 1, colour type 0 (grey), deflate, filter 0, no interlace
  const rows = Buffer.alloc(height * (1 + Math.ceil(width / 8)))
  return Buffer.concat([
    Buffer.from('89504e470d0a1a0a', 'hex'),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ])
}
