//! The CPU attention kernels alone, against the machine's FMA peak: a causal prefill chunk at the end of a
//! context (the tiled kernel) and one decode row per KV head group (the row kernel), on a Qwen3-VL-shaped head
//! layout (8 KV heads, 2 query heads each, head_dim 128). Prints GFLOP/s (prefill) and GB/s of KV read (decode).
//!
//!   cd crate && cargo run --release --example attention [-- CONTEXT...]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use vtc_r1::model::attention;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let contexts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let contexts = if contexts.is_empty() { vec![1600, 4096, 16384] } else { contexts };
    let (groups, rep, hd, chunk) = (8usize, 2usize, 128usize, 512usize);
    let dev = Device::Cpu;
    for &ctx in &contexts {
        for kv_dtype in [DType::F32, DType::BF16] {
            let k = Tensor::randn(0f32, 1.0, (groups, ctx, hd), &dev)?.to_dtype(kv_dtype)?;
            let v = Tensor::randn(0f32, 1.0, (groups, ctx, hd), &dev)?.to_dtype(kv_dtype)?;
            // prefill: the last `chunk` queries of the context, as a chunked prefill runs them
            let q = Tensor::randn(0f32, 1.0, (groups, rep, chunk, hd), &dev)?;
            let offset = ctx - chunk;
            let visible: usize = (0..chunk).map(|i| offset + i + 1).sum();
            let flops = 4.0 * (groups * rep * hd * visible) as f64;
            let best = best_of(3, || attention::attention_for_prefill(&q, &k, &v, 1.0 / (hd as f64).sqrt(), offset).map(|_| ()))?;
            // decode: one query row per head, the whole context visible
            let q1 = Tensor::randn(0f32, 1.0, (groups, rep, 1, hd), &dev)?;
            let bytes = 2.0 * (groups * ctx * hd * kv_dtype.size_in_bytes()) as f64;
            let best_dec = best_of(5, || attention::attention_for_decode(&q1, &k, &v, 1.0 / (hd as f64).sqrt(), ctx - 1).map(|_| ()))?;
            println!(
                "context {ctx:>6} KV {kv_dtype:?}: prefill chunk of {chunk}: {:.1} ms, {:.1} GFLOP/s; decode row: {:.3} ms, {:.1} GB/s of KV",
                best * 1e3,
                flops / best / 1e9,
                best_dec * 1e3,
                bytes / best_dec / 1e9
            );
        }
    }
    Ok(())
}

fn best_of(n: usize, mut f: impl FnMut() -> vtc_r1::error::Result<()>) -> vtc_r1::error::Result<f64> {
    let mut best = f64::MAX;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}
