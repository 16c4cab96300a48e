"""Causal-LM fine-tuning on a text dataset (e.g. jokes as `JOKE: <joke><|endoftext|>`), with the shared `Trainer`.

The end-of-text token is a real vocabulary entry (embedding grown, N(0, 0.02)); padding never enters the loss (-100)
nor attention (mask 0); each batch pads only to its own longest example, or `packing` fills whole blocks with whole
examples and `packed_lm_loss` keeps attention inside each example. Each evaluation logs val loss/perplexity and
appends a few sampled generations to `run_dir/samples.jsonl`.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from gpt1.config import scratch_lr
from gpt1.data.text import (
    DEFAULT_TEMPLATE,
    EOS_TOKEN,
    DynamicPaddingSource,
    PackedSource,
    add_eos_token,
    check_template,
    eval_batches,
    read_texts,
    split_examples,
    tokenize_examples,
)
from gpt1.loading import load_model, load_tokenizer, model_source
from gpt1.model.gpt import GPT
from gpt1.recipes.finetune import PAPER_EPOCHS, PAPER_LR, PAPER_WARMUP, FinetuneConfig
from gpt1.training.config import RunOptions, TrainConfig, check_positive, like, setting, show_number

logger = logging.getLogger(__name__)


def packed_lm_loss(model: nn.Module, batch: dict) -> tuple[torch.Tensor, int]:
    """LM loss on packed rows with attention kept inside each example (`segment_ids`); for a row holding one example
    it is exactly `model(input_ids, attention_mask, labels)` (see the tests)."""
    labels = batch["labels"]
    out = model(
        batch["input_ids"],
        labels=labels,
        position_ids=batch["position_ids"],
        segment_ids=batch["segment_ids"],
        return_logits=False,
    )
    return out.loss, int((labels[:, 1:] != -100).sum())


def build_model_and_tokenizer(
    model: str | None, preset: str | None, tokenizer: str | None, model_overrides: dict | None = None
):
    """(GPT, Tokenizer) from a hub id / local dir / run dir (`model`), or random weights of `preset`, with one
    embedding row per token of the tokenizer."""
    source = model_source(
        model,
        preset,
        "Give exactly one of --model (hub id, model dir or run dir) and --preset (tiny, mini, small, gpt1).",
    )
    tok = load_tokenizer(tokenizer, fallback_model=source)
    return load_model(source, vocab_size=len(tok), trainable=True, **(model_overrides or {})), tok


@dataclass(kw_only=True)
class FinetuneLMConfig(RunOptions):
    """Every setting of a causal-LM fine-tuning run (`gpt1 finetune-lm`), each default written here once."""

    label: ClassVar[str] = "finetune-lm"

    model: str | None = like(
        FinetuneConfig, "model", help="weights: hub id (openai-community/openai-gpt), model dir or gpt1 run dir"
    )
    preset: str | None = like(
        FinetuneConfig,
        "preset",
        help="random weights of a preset (gpt1, small, mini, tiny); needs --tokenizer or the hub",
    )
    model_overrides: dict = like(FinetuneConfig, "model_overrides")
    data: list[str] = setting(help="CSV/TSV/JSONL/text file(s) or folder, or a `datasets` name", nargs="+")
    text_column: str | None = setting(None, "column holding the text (default 'text'), e.g. Joke")
    template: str = setting(DEFAULT_TEMPLATE, "format of each example")
    eos: str = setting(EOS_TOKEN, "end-of-text token appended to each example", show_default=False)
    out: str = setting(help="the run dir")
    tokenizer: str | None = setting(None, "tokenizer dir or hub id (default: the model's)")
    epochs: float | None = setting(None, f"passes over the training data (default {show_number(PAPER_EPOCHS)})")
    max_steps: int | None = setting(None, "optimizer steps instead of --epochs")
    batch_size: int = setting(16, "examples (or packed blocks) per step")
    lr: float | None = setting(
        None,
        f"peak learning rate (default {show_number(PAPER_LR)} with --model; with --preset the pre-training lr of "
        "its depth)",
    )
    warmup_fraction: float | None = setting(
        None,
        f"linear warmup share of training (default {show_number(PAPER_WARMUP)} with --model; with --preset the "
        "depth's warmup)",
    )
    schedule: str = like(TrainConfig, "schedule", default="linear")
    weight_decay: float = like(TrainConfig, "weight_decay")
    grad_clip: float = like(TrainConfig, "grad_clip")
    val_fraction: float = setting(0.05, "share held out for validation")
    max_val: int | None = setting(2000, "at most this many validation examples")
    packing: bool = setting(False, "pack whole examples into full blocks of the context size")
    max_length: int | None = setting(None, "cut examples to this many tokens (default: the model's context)")
    sample_prompt: str | None = setting("JOKE:", "prompt sampled at each evaluation ('' = none)")
    num_samples: int = setting(3, "generations printed per evaluation")
    sample_tokens: int = setting(40, "new tokens per sampled generation")
    temperature: float = setting(0.9, "temperature of the sampled generations")
    top_k: int | None = setting(40, "the sampled generations draw from the k most likely tokens (0 = all)")
    eval_every: int | None = setting(
        None, "steps between evaluations (default: a quarter of the run, at most an epoch)"
    )
    save_every: int | None = setting(None, "steps between checkpoints (default: as --eval-every)")
    log_every: int = like(TrainConfig, "log_every")
    eval_batch_size: int = setting(32, "examples per validation batch")
    seed: int = like(TrainConfig, "seed", help="seed of the split, data order, new rows and dropout")

    def __post_init__(self) -> None:
        self.data = [str(d) for d in ([self.data] if isinstance(self.data, (str, Path)) else self.data)]
        self.out = str(self.out)
        if self.sample_prompt == "":
            self.sample_prompt = None
        check_template(self.template)
        check_positive(self, "max_steps", "batch_size", "num_proc", "eval_every", "save_every", "log_every")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs={self.epochs} is invalid; use a number > 0.")
        if self.warmup_fraction is not None and not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction={self.warmup_fraction} is invalid; use a fraction in [0, 1).")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay} is invalid; use 0 or more.")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(
                f"val_fraction={self.val_fraction} is invalid; use a fraction in [0, 1) (0 = no validation)."
            )
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} is invalid; use 2 up to the model's context.")
        if self.sample_prompt is not None and self.num_samples < 0:
            raise ValueError(f"num_samples={self.num_samples} is invalid; use 0 or more.")


def _default_lr(lr, warmup_fraction, config, from_scratch: bool, steps: int) -> tuple[float, float]:
    """The lr and warmup share of a run that left them unset: the paper's fine-tuning ones for given weights, the
    pre-training ones of the model's depth for random weights (warmup at most a fifth of the run)."""
    if not from_scratch:
        return (PAPER_LR if lr is None else lr), (PAPER_WARMUP if warmup_fraction is None else warmup_fraction)
    good_lr, warmup = scratch_lr(config)
    return (good_lr if lr is None else lr), (min(0.2, warmup / steps) if warmup_fraction is None else warmup_fraction)


