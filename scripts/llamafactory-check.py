#!/usr/bin/env python3
"""
Loads a `vtc-r1 dataset build` output through LLaMA-Factory's own data pipeline (dataset_info.json → sharegpt
converter → chat template and mm_plugin → supervised processor → SFT collator) with a small tokenizer/processor of
the backbone, and checks every sample:

  - none dropped;
  - one image-token run per <image>, in order, each as long as that image's pixel grid says (begin token, image
    tokens, end token), and no image token outside the runs;
  - loss only on the assistant turn, one contiguous run to the end, which decodes to the sample's assistant
    content (plus the template's end of turn);
  - the whole sequence is the token sequence the model directory's own chat template gives for the same
    conversation (what the model sees at inference), plus the template's end-of-turn token.

Two backbones, as the builder writes a training YAML for each:

  --template qwen3_vl  Qwen3-VL: the model dir defaults to ../shared/golden/qwen3vl/e2e
  --template glm4v     Glyph / GLM-4.1V: the model dir defaults to ../shared/golden/glm4v/e2e

Without --template the model dir's config.json model_type picks it (qwen3_vl or glm4v); without either,
qwen3_vl. The arguments come from the dataset's training YAML for that backbone (train_qwen3vl_full_sft.yaml or
train_glyph_full_sft.yaml, as the builder writes it) when it is there, so LLaMA-Factory's own argument parser
checks the YAML; the keys that cannot apply here are overridden and printed (model → MODEL_DIR, no DeepSpeed,
no bf16 on CPU, one worker, a temporary output_dir). --no-yaml uses built-in arguments instead.

When MODEL_DIR has small weights (< 1 GiB, like the golden e2e fixtures), the model is also loaded through
LLaMA-Factory (load_model, with the YAML's freeze_* settings) and one collated batch (the shortest sample with
images) goes forward and backward: the loss must be finite, and the parameters that the freeze settings leave
trainable are listed. --no-model skips this.

Needs `pip install llamafactory` (and its torch); nothing is downloaded.
  python scripts/llamafactory-check.py DATASET_DIR [MODEL_DIR] [--template qwen3_vl|glm4v] [--no-yaml] [--no-model]
"""
import argparse
import json
import math
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "../../shared")
IGNORE = -100

TEMPLATES = {
    "qwen3_vl": dict(
        model_type="qwen3_vl", model_dir=os.path.join(SHARED, "golden/qwen3vl/e2e"), yaml="train_qwen3vl_full_sft.yaml",
        begin="<|vision_start|>", image="<|image_pad|>", end="<|vision_end|>", stats="qwen3vlCapped",
    ),
    "glm4v": dict(
        model_type="glm4v", model_dir=os.path.join(SHARED, "golden/glm4v/e2e"), yaml="train_glyph_full_sft.yaml",
        begin="<|begin_of_image|>", image="<|image|>", end="<|end_of_image|>", stats="glm41vCapped",
    ),
}
MAX_MODEL_BYTES = 1 << 30


def parse_cli():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir")
    p.add_argument("model_dir", nargs="?")
    p.add_argument("--template", choices=sorted(TEMPLATES))
    p.add_argument("--no-yaml", action="store_true", help="do not read the dataset's training YAML")
    p.add_argument("--no-model", action="store_true", help="do not load the model for a forward/backward step")
    a = p.parse_args()
    a.dataset_dir = os.path.abspath(a.dataset_dir)
    if a.template is None:
        model_type = None
        if a.model_dir and os.path.exists(os.path.join(a.model_dir, "config.json")):
            model_type = json.load(open(os.path.join(a.model_dir, "config.json"))).get("model_type")
        a.template = next((t for t, c in TEMPLATES.items() if c["model_type"] == model_type), "qwen3_vl")
    a.model_dir = os.path.abspath(a.model_dir or TEMPLATES[a.template]["model_dir"])
    return a


CLI = parse_cli()

try:  # torchaudio is imported by mm_plugin but only used for audio; a wheel built for another torch must not stop us
    import torchaudio  # noqa: F401
except (ImportError, RuntimeError, OSError):
    import importlib.machinery
    import types

    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub

