/** Backends the optical-memory loop and the server drive: any OpenAI-compatible server, or the embedded engine. */
export {
  abortError,
  collect,
  GenerationError,
  type Backend,
  type ChatMessage,
  type ChatModel,
  type ContentPart,
  type DoneEvent,
  type FinishReason,
  type GenerateRequest,
  type GenerationEvent,
  type ImageInput,
  type ImagePart,
  type Role,
  type TextEvent,
  type TextPart,
  type Timings,
  type TokenLogprob,
  type Usage,
} from './types.js'
export { OpenAIBackend, apiRoot, sseData, type OpenAIBackendOptions } from './openai.js'
export {
  EmbeddedBackend,
  engineBinding,
  loadModel,
  type LoadModelOptions,
  type NativeEngine,
  type NativeEngineBinding,
  type NativeGenerateRequest,
  type NativeGenerationEvent,
  type NativeGenerationResult,
  type NativeImage,
  type NativeLoadOptions,
  type NativeMessage,
  type NativePart,
} from './embedded.js'
export { imageBytes, imageDataUrl, sniffImage } from './images.js'
