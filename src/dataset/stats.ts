/**
 * Token accounting of the dataset: text tokens of the reasoning (Qwen3 tokenizer), vision tokens of its pages
 * (Qwen3-VL factor 32, GLM-4.1V factor 28, with and without the training cap `image_max_pixels`, applied as
 * LLaMA-Factory applies it: the image shrunk first, then the processor), and the
 * compression ratio ρ = text tokens of the rendered segments / vision tokens of their pages.
 */
import { visionTokens } from '../tokens.js'

/** Vision tokens of a set of pages under the four ways of counting them. */
export interface VisionCounts {
  qwen3vl: number
  qwen3vlCapped: number
  glm41v: number
  glm41vCapped: number
}

export const zeroVision = (): VisionCounts => ({ qwen3vl: 0, qwen3vlCapped: 0, glm41v: 0, glm41vCapped: 0 })

export function pageVision([w, h]: [number, number], maxPixels: number): VisionCounts {
  return {
    qwen3vl: visionTokens(w, h, 'qwen3-vl'),
    qwen3vlCapped: visionTokens(w, h, 'qwen3-vl', { imageMaxPixels: maxPixels }),
    glm41v: visionTokens(w, h, 'glm-4.1v'),
    glm41vCapped: visionTokens(w, h, 'glm-4.1v', { imageMaxPixels: maxPixels }),
  }
}

export function addVision(a: VisionCounts, b: VisionCounts): VisionCounts {
  return {
    qwen3vl: a.qwen3vl + b.qwen3vl,
    qwen3vlCapped: a.qwen3vlCapped + b.qwen3vlCapped,
    glm41v: a.glm41v + b.glm41v,
    glm41vCapped: a.glm41vCapped + b.glm41vCapped,
  }
}

export function ratios(text: number, v: VisionCounts): VisionCounts {
  const r = (x: number) => (x > 0 ? round3(text / x) : 0)
  return { qwen3vl: r(v.qwen3vl), qwen3vlCapped: r(v.qwen3vlCapped), glm41v: r(v.glm41v), glm41vCapped: r(v.glm41vCapped) }
}

export const round3 = (x: number) => Math.round(x * 1000) / 1000

/** One line of `samples.stats.jsonl`, aligned with the training JSONL line by line. */
export interface SampleStats {
  /** Input row index and id (uuid). */
  row: number
  id: string
  /** 1-based segment number and the trace's segment count. */
  segment: number
  segments: number
  /** Text tokens of the assistant turn (tags included). */
  targetTokens: number
  /** Images in the user turn and the text tokens of the segments they show. */
  images: number
  memoryTextTokens: number
  memoryVision: VisionCounts
  /** memoryTextTokens / vision tokens (0 without images). */
  compression: VisionCounts
  /** Estimated training length with Qwen3-VL under the cap: prompt text + image tokens + target. */
  estimatedTokens: number
}

export interface DatasetStats {
  rows: {
    read: number
    used: number
    skipped: number
    skippedBy: Record<string, number>
  }
  samples: number
  segments: number
  /** Pages rendered (segments 1..n-1 of each trace; the last segment is never shown as memory). */
  pages: number
  tokens: {
    /** Reasoning text of the used traces (all segments). */
    reasoning: number
    /** Text of the rendered segments, as rendered (with their `<think>` tag). */
    rendered: number
    /** Assistant turns (training targets) over all samples. */
    targets: number
  }
  /** Vision tokens of every rendered page, counted once. */
  vision: VisionCounts
  /** ρ = tokens.rendered / vision. */
  compression: VisionCounts
  perSample: {
    maxImages: number
    meanImages: number
    maxEstimatedTokens: number
    /** Samples longer than cutoff_len (LLaMA-Factory truncates them). */
    overCutoff: number
    cutoffLen: number
  }
  segmentTokens: { max: number; mean: number }
}

/** Integer running totals (kept in the resume manifest: integers survive JSON exactly, means would drift). */
export interface Totals {
  read: number
  used: number
  skippedBy: Record<string, number>
  samples: number
  segments: number
  segmentTokensSum: number
  segmentTokensMax: number
  pages: number
  reasoning: number
  rendered: number
  targets: number
  vision: VisionCounts
  imagesSum: number
  imagesMax: number
  estimatedMax: number
  overCutoff: number
}

