//! Render configuration in the VTC-R1 / Glyph JSON format (`config_en.json`), with presets.
//!
//! Users hand us their own config files, so every key of the reference format is accepted, unknown keys
//! are rejected with the list of allowed ones, and each bad value is reported with its key.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    Left,
    Center,
    Right,
    Justify,
}

/// Colours are RGB bytes.
pub type Rgb = [u8; 3];

#[derive(Clone, Debug, PartialEq)]
pub struct RenderConfig {
    /// Page size in points.
    pub page_width: f32,
    pub page_height: f32,
    pub dpi: f32,
    pub margin_x: f32,
    pub margin_y: f32,
    /// `None`: the bundled DejaVu Sans.
    pub font_path: Option<PathBuf>,
    pub font_size: f32,
    pub line_height: f32,
    pub font_color: Rgb,
    pub alignment: Alignment,
    pub horizontal_scale: f32,
    pub first_line_indent: f32,
    pub left_indent: f32,
    pub right_indent: f32,
    pub space_after: f32,
    pub space_before: f32,
    pub border_width: f32,
    pub border_padding: f32,
    pub border_color: Option<Rgb>,
    pub page_bg_color: Rgb,
    pub para_bg_color: Rgb,
    pub auto_crop_width: bool,
    pub auto_crop_last_page: bool,
    /// Markup that joins the lines of one paragraph (reportlab `<br/>`).
    pub newline_markup: String,
}

/// Every key of the reference format, in its documentation order.
pub const CONFIG_KEYS: &[&str] = &[
    "page-size",
    "dpi",
    "margin-x",
    "margin-y",
    "font-path",
    "font-size",
    "line-height",
    "font-color",
    "alignment",
    "horizontal-scale",
    "first-line-indent",
    "left-indent",
    "right-indent",
    "space-after",
    "space-before",
    "border-width",
    "border-padding",
    "page-bg-color",
    "para-bg-color",
    "auto-crop-width",
    "auto-crop-last-page",
    "newline-markup",
    "para-border-color",
];

pub const PRESETS: &[&str] = &["vtc-r1", "glyph"];

impl Default for RenderConfig {
    /// VTC-R1's `evaluation/config_en.json`.
    fn default() -> Self {
        RenderConfig {
            page_width: 595.0,
            page_height: 842.0,
            dpi: 72.0,
            margin_x: 10.0,
            margin_y: 10.0,
            font_path: None,
            font_size: 9.0,
            line_height: 10.0,
            font_color: [0, 0, 0],
            alignment: Alignment::Left,
            horizontal_scale: 1.0,
            first_line_indent: 0.0,
            left_indent: 0.0,
            right_indent: 0.0,
            space_after: 0.0,
            space_before: 0.0,
            border_width: 0.0,
            border_padding: 0.0,
            border_color: None,
            page_bg_color: [255, 255, 255],
            para_bg_color: [255, 255, 255],
            auto_crop_width: true,
            auto_crop_last_page: true,
            newline_markup: "<br/>".into(),
        }
    }
}

impl RenderConfig {
    /// A named preset. `glyph` has the VTC-R1 layout but Glyph's font (Verdana), which is not free to
    /// ship: the caller must supply its path.
    pub fn preset(name: &str, font_path: Option<PathBuf>) -> Result<RenderConfig> {
        match name {
            "vtc-r1" => Ok(RenderConfig { font_path, ..RenderConfig::default() }),
            "glyph" => {
                let path = font_path.ok_or_else(|| {
                    Error::config(
                        "font-path",
                        "the `glyph` preset renders with Verdana, which vtc-r1 cannot ship; pass the path of Verdana.ttf",
                    )
                })?;
                Ok(RenderConfig { font_path: Some(path), ..RenderConfig::default() })
            }
            other => Err(Error::invalid("preset", format!("unknown preset `{other}`; allowed: {}", PRESETS.join(", ")))),
        }
    }

    /// Parse a config JSON object, starting from `base` for the keys it does not set.
    pub fn from_json_str(json: &str, base: RenderConfig) -> Result<RenderConfig> {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid("config", format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(Error::invalid("config", "must be a JSON object of VTC-R1/Glyph render keys"));
        };
        Self::from_map(&map, base)
    }

