//! Normalization layers with transformers' arithmetic.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::weights::Weights;

/// RMSNorm with transformers' arithmetic: normalise in f32, cast back, then scale by the weight.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let xf = x.to_dtype(DType::F32)?;
    let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = xf.broadcast_mul(&(var + eps)?.sqrt()?.recip()?)?;
    Ok(normed.to_dtype(dtype)?.broadcast_mul(weight)?)
}

/// LayerNorm with a learned weight and bias (`nn.LayerNorm`).
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `{name}.weight` and `{name}.bias`, both `[dim]`.
    pub fn load(w: &Weights, name: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: w.get(&format!("{name}.weight"), &[dim])?, bias: w.get(&format!("{name}.bias"), &[dim])?, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)?)
    }
}
