/** Worker-thread entry: prepares batches of rows sent by `PreparePool`. */
import { parentPort, workerData } from 'node:worker_threads'

import type { InputRow } from './openr1.js'
import { prepare, type PrepareOptions } from './prepare.js'

const options = workerData as PrepareOptions
parentPort!.on('message', ({ id, rows }: { id: number; rows: InputRow[] }) => {
  try {
    parentPort!.postMessage({ id, prepared: rows.map((r) => prepare(r, options)) })
  } catch (err) {
    parentPort!.postMessage({ id, error: { message: (err as Error)?.message ?? String(err), code: (err as { code?: string })?.code } })
  }
})
