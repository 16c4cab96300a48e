"""The one place data files are read: tabular or text records from local files or the `datasets` hub, plain
tables (CSV/TSV/JSON/JSONL) and JSON files, and whole text files, with clear errors for missing files and columns."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # RACE articles and long premises exceed csv's 128 KiB default

# File suffix → the `datasets` builder that reads it.
_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def expand_paths(sources: Sequence[str | Path]) -> list[Path]:
    """Files named directly or found (recursively, sorted) inside named folders."""
    files: list[Path] = []
    for src in sources:
        p = Path(src).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in _BUILDERS)
            if not found:
                raise ValueError(f"{p}: folder holds no {'/'.join(sorted(_BUILDERS))} files.")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder.")
    return files


def load_records(source: str | Path | Sequence[str | Path], split: str = "train"):
    """A `datasets.Dataset` from local file(s)/folder(s) (CSV, TSV, JSON/JSONL, Parquet, text) or a hub dataset name.

    Text files give one record per line in column `text`. A name that is not a local path is passed to
    `datasets.load_dataset(name, split=split)` (online, or from the local `datasets` cache).
    """
    import datasets

    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise ValueError("No data given: name at least one file, folder or dataset.")
    local = [s for s in sources if Path(s).expanduser().exists()]
    if not local:
        if len(sources) != 1:
            raise FileNotFoundError(f"{sources[0]}: no such file or folder.")
        name = str(sources[0])
        if name.startswith((".", "/", "~")) or Path(name).suffix.lower() in _BUILDERS:
            raise FileNotFoundError(f"{name}: no such file or folder.")
        try:
            return load_hub((name,), split)
        except Exception as e:
            raise ValueError(f"{name}: not a local file and could not be loaded as a hub dataset ({e}).") from e
    files = expand_paths(sources)
    kinds = {_BUILDERS.get(f.suffix.lower(), "text") for f in files}
    if len(kinds) > 1:
        raise ValueError(f"Mixed file types ({', '.join(sorted(kinds))}); give files of one kind at a time.")
    kind = kinds.pop()
    kwargs = {"delimiter": "\t", "quoting": 3} if all(f.suffix.lower() == ".tsv" for f in files) else {}
    try:
        with _quiet_datasets(sum(f.stat().st_size for f in files)):
            return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:
        problem = diagnose_files(files, kind)  # say what is wrong with the file, not what went wrong inside datasets
        if problem is not None:
            raise ValueError(problem) from e
        raise ValueError(f"{files[0]}: could not be read as {kind} ({type(e).__name__}: {e}).") from e


_QUIET_BYTES = 64 << 20  # files this small load in about a second: their "Generating train split" bar is noise


@contextlib.contextmanager
def _quiet_datasets(total_bytes: int):
    """No `datasets` log lines (its readers log each failure on stderr before raising) and, for small inputs, no
    progress bar, so a bad file ends in one message; both settings are put back afterwards."""
    from datasets.utils import logging as ds_logging

    level = ds_logging.get_verbosity()
    bar = ds_logging.is_progress_bar_enabled()
    ds_logging.set_verbosity(logging.CRITICAL)
    if total_bytes < _QUIET_BYTES:
        ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if bar:
            ds_logging.enable_progress_bar()


def diagnose_files(files: Sequence[Path], kind: str) -> str | None:
    """What is wrong with the first unusable file ("empty", "not UTF-8 ...", "a header but no rows"), or None."""
    for f in files:
        if f.stat().st_size == 0:
            return f"{f}: the file is empty."
        problem = utf8_problem(f)
        if problem is not None:
            return f"{f}: {problem}."
        if kind == "csv":
            lines = [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(lines) <= 1:
                return f"{f}: has a header line but no rows."
        if kind == "text" and not f.read_text(encoding="utf-8").strip():
            return f"{f}: holds only blank lines; there is no text."
    return None


def utf8_problem(path: Path) -> str | None:
    """None if `path` is valid UTF-8, else where it is not, e.g. "not UTF-8 (byte 0xe9 at offset 3)"."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); convert it to UTF-8 first"
    return None


def read_text_file(path: str | Path, what: str = "") -> str:
    """The UTF-8 text of `path`, with one clear error for a missing file, a directory or another encoding.

    `what` (e.g. "--prompt-file") starts the message, so the CLI's errors name the flag.
    """
    p = Path(path).expanduser()
    name = f"{what} {path}" if what else str(path)
    if p.is_dir():
        raise ValueError(f"{name}: a directory, not a file.")
    if not p.is_file():
        raise FileNotFoundError(f"{name}: no such file.")
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{name}: not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); convert it to UTF-8 first."
        ) from None


def load_hub(args: Sequence[str], split: str):
    """`datasets.load_dataset(*args, split=split)`: a named hub dataset (online, or from the local `datasets` cache)."""
    import datasets

    return datasets.load_dataset(*args, split=split)


def read_table(path: Path, fieldnames: Sequence[str] | None = None) -> list[dict]:
    """Rows of a TSV (quoting disabled: GLUE fields contain bare quotes), CSV, or JSON/JSONL file, as dicts."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".json" and text.lstrip().startswith("["):
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    with path.open(encoding="utf-8-sig", newline="") as f:  # utf-8-sig: MRPC's file starts with a BOM
        if suffix == ".csv":
            return list(csv.DictReader(f, fieldnames=fieldnames))
        return list(csv.DictReader(f, fieldnames=fieldnames, delimiter="\t", quoting=csv.QUOTE_NONE))


def header_fields(path: Path) -> list[str]:
    """The tab-separated fields of a file's first line (to tell a header from a first row)."""
    with path.open(encoding="utf-8-sig") as f:
        return f.readline().rstrip("\n").split("\t")


def read_json(path: str | Path) -> Any:
    """The JSON value a UTF-8 file holds."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_document(path: Path) -> str:
    """A text file's content as one document (undecodable bytes replaced, so one stray byte never stops a corpus)."""
    return path.read_text(encoding="utf-8", errors="replace")


def require_column(dataset, column: str, source: str | Path = "the data") -> None:
    """Raise one clear error naming the missing column and listing the ones that exist."""
    if column not in dataset.column_names:
        raise ValueError(
            f"{source}: no column {column!r}; the columns are: {', '.join(map(repr, dataset.column_names))}."
        )
