/** vtc-r1: VTC-R1 optical-memory reasoning for Node, with a Rust core. */
export { VtcError } from './errors.js'
export {
  Page,
  Renderer,
  renderText,
  renderBatch,
  layoutText,
  type BatchItem,
  type BatchOptions,
  type BatchProgress,
  type BatchTextResult,
  type PngCompression,
  type Preset,
  type RenderConfigJson,
  type RendererOptions,
  type RenderOptions,
  type RenderResult,
} from './render.js'
export { smartResize, trainingSize, visionTokens, type PixelLimits, type VisionModel } from './tokens.js'
export { countTextTokens } from './text-tokens.js'
export * as evaluation from './eval/index.js'
export { extractAnswer, gradeAnswer, gradeResponse, loadBenchmark } from './eval/index.js'
export * from './backends/index.js'
export { hubCacheDir, pullModel, type HubOptions, type PullProgress, type PullResult } from './hub/index.js'
export { OpticalMemory, MemoryError, SYSTEM_PROMPT, isComplete } from './memory.js'
export { createServer, VtcServer, type ServerOptions } from './server/index.js'
export { segmentText, DEFAULT_SEGMENT_TOKENS, type Segment } from './segment.js'
export { buildDataset, type BuildOptions, type BuildResult } from './dataset/index.js'
