//! `config.json` of a Qwen3-VL checkpoint, in both schemas seen in the wild:
//! transformers 4.57 (`text_config.rope_theta` + `text_config.rope_scaling`) and 5.x
//! (`text_config.rope_parameters`). Every value is range-checked here so the model code can trust it.

use std::path::Path;

use serde_json::Value;

use crate::error::Result;
use crate::json_file::{read_json, Keys};
use crate::model::config_keys::{attention_heads, require_silu, token_id, MAX_DIM, MAX_LAYERS, MAX_VOCAB};

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies given to the (t, h, w) axes by interleaved M-RoPE.
    pub mrope_section: [usize; 3],
    pub max_position_embeddings: usize,
    pub attention_bias: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
    /// true: `gelu_pytorch_tanh` (the released models); false: exact erf GELU.
    pub gelu_tanh: bool,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Values per patch row of `pixel_values`: channels · temporal · patch · patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Side of the learned position-embedding grid.
    pub fn grid_side(&self) -> usize {
        (self.num_position_embeddings as f64).sqrt().round() as usize
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Qwen3VLConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub tie_word_embeddings: bool,
}

impl Qwen3VLConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?, path)
    }

    /// Validates an already parsed config; `path` is only used in error messages.
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let k = Keys::new(path, json);
        check_sections(&k)?;

        let tc = "text_config.";
        let t = |name: &str| format!("{tc}{name}");
        let hidden_size = k.usize_in(&[&t("hidden_size")], None, 1..=MAX_DIM)?;
        let (num_attention_heads, num_key_value_heads) = attention_heads(&k, "text_config.")?;
        let default_head_dim = hidden_size / num_attention_heads;
        let head_dim = k.usize_in(&[&t("head_dim")], Some(default_head_dim), 2..=1024)?;
        if head_dim % 2 != 0 {
            return Err(k.err(&t("head_dim"), format!("{head_dim} must be even for rotary embeddings")));
        }
        require_silu(&k, &t("hidden_act"))?;
        let (rope_theta, mrope_section) = read_rope(&k, head_dim)?;
        let text = TextConfig {
            vocab_size: k.usize_in(&[&t("vocab_size")], None, 1..=MAX_VOCAB)?,
            hidden_size,
            intermediate_size: k.usize_in(&[&t("intermediate_size")], None, 1..=MAX_DIM * 4)?,
            num_hidden_layers: k.usize_in(&[&t("num_hidden_layers")], None, 1..=MAX_LAYERS)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: k.f64_in(&[&t("rms_norm_eps")], Some(1e-6), 0.0, 1.0)?,
            rope_theta,
            mrope_section,
            max_position_embeddings: k.usize_in(&[&t("max_position_embeddings")], Some(262_144), 1..=1 << 24)?,
            attention_bias: k.bool_or(&[&t("attention_bias")], false)?,
        };

        let vision = read_vision(&k, &text)?;
        let vocab = text.vocab_size;
        let token = |key: &str, default: usize| token_id(&k, key, default, vocab);
        Ok(Self {
            image_token_id: token("image_token_id", 151655)?,
            video_token_id: token("video_token_id", 151656)?,
            vision_start_token_id: token("vision_start_token_id", 151652)?,
            vision_end_token_id: token("vision_end_token_id", 151653)?,
            // transformers writes it at the top level; some configs only have it in text_config.
            tie_word_embeddings: k.bool_or(&["tie_word_embeddings", &t("tie_word_embeddings")], false)?,
            text,
            vision,
        })
    }
}

/// Both sub-configs are present (the loader has already matched `model_type`).
pub(crate) fn check_sections(k: &Keys) -> Result<()> {
    if k.get("text_config").map(|v| !v.is_object()).unwrap_or(true) {
        return Err(k.err("text_config", "missing or not an object"));
    }
    if k.get("vision_config").map(|v| !v.is_object()).unwrap_or(true) {
        return Err(k.err("vision_config", "missing or not an object"));
    }
    Ok(())
}