    pub fn from_map(map: &Map<String, Value>, mut cfg: RenderConfig) -> Result<RenderConfig> {
        for (key, value) in map {
            let k = key.as_str();
            match k {
                "page-size" => {
                    let (w, h) = parse_page_size(value)?;
                    cfg.page_width = w;
                    cfg.page_height = h;
                }
                "dpi" => cfg.dpi = number(k, value, 1.0, 1200.0)?,
                "margin-x" => cfg.margin_x = number(k, value, 0.0, 10_000.0)?,
                "margin-y" => cfg.margin_y = number(k, value, 0.0, 10_000.0)?,
                "font-path" => {
                    let s = string(k, value)?;
                    cfg.font_path = if s.is_empty() { None } else { Some(PathBuf::from(s)) };
                }
                "font-size" => cfg.font_size = number(k, value, 1.0, 500.0)?,
                "line-height" => cfg.line_height = number(k, value, 1.0, 1000.0)?,
                "font-color" => cfg.font_color = color(k, value)?,
                "alignment" => cfg.alignment = alignment(value)?,
                "horizontal-scale" => cfg.horizontal_scale = number(k, value, 0.05, 20.0)?,
                "first-line-indent" => cfg.first_line_indent = number(k, value, -10_000.0, 10_000.0)?,
                "left-indent" => cfg.left_indent = number(k, value, 0.0, 10_000.0)?,
                "right-indent" => cfg.right_indent = number(k, value, 0.0, 10_000.0)?,
                "space-after" => cfg.space_after = number(k, value, 0.0, 10_000.0)?,
                "space-before" => cfg.space_before = number(k, value, 0.0, 10_000.0)?,
                "border-width" => cfg.border_width = number(k, value, 0.0, 1_000.0)?,
                "border-padding" => cfg.border_padding = number(k, value, 0.0, 1_000.0)?,
                "page-bg-color" => cfg.page_bg_color = color(k, value)?,
                "para-bg-color" => cfg.para_bg_color = color(k, value)?,
                "para-border-color" => {
                    cfg.border_color = if value.is_null() { None } else { Some(color(k, value)?) }
                }
                "auto-crop-width" => cfg.auto_crop_width = boolean(k, value)?,
                "auto-crop-last-page" => cfg.auto_crop_last_page = boolean(k, value)?,
                "newline-markup" => cfg.newline_markup = string(k, value)?.to_string(),
                _ => {
                    return Err(Error::UnknownConfigKey { key: key.clone(), allowed: CONFIG_KEYS.join(", ") })
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that hold across keys: the text box must have room for at least one character and one line.
    pub fn validate(&self) -> Result<()> {
        let (w, h) = self.text_box();
        if w - self.left_indent - self.right_indent < self.font_size {
            return Err(Error::config(
                "page-size",
                format!(
                    "page width {} minus margins and indents leaves {:.1} pt, less than one {} pt character",
                    self.page_width,
                    w - self.left_indent - self.right_indent,
                    self.font_size
                ),
            ));
        }
        if h < self.line_height {
            return Err(Error::config(
                "page-size",
                format!("page height {} minus margins leaves {h:.1} pt, less than one line of {} pt", self.page_height, self.line_height),
            ));
        }
        let pixels = self.page_pixels();
        if pixels.0 * pixels.1 > 20_000 * 20_000 {
            return Err(Error::config("dpi", format!("pages of {}×{} pixels are too large", pixels.0, pixels.1)));
        }
        Ok(())
    }

    /// The frame's text box in points: `SimpleDocTemplate` margins plus the frame's own 6 pt padding.
    pub fn text_box(&self) -> (f32, f32) {
        (self.page_width - 2.0 * self.margin_x - 12.0, self.page_height - 2.0 * self.margin_y - 12.0)
    }

    /// Page size in pixels at `dpi`, as pdftoppm rounds it.
    pub fn page_pixels(&self) -> (usize, usize) {
        let scale = self.dpi / 72.0;
        ((self.page_width * scale).ceil() as usize, (self.page_height * scale).ceil() as usize)
    }
}

fn parse_page_size(value: &Value) -> Result<(f32, f32)> {
    let parts: Vec<f64> = match value {
        Value::String(s) => s
            .split(',')
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::config("page-size", format!("expected \"width,height\" in points, got {s:?}")))?,
        Value::Array(a) => a
            .iter()
            .map(|v| v.as_f64())
            .collect::<Option<_>>()
            .ok_or_else(|| Error::config("page-size", "expected [width, height] numbers"))?,
        other => return Err(Error::config("page-size", format!("expected \"width,height\", got {other}"))),
    };
    match parts[..] {
        [w, h] if (10.0..=20_000.0).contains(&w) && (10.0..=20_000.0).contains(&h) => Ok((w as f32, h as f32)),
        [_, _] => Err(Error::config("page-size", "width and height must be between 10 and 20000 points")),
        _ => Err(Error::config("page-size", format!("expected two numbers \"width,height\", got {}", parts.len()))),
    }
}

fn number(key: &str, value: &Value, min: f64, max: f64) -> Result<f32> {
    // The reference configs sometimes write numbers as strings ("9"); accept both.
    let n = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .ok_or_else(|| Error::config(key, format!("expected a number, got {value}")))?;
    if !n.is_finite() || n < min || n > max {
        return Err(Error::config(key, format!("{n} is out of range [{min}, {max}]")));
    }
    Ok(n as f32)
}

fn string<'a>(key: &str, value: &'a Value) -> Result<&'a str> {
    value.as_str().ok_or_else(|| Error::config(key, format!("expected a string, got {value}")))
}

fn boolean(key: &str, value: &Value) -> Result<bool> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(Error::config(key, format!("expected true or false, got {value}"))),
    }
}

