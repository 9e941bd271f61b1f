//! Layout parity with the reference renderer: every text of `shared/golden/render/texts.jsonl` is laid out
//! with the bundled DejaVu Sans and the default (VTC-R1) config and compared, page by page and line by line,
//! with `layout.jsonl` (written by `tools/ref_render.py layout`, i.e. reportlab itself).
//!
//! Extra cases in `tests/data/layout_extra.jsonl` / `layout_extra_ref.jsonl` come from the same tool:
//! `python3 ../shared/tools/ref_render.py layout tests/data/layout_extra.jsonl /tmp/out` and the output's
//! `layout.jsonl` copied to `tests/data/layout_extra_ref.jsonl`.
//!
//! Run: `cargo test --release --test render_layout -- --nocapture`

use std::collections::HashMap;

use serde_json::Value;
use vtc_r1::render::config::RenderConfig;
use vtc_r1::render::font::{Face, FontSet};
use vtc_r1::render::layout::layout_pages;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/golden/render");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

fn read_jsonl(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("json line")).collect()
}

struct Score {
    lines: usize,
    matched: usize,
    pages_equal: bool,
}

fn compare(id: &str, text: &str, expected: &[Vec<String>], fonts: &FontSet, cfg: &RenderConfig) -> Score {
    let got: Vec<Vec<String>> =
        layout_pages(text, cfg, fonts).map(|p| p.lines.into_iter().map(|l| l.text).collect()).collect();
    // Documented deviation: the empty text has no pages (reportlab emits one blank page).
    let expected_pages = if text.is_empty() { 0 } else { expected.len() };
    let mut score = Score { lines: 0, matched: 0, pages_equal: got.len() == expected_pages };
    let mut shown = 0;
    for (pi, exp_page) in expected.iter().enumerate() {
        let got_page = got.get(pi);
        for (li, exp) in exp_page.iter().enumerate() {
            score.lines += 1;
            let g = got_page.and_then(|p| p.get(li));
            if g == Some(exp) {
                score.matched += 1;
            } else if shown < 3 {
                shown += 1;
                eprintln!("  {id} page {} line {}:\n    want {exp:?}\n    got  {g:?}", pi + 1, li + 1);
            }
        }
    }
    let got_lines: usize = got.iter().map(Vec::len).sum();
    if got_lines > score.lines {
        // Extra lines of ours count against us.
        score.lines += got_lines - score.lines.min(got_lines);
    }
    println!(
        "{id:>14}: {:>4}/{:<4} lines {:6.2}%  pages {} vs {} {}",
        score.matched,
        score.lines,
        100.0 * score.matched as f64 / score.lines.max(1) as f64,
        got.len(),
        expected_pages,
        if score.pages_equal { "" } else { "PAGE COUNT DIFFERS" }
    );
    score
}

fn run(texts_path: &str, layout_path: &str) -> (usize, usize, usize) {
    run_with(texts_path, layout_path, RenderConfig::default())
}

