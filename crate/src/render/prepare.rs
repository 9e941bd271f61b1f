//! Text preparation: what the reference pipeline does to a text before reportlab breaks it into lines,
//! done directly on characters instead of building and re-parsing markup.
//!
//! The reference (`tools/ref_render.py`, i.e. VTC-R1's `word2png_function`) does:
//! 1. remove U+00AD and U+200B;
//! 2. XML-escape `& < >`;
//! 3. replace each run of 2+ spaces by as many `&nbsp;`;
//! 4. split on `\n`, join each 30 consecutive lines with `<br/>` into one `Paragraph`.
//!
//! reportlab then (`Paragraph.__init__` → `cleanBlockQuotedText`) strips the paragraph markup and collapses
//! every whitespace run to one space (Python `str.split()` whitespace; `\xa0` never counts because
//! reportlab's `_wsc` set excludes it), and `ParaParser` (an `HTMLParser` with `convert_charrefs=False`)
//! turns the markup into *frags*: one per text chunk between markup items, one per entity (`&amp;` `&lt;`
//! `&gt;` `&nbsp;` each become a separate one-character frag), one per `<br/>` (a line-break frag).
//! Frag boundaries matter: words are assembled from frags and lines are drawn frag by frag.
//!
//! Here `& < >` are kept as literal characters (escaping only protected them from the parser) but still
//! form their own frag, and each space of a 2+ run becomes a one-character U+00A0 frag.
//!
//! Control characters: reportlab keeps every non-whitespace control character (NUL included) as an
//! ordinary character, measured with the font's default (.notdef) width and drawn as .notdef; we do the
//! same, so NUL never truncates or crashes anything. Whitespace controls (`\t \r \v \f \x1c-\x1f \x85`,
//! U+2028/2029 …) collapse like spaces.

/// Source lines per reportlab paragraph (the reference joins 30 lines with `<br/>`).
pub const LINES_PER_PARAGRAPH: usize = 30;

/// ASCII that `prepare` passes through as text: not whitespace and not markup (`&`, `<`, `>`).
#[inline]
fn is_plain_ascii(b: u8) -> bool {
    b.is_ascii() && !is_collapsible_ws(b as char) && !matches!(b, b'&' | b'<' | b'>')
}

/// The next character that is not removed, and its byte offset.
fn next_kept(s: &str) -> Option<(usize, char)> {
    s.char_indices().find(|&(_, c)| !is_removed(c))
}

/// Characters the reference deletes before anything else.
#[inline]
pub fn is_removed(c: char) -> bool {
    c == '\u{AD}' || c == '\u{200B}'
}

/// Whitespace that reportlab collapses (`cleanBlockQuotedText`): Python's `str.isspace()` set minus
/// U+00A0, which equals reportlab's `_wsc` minus U+200B (already removed).
#[inline]
pub fn is_collapsible_ws(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\u{0B}' | '\u{0C}' | '\r' | '\u{1C}'..='\u{1F}' | ' ' | '\u{85}' | '\u{1680}'
        | '\u{2000}'..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// Python `str.isspace()` (used by `str.strip()` in reportlab's `dumbSplit`).
#[inline]
pub fn is_py_space(c: char) -> bool {
    is_collapsible_ws(c) || c == '\u{A0}'
}

/// Unicode general category Zs (used by reportlab's CJK splitters to find a break point).
#[inline]
pub fn is_zs(c: char) -> bool {
    matches!(c, ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}')
}

/// reportlab `textsplit.ALL_CANNOT_START`: characters the CJK splitters never move to the next line.
pub fn cannot_start_line(c: char) -> bool {
    const ALL: &str = concat!(
        "!',.:;?!\")]\u{3001}\u{3002}\u{300d}\u{300f}\u{3011}\u{3015}\u{ff3d}\u{3011}\u{ff09}",
        "\u{3005}\u{2015}\u{3041}\u{3043}\u{3045}\u{3047}\u{3049}\u{3063}\u{3083}\u{3085}\u{3087}\u{308e}\u{30a1}\u{30a3}",
        "\u{30a5}\u{30a7}\u{30a9}\u{30c3}\u{30e3}\u{30e5}\u{30e7}\u{30ee}\u{30fc}\u{30f5}\u{30f6}",
        "\u{309b}\u{309c}\u{30fb}\u{30fd}\u{30fe}\u{309d}\u{309e}\u{2015}\u{2010}\u{b0}\u{2032}\u{2033}\u{2103}\u{ffe0}\u{ff05}\u{2030}",
    );
    ALL.contains(c)
}

/// The reference switches the whole text to `wordWrap="CJK"` when it contains any U+4E00–U+9FFF.
pub fn is_cjk_text(text: &str) -> bool {
    text.chars().any(|c| ('\u{4E00}'..='\u{9FFF}').contains(&c))
}

/// The source text of each paragraph: 30 `\n`-separated lines, borrowed from the text (`str.split("\n")`
/// semantics: a trailing `\n` yields a final empty line, the empty text one empty paragraph).
pub struct Paragraphs<'a> {
    rest: Option<&'a str>,
}

