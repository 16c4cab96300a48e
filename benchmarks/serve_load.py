"""Load test for `gpt1 serve`: N concurrent streaming clients on loopback, with batching off (--max-batch 1) and on.

Each client sends its own prompt (half greedy, half seeded sampling), reads the server-sent events to the end and
checks the result: every request completes, with max_tokens tokens, and the text each client gets with batching on
is exactly what it gets with batching off (one row at a time), so no request's tokens leak into another's.
Prints throughput and p50/p95 latency for both settings and their ratio.

    python benchmarks/serve_load.py                  # preset `small` (6 x 384, random weights), 32 clients
    python benchmarks/serve_load.py --quick          # preset `tiny`, 16 tokens: a few seconds per setting
    python benchmarks/serve_load.py --model DIR      # a saved model instead (its own tokenizer)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHARED_VOCAB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpt1-vocab"
WORDS = (
    "river mountain letter window garden silver doctor winter market engine captain orchard lantern "
    "harbour violin meadow"
).split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(preset: str, tokenizer_dir: Path, out: Path) -> Path:
    """A random-weight model of `preset` saved with GPT-1's tokenizer (real weights are not needed for speed)."""
    import torch

    from gpt1 import GPT, GPT1Config, Tokenizer

    torch.manual_seed(0)
    model = GPT(GPT1Config.from_preset(preset, initializer_range=0.3))  # wide init: varied text, not one word repeated
    model.save_pretrained(out, tokenizer=Tokenizer.from_pretrained(tokenizer_dir))
    return out


def requests_for(clients: int, max_tokens: int) -> list[dict]:
    bodies = []
    for i in range(clients):
        prompt = f"the {WORDS[i % len(WORDS)]} and the {WORDS[(i * 7 + 3) % len(WORDS)]} were {i} miles from the"
        sampling = {"temperature": 0} if i % 2 == 0 else {"temperature": 0.9, "top_k": 40, "seed": 1000 + i}
        bodies.append(
            {
                "prompt": prompt,
                "max_tokens": max_tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                **sampling,
            }
        )
    return bodies


async def one_client(client: httpx.AsyncClient, url: str, body: dict) -> dict:
    start = time.perf_counter()
    first = None
    text, reason, usage, done = "", None, None, False
    async with client.stream("POST", url + "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {await r.aread()!r}")
        async for line in r.aiter_lines():
            if not line:
                continue
            data = line.removeprefix("data: ")
            if data == "[DONE]":
                done = True
                continue
            msg = json.loads(data)
            if msg.get("usage"):
                usage = msg["usage"]
            for c in msg["choices"]:
                if first is None and c["text"]:
                    first = time.perf_counter() - start
                text += c["text"]
                reason = c["finish_reason"] or reason
    return {
        "text": text,
        "reason": reason,
        "usage": usage,
        "done": done,
        "latency": time.perf_counter() - start,
        "ttft": first if first is not None else float("nan"),
    }


async def run_clients(url: str, bodies: list[dict], timeout: float) -> tuple[list[dict], float]:
    limits = httpx.Limits(max_connections=len(bodies) + 4, max_keepalive_connections=len(bodies) + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        start = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*(one_client(client, url, b) for b in bodies)), timeout)
        return results, time.perf_counter() - start


