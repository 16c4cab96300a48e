"""Pre-training corpora: text → GPT-1 token ids → flat `train.bin` / `val.bin` shards, and a resumable block sampler.

`prepare_corpus` reads text files (one document per file), JSONL/CSV/Parquet records (one document per record) or a
`datasets` hub name, tokenizes in parallel, ends every document with the document-end token `<|endoftext|>` (GPT-1's
vocabulary has none, so it is added as special token 40478) and writes the ids as raw `uint16` arrays plus a
`meta.json` of counts, the tokenizer's fingerprint and the source files' sizes and mtimes; a re-run with the same
inputs reuses the shards. It streams: text files are read a piece at a time and ids are appended to the shards as
each chunk of pieces is tokenized, so memory is bounded by the chunk, whatever the corpus size. `BlockSampler` then
draws contiguous `n_positions`-token blocks at random from the memmap, as in the paper, each process of a DDP run
reading its own blocks.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt1.data.batching import EpochPlan
from gpt1.data.readers import expand_paths, load_records, read_json, require_column
from gpt1.runtime import dist_env

EOT_TOKEN = "<|endoftext|>"  # the same string GPT-2 uses; the LM fine-tuning code appends the same token
META_FILE = "meta.json"
FORMAT = "gpt1-corpus-v1"
PIECE_CHARS = 1 << 16  # long documents are cut at line breaks into ~64 KB pieces: parallel work units
CHUNK_CHARS = 1 << 23  # pieces are tokenized ~8 MB of text at a time: what bounds memory
_READ_CHARS = 1 << 20  # text files are read this much at a time
_COUNT_BLOCK = 1 << 22  # tokens counted at a time for the unigram entropy
_TEXT_SUFFIXES = {".txt", ".text", ".md", ""}
_TRAILING_WS = re.compile(r"\s*")
logger = logging.getLogger(__name__)  # progress messages; the CLI shows them


# ---- reading documents -------------------------------------------------------------------------------------
def _describe_sources(sources: Sequence[str | Path]) -> tuple[list[dict[str, Any]], list[Path] | None]:
    """Each local file with its size and mtime (so a re-run can tell the input is unchanged), or the hub name."""
    local = [s for s in sources if Path(s).expanduser().exists()]
    if not local:
        name = str(sources[0])
        if len(sources) != 1 or name.startswith((".", "/", "~")) or Path(name).suffix:
            raise FileNotFoundError(f"{name}: no such file or folder.")
        return [{"hub": name}], None
    if len(local) != len(sources):
        missing = next(s for s in sources if not Path(s).expanduser().exists())
        raise FileNotFoundError(f"{missing}: no such file or folder.")
    files = expand_paths(sources)
    return [{"path": str(f.resolve()), "size": f.stat().st_size, "mtime": f.stat().st_mtime_ns} for f in files], files


def iter_documents(sources: Sequence[str | Path], text_column: str = "text", split: str = "train") -> Iterator[str]:
    """Documents in order: each plain-text file whole, or each record's `text_column` (JSONL/CSV/Parquet/hub).

    Files are found and the column checked now, so bad input fails before any work starts.
    """
    pieces = iter_document_pieces(sources, text_column, split)
    return ("".join(parts) for parts in pieces)


def iter_document_pieces(
    sources: Sequence[str | Path], text_column: str = "text", split: str = "train", piece_chars: int = PIECE_CHARS
) -> Iterator[Iterator[str]]:
    """For each document in order, its `split_pieces`, read lazily: a text file a megabyte at a time, records a
    batch at a time, so no document or column is ever held whole."""
    _, files = _describe_sources(sources)
    if files is not None and all(f.suffix.lower() in _TEXT_SUFFIXES for f in files):
        return (_file_pieces(f, piece_chars) for f in files)
    ds = load_records(list(sources), split=split)
    require_column(ds, text_column, sources[0] if len(sources) == 1 else "the data")

    def records() -> Iterator[Iterator[str]]:
        for batch in ds.iter(batch_size=1024):
            for text in batch[text_column]:
                if text is not None:
                    yield iter(split_pieces(str(text), piece_chars))

    return records()


def _file_pieces(path: Path, piece_chars: int) -> Iterator[str]:
    """`split_pieces(path.read_text(...))`, reading the file a chunk at a time (undecodable bytes replaced, so one
    stray byte never stops a corpus; universal newlines, as read_text)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        buffer, start, done = "", 0, False
        while True:
            # Cut as split_pieces does; a cut needs the whole whitespace run after the line break in the buffer.
            j = buffer.find("\n", start + piece_chars) if len(buffer) - start > piece_chars else -1
            end = _TRAILING_WS.match(buffer, j).end() if j >= 0 else -1
            if j >= 0 and (end < len(buffer) or done):
                if buffer[start:end].strip():
                    yield buffer[start:end]
                start = end
                continue
            if done:
                if buffer[start:].strip():
                    yield buffer[start:]
                return
            more = f.read(_READ_CHARS)
            done = not more
            buffer, start = buffer[start:] + more, 0


