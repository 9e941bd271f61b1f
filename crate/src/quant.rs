//! Quantized weights: the block types a decoder's linear weights can be stored in (ggml's, run by candle's
//! quantized matmul kernels), the type each weight gets, and the cache file that spares a second load the
//! quantization. The cache is a GGUF file written with candle's writer: our tensor names, and metadata naming
//! the source files it was made from, so a changed source or a truncated file is rebuilt, never trusted.

use std::borrow::Cow;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// A quantization a user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quantization {
    /// 8-bit blocks of 32 with one f16 scale (8.5 bits a weight).
    Q8_0,
    /// k-quants: 256-weight super-blocks (6.56, 5.5 and 4.5 bits a weight).
    Q6K,
    Q5K,
    Q4K,
    /// 4-bit blocks of 32 with one f16 scale (4.5 bits a weight).
    Q4_0,
}

impl Quantization {
    pub const ALL: [Quantization; 5] = [Quantization::Q8_0, Quantization::Q6K, Quantization::Q5K, Quantization::Q4K, Quantization::Q4_0];

    pub fn name(self) -> &'static str {
        match self {
            Quantization::Q8_0 => "q8_0",
            Quantization::Q6K => "q6k",
            Quantization::Q5K => "q5k",
            Quantization::Q4K => "q4k",
            Quantization::Q4_0 => "q4_0",
        }
    }

    /// Parses a name (`q8_0`, `q4k`, … ; `q4_k` is accepted too); an unknown one is an error listing the known.
    pub fn parse(name: &str) -> Result<Self> {
        let key = name.to_ascii_lowercase().replace("_k", "k");
        Self::ALL.into_iter().find(|q| q.name().replace("_k", "k") == key).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|q| q.name()).collect();
            Error::invalid("quantize", format!("unknown quantization {name:?}; known: {}", known.join(", ")))
        })
    }

    fn ggml(self) -> GgmlDType {
        match self {
            Quantization::Q8_0 => GgmlDType::Q8_0,
            Quantization::Q6K => GgmlDType::Q6K,
            Quantization::Q5K => GgmlDType::Q5K,
            Quantization::Q4K => GgmlDType::Q4K,
            Quantization::Q4_0 => GgmlDType::Q4_0,
        }
    }

    /// The block type a `[rows, cols]` weight gets, or `None` to keep it dense. k-quants need rows of a multiple
    /// of 256; a weight whose rows are not (GLM-4.1V's `down_proj` reads 13,696 values) gets a 32-value block
    /// type as llama.cpp chooses: q5_0 under q4k (5.5 bits a weight, against q8_0's 8.5), q8_0 under q5k and q6k.
    /// Rows that are not a multiple of 32 stay dense.
    pub fn block_type(self, cols: usize) -> Option<GgmlDType> {
        let want = self.ggml();
        if cols.is_multiple_of(want.block_size()) {
            return Some(want);
        }
        let fallback = if want == GgmlDType::Q4K { GgmlDType::Q5_0 } else { GgmlDType::Q8_0 };
        cols.is_multiple_of(fallback.block_size()).then_some(fallback)
    }
}

/// Bumped when what we write changes, so caches of older builds are rebuilt.
const CACHE_FORMAT: u32 = 3;

/// Quantized weights of one model for one quantization: taken from a valid cache file when there is one,
/// else quantized from the source tensors and written to the cache once the model is built.
pub struct QuantizedWeights {
    quantization: Quantization,
    path: PathBuf,
    /// What the cache must have been made from: source file names, sizes and modification times.
    source: String,
    /// The valid cache file, mapped.
    cached: Option<CacheFile>,
    /// Every quantized tensor of this load, to write to the cache when any of them was not in it.
    tensors: Mutex<Vec<(String, Arc<QTensor>)>>,
    quantized_now: std::sync::atomic::AtomicBool,
}

struct CacheFile {
    mmap: memmap2::Mmap,
    content: gguf_file::Content,
}

