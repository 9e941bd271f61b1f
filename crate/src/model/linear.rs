//! Dense layers. The weight is kept transposed, `[in, out]` and contiguous: gemm multiplies `x · Wᵀ` with a
//! row-major right-hand side without repacking a strided view (prefill +35%, vision encode +15% over
//! candle's `x · W.t()`). A few rows (a decode step of one sequence or a batch of them) go through a kernel of
//! our own instead, which streams the weight once, in memory order, on all cores, in f32 or bf16 (candle's CPU
//! bf16 matmul is very slow). Its result for a row does not depend on the other rows, so a sequence decodes
//! to the same bits alone or in a batch.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Module, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

use crate::error::{Error, Result};
#[cfg(target_arch = "x86_64")]
use crate::model::few_rows;
use crate::model::{is_cpu_with, qkernels, Step};
use crate::weights::Weights;

pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
}

enum Weight {
    /// `[in, out]`.
    Dense(Tensor),
    /// `[out, in]` in ggml blocks: candle's matmul, and the blocks for our one-row kernels.
    Quantized(QMatMul, Arc<QTensor>),
}

impl Linear {
    /// `weight` as stored by transformers, `[out, in]`; `bias` `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self { weight: Weight::Dense(weight.t()?.contiguous()?), bias })
    }

    /// Loads `{name}.weight` `[out_dim, in_dim]` and, with `bias`, `{name}.bias` `[out_dim]`, dense.
    pub fn load(w: &Weights, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = if bias { Some(w.get(&format!("{name}.bias"), &[out_dim])?) } else { None };
        Self::new(weight, bias)
    }

    /// Like [`load`](Self::load), but the weight is quantized when the model is loaded with a quantization
    /// (the decoder's linear layers; the bias stays dense).
    pub fn load_quantizable(w: &Weights, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<Self> {
        let Some(q) = w.quantized(&format!("{name}.weight"), [out_dim, in_dim])? else {
            return Self::load(w, name, out_dim, in_dim, bias);
        };
        let bias = if bias { Some(w.get(&format!("{name}.bias"), &[out_dim])?) } else { None };
        Self::quantized(q, bias)
    }

    /// A quantized layer over an already quantized `[out, in]` weight.
    pub fn quantized(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        Ok(Self { weight: Weight::Quantized(QMatMul::from_arc(weight.clone())?, weight), bias })
    }

    /// `x · Wᵀ + b` over the last dimension of `x`: up to [`MAX_FEW_ROWS`] rows through the few-row kernels,
    /// more through gemm.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, rows_of(x)? <= MAX_FEW_ROWS)
    }

    /// [`forward`](Self::forward) for a decoder step: a decode step (at most [`MAX_FEW_ROWS`] rows, one per
    /// sequence) through the few-row kernels, a prefill chunk through gemm whatever its length, so a token's
    /// result does not depend on how its prompt was chunked (see `model::Step`).
    pub fn forward_step(&self, step: Step, x: &Tensor) -> Result<Tensor> {
        match step {
            Step::Decode => self.forward_with(x, true),
            Step::Prefill if rows_of(x)? < PREFILL_MIN_ROWS && x.device().is_cpu() && x.rank() == 2 => {
                // gemm multiplies a few rows another way than many, with other bits (one row: a gemv; rows × out
                // features ≤ 256 by a transposed weight: dot-product kernels): pad a short chunk with zero rows.
                let rows = x.dim(0)?;
                let padded = x.pad_with_zeros(0, 0, PREFILL_MIN_ROWS - rows)?;
                Ok(self.forward_with(&padded, false)?.narrow(0, 0, rows)?)
            }
            Step::Prefill => self.forward_with(x, false),
        }
    }

    /// One layer of `parts` over the same input, their outputs side by side in order (q/k/v; gate/up): the weights
    /// read in one pass, one parallel step where there were several. A decode step of a small layer is dominated
    /// by waking the other threads (~20 µs a product on a 2-core VM, as long as streaming a 1024×1024 q4k weight);
    /// with q/k/v and gate/up side by side, q4k decode of the 1024×8 bench model took ~6% less time. Each output is
    /// computed as its own layer would: a weight row's dot product does not depend on its neighbours. The parts
    /// are all dense, or all quantized with one block type (a quantized weight's type follows its input width,
    /// which they share); biases on all or none.
    pub fn side_by_side(parts: Vec<Linear>) -> Result<Self> {
        let widths = parts.iter().map(Linear::outputs).collect::<Result<Vec<_>>>()?;
        let biases: Vec<Tensor> = parts.iter().filter_map(|p| p.bias.clone()).collect();
        let bias = match biases.len() {
            0 => None,
            n if n == parts.len() => Some(Tensor::cat(&biases, 0)?),
            _ => return Err(Error::Model("linear layers side by side: biases on some only".into())),
        };
        let dense: Option<Vec<Tensor>> = parts.iter().map(|p| if let Weight::Dense(t) = &p.weight { Some(t.clone()) } else { None }).collect();
        let quantized: Option<Vec<&QTensor>> = parts.iter().map(|p| if let Weight::Quantized(_, q) = &p.weight { Some(q.as_ref()) } else { None }).collect();
        let weight = match (dense, quantized) {
            // [in, out] each: side by side along the outputs
            (Some(ws), _) => Weight::Dense(Tensor::cat(&ws, 1)?.contiguous()?),
            (_, Some(qs)) if qs.iter().all(|q| q.dtype() == qs[0].dtype()) => {
                // [out, in] in blocks of whole rows: the parts' blocks one after the other
                let mut blocks = Vec::new();
                for q in &qs {
                    blocks.extend_from_slice(&q.data()?);
                }
                let (dtype, device, cols) = (qs[0].dtype(), qs[0].device(), qs[0].shape().dims2()?.1);
                let storage = QStorage::from_data(std::borrow::Cow::Owned(blocks), &device, dtype)?;
                let q = Arc::new(QTensor::new(storage, (widths.iter().sum::<usize>(), cols))?);
                Weight::Quantized(QMatMul::from_arc(q.clone())?, q)
            }
            _ => return Err(Error::Model("linear layers side by side: of different weight types".into())),
        };
        Ok(Self { weight, bias })
    }

    /// Outputs of the layer.
    fn outputs(&self) -> Result<usize> {
        Ok(match &self.weight {
            Weight::Dense(w) => w.dim(1)?,
            Weight::Quantized(_, q) => q.shape().dims2()?.0,
        })
    }

    fn forward_with(&self, x: &Tensor, few_rows: bool) -> Result<Tensor> {
        let y = match &self.weight {
            Weight::Dense(w) => dense_forward(x, w, few_rows)?,
            Weight::Quantized(m, q) => quantized_forward(x, m, q, few_rows)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Linear layers over one input (q/k/v) run as one product ([`Linear::side_by_side`]), each part's output a
/// view of it.
pub struct Fused {
    linear: Linear,
    /// Outputs of each part, in order.
    widths: Vec<usize>,
}

impl Fused {
    /// `parts` over the same input, side by side (see [`Linear::side_by_side`]).
    pub fn new(parts: Vec<Linear>) -> Result<Self> {
        let widths = parts.iter().map(Linear::outputs).collect::<Result<Vec<_>>>()?;
        Ok(Self { linear: Linear::side_by_side(parts)?, widths })
    }

    /// Each of the `N` parts' outputs, as [`Linear::forward_step`] (views of one product over the last dimension).
    pub fn forward_step<const N: usize>(&self, step: Step, x: &Tensor) -> Result<[Tensor; N]> {
        if self.widths.len() != N {
            return Err(Error::Model(format!("a layer fused from {} parts read as {N}", self.widths.len())));
        }
        let y = self.linear.forward_step(step, x)?;
        let mut parts = Vec::with_capacity(N);
        let mut first = 0;
        for &width in &self.widths {
            parts.push(y.narrow(candle_core::D::Minus1, first, width)?);
            first += width;
        }
        Ok(parts.try_into().expect("checked: N parts"))
    }
}

/// Rows up to which a product goes through the few-row kernels (ours, and candle's per-row quantized dot
/// products) rather than gemm: the largest decode batch. A row's result then does not depend on how many
/// rows share the product.
pub const MAX_FEW_ROWS: usize = 16;

/// Rows a prefill chunk is padded to (see [`Linear::forward_step`]): past gemm's small-product paths for
/// every layer with 16 or more outputs.
const PREFILL_MIN_ROWS: usize = 32;

/// Rows of `x` (all dimensions but the last).
fn rows_of(x: &Tensor) -> Result<usize> {
    Ok(x.elem_count() / x.dim(candle_core::D::Minus1)?)
}

/// `x · Wᵀ` for a quantized weight. On the CPU, a few rows (decode steps) through our kernels where they cover
/// the block type (they stream the blocks at twice the speed of candle's on AVX2), many rows (a prefill chunk)
/// through ours where they beat candle's (8-bit integer products where AVX-512 VNNI runs, else gemm on f32
/// values dequantized a cache-sized panel at a time); the rest through candle's, which take f32.
fn quantized_forward(x: &Tensor, m: &QMatMul, q: &QTensor, few_rows: bool) -> Result<Tensor> {
    let (n, k) = q.shape().dims2()?;
    if x.dim(candle_core::D::Minus1)? != k {
        // our kernels take the rows flat: check the shape as candle's matmul would
        return Err(candle_core::Error::Msg(format!("quantized linear layer of {k} inputs applied to a tensor of shape {:?}", x.dims())).into());
    }
    let kernel: Option<qkernels::Product> = match few_rows {
        true if qkernels::supports(q.dtype()) => Some(qkernels::few_rows),
        false if qkernels::many_rows_beats_candle(q.dtype()) => Some(qkernels::many_rows),
        _ => None,
    };
    if let Some(kernel) = kernel.filter(|_| x.device().is_cpu()) {
        let xs = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let y = kernel(q.dtype(), &q.data()?, n, k, &xs);
        let mut dims = x.dims().to_vec();
        *dims.last_mut().unwrap() = n;
        return Ok(Tensor::from_vec(y, dims, x.device())?.to_dtype(x.dtype())?);
    }
    Ok(m.forward(&x.to_dtype(DType::F32)?.contiguous()?)?.to_dtype(x.dtype())?)
}

/// `x · w` for a dense weight `w` `[in, out]`.
fn dense_forward(x: &Tensor, weight_t: &Tensor, few_rows: bool) -> Result<Tensor> {
    Ok(if few_rows && few_rows_kernel_applies(x, weight_t) {
        let mut dims = x.dims().to_vec();
        *dims.last_mut().unwrap() = weight_t.dim(1)?;
        x.contiguous()?.apply_op2_no_bwd(weight_t, &FewRows::InOut)?.reshape(dims)?
    } else if is_cpu_with(x, DType::BF16) {
        // candle's CPU bf16 matmul is ~4× slower than widening both sides and using the f32 kernels
        // (f32 accumulation, one rounding to bf16: what a bf16 matmul computes anyway).
        let w = weight_t.to_dtype(DType::F32)?;
        x.to_dtype(DType::F32)?.broadcast_matmul(&w)?.to_dtype(DType::BF16)?
    } else if x.rank() == 2 {
        x.matmul(weight_t)?
    } else {
        x.broadcast_matmul(weight_t)?
    })
}

/// The output head: `x · Wᵀ` over the vocabulary, f32 logits. Dense, it keeps the stored `[vocab, hidden]`
/// layout (it may be the token embeddings' own storage); quantized, it is a quantized linear layer.
pub enum OutputHead {
    Dense(Tensor),
    Quantized(Linear),
}

impl OutputHead {
    /// `lm_head.weight`, or with `tied` the token embeddings (`embed`, loaded from `embed_name`); quantized
    /// when the model is loaded with a quantization.
    pub fn load(w: &Weights, embed: &Tensor, embed_name: &str, tied: bool) -> Result<Self> {
        let (vocab, hidden) = embed.dims2()?;
        let name = if tied { embed_name } else { "lm_head.weight" };
        if let Some(q) = w.quantized(name, [vocab, hidden])? {
            return Ok(Self::Quantized(Linear::quantized(q, None)?));
        }
        // Tied checkpoints omit lm_head.weight (transformers 5 `save_pretrained`); when tied it is ignored even
        // if present, as transformers does.
        Ok(Self::Dense(if tied { embed.clone() } else { w.get(name, &[vocab, hidden])? }))
    }

    /// f32 logits `[len, vocab]` of hidden states `[len, hidden]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        let y = match self {
            Self::Dense(w) => times_transposed(hidden, w)?,
            Self::Quantized(l) => l.forward(hidden)?,
        };
        Ok(y.to_dtype(DType::F32)?)
    }
}

