//! Qwen3-VL vision encoder: patch embedding, interpolated learned position embedding, ViT blocks with
//! 2-D rotary attention per image, DeepStack taps and the final 2×2 patch merger.

use candle_core::{DType, Tensor};

use super::config::VisionConfig;
use super::rope::vision_cos_sin;
use crate::error::{Error, Result};
use crate::model::linear::Linear;
use crate::model::{activation, attention, Trace};
use crate::weights::Weights;

/// Image embeddings for the decoder plus the DeepStack features injected after its first layers.
#[derive(Debug, Clone)]
pub struct VisionFeatures {
    /// `[n_tokens, out_hidden]`, one row per image placeholder token, images in order.
    pub embeds: Tensor,
    /// One `[n_tokens, out_hidden]` tensor per DeepStack tap.
    pub deepstack: Vec<Tensor>,
    /// Grids in patches `(t, h, w)`, one per image.
    pub grids: Vec<[usize; 3]>,
}

impl VisionFeatures {
    /// Features of several images (each encoded separately) as if encoded together.
    pub fn concat(parts: &[VisionFeatures]) -> Result<Self> {
        let first = parts.first().ok_or_else(|| Error::invalid("images", "no images"))?;
        let embeds = Tensor::cat(&parts.iter().map(|p| &p.embeds).collect::<Vec<_>>(), 0)?;
        let deepstack = (0..first.deepstack.len())
            .map(|k| Ok(Tensor::cat(&parts.iter().map(|p| &p.deepstack[k]).collect::<Vec<_>>(), 0)?))
            .collect::<Result<Vec<_>>>()?;
        let grids = parts.iter().flat_map(|p| p.grids.iter().copied()).collect();
        Ok(Self { embeds, deepstack, grids })
    }

    /// Placeholder tokens covered (rows of `embeds`).
    pub fn num_tokens(&self) -> usize {
        self.embeds.dim(0).unwrap_or(0)
    }
}

fn linear(w: &Weights, name: &str, out_dim: usize, in_dim: usize) -> Result<Linear> {
    let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
    let bias = w.get(&format!("{name}.bias"), &[out_dim])?;
    Linear::new(weight, Some(bias))
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn load(w: &Weights, name: &str, dim: usize) -> Result<Self> {
        Ok(Self { weight: w.get(&format!("{name}.weight"), &[dim])?, bias: w.get(&format!("{name}.bias"), &[dim])? })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, 1e-6)?)
    }
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
            norm: LayerNorm::load(w, &format!("{name}.norm"), norm_dim)?,
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
                norm1: LayerNorm::load(w, &format!("{b}.norm1"), d)?,
                norm2: LayerNorm::load(w, &format!("{b}.norm2"), d)?,
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
    pub fn forward(&self, pixel_values: &Tensor, grids: &[[usize; 3]], trace: &mut Trace) -> Result<VisionFeatures> {
        let cfg = &self.cfg;
        let m = cfg.spatial_merge_size;
        let mut total = 0;
        for (i, g) in grids.iter().enumerate() {
            if g.contains(&0) || g[1] % m != 0 || g[2] % m != 0 {
                return Err(Error::invalid("grid_thw", format!("image {i}: grid {g:?} must be positive with h and w divisible by {m}")));
            }
            total += g[0] * g[1] * g[2];
        }
        let (rows, cols) = pixel_values.dims2().map_err(|_| {
            Error::invalid("pixel_values", format!("expected a 2-D tensor, got shape {:?}", pixel_values.dims()))
        })?;
        if rows != total || cols != cfg.patch_dim() {
            return Err(Error::invalid(
                "pixel_values",
                format!("shape [{rows}, {cols}] does not match the grids: expected [{total}, {}]", cfg.patch_dim()),
            ));
        }

        let x = self.patch_embed.forward(&pixel_values.to_dtype(self.dtype)?)?;
        trace.record(|| "vision.patch_embed".into(), &x);

        let coords = block_major_coords(grids, m);
        let pos = self.interpolated_pos_embed(grids)?;
        let mut x = (x.to_dtype(DType::F32)? + pos)?.to_dtype(self.dtype)?;

        let (cos, sin) = vision_cos_sin(&coords, cfg.head_dim(), x.device())?;
        let segments: Vec<usize> = grids.iter().flat_map(|g| std::iter::repeat_n(g[1] * g[2], g[0])).collect();

        let mut deepstack = Vec::with_capacity(self.deepstack.len());
        for (i, block) in self.blocks.iter().enumerate() {
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
        Ok(VisionFeatures { embeds, deepstack, grids: grids.to_vec() })
    }

    fn block_forward(&self, b: &Block, x: &Tensor, cos: &Tensor, sin: &Tensor, segments: &[usize]) -> Result<Tensor> {
        let (n, d) = x.dims2()?;
        let heads = self.cfg.num_heads;
        let hd = d / heads;
        let h = b.norm1.forward(x)?;
        // [n, 3·d] -> q, k, v each [heads, n, hd]; rotary applied in f32 as transformers does.
        let qkv = b.qkv.forward(&h)?.reshape((n, 3, heads, hd))?.permute((1, 2, 0, 3))?;
        let rot = |t: Tensor| -> Result<Tensor> {
            let t = t.to_dtype(DType::F32)?.contiguous()?.unsqueeze(0)?;
            Ok(candle_nn::rotary_emb::rope(&t, cos, sin)?.squeeze(0)?.to_dtype(self.dtype)?)
        };
        let q = rot(qkv.get(0)?)?;
        let k = rot(qkv.get(1)?)?;
        let v = qkv.get(2)?.contiguous()?;

        // Attention never crosses images (or video frames): one segment per cu_seqlens entry.
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
        let attn = Tensor::cat(&outs, 1)?.transpose(0, 1)?.reshape((n, d))?;
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

/// Raster `(row, col)` of each patch in the processor's order: 2×2 (merge × merge) blocks, block rows
/// outer, then block columns, then the rows and columns inside a block.
pub fn block_major(h: usize, w: usize, m: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..h / m).flat_map(move |br| {
        (0..w / m).flat_map(move |bc| (0..m).flat_map(move |ir| (0..m).map(move |ic| (br * m + ir, bc * m + ic))))
    })
}

/// Patch coordinates of all images (frames repeated) in block-major order, for the rotary table.
fn block_major_coords(grids: &[[usize; 3]], m: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for g in grids {
        for _ in 0..g[0] {
            out.extend(block_major(g[1], g[2], m));
        }
    }
    out
}
