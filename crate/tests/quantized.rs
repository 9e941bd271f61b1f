//! Quantized weights: every family loads quantized and still agrees with the float32 reference where its lead
//! is clear; the quantized-weight cache is written once, read on the next load, and rebuilt when the source
//! changes or the file is damaged; bad quantization names are errors listing the known ones.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::*;
use vtc_r1::model::{LoadOptions, VisionLanguageModel};
use vtc_r1::quant::{Quantization, QuantizedWeights};

fn options(q: Quantization, cache: &Path) -> LoadOptions {
    LoadOptions { device: Device::Cpu, dtype: DType::F32, quantize: Some(q), quant_cache_dir: Some(cache.to_path_buf()) }
}

/// A copy of a fixture directory (its files linked, `model.safetensors` copied so it can be changed).
fn copy_model(src: &Path, tag: &str) -> TempDir {
    let d = TempDir::new(tag);
    for entry in std::fs::read_dir(src).unwrap() {
        let p = entry.unwrap().path();
        let to = d.path().join(p.file_name().unwrap());
        if p.file_name().unwrap() == "model.safetensors" {
            std::fs::copy(&p, &to).unwrap();
        } else {
            std::os::unix::fs::symlink(&p, &to).unwrap();
        }
    }
    d
}

fn sources(dir: &Path) -> Vec<PathBuf> {
    vec![dir.join("model.safetensors")]
}

/// Last-position logits of a golden e2e case's prompt (text only) and the fixture's own.
fn last_logits(model: &dyn VisionLanguageModel, g: &Golden, case: &str) -> (Tensor, Tensor) {
    let prompt = model.prepare_prompt(&g.ids(&format!("{case}.input_ids")), None).unwrap();
    let mut cache = model.new_cache();
    let ours = model.prefill(&mut cache, &prompt, prompt.len()).unwrap().unwrap();
    (ours, g.get(&format!("{case}.logits")).flatten_all().unwrap())
}

/// Every quantization of both families' e2e models (their widths, 32, take q8_0 and q4_0 as asked and the
/// 32-block fallbacks of the k-quants) picks the reference's next token where its lead is clear, and moves the
/// logits by little.
#[test]
fn quantized_models_agree_with_the_f32_reference() {
    for family in ["qwen3vl", "glm4v"] {
        let dir = family_dir(family).join("e2e");
        let g = Golden::load(&dir);
        for q in Quantization::ALL {
            let cache = TempDir::new("qcache");
            let model = vtc_r1::model::load_with(&dir, &options(q, cache.path())).unwrap();
            let (ours, golden) = last_logits(model.as_ref(), &g, "text");
            let mut sorted: Vec<f32> = golden.to_vec1().unwrap();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let d = max_diff(&ours, &golden);
            println!("{family} {}: max|Δ logit| {d:.3e}, reference margin {:.3}", q.name(), sorted[0] - sorted[1]);
            assert!(d < 0.5, "{family} {}: logits moved by {d}", q.name());
            if sorted[0] - sorted[1] > 2.0 * d {
                assert_eq!(argmax(&ours), argmax(&golden), "{family} {}", q.name());
            }
        }
    }
}

#[test]
fn the_cache_is_written_once_read_next_time_and_rebuilt_when_stale() {
    let model_dir = copy_model(&family_dir("glm4v").join("e2e"), "qmodel");
    let cache = TempDir::new("qcache");
    let q = Quantization::Q8_0;
    let open = || QuantizedWeights::open(q, &sources(model_dir.path()), Some(cache.path())).unwrap();
    assert!(!open().from_cache(), "no cache before the first load");

    let first = vtc_r1::model::load_with(model_dir.path(), &options(q, cache.path())).unwrap();
    let path = open().cache_path().to_path_buf();
    assert!(path.is_file(), "the first load writes {path:?}");
    assert!(open().from_cache(), "the next load reads it");
    let written = std::fs::metadata(&path).unwrap().modified().unwrap();

    // A second load takes the weights from the cache (the file is not written again) and computes the same.
    let g = Golden::load(&family_dir("glm4v").join("e2e"));
    let second = vtc_r1::model::load_with(model_dir.path(), &options(q, cache.path())).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), written);
    assert_eq!(max_diff(&last_logits(first.as_ref(), &g, "text").0, &last_logits(second.as_ref(), &g, "text").0), 0.0);

    // Another quantization of the same model has its own file.
    assert_ne!(QuantizedWeights::open(Quantization::Q4K, &sources(model_dir.path()), Some(cache.path())).unwrap().cache_path(), path);

    // A truncated cache is not trusted: the load quantizes again and rewrites it.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(!open().from_cache());
    let third = vtc_r1::model::load_with(model_dir.path(), &options(q, cache.path())).unwrap();
    assert!(open().from_cache(), "rewritten");
    assert_eq!(max_diff(&last_logits(first.as_ref(), &g, "text").0, &last_logits(third.as_ref(), &g, "text").0), 0.0);

    // A changed source file invalidates it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let weights = std::fs::read(model_dir.path().join("model.safetensors")).unwrap();
    std::fs::write(model_dir.path().join("model.safetensors"), weights).unwrap();
    assert!(!open().from_cache(), "the source's modification time changed");
}

#[test]
fn unknown_quantizations_list_the_known_ones() {
    let e = Quantization::parse("q3k").unwrap_err().to_string();
    assert!(e.contains("q3k") && e.contains("q8_0") && e.contains("q4k"), "{e}");
    assert_eq!(Quantization::parse("Q4_K").unwrap(), Quantization::Q4K);
    assert_eq!(Quantization::parse("q8_0").unwrap(), Quantization::Q8_0);
}

#[test]
fn k_quants_fall_back_where_rows_are_not_a_multiple_of_256() {
    use candle_core::quantized::GgmlDType;
    // GLM-4.1V's down_proj reads 13,696 values a row: 53.5 super-blocks.
    assert_eq!(Quantization::Q4K.block_type(4096), Some(GgmlDType::Q4K));
    // as llama.cpp: q5_0 under q4k, q8_0 under q5k and q6k
    assert_eq!(Quantization::Q4K.block_type(13696), Some(GgmlDType::Q5_0));
    assert_eq!(Quantization::Q5K.block_type(13696), Some(GgmlDType::Q8_0));
    assert_eq!(Quantization::Q6K.block_type(13696), Some(GgmlDType::Q8_0));
    assert_eq!(Quantization::Q4K.block_type(100), None);
    assert_eq!(Quantization::Q4_0.block_type(100), None);
    assert_eq!(Quantization::Q8_0.block_type(13696), Some(GgmlDType::Q8_0));
    assert_eq!(Quantization::Q8_0.block_type(100), None, "rows of no whole block stay dense");
}
