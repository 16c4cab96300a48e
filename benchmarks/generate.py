"""Generation speed: gpt1 (KV cache, fp32 and bf16) vs transformers' OpenAIGPT `generate`, full `gpt1` config.

Same random weights, same 7-token prompt, one process. Prints tokens/s for 64 and 256 new tokens at batch 1 and 8,
per-token latency at contexts 16, 256 and 500, the memory-bandwidth bound on decoding, and the perplexity change
bf16 makes on held-out text (WikiText-2 validation from ../shared, when present).

    python benchmarks/generate.py            # the full table (a few minutes; HF at 256 tokens is slow)
    python benchmarks/generate.py --quick    # 64 new tokens only, fewer repeats
    python benchmarks/generate.py --device cuda              # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from gpt1 import GPT, GPT1Config
from gpt1.checkpoint import ours_to_hf
from gpt1.model.cache import KVCache

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int = 1) -> float:
    """Best wall time of `repeats` runs (the machine is shared: the best run is the least disturbed)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def copy_bandwidth(device: str, gib: float = 1.0) -> float:
    """Bytes copied per second for a ~1 GiB tensor (memcpy's rate; the bus carries twice this, read + write).

    Decoding one token reads every weight once, so weight bytes / this rate is its memory-bandwidth bound.

    The destination is allocated and touched once beforehand, so page faults are not timed (a bare clone would)."""
    x = torch.empty(int(gib * 2**30) // 4, dtype=torch.float32, device=device).fill_(1.0)
    y = torch.empty_like(x).fill_(0.0)
    t = timed(lambda: y.copy_(x), device, repeats=3)
    return x.numel() * 4 / t


def weight_bytes_per_token(model: GPT) -> int:
    """Bytes of weights one decode step must read: every block matrix and the (tied) LM head; one position row."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    pos = model.positions_embed.weight
    return total - pos.numel() * pos.element_size() + pos.shape[1] * pos.element_size()


def decode_latency(model: GPT, context: int, device: str, steps: int = 8) -> float:
    """Seconds per one-token step with `context` tokens already in the KV cache."""
    ids = torch.randint(0, 40478, (1, context + steps), device=device)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            cache = KVCache(model.config, 1, context + steps, device, model.dtype)
            model(ids[:, :context], cache=cache, logits_to_keep=1)
            sync(device)
            t = time.perf_counter()
            for i in range(steps):
                model(ids[:, context + i : context + i + 1], cache=cache, logits_to_keep=1)
            sync(device)
            best = min(best, (time.perf_counter() - t) / steps)
    return best


def hf_step_latency(hf, context: int, device: str) -> float:
    """HF's cost of one new token at `context`: it re-runs the whole sequence (OpenAIGPT has no KV cache)."""
    ids = torch.randint(0, 40478, (1, context + 1), device=device)
    with torch.inference_mode():
        hf(ids)
        return timed(lambda: hf(ids), device, repeats=2)


def perplexity(model: GPT, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        losses = [model(block[None], labels=block[None]).loss.float() for block in ids]
    return float(torch.stack(losses).mean().exp())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64 new tokens only, fewer repeats (about a minute)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument(
        "--preset", default="gpt1", help="model size (default gpt1, the 116.5M paper model; others smoke-test)"
    )
    ap.add_argument(
        "--hf-batch8-256",
        action="store_true",
        help="also run HF at batch 8 x 256 new tokens (slow on CPU: several minutes)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    dev = args.device
    torch.manual_seed(0)
    cfg = GPT1Config.from_preset(args.preset)
    ours = GPT(cfg).eval().to(dev)
    hf_cfg = {k: getattr(cfg, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")}
    hf = transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(**hf_cfg)).eval()
    hf.load_state_dict(ours_to_hf({k: v.cpu() for k, v in ours.state_dict().items()}), strict=False)
    hf.to(dev)
    bf16 = copy.deepcopy(ours).to(torch.bfloat16)
    variants = {"fp32": ours, "bf16": bf16}
    prompt = torch.randint(0, 40478, (1, 7), generator=torch.Generator().manual_seed(1)).to(dev)

    print(
        f"device {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, transformers "
        f"{transformers.__version__}; preset {args.preset} ({ours.num_parameters() / 1e6:.1f}M), random weights, "
        f"7-token prompt"
    )
    bw = copy_bandwidth(dev)
    print(f"\nmemory copy bandwidth: {bw / 1e9:.1f} GB/s copied ({2 * bw / 1e9:.1f} GB/s of read + write traffic)")
    for name, m in variants.items():
        wb = weight_bytes_per_token(m)
        print(
            f"  {name}: {wb / 1e6:.0f} MB of weights per token -> bound {wb / bw * 1e3:.1f} ms/token "
            f"({bw / wb:.1f} tokens/s at batch 1)"
        )

    # ---- throughput -------------------------------------------------------------------------------------------
    cases = [(64, 1), (64, 8)] if args.quick else [(64, 1), (256, 1), (64, 8), (256, 8)]
    reps = 1 if args.quick else 2
    print(f"\nthroughput (tokens/s, new tokens incl. prefill; best of {reps})")
    header = f"{'new':>4} {'batch':>5} {'HF fp32':>9} " + " ".join(f"{n:>13} {'x HF':>6}" for n in variants)
    print(header)
    hf_rate: dict[tuple[int, int], float] = {}
    for new, batch in cases:
        ids = prompt.expand(batch, -1).contiguous()
        if batch == 8 and new == 256 and not args.hf_batch8_256:
            ref, ref_note = hf_rate.get((64, 8)), "*"
        else:
            with torch.inference_mode():
                hf.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
                t = timed(
                    lambda: hf.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0),
                    dev,
                    repeats=1 if new == 256 else reps,
                )
            ref, ref_note = batch * new / t, ""
            hf_rate[(new, batch)] = ref
        row = f"{new:>4} {batch:>5} {ref:>8.1f}{ref_note or ' '} "
        for m in variants.values():
            m.generate(ids, max_new_tokens=4)  # warm up (and compile)
            t = timed(lambda: m.generate(ids, max_new_tokens=new), dev, repeats=reps)
            rate = batch * new / t
            row += f"{rate:>13.1f} {rate / ref:>5.1f}x "
        print(row)
    if (256, 8) in cases and not args.hf_batch8_256:
        print(
            "* HF at batch 8 x 256 not run (slow; --hf-batch8-256 runs it): its batch-8 x 64 rate is the reference, "
            "which flatters HF (its cost per token grows with length)."
        )

    # ---- latency ------------------------------------------------------------------------------------------------
    print("\nper-token latency at a given context (ms): ours = one KV-cache step, HF = one full re-run")
    print(f"{'context':>7} {'HF fp32':>9} " + " ".join(f"{n:>13} {'x HF':>6} {'/bound':>6}" for n in variants))
    for ctx in [c for c in (16, 256, 500) if c + 8 <= cfg.n_positions]:
        ref = hf_step_latency(hf, ctx, dev)
        row = f"{ctx:>7} {ref * 1e3:>9.1f} "
        for m in variants.values():
            lat = decode_latency(m, ctx, dev)
            bound = weight_bytes_per_token(m) / bw
            row += f"{lat * 1e3:>13.2f} {ref / lat:>5.1f}x {lat / bound:>5.2f}x "
        print(row)

    # ---- bf16 quality -------------------------------------------------------------------------------------------
    text_path = SHARED / "data" / "wikitext-2" / "valid.txt"
    vocab = SHARED / "data" / "gpt1-vocab"
    if text_path.exists() and vocab.exists():
        from gpt1 import Tokenizer

        tok = Tokenizer.from_pretrained(vocab)
        ids = tok.encode(text_path.read_text()[:20000])
        n = (len(ids) // 512) * 512
        w = min(512, cfg.n_positions)
        blocks = torch.tensor(ids[: min(n, 4 * 512)], device=dev).view(-1, w)
        p32, p16 = perplexity(ours, blocks), perplexity(bf16, blocks)
        print(
            f"\nperplexity on {blocks.numel()} WikiText-2 validation tokens (random weights): fp32 {p32:.2f}, "
            f"bf16 {p16:.2f}, change {100 * (p16 - p32) / p32:+.3f}%"
        )
    else:
        print(f"\n(perplexity check skipped: {text_path} or {vocab} is absent)")


if __name__ == "__main__":
    main()
