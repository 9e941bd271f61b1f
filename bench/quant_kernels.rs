//! One row (a decode step) and 512 rows (a prefill chunk) times a 13696×4096 weight (GLM-4.1V's MLP width):
//! our dense f32 path, candle's quantized matmul and ours (crate/src/model/qkernels.rs, behind `Linear`) for
//! q8_0, q4k and q6k, with the weight bytes streamed per second and the ratio ours ÷ candle.
//!
//!   cd crate && cargo run --release --example quant_kernels

use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use vtc_r1::model::linear::Linear;

fn main() {
    let dev = Device::Cpu;
    let (n, k) = (13696usize, 4096usize);
    let w = Tensor::randn(0f32, 0.02, (n, k), &dev).unwrap();
    let dense = Linear::new(w.clone(), None).unwrap();
    for m in [1usize, 512] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let reps = if m == 1 { 50 } else { 3 };
        // best of `reps` calls after a warm-up
        let time = |f: &dyn Fn() -> Tensor| {
            f();
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        let td = time(&|| dense.forward(&x).unwrap());
        println!("{m} rows: f32 {:.2} ms ({:.1} GB/s of weights)", td * 1e3, (n * k * 4) as f64 / td / 1e9);
        for dt in [GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let q = Arc::new(QTensor::quantize(&w, dt).unwrap());
            let candle = QMatMul::from_arc(q.clone()).unwrap();
            let ours = Linear::quantized(q, None).unwrap();
            let bytes = (n * k / dt.block_size() * dt.type_size()) as f64;
            let (tc, to) = (time(&|| candle.forward(&x).unwrap()), time(&|| ours.forward(&x).unwrap()));
            println!(
                "{m} rows: {dt:?} candle {:.2} ms ({:.1} GB/s), ours {:.2} ms ({:.1} GB/s), ours ÷ candle {:.2}×",
                tc * 1e3,
                bytes / tc / 1e9,
                to * 1e3,
                bytes / to / 1e9,
                tc / to
            );
        }
    }
}
