//! What every model family hands the engine and takes back: the vision encoder's output and a tokenized
//! prompt laid out for the decoder (3-D rotary positions, which vision row fills each image token).

use candle_core::{DType, Tensor};

use super::rope::{rope_index, MropePositions};
use crate::error::{Error, Result};

/// Image embeddings for the decoder, one row per image placeholder token, images in order.
#[derive(Debug, Clone)]
pub struct VisionFeatures {
    /// `[n_tokens, hidden]`.
    pub embeds: Tensor,
    /// Extra `[n_tokens, hidden]` rows added to the image tokens' hidden states after decoder layer `i`
    /// (Qwen3-VL's DeepStack); empty for families without them.
    pub per_layer: Vec<Tensor>,
    /// Grids in patches `(t, h, w)`, one per image.
    pub grids: Vec<[usize; 3]>,
}

impl VisionFeatures {
    /// Features of several images (each encoded separately) as if encoded together.
    pub fn concat(parts: &[VisionFeatures]) -> Result<Self> {
        let first = parts.first().ok_or_else(|| Error::invalid("images", "no images"))?;
        let embeds = Tensor::cat(&parts.iter().map(|p| &p.embeds).collect::<Vec<_>>(), 0)?;
        let per_layer = (0..first.per_layer.len())
            .map(|k| Ok(Tensor::cat(&parts.iter().map(|p| &p.per_layer[k]).collect::<Vec<_>>(), 0)?))
            .collect::<Result<Vec<_>>>()?;
        let grids = parts.iter().flat_map(|p| p.grids.iter().copied()).collect();
        Ok(Self { embeds, per_layer, grids })
    }

    /// Placeholder tokens covered (rows of `embeds`).
    pub fn num_tokens(&self) -> usize {
        self.embeds.dim(0).unwrap_or(0)
    }
}

/// A tokenized prompt laid out for the decoder: rotary positions and, for image tokens, which row of
/// the vision features fills them.
pub struct Prompt {
    pub ids: Vec<u32>,
    pub positions: MropePositions,
    /// Per token: `Some(row)` into `vision.embeds` for image tokens.
    image_rows: Vec<Option<u32>>,
    pub vision: Option<VisionFeatures>,
}

impl Prompt {
    /// Lays out `ids` (image placeholders already expanded to one token per merged patch) with the
    /// features of its images. Checks ids against the vocabulary and placeholders against the images.
    pub fn new(ids: &[u32], vision: Option<VisionFeatures>, image_token_id: u32, merge: usize, vocab_size: usize) -> Result<Self> {
        if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(Error::invalid("prompt", format!("token id {bad} is outside the vocabulary of {vocab_size}")));
        }
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "is empty"));
        }
        let grids = vision.as_ref().map(|v| v.grids.clone()).unwrap_or_default();
        let positions = rope_index(ids, image_token_id, &grids, merge)?;
        let mut next = 0u32;
        let image_rows = ids
            .iter()
            .map(|&t| {
                (t == image_token_id).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        Ok(Prompt { ids: ids.to_vec(), positions, image_rows, vision })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of image placeholder tokens.
    pub fn vision_tokens(&self) -> usize {
        self.image_rows.iter().filter(|r| r.is_some()).count()
    }

    /// The (t, h, w) rotary positions of tokens `s..e`.
    pub fn positions(&self, s: usize, e: usize) -> [&[i64]; 3] {
        let p = &self.positions;
        [&p.t[s..e], &p.h[s..e], &p.w[s..e]]
    }

    /// Where tokens `s..e` take vision rows: `None` when none of them is an image token, else the rows to
    /// take (row 0 as filler for text tokens) and a `[e - s, 1]` mask that is 1 at image tokens.
    pub fn image_rows(&self, s: usize, e: usize) -> Result<Option<ImageRows>> {
        let rows = &self.image_rows[s..e];
        let Some(vision) = &self.vision else { return Ok(None) };
        if !rows.iter().any(|r| r.is_some()) {
            return Ok(None);
        }
        let device = vision.embeds.device();
        let idx: Vec<u32> = rows.iter().map(|r| r.unwrap_or(0)).collect();
        let mask: Vec<u8> = rows.iter().map(|r| r.is_some() as u8).collect();
        Ok(Some(ImageRows { index: Tensor::from_vec(idx, e - s, device)?, mask: Tensor::from_vec(mask, (e - s, 1), device)? }))
    }

    /// Token embeddings `x [e - s, hidden]` of tokens `s..e` with image tokens replaced by their vision
    /// rows (transformers' `masked_scatter`). Also returns the row selection, for per-layer features.
    pub fn scatter_images(&self, x: Tensor, s: usize, e: usize, dtype: DType) -> Result<(Tensor, Option<ImageRows>)> {
        let (Some(vision), Some(rows)) = (&self.vision, self.image_rows(s, e)?) else { return Ok((x, None)) };
        let img = vision.embeds.index_select(&rows.index, 0)?.to_dtype(dtype)?;
        let x = rows.mask.broadcast_as(x.shape())?.where_cond(&img, &x)?;
        Ok((x, Some(rows)))
    }
}

/// Vision rows for a chunk of prompt tokens (see [`Prompt::image_rows`]).
pub struct ImageRows {
    /// `[len]` row of the vision features per token (0 where the token is text).
    pub index: Tensor,
    /// `[len, 1]`, 1 at image tokens.
    pub mask: Tensor,
}
