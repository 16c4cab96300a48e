"""int8 quality on a trained model: held-out perplexity and greedy continuations, fp32 vs int8 (and bf16).

Random weights say nothing about quantisation error, so this loads a model trained here (default: the `mini` run of
`gpt1 reproduce`, /work/runs/reproduce/pretrain, with its own tokenizer) as fp32, bf16 and int8 (quantised as it
loads), and prints, in one process:
- sliding-window perplexity on held-out text (default WikiText-2 validation and tiny-shakespeare from ../shared,
  neither in its Gutenberg training data), in exact fp32 arithmetic around the int8 matmuls (`precision="fp32"`);
- greedy continuations of 20 prompts cut from that text: how many int8 (and bf16) continuations equal fp32's
  token for token, and the mean length of the common prefix;
- the memory of each loaded model and its load time.

    python benchmarks/int8_quality.py
    python benchmarks/int8_quality.py --model runs/my-model --text my_heldout.txt --max-chars 0   # whole file
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gpt1 import GPT
from gpt1.evaluation.perplexity import perplexity
from gpt1.inference.generate import generate
from gpt1.loading import load_tokenizer

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DEFAULT_MODEL = Path("/work/runs/reproduce/pretrain")
DEFAULT_TEXTS = [SHARED / "data" / "wikitext-2" / "valid.txt", SHARED / "data" / "tiny-shakespeare" / "input.txt"]


def model_bytes(model: GPT) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def prompts_from(text: str, tokenizer, n: int, length: int) -> list[list[int]]:
    """`n` prompts: the first `length` tokens of evenly spaced lines of `text` that have that many (headings and
    markup lines skipped)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("=")]
    encoded = [ids[:length] for ids in map(tokenizer.encode, lines) if len(ids) >= length]
    step = max(1, len(encoded) // n)
    return encoded[::step][:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a trained model dir (default: %(default)s)")
    ap.add_argument("--text", nargs="+", default=[str(p) for p in DEFAULT_TEXTS], help="held-out text file(s)")
    ap.add_argument("--max-chars", type=int, default=300_000, help="characters of each text to score (0: all)")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(None, fallback_model=args.model)
    models, load_s = {}, {}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("int8", "int8")):
        t = time.perf_counter()
        models[name] = GPT.from_pretrained(args.model, dtype=dtype)
        load_s[name] = time.perf_counter() - t
    print(
        f"model {args.model}: {models['fp32'].num_parameters() / 1e6:.1f}M parameters, threads {torch.get_num_threads()}"
    )
    for name, m in models.items():
        print(f"  {name}: loaded model {model_bytes(m) / 1e6:.1f} MB, load time {load_s[name]:.2f} s")

    for path in args.text:
        text = Path(path).read_text(encoding="utf-8")
        if args.max_chars:
            text = text[: args.max_chars]
        ppl = {n: perplexity(m, tok, text, precision="fp32", batch_size=8)["perplexity"] for n, m in models.items()}
        base = ppl["fp32"]
        changes = ", ".join(f"{n} {p:.3f} ({100 * (p - base) / base:+.3f}%)" for n, p in ppl.items() if n != "fp32")
        print(f"\nperplexity, {path} ({len(text)} chars): fp32 {base:.3f}, {changes}")

        prompts = prompts_from(text, tok, args.prompts, args.prompt_tokens)
        outs = {}
        for name, m in models.items():
            outs[name] = [
                generate(m, torch.tensor([p]), max_new_tokens=args.new_tokens)[0, len(p) :].tolist() for p in prompts
            ]
        for name in ("bf16", "int8"):
            for n in (8, 16):
                same = sum(a[:n] == b[:n] for a, b in zip(outs[name], outs["fp32"]))
                print(f"  greedy, first {n} new tokens: {name} equal to fp32 for {same}/{len(prompts)}")
            same = sum(a == b for a, b in zip(outs[name], outs["fp32"]))
            prefix = [
                next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
                for a, b in zip(outs[name], outs["fp32"])
            ]
            print(
                f"  greedy, {len(prompts)} prompts x {args.new_tokens} new tokens: {name} equal to fp32 for {same}/"
                f"{len(prompts)}; common prefix {sum(prefix) / len(prefix):.1f} tokens on average"
            )
        first = tok.decode(prompts[0])
        print(f"  e.g. {first!r} -> fp32 {tok.decode(outs['fp32'][0])!r}")
        print(f"  {'':>{len(repr(first)) + 5}}   int8 {tok.decode(outs['int8'][0])!r}")


if __name__ == "__main__":
    main()
