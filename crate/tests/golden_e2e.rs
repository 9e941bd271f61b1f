//! End-to-end fidelity on shared/golden/<family>/e2e (small random models with the family's real token ids,
//! chat template and page geometry: Qwen3-VL, and GLM-4.1V as Glyph and VTC-R1-Glyph use it): chat
//! template text and prompt ids, pixel values of the PNG pages at the processor default and at VTC-R1's
//! 262,144-pixel cap, vision features, 3-D positions, last logits and the greedy continuation, all against
//! transformers 5.18.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use serde_json::Value;
use vtc_r1::model::{KvCache, Prompt, Trace, VisionLanguageModel};
use vtc_r1::tokenizer::{expand_image_tokens, Content, Message, Part, Tokenizer};
use vtc_r1::vision::{preprocess, to_tensor, ImageInput, PreprocessorConfig, RgbImage};

const TOL: f32 = 1e-4;

const FAMILIES: [&str; 2] = ["qwen3vl", "glm4v"];

fn dir(family: &str) -> std::path::PathBuf {
    family_dir(family).join("e2e")
}

fn golden_json(family: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir(family).join("golden.json")).unwrap())
        .unwrap()
}

/// The model directory's tokenizer, set up as the engine sets it up for the family.
fn tokenizer(family: &str, model: &dyn VisionLanguageModel) -> Tokenizer {
    let mut tok = Tokenizer::from_dir(&dir(family)).unwrap();
    tok.set_text_content_as_string(model.spec().text_content_as_string);
    tok
}

fn messages(g: &Value, pages: usize) -> Vec<Message> {
    let question = g["question"].as_str().unwrap().to_string();
    let mut parts = vec![Part::Text { text: question }];
    parts.extend((0..pages).map(|_| Part::Image));
    vec![
        Message::text("system", g["system_prompt"].as_str().unwrap()),
        Message {
            role: "user".into(),
            content: Content::Parts(parts),
        },
    ]
}

struct Case {
    name: String,
    ids: Vec<u32>,
    pixel_values: Option<Tensor>,
    grids: Vec<[usize; 3]>,
}