def split_pieces(text: str, piece_chars: int = PIECE_CHARS) -> list[str]:
    """Cut `text` into pieces of about `piece_chars`, each (but the last) ending in a whitespace run with a newline.

    Cutting only inside whitespace that holds a line break means no word is split, and encoding the pieces one by
    one and joining them with the newline token gives exactly the ids of encoding the whole text.
    """
    pieces, start, n = [], 0, len(text)
    while start < n:
        if n - start <= piece_chars:
            pieces.append(text[start:])
            break
        j = text.find("\n", start + piece_chars)
        if j < 0:
            pieces.append(text[start:])
            break
        end = _TRAILING_WS.match(text, j).end()
        pieces.append(text[start:end])
        start = end
    return [p for p in pieces if p.strip()] or ([text] if text.strip() else [])


# ---- prepare --------------------------------------------------------------------------------------------------
def prepare_corpus(
    sources: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    tokenizer,
    *,
    text_column: str = "text",
    val_fraction: float = 0.005,
    num_proc: int = 1,
    seed: int = 1234,
    split: str = "train",
    progress: bool = True,
    force: bool = False,
    vocab_size: int | None = None,
) -> dict[str, Any]:
    """Tokenize `sources` into `out_dir/{train,val}.bin` + `meta.json` (+ the tokenizer, with `<|endoftext|>` added).

    With `vocab_size`, `tokenizer` must be None: a GPT-1-style BPE of that size is learned on the documents
    (`gpt1.tokenizer.learn_bpe`, deterministic) and saved beside the shards, so pre-training needs no vocabulary files.

    Pieces of text (whole short documents, ~64 KB stretches of long ones) go to validation with probability
    `val_fraction`, at least one when there are two or more. Returns the meta dict; if `out_dir` already holds shards
    made from the same files (same sizes and mtimes), tokenizer and settings, they are reused unless `force`.
    """
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    if not sources:
        raise ValueError("No data given: name at least one file, folder or dataset.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} is out of range; use a fraction in [0, 1), e.g. 0.005.")
    if num_proc < 1:
        raise ValueError(f"num_proc={num_proc!r} is invalid; use 1 or more worker processes.")
    described, _ = _describe_sources(sources)
    out = Path(out_dir)
    existing = read_meta(out) if (out / META_FILE).exists() else None
    if vocab_size is not None:
        tokenizer = _learned_tokenizer(
            sources, out, existing, vocab_size, described, text_column, split, num_proc, progress, force
        )
    tokenizer = _as_tokenizer(tokenizer)
    (eot_id,) = tokenizer.add_special_tokens([EOT_TOKEN])
    dtype = "uint16" if len(tokenizer) <= 1 << 16 else "uint32"
    settings = {
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "text_column": text_column,
        "split": split,
        "val_fraction": val_fraction,
        "seed": seed,
        "sources": described,
        "learned_vocab_size": vocab_size,
    }
    if existing is not None and not force and all(existing.get(k) == v for k, v in settings.items()):
        if _shards_intact(out, existing):
            if progress:
                logger.info(f"reusing token shards in {out} ({existing['train_tokens']:,} train tokens)")
            return existing

    out.mkdir(parents=True, exist_ok=True)
    newline = np.asarray(_newline_ids(tokenizer), dtype=dtype)
    eot = np.asarray([eot_id], dtype=dtype)
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "val": 0}
    n_docs = n_pieces = 0
    tmp = {s: out / f"{s}.bin.tmp" for s in ("train", "val")}
    t0 = time.time()
    documents = iter_document_pieces(sources, text_column, split)
    total = sum(d["size"] for d in described) if all("size" in d for d in described) else None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress, smoothing=0.1)
    with tmp["train"].open("wb") as f_train, tmp["val"].open("wb") as f_val, bar, _Encoder(tokenizer, num_proc) as enc:
        files = {"train": f_train, "val": f_val}
        for chunk in _chunks(_assigned_pieces(documents, rng, val_fraction)):
            # A piece ends with <|endoftext|> where its document ends or where the next piece of the document goes
            # to the other split, and with a newline where the text simply goes on.
            for (text, which, doc_last, goes_on), ids in zip(chunk, enc.map([p[0] for p in chunk])):
                arr = np.concatenate([ids.astype(dtype, copy=False), newline if goes_on else eot])
                files[which].write(arr.tobytes())
                counts[which] += len(arr)
                n_pieces += 1
                n_docs += doc_last
                bar.update(len(text.encode("utf-8")))
    if counts["train"] + counts["val"] == 0:
        for p in tmp.values():
            p.unlink(missing_ok=True)
        raise ValueError(f"{sources[0]}: the corpus holds no text (0 tokens); give files with some text in them.")
    if counts["val"] == 0 and val_fraction > 0 and n_pieces > 1:
        # No piece was drawn for validation: move the last stretch of the train shard over (whole pieces are gone).
        _move_tail_to_val(tmp["train"], tmp["val"], counts, dtype, val_fraction)
    for s in ("train", "val"):
        os.replace(tmp[s], out / f"{s}.bin")
    tokenizer.save_pretrained(out)
    entropy = unigram_entropy(np.memmap(out / "train.bin", dtype=dtype, mode="r")) if counts["train"] else None
    meta = {
        "format": FORMAT,
        "dtype": dtype,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "documents": n_docs,
        "pieces": n_pieces,
        "eot_token": EOT_TOKEN,
        "eot_id": eot_id,
        "vocab_size": len(tokenizer),
        "unigram_entropy": entropy,
        "seconds": round(time.time() - t0, 2),
        **settings,
    }
    _write_json(out / META_FILE, meta)  # written last: shards without a meta.json are never reused
    if progress:
        logger.info(
            f"wrote {out}: {counts['train']:,} train + {counts['val']:,} val tokens from {n_docs:,} documents "
            f"in {meta['seconds']:.1f}s"
        )
    return meta


