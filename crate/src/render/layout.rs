//! reportlab-compatible line breaking and pagination (reportlab 5.1, the version `tools/ref_render.py` runs).
//!
//! The model follows reportlab's own objects so that its quirks come out the same:
//! * a paragraph (30 source lines) is a list of *frags* (`prepare.rs`); a single frag makes a "kind 0"
//!   paragraph (`Paragraph.breakLines` simple path: words are strings), several frags a "kind 1" one
//!   (words are *frag words* built by `_getFragWords`, lines remember where they start in the consumed
//!   word list `FW`, `FragLine.sFW`);
//! * pagination is `SimpleDocTemplate.handle_flowable` + `Frame.add/split` + `Paragraph.split`: when a
//!   paragraph does not fit, it is split after `s = int(availHeight/leading)` lines (`s <= 1` → no split,
//!   allowOrphans=0), the first part `P1` is re-broken from `FW[:lines[s].sFW]` and placed, the rest `P2`
//!   is re-broken from `FW[lines[s].sFW:]` and tried again. Because `sFW` of a line that follows a `<br/>`
//!   points at that `<br/>`, a continuation usually starts with an empty line, and `P1` loses a trailing
//!   empty line: this is why reference pages hold 80 or 81 lines;
//! * widths are `pdfmetrics.stringWidth`: `0.001*fontSize*Σ advance*1000/unitsPerEm` in f64, no rounding,
//!   summed in reportlab's order; lines may overflow by 5% of their spaces (`spaceShrinkage=0.05`), and
//!   such lines are drawn with a negative word space (`Tw`), which applies to spaces and nbsp (code 32).
//!
//! Line breaking is lazy (lines are made as the frame asks for them), so a huge single-line paragraph is
//! not re-broken whole for every page. CJK paragraphs (`wordWrap="CJK"`) are broken eagerly per paragraph.

use std::collections::{HashMap, VecDeque};

use crate::render::config::{Alignment, RenderConfig};
use crate::render::font::{CharMetrics, FontSet, ResolvedGlyph};
use crate::render::prepare::{cannot_start_line, is_cjk_text, is_py_space, is_zs, FragKind, Paragraphs, PreparedPara};

/// One glyph to draw: `x` is the pen origin in pt from the left page edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlacedGlyph {
    pub glyph: ResolvedGlyph,
    pub x: f32,
}

/// One laid-out line. `text` is reportlab's line text (what `ref_render.py` traces); `glyphs` holds the
/// visible glyphs only (spaces and nbsp are not listed).
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Baseline in pt from the top page edge.
    pub baseline: f32,
    pub text: String,
    pub glyphs: Vec<PlacedGlyph>,
}

/// The rectangle reportlab fills with the paragraph background (and strokes with the border) for one
/// paragraph part on a page, in pt from the top-left page corner.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParagraphBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageLayout {
    pub lines: Vec<Line>,
    pub paragraph_boxes: Vec<ParagraphBox>,
}

/// Characters placed on lines so far (spaces included) and how many of them no font has (.notdef).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayoutStats {
    pub chars: usize,
    pub missing_glyphs: usize,
}

/// Pages of `text`, produced one at a time.
pub fn layout_pages<'a>(text: &'a str, cfg: &'a RenderConfig, fonts: &'a FontSet) -> Layouter<'a> {
    Layouter::new(text, cfg, fonts)
}

// ---------------------------------------------------------------------------------------------------
// Font metrics

/// reportlab `rl_config._FUZZ`.
const FUZZ: f64 = 1e-6;
/// reportlab `rl_config.spaceShrinkage`.
const SPACE_SHRINKAGE: f64 = 0.05;

/// An f32 config value as the f64 Python would have parsed from the same decimal text (9.3f32 → 9.3).
fn py_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// Per-character widths and glyphs: the font set's shared table for the BMP, a local cache beyond.
struct Metrics<'f> {
    fonts: &'f FontSet,
    latin1: &'f [CharMetrics; 256],
    /// `0.001*fontSize`: `stringWidth(s) = k * Σ units`.
    k: f64,
    /// Width of a space in pt (`stringWidth(' ')`).
    sw: f64,
    astral: HashMap<char, CharMetrics>,
}

impl<'f> Metrics<'f> {
    fn new(fonts: &'f FontSet, font_size: f64) -> Self {
        let mut m = Metrics { fonts, latin1: fonts.latin1_metrics(), k: 0.001 * font_size, sw: 0.0, astral: HashMap::new() };
        m.sw = m.k * m.info(' ').units;
        m
    }

    #[inline]
    fn info(&mut self, c: char) -> CharMetrics {
        if (c as u32) < 0x100 {
            self.latin1[c as usize]
        } else if (c as u32) < 0x10000 {
            self.fonts.char_metrics(c)
        } else {
            let fonts = self.fonts;
            *self.astral.entry(c).or_insert_with(|| fonts.char_metrics(c))
        }
    }

    /// `pdfmetrics.stringWidth(s)`.
    fn width(&mut self, s: &str) -> f64 {
        let mut units = 0.0;
        for c in s.chars() {
            units += self.info(c).units;
        }
        self.k * units
    }
}

// ---------------------------------------------------------------------------------------------------
// Words

/// reportlab's word classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WKind {
    /// A word not followed by a space (`list` frag word, or a plain `str` in kind 0).
    Plain,
    /// A word followed by a space (`_HSFrag`).
    Hs,
    /// `<br/>` (`[0, (brFrag, '')]`).
    Br,
    /// The break `breakLines` injects after the first piece of a split long word (`_InjectedFrag`).
    InjectedBr,
    /// A piece of a long word that is not its last (`_SplitFrag` / `_SplitWord`).
    Split,
    /// The last piece of a long word (`_SplitFragH` / `_SplitWordEnd`).
    SplitEnd,
    /// The last piece of a long word followed by a space (`_SplitFragHS`).
    SplitEndHs,
}

impl WKind {
    fn is_hs(self) -> bool {
        matches!(self, WKind::Hs | WKind::SplitEndHs)
    }
    fn is_split(self) -> bool {
        matches!(self, WKind::Split | WKind::SplitEnd | WKind::SplitEndHs)
    }
    fn is_break(self) -> bool {
        matches!(self, WKind::Br | WKind::InjectedBr)
    }
}

/// A word: a byte range of the paragraph text and its reportlab width.
#[derive(Clone, Copy, Debug)]
struct Word {
    width: f64,
    start: u32,
    end: u32,
    kind: WKind,
}

