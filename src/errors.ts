/** Every error vtc-r1 throws on purpose is a VtcError with a stable `code`. */
export class VtcError extends Error {
  readonly code: string
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'VtcError'
    this.code = code
  }
}

const NATIVE_CODE = /^\[(ERR_VTC_[A-Z_]+)\] ([\s\S]*)$/

/** The native module reports errors as `[CODE] message`; lift the code onto a VtcError. */
export function fromNative(err: unknown): unknown {
  if (err instanceof Error) {
    const m = NATIVE_CODE.exec(err.message)
    // the core's `cancelled` is the caller's AbortSignal at work: one code for every abort
    if (m && m[1] !== 'ERR_VTC_CANCELLED') return new VtcError(m[1], m[2], { cause: err })
    if (m || err.name === 'AbortError' || /abort/i.test(err.message)) {
      return new VtcError('ABORT_ERR', 'the operation was aborted', { cause: err })
    }
  }
  return err
}

/** Awaits a native call, converting its errors. */
export async function native<T>(call: () => Promise<T> | T): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw fromNative(err)
  }
}

export function nativeSync<T>(call: () => T): T {
  try {
    return call()
  } catch (err) {
    throw fromNative(err)
  }
}
