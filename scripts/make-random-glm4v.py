#!/usr/bin/env python3
"""Builds a random-weight GLM-4.1V (the architecture of Glyph) in the Hugging Face layout, for benchmarks
(bench/engine.js --family glm4v).

Same architecture as the real checkpoints (Glm4vForConditionalGeneration: GLM-4 "sandwich" decoder with partial,
chunked M-RoPE and q/k/v biases; vision tower with bicubic position embedding, SwiGLU blocks, Conv2d downsample and
merger), with GLM-4.1V's ratios at the width of the Qwen3-VL bench model (scripts/make-random-qwen3vl.py):

  text    hidden 1024, 8 layers, 8 query heads / 2 KV heads (head_dim 128 = hidden/heads, as GLM-4.1V has no
          head_dim key; 2 KV heads = the real model's KV width of 256), intermediate 3424 (13696 × 1024/4096),
          partial_rotary_factor 0.5, mrope_section [8, 12, 12] (sum·2 = head_dim·0.5), θ 10000, untied lm_head,
          real vocabulary size 151552 and token ids (image 151343, begin/end of image 151339/151340)
  vision  GLM-4.1V's real widths (hidden 1536, 12 heads of 128, patch 14, image_size 336 → 24×24 position grid,
          merge 2, temporal 2), but depth 8 instead of 24 (the depth of the Qwen3-VL bench model's vision tower;
          --vision-depth 24 gives the real depth); out_hidden_size = text hidden (also the block MLP width);
          merger intermediate 3424 (13696 scaled like the text MLP)

Random init leaves norms at 1 and biases at 0 (as in the Qwen3-VL bench model). The tokenizer, chat template,
preprocessor config and generation config are copied from ../shared/golden/glm4v/e2e, so our engine and
transformers load the very same directory. That tokenizer is a byte-level BPE in GLM-4's id layout, not GLM-4's
own vocabulary (see shared/tools/golden_glm4v.py).

    python scripts/make-random-glm4v.py [OUT_DIR] [--hidden 1024 --layers 8 --vision-depth 8 ...] [--seed 0]

OUT_DIR defaults to ../bench-models/glm4v-1024x8 beside the checkout. Needs torch + transformers >= 5.0 (writes
the 5.x config schema: text_config.rope_parameters) + safetensors. Deterministic for a given seed and library
versions.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers
from transformers import Glm4vConfig, Glm4vForConditionalGeneration

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT.parent / "shared" / "golden" / "glm4v" / "e2e"
DEFAULT_OUT = ROOT.parent / "bench-models" / "glm4v-1024x8"
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json",
          "generation_config.json"]
TOKEN_IDS = dict(image_token_id=151343, video_token_id=151344, image_start_token_id=151339,
                 image_end_token_id=151340, video_start_token_id=151341, video_end_token_id=151342)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", nargs="?", default=str(DEFAULT_OUT))
    p.add_argument("--hidden", type=int, default=1024, help="text hidden size (also the vision out_hidden_size)")
    p.add_argument("--layers", type=int, default=8, help="text decoder layers")
    p.add_argument("--heads", type=int, default=8, help="query heads; head_dim = hidden / heads (GLM has no head_dim key)")
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=3424, help="text MLP width (GLM-4.1V: 13696 for hidden 4096)")
    p.add_argument("--vision-depth", type=int, default=8, help="GLM-4.1V has 24")
    p.add_argument("--vision-hidden", type=int, default=1536)
    p.add_argument("--vision-heads", type=int, default=12)
    p.add_argument("--merger-intermediate", type=int, default=None,
                   help="vision intermediate_size, used only by the merger (default: --intermediate)")
    p.add_argument("--init-range", type=float, default=0.02, help="std of the random weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden", default=str(GOLDEN), help="where tokenizer/chat template/preprocessor config come from")
    a = p.parse_args()
    if int(transformers.__version__.split(".")[0]) < 5:
        raise SystemExit(f"transformers {transformers.__version__}: need >= 5.0 (rope_parameters schema)")

    if a.hidden % a.heads or a.heads % a.kv_heads:
        raise SystemExit("hidden must be a multiple of heads, and heads a multiple of kv-heads")
    head_dim = a.hidden // a.heads
    rotary_pairs = head_dim // 4  # partial_rotary_factor 0.5: head_dim/2 rotary dims, head_dim/4 frequencies
    # M-RoPE sections (t, h, w) in GLM-4.1V's proportions [8, 12, 12] of 32
    hw = rotary_pairs * 12 // 32
    mrope = [rotary_pairs - 2 * hw, hw, hw]
    assert sum(mrope) * 2 == head_dim * 0.5
    text = dict(
        vocab_size=151552, hidden_size=a.hidden, intermediate_size=a.intermediate, num_hidden_layers=a.layers,
        num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, hidden_act="silu", rms_norm_eps=1e-5,
        max_position_embeddings=65536, initializer_range=a.init_range, pad_token_id=151329,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=mrope, partial_rotary_factor=0.5),
    )
    vision = dict(
        depth=a.vision_depth, hidden_size=a.vision_hidden, num_heads=a.vision_heads,
        intermediate_size=a.merger_intermediate or a.intermediate, out_hidden_size=a.hidden, in_channels=3,
        patch_size=14, image_size=336, temporal_patch_size=2, spatial_merge_size=2, hidden_act="silu",
        rms_norm_eps=1e-5, attention_bias=False, initializer_range=a.init_range,
    )
    config = Glm4vConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **TOKEN_IDS)

    torch.manual_seed(a.seed)
    model = Glm4vForConditionalGeneration(config).to(torch.float32).eval()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # generation_config.json (GLM-4.1V's stop ids 151329/151336/151338, pad 151329) comes with the copied files
    for name in COPIED:
        shutil.copyfile(Path(a.golden) / name, out / name)
    params = sum(t.numel() for t in model.parameters())
    vision_params = sum(t.numel() for t in model.model.visual.parameters())
    print(json.dumps({"dir": str(out), "params": params, "vision_params": vision_params,
                      "transformers": transformers.__version__, "torch": torch.__version__, "head_dim": head_dim,
                      "mrope_section": mrope, "seed": a.seed}))


if __name__ == "__main__":
    main()
