//! PNG encoding of rendered pages: `Fast` (the default) with our own run-aware deflate (`deflate.rs`),
//! the other levels with the `png` crate.

use super::deflate::zlib_scanlines;
use super::raster::Page;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PngCompression {
    /// Stored blocks: largest files, least CPU.
    None,
    /// Runs and literals with one Huffman table per page: on text pages (long white runs) smaller than
    /// zlib's fastest level at a small fraction of the time.
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
    if level == PngCompression::Fast {
        return encode_fast(page);
    }
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

/// The largest chunk length PNG allows.
const MAX_CHUNK: usize = (1 << 31) - 1;

/// Signature, IHDR, the zlib stream in IDAT chunks, IEND; 8-bit grey or RGB, filter None on every row.
fn encode_fast(page: &Page) -> Result<Vec<u8>> {
    if page.width == 0 || page.height == 0 {
        return Err(Error::Png(format!("cannot encode a {}×{} page: PNG images have at least one pixel", page.width, page.height)));
    }
    let mut out = SPARE_PNG.with(|s| std::mem::take(&mut *s.borrow_mut()));
    out.clear();
    out.reserve(page.data.len() / 6 + 1024);
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = [0u8; 13];
    ihdr[..4].copy_from_slice(&(page.width as u32).to_be_bytes());
    ihdr[4..8].copy_from_slice(&(page.height as u32).to_be_bytes());
    ihdr[8] = 8; // bit depth
    ihdr[9] = if page.channels == 1 { 0 } else { 2 }; // grey or RGB; compression, filter, interlace 0
    write_chunk(&mut out, b"IHDR", &ihdr);
    // The zlib stream goes straight into its IDAT chunk.
    let idat = begin_chunk(&mut out, b"IDAT");
    zlib_scanlines(&page.data, page.width * page.channels, page.channels, &mut out);
    if out.len() - idat - 8 <= MAX_CHUNK {
        end_chunk(&mut out, idat);
    } else {
        // Too long for one chunk (a page of gigapixels): split it.
        let zlib = out.split_off(idat + 8);
        out.truncate(idat);
        for part in zlib.chunks(MAX_CHUNK) {
            write_chunk(&mut out, b"IDAT", part);
        }
    }
    write_chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

thread_local! {
    /// A written PNG's buffer handed back with `recycle`, for the next page on this thread.
    static SPARE_PNG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives an encoded PNG's buffer back for reuse by the next page encoded on this thread (batch
/// rendering writes each file and drops it; a fresh buffer per page costs page faults whenever the
/// allocator has returned the last one to the system).
pub fn recycle(png: Vec<u8>) {
    if png.capacity() <= super::KEEP_BUFFER_BYTES {
        let _ = SPARE_PNG.try_with(|s| *s.borrow_mut() = png);
    }
}

fn write_chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    let start = begin_chunk(out, kind);
    out.extend_from_slice(body);
    end_chunk(out, start);
}

/// Appends a chunk's length (filled in by `end_chunk`) and type; the body follows. Returns where the
/// chunk starts.
fn begin_chunk(out: &mut Vec<u8>, kind: &[u8; 4]) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(kind);
    start
}

/// Fills in the length of the chunk at `start`, whose body ends the buffer, and appends its CRC.
fn end_chunk(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start - 8;
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    let crc = crc32fast::hash(&out[start + 4..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{Channels, RenderConfig, Renderer};

    fn decode(png_bytes: &[u8]) -> Page {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info().expect("PNG header");
        let mut data = vec![0; reader.output_buffer_size().expect("buffer size")];
        let info = reader.next_frame(&mut data).expect("PNG data (chunk CRCs are checked)");
        data.truncate(info.buffer_size());
        Page { width: info.width as usize, height: info.height as usize, channels: info.color_type.samples(), data }
    }

    /// Real pages, grey and coloured, come back pixel-exact from every level, and the default level
    /// compresses them well.
    #[test]
    fn rendered_pages_round_trip_at_every_level() {
        let golden = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/golden/render/texts.jsonl");
        let first = std::fs::read_to_string(golden).expect("golden texts.jsonl").lines().next().map(str::to_string).unwrap();
        let text = serde_json::from_str::<serde_json::Value>(&first).unwrap()["text"].as_str().unwrap().to_string();
        let coloured = RenderConfig::from_json_str(r##"{"font-color": "#1a2b3c", "page-bg-color": "#fdf6e3"}"##, RenderConfig::default()).unwrap();
        for (cfg, channels) in [(RenderConfig::default(), Channels::Grey), (RenderConfig::default(), Channels::Rgb), (coloured, Channels::Rgb)] {
            let renderer = Renderer::new(cfg, &[]).unwrap();
            let (pages, _) = renderer.render(&text, channels);
            assert!(pages.len() >= 2);
            for page in &pages {
                for level in [PngCompression::None, PngCompression::Fast, PngCompression::Balanced] {
                    let bytes = encode_png(page, level).unwrap();
                    let back = decode(&bytes);
                    assert_eq!((back.width, back.height, back.channels), (page.width, page.height, page.channels), "{level:?}");
                    assert!(back.data == page.data, "{level:?}: pixels differ");
                    if level == PngCompression::Fast {
                        assert!(bytes.len() * 4 < page.data.len(), "fast level: {} bytes for {} pixel bytes", bytes.len(), page.data.len());
                    }
                }
            }
        }
    }

    #[test]
    fn empty_pages_are_an_error_not_a_file() {
        let page = Page { width: 0, height: 10, channels: 1, data: Vec::new() };
        assert!(encode_png(&page, PngCompression::Fast).unwrap_err().to_string().contains("0×10"));
    }
}