/// `x · wᵀ` for a weight stored `[out, in]` that cannot be kept transposed (the output head shares its
/// storage with the token embeddings). A few rows on the CPU go through our kernel, which reads the
/// 150K×hidden head at ~1.6× gemm's speed; anything else through candle's matmul.
pub fn times_transposed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.rank() == 2 && x.dim(0)? <= MAX_FEW_ROWS && few_rows_kernel_applies(x, w) {
        return Ok(x.contiguous()?.apply_op2_no_bwd(&w.contiguous()?, &FewRows::OutIn)?);
    }
    Ok(x.matmul(&w.t()?)?)
}

fn few_rows_kernel_applies(x: &Tensor, w: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == w.dtype() && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// A few rows times a weight, on all CPU threads, each streaming its share of the weight once in memory
/// order (gemm's one-row path reached ~24 GB/s from DRAM here, these ~40 GB/s) and using each weight value
/// for every row while it is in cache. Sums are in f32, in an order that depends only on the weight's shape,
/// never on the number of rows; a bf16 result is rounded once at the end, as a bf16 matmul with f32
/// accumulation does.
enum FewRows {
    /// Weight `[k, n]`: each thread takes a block of weight rows and adds `x[i] · row i` into its own partial
    /// sums (splitting by output columns instead strides through the rows and was 2× slower).
    InOut,
    /// Weight `[n, k]`: each thread takes a block of weight rows, one dot product with each `x` per output.
    OutIn,
}


/// Weight elements the kernels read, widened to f32.
#[cfg(target_arch = "x86_64")]
trait Widen: Copy + Send + Sync + few_rows::Lanes {
    fn widen(self) -> f32;
}

/// Weight elements the kernels read, widened to f32.
#[cfg(not(target_arch = "x86_64"))]
trait Widen: Copy + Send + Sync {
    fn widen(self) -> f32;
}

impl Widen for f32 {
    fn widen(self) -> f32 {
        self
    }
}

impl Widen for bf16 {
    fn widen(self) -> f32 {
        // bf16 is the top half of an f32: a shift, exact for every value (half's `to_f32` branches on NaN)
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

impl CustomOp2 for FewRows {
    fn name(&self) -> &'static str {
        "few-rows-times-weight"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (Some((a, b)), Some((c, d))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("{}: expects contiguous tensors", self.name());
        };
        let (r, cols) = l2.shape().dims2()?;
        let (k, n) = match self {
            FewRows::InOut => (r, cols),
            FewRows::OutIn => (cols, r),
        };
        if (b - a) % k != 0 || b == a {
            candle_core::bail!("{}: rows of {} values in all times a weight of shape [{r}, {cols}]", self.name(), b - a);
        }
        let m = (b - a) / k;
        let y = match (s1, s2) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => CpuStorage::F32(self.run(&x[a..b], &w[c..d], k, n)),
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
                let x: Vec<f32> = x[a..b].iter().map(|v| v.widen()).collect();
                CpuStorage::BF16(self.run(&x, &w[c..d], k, n).into_iter().map(bf16::from_f32).collect())
            }
            _ => candle_core::bail!("{}: expects f32 or bf16 tensors of one dtype", self.name()),
        };
        Ok((y, Shape::from((m, n))))
    }
}

