#!/usr/bin/env python3
"""
Loads a `vtc-r1 dataset build` output through LLaMA-Factory's own data pipeline (dataset_info.json → sharegpt
converter → qwen3_vl template and mm_plugin → supervised processor → SFT collator) with a tiny Qwen3-VL
tokenizer/processor, and checks every sample: none dropped, one image-token run per <image> of the right length,
loss only on the assistant turn, the assistant turn intact.

Needs `pip install llamafactory` (and its torch); no model weights are loaded and nothing is downloaded.
  python scripts/llamafactory-check.py DATASET_DIR [MODEL_DIR]
MODEL_DIR defaults to ../shared/golden/qwen3vl/e2e (tokenizer.json, chat template, preprocessor_config.json).
"""
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DATASET_DIR = os.path.abspath(sys.argv[1])
MODEL_DIR = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "../../shared/golden/qwen3vl/e2e"))
MAX_PIXELS = 262144

try:  # torchaudio is imported by mm_plugin but only used for audio; a wheel built for another CUDA must not stop us
    import torchaudio  # noqa: F401
except (ImportError, RuntimeError, OSError):
    import importlib.machinery
    import types

    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub

from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_tokenizer  # noqa: E402

IGNORE = -100


def main() -> None:
    out = tempfile.mkdtemp(prefix="lf-check-")
    model_args, data_args, training_args, _, _ = get_train_args(
        dict(
            model_name_or_path=MODEL_DIR,
            stage="sft",
            do_train=True,
            finetuning_type="full",
            dataset="vtc-r1",
            dataset_dir=DATASET_DIR,
            template="qwen3_vl",
            cutoff_len=32768,
            image_max_pixels=MAX_PIXELS,
            overwrite_cache=True,
            preprocessing_num_workers=1,
            output_dir=out,
            report_to="none",
            per_device_train_batch_size=1,
        )
    )
    tok_module = load_tokenizer(model_args)
    tokenizer, processor = tok_module["tokenizer"], tok_module["processor"]
    if processor is None:
        sys.exit(f"no processor could be loaded from {MODEL_DIR}")
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok_module)["train_dataset"]

    lines = [json.loads(l) for l in open(os.path.join(DATASET_DIR, "vtc-r1.jsonl"), encoding="utf-8") if l.strip()]
    assert len(dataset) == len(lines), f"LLaMA-Factory kept {len(dataset)} of {len(lines)} samples"

    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    vision_start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    # the collator opens the images and runs LLaMA-Factory's image pipeline (resize to image_max_pixels, then
    # the processor): its grids say how many image tokens each image must have
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, processor=processor, model=None, pad_to_multiple_of=8, label_pad_token_id=IGNORE, tokenizer=tokenizer
    )
    merge = processor.image_processor.merge_size
    stats = [json.loads(l) for l in open(os.path.join(DATASET_DIR, "samples.stats.jsonl"), encoding="utf-8") if l.strip()]
    total_images = lf_tokens = our_tokens = 0
    for i, (ex, src) in enumerate(zip(dataset, lines)):
        ids, labels = ex["input_ids"], ex["labels"]
        n_images = len(src["images"])
        total_images += n_images
        assert src["messages"][1]["content"].count("<image>") == n_images
        assert ids.count(vision_start) == n_images, f"sample {i}: {ids.count(vision_start)} image runs for {n_images} images"
        if n_images:
            batch = collator([ex])
            grid = batch["image_grid_thw"]
            assert grid.shape[0] == n_images, f"sample {i}: {grid.shape[0]} grids for {n_images} images"
            expected = int(grid.prod(dim=-1).sum()) // (merge * merge)
            assert ids.count(image_pad) == expected, f"sample {i}: {ids.count(image_pad)} image tokens, grids say {expected}"
            lf_tokens += expected
            our_tokens += stats[i]["memoryVision"]["qwen3vlCapped"]
        # loss only on the assistant turn, which decodes back to the sample's assistant content
        target = [t for t, l in zip(ids, labels) if l != IGNORE]
        first = next(j for j, l in enumerate(labels) if l != IGNORE)
        assert all(l != IGNORE for l in labels[first:]), f"sample {i}: the target is not one contiguous run"
        text = tokenizer.decode(target, skip_special_tokens=False)
        want = src["messages"][2]["content"] + "<|im_end|>"
        assert text.strip() == want.strip(), f"sample {i}: target differs:\n{text[:200]!r}\nvs\n{want[:200]!r}"

    print(
        f"OK: LLaMA-Factory loaded {len(dataset)}/{len(lines)} samples ({total_images} images) with template qwen3_vl; "
        f"every image's token run matches its pixel grid; targets and masks check out. "
        f"Image tokens: LLaMA-Factory {lf_tokens}, stats.json formula (smart_resize, max_pixels {MAX_PIXELS}) {our_tokens}"
    )


if __name__ == "__main__":
    main()
