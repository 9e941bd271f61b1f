//! Fidelity of the Qwen3-VL forward pass against tensors dumped from transformers 5.18 (float32,
//! eager attention) for the tiny random model in shared/golden/qwen3vl/unit: every vision block,
//! DeepStack feature, merger output, decoder hidden state, all logits, the 3-D position ids and the
//! greedy continuation.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use vtc_r1::model::{Prompt, Trace, VisionLanguageModel};

const TOL: f32 = 1e-4;

type Model = Box<dyn VisionLanguageModel>;

fn load_unit(dtype: DType) -> Model {
    vtc_r1::model::load(&unit_dir(), &Device::Cpu, dtype).expect("load unit model")
}

fn check(name: &str, ours: &Tensor, golden: &Tensor) -> f32 {
    let d = max_diff(ours, golden);
    println!("{name:<32} max|Δ| = {d:.3e}");
    assert!(d <= TOL, "{name}: max |Δ| {d} > {TOL}");
    d
}

/// Greedy continuation with the KV cache; returns the tokens and each step's logits.
fn greedy(model: &Model, prompt: &Prompt, n: usize) -> (Vec<u32>, Vec<Tensor>) {
    let mut cache = model.new_cache();
    let mut logits = model.prefill(&mut cache, prompt, prompt.len()).unwrap().unwrap();
    let mut out = Vec::new();
    let mut all = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits);
        out.push(t);
        all.push(logits.clone());
        logits = model.decode(&mut cache, prompt, t).unwrap();
    }
    (out, all)
}

#[test]
fn unit_cases_match_transformers() {
    let model = load_unit(DType::F32);
    let g = Golden::load(&unit_dir());
    for case in ["text", "image", "two_images"] {
        println!("== {case}");
        let ids = g.ids(&format!("{case}.input_ids"));
        let mut trace = Trace::on();
        let vision = if g.has(&format!("{case}.pixel_values")) {
            let grids = g.grids(&format!("{case}.image_grid_thw"));
            let px = g.get(&format!("{case}.pixel_values"));
            let v = model.encode_images_traced(px, &grids, &mut trace).unwrap();
            for (name, t) in &trace.tensors {
                check(&format!("{case}.{name}"), t, g.get(&format!("{case}.{name}")));
            }
            Some(v)
        } else {
            None
        };
        let prompt = model.prepare_prompt(&ids, vision).unwrap();
        let p = &prompt.positions;
        let pos: Vec<i64> = [p.t.clone(), p.h.clone(), p.w.clone()].concat();
        assert_eq!(pos, g.i64s(&format!("{case}.position_ids")), "{case}: position ids");
        assert_eq!(vec![p.rope_delta], g.i64s(&format!("{case}.rope_delta")), "{case}: rope delta");

        let mut trace = Trace::on();
        let mut cache = model.new_cache();
        let hidden = model.forward_prompt(&mut cache, &prompt, prompt.len(), &mut trace).unwrap();
        for (name, t) in &trace.tensors {
            check(&format!("{case}.{name}"), t, g.get(&format!("{case}.{name}")));
        }
        check(&format!("{case}.logits"), &model.logits(&hidden).unwrap(), g.get(&format!("{case}.logits")));

        let want = g.ids(&format!("{case}.greedy_tokens"));
        let (got, _) = greedy(&model, &prompt, want.len());
        assert_eq!(got, want, "{case}: greedy tokens");
    }
}

fn unit_prompt(model: &Model, g: &Golden, case: &str) -> Prompt {
    let ids = g.ids(&format!("{case}.input_ids"));
    let vision = g.has(&format!("{case}.pixel_values")).then(|| {
        model.encode_images(g.get(&format!("{case}.pixel_values")), &g.grids(&format!("{case}.image_grid_thw"))).unwrap()
    });
    model.prepare_prompt(&ids, vision).unwrap()
}

