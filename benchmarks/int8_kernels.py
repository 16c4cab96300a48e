"""Which int8 weight-only matmul to use on this CPU: the candidates side by side on GPT-1's decode shapes.

One decode step multiplies a (batch, in) activation by every block matrix and the tied LM head. For each shape and
batch this times, in one process: float32 and bf16 `F.linear` (the float baselines), PyTorch's int8 weight-only
kernel `aten._weight_int8pack_mm` with bf16 and with float32 inputs, torchao's `Int8WeightOnlyConfig` (eager and
under `torch.compile`), and a `torch.compile`d dequantise + matmul (inductor / oneDNN). It prints microseconds per
call, a decode step's total (n_layer x the four block matrices + the head), and the error of each int8 path against
the float32 product with the float weight (quantisation error included, so every int8 path is comparable).

    python benchmarks/int8_kernels.py --threads 1        # gpt1 and mini shapes, batch 1 and 8 (1 thread: steadier
                                                         # on a shared machine)
    python benchmarks/int8_kernels.py --no-compile       # skip the torch.compile candidates (slow to compile)
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/int8_kernels.py --no-compile   # PyTorch's AVX2 kernels on this CPU
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt1.config import GPT1Config
from gpt1.model.quantize import symmetric_int8


def timed_us(fn, n: int = 20) -> float:
    """Best of three means of `n` calls, in microseconds (the machine may be shared)."""
    for _ in range(3):
        fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t) / n)
    return best * 1e6


def shapes(preset: str) -> dict[str, tuple[int, int, int]]:
    """name: (out, in, how many per decode step)."""
    c = GPT1Config.from_preset(preset)
    d, L = c.n_embd, c.n_layer
    return {
        "c_attn": (3 * d, d, L),
        "attn.c_proj": (d, d, L),
        "mlp.c_fc": (4 * d, d, L),
        "mlp.c_proj": (d, 4 * d, L),
        "lm_head": (c.vocab_size, d, 1),
    }


def candidates(w: torch.Tensor, batch: int, compile_too: bool) -> dict:
    """name: (function of x (batch, in) float32, is it int8) for one weight matrix."""
    q, s = symmetric_int8(w)
    wb, wt = w.bfloat16(), w.t().contiguous().t()
    torch._dynamo.reset()  # each matrix compiles afresh (no recompile limit, no fallback to eager)
    out = {
        "fp32": (lambda x: F.linear(x, w), False),
        "fp32 (in,out)": (lambda x: F.linear(x, wt), False),
        "bf16": (lambda x: F.linear(x.bfloat16(), wb), False),
        "int8pack bf16-in": (lambda x: torch.ops.aten._weight_int8pack_mm(x.bfloat16(), q, s).float(), True),
        "int8pack fp32-in": (lambda x: torch.ops.aten._weight_int8pack_mm(x, q, s.float()), True),
    }
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        for dtype, tag in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False).to(dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
            quantize_(lin, Int8WeightOnlyConfig())
            out[f"torchao {tag}"] = (lambda x, lin=lin, dtype=dtype: lin(x.to(dtype)).float(), True)
            if compile_too:
                compiled = torch.compile(lin)
                out[f"torchao {tag} compiled"] = (lambda x, c=compiled, dtype=dtype: c(x.to(dtype)).float(), True)
    except ImportError:
        pass
    if compile_too:
        sb = s

        def dequant_mm(x, q, s):
            return F.linear(x.bfloat16(), q.bfloat16()) * s

        fn = torch.compile(dequant_mm)
        out["compiled dequant+mm bf16"] = (lambda x: fn(x, q, sb).float(), True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["gpt1", "mini"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"threads {torch.get_num_threads()}"
    )
    for preset in args.presets:
        for batch in args.batches:
            totals: dict[str, float] = {}
            errors: dict[str, float] = {}
            print(f"\n{preset}, batch {batch}: microseconds per call")
            for name, (n_out, n_in, count) in shapes(preset).items():
                torch.manual_seed(0)
                w = torch.randn(n_out, n_in) * 0.02
                x = torch.randn(batch, n_in)
                exact = F.linear(x, w)
                row = []
                with torch.inference_mode():
                    for cand, (fn, is_int8) in candidates(w, batch, not args.no_compile).items():
                        slow = cand.startswith("int8pack fp32") or (
                            cand.startswith("torchao") and "compiled" not in cand
                        )
                        us = timed_us(lambda: fn(x), n=3 if slow else 20)
                        totals[cand] = totals.get(cand, 0.0) + us * count
                        if is_int8:
                            err = float((fn(x) - exact).abs().max() / exact.abs().max())
                            errors[cand] = max(errors.get(cand, 0.0), err)
                        row.append(f"{cand} {us:.0f}")
                print(f"  {name:<12} ({n_out}x{n_in}, x{count}): " + ", ".join(row))
            best_float = min(totals["fp32"], totals["fp32 (in,out)"], totals["bf16"])
            print(f"  one decode step's matmuls ({preset}, batch {batch}), ms; ratio to the faster float:")
            for cand, us in sorted(totals.items(), key=lambda kv: kv[1]):
                err = f", max rel. error vs float {errors[cand]:.1e}" if cand in errors else ""
                print(f"    {cand:<28} {us / 1e3:8.2f} ms  {us / best_float:5.2f}x{err}")


if __name__ == "__main__":
    main()
