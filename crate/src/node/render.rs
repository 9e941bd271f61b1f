//! JS bindings of the renderer: `NativeRenderer` with async `render`, `layout` and `renderBatch`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use napi::bindgen_prelude::{AbortSignal, AsyncTask, Buffer};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Task};
use napi_derive::napi;

use super::{guarded, pixel_bytes};
use crate::error::Error;
use crate::render::batch::{render_batch, BatchOptions, BatchProgress, PageFormat, TextResult};
use crate::render::png::{encode_png, PngCompression};
use crate::render::{Channels, Page, RenderConfig, RenderStats, Renderer};

#[napi(object)]
pub struct RendererOptions {
    /// A named preset: `vtc-r1` (default) or `glyph` (needs `fontPath`).
    pub preset: Option<String>,
    /// A VTC-R1/Glyph render config as JSON text; its keys override the preset's.
    pub config_json: Option<String>,
    /// Overrides the config's `font-path`.
    pub font_path: Option<String>,
    /// Font files tried in order for characters the main font lacks (for example a CJK font).
    pub fallback_fonts: Option<Vec<String>>,
}

#[napi(object)]
pub struct RenderOptions {
    /// 1 (grey) or 3 (RGB, default).
    pub channels: Option<u32>,
    /// Also encode each page as PNG.
    pub png: Option<bool>,
    /// `none` | `fast` (default) | `balanced` | `best`.
    pub png_compression: Option<String>,
    /// `render` only: the most pages it returns (default 1000); a longer text is an error once the limit is
    /// passed, since every page is held in memory (`stream` has no limit).
    pub max_pages: Option<u32>,
}

/// `render`'s default page limit (`maxPages`): 1,000 RGB pages of the `vtc-r1` preset are 1.5 GB of pixels.
pub const DEFAULT_MAX_PAGES: u32 = 1000;

#[napi(object)]
pub struct NativePage {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Buffer,
    pub png: Option<Buffer>,
}

#[napi(object)]
pub struct NativeRenderResult {
    pub pages: Vec<NativePage>,
    pub chars: u32,
    pub missing_glyphs: u32,
}

#[napi(object)]
pub struct BatchItem {
    pub id: String,
    pub text: String,
}

#[napi(object)]
pub struct NativeBatchOptions {
    /// Write pages to this directory as `<id>_page_<NNN>.<png|pgm|ppm>`.
    pub out_dir: Option<String>,
    /// `png` (default) or `raw` (uncompressed PGM/PPM).
    pub format: Option<String>,
    pub png_compression: Option<String>,
    /// 1 or 3; default grey when the config's colours are grey (same pixels, a third of the bytes).
    pub channels: Option<u32>,
    /// Worker threads (default: all cores).
    pub threads: Option<u32>,
    /// Return the pages' pixels in the result as well.
    pub keep_pages: Option<bool>,
}

#[napi(object)]
pub struct NativeBatchProgress {
    pub texts_done: u32,
    pub texts_total: u32,
    pub pages_done: u32,
}

#[napi(object)]
pub struct NativeTextResult {
    pub id: String,
    pub chars: u32,
    pub missing_glyphs: u32,
    pub widths: Vec<u32>,
    pub heights: Vec<u32>,
    pub files: Vec<String>,
    pub pages: Vec<NativePage>,
    pub error: Option<String>,
}

/// A loaded renderer (config + fonts), shared by every call made through it.
#[napi]
pub struct NativeRenderer {
    inner: Arc<Renderer>,
}

#[napi]
impl NativeRenderer {
    #[napi(constructor)]
    pub fn new(options: Option<RendererOptions>) -> napi::Result<Self> {
        guarded(|| {
            let o = options.unwrap_or(RendererOptions { preset: None, config_json: None, font_path: None, fallback_fonts: None });
            let font_path = o.font_path.map(PathBuf::from);
            let mut config = RenderConfig::preset(o.preset.as_deref().unwrap_or("vtc-r1"), font_path.clone())?;
            if let Some(json) = &o.config_json {
                config = RenderConfig::from_json_str(json, config)?;
                if font_path.is_some() {
                    config.font_path = font_path;
                }
            }
            let fallbacks: Vec<PathBuf> = o.fallback_fonts.unwrap_or_default().into_iter().map(PathBuf::from).collect();
            Ok(NativeRenderer { inner: Arc::new(Renderer::new(config, &fallbacks)?) })
        })
    }

