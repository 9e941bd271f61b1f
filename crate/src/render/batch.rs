//! Many texts at once: rendered in parallel on all cores (rayon), pages optionally written to a directory
//! (atomically: a file is either complete or absent), with per-text results and progress reports.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use super::png::{encode_png, PngCompression};
use super::raster::{Channels, Page};
use super::Renderer;
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageFormat {
    Png,
    /// Uncompressed pixels as binary PGM (grey) or PPM (RGB): a short header with the size, then
    /// `width × height × channels` bytes.
    Raw,
}

pub struct BatchOptions {
    /// Where pages go as `<id>_page_<NNN>.png`; `None` keeps them in the result.
    pub out_dir: Option<PathBuf>,
    pub format: PageFormat,
    pub png_compression: PngCompression,
    /// `None`: the renderer's natural channels (grey for grey-on-white configs).
    pub channels: Option<Channels>,
    /// Worker threads; `None` = all cores.
    pub threads: Option<usize>,
    /// Return the pages (pixels) in the result, not just their sizes.
    pub keep_pages: bool,
}

/// The outcome for one text. A text that fails (for example an unwritable file) is reported here and
/// does not stop the batch.
#[derive(Debug, Default)]
pub struct TextResult {
    pub id: String,
    pub chars: usize,
    pub missing_glyphs: usize,
    /// (width, height) of each page, in pixels.
    pub page_sizes: Vec<(usize, usize)>,
    pub files: Vec<PathBuf>,
    pub pages: Vec<Page>,
    pub error: Option<String>,
}

#[derive(Clone, Copy, Debug)]
pub struct BatchProgress {
    pub texts_done: usize,
    pub texts_total: usize,
    pub pages_done: usize,
}

/// Renders every `(id, text)`; `progress` is called after each text from the worker threads;
/// setting `cancel` stops the batch between pages with `Error::Cancelled`.
pub fn render_batch(
    renderer: &Renderer,
    items: &[(String, String)],
    opts: &BatchOptions,
    progress: &(dyn Fn(BatchProgress) + Sync),
    cancel: &AtomicBool,
) -> Result<Vec<TextResult>> {
    let names = file_stems(items)?;
    if let Some(dir) = &opts.out_dir {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let texts_done = AtomicUsize::new(0);
    let pages_done = AtomicUsize::new(0);
    let run = || {
        items
            .par_iter()
            .zip(names.par_iter())
            .map(|((id, text), stem)| {
                let r = render_one(renderer, id, text, stem, opts, cancel, &pages_done);
                let done = texts_done.fetch_add(1, Ordering::Relaxed) + 1;
                progress(BatchProgress {
                    texts_done: done,
                    texts_total: items.len(),
                    pages_done: pages_done.load(Ordering::Relaxed),
                });
                r
            })
            .collect::<Result<Vec<_>>>()
    };
    match opts.threads {
        Some(n) => pool(n.max(1))?.install(run),
        None => run(),
    }
}

/// A worker pool of `threads` threads, kept for the life of the process: a fresh pool per batch would
/// start every batch on cold threads (their glyph memo and page buffers empty; ~3 ms per batch).
fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Internal(format!("thread pool: {e}")))?;
    Ok(pools.entry(threads).or_insert(Arc::new(p)).clone())
}

fn render_one(
    renderer: &Renderer,
    id: &str,
    text: &str,
    stem: &str,
    opts: &BatchOptions,
    cancel: &AtomicBool,
    pages_done: &AtomicUsize,
) -> Result<TextResult> {
    let mut result = TextResult { id: id.to_string(), ..Default::default() };
    let mut pages = renderer.pages(text, opts.channels.unwrap_or_else(|| renderer.natural_channels()));
    for page in pages.by_ref() {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        result.page_sizes.push((page.width, page.height));
        if let Some(dir) = &opts.out_dir {
            let n = result.page_sizes.len();
            match write_page(dir, stem, n, &page, opts) {
                Ok(path) => result.files.push(path),
                Err(e) => {
                    result.error = Some(e.to_string());
                    break;
                }
            }
        }
        if opts.keep_pages {
            result.pages.push(page);
        } else {
            super::raster::recycle(page.data);
        }
        pages_done.fetch_add(1, Ordering::Relaxed);
    }
    let stats = pages.stats();
    result.chars = stats.chars;
    result.missing_glyphs = stats.missing_glyphs;
    Ok(result)
}

fn write_page(dir: &Path, stem: &str, n: usize, page: &Page, opts: &BatchOptions) -> Result<PathBuf> {
    let path = |ext: &str| dir.join(format!("{stem}_page_{n:03}.{ext}"));
    match opts.format {
        PageFormat::Png => {
            let png = encode_png(page, opts.png_compression)?;
            let path = path("png");
            let written = write_atomic(&path, &png);
            super::png::recycle(png);
            written.map(|_| path)
        }
        PageFormat::Raw => {
            // binary PGM/PPM: the pixels as they are, behind a header that records the page size
            let (magic, ext) = if page.channels == 1 { ("P5", "pgm") } else { ("P6", "ppm") };
            let mut bytes = format!("{magic}\n{} {}\n255\n", page.width, page.height).into_bytes();
            bytes.extend_from_slice(&page.data);
            let path = path(ext);
            write_atomic(&path, &bytes).map(|_| path)
        }
    }
}

/// Writes through a temporary file in the same directory and renames it into place, so a crash or a
/// full disk never leaves a truncated page behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let res = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// File-name stems for the ids: characters outside `[A-Za-z0-9._-]` become `_`. Two ids that would
/// share a stem, or an empty id, are an error naming them (no page may overwrite another's).
fn file_stems(items: &[(String, String)]) -> Result<Vec<String>> {
    let mut seen = HashMap::with_capacity(items.len());
    items
        .iter()
        .map(|(id, _)| {
            if id.is_empty() {
                return Err(Error::invalid("id", "every text needs a non-empty id"));
            }
            let stem: String = id
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
                .collect();
            let stem = match stem.strip_prefix('.') {
                Some(rest) => format!("_{rest}"),
                None => stem,
            };
            if let Some(other) = seen.insert(stem.clone(), id.clone()) {
                return Err(Error::invalid("id", format!("ids {other:?} and {id:?} map to the same file name {stem:?}")));
            }
            Ok(stem)
        })
        .collect()
}
