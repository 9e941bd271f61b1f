/**
 * VTC-R1 training samples: segment k of a trace becomes one sample whose user turn carries the question and
 * the rendered pages of segments 1..k-1 ("optical memory"), and whose assistant turn is segment k.
 */

/** The VTC-R1 system prompt, verbatim (`inference.py`, `math_eval.py`). */
export const SYSTEM_PROMPT =
  'These images record your previous reasoning process. Based on this reasoning, continue and complete the final answer. ' +
  'Do not restart the reasoning.\nIf no images are provided, start the reasoning from scratch.'

/** LLaMA-Factory's image placeholder; its mm_plugin swaps each one for the model's image tokens, in order. */
export const IMAGE_PLACEHOLDER = '<image>'

export interface ShareGptMessage {
  role: 'system' | 'user' | 'assistant'
  content: string
}

/** One line of the LLaMA-Factory "sharegpt" JSONL. */
export interface TrainingSample {
  messages: ShareGptMessage[]
  /** Page files relative to the dataset directory, one per `<image>`, in order. */
  images: string[]
}

export interface TurnOptions {
  /**
   * Start every segment with `<think>\n` (default true). Each round of the loop is a fresh assistant turn, so
   * every round reopens the thinking block; and LLaMA-Factory's reasoning templates (qwen3_vl, glm4v) insert
   * an empty `<think></think>` into any response that has neither tag, which would teach the model to close
   * its thinking at once. With false only the first segment opens it.
   */
  thinkEverySegment?: boolean
}

/**
 * The assistant turns of a trace's segments: the last one closes the thinking and gives
 * `<answer>answer</answer>`. These same texts (without the answer) are what gets rendered into pages, as the
 * loop renders each round's whole output.
 */
export function assistantTurns(segments: string[], answer: string, options: TurnOptions = {}): string[] {
  const every = options.thinkEverySegment ?? true
  return segments.map((s, k) => {
    const open = k === 0 || every ? '<think>\n' : ''
    const body = s.trim()
    return k === segments.length - 1 ? `${open}${body}\n</think>\n\n<answer>${answer}</answer>` : `${open}${body}`
  })
}

export interface SampleOptions {
  /** Put the pages before the question (the evaluation code's order); default: question first (inference.py). */
  imagesFirst?: boolean
  systemPrompt?: string
}

/**
 * The samples of one trace. `pages[j]` are the page files of turn j (only turns 0..n-2 are ever rendered:
 * the last segment is never anyone's memory).
 */
export function traceSamples(question: string, turns: string[], pages: string[][], options: SampleOptions = {}): TrainingSample[] {
  const system = options.systemPrompt ?? SYSTEM_PROMPT
  const q = question.trim()
  const samples: TrainingSample[] = []
  const images: string[] = []
  for (let k = 0; k < turns.length; k++) {
    const placeholders = IMAGE_PLACEHOLDER.repeat(images.length)
    // no separator: the models' chat templates put a message's text and image items side by side
    const user = options.imagesFirst ? placeholders + q : q + placeholders
    samples.push({
      messages: [
        { role: 'system', content: system },
        { role: 'user', content: user },
        { role: 'assistant', content: turns[k] },
      ],
      images: [...images],
    })
    if (k < turns.length - 1) images.push(...(pages[k] ?? []))
  }
  return samples
}
