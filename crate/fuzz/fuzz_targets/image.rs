//! An image part of a request: the header-only size check (`image_dimensions`), `RgbImage::decode` (PNG and
//! JPEG), then `preprocess` with one of both families' processors (and LLaMA-Factory's training resize), which must
//! give the token count `image_tokens` promised from the header alone.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vtc_r1::model::{glm4v, qwen3_vl};
use vtc_r1::vision::{image_dimensions, image_tokens, preprocess, ImageInput, PreprocessorConfig, RgbImage};

/// Images the server would decode: it refuses more pixels than `--max-image-pixels` from the header, before
/// decoding. 1 MP keeps an execution in milliseconds; the library's own limit (2^28) is checked by the header
/// step all the same.
const MAX_DECODED_PIXELS: u64 = 1 << 20;

fn configs() -> &'static [PreprocessorConfig] {
    static CONFIGS: OnceLock<Vec<PreprocessorConfig>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let qwen = qwen3_vl::Qwen3VLConfig::from_json(&serde_json::from_str(QWEN_CONFIG).unwrap(), "q".as_ref()).unwrap();
        let glm = glm4v::Glm4vConfig::from_json(&serde_json::from_str(GLM_CONFIG).unwrap(), "g".as_ref()).unwrap();
        let q = qwen3_vl::image_processor(&qwen.vision);
        let g = glm4v::image_processor(&glm.vision);
        vec![
            q.clone(),
            // VTC-R1's training feed: pages shrunk to 262144 pixels first
            PreprocessorConfig { image_max_pixels: Some(262_144), ..q },
            PreprocessorConfig { image_max_pixels: Some(262_144), ..g.clone() },
            g,
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let dims = image_dimensions(&ImageInput::Encoded(data), "fuzz");
    let Ok((w, h)) = dims else { return };
    assert!(w > 0 && h > 0 && w as u64 * h as u64 <= vtc_r1::vision::MAX_INPUT_PIXELS);
    if w as u64 * h as u64 > MAX_DECODED_PIXELS {
        return;
    }
    let Ok(img) = RgbImage::decode(data, "fuzz") else { return };
    assert_eq!((img.width, img.height), (w as usize, h as usize), "decoded size differs from the header's");
    assert_eq!(img.data.len(), img.width * img.height * 3);
    // one processor per execution (the input's length picks it), to keep executions fast
    let cfg = &configs()[data.len() % configs().len()];
    let tokens = image_tokens(img.width, img.height, cfg);
    match preprocess(&img, cfg) {
        Ok(p) => {
            assert_eq!(p.pixel_values.len(), p.num_patches() * p.patch_dim);
            assert_eq!(Some(p.num_tokens(cfg.merge_size)), tokens.as_ref().ok().copied(), "{w}x{h}");
            assert!(p.pixel_values.iter().all(|v| v.is_finite()));
        }
        Err(_) => assert!(tokens.is_err(), "{w}x{h}: image_tokens accepted what preprocess refused"),
    }
});

const QWEN_CONFIG: &str = include_str!("../seeds/model_config/qwen3vl-e2e.json");
const GLM_CONFIG: &str = include_str!("../seeds/model_config/glm4v-e2e.json");
