//! Image preprocessing for Qwen-VL style encoders, matching `Qwen2VLImageProcessor`: decode or take raw
//! pixels, convert to RGB, `smart_resize` to multiples of patch·merge, bicubic resample, rescale and
//! normalize, then cut into `[n_patches, C·T·P·P]` rows in 2×2 merge-block order with `grid_thw`.

pub mod resize;

use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::json_file::{read_json, Keys};

/// Largest decoded image accepted, in pixels (a 16K × 16K page); larger inputs are refused before
/// anything big is allocated.
pub const MAX_INPUT_PIXELS: u64 = 1 << 28;
/// Largest accepted side, in pixels.
pub const MAX_INPUT_SIDE: u32 = 1 << 16;

/// `preprocessor_config.json` values that shape the pixels. Each model family supplies the values its
/// checkpoints use; keys a file lacks keep them.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f32,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    /// Frames the pixel budget counts: GLM-4.1V's `smart_resize` compares `2·h·w` (the still image
    /// repeated over the temporal patch) with `min_pixels`/`max_pixels`; Qwen's compares `h·w` (1).
    pub budget_frames: usize,
    /// Scale an image with a side below the resize factor up to it first (GLM-4.1V in transformers ≥ 5;
    /// otherwise such a side is rounded like any other).
    pub upscale_small: bool,
    /// LLaMA-Factory's `image_max_pixels` (not a `preprocessor_config.json` key): resize an image larger
    /// than this many pixels down to it before the processor runs, as VTC-R1's training data was fed (see
    /// [`training_resize`]). `None`: the processor sees the image as given.
    pub image_max_pixels: Option<usize>,
}

impl PreprocessorConfig {
    /// Reads `preprocessor_config.json`; keys it lacks keep the values of `defaults`.
    pub fn from_file(path: &Path, defaults: &PreprocessorConfig) -> Result<Self> {
        Self::from_json(&read_json(path)?, path, defaults)
    }

    pub fn from_json(json: &Value, path: &Path, defaults: &PreprocessorConfig) -> Result<Self> {
        let k = Keys::new(path, json);
        let d = defaults;
        let uint = |keys: &[&str], default: usize, max: usize| k.usize_in(keys, Some(default), 1..=max);
        let rescale_factor = k.f64_in(&["rescale_factor"], Some(d.rescale_factor as f64), 0.0, 1.0)? as f32;
        let cfg = Self {
            min_pixels: uint(&["size.shortest_edge", "min_pixels"], d.min_pixels, 1 << 30)?,
            max_pixels: uint(&["size.longest_edge", "max_pixels"], d.max_pixels, 1 << 30)?,
            patch_size: uint(&["patch_size"], d.patch_size, 256)?,
            temporal_patch_size: uint(&["temporal_patch_size"], d.temporal_patch_size, 16)?,
            merge_size: uint(&["merge_size"], d.merge_size, 16)?,
            image_mean: k.f32s("image_mean")?.unwrap_or(d.image_mean),
            image_std: k.f32s("image_std")?.unwrap_or(d.image_std),
            rescale_factor,
            do_resize: k.bool_or(&["do_resize"], d.do_resize)?,
            do_rescale: k.bool_or(&["do_rescale"], d.do_rescale)?,
            do_normalize: k.bool_or(&["do_normalize"], d.do_normalize)?,
            budget_frames: d.budget_frames,
            upscale_small: d.upscale_small,
            image_max_pixels: d.image_max_pixels,
        };
        if cfg.min_pixels > cfg.max_pixels {
            return Err(k.err("size.shortest_edge", format!("min pixels {} exceed max pixels {}", cfg.min_pixels, cfg.max_pixels)));
        }
        if cfg.image_std.contains(&0.0) {
            return Err(k.err("image_std", "must be non-zero"));
        }
        Ok(cfg)
    }

    /// Resize granularity: one merged token covers `factor × factor` pixels.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Values per patch row: 3 · T · P · P.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }
}

