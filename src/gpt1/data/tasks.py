"""Fine-tuning tasks: the registry of the paper's benchmarks and the generic task forms (`TaskSpec`, `TASKS`,
`get_task`), and reading a task's split into examples (`read_task`) from local files or the `datasets` hub, with
label handling. Turning examples into model inputs is gpt1.data.transforms'.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpt1.data.readers import header_fields, load_hub, load_records, read_json, read_table, require_column

KINDS = ("classification", "entailment", "similarity", "multiple_choice")


@dataclass(frozen=True)
class TaskSpec:
    """What a task is: its transformation, head size, metrics (the paper's), and how to read its files."""

    name: str
    kind: str  # one of KINDS
    num_labels: int  # head outputs: classes; 1 for a regression (STS-B) and for multiple choice (a score per choice)
    metrics: tuple[str, ...] = ("accuracy",)
    main_metric: str = "accuracy"  # the best checkpoint is chosen by this
    label_names: tuple[str, ...] | None = None  # string labels in id order
    hub: tuple[str, ...] | None = None  # datasets.load_dataset(*hub) when no local data is given
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)  # split -> file names looked for in a folder

    @property
    def regression(self) -> bool:
        return self.kind != "multiple_choice" and self.num_labels == 1


_GLUE_FILES = {"train": ("train.tsv",), "validation": ("dev.tsv", "validation.tsv"), "test": ("test.tsv",)}
_NLI = ("entailment", "neutral", "contradiction")
TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in [
        TaskSpec(
            "rocstories",
            "multiple_choice",
            1,
            files={"train": ("cloze_test_val__spring2016.csv",), "test": ("cloze_test_test__spring2016.csv",)},
        ),
        TaskSpec("sst2", "classification", 2, hub=("glue", "sst2"), files=_GLUE_FILES),
        TaskSpec("cola", "classification", 2, ("mcc", "accuracy"), "mcc", hub=("glue", "cola"), files=_GLUE_FILES),
        TaskSpec("mrpc", "similarity", 2, ("f1", "accuracy"), "f1", hub=("glue", "mrpc"), files=_GLUE_FILES),
        TaskSpec("qqp", "similarity", 2, ("f1", "accuracy"), "f1", hub=("glue", "qqp"), files=_GLUE_FILES),
        TaskSpec("stsb", "similarity", 1, ("pearson", "spearman"), "pearson", hub=("glue", "stsb"), files=_GLUE_FILES),
        TaskSpec(
            "rte", "entailment", 2, label_names=("entailment", "not_entailment"), hub=("glue", "rte"), files=_GLUE_FILES
        ),
        TaskSpec(
            "qnli",
            "entailment",
            2,
            label_names=("entailment", "not_entailment"),
            hub=("glue", "qnli"),
            files=_GLUE_FILES,
        ),
        TaskSpec(
            "mnli",
            "entailment",
            3,
            label_names=_NLI,
            hub=("glue", "mnli"),
            files={
                "train": ("train.tsv",),
                "validation": ("dev_matched.tsv",),
                "validation_mismatched": ("dev_mismatched.tsv",),
                "test": ("test_matched.tsv",),
            },
        ),
        TaskSpec(
            "snli",
            "entailment",
            3,
            label_names=_NLI,
            hub=("stanfordnlp/snli",),
            files={
                "train": ("train.tsv", "snli_1.0_train.txt", "snli_1.0_train.jsonl"),
                "validation": ("validation.tsv", "dev.tsv", "snli_1.0_dev.txt", "snli_1.0_dev.jsonl"),
                "test": ("test.tsv", "snli_1.0_test.txt", "snli_1.0_test.jsonl"),
            },
        ),
        TaskSpec(
            "scitail",
            "entailment",
            2,
            label_names=("entails", "neutral"),
            hub=("allenai/scitail", "tsv_format"),
            files={
                "train": ("scitail_1.0_train.tsv", "train.tsv"),
                "validation": ("scitail_1.0_dev.tsv", "dev.tsv"),
                "test": ("scitail_1.0_test.tsv", "test.tsv"),
            },
        ),
        TaskSpec(
            "race",
            "multiple_choice",
            1,
            hub=("ehovy/race", "all"),
            files={"train": ("train",), "validation": ("dev",), "test": ("test",)},
        ),
    ]
}
GENERIC_TASKS = {
    "classification": "classification",
    "entailment": "entailment",
    "similarity": "similarity",
    "multiple-choice": "multiple_choice",
    "multiple_choice": "multiple_choice",
}