/// RoPE settings: 5.x `rope_parameters`, else 4.57 `rope_theta` + `rope_scaling`.
fn read_rope(k: &Keys, head_dim: usize) -> Result<(f64, [usize; 3])> {
    let (theta_key, params_key) = if k.get("text_config.rope_parameters").is_some() {
        ("text_config.rope_parameters.rope_theta", "text_config.rope_parameters")
    } else {
        ("text_config.rope_theta", "text_config.rope_scaling")
    };
    let theta = k.f64_in(&[theta_key], Some(5_000_000.0), 0.0, 1e12)?;
    let type_keys = [format!("{params_key}.rope_type"), format!("{params_key}.type")];
    let (type_key, rope_type) = k.str_or(&[&type_keys[0], &type_keys[1]], "default")?;
    // "mrope" is what some 4.x configs call the same default scheme.
    if rope_type != "default" && rope_type != "mrope" {
        return Err(k.err(&type_key, format!("unsupported rope_type `{rope_type}` (only \"default\" is implemented)")));
    }
    let sec_key = format!("{params_key}.mrope_section");
    let section = k.usizes::<3>(&sec_key)?.unwrap_or([24, 20, 20]);
    if section.iter().any(|&s| s > head_dim / 2) {
        return Err(k.err(&sec_key, format!("{section:?} exceeds head_dim/2 = {}", head_dim / 2)));
    }
    Ok((theta, section))
}

fn read_vision(k: &Keys, text: &TextConfig) -> Result<VisionConfig> {
    let v = |name: &str| format!("vision_config.{name}");
    let hidden_size = k.usize_in(&[&v("hidden_size"), &v("embed_dim")], None, 1..=MAX_DIM)?;
    let num_heads = k.usize_in(&[&v("num_heads")], None, 1..=1024)?;
    if hidden_size % num_heads != 0 || (hidden_size / num_heads) % 4 != 0 {
        return Err(k.err(
            &v("num_heads"),
            format!("hidden_size {hidden_size} / num_heads {num_heads} must be a whole head_dim divisible by 4"),
        ));
    }
    let depth = k.usize_in(&[&v("depth")], None, 1..=MAX_LAYERS)?;
    let npos = k.usize_in(&[&v("num_position_embeddings")], None, 1..=1 << 20)?;
    let side = (npos as f64).sqrt().round() as usize;
    if side * side != npos {
        return Err(k.err(&v("num_position_embeddings"), format!("{npos} is not a perfect square")));
    }
    let out_hidden_size = k.usize_in(&[&v("out_hidden_size")], None, 1..=MAX_DIM)?;
    if out_hidden_size != text.hidden_size {
        return Err(k.err(
            &v("out_hidden_size"),
            format!("{out_hidden_size} must equal text_config.hidden_size {}", text.hidden_size),
        ));
    }
    let ds_key = v("deepstack_visual_indexes");
    let deepstack_visual_indexes = match k.get(&ds_key) {
        None => Vec::new(),
        Some(val) => {
            let arr = val.as_array().ok_or_else(|| k.err(&ds_key, format!("expected a list of integers, got {val}")))?;
            let mut out = Vec::with_capacity(arr.len());
            for x in arr {
                let i = k.usize_of(&ds_key, x)?;
                if i >= depth {
                    return Err(k.err(&ds_key, format!("index {i} is not below depth {depth}")));
                }
                if out.contains(&i) {
                    return Err(k.err(&ds_key, format!("index {i} is repeated")));
                }
                out.push(i);
            }
            if out.len() > text.num_hidden_layers {
                return Err(k.err(&ds_key, format!("{} taps but only {} decoder layers", out.len(), text.num_hidden_layers)));
            }
            out
        }
    };
    let (act_key, act) = k.str_or(&[&v("hidden_act")], "gelu_pytorch_tanh")?;
    let gelu_tanh = match act {
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => true,
        "gelu" => false,
        other => return Err(k.err(&act_key, format!("unsupported activation `{other}`"))),
    };
    Ok(VisionConfig {
        depth,
        hidden_size,
        intermediate_size: k.usize_in(&[&v("intermediate_size")], None, 1..=MAX_DIM * 4)?,
        num_heads,
        in_channels: k.usize_in(&[&v("in_channels"), &v("in_chans")], Some(3), 1..=4)?,
        patch_size: k.usize_in(&[&v("patch_size")], Some(16), 1..=256)?,
        temporal_patch_size: k.usize_in(&[&v("temporal_patch_size")], Some(2), 1..=16)?,
        spatial_merge_size: k.usize_in(&[&v("spatial_merge_size")], Some(2), 1..=16)?,
        out_hidden_size,
        num_position_embeddings: npos,
        deepstack_visual_indexes,
        gelu_tanh,
    })
}
