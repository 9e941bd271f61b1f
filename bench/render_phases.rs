//! Where single-thread render time goes, per page: layout, raster, PNG encoding, file write; and our
//! PNG encoder against the `png` crate's fastest level (fdeflate with the Up filter) on the same pages.
//! Files go under TMPDIR (`TMPDIR=/dev/shm` leaves out the disk).
//!
//! cd crate && cargo run --release --example render_phases -- ../../shared/golden/render/texts.jsonl [REPEAT]
use std::time::{Duration, Instant};

use vtc_r1::render::batch::write_atomic;
use vtc_r1::render::layout::Layouter;
use vtc_r1::render::png::{encode_png, recycle as recycle_png, PngCompression};
use vtc_r1::render::raster::{rasterize, recycle as recycle_page, Page};
use vtc_r1::render::{RenderConfig, Renderer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: render_phases TEXTS.jsonl [REPEAT]");
        std::process::exit(2);
    };
    let texts: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{path}: {e}"));
            row["text"].as_str().unwrap_or_else(|| panic!("{path}: a row without \"text\"")).to_string()
        })
        .collect();
    let repeat: usize = args.get(2).map_or(3, |s| s.parse().expect("REPEAT is a number"));
    let r = Renderer::new(RenderConfig::default(), &[]).unwrap();
    let dir = std::env::temp_dir().join(format!("render-phases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let channels = r.natural_channels();
    let mut t = [Duration::ZERO; 5]; // layout, raster, png, write, png crate
    let (mut pages, mut ours_bytes, mut peer_bytes) = (0usize, 0usize, 0usize);
    // The first pass only warms the caches (glyphs, buffers), as a long-running service would be.
    for pass in 0..=repeat {
        for (i, text) in texts.iter().enumerate() {
            let t0 = Instant::now();
            let layouts: Vec<_> = Layouter::new(text, &r.config, &r.fonts).collect();
            let mut spent = [t0.elapsed(), Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO];
            for (k, layout) in layouts.iter().enumerate() {
                let a = Instant::now();
                let page = rasterize(layout, &r.config, &r.fonts, channels, k + 1 == layouts.len());
                let b = Instant::now();
                let png = encode_png(&page, PngCompression::Fast).unwrap();
                let c = Instant::now();
                write_atomic(&dir.join(format!("t{i}_page_{k:03}.png")), &png).unwrap();
                let d = Instant::now();
                let peer = png_crate_fastest(&page);
                spent[1] += b - a;
                spent[2] += c - b;
                spent[3] += d - c;
                spent[4] += d.elapsed();
                if pass > 0 {
                    pages += 1;
                    ours_bytes += png.len();
                    peer_bytes += peer.len();
                }
                recycle_png(png);
                recycle_page(page.data);
            }
            if pass > 0 {
                t.iter_mut().zip(spent).for_each(|(total, s)| *total += s);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / pages as f64;
    let total: Duration = t[..4].iter().sum();
    println!(
        "{pages} pages, {:.0} pages/s on one thread; per page: layout {:.0} µs, raster {:.0} µs, png {:.0} µs, write {:.0} µs",
        pages as f64 / total.as_secs_f64(),
        us(t[0]),
        us(t[1]),
        us(t[2]),
        us(t[3])
    );
    println!(
        "PNG per page: ours {:.0} µs, {:.0} kB; png crate fastest {:.0} µs, {:.0} kB ({:.2}× the time, {:.2}× the size)",
        us(t[2]),
        ours_bytes as f64 / pages as f64 / 1e3,
        us(t[4]),
        peer_bytes as f64 / pages as f64 / 1e3,
        t[4].as_secs_f64() / t[2].as_secs_f64(),
        peer_bytes as f64 / ours_bytes as f64
    );
}

fn png_crate_fastest(page: &Page) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, page.width as u32, page.height as u32);
    enc.set_color(if page.channels == 1 { png::ColorType::Grayscale } else { png::ColorType::Rgb });
    enc.set_compression(png::Compression::Fastest);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(&page.data).unwrap();
    writer.finish().unwrap();
    out
}