def _learned_tokenizer(
    sources,
    out: Path,
    existing: dict | None,
    vocab_size: int,
    described,
    text_column: str,
    split: str,
    num_proc: int,
    progress: bool,
    force: bool,
):
    """The BPE learned on `sources` for `prepare_corpus(vocab_size=...)`: the one saved in `out` when it was learned
    from the same files with the same size, else a new one (deterministic, so relearning gives the same files)."""
    from gpt1.tokenizer.bpe import Tokenizer
    from gpt1.tokenizer.learn_bpe import check_vocab_size, train_tokenizer

    check_vocab_size(vocab_size)  # before the documents are read
    same = (
        existing is not None
        and existing.get("learned_vocab_size") == vocab_size
        and existing.get("sources") == described
    )
    if same and not force and (out / "vocab.json").is_file():
        return Tokenizer.from_pretrained(out)
    t0 = time.time()
    texts = list(iter_documents(sources, text_column, split))
    tokenizer = train_tokenizer(texts, vocab_size, num_proc=num_proc, progress=progress)
    if progress:
        logger.info(f"learned a {len(tokenizer):,}-entry BPE on {len(texts):,} documents in {time.time() - t0:.1f}s")
    return tokenizer


def unigram_entropy(tokens: np.ndarray) -> float:
    """Entropy in nats of the tokens' own frequencies: the loss of a model that predicts word frequencies and
    ignores context, the level a stalled language model sits at."""
    counts = np.zeros(0, dtype=np.int64)
    for start in range(0, len(tokens), _COUNT_BLOCK):  # in blocks: a memmap of billions of tokens is never copied
        part = np.bincount(np.asarray(tokens[start : start + _COUNT_BLOCK], dtype=np.int64))
        counts = np.pad(counts, (0, max(0, len(part) - len(counts))))
        counts[: len(part)] += part
    p = counts[counts > 0] / len(tokens)
    return float(-(p * np.log(p)).sum())


def _assigned_pieces(
    documents: Iterable[Iterator[str]], rng: np.random.Generator, val_fraction: float
) -> Iterator[tuple[str, str, bool, bool]]:
    """(piece, its split, is its document's last piece, does the text go on into the next piece of the same split),
    one random draw per piece in order."""
    for pieces in documents:
        piece = next(pieces, None)
        if piece is None:
            continue
        which = "val" if rng.random() < val_fraction else "train"
        for following in pieces:
            next_which = "val" if rng.random() < val_fraction else "train"
            yield piece, which, False, next_which == which
            piece, which = following, next_which
        yield piece, which, True, False