/// Logits of every prompt position, the prompt run through the decoder `chunk` tokens at a time.
fn chunked_logits(model: &Model, prompt: &Prompt, chunk: usize) -> Tensor {
    let mut cache = model.new_cache();
    let mut outs = Vec::new();
    while cache.len() < prompt.len() {
        let end = (cache.len() + chunk).min(prompt.len());
        outs.push(model.forward_prompt(&mut cache, prompt, end, &mut Trace::off()).unwrap());
    }
    model.logits(&Tensor::cat(&outs, 0).unwrap()).unwrap()
}

fn all_logits(model: &Model, prompt: &Prompt) -> Tensor {
    chunked_logits(model, prompt, usize::MAX)
}

#[test]
fn chunked_prefill_matches_one_pass() {
    let model = load_unit(DType::F32);
    let g = Golden::load(&unit_dir());
    for case in ["text", "image", "two_images"] {
        let prompt = unit_prompt(&model, &g, case);
        let whole = all_logits(&model, &prompt);
        // Chunk sizes that cut image spans and DeepStack rows at every possible place.
        for chunk in [1, 2, 3, 5, 7] {
            let d = max_diff(&chunked_logits(&model, &prompt, chunk), &whole);
            println!("{case} chunk {chunk}: max|Δ| = {d:.3e}");
            assert!(d <= 1e-5, "{case}: chunk {chunk} differs by {d}");
        }
    }
}

#[test]
fn cached_decode_matches_full_forward() {
    let model = load_unit(DType::F32);
    let g = Golden::load(&unit_dir());
    for case in ["text", "image", "two_images"] {
        let prompt = unit_prompt(&model, &g, case);
        let (tokens, step_logits) = greedy(&model, &prompt, 12);
        // The same sequence in one forward pass: positions of appended text continue the M-RoPE index.
        let mut ids = prompt.ids.clone();
        ids.extend_from_slice(&tokens[..tokens.len() - 1]);
        let full = model.prepare_prompt(&ids, prompt.vision.clone()).unwrap();
        let logits = all_logits(&model, &full);
        let mut worst = 0f32;
        for (i, step) in step_logits.iter().enumerate() {
            let row = logits.get(prompt.len() - 1 + i).unwrap();
            worst = worst.max(max_diff(step, &row));
        }
        println!("{case}: decode vs full forward max|Δ| = {worst:.3e}");
        assert!(worst <= 1e-5, "{case}: {worst}");
    }
}

/// Top-1 minus top-2 logit per row of `[n, vocab]`.
fn margins(logits: &Tensor) -> Vec<f32> {
    let rows: Vec<Vec<f32>> = logits.to_vec2().unwrap();
    rows.into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| b.total_cmp(a));
            r[0] - r[1]
        })
        .collect()
}

/// bf16 rounds hidden states to ~3 significant digits (logits move by up to ~0.07 here), so top-1
/// must agree wherever the float32 reference is not a near tie (margin > 0.1).
#[test]
fn bf16_agrees_on_top1() {
    let model = load_unit(DType::BF16);
    let g = Golden::load(&unit_dir());
    for case in ["text", "image", "two_images"] {
        let prompt = unit_prompt(&model, &g, case);
        let logits = all_logits(&model, &prompt);
        let golden = g.get(&format!("{case}.logits")).squeeze(0).unwrap();
        let ours: Vec<u32> = logits.argmax(1).unwrap().to_vec1().unwrap();
        let want: Vec<u32> = golden.argmax(1).unwrap().to_vec1().unwrap();
        let m = margins(&golden);
        let agree = ours.iter().zip(&want).filter(|(a, b)| a == b).count();
        println!("{case}: bf16 top-1 agrees at {agree}/{} positions, max|Δ| logits {:.3e}", want.len(), max_diff(&logits, &golden));
        for i in 0..want.len() {
            if m[i] > 0.1 {
                assert_eq!(ours[i], want[i], "{case}: position {i} (margin {})", m[i]);
            }
        }
    }
}
