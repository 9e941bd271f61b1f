#!/usr/bin/env python3
"""llama.cpp reference timings for bench/quant.js (text prefill + greedy decode).

usage: python bench/llamacpp_ref.py SPEC.json

SPEC.json: {"gguf": path, "threads": 2, "prompt_ids": [[ids...], ...], "decode_tokens": 64,
            optional "quant": label, "n_batch": 512, "flash_attn": false, "repack": true}
The first prompt is a warm-up. For every later prompt the KV cache is cleared (no prefix
reuse), the prompt is evaluated in n_batch-sized chunks (prefill), then decode_tokens tokens
are decoded greedily, one llama_decode per token, ignoring EOS. Prints one JSON line with the
best prefill and decode rates. KV cache is llama.cpp's default f16; flash attention is off
unless SPEC says so (llama-cpp-python's default; llama.cpp's own CLIs default to auto = on).
"repack": false turns off llama.cpp's extra buffer types (weights repacked for AMX or wider kernels at load),
which crashed (SIGSEGV in the first decode) for Q8_0 and Q4_K on a 2-core AVX-512/AMX Xeon VM.
Needs llama-cpp-python (built from its sdist, CPU, -march=native). GGUF files come from the
sdist's vendor/llama.cpp: convert_hf_to_gguf.py MODEL_DIR --outtype f32, then
llama-quantize [--pure] F32.gguf OUT.gguf Q8_0|Q4_K.
"""
import ctypes
import json
import resource
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama

# llama.cpp commit vendored by each llama-cpp-python release (from its CHANGELOG)
VENDORED = {"0.3.36": "0c1e570"}


def main():
    spec = json.load(open(sys.argv[1]))
    threads = int(spec.get("threads", 2))
    prompts = spec["prompt_ids"]
    n_decode = int(spec.get("decode_tokens", 64))
    n_batch = int(spec.get("n_batch", 512))
    n_ctx = max(len(p) for p in prompts) + n_decode + 16

    if not spec.get("repack", True):
        # Llama() takes no such argument: its model parameters start from this function's defaults
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def without_repack():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = without_repack
    t0 = time.perf_counter()
    llm = Llama(model_path=spec["gguf"], n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch,
                n_threads=threads, n_threads_batch=threads, logits_all=False,
                flash_attn=bool(spec.get("flash_attn", False)), verbose=False)
    load_s = time.perf_counter() - t0

    ctx = llm.ctx
    n_vocab = llm.n_vocab()

    def greedy():
        # logits of the last token of the last decoded batch
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    prefill, decode = [], []
    for i, ids in enumerate(prompts):
        llm.reset()  # n_tokens = 0; eval() then drops the whole KV cache (seq_rm from 0)
        t = time.perf_counter()
        llm.eval(ids)
        tok = greedy()
        t_prefill = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(n_decode):
            llm.eval([tok])
            tok = greedy()
        t_decode = time.perf_counter() - t
        if i > 0:  # prompt 0 is the warm-up
            prefill.append(len(ids) / t_prefill)
            decode.append(n_decode / t_decode)

    quant = spec.get("quant")
    if not quant:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(llm.model, buf, 256)
        quant = buf.value.decode().split(" ", 2)[-1]  # "glm4 ?B Q8_0" -> "Q8_0"
    ver = llama_cpp.__version__
    ver = f"{VENDORED[ver]} / llama-cpp-python {ver}" if ver in VENDORED else f"llama-cpp-python {ver}"
    repack = "" if spec.get("repack", True) else ", no repacking"
    print(json.dumps({
        "engine": f"llama.cpp {ver} ({quant}, {threads} threads{repack})",
        "load_s": round(load_s, 3),
        "prefill_tok_s": round(max(prefill), 2) if prefill else None,
        "decode_tok_s": round(max(decode), 2) if decode else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "prompt_tokens": len(prompts[-1]),
    }))


if __name__ == "__main__":
    main()
