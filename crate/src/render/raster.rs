//! Raster: draws a laid-out page the way pdftoppm does at the configured dpi (anti-aliased, unhinted
//! glyphs at quarter-pixel x positions, whole-pixel baselines), then applies the reference auto-crop.

use super::config::{RenderConfig, Rgb};
use super::font::{FontSet, SUBPIXEL_STEPS};
use super::layout::PageLayout;

/// A rendered page: `width × height` pixels, `channels` (1 grey or 3 RGB) bytes each, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    Grey = 1,
    Rgb = 3,
}

/// Ink coverage of one page (0 = background, 255 = full font colour), before colours are applied.
struct Ink {
    width: usize,
    height: usize,
    alpha: Vec<u8>,
}

impl Ink {
    fn new(width: usize, height: usize) -> Ink {
        Ink { width, height, alpha: vec![0; width * height] }
    }

    /// Composites a coverage mask at (x, y) with "source over" so overlapping glyph edges add up.
    fn blend(&mut self, x0: i32, y0: i32, w: usize, h: usize, mask: &[u8]) {
        let (pw, ph) = (self.width as i32, self.height as i32);
        let xs = x0.max(0);
        let xe = (x0 + w as i32).min(pw);
        if xs >= xe {
            return;
        }
        for row in 0..h as i32 {
            let y = y0 + row;
            if y < 0 || y >= ph {
                continue;
            }
            let src = &mask[(row as usize) * w + (xs - x0) as usize..(row as usize) * w + (xe - x0) as usize];
            let dst = &mut self.alpha[y as usize * self.width + xs as usize..y as usize * self.width + xe as usize];
            for (d, &s) in dst.iter_mut().zip(src) {
                if s != 0 {
                    // d + s·(1 − d), in 0..=255 fixed point.
                    *d = (*d as u32 + ((s as u32 * (255 - *d as u32) + 127) / 255)) as u8;
                }
            }
        }
    }
}

/// Draws `layout` on a full page and crops it as the reference does (`last`: this is the final page).
pub fn rasterize(layout: &PageLayout, cfg: &RenderConfig, fonts: &FontSet, channels: Channels, last: bool) -> Page {
    let (pw, ph) = cfg.page_pixels();
    let px_per_pt = cfg.dpi / 72.0;
    let mut ink = Ink::new(pw, ph);
    let em_px = cfg.font_size * px_per_pt;
    for line in &layout.lines {
        // Splash keeps baselines on whole pixels and truncates x to quarter pixels (SplashFont::getGlyph).
        let baseline = (line.baseline * px_per_pt).round() as i32;
        for g in &line.glyphs {
            let face = &fonts.faces()[g.glyph.face as usize];
            let x = g.x * px_per_pt;
            let quarter = (x * SUBPIXEL_STEPS as f32).floor() as i64;
            let whole = quarter.div_euclid(SUBPIXEL_STEPS as i64) as i32;
            let sub = quarter.rem_euclid(SUBPIXEL_STEPS as i64) as u32;
            let cov = fonts.coverage(g.glyph, face.px_scale(em_px, cfg.horizontal_scale), sub);
            if cov.width > 0 {
                ink.blend(whole + cov.left, baseline + cov.top, cov.width, cov.height, &cov.alpha);
            }
        }
    }
    let colours = Colours::new(cfg, layout, px_per_pt);
    let (w, h) = crop_size(&ink, &colours, cfg, last);
    colours.paint(&ink, w, h, channels)
}

/// Background and font colours, with the paragraph background boxes in pixels.
struct Colours {
    font: Rgb,
    page_bg: Rgb,
    para_bg: Rgb,
    para_boxes: Vec<(usize, usize, usize, usize)>,
    border: Option<(Rgb, f32, f32)>,
}

impl Colours {
    fn new(cfg: &RenderConfig, layout: &PageLayout, px_per_pt: f32) -> Colours {
        let para_boxes = if cfg.para_bg_color != cfg.page_bg_color {
            layout
                .paragraph_boxes
                .iter()
                .map(|b| {
                    let px = |v: f32| (v * px_per_pt).round().max(0.0) as usize;
                    (px(b.x), px(b.y), px(b.x + b.w), px(b.y + b.h))
                })
                .collect()
        } else {
            Vec::new()
        };
        let border = match (cfg.border_color, cfg.border_width > 0.0) {
            (Some(c), true) => Some((c, cfg.border_width * px_per_pt, cfg.border_padding * px_per_pt)),
            _ => None,
        };
        Colours { font: cfg.font_color, page_bg: cfg.page_bg_color, para_bg: cfg.para_bg_color, para_boxes, border }
    }

    /// The plain case: one background, no boxes, everything grey.
    fn uniform_grey(&self) -> Option<(u8, u8)> {
        let grey = |c: Rgb| (c[0] == c[1] && c[1] == c[2]).then_some(c[0]);
        if self.para_boxes.is_empty() && self.border.is_none() {
            Some((grey(self.page_bg)?, grey(self.font)?))
        } else {
            None
        }
    }

