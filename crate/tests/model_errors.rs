//! Loading must fail with a clear error naming the file, key or tensor at fault — never a panic — and
//! accept every legitimate variant: both config schemas, tied or untied heads, sharded weights.
//! Each case writes a modified copy of the unit fixture model into a temporary directory.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use serde_json::{json, Value};
use vtc_r1::model::VisionLanguageModel;
use vtc_r1::tokenizer::Tokenizer;
use vtc_r1::vision::{ImageInput, RgbImage};
use vtc_r1::Error;

fn unit_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(unit_dir().join("config.json")).unwrap()).unwrap()
}

fn unit_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(unit_dir().join("model.safetensors"), &Device::Cpu).unwrap()
}

fn load(dir: &Path) -> Result<Box<dyn VisionLanguageModel>, Error> {
    vtc_r1::model::load(dir, &Device::Cpu, DType::F32)
}

fn load_err(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("{dir:?} loaded but should not"),
        Err(e) => e.to_string(),
    }
}

/// Last-position logits of the unit "image" case, to compare loads of equivalent checkpoints.
fn image_logits(model: &dyn VisionLanguageModel) -> Tensor {
    let g = Golden::load(&unit_dir());
    let v = model.encode_images(g.get("image.pixel_values"), &g.grids("image.image_grid_thw")).unwrap();
    let prompt = model.prepare_prompt(&g.ids("image.input_ids"), Some(v)).unwrap();
    let mut cache = model.new_cache();
    model.prefill(&mut cache, &prompt, prompt.len()).unwrap().unwrap()
}

#[test]
fn config_schemas_and_embedding_variants_load() {
    let reference = image_logits(&*load(&unit_dir()).unwrap());

    // transformers 4.57 schema: rope_theta + rope_scaling, tie flag only inside text_config.
    let mut cfg = unit_config();
    let text = cfg["text_config"].as_object_mut().unwrap();
    text.remove("rope_parameters");
    text.insert("rope_theta".into(), json!(5000000.0));
    text.insert("rope_scaling".into(), json!({"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": true}));
    cfg.as_object_mut().unwrap().remove("tie_word_embeddings");
    set(&mut cfg, "vision_config.model_type", json!("qwen3_vl"));
    let v = cfg["vision_config"].as_object_mut().unwrap();
    let ch = v.remove("in_channels").unwrap();
    v.insert("in_chans".into(), ch);
    let d = model_dir("schema457", &cfg, &unit_tensors());
    assert_eq!(max_diff(&image_logits(&*load(d.path()).unwrap()), &reference), 0.0);

    // Untied head: an explicit lm_head.weight equal to the embeddings gives the same logits.
    let mut cfg = unit_config();
    set(&mut cfg, "tie_word_embeddings", json!(false));
    set(&mut cfg, "text_config.tie_word_embeddings", json!(false));
    let mut t = unit_tensors();
    t.insert("lm_head.weight".into(), t["model.language_model.embed_tokens.weight"].clone());
    let d = model_dir("untied", &cfg, &t);
    assert_eq!(max_diff(&image_logits(&*load(d.path()).unwrap()), &reference), 0.0);
    // ... and without it the error names the missing tensor.
    t.remove("lm_head.weight");
    let d = model_dir("untied-missing", &cfg, &t);
    let e = load_err(d.path());
    assert!(e.contains("lm_head.weight") && e.contains("missing"), "{e}");

    // Sharded weights with an index.
    let d = TempDir::new("sharded");
    std::fs::copy(unit_dir().join("config.json"), d.path().join("config.json")).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (k, v) in unit_tensors() {
        let shard = if k.contains("visual") { "model-00001-of-00002.safetensors" } else { "model-00002-of-00002.safetensors" };
        map.insert(k.clone(), json!(shard));
        if k.contains("visual") { a.insert(k, v) } else { b.insert(k, v) };
    }
    candle_core::safetensors::save(&a, d.path().join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, d.path().join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(d.path().join("model.safetensors.index.json"), json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    assert_eq!(max_diff(&image_logits(&*load(d.path()).unwrap()), &reference), 0.0);
    // A shard that is listed but absent is named.
    std::fs::remove_file(d.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("not found"), "{e}");

    // bf16 weights on disk load into an f32 model.
    let t: HashMap<String, Tensor> = unit_tensors().into_iter().map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap())).collect();
    let d = model_dir("bf16-file", &unit_config(), &t);
    let m = load(d.path()).unwrap();
    assert!(max_diff(&image_logits(&*m), &reference) < 0.1);
}

