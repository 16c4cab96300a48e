"""Training throughput and peak memory: our `Trainer` vs `transformers.OpenAIGPTLMHeadModel` in a plain PyTorch loop.

Both train the same weights on the same random token batches with the same optimizer (AdamW, decay groups, fused),
the same precision (fp32, or bf16 autocast with fp32 master weights) and gradient clipping, in this one process.
Prints tokens/s, peak memory (CUDA: max allocated; CPU: peak resident memory above the pre-run level, the
kernel's high-water mark on Linux) and model FLOPs utilisation against this machine's measured matmul peak.

    python benchmarks/train.py            # tiny, mini, small and gpt1, fp32 and bf16 (a few minutes on a laptop CPU)
    python benchmarks/train.py --quick    # fewer shapes and steps
    python benchmarks/train.py --shapes tiny:32:128:8001,mini:16:256:8001   # preset:batch:seq[:vocab]

It also prints whether the CPU computes bf16 natively and, for every shape, which precision `--precision auto`
picks and how fast that is against fp32 (auto must never be slower).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gpt1 import GPT, GPT1Config  # noqa: E402
from gpt1.checkpoint import ours_to_hf  # noqa: E402
from gpt1.data.corpus import BlockSampler  # noqa: E402
from gpt1.kernels.cpu.allocator import keep_freed_memory  # noqa: E402
from gpt1.recipes.demo import DEMO_SIZES  # noqa: E402
from gpt1.runtime import cpu_has_bf16, resolve_precision  # noqa: E402
from gpt1.training.config import TrainConfig  # noqa: E402
from gpt1.training.optim import param_groups  # noqa: E402
from gpt1.training.trainer import Trainer  # noqa: E402


# ---- measuring ----------------------------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory of the block: CUDA max-allocated, or the CPU resident set's peak above the level at entry.

    On Linux the CPU peak is the kernel's own high-water mark (VmHWM, reset on entry through /proc/self/clear_refs),
    so no short-lived allocation is missed; elsewhere the resident set is sampled every 2 ms.
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak = device, 0

    def __enter__(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        _trim()
        self.base = self.peak_rss = _rss()
        self.thread = None
        if not _reset_kernel_peak():  # no kernel high-water mark here: sample instead
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak_rss = max(self.peak_rss, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        elif self.thread is None:
            self.peak = _kernel_peak() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = self.peak_rss - self.base
        return False


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_kernel_peak() -> bool:
    """Reset the kernel's peak-resident-set counter to the current level; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _kernel_peak() > 0
    except (OSError, ValueError):
        return False


def _kernel_peak() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise ValueError("no VmHWM in /proc/self/status")


