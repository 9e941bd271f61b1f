//! Text → page images, faithful to the reference VTC-R1/Glyph pipeline (reportlab layout, pdftoppm raster,
//! numpy auto-crop) and much faster: no PDF, glyphs rasterized once and blitted, pages streamed.

pub mod batch;
pub mod config;
pub mod deflate;
pub mod font;
pub mod layout;
pub mod png;
pub mod prepare;
pub mod raster;

use std::path::PathBuf;

/// Per-thread buffers (page pixels, PNG output, encoder scratch) are kept for the next page up to this
/// size; an A4 page at 72 dpi needs well under 1 MB, and a huge page's buffers are let go.
pub const KEEP_BUFFER_BYTES: usize = 64 << 20;

pub use config::RenderConfig;
pub use font::{Face, FontSet};
pub use layout::PageLayout;
pub use raster::{Channels, Page};

use crate::error::Result;

/// Counts a user sees next to the pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenderStats {
    pub pages: usize,
    pub chars: usize,
    /// Characters no font has, drawn as the main font's .notdef box.
    pub missing_glyphs: usize,
}

/// A configured renderer: the config and its loaded fonts. Cheap to share across threads.
pub struct Renderer {
    pub config: RenderConfig,
    pub fonts: FontSet,
}

impl Renderer {
    /// Loads the config's font (the bundled DejaVu Sans when it names none) and the fallback fonts,
    /// tried in order for characters the main font lacks.
    pub fn new(config: RenderConfig, fallback_fonts: &[PathBuf]) -> Result<Renderer> {
        config.validate()?;
        let main = match &config.font_path {
            Some(path) => Face::open(path)?,
            None => Face::bundled(),
        };
        let fallbacks = fallback_fonts.iter().map(|p| Face::open(p)).collect::<Result<Vec<_>>>()?;
        Ok(Renderer { config, fonts: FontSet::new(main, fallbacks) })
    }

    /// Grey when the font and backgrounds are grey (the pixels are then the same in grey and RGB, at a
    /// third of the bytes), RGB otherwise.
    pub fn natural_channels(&self) -> Channels {
        let grey = |c: config::Rgb| c[0] == c[1] && c[1] == c[2];
        let c = &self.config;
        if grey(c.font_color) && grey(c.page_bg_color) && grey(c.para_bg_color) && c.border_color.is_none_or(grey) {
            Channels::Grey
        } else {
            Channels::Rgb
        }
    }

    /// The pages of `text`, produced one at a time so memory stays bounded for any text length.
    pub fn pages<'a>(&'a self, text: &'a str, channels: Channels) -> PageIter<'a> {
        let mut layouter = layout::Layouter::new(text, &self.config, &self.fonts);
        let next = layouter.next();
        PageIter { renderer: self, layouter, next, channels, pages: 0 }
    }

    /// All pages of `text` and their counts.
    pub fn render(&self, text: &str, channels: Channels) -> (Vec<Page>, RenderStats) {
        let mut it = self.pages(text, channels);
        let pages: Vec<Page> = it.by_ref().collect();
        (pages, it.stats())
    }

    /// The lines of each page, in the schema of the reference `layout.jsonl` (no raster).
    pub fn layout(&self, text: &str) -> Vec<Vec<String>> {
        layout::Layouter::new(text, &self.config, &self.fonts)
            .map(|p| p.lines.into_iter().map(|l| l.text).collect())
            .collect()
    }
}

/// Streams rendered pages. It looks one page ahead, because only the last page is cropped in height.
pub struct PageIter<'a> {
    renderer: &'a Renderer,
    layouter: layout::Layouter<'a>,
    next: Option<PageLayout>,
    channels: Channels,
    pages: usize,
}

impl PageIter<'_> {
    /// Counts so far; complete once the iterator has returned `None`.
    pub fn stats(&self) -> RenderStats {
        let s = self.layouter.stats();
        RenderStats { pages: self.pages, chars: s.chars, missing_glyphs: s.missing_glyphs }
    }
}

impl Iterator for PageIter<'_> {
    type Item = Page;

    fn next(&mut self) -> Option<Page> {
        let current = self.next.take()?;
        self.next = self.layouter.next();
        self.pages += 1;
        let r = self.renderer;
        Some(raster::rasterize(&current, &r.config, &r.fonts, self.channels, self.next.is_none()))
    }
}
