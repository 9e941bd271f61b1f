//! Bicubic resampling bit-compatible with Pillow's `Image.resize(..., BICUBIC)` on 8-bit images (the
//! resampler of the reference image processors' PIL backends, Qwen2-VL's and GLM-4.1V's): separable
//! convolution with the a = -0.5 cubic, support scaled by the downscale factor (antialiasing), 22-bit
//! fixed-point weights, rounding and clamping to u8 after each pass, the passes in Pillow's order.

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights (Pillow's `precompute_coeffs` followed
/// by `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // `(int)` in C truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax.max(xmin)).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved 8-bit image with `channels` channels from `(w, h)` to `(out_w, out_h)`.
/// Pillow ≥ 13 runs the vertical pass first when the height shrinks and the width does not (older Pillow
/// always went horizontal first); the u8 rounding between the passes makes the order visible, so it is
/// followed here.
pub fn resize_bicubic(src: &[u8], w: usize, h: usize, channels: usize, out_w: usize, out_h: usize) -> Vec<u8> {
    if out_w >= w && out_h < h {
        let tall = vertical(src, w * channels, h, out_h);
        return horizontal(&tall, w, out_h, channels, out_w);
    }
    let wide = horizontal(src, w, h, channels, out_w);
    vertical(&wide, out_w * channels, h, out_h)
}

/// Resamples each row of `(w, h)` pixels to `out_w` (a copy when the width is unchanged).
fn horizontal(img: &[u8], w: usize, h: usize, channels: usize, out_w: usize) -> Vec<u8> {
    if out_w == w {
        return img.to_vec();
    }
    let coeffs = coefficients(w, out_w);
    let mut out = vec![0u8; out_w * h * channels];
    for y in 0..h {
        let row = &img[y * w * channels..(y + 1) * w * channels];
        for (xx, (xmin, k)) in coeffs.iter().enumerate() {
            for c in 0..channels {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &kw) in k.iter().enumerate() {
                    ss += row[(xmin + i) * channels + c] as i64 * kw as i64;
                }
                out[(y * out_w + xx) * channels + c] = clip8(ss);
            }
        }
    }
    out
}

/// Resamples each column of an image `stride` bytes wide from `h` rows to `out_h`.
fn vertical(img: &[u8], stride: usize, h: usize, out_h: usize) -> Vec<u8> {
    if out_h == h {
        return img.to_vec();
    }
    let coeffs = coefficients(h, out_h);
    let mut out = vec![0u8; out_h * stride];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..stride {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &kw) in k.iter().enumerate() {
                ss += img[(ymin + i) * stride + x] as i64 * kw as i64;
            }
            out[yy * stride + x] = clip8(ss);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        let src: Vec<u8> = (0..4 * 3 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&src, 4, 3, 3, 4, 3), src);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![200u8; 37 * 23];
        let out = resize_bicubic(&src, 37, 23, 1, 64, 11);
        assert_eq!(out.len(), 64 * 11);
        assert!(out.iter().all(|&v| v == 200));
    }
}
