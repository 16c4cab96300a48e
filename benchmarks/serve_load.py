"""Load test for `gpt1 serve`: N concurrent streaming clients on loopback, with batching off (--max-batch 1) and on.

Each client sends its own prompt (half greedy, half seeded sampling), reads the server-sent events to the end and
checks the result: every request completes, with max_tokens tokens, and the text each client gets with batching on
is exactly what it gets with batching off (one row at a time), so no request's tokens leak into another's.
Prints throughput and p50/p95 latency for both settings and their ratio.

`--soak` instead sends --requests requests (default 2,000) per round from 32 concurrent clients to one server
started with an API key, a share of them malformed JSON, bad field values, over the context, with a wrong key, or
hung up mid-stream; it checks that every well-formed request completed, counts the answers by status (and checks
them against the server's /metrics), and reads the server's resident memory (VmRSS) before and after each round.

    python benchmarks/serve_load.py                  # preset `small` (6 x 384, random weights), 32 clients
    python benchmarks/serve_load.py --quick          # preset `tiny`, 16 tokens: a few seconds per setting
    python benchmarks/serve_load.py --model DIR      # a saved model instead (its own tokenizer)
    python benchmarks/serve_load.py --soak           # preset `tiny`: 2 rounds x 2,000 requests, a few minutes
    python benchmarks/serve_load.py --soak --requests 300 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
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


def start_server(
    model: Path, max_batch: int, max_queue: int, threads: int | None, api_key: str | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    env.pop("GPT1_API_KEY", None)
    if api_key:
        env["GPT1_API_KEY"] = api_key  # the environment, not argv (which `ps` shows)
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


# ---- the soak -------------------------------------------------------------------------------------------------------
SOAK_KEY = "soak-key-" + "7" * 24
SOAK_MIX = (  # kind, share of the requests
    ("good", 0.62),
    ("bad_json", 0.07),
    ("bad_field", 0.07),
    ("over_context", 0.08),
    ("bad_key", 0.08),
    ("cancel", 0.08),
)
BAD_JSON = (b'{"prompt": "hi",', b"[1, 2]", b"not json at all", b'{"prompt": "hi" "max_tokens": 3}')
BAD_FIELDS = (  # body, the status it must get
    ({"prompt": "hi", "top_p": 7}, 422),
    ({"prompt": "hi", "temperature": "hot"}, 422),
    ({"prompt": 42}, 422),
    ({"prompt": "hi", "n": 0}, 422),
    ({"prompt": "hi", "max_tokens": -1}, 422),
    ({"prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400),
    ({"prompt": "hi", "model": "gpt-4"}, 404),
    ({"prompt": [1, 2, 99999999]}, 400),
)


def soak_specs(n: int, context: int, seed: int) -> list[dict]:
    """`n` requests in SOAK_MIX's shares, shuffled: each with its body (or raw bytes), headers and expected status."""
    rng = random.Random(seed)
    kinds = [k for k, share in SOAK_MIX for _ in range(round(share * n))]
    kinds = (kinds + ["good"] * n)[:n]
    rng.shuffle(kinds)
    good_key = {"Authorization": f"Bearer {SOAK_KEY}"}
    specs = []
    for i, kind in enumerate(kinds):
        spec = {"kind": kind, "headers": good_key, "expect": 200, "body": None, "raw": None}
        prompt = f"the {WORDS[i % len(WORDS)]} and the {WORDS[(i * 7 + 3) % len(WORDS)]} were {i} miles from the"
        if kind == "good":
            sampling = {"temperature": 0} if rng.random() < 0.5 else {"temperature": 0.9, "top_k": 40, "seed": i}
            spec["body"] = {"prompt": prompt, "max_tokens": rng.randint(4, 24), **sampling}
            if rng.random() < 0.5:
                spec["body"].update(stream=True, stream_options={"include_usage": True})
        elif kind == "bad_json":
            spec.update(raw=rng.choice(BAD_JSON), expect=422)
        elif kind == "bad_field":
            body, status = rng.choice(BAD_FIELDS)
            spec.update(body=body, expect=status)
        elif kind == "over_context":
            spec["body"] = rng.choice(
                (
                    {"prompt": "word " * (context + 20)},
                    {"prompt": prompt, "max_tokens": context},
                    {"prompt": [100 + j for j in range(context)], "max_tokens": 1},
                )
            )
            spec["expect"] = 400
        elif kind == "bad_key":
            spec.update(
                body={"prompt": prompt, "max_tokens": 4},
                headers=rng.choice(({}, {"Authorization": f"Bearer wrong-{i}"}, {"Authorization": SOAK_KEY})),
                expect=401,
            )
        else:  # cancel: hang up after the first event of a long stream
            spec["body"] = {"prompt": prompt, "max_tokens": context - 40, "stream": True}
        specs.append(spec)
    return specs


