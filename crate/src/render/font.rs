//! Fonts: the main font plus fallbacks chosen per character, advance widths in reportlab's units, and a
//! cache of rasterized glyph coverage masks keyed by glyph and quarter-pixel x offset (poppler positions
//! glyphs at quarter-pixel precision, so we do too).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use ab_glyph::{Font as _, FontArc, GlyphId, PxScale};

use crate::error::{Error, Result};

/// The DejaVu Sans shipped inside the package, so the default preset works offline.
pub const DEJAVU_SANS: &[u8] = include_bytes!("../../../fonts/DejaVuSans.ttf");

/// Horizontal sub-pixel positions a glyph can be rasterized at (4 = quarter pixels, as poppler's Splash).
pub const SUBPIXEL_STEPS: u32 = 4;

/// One font file.
pub struct Face {
    /// Where it came from, for error messages (`None` for the bundled DejaVu Sans).
    pub path: Option<PathBuf>,
    font: FontArc,
    units_per_em: f32,
}

impl Face {
    pub fn from_bytes(bytes: Vec<u8>, path: Option<PathBuf>) -> Result<Face> {
        let font = FontArc::try_from_vec(bytes).map_err(|e| Error::Font {
            path: path.clone().unwrap_or_else(|| PathBuf::from("<bundled DejaVuSans.ttf>")),
            message: format!("not a readable TrueType/OpenType font ({e})"),
        })?;
        let units_per_em = font.units_per_em().filter(|u| *u > 0.0).ok_or_else(|| Error::Font {
            path: path.clone().unwrap_or_default(),
            message: "font has no valid unitsPerEm".into(),
        })?;
        Ok(Face { path, font, units_per_em })
    }

    pub fn open(path: &Path) -> Result<Face> {
        let bytes = std::fs::read(path).map_err(|e| Error::Font {
            path: path.to_path_buf(),
            message: format!("cannot read: {e}"),
        })?;
        Face::from_bytes(bytes, Some(path.to_path_buf()))
    }

    pub fn bundled() -> Face {
        Face::from_bytes(DEJAVU_SANS.to_vec(), None).expect("bundled DejaVu Sans is a valid font")
    }

    pub fn units_per_em(&self) -> f32 {
        self.units_per_em
    }

    /// The glyph for `ch`, or `None` when the font has none (glyph 0, .notdef).
    pub fn glyph(&self, ch: char) -> Option<GlyphId> {
        let id = self.font.glyph_id(ch);
        (id.0 != 0).then_some(id)
    }

    /// Advance width in font units (hmtx).
    pub fn advance_units(&self, glyph: GlyphId) -> f32 {
        self.font.h_advance_unscaled(glyph)
    }

    /// Ascender and descender in font units (hhea), descender negative.
    pub fn ascent_descent_units(&self) -> (f32, f32) {
        (self.font.ascent_unscaled(), self.font.descent_unscaled())
    }

    /// ab_glyph scales by line height (ascent − descent), not by em: the scale that makes one em `em_px`
    /// pixels tall, stretched horizontally by `h_scale`.
    pub fn px_scale(&self, em_px: f32, h_scale: f32) -> PxScale {
        let y = em_px * self.font.height_unscaled() / self.units_per_em;
        PxScale { x: y * h_scale, y }
    }

    pub fn font(&self) -> &FontArc {
        &self.font
    }
}

/// Which face draws a character, and with which glyph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResolvedGlyph {
    pub face: u16,
    pub glyph: GlyphId,
    /// No face has the character: drawn as face 0's .notdef box.
    pub missing: bool,
}

/// The main face (index 0) and the fallbacks tried in order for characters it lacks.
pub struct FontSet {
    /// Unique per font set made in this process, so per-thread memos of its glyphs can tell font sets
    /// apart (an address could be reused by a later one).
    id: u64,
    faces: Vec<Face>,
    raster_cache: RwLock<HashMap<u64, Arc<Coverage>, BuildHasherDefault<GlyphKeyHasher>>>,
    /// `char_metrics` for the BMP in blocks of 256 characters, filled on first use and shared by every
    /// text laid out with this font set.
    metric_blocks: Box<[OnceLock<Box<[CharMetrics; 256]>>]>,
}

/// A character's width in 1/1000 em (reportlab's `face.charWidths`, or `defaultWidth`) and its glyph.
#[derive(Clone, Copy)]
pub struct CharMetrics {
    pub units: f64,
    pub glyph: ResolvedGlyph,
}

/// Glyph cache key: face, glyph id, sub-pixel step and scale packed into one u64.
fn glyph_key(rg: ResolvedGlyph, scale: PxScale, subpixel: u32) -> u64 {
    let milli = |v: f32| ((v * 1000.0) as u64) & 0x7_FFFF;
    (rg.face as u64 & 0x7F) << 57
        | (rg.glyph.0 as u64) << 41
        | (subpixel as u64 & 0x3) << 39
        | milli(scale.x) << 19
        | milli(scale.y)
}

/// A multiplicative hash for the packed keys: the cache is hit for every glyph drawn, and SipHash
/// showed up in profiles.
#[derive(Default)]
struct GlyphKeyHasher(u64);

impl Hasher for GlyphKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ b as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A rasterized glyph: coverage 0..=255 in a `width × height` box whose top-left corner sits at
/// (`left`, `top`) pixels from the pen position (baseline origin rounded down to whole pixels).
pub struct Coverage {
    pub left: i32,
    pub top: i32,
    pub width: usize,
    pub height: usize,
    pub alpha: Vec<u8>,
    /// The same rows zero-padded to 16 bytes when the glyph is at most 16 pixels wide (nearly every
    /// glyph at text sizes): the raster then blends a whole row in one fixed-width, vectorized step.
    pub rows16: Vec<[u8; 16]>,
}

