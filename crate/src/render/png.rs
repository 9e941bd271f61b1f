//! PNG encoding of rendered pages (the `png` crate; `Fast` is its fdeflate path, the default here).

use super::raster::Page;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PngCompression {
    /// Stored blocks: largest files, least CPU.
    None,
    /// fdeflate's fastest mode with the Up filter: on text pages (long white runs) nearly as small as
    /// zlib's default at a small fraction of the time.
    #[default]
    Fast,
    Balanced,
    Best,
}

impl PngCompression {
    pub fn parse(s: &str) -> Result<PngCompression> {
        match s {
            "none" => Ok(PngCompression::None),
            "fast" => Ok(PngCompression::Fast),
            "balanced" | "default" => Ok(PngCompression::Balanced),
            "best" => Ok(PngCompression::Best),
            other => Err(Error::invalid("pngCompression", format!("unknown level {other:?}; allowed: none, fast, balanced, best"))),
        }
    }
}

pub fn encode_png(page: &Page, level: PngCompression) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(page.data.len() / 8 + 1024);
    {
        let mut enc = png::Encoder::new(&mut out, page.width as u32, page.height as u32);
        enc.set_color(if page.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(match level {
            PngCompression::None => png::Compression::NoCompression,
            PngCompression::Fast => png::Compression::Fastest,
            PngCompression::Balanced => png::Compression::Balanced,
            PngCompression::Best => png::Compression::High,
        });
        let mut writer = enc.write_header().map_err(|e| Error::Png(e.to_string()))?;
        writer.write_image_data(&page.data).map_err(|e| Error::Png(e.to_string()))?;
        writer.finish().map_err(|e| Error::Png(e.to_string()))?;
    }
    Ok(out)
}