async def soak_one(client: httpx.AsyncClient, url: str, spec: dict) -> dict:
    """Send one soak request; for well-formed ones, check it completed with all its tokens."""
    start = time.perf_counter()
    body, kind = spec["body"], spec["kind"]
    kwargs = {"headers": spec["headers"]}
    if spec["raw"] is not None:
        kwargs.update(content=spec["raw"], headers={**spec["headers"], "content-type": "application/json"})
    else:
        kwargs["json"] = body
    result = {"kind": kind, "expect": spec["expect"], "ok": False}
    if body is not None and body.get("stream") and spec["expect"] == 200:
        async with client.stream("POST", url + "/v1/completions", **kwargs) as r:
            result["status"] = r.status_code
            usage, done = None, False
            async for line in r.aiter_lines():
                if not line:
                    continue
                if kind == "cancel":
                    break  # leaving the block closes the connection mid-stream
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    done = True
                elif (msg := json.loads(data)).get("usage"):
                    usage = msg["usage"]
            complete = done and usage is not None and usage["completion_tokens"] == body["max_tokens"]
            result["ok"] = r.status_code == 200 and (kind == "cancel" or complete)
    else:
        r = await client.post(url + "/v1/completions", **kwargs)
        result["status"] = r.status_code
        if spec["expect"] == 200:
            usage = r.json().get("usage") if r.status_code == 200 else None
            result["ok"] = usage is not None and usage["completion_tokens"] == body["max_tokens"]
        else:
            result["ok"] = r.status_code == spec["expect"] and "error" in r.json()
    result["latency"] = time.perf_counter() - start
    return result


async def soak_round(url: str, specs: list[dict], clients: int, timeout: float) -> tuple[list[dict], float]:
    """`clients` workers, each sending one request at a time until `specs` run out."""
    queue: asyncio.Queue = asyncio.Queue()
    for spec in specs:
        queue.put_nowait(spec)
    results: list[dict] = []
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def worker():
            while not queue.empty():
                spec = queue.get_nowait()
                try:
                    results.append(await soak_one(client, url, spec))
                except Exception as e:  # a failure is a finding: count it, keep soaking
                    results.append({"kind": spec["kind"], "expect": spec["expect"], "ok": False, "status": repr(e)})

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return results, time.perf_counter() - start


def machine_line() -> str:
    """The CPU, its core count and the load before the run (on a shared machine, figures move with the load)."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown CPU",
    )
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"


def rss_mib(pid: int) -> float:
    """The process's resident memory (VmRSS in /proc/PID/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def scrape(url: str) -> dict[tuple, float]:
    from prometheus_client.parser import text_string_to_metric_families

    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {SOAK_KEY}"}, timeout=30)
    r.raise_for_status()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(r.text)
        for s in f.samples
    }


