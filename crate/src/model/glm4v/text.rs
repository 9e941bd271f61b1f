//! GLM-4.1V text decoder (`Glm4vTextModel`): GLM-4 "sandwich" layers (an RMSNorm before and after both the
//! attention and the MLP, residual added after the second), q/k/v with biases, grouped-query attention,
//! partial rotary embedding (the first `rotary_dim` dimensions of each head, GPT-J interleaved pairs) driven
//! by M-RoPE with the (t, h, w) sections as consecutive chunks of frequencies, and a fused gate/up MLP.

use candle_core::{DType, Tensor};

use super::config::TextConfig;
use crate::error::Result;
use crate::model::linear::{Fused, Linear, OutputHead};
use crate::model::rope::{inv_freq, mrope_cos_sin};
use crate::model::{activation, batched_attention, rms_norm, KvCache, Step, Trace};
use crate::weights::Weights;

struct Layer {
    input_norm: Tensor,
    post_self_attn_norm: Tensor,
    post_attention_norm: Tensor,
    post_mlp_norm: Tensor,
    /// q, k and v projections as one product.
    qkv_proj: Fused,
    o_proj: Linear,
    /// The stored fused gate/up projection, gate rows first.
    gate_up_proj: Linear,
    down_proj: Linear,
}

pub struct TextModel {
    cfg: TextConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: OutputHead,
    inv_freq: Vec<f32>,
    /// The (t, h, w) axis of each rotary frequency: `mrope_section` consecutive chunks.
    axes: Vec<usize>,
    dtype: DType,
}

/// Chunked M-RoPE (`apply_mrope`): frequencies `0..s_t` follow t, the next `s_h` h, the last `s_w` w.
pub fn chunked_axes(section: [usize; 3]) -> Vec<usize> {
    (0..3).flat_map(|axis| std::iter::repeat_n(axis, section[axis])).collect()
}

impl TextModel {
    pub fn load(w: &Weights, cfg: &TextConfig, prefix: &str, tie_word_embeddings: bool) -> Result<Self> {
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed_tokens = w.get(&format!("{prefix}.embed_tokens.weight"), &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("{prefix}.layers.{l}");
            let norm = |name: &str| w.get(&format!("{p}.{name}.weight"), &[h]);
            let attn = |name: &str, rows: usize| Linear::load_quantizable(w, &format!("{p}.self_attn.{name}"), rows, h, true);
            layers.push(Layer {
                input_norm: norm("input_layernorm")?,
                post_self_attn_norm: norm("post_self_attn_layernorm")?,
                post_attention_norm: norm("post_attention_layernorm")?,
                post_mlp_norm: norm("post_mlp_layernorm")?,
                // transformers builds q/k/v with biases whatever attention_bias says.
                qkv_proj: Fused::new(vec![attn("q_proj", nq)?, attn("k_proj", nkv)?, attn("v_proj", nkv)?])?,
                o_proj: Linear::load_quantizable(w, &format!("{p}.self_attn.o_proj"), h, nq, false)?,
                gate_up_proj: Linear::load_quantizable(w, &format!("{p}.mlp.gate_up_proj"), 2 * i, h, false)?,
                down_proj: Linear::load_quantizable(w, &format!("{p}.mlp.down_proj"), h, i, false)?,
            });
        }
        let norm = w.get(&format!("{prefix}.norm.weight"), &[h])?;
        let lm_head = OutputHead::load(w, &embed_tokens, &format!("{prefix}.embed_tokens.weight"), tie_word_embeddings)?;
        Ok(Self {
            inv_freq: inv_freq(cfg.rope_theta, cfg.rotary_dim),
            axes: chunked_axes(cfg.mrope_section),
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            dtype: w.dtype(),
        })
    }

    /// Token embeddings `[len, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), self.embed_tokens.device())?;
        Ok(self.embed_tokens.index_select(&ids, 0)?)
    }

    /// Runs `x [rows, hidden]` through all layers with `step`'s kernels: consecutive segments of `lens[i]` rows continue `caches[i]`
    /// (at KV indices `caches[i].len()..`), appending to it; one sequence is one segment, a batched decode step
    /// one row per sequence. `pos` are the rows' (t, h, w) rotary positions. Returns the final-normed hidden
    /// states.
    pub fn forward(&self, x: &Tensor, pos: [&[i64]; 3], caches: &mut [&mut KvCache], lens: &[usize], step: Step, trace: &mut Trace) -> Result<Tensor> {
        let (cos, sin) = mrope_cos_sin(pos, &self.inv_freq, &self.axes, self.dtype, x.device())?;
        let mut x = x.clone();
        trace.record(|| "decoder.hidden0".into(), &x);
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, l, &x, &cos, &sin, caches, lens, step)?;
            if l + 1 < n {
                trace.record(|| format!("decoder.hidden{}", l + 1), &x);
            }
        }
        for (cache, &n) in caches.iter_mut().zip(lens) {
            cache.commit(n);
        }
        let x = rms_norm(&x, &self.norm, self.cfg.rms_norm_eps)?;
        trace.record(|| format!("decoder.hidden{n}"), &x);
        Ok(x)
    }

    /// f32 logits `[len, vocab]` of final hidden states `[len, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)
    }

    /// Rotates the first `rotary_dim` dimensions of each head (`[heads, len, head_dim]`) in interleaved
    /// pairs; the rest pass through unchanged.
    fn partial_rope(&self, t: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (rot, hd) = (self.cfg.rotary_dim, self.cfg.head_dim);
        let rotated = candle_nn::rotary_emb::rope_i(&t.narrow(2, 0, rot)?.contiguous()?.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        if rot == hd {
            return Ok(rotated);
        }
        Ok(Tensor::cat(&[rotated, t.narrow(2, rot, hd - rot)?], 2)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(&self, layer: &Layer, index: usize, x: &Tensor, cos: &Tensor, sin: &Tensor, caches: &mut [&mut KvCache], lens: &[usize], step: Step) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (len, _) = x.dims2()?;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads);
        let eps = cfg.rms_norm_eps;

        let h = rms_norm(x, &layer.input_norm, eps)?;
        // [len, heads·hd] -> [heads, len, hd]
        let heads = |t: Tensor, n: usize| -> Result<Tensor> { Ok(t.reshape((len, n, hd))?.transpose(0, 1)?.contiguous()?) };
        let [q, k, v] = layer.qkv_proj.forward_step(step, &h)?;
        let q = self.partial_rope(&heads(q, nh)?, cos, sin)?;
        let k = self.partial_rope(&heads(k, nkv)?, cos, sin)?;
        let v = heads(v, nkv)?;
        let attn = batched_attention(caches, lens, index, &q, &k, &v, step)?;
        let attn = rms_norm(&layer.o_proj.forward_step(step, &attn)?, &layer.post_self_attn_norm, eps)?;
        let x = (x + attn)?;

        let h = rms_norm(&x, &layer.post_attention_norm, eps)?;
        let mlp = layer.down_proj.forward_step(step, &activation::silu_mul_halves(&layer.gate_up_proj.forward_step(step, &h)?)?)?;
        let mlp = rms_norm(&mlp, &layer.post_mlp_norm, eps)?;
        Ok((x + mlp)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_consecutive_chunks() {
        let axes: String = chunked_axes([8, 12, 12]).iter().map(|&a| ['T', 'H', 'W'][a]).collect();
        assert_eq!(axes, format!("{}{}{}", "T".repeat(8), "H".repeat(12), "W".repeat(12)));
    }
}
