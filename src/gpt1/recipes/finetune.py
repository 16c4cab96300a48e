"""The paper's second stage: discriminative fine-tuning with the input transformations and the auxiliary LM loss
(`finetune`), and evaluation of fine-tuned or plain language models (`evaluate`), behind `gpt1 finetune/evaluate`.

Defaults are the paper's (§4.1): lr 6.25e-5, batch 32, 3 epochs, linear warmup over 0.2% of training then linear
decay to 0, classifier dropout 0.1, λ = 0.5, global gradient clipping 1.0, weight decay 0.01 on matrices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gpt1.data.tasks import (
    TASKS,
    TaskBatchSource,
    TaskSpec,
    add_special_tokens,
    encode_examples,
    get_task,
    infer_labels,
    normalize_labels,
    read_task,
    split_validation,
)

DEFAULT_TOKENIZER = "openai-community/openai-gpt"


def _load_model_and_tokenizer(model: str | None, preset: str | None, tokenizer, model_overrides: dict | None):
    from gpt1.config import GPT1Config
    from gpt1.model.gpt import GPT
    from gpt1.tokenizer.bpe import Tokenizer

    if (model is None) == (preset is None):
        raise ValueError("Give exactly one of model (weights to start from) and preset (random weights).")
    if model is not None:
        net = GPT.from_pretrained(model)
        tok = tokenizer if not isinstance(tokenizer, (str, Path)) and tokenizer is not None else None
        if tok is None:
            tok = Tokenizer.from_pretrained(tokenizer or model)
    else:
        net = GPT(GPT1Config.from_preset(preset, **(model_overrides or {})))
        tok = tokenizer if tokenizer is not None and not isinstance(tokenizer, (str, Path)) else None
        if tok is None:
            tok = Tokenizer.from_pretrained(tokenizer or DEFAULT_TOKENIZER)
    return net, tok


def _columns(kw: dict) -> dict:
    keys = ("text_column", "text_pair_column", "context_column", "question_column", "choice_columns", "label_column")
    return {k: kw[k] for k in keys if kw.get(k) is not None}


def finetune(
    task: str,
    data: Any = None,
    out: str | Path = "runs/finetune",
    *,
    model: str | None = None,
    preset: str | None = None,
    tokenizer: Any = None,
    val_data: Any = None,
    val_fraction: float = 0.1,
    epochs: float | None = 3.0,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 6.25e-5,
    lm_coef: float = 0.5,
    warmup_fraction: float = 0.002,
    schedule: str = "linear",
    weight_decay: float = 0.01,
    grad_clip: float = 1.0,
    clf_dropout: float = 0.1,
    eval_every: int | None = None,
    save_every: int | None = None,
    log_every: int = 10,
    eval_batch_size: int = 64,
    max_train: int | None = None,
    max_val: int | None = None,
    seed: int = 42,
    precision: str = "auto",
    device: str = "auto",
    compile: bool = False,
    resume: str | None = None,
    progress: bool = True,
    num_proc: int = 1,
    model_overrides: dict | None = None,
    **columns: Any,
) -> dict:
    """Fine-tune `model` (weights dir / hub id) or a fresh `preset` on `task`, writing the run to `out`.

    `data` is a file or task folder (or None: the task's hub dataset). Validation is `val_data`, else the folder's
    dev split, else a seeded `val_fraction` of the training examples. The best validation score by the task's main
    metric (accuracy, MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B) is kept in `out/best`. Column options for the
    generic tasks: text_column, text_pair_column, context_column, question_column, choice_columns, label_column.
    Returns the final metrics with `best` (the best main-metric value) and `run_dir`.
    """
    from gpt1.evaluation.tasks import evaluate_task
    from gpt1.model.heads import add_task_head, finetune_loss
    from gpt1.training.trainer import TrainConfig, Trainer

    unknown = sorted(
        set(columns)
        - {"text_column", "text_pair_column", "context_column", "question_column", "choice_columns", "label_column"}
    )
    if unknown:
        raise TypeError(f"finetune() got unknown argument(s) {', '.join(unknown)}.")
    if lm_coef < 0:
        raise ValueError(f"lm_coef={lm_coef} must be >= 0 (0 turns the auxiliary LM loss off).")
    if not 0 <= clf_dropout < 1:
        raise ValueError(f"clf_dropout={clf_dropout} must be in [0, 1).")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1.")
    spec = get_task(task)
    cols = _columns(columns)
    train_ex = read_task(spec, data, "train", **cols)
    val_ex = None
    if val_data is not None:
        val_ex = read_task(spec, val_data, "validation", **cols)
    elif spec.name in TASKS and (data is None or Path(data).is_dir()):
        try:
            val_ex = read_task(spec, data, "validation", **cols)
        except (FileNotFoundError, ValueError):
            val_ex = None  # no dev split there: carve one out of train below
    spec = infer_labels(spec, train_ex)
    normalize_labels(spec, train_ex, str(data))
    if val_ex is None:
        tr, va = split_validation(len(train_ex), val_fraction, seed)
        val_ex = [train_ex[i] for i in va]
        train_ex = [train_ex[i] for i in tr]
        val_source = f"{len(val_ex)} examples ({val_fraction:g}) held out of the training data, seed {seed}"
    else:
        normalize_labels(spec, val_ex, str(val_data or data))
        val_source = f"{len(val_ex)} examples of the validation split"
    rng = np.random.default_rng(seed + 1)
    if max_train is not None and max_train < len(train_ex):
        train_ex = [train_ex[i] for i in np.sort(rng.choice(len(train_ex), max_train, replace=False))]
    if max_val is not None and max_val < len(val_ex):
        val_source = f"a seeded sample of {max_val} of the {val_source}"
        val_ex = [val_ex[i] for i in np.sort(rng.choice(len(val_ex), max_val, replace=False))]

    net, tok = _load_model_and_tokenizer(model, preset, tokenizer, model_overrides)
    sp = add_special_tokens(tok, net)
    add_task_head(net, spec.num_labels)
    net.config.summary_first_dropout = clf_dropout
    net.config.extra["task"] = task_info(spec)
    n_ctx = net.config.n_positions
    train = encode_examples(train_ex, spec, tok, sp, n_ctx, num_proc=num_proc, progress=progress)
    val = encode_examples(val_ex, spec, tok, sp, n_ctx, num_proc=num_proc, progress=progress)
    source = TaskBatchSource(train, batch_size, seed=seed)

    spe = source.steps_per_epoch
    cfg = TrainConfig(
        lr=lr,
        warmup_steps=None,
        warmup_fraction=warmup_fraction,
        schedule=schedule,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        max_steps=max_steps,
        epochs=None if max_steps is not None else epochs,
        eval_every=eval_every or spe,
        save_every=save_every or eval_every or spe,
        keep_last=1,
        log_every=log_every,
        seed=seed,
        precision=precision,
        compile=compile,
        best_metric=spec.main_metric,
        best_mode="max",
        device=device,
        progress=progress,
    )
    kind, regression = spec.kind, spec.regression

    def loss_fn(m, batch):
        loss, _ = finetune_loss(m, batch, kind, lm_coef, regression)
        return loss, batch["targets"].shape[0]  # the Trainer averages over examples

    def evaluate_fn(m):
        return evaluate_task(m, val, eval_batch_size)["metrics"]

    run_config = {
        "task": spec.name,
        "kind": kind,
        "num_labels": spec.num_labels,
        "data": _str(data),
        "val_data": _str(val_data),
        "validation": val_source,
        "model": model,
        "preset": preset,
        "lm_coef": lm_coef,
        "batch_size": batch_size,
        "clf_dropout": clf_dropout,
        "train_examples": len(train),
        "val_examples": len(val),
        "special_tokens": sp.__dict__,
        "columns": cols,
        "model_config": net.config.to_hf_dict(),
    }
    trainer = Trainer(
        net, cfg, source, out, loss_fn=loss_fn, evaluate_fn=evaluate_fn, tokenizer=tok, run_config=run_config
    )
    result = trainer.fit(resume=resume)
    result["main_metric"] = spec.main_metric
    result["validation"] = val_source
    return result


def task_info(spec: TaskSpec) -> dict:
    """What a saved model must remember about its task (stored in config.json's gpt1_extra)."""
    return {
        "name": spec.name,
        "kind": spec.kind,
        "num_labels": spec.num_labels,
        "label_names": list(spec.label_names) if spec.label_names else None,
    }


def _str(x):
    return None if x is None else str(x) if isinstance(x, (str, Path)) else [str(v) for v in x]


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
    **columns: Any,
) -> dict[str, Any]:
    """Evaluate `model` (a path/hub id or a loaded `GPT`) in one of three ways, returning metrics at the top level:

    - fine-tuned task (default): `task` (default: the one saved with the model) on `data` → metrics + predictions;
    - `zero_shot="sst2"|"cola"|"race"|"rocstories"|"dprd"`: the paper's §5 heuristics with the LM alone on `data`
      (for cola, `calibration_data` is the labelled split the threshold is chosen on);
    - `perplexity=FILE`: sliding-window perplexity and bits per byte of the file's text (`stride`, `max_length`).
    """
    from gpt1.evaluation.tasks import evaluate_task
    from gpt1.evaluation.tasks import perplexity as _perplexity
    from gpt1.model.gpt import GPT
    from gpt1.tokenizer.bpe import Tokenizer

    if sum(x is not None for x in (zero_shot, perplexity)) > 1:
        raise ValueError("Choose one of zero_shot and perplexity, not both.")
    net = model if isinstance(model, GPT) else GPT.from_pretrained(model)
    if device is not None:
        net.to(device)
    if tokenizer is None or isinstance(tokenizer, (str, Path)):
        if tokenizer is None and isinstance(model, GPT):
            raise ValueError("Pass the tokenizer when the model is given as an object.")
        tokenizer = Tokenizer.from_pretrained(tokenizer or model)
    if perplexity is not None:
        from gpt1.data.readers import read_text_file

        return _perplexity(
            net,
            tokenizer,
            read_text_file(perplexity),
            stride=stride,
            max_length=max_length,
            batch_size=batch_size,
            progress=progress,
        )
    cols = _columns(columns)
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
    sp = add_special_tokens(tokenizer, net)
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
    from gpt1.evaluation.tasks import ZERO_SHOT_TASKS, zero_shot

    if name not in ZERO_SHOT_TASKS:
        raise ValueError(f"Zero-shot task {name!r} is not one of {', '.join(ZERO_SHOT_TASKS)}.")
    examples = read_zero_shot(name, data, split, **cols)
    if max_examples is not None:
        examples = examples[:max_examples]
    calib = read_zero_shot(name, calibration_data, "train", **cols) if calibration_data is not None else None
    res = zero_shot(net, tok, name, examples, calibration=calib, batch_size=batch_size, progress=progress)
    return {**res, "task": name, "zero_shot": True, "examples": len(examples)}


def read_zero_shot(name: str, data: Any, split: str = "validation", **cols: Any) -> list[dict]:
    """Examples for a zero-shot task; dprd/Winograd files are CSV/JSONL rows with `sentence` (one `_` where the
    pronoun was), `option1`, `option2` and `answer` (1 or 2), WinoGrande's format."""
    if name == "dprd":
        from gpt1.data.readers import load_records, require_column

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
