//! Safetensors weights: one file or shards listed in `model.safetensors.index.json`, memory-mapped.
//!
//! Each tensor is copied once out of the mapping into its own buffer (converted to the model dtype)
//! and the mapped pages it came from are released right away, so loading never holds the weights
//! twice. Every tensor is checked against the shape the config implies before it is used; nothing
//! missing is guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Metadata, SafeTensors};

use crate::error::{Error, Result};
use crate::quant::QuantizedWeights;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One mapped safetensors file and its validated header.
struct MappedFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    meta: Metadata,
}

/// The weights of one model directory, mapped but not yet loaded.
pub struct Weights {
    files: Vec<MappedFile>,
    /// tensor name -> index into `files`
    routing: HashMap<String, usize>,
    device: Device,
    dtype: DType,
    /// Set when the model is loaded quantized: where quantized weights come from.
    quantized: Option<QuantizedWeights>,
}

impl Weights {
    /// Maps `model.safetensors`, or every shard named by `model.safetensors.index.json`.
    pub fn from_dir(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let paths = if index.is_file() {
            shard_paths(&index)?
        } else if single.is_file() {
            vec![single]
        } else {
            return Err(Error::Weights {
                path: dir.to_path_buf(),
                message: format!("neither {SINGLE_FILE} nor {INDEX_FILE} found in the model directory"),
            });
        };
        Self::from_files(&paths, device, dtype)
    }

    /// Maps the given safetensors files. A tensor present in several files is taken from the last one.
    pub fn from_files(paths: &[PathBuf], device: &Device, dtype: DType) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut routing = HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let err = |message: String| Error::Weights { path: path.clone(), message };
            let file = std::fs::File::open(path).map_err(|e| err(if e.kind() == std::io::ErrorKind::NotFound { "file not found".into() } else { e.to_string() }))?;
            // SAFETY: the mapping is read-only; like every mmap user we rely on the file not being
            // truncated while the model loads.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(format!("cannot map: {e}")))?;
            // Validates the header, every offset and that the data exactly fills the file.
            let (header_len, meta) =
                SafeTensors::read_metadata(&mmap).map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
            for name in meta.tensors().into_keys() {
                routing.insert(name, i);
            }
            files.push(MappedFile { path: path.clone(), mmap, data_start: 8 + header_len, meta });
        }
        Ok(Self { files, routing, device: device.clone(), dtype, quantized: None })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The safetensors files mapped.
    pub fn source_files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Loads the quantizable weights (see `Linear::load_quantizable`) quantized, from `q`.
    pub fn set_quantization(&mut self, q: QuantizedWeights) {
        self.quantized = Some(q);
    }

    pub fn quantization(&self) -> Option<&QuantizedWeights> {
        self.quantized.as_ref()
    }

    /// Weight `name` (`[rows, cols]`) quantized, when the model is loaded quantized and the weight's rows suit
    /// the block type; `None` to load it dense.
    pub fn quantized(&self, name: &str, shape: [usize; 2]) -> Result<Option<Arc<QTensor>>> {
        let Some(q) = &self.quantized else { return Ok(None) };
        q.get(name, shape, &self.device, || self.get_as(name, &shape, DType::F32))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.routing.contains_key(name)
    }

    /// Loads `name`, checking that its shape is exactly `shape`, converted to the model dtype.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get_as(name, shape, self.dtype)
    }

    /// Like [`get`](Self::get) but converted to `dtype` (e.g. f32 for tensors kept in full precision).
    pub fn get_as(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let file = self.routing.get(name).map(|&i| &self.files[i]);
        let tensor_err = |message: String| Error::Tensor {
            path: file.or(self.files.first()).map(|f| f.path.clone()).unwrap_or_default(),
            tensor: name.to_string(),
            message,
        };
        let file = file.ok_or_else(|| tensor_err("missing".into()))?;
        let info = file.meta.info(name).ok_or_else(|| tensor_err("missing".into()))?;
        if info.shape != shape {
            return Err(tensor_err(format!("shape {:?}, expected {:?}", info.shape, shape)));
        }
        let stored = DType::try_from(info.dtype).map_err(|_| tensor_err(format!("unsupported dtype {:?}", info.dtype)))?;
        if !matches!(stored, DType::F32 | DType::F16 | DType::BF16 | DType::F64) {
            return Err(tensor_err(format!("dtype {stored:?} is not a float type")));
        }
        let (start, end) = (file.data_start + info.data_offsets.0, file.data_start + info.data_offsets.1);
        let t = Tensor::from_raw_buffer(&file.mmap[start..end], stored, shape, &self.device)
            .map_err(|e| tensor_err(e.to_string()))?;
        // The tensor now owns a copy: let the kernel drop the mapped pages so loading never holds
        // the weights twice. (Read-only file mapping: a later access would simply re-read the file.)
        #[cfg(unix)]
        // SAFETY: DONTNEED on a private read-only file mapping discards nothing that cannot be re-read.
        let _ = unsafe { file.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        t.to_dtype(dtype).map_err(|e| tensor_err(e.to_string()))
    }
}

/// The unique shard files of an index, in first-seen order.
fn shard_paths(index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Weights {
        path: index.to_path_buf(),
        message: format!("invalid JSON: {e}"),
    })?;
    let map = json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::Weights {
        path: index.to_path_buf(),
        message: "missing object `weight_map`".into(),
    })?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut paths: Vec<PathBuf> = Vec::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| Error::Weights {
            path: index.to_path_buf(),
            message: format!("weight_map[`{tensor}`] is not a file name"),
        })?;
        // Shards must live in the model directory: refuse paths that climb out of it.
        if file.contains("..") || Path::new(file).is_absolute() {
            return Err(Error::Weights {
                path: index.to_path_buf(),
                message: format!("weight_map[`{tensor}`] = `{file}` is outside the model directory"),
            });
        }
        let p = dir.join(file);
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    if paths.is_empty() {
        return Err(Error::Weights { path: index.to_path_buf(), message: "`weight_map` is empty".into() });
    }
    Ok(paths)
}