export function emptyTotals(): Totals {
  return {
    read: 0,
    used: 0,
    skippedBy: {},
    samples: 0,
    segments: 0,
    segmentTokensSum: 0,
    segmentTokensMax: 0,
    pages: 0,
    reasoning: 0,
    rendered: 0,
    targets: 0,
    vision: zeroVision(),
    imagesSum: 0,
    imagesMax: 0,
    estimatedMax: 0,
    overCutoff: 0,
  }
}

export class StatsAccumulator {
  constructor(
    readonly t: Totals,
    readonly cutoffLen: number,
  ) {}

  skip(reason: string): void {
    this.t.read++
    this.t.skippedBy[reason] = (this.t.skippedBy[reason] ?? 0) + 1
  }

  row(r: { reasoningTokens: number; segmentTokens: number[]; renderedTokens: number; pages: number; vision: VisionCounts }): void {
    const t = this.t
    t.read++
    t.used++
    t.segments += r.segmentTokens.length
    for (const n of r.segmentTokens) {
      t.segmentTokensSum += n
      t.segmentTokensMax = Math.max(t.segmentTokensMax, n)
    }
    t.reasoning += r.reasoningTokens
    t.rendered += r.renderedTokens
    t.pages += r.pages
    t.vision = addVision(t.vision, r.vision)
  }

  sample(x: SampleStats): void {
    const t = this.t
    t.samples++
    t.targets += x.targetTokens
    t.imagesSum += x.images
    t.imagesMax = Math.max(t.imagesMax, x.images)
    t.estimatedMax = Math.max(t.estimatedMax, x.estimatedTokens)
    if (x.estimatedTokens > this.cutoffLen) t.overCutoff++
  }

  stats(): DatasetStats {
    const t = this.t
    const skipped = Object.values(t.skippedBy).reduce((a, b) => a + b, 0)
    return {
      rows: {
        read: t.read,
        used: t.used,
        skipped,
        skippedBy: Object.fromEntries(Object.entries(t.skippedBy).sort(([a], [b]) => a.localeCompare(b))),
      },
      samples: t.samples,
      segments: t.segments,
      pages: t.pages,
      tokens: { reasoning: t.reasoning, rendered: t.rendered, targets: t.targets },
      vision: { ...t.vision },
      compression: ratios(t.rendered, t.vision),
      perSample: {
        maxImages: t.imagesMax,
        meanImages: t.samples ? round3(t.imagesSum / t.samples) : 0,
        maxEstimatedTokens: t.estimatedMax,
        overCutoff: t.overCutoff,
        cutoffLen: this.cutoffLen,
      },
      segmentTokens: { max: t.segmentTokensMax, mean: t.segments ? round3(t.segmentTokensSum / t.segments) : 0 },
    }
  }
}

export function formatStats(s: DatasetStats): string {
  const skipped = Object.entries(s.rows.skippedBy)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
  const x = (r: number) => (r > 0 ? `${r.toFixed(2)}×` : 'n/a')
  return [
    `rows           ${s.rows.read} read, ${s.rows.used} used, ${s.rows.skipped} skipped${skipped ? ` (${skipped})` : ''}`,
    `samples        ${s.samples} (${s.segments} segments; mean ${s.segmentTokens.mean.toFixed(0)}, max ${s.segmentTokens.max} tokens)`,
    `pages          ${s.pages} rendered; up to ${s.perSample.maxImages} images per sample (mean ${s.perSample.meanImages.toFixed(2)})`,
    `text tokens    ${s.tokens.reasoning} reasoning, ${s.tokens.rendered} rendered as pages, ${s.tokens.targets} in targets`,
    `vision tokens  Qwen3-VL ${s.vision.qwen3vlCapped} capped / ${s.vision.qwen3vl} uncapped; GLM-4.1V ${s.vision.glm41vCapped} / ${s.vision.glm41v}`,
    `compression ρ  Qwen3-VL ${x(s.compression.qwen3vlCapped)} capped, ${x(s.compression.qwen3vl)} uncapped; ` +
      `GLM-4.1V ${x(s.compression.glm41vCapped)}, ${x(s.compression.glm41v)}`,
    `length         longest sample ≈ ${s.perSample.maxEstimatedTokens} tokens; ${s.perSample.overCutoff} over cutoff_len ${s.perSample.cutoffLen}`,
  ].join('\n')
}
