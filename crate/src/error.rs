//! One error type for the crate. Every variant names what is at fault (file, key, tensor, value) so the
//! message a user sees in Node is enough to fix their input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config key `{key}`: {message}")]
    Config { key: String, message: String },

    #[error("unknown config key `{key}`; allowed keys: {allowed}")]
    UnknownConfigKey { key: String, allowed: String },

    #[error("font file {path}: {message}")]
    Font { path: PathBuf, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("PNG encoding failed: {0}")]
    Png(String),

    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument { name: String, message: String },

    #[error("cancelled")]
    Cancelled,

    /// A model directory file (config.json, generation_config.json, preprocessor_config.json, ...) is
    /// missing a key or holds a value the model cannot use.
    #[error("{path}: key `{key}`: {message}")]
    ModelConfig { path: PathBuf, key: String, message: String },

    /// A safetensors file (or its index) is missing, truncated, corrupt or lacks a tensor.
    #[error("weights {path}: {message}")]
    Weights { path: PathBuf, message: String },

    /// One tensor is missing or has the wrong shape or dtype.
    #[error("weights {path}: tensor `{tensor}`: {message}")]
    Tensor { path: PathBuf, tensor: String, message: String },

    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("chat template ({source_name}): {message}")]
    ChatTemplate { source_name: String, message: String },

    #[error("image `{name}`: {message}")]
    Image { name: String, message: String },

    #[error("prompt has {tokens} tokens but the model's context is {max} tokens")]
    ContextLength { tokens: usize, max: usize },

    /// Found while counting a long prompt piece by piece, before all of it was tokenized.
    #[error("prompt has at least {at_least} tokens but the model's context is {max} tokens")]
    PromptTooLong { at_least: usize, max: usize },

    /// A failure inside the tensor library while running the model.
    #[error("model: {0}")]
    Model(String),

    #[error("internal error (a bug in vtc-r1, please report it): {0}")]
    Internal(String),
}

impl Error {
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { name: name.into(), message: message.into() }
    }

    /// Stable machine-readable code, surfaced in JS as `err.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { .. } | Error::UnknownConfigKey { .. } => "ERR_VTC_CONFIG",
            Error::Font { .. } => "ERR_VTC_FONT",
            Error::Io { .. } => "ERR_VTC_IO",
            Error::Png(_) => "ERR_VTC_PNG",
            Error::InvalidArgument { .. } => "ERR_VTC_INVALID_ARGUMENT",
            Error::Cancelled => "ERR_VTC_CANCELLED",
            Error::ModelConfig { .. } => "ERR_VTC_MODEL_CONFIG",
            Error::Weights { .. } | Error::Tensor { .. } => "ERR_VTC_WEIGHTS",
            Error::Tokenizer { .. } => "ERR_VTC_TOKENIZER",
            Error::ChatTemplate { .. } => "ERR_VTC_CHAT_TEMPLATE",
            Error::Image { .. } => "ERR_VTC_IMAGE",
            Error::ContextLength { .. } | Error::PromptTooLong { .. } => "ERR_VTC_CONTEXT_LENGTH",
            Error::Model(_) => "ERR_VTC_MODEL",
            Error::Internal(_) => "ERR_VTC_INTERNAL",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `f`, turning a panic into `Error::Internal` so that no panic can unwind into Node.
pub fn catch_panic<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string());
            Err(Error::Internal(msg))
        }
    }
}
