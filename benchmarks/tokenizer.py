"""Tokenizer throughput: gpt1.Tokenizer vs HF's slow OpenAIGPTTokenizer (the reference, same ids) on book paragraphs
and jokes, and `gpt1 prepare` on all the shared books.

Usage:
    python benchmarks/tokenizer.py            # every paragraph of the shared books, every joke (a few minutes)
    python benchmarks/tokenizer.py --quick    # a quarter of the books, half the jokes (about a minute)
    python benchmarks/tokenizer.py --prepare  # `gpt1 prepare` on all the shared books, --num-proc 1 and 2
Each corpus is encoded once, text by text, by a fresh instance of each tokenizer (empty caches, built before the
clock starts), in one process; the ids must be identical. Figures are wall-clock MB/s and MB per CPU-second of this
process (the ratio that stays meaningful when the machine is shared); the ratio is against HF slow.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate import cpu_flags  # noqa: E402  (the other benchmarks' CPU feature line)
from gpt1.tokenizer.bpe import Tokenizer  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def book_paragraphs(folder: Path, every_book: int = 1) -> list[str]:
    """The paragraphs (blank-line separated, hard-wrapped lines kept) of every `every_book`-th shared book."""
    out = []
    for book in sorted(folder.glob("*.txt"))[::every_book]:
        out += [p for p in re.split(r"\n\s*\n", book.read_text(encoding="utf-8")) if p.strip()]
    return out


def jokes(folder: Path) -> list[str]:
    with open(folder / "shortjokes_train.csv", encoding="utf-8", newline="") as f:
        return [row["Joke"] for row in csv.DictReader(f)]


def measure(encode, texts: list[str]) -> tuple[list[bytes], float, float]:
    """(ids of each text, wall seconds, CPU seconds of this process) for encoding each text once. The ids are kept as
    bytes, as `gpt1 prepare` writes them, not as lists: a million lists kept alive would make the garbage collector's
    full passes (whose timing depends on all that came before) a large, random part of either tokenizer's time."""
    gc.collect()  # each tokenizer starts from the same heap
    wall, cpu = time.perf_counter(), time.process_time()
    ids = [array("l", encode(t)).tobytes() for t in texts]
    return ids, time.perf_counter() - wall, time.process_time() - cpu


def compare(name: str, texts: list[str], vocab: Path) -> dict:
    from transformers import OpenAIGPTTokenizer

    files = {"vocab_file": str(vocab / "encoder_bpe_40000.json"), "merges_file": str(vocab / "vocab_40000.bpe")}
    hf = OpenAIGPTTokenizer(**files)
    ours = Tokenizer.from_pretrained(vocab)
    ours._reset_caches()  # empty caches; spaCy's tokenizer and the Rust BPE built first, as HF builds its own
    ours._pre._tokenizer()
    ours._rust_tokenizer()
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    ref_ids, ref_wall, ref_cpu = measure(hf.encode, texts)
    our_ids, our_wall, our_cpu = measure(ours.encode, texts)
    same = sum(a == b for a, b in zip(ref_ids, our_ids))
    assert same == len(texts), f"{name}: {len(texts) - same} of {len(texts)} texts got different ids from HF"
    return {
        "name": name,
        "texts": len(texts),
        "mb": mb,
        "rows": [("HF slow (reference)", ref_wall, ref_cpu), ("gpt1 Tokenizer", our_wall, our_cpu)],
        "words": len(ours._cache),
    }


def run_prepare(books: Path, vocab: Path, num_proc: int) -> tuple[float, float]:
    """(wall seconds, peak resident MiB of the largest process) of `gpt1 prepare` on `books` in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "gpt1", "prepare", "--data", str(books), "--out", out + "/c"]
        command += ["--tokenizer", str(vocab), "--num-proc", str(num_proc)]
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every 4th book and half the jokes (about a minute)")
    parser.add_argument("--prepare", action="store_true", help="time `gpt1 prepare` on all the shared books instead")
    parser.add_argument("--copies", type=int, default=1, help="with --prepare: the books this many times over")
    parser.add_argument("--data", type=Path, default=SHARED, help="the shared data folder")
    args = parser.parse_args()
    vocab, books = args.data / "gpt1-vocab", args.data / "gutenberg-books"
    print(f"CPU flags: {cpu_flags()}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    if args.prepare:
        with tempfile.TemporaryDirectory() as copies:
            if args.copies > 1:  # a bigger corpus: the same books under other names (words repeat, as in any corpus)
                for k in range(args.copies):
                    for f in books.glob("*.txt"):
                        shutil.copy(f, Path(copies) / f"copy{k}_{f.name}")
            source = Path(copies) if args.copies > 1 else books
            size = sum(f.stat().st_size for f in source.glob("*.txt")) / 1e6
            print(f"gpt1 prepare on {books} x {args.copies} ({size:.1f} MB):")
            walls = {}
            for num_proc in (1, 2):
                walls[num_proc], peak = run_prepare(source, vocab, num_proc)
                print(
                    f"  --num-proc {num_proc}: {walls[num_proc]:6.1f} s wall, {size / walls[num_proc]:5.2f} MB/s, peak RSS {peak:.0f} MiB"
                )
            print(f"  --num-proc 2 vs 1: {walls[1] / walls[2]:.2f}x")
        return
    all_jokes = jokes(args.data / "short-jokes")
    corpora = [
        ("book paragraphs", book_paragraphs(books, 4 if args.quick else 1)),
        ("jokes", all_jokes[: len(all_jokes) // 2] if args.quick else all_jokes),
    ]
    results = [compare(name, texts, vocab) for name, texts in corpora]
    print(
        f"{'corpus':16} {'tokenizer':22} {'texts':>7} {'MB':>6} {'wall s':>7} {'MB/s':>6} {'MB/cpu-s':>8} {'x HF':>5}"
    )
    for r in results:
        _, ref_wall, ref_cpu = r["rows"][0]
        for label, wall, cpu in r["rows"]:
            print(
                f"{r['name']:16} {label:22} {r['texts']:7d} {r['mb']:6.2f} {wall:7.2f} {r['mb'] / wall:6.2f} "
                f"{r['mb'] / cpu:8.2f} {ref_cpu / cpu:5.1f}"
            )
        print(f"{'':16} ids identical on all {r['texts']} texts; {r['words']:,} distinct words cached")
    print("x HF = HF's CPU seconds / gpt1's CPU seconds, same texts, same process")


if __name__ == "__main__":
    main()
