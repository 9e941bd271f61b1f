//! Pixels against the reference: our pages vs the pdftoppm pages in golden/render (PNG), compared by
//! size, mean absolute grey difference and ink per row. A model trained on the reference pages must not
//! be able to tell ours apart, so the differences must stay at the anti-aliasing level.

use std::path::PathBuf;

use vtc_r1::render::{Channels, Page, RenderConfig, Renderer};

fn golden() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/golden/render"))
}

fn text_of(id: &str) -> String {
    let rows = std::fs::read_to_string(golden().join("texts.jsonl")).expect("golden texts.jsonl");
    rows.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["id"] == id)
        .and_then(|v| v["text"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no text {id}"))
}

/// Decodes a reference PNG to grey (PIL "L" weights).
fn read_grey_png(path: &PathBuf) -> Page {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    let data = buf[..info.buffer_size()]
        .chunks_exact(ch)
        .map(|p| if ch >= 3 { ((p[0] as u32 * 299 + p[1] as u32 * 587 + p[2] as u32 * 114 + 500) / 1000) as u8 } else { p[0] })
        .collect();
    Page { width: info.width as usize, height: info.height as usize, channels: 1, data }
}

struct Diff {
    mean_abs: f64,
    ink_rows_corr: f64,
}

/// Mean |Δgrey| over the common area, and the correlation of ink per row (where text lines sit).
fn compare(ours: &Page, theirs: &Page) -> Diff {
    let (w, h) = (ours.width.min(theirs.width), ours.height.min(theirs.height));
    let mut sum = 0u64;
    let (mut ink_a, mut ink_b) = (vec![0f64; h], vec![0f64; h]);
    for y in 0..h {
        for x in 0..w {
            let a = ours.data[y * ours.width + x];
            let b = theirs.data[y * theirs.width + x];
            sum += (a as i32 - b as i32).unsigned_abs() as u64;
            ink_a[y] += (255 - a) as f64;
            ink_b[y] += (255 - b) as f64;
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(&ink_a), mean(&ink_b));
    let cov: f64 = ink_a.iter().zip(&ink_b).map(|(a, b)| (a - ma) * (b - mb)).sum();
    let va: f64 = ink_a.iter().map(|a| (a - ma).powi(2)).sum();
    let vb: f64 = ink_b.iter().map(|b| (b - mb).powi(2)).sum();
    Diff { mean_abs: sum as f64 / (w * h) as f64, ink_rows_corr: cov / (va * vb).sqrt() }
}

#[test]
fn pages_look_like_the_reference_pages() {
    let renderer = Renderer::new(RenderConfig::default(), &[]).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(golden())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "reference pages missing");
    let mut worst = 0f64;
    for name in &names {
        let (id, page) = name.trim_end_matches(".png").rsplit_once("_page_").unwrap();
        let k: usize = page.parse().unwrap();
        let (pages, _) = renderer.render(&text_of(id), Channels::Grey);
        let ours = &pages[k - 1];
        let theirs = read_grey_png(&golden().join(name));
        let d = compare(ours, &theirs);
        println!(
            "{name}: ours {}×{} reference {}×{}  mean |Δ| {:.2} grey levels, ink-per-row correlation {:.4}",
            ours.width, ours.height, theirs.width, theirs.height, d.mean_abs, d.ink_rows_corr
        );
        assert!(ours.width.abs_diff(theirs.width) <= 2 && ours.height.abs_diff(theirs.height) <= 2, "{name}: size");
        assert!(d.ink_rows_corr > 0.98, "{name}: lines are not where the reference has them");
        worst = worst.max(d.mean_abs);
    }
    println!("worst mean |Δ| {worst:.2} grey levels");
    assert!(worst < 1.5, "pages differ from the reference by {worst:.2} grey levels on average");
}
