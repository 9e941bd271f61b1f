#!/usr/bin/env python3
"""Writes a GLM-4.1V-9B-shaped model directory with random bf16 weights, tensor by tensor, without building the
model in memory: for measuring what loading (and quantizing) a real-size checkpoint costs (bench/quant.js
--load-only). The shapes and names are GLM-4.1V-9B's (spec/glm4v.md §7: text 4096 wide, 40 layers, 32/2 heads,
MLP 13696, vocabulary 151552, untied head; vision 24 blocks of 1536, merger 13696), about 10.3 B parameters,
20.6 GB. The values are a 64 MB block of N(0, 0.02) repeated (what they are does not matter for load time, and
generating 10 B random numbers would take longer than the measurement). Tokenizer, chat template and processor
configs are copied from ../shared/golden/glm4v/e2e.

    python scripts/make-shaped-glm4v.py OUT_DIR [--layers 40] [--vision-depth 24]

Needs numpy only.
"""
import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT.parent / "shared" / "golden" / "glm4v" / "e2e"
COPIED = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "preprocessor_config.json", "generation_config.json"]


def shapes(layers, vision_depth):
    h, i, v, kv = 4096, 13696, 151552, 256
    d, o, mi = 1536, 4096, 13696
    out = [("model.language_model.embed_tokens.weight", [v, h])]
    for l in range(layers):
        p = f"model.language_model.layers.{l}"
        for n in ("input_layernorm", "post_self_attn_layernorm", "post_attention_layernorm", "post_mlp_layernorm"):
            out.append((f"{p}.{n}.weight", [h]))
        out += [(f"{p}.self_attn.q_proj.weight", [h, h]), (f"{p}.self_attn.q_proj.bias", [h]),
                (f"{p}.self_attn.k_proj.weight", [kv, h]), (f"{p}.self_attn.k_proj.bias", [kv]),
                (f"{p}.self_attn.v_proj.weight", [kv, h]), (f"{p}.self_attn.v_proj.bias", [kv]),
                (f"{p}.self_attn.o_proj.weight", [h, h]),
                (f"{p}.mlp.gate_up_proj.weight", [2 * i, h]), (f"{p}.mlp.down_proj.weight", [h, i])]
    out += [("model.language_model.norm.weight", [h]), ("lm_head.weight", [v, h])]
    vp = "model.visual"
    out += [(f"{vp}.patch_embed.proj.weight", [d, 3, 2, 14, 14]), (f"{vp}.patch_embed.proj.bias", [d]),
            (f"{vp}.post_conv_layernorm.weight", [d]), (f"{vp}.embeddings.position_embedding.weight", [576, d])]
    for b in range(vision_depth):
        p = f"{vp}.blocks.{b}"
        out += [(f"{p}.norm1.weight", [d]), (f"{p}.norm2.weight", [d]), (f"{p}.attn.qkv.weight", [3 * d, d]),
                (f"{p}.attn.proj.weight", [d, d]), (f"{p}.mlp.gate_proj.weight", [o, d]),
                (f"{p}.mlp.up_proj.weight", [o, d]), (f"{p}.mlp.down_proj.weight", [d, o])]
    out += [(f"{vp}.post_layernorm.weight", [d]), (f"{vp}.downsample.weight", [o, d, 2, 2]), (f"{vp}.downsample.bias", [o]),
            (f"{vp}.merger.proj.weight", [o, o]), (f"{vp}.merger.post_projection_norm.weight", [o]),
            (f"{vp}.merger.post_projection_norm.bias", [o]), (f"{vp}.merger.gate_proj.weight", [mi, o]),
            (f"{vp}.merger.up_proj.weight", [mi, o]), (f"{vp}.merger.down_proj.weight", [o, mi])]
    return out


def config(layers, vision_depth):
    return {
        "architectures": ["Glm4vForConditionalGeneration"], "model_type": "glm4v", "dtype": "bfloat16",
        "image_token_id": 151343, "image_start_token_id": 151339, "image_end_token_id": 151340,
        "video_token_id": 151344, "video_start_token_id": 151341, "video_end_token_id": 151342,
        "tie_word_embeddings": False, "transformers_version": "4.57.1",
        "text_config": {"model_type": "glm4v_text", "hidden_size": 4096, "intermediate_size": 13696,
                        "num_hidden_layers": layers, "num_attention_heads": 32, "num_key_value_heads": 2,
                        "vocab_size": 151552, "rms_norm_eps": 1e-5, "max_position_embeddings": 65536,
                        "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "hidden_act": "silu",
                        "rope_scaling": {"type": "default", "mrope_section": [8, 12, 12]}},
        "vision_config": {"model_type": "glm4v", "depth": vision_depth, "hidden_size": 1536, "num_heads": 12,
                          "intermediate_size": 13696, "out_hidden_size": 4096, "patch_size": 14, "image_size": 336,
                          "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "hidden_act": "silu",
                          "rms_norm_eps": 1e-5, "attention_bias": False},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=40)
    ap.add_argument("--vision-depth", type=int, default=24)
    a = ap.parse_args()
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = shapes(a.layers, a.vision_depth)
    header, offset = {}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    # a 64 MB block of N(0, 0.02) in bf16 (the top half of each f32), repeated
    block = (np.random.default_rng(0).standard_normal(1 << 25, dtype=np.float32) * 0.02).view(np.uint32) >> 16
    block = block.astype(np.uint16).tobytes()
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        left = offset
        while left:
            chunk = block[: min(left, len(block))]
            f.write(chunk)
            left -= len(chunk)
    (out / "config.json").write_text(json.dumps(config(a.layers, a.vision_depth), indent=2))
    for name in COPIED:
        shutil.copy(GOLDEN / name, out / name)
    print(f"{out}: {len(tensors)} tensors, {offset / 2 / 1e9:.2f} B parameters, {offset / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
