//! GLM-4.1V vision encoder (`Glm4vVisionModel`): patch embedding, post-conv RMSNorm, the learned position
//! table resampled per image by bicubic `grid_sample`, ViT blocks (RMSNorm, bias-free rotary attention
//! within each image, SwiGLU), post RMSNorm, a 2×2 convolution that merges patches, and the merger
//! (linear, LayerNorm, exact GELU, SwiGLU).

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};

use super::config::VisionConfig;
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::rope::vision_cos_sin;
use crate::model::vision_tower::{block_major, block_major_coords, check_inputs, segmented_rotary_attention, segments, stop_if_cancelled};
use crate::model::{activation, rms_norm, LayerNorm, Trace, VisionFeatures};
use crate::weights::Weights;

/// `down(silu(gate(x)) · up(x))` with bias-free projections.
struct SwiGlu {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl SwiGlu {
    fn load(w: &Weights, name: &str, dim: usize, hidden: usize) -> Result<Self> {
        Ok(Self {
            gate: Linear::load(w, &format!("{name}.gate_proj"), hidden, dim, false)?,
            up: Linear::load(w, &format!("{name}.up_proj"), hidden, dim, false)?,
            down: Linear::load(w, &format!("{name}.down_proj"), dim, hidden, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.down.forward(&activation::silu_mul(&self.gate.forward(x)?, &self.up.forward(x)?)?)
    }
}

struct Block {
    norm1: Tensor,
    norm2: Tensor,
    qkv: Linear,
    proj: Linear,
    mlp: SwiGlu,
}

pub struct VisionModel {
    cfg: VisionConfig,
    /// Conv3d kernel flattened to `[hidden, C·T·P·P]`: with stride = kernel it is a plain linear map.
    patch_embed: Linear,
    post_conv_norm: Tensor,
    /// `[side·side, hidden]`, row `y·side + x` is grid cell (y, x).
    pos_embed: Tensor,
    blocks: Vec<Block>,
    post_norm: Tensor,
    /// Conv2d over each merge×merge block flattened to `[out, m·m·hidden]` over the block's rows
    /// concatenated in block-major order (row k of a block is cell (k / m, k % m)).
    downsample: Linear,
    merger_proj: Linear,
    merger_norm: LayerNorm,
    merger_mlp: SwiGlu,
    dtype: DType,
}

impl VisionModel {
    pub fn load(w: &Weights, cfg: &VisionConfig, prefix: &str) -> Result<Self> {
        let (d, o, m) = (cfg.hidden_size, cfg.out_hidden_size, cfg.spatial_merge_size);
        let (c, t, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let kernel = w.get(&format!("{prefix}.patch_embed.proj.weight"), &[d, c, t, p, p])?;
        let patch_embed = Linear::new(kernel.reshape((d, cfg.patch_dim()))?, Some(w.get(&format!("{prefix}.patch_embed.proj.bias"), &[d])?))?;
        let side = cfg.grid_side();
        let pos_embed = w.get(&format!("{prefix}.embeddings.position_embedding.weight"), &[side * side, d])?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = format!("{prefix}.blocks.{i}");
            blocks.push(Block {
                norm1: w.get(&format!("{b}.norm1.weight"), &[d])?,
                norm2: w.get(&format!("{b}.norm2.weight"), &[d])?,
                qkv: Linear::load(w, &format!("{b}.attn.qkv"), 3 * d, d, false)?,
                proj: Linear::load(w, &format!("{b}.attn.proj"), d, d, false)?,
                // The blocks' MLP is out_hidden_size wide (intermediate_size is the merger's).
                mlp: SwiGlu::load(w, &format!("{b}.mlp"), d, o)?,
            });
        }
        let conv = w.get(&format!("{prefix}.downsample.weight"), &[o, d, m, m])?;
        let downsample = Linear::new(
            conv.permute((0, 2, 3, 1))?.reshape((o, m * m * d))?,
            Some(w.get(&format!("{prefix}.downsample.bias"), &[o])?),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed,
            post_conv_norm: w.get(&format!("{prefix}.post_conv_layernorm.weight"), &[d])?,
            pos_embed,
            blocks,
            post_norm: w.get(&format!("{prefix}.post_layernorm.weight"), &[d])?,
            downsample,
            merger_proj: Linear::load(w, &format!("{prefix}.merger.proj"), o, o, false)?,
            // nn.LayerNorm's default eps
            merger_norm: LayerNorm::load(w, &format!("{prefix}.merger.post_projection_norm"), o, 1e-5)?,
            merger_mlp: SwiGlu::load(w, &format!("{prefix}.merger"), o, cfg.intermediate_size)?,
            dtype: w.dtype(),
        })
    }

    /// Encodes `pixel_values [n_patches, C·T·P·P]` (rows in the processor's block-major order) of the
    /// images whose patch grids are `grids`.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]], cancel: &AtomicBool, trace: &mut Trace) -> Result<VisionFeatures> {
        let cfg = &self.cfg;
        let (m, eps) = (cfg.spatial_merge_size, cfg.rms_norm_eps);
        check_inputs(pixel_values, grids, m, cfg.patch_dim())?;

        let x = self.patch_embed.forward(&pixel_values.to_dtype(self.dtype)?)?;
        trace.record(|| "vision.patch_embed".into(), &x);
        let x = rms_norm(&x, &self.post_conv_norm, eps)?;
        trace.record(|| "vision.post_conv_norm".into(), &x);
        let pos = self.resampled_pos_embed(grids)?.to_dtype(self.dtype)?;
        let mut x = (x + pos)?;
        trace.record(|| "vision.embeddings".into(), &x);

        let (cos, sin) = vision_cos_sin(&block_major_coords(grids, m), cfg.head_dim(), x.device())?;
        let segments = segments(grids);
        for (i, b) in self.blocks.iter().enumerate() {
            stop_if_cancelled(cancel)?;
            let h = rms_norm(&x, &b.norm1, eps)?;
            let attn = segmented_rotary_attention(&b.qkv.forward(&h)?, cfg.num_heads, &cos, &sin, &segments, self.dtype)?;
            x = (x + b.proj.forward(&attn)?)?;
            x = (&x + b.mlp.forward(&rms_norm(&x, &b.norm2, eps)?)?)?;
            trace.record(|| format!("vision.block{i}"), &x);
        }
        let x = rms_norm(&x, &self.post_norm, eps)?;
        trace.record(|| "vision.post_norm".into(), &x);
        let (n, d) = x.dims2()?;
        let x = self.downsample.forward(&x.reshape((n / (m * m), m * m * d))?)?;
        trace.record(|| "vision.downsample".into(), &x);
        let x = self.merger_norm.forward(&self.merger_proj.forward(&x)?)?.gelu_erf()?;
        let embeds = self.merger_mlp.forward(&x)?;
        trace.record(|| "vision.merger".into(), &embeds);
        Ok(VisionFeatures { embeds, per_layer: Vec::new(), grids: grids.to_vec() })
    }

    /// The learned position table resampled to each image's grid as transformers does it:
    /// `F.grid_sample(table, grid, mode="bicubic", align_corners=False, padding_mode="border")` at each
    /// patch's centre, in f32, block-major order (`[n_patches, hidden]`). Written here because no crate
    /// offers PyTorch's bicubic grid_sample: separable cubic convolution (A = -0.75) over 4×4 taps whose
    /// indices are clamped to the table, the source coordinate itself unclipped.
    fn resampled_pos_embed(&self, grids: &[[usize; 3]]) -> Result<Tensor> {
        let side = self.cfg.grid_side();
        let m = self.cfg.spatial_merge_size;
        // Per tap (row i, column j): table row indices, and the x weight; per row i: the y weight.
        let mut idx: Vec<Vec<u32>> = vec![Vec::new(); 16];
        let mut wx: Vec<Vec<f32>> = vec![Vec::new(); 4];
        let mut wy: Vec<Vec<f32>> = vec![Vec::new(); 4];
        for g in grids {
            let xs: Vec<CubicTaps> = (0..g[2]).map(|c| CubicTaps::at(c, g[2], side)).collect();
            let ys: Vec<CubicTaps> = (0..g[1]).map(|r| CubicTaps::at(r, g[1], side)).collect();
            for _frame in 0..g[0] {
                for (r, c) in block_major(g[1], g[2], m) {
                    let (tx, ty) = (&xs[c], &ys[r]);
                    for i in 0..4 {
                        for j in 0..4 {
                            idx[i * 4 + j].push((ty.index[i] * side + tx.index[j]) as u32);
                        }
                        wx[i].push(tx.weight[i]);
                        wy[i].push(ty.weight[i]);
                    }
                }
            }
        }
        let n = wx[0].len();
        if n == 0 {
            return Err(Error::invalid("grid_thw", "no images"));
        }
        let dev = self.pos_embed.device();
        let table = self.pos_embed.to_dtype(DType::F32)?;
        let column = |v: &Vec<f32>| Tensor::from_slice(v, (n, 1), dev);
        let weights_x = wx.iter().map(column).collect::<candle_core::Result<Vec<_>>>()?;
        let mut out: Option<Tensor> = None;
        for (i, weight_y) in wy.iter().enumerate() {
            // Interpolate along x within table row i of every 4×4 neighbourhood, then weight by y.
            let mut row: Option<Tensor> = None;
            for (j, weight_x) in weights_x.iter().enumerate() {
                let taps = table.index_select(&Tensor::from_slice(&idx[i * 4 + j], n, dev)?, 0)?;
                let term = taps.broadcast_mul(weight_x)?;
                row = Some(match row {
                    None => term,
                    Some(r) => (r + term)?,
                });
            }
            let term = row.expect("four taps").broadcast_mul(&column(weight_y)?)?;
            out = Some(match out {
                None => term,
                Some(o) => (o + term)?,
            });
        }
        Ok(out.expect("four rows"))
    }
}

/// The four table indices and cubic weights that bicubic `grid_sample` (align_corners=False, border
/// padding) uses along one axis for patch `i` of `n` over a table of `side` cells. Same f32 steps as PyTorch.
struct CubicTaps {
    index: [usize; 4],
    weight: [f32; 4],
}

impl CubicTaps {
    fn at(i: usize, n: usize, side: usize) -> Self {
        // transformers: normalized grid coordinate of the patch centre; PyTorch: unnormalize.
        let g = ((i as f32 + 0.5) / n as f32) * 2.0 - 1.0;
        let x = ((g + 1.0) * side as f32 - 1.0) / 2.0;
        let x0 = x.floor();
        let t = x - x0;
        let clamp = |k: f32| (k.max(0.0) as usize).min(side - 1);
        let index = [clamp(x0 - 1.0), clamp(x0), clamp(x0 + 1.0), clamp(x0 + 2.0)];
        // get_cubic_upsample_coefficients with A = -0.75
        const A: f32 = -0.75;
        let cc1 = |s: f32| ((A + 2.0) * s - (A + 3.0)) * s * s + 1.0;
        let cc2 = |s: f32| ((A * s - 5.0 * A) * s + 8.0 * A) * s - 4.0 * A;
        Self { index, weight: [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_taps_follow_the_spec_vectors() {
        // A grid as wide as the table samples each cell (up to the f32 rounding of the coordinate
        // round trip, which PyTorch has too).
        for c in 0..24 {
            let t = CubicTaps::at(c, 24, 24);
            let at: f32 = t.index.iter().zip(t.weight).map(|(&i, w)| i as f32 * w).sum();
            assert!((at - c as f32).abs() < 1e-5 && t.weight.iter().all(|w| w.abs() < 1e-5 || (w - 1.0).abs() < 1e-5), "{c}: {:?}", t.weight);
        }
        // W = 60, c = 0: x = -0.3, x0 = -1, t = 0.7; taps -2..1 clamp to 0, 0, 0, 1.
        let t = CubicTaps::at(0, 60, 24);
        assert_eq!(t.index, [0, 0, 0, 1]);
        for (got, want) in t.weight.iter().zip([-0.04725, 0.32625, 0.83125, -0.11025]) {
            assert!((got - want).abs() < 1e-6, "{:?}", t.weight);
        }
    }
}
