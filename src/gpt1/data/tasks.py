"""Fine-tuning tasks: the paper's special tokens and four input transformations (§3.3, Figure 1), readers for the
named benchmarks and for users' own tables, and batching into a resumable `BatchSource` for the Trainer.

Every task becomes examples of S token sequences, each `[start] ... [extract]`:
    classification  S = 1   [start] text [extract]
    entailment      S = 1   [start] premise [delim] hypothesis [extract]
    similarity      S = 2   [start] a [delim] b [extract]  and  [start] b [delim] a [extract]
    multiple choice S = K   [start] context [delim] answer_k [extract]   for each of the K answers
Lengths follow OpenAI's finetune-transformer-lm: each of two segments is cut to `n_positions // 2 - 2` tokens (keeping
its start), a single segment to `n_positions - 2`, so a sequence never exceeds the model's context.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

SPECIAL_TOKENS = ("_start_", "_delimiter_", "_classify_")
KINDS = ("classification", "entailment", "similarity", "multiple_choice")
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # RACE articles and long premises exceed csv's 128 KiB default


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


# ---- special tokens ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpecialIds:
    start: int
    delimiter: int
    classify: int


def add_special_tokens(tokenizer, model=None) -> SpecialIds:
    """Append `_start_`, `_delimiter_`, `_classify_` to the tokenizer (ids 40478-40480 for GPT-1's vocabulary) and grow
    the model's embeddings to match (new rows N(0, 0.02)); idempotent. `Tokenizer.encode` never emits these ids."""
    ids = tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    if model is not None and model.config.vocab_size < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    return SpecialIds(*ids)


# ---- the four transformations (on token ids) ---------------------------------------------------------------------
def _two(a: Sequence[int], b: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    m = n_positions // 2 - 2
    return [sp.start, *a[:m], sp.delimiter, *b[:m], sp.classify]


def classification_ids(text: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    """`[start] text [extract]`, the text cut to `n_positions - 2` tokens."""
    return [sp.start, *text[: n_positions - 2], sp.classify]


def entailment_ids(premise: Sequence[int], hypothesis: Sequence[int], sp: SpecialIds, n_positions: int) -> list[int]:
    """`[start] premise [delim] hypothesis [extract]`, each cut to `n_positions // 2 - 2` tokens."""
    return _two(premise, hypothesis, sp, n_positions)


def similarity_ids(a: Sequence[int], b: Sequence[int], sp: SpecialIds, n_positions: int) -> list[list[int]]:
    """Both orders, `[start] a [delim] b [extract]` and `[start] b [delim] a [extract]`: similarity has no natural order."""
    return [_two(a, b, sp, n_positions), _two(b, a, sp, n_positions)]


def multiple_choice_ids(
    context: Sequence[int],
    choices: Sequence[Sequence[int]],
    sp: SpecialIds,
    n_positions: int,
    question: Sequence[int] = (),
) -> list[list[int]]:
    """`[start] context question [delim] answer_k [extract]` for each answer, each side cut to `n_positions // 2 - 2`.

    A question (RACE) is kept whole at the end of the context; the document before it is cut to make room, so the
    question is never truncated away.
    """
    m = n_positions // 2 - 2
    q = list(question[:m])
    ctx = [*context[: m - len(q)], *q]
    return [[sp.start, *ctx, sp.delimiter, *c[:m], sp.classify] for c in choices]


# ---- encoded data and batching -----------------------------------------------------------------------------------
@dataclass
class TaskData:
    """Encoded examples: `sequences[i]` holds example i's S token lists; `targets[i]` its label (int or float)."""

    spec: TaskSpec
    sequences: list[list[list[int]]]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, index: Sequence[int]) -> TaskData:
        return TaskData(self.spec, [self.sequences[i] for i in index], self.targets[np.asarray(index, dtype=np.int64)])


def encode_examples(
    examples: Sequence[dict],
    spec: TaskSpec,
    tokenizer,
    sp: SpecialIds,
    n_positions: int,
    num_proc: int = 1,
    progress: bool = False,
) -> TaskData:
    """Tokenize every text field once (repeated premises and contexts are encoded once) and apply the transformation."""
    if not examples:
        raise ValueError(f"Task {spec.name!r}: no examples to encode.")
    fields = {
        "classification": ("text",),
        "entailment": ("premise", "hypothesis"),
        "similarity": ("a", "b"),
        "multiple_choice": ("context", "question"),
    }[spec.kind]
    texts: dict[str, int] = {}
    for ex in examples:
        for f in fields:
            texts.setdefault(ex.get(f) or "", len(texts))
        for c in ex.get("choices", ()):
            texts.setdefault(c, len(texts))
    ids = tokenizer.encode_batch(list(texts), num_proc=num_proc, progress=progress)
    tok = {t: ids[i] for t, i in texts.items()}
    seqs = []
    for ex in examples:
        if spec.kind == "classification":
            seqs.append([classification_ids(tok[ex["text"]], sp, n_positions)])
        elif spec.kind == "entailment":
            seqs.append([entailment_ids(tok[ex["premise"]], tok[ex["hypothesis"]], sp, n_positions)])
        elif spec.kind == "similarity":
            seqs.append(similarity_ids(tok[ex["a"]], tok[ex["b"]], sp, n_positions))
        else:
            seqs.append(
                multiple_choice_ids(
                    tok[ex["context"]], [tok[c] for c in ex["choices"]], sp, n_positions, tok[ex.get("question") or ""]
                )
            )
    n_choices = {len(s) for s in seqs}
    if len(n_choices) > 1:
        raise ValueError(
            f"Task {spec.name!r}: examples have different numbers of choices {sorted(n_choices)}; "
            "multiple choice needs the same number for every example."
        )
    labels = [ex.get("label") for ex in examples]
    dtype = np.float32 if spec.regression else np.int64
    targets = np.asarray([(-1 if v is None else v) for v in labels], dtype=dtype)
    return TaskData(spec, seqs, targets)


def collate(items: Sequence[tuple[list[list[int]], Any]], regression: bool = False) -> dict[str, torch.Tensor]:
    """Right-pad a list of (sequences, target) into tensors: input_ids and attention_mask (B, S, T), extract_positions
    (B, S) (the index of each `[extract]` token), targets (B,). Padding id 0 is never attended to by real tokens:
    the attention is causal and the padding comes after them."""
    B, S = len(items), len(items[0][0])
    T = max(len(s) for seqs, _ in items for s in seqs)
    input_ids = torch.zeros(B, S, T, dtype=torch.long)
    mask = torch.zeros(B, S, T, dtype=torch.long)
    extract = torch.zeros(B, S, dtype=torch.long)
    for i, (seqs, _) in enumerate(items):
        for j, s in enumerate(seqs):
            input_ids[i, j, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, j, : len(s)] = 1
            extract[i, j] = len(s) - 1
    targets = torch.tensor([t for _, t in items], dtype=torch.float32 if regression else torch.long)
    return {"input_ids": input_ids, "attention_mask": mask, "extract_positions": extract, "targets": targets}


class TaskBatchSource:
    """Shuffled epochs of a `TaskData` in batches of `batch_size` examples; each epoch's order comes from
    `(seed, epoch)` alone, so `state_dict()` (epoch, batch index) restores the stream exactly."""

    def __init__(self, data: TaskData, batch_size: int, seed: int = 0, shuffle: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if len(data) == 0:
            raise ValueError("The training data is empty.")
        self.data, self.batch_size, self.seed, self.shuffle = data, batch_size, seed, shuffle
        self.steps_per_epoch = math.ceil(len(data) / batch_size)
        self.epoch, self.index = 0, 0
        self._order: np.ndarray | None = None

    def _epoch_order(self) -> np.ndarray:
        if self._order is None:
            n = len(self.data)
            self._order = (
                np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
            )
        return self._order

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.index >= self.steps_per_epoch:
            self.epoch, self.index, self._order = self.epoch + 1, 0, None
        order = self._epoch_order()[self.index * self.batch_size : (self.index + 1) * self.batch_size]
        self.index += 1
        d = self.data
        return collate([(d.sequences[i], d.targets[i].item()) for i in order], d.spec.regression)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "n": len(self.data)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("n", len(self.data)) != len(self.data):
            raise ValueError(
                f"The checkpoint's data had {state['n']} examples, this run's has {len(self.data)}; "
                "resume with the same data."
            )
        self.epoch, self.index, self.seed, self._order = (
            int(state["epoch"]),
            int(state["index"]),
            int(state["seed"]),
            None,
        )


def eval_batches(data: TaskData, batch_size: int) -> Iterable[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """(example indices, batch) in order of length, so each batch pads little; callers scatter results back by index."""
    order = np.argsort([max(len(s) for s in seqs) for seqs in data.sequences], kind="stable")
    for k in range(0, len(order), batch_size):
        idx = order[k : k + batch_size]
        yield idx, collate([(data.sequences[i], data.targets[i].item()) for i in idx], data.spec.regression)


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


def _read_table(path: Path, fieldnames: Sequence[str] | None = None) -> list[dict]:
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
        d = json.loads(f.read_text(encoding="utf-8"))
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
    from gpt1.data.readers import load_records, require_column

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
        rows = _race_rows(path) if path.is_dir() else _read_table(path)
    elif spec.name == "cola" and path.suffix.lower() == ".tsv" and not _has_header(path, "sentence"):
        rows = _read_table(path, ["source", "label", "original_mark", "sentence"])  # GLUE's CoLA has no header
    elif spec.name == "scitail" and path.suffix.lower() == ".tsv" and not _has_header(path, "premise"):
        rows = _read_table(path, ["premise", "hypothesis", "label"])  # SciTail's tsv_format has no header
    else:
        rows = _read_table(path)
    if not rows:
        raise ValueError(f"{where}: holds no rows.")
    return _rows_to_examples(spec, rows, where)


def _has_header(path: Path, column: str) -> bool:
    with path.open(encoding="utf-8-sig") as f:
        return column in f.readline().rstrip("\n").split("\t")


def _read_hub(spec: TaskSpec, name: str | None, split: str) -> list[dict]:
    import datasets

    if name is None and spec.hub is None:
        raise ValueError(
            f"Task {spec.name!r} has no public hub dataset (Story Cloze is given on request): "
            "pass the CSV file with --data."
        )
    args = (name,) if name else spec.hub
    hub_split = {"validation": "validation_matched"}.get(split, split) if spec.name == "mnli" else split
    try:
        ds = datasets.load_dataset(*args, split=hub_split)
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
