//! Elementwise activations on all cores. candle's CPU unary ops run on one thread, and on this model's MLP
//! widths (e.g. 1224 patches × 4096 per vision layer) that left the second core idle for a quarter of a
//! vision encode. Same formulas as candle's, within a few ulp: `e^x` and `tanh` are our vectorized ones. bf16
//! on the CPU is widened to f32 for the math (candle's bf16 ops are slower still); other devices use candle's
//! ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::Result;
#[cfg(target_arch = "x86_64")]
use crate::model::vectorized::{avx2, avx512};
use crate::model::vectorized::exp;
use crate::model::is_cpu_with;

/// Elements per rayon task: large enough that scheduling costs nothing next to the math.
const GRAIN: usize = 1 << 14;

#[allow(clippy::excessive_precision)]
const SQRT_TWO_OVER_PI: f32 = 0.797_884_560_802_865_4;

/// GELU, tanh approximation (`gelu_pytorch_tanh`).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if is_cpu_with(x, DType::BF16) {
        // computed in f32 and rounded once, as PyTorch does for bf16
        return Ok(gelu_tanh(&x.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)?);
    }
    if !is_cpu_with(x, DType::F32) {
        return Ok(x.gelu()?);
    }
    Ok(x.contiguous()?.apply_op1_no_bwd(&Elementwise(Op::GeluTanh))?)
}

/// `silu(gate) * up`, the gated MLP's activation, in one pass.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if is_cpu_with(gate, DType::BF16) && is_cpu_with(up, DType::BF16) {
        return Ok(silu_mul(&gate.to_dtype(DType::F32)?, &up.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)?);
    }
    if !is_cpu_with(gate, DType::F32) || !is_cpu_with(up, DType::F32) || gate.dims() != up.dims() {
        return Ok((candle_nn::ops::silu(gate)? * up)?);
    }
    Ok(gate.contiguous()?.apply_op2_no_bwd(&up.contiguous()?, &Elementwise(Op::SiluMul))?)
}

/// `silu(gate) * up` of a gated MLP's gate and up products side by side, `[.., 2i]` (gate first): as
/// [`silu_mul`] of the two halves, without copying them apart.
pub fn silu_mul_halves(gate_up: &Tensor) -> Result<Tensor> {
    let width = gate_up.dim(candle_core::D::Minus1)?;
    if width % 2 != 0 {
        return Err(crate::error::Error::Model(format!("gate and up side by side: an odd width {width}")));
    }
    if is_cpu_with(gate_up, DType::BF16) {
        return Ok(silu_mul_halves(&gate_up.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)?);
    }
    if !is_cpu_with(gate_up, DType::F32) {
        let half = |start| gate_up.narrow(candle_core::D::Minus1, start, width / 2);
        return silu_mul(&half(0)?, &half(width / 2)?);
    }
    Ok(gate_up.contiguous()?.apply_op1_no_bwd(&Halves)?)
}

/// [`silu_mul_halves`]' CPU op: row by row, each row's halves through [`Op::SiluMul`], rows on all cores.
struct Halves;

impl CustomOp1 for Halves {
    fn name(&self) -> &'static str {
        "par-silu-mul-halves"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let mut dims = l.dims().to_vec();
        let half = dims.last().copied().unwrap_or(0) / 2;
        *dims.last_mut().unwrap() = half;
        let mut out = vec![0f32; x.len() / 2];
        if half > 0 {
            let rows = (GRAIN / half).max(1);
            out.par_chunks_mut(rows * half).zip(x.par_chunks(rows * 2 * half)).for_each(|(o, x)| {
                for (o, x) in o.chunks_exact_mut(half).zip(x.chunks_exact(2 * half)) {
                    let (gate, up) = x.split_at(half);
                    dispatch(Op::SiluMul, o, gate, up);
                }
            });
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

/// The contiguous f32 elements of a CPU tensor.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

/// The element-wise ops of this module's CPU path.
#[derive(Clone, Copy)]
enum Op {
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, of one input.
    GeluTanh,
    /// `silu(gate) · up`, of two.
    SiluMul,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GeluTanh => "par-gelu-tanh",
            Op::SiluMul => "par-silu-mul",
        }
    }
}

struct Elementwise(Op);

impl Elementwise {
    /// `out[i] = op(a[i], b[i])` on all cores, in chunks of [`GRAIN`].
    fn run(&self, a: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let mut out = vec![0f32; a.len()];
        let op = self.0;
        match b {
            Some(b) => out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN).zip(b.par_chunks(GRAIN))).for_each(|(o, (a, b))| dispatch(op, o, a, b)),
            None => out.par_chunks_mut(GRAIN).zip(a.par_chunks(GRAIN)).for_each(|(o, a)| dispatch(op, o, a, a)),
        }
        out
    }
}

impl CustomOp1 for Elementwise {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.0.name())?;
        Ok((CpuStorage::F32(self.run(x, None)), l.shape().clone()))
    }
}

