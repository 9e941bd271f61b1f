//! The golden fidelity checks on a CUDA device, for every model family, through the engine as users run it: f32
//! next-token log-probabilities within 1e-3 of the transformers logits, greedy tokens exact where the fixture's
//! top-1 margin leaves room for float differences, bf16 top-1 agreement, quantized weights, and batching. They run
//! with `VTC_TEST_DEVICE=cuda` on a build with the `cuda` feature (`scripts/gpu-check.sh` does both); without
//! that, each test says it is skipped and passes, so the same suite is the GPU check.

mod common;

use common::*;
use vtc_r1::engine::{DeviceKind, Engine, EngineOptions, WeightDtype};
use vtc_r1::generate::GenerationParams;
use vtc_r1::quant::Quantization;

const FAMILIES: [&str; 2] = ["qwen3vl", "glm4v"];
/// f32 on a GPU (other kernels, other summation orders) against the CPU reference.
const TOL: f32 = 1e-3;
/// Below this top-1 margin a float difference may flip a greedy token, so only a prefix is required.
const SAFE_MARGIN: f64 = 0.05;

/// The CUDA device when the run asks for it; `None` (skipped, with the reason) otherwise.
fn cuda(test: &str) -> Option<DeviceKind> {
    if std::env::var("VTC_TEST_DEVICE").as_deref() != Ok("cuda") {
        eprintln!("{test}: skipped (set VTC_TEST_DEVICE=cuda on a machine with an NVIDIA GPU; scripts/gpu-check.sh)");
        return None;
    }
    assert!(cfg!(feature = "cuda"), "VTC_TEST_DEVICE=cuda needs a build with --features cuda");
    Some(DeviceKind::Cuda(0))
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams { max_tokens, ignore_eos: true, logprobs: Some(5), ..Default::default() }
}

/// Every e2e case of every family on `dtype`: `check(family, case, golden tokens, margin, completion, golden logprobs)`.
fn for_each_case(device: DeviceKind, dtype: WeightDtype, quantize: Option<Quantization>, mut check: impl FnMut(&str, &str, &[u32], f64, &vtc_r1::engine::Completion, &[f32])) {
    for family in FAMILIES {
        let dir = family_dir(family).join("e2e");
        let gj = golden_json_in(&dir);
        let g = Golden::load(&dir);
        for (case, spec) in gj["cases"].as_object().unwrap() {
            let max_pixels = spec["max_pixels"].as_u64().map(|n| n as usize);
            let options = EngineOptions { device, dtype, quantize, max_pixels, quant_cache_dir: Some(std::env::temp_dir().join("vtc-r1-cuda-test")), ..Default::default() };
            let engine = Engine::load(&dir, options).unwrap_or_else(|e| panic!("{family}: loading on CUDA: {e}"));
            let pages: Vec<&str> = spec["pages"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
            let want = g.ids(&format!("{case}.greedy_tokens"));
            let c = engine.generate(request_in(&dir, &gj, &pages, greedy(want.len()))).unwrap_or_else(|e| panic!("{family}/{case}: {e}"));
            let logits = g.get(&format!("{case}.logits")).flatten_all().unwrap().to_vec1::<f32>().unwrap();
            check(family, case, &want, spec["greedy_min_top1_margin"].as_f64().unwrap(), &c, &log_softmax(&logits));
        }
    }
}

#[test]
fn f32_matches_the_golden_logits_and_greedy_tokens_on_cuda() {
    let Some(device) = cuda("f32 golden") else { return };
    for_each_case(device, WeightDtype::F32, None, |family, case, want, margin, c, golden| {
        for alt in &c.logprobs[0].top {
            let d = (alt.logprob - golden[alt.token as usize]).abs();
            assert!(d <= TOL, "{family}/{case}: logprob of token {} off by {d}", alt.token);
        }
        let same = c.tokens.iter().zip(want).take_while(|(a, b)| a == b).count();
        println!("{family}/{case}: {same}/{} greedy tokens as transformers (top-1 margin {margin:.3})", want.len());
        if margin >= SAFE_MARGIN {
            assert_eq!(c.tokens, want, "{family}/{case}: greedy tokens");
        } else {
            assert!(same >= 1, "{family}/{case}: the first greedy token differs");
        }
    });
}

#[test]
fn bf16_agrees_on_the_top_token_on_cuda() {
    let Some(device) = cuda("bf16 top-1") else { return };
    for_each_case(device, WeightDtype::BF16, None, |family, case, want, _, c, _| {
        let same = c.tokens.iter().zip(want).filter(|(a, b)| a == b).count();
        println!("{family}/{case}: bf16 top-1 agreement {same}/{}", want.len());
        assert_eq!(c.tokens[0], want[0], "{family}/{case}: bf16 first token");
    });
}

#[test]
fn quantized_weights_run_on_cuda() {
    let Some(device) = cuda("q8_0") else { return };
    for_each_case(device, WeightDtype::F32, Some(Quantization::parse("q8_0").unwrap()), |family, case, want, _, c, _| {
        let same = c.tokens.iter().zip(want).filter(|(a, b)| a == b).count();
        println!("{family}/{case}: q8_0 agreement with f32 transformers {same}/{}", want.len());
        assert_eq!(c.tokens.len(), want.len(), "{family}/{case}");
    });
}

#[test]
fn a_batch_gives_each_request_its_tokens_on_cuda() {
    let Some(device) = cuda("batching") else { return };
    for family in FAMILIES {
        let dir = family_dir(family).join("e2e");
        let gj = golden_json_in(&dir);
        let engine = Engine::load(&dir, EngineOptions { device, ..Default::default() }).unwrap();
        let pages = [vec![], vec![gj["cases"]["one_page"]["pages"][0].as_str().unwrap()]];
        let alone: Vec<Vec<u32>> = pages.iter().map(|p| engine.generate(request_in(&dir, &gj, p, greedy(12))).unwrap().tokens).collect();
        let handles: Vec<_> = pages.iter().map(|p| engine.submit(request_in(&dir, &gj, p, greedy(12)), |_| {}).unwrap()).collect();
        let together: Vec<Vec<u32>> = handles.into_iter().map(|h| h.wait().unwrap().tokens).collect();
        assert_eq!(together, alone, "{family}: tokens alone and batched on CUDA");
    }
}
