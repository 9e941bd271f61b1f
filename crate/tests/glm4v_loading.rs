//! GLM-4.1V checkpoints in every config schema published ones use (transformers 4.53 flat keys, 4.57 nested
//! `rope_scaling`, 5.x `rope_parameters`) load to the same model; bad configs and weights are errors that
//! name the key or tensor; the chat template renders system content given as a string or as text parts
//! identically; reasoning tags are ordinary text. Each case writes a modified copy of a fixture model.

mod common;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use common::*;
use serde_json::{json, Value};
use vtc_r1::model::VisionLanguageModel;
use vtc_r1::tokenizer::{Content, Message, Part, Tokenizer};
use vtc_r1::Error;

fn unit() -> std::path::PathBuf {
    family_dir("glm4v").join("unit")
}

fn e2e() -> std::path::PathBuf {
    family_dir("glm4v").join("e2e")
}

fn unit_config() -> Value {
    serde_json::from_str(&std::fs::read_to_string(unit().join("config.json")).unwrap()).unwrap()
}

fn unit_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(unit().join("model.safetensors"), &Device::Cpu).unwrap()
}

fn load(dir: &Path) -> Result<Box<dyn VisionLanguageModel>, Error> {
    vtc_r1::model::load(dir, &Device::Cpu, DType::F32)
}

fn load_err(dir: &Path) -> Error {
    match load(dir) {
        Ok(_) => panic!("{dir:?} loaded but should not"),
        Err(e) => e,
    }
}

/// All logits of the unit "image" case, to compare loads of equivalent checkpoints.
fn image_logits(model: &dyn VisionLanguageModel) -> Tensor {
    let g = Golden::load(&unit());
    let v = model.encode_images(g.get("image.pixel_values"), &g.grids("image.image_grid_thw")).unwrap();
    let prompt = model.prepare_prompt(&g.ids("image.input_ids"), Some(v)).unwrap();
    let mut cache = model.new_cache();
    let hidden = model.forward_prompt(&mut cache, &prompt, prompt.len(), &mut vtc_r1::model::Trace::off()).unwrap();
    model.logits(&hidden).unwrap()
}

/// The unit config in transformers 4.57's schema: RoPE keys in `text_config` (`rope_theta`,
/// `partial_rotary_factor`, `rope_scaling.mrope_section`), the vision `model_type` "glm4v".
fn schema_457() -> Value {
    let mut cfg = unit_config();
    let text = cfg["text_config"].as_object_mut().unwrap();
    let rope = text.remove("rope_parameters").unwrap();
    text.insert("rope_theta".into(), rope["rope_theta"].clone());
    text.insert("partial_rotary_factor".into(), rope["partial_rotary_factor"].clone());
    text.insert("rope_scaling".into(), json!({"type": "default", "mrope_section": rope["mrope_section"]}));
    let vision = cfg["vision_config"].as_object_mut().unwrap();
    vision.remove("rope_parameters");
    vision.insert("model_type".into(), json!("glm4v"));
    cfg
}

/// The unit config in transformers 4.53's flat schema: the text keys at the top level.
fn schema_453() -> Value {
    let mut cfg = schema_457();
    let text = cfg.as_object_mut().unwrap().remove("text_config").unwrap();
    for (k, v) in text.as_object().unwrap() {
        if k != "model_type" {
            cfg.as_object_mut().unwrap().insert(k.clone(), v.clone());
        }
    }
    cfg
}

#[test]
fn every_config_schema_loads_the_same_model() {
    let reference = image_logits(load(&unit()).unwrap().as_ref());
    for (tag, cfg) in [("schema457", schema_457()), ("schema453", schema_453())] {
        let d = model_dir(tag, &cfg, &unit_tensors());
        let m = load(d.path()).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(m.spec().model_type, "glm4v");
        assert_eq!(max_diff(&image_logits(m.as_ref()), &reference), 0.0, "{tag}");
    }
    // Without model_type, the architectures entry picks the family.
    let mut cfg = unit_config();
    cfg.as_object_mut().unwrap().remove("model_type");
    let d = model_dir("archs", &cfg, &unit_tensors());
    assert_eq!(max_diff(&image_logits(load(d.path()).unwrap().as_ref()), &reference), 0.0);
    // bf16 weights on disk load into an f32 model.
    let t: HashMap<String, Tensor> = unit_tensors().into_iter().map(|(k, v)| (k, v.to_dtype(DType::BF16).unwrap())).collect();
    let d = model_dir("bf16-file", &unit_config(), &t);
    assert!(max_diff(&image_logits(load(d.path()).unwrap().as_ref()), &reference) < 0.1);
}

