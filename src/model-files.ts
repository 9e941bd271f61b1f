/**
 * The files of a Hugging Face model directory that the engine reads (crate/src: tokenizer.rs, weights.rs,
 * engine/, generate/): what `vtc-r1 pull` downloads, what makes a cached snapshot complete, and what an eval run
 * fingerprints.
 */
import { VtcError } from './errors.js'

/** The files besides the weights; only config.json and tokenizer.json are required. */
export const MODEL_FILES = [
  'config.json',
  'generation_config.json',
  'preprocessor_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
  'chat_template.json',
  'model.safetensors.index.json',
]
export const REQUIRED_FILES = ['config.json', 'tokenizer.json']
export const WEIGHTS = 'model.safetensors'
export const WEIGHTS_INDEX = 'model.safetensors.index.json'

/** The shard files a safetensors index names (its `weight_map` values), sorted; `path` names the index in errors. */
export function indexShards(text: string, path: string): string[] {
  let map: unknown
  try {
    map = (JSON.parse(text) as { weight_map?: unknown }).weight_map
  } catch (err) {
    throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}: not valid JSON (${(err as Error).message})`, { cause: err })
  }
  if (!map || typeof map !== 'object') throw new VtcError('ERR_VTC_INVALID_INPUT', `${path}: no "weight_map" object`)
  return [...new Set(Object.values(map).map(String))].sort()
}