/// An image to preprocess.
pub enum ImageInput<'a> {
    /// Interleaved 8-bit pixels, row-major, `channels` 1 (gray) or 3 (RGB).
    Raw { width: u32, height: u32, channels: u8, data: &'a [u8] },
    /// An encoded PNG or JPEG.
    Encoded(&'a [u8]),
    /// A PNG or JPEG file.
    File(&'a Path),
}

/// An 8-bit RGB image.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Loads any [`ImageInput`]; `name` labels errors (e.g. a file name or "image 2").
    pub fn load(input: &ImageInput, name: &str) -> Result<Self> {
        match *input {
            ImageInput::Raw { width, height, channels, data } => Self::from_raw(width, height, channels, data, name),
            ImageInput::Encoded(bytes) => Self::decode(bytes, name),
            ImageInput::File(path) => {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                Self::decode(&bytes, &path.display().to_string())
            }
        }
    }

    pub fn from_raw(width: u32, height: u32, channels: u8, data: &[u8], name: &str) -> Result<Self> {
        let bad = |message: String| Error::Image { name: name.to_string(), message };
        check_dims(width, height, name)?;
        if channels != 1 && channels != 3 {
            return Err(bad(format!("{channels} channels; expected 1 (gray) or 3 (RGB)")));
        }
        let (w, h) = (width as usize, height as usize);
        let expected = w * h * channels as usize;
        if data.len() != expected {
            return Err(bad(format!("{} bytes of pixels; {width}×{height}×{channels} needs {expected}", data.len())));
        }
        let data = if channels == 3 { data.to_vec() } else { data.iter().flat_map(|&g| [g, g, g]).collect() };
        Ok(Self { width: w, height: h, data })
    }

    /// Decodes PNG or JPEG bytes. Transparency is composited onto white, like transformers'
    /// `convert_to_rgb`.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        let bad = |message: String| Error::Image { name: name.to_string(), message };
        let (w, h) = encoded_dimensions(bytes, name)?;
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(format!("cannot read: {e}")))?;
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(MAX_INPUT_PIXELS * 8);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| bad(format!("cannot decode: {e}")))?;
        let data = if img.color().has_alpha() {
            img.to_rgba8()
                .pixels()
                .flat_map(|p| {
                    let a = p[3] as u32;
                    // src·a + white·(255 − a), rounded
                    let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                    [mix(p[0]), mix(p[1]), mix(p[2])]
                })
                .collect()
        } else {
            img.to_rgb8().into_raw()
        };
        Ok(Self { width: w as usize, height: h as usize, data })
    }
}

/// Width and height of an image from its header alone (no pixels decoded), checked against the limits.
pub fn image_dimensions(input: &ImageInput, name: &str) -> Result<(u32, u32)> {
    match *input {
        ImageInput::Raw { width, height, .. } => check_dims(width, height, name).map(|_| (width, height)),
        ImageInput::Encoded(bytes) => encoded_dimensions(bytes, name),
        ImageInput::File(path) => {
            let name = path.display().to_string();
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            encoded_dimensions_from(std::io::BufReader::new(file), &name)
        }
    }
}

fn encoded_dimensions(bytes: &[u8], name: &str) -> Result<(u32, u32)> {
    encoded_dimensions_from(std::io::Cursor::new(bytes), name)
}

