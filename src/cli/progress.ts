/** A one-line progress bar on stderr (rate, ETA); silent when stderr is not a terminal. */
export class ProgressBar {
  private readonly start = performance.now()
  private last = 0
  private readonly tty = process.stderr.isTTY === true

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly unit = 'texts',
  ) {}

  update(done: number, extra: Record<string, number> = {}): void {
    const now = performance.now()
    if (!this.tty || (now - this.last < 100 && done < this.total)) return
    this.last = now
    const secs = (now - this.start) / 1000
    const rate = done / Math.max(secs, 1e-9)
    const eta = rate > 0 ? (this.total - done) / rate : Infinity
    const width = 24
    const filled = this.total > 0 ? Math.round((done / this.total) * width) : width
    const rates = Object.entries(extra)
      .map(([k, v]) => `${(v / Math.max(secs, 1e-9)).toFixed(1)} ${k}/s`)
      .join(' ')
    process.stderr.write(
      `\r${this.label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${count(done)}/${count(this.total)} ` +
        `${rate.toFixed(1)} ${this.unit}/s ${rates} ETA ${formatSeconds(eta)}   `,
    )
  }

  done(): void {
    if (this.tty) process.stderr.write('\n')
  }
}

/** Whole counts as they are, fractional ones (megabytes) to one decimal. */
const count = (n: number) => (Number.isInteger(n) ? String(n) : n.toFixed(1))

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '--'
  if (s < 60) return `${s.toFixed(0)}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`
  return `${Math.floor(s / 3600)}h${Math.round((s % 3600) / 60)}m`
}