impl Coverage {
    pub fn new(left: i32, top: i32, width: usize, height: usize, alpha: Vec<u8>) -> Coverage {
        let rows16 = if width > 0 && width <= 16 {
            alpha
                .chunks_exact(width)
                .map(|row| {
                    let mut r = [0u8; 16];
                    r[..width].copy_from_slice(row);
                    r
                })
                .collect()
        } else {
            Vec::new()
        };
        Coverage { left, top, width, height, alpha, rows16 }
    }
}

impl FontSet {
    pub fn new(main: Face, fallbacks: Vec<Face>) -> FontSet {
        let mut faces = vec![main];
        faces.extend(fallbacks);
        let metric_blocks = (0..256).map(|_| OnceLock::new()).collect();
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        FontSet { id, faces, raster_cache: RwLock::new(HashMap::default()), metric_blocks }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Width and glyph of `c`, as reportlab's TTF font measures and draws it.
    pub fn char_metrics(&self, c: char) -> CharMetrics {
        let cp = c as u32;
        match self.metric_blocks.get((cp >> 8) as usize) {
            Some(block) => self.metric_block(block, cp >> 8)[(cp & 0xFF) as usize],
            None => self.compute_metrics(c),
        }
    }

    /// `char_metrics` of U+0000..U+00FF as one table, for callers that look up characters one by one
    /// (most text is in it).
    pub fn latin1_metrics(&self) -> &[CharMetrics; 256] {
        self.metric_block(&self.metric_blocks[0], 0)
    }

    fn metric_block<'a>(&self, block: &'a OnceLock<Box<[CharMetrics; 256]>>, index: u32) -> &'a [CharMetrics; 256] {
        block.get_or_init(|| {
            Box::new(std::array::from_fn(|i| self.compute_metrics(char::from_u32(index << 8 | i as u32).unwrap_or('\u{FFFD}'))))
        })
    }

    fn compute_metrics(&self, c: char) -> CharMetrics {
        let main = self.main();
        // ttfonts.TTFontFile: U+00A0 takes the space's glyph and width (and vice versa); splitString also
        // draws nbsp as code 32.
        let c = match c {
            '\u{A0}' if main.glyph(' ').is_some() => ' ',
            ' ' if main.glyph(' ').is_none() && main.glyph('\u{A0}').is_some() => '\u{A0}',
            c => c,
        };
        let glyph = self.resolve(c);
        // A character no font has: reportlab uses the font's defaultWidth (advance of glyph 0).
        let (face, gid) = if glyph.missing { (main, GlyphId(0)) } else { (&self.faces[glyph.face as usize], glyph.glyph) };
        let units = face.advance_units(gid) as f64 * (1000.0 / face.units_per_em() as f64);
        CharMetrics { units, glyph }
    }

    pub fn faces(&self) -> &[Face] {
        &self.faces
    }

    pub fn main(&self) -> &Face {
        &self.faces[0]
    }

    /// The first face that has `ch`; face 0's .notdef when none does.
    pub fn resolve(&self, ch: char) -> ResolvedGlyph {
        for (i, face) in self.faces.iter().enumerate() {
            if let Some(glyph) = face.glyph(ch) {
                return ResolvedGlyph { face: i as u16, glyph, missing: false };
            }
        }
        ResolvedGlyph { face: 0, glyph: GlyphId(0), missing: true }
    }

    /// Runs `f` with a glyph lookup that holds the cache's read lock across calls (a page draws thousands
    /// of glyphs; locking and reference counting per glyph showed up in profiles). Glyphs not cached yet
    /// are rasterized and added when the lookup finds them missing.
    pub fn with_coverage<R>(&self, f: impl FnOnce(&mut dyn FnMut(ResolvedGlyph, PxScale, u32) -> Arc<Coverage>) -> R) -> R {
        let mut guard = Some(self.raster_cache.read().unwrap_or_else(|e| e.into_inner()));
        let mut lookup = |rg: ResolvedGlyph, scale: PxScale, subpixel: u32| -> Arc<Coverage> {
            let subpixel = subpixel.min(SUBPIXEL_STEPS - 1);
            let key = glyph_key(rg, scale, subpixel);
            if let Some(c) = guard.as_ref().and_then(|g| g.get(&key)) {
                return c.clone();
            }
            guard = None;
            let cov = Arc::new(self.rasterize(rg, scale, subpixel as f32 / SUBPIXEL_STEPS as f32));
            self.raster_cache.write().unwrap_or_else(|e| e.into_inner()).insert(key, cov.clone());
            guard = Some(self.raster_cache.read().unwrap_or_else(|e| e.into_inner()));
            cov
        };
        f(&mut lookup)
    }

    fn rasterize(&self, rg: ResolvedGlyph, scale: PxScale, x_offset: f32) -> Coverage {
        let font = self.faces[rg.face as usize].font();
        let glyph = rg.glyph.with_scale_and_position(scale, ab_glyph::point(x_offset, 0.0));
        let Some(outlined) = font.outline_glyph(glyph) else {
            return Coverage::new(0, 0, 0, 0, Vec::new());
        };
        let b = outlined.px_bounds();
        let (width, height) = (b.width() as usize, b.height() as usize);
        let mut alpha = vec![0u8; width * height];
        outlined.draw(|x, y, c| {
            let i = y as usize * width + x as usize;
            if i < alpha.len() {
                alpha[i] = (c.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
            }
        });
        Coverage::new(b.min.x as i32, b.min.y as i32, width, height, alpha)
    }
}