import yaml  # noqa: E402
from llamafactory.data import get_dataset, get_template_and_fix_tokenizer  # noqa: E402
from llamafactory.data.collator import SFTDataCollatorWith4DAttentionMask  # noqa: E402
from llamafactory.hparams import get_train_args  # noqa: E402
from llamafactory.model import load_model, load_tokenizer  # noqa: E402
from PIL import Image  # noqa: E402
from transformers.utils.chat_template_utils import _compile_jinja_template  # noqa: E402


def train_args(cfg: dict, out: str) -> dict:
    """LLaMA-Factory arguments: the dataset's YAML for this backbone with the keys that cannot apply here replaced."""
    base = dict(
        stage="sft", do_train=True, finetuning_type="full", dataset="vtc-r1", template=CLI.template, cutoff_len=32768,
        image_max_pixels=262144, freeze_vision_tower=True, freeze_multi_modal_projector=True, overwrite_cache=True,
        report_to="none", per_device_train_batch_size=1,
    )
    path = os.path.join(CLI.dataset_dir, cfg["yaml"])
    if CLI.no_yaml or not os.path.exists(path):
        print(f"arguments: built-in ({'--no-yaml' if CLI.no_yaml else cfg['yaml'] + ' not found'})")
        args = base
    else:
        args = yaml.safe_load(open(path, encoding="utf-8"))
        if args.get("template") != CLI.template:
            sys.exit(f"{path} has template {args.get('template')!r}, checking {CLI.template!r}")
        print(f"arguments: {path}")
    overrides = dict(
        model_name_or_path=CLI.model_dir,  # the YAML names the hub checkpoint
        deepspeed=None,  # ZeRO-3 needs a distributed launch
        bf16=False,  # CPU
        output_dir=out,
        preprocessing_num_workers=1,
        dataloader_num_workers=0,
        dataset_dir=CLI.dataset_dir,
    )
    for k, v in overrides.items():
        if args is not base and args.get(k) != v and (k in args or v is not None):
            if k == "dataset_dir" and args.get(k) is not None:
                note = " (the dataset was moved since the build)" if os.path.abspath(args[k]) != CLI.dataset_dir else ""
            else:
                note = ""
            print(f"  override {k}: {args.get(k)!r} -> {v!r}{note}")
        if v is None:
            args.pop(k, None)
        else:
            args[k] = v
    return args


def run_lengths(ids, begin, image, end):
    """Lengths of the begin/image.../end runs, in order; raises on a malformed run or a stray image token."""
    runs, i = [], 0
    while i < len(ids):
        if ids[i] == begin:
            j = i + 1
            while j < len(ids) and ids[j] == image:
                j += 1
            if j >= len(ids) or ids[j] != end:
                raise AssertionError(f"image run at {i} is not closed by the end token")
            runs.append(j - i - 1)
            i = j + 1
        elif ids[i] == image:
            raise AssertionError(f"image token at {i} outside a run")
        else:
            i += 1
    return runs


def chat_template(model_dir, tokenizer):
    path = os.path.join(model_dir, "chat_template.jinja")
    src = open(path, encoding="utf-8").read() if os.path.exists(path) else tokenizer.chat_template
    return _compile_jinja_template(src) if src else None