impl Word {
    fn text<'p>(&self, p: &'p PreparedPara) -> &'p str {
        &p.text[self.start as usize..self.end as usize]
    }
    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

struct Cx<'c, 'f> {
    para: &'c PreparedPara,
    m: &'c mut Metrics<'f>,
}

/// Kind-1 words straight from the parser frags: `_getFragWords` (unprocessed branch).
struct RawFragWords {
    frag: usize,
    out: VecDeque<Word>,
    /// The word being assembled across frags (`W`, with its width `n`).
    open: Option<Word>,
    hanging_strip: bool,
    /// Whether the last emitted word is an `_HSFrag` (`R[-1]`).
    last_hs: bool,
    emitted: bool,
    /// Scratch: the current frag's `split(text)`.
    pieces: Vec<(u32, u32)>,
}

impl RawFragWords {
    fn new() -> Self {
        RawFragWords {
            frag: 0,
            out: VecDeque::new(),
            open: None,
            hanging_strip: true,
            last_hs: false,
            emitted: false,
            pieces: Vec::new(),
        }
    }

    fn emit(&mut self, w: Word) {
        self.last_hs = w.kind.is_hs();
        self.emitted = true;
        self.out.push_back(w);
    }

    /// Add a piece to `W` (`W.append((f,w)); n += stringWidth(w)`).
    fn add_piece(&mut self, start: u32, end: u32, cx: &mut Cx) {
        let width = cx.m.width(&cx.para.text[start as usize..end as usize]);
        match &mut self.open {
            Some(w) => {
                w.width += width;
                w.end = end;
            }
            None => self.open = Some(Word { width: 0.0 + width, start, end, kind: WKind::Plain }),
        }
    }

    fn close(&mut self, kind: WKind) {
        if let Some(mut w) = self.open.take() {
            w.kind = kind;
            self.emit(w);
        }
    }

    fn next(&mut self, cx: &mut Cx) -> Option<Word> {
        loop {
            if let Some(w) = self.out.pop_front() {
                return Some(w);
            }
            let para = cx.para;
            let Some(f) = para.frags.get(self.frag).copied() else {
                self.close(WKind::Plain);
                if !self.emitted && !para.frags.is_empty() {
                    // `if not R: R = [[0,(frags[0],'')]]`
                    let at = para.frags[0].start;
                    self.emit(Word { width: 0.0, start: at, end: at, kind: WKind::Plain });
                }
                return self.out.pop_front();
            };
            self.frag += 1;
            if f.kind == FragKind::Break {
                self.close(WKind::Plain);
                self.emit(Word { width: 0.0, start: f.start, end: f.start, kind: WKind::Br });
                self.hanging_strip = true;
                continue;
            }
            let mut start = f.start as usize;
            let end = f.end as usize;
            if self.hanging_strip {
                // lstrip: after collapsing, the only whitespace left in frag text is ' '.
                while start < end && para.text.as_bytes()[start] == b' ' {
                    start += 1;
                }
                if start == end {
                    continue;
                }
                self.hanging_strip = false;
            }
            let text = &para.text[start..end];
            // `split(text)`: regex split keeping empty ends when the text holds U+00A0, else str.split().
            let keep_empty = text.contains('\u{A0}');
            let mut pieces = std::mem::take(&mut self.pieces);
            pieces.clear();
            let mut s = start;
            for (i, b) in text.bytes().enumerate() {
                if b == b' ' {
                    if keep_empty || s < start + i {
                        pieces.push((s as u32, (start + i) as u32));
                    }
                    s = start + i + 1;
                }
            }
            if keep_empty || s < end {
                pieces.push((s as u32, end as u32));
            }
            if text.starts_with(' ') || pieces.is_empty() {
                let whs = if self.open.is_some() {
                    self.close(WKind::Plain);
                    false // hangingSpace
                } else {
                    self.last_hs
                };
                if !whs {
                    pieces.insert(0, (start as u32, start as u32));
                } else if pieces.is_empty() {
                    self.pieces = pieces;
                    continue;
                }
            }
            let last = pieces.len() - 1;
            for &(a, b) in &pieces[..last] {
                self.add_piece(a, b, cx);
                self.close(WKind::Hs);
            }
            let (a, b) = pieces[last];
            self.add_piece(a, b, cx);
            if text.ends_with(' ') {
                self.close(WKind::Hs);
            }
            self.pieces = pieces;
        }
    }
}

/// Kind-0 words: the single frag's text split at spaces (`split(strip(text))`).
struct RawTextWords {
    pos: usize,
    end: usize,
}

impl RawTextWords {
    fn next(&mut self, cx: &mut Cx) -> Option<Word> {
        let bytes = cx.para.text.as_bytes();
        while self.pos < self.end && bytes[self.pos] == b' ' {
            self.pos += 1;
        }
        if self.pos >= self.end {
            return None;
        }
        let start = self.pos;
        while self.pos < self.end && bytes[self.pos] != b' ' {
            self.pos += 1;
        }
        let text = &cx.para.text[start..self.pos];
        Some(Word { width: cx.m.width(text), start: start as u32, end: self.pos as u32, kind: WKind::Plain })
    }
}

enum Raw {
    None,
    Frags(RawFragWords),
    Text(RawTextWords),
}

/// The words a breaker consumes: already materialised words (a continuation's `FW` tail), then the
/// paragraph's remaining raw words.
struct Feed {
    queue: VecDeque<Word>,
    raw: Raw,
}

impl Feed {
    fn pull(&mut self, cx: &mut Cx) -> Option<Word> {
        if let Some(w) = self.queue.pop_front() {
            return Some(w);
        }
        match &mut self.raw {
            Raw::None => None,
            Raw::Frags(r) => r.next(cx),
            Raw::Text(r) => r.next(cx),
        }
    }

