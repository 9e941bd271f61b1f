/** `vtc-r1 demo`: the main job on the bundled default — a real reasoning trace turned into optical memory. */
import { readFile } from 'node:fs/promises'
import { parseArgs } from 'node:util'

import { Renderer } from '../render.js'
import { countTextTokens } from '../text-tokens.js'
import { visionTokens } from '../tokens.js'
import { summary } from './render.js'

const DEMO = new URL('../../assets/demo-trace.json', import.meta.url)

export const DEMO_HELP = `usage: vtc-r1 demo [--out DIR]
  Renders a bundled real reasoning trace (OpenR1-Math) with the VTC-R1 training config and prints
  how many Qwen3-VL vision tokens replace its text tokens. Pages go to DIR (default ./vtc-r1-demo).`

export async function demoCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { out: { type: 'string' }, help: { type: 'boolean', short: 'h' } } })
  if (values.help) {
    console.log(DEMO_HELP)
    return
  }
  const out = values.out ?? 'vtc-r1-demo'
  const demo = JSON.parse(await readFile(DEMO, 'utf8')) as { problem: string; generation: string; source: string }
  const reasoning = /<think>([\s\S]*?)<\/think>/.exec(demo.generation)?.[1]?.trim() ?? demo.generation
  console.log(`question: ${demo.problem.split('\n')[0].slice(0, 100)}…`)
  console.log(`trace: ${demo.source}\n`)

  const renderer = await Renderer.create({ preset: 'vtc-r1' })
  const t0 = performance.now()
  const [r] = await renderer.renderBatch([{ id: 'demo', text: reasoning }], { outDir: out })
  const ms = performance.now() - t0
  const maxPixels = 262144
  let vision = 0
  let visionUncapped = 0
  for (const [w, h] of r.pageSizes) {
    vision += visionTokens(w, h, 'qwen3-vl', { maxPixels })
    visionUncapped += visionTokens(w, h, 'qwen3-vl')
  }
  console.log(
    summary({
      texts: 1,
      pages: r.pageSizes.length,
      chars: r.chars,
      textTokens: countTextTokens(reasoning),
      vision,
      visionUncapped,
      maxPixels,
      missing: r.missingGlyphs,
    }),
  )
  console.log(`rendered in   ${ms.toFixed(1)} ms; pages written to ${out}/`)
}
