/**
 * A backend that replays a recorded reasoning trace through the optical-memory loop, round by round, the way a
 * VTC-R1 model emits it: the trace's reasoning is cut into segments of at most a round's tokens (as the training
 * data was), round k returns segment k, and the last round closes the thinking and gives the answer. It reads
 * nothing it is sent, so it shows the loop's rendering and token accounting with no model at all (`vtc-r1 demo`).
 */
import { assistantTurns } from '../dataset/samples.js'
import { segmentText } from '../segment.js'
import { countTextTokens } from '../text-tokens.js'
import type { ChatModel, GenerateRequest, GenerationEvent } from './types.js'

export class TraceReplay implements ChatModel {
  readonly name = 'trace replay'
  private next = 0

  /** `turns`: each round's output, in order. */
  constructor(readonly turns: string[]) {}

  /** The rounds of `reasoning` at `roundTokens` tokens each, the last one answering `answer`. */
  static fromTrace(reasoning: string, answer: string, roundTokens: number): TraceReplay {
    const segments = segmentText(reasoning, { maxTokens: roundTokens }).map((s) => s.text)
    return new TraceReplay(assistantTurns(segments, answer))
  }

  async *generate(_request: GenerateRequest): AsyncGenerator<GenerationEvent> {
    const last = this.next >= this.turns.length - 1
    const text = this.turns[Math.min(this.next++, this.turns.length - 1)]
    const tokens = countTextTokens(text)
    yield { type: 'text', text, tokens }
    yield { type: 'done', finishReason: last ? 'stop' : 'length', usage: { completionTokens: tokens }, timings: {} }
  }
}