impl<'a> Paragraphs<'a> {
    pub fn new(text: &'a str) -> Self {
        Paragraphs { rest: Some(text) }
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let mut newlines = 0;
        for (i, b) in rest.bytes().enumerate() {
            if b == b'\n' {
                newlines += 1;
                if newlines == LINES_PER_PARAGRAPH {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(&rest[..i]);
                }
            }
        }
        self.rest = None;
        Some(rest)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragKind {
    /// A text chunk between markup items.
    Text,
    /// One character that came from an entity (`& < >` or one U+00A0 of a space run).
    Entity,
    /// `<br/>`.
    Break,
}

/// A reportlab frag: a byte range of `PreparedPara::text` (empty for breaks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frag {
    pub start: u32,
    pub end: u32,
    pub kind: FragKind,
}

/// One paragraph after preparation: the text reportlab's frags hold (whitespace collapsed, nbsp runs,
/// literal `& < >`), and the frags as ranges of it.
#[derive(Default, Debug, Clone)]
pub struct PreparedPara {
    pub text: String,
    pub frags: Vec<Frag>,
}

impl PreparedPara {
    pub fn frag_text(&self, f: &Frag) -> &str {
        &self.text[f.start as usize..f.end as usize]
    }

    /// Prepare the source text of one paragraph (its lines separated by `\n`), reusing the buffers.
    pub fn prepare(&mut self, src: &str) {
        self.text.clear();
        self.text.reserve(src.len()); // collapsing only shrinks; `&` `<` `>` stay one character each
        self.frags.clear();
        let mut ws_pending = false; // a collapsible whitespace run is open
        let mut i = 0;
        while i < src.len() {
            // Plain ASCII (no whitespace, no markup) is copied a run at a time: most text is.
            let plain = src.as_bytes()[i..].iter().position(|&b| !is_plain_ascii(b)).unwrap_or(src.len() - i);
            if plain > 0 {
                self.flush_ws(&mut ws_pending);
                self.push_text(&src[i..i + plain]);
                i += plain;
                continue;
            }
            let c = src[i..].chars().next().expect("at a char boundary");
            i += c.len_utf8();
            if is_removed(c) {
                continue;
            }
            if c == ' ' {
                // Step 3 of the reference: a run of 2+ spaces becomes that many &nbsp; (after removals).
                let mut run = 1usize;
                while let Some(at) = next_kept(&src[i..]).filter(|&(_, c)| c == ' ').map(|(at, _)| at) {
                    i += at + 1;
                    run += 1;
                }
                if run == 1 {
                    ws_pending = true;
                } else {
                    self.flush_ws(&mut ws_pending);
                    for _ in 0..run {
                        self.push_entity('\u{A0}');
                    }
                }
            } else if c == '\n' {
                self.flush_ws(&mut ws_pending);
                let at = self.text.len() as u32;
                self.frags.push(Frag { start: at, end: at, kind: FragKind::Break });
            } else if is_collapsible_ws(c) {
                ws_pending = true;
            } else if c == '&' || c == '<' || c == '>' {
                self.flush_ws(&mut ws_pending);
                self.push_entity(c);
            } else {
                self.flush_ws(&mut ws_pending);
                self.push_text(c.encode_utf8(&mut [0; 4]));
            }
        }
        // A trailing whitespace run is stripped (`cleanBlockQuotedText` strips the paragraph).
    }

    /// Emit one collapsed space for an open whitespace run, unless it leads the paragraph (stripped).
    fn flush_ws(&mut self, ws_pending: &mut bool) {
        if std::mem::take(ws_pending) && !self.frags.is_empty() {
            self.push_text(" ");
        }
    }

    fn push_text(&mut self, t: &str) {
        let start = self.text.len() as u32;
        self.text.push_str(t);
        let end = self.text.len() as u32;
        match self.frags.last_mut() {
            Some(f) if f.kind == FragKind::Text => f.end = end,
            _ => self.frags.push(Frag { start, end, kind: FragKind::Text }),
        }
    }

    fn push_entity(&mut self, c: char) {
        let start = self.text.len() as u32;
        self.text.push(c);
        self.frags.push(Frag { start, end: self.text.len() as u32, kind: FragKind::Entity });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frags(src: &str) -> Vec<(String, FragKind)> {
        let mut p = PreparedPara::default();
        p.prepare(src);
        p.frags.iter().map(|f| (p.frag_text(f).to_string(), f.kind)).collect()
    }

    #[test]
    fn paragraphs_are_30_lines() {
        let text: String = (0..65).map(|i| format!("l{i}\n")).collect();
        let paras: Vec<&str> = Paragraphs::new(&text).collect();
        assert_eq!(paras.len(), 3);
        assert!(paras[0].starts_with("l0\n") && paras[0].ends_with("l29"));
        assert!(paras[1].starts_with("l30\n") && paras[1].ends_with("l59"));
        assert_eq!(paras[2], "l60\nl61\nl62\nl63\nl64\n");
        assert_eq!(Paragraphs::new("").collect::<Vec<_>>(), vec![""]);
        let thirty: String = (0..30).map(|i| format!("{i}\n")).collect();
        assert_eq!(Paragraphs::new(&thirty).last(), Some(""));
    }

    #[test]
    fn whitespace_entities_and_breaks() {
        use FragKind::*;
        assert_eq!(
            frags(" \ta\t\r b  c&d\n\tx \u{ad} y "),
            vec![
                ("a b".into(), Text),
                ("\u{a0}".into(), Entity),
                ("\u{a0}".into(), Entity),
                ("c".into(), Text),
                ("&".into(), Entity),
                ("d".into(), Text),
                ("".into(), Break),
                (" x".into(), Text),
                ("\u{a0}".into(), Entity),
                ("\u{a0}".into(), Entity),
                ("y".into(), Text),
            ]
        );
        assert_eq!(frags("a\u{0}b\u{1c}c"), vec![("a\u{0}b c".into(), Text)]);
        assert!(frags("  \t ").iter().all(|(_, k)| *k == Entity) && frags("\t").is_empty());
    }
}