# The column options of the generic tasks (which column holds the text, the pair, the choices, the label).
COLUMN_OPTIONS = (
    "text_column",
    "text_pair_column",
    "context_column",
    "question_column",
    "choice_columns",
    "label_column",
)


def column_options(options: dict[str, Any]) -> dict[str, Any]:
    """The column options given (not None) among `options`, to pass on to `read_task`."""
    return {k: options[k] for k in COLUMN_OPTIONS if options.get(k) is not None}


def get_task(name: str, num_labels: int | None = None, label_names: Sequence[str] | None = None) -> TaskSpec:
    """The spec of a named task, or of a generic form (`classification`, `entailment`, `similarity`, `multiple-choice`)."""
    if name in TASKS:
        return TASKS[name]
    if name in GENERIC_TASKS:
        kind = GENERIC_TASKS[name]
        if kind == "multiple_choice":
            return TaskSpec(name, kind, 1)
        n = num_labels or (len(label_names) if label_names else 2)
        metrics = ("pearson", "spearman") if n == 1 else ("accuracy",)
        return TaskSpec(name, kind, n, metrics, metrics[0], tuple(label_names) if label_names else None)
    raise ValueError(f"Unknown task {name!r}; choose one of: {', '.join([*TASKS, *GENERIC_TASKS][:-1])}.")


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (train, validation) index split holding out `fraction` of n examples (at least one each side)."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction={fraction} must be between 0 and 1 (exclusive).")
    perm = np.random.default_rng(seed).permutation(n)
    k = min(max(1, int(round(n * fraction))), n - 1)
    return np.sort(perm[k:]), np.sort(perm[:k])


# ---- readers -----------------------------------------------------------------------------------------------------
def _label(value: Any, names: Sequence[str] | None, where: str) -> int | None:
    """An integer class id from an int, an int-like string, or one of `names`; None for GLUE/SNLI's unlabelled rows."""
    if value is None or value in ("", "-", -1, "-1"):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    s = str(value).strip()
    if names and s in names:
        return names.index(s)
    try:
        return int(float(s))
    except ValueError:
        accepted = f"one of {', '.join(names)} or an integer" if names else "an integer"
        raise ValueError(f"{where}: label {value!r} is not {accepted}.") from None


def _col(row: dict, names: Sequence[str], where: str) -> Any:
    for n in names:
        if n in row:
            return row[n]
    raise ValueError(
        f"{where}: no column {' or '.join(map(repr, names))}; the columns are: {', '.join(map(repr, row))}."
    )


def _rows_to_examples(spec: TaskSpec, rows: Iterable[dict], where: str) -> list[dict]:
    """Named-task rows (local files or hub datasets) → normalized examples; unlabelled rows (SNLI's '-') dropped."""
    out = []
    names = spec.label_names
    for row in rows:
        n = spec.name
        if n in ("sst2", "cola"):
            ex = {"text": _col(row, ["sentence"], where), "label": _label(_col(row, ["label"], where), names, where)}
        elif n in ("mrpc", "qqp", "stsb"):
            a = _col(row, ["#1 String", "question1", "sentence1"], where)
            b = _col(row, ["#2 String", "question2", "sentence2"], where)
            raw = _col(row, ["Quality", "is_duplicate", "score", "label"], where)
            label = float(raw) if n == "stsb" else _label(raw, names, where)
            ex = {"a": a, "b": b, "label": label}
        elif spec.kind == "entailment":
            p = _col(row, ["premise", "sentence1", "question"], where)
            h = _col(row, ["hypothesis", "sentence2", "sentence"], where)
            ex = {
                "premise": p,
                "hypothesis": h,
                "label": _label(_col(row, ["gold_label", "label"], where), names, where),
            }
        elif n == "rocstories":
            ctx = " ".join(_col(row, [f"InputSentence{i}"], where) for i in range(1, 5))
            choices = [_col(row, ["RandomFifthSentenceQuiz1"], where), _col(row, ["RandomFifthSentenceQuiz2"], where)]
            raw = row.get("AnswerRightEnding")
            ex = {"context": ctx, "choices": choices, "label": None if raw in (None, "") else int(raw) - 1}
        elif n == "race":
            ex = {
                "context": row["article"],
                "question": row["question"],
                "choices": list(row["options"]),
                "label": "ABCD".index(row["answer"]) if row.get("answer") else None,
            }
        else:  # pragma: no cover - every named task is listed above
            raise AssertionError(n)
        if ex["label"] is not None or "label" not in row and "gold_label" not in row:
            out.append(ex)
    return out