def _chunks(pieces: Iterator[tuple], chunk_chars: int | None = None) -> Iterator[list[tuple]]:
    """Consecutive pieces in lists of about `chunk_chars` characters of text (CHUNK_CHARS by default)."""
    limit = CHUNK_CHARS if chunk_chars is None else chunk_chars
    chunk: list[tuple] = []
    size = 0
    for piece in pieces:
        chunk.append(piece)
        size += len(piece[0])
        if size >= limit:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class _Encoder:
    """Encodes lists of texts to uint32 id arrays, in `num_proc` worker processes kept for the whole run (so their
    caches stay warm) when > 1; each list is sent whole, so the pool never reads ahead of one chunk."""

    def __init__(self, tokenizer, num_proc: int) -> None:
        self.tokenizer, self.num_proc, self.pool = tokenizer, num_proc, None

    def __enter__(self) -> _Encoder:
        if self.num_proc > 1:
            self.pool = multiprocessing.get_context("spawn" if os.name == "nt" else "fork").Pool(
                self.num_proc, _init_worker, (self.tokenizer,)
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            if exc[0] is None:
                self.pool.close()
            else:
                self.pool.terminate()
            self.pool.join()

    def map(self, texts: list[str]) -> Iterator[np.ndarray]:
        if self.pool is None:
            return (_ids_array(self.tokenizer.encode(t)) for t in texts)
        return self.pool.imap(_encode_in_worker, texts, chunksize=1)


def _ids_array(ids: list[int]) -> np.ndarray:
    return np.asarray(ids, dtype=np.uint32)  # pickles as one buffer, unlike a list of ints


_WORKER: Callable[[str], list[int]] | None = None


def _init_worker(tokenizer) -> None:
    global _WORKER
    _WORKER = tokenizer.encode


def _encode_in_worker(text: str) -> np.ndarray:
    assert _WORKER is not None
    return _ids_array(_WORKER(text))


def _move_tail_to_val(train_path: Path, val_path: Path, counts: dict, dtype: str, fraction: float) -> None:
    """Move the last `fraction` of the train shard's tokens to the (empty) val shard, a block at a time."""
    n = counts["train"]
    k = max(1, int(n * fraction))
    data = np.memmap(train_path, dtype=dtype, mode="r")
    with val_path.open("wb") as f:
        for start in range(n - k, n, 1 << 22):
            f.write(np.asarray(data[start : min(n, start + (1 << 22))]).tobytes())
    del data
    os.truncate(train_path, (n - k) * np.dtype(dtype).itemsize)
    counts["train"], counts["val"] = n - k, k


def _newline_ids(tokenizer) -> list[int]:
    """The ids a line break between two words becomes (GPT-1: the single token "\\n</w>")."""
    a, b, ab = tokenizer.encode("a"), tokenizer.encode("b"), tokenizer.encode("a\nb")
    return ab[len(a) : len(ab) - len(b)]


def _as_tokenizer(tokenizer):
    if isinstance(tokenizer, (str, Path)):
        from gpt1.tokenizer.bpe import Tokenizer

        return Tokenizer.from_pretrained(tokenizer)
    return tokenizer


def read_meta(corpus_dir: str | Path) -> dict[str, Any]:
    """The `meta.json` of a prepared corpus dir, with a clear error if it is missing or not ours."""
    path = Path(corpus_dir) / META_FILE
    try:
        meta = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{corpus_dir}: not a prepared corpus (no {META_FILE}); run `gpt1 prepare` first."
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); delete the folder and prepare again.") from e
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}; prepare the corpus again.")
    return meta


def is_prepared_corpus(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META_FILE).exists() and (p / "train.bin").exists()


def _shards_intact(out: Path, meta: dict) -> bool:
    size = np.dtype(meta["dtype"]).itemsize
    return all(
        (out / f"{s}.bin").exists() and (out / f"{s}.bin").stat().st_size == meta[f"{s}_tokens"] * size
        for s in ("train", "val")
    )


def load_tokens(corpus_dir: str | Path, split: str = "train") -> np.memmap:
    """The `split` shard of a prepared corpus as a read-only memmap (no copy in memory)."""
    meta = read_meta(corpus_dir)
    path = Path(corpus_dir) / f"{split}.bin"
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; prepare the corpus again.")
    if meta[f"{split}_tokens"] == 0:
        return np.zeros(0, dtype=meta["dtype"])  # np.memmap refuses empty files
    return np.memmap(path, dtype=meta["dtype"], mode="r")


