//! A token's result does not depend on its company: a prompt prefilled in one chunk or in several (as after a
//! shared prefix, down to a one-token tail) gives the same bits, and sequences decoded together in one batch
//! give the same bits as each decoded alone; for both families, f32, bf16 and quantized weights. This is
//! what lets the engine batch requests and share prefixes without changing any request's tokens.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use vtc_r1::model::{KvCache, LoadOptions, Prompt, Trace, VisionLanguageModel};
use vtc_r1::quant::Quantization;
use vtc_r1::vision::{preprocess, to_tensor, ImageInput, RgbImage};

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect()
}

/// The e2e fixture's model loaded as `dtype` (optionally quantized), and a prompt of text around one page.
fn model_and_prompt(family: &str, dtype: DType, quantize: Option<Quantization>, cache: &std::path::Path) -> (Box<dyn VisionLanguageModel>, Prompt) {
    let dir = family_dir(family).join("e2e");
    let model = vtc_r1::model::load_with(&dir, &LoadOptions { device: Device::Cpu, dtype, quantize, quant_cache_dir: Some(cache.to_path_buf()) }).unwrap();
    let page = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "png")).unwrap();
    let spec = model.spec().clone();
    let img = preprocess(&RgbImage::load(&ImageInput::File(&page), "page").unwrap(), &spec.image_processor).unwrap();
    let (px, grids) = to_tensor(std::slice::from_ref(&img), &Device::Cpu).unwrap();
    let vision = model.encode_images(&px, &grids).unwrap();
    let n_img = img.num_tokens(spec.image_processor.merge_size);
    let mut ids: Vec<u32> = (1000..1040).collect();
    ids.extend(std::iter::repeat_n(spec.image_token_id, n_img));
    ids.extend(2000..2030);
    let prompt = model.prepare_prompt(&ids, Some(vision)).unwrap();
    (model, prompt)
}

fn prefill_in(model: &dyn VisionLanguageModel, prompt: &Prompt, cuts: &[usize]) -> (KvCache, Tensor) {
    let mut cache = model.new_cache();
    let mut last = None;
    for &end in cuts.iter().chain([prompt.len()].iter()) {
        last = Some(model.forward_prompt(&mut cache, prompt, end, &mut Trace::off()).unwrap());
    }
    let h = last.unwrap();
    let n = h.dim(0).unwrap();
    (cache, h.narrow(0, n - 1, 1).unwrap())
}

#[test]
fn chunking_and_batching_leave_every_tokens_bits_unchanged() {
    let cache_dir = TempDir::new("batch-invariance");
    for family in ["qwen3vl", "glm4v"] {
        for (dtype, quantize) in [(DType::F32, None), (DType::BF16, None), (DType::F32, Some(Quantization::Q8_0))] {
            let what = format!("{family} {dtype:?} {quantize:?}");
            let (model, prompt) = model_and_prompt(family, dtype, quantize, cache_dir.path());
            let n = prompt.len();
            let (_, whole) = prefill_in(model.as_ref(), &prompt, &[]);
            // cuts inside the text, inside the image, and tails of one to three tokens
            for cuts in [vec![n - 1], vec![n - 2], vec![n - 3], vec![20], vec![20, 60], vec![45, n - 1]] {
                let (_, chunked) = prefill_in(model.as_ref(), &prompt, &cuts);
                assert_eq!(bits(&whole), bits(&chunked), "{what}: prefill cut at {cuts:?}");
            }

            // Three sequences at different lengths, decoded alone and then together.
            let tokens = [[11u32, 12, 13, 14], [21, 22, 23, 24], [31, 32, 33, 34]];
            let starts = [n, n - 7, n - 19];
            let alone: Vec<Vec<Vec<u32>>> = (0..3)
                .map(|s| {
                    let (mut cache, _) = prefill_in(model.as_ref(), &prompt, &[]);
                    cache.truncate(starts[s]);
                    tokens[s].iter().map(|&t| bits(&model.decode(&mut cache, &prompt, t).unwrap())).collect()
                })
                .collect();
            let mut caches: Vec<KvCache> = (0..3)
                .map(|s| {
                    let (mut c, _) = prefill_in(model.as_ref(), &prompt, &[]);
                    c.truncate(starts[s]);
                    c
                })
                .collect();
            for step in 0..4 {
                // the batch shrinks as sequences leave: 3, 3, 2, 1
                let live = [3, 3, 2, 1][step];
                let mut refs: Vec<&mut KvCache> = caches.iter_mut().take(live).collect();
                let prompts = vec![&prompt; live];
                let toks: Vec<u32> = (0..live).map(|s| tokens[s][step]).collect();
                let logits = model.decode_batch(&mut refs, &prompts, &toks).unwrap();
                for s in 0..live {
                    assert_eq!(bits(&logits.narrow(0, s, 1).unwrap()), alone[s][step], "{what}: sequence {s}, step {step} in a batch of {live}");
                }
            }
        }
    }
}
