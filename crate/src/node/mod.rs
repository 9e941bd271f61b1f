//! The N-API boundary: every `#[napi]` item lives under this module. It only marshals values and maps
//! errors; the work happens in the plain-Rust modules, always off the JS thread, never panicking into Node.

mod model;
mod render;
mod tokenizer;

use crate::error::Error;

/// Our errors cross into JS as `[CODE] message`; the TypeScript layer turns that into `VtcError.code`.
pub(crate) fn to_napi(e: Error) -> napi::Error {
    napi::Error::new(napi::Status::GenericFailure, format!("[{}] {}", e.code(), e))
}

/// Runs `f` with panics caught and errors mapped for JS.
pub(crate) fn guarded<T>(f: impl FnOnce() -> crate::Result<T>) -> napi::Result<T> {
    crate::error::catch_panic(f).map_err(to_napi)
}

/// Bytes of `width × height` pixels of `channels` 8-bit samples, or `None` when that overflows: sizes from
/// JavaScript are never trusted to multiply without wrapping.
pub(crate) fn pixel_bytes(width: u32, height: u32, channels: u32) -> Option<usize> {
    (width as usize).checked_mul(height as usize)?.checked_mul(channels as usize)
}
