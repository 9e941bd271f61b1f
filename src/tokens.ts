/**
 * Token arithmetic for page images: how many vision tokens a page costs in Qwen3-VL (factor 32) and
 * GLM-4.1V / Glyph (factor 28), after the processors' smart_resize (GLM-4.1V's counts the two temporal frames of a
 * still image in its pixel budget) and, optionally, LLaMA-Factory's training-time downscale (`image_max_pixels`).
 * The same rules as the native engine's preprocessing (crate/src/vision).
 */
import { VtcError } from './errors.js'

export interface PixelLimits {
  /**
   * `size.shortest_edge` of preprocessor_config.json: smaller images are scaled up (default: the family's,
   * Qwen3-VL 65536, GLM-4.1V 12544; `smartResize`, which has no family: 65536).
   */
  minPixels?: number
  /**
   * `size.longest_edge`: larger images are scaled down (default: the family's, Qwen3-VL 16777216, GLM-4.1V
   * 47040000; `smartResize`: 16777216).
   */
  maxPixels?: number
  /**
   * LLaMA-Factory's `image_max_pixels`: the image is first shrunk to at most this many pixels (⌊w·s⌋ × ⌊h·s⌋,
   * s = √(max / (w·h))), then the processor runs. VTC-R1 trains with 262144 (default: none, the processor sees
   * the image as given; `smartResize` ignores it).
   */
  imageMaxPixels?: number
}

/** Python's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r
}

/** How a family's processor resizes: its factor (patch × merge), default budget, frames counted in it. */
interface Processor {
  factor: number
  minPixels: number
  maxPixels: number
  /** GLM-4.1V compares 2·h·w with the budget (the still image repeated over the temporal patch). */
  frames: number
  /** GLM-4.1V (transformers ≥ 5) scales an image with a side under the factor up to it first. */
  upscaleSmall: boolean
}

/**
 * The processors' smart_resize: the [height, width] an image is resized to before patching. `frames` and
 * `upscaleSmall` are GLM-4.1V's variations (see `Processor`); Qwen's processor uses 1 and false.
 */
export function smartResize(height: number, width: number, factor: number, limits: PixelLimits = {}, frames = 1, upscaleSmall = false): [number, number] {
  const minPixels = limits.minPixels ?? 65536
  const maxPixels = limits.maxPixels ?? 16777216
  if (!(height > 0 && width > 0)) throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `image size ${width}×${height} must be positive`)
  if (upscaleSmall && (height < factor || width < factor)) {
    const s = Math.max(factor / height, factor / width)
    ;[height, width] = [Math.trunc(height * s), Math.trunc(width * s)]
  }
  if (Math.max(height, width) / Math.min(height, width) > 200) {
    throw new VtcError('ERR_VTC_INVALID_ARGUMENT', `image ${width}×${height}: aspect ratio must be at most 200`)
  }
  let h = roundHalfEven(height / factor) * factor
  let w = roundHalfEven(width / factor) * factor
  if (frames * h * w > maxPixels) {
    const beta = Math.sqrt((frames * height * width) / maxPixels)
    h = Math.max(factor, Math.floor(height / beta / factor) * factor)
    w = Math.max(factor, Math.floor(width / beta / factor) * factor)
  } else if (frames * h * w < minPixels) {
    const beta = Math.sqrt(minPixels / (frames * height * width))
    h = Math.ceil((height * beta) / factor) * factor
    w = Math.ceil((width * beta) / factor) * factor
  }
  return [h, w]
}

/**
 * The [width, height] LLaMA-Factory's `_preprocess_image` hands the processor when training with
 * `image_max_pixels`: shrunk to at most `maxPixels`, grown to at least 32·32, a side under 28 stretched to 28.
 */
export function trainingSize(width: number, height: number, maxPixels: number): [number, number] {
  let [w, h] = [width, height]
  for (const [limit, applies] of [
    [maxPixels, w * h > maxPixels],
    [32 * 32, w * h < 32 * 32],
  ] as const) {
    if (applies) {
      const s = Math.sqrt(limit / (w * h))
      ;[w, h] = [Math.trunc(w * s), Math.trunc(h * s)]
    }
  }
  return [Math.max(w, 28), Math.max(h, 28)]
}

export type VisionModel = 'qwen3-vl' | 'glm-4.1v'

const PROCESSORS: Record<VisionModel, Processor> = {
  'qwen3-vl': { factor: 32, minPixels: 65536, maxPixels: 16777216, frames: 1, upscaleSmall: false },
  'glm-4.1v': { factor: 28, minPixels: 12544, maxPixels: 47040000, frames: 2, upscaleSmall: true },
}

/** Vision tokens of one `width × height` page: (H/f)·(W/f) after the family's smart_resize with factor f. */
export function visionTokens(width: number, height: number, model: VisionModel = 'qwen3-vl', limits: PixelLimits = {}): number {
  const p = PROCESSORS[model]
  if (limits.imageMaxPixels !== undefined) [width, height] = trainingSize(width, height, limits.imageMaxPixels)
  const budget = { minPixels: limits.minPixels ?? p.minPixels, maxPixels: limits.maxPixels ?? p.maxPixels }
  const [h, w] = smartResize(height, width, p.factor, budget, p.frames, p.upscaleSmall)
  return (h / p.factor) * (w / p.factor)
}
