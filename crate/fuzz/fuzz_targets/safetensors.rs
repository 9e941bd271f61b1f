//! A model directory's `model.safetensors`: `Weights::from_dir` maps it and validates its header, then every
//! tensor it declares is loaded with its own shape (converted to f32 and f16) and once with a wrong shape.
#![no_main]

#[path = "common.rs"]
mod common;

use candle_core::{DType, Device};
use libfuzzer_sys::fuzz_target;
use safetensors::tensor::SafeTensors;
use vtc_r1::weights::{Weights, SINGLE_FILE};

fuzz_target!(|data: &[u8]| {
    let dir = common::scratch_dir();
    std::fs::write(dir.join(SINGLE_FILE), data).expect("write scratch file");
    let weights = match Weights::from_dir(dir, &Device::Cpu, DType::F32) {
        Ok(w) => w,
        Err(e) => {
            // refused files are reported against the file
            assert!(e.to_string().contains(SINGLE_FILE), "{e}");
            return;
        }
    };
    let (_, meta) = SafeTensors::read_metadata(data).expect("Weights accepted a header safetensors refuses");
    for (name, info) in meta.tensors() {
        assert!(weights.contains(&name));
        let f32 = weights.get(&name, &info.shape);
        let _ = weights.get_as(&name, &info.shape, DType::F16);
        if let Ok(t) = f32 {
            assert_eq!(t.dims(), &info.shape[..]);
        }
        let mut wrong = info.shape.clone();
        wrong.push(1);
        assert!(weights.get(&name, &wrong).is_err());
    }
    assert!(weights.get("\u{0}no such tensor", &[1]).is_err());
});