impl CustomOp2 for Elementwise {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (gate, up) = (f32_slice(s1, l1, self.0.name())?, f32_slice(s2, l2, self.0.name())?);
        Ok((CpuStorage::F32(self.run(gate, Some(up))), l1.shape().clone()))
    }
}

/// [`apply`] compiled for the widest vectors the CPU has. Element-wise, so the bits do not depend on the width.
fn dispatch(op: Op, out: &mut [f32], a: &[f32], b: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the features are present.
        return unsafe { apply_avx512(op, out, a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the features are present.
        return unsafe { apply_avx2(op, out, a, b) };
    }
    apply(op, out, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn apply_avx512(op: Op, out: &mut [f32], a: &[f32], b: &[f32]) {
    apply(op, out, a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn apply_avx2(op: Op, out: &mut [f32], a: &[f32], b: &[f32]) {
    apply(op, out, a, b)
}

/// The ops element by element with the `e^x` that vectorizes (std's `exp` and `tanh` are libm calls per element,
/// which took most of these ops' time). `e^-|x|` never overflows, so a SiLU gate far below zero gives 0, as it
/// should, and `tanh` is exact at ±1 far from zero; NaN stays NaN.
#[inline(always)]
fn apply(op: Op, out: &mut [f32], a: &[f32], b: &[f32]) {
    match op {
        Op::SiluMul => {
            for ((o, &g), &u) in out.iter_mut().zip(a).zip(b) {
                let e = exp(-g.abs());
                // g ≥ 0: g / (1 + e^-g), candle's form; g < 0: g · e^g / (1 + e^g); below -88, where e^g is past
                // f32's range, 0 (times g: NaN stays NaN)
                let silu = if g >= 0.0 {
                    g / (1.0 + e)
                } else if g > -88.0 {
                    g * e / (1.0 + e)
                } else {
                    0.0 * g
                };
                *o = silu * u;
            }
        }
        Op::GeluTanh => {
            for (o, &v) in out.iter_mut().zip(a) {
                let y = SQRT_TWO_OVER_PI * v * (1.0 + 0.044715 * v * v);
                // tanh(y) = sign(y)·(1 - e^-2|y|) / (1 + e^-2|y|)
                let e = exp(-2.0 * y.abs());
                let t = (1.0 - e) / (1.0 + e);
                let tanh = if y >= 0.0 { t } else if y < 0.0 { -t } else { y };
                *o = 0.5 * v * (1.0 + tanh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn parallel_activations_equal_candles_ops_and_accept_strided_input() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (257, 300), &dev).unwrap();
        let y = Tensor::randn(0f32, 1.0, (257, 300), &dev).unwrap();
        let close = |got: &Tensor, want: &Tensor, x: &Tensor, ulps: f32| {
            let [got, want, x] = [got, want, x].map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
            for ((g, w), v) in got.iter().zip(&want).zip(&x) {
                // where 1 + tanh cancels (x far below zero), the error is relative to x, in candle's form too
                assert!((g - w).abs() <= ulps * f32::EPSILON * (w.abs() + v.abs()) + f32::MIN_POSITIVE, "{g} against {w} at {v}");
            }
        };
        // GELU through our vectorized tanh: within a few ulp of candle's
        close(&gelu_tanh(&x).unwrap(), &x.gelu().unwrap(), &x, 4.0);
        let edge = Tensor::new(&[-1e4f32, -20.0, 0.0, 20.0, 1e4, f32::NAN], &dev).unwrap();
        let got = gelu_tanh(&edge).unwrap().to_vec1::<f32>().unwrap();
        assert!(got[0] == 0.0 && got[1].abs() < 1e-30 && got[2] == 0.0 && got[3] == 20.0 && got[4] == 1e4 && got[5].is_nan(), "{got:?}");
        // SiLU through our vectorized exp (2 ulp of std's): each element within a few ulp of candle's silu · up
        let want = (candle_nn::ops::silu(&x).unwrap() * &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = silu_mul(&x, &y).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 6.0 * f32::EPSILON * w.abs() + f32::MIN_POSITIVE, "{g} against {w}");
        }
        // side by side in one tensor: the same bits as the halves apart
        let halves = silu_mul_halves(&Tensor::cat(&[&x, &y], 1).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(halves.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()), "halves differ from silu_mul");
        // far below zero the gate closes (candle: 0 from -inf / inf, NaN), NaN stays NaN
        let edge = Tensor::new(&[-1e4f32, -100.0, -f32::MAX, f32::NAN, 100.0], &dev).unwrap();
        let ones = Tensor::ones(5, DType::F32, &dev).unwrap();
        let got = silu_mul(&edge, &ones).unwrap().to_vec1::<f32>().unwrap();
        assert!(got[..3].iter().all(|v| v.abs() < 1e-30), "{got:?}");
        assert!(got[3].is_nan() && got[4] == 100.0, "{got:?}");
        // a strided (transposed) view is made contiguous first
        let xt = x.t().unwrap();
        close(&gelu_tanh(&xt).unwrap(), &xt.gelu().unwrap(), &xt, 4.0);
    }
}
