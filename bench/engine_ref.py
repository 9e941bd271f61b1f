#!/usr/bin/env python3
"""The transformers/PyTorch CPU side of bench/engine.js (which runs it; not meant to be run alone).

    python bench/engine_ref.py SPEC.json   ->  one JSON object on stdout

SPEC (written by bench/engine.js): model, dtype (f32|bf16), threads, decode_tokens, text_cases [{text}],
page_cases [{png, text}]. Case 0 of each list is a warm-up and is not reported. Timings use model.generate, the
path a PyTorch user takes, with a logits processor that notes when each token's logits are ready: the first call
ends prefill, the calls after it are decode steps.

The model class follows config.json's model_type: "qwen3_vl" -> Qwen3VLForConditionalGeneration, "glm4v"
(GLM-4.1V, Glyph) -> Glm4vForConditionalGeneration. The processor is AutoProcessor on the model directory
(Qwen3VLProcessor / Glm4vProcessor, with the directory's chat template and preprocessor_config.json).
"""
import json
import os
import resource
import sys
import time

import torch
import transformers
from PIL import Image
from transformers import AutoProcessor, LogitsProcessor, LogitsProcessorList


def model_family(model_dir):
    """(model class, pad token id) for the directory's config.json model_type."""
    model_type = json.load(open(os.path.join(model_dir, "config.json")))["model_type"]
    if model_type == "qwen3_vl":
        from transformers import Qwen3VLForConditionalGeneration
        return Qwen3VLForConditionalGeneration, 151643  # <|endoftext|>
    if model_type == "glm4v":
        from transformers import Glm4vForConditionalGeneration
        return Glm4vForConditionalGeneration, 151329  # <|endoftext|>
    raise SystemExit(f"{model_dir}: model_type {model_type!r} is neither qwen3_vl nor glm4v")


def sync():
    # GPU work is asynchronous: a timestamp means something only once the device has caught up
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock(LogitsProcessor):
    def __init__(self):
        self.times = []

    def __call__(self, input_ids, scores):
        sync()
        self.times.append(time.perf_counter())
        return scores


def main():
    spec = json.load(open(sys.argv[1]))
    torch.set_num_threads(spec["threads"])
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    t0 = time.perf_counter()
    model_class, pad_token_id = model_family(spec["model"])
    processor = AutoProcessor.from_pretrained(spec["model"])
    device = spec.get("device", "cpu")
    model = model_class.from_pretrained(spec["model"], dtype=dtype).eval().to(device)
    merge = processor.image_processor.merge_size
    load_s = time.perf_counter() - t0
    n = spec["decode_tokens"]

    def inputs_for(content):
        msgs = [{"role": "user", "content": content}]
        return processor.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt").to(device)

    def generate(inputs, max_new):
        clock = Clock()
        start = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                             logits_processor=LogitsProcessorList([clock]), pad_token_id=pad_token_id)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        return start, clock.times, new

    text_runs, page_runs = [], []
    with torch.inference_mode():
        for i, case in enumerate(spec["text_cases"]):
            inputs = inputs_for([{"type": "text", "text": case["text"]}])
            start, times, new = generate(inputs, n)
            if i == 0:
                continue
            text_runs.append({
                "prompt_tokens": inputs["input_ids"].shape[1],
                "prefill_ms": (times[0] - start) * 1e3,
                "decode_ms": (times[-1] - times[0]) * 1e3,  # n - 1 forward steps
                "completion_tokens": len(new),
                "text": processor.tokenizer.decode(new, skip_special_tokens=True),
            })
        for i, case in enumerate(spec["page_cases"]):
            image = Image.open(case["png"]).convert("RGB")
            inputs = inputs_for([{"type": "image", "image": image}, {"type": "text", "text": case["text"]}])
            grid = inputs["image_grid_thw"]
            # the vision encoder alone (patch embed, blocks, DeepStack mergers for Qwen3-VL; downsample and merger
            # for GLM-4.1V), on the processor's pixel values
            sync()
            tv = time.perf_counter()
            model.model.get_image_features(inputs["pixel_values"].to(dtype), grid)
            sync()
            vision_ms = (time.perf_counter() - tv) * 1e3
            # the whole request to its first token: vision encode + prefill
            start, times, _ = generate(inputs, 1)
            if i == 0:
                continue
            page_runs.append({
                "prompt_tokens": inputs["input_ids"].shape[1],
                "vision_tokens": int(grid.prod(-1).sum()) // (merge * merge),
                "vision_ms": vision_ms,
                "first_token_ms": (times[0] - start) * 1e3,
            })
    print(json.dumps({
        "engine": f"transformers {transformers.__version__} ({model_class.__name__}), torch {torch.__version__}, "
                  f"{torch.get_num_threads()} threads, attn {model.config._attn_implementation}",
        "load_s": load_s,
        "text_runs": text_runs,
        "page_runs": page_runs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **({"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if device != "cpu" else {}),
    }))


if __name__ == "__main__":
    main()