def finetune_lm(
    data, out: str | Path, *, texts: list[str] | None = None, prepared: tuple | None = None, **settings: Any
) -> dict[str, Any]:
    """Fine-tune a causal LM on the `text_column` of `data` and write the run dir `out`; returns the final metrics.

    `settings`: the fields of `FinetuneLMConfig`. `texts` replaces reading `data` (the demo passes its corpus);
    `prepared` = (model, tokenizer) replaces loading. `lr` / `warmup_fraction` None: the paper's fine-tuning
    6.25e-5 and 0.2% for weights given as `model`; for random weights (`preset`) the pre-training lr and warmup of
    the model's depth (`config.scratch_lr`, at most a fifth of the run), since 6.25e-5 barely moves a fresh model.
    """
    config = FinetuneLMConfig.from_flat({"data": data, "out": out, **settings})
    return run_finetune_lm(config, texts=texts, prepared=prepared)


def run_finetune_lm(
    config: FinetuneLMConfig,
    *,
    texts: list[str] | None = None,
    prepared: tuple | None = None,
    saved_as: tuple[str, dict] | None = None,
) -> dict[str, Any]:
    """Fine-tune as `config` says; `saved_as` = (recipe, settings) is what run_config.json records instead of
    `config` (the demo records its own settings)."""
    from gpt1.evaluation.perplexity import evaluate_lm
    from gpt1.training.trainer import Trainer

    c = config
    data = c.data[0] if len(c.data) == 1 else c.data
    epochs = PAPER_EPOCHS if c.epochs is None and c.max_steps is None else c.epochs
    if texts is None:  # read (and check the column) before loading any model: data mistakes fail in a second
        texts = read_texts(data, c.text_column)
    if not texts:
        raise ValueError(f"{data}: no non-empty texts in column {c.text_column or 'text'!r}.")
    torch.manual_seed(c.seed)  # a preset's initial weights and the new eos embedding row depend on the seed only
    net, tok = (
        prepared
        if prepared is not None
        else build_model_and_tokenizer(c.model, c.preset, c.tokenizer, c.model_overrides)
    )
    eos_id = add_eos_token(tok, c.eos)
    net.resize_token_embeddings(max(net.config.vocab_size, len(tok)))  # a new row N(0, 0.02) for the eos token
    net.config.extra["eos_token_id"] = eos_id  # `gpt1 generate` stops there
    net.config.extra["eos_token"] = c.eos
    net.config.extra["lm_template"] = c.template
    context = net.config.n_positions
    if c.max_length is not None and not 2 <= c.max_length <= context:  # never cap a request to the context silently
        raise ValueError(
            f"--max-length {c.max_length} is outside this model's range: use 2..{context} (its context), "
            f"or leave it out for {context}."
        )
    limit = c.max_length or context
    examples, truncated = tokenize_examples(
        tok, texts, eos_id, c.template, limit, num_proc=c.num_proc, progress=c.progress
    )
    if truncated and c.progress:
        logger.info(f"note: {truncated} of {len(examples)} examples were longer than {limit} tokens and were cut.")
    train, val = split_examples(examples, c.val_fraction, c.seed)
    if c.max_val is not None and len(val) > c.max_val:
        val = val[: c.max_val]  # already a seeded random sample
    if c.packing:
        source = PackedSource(train, c.batch_size, limit, seed=c.seed)
    else:
        source = DynamicPaddingSource(train, c.batch_size, seed=c.seed)
    steps = c.max_steps or max(1, math.ceil(epochs * source.steps_per_epoch))
    eval_every = c.eval_every or max(1, min(source.steps_per_epoch, steps // 4 or 1))
    lr, warmup_fraction = _default_lr(c.lr, c.warmup_fraction, net.config, from_scratch=c.model is None, steps=steps)
    train_config = TrainConfig.from_recipe(
        c,
        lr=lr,
        warmup_steps=None,
        warmup_fraction=warmup_fraction,
        epochs=None if c.max_steps else epochs,
        eval_every=eval_every,
        save_every=c.save_every or eval_every,
    )
    out = Path(c.out)
    samples_path = out / "samples.jsonl"

    def evaluate_fn(m: GPT) -> dict[str, float]:
        return evaluate_lm(m, eval_batches(val, c.eval_batch_size)) if val else {}

    def on_eval(trainer: Trainer, metrics: dict) -> None:
        if not c.sample_prompt or c.num_samples == 0:
            return
        texts_out = sample(
            trainer.model,
            tok,
            c.sample_prompt,
            c.num_samples,
            eos_id,
            c.sample_tokens,
            c.temperature,
            c.top_k,
            c.seed + trainer.step,
        )
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()) or "samples (no validation set: --val-fraction 0)"
        logger.info(f"\nstep {trainer.step}: {shown}")
        with samples_path.open("a", encoding="utf-8") as f:
            for t in texts_out:
                logger.info(f"  {c.sample_prompt} {t}")
                f.write(json.dumps({"step": trainer.step, "prompt": c.sample_prompt, "text": t}) + "\n")

    recipe, settings = saved_as or ("finetune-lm", c.to_dict())
    resolved = {
        "recipe": recipe,
        "eos_token_id": eos_id,
        "max_length": limit,
        "epochs": epochs,
        "n_train": len(train),
        "n_val": len(val),
        "truncated": truncated,
        "model_config": net.config.to_hf_dict(),
    }
    if saved_as is not None:
        resolved["finetune_lm"] = c.to_dict()
    trainer = Trainer(
        net,
        train_config,
        source,
        out,
        loss_fn=packed_lm_loss if c.packing else None,
        evaluate_fn=evaluate_fn if val or c.sample_prompt else None,
        on_eval=on_eval,
        tokenizer=tok,
        run_config=settings,
        resolved=resolved,
    )
    result = trainer.fit(resume=c.resume)
    result["eos_token_id"] = eos_id
    return result


@torch.no_grad()
def sample(
    model: GPT,
    tokenizer,
    prompt: str,
    n: int,
    eos_id: int,
    max_new_tokens: int = FinetuneLMConfig.sample_tokens,
    temperature: float = FinetuneLMConfig.temperature,
    top_k: int | None = FinetuneLMConfig.top_k,
    seed: int | None = None,
) -> list[str]:
    """`n` sampled continuations of `prompt`, each stopping at the end-of-text token (eval mode, restored after)."""
    from gpt1.inference.generate import generate_text

    was_training = model.training
    model.eval()
    try:
        room = model.config.n_positions - len(tokenizer.encode(prompt))
        out = generate_text(
            model,
            tokenizer,
            [prompt] * n,
            max_new_tokens=max(1, min(max_new_tokens, room)),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            eos_token_id=eos_id,
            seed=seed,
        )
    finally:
        model.train(was_training)
    return [t.strip() for t in out]
