#!/usr/bin/env python3
"""Builds a random-weight Qwen3-VL in the Hugging Face layout, for benchmarks (bench/engine, bench/loop).

Same architecture as the real checkpoints (Qwen3VLForConditionalGeneration: DeepStack vision encoder, M-RoPE text
decoder, real Qwen3 vocabulary of 151936), only smaller. The tokenizer, chat template and preprocessor config are
copied from ../shared/golden/qwen3vl/e2e, so our engine and transformers load the very same directory.

    python scripts/make-random-qwen3vl.py OUT_DIR [--hidden 1024 --layers 8 --vision-depth 8 ...] [--seed 0]

Needs torch + transformers >= 4.57 (Qwen3-VL) + safetensors. Deterministic for a given seed and library versions.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
import transformers
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

GOLDEN = Path(__file__).resolve().parent.parent.parent / "shared" / "golden" / "qwen3vl" / "e2e"
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--hidden", type=int, default=1024, help="text hidden size")
    p.add_argument("--layers", type=int, default=8, help="text decoder layers")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128, help="the real models use 128; M-RoPE sections scale with it")
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--vision-depth", type=int, default=8)
    p.add_argument("--vision-hidden", type=int, default=1024)
    p.add_argument("--vision-heads", type=int, default=16)
    p.add_argument("--vision-intermediate", type=int, default=4096)
    p.add_argument("--deepstack", default=None, help="comma-separated vision block indexes (default: 3 evenly spaced)")
    p.add_argument("--init-range", type=float, default=0.02, help="std of the random weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden", default=str(GOLDEN), help="where tokenizer/chat template/preprocessor config come from")
    a = p.parse_args()

    depth = a.vision_depth
    deepstack = [int(x) for x in a.deepstack.split(",")] if a.deepstack else [depth * (k + 1) // 4 - 1 for k in range(3)]
    # M-RoPE sections (t, h, w) over head_dim/2 rotary pairs, in the 2B/4B/8B proportions [24, 20, 20] of 64
    half = a.head_dim // 2
    hw = half * 20 // 64
    mrope = [half - 2 * hw, hw, hw]
    rope = {"rope_theta": 5_000_000.0, "mrope_section": mrope, "mrope_interleaved": True, "rope_type": "default"}
    text = dict(
        hidden_size=a.hidden, num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
        head_dim=a.head_dim, intermediate_size=a.intermediate, vocab_size=151936, max_position_embeddings=262144,
        rms_norm_eps=1e-6, hidden_act="silu", attention_bias=False, initializer_range=a.init_range,
        tie_word_embeddings=True,
    )
    if int(transformers.__version__.split(".")[0]) >= 5:
        text["rope_parameters"] = rope
    else:  # 4.57 schema: rope_theta beside rope_scaling
        text["rope_theta"] = rope["rope_theta"]
        text["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    vision = dict(
        depth=depth, hidden_size=a.vision_hidden, num_heads=a.vision_heads, intermediate_size=a.vision_intermediate,
        out_hidden_size=a.hidden, patch_size=16, temporal_patch_size=2, spatial_merge_size=2, in_channels=3,
        num_position_embeddings=2304, deepstack_visual_indexes=deepstack, hidden_act="gelu_pytorch_tanh",
        initializer_range=a.init_range,
    )
    config = Qwen3VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=True,
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653,
    )

    torch.manual_seed(a.seed)
    model = Qwen3VLForConditionalGeneration(config).to(torch.float32).eval()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # the real Qwen3-VL end-of-turn ids; save_pretrained writes no generation config for a fresh model
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643]}, indent=2) + "\n")
    for name in COPIED:
        shutil.copyfile(Path(a.golden) / name, out / name)
    params = sum(t.numel() for t in model.parameters())
    print(json.dumps({"dir": str(out), "params": params, "transformers": transformers.__version__,
                      "torch": torch.__version__, "deepstack": deepstack, "mrope_section": mrope, "seed": a.seed}))


if __name__ == "__main__":
    main()
