//! `config.json` of a GLM-4.1V checkpoint (Glyph, VTC-R1-Glyph, GLM-4.1V-9B) in the three schemas seen in the
//! wild: transformers 4.53 (text keys at the top level), 4.57 (`text_config` with `rope_theta`,
//! `partial_rotary_factor` and `rope_scaling.mrope_section`) and 5.x (`text_config.rope_parameters`). Every
//! value is range-checked here so the model code can trust it.

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
    /// `hidden_size / num_attention_heads` (GLM-4.1V has no `head_dim` key).
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Head dimensions that rotate (`head_dim · partial_rotary_factor`); the rest pass through.
    pub rotary_dim: usize,
    /// Rotary frequencies given to the (t, h, w) axes, as consecutive chunks.
    pub mrope_section: [usize; 3],
    pub max_position_embeddings: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    /// Width of the merger's SwiGLU (the vision blocks' MLPs are `out_hidden_size` wide).
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    pub out_hidden_size: usize,
    pub rms_norm_eps: f64,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }
    /// Values per patch row of `pixel_values`: channels · temporal · patch · patch.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Side of the learned position-embedding grid (`image_size / patch_size`, 24 for GLM-4.1V).
    pub fn grid_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Glm4vConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub image_start_token_id: u32,
    pub image_end_token_id: u32,
    pub tie_word_embeddings: bool,
}

impl Glm4vConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_json(path)?, path)
    }

    /// Validates an already parsed config; `path` is only used in error messages.
    pub fn from_json(json: &Value, path: &Path) -> Result<Self> {
        let k = Keys::new(path, json);
        if k.get("vision_config").map(|v| !v.is_object()).unwrap_or(true) {
            return Err(k.err("vision_config", "missing or not an object"));
        }
        // 4.53 wrote the text keys at the top level; later versions nest them in text_config.
        let nested = match k.get("text_config") {
            Some(v) if v.is_object() => true,
            Some(v) => return Err(k.err("text_config", format!("expected an object, got {v}"))),
            None => false,
        };
        let t = |name: &str| if nested { format!("text_config.{name}") } else { name.to_string() };

        let hidden_size = k.usize_in(&[&t("hidden_size")], None, 1..=MAX_DIM)?;
        let (num_attention_heads, num_key_value_heads) = attention_heads(&k, if nested { "text_config." } else { "" })?;
        // transformers derives head_dim from these two and ignores any head_dim key.
        if hidden_size % num_attention_heads != 0 || (hidden_size / num_attention_heads) % 2 != 0 {
            return Err(k.err(
                &t("num_attention_heads"),
                format!("hidden_size {hidden_size} / num_attention_heads {num_attention_heads} must be a whole, even head_dim"),
            ));
        }
        let head_dim = hidden_size / num_attention_heads;
        require_silu(&k, &t("hidden_act"))?;
        let (rope_theta, rotary_dim, mrope_section) = read_rope(&k, nested, head_dim)?;
        let text = TextConfig {
            vocab_size: k.usize_in(&[&t("vocab_size")], None, 1..=MAX_VOCAB)?,
            hidden_size,
            intermediate_size: k.usize_in(&[&t("intermediate_size")], None, 1..=MAX_DIM * 4)?,
            num_hidden_layers: k.usize_in(&[&t("num_hidden_layers")], None, 1..=MAX_LAYERS)?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps: k.f64_in(&[&t("rms_norm_eps")], Some(1e-5), 0.0, 1.0)?,
            rope_theta,
            rotary_dim,
            mrope_section,
            max_position_embeddings: k.usize_in(&[&t("max_position_embeddings")], Some(32_768), 1..=1 << 24)?,
        };
        let vision = read_vision(&k, &text)?;
        let vocab = text.vocab_size;
        let token = |key: &str, default: usize| token_id(&k, key, default, vocab);
        Ok(Self {
            image_token_id: token("image_token_id", 151343)?,
            image_start_token_id: token("image_start_token_id", 151339)?,
            image_end_token_id: token("image_end_token_id", 151340)?,
            // transformers writes it at the top level; some configs only have it in text_config.
            tie_word_embeddings: k.bool_or(&["tie_word_embeddings", "text_config.tie_word_embeddings"], false)?,
            text,
            vision,
        })
    }
}