def _race_rows(folder: Path) -> list[dict]:
    """RACE's layout: one JSON per article (`article`, `questions`, `options`, `answers`), under high/ and middle/."""
    rows = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in ("", ".txt", ".json")):
        d = read_json(f)
        for q, opts, ans in zip(d["questions"], d["options"], d["answers"]):
            rows.append({"article": d["article"], "question": q, "options": opts, "answer": ans})
    return rows


def _resolve_split_file(spec: TaskSpec, source: Path, split: str) -> Path | None:
    """The file (or RACE folder) for `split` inside a task folder; None when the folder has no such split."""
    for name in spec.files.get(split, ()):
        if (source / name).exists():
            return source / name
    return None


def read_task(
    task: str | TaskSpec,
    source: str | Path | None = None,
    split: str = "train",
    *,
    text_column: str = "text",
    text_pair_column: str = "text_pair",
    context_column: str = "context",
    question_column: str | None = None,
    choice_columns: Sequence[str] | None = None,
    label_column: str = "label",
) -> list[dict]:
    """Examples of a task's split as dicts (`text` / `premise`+`hypothesis` / `a`+`b` / `context`+`choices`, and `label`).

    `source` is a file, a task folder (e.g. GLUE's `SST-2/` with train.tsv and dev.tsv), or, when None or not a
    local path, the task's `datasets` hub name is used (online, or from the datasets cache). The column options
    apply to the generic tasks; `choice_columns` lists the answer columns, or one column holding a list.
    """
    spec = task if isinstance(task, TaskSpec) else get_task(task)
    if spec.name in TASKS:
        return _read_named(spec, source, split)
    if source is None:
        raise ValueError(f"Task {spec.name!r} needs data: give a CSV/TSV/JSON/Parquet file or folder, or a hub name.")
    ds = load_records(str(source), split=split)
    cols = {
        "classification": [text_column],
        "entailment": [text_column, text_pair_column],
        "similarity": [text_column, text_pair_column],
        "multiple_choice": [context_column, *(choice_columns or ["choices"])],
    }[spec.kind]
    for c in [*cols, *([question_column] if question_column else [])]:
        require_column(ds, c, source)
    has_label = label_column in ds.column_names
    out = []
    for row in ds:
        label = row[label_column] if has_label else None
        if spec.kind == "classification":
            ex = {"text": row[text_column]}
        elif spec.kind == "entailment":
            ex = {"premise": row[text_column], "hypothesis": row[text_pair_column]}
        elif spec.kind == "similarity":
            ex = {"a": row[text_column], "b": row[text_pair_column]}
        else:
            choices = (
                [row[c] for c in choice_columns]
                if choice_columns and len(choice_columns) > 1
                else list(row[(choice_columns or ["choices"])[0]])
            )
            ex = {
                "context": row[context_column],
                "question": row[question_column] if question_column else "",
                "choices": [str(c) for c in choices],
            }
        ex["label"] = label
        out.append(ex)
    return out