def wait_idle(url: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        health = httpx.get(url + "/health", timeout=10).json()
        if not health["active_rows"] and not health["waiting_rows"]:
            return health
        if time.time() > deadline:
            raise RuntimeError(f"the server is still busy after {timeout} s: {health}")
        time.sleep(0.2)


def soak(args, model: Path, context: int) -> int:
    proc, url = start_server(model, args.max_batch, max_queue=64, threads=args.threads, api_key=SOAK_KEY)
    problems, rows = [], []
    try:
        warm = soak_specs(64, context, seed=999)  # first-call costs and allocator warm-up out of the figures
        asyncio.run(soak_round(url, [s for s in warm if s["kind"] == "good"], args.clients, args.timeout))
        health = wait_idle(url)
        rss = [rss_mib(proc.pid)]
        for r in range(args.rounds):
            specs = soak_specs(args.requests, context, seed=r)
            before = scrape(url)
            results, wall = asyncio.run(soak_round(url, specs, args.clients, args.timeout))
            health_after = wait_idle(url)
            after = scrape(url)
            rss.append(rss_mib(proc.pid))
            good = [x for x in results if x["kind"] == "good"]
            latencies = sorted(x["latency"] for x in good)
            by_status: dict[str, int] = {}
            for x in results:
                by_status[str(x["status"])] = by_status.get(str(x["status"]), 0) + 1
            for x in results:
                if not x["ok"]:
                    problems.append(f"round {r + 1}: {x['kind']} got {x['status']} (expected {x['expect']})")
            counted = {
                dict(labels)["status"]: after[(name, labels)] - before.get((name, labels), 0)
                for name, labels in after
                if name == "gpt1_http_requests_total" and dict(labels).get("endpoint") == "/v1/completions"
            }
            counted = {k: int(v) for k, v in counted.items() if v}
            if counted != {k: v for k, v in by_status.items() if k.isdigit()}:
                problems.append(f"round {r + 1}: /metrics counted {counted}, the clients saw {by_status}")
            cancels = sum(x["kind"] == "cancel" for x in results)
            cancelled = health_after["requests_cancelled"] - health["requests_cancelled"]
            health = health_after
            rows.append(
                {
                    "round": r + 1,
                    "requests": len(results),
                    "good": f"{sum(x['ok'] for x in good)}/{len(good)}",
                    "p50": statistics.median(latencies),
                    "p95": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
                    "statuses": " ".join(f"{k}:{v}" for k, v in sorted(by_status.items())),
                    "cancelled": f"{cancelled}/{cancels}",
                    "rss": f"{rss[-2]:.0f} -> {rss[-1]:.0f}",
                    "wall": wall,
                }
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    head = ("round", "requests", "well-formed done", "p50 s", "p95 s", "answers by status", "hang-ups cancelled",
            "RSS MiB", "wall s")  # fmt: skip
    print("\n| " + " | ".join(head) + " |")
    print("|" + "|".join("-" * (len(h) + 2) for h in head) + "|")
    for row in rows:
        print(
            f"| {row['round']} | {row['requests']} | {row['good']} | {row['p50']:.3f} | {row['p95']:.3f} | "
            f"{row['statuses']} | {row['cancelled']} | {row['rss']} | {row['wall']:.1f} |"
        )
    growth = rss[-1] - rss[1] if len(rss) > 2 else rss[-1] - rss[0]
    print(
        f"\nresident memory: {' -> '.join(f'{m:.1f}' for m in rss)} MiB (after warm-up, then after each round); "
        f"growth after round 1: {growth:+.1f} MiB"
    )
    for p in problems[:50]:
        print("PROBLEM:", p)
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more")
    return 1 if problems else 0


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
    ap.add_argument("--soak", action="store_true", help="the soak: malformed, cancelled and over-context requests too")
    ap.add_argument("--requests", type=int, default=2000, help="soak requests per round (default 2000)")
    ap.add_argument("--rounds", type=int, default=2, help="soak rounds, memory read after each (default 2)")
    args = ap.parse_args()
    if not 1 <= args.clients <= 256:
        ap.error(f"--clients {args.clients} is out of range; use 1..256.")
    if args.quick:
        args.preset, args.max_tokens = "tiny", 16
    if args.soak:
        if args.requests < 50 or args.rounds < 1:
            ap.error(f"--requests {args.requests} / --rounds {args.rounds}: use at least 50 requests and 1 round.")
        if args.preset == "small" and not args.model:
            args.preset = "tiny"  # the soak is about the server, not the model: the smallest one
        with tempfile.TemporaryDirectory() as tmp:
            model = Path(args.model) if args.model else make_model(args.preset, Path(args.tokenizer), Path(tmp) / "m")
            context = json.loads((model / "config.json").read_text())["n_positions"]
            print(
                f"soak: model {args.model or f'preset {args.preset} (random weights)'}, context {context}; "
                f"{args.rounds} round(s) x {args.requests} requests from {args.clients} concurrent clients on "
                f"127.0.0.1, max batch {args.max_batch}\nmachine: {machine_line()}"
            )
            return soak(args, model, context)
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
