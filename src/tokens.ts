/**
 * Token arithmetic for page images: how many vision tokens a page costs in Qwen3-VL (factor 32) and
 * GLM-4.1V / Glyph (factor 28), after the processors' smart_resize.
 */
import { VtcError } from './errors.js'

export interface PixelLimits {
  /** `size.shortest_edge` of preprocessor_config.json (default 65536 = 256²). */
  minPixels?: number
  /** `size.longest_edge` (default 16777216 = 4096²; VTC-R1 trains with 262144). */
  maxPixels?: number
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/** The processors' smart_resize: the [height, width] an image is resized to before patching. */
export function smartResize(height: number, width: number, factor: number, limits: PixelLimits = {}): [number, number] {
  const minPixels = limits.minPixels ?? 65536
  const maxPixels = limits.maxPixels ?? 16777216
  if (!(height > 0 && width > 0)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `image size ${width}×${height} must be positive`)
  if (Math.max(height, width) / Math.min(height, width) > 200) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `image ${width}×${height}: aspect ratio must be at most 200`)
  }
  let h = roundHalfEven(height / factor) * factor
  let w = roundHalfEven(width / factor) * factor
  if (h * w > maxPixels) {
    const beta = Math.sqrt((height * width) / maxPixels)
    h = Math.max(factor, Math.floor(height / beta / factor) * factor)
    w = Math.max(factor, Math.floor(width / beta / factor) * factor)
  } else if (h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (height * width))
    h = Math.ceil((height * beta) / factor) * factor
    w = Math.ceil((width * beta) / factor) * factor
  }
  return [h, w]
}

export type VisionModel = 'qwen3-vl' | 'glm-4.1v'

const FACTOR: Record<VisionModel, number> = { 'qwen3-vl': 32, 'glm-4.1v': 28 }

/** Vision tokens of one `width × height` page: (H/f)·(W/f) after smart_resize with factor f. */
export function visionTokens(width: number, height: number, model: VisionModel = 'qwen3-vl', limits: PixelLimits = {}): number {
  const f = FACTOR[model]
  const [h, w] = smartResize(height, width, f, limits)
  return (h / f) * (w / f)
}
