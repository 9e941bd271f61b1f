//! A model directory's `config.json`, both families: the loader (`model::load`: JSON syntax, family picked
//! by `model_type`/`architectures`; it stops at the missing weights), each family's validating parser, the
//! image geometry derived from it, and `preprocessor_config.json` over that family's defaults.
#![no_main]

#[path = "common.rs"]
mod common;

use std::path::Path;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use vtc_r1::model::{glm4v, qwen3_vl};
use vtc_r1::vision::{image_tokens, smart_resize, PreprocessorConfig};

/// What the engine derives from a parsed config before any weight is read.
fn geometry(pp: &PreprocessorConfig, json: &Value, path: &Path) {
    for cfg in [Some(pp.clone()), PreprocessorConfig::from_json(json, path, pp).ok()].into_iter().flatten() {
        assert!(cfg.factor() > 0 && cfg.patch_dim() > 0);
        for (w, h) in [(1, 1), (589, 842), (28, 5000), (65_536, 4096), (3, 1)] {
            if let Ok((rh, rw)) = smart_resize(h, w, &cfg) {
                assert!(rh % cfg.factor() == 0 && rw % cfg.factor() == 0, "{w}x{h} -> {rw}x{rh}");
            }
            let _ = image_tokens(w, h, &cfg);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch_dir();
    std::fs::write(dir.join("config.json"), data).expect("write scratch file");
    // no weights in the folder: a config the loader accepts fails on them, any other on the config
    let err = vtc_r1::model::load(dir, &Device::Cpu, DType::F32).err().expect("loaded a model without weights");
    let _ = err.to_string();

    let Ok(json) = serde_json::from_slice::<Value>(data) else { return };
    let path = Path::new("config.json");
    if let Ok(c) = qwen3_vl::Qwen3VLConfig::from_json(&json, path) {
        let v = &c.vision;
        assert!(v.head_dim() > 0 && v.patch_dim() > 0 && v.grid_side() * v.grid_side() == v.num_position_embeddings);
        assert!(c.text.head_dim % 2 == 0 && c.text.num_attention_heads % c.text.num_key_value_heads == 0);
        geometry(&qwen3_vl::image_processor(v), &json, path);
    }
    if let Ok(c) = glm4v::Glm4vConfig::from_json(&json, path) {
        let v = &c.vision;
        assert!(v.head_dim() > 0 && v.patch_dim() > 0);
        assert!(c.text.head_dim % 2 == 0 && c.text.num_attention_heads % c.text.num_key_value_heads == 0);
        geometry(&glm4v::image_processor(v), &json, path);
    }
});