fn color(key: &str, value: &Value) -> Result<Rgb> {
    let s = string(key, value)?;
    let hex = s.strip_prefix('#').or_else(|| s.strip_prefix("0x")).unwrap_or(s);
    let bad = || Error::config(key, format!("expected a colour as \"#RRGGBB\", got {s:?}"));
    let expand = match hex.len() {
        6 => hex.to_string(),
        3 => hex.chars().flat_map(|c| [c, c]).collect(),
        _ => return Err(bad()),
    };
    let v = u32::from_str_radix(&expand, 16).map_err(|_| bad())?;
    Ok([(v >> 16) as u8, (v >> 8) as u8, v as u8])
}

fn alignment(value: &Value) -> Result<Alignment> {
    let s = string("alignment", value)?;
    match s.to_ascii_uppercase().as_str() {
        "LEFT" | "TA_LEFT" => Ok(Alignment::Left),
        "CENTER" | "CENTRE" | "TA_CENTER" => Ok(Alignment::Center),
        "RIGHT" | "TA_RIGHT" => Ok(Alignment::Right),
        "JUSTIFY" | "TA_JUSTIFY" => Ok(Alignment::Justify),
        _ => Err(Error::config("alignment", format!("unknown alignment {s:?}; allowed: LEFT, CENTER, RIGHT, JUSTIFY"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTC_R1_CONFIG: &str = r##"{"page-size": "595,842", "dpi": 72, "margin-x": 10, "margin-y": 10,
 "font-path": "DejaVuSans.ttf", "font-size": 9, "line-height": 10, "font-color": "#000000",
 "alignment": "LEFT", "horizontal-scale": 1.0, "first-line-indent": 0, "left-indent": 0, "right-indent": 0,
 "space-after": 0, "space-before": 0, "border-width": 0, "border-padding": 0,
 "page-bg-color": "#FFFFFF", "para-bg-color": "#FFFFFF", "auto-crop-width": true, "auto-crop-last-page": true}"##;

    #[test]
    fn reference_config_parses_to_the_default_layout() {
        let cfg = RenderConfig::from_json_str(VTC_R1_CONFIG, RenderConfig::default()).unwrap();
        assert_eq!(cfg.font_path.as_deref(), Some(std::path::Path::new("DejaVuSans.ttf")));
        assert_eq!(RenderConfig { font_path: None, ..cfg }, RenderConfig::default());
        assert_eq!(RenderConfig::default().text_box(), (563.0, 810.0));
    }

    #[test]
    fn unknown_key_is_named_with_the_allowed_ones() {
        let err = RenderConfig::from_json_str(r#"{"font-szie": 9}"#, RenderConfig::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`font-szie`") && msg.contains("font-size") && msg.contains("page-size"), "{msg}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, key) in [
            (r#"{"page-size": "595x842"}"#, "page-size"),
            (r#"{"dpi": -3}"#, "dpi"),
            (r##"{"font-color": "#12"}"##, "font-color"),
            (r#"{"alignment": "MIDDLE"}"#, "alignment"),
            (r#"{"auto-crop-width": 3}"#, "auto-crop-width"),
            (r#"{"page-size": "20,20"}"#, "page-size"),
        ] {
            let msg = RenderConfig::from_json_str(json, RenderConfig::default()).unwrap_err().to_string();
            assert!(msg.contains(&format!("`{key}`")), "{json}: {msg}");
        }
    }

    #[test]
    fn glyph_preset_needs_a_font_path() {
        let msg = RenderConfig::preset("glyph", None).unwrap_err().to_string();
        assert!(msg.contains("Verdana"), "{msg}");
        assert!(RenderConfig::preset("nope", None).unwrap_err().to_string().contains("vtc-r1, glyph"));
    }
}
