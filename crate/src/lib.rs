//! Native core of vtc-r1.
//!
//! `render` turns reasoning text into the page images VTC-R1 models were trained on (reportlab layout,
//! poppler-like raster). The model side (weights, vision preprocessing, the model families, generation,
//! engine) lives in its own modules. `node` is the only place that knows about N-API; everything else is plain Rust
//! tested with `cargo test`.

pub mod error;
pub mod json_file;
pub mod render;
pub mod weights;
pub mod quant;
pub mod model;
pub mod generate;
pub mod vision;
pub mod tokenizer;
pub mod engine;

#[cfg(feature = "node")]
mod node;

pub use error::{Error, Result};