impl FewRows {
    /// `x` holds `m` rows of `k` values; returns `[m, n]`. Each thread takes a block of weight rows (`InOut`:
    /// partial sums, added in order; `OutIn`: whole outputs), so the weight is read once in all.
    fn run<W: Widen>(&self, x: &[f32], w: &[W], k: usize, n: usize) -> Vec<f32> {
        let m = x.len() / k;
        let threads = rayon::current_num_threads().max(1);
        match self {
            FewRows::InOut => {
                let rows_per_task = k.div_ceil(threads).max(1);
                let partials: Vec<Vec<f32>> = (0..k.div_ceil(rows_per_task))
                    .into_par_iter()
                    .map(|task| {
                        let (first, last) = (task * rows_per_task, ((task + 1) * rows_per_task).min(k));
                        let mut y = vec![0f32; m * n];
                        #[cfg(target_arch = "x86_64")]
                        if few_rows::supported() {
                            // SAFETY: checked AVX2 and FMA; x is [m, k], w [k, n], y [m, n].
                            unsafe { few_rows::in_out(x, m, k, w, n, first, last, &mut y) };
                            return y;
                        }
                        for i in first..last {
                            let row = &w[i * n..(i + 1) * n];
                            for (r, out) in y.chunks_exact_mut(n).enumerate() {
                                let xi = x[r * k + i];
                                out.iter_mut().zip(row).for_each(|(o, &wv)| *o += xi * wv.widen());
                            }
                        }
                        y
                    })
                    .collect();
                let mut parts = partials.into_iter();
                let mut y = parts.next().unwrap_or_else(|| vec![0f32; m * n]);
                for p in parts {
                    y.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
                }
                y
            }
            FewRows::OutIn => {
                // [n, m] while computing (each task writes whole weight rows' outputs), then [m, n].
                let mut yt = vec![0f32; n * m];
                let outputs_per_task = n.div_ceil(threads * 8).max(1);
                yt.par_chunks_mut(outputs_per_task * m).enumerate().for_each(|(task, out)| {
                    let first = task * outputs_per_task;
                    let rows = first..first + out.len() / m;
                    #[cfg(target_arch = "x86_64")]
                    if few_rows::supported() {
                        // SAFETY: checked AVX2 and FMA; x is [m, k], w [n, k], out [rows, m].
                        unsafe { few_rows::out_in(x, m, k, w, rows, out) };
                        return;
                    }
                    for (o, row) in out.chunks_exact_mut(m).zip(w[rows.start * k..rows.end * k].chunks_exact(k)) {
                        for (r, o) in o.iter_mut().enumerate() {
                            *o = dot(&x[r * k..(r + 1) * k], row);
                        }
                    }
                });
                qkernels::outputs_by_row(yt, n, m)
            }
        }
    }
}

