#!/usr/bin/env python3
"""Reference for `image_max_pixels`: the two GLM-4.1V e2e fixture pages as LLaMA-Factory feeds them to the
processor when training with `image_max_pixels: 262144` (VTC-R1's setting), and the grid the GLM-4.1V processor
then gives them; and, for images of assorted sizes, the vision tokens LLaMA-Factory's qwen3_vl and glm4v plugins
give them under that budget (tokens depend on the size only). Writes llamafactory/<page>.png (the downscaled
image LLaMA-Factory hands the processor) and llamafactory/expected.json.

Needs `pip install llamafactory` (0.9.5 was used) and the transformers it pins; nothing is downloaded.
  python crate/tests/data/gen_llamafactory_pages.py
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "../../../../shared/golden/glm4v/e2e")
OUT = os.path.join(HERE, "llamafactory")
MAX_PIXELS = 262144

try:  # mm_plugin imports torchaudio but only uses it for audio
    import torchaudio  # noqa: F401
except (ImportError, RuntimeError, OSError):
    import importlib.machinery
    import types

    stub = types.ModuleType("torchaudio")
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    sys.modules["torchaudio"] = stub

import llamafactory  # noqa: E402
from llamafactory.data.mm_plugin import get_mm_plugin  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoImageProcessor  # noqa: E402
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil  # noqa: E402

plugin = get_mm_plugin("glm4v", image_token="<|image|>")
pp = json.load(open(os.path.join(FIXTURE, "preprocessor_config.json")))
processor = Glm4vImageProcessorPil(**pp)
os.makedirs(OUT, exist_ok=True)
expected = {"image_max_pixels": MAX_PIXELS, "llamafactory": llamafactory.__version__, "pages": {}}
for page in ["m500-060_page_001.png", "openr1-0_page_002.png"]:
    src = Image.open(os.path.join(FIXTURE, page))
    img = plugin._regularize_images([src], image_max_pixels=MAX_PIXELS, image_min_pixels=32 * 32)["images"][0]
    img.save(os.path.join(OUT, page))
    grid = processor(images=[img], return_tensors="pt")["image_grid_thw"][0].tolist()
    expected["pages"][page] = {"source": list(src.size), "resized": list(img.size), "grid_thw": grid, "tokens": grid[0] * grid[1] * grid[2] // 4}
SIZES = [(589, 842), (588, 842), (589, 600), (589, 300), (1000, 1000), (300, 2000), (842, 589), (20, 500), (7, 9)]
families = {
    "qwen3-vl": (get_mm_plugin("qwen3_vl", image_token="<|image_pad|>"), AutoImageProcessor.from_pretrained(os.path.join(FIXTURE, "../../qwen3vl/e2e"))),
    "glm-4.1v": (plugin, processor),
}
expected["sizes"] = {}
for family, (plug, proc) in families.items():
    rows = []
    for w, h in SIZES:
        img = plug._regularize_images([Image.new("RGB", (w, h), "white")], image_max_pixels=MAX_PIXELS, image_min_pixels=32 * 32)["images"][0]
        grid = proc(images=[img], return_tensors="pt")["image_grid_thw"][0].tolist()
        rows.append({"source": [w, h], "tokens": grid[0] * grid[1] * grid[2] // 4})
    expected["sizes"][family] = rows
json.dump(expected, open(os.path.join(OUT, "expected.json"), "w"), indent=1)
print(json.dumps(expected))
