"""Scoring throughput of `gpt1 serve`: lm-eval-style requests (token-id prompts in batches, `echo`, `logprobs: 1`,
`max_tokens: 1`, as lm-eval 0.4.13's `local-completions` sends) from concurrent clients, against `score_tokens`
in-process on the same weights and sequences (the floor: no HTTP, no JSON). Checks that the server's sums equal the
in-process ones. Prints sequences/s and tokens/s for both and their ratio.

    python benchmarks/serve_score.py                  # preset `small` (6 x 384, random weights)
    python benchmarks/serve_score.py --quick          # preset `tiny`, fewer sequences: a few seconds
    python benchmarks/serve_score.py --model DIR      # a saved model (its own tokenizer)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import SHARED_VOCAB, make_model, start_server  # noqa: E402
from train import cpu_features  # noqa: E402


def sequences(n: int, vocab: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    import random

    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


async def score_remote(url: str, seqs: list[list[int]], batch: int, clients: int) -> tuple[list[float], float]:
    """Each request carries `batch` prompts; `clients` requests in flight. Returns each sequence's summed logprob."""
    sums: list[float] = [0.0] * len(seqs)
    chunks = [list(range(k, min(k + batch, len(seqs)))) for k in range(0, len(seqs), batch)]
    queue: asyncio.Queue = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            idx = queue.get_nowait()
            body = {
                "prompt": [seqs[i] for i in idx],
                "max_tokens": 1,
                "logprobs": 1,
                "echo": True,
                "temperature": 0,
                "seed": 1234,
            }
            r = await client.post(url + "/v1/completions", json=body)
            r.raise_for_status()
            for choice in r.json()["choices"]:
                lp = choice["logprobs"]["token_logprobs"]
                sums[idx[choice["index"]]] = sum(lp[1:-1])  # the prompt's tokens after the first (lm-eval's slice)

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        return sums, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="a saved model dir (default: a random-weight preset)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--sequences", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=255)
    ap.add_argument("--batch", type=int, default=8, help="prompts per request (lm-eval's batch_size)")
    ap.add_argument("--clients", type=int, default=2, help="requests in flight (lm-eval's num_concurrent)")
    ap.add_argument("--max-batch", type=int, default=8, help="the server's --max-batch")
    ap.add_argument("--threads", type=int, default=None, help="OMP threads for both (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="preset tiny, 64 sequences")
    args = ap.parse_args()
    if args.quick:
        args.preset, args.sequences, args.max_len = "tiny", 64, 127
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    import torch

    from gpt1 import GPT
    from gpt1.inference.scoring import score_tokens

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or make_model(args.preset, SHARED_VOCAB, Path(tmp) / "model")
        model = GPT.from_pretrained(model_dir).eval()
        n_ctx = model.config.n_positions
        seqs = sequences(args.sequences, model.config.vocab_size, args.min_len, min(args.max_len, n_ctx - 1))
        seqs.sort(key=len, reverse=True)  # lm-eval sends its requests longest first, so a batch has similar lengths
        tokens = sum(len(s) for s in seqs)

        score_tokens(model, seqs[:2], precision="fp32")  # first-call costs out
        start = time.perf_counter()
        local = score_tokens(model, seqs, batch_size=args.batch, precision="fp32")
        local_s = time.perf_counter() - start
        local_sums = [s.total for s in local]

        proc, url = start_server(model_dir, args.max_batch, max_queue=args.clients + 8, threads=args.threads)
        try:
            asyncio.run(score_remote(url, seqs[:2], 2, 1))  # warm-up
            remote_sums, remote_s = asyncio.run(score_remote(url, seqs, args.batch, args.clients))
        finally:
            proc.terminate()
            proc.wait(timeout=15)

    worst = max(abs(a - b) for a, b in zip(local_sums, remote_sums))
    print(f"# serve_score: {args.sequences} sequences, {tokens} tokens, lengths {args.min_len}..{args.max_len}, "
          f"{args.batch} per request, {args.clients} clients, server --max-batch {args.max_batch}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_features()}")  # fmt: skip
    print(f"{'':28}{'sequences/s':>14}{'tokens/s':>12}")
    print(f"{'gpt1 serve (HTTP, lm-eval)':28}{len(seqs) / remote_s:>14.1f}{tokens / remote_s:>12.0f}")
    print(f"{'score_tokens (in-process)':28}{len(seqs) / local_s:>14.1f}{tokens / local_s:>12.0f}")
    print(f"ratio server / in-process: {local_s / remote_s:.2f}; largest |difference| of summed logprobs: {worst:.2e}")
    if worst > 1e-3:
        raise SystemExit(f"the server's scores differ from score_tokens by {worst:.2e}")


if __name__ == "__main__":
    main()
