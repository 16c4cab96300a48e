"""The Python half of the GPT-1 task pack (the YAMLs in `tasks/` name these functions with `!function`): each task's
examples read by gpt1's own readers from local files or the hub, and the paper's scoring rules as lm-eval metrics.

Where the data comes from, per task key (`sst2`, `cola`, `race`, `story_cloze`, `dprd`, `snli`, `scitail`, `stsb`):
lm-eval's task metadata `gpt1_data` (`gpt1 lm-eval --task_data KEY=PATH`, or lm-eval's `--metadata
'{"gpt1_data": {"KEY": "PATH"}}'`), else the environment variable `GPT1_DATA_<KEY>` (e.g. GPT1_DATA_SST2), else the
task's hub dataset. A local folder without the evaluated split (the GLUE copies holding only train.tsv) is read
from its train split, with a warning.

The paper's per-token rules (CoLA's average log-probability, the multiple-choice `acc_token`) divide by the number
of continuation tokens, which lm-eval does not pass to a metric: they are counted here when the data is read, with
the tokenizer named in the metadata (`gpt1_tokenizer`, else the model_args' `tokenizer`, else `pretrained`), the
way the gpt1 model splits a request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from gpt1.data.readers import load_hub
from gpt1.data.tasks import TASKS
from gpt1.evaluation.metrics import matthews_corrcoef, pearson, spearman
from gpt1.evaluation.zero_shot import best_threshold, read_zero_shot
from gpt1.loading import load_tokenizer
from gpt1.tokenizer.bpe import Tokenizer

log = logging.getLogger(__name__)

DATA_KEYS = ("sst2", "cola", "race", "story_cloze", "dprd", "snli", "scitail", "stsb")
READER_NAMES = {"story_cloze": "rocstories"}  # the task key -> gpt1's reader name, where they differ


# ---- where the data is ---------------------------------------------------------------------------------------------
def data_source(key: str, metadata: dict[str, Any]) -> str | None:
    """The local file/folder (or hub name) given for task `key`, or None for the task's own hub dataset."""
    given = metadata.get("gpt1_data") or {}
    if isinstance(given, str):  # "sst2=/path,cola=/path", as a model_args-style string
        given = dict(part.split("=", 1) for part in given.split(",") if "=" in part)
    return given.get(key) or given.get(f"gpt1_{key}") or os.environ.get(f"GPT1_DATA_{key.upper()}") or None


def _read(key: str, split: str, metadata: dict[str, Any]) -> list[dict]:
    """Task `key`'s examples from its source (see the module docstring), with gpt1's zero-shot readers."""
    name = READER_NAMES.get(key, key)
    source = data_source(key, metadata)
    if source is None and (name == "dprd" or TASKS[name].hub is None):
        raise ValueError(
            f"gpt1_{key} has no public hub dataset: give its file with --task_data {key}=PATH "
            f"(or the environment variable GPT1_DATA_{key.upper()})."
        )
    if source is not None and Path(source).is_dir() and name != "dprd":
        if not any((Path(source) / f).exists() for f in TASKS[name].files.get(split, ())):
            log.warning("gpt1_%s: %s has no %s split; evaluating its train split", key, source, split)
    return read_zero_shot(name, source, split)


def _race(level: str, split: str, metadata: dict[str, Any]) -> list[dict]:
    """RACE's `level` ("middle" or "high") questions of `split`: a local RACE folder (SPLIT/LEVEL/*.txt), one
    level's folder, or the hub's `ehovy/race` LEVEL config."""
    source = data_source("race", metadata)
    folder = {"test": "test", "validation": "dev", "train": "train"}[split]
    if source is None:
        rows = load_hub(("ehovy/race", level), split)
        return [
            {"context": r["article"], "question": r["question"], "choices": list(r["options"]),
             "label": "ABCD".index(r["answer"])}
            for r in rows
        ]  # fmt: skip
    path = Path(source)
    if (path / folder / level).is_dir():
        path = path / folder / level
    elif (path / level).is_dir():
        path = path / level
    return read_zero_shot("race", path, split)


# ---- counting continuation tokens as the model splits a request -----------------------------------------------------
_TOKENIZERS: dict[str, Tokenizer] = {}  # tokenizers by the key their tasks' docs carry (docs hold plain values only)


def tokenizer_key(metadata: dict[str, Any]) -> str:
    """Load the tokenizer that counts tokens for the per-token rules (see the module docstring) and return the key
    under which `counting_tokenizer` finds it."""
    for name in ("gpt1_tokenizer", "tokenizer"):
        if isinstance(metadata.get(name), Tokenizer):
            key = f"object:{id(metadata[name])}"
            _TOKENIZERS[key] = metadata[name]
            return key
    source, fallback = metadata.get("gpt1_tokenizer") or metadata.get("tokenizer"), metadata.get("pretrained")
    source = str(source) if isinstance(source, (str, os.PathLike)) else None
    fallback = str(fallback) if isinstance(fallback, (str, os.PathLike)) else None
    if source is None and fallback is None:
        log.warning("no tokenizer named in the task metadata (gpt1_tokenizer=...): counting with GPT-1's own")
    key = f"{source}|{fallback}"
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = load_tokenizer(source, fallback_model=fallback)
    return key


def counting_tokenizer(doc: dict) -> Tokenizer:
    return _TOKENIZERS[doc["tokenizer"]]


def continuation_length(tok: Tokenizer, context: str, continuation: str) -> int:
    """Tokens the gpt1 model scores for (context, continuation): lm-eval's split of the whole text (trailing spaces
    of the context moved to the continuation), and for an empty context all tokens but the first."""
    if context == "":
        return max(0, len(tok.encode(continuation)) - 1)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    return len(tok.encode(context + continuation)) - len(tok.encode(context))