def first_difference(a, b):
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def main() -> None:
    cfg = TEMPLATES[CLI.template]
    out = tempfile.mkdtemp(prefix="lf-check-")
    print(f"template {CLI.template}; model dir {CLI.model_dir}; dataset {CLI.dataset_dir}")
    args = train_args(cfg, out)
    model_args, data_args, training_args, finetuning_args, _ = get_train_args(args)
    tok_module = load_tokenizer(model_args)
    tokenizer, processor = tok_module["tokenizer"], tok_module["processor"]
    if processor is None:
        sys.exit(f"no processor could be loaded from {CLI.model_dir}")
    vocab_before = len(tokenizer)
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    if len(tokenizer) != vocab_before:
        print(f"NOTE: the template's stop words added {len(tokenizer) - vocab_before} tokens to the tokenizer "
              f"({vocab_before} -> {len(tokenizer)}): training would resize the embeddings")
    stops = {w: tokenizer.convert_tokens_to_ids(w) for w in template.stop_words}
    print(f"tokenizer: eos {tokenizer.eos_token!r} ({tokenizer.eos_token_id}); template stop words {stops}; "
          f"efficient_eos {template.efficient_eos}; {type(processor).__name__} / {type(processor.image_processor).__name__}")
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tok_module)["train_dataset"]

    lines = [json.loads(l) for l in open(os.path.join(CLI.dataset_dir, "vtc-r1.jsonl"), encoding="utf-8") if l.strip()]
    if data_args.max_samples:
        lines = lines[: data_args.max_samples]
    if len(dataset) != len(lines):  # name the dropped ones: LLaMA-Factory keeps the order of what it keeps
        kept = {tokenizer.decode([t for t, l in zip(ex["input_ids"], ex["labels"]) if l != IGNORE]) for ex in dataset}
        answer = lambda s: next((m["content"] for m in s["messages"] if m["role"] == "assistant"), "")  # noqa: E731
        lost = [i for i, s in enumerate(lines) if not any(answer(s)[:200] in k for k in kept)]
        sys.exit(f"LLaMA-Factory kept {len(dataset)} of {len(lines)} samples; dropped (0-based lines): {lost}")

    begin, image, end = (tokenizer.convert_tokens_to_ids(t) for t in (cfg["begin"], cfg["image"], cfg["end"]))
    compiled = chat_template(CLI.model_dir, tokenizer)
    eot = tokenizer.eos_token if template.efficient_eos else ""
    # the collator opens the images and runs LLaMA-Factory's image pipeline (resize to image_max_pixels, then the
    # processor): its grids say how many image tokens each image must have
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, processor=processor, model=None, pad_to_multiple_of=8, label_pad_token_id=IGNORE, tokenizer=tokenizer
    )
    merge = processor.image_processor.merge_size
    stats_path = os.path.join(CLI.dataset_dir, "samples.stats.jsonl")
    stats = [json.loads(l) for l in open(stats_path, encoding="utf-8") if l.strip()] if os.path.exists(stats_path) else []
    total_images = lf_tokens = our_tokens = 0
    per_size = {}  # page size -> LLaMA-Factory's tokens for it
    for i, (ex, src) in enumerate(zip(dataset, lines)):
        ids, labels = ex["input_ids"], ex["labels"]
        n_images = len(src["images"])
        total_images += n_images
        assert src["messages"][1]["content"].count("<image>") == n_images
        runs = run_lengths(ids, begin, image, end)
        assert len(runs) == n_images, f"sample {i}: {len(runs)} image runs for {n_images} images"
        if n_images:
            grid = collator([ex])["image_grid_thw"]
            assert grid.shape[0] == n_images, f"sample {i}: {grid.shape[0]} grids for {n_images} images"
            want = [int(g.prod()) // (merge * merge) for g in grid]
            assert runs == want, f"sample {i}: image runs {runs}, grids say {want}"
            lf_tokens += sum(want)
            if stats:
                our_tokens += stats[i]["memoryVision"][cfg["stats"]]
            for path, n in zip(src["images"], want):
                with Image.open(os.path.join(CLI.dataset_dir, path)) as im:
                    per_size.setdefault(im.size, set()).add(n)
        # loss only on the assistant turn, which decodes back to the sample's assistant content
        first = next(j for j, l in enumerate(labels) if l != IGNORE)
        assert all(l != IGNORE for l in labels[first:]), f"sample {i}: the target is not one contiguous run"
        assert all(l == t for l, t in zip(labels[first:], ids[first:])), f"sample {i}: labels differ from the ids"
        text = tokenizer.decode(labels[first:], skip_special_tokens=False)
        if CLI.template == "glm4v":  # "<|assistant|>" ends the prompt; "\n" opens the target
            want_text = "\n" + src["messages"][2]["content"] + eot
            assert text == want_text, f"sample {i}: target differs:\n{text[:200]!r}\nvs\n{want_text[:200]!r}"
        else:
            want_text = src["messages"][2]["content"] + "<|im_end|>"
            assert text.strip() == want_text.strip(), f"sample {i}: target differs:\n{text[:200]!r}\nvs\n{want_text[:200]!r}"
        # the whole sequence: the model dir's chat template on the same conversation, image runs expanded
        if compiled is not None:
            msgs = [dict(m) for m in src["messages"]]
            user = msgs[1]["content"].split("<image>")
            n = runs
            msgs[1]["content"] = user[0] + "".join(cfg["begin"] + cfg["image"] * n[k] + cfg["end"] + user[k + 1] for k in range(len(n)))
            rendered = compiled.render(messages=msgs, add_generation_prompt=False)
            want_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eot else [])
            if ids != want_ids:
                k = first_difference(ids, want_ids)
                sys.exit(f"sample {i}: LLaMA-Factory's ids differ from the chat template's at {k} of {len(ids)}/{len(want_ids)}:\n"
                         f"  LLaMA-Factory {tokenizer.decode(ids[max(0, k - 8):k + 8])!r}\n"
                         f"  template      {tokenizer.decode(want_ids[max(0, k - 8):k + 8])!r}")

    sizes = "; ".join(f"{w}×{h}: {sorted(v)}" for (w, h), v in sorted(per_size.items()))
    print(
        f"OK: LLaMA-Factory loaded {len(dataset)}/{len(lines)} samples ({total_images} images) with template {CLI.template}; "
        f"every image's token run matches its pixel grid; targets and masks check out"
        + (f"; the ids equal the model dir's chat template{' + ' + eot if eot else ''}" if compiled is not None else "")
        + f".\nImage tokens: LLaMA-Factory {lf_tokens}, stats.json formula ({cfg['stats']}, max_pixels "
        f"{model_args.image_max_pixels}) "
        f"{our_tokens if stats else 'n/a'}.\nLLaMA-Factory tokens per page size: {sizes}"
    )

    weights = [os.path.join(CLI.model_dir, f) for f in os.listdir(CLI.model_dir) if f.endswith(".safetensors") and f != "golden.safetensors"]
    size = sum(os.path.getsize(f) for f in weights)
    if CLI.no_model or not weights or size > MAX_MODEL_BYTES:
        why = "--no-model" if CLI.no_model else ("no weights" if not weights else f"weights {size >> 20} MiB")
        print(f"model step skipped ({why})")
        return
    model_step(tokenizer, processor, template, model_args, finetuning_args, dataset, lines)


