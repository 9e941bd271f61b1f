//! Raster: draws a laid-out page the way pdftoppm does at the configured dpi (anti-aliased, unhinted
//! glyphs at quarter-pixel x positions, whole-pixel baselines), then applies the reference auto-crop.

use std::sync::Arc;

use super::config::{RenderConfig, Rgb};
use super::font::{Coverage, FontSet, ResolvedGlyph, SUBPIXEL_STEPS};
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
/// Rows are `stride = width + PAD` bytes apart so a 16-byte glyph row fits at any column; each row
/// remembers the columns glyphs touched, so cropping, painting and clearing skip the blank rest.
struct Ink {
    buf: InkBuffer,
}

struct InkBuffer {
    width: usize,
    height: usize,
    stride: usize,
    alpha: Vec<u8>,
    /// Per row: touched columns `start..end` (empty when `start >= end`).
    touched: Vec<(u32, u32)>,
}

const PAD: usize = 16;
const UNTOUCHED: (u32, u32) = (u32::MAX, 0);

thread_local! {
    /// One coverage buffer per thread, reused page after page (fresh 0.5 MB allocations per page cost
    /// page faults).
    static SPARE_INK: std::cell::RefCell<Option<InkBuffer>> = const { std::cell::RefCell::new(None) };
    /// A finished page's pixel buffer handed back with `recycle`, for the next page on this thread.
    static SPARE_PAGE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Gives a page's pixels back for reuse by the next page rendered on this thread (batch rendering
/// writes a page and drops it; reusing its buffer avoids fresh page faults).
pub fn recycle(data: Vec<u8>) {
    if data.capacity() <= super::KEEP_BUFFER_BYTES {
        let _ = SPARE_PAGE.try_with(|s| *s.borrow_mut() = data);
    }
}

/// `len` bytes of `value`, in the thread's spare buffer when there is one.
fn page_buffer(len: usize, value: u8) -> Vec<u8> {
    let mut v = SPARE_PAGE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    v.clear();
    v.resize(len, value);
    v
}

impl Ink {
    /// A blank page: the thread's previous buffer when the size matches, with only its touched spans
    /// cleared.
    fn new(width: usize, height: usize) -> Ink {
        let stride = width + PAD;
        let buf = match SPARE_INK.with(|s| s.borrow_mut().take()) {
            Some(mut b) if b.width == width && b.height == height => {
                for (row, span) in b.alpha.chunks_exact_mut(stride).zip(b.touched.iter_mut()) {
                    if span.0 < span.1 {
                        row[span.0 as usize..span.1 as usize].fill(0);
                    }
                    *span = UNTOUCHED;
                }
                b
            }
            _ => InkBuffer { width, height, stride, alpha: vec![0; stride * height], touched: vec![UNTOUCHED; height] },
        };
        Ink { buf }
    }

    fn width(&self) -> usize {
        self.buf.width
    }

    fn height(&self) -> usize {
        self.buf.height
    }

    fn row(&self, y: usize) -> &[u8] {
        let b = &self.buf;
        &b.alpha[y * b.stride..y * b.stride + b.width]
    }

    /// The columns glyphs touched in row `y`, clipped to the first `w`.
    fn span(&self, y: usize, w: usize) -> std::ops::Range<usize> {
        let (xs, xe) = self.buf.touched[y];
        let (xs, xe) = (xs as usize, (xe as usize).min(w));
        if xs < xe {
            xs..xe
        } else {
            0..0
        }
    }

    /// Composites a glyph's coverage at (x0, y0) with "source over", so overlapping glyph edges add up.
    fn blend(&mut self, x0: i32, y0: i32, cov: &Coverage) {
        let b = &mut self.buf;
        let inside = x0 >= 0 && y0 >= 0 && x0 as usize + PAD <= b.stride && y0 as usize + cov.height <= b.height;
        if inside && !cov.rows16.is_empty() {
            let (x0, y0) = (x0 as usize, y0 as usize);
            for (r, src) in cov.rows16.iter().enumerate() {
                let at = (y0 + r) * b.stride + x0;
                over16((&mut b.alpha[at..at + 16]).try_into().expect("16-byte row"), src);
            }
            return;
        }
        let (w, h) = (cov.width, cov.height);
        let (pw, ph) = (b.width as i32, b.height as i32);
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
            let src = &cov.alpha[(row as usize) * w + (xs - x0) as usize..(row as usize) * w + (xe - x0) as usize];
            let at = y as usize * b.stride;
            let dst = &mut b.alpha[at + xs as usize..at + xe as usize];
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = over(*d, s);
            }
        }
    }

    /// Records that glyphs were drawn in columns `xs` of rows `ys` (clipped to the page). Callers mark
    /// a whole text line's box once rather than each glyph row: a span may then be wider than its ink,
    /// which clearing, cropping and painting all tolerate (blank pixels stay blank).
    fn mark(&mut self, xs: std::ops::Range<i32>, ys: std::ops::Range<i32>) {
        let b = &mut self.buf;
        let clip = |r: std::ops::Range<i32>, size: usize| r.start.clamp(0, size as i32) as usize..r.end.clamp(0, size as i32) as usize;
        let (xs, ys) = (clip(xs, b.width), clip(ys, b.height));
        if xs.is_empty() || ys.is_empty() {
            return;
        }
        for span in &mut b.touched[ys] {
            *span = (span.0.min(xs.start as u32), span.1.max(xs.end as u32));
        }
    }
}