fn encoded_dimensions_from<R: std::io::BufRead + std::io::Seek>(source: R, name: &str) -> Result<(u32, u32)> {
    let bad = |message: String| Error::Image { name: name.to_string(), message };
    let mut reader = image::ImageReader::new(source).with_guessed_format().map_err(|e| bad(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(bad("not a PNG or JPEG image".into()));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_INPUT_SIDE);
    limits.max_image_height = Some(MAX_INPUT_SIDE);
    limits.max_alloc = Some(MAX_INPUT_PIXELS * 4);
    reader.limits(limits);
    let (w, h) = reader.into_dimensions().map_err(|e| bad(format!("cannot decode: {e}")))?;
    check_dims(w, h, name)?;
    Ok((w, h))
}

fn check_dims(width: u32, height: u32, name: &str) -> Result<()> {
    let bad = |message: String| Error::Image { name: name.to_string(), message };
    if width == 0 || height == 0 {
        return Err(bad(format!("empty image ({width}×{height})")));
    }
    if width > MAX_INPUT_SIDE || height > MAX_INPUT_SIDE || width as u64 * height as u64 > MAX_INPUT_PIXELS {
        return Err(bad(format!("{width}×{height} is too large (limit {MAX_INPUT_SIDE} per side, {MAX_INPUT_PIXELS} pixels)")));
    }
    Ok(())
}

/// Target `(height, width)`: multiples of the resize factor with the area (times `budget_frames`) inside
/// `[min_pixels, max_pixels]` and the aspect ratio kept. Python's `round` (ties to even) is reproduced.
pub fn smart_resize(height: usize, width: usize, cfg: &PreprocessorConfig) -> Result<(usize, usize)> {
    if height == 0 || width == 0 {
        return Err(Error::invalid("image", format!("empty image ({width}×{height})")));
    }
    let f = cfg.factor() as f64;
    let (mut h, mut w) = (height as f64, width as f64);
    if cfg.upscale_small && (h < f || w < f) {
        let s = (f / h).max(f / w);
        // Python's int() truncates
        (h, w) = ((h * s).trunc(), (w * s).trunc());
    }
    if h.max(w) / h.min(w) > 200.0 {
        return Err(Error::invalid("image", format!("aspect ratio of {width}×{height} exceeds 200")));
    }
    let frames = cfg.budget_frames.max(1) as f64;
    let (min_pixels, max_pixels) = (cfg.min_pixels as f64, cfg.max_pixels as f64);
    let mut hb = (h / f).round_ties_even() * f;
    let mut wb = (w / f).round_ties_even() * f;
    if frames * hb * wb > max_pixels {
        let beta = (frames * h * w / max_pixels).sqrt();
        hb = f.max((h / beta / f).floor() * f);
        wb = f.max((w / beta / f).floor() * f);
    } else if frames * hb * wb < min_pixels {
        let beta = (min_pixels / (frames * h * w)).sqrt();
        hb = (h * beta / f).ceil() * f;
        wb = (w * beta / f).ceil() * f;
    }
    Ok((hb as usize, wb as usize))
}

/// One preprocessed image: rows of `pixel_values` and its patch grid.
#[derive(Debug, Clone)]
pub struct ProcessedImage {
    /// `[grid_t·grid_h·grid_w, 3·T·P·P]`, row-major.
    pub pixel_values: Vec<f32>,
    /// `(t, h, w)` in patches.
    pub grid_thw: [usize; 3],
    pub patch_dim: usize,
}

impl ProcessedImage {
    pub fn num_patches(&self) -> usize {
        self.grid_thw.iter().product()
    }
    /// Placeholder tokens this image takes in the prompt.
    pub fn num_tokens(&self, merge: usize) -> usize {
        self.num_patches() / (merge * merge)
    }
}

/// The size LLaMA-Factory's `_preprocess_image` (Qwen2-VL, Qwen3-VL and GLM-4.1V plugins) gives an image
/// before the processor, or `None` when it keeps it: over `max_pixels` pixels it shrinks to
/// `⌊w·s⌋ × ⌊h·s⌋` with `s = √(max_pixels / (w·h))`; under 32·32 pixels it grows the same way; a side
/// under 28 is then stretched to 28.
pub fn training_size(width: usize, height: usize, max_pixels: usize) -> Option<(usize, usize)> {
    const MIN_PIXELS: usize = 32 * 32;
    let (mut w, mut h) = (width, height);
    for (limit, applies) in [(max_pixels, w * h > max_pixels), (MIN_PIXELS, w * h < MIN_PIXELS)] {
        if applies {
            let s = (limit as f64 / (w * h) as f64).sqrt();
            (w, h) = ((w as f64 * s) as usize, (h as f64 * s) as usize);
        }
    }
    (w, h) = (w.max(28), h.max(28));
    ((w, h) != (width, height)).then_some((w, h))
}

/// `img` as LLaMA-Factory hands it to the processor when training with `image_max_pixels` (Pillow's
/// default bicubic resampling), or `None` when it is left as it is.
pub fn training_resize(img: &RgbImage, max_pixels: usize) -> Option<RgbImage> {
    let (w, h) = training_size(img.width, img.height, max_pixels)?;
    Some(RgbImage { width: w, height: h, data: resize::resize_bicubic(&img.data, img.width, img.height, 3, w, h) })
}

/// The `(height, width)` an image of `width × height` pixels (after any training resize) is resized to
/// before patchifying.
fn processed_size(width: usize, height: usize, cfg: &PreprocessorConfig) -> Result<(usize, usize)> {
    let factor = cfg.factor();
    let (h, w) = if cfg.do_resize { smart_resize(height, width, cfg)? } else { (height, width) };
    if h % factor != 0 || w % factor != 0 || h == 0 || w == 0 {
        return Err(Error::invalid("image", format!("{width}×{height} is not a multiple of {factor} (enable do_resize)")));
    }
    Ok((h, w))
}

/// Placeholder tokens an image of `width × height` pixels takes in the prompt (what
/// [`ProcessedImage::num_tokens`] gives after [`preprocess`]), without touching its pixels.
pub fn image_tokens(width: usize, height: usize, cfg: &PreprocessorConfig) -> Result<usize> {
    let (width, height) = cfg.image_max_pixels.and_then(|max| training_size(width, height, max)).unwrap_or((width, height));
    let (h, w) = processed_size(width, height, cfg)?;
    Ok((h / cfg.patch_size) * (w / cfg.patch_size) / (cfg.merge_size * cfg.merge_size))
}

/// Resizes, normalizes and patchifies one image.
pub fn preprocess(img: &RgbImage, cfg: &PreprocessorConfig) -> Result<ProcessedImage> {
    let resized = cfg.image_max_pixels.and_then(|max| training_resize(img, max));
    let img = resized.as_ref().unwrap_or(img);
    let (h, w) = processed_size(img.width, img.height, cfg)?;
    let pixels = if (h, w) == (img.height, img.width) {
        img.data.clone()
    } else {
        resize::resize_bicubic(&img.data, img.width, img.height, 3, w, h)
    };

    // Per-channel affine map u8 -> normalized value.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, out) in table.iter_mut().enumerate() {
            let mut x = v as f32;
            if cfg.do_rescale {
                x *= cfg.rescale_factor;
            }
            if cfg.do_normalize {
                x = (x - cfg.image_mean[c]) / cfg.image_std[c];
            }
            *out = x;
        }
    }

    let (p, t, m) = (cfg.patch_size, cfg.temporal_patch_size, cfg.merge_size);
    let (gh, gw) = (h / p, w / p);
    let patch_dim = cfg.patch_dim();
    let mut out = Vec::with_capacity(gh * gw * patch_dim);
    // Rows in block-major order; inside a row (channel, frame, y, x). A still image is repeated over
    // the temporal patch.
    for br in 0..gh / m {
        for bc in 0..gw / m {
            for ir in 0..m {
                for ic in 0..m {
                    let (y0, x0) = ((br * m + ir) * p, (bc * m + ic) * p);
                    for (c, table) in lut.iter().enumerate() {
                        for _frame in 0..t {
                            for y in y0..y0 + p {
                                let row = &pixels[(y * w + x0) * 3..(y * w + x0 + p) * 3];
                                out.extend(row.chunks_exact(3).map(|px| table[px[c] as usize]));
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ProcessedImage { pixel_values: out, grid_thw: [1, gh, gw], patch_dim })
}

/// Stacks preprocessed images into one `pixel_values` tensor and their grids.
pub fn to_tensor(images: &[ProcessedImage], device: &Device) -> Result<(Tensor, Vec<[usize; 3]>)> {
    let patch_dim = images.first().map(|i| i.patch_dim).unwrap_or(0);
    let rows: usize = images.iter().map(|i| i.num_patches()).sum();
    let mut data = Vec::with_capacity(rows * patch_dim);
    for img in images {
        if img.patch_dim != patch_dim {
            return Err(Error::invalid("images", "images preprocessed with different patch sizes"));
        }
        data.extend_from_slice(&img.pixel_values);
    }
    let t = Tensor::from_vec(data, (rows, patch_dim), device)?;
    Ok((t, images.iter().map(|i| i.grid_thw).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Qwen2-VL / Qwen3-VL geometry (patch 16, merge 2, budget counts one frame).
    fn qwen(min_pixels: usize, max_pixels: usize) -> PreprocessorConfig {
        PreprocessorConfig {
            min_pixels,
            max_pixels,
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_resize: true,
            do_rescale: true,
            do_normalize: true,
            budget_frames: 1,
            upscale_small: false,
            image_max_pixels: None,
        }
    }

    /// GLM-4.1V's geometry: patch 14, two frames counted in the budget, small images scaled up.
    fn glm(min_pixels: usize, max_pixels: usize) -> PreprocessorConfig {
        PreprocessorConfig { patch_size: 14, budget_frames: 2, upscale_small: true, ..qwen(min_pixels, max_pixels) }
    }

    #[test]
    fn smart_resize_matches_the_reference_examples() {
        let q = qwen(256 * 256, 4096 * 4096);
        assert_eq!(smart_resize(480, 640, &q).unwrap(), (480, 640));
        assert_eq!(smart_resize(100, 100, &q).unwrap(), (256, 256));
        assert_eq!(smart_resize(1080, 1920, &q).unwrap(), (1088, 1920));
        // ties go to even: 48/32 = 1.5 -> 2, 80/32 = 2.5 -> 2
        assert_eq!(smart_resize(48, 80, &qwen(1, 4096 * 4096)).unwrap(), (64, 64));
        assert!(smart_resize(10, 2100, &q).is_err());
    }

    #[test]
    fn glm_smart_resize_counts_two_frames_in_the_budget() {
        // spec/glm4v.md §5 examples (h×w in, max_pixels -> resized)
        for max in [47_040_000, 9_633_792, 11_760_000] {
            assert_eq!(smart_resize(842, 589, &glm(12544, max)).unwrap(), (840, 588));
            assert_eq!(smart_resize(480, 640, &glm(12544, max)).unwrap(), (476, 644));
            assert_eq!(smart_resize(100, 100, &glm(12544, max)).unwrap(), (112, 112));
            assert_eq!(smart_resize(1080, 1920, &glm(12544, max)).unwrap(), (1092, 1932));
        }
        assert_eq!(smart_resize(4000, 6000, &glm(12544, 47_040_000)).unwrap(), (3948, 5936));
        assert_eq!(smart_resize(4000, 6000, &glm(12544, 9_633_792)).unwrap(), (1792, 2688));
        // an image narrower than 28 px is scaled up first instead of refused
        assert_eq!(smart_resize(20, 100, &glm(12544, 47_040_000)).unwrap().0 % 28, 0);
    }

    #[test]
    fn training_size_follows_llamafactory() {
        // A VTC-R1 page (589×842) under image_max_pixels 262144: s = √(262144/495938) = 0.7270…
        assert_eq!(training_size(589, 842, 262_144), Some((428, 612)));
        assert_eq!(training_size(588, 842, 262_144), Some((427, 612)));
        assert_eq!(training_size(400, 600, 262_144), None);
        // tiny images grow to 32·32 pixels, then a side under 28 is stretched
        assert_eq!(training_size(8, 8, 262_144), Some((32, 32)));
        assert_eq!(training_size(200, 4, 262_144), Some((226, 28)));
    }

    #[test]
    fn patch_rows_are_block_major() {
        // 64×32 image (h×w), patch 16, merge 2: grid 4×2, rows ordered by 2×2 blocks.
        let (w, h) = (32usize, 64usize);
        let data: Vec<u8> = (0..h).flat_map(|y| (0..w).flat_map(move |x| [(y / 16 * 10 + x / 16) as u8, 0, 0])).collect();
        let img = RgbImage { width: w, height: h, data };
        let cfg = PreprocessorConfig { do_normalize: false, do_rescale: false, ..qwen(1, 4096 * 4096) };
        let out = preprocess(&img, &cfg).unwrap();
        assert_eq!(out.grid_thw, [1, 4, 2]);
        let firsts: Vec<f32> = out.pixel_values.chunks(out.patch_dim).map(|r| r[0]).collect();
        assert_eq!(firsts, vec![0., 1., 10., 11., 20., 21., 30., 31.]);
    }

    #[test]
    fn raw_input_is_validated() {
        assert!(RgbImage::from_raw(2, 2, 3, &[0; 11], "x").is_err());
        assert!(RgbImage::from_raw(2, 2, 2, &[0; 8], "x").is_err());
        assert!(RgbImage::from_raw(0, 2, 3, &[], "x").is_err());
        assert_eq!(RgbImage::from_raw(1, 1, 1, &[7], "x").unwrap().data, vec![7, 7, 7]);
        assert!(RgbImage::decode(b"definitely not an image", "junk").is_err());
    }
}