#[test]
fn bad_configs_name_the_keys() {
    let t = unit_tensors();
    type Edit = Box<dyn Fn(&mut Value)>;
    let no_rope: Edit = Box::new(|c| {
        c["text_config"].as_object_mut().unwrap().remove("rope_parameters");
    });
    let no_partial: Edit = Box::new(|c| {
        c["text_config"]["rope_parameters"].as_object_mut().unwrap().remove("partial_rotary_factor");
    });
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        // neither schema: both places are named
        ("norope", no_rope, &["text_config.rope_parameters", "text_config.rope_scaling", "text_config.rope_theta"]),
        // transformers' default factor (1.0) contradicts the sections: the factor's keys are named
        ("nopartial", no_partial, &["mrope_section", "partial_rotary_factor"]),
        ("section", Box::new(|c| set(c, "text_config.rope_parameters.mrope_section", json!([2, 2, 1]))), &["mrope_section"]),
        ("ropetype", Box::new(|c| set(c, "text_config.rope_parameters.rope_type", json!("yarn"))), &["rope_type"]),
        ("heads", Box::new(|c| set(c, "text_config.num_attention_heads", json!(6))), &["text_config.num_attention_heads"]),
        ("outhidden", Box::new(|c| set(c, "vision_config.out_hidden_size", json!(48))), &["vision_config.out_hidden_size"]),
        ("imagesize", Box::new(|c| set(c, "vision_config.image_size", json!(26))), &["vision_config.image_size"]),
        ("imgtok", Box::new(|c| set(c, "image_token_id", json!(1000))), &["image_token_id"]),
        ("novision", Box::new(|c| { c.as_object_mut().unwrap().remove("vision_config"); }), &["vision_config"]),
        ("unknown", Box::new(|c| set(c, "model_type", json!("llava"))), &["model_type", "\"llava\"", "\"qwen3_vl\"", "\"glm4v\""]),
    ];
    for (tag, edit, keys) in cases {
        let mut cfg = unit_config();
        edit(&mut cfg);
        let d = model_dir(tag, &cfg, &t);
        let e = load_err(d.path());
        assert_eq!(e.code(), "ERR_VTC_MODEL_CONFIG", "{tag}: {e}");
        let msg = e.to_string();
        for key in keys {
            assert!(msg.contains(key) && msg.contains("config.json"), "{tag}: {msg} lacks {key}");
        }
    }
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let cfg = unit_config();
    for name in ["model.language_model.layers.1.mlp.gate_up_proj.weight", "model.visual.downsample.bias", "lm_head.weight", "model.visual.embeddings.position_embedding.weight"] {
        let mut t = unit_tensors();
        t.remove(name);
        let d = model_dir("missing", &cfg, &t);
        let e = load_err(d.path()).to_string();
        assert!(e.contains(name) && e.contains("missing"), "{e}");
    }
    let mut t = unit_tensors();
    t.insert("model.visual.downsample.weight".into(), Tensor::zeros((64, 32, 1, 4), DType::F32, &Device::Cpu).unwrap());
    let d = model_dir("misshapen", &cfg, &t);
    let e = load_err(d.path()).to_string();
    assert!(e.contains("model.visual.downsample.weight") && e.contains("[64, 32, 1, 4]") && e.contains("[64, 32, 2, 2]"), "{e}");
}

fn messages(system: Content) -> Vec<Message> {
    vec![
        Message { role: "system".into(), content: system },
        Message { role: "user".into(), content: Content::Parts(vec![Part::Text { text: "Q".into() }, Part::Image]) },
        Message { role: "assistant".into(), content: Content::Parts(vec![Part::Text { text: "A".into() }, Part::Text { text: "B".into() }]) },
        Message { role: "user".into(), content: Content::Text("next".into()) },
    ]
}

/// VTC-R1's own inference code passes the system prompt as a list of text parts; the official template
/// prints system and assistant content as a string. Both forms must render as transformers renders the
/// string (spec/glm4v.md §6).
#[test]
fn system_content_as_string_or_text_parts_renders_the_same() {
    let model = load(&e2e()).unwrap();
    let mut tok = Tokenizer::from_dir(&e2e()).unwrap();
    tok.set_text_content_as_string(model.spec().text_content_as_string);
    let want = "[gMASK]<sop><|system|>\nSYS<|user|>\nQ<|begin_of_image|><|image|><|end_of_image|><|assistant|>\nAB<|user|>\nnext<|assistant|>\n";
    for system in [Content::Text("SYS".into()), Content::Parts(vec![Part::Text { text: "S".into() }, Part::Text { text: "YS".into() }])] {
        assert_eq!(tok.apply_chat_template(&messages(system), true, &Default::default()).unwrap(), want);
    }
}

/// `<think>`, `</think>`, `<answer>`, `</answer>` are single tokens that are not special: they survive
/// decoding with special tokens skipped, so they reach the streamed text; turn markers do not.
#[test]
fn reasoning_tags_are_text_and_turn_markers_are_not() {
    let tok = Tokenizer::from_dir(&e2e()).unwrap();
    for tag in ["<think>", "</think>", "<answer>", "</answer>"] {
        let id = tok.token_to_id(tag).unwrap_or_else(|| panic!("{tag} is not one token"));
        assert_eq!(tok.encode(tag).unwrap(), vec![id]);
        assert_eq!(tok.decode(&[id], true).unwrap(), tag);
    }
    assert_eq!(tok.decode(&[tok.token_to_id("<|user|>").unwrap()], true).unwrap(), "");
}
