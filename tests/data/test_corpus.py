"""Corpus pipeline: shard format round-trip, reuse, splits, block sampling coverage and resumability, bad input."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest

from gpt1.data.corpus import (
    EOT_TOKEN,
    BlockSampler,
    load_tokens,
    prepare_corpus,
    read_meta,
    split_pieces,
    val_batches,
)
from gpt1.tokenizer.bpe import Tokenizer
from shared_data import require_shared

WORDS = "the a cat sat on mat dog ran far away and then came back home to sleep".split()


def tiny_tokenizer(tmp_path: Path) -> Tokenizer:
    """A 56-token character-level BPE vocabulary (no merges): runs everywhere, no ../shared needed."""
    d = tmp_path / "tiny-tok"
    d.mkdir(exist_ok=True)
    toks = ["<unk>"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase + ".,"] + ["\n</w>"]
    (d / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(toks)}))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return Tokenizer.from_pretrained(d)


def random_text(rng: np.random.Generator, n_words: int, lines: int = 1) -> str:
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n_words)]
    per = max(1, n_words // lines)
    return "\n".join(" ".join(words[i : i + per]) + "." for i in range(0, n_words, per))


def write_docs(folder: Path, n: int, n_words: int = 60, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    docs = [random_text(rng, n_words, lines=3) for _ in range(n)]
    for i, doc in enumerate(docs):
        (folder / f"doc{i:03d}.txt").write_text(doc + "\n")
    return docs


# ---- prepare ------------------------------------------------------------------------------------------------
def test_shards_round_trip_documents_and_eot(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    docs = write_docs(tmp_path / "books", 5)
    meta = prepare_corpus(tmp_path / "books", tmp_path / "corpus", tok, val_fraction=0.0, progress=False)
    eot = tok.token_to_id(EOT_TOKEN)
    assert eot == 56 and meta["eot_id"] == eot and meta["vocab_size"] == 57
    expected = [i for doc in docs for i in tok.encode(doc) + [eot]]
    raw = np.fromfile(tmp_path / "corpus" / "train.bin", dtype=np.uint16)
    assert meta["dtype"] == "uint16" and raw.tolist() == expected
    assert load_tokens(tmp_path / "corpus").tolist() == expected
    assert meta["train_tokens"] == len(expected) and meta["val_tokens"] == 0 and meta["documents"] == 5
    assert [Path(s["path"]).name for s in meta["sources"]] == [f"doc{i:03d}.txt" for i in range(5)]
    assert all(s["size"] > 0 and s["mtime"] > 0 for s in meta["sources"])
    assert meta["tokenizer_fingerprint"] == tok.fingerprint()
    # the corpus dir carries the tokenizer, end-of-text token included
    assert Tokenizer.from_pretrained(tmp_path / "corpus").token_to_id(EOT_TOKEN) == eot


def test_long_documents_are_cut_without_changing_the_ids(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    text = random_text(np.random.default_rng(1), 3000, lines=200)
    pieces = split_pieces(text, piece_chars=500)
    assert len(pieces) > 10 and "".join(pieces) == text
    newline = tok.encode("a\nb")[1:-1]
    joined = [i for k, p in enumerate(pieces) for i in tok.encode(p) + (newline if k < len(pieces) - 1 else [])]
    assert joined == tok.encode(text)


def test_pieces_of_a_real_book_encode_like_the_whole_book():
    vocab = require_shared("data", "gpt1-vocab")
    book = require_shared("data", "gutenberg-books", "pg35_the_time_machine.txt")
    tok = Tokenizer.from_pretrained(vocab)
    text = book.read_text(encoding="utf-8")[:120_000]
    pieces = split_pieces(text, piece_chars=8_000)
    assert len(pieces) > 5
    joined = [i for k, p in enumerate(pieces) for i in tok.encode(p) + ([40477] if k < len(pieces) - 1 else [])]
    assert joined == tok.encode(text)


def test_val_split_partitions_the_tokens(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    docs = write_docs(tmp_path / "books", 40)
    meta = prepare_corpus(tmp_path / "books", tmp_path / "c", tok, val_fraction=0.25, num_proc=2, progress=False)
    train, val = load_tokens(tmp_path / "c", "train"), load_tokens(tmp_path / "c", "val")
    total = sum(len(tok.encode(d)) + 1 for d in docs)
    assert meta["val_tokens"] > 0 and meta["train_tokens"] > meta["val_tokens"]
    assert len(train) + len(val) == total
    eot = meta["eot_id"]
    assert (train == eot).sum() + (val == eot).sum() == 40  # every document ends exactly once, in one split


def test_rerun_reuses_shards_and_notices_changes(tmp_path, monkeypatch):
    tok = tiny_tokenizer(tmp_path)
    write_docs(tmp_path / "books", 3)
    prepare_corpus(tmp_path / "books", tmp_path / "c", tok, progress=False)
    before = (tmp_path / "c" / "train.bin").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("re-tokenized although nothing changed")

    monkeypatch.setattr(Tokenizer, "encode_batch", boom)
    prepare_corpus(tmp_path / "books", tmp_path / "c", tok, progress=False)
    assert (tmp_path / "c" / "train.bin").stat().st_mtime_ns == before
    monkeypatch.undo()
    (tmp_path / "books" / "doc001.txt").write_text("a new text.\n")
    meta = prepare_corpus(tmp_path / "books", tmp_path / "c", tok, progress=False)
    assert meta["sources"][1]["size"] == len("a new text.\n")
    assert meta["train_tokens"] + meta["val_tokens"] == sum(
        len(tok.encode(p.read_text())) + 1 for p in sorted((tmp_path / "books").iterdir())
    )


def test_jsonl_and_csv_records_are_documents(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    rows = [{"id": i, "body": f"dog number {'a' * (i + 1)} ran."} for i in range(4)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = prepare_corpus(tmp_path / "d.jsonl", tmp_path / "c", tok, text_column="body", val_fraction=0, progress=False)
    eot = meta["eot_id"]
    assert load_tokens(tmp_path / "c").tolist() == [i for r in rows for i in tok.encode(r["body"]) + [eot]]
    (tmp_path / "d.csv").write_text("body,label\nthe cat sat.,1\nthe dog ran.,0\n")
    meta = prepare_corpus(tmp_path / "d.csv", tmp_path / "c2", tok, text_column="body", val_fraction=0, progress=False)
    assert meta["documents"] == 2


# ---- bad input ---------------------------------------------------------------------------------------------
def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: no such file"):
        prepare_corpus(tmp_path / "nope.txt", tmp_path / "c", tiny_tokenizer(tmp_path), progress=False)


def test_missing_text_column_lists_the_columns(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"no column 'text'; the columns are: 'body'"):
        prepare_corpus(tmp_path / "d.jsonl", tmp_path / "c", tiny_tokenizer(tmp_path), progress=False)


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("\n\n  \n")
    with pytest.raises(ValueError, match="holds no text"):
        prepare_corpus(tmp_path / "empty", tmp_path / "c", tiny_tokenizer(tmp_path), progress=False)
    assert not (tmp_path / "c" / "meta.json").exists()


def test_corpus_shorter_than_a_block_is_a_clear_error():
    with pytest.raises(ValueError, match=r"holds 100 tokens, fewer than one block of 128"):
        BlockSampler(np.arange(100, dtype=np.uint16), block_size=128, batch_size=2, rank=0, world_size=1)


def test_bad_settings_name_the_value(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    write_docs(tmp_path / "b", 1)
    with pytest.raises(ValueError, match=r"val_fraction=1.5 is out of range"):
        prepare_corpus(tmp_path / "b", tmp_path / "c", tok, val_fraction=1.5)
    with pytest.raises(FileNotFoundError, match="not a prepared corpus"):
        read_meta(tmp_path)


def test_cli_prepare_errors_are_one_line(tmp_path, capsys):
    from gpt1.cli.verbs import main

    (tmp_path / "d.jsonl").write_text('{"body": "x"}\n')
    vocab = tmp_path / "vocab"
    tiny_tokenizer(tmp_path).save_pretrained(vocab)
    rc = main(["prepare", "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "c"), "--tokenizer", str(vocab)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("gpt1 prepare: error: ") and "no column 'text'" in err[-1]
    assert not any("Traceback" in line for line in err)
    rc = main(
        [
            "prepare",
            "--data",
            str(tmp_path / "d.jsonl"),
            "--out",
            str(tmp_path / "c"),
            "--tokenizer",
            str(vocab),
            "--text-column",
            "body",
            "--num-proc",
            "1",
        ]
    )
    assert (
        rc == 0 and read_meta(tmp_path / "c")["train_tokens"] + read_meta(tmp_path / "c")["val_tokens"] == 2
    )  # x</w>, eot


# ---- sampling ------------------------------------------------------------------------------------------------
def test_one_epoch_of_blocks_covers_the_corpus():
    n, T = 10_000, 64
    s = BlockSampler(np.arange(n, dtype=np.uint16) % 60_000, T, batch_size=4, seed=3, rank=0, world_size=1)
    offsets = [o for k in range(s.n_blocks // 4 + 1) for o in s.block_offsets(k)][: s.n_blocks]  # one epoch
    assert len(offsets) == len(set(offsets)) and all(o % T == offsets[0] % T for o in offsets)  # disjoint blocks
    covered = np.zeros(n, bool)
    for o in offsets:
        covered[o : o + T] = True
    assert covered.sum() >= n - 2 * T  # everything but the two ragged ends
    # the next epoch uses another phase and order, so block boundaries move
    assert len({s.plan(e)[0] for e in range(6)}) > 1


def test_batches_are_the_token_windows_and_labels():
    tokens = (np.arange(5000) % 1000).astype(np.uint16)
    s = BlockSampler(tokens, 32, batch_size=3, rank=0, world_size=1)
    offsets = s.block_offsets(0)
    batch = s.next_batch()
    assert batch["input_ids"].shape == (3, 32) and batch["input_ids"].dtype.is_floating_point is False
    for row, o in zip(batch["input_ids"], offsets):
        assert row.tolist() == tokens[o : o + 32].tolist()
    assert batch["labels"] is batch["input_ids"]


def test_sampler_resumes_exactly():
    tokens = np.arange(20_000, dtype=np.uint16)
    a = BlockSampler(tokens, 50, 4, seed=9, rank=0, world_size=1)
    first = [a.next_batch()["input_ids"] for _ in range(7)]
    b = BlockSampler(tokens, 50, 4, seed=9, rank=0, world_size=1)
    for _ in range(3):
        b.next_batch()
    c = BlockSampler(tokens, 50, 4, seed=0, rank=0, world_size=1)
    c.load_state_dict(json.loads(json.dumps(b.state_dict())))  # the state survives JSON
    assert all((c.next_batch()["input_ids"] == x).all() for x in first[3:])
    with pytest.raises(ValueError, match="same corpus"):
        BlockSampler(tokens[:10_000], 50, 4).load_state_dict(b.state_dict())


def test_ranks_split_the_same_global_batches():
    tokens = np.arange(30_000, dtype=np.uint16)
    single = BlockSampler(tokens, 40, 2, seed=5, rank=0, world_size=1)
    ranks = [BlockSampler(tokens, 40, 2, seed=5, rank=r, world_size=2) for r in range(2)]
    for step in range(5):  # one process with 2 micro-steps == two processes with 1 each
        one = sorted(single.block_offsets(2 * step) + single.block_offsets(2 * step + 1))
        two = [ranks[r].block_offsets(step) for r in range(2)]
        assert not set(two[0]) & set(two[1]) and sorted(two[0] + two[1]) == one
    assert ranks[1].steps_per_epoch == single.steps_per_epoch // 2


def test_val_batches_cover_and_cap():
    tokens = np.arange(1000, dtype=np.uint16)
    batches = val_batches(tokens, 100, 3)
    assert sum(b["input_ids"].shape[0] for b in batches) == 10
    assert np.concatenate([b["input_ids"].reshape(-1).numpy() for b in batches]).tolist() == list(range(1000))
    capped = val_batches(tokens, 100, 3, max_blocks=4)
    starts = [int(r[0]) for b in capped for r in b["input_ids"]]
    assert starts == [0, 300, 600, 900]
    assert val_batches(tokens[:50], 100, 3)[0]["input_ids"].shape == (1, 50)  # shorter than a block: one short block


# ---- streaming ---------------------------------------------------------------------------------------------
def test_files_are_read_in_the_pieces_split_pieces_cuts(tmp_path, monkeypatch):
    from gpt1.data import corpus

    monkeypatch.setattr(corpus, "_READ_CHARS", 97)  # reads end everywhere: inside words, line breaks, blank runs
    rng = np.random.default_rng(5)
    lines = random_text(rng, 4000, lines=300).split("\n")
    text = "".join(line + str(rng.choice(["\n", "\n\n  \n", " \r\n", "\n\t"])) for line in lines)
    path = tmp_path / "book.txt"
    path.write_bytes(text.encode("utf-8") + b"\xff tail")
    expected = split_pieces(path.read_text(encoding="utf-8", errors="replace"), 500)
    assert len(expected) > 10 and list(corpus._file_pieces(path, 500)) == expected


def test_prepare_memory_is_bounded_by_the_chunk(tmp_path, monkeypatch):
    """A corpus 15x larger (one file of many chunks) peaks at about the same memory as the small one."""
    import tracemalloc

    from gpt1.data import corpus

    monkeypatch.setattr(corpus, "CHUNK_CHARS", 1 << 16)
    monkeypatch.setattr(corpus, "_READ_CHARS", 1 << 15)
    monkeypatch.setattr(corpus, "_COUNT_BLOCK", 1 << 14)
    tok = tiny_tokenizer(tmp_path)
    rng = np.random.default_rng(6)
    block = "\n".join(random_text(rng, 2000, lines=100) for _ in range(6))  # ~70 KB
    tok.encode(block)  # the tokenizer's caches are filled before measuring: they are bounded by distinct words
    peaks, sizes = {}, {}
    for scale in (4, 60):
        folder = tmp_path / f"x{scale}"
        folder.mkdir()
        (folder / "book.txt").write_text("\n".join([block] * scale))
        sizes[scale] = (folder / "book.txt").stat().st_size
        tracemalloc.start()
        meta = prepare_corpus(folder, tmp_path / f"c{scale}", tok, val_fraction=0.01, progress=False)
        peaks[scale] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert meta["train_tokens"] + meta["val_tokens"] > sizes[scale] // 4
    assert sizes[60] > 10 * sizes[4] and sizes[60] > 2 << 20
    assert peaks[60] < 1.2 * peaks[4], (peaks, sizes)  # reading the big file whole would add its 3 MB