def start_server(model: Path, max_batch: int, max_queue: int, threads: int | None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpt1",
            "serve",
            "--model",
            str(model),
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--max-queue",
            str(max_queue),
            "--name",
            "bench",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise SystemExit(f"gpt1 serve did not start:\n{proc.stderr.read().decode()}")
        time.sleep(0.3)


def measure(model: Path, max_batch: int, bodies: list[dict], timeout: float, threads: int | None) -> dict:
    proc, url = start_server(model, max_batch, max_queue=len(bodies) + 8, threads=threads)
    try:
        warm = {**bodies[0], "max_tokens": 2, "stream": False}
        warm.pop("stream_options")
        httpx.post(url + "/v1/completions", json=warm, timeout=120).raise_for_status()  # first-call costs out
        before = httpx.get(url + "/health").json()
        results, wall = asyncio.run(run_clients(url, bodies, timeout))
        after = httpx.get(url + "/health").json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    tokens = sum(r["usage"]["completion_tokens"] for r in results)
    latencies = sorted(r["latency"] for r in results)
    steps = after["steps"] - before["steps"]
    return {
        "results": results,
        "wall": wall,
        "tokens": tokens,
        "throughput": tokens / wall,
        "requests_per_s": len(results) / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        "ttft_p50": statistics.median(r["ttft"] for r in results),
        "rows_per_step": (after["rows_decoded"] - before["rows_decoded"]) / max(steps, 1),
    }


def check(off: dict, on: dict, bodies: list[dict]) -> list[str]:
    """Problems found: incomplete streams, wrong token counts, or outputs that differ between the two settings."""
    problems = []
    for name, run in (("off", off), ("on", on)):
        for i, (r, b) in enumerate(zip(run["results"], bodies)):
            if not r["done"] or r["reason"] != "length" or r["usage"]["completion_tokens"] != b["max_tokens"]:
                problems.append(
                    f"batching {name}, client {i}: incomplete ({r['reason']}, {r['usage']}, done={r['done']})"
                )
    for i, (a, b) in enumerate(zip(off["results"], on["results"])):
        if a["text"] != b["text"]:
            problems.append(
                f"client {i}: batched text differs from unbatched:\n  off: {a['text']!r}\n  on:  {b['text']!r}"
            )
    texts = [r["text"] for r in on["results"]]
    if len(set(texts)) < len(texts):
        problems.append(f"only {len(set(texts))} distinct outputs for {len(texts)} different prompts")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="saved model dir (default: a random-weight --preset model)")
    ap.add_argument("--preset", default="small", help="preset for the random model (default small)")
    ap.add_argument("--tokenizer", default=str(SHARED_VOCAB), help="tokenizer dir for the random model")
    ap.add_argument("--clients", type=int, default=32, help="concurrent clients (1..256, default 32)")
    ap.add_argument("--max-tokens", type=int, default=32, help="tokens per request (default 32)")
    ap.add_argument("--max-batch", type=int, default=8, help="batch size of the batching-on run (default 8)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per setting (default 300)")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the server (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="preset tiny and 16 tokens: a smoke run")
    args = ap.parse_args()
    if not 1 <= args.clients <= 256:
        ap.error(f"--clients {args.clients} is out of range; use 1..256.")
    if args.quick:
        args.preset, args.max_tokens = "tiny", 16
    bodies = requests_for(args.clients, args.max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model = Path(args.model)
        else:
            if not Path(args.tokenizer).exists():
                raise SystemExit(f"{args.tokenizer} is absent: pass --tokenizer DIR (GPT-1's vocab) or --model DIR.")
            model = make_model(args.preset, Path(args.tokenizer), Path(tmp) / "model")
        label = args.model or f"preset {args.preset} (random weights)"
        print(f"model {label}; {args.clients} concurrent streaming clients x {args.max_tokens} tokens on 127.0.0.1")
        off = measure(model, 1, bodies, args.timeout, args.threads)
        on = measure(model, args.max_batch, bodies, args.timeout, args.threads)
    problems = check(off, on, bodies)
    rows = [
        ("throughput (tokens/s)", off["throughput"], on["throughput"], "{:.1f}"),
        ("requests/s", off["requests_per_s"], on["requests_per_s"], "{:.2f}"),
        ("latency p50 (s)", off["p50"], on["p50"], "{:.2f}"),
        ("latency p95 (s)", off["p95"], on["p95"], "{:.2f}"),
        ("first text p50 (s)", off["ttft_p50"], on["ttft_p50"], "{:.2f}"),
        ("mean rows per step", off["rows_per_step"], on["rows_per_step"], "{:.2f}"),
        ("wall time (s)", off["wall"], on["wall"], "{:.1f}"),
    ]
    head = ("metric", "batching off (max-batch 1)", f"batching on (max-batch {args.max_batch})", "on / off")
    print(f"\n| {head[0]:<22} | {head[1]:>26} | {head[2]:>26} | {head[3]:>8} |")
    print(f"|{'-' * 24}|{'-' * 28}|{'-' * 28}|{'-' * 10}|")
    for name, a, b, fmt in rows:
        print(f"| {name:<22} | {fmt.format(a):>26} | {fmt.format(b):>26} | {b / a if a else float('nan'):>8.2f} |")
    n_on, n_off = sum(r["done"] for r in on["results"]), sum(r["done"] for r in off["results"])
    same = not any("differs" in p for p in problems)
    print(
        f"\n{n_on}/{len(bodies)} requests completed with batching on, {n_off}/{len(bodies)} with it off; "
        f"outputs identical across settings: {same}"
    )
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
