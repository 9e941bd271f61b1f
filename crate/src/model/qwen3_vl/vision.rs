//! Qwen3-VL vision encoder: patch embedding, interpolated learned position embedding, ViT blocks with
//! 2-D rotary attention per image, DeepStack taps and the final 2×2 patch merger.

use std::sync::atomic::AtomicBool;

use candle_core::{DType, Tensor};

use super::config::VisionConfig;
use crate::model::rope::vision_cos_sin;
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::vision_tower::{block_major, block_major_coords, check_inputs, segmented_rotary_attention, segments, stop_if_cancelled};
use crate::model::{activation, LayerNorm, Trace, VisionFeatures};
use crate::weights::Weights;

/// Vision layers all have biases.
fn linear(w: &Weights, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    Linear::load(w, name, out_dim, in_dim, true)
}

/// Qwen3-VL's vision LayerNorms use eps 1e-6.
fn layer_norm(w: &Weights, name: &str, dim: usize) -> Result<LayerNorm> {
    LayerNorm::load(w, name, dim, 1e-6)
}

struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Linear,
    proj: Linear,
    fc1: Linear,
    fc2: Linear,
}

/// `Qwen3VLVisionPatchMerger`: groups 4 consecutive rows (one 2×2 block), LayerNorm (before the
/// grouping for the final merger, after it for DeepStack), then fc1 → exact GELU → fc2.
struct Merger {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    postshuffle_norm: bool,
    group: usize,
}