impl QuantizedWeights {
    /// Prepares quantization of the model whose weights are `sources`, with its cache file in `cache_dir`
    /// (the OS cache directory when `None`). A cache file that does not match the sources, is truncated or
    /// unreadable is ignored (and overwritten later).
    pub fn open(quantization: Quantization, sources: &[PathBuf], cache_dir: Option<&Path>) -> Result<Self> {
        let source = fingerprint(sources)?;
        let dir = match cache_dir {
            Some(d) => d.to_path_buf(),
            None => default_cache_dir()?,
        };
        let model_dir = sources.first().and_then(|p| p.parent()).unwrap_or(Path::new("."));
        let path = dir.join(cache_file_name(model_dir, quantization));
        let cached = CacheFile::open(&path, &source, quantization);
        Ok(Self { quantization, path, source, cached, tensors: Mutex::new(Vec::new()), quantized_now: Default::default() })
    }

    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// The cache file this load reads or writes.
    pub fn cache_path(&self) -> &Path {
        &self.path
    }

    /// Whether the weights come from a valid cache file (no quantization work).
    pub fn from_cache(&self) -> bool {
        self.cached.is_some()
    }

    /// Weight `name` (`[rows, cols]`) quantized, from the cache, else from `load()` (the dense source tensor,
    /// dropped once quantized). `None` when this weight stays dense.
    pub fn get(&self, name: &str, shape: [usize; 2], device: &Device, load: impl FnOnce() -> Result<Tensor>) -> Result<Option<Arc<QTensor>>> {
        let Some(dtype) = self.quantization.block_type(shape[1]) else { return Ok(None) };
        let cached = self.cached.as_ref().and_then(|cache| cache.tensor(name, dtype, shape, device));
        let q = match cached {
            Some(q) => Arc::new(q),
            None => {
                self.quantized_now.store(true, std::sync::atomic::Ordering::Relaxed);
                // Quantized on the CPU (candle's quantizers), then placed on the model's device.
                let dense = load()?.to_device(&Device::Cpu)?;
                let q = quantize_rows(&dense, dtype, device).map_err(|e| Error::Model(format!("quantizing `{name}` to {dtype:?}: {e}")))?;
                Arc::new(q)
            }
        };
        lock(&self.tensors).push((name.to_string(), q.clone()));
        Ok(Some(q))
    }