#[test]
fn bad_configs_name_the_key() {
    let t = unit_tensors();
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        ("arch", Box::new(|c| set(c, "model_type", json!("llama"))), "model_type"),
        ("kvheads", Box::new(|c| set(c, "text_config.num_key_value_heads", json!(3))), "text_config.num_key_value_heads"),
        ("hidden0", Box::new(|c| set(c, "text_config.hidden_size", json!(0))), "text_config.hidden_size"),
        ("hiddenneg", Box::new(|c| set(c, "text_config.hidden_size", json!(-5))), "text_config.hidden_size"),
        ("eps", Box::new(|c| set(c, "text_config.rms_norm_eps", json!(-1.0))), "text_config.rms_norm_eps"),
        ("deepstack", Box::new(|c| set(c, "vision_config.deepstack_visual_indexes", json!([0, 7]))), "vision_config.deepstack_visual_indexes"),
        ("outhidden", Box::new(|c| set(c, "vision_config.out_hidden_size", json!(48))), "vision_config.out_hidden_size"),
        ("posemb", Box::new(|c| set(c, "vision_config.num_position_embeddings", json!(15))), "vision_config.num_position_embeddings"),
        ("ropetype", Box::new(|c| set(c, "text_config.rope_parameters.rope_type", json!("yarn"))), "rope_type"),
        ("section", Box::new(|c| set(c, "text_config.rope_parameters.mrope_section", json!([4, 2]))), "mrope_section"),
        ("imgtok", Box::new(|c| set(c, "image_token_id", json!(100000))), "image_token_id"),
        ("notext", Box::new(|c| { c.as_object_mut().unwrap().remove("text_config"); }), "text_config"),
        ("layers", Box::new(|c| set(c, "text_config.num_hidden_layers", json!("four"))), "text_config.num_hidden_layers"),
    ];
    for (tag, edit, key) in cases {
        let mut cfg = unit_config();
        edit(&mut cfg);
        let d = model_dir(tag, &cfg, &t);
        let e = load(d.path()).err().unwrap_or_else(|| panic!("{tag}: loaded"));
        assert_eq!(e.code(), "ERR_VTC_MODEL_CONFIG", "{tag}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(key) && msg.contains("config.json"), "{tag}: {msg}");
    }
    // Not JSON at all.
    let d = TempDir::new("notjson");
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("invalid JSON"), "{e}");
    // No config.json / no directory.
    let d = TempDir::new("empty");
    assert!(load_err(d.path()).contains("config.json"));
    assert!(load_err(&d.path().join("nope")).contains("nope"));
}

