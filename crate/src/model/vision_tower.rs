//! Pieces the families' vision encoders share (both descend from Qwen2-VL's ViT): the checks on
//! `pixel_values` and `grid_thw`, the processor's block-major patch order, and rotary self-attention that
//! never crosses from one image to another.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::attention;

/// Ends an encode between blocks once the request is cancelled (`cancel` set by the client's side).
pub fn stop_if_cancelled(cancel: &AtomicBool) -> Result<()> {
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    Ok(())
}

/// Checks `pixel_values [n_patches, patch_dim]` against the images' grids (positive, h and w divisible by
/// the merge size, rows adding up).
pub fn check_inputs(pixel_values: &Tensor, grids: &[[usize; 3]], merge: usize, patch_dim: usize) -> Result<()> {
    let mut total = 0;
    for (i, g) in grids.iter().enumerate() {
        if g.contains(&0) || g[1] % merge != 0 || g[2] % merge != 0 {
            return Err(Error::invalid("grid_thw", format!("image {i}: grid {g:?} must be positive with h and w divisible by {merge}")));
        }
        total += g[0] * g[1] * g[2];
    }
    let (rows, cols) = pixel_values
        .dims2()
        .map_err(|_| Error::invalid("pixel_values", format!("expected a 2-D tensor, got shape {:?}", pixel_values.dims())))?;
    if rows != total || cols != patch_dim {
        return Err(Error::invalid(
            "pixel_values",
            format!("shape [{rows}, {cols}] does not match the grids: expected [{total}, {patch_dim}]"),
        ));
    }
    Ok(())
}

/// Raster `(row, col)` of each patch in the processor's order: 2×2 (merge × merge) blocks, block rows
/// outer, then block columns, then the rows and columns inside a block.
pub fn block_major(h: usize, w: usize, m: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..h / m).flat_map(move |br| {
        (0..w / m).flat_map(move |bc| (0..m).flat_map(move |ir| (0..m).map(move |ic| (br * m + ir, bc * m + ic))))
    })
}

/// Patch coordinates of all images (frames repeated) in block-major order.
pub fn block_major_coords(grids: &[[usize; 3]], m: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for g in grids {
        for _ in 0..g[0] {
            out.extend(block_major(g[1], g[2], m));
        }
    }
    out
}

/// Patches per attention segment: one per frame of each image (transformers' `cu_seqlens`).
pub fn segments(grids: &[[usize; 3]]) -> Vec<usize> {
    grids.iter().flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0])).collect()
}

/// Multi-head self-attention of a fused `qkv [n, 3·d]` projection (q, k, v contiguous thirds), with the
/// 2-D rotary embedding applied to q and k in f32 as transformers does, within each segment only.
/// Returns `[n, d]` in `dtype`.
pub fn segmented_rotary_attention(qkv: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor, segments: &[usize], dtype: DType) -> Result<Tensor> {
    let (n, d3) = qkv.dims2()?;
    let d = d3 / 3;
    let hd = d / heads;
    // [n, 3·d] -> q, k, v each [heads, n, hd]
    let qkv = qkv.reshape((n, 3, heads, hd))?.permute((1, 2, 0, 3))?;
    let rot = |t: Tensor| -> Result<Tensor> {
        let t = t.to_dtype(DType::F32)?.contiguous()?.unsqueeze(0)?;
        Ok(candle_nn::rotary_emb::rope(&t, cos, sin)?.squeeze(0)?.to_dtype(dtype)?)
    };
    let q = rot(qkv.get(0)?)?;
    let k = rot(qkv.get(1)?)?;
    let v = qkv.get(2)?.contiguous()?;
    let scale = 1.0 / (hd as f64).sqrt();
    let mut outs = Vec::with_capacity(segments.len());
    let mut start = 0;
    for &len in segments {
        let qs = q.narrow(1, start, len)?.unsqueeze(1)?; // [heads, 1, len, hd]
        let ks = k.narrow(1, start, len)?;
        let vs = v.narrow(1, start, len)?;
        outs.push(attention(&qs, &ks, &vs, scale, None)?.squeeze(1)?);
        start += len;
    }
    Ok(Tensor::cat(&outs, 1)?.transpose(0, 1)?.reshape((n, d))?)
}