    /// Writes every quantized tensor of this load to the cache file, unless all came from it. Written to a
    /// temporary name and renamed, so a crash leaves no half file under the real name.
    pub fn finish(&self) -> Result<()> {
        let made = std::mem::take(&mut *lock(&self.tensors));
        if !self.quantized_now.load(std::sync::atomic::Ordering::Relaxed) || made.is_empty() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        let write = || -> Result<()> {
            let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let mut out = std::io::BufWriter::new(file);
            let format = Value::U32(CACHE_FORMAT);
            let source = Value::String(self.source.clone());
            let quant = Value::String(self.quantization.name().to_string());
            let metadata = [("vtc_r1.format", &format), ("vtc_r1.source", &source), ("vtc_r1.quantization", &quant)];
            let tensors: Vec<(&str, &QTensor)> = made.iter().map(|(n, t)| (n.as_str(), t.as_ref())).collect();
            gguf_file::write(&mut out, &metadata, &tensors).map_err(|e| Error::Model(format!("writing {}: {e}", tmp.display())))?;
            use std::io::Write;
            out.flush().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

impl CacheFile {
    /// The cache at `path` if it is a readable GGUF file made by this format from exactly `source`.
    fn open(path: &Path, source: &str, quantization: Quantization) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        // SAFETY: read-only mapping; a file changed under us is caught by the checks of every tensor read.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.ok()?;
        let content = gguf_file::Content::read(&mut Cursor::new(&mmap[..])).ok()?;
        let meta = |k: &str| content.metadata.get(k);
        let ok = matches!(meta("vtc_r1.format"), Some(Value::U32(CACHE_FORMAT)))
            && matches!(meta("vtc_r1.source"), Some(Value::String(s)) if s == source)
            && matches!(meta("vtc_r1.quantization"), Some(Value::String(s)) if s == quantization.name());
        // every tensor's bytes inside the file (a truncated file is not trusted at all)
        let end_of = |info: &gguf_file::TensorInfo| {
            let bytes = info.shape.elem_count() / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            content.tensor_data_offset.checked_add(info.offset)?.checked_add(bytes as u64)
        };
        let complete = content.tensor_infos.values().all(|info| end_of(info).is_some_and(|end| end <= mmap.len() as u64));
        (ok && complete).then_some(Self { mmap, content })
    }

    /// Tensor `name` if the file holds it with exactly this type and shape, its bytes inside the file.
    fn tensor(&self, name: &str, dtype: GgmlDType, shape: [usize; 2], device: &Device) -> Option<QTensor> {
        let info = self.content.tensor_infos.get(name)?;
        if info.ggml_dtype != dtype || info.shape.dims() != shape {
            return None;
        }
        let bytes = shape[0] * shape[1] / dtype.block_size() * dtype.type_size();
        let start = usize::try_from(self.content.tensor_data_offset.checked_add(info.offset)?).ok()?;
        let data = self.mmap.get(start..start.checked_add(bytes)?)?;
        let storage = QStorage::from_data(Cow::Borrowed(data), device, dtype).ok()?;
        // The blocks were copied: hand the mapped pages back, so loading from the cache peaks near the model's
        // size, not twice it.
        // SAFETY: nothing borrows this range of the read-only mapping any more.
        let _ = unsafe { self.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, bytes) };
        QTensor::new(storage, (shape[0], shape[1])).ok()
    }
}

/// `dense` (`[rows, cols]`, on the CPU) as `dtype` blocks on `device`, quantized on all threads: runs of whole
/// rows apart, each by candle's quantizer (a row's blocks do not depend on other rows), written end to end into
/// one buffer, so the bytes are those of the whole tensor quantized at once. candle's quantizer runs on one
/// thread: quantizing a 9B-shaped model to q4k took 9 minutes on 2 cores.
fn quantize_rows(dense: &Tensor, dtype: GgmlDType, device: &Device) -> candle_core::Result<QTensor> {
    let (rows, cols) = dense.dims2()?;
    let row_bytes = cols / dtype.block_size() * dtype.type_size();
    let per_task = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
    let mut bytes = vec![0u8; rows * row_bytes];
    bytes.par_chunks_mut(per_task * row_bytes).enumerate().try_for_each(|(i, out)| {
        // the rows copied into a tensor of their own: candle's quantizer reads a tensor's storage from its
        // start, whatever the view's offset
        let n = out.len() / row_bytes;
        let rows = Tensor::from_vec(dense.narrow(0, i * per_task, n)?.flatten_all()?.to_vec1::<f32>()?, (n, cols), &Device::Cpu)?;
        let part = QTensor::quantize(&rows, dtype)?;
        out.copy_from_slice(&part.data()?);
        Ok::<_, candle_core::Error>(())
    })?;
    QTensor::new(QStorage::from_data(Cow::Owned(bytes), device, dtype)?, (rows, cols))
}

/// Names, sizes and modification times of the files a model's weights come from.
fn fingerprint(sources: &[PathBuf]) -> Result<String> {
    let mut parts = Vec::with_capacity(sources.len());
    for p in sources {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        parts.push(format!("{name}:{}:{mtime}", meta.len()));
    }
    Ok(parts.join(";"))
}

/// `<directory name>-<hash of its full path>-<quantization>.gguf`: one cache per model directory and type.
fn cache_file_name(model_dir: &Path, quantization: Quantization) -> String {
    use std::hash::{Hash, Hasher};
    let full = std::fs::canonicalize(model_dir).unwrap_or_else(|_| model_dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    full.hash(&mut h);
    let name: String = full.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    format!("{name}-{:016x}-{}.gguf", h.finish(), quantization.name())
}

/// `vtc-r1/quantized` in the OS's cache directory (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches`
/// on macOS, `%LOCALAPPDATA%` on Windows).
fn default_cache_dir() -> Result<PathBuf> {
    dirs::cache_dir()
        .map(|d| d.join("vtc-r1").join("quantized"))
        .ok_or_else(|| Error::invalid("quantCacheDir", "no OS cache directory (no HOME); give a cache directory"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quantizing runs of rows apart gives the bytes of the whole tensor quantized at once (row counts that do
    /// not split evenly, each block type's row length).
    #[test]
    fn rows_quantized_apart_give_the_whole_tensors_blocks() {
        let dev = Device::Cpu;
        for (dtype, rows, cols) in [(GgmlDType::Q4K, 37, 512), (GgmlDType::Q8_0, 101, 96), (GgmlDType::Q5_0, 9, 3424), (GgmlDType::Q6K, 1, 256)] {
            let dense = Tensor::randn(0f32, 0.05, (rows, cols), &dev).unwrap();
            let want = QTensor::quantize(&dense, dtype).unwrap().data().unwrap().into_owned();
            let got = quantize_rows(&dense, dtype, &dev).unwrap();
            assert_eq!(got.shape().dims(), [rows, cols]);
            assert!(got.data().unwrap() == want, "{dtype:?} {rows}×{cols}");
        }
    }
}
