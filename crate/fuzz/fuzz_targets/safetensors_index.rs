//! `model.safetensors.index.json`: the fuzzed index names shards in a model directory that holds two valid
//! shards, a corrupt one and a sub-folder; `Weights::from_dir` resolves it (shards outside the directory are
//! refused), then every tensor routed to a mapped shard is loaded.
#![no_main]

#[path = "common.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Once;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use safetensors::tensor::{Dtype, TensorView};
use vtc_r1::weights::{Weights, INDEX_FILE};

fn shard(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, dt, shape)| vec![0x3c; shape.iter().product::<usize>() * dt.bitsize() / 8]).collect();
    let views: HashMap<String, TensorView> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, dt, shape), b)| (name.to_string(), TensorView::new(*dt, shape.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(&views, None).unwrap()
}

fn setup() {
    let dir = common::scratch_dir();
    let w = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    w("model-00001-of-00002.safetensors", &shard(&[("a.weight", Dtype::F32, vec![2, 3]), ("b", Dtype::F16, vec![4])]));
    w("model-00002-of-00002.safetensors", &shard(&[("c.bias", Dtype::BF16, vec![3]), ("a.weight", Dtype::F64, vec![1])]));
    w("bad.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"x\": 1}");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
}

fuzz_target!(|data: &[u8]| {
    static SETUP: Once = Once::new();
    SETUP.call_once(setup);
    let dir = common::scratch_dir();
    std::fs::write(dir.join(INDEX_FILE), data).expect("write scratch file");
    let Ok(weights) = Weights::from_dir(dir, &Device::Cpu, DType::F32) else { return };
    for file in weights.source_files() {
        // never a file outside the model directory
        assert!(file.starts_with(dir), "{}", file.display());
    }
    for (name, shape) in [("a.weight", &[2usize, 3][..]), ("a.weight", &[1]), ("b", &[4]), ("c.bias", &[3])] {
        let _ = weights.get(name, shape);
    }
});
