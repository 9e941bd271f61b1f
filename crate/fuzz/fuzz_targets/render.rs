//! The renderer: a render config (the VTC-R1/Glyph JSON, `RenderConfig::from_json_str`) and a text; the text
//! is laid out with the bundled DejaVu Sans, up to two pages are rasterized, and each page is encoded with
//! the fast PNG encoder (our own deflate) and must decode back to the same pixels.
//!
//! Input: `config JSON \0 text`; without a NUL byte the whole input is the text, with the default config.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vtc_r1::render::layout::layout_pages;
use vtc_r1::render::png::{encode_png, PngCompression};
use vtc_r1::render::raster::rasterize;
use vtc_r1::render::{Channels, Face, FontSet, Page, RenderConfig};

/// Pages rasterized per execution, and their largest size: validation allows 20000×20000-pixel pages, which
/// would make one execution take seconds; layout runs whatever the size.
const MAX_PAGES: usize = 2;
const MAX_RASTER_PIXELS: usize = 4 << 20;

fn decode(bytes: &[u8]) -> Page {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("PNG header");
    let mut data = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut data).expect("PNG data");
    data.truncate(info.buffer_size());
    Page { width: info.width as usize, height: info.height as usize, channels: info.color_type.samples(), data }
}

/// The bundled font, loaded once per process (as `Renderer::new` does when the config names no font):
/// its glyph caches then live across executions, as they do across a batch.
fn bundled_fonts() -> &'static FontSet {
    static FONTS: OnceLock<FontSet> = OnceLock::new();
    FONTS.get_or_init(|| FontSet::new(Face::bundled(), Vec::new()))
}

fuzz_target!(|data: &[u8]| {
    let (config, text) = match common::split_nul(data) {
        (json, Some(text)) => {
            let Ok(json) = std::str::from_utf8(json) else { return };
            match RenderConfig::from_json_str(json, RenderConfig::default()) {
                Ok(cfg) => (cfg, text),
                Err(e) => {
                    let _ = e.to_string();
                    return;
                }
            }
        }
        (text, None) => (RenderConfig::default(), text),
    };
    // fonts come from files the caller names; the fuzzer uses the bundled one only
    let config = RenderConfig { font_path: None, ..config };
    config.validate().expect("a parsed config validates");
    let text = String::from_utf8_lossy(text);
    let fonts = bundled_fonts();
    let (pw, ph) = config.page_pixels();
    if pw * ph > MAX_RASTER_PIXELS {
        let _ = layout_pages(&text, &config, fonts).take(64).count();
        return;
    }
    // Renderer::pages, with the shared fonts: each page is rasterized knowing whether it is the last
    let channels = if data.len() % 2 == 0 { Channels::Grey } else { Channels::Rgb };
    let mut layouts = layout_pages(&text, &config, fonts).take(MAX_PAGES + 1).peekable();
    let mut n = 0;
    while let Some(layout) = layouts.next() {
        n += 1;
        if n > MAX_PAGES {
            break;
        }
        let page = rasterize(&layout, &config, fonts, channels, layouts.peek().is_none());
        assert_eq!(page.data.len(), page.width * page.height * page.channels);
        assert!(page.width <= pw && page.height <= ph, "{}x{} page in a {pw}x{ph} frame", page.width, page.height);
        let png = encode_png(&page, PngCompression::Fast).expect("a rendered page encodes");
        let back = decode(&png);
        assert_eq!((back.width, back.height, back.channels), (page.width, page.height, page.channels));
        assert!(back.data == page.data, "the fast PNG encoder changed the pixels");
    }
});