/// RoPE settings `(theta, rotary_dim, mrope_section)` from whichever schema the file uses:
/// 5.x `rope_parameters`, or 4.5x `rope_theta` + `partial_rotary_factor` + `rope_scaling`.
fn read_rope(k: &Keys, nested: bool, head_dim: usize) -> Result<(f64, usize, [usize; 3])> {
    let t = |name: &str| if nested { format!("text_config.{name}") } else { name.to_string() };
    let (params, scaling) = (t("rope_parameters"), t("rope_scaling"));
    let params_key = if k.get(&params).is_some() {
        params
    } else if k.get(&scaling).is_some() {
        scaling
    } else {
        return Err(k.err(
            &params,
            format!("missing: the M-RoPE settings are in `{params}` (transformers 5) or `{scaling}` with `{}` (transformers 4.5x)", t("rope_theta")),
        ));
    };
    let p = |name: &str| format!("{params_key}.{name}");
    let theta = k.f64_in(&[&p("rope_theta"), &t("rope_theta")], Some(10_000.0), 0.0, 1e12)?;
    let (type_key, rope_type) = k.str_or(&[&p("rope_type"), &p("type")], "default")?;
    if rope_type != "default" && rope_type != "mrope" {
        return Err(k.err(&type_key, format!("unsupported rope_type `{rope_type}` (only \"default\" is implemented)")));
    }
    // transformers' default is 1.0; every GLM-4.1V checkpoint has 0.5, and the section check below
    // catches a missing value.
    let partial_keys = [p("partial_rotary_factor"), t("partial_rotary_factor"), "partial_rotary_factor".to_string()];
    let partial_keys: Vec<&str> = partial_keys.iter().map(String::as_str).collect();
    let partial = k.f64_in(&partial_keys, Some(1.0), 0.0, 1.0)?;
    let rotary = (head_dim as f64 * partial) as usize;
    let sec_key = p("mrope_section");
    let section = k.usizes::<3>(&sec_key)?.unwrap_or([8, 12, 12]);
    // checked: sections of up to 2^64 - 1 each would wrap their sum onto a valid one (fuzzing, issue #17)
    let half = section.iter().try_fold(0usize, |sum, &s| sum.checked_add(s));
    if !rotary.is_multiple_of(2) || half != Some(rotary / 2) {
        return Err(k.err(
            &sec_key,
            format!(
                "{section:?} must sum to half the rotary dimension: head_dim {head_dim} × partial_rotary_factor {partial} = {rotary} \
                 (looked for the factor in {})",
                partial_keys.join(", ")
            ),
        ));
    }
    Ok((theta, rotary, section))
}

fn read_vision(k: &Keys, text: &TextConfig) -> Result<VisionConfig> {
    let v = |name: &str| format!("vision_config.{name}");
    let hidden_size = k.usize_in(&[&v("hidden_size")], None, 1..=MAX_DIM)?;
    let num_heads = k.usize_in(&[&v("num_heads")], None, 1..=1024)?;
    if hidden_size % num_heads != 0 || (hidden_size / num_heads) % 4 != 0 {
        return Err(k.err(
            &v("num_heads"),
            format!("hidden_size {hidden_size} / num_heads {num_heads} must be a whole head_dim divisible by 4"),
        ));
    }
    let out_hidden_size = k.usize_in(&[&v("out_hidden_size")], None, 1..=MAX_DIM)?;
    if out_hidden_size != text.hidden_size {
        return Err(k.err(&v("out_hidden_size"), format!("{out_hidden_size} must equal the text hidden_size {}", text.hidden_size)));
    }
    let patch_size = k.usize_in(&[&v("patch_size")], Some(14), 1..=256)?;
    let image_size = k.usize_in(&[&v("image_size")], Some(336), 1..=1 << 16)?;
    if image_size % patch_size != 0 {
        return Err(k.err(&v("image_size"), format!("{image_size} is not a multiple of patch_size {patch_size}")));
    }
    require_silu(k, &v("hidden_act"))?;
    if k.bool_or(&[&v("attention_bias")], false)? {
        return Err(k.err(&v("attention_bias"), "vision attention biases are not supported (GLM-4.1V has none)"));
    }
    Ok(VisionConfig {
        depth: k.usize_in(&[&v("depth")], None, 1..=MAX_LAYERS)?,
        hidden_size,
        intermediate_size: k.usize_in(&[&v("intermediate_size")], None, 1..=MAX_DIM * 4)?,
        num_heads,
        in_channels: k.usize_in(&[&v("in_channels")], Some(3), 1..=4)?,
        image_size,
        patch_size,
        temporal_patch_size: k.usize_in(&[&v("temporal_patch_size")], Some(2), 1..=16)?,
        spatial_merge_size: k.usize_in(&[&v("spatial_merge_size")], Some(2), 1..=16)?,
        out_hidden_size,
        rms_norm_eps: k.f64_in(&[&v("rms_norm_eps")], Some(1e-5), 0.0, 1.0)?,
    })
}