def _dataset(examples: list[dict], split: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """{split: the examples, "fewshot": the same as a list}; few-shot examples are drawn from the evaluated split
    (lm-eval leaves out the example being evaluated), and a plain list spares lm-eval reading all of a large split
    into its sampler row by row. With `metadata`, each example names the tokenizer its metric counts tokens with
    (counted when scored, so `--limit` counts only the examples evaluated)."""
    if metadata is not None:
        key = tokenizer_key(metadata)
        for ex in examples:
            ex["tokenizer"] = key
            ex.setdefault("question", "")
    return {split: datasets.Dataset.from_list(examples), "fewshot": examples}


# ---- the tasks' datasets (custom_dataset: called with the task's metadata and dataset_kwargs) ------------------------
def sst2(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("sst2", "validation", metadata), "validation")


def cola(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("cola", "validation", metadata), "validation", metadata)


def race_middle(**metadata: Any) -> dict[str, Any]:
    return _dataset(_race("middle", "test", metadata), "test", metadata)


def race_high(**metadata: Any) -> dict[str, Any]:
    return _dataset(_race("high", "test", metadata), "test", metadata)


def story_cloze(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("story_cloze", "test", metadata), "test", metadata)


def dprd(**metadata: Any) -> dict[str, Any]:
    examples = _read("dprd", "test", metadata)
    for ex in examples:
        if ex["sentence"].count("_") != 1:
            raise ValueError(f"gpt1_dprd: each sentence needs exactly one '_'; got {ex['sentence']!r}.")
    return _dataset(examples, "test", metadata)


def snli(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("snli", "validation", metadata), "validation")


def scitail(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("scitail", "validation", metadata), "validation")


def stsb(**metadata: Any) -> dict[str, Any]:
    return _dataset(_read("stsb", "validation", metadata), "validation")


# ---- prompts --------------------------------------------------------------------------------------------------------
def race_context(doc: dict) -> str:
    """The text before a RACE / Story Cloze answer: the passage, then the question when there is one (zero_shot's)."""
    return doc["context"] + (" " + doc["question"] if doc.get("question") else "")


def dprd_label(doc: dict) -> int:
    """The right option's index (lm-eval's multiple-input form: the options are in the contexts)."""
    return int(doc["label"])


def dprd_contexts(doc: dict) -> list[str]:
    """The sentence up to the blank with each option in it (Trinh & Le's partial scoring, as the paper)."""
    before = doc["sentence"].split("_")[0]
    return [before + option for option in doc["options"]]


def dprd_rest(doc: dict) -> str:
    """The rest of the sentence after the blank: the part every option is scored on."""
    return doc["sentence"].split("_")[1]


# ---- metrics --------------------------------------------------------------------------------------------------------
def choice_lengths(doc: dict) -> list[int]:
    """Tokens scored for each choice: after the passage (RACE, Story Cloze), or the sentence's rest after each
    option (DPRD)."""
    tok = counting_tokenizer(doc)
    if "options" in doc:
        return [continuation_length(tok, c, dprd_rest(doc)) for c in dprd_contexts(doc)]
    return [continuation_length(tok, race_context(doc), " " + c) for c in doc["choices"]]


def per_token_choice(doc: dict, results: Sequence[tuple[float, bool]]) -> dict[str, float]:
    """Multiple choice: `acc` (highest total log-probability, lm-eval's), `acc_token` (highest average per token,
    the paper's rule for RACE, Story Cloze and DPRD)."""
    lls = np.array([ll for ll, _ in results], dtype=float)
    n = np.maximum(np.array(choice_lengths(doc), dtype=float), 1.0)
    gold = int(doc["label"])
    return {"acc": float(np.argmax(lls) == gold), "acc_token": float(np.argmax(lls / n) == gold)}


def average_logprob(doc: dict, results: Sequence[tuple[float, bool]]) -> dict[str, tuple[float, int]]:
    """CoLA: the sentence's average log-probability per scored token, with its label, for the threshold metrics."""
    (ll, _), n = results[0], continuation_length(counting_tokenizer(doc), "", doc["text"])
    score = ll / n if n else float("nan")
    return {"mcc": (score, int(doc["label"])), "acc": (score, int(doc["label"]))}


def _thresholded(items: Sequence[tuple[float, int]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.array([s for s, _ in items], dtype=float)
    labels = np.array([y for _, y in items], dtype=int)
    return labels, (scores > best_threshold(scores, labels)).astype(int)


def mcc_at_best_threshold(items: Sequence[tuple[float, int]]) -> float:
    """Matthews correlation of `score > t` with the labels, t chosen to maximise it on these examples (as `gpt1
    evaluate --zero-shot cola` does without calibration data: optimistic)."""
    labels, preds = _thresholded(items)
    return matthews_corrcoef(labels, preds)


def acc_at_best_threshold(items: Sequence[tuple[float, int]]) -> float:
    """Accuracy at the threshold `mcc_at_best_threshold` chooses."""
    labels, preds = _thresholded(items)
    return float((labels == preds).mean())


def similarity(doc: dict, results: Sequence[tuple[float, bool]]) -> dict[str, tuple[float, float]]:
    """STS-B: log p(" yes") - log p(" no") as the similarity score, paired with the gold score."""
    (ll_no, _), (ll_yes, _) = results
    return {"pearson": (ll_yes - ll_no, float(doc["label"])), "spearman": (ll_yes - ll_no, float(doc["label"]))}


def pearson_of_pairs(items: Sequence[tuple[float, float]]) -> float:
    return pearson([s for s, _ in items], [y for _, y in items])


def spearman_of_pairs(items: Sequence[tuple[float, float]]) -> float:
    return spearman([s for s, _ in items], [y for _, y in items])
