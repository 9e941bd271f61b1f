/** Backends the optical-memory loop and the server drive: any OpenAI-compatible server, or the embedded engine. */
export {
  abortError,
  collect,
  GenerationError,
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
export { OpenAIBackend, type ModelsOptions, type OpenAIBackendOptions } from './openai.js'
export { EmbeddedBackend, loadModel, type LoadModelOptions, type Quantization } from './embedded.js'
