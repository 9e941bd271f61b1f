/**
 * Image inputs → encoded bytes: rendered pages, encoded buffers, data URLs and local files. Remote URLs are
 * never fetched.
 */
import { readFile } from 'node:fs/promises'
import { isAbsolute, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

import { imageSize } from 'image-size'

import { VtcError } from '../errors.js'
import type { ImageInput } from './types.js'

export type ImageMime = 'image/png' | 'image/jpeg' | 'image/webp' | 'image/gif'

/** The image format of encoded bytes, from their signature; undefined when not PNG, JPEG, WebP or GIF. */
export function sniffImage(bytes: Uint8Array): ImageMime | undefined {
  const b = bytes
  if (b.length >= 8 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && b[4] === 0x0d && b[5] === 0x0a) return 'image/png'
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'image/jpeg'
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return 'image/webp'
  if (b.length >= 6 && (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a')) return 'image/gif'
  return undefined
}

function ascii(b: Uint8Array, from: number, to: number): string {
  return String.fromCharCode(...b.subarray(from, to))
}

const DATA_URL = /^data:([^;,]*)((?:;[^;,]*)*),/i

/** Decodes a `data:image/…;base64,…` URL; `what` names the field in errors. */
export function decodeDataUrl(url: string, what = 'image'): { bytes: Buffer; mime: ImageMime } {
  const m = DATA_URL.exec(url)
  if (!m) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: not a data URL`)
  if (!/;base64$/i.test(m[2])) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: data URL must be base64 encoded (data:image/png;base64,…)`)
  const body = url.slice(m[0].length)
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(body.replace(/\s+/g, ''))) {
    throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: data URL payload is not valid base64`)
  }
  const bytes = Buffer.from(body, 'base64')
  return { bytes, mime: checkImageBytes(bytes, what) }
}

/** The format of encoded image bytes, or an error naming `what`. */
export function checkImageBytes(bytes: Uint8Array, what = 'image'): ImageMime {
  if (bytes.length === 0) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: empty image`)
  const mime = sniffImage(bytes)
  if (!mime) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: not a PNG, JPEG, WebP or GIF image`)
  return mime
}

/** Width and height from an image's header, without decoding its pixels; an error naming `what` when unreadable. */
export function imageDimensions(bytes: Uint8Array, what = 'image'): { width: number; height: number } {
  checkImageBytes(bytes, what)
  let size: { width?: number; height?: number } = {}
  try {
    // a copy with a buffer of its own: the parser must not read past the header into a pooled buffer's neighbours
    size = imageSize(new Uint8Array(bytes))
  } catch {
    // a header too short or malformed to give a size
  }
  if (!size.width || !size.height) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: cannot read the image's size from its header`)
  return { width: size.width, height: size.height }
}

export function isRemoteUrl(s: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(s) && !/^file:\/\//i.test(s)
}

/** The local path a string names (`file://` URL or path), resolved; undefined for data URLs and remote URLs. */
export function localPath(s: string): string | undefined {
  if (/^data:/i.test(s) || isRemoteUrl(s)) return undefined
  if (/^file:\/\//i.test(s)) {
    try {
      return fileURLToPath(s)
    } catch {
      return undefined
    }
  }
  return resolve(s)
}

/** True when `path` lies inside `root` (both resolved). */
export function insideDir(path: string, root: string): boolean {
  const rel = relative(resolve(root), resolve(path))
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel))
}

/** Reads a local image file; errors name the file. */
export async function readImageFile(path: string, what = 'image'): Promise<{ bytes: Buffer; mime: ImageMime }> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (err) {
    throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    })
  }
  return { bytes, mime: checkImageBytes(bytes, `${what} (${path})`) }
}

function isPage(x: unknown): x is { width: number; height: number; png(): Promise<Buffer> } {
  return typeof x === 'object' && x !== null && typeof (x as { png?: unknown }).png === 'function'
}

/** Any `ImageInput` as encoded bytes (pages are PNG-encoded off the JS thread). */
export async function imageBytes(image: ImageInput, what = 'image'): Promise<{ bytes: Buffer; mime: ImageMime }> {
  if (isPage(image)) return { bytes: await image.png(), mime: 'image/png' }
  if (image instanceof Uint8Array) {
    const bytes = Buffer.isBuffer(image) ? image : Buffer.from(image.buffer, image.byteOffset, image.byteLength)
    return { bytes, mime: checkImageBytes(bytes, what) }
  }
  if (typeof image === 'string') {
    if (/^data:/i.test(image)) return decodeDataUrl(image, what)
    if (isRemoteUrl(image)) throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: remote image URLs are not fetched; give a file path, a data URL or bytes`)
    return readImageFile(localPath(image)!, what)
  }
  throw new VtcError('ERR_VTC_INVALID_IMAGE', `${what}: expected a Page, a Buffer, a file path or a data URL, got ${typeof image}`)
}

/** Any `ImageInput` as a `data:` URL. */
export async function imageDataUrl(image: ImageInput, what = 'image'): Promise<string> {
  if (typeof image === 'string' && /^data:/i.test(image)) {
    decodeDataUrl(image, what)
    return image
  }
  const { bytes, mime } = await imageBytes(image, what)
  return `data:${mime};base64,${bytes.toString('base64')}`
}