impl Drop for Ink {
    fn drop(&mut self) {
        if self.buf.alpha.capacity() > super::KEEP_BUFFER_BYTES {
            return;
        }
        let buf = InkBuffer {
            alpha: std::mem::take(&mut self.buf.alpha),
            touched: std::mem::take(&mut self.buf.touched),
            ..self.buf
        };
        // try_with: at thread exit the spare is already gone, and the buffer is simply freed.
        let _ = SPARE_INK.try_with(|s| *s.borrow_mut() = Some(buf));
    }
}

/// `d + s·(1 − d)` in 0..=255 fixed point, rounded. Only 16-bit arithmetic (the division by 255 is
/// `(v + 1 + (v >> 8)) >> 8`, exact for v < 65280), so the row loops vectorize with plain SSE2.
#[inline(always)]
fn over(d: u8, s: u8) -> u8 {
    let v = s as u16 * (255 - d as u16) + 127;
    d.wrapping_add(((v + 1 + (v >> 8)) >> 8) as u8)
}

/// `over` on 16 pixels at once. LLVM leaves the widening multiply scalar at the x86-64 baseline, so it
/// is spelled out in SSE2 (which every x86-64 CPU has).
#[inline(always)]
fn over16(dst: &mut [u8; 16], src: &[u8; 16]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86-64 baseline; the unaligned loads/stores read and write
        // exactly the 16 bytes of the two arrays.
        unsafe {
            let d = _mm_loadu_si128(dst.as_ptr() as *const __m128i);
            let s = _mm_loadu_si128(src.as_ptr() as *const __m128i);
            let zero = _mm_setzero_si128();
            // Nothing drawn there yet (the usual case: glyph boxes rarely overlap): over(0, s) = s.
            if _mm_movemask_epi8(_mm_cmpeq_epi8(d, zero)) == 0xFFFF {
                _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, s);
                return;
            }
            let half = |d16: __m128i, s16: __m128i| {
                let v = _mm_add_epi16(_mm_mullo_epi16(s16, _mm_sub_epi16(_mm_set1_epi16(255), d16)), _mm_set1_epi16(127));
                let q = _mm_srli_epi16(_mm_add_epi16(_mm_add_epi16(v, _mm_set1_epi16(1)), _mm_srli_epi16(v, 8)), 8);
                _mm_add_epi16(d16, q)
            };
            let lo = half(_mm_unpacklo_epi8(d, zero), _mm_unpacklo_epi8(s, zero));
            let hi = half(_mm_unpackhi_epi8(d, zero), _mm_unpackhi_epi8(s, zero));
            _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, _mm_packus_epi16(lo, hi));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = over(*d, s);
    }
}

/// Glyph coverages this thread has drawn with one font set at one size, by face, glyph and
/// quarter-pixel step: a page draws thousands of glyphs from a few hundred masks, and this keeps the
/// shared cache (a hash map behind a lock, reference counted) out of the per-glyph path. It lives from
/// page to page, and starts afresh when the font set or size changes.
struct GlyphMemo {
    owner: (u64, u32, u32),
    slots: Vec<(u64, Option<Arc<Coverage>>)>,
}