/// Builds a case's inputs with our tokenizer, template and preprocessor, checking each against golden.
fn build_case(
    family: &str,
    model: &dyn VisionLanguageModel,
    gj: &Value,
    g: &Golden,
    name: &str,
) -> Case {
    let tok = tokenizer(family, model);
    let c = &gj["cases"][name];
    let pages: Vec<String> = c["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let text = tok
        .apply_chat_template(&messages(gj, pages.len()), true, &Default::default())
        .unwrap();
    assert_eq!(
        text,
        c["template_output"].as_str().unwrap(),
        "{name}: template output"
    );

    let spec = model.spec();
    let mut cfg = PreprocessorConfig::from_file(
        &dir(family).join("preprocessor_config.json"),
        &spec.image_processor,
    )
    .unwrap();
    cfg.min_pixels = c["min_pixels"].as_u64().unwrap() as usize;
    cfg.max_pixels = c["max_pixels"].as_u64().unwrap() as usize;
    let images: Vec<_> = pages
        .iter()
        .map(|p| {
            let path = dir(family).join(p);
            preprocess(&RgbImage::load(&ImageInput::File(&path), p).unwrap(), &cfg).unwrap()
        })
        .collect();
    let counts: Vec<usize> = images
        .iter()
        .map(|i| i.num_tokens(cfg.merge_size))
        .collect();
    let ids =
        expand_image_tokens(&tok.encode(&text).unwrap(), spec.image_token_id, &counts).unwrap();
    assert_eq!(
        ids,
        g.ids(&format!("{name}.input_ids")),
        "{name}: prompt ids"
    );
    assert_eq!(ids.len() as u64, c["n_prompt_tokens"].as_u64().unwrap());

    if images.is_empty() {
        return Case {
            name: name.into(),
            ids,
            pixel_values: None,
            grids: vec![],
        };
    }
    let (px, grids) = to_tensor(&images, &Device::Cpu).unwrap();
    assert_eq!(
        grids,
        g.grids(&format!("{name}.image_grid_thw")),
        "{name}: grid_thw"
    );
    let d = max_diff(&px, g.get(&format!("{name}.pixel_values")));
    println!("{name}.pixel_values max|Δ| = {d:.3e}");
    assert!(d <= 0.02, "{name}: pixel values differ by {d}");
    Case {
        name: name.into(),
        ids,
        pixel_values: Some(px),
        grids,
    }
}

const CASES: [&str; 4] = ["text", "one_page", "one_page_capped", "two_pages"];

fn e2e_cases_match_transformers(family: &str) {
    let model = vtc_r1::model::load(&dir(family), &Device::Cpu, DType::F32).unwrap();
    let tok = tokenizer(family, model.as_ref());
    let gj = golden_json(family);
    let g = Golden::load(&dir(family));
    for name in CASES {
        let case = build_case(family, model.as_ref(), &gj, &g, name);
        let vision = case.pixel_values.as_ref().map(|px| {
            let mut trace = Trace::on();
            let v = model
                .encode_images_traced(px, &case.grids, &mut trace)
                .unwrap();
            // Every vision tensor the fixture keeps for this case (it drops the per-block ones).
            let keys: Vec<&String> =
                g.0.keys()
                    .filter(|k| k.starts_with(&format!("{name}.vision.")))
                    .collect();
            assert!(
                keys.iter().any(|k| k.ends_with(".merger")),
                "{name}: no vision tensors in the fixture"
            );
            for key in keys {
                let ours = trace
                    .get(&key[name.len() + 1..])
                    .unwrap_or_else(|| panic!("{key} not recorded"));
                let d = max_diff(ours, g.get(key));
                println!("{key:<32} max|Δ| = {d:.3e}");
                assert!(d <= TOL, "{key}: {d}");
            }
            v
        });
        let prompt = model.prepare_prompt(&case.ids, vision).unwrap();
        let p = &prompt.positions;
        assert_eq!(
            [p.t.clone(), p.h.clone(), p.w.clone()].concat(),
            g.i64s(&format!("{name}.position_ids")),
            "{name}: positions"
        );
        assert_eq!(vec![p.rope_delta], g.i64s(&format!("{name}.rope_delta")));

        let mut cache = model.new_cache();
        let mut logits = model
            .prefill(&mut cache, &prompt, prompt.len())
            .unwrap()
            .unwrap();
        let d = max_diff(&logits, g.get(&format!("{name}.logits")));
        println!("{name}.logits (last)         max|Δ| = {d:.3e}");
        assert!(d <= TOL, "{name}: logits {d}");

        let want = g.ids(&format!("{name}.greedy_tokens"));
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let t = argmax(&logits);
            got.push(t);
            logits = model.decode(&mut cache, &prompt, t).unwrap();
        }
        assert_eq!(got, want, "{}: greedy tokens", case.name);
        let text = tok.decode(&got, false).unwrap();
        assert_eq!(
            text,
            gj["cases"][name]["greedy_text"].as_str().unwrap(),
            "{name}: greedy text"
        );
    }
}

#[test]
fn qwen3vl_e2e_cases_match_transformers() {
    e2e_cases_match_transformers("qwen3vl");
}

#[test]
fn glm4v_e2e_cases_match_transformers() {
    e2e_cases_match_transformers("glm4v");
}

/// `n` greedy tokens from `logits`, decoding each into `cache`.
fn greedy(model: &dyn VisionLanguageModel, cache: &mut KvCache, prompt: &Prompt, mut logits: Tensor, n: usize) -> Vec<u32> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(argmax(&logits));
        logits = model.decode(cache, prompt, *got.last().unwrap()).unwrap();
    }
    got
}

/// bf16 weights and activations: the next token after each prompt (and the greedy continuation) must
/// match float32 transformers wherever its top-1 lead is not a near tie (bf16 moves these logits by ~2e-2).
#[test]
fn e2e_bf16_agrees_on_top1() {
    for family in FAMILIES {
        let model = vtc_r1::model::load(&dir(family), &Device::Cpu, DType::BF16).unwrap();
        let gj = golden_json(family);
        let g = Golden::load(&dir(family));
        for name in CASES {
            let case = build_case(family, model.as_ref(), &gj, &g, name);
            let vision = case
                .pixel_values
                .as_ref()
                .map(|px| model.encode_images(px, &case.grids).unwrap());
            let prompt = model.prepare_prompt(&case.ids, vision).unwrap();
            let mut cache = model.new_cache();
            let logits = model
                .prefill(&mut cache, &prompt, prompt.len())
                .unwrap()
                .unwrap();
            let golden = g.get(&format!("{name}.logits")).flatten_all().unwrap();
            let mut sorted: Vec<f32> = golden.to_vec1().unwrap();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let margin = sorted[0] - sorted[1];
            println!(
                "{family} {name}: bf16 max|Δ| = {:.3e}, golden margin {margin:.3}",
                max_diff(&logits, &golden)
            );
            if margin > 0.05 {
                assert_eq!(argmax(&logits), argmax(&golden), "{name}: bf16 top-1");
            }
            // Where no greedy step of the reference was a near tie, the whole continuation must agree.
            if gj["cases"][name]["greedy_min_top1_margin"]
                .as_f64()
                .unwrap()
                > 0.05
            {
                let want = g.ids(&format!("{name}.greedy_tokens"));
                let got = greedy(model.as_ref(), &mut cache, &prompt, logits, want.len());
                assert_eq!(got, want, "{family} {name}: bf16 greedy tokens");
            }
        }
    }
}

