//! What quantization does to a model's next-token distributions, measured: a reasoning trace (teacher-forced, as
//! the assistant turn after a rendered page) runs through the f32 model and through each quantization of it,
//! chunk by chunk in lockstep, and every position of the trace compares the two distributions: top-1 agreement,
//! mean KL(f32 ‖ quantized) in nats, and the largest |Δ logit|. Prints one JSON line per quantization.
//!
//!   cd crate && cargo run --release --example quant_quality -- MODEL_DIR TRACE.txt PAGE.rgb WIDTH HEIGHT q8_0,q4k
//!
//! PAGE.rgb holds WIDTH × HEIGHT × 3 bytes (a page rendered by our renderer); bench/quant.js --quality writes
//! both files from ../shared/data/math500-r1-traces.parquet.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, D};
use vtc_r1::model::{LoadOptions, Prompt, Trace, VisionLanguageModel};
use vtc_r1::quant::Quantization;
use vtc_r1::tokenizer::{expand_image_tokens, Content, Message, Part, Tokenizer};
use vtc_r1::vision::{preprocess, to_tensor, ImageInput, PreprocessorConfig, RgbImage};

const CHUNK: usize = 256;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, trace, page, width, height, quants] = &args[..] else {
        eprintln!("usage: quant_quality MODEL_DIR TRACE.txt PAGE.rgb WIDTH HEIGHT QUANTIZATIONS");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let trace = std::fs::read_to_string(trace).expect("trace file");
    let pixels = std::fs::read(page).expect("page file");
    let (w, h): (u32, u32) = (width.parse().unwrap(), height.parse().unwrap());
    let image = RgbImage::load(&ImageInput::Raw { width: w, height: h, channels: 3, data: &pixels }, "page").unwrap();

    let options = |quantize| LoadOptions { device: Device::Cpu, dtype: DType::F32, quantize, quant_cache_dir: Some(std::env::temp_dir().join("vtc-quant-quality")) };
    let reference = vtc_r1::model::load_with(&dir, &options(None)).unwrap();
    let (prompt_ids, first) = sequence(&dir, reference.as_ref(), &image, &trace);
    for name in quants.split(',') {
        let q = Quantization::parse(name).unwrap();
        let model = vtc_r1::model::load_with(&dir, &options(Some(q))).unwrap();
        let m = compare(&dir, reference.as_ref(), model.as_ref(), &prompt_ids, &image, first);
        println!(
            r#"{{"quantization": "{name}", "positions": {}, "top1_agreement": {:.4}, "mean_kl": {:.3e}, "max_abs_logit_diff": {:.4}}}"#,
            m.positions,
            m.agree as f64 / m.positions as f64,
            m.kl / m.positions as f64,
            m.max_diff
        );
    }
}

/// The token ids of [user: a page and "Continue the reasoning.", assistant: the trace], image tokens expanded,
/// and the index of the first trace position whose next token is compared.
fn sequence(dir: &std::path::Path, model: &dyn VisionLanguageModel, image: &RgbImage, trace: &str) -> (Vec<u32>, usize) {
    let mut tok = Tokenizer::from_dir(dir).unwrap();
    tok.set_text_content_as_string(model.spec().text_content_as_string);
    let user = Message { role: "user".into(), content: Content::Parts(vec![Part::Image, Part::Text { text: "Continue the reasoning.".into() }]) };
    let prefix = tok.apply_chat_template(std::slice::from_ref(&user), true, &Default::default()).unwrap();
    let full = tok.apply_chat_template(&[user, Message::text("assistant", trace)], false, &Default::default()).unwrap();
    let processed = preprocess(image, &processor(dir, model)).unwrap();
    let counts = [processed.num_tokens(model.spec().image_processor.merge_size)];
    let img = model.spec().image_token_id;
    let ids = expand_image_tokens(&tok.encode(&full).unwrap(), img, &counts).unwrap();
    let first = expand_image_tokens(&tok.encode(&prefix).unwrap(), img, &counts).unwrap().len();
    (ids, first)
}

fn processor(dir: &std::path::Path, model: &dyn VisionLanguageModel) -> PreprocessorConfig {
    let family = &model.spec().image_processor;
    let path = dir.join("preprocessor_config.json");
    if path.is_file() { PreprocessorConfig::from_file(&path, family).unwrap() } else { family.clone() }
}

fn prompt(dir: &std::path::Path, model: &dyn VisionLanguageModel, ids: &[u32], image: &RgbImage) -> Prompt {
    let processed = preprocess(image, &processor(dir, model)).unwrap();
    let (px, grids) = to_tensor(&[processed], &Device::Cpu).unwrap();
    let vision = model.encode_images(&px, &grids).unwrap();
    model.prepare_prompt(ids, Some(vision)).unwrap()
}

#[derive(Default)]
struct Metrics {
    positions: usize,
    agree: usize,
    kl: f64,
    max_diff: f32,
}

fn compare(dir: &std::path::Path, a: &dyn VisionLanguageModel, b: &dyn VisionLanguageModel, ids: &[u32], image: &RgbImage, first: usize) -> Metrics {
    let (pa, pb) = (prompt(dir, a, ids, image), prompt(dir, b, ids, image));
    let (mut ca, mut cb) = (a.new_cache(), b.new_cache());
    let mut m = Metrics::default();
    while ca.len() < ids.len() - 1 {
        let start = ca.len();
        let end = (start + CHUNK).min(ids.len() - 1);
        let la = a.logits(&a.forward_prompt(&mut ca, &pa, end, &mut Trace::off()).unwrap()).unwrap();
        let lb = b.logits(&b.forward_prompt(&mut cb, &pb, end, &mut Trace::off()).unwrap()).unwrap();
        // positions from `first - 1` on predict the trace's tokens
        let skip = (first.saturating_sub(1)).saturating_sub(start).min(end - start);
        if skip == end - start {
            continue;
        }
        let (la, lb) = (la.narrow(0, skip, end - start - skip).unwrap(), lb.narrow(0, skip, end - start - skip).unwrap());
        let n = la.dim(0).unwrap();
        let ta: Vec<u32> = la.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        let tb: Vec<u32> = lb.argmax(D::Minus1).unwrap().to_vec1().unwrap();
        m.agree += ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
        let (pa, pb) = (log_softmax(&la), log_softmax(&lb));
        let kl = (pa.exp().unwrap() * (&pa - &pb).unwrap()).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        m.kl += kl as f64;
        m.max_diff = m.max_diff.max((la - lb).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap());
        m.positions += n;
    }
    m
}

fn log_softmax(x: &Tensor) -> Tensor {
    candle_nn::ops::log_softmax(x, D::Minus1).unwrap()
}