#[test]
fn bad_weights_name_the_file_or_tensor() {
    let cfg = unit_config();
    let good = std::fs::read(unit_dir().join("model.safetensors")).unwrap();
    let write = |tag: &str, bytes: &[u8]| {
        let d = TempDir::new(tag);
        std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
        std::fs::write(d.path().join("model.safetensors"), bytes).unwrap();
        d
    };
    // Missing weights file.
    let d = TempDir::new("noweights");
    std::fs::write(d.path().join("config.json"), cfg.to_string()).unwrap();
    assert!(load_err(d.path()).contains("model.safetensors"));
    // Truncated data, truncated header, garbage header, header claiming a huge size, empty file.
    let mut huge = good.clone();
    huge[..8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let mut garbage = good.clone();
    garbage[8..40].copy_from_slice(&[b'#'; 32]);
    for (tag, bytes) in [
        ("truncated", &good[..good.len() / 2]),
        ("header-cut", &good[..100]),
        ("garbage", &garbage[..]),
        ("huge", &huge[..]),
        ("empty", &[][..]),
    ] {
        let d = write(tag, bytes);
        let e = load(d.path()).err().unwrap_or_else(|| panic!("{tag}: loaded"));
        assert_eq!(e.code(), "ERR_VTC_WEIGHTS", "{tag}: {e}");
        assert!(e.to_string().contains("model.safetensors"), "{tag}: {e}");
    }
    // Missing and misshapen tensors are named with the expected shape.
    let mut t = unit_tensors();
    t.remove("model.language_model.layers.2.mlp.up_proj.weight");
    let d = model_dir("missing-tensor", &cfg, &t);
    let e = load_err(d.path());
    assert!(e.contains("model.language_model.layers.2.mlp.up_proj.weight") && e.contains("missing"), "{e}");
    let mut t = unit_tensors();
    t.insert("model.visual.blocks.1.attn.qkv.weight".into(), Tensor::zeros((96, 16), DType::F32, &Device::Cpu).unwrap());
    let d = model_dir("misshapen", &cfg, &t);
    let e = load_err(d.path());
    assert!(e.contains("model.visual.blocks.1.attn.qkv.weight") && e.contains("[96, 16]") && e.contains("[96, 32]"), "{e}");
    // A config that disagrees with the weights is caught by the shape check too.
    let mut cfg2 = cfg.clone();
    set(&mut cfg2, "text_config.intermediate_size", json!(96));
    let d = model_dir("cfg-vs-weights", &cfg2, &unit_tensors());
    assert!(load_err(d.path()).contains("gate_proj.weight"));
    // Integer tensors where floats belong.
    let mut t = unit_tensors();
    t.insert("model.language_model.norm.weight".into(), Tensor::zeros(64, DType::I64, &Device::Cpu).unwrap());
    let d = model_dir("int-tensor", &cfg, &t);
    assert!(load_err(d.path()).contains("model.language_model.norm.weight"));
}

#[test]
fn bad_tokenizers_and_images_are_reported() {
    let d = TempDir::new("tok");
    let e = Tokenizer::from_dir(d.path()).err().unwrap().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::write(d.path().join("tokenizer.json"), "{\"version\": \"1.0\", \"model\": 5}").unwrap();
    let e = Tokenizer::from_dir(d.path()).err().unwrap();
    assert_eq!(e.code(), "ERR_VTC_TOKENIZER");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    // Images: too large (raw and a PNG header claiming 100000×100000), undecodable, wrong sizes.
    assert_eq!(RgbImage::from_raw(70_000, 2, 3, &[], "big").unwrap_err().code(), "ERR_VTC_IMAGE");
    let mut png = Vec::new();
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR");
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let e = RgbImage::load(&ImageInput::Encoded(&png), "giant.png").unwrap_err();
    assert!(e.to_string().contains("giant.png"), "{e}");
    let e = RgbImage::load(&ImageInput::Encoded(b"GIF89a...."), "anim.gif").unwrap_err();
    assert_eq!(e.code(), "ERR_VTC_IMAGE", "{e}");
    let page = std::fs::read(e2e_dir().join("m500-011_page_002.png")).unwrap();
    let e = RgbImage::load(&ImageInput::Encoded(&page[..page.len() / 3]), "cut.png").unwrap_err();
    assert!(e.to_string().contains("cut.png"), "{e}");
}

#[test]
fn bad_model_inputs_are_errors_not_panics() {
    let model = load(&unit_dir()).unwrap();
    let g = Golden::load(&unit_dir());
    let px = g.get("image.pixel_values");
    // pixel rows that do not match the grid, odd grids, wrong widths
    assert!(model.encode_images(px, &[[1, 4, 4]]).is_err());
    assert!(model.encode_images(px, &[[1, 3, 8]]).is_err());
    assert!(model.encode_images(&px.narrow(1, 0, 90).unwrap(), &[[1, 6, 4]]).is_err());
    // image tokens without images, token ids outside the vocabulary, empty prompts
    assert!(model.prepare_prompt(&g.ids("image.input_ids"), None).is_err());
    assert!(model.prepare_prompt(&[1, 2, 999], None).is_err());
    assert!(model.prepare_prompt(&[], None).is_err());
    // a prompt longer than the context (max_position_embeddings 4096)
    let long = vec![5u32; 5000];
    let prompt = model.prepare_prompt(&long, None).unwrap();
    let mut cache = model.new_cache();
    let e = model.prefill(&mut cache, &prompt, prompt.len()).unwrap_err();
    assert_eq!(e.code(), "ERR_VTC_CONTEXT_LENGTH", "{e}");
}