/// f32 weights with the KV cache in bf16 or f16 (`kvCache`): what rounding the cached keys and values does to
/// the fixtures' logits (printed: the figures the README quotes), and the next token and greedy continuation
/// agree with float32 transformers wherever its top-1 lead is not a near tie.
#[test]
fn e2e_kv_cache_in_bf16_or_f16_agrees_on_top1() {
    for family in FAMILIES {
        let model = vtc_r1::model::load(&dir(family), &Device::Cpu, DType::F32).unwrap();
        let gj = golden_json(family);
        let g = Golden::load(&dir(family));
        for kv in [DType::BF16, DType::F16] {
            for name in CASES {
                let case = build_case(family, model.as_ref(), &gj, &g, name);
                let vision = case.pixel_values.as_ref().map(|px| model.encode_images(px, &case.grids).unwrap());
                let prompt = model.prepare_prompt(&case.ids, vision).unwrap();
                let mut cache = model.new_cache().with_dtype(Some(kv));
                let logits = model.prefill(&mut cache, &prompt, prompt.len()).unwrap().unwrap();
                let golden = g.get(&format!("{name}.logits")).flatten_all().unwrap();
                let d = max_diff(&logits, &golden);
                println!("{family} {name}: KV cache {kv:?}, last-token logits max|Δ| = {d:.3e}");
                assert!(d < 0.1, "{family} {name}: KV cache {kv:?} moved the logits by {d}");
                if gj["cases"][name]["greedy_min_top1_margin"].as_f64().unwrap() > 0.05 {
                    let want = g.ids(&format!("{name}.greedy_tokens"));
                    let got = greedy(model.as_ref(), &mut cache, &prompt, logits, want.len());
                    assert_eq!(got, want, "{family} {name}: KV cache {kv:?}, greedy tokens");
                }
            }
        }
    }
}

/// `image_max_pixels` (VTC-R1's training budget, 262,144 pixels a page) reproduces what LLaMA-Factory hands
/// the processor: the same downscaled pixels (tests/data/llamafactory, made by gen_llamafactory_pages.py
/// with LLaMA-Factory 0.9.5) and the same grid, 330 tokens a page where the processor default gives 630.
#[test]
fn glm4v_training_page_budget_matches_llamafactory() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/llamafactory");
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(data.join("expected.json")).unwrap()).unwrap();
    let model = vtc_r1::model::load(&dir("glm4v"), &Device::Cpu, DType::F32).unwrap();
    let mut cfg = PreprocessorConfig::from_file(&dir("glm4v").join("preprocessor_config.json"), &model.spec().image_processor).unwrap();
    cfg.image_max_pixels = Some(expected["image_max_pixels"].as_u64().unwrap() as usize);
    for (page, want) in expected["pages"].as_object().unwrap() {
        let src = RgbImage::load(&ImageInput::File(&dir("glm4v").join(page)), page).unwrap();
        let reference = RgbImage::load(&ImageInput::File(&data.join(page)), page).unwrap();
        let ours = vtc_r1::vision::training_resize(&src, cfg.image_max_pixels.unwrap()).unwrap();
        assert_eq!((ours.width, ours.height), (reference.width, reference.height), "{page}: size");
        assert!(ours.data == reference.data, "{page}: downscaled pixels differ from LLaMA-Factory's");
        let processed = preprocess(&src, &cfg).unwrap();
        let grid: Vec<usize> = want["grid_thw"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(processed.grid_thw.to_vec(), grid, "{page}: grid");
        assert_eq!(processed.num_tokens(cfg.merge_size) as u64, want["tokens"].as_u64().unwrap(), "{page}: tokens");
    }
}