    fn background(&self, x: usize, y: usize) -> Rgb {
        for &(x0, y0, x1, y1) in &self.para_boxes {
            if x >= x0 && x < x1 && y >= y0 && y < y1 {
                return self.para_bg;
            }
        }
        self.page_bg
    }

    fn pixel(&self, ink: &Ink, x: usize, y: usize) -> Rgb {
        let bg = self.background(x, y);
        let a = ink.alpha[y * ink.width + x] as u32;
        let mix = |b: u8, f: u8| ((b as u32 * (255 - a) + f as u32 * a + 127) / 255) as u8;
        let mut c = [mix(bg[0], self.font[0]), mix(bg[1], self.font[1]), mix(bg[2], self.font[2])];
        if let Some((colour, width, pad)) = self.border {
            if self.on_border(x as f32, y as f32, width, pad) {
                c = colour;
            }
        }
        c
    }

    fn on_border(&self, x: f32, y: f32, width: f32, pad: f32) -> bool {
        self.para_boxes.iter().any(|&(x0, y0, x1, y1)| {
            let (x0, y0, x1, y1) = (x0 as f32 - pad, y0 as f32 - pad, x1 as f32 + pad, y1 as f32 + pad);
            let inside_outer = x >= x0 - width / 2.0 && x < x1 + width / 2.0 && y >= y0 - width / 2.0 && y < y1 + width / 2.0;
            let inside_inner = x >= x0 + width / 2.0 && x < x1 - width / 2.0 && y >= y0 + width / 2.0 && y < y1 - width / 2.0;
            inside_outer && !inside_inner
        })
    }

    /// The final pixels of the top-left `w × h` region.
    fn paint(&self, ink: &Ink, w: usize, h: usize, channels: Channels) -> Page {
        let mut data = Vec::with_capacity(w * h * channels as usize);
        if let Some((bg, fg)) = self.uniform_grey() {
            let lut: Vec<u8> =
                (0..=255u32).map(|a| ((bg as u32 * (255 - a) + fg as u32 * a + 127) / 255) as u8).collect();
            for row in ink.alpha.chunks_exact(ink.width).take(h) {
                match channels {
                    Channels::Grey => data.extend(row[..w].iter().map(|&a| lut[a as usize])),
                    Channels::Rgb => {
                        for &a in &row[..w] {
                            let v = lut[a as usize];
                            data.extend_from_slice(&[v, v, v]);
                        }
                    }
                }
            }
        } else {
            for y in 0..h {
                for x in 0..w {
                    let c = self.pixel(ink, x, y);
                    match channels {
                        Channels::Grey => data.push(luma(c)),
                        Channels::Rgb => data.extend_from_slice(&c),
                    }
                }
            }
        }
        Page { width: w, height: h, channels: channels as usize, data }
    }
}

/// PIL's `convert("L")`: ITU-R 601-2 luma.
fn luma(c: Rgb) -> u8 {
    ((c[0] as u32 * 299 + c[1] as u32 * 587 + c[2] as u32 * 114 + 500) / 1000) as u8
}

/// The reference auto-crop (`crop` in ref_render.py): ink is any pixel whose grey differs from the
/// top-left background by more than 5; keep up to the last inked column + margin-x (all pages, when
/// auto-crop-width) and, on the last page, down to the last inked row + margin-y. Margins are used as
/// pixels, as the reference does.
fn crop_size(ink: &Ink, colours: &Colours, cfg: &RenderConfig, last: bool) -> (usize, usize) {
    let (w, h) = (ink.width, ink.height);
    // The reference takes the median of the top-left 2×2 pixels; at those pixels there is no text.
    let bg = luma(colours.pixel(ink, 0, 0)) as i32;
    let differs: Box<dyn Fn(usize, usize) -> bool> = match colours.uniform_grey() {
        // Fast path: grey is a monotone function of coverage, so threshold coverage directly.
        Some((pbg, fg)) => {
            let lut: Vec<bool> = (0..=255u32)
                .map(|a| {
                    let g = ((pbg as u32 * (255 - a) + fg as u32 * a + 127) / 255) as i32;
                    (g - bg).abs() > 5
                })
                .collect();
            Box::new(move |x, y| lut[ink.alpha[y * w + x] as usize])
        }
        None => Box::new(move |x, y| (luma(colours.pixel(ink, x, y)) as i32 - bg).abs() > 5),
    };
    let mut last_col: Option<usize> = None;
    let mut last_row: Option<usize> = None;
    for y in 0..h {
        let mut row_inked = false;
        // Only columns right of the current last inked column can move it.
        for x in (0..w).rev() {
            if differs(x, y) {
                row_inked = true;
                if last_col.map_or(true, |c| x > c) {
                    last_col = Some(x);
                }
                break;
            }
        }
        if row_inked {
            last_row = Some(y);
        }
    }
    let mut out_w = w;
    if cfg.auto_crop_width {
        if let Some(c) = last_col {
            out_w = w.min(c + 1 + cfg.margin_x as usize);
        }
    }
    let mut out_h = h;
    if cfg.auto_crop_last_page && last {
        if let Some(r) = last_row {
            out_h = h.min(r + cfg.margin_y as usize);
        }
    }
    (out_w, out_h)
}
