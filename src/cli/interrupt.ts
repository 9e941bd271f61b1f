/**
 * Ctrl-C (and SIGTERM) for long commands: the first signal aborts `signal` so the command can stop cleanly and
 * keep what it finished; a second one quits at once (exit 130).
 */
export function stopOnInterrupt(message: string): { signal: AbortSignal; release: () => void } {
  const controller = new AbortController()
  const onSignal = () => {
    if (controller.signal.aborted) process.exit(130)
    process.stderr.write(`\n${message} (Ctrl-C again to quit at once)\n`)
    controller.abort()
  }
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  return {
    signal: controller.signal,
    release: () => {
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    },
  }
}
