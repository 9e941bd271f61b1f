//! Per-layer key/value cache that grows on demand (capacity doubles), so a 262K-context model does not
//! preallocate gigabytes for a short chat. Entries are `[kv_heads, capacity, head_dim]` buffers written
//! in place; readers get a view of the filled part. The entries may be kept in another dtype than the model
//! computes in (bf16 or f16 halve what a long-context decode step reads); the attention kernels widen them.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};

/// Smallest allocation, in tokens; growth then doubles.
const MIN_CAPACITY: usize = 256;

#[derive(Default)]
struct LayerKv {
    k: Option<Tensor>,
    v: Option<Tensor>,
}

pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    max_len: usize,
    /// The entries' dtype; `None`: the dtype of what is appended.
    dtype: Option<DType>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers that refuses to grow beyond `max_len` tokens.
    pub fn new(num_layers: usize, max_len: usize) -> Self {
        Self { layers: (0..num_layers).map(|_| LayerKv::default()).collect(), len: 0, max_len, dtype: None }
    }

    /// This cache keeping its entries in `dtype` (`None`: as appended).
    pub fn with_dtype(mut self, dtype: Option<DType>) -> Self {
        self.dtype = dtype;
        self
    }

    /// Tokens stored (committed) so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Tokens the buffers can hold before the next reallocation.
    pub fn capacity(&self) -> usize {
        self.layers.first().and_then(|l| l.k.as_ref()).map(|k| k.dim(1).unwrap_or(0)).unwrap_or(0)
    }

    /// Forgets everything after the first `len` tokens (keeps the buffers), e.g. to reuse a shared
    /// prompt prefix.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Frees the buffers.
    pub fn clear(&mut self) {
        self.len = 0;
        for l in &mut self.layers {
            *l = LayerKv::default();
        }
    }

    /// Writes `k`, `v` (`[kv_heads, n, head_dim]`) for `layer` after the committed tokens and returns
    /// views of everything up to and including them. Call [`commit`](Self::commit) once all layers
    /// have appended the same tokens.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(1)?;
        let end = self.len + n;
        if end > self.max_len {
            return Err(Error::ContextLength { tokens: end, max: self.max_len });
        }
        let (len, max_len) = (self.len, self.max_len);
        let (k, v) = match self.dtype {
            Some(dtype) if dtype != k.dtype() => (k.to_dtype(dtype)?, v.to_dtype(dtype)?),
            _ => (k.clone(), v.clone()),
        };
        let slot = self.layers.get_mut(layer).ok_or_else(|| Error::Internal(format!("no cache for layer {layer}")))?;
        let k_buf = grow(slot.k.take(), &k, len, end, max_len)?;
        let v_buf = grow(slot.v.take(), &v, len, end, max_len)?;
        k_buf.slice_set(&k.contiguous()?, 1, len)?;
        v_buf.slice_set(&v.contiguous()?, 1, len)?;
        let out = (k_buf.narrow(1, 0, end)?, v_buf.narrow(1, 0, end)?);
        slot.k = Some(k_buf);
        slot.v = Some(v_buf);
        Ok(out)
    }

    /// A new cache holding a copy of this one's first `n` tokens (a prefix another sequence shares), with room
    /// to grow.
    pub fn copy_prefix(&self, n: usize) -> Result<KvCache> {
        let n = n.min(self.len);
        let mut out = KvCache::new(self.layers.len(), self.max_len).with_dtype(self.dtype);
        if n == 0 {
            return Ok(out);
        }
        for (dst, src) in out.layers.iter_mut().zip(&self.layers) {
            let (Some(k), Some(v)) = (&src.k, &src.v) else {
                return Err(Error::Internal("a cache with tokens but no buffers".into()));
            };
            let copy = |t: &Tensor| -> Result<Tensor> {
                let part = t.narrow(1, 0, n)?;
                grow(None, &part, 0, n, self.max_len).and_then(|buf| {
                    buf.slice_set(&part.contiguous()?, 1, 0)?;
                    Ok(buf)
                })
            };
            dst.k = Some(copy(k)?);
            dst.v = Some(copy(v)?);
        }
        out.len = n;
        Ok(out)
    }

    /// Bytes the buffers take.
    pub fn bytes(&self) -> usize {
        let size = |t: &Option<Tensor>| t.as_ref().map(|t| t.elem_count() * t.dtype().size_in_bytes()).unwrap_or(0);
        self.layers.iter().map(|l| size(&l.k) + size(&l.v)).sum()
    }

    /// Marks `n` appended tokens as stored in every layer.
    pub fn commit(&mut self, n: usize) {
        self.len += n;
    }
}

