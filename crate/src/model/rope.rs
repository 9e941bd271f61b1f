//! Rotary position embeddings shared by the model families: the 3-D (t, h, w) position ids of a prompt with
//! images (`get_rope_index`, the same rule in Qwen3-VL and GLM-4.1V), the decoder's per-token cos/sin tables
//! for a given assignment of frequencies to axes, and the vision encoders' 2-D axial tables. Tables are
//! computed in f32 on the host exactly as transformers does (`inv_freq` in f32, one product per angle), then
//! moved to the device.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// `1 / theta^(2i/dim)` for i in 0..dim/2, in f32 like torch.
pub fn inv_freq(theta: f64, dim: usize) -> Vec<f32> {
    let theta = theta as f32;
    (0..dim / 2).map(|i| 1.0f32 / theta.powf((2 * i) as f32 / dim as f32)).collect()
}

/// 3-D (t, h, w) positions of a prompt and the offset decode steps add to the KV length.
#[derive(Debug, Clone, PartialEq)]
pub struct MropePositions {
    pub t: Vec<i64>,
    pub h: Vec<i64>,
    pub w: Vec<i64>,
    /// `max position + 1 - len`: a decode step at KV length n uses position n + delta on all axes.
    pub rope_delta: i64,
}

impl MropePositions {
    pub fn len(&self) -> usize {
        self.t.len()
    }
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
}

/// `get_rope_index`: text tokens advance (p, p, p); an image of merged grid (t, gh, gw) starting at p
/// gets (p + frame, p + row, p + col) in raster order and the next token continues at
/// `p + max(t, gh, gw)` (GLM-4.1V's `p + max(gh, gw)` is the same for still images). `grids` are in patches (before the spatial merge), one per image, in order.
pub fn rope_index(ids: &[u32], image_token_id: u32, grids: &[[usize; 3]], merge: usize) -> Result<MropePositions> {
    let n = ids.len();
    let (mut t, mut h, mut w) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut p: i64 = 0;
    let mut i = 0;
    let mut grids_iter = grids.iter();
    while i < n {
        if ids[i] != image_token_id {
            t.push(p);
            h.push(p);
            w.push(p);
            p += 1;
            i += 1;
            continue;
        }
        let g = grids_iter.next().ok_or_else(|| {
            Error::invalid("images", format!("the prompt has more image tokens than the {} images given", grids.len()))
        })?;
        let (gt, gh, gw) = (g[0], g[1] / merge, g[2] / merge);
        let count = gt * gh * gw;
        if i + count > n || ids[i..i + count].iter().any(|&x| x != image_token_id) {
            return Err(Error::invalid(
                "images",
                format!("image {} needs {count} consecutive image tokens at prompt position {i}", grids.len() - grids_iter.len() - 1),
            ));
        }
        for f in 0..gt {
            for r in 0..gh {
                for c in 0..gw {
                    t.push(p + f as i64);
                    h.push(p + r as i64);
                    w.push(p + c as i64);
                }
            }
        }
        p += gt.max(gh).max(gw) as i64;
        i += count;
    }
    if grids_iter.next().is_some() {
        return Err(Error::invalid("images", format!("{} images given but the prompt has fewer image placeholders", grids.len())));
    }
    Ok(MropePositions { t, h, w, rope_delta: p - n as i64 })
}

/// Cos/sin tables `[len, freqs]` for the decoder at the given 3-D positions: frequency `i` turns with the
/// position on axis `axes[i]` (0 = t, 1 = h, 2 = w); how the frequencies are laid over the head's dimensions
/// is the family's business. Computed in f32, then cast to `dtype` as transformers does.
pub fn mrope_cos_sin(pos: [&[i64]; 3], inv_freq: &[f32], axes: &[usize], dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
    let len = pos[0].len();
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(len * half);
    let mut sin = Vec::with_capacity(len * half);
    for ((&t, &h), &w) in pos[0].iter().zip(pos[1]).zip(pos[2]) {
        let p = [t as f32, h as f32, w as f32];
        for (&axis, &f) in axes.iter().zip(inv_freq) {
            let angle = p[axis] * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
    let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
    Ok((cos, sin))
}

/// Half-width cos/sin `[n, head_dim/2]` (f32) of the vision encoder's 2-D rotary embedding, for
/// patch coordinates `(row, col)`: angles are `[row·inv_freq, col·inv_freq]`.
pub fn vision_cos_sin(coords: &[(usize, usize)], head_dim: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    // The encoder's rotary module is built with dim = head_dim/2 and theta 10000 regardless of config.
    let inv = inv_freq(10000.0, head_dim / 2);
    let half = 2 * inv.len();
    let mut cos = Vec::with_capacity(coords.len() * half);
    let mut sin = Vec::with_capacity(coords.len() * half);
    for &(r, c) in coords {
        for pos in [r, c] {
            for &f in &inv {
                let angle = pos as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    let n = coords.len();
    Ok((Tensor::from_vec(cos, (n, half), device)?, Tensor::from_vec(sin, (n, half), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_worked_example() {
        // [a, b, c, <vs>, img×6 (grid 1×6×4 patches), <ve>, d, e, f]
        let img = 9;
        let mut ids = vec![1, 2, 3, 4];
        ids.extend(std::iter::repeat_n(img, 6));
        ids.extend([5, 6, 7, 8]);
        let p = rope_index(&ids, img, &[[1, 6, 4]], 2).unwrap();
        assert_eq!(p.t, vec![0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9, 10]);
        assert_eq!(&p.h[4..10], &[4, 4, 5, 5, 6, 6]);
        assert_eq!(&p.w[4..10], &[4, 5, 4, 5, 4, 5]);
        assert_eq!(p.rope_delta, -3);
    }

    #[test]
    fn glm4v_spec_worked_example() {
        // spec/glm4v.md §4: [a, b, <boi>, img×6 (grid 1×4×6 patches), <eoi>, c]
        let img = 9;
        let mut ids = vec![1, 2, 3];
        ids.extend(std::iter::repeat_n(img, 6));
        ids.extend([4, 5]);
        let p = rope_index(&ids, img, &[[1, 4, 6]], 2).unwrap();
        assert_eq!(p.t, vec![0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7]);
        assert_eq!(p.h, vec![0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7]);
        assert_eq!(p.w, vec![0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7]);
        assert_eq!(p.rope_delta, -3);
    }

    #[test]
    fn mismatched_image_tokens_are_errors() {
        assert!(rope_index(&[1, 9, 9, 2], 9, &[[1, 4, 4]], 2).is_err());
        assert!(rope_index(&[1, 2], 9, &[[1, 2, 2]], 2).is_err());
        assert!(rope_index(&[1, 9, 2], 9, &[], 2).is_err());
    }
}