thread_local! {
    static GLYPH_MEMO: std::cell::RefCell<Option<GlyphMemo>> = const { std::cell::RefCell::new(None) };
}

impl GlyphMemo {
    const BITS: u32 = 10;

    /// The thread's memo for `owner` (font set id, em size and horizontal scale bits).
    fn take(owner: (u64, u32, u32)) -> GlyphMemo {
        match GLYPH_MEMO.with(|m| m.borrow_mut().take()) {
            Some(memo) if memo.owner == owner => memo,
            _ => GlyphMemo { owner, slots: vec![(0, None); 1 << Self::BITS] },
        }
    }

    fn give_back(self) {
        let _ = GLYPH_MEMO.try_with(|m| *m.borrow_mut() = Some(self));
    }

    fn get(&mut self, glyph: ResolvedGlyph, sub: u32, miss: impl FnOnce() -> Arc<Coverage>) -> &Coverage {
        let key = (glyph.face as u64) << 40 | (glyph.glyph.0 as u64) << 8 | sub as u64;
        let slot = &mut self.slots[(key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::BITS)) as usize];
        if slot.0 != key || slot.1.is_none() {
            *slot = (key, Some(miss()));
        }
        slot.1.as_deref().expect("slot filled above")
    }
}

/// Draws `layout` on a full page and crops it as the reference does (`last`: this is the final page).
pub fn rasterize(layout: &PageLayout, cfg: &RenderConfig, fonts: &FontSet, channels: Channels, last: bool) -> Page {
    let (pw, ph) = cfg.page_pixels();
    let px_per_pt = cfg.dpi / 72.0;
    let mut ink = Ink::new(pw, ph);
    let em_px = cfg.font_size * px_per_pt;
    let scales: Vec<_> = fonts.faces().iter().map(|f| f.px_scale(em_px, cfg.horizontal_scale)).collect();
    let mut glyphs = GlyphMemo::take((fonts.id(), em_px.to_bits(), cfg.horizontal_scale.to_bits()));
    fonts.with_coverage(|coverage| {
        for line in &layout.lines {
            // Splash keeps baselines on whole pixels and truncates x to quarter pixels (SplashFont::getGlyph).
            let baseline = (line.baseline * px_per_pt).round() as i32;
            // The line's ink box; left empty (min > max) when it draws nothing.
            let (mut left, mut right, mut top, mut bottom) = (i32::MAX, i32::MIN, i32::MAX, i32::MIN);
            for g in &line.glyphs {
                let quarter = floor_i64(g.x * px_per_pt * SUBPIXEL_STEPS as f32);
                let whole = quarter.div_euclid(SUBPIXEL_STEPS as i64) as i32;
                let sub = quarter.rem_euclid(SUBPIXEL_STEPS as i64) as u32;
                let cov = glyphs.get(g.glyph, sub, || coverage(g.glyph, scales[g.glyph.face as usize], sub));
                if cov.width > 0 {
                    let (x, y) = (whole + cov.left, baseline + cov.top);
                    ink.blend(x, y, cov);
                    (left, right) = (left.min(x), right.max(x + cov.width as i32));
                    (top, bottom) = (top.min(y), bottom.max(y + cov.height as i32));
                }
            }
            ink.mark(left..right, top..bottom);
        }
    });
    glyphs.give_back();
    let colours = Colours::new(cfg, layout, px_per_pt);
    let (w, h) = crop_size(&ink, &colours, cfg, last);
    colours.paint(&ink, w, h, channels)
}