    /// Renders one text into pages (off the JS thread).
    #[napi(ts_return_type = "Promise<NativeRenderResult>")]
    pub fn render(&self, text: String, options: Option<RenderOptions>, signal: Option<AbortSignal>) -> napi::Result<AsyncTask<RenderTask>> {
        let o = options.unwrap_or(RenderOptions { channels: None, png: None, png_compression: None, max_pages: None });
        let png = match o.png.unwrap_or(false) {
            true => Some(guarded(|| PngCompression::parse(o.png_compression.as_deref().unwrap_or("fast")))?),
            false => None,
        };
        let max_pages = match o.max_pages.unwrap_or(DEFAULT_MAX_PAGES) {
            0 => return guarded(|| Err(Error::invalid("maxPages", "must be at least 1"))),
            n => n as usize,
        };
        // The signal cancels a task that has not started; one that runs stops between pages through `cancel`.
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(s) = &signal {
            let flag = cancel.clone();
            s.on_abort(move || flag.store(true, Ordering::Relaxed));
        }
        let task = RenderTask { renderer: self.inner.clone(), text, channels: channels(o.channels)?, png, max_pages, cancel };
        Ok(AsyncTask::with_optional_signal(task, signal))
    }

    /// Pages of one text, one at a time: a background thread renders at most two pages ahead of the
    /// reader, so memory stays bounded for any text length.
    #[napi]
    pub fn stream(&self, text: String, options: Option<RenderOptions>) -> napi::Result<PageStream> {
        let o = options.unwrap_or(RenderOptions { channels: None, png: None, png_compression: None, max_pages: None });
        let png = match o.png.unwrap_or(false) {
            true => Some(guarded(|| PngCompression::parse(o.png_compression.as_deref().unwrap_or("fast")))?),
            false => None,
        };
        let channels = channels(o.channels)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<crate::Result<(Page, Option<Vec<u8>>)>>(2);
        let renderer = self.inner.clone();
        std::thread::Builder::new()
            .name("vtc-r1-page-stream".into())
            .spawn(move || {
                let result = crate::error::catch_panic(|| {
                    for page in renderer.pages(&text, channels) {
                        let png = png.map(|level| encode_png(&page, level)).transpose()?;
                        // The reader went away: stop rendering.
                        if tx.send(Ok((page, png))).is_err() {
                            return Ok(());
                        }
                    }
                    Ok(())
                });
                if let Err(e) = result {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| napi::Error::from_reason(format!("cannot start the page thread: {e}")))?;
        Ok(PageStream { rx: Arc::new(std::sync::Mutex::new(Some(rx))) })
    }

    /// The lines of each page, as the reference `layout.jsonl` lists them (off the JS thread).
    #[napi(ts_return_type = "Promise<string[][]>")]
    pub fn layout(&self, text: String, signal: Option<AbortSignal>) -> AsyncTask<LayoutTask> {
        AsyncTask::with_optional_signal(LayoutTask { renderer: self.inner.clone(), text }, signal)
    }

    /// Renders many texts in parallel on all cores; `onProgress` is called after each text.
    #[napi(ts_return_type = "Promise<NativeTextResult[]>")]
    pub fn render_batch(
        &self,
        items: Vec<BatchItem>,
        options: Option<NativeBatchOptions>,
        #[napi(ts_arg_type = "((progress: NativeBatchProgress) => void) | undefined | null")] on_progress: Option<
            ThreadsafeFunction<NativeBatchProgress, (), NativeBatchProgress, Status, false>,
        >,
        signal: Option<AbortSignal>,
    ) -> napi::Result<AsyncTask<BatchTask>> {
        let o = options.unwrap_or(NativeBatchOptions {
            out_dir: None,
            format: None,
            png_compression: None,
            channels: None,
            threads: None,
            keep_pages: None,
        });
        let format = match o.format.as_deref().unwrap_or("png") {
            "png" => PageFormat::Png,
            "raw" => PageFormat::Raw,
            other => return guarded(|| Err(Error::invalid("format", format!("unknown page format {other:?}; allowed: png, raw")))),
        };
        let opts = BatchOptions {
            out_dir: o.out_dir.map(PathBuf::from),
            format,
            png_compression: guarded(|| PngCompression::parse(o.png_compression.as_deref().unwrap_or("fast")))?,
            channels: o.channels.map(|c| channels(Some(c))).transpose()?,
            threads: o.threads.map(|t| t as usize),
            keep_pages: o.keep_pages.unwrap_or(false),
        };
        let cancel = Arc::new(AtomicBool::new(false));
        if let Some(s) = &signal {
            let flag = cancel.clone();
            s.on_abort(move || flag.store(true, Ordering::Relaxed));
        }
        let items = items.into_iter().map(|i| (i.id, i.text)).collect();
        let task = BatchTask { renderer: self.inner.clone(), items, opts, on_progress, cancel };
        Ok(AsyncTask::with_optional_signal(task, signal))
    }
}

fn channels(c: Option<u32>) -> napi::Result<Channels> {
    match c.unwrap_or(3) {
        1 => Ok(Channels::Grey),
        3 => Ok(Channels::Rgb),
        other => guarded(|| Err(Error::invalid("channels", format!("{other} is not supported; use 1 (grey) or 3 (RGB)")))),
    }
}

fn js_page(page: Page, png: Option<Vec<u8>>) -> NativePage {
    NativePage {
        width: page.width as u32,
        height: page.height as u32,
        channels: page.channels as u32,
        data: Buffer::from(page.data),
        png: png.map(Buffer::from),
    }
}

pub struct RenderTask {
    renderer: Arc<Renderer>,
    text: String,
    channels: Channels,
    png: Option<PngCompression>,
    max_pages: usize,
    cancel: Arc<AtomicBool>,
}

impl Task for RenderTask {
    type Output = (Vec<(Page, Option<Vec<u8>>)>, RenderStats);
    type JsValue = NativeRenderResult;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| {
            let mut it = self.renderer.pages(&self.text, self.channels);
            let mut pages = Vec::new();
            for p in it.by_ref() {
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled);
                }
                if pages.len() == self.max_pages {
                    let mb = (p.data.len() * (self.max_pages + 1)) as f64 / 1e6;
                    return Err(Error::invalid(
                        "maxPages",
                        format!(
                            "the text renders to more than {} pages, {mb:.0} MB of pixels and growing; raise maxPages, or take the \
                             pages one at a time with renderer.pages(text) or write them with renderBatch({{ outDir }}), \
                             which hold at most two pages",
                            self.max_pages
                        ),
                    ));
                }
                let png = self.png.map(|level| encode_png(&p, level)).transpose()?;
                pages.push((p, png));
            }
            Ok((pages, it.stats()))
        })
    }

    fn resolve(&mut self, _env: Env, (pages, stats): Self::Output) -> napi::Result<Self::JsValue> {
        Ok(NativeRenderResult {
            pages: pages.into_iter().map(|(p, png)| js_page(p, png)).collect(),
            chars: stats.chars as u32,
            missing_glyphs: stats.missing_glyphs as u32,
        })
    }
}

