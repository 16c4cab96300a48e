"""Learned GPT-1-style vocabularies: deterministic to the byte, a line-break symbol like GPT-1's, and
`gpt1 prepare --vocab-size` learning one beside the shards so pre-training runs offline."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gpt1 import Tokenizer
from gpt1.recipes.demo import demo_jokes
from gpt1.tokenizer.learn_bpe import NEWLINE, learn_bpe, train_tokenizer
from shared_data import require_shared

LEARN = """
import sys
from gpt1.tokenizer.learn_bpe import train_tokenizer
from gpt1.recipes.demo import demo_jokes
train_tokenizer(demo_jokes(), 700, special_tokens=["<|endoftext|>"]).save_pretrained(sys.argv[1])
"""


def _digest(folder: Path) -> str:
    return hashlib.sha256(b"".join((folder / f).read_bytes() for f in ("vocab.json", "merges.txt"))).hexdigest()


def test_same_texts_give_the_same_files_in_every_process(tmp_path):
    """A process with another hash seed (Python's set and dict order of strings changes with it) writes the same
    vocabulary byte for byte as this one; `tokenizers`' own trainer did not (ties broken in hash-map order)."""
    out = tmp_path / "other"
    seed = "1" if os.environ.get("PYTHONHASHSEED") != "1" else "2"
    subprocess.run(
        [sys.executable, "-c", LEARN, str(out)], env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=300
    )
    here = tmp_path / "here"
    train_tokenizer(demo_jokes(), 700, special_tokens=["<|endoftext|>"]).save_pretrained(here)
    assert _digest(here) == _digest(out)


def test_line_breaks_have_their_own_symbol_as_in_gpt1():
    tok = train_tokenizer(demo_jokes(), 600)
    nl = tok.token_to_id(NEWLINE)
    assert nl != tok.unk_id
    ids = tok.encode("a dog\nand a cat\n\nthe end")
    assert ids.count(nl) >= 2 and tok.unk_id not in ids
    pieces = tok.tokenize("dog\ncat")
    assert "".join(pieces) == "dog</w>" + NEWLINE + "cat</w>" and NEWLINE in pieces


def test_learn_bpe_merges_the_most_frequent_pair_and_breaks_ties_by_the_pair():
    vocab, merges = learn_bpe({"ab": 5, "cd": 5, "abab": 1}, 20)
    assert merges[0] == ("a", "b</w>")  # counts: (a, b</w>) 6, (c, d</w>) 5, (a, b) 1, (b, a) 1
    _, merges = learn_bpe({"cd": 3, "ab": 3}, 20)
    assert merges[:2] == [("a", "b</w>"), ("c", "d</w>")]  # a tie: the smaller pair first, whatever the order given
    assert vocab["<unk>"] == 0 and vocab[NEWLINE] == 1
    assert all(a + b in vocab for a, b in merges)
    with pytest.raises(ValueError, match="too small"):
        learn_bpe({"ab": 1}, 4)


def test_hard_wrapped_book_text_encodes_without_unk():
    book = require_shared("data", "gutenberg-books", "pg35_the_time_machine.txt").read_text(encoding="utf-8")
    tok = train_tokenizer([book], 2000)
    ids = tok.encode(book[:20000])
    assert tok.unk_id not in ids
    assert ids.count(tok.token_to_id(NEWLINE)) > 100  # one per hard line break, as GPT-1's id 40477


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "gpt1", *args], env=env, capture_output=True, text=True, timeout=600)


def test_prepare_vocab_size_learns_a_tokenizer_and_pretraining_uses_it_offline(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    for i, joke in enumerate(demo_jokes()[:120]):
        (books / f"{i:03d}.txt").write_text(joke + "\nand then\nsome more words.\n")
    corpus = tmp_path / "corpus"
    r = _cli("prepare", "--data", str(books), "--out", str(corpus), "--vocab-size", "500", "--num-proc", "1")
    assert r.returncode == 0, r.stderr
    meta = json.loads((corpus / "meta.json").read_text())
    tok = Tokenizer.from_pretrained(corpus)
    assert meta["learned_vocab_size"] == 500 and meta["vocab_size"] == len(tok) == 501  # + <|endoftext|>
    train = np.fromfile(corpus / "train.bin", dtype=meta["dtype"])
    assert tok.unk_id not in train.tolist() and tok.token_to_id(NEWLINE) in train.tolist()
    p = np.bincount(train) / len(train)
    assert meta["unigram_entropy"] == pytest.approx(float(-(p[p > 0] * np.log(p[p > 0])).sum()))
    before = _digest(corpus)
    r = _cli("prepare", "--data", str(books), "--out", str(corpus), "--vocab-size", "500", "--num-proc", "1")
    assert r.returncode == 0 and "reusing token shards" in r.stdout and _digest(corpus) == before

    env_offline = {"HF_HUB_OFFLINE": "1"}
    os.environ.update(env_offline)
    r = _cli(
        "pretrain",
        "--data",
        str(corpus),
        "--preset",
        "tiny",
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--batch-tokens",
        "256",
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["vocab_size"] == 501

    r = _cli("prepare", "--data", str(books), "--out", str(tmp_path / "x"), "--vocab-size", "500", "--tokenizer", "t")
    assert r.returncode == 2 and "cannot be combined with --tokenizer" in r.stderr and "Traceback" not in r.stderr
    r = _cli("prepare", "--data", str(books), "--out", str(tmp_path / "x"), "--vocab-size", "3")
    assert r.returncode == 2 and "--vocab-size 3 is too small" in r.stderr
