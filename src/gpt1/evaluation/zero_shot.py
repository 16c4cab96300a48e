"""The paper's §5 zero-shot heuristics: the language model alone (no task head, no fine-tuning) scores the answers
of SST-2, CoLA, RACE, ROCStories and DPRD."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt1.data.readers import load_records, require_column
from gpt1.data.tasks import get_task, normalize_labels, read_task
from gpt1.evaluation.metrics import compute_metrics, matthews_corrcoef
from gpt1.inference.scoring import next_token_logprobs, score_tokens


@torch.no_grad()
def continuation_logprobs(
    model,
    prefixes: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "scoring",
    precision: str = "auto",
) -> np.ndarray:
    """Average log-probability per token of each continuation given its prefix (prefix cut from the left to fit)."""
    model.eval()
    n_ctx = model.config.n_positions
    seqs, starts = [], []
    for pre, cont in zip(prefixes, continuations):
        cont = list(cont)[-(n_ctx - 1) :]
        if not cont:
            raise ValueError("A continuation to score is empty (no tokens).")
        pre = list(pre)[max(0, len(pre) - (n_ctx - len(cont))) :]
        if not pre:  # the first token of a text has no context to be predicted from: score the rest
            pre, cont = cont[:1], cont[1:]
        seqs.append(pre + cont)
        starts.append(len(pre))
    scores = np.full(len(seqs), np.nan)
    scored = score_tokens(model, seqs, batch_size=batch_size, precision=precision, progress=progress, desc=desc)
    for i, (ts, s) in enumerate(zip(scored, starts)):
        if len(ts.ids) > s:  # a one-token text has nothing left to score
            scores[i] = float(np.mean(ts.logprobs[s:]))
    return scores


_continuation_logprobs = continuation_logprobs
ZERO_SHOT_TASKS = ("sst2", "cola", "race", "rocstories", "dprd")


def zero_shot(
    model,
    tokenizer,
    task: str,
    examples: Sequence[dict],
    *,
    calibration: Sequence[dict] | None = None,
    batch_size: int = 32,
    progress: bool = False,
    precision: str = "auto",
) -> dict[str, Any]:
    """The paper's §5 heuristics, using the language model alone (no task head, no fine-tuning).

    sst2: append " very" and compare P(positive) with P(negative) for the next token.
    cola: average token log-prob of the sentence, above a threshold = acceptable; the threshold maximises MCC on
        `calibration` (labelled examples), or on `examples` themselves when none are given (reported as such).
    race / rocstories: the answer with the highest average token log-prob given the context (and question).
    dprd: `sentence` with `_` where the pronoun was; each option substituted, the one giving the rest of the
        sentence the higher average log-prob wins (Trinh & Le's partial scoring, as the paper).
    Returns the metrics at top level, the predictions, and the per-example scores. `precision` as the Trainer's
    ("auto": bf16 autocast where the hardware has it; "fp32" for exact scores).
    """
    enc = tokenizer.encode

    def continuation_logprobs(*args, **kw):  # every scoring call below runs at the requested precision
        return _continuation_logprobs(*args, **kw, precision=precision)

    labels = np.asarray([ex.get("label") if ex.get("label") is not None else -1 for ex in examples])
    info: dict[str, Any] = {}
    if task == "sst2":
        pos, neg = enc("positive"), enc("negative")
        prompts = [enc(ex["text"] + " very") for ex in examples]
        if len(pos) == len(neg) == 1:  # GPT-1's vocabulary: one next-token distribution decides
            n_ctx = model.config.n_positions
            logp = next_token_logprobs(
                model, [p[-n_ctx:] for p in prompts], batch_size=batch_size, precision=precision, progress=progress
            )
            scores = (logp[:, pos[0]] - logp[:, neg[0]]).numpy()
        else:  # a smaller learned vocabulary splits a word: compare the words' whole log-probabilities
            both = continuation_logprobs(
                model, prompts * 2, [pos] * len(prompts) + [neg] * len(prompts), batch_size, progress
            )
            scores = both[: len(prompts)] * len(pos) - both[len(prompts) :] * len(neg)
        preds = (scores > 0).astype(int)
        metrics = compute_metrics(("accuracy",), labels, preds)
    elif task == "cola":
        scores = continuation_logprobs(
            model, [[]] * len(examples), [enc(ex["text"]) for ex in examples], batch_size, progress, "scoring"
        )
        if calibration is not None:
            c_scores = continuation_logprobs(
                model,
                [[]] * len(calibration),
                [enc(ex["text"]) for ex in calibration],
                batch_size,
                progress,
                "calibrating",
            )
            c_labels = np.asarray([ex["label"] for ex in calibration])
            info["threshold_chosen_on"] = f"calibration split ({len(calibration)} labelled examples)"
        else:
            c_scores, c_labels = scores, labels
            info["threshold_chosen_on"] = "the evaluated examples themselves (optimistic; pass calibration data)"
        threshold = best_threshold(c_scores, c_labels)
        info["threshold"] = threshold
        preds = (scores > threshold).astype(int)
        metrics = compute_metrics(("mcc", "accuracy"), labels, preds)
    elif task in ("race", "rocstories"):
        prefixes, conts, owner = [], [], []
        for i, ex in enumerate(examples):
            ctx = enc(ex["context"] + (" " + ex["question"] if ex.get("question") else ""))
            for c in ex["choices"]:
                prefixes.append(ctx)
                conts.append(enc(c))
                owner.append(i)
        flat = continuation_logprobs(model, prefixes, conts, batch_size, progress)
        k = len(examples[0]["choices"])
        scores = flat.reshape(len(examples), k)
        preds = scores.argmax(1)
        metrics = compute_metrics(("accuracy",), labels, preds)
    elif task == "dprd":
        prefixes, conts = [], []
        for ex in examples:
            if ex["sentence"].count("_") != 1:
                raise ValueError(
                    f"dprd: each sentence needs exactly one '_' where the pronoun was; got {ex['sentence']!r}."
                )
            before, after = ex["sentence"].split("_")
            for option in ex["options"]:
                prefixes.append(enc(before + option))
                conts.append(enc(after))
        scores = continuation_logprobs(model, prefixes, conts, batch_size, progress).reshape(len(examples), -1)
        preds = scores.argmax(1)
        metrics = compute_metrics(("accuracy",), labels, preds)
    else:
        raise ValueError(f"Zero-shot task {task!r} is not one of {', '.join(ZERO_SHOT_TASKS)}.")
    if (labels < 0).any():  # unlabelled data: predictions only
        metrics = {}
    return {**metrics, **info, "predictions": np.asarray(preds).tolist(), "scores": np.asarray(scores).tolist()}


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The cut (midway between neighbouring scores) that maximises Matthews correlation of `score > cut` vs labels."""
    s = np.sort(np.unique(scores))
    cuts = np.concatenate([[s[0] - 1.0], (s[1:] + s[:-1]) / 2]) if s.size > 1 else np.array([s[0] - 1.0])
    if cuts.size > 2000:  # quantiles are plenty to pick a threshold
        cuts = np.quantile(cuts, np.linspace(0, 1, 2000))
    best = max(cuts, key=lambda c: matthews_corrcoef(labels, (scores > c).astype(int)))
    return float(best)


def read_zero_shot(name: str, data: Any, split: str = "validation", **cols: Any) -> list[dict]:
    """Examples for a zero-shot task; dprd/Winograd files are CSV/JSONL rows with `sentence` (one `_` where the
    pronoun was), `option1`, `option2` and `answer` (1 or 2), WinoGrande's format."""
    if name == "dprd":
        if data is None:
            raise ValueError("Zero-shot dprd needs --data: a CSV/JSONL file with sentence, option1, option2, answer.")
        ds = load_records(str(data), split=split)
        for c in ("sentence", "option1", "option2"):
            require_column(ds, c, data)
        return [
            {
                "sentence": r["sentence"],
                "options": [r["option1"], r["option2"]],
                "label": int(r["answer"]) - 1 if r.get("answer") not in (None, "") else None,
            }
            for r in ds
        ]
    spec = get_task(name)
    source = data
    if (
        data is not None
        and Path(data).is_dir()
        and not any((Path(data) / f).exists() for f in spec.files.get(split, ()))
    ):
        split = "train"  # a folder with only a train split (e.g. the local GLUE copies)
    examples = read_task(spec, source, split, **cols)
    return normalize_labels(spec, examples, str(data))