def _trim() -> None:
    """Give freed heap back to the OS, so one run's leftovers do not hide the next run's peak."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    """Measured dense matmul FLOP/s, the best of 5 timings (a shared machine's slow moments are not its peak):
    the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * reps / best


def cpu_features() -> str:
    """The CPU flags that decide bf16 speed: AMX / AVX-512 BF16 (native), else AVX-512 or AVX2 (emulated bf16)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "CPU flags unknown"
    have = [f for f in ("amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f", "avx2") if f in flags]
    return "flags " + (" ".join(have) or "none of amx_bf16/avx512/avx2")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def flops_per_token(cfg: GPT1Config, seq: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (blocks + tied LM head) + 12 L T d for attention scores."""
    n_matmul = cfg.n_layer * 12 * cfg.n_embd**2 + cfg.n_embd * cfg.vocab_size
    return 6 * n_matmul + 12 * cfg.n_layer * seq * cfg.n_embd


# ---- the two contenders ------------------------------------------------------------------------------------------
class _NoSaveTrainer(Trainer):
    """Our Trainer without checkpoint writes: the benchmark times training, not disk I/O."""

    def save_checkpoint(self, gather_rng: bool = True):
        return None


def run_ours(
    model: GPT,
    tokens: np.ndarray,
    batch: int,
    seq: int,
    steps: int,
    warm: int,
    precision: str,
    device: torch.device,
    compile: bool,
) -> tuple[float, int]:
    cfg = TrainConfig(
        max_steps=warm + steps,
        warmup_steps=1,
        lr=1e-4,
        log_every=1,
        eval_every=10**9,
        save_every=10**9,
        precision=precision,
        device=str(device),
        compile=compile,
        keep_freed_memory=True,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = _NoSaveTrainer(model, cfg, BlockSampler(tokens, seq, batch, rank=0, world_size=1), out)
        with PeakMemory(device) as mem:
            trainer.fit()
        rows = trainer.metrics.rows()
    timed = [r for r in rows if r["step"] > warm]
    seconds = sum(batch * seq / r["tokens_per_s"] for r in timed)
    return batch * seq * len(timed) / seconds, mem.peak


def run_hf(
    model: GPT, tokens: np.ndarray, batch: int, seq: int, steps: int, warm: int, precision: str, device: torch.device
) -> tuple[float, int]:
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    hf = OpenAIGPTLMHeadModel(OpenAIGPTConfig(**model.config.to_hf_dict()))
    missing, unexpected = hf.load_state_dict(ours_to_hf(model.state_dict()), strict=False)
    assert not unexpected and all("lm_head" in k or k.endswith("attn.bias") for k in missing), (missing, unexpected)
    hf.to(device).train()
    opt = torch.optim.AdamW(param_groups(hf, 0.01), lr=1e-4, fused=True)
    sampler = BlockSampler(tokens, seq, batch, rank=0, world_size=1)
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    times = []
    with PeakMemory(device) as mem:
        for step in range(warm + steps):
            x = sampler.next_batch()["input_ids"].to(device)
            t0 = time.perf_counter()
            with amp:
                loss = hf(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0, foreach=True)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()
            _sync(device)
            if step >= warm:
                times.append(time.perf_counter() - t0)
    del hf, opt
    return batch * seq * len(times) / sum(times), mem.peak


# ---- main ----------------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer shapes and steps")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default 3, quick 2)")
    ap.add_argument("--warm", type=int, default=1, help="untimed first steps")
    ap.add_argument("--shapes", default=None, help="preset:batch:seq list, e.g. small:4:512,gpt1:8:128,gpt1:4:512")
    ap.add_argument("--precisions", default=None, help="comma list of fp32,bf16 (default both on CPU, bf16 on GPU)")
    ap.add_argument("--compile", action="store_true", help="also time our Trainer with torch.compile")
    ap.add_argument("--attn-dropout", type=float, default=None, help="override attn_pdrop (paper: 0.1)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    steps = args.steps or (2 if args.quick else 3)
    # gpt1 demo's two models, then the CPU presets with a learned 8k vocabulary and with GPT-1's
    small_shapes = "demo-quick:16:64,demo:16:128,tiny:32:128:8001,tiny:32:128,mini:16:256:8001,mini:16:256"
    shapes = args.shapes or (
        f"{small_shapes},gpt1:4:512" if args.quick else f"{small_shapes},small:4:512,gpt1:8:128,gpt1:4:512"
    )
    if on_gpu and args.shapes is None:
        shapes = "small:16:512,gpt1:16:512" if args.quick else "small:16:512,gpt1:8:512,gpt1:16:512"
    precisions = (args.precisions or ("bf16" if on_gpu else "fp32,bf16")).split(",")
    peaks = {p: matmul_peak(device, torch.bfloat16 if p == "bf16" else torch.float32) for p in precisions}
    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU, {torch.get_num_threads()} threads, {cpu_features()}"
    print(
        f"device: {name}; torch {torch.__version__}; measured matmul peak: "
        + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items())
    )
    print(f"{steps} timed steps after {args.warm} warm-up step(s) per run; same weights, batches, AdamW, clipping\n")
    header = f"{'preset':<10}{'batch':>9} {'prec':<5}{'impl':<14}{'tokens/s':>10}{'peak MiB':>10}{'MFU':>7}"
    print(header + f"{'speed x':>9}{'memory x':>10}")
    print("-" * (len(header) + 19))
    rng = np.random.default_rng(0)
    runs = []  # (preset, cfg, batch, seq, precision)
    for shape in shapes.split(","):
        preset, batch, seq, *vocab = shape.split(":")
        overrides = {} if args.attn_dropout is None else {"attn_pdrop": args.attn_dropout}
        if vocab:
            overrides["vocab_size"] = int(vocab[0])
        if preset.startswith("demo"):  # gpt1 demo's models: demo (default) and demo-quick
            size = DEMO_SIZES["quick" if preset == "demo-quick" else "default"]
            arch = {k: size[k] for k in ("n_layer", "n_head", "n_embd", "n_positions")}
            cfg = GPT1Config(**{**arch, "vocab_size": size["vocab"] + 1, **overrides})
        else:
            cfg = GPT1Config.from_preset(preset, **overrides)
        runs += [
            (f"{preset}/{cfg.vocab_size / 1000:.3g}k", cfg, int(batch), int(seq), precision) for precision in precisions
        ]

    def tokens(cfg: GPT1Config) -> np.ndarray:
        return rng.integers(0, cfg.vocab_size, 2_000_000).astype(np.uint16)

    def fresh_model(cfg: GPT1Config) -> GPT:
        torch.manual_seed(0)
        return GPT(cfg)

    # Our Trainer (keep_freed_memory=True) switches glibc's malloc to reuse freed memory (kernels/cpu/allocator.py), for
    # the rest of the process.
    # So transformers runs first everywhere, with the allocator's defaults (what its users get). Then our Trainer
    # runs everywhere, and last transformers once more after the switch (`transformers+`), which isolates what the
    # code itself gains. Ours runs before transformers+ because, once freed memory is kept, a run's resident-memory
    # peak also counts pages an earlier run of the process touched in a heap it left fragmented: a fresh process,
    # as `gpt1 pretrain` is, starts from a small heap (measured here: a `gpt1` fp32 run right after transformers+
    # peaked ~0.9 GB higher than the same run first in the process).
    results = {}  # (run index, impl) -> (tokens/s, peak bytes)
    for i, (_preset, cfg, batch, seq, precision) in enumerate(runs):
        results[i, "transformers"] = run_hf(
            fresh_model(cfg), tokens(cfg), batch, seq, steps, args.warm, precision, device
        )
        _trim()
    if device.type == "cpu":
        keep_freed_memory()
    impls = [("gpt1 Trainer", False)] + ([("gpt1 +compile", True)] if args.compile else [])
    for i, (_preset, cfg, batch, seq, precision) in enumerate(runs):
        for label, comp in impls:
            results[i, label] = run_ours(
                fresh_model(cfg), tokens(cfg), batch, seq, steps, args.warm, precision, device, comp
            )
            _trim()
    if device.type == "cpu":
        for i, (_preset, cfg, batch, seq, precision) in enumerate(runs):
            results[i, "transformers+"] = run_hf(
                fresh_model(cfg), tokens(cfg), batch, seq, steps, args.warm, precision, device
            )
            _trim()
    labels = ["transformers"] + (["transformers+"] if device.type == "cpu" else []) + [label for label, _ in impls]
    for i, (preset, cfg, batch, seq, precision) in enumerate(runs):
        hf_tps, hf_mem = results[i, "transformers"]
        for label in labels:
            tps, mem = results[i, label]
            mfu = tps * flops_per_token(cfg, seq) / peaks[precision]
            ratio = "" if label == "transformers" else f"{tps / hf_tps:>8.2f}x{hf_mem / max(mem, 1):>9.2f}x"
            print(
                f"{preset:<10}{f'{batch}x{seq}':>9} {precision:<5}{label:<14}{tps:>10.0f}{mem / 2**20:>10.0f}"
                f"{mfu:>7.1%} {ratio}",
                flush=True,
            )
        if device.type == "cpu":
            (plus_tps, plus_mem), (our_tps, our_mem) = results[i, "transformers+"], results[i, "gpt1 Trainer"]
            print(
                f"{'':<25}gpt1 Trainer vs transformers+: {our_tps / plus_tps:.2f}x speed, "
                f"{plus_mem / max(our_mem, 1):.2f}x memory"
            )
    if {"fp32", "bf16"} <= set(precisions):
        print(
            f"\n--precision auto on this {'GPU' if on_gpu else 'CPU'} (native bf16: {cpu_has_bf16() if not on_gpu else True}):"
        )
        for i, (preset, cfg, batch, seq, precision) in enumerate(runs):
            if precision != "fp32":
                continue
            j = next(k for k, r in enumerate(runs) if r[:4] == (preset, cfg, batch, seq) and r[4] == "bf16")
            fp32, bf16 = results[i, "gpt1 Trainer"][0], results[j, "gpt1 Trainer"][0]
            pick = resolve_precision("auto", device)
            chosen = bf16 if pick is torch.bfloat16 else fp32
            print(
                f"  {preset:<9}{f'{batch}x{seq}':>9}: picks {'bf16' if pick is torch.bfloat16 else 'fp32'}; "
                f"bf16 is {bf16 / fp32:.2f}x fp32; auto is {chosen / fp32:.2f}x fp32"
            )
    print("\nspeed x = our tokens/s over transformers'; memory x = transformers' peak over ours (higher is better).")
    print(
        "transformers = glibc malloc defaults; transformers+ = the same loop after our Trainer switched the process to "
        "reusing freed memory (TrainConfig.keep_freed_memory, gpt1/kernels/cpu/allocator.py)."
    )


if __name__ == "__main__":
    main()