pub struct LayoutTask {
    renderer: Arc<Renderer>,
    text: String,
}

impl Task for LayoutTask {
    type Output = Vec<Vec<String>>;
    type JsValue = Vec<Vec<String>>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| Ok(self.renderer.layout(&self.text)))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output)
    }
}

pub struct BatchTask {
    renderer: Arc<Renderer>,
    items: Vec<(String, String)>,
    opts: BatchOptions,
    on_progress: Option<ThreadsafeFunction<NativeBatchProgress, (), NativeBatchProgress, Status, false>>,
    cancel: Arc<AtomicBool>,
}

impl Task for BatchTask {
    type Output = Vec<TextResult>;
    type JsValue = Vec<NativeTextResult>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let on_progress = self.on_progress.as_ref();
        let report = |p: BatchProgress| {
            if let Some(f) = on_progress {
                f.call(
                    NativeBatchProgress { texts_done: p.texts_done as u32, texts_total: p.texts_total as u32, pages_done: p.pages_done as u32 },
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        };
        guarded(|| render_batch(&self.renderer, &self.items, &self.opts, &report, &self.cancel))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output
            .into_iter()
            .map(|r| NativeTextResult {
                id: r.id,
                chars: r.chars as u32,
                missing_glyphs: r.missing_glyphs as u32,
                widths: r.page_sizes.iter().map(|s| s.0 as u32).collect(),
                heights: r.page_sizes.iter().map(|s| s.1 as u32).collect(),
                files: r.files.iter().map(|f| f.to_string_lossy().into_owned()).collect(),
                pages: r.pages.into_iter().map(|p| js_page(p, None)).collect(),
                error: r.error,
            })
            .collect())
    }
}

