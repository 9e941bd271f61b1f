//! Inputs the fuzz targets (crate/fuzz, issue #17) found or reached that the library mishandled: each must now be
//! a clean error (or the right result), in release builds (where integer overflow wraps) as in debug ones (where
//! it panics).

use std::path::Path;

use serde_json::{json, Value};
use vtc_r1::model::glm4v::Glm4vConfig;

/// A GLM-4.1V config as transformers 5 writes it (head_dim 16, partial_rotary_factor 0.5: rotary dim 8).
fn glm_config(mrope_section: Value) -> Value {
    json!({
        "model_type": "glm4v",
        "text_config": {"hidden_act": "silu", "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2,
            "num_hidden_layers": 2, "num_key_value_heads": 1, "vocab_size": 151552,
            "rope_parameters": {"mrope_section": mrope_section, "partial_rotary_factor": 0.5, "rope_theta": 10000.0, "rope_type": "default"}},
        "vision_config": {"depth": 2, "hidden_act": "silu", "hidden_size": 32, "image_size": 336, "in_channels": 3,
            "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 32, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2}
    })
}

#[test]
fn glm4v_mrope_sections_whose_sum_overflows_are_refused() {
    let path = Path::new("config.json");
    assert_eq!(Glm4vConfig::from_json(&glm_config(json!([1, 1, 2])), path).unwrap().text.mrope_section, [1, 1, 2]);
    // 2^63 + 2^63 + 4 wraps to 4 = rotary/2: accepted before, and the rotary tables were then built from 2^63
    // (a debug build panicked on the overflow instead).
    for section in [json!([1u64 << 63, 1u64 << 63, 4]), json!([u64::MAX, 1, 4]), json!([u64::MAX, u64::MAX, 6])] {
        let err = Glm4vConfig::from_json(&glm_config(section.clone()), path).expect_err(&section.to_string());
        let msg = err.to_string();
        assert!(msg.contains("text_config.rope_parameters.mrope_section") && msg.contains("config.json"), "{msg}");
    }
}

/// A long operator or filter chain nests minijinja's expression tree as deep as the chain is long; compiled and
/// evaluated recursively, it overflowed the stack of the thread that rendered it (a 40 KB template on a 2 MiB
/// thread, 200 KB on the main thread) and aborted the process instead of answering.
#[test]
fn long_expression_chains_in_a_chat_template_do_not_overflow_the_stack() {
    use vtc_r1::tokenizer::{ChatTemplate, Message, TEMPLATE_MAX_BYTES};
    let render = |template: String| {
        let t = ChatTemplate { source: "model/chat_template.jinja".into(), template };
        // the engine's worker and request threads have 2 MiB stacks
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || t.render(&[Message::text("user", "hi")], true, &Default::default()))
            .unwrap()
            .join()
            .unwrap()
    };
    assert_eq!(render(format!("{{{{ 1{} }}}}", " + 1".repeat(50_000))).unwrap(), "50001");
    assert_eq!(render(format!("{{{{ 'a'{} }}}}", "|e".repeat(50_000))).unwrap(), "a");
    let _ = render(format!("{{{{ messages{} }}}}", ".a".repeat(50_000)));
    let msg = render(format!("{{{{ 1 }}}}{}", " ".repeat(TEMPLATE_MAX_BYTES))).unwrap_err().to_string();
    assert!(msg.contains("model/chat_template.jinja") && msg.contains("bytes"), "{msg}");
}