# ---- sampling blocks -----------------------------------------------------------------------------------------------
class BlockSampler(EpochPlan):
    """Random contiguous `block_size`-token blocks from a token array: a `BatchSource` whose state is one integer.

    Each epoch picks a random phase in [0, block_size) and a random order of the non-overlapping blocks that start
    there, so one epoch covers the whole corpus but at most 2·block_size tokens, and block boundaries move between
    epochs. Global sample g of the run is block `perm_e[g mod n]` of epoch `e = g div n`; process `rank` of
    `world_size` takes samples (k·world_size + rank)·batch_size + i for its k-th micro-batch, so any split of the
    same global batch over processes and accumulation steps trains on the same blocks.
    """

    def __init__(
        self,
        tokens: np.ndarray | str | Path,
        block_size: int,
        batch_size: int,
        *,
        seed: int = 1234,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if isinstance(tokens, (str, Path)):
            tokens = load_tokens(tokens, "train")
        if block_size < 2 or batch_size < 1:
            raise ValueError(f"block_size={block_size} must be >= 2 and batch_size={batch_size} >= 1.")
        n = len(tokens)
        if n < block_size:
            raise ValueError(
                f"The corpus holds {n:,} tokens, fewer than one block of {block_size} (n_positions); "
                "give more text or use a model with a shorter context."
            )
        env_rank, env_world, _ = dist_env()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        self.tokens = tokens
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.max_phase = min(block_size - 1, n - block_size)
        self.n_blocks = (n - self.max_phase) // block_size
        self.steps_per_epoch = max(1, self.n_blocks // (self.world_size * batch_size))
        self.micro_batches = 0  # this process's micro-batches drawn so far

    def epoch_plan(self, epoch: int) -> tuple[int, np.ndarray]:
        """(phase, order of the blocks) of `epoch`."""
        rng = self.epoch_rng(epoch)
        phase = int(rng.integers(0, self.max_phase + 1))
        return phase, rng.permutation(self.n_blocks)

    def block_offsets(self, micro_batch: int) -> list[int]:
        """Token offsets of this process's `micro_batch`-th micro-batch."""
        first = (micro_batch * self.world_size + self.rank) * self.batch_size
        offsets = []
        for g in range(first, first + self.batch_size):
            epoch, j = divmod(g, self.n_blocks)
            phase, perm = self.plan(epoch)
            offsets.append(phase + int(perm[j]) * self.block_size)
        return offsets

    def next_batch(self) -> dict[str, torch.Tensor]:
        offsets = self.block_offsets(self.micro_batches)
        self.micro_batches += 1
        x = torch.from_numpy(np.stack([self.tokens[o : o + self.block_size] for o in offsets]).astype(np.int64))
        return {"input_ids": x, "labels": x}

    def state_dict(self) -> dict:
        # Samples drawn by all processes together: valid for every rank, and for a resume on another world size.
        return {
            "samples": self.micro_batches * self.world_size * self.batch_size,
            "seed": self.seed,
            "block_size": self.block_size,
            "n_tokens": int(len(self.tokens)),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("block_size", self.block_size) != self.block_size or state.get(
            "n_tokens", len(self.tokens)
        ) != len(self.tokens):
            raise ValueError(
                f"The checkpoint's data position is for blocks of {state.get('block_size')} tokens over "
                f"{state.get('n_tokens')} tokens, but this corpus gives blocks of {self.block_size} over "
                f"{len(self.tokens)}; resume with the same corpus and model context."
            )
        self.seed = int(state.get("seed", self.seed))
        self.forget_plan()
        per_micro = self.world_size * self.batch_size
        self.micro_batches = -(-int(state["samples"]) // per_micro)  # round up: never repeat a block


def val_batches(tokens: np.ndarray, block_size: int, batch_size: int, max_blocks: int | None = None) -> list[dict]:
    """Evaluation batches: non-overlapping blocks over the whole `tokens` (evenly spaced when capped at `max_blocks`).

    A validation shard shorter than one block is evaluated as a single shorter block.
    """
    n = len(tokens)
    if n < 2:
        return []
    if n < block_size:
        x = torch.from_numpy(np.asarray(tokens[:n], dtype=np.int64))[None]
        return [{"input_ids": x, "labels": x}]
    starts = np.arange(0, n - block_size + 1, block_size)
    if max_blocks is not None and len(starts) > max_blocks:
        starts = starts[np.linspace(0, len(starts) - 1, max_blocks).round().astype(int)]
    out = []
    for i in range(0, len(starts), batch_size):
        x = torch.from_numpy(
            np.stack([tokens[s : s + block_size] for s in starts[i : i + batch_size]]).astype(np.int64)
        )
        out.append({"input_ids": x, "labels": x})
    return out


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)
