"""`evaluate`: the high-level evaluation behind `gpt1 evaluate` and `gpt1.evaluate`, one of a fine-tuned model on
its task, the paper's zero-shot heuristics, or sliding-window perplexity of a text file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gpt1.data.readers import read_text_file
from gpt1.data.tasks import column_options, get_task, normalize_labels, read_task
from gpt1.data.transforms import add_special_tokens, encode_examples
from gpt1.evaluation.perplexity import perplexity as sliding_perplexity
from gpt1.evaluation.tasks import evaluate_task
from gpt1.evaluation.zero_shot import ZERO_SHOT_TASKS, read_zero_shot
from gpt1.evaluation.zero_shot import zero_shot as zero_shot_scores
from gpt1.model.gpt import GPT
from gpt1.tokenizer.bpe import Tokenizer


def evaluate(
    model: Any,
    task: str | None = None,
    data: Any = None,
    *,
    split: str = "validation",
    zero_shot: str | None = None,
    perplexity: str | Path | None = None,
    tokenizer: Any = None,
    calibration_data: Any = None,
    batch_size: int = 32,
    stride: int | None = None,
    max_length: int | None = None,
    max_examples: int | None = None,
    progress: bool = True,
    device: str | None = None,
    dtype: Any = None,
    **columns: Any,
) -> dict[str, Any]:
    """Evaluate `model` (a path/hub id or a loaded `GPT`) in one of three ways, returning metrics at the top level:

    - fine-tuned task (default): `task` (default: the one saved with the model) on `data` → metrics + predictions;
    - `zero_shot="sst2"|"cola"|"race"|"rocstories"|"dprd"`: the paper's §5 heuristics with the LM alone on `data`
      (for cola, `calibration_data` is the labelled split the threshold is chosen on);
    - `perplexity=FILE`: sliding-window perplexity and bits per byte of the file's text (`stride`, `max_length`).

    `dtype` (a path/hub id only): a torch dtype or "int8" to load the weights as (`GPT.from_pretrained`).
    """
    if sum(x is not None for x in (zero_shot, perplexity)) > 1:
        raise ValueError("Choose one of zero_shot and perplexity, not both.")
    net = model if isinstance(model, GPT) else GPT.from_pretrained(model, dtype=dtype)
    if device is not None:
        net.to(device)
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        if tokenizer is None and isinstance(model, GPT):
            raise ValueError("Pass the tokenizer when the model is given as an object.")
        tokenizer = Tokenizer.from_pretrained(tokenizer or model)
    if perplexity is not None:
        return sliding_perplexity(
            net,
            tokenizer,
            read_text_file(perplexity),
            stride=stride,
            max_length=max_length,
            batch_size=batch_size,
            progress=progress,
        )
    cols = column_options(columns)
    if zero_shot is not None:
        return _zero_shot_eval(
            net, tokenizer, zero_shot, data, split, calibration_data, batch_size, max_examples, progress, cols
        )
    saved = net.config.extra.get("task") or {}
    task = task or saved.get("name")
    if task is None:
        raise ValueError("The model was not fine-tuned on a task (no task in its config.json); name one with --task.")
    if net.task_head is None:
        raise ValueError(
            f"The model has no task head; fine-tune it first (gpt1 finetune --task {task}) "
            "or use --zero-shot / --perplexity."
        )
    spec = get_task(task, num_labels=saved.get("num_labels"), label_names=saved.get("label_names"))
    if spec.num_labels != net.task_head.out_features:
        raise ValueError(
            f"Task {task!r} needs a head of {spec.num_labels} outputs; this model's has {net.task_head.out_features}."
        )
    examples = read_task(spec, data, split, **cols)
    normalize_labels(spec, examples, str(data))
    if max_examples is not None:
        examples = examples[:max_examples]
    sp = add_special_tokens(tokenizer)
    net.resize_token_embeddings(max(net.config.vocab_size, len(tokenizer)))
    encoded = encode_examples(examples, spec, tokenizer, sp, net.config.n_positions, progress=progress)
    res = evaluate_task(net, encoded, batch_size=batch_size, progress=progress)
    out: dict[str, Any] = {**res["metrics"], "task": spec.name, "examples": len(encoded)}
    preds = res["predictions"]
    if spec.label_names:
        out["predictions"] = [spec.label_names[p] for p in preds]
    else:
        out["predictions"] = preds
    return out


def _zero_shot_eval(net, tok, name, data, split, calibration_data, batch_size, max_examples, progress, cols) -> dict:
    if name not in ZERO_SHOT_TASKS:
        raise ValueError(f"Zero-shot task {name!r} is not one of {', '.join(ZERO_SHOT_TASKS)}.")
    examples = read_zero_shot(name, data, split, **cols)
    if max_examples is not None:
        examples = examples[:max_examples]
    calib = read_zero_shot(name, calibration_data, "train", **cols) if calibration_data is not None else None
    res = zero_shot_scores(net, tok, name, examples, calibration=calib, batch_size=batch_size, progress=progress)
    return {**res, "task": name, "zero_shot": True, "examples": len(examples)}
