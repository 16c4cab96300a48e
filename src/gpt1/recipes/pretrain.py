"""The pre-training recipe: corpus → token shards → random 512-token blocks → `Trainer` (the paper's first stage).

`run_pretrain(PretrainConfig(...))` is what `gpt1 pretrain` runs in every process (`pretrain(**settings)` is the same
with keyword settings). `PretrainConfig` holds every setting and its default (the paper's: batch 64 × 512 tokens,
cosine to 0; peak lr and warmup by the model's depth, the paper's 2.5e-4 and 2000 steps for the 12-layer `gpt1`:
shallower CPU presets learn faster at a higher lr).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import torch

from gpt1.config import DEFAULT_TOKENIZER, SCRATCH_LR, GPT1Config, scratch_lr
from gpt1.data.corpus import (
    EOT_TOKEN,
    BlockSampler,
    is_prepared_corpus,
    load_tokens,
    prepare_corpus,
    read_meta,
    unigram_entropy,
    val_batches,
)
from gpt1.evaluation.perplexity import evaluate_lm
from gpt1.loading import load_model, load_tokenizer, model_source
from gpt1.model.gpt import GPT
from gpt1.runtime import dist_env
from gpt1.tokenizer.bpe import Tokenizer
from gpt1.training.config import RunOptions, TrainConfig, default_of, int_like, like, setting, show_number
from gpt1.training.plateau import PlateauGuard
from gpt1.training.trainer import Trainer

logger = logging.getLogger(__name__)
_GPT1_LR, _GPT1_WARMUP = SCRATCH_LR["gpt1"]


@dataclass(kw_only=True)
class PretrainConfig(RunOptions):
    """Every setting of a pre-training run (`gpt1 pretrain`), each default written here once."""

    label: ClassVar[str] = "pretrain"

    data: list[str] | None = setting(
        None, "text files, folders, JSONL/CSV/Parquet, a hub dataset, or a prepared dir", nargs="+"
    )
    preset: str | None = setting(
        None, "start from random weights of a preset: gpt1, small, mini, tiny", exclusive="weights"
    )
    model: str | None = setting(None, "continue from these weights (model/run dir or hub id)", exclusive="weights")
    model_overrides: dict = setting(
        factory=dict,
        help="GPT1Config fields on top of the preset, e.g. {n_positions: 256, resid_pdrop: 0.0}",
        cli=False,
    )
    out: str | None = setting(None, "the run dir")
    max_steps: int | None = like(TrainConfig, "max_steps")
    max_tokens: int | None = setting(None, "tokens to train on (rounded up to whole steps)", type=int_like)
    epochs: float | None = like(TrainConfig, "epochs", help="passes over the training shard")
    batch_tokens: int = setting(32768, "global batch in tokens, 64 x 512 as in the paper", type=int_like)
    micro_batch: int | None = setting(None, "sequences per process per micro-step (default: <= 8)")
    lr: float | None = setting(
        None, f"peak learning rate (default: by depth, {show_number(_GPT1_LR)} for gpt1; README: Pre-training)"
    )
    warmup: float | None = setting(
        None, f"warmup steps, or a fraction of all steps if < 1 (default: by depth, {_GPT1_WARMUP} for gpt1)"
    )
    schedule: str = like(TrainConfig, "schedule")
    weight_decay: float = like(TrainConfig, "weight_decay")
    grad_clip: float = like(TrainConfig, "grad_clip")
    eval_every: int = like(TrainConfig, "eval_every")
    eval_blocks: int = setting(100, "validation blocks per evaluation (evenly spaced over val.bin)")
    save_every: int = like(TrainConfig, "save_every")
    keep_last: int = like(TrainConfig, "keep_last")
    log_every: int = like(TrainConfig, "log_every")
    tokenizer: str | None = setting(
        None, f"tokenizer dir or hub id (default: the model's, else a prepared corpus's own, else {DEFAULT_TOKENIZER})"
    )
    val_fraction: float = setting(default_of(prepare_corpus, "val_fraction"), "share of text held out for validation")
    text_column: str = setting(default_of(prepare_corpus, "text_column"), "text column of JSONL/CSV/Parquet/hub data")
    seed: int = like(TrainConfig, "seed")
    devices: int = setting(1, "processes to launch with torchrun (GPUs, or CPU processes)")
    snapshots: bool = setting(
        False, "keep the weights of every evaluation step in RUN/snapshots/step_N (zero-shot curves)", cli=False
    )
    plateau_tokens: int = setting(
        2_000_000, "after warmup and this many tokens, warn if the loss is still at the unigram level", cli=False
    )

    def __post_init__(self) -> None:
        if self.data is not None:
            self.data = [str(d) for d in _as_list(self.data)]
        if self.out is not None:
            self.out = str(self.out)
        if not self.data:
            raise ValueError("No --data given: name the text files, folders, dataset or prepared corpus to train on.")
        if not self.out:
            raise ValueError("No --out given: name the run directory to write.")
        if (self.preset is None) == (self.model is None):
            raise ValueError(
                "Give exactly one of --preset NAME (a new model) and --model PATH (weights to continue from)."
            )
        given = [k for k in ("max_steps", "max_tokens", "epochs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"Give exactly one of --max-steps, --max-tokens and --epochs (got {', '.join(given) or 'none'})."
            )


def pretrain(**settings: Any) -> dict:
    """Pre-train a GPT on a corpus (`settings`: the fields of `PretrainConfig`); returns the final metrics."""
    return run_pretrain(PretrainConfig.from_flat(settings))


def run_pretrain(config: PretrainConfig) -> dict:
    """Pre-train as `config` says, in this process (one of `WORLD_SIZE` under torchrun); returns the final metrics."""
    rank, world, local_rank = dist_env()
    owns_group = False
    if world > 1 and not torch.distributed.is_initialized():
        # Joined here, not in the Trainer, so rank 0 can build the shards while the others wait at a barrier.
        on_gpu = torch.cuda.is_available() and config.device in ("auto", "cuda")
        if on_gpu:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        torch.distributed.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(hours=2))
        owns_group = True
    try:
        result = _pretrain(config, rank, world)
        if owns_group:
            _barrier()  # leave together: a gloo group torn down while a peer still talks to it can abort that peer
        return result
    finally:
        if owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _pretrain(s: PretrainConfig, rank: int, world: int) -> dict:
    out = Path(s.out)
    tokenizer = _load_tokenizer(s)
    torch.manual_seed(s.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = _build_model(s, tokenizer)
    corpus = prepare_data(s, tokenizer, rank)
    meta = read_meta(corpus)
    if meta["vocab_size"] > model.config.vocab_size:
        raise ValueError(
            f"{corpus}: token ids go up to {meta['vocab_size'] - 1}, but the model has only "
            f"{model.config.vocab_size} embeddings; prepare it with the model's tokenizer."
        )
    block = model.config.n_positions
    micro, accum = batch_layout(s.batch_tokens, block, world, s.micro_batch)
    train_tokens = load_tokens(corpus, "train")
    source = BlockSampler(train_tokens, block, micro, seed=s.seed)
    default_lr, default_warmup = scratch_lr(model.config)
    lr = default_lr if s.lr is None else s.lr
    warmup = default_warmup if s.warmup is None else s.warmup
    max_steps = s.max_steps
    if s.max_tokens is not None:
        max_steps = max(1, math.ceil(s.max_tokens / (micro * accum * world * block)))
    config = TrainConfig.from_recipe(
        s,
        lr=lr,
        warmup_steps=None if warmup < 1 else int(warmup),
        warmup_fraction=warmup if warmup < 1 else None,
        max_steps=max_steps,
        grad_accum=accum,
    )
    val = load_tokens(corpus, "val")
    batches = val_batches(val, block, micro, max_blocks=s.eval_blocks)
    evaluate_fn = (lambda m: evaluate_lm(m, batches)) if batches else None
    if not batches and rank == 0:
        logger.info(f"note: {corpus} has no validation tokens; training without evaluation.")

    def on_eval(trainer: Trainer, metrics: dict) -> None:
        logger.info(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if s.snapshots:
            snap, tmp = out / "snapshots" / f"step_{trainer.step:07d}", out / "snapshots" / ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            trainer.model.save_pretrained(tmp, tokenizer=tokenizer)
            shutil.rmtree(snap, ignore_errors=True)
            os.rename(tmp, snap)

    resolved = {
        "recipe": "pretrain",
        "corpus": str(corpus),
        "micro_batch": micro,
        "grad_accum": accum,
        "max_steps": config.max_steps,
        "global_batch_tokens": micro * accum * world * block,
        "model_config": model.config.to_hf_dict(),
    }
    guard = PlateauGuard(
        meta.get("unigram_entropy") or unigram_entropy(train_tokens),
        after_tokens=s.plateau_tokens,
        hint=lr_hint(model.config, lr, warmup),
    )
    trainer = Trainer(
        model,
        config,
        source,
        out,
        evaluate_fn=evaluate_fn,
        on_eval=on_eval,
        tokenizer=tokenizer,
        run_config=s.to_dict(),
        resolved=resolved,
        plateau_guard=guard,
    )
    return trainer.fit(resume=s.resume)


def lr_hint(config: GPT1Config, lr: float, warmup: float) -> str:
    """What to try when a run of this shape stalls at the unigram level."""
    good, good_warmup = scratch_lr(config)
    if lr > good or 1 <= warmup < good_warmup:
        return (
            f"for {config.n_layer} layers use --lr {good:g} with --warmup {good_warmup} or more (README: Pre-training)"
        )
    return f"try --lr {lr / 2:g} and a longer --warmup (README: Pre-training)"


def batch_layout(batch_tokens: int, block: int, world: int, micro_batch: int | None = None) -> tuple[int, int]:
    """(sequences per micro-batch, micro-steps per update) so `world` processes fill exactly `batch_tokens`."""
    if batch_tokens < block:
        raise ValueError(
            f"--batch-tokens {batch_tokens} is less than one sequence of {block} tokens; use a multiple of {block}."
        )
    if batch_tokens % block:
        raise ValueError(
            f"--batch-tokens {batch_tokens} is not a multiple of the context ({block} tokens); "
            f"use e.g. {batch_tokens // block * block}."
        )
    seqs = batch_tokens // block
    if seqs % world:
        raise ValueError(
            f"--batch-tokens {batch_tokens} gives {seqs} sequences, which {world} processes cannot share "
            f"evenly; use a multiple of {world * block}."
        )
    per_rank = seqs // world
    if micro_batch is None:
        micro_batch = max(d for d in range(1, min(per_rank, 8) + 1) if per_rank % d == 0)
    if micro_batch < 1 or per_rank % micro_batch:
        raise ValueError(
            f"--micro-batch {micro_batch} does not divide the {per_rank} sequences each process gets per "
            "step; pick a divisor of it."
        )
    return micro_batch, per_rank // micro_batch


def prepare_data(s: PretrainConfig, tokenizer: Tokenizer, rank: int = 0) -> Path:
    """The prepared corpus dir: `--data` itself if it is one, else `RUN_DIR/data` (built by rank 0, reused after)."""
    data = _as_list(s.data)
    if len(data) == 1 and is_prepared_corpus(data[0]):
        meta = read_meta(data[0])
        tokenizer.add_special_tokens([meta["eot_token"]])
        if meta["tokenizer_fingerprint"] != tokenizer.fingerprint():
            raise ValueError(
                f"{data[0]} was tokenized with another tokenizer (fingerprint "
                f"{meta['tokenizer_fingerprint']}, this one {tokenizer.fingerprint()}); prepare it again "
                "with this tokenizer."
            )
        return Path(data[0])
    corpus = Path(s.out) / "data"
    kwargs = dict(text_column=s.text_column, val_fraction=s.val_fraction, seed=s.seed)
    _, world, _ = dist_env()
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        if rank == 0:
            prepare_corpus(data, corpus, tokenizer, num_proc=s.num_proc, progress=s.progress, **kwargs)
        _barrier()
    # Rank 0 (or a single process) builds the shards; the other ranks find and reuse them (and add the EOT token).
    prepare_corpus(data, corpus, tokenizer, num_proc=s.num_proc, progress=s.progress and rank == 0, **kwargs)
    return corpus


def _barrier() -> None:
    """Wait for every rank (NCCL needs to be told this process's GPU)."""
    if torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch.distributed.barrier()


def _load_tokenizer(s: PretrainConfig) -> Tokenizer:
    """--tokenizer, else the model's own, else a prepared corpus's (its tokenizer files, offline), else GPT-1's."""
    data = _as_list(s.data)
    corpus = data[0] if len(data) == 1 and is_prepared_corpus(data[0]) else None
    if s.model is not None or corpus is None or not (Path(corpus) / "vocab.json").is_file():
        corpus = None
    return load_tokenizer(s.tokenizer or corpus, fallback_model=s.model)


def _build_model(s: PretrainConfig, tokenizer: Tokenizer) -> GPT:
    # One embedding per token id, counting <|endoftext|>, which prepare adds to the tokenizer if it lacks it.
    need = len(tokenizer) + (0 if EOT_TOKEN in tokenizer.special_tokens else 1)
    source = model_source(s.model, s.preset)
    return load_model(source, vocab_size=need, trainable=True, **(s.model_overrides or {}))


def _as_list(x) -> list:
    return [x] if isinstance(x, (str, os.PathLike)) else list(x)
