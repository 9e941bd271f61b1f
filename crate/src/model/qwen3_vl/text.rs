//! Qwen3-VL text decoder: Qwen3 layers (q/k RMSNorm before RoPE, GQA, SwiGLU) driven by interleaved
//! M-RoPE, with DeepStack features added to image-token rows after the first layers.

use candle_core::{DType, Tensor};

use super::config::TextConfig;
use super::rope::mrope_axes;
use crate::error::Result;
use crate::model::linear::{Fused, Linear, OutputHead};
use crate::model::rope::{inv_freq, mrope_cos_sin};
use crate::model::{activation, batched_attention, rms_norm, KvCache, Step, Trace};
use crate::weights::Weights;

struct Layer {
    input_norm: Tensor,
    post_attn_norm: Tensor,
    /// q, k and v projections as one product.
    qkv_proj: Fused,
    o_proj: Linear,
    q_norm: Tensor,
    k_norm: Tensor,
    /// gate and up projections as one product.
    gate_up_proj: Linear,
    down_proj: Linear,
}

/// DeepStack rows for one chunk: `mask [len, 1]` (1 at image tokens) and, per tap, the rows to add
/// (`[len, hidden]`, arbitrary where mask is 0).
pub struct DeepstackChunk {
    pub mask: Tensor,
    pub rows: Vec<Tensor>,
}

pub struct TextModel {
    cfg: TextConfig,
    embed_tokens: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: OutputHead,
    inv_freq: Vec<f32>,
    /// The (t, h, w) axis of each rotary frequency.
    axes: Vec<usize>,
    dtype: DType,
}

impl TextModel {
    pub fn load(w: &Weights, cfg: &TextConfig, prefix: &str, tie_word_embeddings: bool) -> Result<Self> {
        let (h, hd, i) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (nq, nkv) = (cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd);
        let embed_tokens = w.get(&format!("{prefix}.embed_tokens.weight"), &[cfg.vocab_size, h])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("{prefix}.layers.{l}");
            let bias = cfg.attention_bias;
            let attn = |name: &str, rows: usize| Linear::load_quantizable(w, &format!("{p}.self_attn.{name}"), rows, h, bias);
            let mlp = |name: &str| Linear::load_quantizable(w, &format!("{p}.mlp.{name}"), i, h, false);
            layers.push(Layer {
                input_norm: w.get(&format!("{p}.input_layernorm.weight"), &[h])?,
                post_attn_norm: w.get(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                qkv_proj: Fused::new(vec![attn("q_proj", nq)?, attn("k_proj", nkv)?, attn("v_proj", nkv)?])?,
                o_proj: Linear::load_quantizable(w, &format!("{p}.self_attn.o_proj"), h, nq, bias)?,
                q_norm: w.get(&format!("{p}.self_attn.q_norm.weight"), &[hd])?,
                k_norm: w.get(&format!("{p}.self_attn.k_norm.weight"), &[hd])?,
                gate_up_proj: Linear::side_by_side(vec![mlp("gate_proj")?, mlp("up_proj")?])?,
                down_proj: Linear::load_quantizable(w, &format!("{p}.mlp.down_proj"), h, i, false)?,
            });
        }
        let norm = w.get(&format!("{prefix}.norm.weight"), &[h])?;
        let lm_head = OutputHead::load(w, &embed_tokens, &format!("{prefix}.embed_tokens.weight"), tie_word_embeddings)?;
        Ok(Self {
            inv_freq: inv_freq(cfg.rope_theta, hd),
            axes: mrope_axes(hd / 2, cfg.mrope_section),
            cfg: cfg.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            dtype: w.dtype(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    /// Token embeddings `[len, hidden]`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), self.embed_tokens.device())?;
        Ok(self.embed_tokens.index_select(&ids, 0)?)
    }

    /// Runs `x [rows, hidden]` through all layers with `step`'s kernels: consecutive segments of `lens[i]` rows continue
    /// `caches[i]` (at KV indices `caches[i].len()..`), appending to it; one sequence is one segment, a
    /// batched decode step one row per sequence. `pos` are the rows' (t, h, w) rotary positions. Returns the
    /// final-normed hidden states `[rows, hidden]`.
    pub fn forward(
        &self,
        x: &Tensor,
        pos: [&[i64]; 3],
        caches: &mut [&mut KvCache],
        lens: &[usize],
        step: Step,
        deepstack: Option<&DeepstackChunk>,
        trace: &mut Trace,
    ) -> Result<Tensor> {
        let (cos, sin) = mrope_cos_sin(pos, &self.inv_freq, &self.axes, self.dtype, x.device())?;
        let mut x = x.clone();
        trace.record(|| "decoder.hidden0".into(), &x);
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, l, &x, &cos, &sin, caches, lens, step)?;
            // transformers' `hidden_states` are the layer outputs, before DeepStack is added.
            if l + 1 < n {
                trace.record(|| format!("decoder.hidden{}", l + 1), &x);
            }
            if let Some(ds) = deepstack {
                if let Some(rows) = ds.rows.get(l) {
                    // Rows outside image tokens get + 0, which leaves them bit-identical.
                    let add = ds.mask.broadcast_as(rows.shape())?.where_cond(rows, &rows.zeros_like()?)?;
                    x = (x + add)?;
                }
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

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(&self, layer: &Layer, index: usize, x: &Tensor, cos: &Tensor, sin: &Tensor, caches: &mut [&mut KvCache], lens: &[usize], step: Step) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (len, _) = x.dims2()?;
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads);
        let eps = cfg.rms_norm_eps;

        let h = rms_norm(x, &layer.input_norm, eps)?;
        // [len, heads·hd] -> per-head RMSNorm -> [heads, len, hd] -> RoPE.
        let heads = |t: Tensor, n: usize, norm: &Tensor| -> Result<Tensor> {
            let t = rms_norm(&t.reshape((len, n, hd))?, norm, eps)?.transpose(0, 1)?.contiguous()?;
            Ok(candle_nn::rotary_emb::rope(&t.unsqueeze(0)?, cos, sin)?.squeeze(0)?)
        };
        let [q, k, v] = layer.qkv_proj.forward_step(step, &h)?;
        let q = heads(q, nh, &layer.q_norm)?;
        let k = heads(k, nkv, &layer.k_norm)?;
        let v = v.reshape((len, nkv, hd))?.transpose(0, 1)?.contiguous()?;
        let attn = batched_attention(caches, lens, index, &q, &k, &v, step)?;
        let x = (x + layer.o_proj.forward_step(step, &attn)?)?;

        let h = rms_norm(&x, &layer.post_attn_norm, eps)?;
        let mlp = layer.down_proj.forward_step(step, &activation::silu_mul_halves(&layer.gate_up_proj.forward_step(step, &h)?)?)?;
        Ok((x + mlp)?)
    }
}
