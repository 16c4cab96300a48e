"""The paper's second stage: discriminative fine-tuning with the input transformations and the auxiliary LM loss
(`finetune`), behind `gpt1 finetune`; `evaluate` lives in gpt1.evaluation.evaluate.

Defaults are the paper's (§4.1): lr 6.25e-5, batch 32, 3 epochs, linear warmup over 0.2% of training then linear
decay to 0, classifier dropout 0.1, λ = 0.5, global gradient clipping 1.0, weight decay 0.01 on matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from gpt1.data.tasks import (
    TASKS,
    TaskSpec,
    column_options,
    get_task,
    infer_labels,
    normalize_labels,
    read_task,
    split_validation,
)
from gpt1.data.transforms import TaskBatchSource, add_special_tokens, encode_examples
from gpt1.loading import load, model_source
from gpt1.training.config import Config, RunOptions, TrainConfig, check_positive, like, name_list, setting

COLUMNS_GROUP = "columns of your own data (generic tasks: classification, entailment, similarity, multiple-choice)"
# The paper's fine-tuning recipe (§4.1), also the default of `finetune_lm` and `demo` for pre-trained weights.
PAPER_LR, PAPER_WARMUP, PAPER_EPOCHS = 6.25e-5, 0.002, 3.0


@dataclass(kw_only=True)
class TaskColumns(Config):
    """Where a generic task's fields are in the user's own table (None: the reader's default column)."""

    label: ClassVar[str] = "column"

    text_column: str | None = setting(
        None, "text (classification), premise or first text (default text)", group=COLUMNS_GROUP
    )
    text_pair_column: str | None = setting(None, "hypothesis or second text (default text_pair)", group=COLUMNS_GROUP)
    context_column: str | None = setting(None, "multiple choice: the context (default context)", group=COLUMNS_GROUP)
    question_column: str | None = setting(
        None, "multiple choice: a question appended to the context (optional)", group=COLUMNS_GROUP
    )
    choice_columns: tuple[str, ...] | None = setting(
        None,
        "multiple choice: comma-separated answer columns, or one list column (default choices)",
        type=name_list,
        group=COLUMNS_GROUP,
    )
    label_column: str | None = setting(
        None, "the label: class name/id, score, or answer index (default label)", group=COLUMNS_GROUP
    )

    def __post_init__(self) -> None:
        if isinstance(self.choice_columns, str):
            self.choice_columns = name_list(self.choice_columns)
        elif self.choice_columns is not None:
            self.choice_columns = tuple(self.choice_columns)


@dataclass(kw_only=True)
class FinetuneConfig(RunOptions):
    """Every setting of a fine-tuning run (`gpt1 finetune`); the defaults are the paper's."""

    label: ClassVar[str] = "finetune"

    task: str = setting(
        help=f"one of: {', '.join(TASKS)}; or your own data: classification, entailment, similarity, multiple-choice"
    )
    model: str | None = setting(
        None,
        "pre-trained weights: model/run dir or hub id (e.g. openai-community/openai-gpt)",
        exclusive="weights",
        required=True,
    )
    preset: str | None = setting(
        None, "random weights of a preset (gpt1, small, mini, tiny): no pre-training", exclusive="weights"
    )
    model_overrides: dict = setting(factory=dict, help="GPT1Config fields on top of the preset", cli=False)
    data: str | None = setting(None, "task file or folder (GLUE's SST-2/ ...); default: the task's hub dataset")
    val_data: str | None = setting(
        None, "validation file (default: the folder's dev split, else --val-fraction of train)"
    )
    val_fraction: float = setting(0.1, "share of train held out when there is no dev split")
    out: str = setting("runs/finetune", "the run dir", required=True)
    tokenizer: str | None = setting(None, "tokenizer dir or hub id (default: the model's)")
    epochs: float | None = setting(PAPER_EPOCHS, "passes over the training data")
    max_steps: int | None = setting(None, "optimizer steps instead of --epochs")
    batch_size: int = setting(32, "examples per step")
    lr: float = like(TrainConfig, "lr", default=PAPER_LR)
    lm_coef: float = setting(0.5, "weight λ of the auxiliary LM loss; 0 = off")
    warmup_fraction: float = setting(PAPER_WARMUP, "linear warmup share of training")
    schedule: str = like(TrainConfig, "schedule", default="linear")
    weight_decay: float = like(TrainConfig, "weight_decay")
    grad_clip: float = like(TrainConfig, "grad_clip")
    clf_dropout: float = setting(0.1, "dropout before the task head")
    eval_every: int | None = setting(None, "steps between validations (default: once per epoch)")
    save_every: int | None = setting(None, "steps between checkpoints (default: as --eval-every)")
    log_every: int = like(TrainConfig, "log_every")
    eval_batch_size: int = setting(64, "examples per validation batch")
    max_train: int | None = setting(None, "use at most this many training examples (seeded sample)")
    max_val: int | None = setting(None, "use at most this many validation examples (seeded sample)")
    seed: int = setting(42, "seed of the split, data order, head init and dropout")
    columns: TaskColumns = setting(factory=TaskColumns, help="columns of the user's own data")

    def __post_init__(self) -> None:
        self.out = str(self.out)
        self.data, self.val_data = _str(self.data), _str(self.val_data)
        if isinstance(self.columns, dict):
            self.columns = TaskColumns(**self.columns)
        check_positive(self, "max_steps", "batch_size", "eval_every", "save_every", "log_every", "num_proc")
        if self.lm_coef < 0:
            raise ValueError(f"lm_coef={self.lm_coef} must be >= 0 (0 turns the auxiliary LM loss off).")
        if not 0 <= self.clf_dropout < 1:
            raise ValueError(f"clf_dropout={self.clf_dropout} must be in [0, 1).")


def finetune(task: str, data: Any = None, out: str | Path = FinetuneConfig.out, **settings: Any) -> dict:
    """Fine-tune `model` (weights dir / hub id) or a fresh `preset` on `task`, writing the run to `out`.

    `data` is a file or task folder (or None: the task's hub dataset). Validation is `val_data`, else the folder's
    dev split, else a seeded `val_fraction` of the training examples. The best validation score by the task's main
    metric (accuracy, MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B) is kept in `out/best`. `settings`: the
    fields of `FinetuneConfig`, the column options (text_column, ..., label_column) among them; `tokenizer` may
    also be a loaded `Tokenizer`. Returns the final metrics with `best` (the best main-metric value) and `run_dir`.
    """
    tokenizer = settings.get("tokenizer")
    if tokenizer is not None and not isinstance(tokenizer, (str, Path)):
        settings["tokenizer"] = None  # a Tokenizer object: used as is, not a setting that can be saved
    else:
        tokenizer = None
    config = FinetuneConfig.from_flat({"task": task, "data": data, "out": out, **settings})
    return run_finetune(config, tokenizer=tokenizer)


def run_finetune(config: FinetuneConfig, *, tokenizer: Any = None) -> dict:
    """Fine-tune as `config` says (`tokenizer`: a loaded `Tokenizer` instead of `config.tokenizer`)."""
    from gpt1.evaluation.tasks import evaluate_task
    from gpt1.model.heads import add_task_head, finetune_loss
    from gpt1.training.trainer import Trainer

    c = config

    spec = get_task(c.task)
    cols = column_options(c.columns.to_dict())
    train_ex = read_task(spec, c.data, "train", **cols)
    val_ex = None
    if c.val_data is not None:
        val_ex = read_task(spec, c.val_data, "validation", **cols)
    elif spec.name in TASKS and (c.data is None or Path(c.data).is_dir()):
        try:
            val_ex = read_task(spec, c.data, "validation", **cols)
        except (FileNotFoundError, ValueError):
            val_ex = None  # no dev split there: carve one out of train below
    spec = infer_labels(spec, train_ex)
    normalize_labels(spec, train_ex, str(c.data))
    if val_ex is None:
        tr, va = split_validation(len(train_ex), c.val_fraction, c.seed)
        val_ex = [train_ex[i] for i in va]
        train_ex = [train_ex[i] for i in tr]
        val_source = f"{len(val_ex)} examples ({c.val_fraction:g}) held out of the training data, seed {c.seed}"
    else:
        normalize_labels(spec, val_ex, str(c.val_data or c.data))
        val_source = f"{len(val_ex)} examples of the validation split"
    rng = np.random.default_rng(c.seed + 1)
    if c.max_train is not None and c.max_train < len(train_ex):
        train_ex = [train_ex[i] for i in np.sort(rng.choice(len(train_ex), c.max_train, replace=False))]
    if c.max_val is not None and c.max_val < len(val_ex):
        val_source = f"a seeded sample of {c.max_val} of the {val_source}"
        val_ex = [val_ex[i] for i in np.sort(rng.choice(len(val_ex), c.max_val, replace=False))]

    net, tok = load(
        model_source(c.model, c.preset),
        tokenizer if tokenizer is not None else c.tokenizer,
        trainable=True,
        **(c.model_overrides or {}),
    )
    sp = add_special_tokens(tok)
    net.resize_token_embeddings(max(net.config.vocab_size, len(tok)))  # rows for the new tokens
    add_task_head(net, spec.num_labels)
    net.config.summary_first_dropout = c.clf_dropout
    net.config.extra["task"] = task_info(spec)
    n_ctx = net.config.n_positions
    train = encode_examples(train_ex, spec, tok, sp, n_ctx, num_proc=c.num_proc, progress=c.progress)
    val = encode_examples(val_ex, spec, tok, sp, n_ctx, num_proc=c.num_proc, progress=c.progress)
    source = TaskBatchSource(train, c.batch_size, seed=c.seed)

    spe = source.steps_per_epoch
    cfg = TrainConfig.from_recipe(
        c,
        warmup_steps=None,
        epochs=None if c.max_steps is not None else c.epochs,
        eval_every=c.eval_every or spe,
        save_every=c.save_every or c.eval_every or spe,
        keep_last=1,
        best_metric=spec.main_metric,
        best_mode="max",
    )
    kind, regression = spec.kind, spec.regression

    def loss_fn(m, batch):
        loss, _ = finetune_loss(m, batch, kind, c.lm_coef, regression)
        return loss, batch["targets"].shape[0]  # the Trainer averages over examples

    def evaluate_fn(m):
        return evaluate_task(m, val, c.eval_batch_size)["metrics"]

    resolved = {
        "recipe": "finetune",
        "kind": kind,
        "num_labels": spec.num_labels,
        "validation": val_source,
        "train_examples": len(train),
        "val_examples": len(val),
        "special_tokens": sp.__dict__,
        "columns": cols,
        "model_config": net.config.to_hf_dict(),
    }
    trainer = Trainer(
        net,
        cfg,
        source,
        c.out,
        loss_fn=loss_fn,
        evaluate_fn=evaluate_fn,
        tokenizer=tok,
        run_config=c.to_dict(),
        resolved=resolved,
    )
    result = trainer.fit(resume=c.resume)
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
