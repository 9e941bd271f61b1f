/**
 * Worker threads that prepare batches of rows (tokenization dominates a build, and the JS tokenizer is
 * single-threaded). Batches go to the least busy worker; each call resolves with its own batch, so the
 * caller keeps the input order.
 */
import { Worker } from 'node:worker_threads'

import { VtcError } from '../errors.js'
import type { InputRow } from './openr1.js'
import type { Prepared, PrepareOptions } from './prepare.js'

interface Pending {
  resolve: (p: Prepared[]) => void
  reject: (e: Error) => void
}

export class PreparePool {
  private readonly workers: { worker: Worker; busy: number }[] = []
  private readonly pending = new Map<number, Pending>()
  private nextId = 0
  private failure: Error | undefined

  constructor(size: number, options: PrepareOptions) {
    for (let i = 0; i < size; i++) {
      const worker = spawn(options)
      const slot = { worker, busy: 0 }
      worker.on('message', (m: { id: number; prepared?: Prepared[]; error?: { message: string; code?: string } }) => {
        slot.busy--
        const p = this.pending.get(m.id)
        this.pending.delete(m.id)
        if (m.error) p?.reject(new VtcError(m.error.code ?? 'ERR_VTC_INTERNAL', m.error.message))
        else p?.resolve(m.prepared!)
      })
      worker.on('error', (err: Error) => this.fail(new VtcError('ERR_VTC_INTERNAL', `a preparation worker failed: ${err.message}`, { cause: err })))
      worker.on('exit', (code) => {
        if (code !== 0) this.fail(new VtcError('ERR_VTC_INTERNAL', `a preparation worker exited with code ${code}`))
      })
      this.workers.push(slot)
    }
  }

  prepare(rows: InputRow[]): Promise<Prepared[]> {
    if (this.failure) return Promise.reject(this.failure)
    const slot = this.workers.reduce((a, b) => (b.busy < a.busy ? b : a))
    const id = this.nextId++
    slot.busy++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      slot.worker.postMessage({ id, rows })
    })
  }

  private fail(err: Error): void {
    this.failure ??= err
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }

  async close(): Promise<void> {
    this.failure ??= new VtcError('ERR_VTC_INTERNAL', 'the preparation pool is closed')
    await Promise.all(this.workers.map((w) => w.worker.terminate()))
  }
}

/**
 * The compiled worker, or, when running from the TypeScript sources (tests and benches under tsx), a
 * bootstrap that registers tsx's loader in the worker before importing the .ts entry.
 */
function spawn(options: PrepareOptions): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./prepare-worker.js', import.meta.url), { workerData: options })
  const entry = new URL('./prepare-worker.ts', import.meta.url).href
  const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(entry)}) })`
  return new Worker(boot, { eval: true, workerData: options })
}