impl Merger {
    fn load(w: &Weights, name: &str, cfg: &VisionConfig, postshuffle_norm: bool) -> Result<Self> {
        let group = cfg.spatial_merge_size * cfg.spatial_merge_size;
        let wide = cfg.hidden_size * group;
        let norm_dim = if postshuffle_norm { wide } else { cfg.hidden_size };
        Ok(Self {
            norm: layer_norm(w, &format!("{name}.norm"), norm_dim)?,
            fc1: linear(w, &format!("{name}.linear_fc1"), wide, wide)?,
            fc2: linear(w, &format!("{name}.linear_fc2"), cfg.out_hidden_size, wide)?,
            postshuffle_norm,
            group,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let wide = (n / self.group, d * self.group);
        let x = if self.postshuffle_norm {
            self.norm.forward(&x.reshape(wide)?)?
        } else {
            self.norm.forward(x)?.reshape(wide)?
        };
        let x = self.fc1.forward(&x)?.gelu_erf()?;
        self.fc2.forward(&x)
    }
}

pub struct VisionModel {
    cfg: VisionConfig,
    /// Conv3d kernel flattened to `[hidden, C·T·P·P]`: with stride = kernel it is a plain linear map.
    patch_embed: Linear,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    dtype: DType,
}

impl VisionModel {
    pub fn load(w: &Weights, cfg: &VisionConfig, prefix: &str) -> Result<Self> {
        let d = cfg.hidden_size;
        let (c, t, p) = (cfg.in_channels, cfg.temporal_patch_size, cfg.patch_size);
        let kernel = w.get(&format!("{prefix}.patch_embed.proj.weight"), &[d, c, t, p, p])?;
        let patch_embed = Linear::new(
            kernel.reshape((d, cfg.patch_dim()))?,
            Some(w.get(&format!("{prefix}.patch_embed.proj.bias"), &[d])?),
        )?;
        let pos_embed = w.get(&format!("{prefix}.pos_embed.weight"), &[cfg.num_position_embeddings, d])?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = format!("{prefix}.blocks.{i}");
            blocks.push(Block {
                norm1: layer_norm(w, &format!("{b}.norm1"), d)?,
                norm2: layer_norm(w, &format!("{b}.norm2"), d)?,
                qkv: linear(w, &format!("{b}.attn.qkv"), 3 * d, d)?,
                proj: linear(w, &format!("{b}.attn.proj"), d, d)?,
                fc1: linear(w, &format!("{b}.mlp.linear_fc1"), cfg.intermediate_size, d)?,
                fc2: linear(w, &format!("{b}.mlp.linear_fc2"), d, cfg.intermediate_size)?,
            });
        }
        let merger = Merger::load(w, &format!("{prefix}.merger"), cfg, false)?;
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|k| Merger::load(w, &format!("{prefix}.deepstack_merger_list.{k}"), cfg, true))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { cfg: cfg.clone(), patch_embed, pos_embed, blocks, merger, deepstack, dtype: w.dtype() })
    }

    /// Encodes `pixel_values [n_patches, C·T·P·P]` (rows in the processor's 2×2 block-major order) of
    /// the images whose patch grids are `grids`.
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]], cancel: &AtomicBool, trace: &mut Trace) -> Result<VisionFeatures> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        check_inputs(pixel_values, grids, m, cfg.patch_dim())?;

        let x = self.patch_embed.forward(&pixel_values.to_dtype(self.dtype)?)?;
        trace.record(|| "vision.patch_embed".into(), &x);

        let coords = block_major_coords(grids, m);
        let pos = self.interpolated_pos_embed(grids)?;
        let mut x = (x.to_dtype(DType::F32)? + pos)?.to_dtype(self.dtype)?;

        let (cos, sin) = vision_cos_sin(&coords, cfg.head_dim(), x.device())?;
        let segments = segments(grids);

        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, block) in self.blocks.iter().enumerate() {
            stop_if_cancelled(cancel)?;
            x = self.block_forward(block, &x, &cos, &sin, &segments)?;
            trace.record(|| format!("vision.block{i}"), &x);
            if let Some(k) = cfg.deepstack_visual_indexes.iter().position(|&j| j == i) {
                let f = self.deepstack[k].forward(&x)?;
                trace.record(|| format!("vision.deepstack{k}"), &f);
                deepstack.push(f);
            }
        }
        let embeds = self.merger.forward(&x)?;
        trace.record(|| "vision.merger".into(), &embeds);
        Ok(VisionFeatures { embeds, per_layer: deepstack, grids: grids.to_vec() })
    }

    fn block_forward(&self, b: &Block, x: &Tensor, cos: &Tensor, sin: &Tensor, segments: &[usize]) -> Result<Tensor> {
        let h = b.norm1.forward(x)?;
        let attn = segmented_rotary_attention(&b.qkv.forward(&h)?, self.cfg.num_heads, cos, sin, segments, self.dtype)?;
        let x = (x + b.proj.forward(&attn)?)?;

        let h = b.fc1.forward(&b.norm2.forward(&x)?)?;
        let h = if self.cfg.gelu_tanh { activation::gelu_tanh(&h)? } else { h.gelu_erf()? };
        Ok((x + b.fc2.forward(&h)?)?)
    }

    /// The learned 2-D position table resampled to each image's grid (bilinear, align_corners=True),
    /// in block-major order, in f32 (`[n_patches, hidden]`).
    fn interpolated_pos_embed(&self, grids: &[[usize; 3]]) -> Result<Tensor> {
        let side = self.cfg.grid_side();
        let m = self.cfg.spatial_merge_size;
        let mut idx: [Vec<u32>; 4] = Default::default();
        let mut wts: [Vec<f32>; 4] = Default::default();
        for g in grids {
            let (hs, ws) = (linspace(side, g[1]), linspace(side, g[2]));
            let taps = |x: f32| {
                let lo = x as usize; // truncation, like `.int()` on non-negative values
                (lo, (lo + 1).min(side - 1), x - lo as f32)
            };
            for _frame in 0..g[0] {
                for (r, c) in block_major(g[1], g[2], m) {
                    let (h0, h1, dh) = taps(hs[r]);
                    let (w0, w1, dw) = taps(ws[c]);
                    let cells = [(h0, w0), (h0, w1), (h1, w0), (h1, w1)];
                    let weights = [(1.0 - dh) * (1.0 - dw), (1.0 - dh) * dw, dh * (1.0 - dw), dh * dw];
                    for j in 0..4 {
                        idx[j].push((cells[j].0 * side + cells[j].1) as u32);
                        wts[j].push(weights[j]);
                    }
                }
            }
        }
        let dev = self.pos_embed.device();
        let table = self.pos_embed.to_dtype(DType::F32)?;
        let mut sum: Option<Tensor> = None;
        for j in 0..4 {
            let n = idx[j].len();
            let rows = table.index_select(&Tensor::from_vec(std::mem::take(&mut idx[j]), n, dev)?, 0)?;
            let w = Tensor::from_vec(std::mem::take(&mut wts[j]), (n, 1), dev)?;
            let term = rows.broadcast_mul(&w)?;
            sum = Some(match sum {
                None => term,
                Some(s) => (s + term)?,
            });
        }
        sum.ok_or_else(|| Error::invalid("grid_thw", "no images"))
    }
}

/// `torch.linspace(0, side-1, n)` in f32 (same two-sided formula, so the same rounding).
fn linspace(side: usize, n: usize) -> Vec<f32> {
    let end = (side - 1) as f32;
    if n == 1 {
        return vec![0.0];
    }
    let step = end / (n - 1) as f32;
    let half = n / 2;
    (0..n).map(|i| if i < half { step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
}