    /// Next word after reprocessing: injected breaks dropped, split pieces rejoined
    /// (`_getFragWords` processed branch / `_yieldBLParaWords`). Raw words pass unchanged.
    fn next(&mut self, cx: &mut Cx) -> Option<Word> {
        let mut acc: Option<Word> = None;
        loop {
            let Some(w) = self.pull(cx) else {
                return acc.map(|a| Word { kind: WKind::Plain, ..a });
            };
            match w.kind {
                WKind::InjectedBr => {}
                WKind::Split | WKind::SplitEnd | WKind::SplitEndHs => {
                    // `_rejoinSplitFragWords`: width is the sum of the pieces' widths.
                    acc = Some(match acc {
                        Some(a) => Word { width: a.width + w.width, end: w.end, ..a },
                        None => Word { width: 0.0 + w.width, ..w },
                    });
                    if w.kind != WKind::Split {
                        let kind = if w.kind.is_hs() { WKind::Hs } else { WKind::Plain };
                        return acc.map(|a| Word { kind, ..a });
                    }
                }
                _ => {
                    if let Some(a) = acc {
                        self.queue.push_front(w);
                        return Some(Word { kind: WKind::Plain, ..a });
                    }
                    return Some(w);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Lines

/// One broken line, with what drawing needs.
#[derive(Clone, Debug)]
struct LineRec {
    text: String,
    /// Where the line starts in the breaker's consumed words (`FragLine.sFW`), or in the CJK items.
    start: usize,
    /// End in the CJK items (unused otherwise).
    end: usize,
    extra_space: f64,
    /// `FragLine.wordCount` (kind 1, CJK: 1) or `len(words)` (kind 0): the base of `nSpaces`.
    word_count: u32,
    /// Ended by a real `<br/>` (`FragLine.lineBreak`).
    line_break: bool,
    /// Kind 1 / CJK FragLine (vs kind-0 tuple line): changes `_JustifyLast` and justification.
    frag_line: bool,
}

/// The line text built so far, leaving an empty one as large: the next line's text then needs one
/// allocation, not a string grown a few bytes at a time.
fn take_text(text: &mut String) -> String {
    std::mem::replace(text, String::with_capacity(text.capacity()))
}

/// `Paragraph.breakLines`, kind 1 (several frags), as a line-at-a-time state machine.
struct FragBreaker {
    feed: Feed,
    /// Words `breakLines` pushed back to the front of its word list (split pieces), top = next.
    front: Vec<Word>,
    /// `FW`: every word taken, in order.
    fw: Vec<Word>,
    max_widths: [f64; 2],
    lineno: usize,
    /// `words` (the line's frags) is non-empty.
    open: bool,
    n: u32,
    space_width: f64,
    current_width: f64,
    spaces: u32,
    text: String,
    sfw: usize,
}

impl FragBreaker {
    fn new(feed: Feed, max_widths: [f64; 2]) -> Self {
        FragBreaker {
            feed,
            front: Vec::new(),
            fw: Vec::new(),
            max_widths,
            lineno: 0,
            open: false,
            n: 0,
            space_width: 0.0,
            current_width: 0.0,
            spaces: 0,
            text: String::new(),
            sfw: 0,
        }
    }

    fn max_width(&self) -> f64 {
        self.max_widths[self.lineno.min(1)]
    }

    fn line(&mut self, line_break: bool) -> LineRec {
        LineRec {
            text: take_text(&mut self.text),
            start: self.sfw,
            end: 0,
            extra_space: self.max_width() - self.current_width,
            word_count: self.n,
            line_break,
            frag_line: true,
        }
    }

    fn next_line(&mut self, cx: &mut Cx) -> Option<LineRec> {
        loop {
            let w = match self.front.pop() {
                Some(w) => w,
                None => match self.feed.next(cx) {
                    Some(w) => w,
                    None => {
                        // Leftovers on the final line.
                        if !std::mem::take(&mut self.open) {
                            return None;
                        }
                        return Some(self.line(false));
                    }
                },
            };
            self.fw.push(w);
            if !self.open {
                self.n = 0;
                self.space_width = 0.0;
                self.current_width = 0.0;
                self.spaces = 0;
                self.text.clear();
            }
            let word_width = w.width;
            let new_width =
                if word_width > 0.0 { self.current_width + self.space_width + word_width } else { self.current_width };
            let line_break = w.kind.is_break();
            let max_width = self.max_width();
            // spaceShrinkage: the line may overflow by 5% of its spaces (the pending one included).
            let mut shrink = self.space_width;
            if self.spaces > 0 {
                shrink += self.spaces as f64 * cx.m.sw;
            }
            let lim_width = max_width + shrink * SPACE_SHRINKAGE;
            if !line_break && new_width > lim_width && w.kind != WKind::SplitEnd {
                // splitLongWords: a word wider than a whole line is cut, starting on this line.
                if !w.kind.is_split() && word_width > self.max_widths[self.lineno.min(1)] {
                    let pieces = split_frag_word(
                        w,
                        max_width - self.space_width - self.current_width,
                        self.max_widths,
                        self.lineno,
                        cx,
                    );
                    // `_words[0:0] = pieces; _words.insert(1, _InjectedFrag(br))`
                    for p in pieces[1..].iter().rev() {
                        self.front.push(*p);
                    }
                    self.front.push(Word {
                        width: 0.0,
                        start: pieces[0].end,
                        end: pieces[0].end,
                        kind: WKind::InjectedBr,
                    });
                    self.front.push(pieces[0]);
                    self.fw.pop();
                    continue;
                }
            }
            let end_line = (new_width > lim_width && self.n > 0) || line_break;
            let wtext = w.text(cx.para);
            if !end_line {
                if !wtext.is_empty() {
                    self.n += 1;
                }
                if !self.open {
                    self.open = true;
                    self.text.push_str(wtext);
                } else {
                    if self.space_width != 0.0 && !self.text.ends_with(' ') {
                        self.text.push(' ');
                        self.spaces += 1;
                    }
                    self.text.push_str(wtext);
                }
                self.space_width = if w.kind.is_hs() { cx.m.sw } else { 0.0 };
                self.current_width = new_width;
            } else {
                // njlbv (justifyBreaks=0) and not an injected break.
                let rec = self.line(line_break && w.kind == WKind::Br);
                self.sfw = self.fw.len() - 1;
                self.lineno += 1;
                if line_break {
                    self.open = false;
                } else {
                    self.space_width = if w.kind.is_hs() { cx.m.sw } else { 0.0 };
                    self.current_width = word_width;
                    self.n = 1;
                    self.spaces = 0;
                    self.text.push_str(wtext);
                }
                return Some(rec);
            }
        }
    }
}

/// `_splitFragWord`: cut a frag word into pieces, the first filling `max_width`, the others whole lines.
fn split_frag_word(w: Word, mut max_width: f64, max_widths: [f64; 2], mut lineno: usize, cx: &mut Cx) -> Vec<Word> {
    let mut out = Vec::new();
    let mut max_width_next = max_widths[(lineno + 1).min(1)];
    let mut line_width = 0.0;
    let mut word_width = 0.0;
    let mut piece_start = w.start as usize;
    let text = w.text(cx.para);
    for (i, c) in text.char_indices() {
        let cw = cx.m.k * cx.m.info(c).units;
        let mut new_line_width = line_width + cw;
        let too_long = new_line_width > max_width && (word_width != 0.0 || cw <= max_width_next);
        if too_long {
            let at = w.start as usize + i;
            out.push(Word { width: word_width, start: piece_start as u32, end: at as u32, kind: WKind::Split });
            lineno += 1;
            max_width = max_width_next;
            max_width_next = max_widths[(lineno + 1).min(1)];
            piece_start = at;
            new_line_width = cw;
            word_width = 0.0;
        }
        word_width += cw;
        line_width = new_line_width;
    }
    let kind = if w.kind.is_hs() { WKind::SplitEndHs } else { WKind::SplitEnd };
    out.push(Word { width: word_width, start: piece_start as u32, end: w.end, kind });
    out
}

/// `Paragraph.breakLines`, kind 0 (one frag: words are strings), line at a time.
struct TextBreaker {
    feed: Feed,
    front: Vec<Word>,
    /// Words that went onto lines, in order (what `_yieldBLParaWords` walks).
    taken: Vec<Word>,
    max_widths: [f64; 2],
    lineno: usize,
    line_words: u32,
    text: String,
    current_width: f64,
    forced_split: bool,
    line_start: usize,
}

impl TextBreaker {
    fn new(feed: Feed, max_widths: [f64; 2], sw: f64) -> Self {
        TextBreaker {
            feed,
            front: Vec::new(),
            taken: Vec::new(),
            max_widths,
            lineno: 0,
            line_words: 0,
            text: String::new(),
            current_width: -sw, // "hack to get around extra space for word 1"
            forced_split: false,
            line_start: 0,
        }
    }

    fn max_width(&self) -> f64 {
        self.max_widths[self.lineno.min(1)]
    }

    fn push_word(&mut self, w: Word, p: &PreparedPara) {
        if self.line_words > 0 {
            self.text.push(' ');
        }
        self.text.push_str(w.text(p));
        self.line_words += 1;
        self.taken.push(w);
    }

    fn line(&mut self, extra_space: f64) -> LineRec {
        LineRec {
            text: take_text(&mut self.text),
            start: self.line_start,
            end: 0,
            extra_space,
            word_count: std::mem::take(&mut self.line_words),
            line_break: false,
            frag_line: false,
        }
    }

    fn next_line(&mut self, cx: &mut Cx) -> Option<LineRec> {
        let sw = cx.m.sw;
        loop {
            let w = match self.front.pop() {
                Some(w) => w,
                None => match self.feed.next(cx) {
                    Some(w) => w,
                    None => {
                        if self.line_words == 0 {
                            return None;
                        }
                        let extra = self.max_width() - self.current_width;
                        return Some(self.line(extra));
                    }
                },
            };
            if w.is_empty() && w.kind.is_split() {
                self.forced_split = true;
            }
            let word_width = cx.m.width(w.text(cx.para));
            let new_width = self.current_width + sw + word_width;
            let max_width = self.max_width();
            let lim_width = max_width + (SPACE_SHRINKAGE * sw) * self.line_words as f64;
            if new_width > lim_width
                && !self.forced_split
                && !w.kind.is_split()
                && word_width > self.max_widths[self.lineno.min(1)]
            {
                // `_splitWord`: pieces fill the rest of this line, then whole lines.
                let pieces = split_word(w, self.current_width + sw, self.max_widths, self.lineno, cx);
                self.front.extend(pieces.into_iter().rev());
                self.forced_split = true;
                continue;
            }
            if new_width <= lim_width || self.line_words == 0 || self.forced_split {
                if !w.is_empty() {
                    self.push_word(w, cx.para);
                }
                if std::mem::take(&mut self.forced_split) {
                    let rec = self.line(max_width - new_width);
                    self.current_width = -sw;
                    self.lineno += 1;
                    self.line_start = self.taken.len();
                    return Some(rec);
                }
                self.current_width = new_width;
            } else {
                let rec = self.line(max_width - self.current_width);
                self.line_start = self.taken.len();
                self.push_word(w, cx.para);
                self.current_width = word_width;
                self.lineno += 1;
                return Some(rec);
            }
        }
    }
}

/// `_splitWord` (kind 0).
fn split_word(w: Word, mut line_width: f64, max_widths: [f64; 2], mut lineno: usize, cx: &mut Cx) -> Vec<Word> {
    let mut out = Vec::new();
    let mut max_width = max_widths[lineno.min(1)];
    let max_width_next = max_widths[(lineno + 1).min(1)];
    let mut piece_start = w.start as usize;
    let text = w.text(cx.para);
    for (i, c) in text.char_indices() {
        let at = w.start as usize + i;
        let cw = cx.m.k * cx.m.info(c).units;
        let mut new_line_width = line_width + cw;
        if new_line_width > max_width && (at > piece_start || cw <= max_width_next) {
            out.push(Word { width: 0.0, start: piece_start as u32, end: at as u32, kind: WKind::Split });
            lineno += 1;
            max_width = max_widths[lineno.min(1)];
            new_line_width = cw;
            piece_start = at;
        }
        line_width = new_line_width;
    }
    out.push(Word { width: 0.0, start: piece_start as u32, end: w.end, kind: WKind::SplitEnd });
    out
}

// ---------------------------------------------------------------------------------------------------
// CJK (wordWrap="CJK"): `breakLinesCJK` → `wordSplit`/`dumbSplit` (one frag) or `cjkFragSplit`.

#[derive(Clone, Copy, Debug)]
struct CjkItem {
    /// `None`: an empty frag (a `<br/>`).
    ch: Option<char>,
    width: f64,
    br: bool,
}

/// The shared core of `dumbSplit` and `cjkFragSplit`: per line (start, end, extraSpace, lineBreak,
/// leftover), `leftover` marking the final line made of what remained after the loop.
fn cjk_split(items: &[CjkItem], max_widths: [f64; 2]) -> Vec<(usize, usize, f64, bool, bool)> {
    let mut lines = Vec::new();
    let (mut i, mut width_used, mut line_start) = (0usize, 0.0f64, 0usize);
    let mut max_width = max_widths[0];
    let n = items.len();
    while i < n {
        let mut u = items[i];
        i += 1;
        let mut w = u.width;
        width_used += w;
        let line_break = u.br;
        if (width_used > max_width + FUZZ && width_used > 0.0) || line_break {
            let mut extra = max_width - width_used;
            if !line_break {
                if u.ch.is_some_and(|c| (c as u32) < 0x3000) {
                    // Inside a non-Asian run: break after the last space or ideograph in the second half
                    // of the line (`for j in range(i-1, limitCheck, -1)`).
                    let limit = (line_start + i) >> 1;
                    let mut j = i - 1;
                    while j > limit {
                        if items[j].ch.is_some_and(|c| is_zs(c) || c as u32 >= 0x3000) {
                            let k = j + 1;
                            if k < i {
                                let j2 = k + 1;
                                let mut s = 0.0;
                                for it in &items[j2.min(i)..i] {
                                    s += it.width;
                                }
                                extra += s;
                                w = items[k].width;
                                u = items[k];
                                i = j2;
                                break;
                            }
                        }
                        j -= 1;
                    }
                }
                // A character that may not start a line hangs in the margin; otherwise push it back.
                if u.ch.is_some_and(|c| !cannot_start_line(c)) && i > line_start + 1 {
                    i -= 1;
                    extra += w;
                }
            }
            lines.push((line_start, i, extra, line_break, false));
            max_width = max_widths[lines.len().min(1)];
            line_start = i;
            width_used = 0.0;
        }
    }
    if width_used > 0.0 {
        lines.push((line_start, n, max_width - width_used, false, true));
    }
    lines
}

/// A CJK paragraph part, broken eagerly.
struct CjkPara {
    items: Vec<CjkItem>,
    /// One frag (`wordSplit`: kind-0 lines, stripped) vs several (`cjkFragSplit`: FragLines).
    single: bool,
    lines: Vec<LineRec>,
}

impl CjkPara {
    fn new(items: Vec<CjkItem>, single: bool, max_widths: [f64; 2]) -> Self {
        let lines = cjk_split(&items, max_widths)
            .into_iter()
            .map(|(a, b, extra_space, line_break, leftover)| {
                let mut text: String = items[a..b].iter().filter_map(|it| it.ch).collect();
                if single && !leftover {
                    // dumbSplit strips every line but the leftover one (Python str.strip()).
                    text = text.trim_matches(is_py_space).to_string();
                }
                LineRec { text, start: a, end: b, extra_space, word_count: 1, line_break, frag_line: !single }
            })
            .collect();
        CjkPara { items, single, lines }
    }
}

/// Frags in a run of items (text runs merge, each break is its own frag).
fn count_groups(items: &[CjkItem]) -> usize {
    let mut groups = 0;
    let mut in_text = false;
    for it in items {
        if it.br {
            groups += 1;
            in_text = false;
        } else if !in_text {
            groups += 1;
            in_text = true;
        }
    }
    groups
}

/// `_split_blParaHard` for one line whose items are `items[from..]`: its last frag gets a trailing space
/// (an empty `<br/>` frag's text becomes ' ').
fn add_hard_space(items: &mut Vec<CjkItem>, from: usize, sw: f64) {
    let Some(last) = items[from..].last().copied() else { return };
    if last.br {
        if last.ch.is_none() {
            let i = items.len() - 1;
            items[i] = CjkItem { ch: Some(' '), width: sw, br: true };
        }
    } else if last.ch != Some(' ') {
        items.push(CjkItem { ch: Some(' '), width: sw, br: false });
    }
}

// ---------------------------------------------------------------------------------------------------
// Paragraph parts (reportlab Paragraph objects, including split-off continuations)

enum Body {
    Empty,
    Frags(FragBreaker),
    Text(TextBreaker),
    Cjk(CjkPara),
}

struct Part {
    body: Body,
    lines: Vec<LineRec>,
    exhausted: bool,
    /// Uses `firstLineIndent` (continuations get a style copy with it set to 0).
    first_indent: bool,
    /// `P1._JustifyLast`.
    justify_last: bool,
    max_widths: [f64; 2],
}

impl Part {
    fn new(body: Body, max_widths: [f64; 2], first_indent: bool) -> Self {
        let mut p = Part { body, lines: Vec::new(), exhausted: false, first_indent, justify_last: false, max_widths };
        if let Body::Cjk(c) = &mut p.body {
            p.lines = std::mem::take(&mut c.lines);
            p.exhausted = true;
        }
        if matches!(p.body, Body::Empty) {
            p.exhausted = true;
        }
        p
    }

    /// Break lines until there are at least `n` (or the paragraph ends); returns the line count.
    fn ensure(&mut self, n: usize, cx: &mut Cx) -> usize {
        while !self.exhausted && self.lines.len() < n {
            let next = match &mut self.body {
                Body::Frags(b) => b.next_line(cx),
                Body::Text(b) => b.next_line(cx),
                _ => None,
            };
            match next {
                Some(l) => self.lines.push(l),
                None => self.exhausted = true,
            }
        }
        self.lines.len()
    }

    fn all_lines(&mut self, cx: &mut Cx) -> usize {
        self.ensure(usize::MAX, cx)
    }

    /// `Paragraph.split` after `s` lines (needs `s+1` lines broken): (P1, P2).
    fn split(self, s: usize, cx: &mut Cx, sw: f64) -> (Part, Part) {
        let later = [self.max_widths[1], self.max_widths[1]];
        let justify_last = !(self.lines[s - 1].frag_line && self.lines[s - 1].line_break);
        let split_at = self.lines[s].start;
        let (mut p1, p2) = match self.body {
            Body::Frags(b) => {
                let FragBreaker { feed, front, fw, .. } = b;
                let p1_feed = Feed { queue: fw[..split_at].iter().copied().collect(), raw: Raw::None };
                let mut queue: VecDeque<Word> = fw[split_at..].iter().copied().collect();
                queue.extend(front.iter().rev().copied());
                queue.extend(feed.queue);
                let p2_feed = Feed { queue, raw: feed.raw };
                (
                    Part::new(
                        Body::Frags(FragBreaker::new(p1_feed, self.max_widths)),
                        self.max_widths,
                        self.first_indent,
                    ),
                    Part::new(Body::Frags(FragBreaker::new(p2_feed, later)), later, false),
                )
            }
            Body::Text(b) => {
                let TextBreaker { feed, front, taken, .. } = b;
                let p1_feed = Feed { queue: taken[..split_at].iter().copied().collect(), raw: Raw::None };
                let mut queue: VecDeque<Word> = taken[split_at..].iter().copied().collect();
                queue.extend(front.iter().rev().copied());
                queue.extend(feed.queue);
                let p2_feed = Feed { queue, raw: feed.raw };
                (
                    Part::new(
                        Body::Text(TextBreaker::new(p1_feed, self.max_widths, sw)),
                        self.max_widths,
                        self.first_indent,
                    ),
                    Part::new(Body::Text(TextBreaker::new(p2_feed, later, sw)), later, false),
                )
            }
            Body::Cjk(c) => {
                let mut lines = self.lines;
                let mut items = Vec::new();
                let single = if c.single {
                    // `_split_blParaSimple`: P1 keeps its lines; P2 is the remaining line texts joined.
                    for l in &lines[s..] {
                        for ch in l.text.chars() {
                            items.push(CjkItem { ch: Some(ch), width: cx.m.k * cx.m.info(ch).units, br: false });
                        }
                    }
                    true
                } else {
                    // `_split_blParaHard` appends a space to the last frag of every line but the last of
                    // each part, in place, so P1's traced lines show it too.
                    let mut groups = 0;
                    for (i, l) in lines.iter().enumerate().skip(s) {
                        let seg = &c.items[l.start..l.end];
                        groups += count_groups(seg);
                        let from = items.len();
                        items.extend_from_slice(seg);
                        if i + 1 < lines.len() {
                            add_hard_space(&mut items, from, sw);
                        }
                    }
                    for l in lines.iter_mut().take(s - 1) {
                        // A break frag's '' becomes ' '; a text frag not ending in a space gets one.
                        let needs_space = match c.items[l.start..l.end].last() {
                            Some(it) if it.br => it.ch.is_none(),
                            Some(it) => it.ch != Some(' '),
                            None => false,
                        };
                        if needs_space {
                            l.text.push(' ');
                        }
                    }
                    // A continuation made of a single frag takes the one-frag path (`wordSplit`).
                    groups == 1
                };
                lines.truncate(s);
                let mut p1 = Part::new(Body::Empty, self.max_widths, self.first_indent);
                p1.lines = lines;
                (p1, Part::new(Body::Cjk(CjkPara::new(items, single, later)), later, false))
            }
            Body::Empty => unreachable!("an empty paragraph has no lines to split"),
        };
        p1.justify_last = justify_last;
        p1.all_lines(cx);
        (p1, p2)
    }
}

// ---------------------------------------------------------------------------------------------------
// The document: SimpleDocTemplate + Frame

/// Fixed geometry and style, in reportlab's f64 arithmetic.
struct Geo {
    page_h: f64,
    /// Frame `_x` (left margin + 6 pt padding).
    x: f64,
    /// Frame `_y` at the top of a page, and `_y1p` (its bottom).
    top: f64,
    bottom: f64,
    avail_width: f64,
    leading: f64,
    font_size: f64,
    left_indent: f64,
    right_indent: f64,
    first_line_indent: f64,
    space_before: f64,
    space_after: f64,
    border_padding: f64,
    alignment: Alignment,
    hscale: f64,
}

impl Geo {
    fn new(cfg: &RenderConfig) -> Self {
        let (pw, ph) = (py_f64(cfg.page_width), py_f64(cfg.page_height));
        let (mx, my) = (py_f64(cfg.margin_x), py_f64(cfg.margin_y));
        // SimpleDocTemplate._calc + Frame._geom/_reset (paddings 6).
        let width = (pw - mx) - mx;
        let height = (ph - my) - my;
        let (x1, y1) = (mx, my);
        let (x2, y2) = (x1 + width, y1 + height);
        Geo {
            page_h: ph,
            x: x1 + 6.0,
            top: y2 - 6.0,
            bottom: y1 + 6.0,
            avail_width: x2 - x1 - 6.0 - 6.0,
            leading: py_f64(cfg.line_height),
            font_size: py_f64(cfg.font_size),
            left_indent: py_f64(cfg.left_indent),
            right_indent: py_f64(cfg.right_indent),
            first_line_indent: py_f64(cfg.first_line_indent),
            space_before: py_f64(cfg.space_before),
            space_after: py_f64(cfg.space_after),
            border_padding: py_f64(cfg.border_padding),
            alignment: cfg.alignment,
            hscale: py_f64(cfg.horizontal_scale),
        }
    }

    /// `Paragraph.wrap`: [first line width, later lines width].
    fn max_widths(&self) -> [f64; 2] {
        let aw = self.avail_width;
        [
            aw - (self.left_indent + self.first_line_indent) - self.right_indent,
            aw - self.left_indent - self.right_indent,
        ]
    }
}

/// Streaming layout: an iterator of pages.
pub struct Layouter<'a> {
    geo: Geo,
    metrics: Metrics<'a>,
    paras: Paragraphs<'a>,
    cjk: bool,
    para: PreparedPara,
    part: Option<Part>,
    /// Frame state: `_y`, `_atTop`, `_prevASpace`.
    y: f64,
    at_top: bool,
    prev_a_space: f64,
    page: PageLayout,
    /// Something was placed on the current page (a zero-line paragraph counts).
    page_used: bool,
    done: bool,
    stats: LayoutStats,
}

impl<'a> Layouter<'a> {
    pub fn new(text: &'a str, cfg: &'a RenderConfig, fonts: &'a FontSet) -> Self {
        let geo = Geo::new(cfg);
        let metrics = Metrics::new(fonts, geo.font_size);
        let y = geo.top;
        Layouter {
            geo,
            metrics,
            paras: Paragraphs::new(text),
            cjk: is_cjk_text(text),
            para: PreparedPara::default(),
            part: None,
            y,
            at_top: true,
            prev_a_space: 0.0,
            page: PageLayout::default(),
            page_used: false,
            // Empty text: no pages (reportlab would emit one blank page).
            done: text.is_empty(),
            stats: LayoutStats::default(),
        }
    }

    pub fn stats(&self) -> LayoutStats {
        self.stats
    }

    /// Prepare the next source paragraph as a fresh Part.
    fn next_part(&mut self) -> Option<Part> {
        let src = self.paras.next()?;
        self.para.prepare(src);
        let mw = self.geo.max_widths();
        let nfrags = self.para.frags.len();
        let body = if self.cjk {
            let single = nfrags == 1;
            let mut items = Vec::with_capacity(self.para.text.len());
            for f in &self.para.frags {
                if f.kind == FragKind::Break {
                    items.push(CjkItem { ch: None, width: 0.0, br: true });
                } else {
                    for ch in self.para.frag_text(f).chars() {
                        items.push(CjkItem {
                            ch: Some(ch),
                            width: self.metrics.k * self.metrics.info(ch).units,
                            br: false,
                        });
                    }
                }
            }
            if nfrags == 0 || (single && items.iter().all(|i| i.br)) {
                Body::Empty
            } else {
                Body::Cjk(CjkPara::new(items, single, mw))
            }
        } else if nfrags == 0 {
            Body::Empty
        } else if nfrags == 1 {
            // Kind 0: `words = split(strip(f.text))`; a lone <br/> has no text and no lines.
            let f = self.para.frags[0];
            if f.kind == FragKind::Break {
                Body::Empty
            } else {
                let raw = Raw::Text(RawTextWords { pos: f.start as usize, end: f.end as usize });
                Body::Text(TextBreaker::new(Feed { queue: VecDeque::new(), raw }, mw, self.metrics.sw))
            }
        } else {
            Body::Frags(FragBreaker::new(Feed { queue: VecDeque::new(), raw: Raw::Frags(RawFragWords::new()) }, mw))
        };
        Some(Part::new(body, mw, true))
    }

    /// Space before the flowable (`Frame.add`: only below other content, minus the previous space after).
    fn space_before(&self) -> f64 {
        if self.at_top {
            0.0
        } else {
            (self.geo.space_before - self.prev_a_space).max(0.0)
        }
    }

    /// `Frame.add`: does the whole part fit below `y`? Breaks only as many lines as needed to know.
    fn fits(&mut self, part: &mut Part) -> bool {
        let s = self.space_before();
        let h = self.y - self.geo.bottom - s;
        if h <= 0.0 {
            return false;
        }
        // The largest n with y - (n*leading + s) >= bottom - FUZZ, then check the part has no more lines.
        let mut cx = Cx { para: &self.para, m: &mut self.metrics };
        let mut n = 0usize;
        loop {
            let have = part.ensure(n + 1, &mut cx);
            if have <= n {
                return true;
            }
            n += 1;
            let y_after = self.y - (n as f64 * self.geo.leading + s);
            if y_after < self.geo.bottom - FUZZ {
                return false;
            }
        }
    }

    /// Place a part that fits (or is forced) at the current frame position (`Frame.add` + `drawPara`).
    fn place(&mut self, mut part: Part) {
        let s = self.space_before();
        let n = {
            let mut cx = Cx { para: &self.para, m: &mut self.metrics };
            part.all_lines(&mut cx)
        };
        let g = &self.geo;
        let height = n as f64 * g.leading;
        let bottom = self.y - (height + s);
        // drawPara's background/border rect: (leftIndent-bp, -bp, width-(li+ri)+2bp, height+2bp).
        let bp = g.border_padding;
        self.page.paragraph_boxes.push(ParagraphBox {
            x: (g.x + g.left_indent - bp) as f32,
            y: (g.page_h - (bottom + height + bp)) as f32,
            w: (g.avail_width - (g.left_indent + g.right_indent) + 2.0 * bp) as f32,
            h: (height + 2.0 * bp) as f32,
        });
        let style = LineStyle { first_indent: part.first_indent, justify_last: part.justify_last, n_lines: n };
        for (i, rec) in part.lines.into_iter().enumerate() {
            // paraFontSizeHeightOffset=1: the first baseline is fontSize below the paragraph top, then one
            // leading per line.
            let baseline_pdf = bottom + (height - g.font_size) - i as f64 * g.leading;
            let line = draw_line(rec, i, &style, g, &mut self.metrics, &mut self.stats, g.page_h - baseline_pdf);
            self.page.lines.push(line);
        }
        let old_y = self.y;
        self.y = bottom - g.space_after;
        self.prev_a_space = g.space_after;
        if self.y != old_y {
            self.at_top = false;
        }
        self.page_used = true;
    }

    /// `handle_flowable` for the pending part; false when the page is finished.
    fn handle(&mut self, mut part: Part) -> bool {
        if self.fits(&mut part) {
            self.place(part);
            return true;
        }
        let s = self.space_before();
        let h = self.y - self.geo.bottom - s;
        let lines_fit = if h > 0.0 { (h / self.geo.leading) as i64 } else { 0 };
        let fresh = !self.page_used;
        // allowOrphans=0: never split off a single first line.
        let mut s_lines = if lines_fit > 1 {
            lines_fit as usize
        } else if fresh {
            // reportlab raises LayoutError here (a page that holds less than two lines); we place one.
            1
        } else {
            self.part = Some(part);
            return false;
        };
        let mut n = {
            let mut cx = Cx { para: &self.para, m: &mut self.metrics };
            part.ensure(s_lines + 1, &mut cx)
        };
        if s_lines == 1 && n > 1 && part.lines[1].start == 0 {
            // Forced split of a paragraph opening with an empty line: P1 = FW[:0] would be empty and the
            // layout would not progress; take two lines (P1 then holds the empty line only).
            s_lines = 2;
            let mut cx = Cx { para: &self.para, m: &mut self.metrics };
            n = part.ensure(3, &mut cx);
        }
        if n <= s_lines {
            self.place(part);
            return true;
        }
        let (p1, p2) = {
            let sw = self.metrics.sw;
            let mut cx = Cx { para: &self.para, m: &mut self.metrics };
            part.split(s_lines, &mut cx, sw)
        };
        self.place(p1);
        self.part = Some(p2);
        true
    }

    fn new_page(&mut self) -> PageLayout {
        self.y = self.geo.top;
        self.at_top = true;
        self.prev_a_space = 0.0;
        self.page_used = false;
        std::mem::take(&mut self.page)
    }
}

impl Iterator for Layouter<'_> {
    type Item = PageLayout;

    fn next(&mut self) -> Option<PageLayout> {
        if self.done {
            return None;
        }
        loop {
            let part = match self.part.take() {
                Some(p) => p,
                None => match self.next_part() {
                    Some(p) => p,
                    None => {
                        self.done = true;
                        return Some(self.new_page());
                    }
                },
            };
            if !self.handle(part) {
                return Some(self.new_page());
            }
        }
    }
}

/// What drawing a line needs to know about its paragraph part.
struct LineStyle {
    first_indent: bool,
    justify_last: bool,
    n_lines: usize,
}

/// Position the glyphs of one line (`_leftDrawParaLine[X]`, `_centerDrawParaLine[X]`, …): the text is
/// drawn from the line origin with the PDF advances (widths as `stringWidth`), plus the word space `Tw`
/// on every code-32 character when the line is justified or overflows (`extraSpace < -1e-8`).
fn draw_line(
    rec: LineRec,
    index: usize,
    style: &LineStyle,
    g: &Geo,
    m: &mut Metrics,
    stats: &mut LayoutStats,
    baseline: f64,
) -> Line {
    let offset = if index == 0 && style.first_indent { g.first_line_indent } else { 0.0 };
    let extra = rec.extra_space;
    let nbsp = rec.text.chars().filter(|&c| c == '\u{A0}').count() as i64;
    let n_spaces = rec.word_count as i64 + nbsp - 1;
    let last = !style.justify_last && index + 1 == style.n_lines;
    let simple = extra > -1e-8 || n_spaces <= 0;
    let (shift, word_space) = match g.alignment {
        Alignment::Justify => {
            let simple =
                (rec.frag_line && rec.line_break) || (-1e-8 < extra && extra <= 1e-8) || (last && extra > -1e-8);
            if simple || n_spaces <= 0 {
                (0.0, 0.0)
            } else {
                (0.0, extra / n_spaces as f64)
            }
        }
        _ if !simple => (0.0, extra / n_spaces as f64),
        Alignment::Left => (0.0, 0.0),
        Alignment::Center => (0.5 * extra, 0.0),
        Alignment::Right => (extra, 0.0),
    };
    let x0 = g.x + g.left_indent + offset + shift;
    let mut advance = 0.0f64;
    let mut glyphs = Vec::with_capacity(rec.text.len());
    for c in rec.text.chars() {
        let info = m.info(c);
        stats.chars += 1;
        let w = m.k * info.units;
        if c == ' ' || c == '\u{A0}' {
            // reportlab draws both as code 32, the only code `Tw` applies to.
            advance += w + word_space;
            continue;
        }
        if info.glyph.missing {
            stats.missing_glyphs += 1;
        }
        glyphs.push(PlacedGlyph { glyph: info.glyph, x: (x0 + advance * g.hscale) as f32 });
        advance += w;
    }
    Line { baseline: baseline as f32, text: rec.text, glyphs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::font::Face;

    fn fonts() -> FontSet {
        FontSet::new(Face::bundled(), Vec::new())
    }

    fn pages(text: &str) -> Vec<Vec<String>> {
        let f = fonts();
        let cfg = RenderConfig::default();
        layout_pages(text, &cfg, &f).map(|p| p.lines.into_iter().map(|l| l.text).collect()).collect()
    }

    #[test]
    fn empty_text_has_no_pages() {
        assert!(pages("").is_empty());
    }

    #[test]
    fn only_newlines() {
        // reportlab: "\n" is one paragraph "<br/>" (a lone break frag: no lines), "\n\n" two empty lines.
        assert_eq!(pages("\n"), vec![Vec::<String>::new()]);
        assert_eq!(pages("\n\n"), vec![vec!["".to_string(), "".to_string()]]);
        let p = pages(&"\n".repeat(200));
        assert!(p.len() >= 2 && p.iter().all(|pg| pg.iter().all(|l| l.is_empty())));
    }

    #[test]
    fn control_characters_are_kept_or_collapsed() {
        assert_eq!(pages("a\u{0}b\u{1}c d\u{1c}e\te"), vec![vec!["a\u{0}b\u{1}c d e e".to_string()]]);
        let f = fonts();
        let cfg = RenderConfig::default();
        let mut l = layout_pages("x\u{0}y", &cfg, &f);
        let page = l.next().unwrap();
        assert_eq!(page.lines[0].glyphs.len(), 3);
        assert!(page.lines[0].glyphs[1].glyph.missing);
        assert_eq!(l.stats().missing_glyphs, 1);
    }

    #[test]
    fn long_word_is_split_across_lines() {
        let p = pages(&format!("ab {}", "x".repeat(400)));
        let lines = &p[0];
        assert!(lines.len() >= 3, "{lines:?}");
        assert!(lines[0].starts_with("ab x"));
        assert_eq!(lines.iter().map(|l| l.replace("ab ", "").len()).sum::<usize>(), 400);
        // Multi-line paragraph (kind 1) path too.
        let p = pages(&format!("ab {}\nc", "x".repeat(400)));
        assert_eq!(p[0].last().map(String::as_str), Some("c"));
        assert_eq!(p[0].iter().map(|l| l.matches('x').count()).sum::<usize>(), 400);
    }

    #[test]
    fn baselines_and_positions() {
        let f = fonts();
        let cfg = RenderConfig::default();
        let page = layout_pages("Hello world\nsecond", &cfg, &f).next().unwrap();
        // Frame top 16 pt below the page top, first baseline fontSize (9) lower, then 10 pt per line.
        assert_eq!(page.lines[0].baseline, 25.0);
        assert_eq!(page.lines[1].baseline, 35.0);
        assert_eq!(page.lines[0].glyphs[0].x, 16.0);
        assert_eq!(page.lines[0].glyphs.len(), 10);
    }

    #[test]
    fn page_of_one_line_still_progresses() {
        // reportlab raises LayoutError when a page holds less than two lines; we place one line per page.
        let f = fonts();
        let cfg = RenderConfig::from_json_str(r#"{"page-size": "200,45"}"#, RenderConfig::default()).unwrap();
        let text = "\n\nfirst\nsecond line\n\nthird ".repeat(5);
        let pages: Vec<PageLayout> = layout_pages(&text, &cfg, &f).collect();
        let words: usize = pages.iter().flat_map(|p| &p.lines).map(|l| l.text.split_whitespace().count()).sum();
        assert_eq!(words, 5 * 4);
        assert!(pages.iter().all(|p| p.lines.len() <= 2));
    }

    #[test]
    fn huge_text_streams() {
        let line = "The quick brown fox jumps over the lazy dog, again and again, with some numbers 12345.";
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 20_000_000 {
            text.push_str(line);
            text.push_str(if i % 7 == 0 { "\n\n" } else { " " });
            i += 1;
        }
        let f = fonts();
        let cfg = RenderConfig::default();
        let t0 = std::time::Instant::now();
        let mut n = 0usize;
        let mut lines = 0usize;
        for p in layout_pages(&text, &cfg, &f) {
            assert!(p.lines.len() <= 81);
            lines += p.lines.len();
            n += 1;
        }
        let dt = t0.elapsed();
        assert!(n > 1000 && lines > n * 70, "{n} pages, {lines} lines");
        eprintln!("20 MB: {n} pages in {dt:?}");
    }

    #[test]
    fn huge_single_line_is_not_quadratic() {
        let text = "word ".repeat(400_000); // 2 MB, one paragraph
        let f = fonts();
        let cfg = RenderConfig::default();
        let t0 = std::time::Instant::now();
        let n = layout_pages(&text, &cfg, &f).count();
        assert!(n > 100);
        assert!(t0.elapsed().as_secs_f64() < 20.0);
    }
}
