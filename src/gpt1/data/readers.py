"""Reading tabular or text records from local files or the `datasets` hub, with clear errors for missing columns."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
            return datasets.load_dataset(name, split=split)
        except Exception as e:
            raise ValueError(f"{name}: not a local file and could not be loaded as a hub dataset ({e}).") from e
    files = expand_paths(sources)
    kinds = {_BUILDERS.get(f.suffix.lower(), "text") for f in files}
    if len(kinds) > 1:
        raise ValueError(f"Mixed file types ({', '.join(sorted(kinds))}); give files of one kind at a time.")
    kind = kinds.pop()
    kwargs = {"delimiter": "\t", "quoting": 3} if all(f.suffix.lower() == ".tsv" for f in files) else {}
    try:
        return datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train", **kwargs)
    except Exception as e:
        raise ValueError(f"{files[0]}: could not be read as {kind} ({type(e).__name__}: {e}).") from e


def require_column(dataset, column: str, source: str | Path = "the data") -> None:
    """Raise one clear error naming the missing column and listing the ones that exist."""
    if column not in dataset.column_names:
        raise ValueError(
            f"{source}: no column {column!r}; the columns are: {', '.join(map(repr, dataset.column_names))}."
        )