def model_step(tokenizer, processor, template, model_args, finetuning_args, dataset, lines):
    """One forward/backward through LLaMA-Factory's loaded model on a collated batch; reports what is trainable."""
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=True)
    groups = {}
    for name, p in model.named_parameters():
        parts = name.split(".")
        key = ".".join(parts[:3]) if parts[:2] == ["model", "visual"] else ".".join(parts[:2])
        g = groups.setdefault(key, [0, 0])
        g[0 if p.requires_grad else 1] += p.numel()
    visual_trainable = {k: v[0] for k, v in groups.items() if k.startswith("model.visual") and v[0]}
    print(f"freeze_vision_tower {finetuning_args.freeze_vision_tower}, freeze_multi_modal_projector "
          f"{finetuning_args.freeze_multi_modal_projector}: vision parameters left trainable: {visual_trainable or 'none'}; "
          f"frozen: {sorted(k for k, v in groups.items() if k.startswith('model.visual') and not v[0])}")
    with_images = [i for i, s in enumerate(lines) if s["images"]]
    if not with_images:
        print("model step skipped (no sample has images)")
        return
    i = min(with_images, key=lambda k: len(dataset[k]["input_ids"]))
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, processor=processor, model=model, pad_to_multiple_of=8, label_pad_token_id=IGNORE, tokenizer=tokenizer
    )
    batch = collator([dataset[i]])
    model.train()
    loss = model(**batch).loss
    assert math.isfinite(loss.item()), f"sample {i}: loss {loss.item()}"
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    print(f"model step: sample {i} ({len(dataset[i]['input_ids'])} tokens, {len(lines[i]['images'])} images), "
          f"batch keys {sorted(batch)}; loss {loss.item():.4f}; trainable parameters without a gradient: {no_grad or 'none'}")


if __name__ == "__main__":
    main()