fn run_with(texts_path: &str, layout_path: &str, cfg: RenderConfig) -> (usize, usize, usize) {
    let main = match &cfg.font_path {
        Some(path) => Face::open(path).unwrap(),
        None => Face::bundled(),
    };
    let fonts = FontSet::new(main, Vec::new());
    let texts: HashMap<String, String> = read_jsonl(texts_path)
        .into_iter()
        .map(|v| (v["id"].as_str().unwrap().to_string(), v["text"].as_str().unwrap().to_string()))
        .collect();
    let (mut lines, mut matched, mut page_diffs) = (0, 0, 0);
    for row in read_jsonl(layout_path) {
        let id = row["id"].as_str().unwrap();
        let expected: Vec<Vec<String>> = row["pages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string()).collect())
            .collect();
        let s = compare(id, &texts[id], &expected, &fonts, &cfg);
        lines += s.lines;
        matched += s.matched;
        page_diffs += usize::from(!s.pages_equal);
    }
    (lines, matched, page_diffs)
}

#[test]
fn golden_layout_matches_reportlab() {
    let (lines, matched, page_diffs) = run(&format!("{GOLDEN}/texts.jsonl"), &format!("{GOLDEN}/layout.jsonl"));
    let rate = matched as f64 / lines as f64;
    println!("golden: {matched}/{lines} lines = {:.3}%, texts with a different page count: {page_diffs}", 100.0 * rate);
    assert!(rate >= 0.995, "line match rate {rate}");
    assert_eq!(page_diffs, 0, "page counts differ");
}

/// Ad-hoc check: `VTC_LAYOUT_CASES=texts.jsonl:layout.jsonl` (a ref_render.py output) is compared too,
/// with the VTC-R1 config file `VTC_LAYOUT_CONFIG` if set.
#[test]
fn env_cases_match_reportlab() {
    let Ok(spec) = std::env::var("VTC_LAYOUT_CASES") else { return };
    let (texts, layout) = spec.split_once(':').expect("texts.jsonl:layout.jsonl");
    let cfg = match std::env::var("VTC_LAYOUT_CONFIG") {
        Ok(path) => RenderConfig::from_json_str(&std::fs::read_to_string(path).unwrap(), RenderConfig::default()).unwrap(),
        Err(_) => RenderConfig::default(),
    };
    let (lines, matched, page_diffs) = run_with(texts, layout, cfg);
    println!("env cases: {matched}/{lines} lines, texts with a different page count: {page_diffs}");
    assert_eq!((matched, page_diffs), (lines, 0));
}

#[test]
fn extra_cases_match_reportlab() {
    let texts = format!("{DATA}/layout_extra.jsonl");
    if !std::path::Path::new(&texts).exists() {
        return;
    }
    let (lines, matched, page_diffs) = run(&texts, &format!("{DATA}/layout_extra_ref.jsonl"));
    println!("extra: {matched}/{lines} lines, texts with a different page count: {page_diffs}");
    assert_eq!(matched, lines);
    assert_eq!(page_diffs, 0);
}

/// Debug aid: `VTC_DUMP_TEXT=in.txt VTC_DUMP_OUT=out.json cargo test --release --test render_layout dump -- --ignored`
/// writes every page's lines as `[baseline, text, [glyph x…]]`, to compare glyph positions with
/// `pdftotext -bbox` on the reference PDF.
#[test]
#[ignore]
fn dump_positions() {
    let (Ok(input), Ok(out)) = (std::env::var("VTC_DUMP_TEXT"), std::env::var("VTC_DUMP_OUT")) else { return };
    let text = std::fs::read_to_string(input).unwrap();
    let cfg = match std::env::var("VTC_DUMP_CONFIG") {
        Ok(path) => RenderConfig::from_json_str(&std::fs::read_to_string(path).unwrap(), RenderConfig::default()).unwrap(),
        Err(_) => RenderConfig::default(),
    };
    let main = cfg.font_path.as_ref().map_or_else(Face::bundled, |p| Face::open(p).unwrap());
    let fonts = FontSet::new(main, Vec::new());
    let pages: Vec<Value> = layout_pages(&text, &cfg, &fonts)
        .map(|p| {
            Value::Array(
                p.lines
                    .iter()
                    .map(|l| serde_json::json!([l.baseline, l.text, l.glyphs.iter().map(|g| g.x).collect::<Vec<_>>()]))
                    .collect(),
            )
        })
        .collect();
    std::fs::write(out, serde_json::to_string(&pages).unwrap()).unwrap();
}

/// Debug aid: `VTC_DUMP_FONT=font.ttf VTC_DUMP_CHARS=chars.txt` prints `codepoint units missing` per char,
/// to compare with reportlab's `face.charWidths.get(cp, face.defaultWidth)`.
#[test]
#[ignore]
fn dump_widths() {
    let (Ok(font), Ok(chars)) = (std::env::var("VTC_DUMP_FONT"), std::env::var("VTC_DUMP_CHARS")) else { return };
    let face = Face::open(std::path::Path::new(&font)).unwrap();
    let upem = face.units_per_em() as f64;
    let fonts = FontSet::new(face, Vec::new());
    for c in std::fs::read_to_string(chars).unwrap().chars() {
        let g = fonts.resolve(c);
        let gid = if g.missing { ab_glyph::GlyphId(0) } else { g.glyph };
        println!("{} {} {}", c as u32, fonts.main().advance_units(gid) as f64 * (1000.0 / upem), g.missing);
    }
}
