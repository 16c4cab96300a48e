"""Learning-rate x warmup x preset sweep of `gpt1 pretrain`: which settings learn, and which stall at the unigram level.

Each run pre-trains from random weights on a prepared corpus for the same token budget (paper schedule: linear
warmup, cosine to 0) and records the validation loss at four points against the unigram entropy of the training
shard, the loss of a model that ignores context. A run "stalls" when its final validation loss is within 0.1 nat
of that baseline. Results append to a JSONL file (a re-run skips runs already there) and print as one table.

    python benchmarks/lr_sweep.py --corpus runs/books8k --presets mini --lrs 2.5e-4,1e-3 --warmups 50,300
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

STALL_MARGIN = 0.1  # nats above (unigram - margin) counts as "still predicting word frequencies"


def run_one(
    corpus: str,
    preset: str,
    lr: float,
    warmup: int,
    tokens: int,
    batch_tokens: int,
    context: int | None,
    precision: str,
    evals: int = 4,
) -> dict:
    from gpt1.data.corpus import read_meta
    from gpt1.recipes.pretrain import pretrain

    meta = read_meta(corpus)
    overrides = {"n_positions": context} if context else {}
    out = Path(tempfile.mkdtemp(prefix="lr-sweep-"))
    steps = max(evals, tokens // batch_tokens)
    t0 = time.perf_counter()
    try:
        result = pretrain(
            data=corpus,
            preset=preset,
            out=str(out),
            max_steps=steps,
            batch_tokens=batch_tokens,
            lr=lr,
            warmup=warmup,
            eval_every=max(1, steps // evals),
            save_every=steps,
            eval_blocks=200,
            log_every=max(1, steps // 20),
            precision=precision,
            progress=False,
            model_overrides=overrides,
        )
        if result["interrupted"]:  # Ctrl-C / SIGTERM: record nothing of a run cut short
            raise KeyboardInterrupt
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    finally:
        shutil.rmtree(out, ignore_errors=True)
    vals = [(r["tokens"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    speeds = sorted(r["tokens_per_s"] for r in rows if r.get("tokens_per_s") and "val_loss" not in r)
    final = vals[-1][1]
    unigram = meta["unigram_entropy"]
    return {
        "preset": preset,
        "context": context,
        "batch_tokens": batch_tokens,
        "lr": lr,
        "warmup": warmup,
        "steps": steps,
        "tokens": result["tokens"],
        "val": vals,
        "final_val": final,
        "unigram": unigram,
        "below_unigram": unigram - final,
        "stalled": final > unigram - STALL_MARGIN,
        "tokens_per_s": speeds[len(speeds) // 2] if speeds else None,
        "seconds": time.perf_counter() - t0,
    }


def key(r: dict) -> tuple:
    return (r["preset"], r["context"], r["batch_tokens"], r["lr"], r["warmup"], r["steps"])


def table(rows: list[dict]) -> str:
    head = (
        "| preset | context | batch tok | tokens | lr | warmup | val loss at 25 / 50 / 75 / 100% of tokens | "
        "below unigram | verdict | tok/s |\n|---|---:|---:|---:|---:|---:|---|---:|---|---:|"
    )
    lines = [head]
    for r in rows:
        vals = " / ".join(f"{v:.2f}" for _, v in r["val"][-4:])
        verdict = "stalled" if r["stalled"] else "learns"
        lines.append(
            f"| {r['preset']} | {r['context'] or 'preset'} | {r['batch_tokens']} | {r['tokens'] / 1e6:.1f}M | {r['lr']:g} | "
            f"{r['warmup']} | {vals} | {r['below_unigram']:+.2f} | {verdict} | {r['tokens_per_s'] or 0:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, help="a prepared corpus dir (gpt1 prepare)")
    ap.add_argument("--presets", default="tiny,mini,small")
    ap.add_argument("--lrs", default="2.5e-4,6e-4,1e-3,2e-3")
    ap.add_argument("--warmups", default="50,300", help="warmup steps")
    ap.add_argument("--tokens", type=float, default=2e6, help="training tokens per run")
    ap.add_argument("--batch-tokens", default="4096", help="comma-separated global batch sizes in tokens")
    ap.add_argument("--contexts", default="0", help="comma-separated n_positions (0: the preset's)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--results", default="lr_sweep.jsonl", help="JSONL file the runs append to")
    args = ap.parse_args()

    from gpt1.runtime import cpu_has_bf16

    print(f"CPU native bf16 (AVX-512 BF16 / AMX): {cpu_has_bf16()}", flush=True)
    path = Path(args.results)
    done = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    have = {key(r) for r in done}
    grid = itertools.product(
        args.presets.split(","),
        [int(c) for c in args.contexts.split(",")],
        [int(b) for b in args.batch_tokens.split(",")],
        [float(x) for x in args.lrs.split(",")],
        [int(w) for w in args.warmups.split(",")],
    )
    for preset, context, batch, lr, warmup in grid:
        steps = max(4, int(args.tokens) // batch)
        if (preset, context or None, batch, lr, warmup, steps) in have:
            continue
        r = run_one(args.corpus, preset, lr, warmup, int(args.tokens), batch, context or None, args.precision)
        done.append(r)
        with path.open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(
            f"{preset} ctx={context or 'preset'} batch={batch} lr={lr:g} warmup={warmup}: final val "
            f"{r['final_val']:.3f} (unigram {r['unigram']:.3f}) in {r['seconds']:.0f}s",
            flush=True,
        )
    print(table(done))


if __name__ == "__main__":
    sys.exit(main())
