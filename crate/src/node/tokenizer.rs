//! JS bindings of the tokenizer (`tokenizer.json` through the `tokenizers` crate).

use std::path::Path;

use napi::bindgen_prelude::Uint32Array;
use napi_derive::napi;

use super::guarded;
use crate::tokenizer::Tokenizer;

#[napi]
pub struct NativeTokenizer {
    inner: Tokenizer,
}

#[napi]
impl NativeTokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    #[napi(factory)]
    pub fn from_file(path: String) -> napi::Result<Self> {
        guarded(|| Ok(NativeTokenizer { inner: Tokenizer::from_file(Path::new(&path))? }))
    }

    /// Tokens in `text`, no special tokens added.
    #[napi]
    pub fn count(&self, text: String) -> napi::Result<u32> {
        guarded(|| self.inner.count(&text).map(|n| n as u32))
    }

    /// Token ids of `text`, no special tokens added.
    #[napi]
    pub fn encode(&self, text: String) -> napi::Result<Uint32Array> {
        guarded(|| self.inner.encode_plain(&text)).map(Uint32Array::new)
    }

    /// UTF-16 offsets where each token of `text` ends.
    #[napi]
    pub fn token_ends(&self, text: String) -> napi::Result<Uint32Array> {
        guarded(|| self.inner.token_ends_utf16(&text)).map(Uint32Array::new)
    }
}