/// PNG's largest image side.
const MAX_PNG_SIDE: u32 = (1 << 31) - 1;

/// Encodes raw pixels as PNG (off the JS thread).
#[napi(ts_return_type = "Promise<Buffer>")]
pub fn encode_png_async(data: Buffer, width: u32, height: u32, channels: u32, compression: Option<String>) -> napi::Result<AsyncTask<PngTask>> {
    let level = guarded(|| PngCompression::parse(compression.as_deref().unwrap_or("fast")))?;
    if !(channels == 1 || channels == 3) {
        return guarded(|| Err(Error::invalid("channels", format!("{channels}: expected 1 (gray) or 3 (RGB)"))));
    }
    if width == 0 || height == 0 || width > MAX_PNG_SIDE || height > MAX_PNG_SIDE {
        return guarded(|| Err(Error::invalid("width, height", format!("{width}×{height}: each side must be 1 to {MAX_PNG_SIDE} pixels (PNG)"))));
    }
    if pixel_bytes(width, height, channels) != Some(data.len()) {
        return guarded(|| Err(Error::invalid("data", format!("{} bytes do not hold {width}×{height}×{channels} pixels", data.len()))));
    }
    let page = Page { width: width as usize, height: height as usize, channels: channels as usize, data: data.to_vec() };
    Ok(AsyncTask::new(PngTask { page, level }))
}

pub struct PngTask {
    page: Page,
    level: PngCompression,
}

impl Task for PngTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        guarded(|| encode_png(&self.page, self.level))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(Buffer::from(output))
    }
}

type PageReceiver = std::sync::mpsc::Receiver<crate::Result<(Page, Option<Vec<u8>>)>>;

/// The reading end of `NativeRenderer.stream`.
#[napi]
pub struct PageStream {
    rx: Arc<std::sync::Mutex<Option<PageReceiver>>>,
}

#[napi]
impl PageStream {
    /// The next page, or `null` after the last one.
    #[napi(ts_return_type = "Promise<NativePage | null>")]
    pub fn next(&self) -> AsyncTask<NextPageTask> {
        AsyncTask::new(NextPageTask { rx: self.rx.clone() })
    }

    /// Stops rendering; later `next()` calls return `null`.
    #[napi]
    pub fn close(&self) {
        if let Ok(mut rx) = self.rx.lock() {
            *rx = None;
        }
    }
}

pub struct NextPageTask {
    rx: Arc<std::sync::Mutex<Option<PageReceiver>>>,
}

impl Task for NextPageTask {
    type Output = Option<(Page, Option<Vec<u8>>)>;
    type JsValue = Option<NativePage>;

    fn compute(&mut self) -> napi::Result<Self::Output> {
        let guard = self.rx.lock().map_err(|_| napi::Error::from_reason("page stream poisoned"))?;
        match guard.as_ref().map(|rx| rx.recv()) {
            None | Some(Err(_)) => Ok(None),
            Some(Ok(item)) => item.map(Some).map_err(super::to_napi),
        }
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> napi::Result<Self::JsValue> {
        Ok(output.map(|(p, png)| js_page(p, png)))
    }
}