/// Dot product with independent partial sums, so it vectorizes (one running sum is a serial chain).
fn dot<W: Widen>(a: &[f32], b: &[W]) -> f32 {
    const LANES: usize = 16;
    let mut sums = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y.widen()).sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in sums.iter_mut().zip(xa).zip(xb) {
            *s += x * y.widen();
        }
    }
    sums.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}");
        let d = crate::model::max_abs_diff(got, want).unwrap();
        assert!(d < 1e-4, "{what}: {d}");
    }

    #[test]
    fn forward_equals_x_times_w_transposed_plus_bias_for_one_row_and_many() {
        let dev = Device::Cpu;
        let (k, n) = (301, 1100); // k not a multiple of the thread count
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        let lin = Linear::new(w.clone(), Some(b.clone())).unwrap();
        for shape in [vec![1, k], vec![1, 1, k], vec![7, k], vec![2, 3, k]] {
            let x = Tensor::randn(0f32, 1.0, shape.as_slice(), &dev).unwrap();
            let want = x.broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
            assert_close(&lin.forward(&x).unwrap(), &want, &format!("{shape:?}"));
        }
    }

    /// A row's output is the same bits alone (the one-row path) as among 11 rows (tiles of 32 columns × 8 rows
    /// where AVX-512 runs, of 16 × 4, and the scalar tail): 117 columns cover all three, 300 inputs several runs of weight rows.
    #[test]
    fn a_rows_result_does_not_depend_on_the_other_rows() {
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let w = Tensor::randn(0f32, 1.0, (117, 300), &dev).unwrap().to_dtype(dtype).unwrap();
            let x = Tensor::randn(0f32, 1.0, (11, 300), &dev).unwrap().to_dtype(dtype).unwrap();
            let lin = Linear::new(w, None).unwrap();
            let together = lin.forward(&x).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
            for (r, got) in together.iter().enumerate() {
                let alone = lin.forward(&x.narrow(0, r, 1).unwrap()).unwrap().to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap();
                assert!(got.iter().zip(&alone[0]).all(|(a, b)| a.to_bits() == b.to_bits()), "{dtype:?} row {r}");
            }
        }
    }

    #[test]
    fn times_transposed_equals_candles_matmul_for_one_row_and_many() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (1037, 301), &dev).unwrap(); // [out, in], neither a multiple of 16
        for rows in [1, 5] {
            let x = Tensor::randn(0f32, 1.0, (rows, 301), &dev).unwrap();
            let want = x.matmul(&w.t().unwrap()).unwrap();
            assert_close(&times_transposed(&x, &w).unwrap(), &want, &format!("{rows} rows"));
        }
    }

    #[test]
    fn bf16_one_row_matches_candles_matmul_within_bf16_rounding() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (515, 301), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 301), &dev).unwrap().to_dtype(DType::BF16).unwrap();
        // reference: the same bf16 values multiplied in f32
        let want = x.to_dtype(DType::F32).unwrap().matmul(&w.to_dtype(DType::F32).unwrap().t().unwrap()).unwrap();
        let head = times_transposed(&x, &w).unwrap();
        let lin = Linear::new(w.clone(), None).unwrap().forward(&x).unwrap();
        let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for got in [head, lin] {
            assert_eq!(got.dtype(), DType::BF16);
            let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                // one bf16 rounding of the f32 sum: at most half of 2^-7 relative
                assert!((g - w).abs() <= w.abs() / 256.0 + 1e-3, "{g} vs {w}");
            }
        }
    }
}
