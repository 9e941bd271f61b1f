/** Models by Hugging Face id: the hub cache (shared with huggingface_hub and transformers), and downloads into it. */
export { hubCacheDir, isModelId } from './cache.js'
export { pullModel, type HubOptions, type PullProgress, type PullResult } from './pull.js'
export { resolveModel, type ResolvedModel } from './resolve.js'