/// Returns a buffer that can hold `end` tokens, keeping the first `len` of `old`.
fn grow(old: Option<Tensor>, like: &Tensor, len: usize, end: usize, limit: usize) -> Result<Tensor> {
    if let Some(buf) = &old {
        if buf.dim(1)? >= end {
            return Ok(old.unwrap());
        }
    }
    let cap_old = old.as_ref().map(|b| b.dim(1).unwrap_or(0)).unwrap_or(0);
    let cap = end.max(cap_old * 2).max(MIN_CAPACITY).min(limit);
    let (heads, _, hd) = like.dims3()?;
    let buf = Tensor::zeros((heads, cap, hd), like.dtype(), like.device())?;
    if let (Some(old), true) = (old, len > 0) {
        buf.slice_set(&old.narrow(1, 0, len)?.contiguous()?, 1, 0)?;
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, IndexOp};

    #[test]
    fn grows_and_keeps_contents() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 10_000);
        let mut all = Vec::new();
        for step in 0..5usize {
            let n = if step == 0 { 300 } else { 1 + step * 100 };
            let k = Tensor::arange(0f32, (2 * n * 4) as f32, &dev).unwrap().reshape((2, n, 4)).unwrap();
            let k = (k + (step * 1000) as f64).unwrap();
            let (kk, vv) = c.append(0, &k, &k).unwrap();
            c.commit(n);
            all.push(k);
            let want = Tensor::cat(&all, 1).unwrap();
            assert_eq!(kk.dims(), want.dims());
            assert_eq!(crate::model::max_abs_diff(&kk, &want).unwrap(), 0.0);
            assert_eq!(crate::model::max_abs_diff(&vv, &want).unwrap(), 0.0);
        }
        assert!(c.capacity() >= c.len() && c.capacity() <= 2 * c.len());
        c.truncate(10);
        let k = Tensor::ones((2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let (kk, _) = c.append(0, &k, &k).unwrap();
        assert_eq!(kk.dim(1).unwrap(), 11);
        assert_eq!(kk.i((.., 10, ..)).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap(), 8.0);
    }

    #[test]
    fn a_copied_prefix_holds_the_same_values_and_grows_on_its_own() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(2, 1000);
        let k = Tensor::arange(0f32, 2.0 * 300.0 * 4.0, &dev).unwrap().reshape((2, 300, 4)).unwrap();
        for layer in 0..2 {
            c.append(layer, &k, &k).unwrap();
        }
        c.commit(300);
        let mut p = c.copy_prefix(120).unwrap();
        assert_eq!(p.len(), 120);
        let one = Tensor::ones((2, 1, 4), candle_core::DType::F32, &dev).unwrap();
        let (kk, _) = p.append(1, &one, &one).unwrap();
        assert_eq!(crate::model::max_abs_diff(&kk.narrow(1, 0, 120).unwrap(), &k.narrow(1, 0, 120).unwrap()).unwrap(), 0.0);
        // the source is untouched by the copy's appends
        let (orig, _) = c.append(1, &one, &one).unwrap();
        assert_eq!(crate::model::max_abs_diff(&orig.narrow(1, 0, 300).unwrap(), &k).unwrap(), 0.0);
        assert!(c.bytes() >= 2 * 2 * 2 * 300 * 4 * 4 && p.bytes() < c.bytes());
    }

    #[test]
    fn refuses_to_exceed_the_context() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 8);
        let k = Tensor::zeros((1, 9, 2), candle_core::DType::F32, &dev).unwrap();
        assert!(matches!(c.append(0, &k, &k), Err(Error::ContextLength { tokens: 9, max: 8 })));
    }
}