/// `v.floor() as i64`, inline: at the x86-64 baseline (no SSE4.1 rounding) `floor` is a libm call,
/// once per glyph drawn.
#[inline(always)]
fn floor_i64(v: f32) -> i64 {
    let t = v as i64;
    t - ((t as f32) > v) as i64
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
        let a = ink.row(y)[x] as u32;
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
        let ch = channels as usize;
        let uniform = self.uniform_grey();
        let mut data = page_buffer(w * h * ch, uniform.map_or(0, |(bg, _)| bg));
        if let Some((bg, fg)) = uniform {
            // Background everywhere (above), then colour only the spans glyphs touched.
            paint_grey_spans(ink, &mut data, w, channels, bg, fg);
        } else {
            for (y, dst) in data.chunks_exact_mut(w * ch).enumerate() {
                for (x, d) in dst.chunks_exact_mut(ch).enumerate() {
                    let c = self.pixel(ink, x, y);
                    match channels {
                        Channels::Grey => d[0] = luma(c),
                        Channels::Rgb => d.copy_from_slice(&c),
                    }
                }
            }
        }
        Page { width: w, height: h, channels: ch, data }
    }
}

/// Grey level at coverage `a`, from background `bg` to font colour `fg`. A convex combination fits in
/// u16, and plain 16-bit arithmetic (no table, division as in `over`) lets the pixel loops vectorize.
#[inline(always)]
fn mix_grey(bg: u8, fg: u8, a: u8) -> u8 {
    let v = bg as u16 * (255 - a as u16) + fg as u16 * a as u16 + 127;
    ((v + 1 + (v >> 8)) >> 8) as u8
}

/// Colours the spans glyphs touched in `data` (the top-left `w`-pixel-wide region of the page, already
/// filled with `bg`), in 512-bit lanes where the CPU has AVX-512 (four times the baseline's 128).
fn paint_grey_spans(ink: &Ink, data: &mut [u8], w: usize, channels: Channels, bg: u8, fg: u8) {
    #[inline(always)]
    fn paint(ink: &Ink, data: &mut [u8], w: usize, channels: Channels, bg: u8, fg: u8) {
        let ch = channels as usize;
        for (y, dst) in data.chunks_exact_mut(w * ch).enumerate() {
            let span = ink.span(y, w);
            if span.is_empty() {
                continue;
            }
            let (src, dst) = (&ink.row(y)[span.clone()], &mut dst[span.start * ch..span.end * ch]);
            match channels {
                Channels::Grey => dst.iter_mut().zip(src).for_each(|(d, &a)| *d = mix_grey(bg, fg, a)),
                Channels::Rgb => dst.chunks_exact_mut(3).zip(src).for_each(|(d, &a)| d.fill(mix_grey(bg, fg, a))),
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        #[target_feature(enable = "avx512bw")]
        fn wide(ink: &Ink, data: &mut [u8], w: usize, channels: Channels, bg: u8, fg: u8) {
            paint(ink, data, w, channels, bg, fg)
        }
        // SAFETY: the CPU has AVX-512BW, checked just above.
        return unsafe { wide(ink, data, w, channels, bg, fg) };
    }
    paint(ink, data, w, channels, bg, fg)
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
    let (w, h) = (ink.width(), ink.height());
    // The reference takes the median of the top-left 2×2 pixels; at those pixels there is no text.
    let bg = luma(colours.pixel(ink, 0, 0)) as i32;
    let mut last_col: Option<usize> = None;
    let mut last_row: Option<usize> = None;
    match colours.uniform_grey() {
        // Fast path: grey is monotone in coverage, so "differs by more than 5" is "coverage ≥ t". Only
        // columns right of the best so far can move the crop, and the last inked row is found from
        // the bottom up.
        Some((pbg, fg)) => {
            if let Some(t) = (0..=255u8).find(|&a| (mix_grey(pbg, fg, a) as i32 - bg).abs() > 5) {
                for y in 0..h {
                    let span = ink.span(y, w);
                    let from = last_col.map_or(span.start, |c| span.start.max(c + 1));
                    if let Some(x) = ink.row(y)[from..span.end.max(from)].iter().rposition(|&a| a >= t) {
                        last_col = Some(from + x);
                    }
                }
                last_row = (0..h).rev().find(|&y| ink.row(y)[ink.span(y, w)].iter().any(|&a| a >= t));
            }
        }
        None => {
            for y in 0..h {
                if let Some(x) = (0..w).rev().find(|&x| (luma(colours.pixel(ink, x, y)) as i32 - bg).abs() > 5) {
                    last_col = Some(last_col.map_or(x, |c| c.max(x)));
                    last_row = Some(y);
                }
            }
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