def _read_named(spec: TaskSpec, source, split: str) -> list[dict]:
    path = Path(source).expanduser() if source is not None else None
    if path is None or not path.exists():
        if path is not None and (str(source).startswith((".", "/", "~")) or path.suffix):
            raise FileNotFoundError(f"{source}: no such file or folder.")
        return _read_hub(spec, str(source) if source is not None else None, split)
    if path.is_dir() and spec.name != "race" or path.is_dir() and _resolve_split_file(spec, path, split):
        found = _resolve_split_file(spec, path, split)
        if found is None:
            wanted = " or ".join(spec.files.get(split, ())) or f"a {split} file"
            raise FileNotFoundError(f"{path}: no {split} split for task {spec.name!r} (looked for {wanted}).")
        path = found
    where = str(path)
    if spec.name == "race":
        rows = _race_rows(path) if path.is_dir() else read_table(path)
    elif spec.name == "cola" and path.suffix.lower() == ".tsv" and "sentence" not in header_fields(path):
        rows = read_table(path, ["source", "label", "original_mark", "sentence"])  # GLUE's CoLA has no header
    elif spec.name == "scitail" and path.suffix.lower() == ".tsv" and "premise" not in header_fields(path):
        rows = read_table(path, ["premise", "hypothesis", "label"])  # SciTail's tsv_format has no header
    else:
        rows = read_table(path)
    if not rows:
        raise ValueError(f"{where}: holds no rows.")
    return _rows_to_examples(spec, rows, where)


def _read_hub(spec: TaskSpec, name: str | None, split: str) -> list[dict]:
    if name is None and spec.hub is None:
        raise ValueError(
            f"Task {spec.name!r} has no public hub dataset (Story Cloze is given on request): "
            "pass the CSV file with --data."
        )
    args = (name,) if name else spec.hub
    hub_split = {"validation": "validation_matched"}.get(split, split) if spec.name == "mnli" else split
    try:
        ds = load_hub(args, hub_split)
    except Exception as e:
        raise ValueError(
            f"Task {spec.name!r}: could not load the hub dataset {'/'.join(args)} split {hub_split!r} "
            f"({type(e).__name__}); pass local files with --data."
        ) from e
    return _rows_to_examples(spec, ds, "/".join(args))


def infer_labels(spec: TaskSpec, examples: Sequence[dict]) -> TaskSpec:
    """For a generic task, fix the head size and label names from the training labels (strings → sorted names,
    integers → max + 1 classes, fractional numbers → regression)."""
    if spec.name in TASKS or spec.kind == "multiple_choice":
        return spec
    values = [ex["label"] for ex in examples if ex["label"] is not None]
    if not values:
        raise ValueError(f"Task {spec.name!r}: the training data has no labels.")
    if any(isinstance(v, str) for v in values):
        try:
            nums = [float(v) for v in values]
        except ValueError:
            names = sorted({str(v) for v in values})
            return get_task(spec.name, num_labels=len(names), label_names=names)
        values = nums
    if any(float(v) != int(float(v)) for v in values):
        return get_task(spec.name, num_labels=1)
    return get_task(spec.name, num_labels=max(2, int(max(float(v) for v in values)) + 1))


def normalize_labels(spec: TaskSpec, examples: list[dict], where: str = "the data") -> list[dict]:
    """Turn generic labels into class ids (via `spec.label_names`) or floats (regression); checks the range."""
    for ex in examples:
        v = ex.get("label")
        if v is None:
            continue
        if spec.kind == "multiple_choice":
            ex["label"] = _label(v, None, where)
            k = len(ex["choices"])
            if not 0 <= ex["label"] < k:
                raise ValueError(f"{where}: answer index {ex['label']} is outside 0..{k - 1} for {k} choices.")
        elif spec.regression:
            ex["label"] = float(v)
        else:
            ex["label"] = _label(v, spec.label_names, where)
            if not 0 <= ex["label"] < spec.num_labels:
                raise ValueError(f"{where}: label {v!r} is outside 0..{spec.num_labels - 1} for task {spec.name!r}.")
    return examples
