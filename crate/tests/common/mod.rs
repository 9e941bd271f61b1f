//! Helpers shared by the model tests: fixture paths, golden tensors, comparisons.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

/// `shared/golden/<family>` (`qwen3vl` or `glm4v`).
pub fn family_dir(family: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/golden")).join(family)
}

pub fn golden_dir() -> PathBuf {
    family_dir("qwen3vl")
}

pub fn unit_dir() -> PathBuf {
    golden_dir().join("unit")
}

pub fn e2e_dir() -> PathBuf {
    golden_dir().join("e2e")
}

pub struct Golden(pub HashMap<String, Tensor>);

impl Golden {
    pub fn load(dir: &std::path::Path) -> Self {
        let path = dir.join("golden.safetensors");
        Golden(
            candle_core::safetensors::load(&path, &Device::Cpu)
                .unwrap_or_else(|e| panic!("{path:?}: {e}")),
        )
    }
    pub fn get(&self, key: &str) -> &Tensor {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("golden tensor {key} missing"))
    }
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    pub fn ids(&self, key: &str) -> Vec<u32> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect()
    }
    pub fn i64s(&self, key: &str) -> Vec<i64> {
        self.get(key)
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
    }
    pub fn grids(&self, key: &str) -> Vec<[usize; 3]> {
        self.i64s(key)
            .chunks(3)
            .map(|c| [c[0] as usize, c[1] as usize, c[2] as usize])
            .collect()
    }
}

/// max |a - b| after squeezing leading singleton dims of the golden tensor to our shape.
pub fn max_diff(ours: &Tensor, golden: &Tensor) -> f32 {
    let g = golden
        .reshape(ours.shape())
        .unwrap_or_else(|_| panic!("shape {:?} vs golden {:?}", ours.dims(), golden.dims()));
    let d = (ours.to_dtype(DType::F32).unwrap() - g.to_dtype(DType::F32).unwrap()).unwrap();
    d.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

pub fn argmax(logits: &Tensor) -> u32 {
    logits
        .flatten_all()
        .unwrap()
        .argmax(0)
        .unwrap()
        .to_scalar::<u32>()
        .unwrap()
}

/// A fresh, empty directory under the system temp dir (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("vtc-r1-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A model directory with the given config and tensors.
pub fn model_dir(tag: &str, config: &Value, tensors: &HashMap<String, Tensor>) -> TempDir {
    let d = TempDir::new(tag);
    std::fs::write(d.path().join("config.json"), serde_json::to_string_pretty(config).unwrap()).unwrap();
    candle_core::safetensors::save(tensors, d.path().join("model.safetensors")).unwrap();
    d
}

/// Sets a dotted key of a JSON config.
pub fn set(v: &mut Value, path: &str, x: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur.get_mut(*p).unwrap();
    }
    cur.as_object_mut().unwrap().insert(parts[parts.len() - 1].to_string(), x);
}

/// A round of the optical-memory loop on a fixture: system prompt, question and `pages` of `dir`.
pub fn request_in(dir: &std::path::Path, gj: &Value, pages: &[&str], params: vtc_r1::generate::GenerationParams) -> vtc_r1::engine::ChatRequest {
    use vtc_r1::tokenizer::{Content, Message, Part};
    let mut parts = vec![Part::Text { text: gj["question"].as_str().unwrap().into() }];
    parts.extend(pages.iter().map(|_| Part::Image));
    let messages = vec![
        Message::text("system", gj["system_prompt"].as_str().unwrap()),
        Message { role: "user".into(), content: Content::Parts(parts) },
    ];
    let images = pages.iter().map(|p| vtc_r1::engine::ImageData::File(dir.join(p))).collect();
    vtc_r1::engine::ChatRequest::new(messages, images, params)
}

/// A fixture directory's `golden.json`.
pub fn golden_json_in(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap()
}

/// log_softmax of a logits row: the reference for the engine's reported log-probabilities.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
    logits.iter().map(|x| x - lse).collect()
}
