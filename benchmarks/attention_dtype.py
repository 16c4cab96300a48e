"""Why a bf16 model's KV cache is float32 on a CPU: PyTorch's attention for one query over a cache, bf16 vs fp32.

Times `scaled_dot_product_attention` as a decode step calls it — (B, 12 heads, 1 query, 64) against L cached keys —
in bf16 and in fp32 (the cache `KVCache` keeps for bf16 models on a CPU), then a whole bf16 decode step of the
`gpt1` model with each cache dtype. Prints medians and the ratios.

    python benchmarks/attention_dtype.py
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from gpt1 import GPT, GPT1Config
from gpt1.model.cache import KVCache


def median_ms(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def attention_table() -> None:
    print("one-query attention over L cached keys, 12 heads x 64 (ms per call, median)")
    print(f"{'batch':>5} {'L':>4} {'bf16':>8} {'fp32':>8} {'bf16/fp32':>10}")
    for batch in (1, 8):
        for length in (32, 256, 500):
            row = {}
            for dtype in (torch.bfloat16, torch.float32):
                q = torch.randn(batch, 12, 1, 64, dtype=dtype)
                k, v = (torch.randn(batch, 12, length, 64, dtype=dtype) for _ in range(2))
                row[dtype] = median_ms(lambda: F.scaled_dot_product_attention(q, k, v))
            ratio = row[torch.bfloat16] / row[torch.float32]
            print(f"{batch:>5} {length:>4} {row[torch.bfloat16]:>8.3f} {row[torch.float32]:>8.3f} {ratio:>9.1f}x")


def decode_step_table() -> None:
    """A whole bf16 decode step at context 250, batch 8: the cache in bf16 (forced) vs the float32 `KVCache` picks."""
    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset("gpt1")).eval().to(torch.bfloat16)
    batch, context = 8, 250
    ids = torch.randint(0, 40478, (batch, context + 1))
    print(f"\nbf16 gpt1 decode step, batch {batch}, context {context} (ms, median)")
    results = {}
    for cache_dtype in (torch.bfloat16, torch.float32):
        with torch.inference_mode():
            cache = KVCache(model.config, batch, context + 1, "cpu", model.dtype)
            if cache.dtype != cache_dtype:  # force the other storage dtype to compare
                cache.keys = [k.to(cache_dtype) for k in cache.keys]
                cache.values = [v.to(cache_dtype) for v in cache.values]
                cache.dtype = cache_dtype
            model(ids[:, :context], cache=cache, logits_to_keep=1)

            def step():
                cache.length = context
                model(ids[:, context:], cache=cache, logits_to_keep=1)

            results[cache_dtype] = median_ms(step, repeats=20)
        print(f"  cache {str(cache_dtype).removeprefix('torch.'):>8}: {results[cache_dtype]:.1f}")
    print(f"  bf16 cache / fp32 cache: {results[torch.bfloat16] / results[torch.float32]:.2f}x")


if __name__ == "__main__":
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    attention_table()
    decode_step_table()
