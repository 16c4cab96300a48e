"""GPT-1's tokenizer: ftfy → text_standardize → spaCy → lowercase → BPE with `</w>`, the same ids as HF's slow one.

The reference is transformers 4.57's `OpenAIGPTTokenizer` with ftfy and spaCy installed (OpenAI's original
pipeline). It has two quirks we reproduce because every released GPT-1 id sequence went through them:
the whole text is lowercased *before* ftfy/spaCy, and a literal `<unk>` in the text becomes id 0 (`<unk>`).

The pre-tokenisation (lowercase, ftfy, text_standardize, spaCy) is gpt1.tokenizer.pretokenize's, shared with BPE
learning. It goes word by word, so the ids of each distinct whitespace-separated word are cached here: encoding
text made of words seen before is ftfy's fast path, a split at whitespace and one dict lookup per word.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
from array import array
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gpt1.tokenizer.pretokenize import UNK, PreTokenizer, text_standardize

__all__ = ["Tokenizer", "text_standardize"]

EOW = "</w>"
OPENAI_FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")
HF_FILES = ("vocab.json", "merges.txt")
ADDED_FILE = "added_tokens.json"
CONFIG_FILE = "tokenizer_config.json"
MODES = ("original", "bert")
_FINGERPRINT_VERSION = 1  # bump when the pipeline's rules change, so stored token shards are invalidated
_MAX_CACHE = 1 << 18  # distinct words kept before the caches are dropped (bounds memory on big corpora)
_NO_MERGE = 1 << 62  # rank of a pair that is not a merge
_IDS = "I" if array("I").itemsize >= 4 else "L"  # the array type cached ids are stored in (unsigned, >= 32 bits)


class Tokenizer:
    """GPT-1's BPE tokenizer, with special tokens (e.g. `_start_`) appended after the base vocabulary.

    mode="original" (the default) is OpenAI's pipeline, id-for-id HF's slow `OpenAIGPTTokenizer`. mode="bert" is the
    BERT-style pre-split (lowercase, strip accents, split punctuation) of HF's `OpenAIGPTTokenizerFast`: its ids
    differ on many texts from those GPT-1 was trained on, so use it only to match that tokenizer.
    """

    def __init__(
        self,
        vocab: dict[str, int],
        merges: Sequence[tuple[str, str]],
        special_tokens: Sequence[str] = (),
        mode: str = "original",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if sorted(vocab.values()) != list(range(len(vocab))):
            raise ValueError(f"vocab ids must be exactly 0..{len(vocab) - 1}, each used once")
        self.mode = mode
        self.encoder = dict(vocab)
        self.decoder = {i: t for t, i in vocab.items()}
        self.merges = [tuple(m) for m in merges]
        self.bpe_ranks = {m: i for i, m in enumerate(self.merges)}
        self.unk_id = self.encoder.get(UNK, 0)  # OpenAI's encoder has "<unk>": 0; their code mapped unknowns to 0
        self.special_tokens: dict[str, int] = {}
        self._special_list: list[str] = []  # the same tokens, indexed by id - len(vocab)
        self._pre = PreTokenizer()
        self._rust: Any = None
        self._rust_bpe: Any = None  # the Rust BPE's tokenize method
        self._reset_caches()
        self.add_special_tokens(list(special_tokens))

    # ---- loading and saving -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, mode: str | None = None) -> Tokenizer:
        """Load from a dir (OpenAI's encoder_bpe_40000.json + vocab_40000.bpe, or HF's vocab.json + merges.txt, plus
        any saved special tokens) or from a hub id like `openai-community/openai-gpt`."""
        path = Path(path_or_id)
        if not path.is_dir():
            path = _download(str(path_or_id))
        names = next((n for n in (HF_FILES, OPENAI_FILES) if all((path / f).is_file() for f in n)), None)
        if names is None:
            raise FileNotFoundError(f"{path} has neither {' + '.join(HF_FILES)} nor {' + '.join(OPENAI_FILES)}")
        vocab = json.loads((path / names[0]).read_text(encoding="utf-8"))
        merges = _read_merges(path / names[1])
        added = json.loads((path / ADDED_FILE).read_text(encoding="utf-8")) if (path / ADDED_FILE).is_file() else {}
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")) if (path / CONFIG_FILE).is_file() else {}
        specials = sorted(added, key=added.get)
        if [added[t] for t in specials] != list(range(len(vocab), len(vocab) + len(added))):
            raise ValueError(f"{path / ADDED_FILE} must number its tokens {len(vocab)}, {len(vocab) + 1}, ... in order")
        return cls(vocab, merges, specials, mode or config.get("gpt1_mode", "original"))

    def save_pretrained(self, directory: str | Path) -> None:
        """Write HF's files (vocab.json, merges.txt, added_tokens.json, ...), which HF's OpenAIGPTTokenizer reads."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        _write_json(out / HF_FILES[0], self.encoder, sort_keys=True)
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        (out / HF_FILES[1]).write_text("#version: 0.2\n" + merges, encoding="utf-8")
        specials = list(self.special_tokens)
        _write_json(out / "special_tokens_map.json", {"unk_token": UNK, "additional_special_tokens": specials})
        config = {
            "tokenizer_class": "OpenAIGPTTokenizer",
            "unk_token": UNK,
            "additional_special_tokens": specials,
            "model_max_length": 512,
            "clean_up_tokenization_spaces": False,
            "gpt1_mode": self.mode,
        }
        _write_json(out / CONFIG_FILE, config)
        if specials:
            _write_json(out / ADDED_FILE, self.special_tokens)
        else:
            (out / ADDED_FILE).unlink(missing_ok=True)

    # ---- vocabulary ---------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids, base vocabulary plus added special tokens."""
        return len(self.encoder) + len(self.special_tokens)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int:
        """Id of a vocabulary entry (e.g. "the</w>") or special token (e.g. "_start_")."""
        found = self.special_tokens.get(token, self.encoder.get(token))
        if found is None:
            raise KeyError(f"{token!r} is neither a vocabulary entry nor a special token")
        return found

    def id_to_token(self, token_id: int) -> str:
        """Vocabulary entry or special token for an id."""
        token = self._token_or_none(token_id)
        if token is None:
            raise KeyError(f"id {token_id} is outside 0..{self.vocab_size - 1}")
        return token

    def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
        """Append new special tokens after the vocabulary and return their ids; ones already added keep their id."""
        if isinstance(tokens, str):
            raise TypeError(f"add_special_tokens takes a list of strings, got the string {tokens!r}")
        for token in tokens:
            if not isinstance(token, str) or not token:
                raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
            if token in self.encoder:
                raise ValueError(f"{token!r} is already vocabulary entry {self.encoder[token]}; pick a new string")
            if token not in self.special_tokens:
                self.special_tokens[token] = self.vocab_size
                self._special_list.append(token)
        return [self.special_tokens[t] for t in tokens]

    def fingerprint(self) -> str:
        """Stable short hash of vocab, merges, special tokens and mode, to tag the token shards this tokenizer made."""
        state = [_FINGERPRINT_VERSION, self.mode, sorted(self.encoder.items()), self.merges, list(self.special_tokens)]
        return hashlib.sha256(json.dumps(state, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]

    # ---- encoding -----------------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; only base-vocabulary ids, never an added special token (callers insert those by id)."""
        if self.mode == "bert":
            return self._rust_tokenizer().encode(text, add_special_tokens=False).ids
        if len(self._cache) > _MAX_CACHE:
            self._reset_caches()
        cache, heads, tails, ids = self._cache, self._heads, self._tails, array(_IDS)
        for words in self._pre.segments(text):
            if words is None:
                ids.append(self.unk_id)
                continue
            found = b"".join(map(cache.__getitem__, words))  # `_new_word` splits a new word
            if not (heads.keys().isdisjoint(words) or tails.keys().isdisjoint(words)):
                runs = self._pre.runs(words, tails, heads)  # where a special case may match across a space
                if runs:
                    parts = [cache[w] for w in words]
                    for first, end in runs:
                        together = self._ids(self._pre.split_together(words[first:end]))
                        parts[first:end] = [together] + [b""] * (end - first - 1)
                    found = b"".join(parts)
            ids.frombytes(found)
        return ids.tolist()

    def encode_batch(self, texts: Iterable[str], num_proc: int = 1, progress: bool = False) -> list[list[int]]:
        """Encode many texts, in `num_proc` worker processes when > 1, with a tqdm bar when `progress`."""
        from tqdm.auto import tqdm

        if num_proc < 1:
            raise ValueError(f"num_proc must be >= 1, got {num_proc}")
        texts = list(texts)
        with tqdm(total=len(texts), disable=not progress, unit="text", desc="tokenizing") as bar:
            out = []
            if num_proc == 1 or len(texts) < 2 * num_proc:
                for text in texts:
                    out.append(self.encode(text))
                    bar.update()
                return out
            chunksize = max(1, min(1024, len(texts) // (8 * num_proc)))
            with multiprocessing.Pool(num_proc, _init_worker, (self,)) as pool:  # each worker gets its own caches
                for ids in pool.imap(_encode_in_worker, texts, chunksize=chunksize):
                    out.append(ids)
                    bar.update()
            return out

    def tokenize(self, text: str) -> list[str]:
        """BPE token strings of `text` (an unknown piece keeps its own string, as in HF; its id is `<unk>`'s)."""
        if self.mode == "bert":
            return self._rust_tokenizer().encode(text, add_special_tokens=False).tokens
        return [p for token in self._pre.tokens(text) for p in ([UNK] if token is None else self._bpe(token))]

    def _new_word(self, word: str) -> bytes:
        """Ids of a word not seen before, noting whether a special case may reach into it from a neighbour."""
        if self._pre.plain(word):
            return self._ids((word.lower(),))
        split = self._pre.split(word)
        if split.firsts:
            self._heads[word] = " ".join(split.firsts)
        if split.lasts:
            self._tails[word] = " ".join(split.lasts)
        return self._ids(split.tokens)

    def _ids(self, tokens: Sequence[str]) -> bytes:
        """The ids of `tokens`, as the bytes of an array of `_IDS`."""
        found = self._token_cache
        out = []
        for t in tokens:
            ids = found.get(t)
            if ids is None:
                ids = found[t] = array(_IDS, self._token_ids(t)).tobytes()
            out.append(ids)
        return out[0] if len(out) == 1 else b"".join(out)

    def _reset_caches(self) -> None:
        """Empty the caches; also drop spaCy, whose string store only grows."""
        # Values are bytes and strings, never tuples, so the garbage collector has nothing to walk in the caches.
        self._cache = _Cache(self._new_word)  # word of `PreTokenizer.segments` -> its ids (bytes of an array)
        self._heads: dict[str, str] = {}  # word a special case may reach into from the word before -> its firsts
        self._tails: dict[str, str] = {}  # ... from the word after -> its lasts
        self._token_cache: dict[str, bytes] = {}  # spaCy token -> its ids
        self._pre.reset()

    def _token_ids(self, token: str) -> tuple[int, ...]:
        """Ids of one spaCy token: `tokenizers`' Rust BPE makes the same merges as `_bpe` 10x faster (see the tests),
        except on the whitespace tokens OpenAI's `bpe` special-cases. (ftfy has replaced any lone surrogate.)"""
        if " " in token:
            return tuple(self.encoder.get(p, self.unk_id) for p in self._bpe(token))
        if self._rust_bpe is None:
            self._rust_bpe = self._rust_tokenizer().model.tokenize
        return tuple(t.id for t in self._rust_bpe(token))

    def _bpe(self, token: str) -> list[str]:
        """Apply the merges by rank, exactly as OpenAI's `bpe` (including its split on spaces and its newline fix)."""
        word = [*token[:-1], token[-1] + EOW]
        get_rank = self.bpe_ranks.get
        while len(word) > 1:
            rank = min(map(get_rank, zip(word, word[1:]), itertools.repeat(_NO_MERGE)))
            if rank == _NO_MERGE:
                break
            first, second = self.merges[rank]
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        joined = " ".join(word)
        return ["\n" + EOW] if joined == "\n  " + EOW else joined.split(" ")

    def _rust_tokenizer(self) -> Any:
        """The `tokenizers` pipeline of HF's OpenAIGPTTokenizerFast: its BPE serves both modes, the rest mode="bert"."""
        if self._rust is None:
            from tokenizers import Tokenizer as RustTokenizer
            from tokenizers import decoders, normalizers, pre_tokenizers
            from tokenizers.models import BPE

            rust = RustTokenizer(BPE(vocab=self.encoder, merges=self.merges, unk_token=UNK, end_of_word_suffix=EOW))
            rust.add_special_tokens([UNK])
            rust.normalizer = normalizers.BertNormalizer(lowercase=True)
            rust.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            rust.decoder = decoders.BPEDecoder(suffix=EOW)
            self._rust = rust
        return self._rust

    # ---- decoding -----------------------------------------------------------------------------------------------

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = True
    ) -> str:
        """Text for `ids`: the string HF 4.57's slow `decode` gives with these flags (unknown ids read as `<unk>`)."""
        parts: list[str] = []  # HF joins runs of ordinary tokens, and each added special on its own, with spaces
        run: list[str] = []
        for token_id in ids:
            token = self._token_or_none(int(token_id))
            token = UNK if token is None else token
            if skip_special_tokens and (token == UNK or token in self.special_tokens):
                continue
            if token in self.special_tokens:
                if run and (text := _join_pieces(run)):
                    parts.append(text)
                parts.append(token)
                run = []
            else:
                run.append(token)
        if run:
            parts.append(_join_pieces(run))
        text = " ".join(parts)
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def _token_or_none(self, token_id: int) -> str | None:
        if 0 <= token_id - len(self.encoder) < len(self._special_list):
            return self._special_list[token_id - len(self.encoder)]
        return self.decoder.get(token_id)

    # ---- pickling (for worker processes): drop the caches and the Rust object (the pre-tokenizer drops spaCy) -------

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_rust": None, "_rust_bpe": None}
        for name in ("_cache", "_heads", "_tails", "_token_cache"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_caches()

    def __repr__(self) -> str:
        specials = list(self.special_tokens)
        return f"Tokenizer(vocab_size={self.vocab_size}, special_tokens={specials}, mode={self.mode!r})"


class _Cache(dict):
    """A dict that computes a missing value with `compute(key)` and keeps it."""

    def __init__(self, compute: Any) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.compute(key)
        return value


def _join_pieces(pieces: list[str]) -> str:
    return "".join(pieces).replace(EOW, " ").strip()


def _clean_up_tokenization(text: str) -> str:
    """HF's clean-up of spaces before punctuation and English contractions."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """Merges from a `#version` header plus one "a b" pair per line (OpenAI's and HF's format are the same)."""
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = [tuple(line.split(" ")) for line in lines if line]
    bad = next((m for m in merges if len(m) != 2), None)
    if bad is not None:
        raise ValueError(f"{path} has a merge line {' '.join(bad)!r}; expected two symbols separated by one space")
    return merges  # type: ignore[return-value]


def _write_json(path: Path, obj: Any, sort_keys: bool = False) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=sort_keys) + "\n", encoding="utf-8")


def _download(repo_id: str) -> Path:
    """Fetch the tokenizer files of a hub repo into the local cache and return their folder."""
    if repo_id.count("/") > 1 or not repo_id.strip("/"):
        raise FileNotFoundError(f"{repo_id!r} is neither a directory nor a hub id like 'openai-community/openai-gpt'")
    from huggingface_hub import hf_hub_download

    from gpt1.hub import HubUnavailable, fetch

    def get(local: bool) -> str:
        folder = hf_hub_download(repo_id, HF_FILES[0], local_files_only=local)
        hf_hub_download(repo_id, HF_FILES[1], local_files_only=local)
        for optional in (ADDED_FILE, CONFIG_FILE):
            try:
                hf_hub_download(repo_id, optional, local_files_only=local)
            except Exception:  # these files are optional
                pass
        return str(Path(folder).parent)

    try:
        return fetch(repo_id, get)
    except HubUnavailable as e:
        raise HubUnavailable(
            repo_id,
            e.detail,
            f"tokenizer {repo_id}: no such directory, and no hub repo of that name to use: {e.detail}.",
        ) from None


_WORKER: Tokenizer | None = None


def _init_worker(tokenizer: Tokenizer) -> None:
    global _WORKER
    _WORKER = tokenizer


def _encode_in_worker(text: str) -> list[int]:
    assert _WORKER is not None
    return _WORKER.encode(text)
