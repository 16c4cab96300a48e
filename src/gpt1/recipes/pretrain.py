"""The pre-training recipe: corpus → token shards → random 512-token blocks → `Trainer` (the paper's first stage).

`pretrain(**settings)` is what `gpt1 pretrain` runs in every process; `PRETRAIN_DEFAULTS` lists its settings with
their defaults (the paper's: batch 64 × 512 tokens, cosine to 0; peak lr and warmup by the model's depth, the
paper's 2.5e-4 and 2000 steps for the 12-layer `gpt1`: shallower CPU presets learn faster at a higher lr).
"""

from __future__ import annotations

import math
import os
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from gpt1.config import GPT1Config, scratch_lr
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
from gpt1.model.gpt import GPT
from gpt1.runtime import dist_env
from gpt1.training.plateau import PlateauGuard
from gpt1.training.trainer import TrainConfig, Trainer, evaluate_lm

DEFAULT_TOKENIZER = "openai-community/openai-gpt"

PRETRAIN_DEFAULTS: dict[str, Any] = {
    "data": None,  # files / folders / a hub dataset name / a prepared corpus dir
    "out": None,  # the run dir
    "preset": None,  # a GPT1Config preset name, or
    "model": None,  # weights to continue from (dir or hub id)
    "model_overrides": {},  # GPT1Config fields on top of the preset (e.g. {"n_positions": 256, "resid_pdrop": 0.0})
    "tokenizer": None,  # default: the model's, else a prepared corpus's own, else GPT-1's
    "batch_tokens": 32768,  # global batch: 64 sequences of 512 tokens, as in the paper
    "micro_batch": None,  # sequences per process per micro-step; default: the largest divisor <= 8
    "max_steps": None,
    "max_tokens": None,
    "epochs": None,
    "lr": None,  # peak lr; None: the one for the model's depth (config.SCRATCH_LR; the paper's 2.5e-4 for gpt1)
    "warmup": None,  # steps, or a fraction of all steps if < 1; None: the one for the model's depth (gpt1: 2000)
    "schedule": "cosine",
    "weight_decay": 0.01,
    "grad_clip": 1.0,
    "eval_every": 500,
    "eval_blocks": 100,  # validation blocks per evaluation (evenly spaced over val.bin)
    "save_every": 500,
    "keep_last": 2,
    "log_every": 10,
    "precision": "auto",
    "compile": False,
    "device": "auto",
    "val_fraction": 0.005,
    "num_proc": 1,
    "text_column": "text",
    "seed": 1234,
    "resume": None,
    "devices": 1,
    "progress": True,
    "snapshots": False,  # keep the weights of every evaluation step in RUN/snapshots/step_N (zero-shot curves)
    "plateau_tokens": 2_000_000,  # after warmup and this many tokens, warn if the loss is still at the unigram level
}


def pretrain(**settings: Any) -> dict:
    """Pre-train a GPT on a corpus (see `PRETRAIN_DEFAULTS` for the settings); returns the final metrics."""
    unknown = sorted(set(settings) - set(PRETRAIN_DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown pretrain setting(s) {', '.join(unknown)}; known: {', '.join(PRETRAIN_DEFAULTS)}.")
    s = {**PRETRAIN_DEFAULTS, **settings}
    if not s["data"]:
        raise ValueError("No --data given: name the text files, folders, dataset or prepared corpus to train on.")
    if not s["out"]:
        raise ValueError("No --out given: name the run directory to write.")
    if (s["preset"] is None) == (s["model"] is None):
        raise ValueError("Give exactly one of --preset NAME (a new model) and --model PATH (weights to continue from).")
    given = [k for k in ("max_steps", "max_tokens", "epochs") if s[k] is not None]
    if len(given) != 1:
        raise ValueError(
            f"Give exactly one of --max-steps, --max-tokens and --epochs (got {', '.join(given) or 'none'})."
        )
    rank, world, local_rank = dist_env()
    owns_group = False
    if world > 1 and not torch.distributed.is_initialized():
        # Joined here, not in the Trainer, so rank 0 can build the shards while the others wait at a barrier.
        on_gpu = torch.cuda.is_available() and s["device"] in ("auto", "cuda")
        if on_gpu:
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
        torch.distributed.init_process_group("nccl" if on_gpu else "gloo", timeout=timedelta(hours=2))
        owns_group = True
    try:
        result = _pretrain(s, rank, world)
        if owns_group:
            _barrier()  # leave together: a gloo group torn down while a peer still talks to it can abort that peer
        return result
    finally:
        if owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _pretrain(s: dict, rank: int, world: int) -> dict:
    out = Path(s["out"])
    tokenizer = _load_tokenizer(s)
    torch.manual_seed(s["seed"])  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = _build_model(s, tokenizer)
    corpus = prepare_data(s, tokenizer, rank)
    meta = read_meta(corpus)
    if meta["vocab_size"] > model.config.vocab_size:
        raise ValueError(
            f"{corpus}: token ids go up to {meta['vocab_size'] - 1}, but the model has only "
            f"{model.config.vocab_size} embeddings; prepare it with the model's tokenizer."
        )
    block = model.config.n_positions
    micro, accum = batch_layout(s["batch_tokens"], block, world, s["micro_batch"])
    train_tokens = load_tokens(corpus, "train")
    source = BlockSampler(train_tokens, block, micro, seed=s["seed"])
    default_lr, default_warmup = scratch_lr(model.config)
    if s["lr"] is None:
        s["lr"] = default_lr
    if s["warmup"] is None:
        s["warmup"] = default_warmup
    max_steps = s["max_steps"]
    if s["max_tokens"] is not None:
        max_steps = max(1, math.ceil(s["max_tokens"] / (micro * accum * world * block)))
    warmup = s["warmup"]
    config = TrainConfig(
        lr=s["lr"],
        warmup_steps=None if warmup < 1 else int(warmup),
        warmup_fraction=warmup if warmup < 1 else None,
        schedule=s["schedule"],
        weight_decay=s["weight_decay"],
        grad_clip=s["grad_clip"],
        max_steps=max_steps,
        epochs=s["epochs"],
        grad_accum=accum,
        eval_every=s["eval_every"],
        save_every=s["save_every"],
        keep_last=s["keep_last"],
        log_every=s["log_every"],
        seed=s["seed"],
        precision=s["precision"],
        compile=s["compile"],
        device=s["device"],
        progress=s["progress"],
    )
    val = load_tokens(corpus, "val")
    batches = val_batches(val, block, micro, max_blocks=s["eval_blocks"])
    evaluate_fn = (lambda m: evaluate_lm(m, batches)) if batches else None
    if not batches and rank == 0:
        print(f"note: {corpus} has no validation tokens; training without evaluation.", flush=True)

    def on_eval(trainer: Trainer, metrics: dict) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        if s["snapshots"]:
            from gpt1.checkpoint import save_model

            snap, tmp = out / "snapshots" / f"step_{trainer.step:07d}", out / "snapshots" / ".tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            save_model(trainer.model, tmp, tokenizer=tokenizer)
            shutil.rmtree(snap, ignore_errors=True)
            os.rename(tmp, snap)

    run_config = {
        **{k: v for k, v in s.items() if k != "progress"},
        "data": [str(d) for d in _as_list(s["data"])],
        "corpus": str(corpus),
        "micro_batch": micro,
        "grad_accum": accum,
        "max_steps": config.max_steps,
        "global_batch_tokens": micro * accum * world * block,
        "model_config": model.config.to_hf_dict(),
    }
    guard = PlateauGuard(
        meta.get("unigram_entropy") or unigram_entropy(train_tokens),
        after_tokens=s["plateau_tokens"],
        hint=lr_hint(model.config, s["lr"], s["warmup"]),
    )
    trainer = Trainer(
        model,
        config,
        source,
        out,
        evaluate_fn=evaluate_fn,
        on_eval=on_eval,
        tokenizer=tokenizer,
        run_config=run_config,
        plateau_guard=guard,
    )
    return trainer.fit(resume=s["resume"])


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


def prepare_data(s: dict, tokenizer, rank: int = 0) -> Path:
    """The prepared corpus dir: `--data` itself if it is one, else `RUN_DIR/data` (built by rank 0, reused after)."""
    data = _as_list(s["data"])
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
    corpus = Path(s["out"]) / "data"
    kwargs = dict(text_column=s["text_column"], val_fraction=s["val_fraction"], seed=s["seed"])
    _, world, _ = dist_env()
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        if rank == 0:
            prepare_corpus(data, corpus, tokenizer, num_proc=s["num_proc"], progress=s["progress"], **kwargs)
        _barrier()
    # Rank 0 (or a single process) builds the shards; the other ranks find and reuse them (and add the EOT token).
    prepare_corpus(data, corpus, tokenizer, num_proc=s["num_proc"], progress=s["progress"] and rank == 0, **kwargs)
    return corpus


def _barrier() -> None:
    """Wait for every rank (NCCL needs to be told this process's GPU)."""
    if torch.distributed.get_backend() == "nccl":
        torch.distributed.barrier(device_ids=[torch.cuda.current_device()])
    else:
        torch.distributed.barrier()


def _load_tokenizer(s: dict):
    from gpt1.tokenizer.bpe import Tokenizer

    name = s["tokenizer"] or s["model"]
    if name is None:  # a prepared corpus keeps the tokenizer files it was made with: use them, offline
        data = _as_list(s["data"])
        prepared = len(data) == 1 and is_prepared_corpus(data[0]) and (Path(data[0]) / "vocab.json").is_file()
        name = data[0] if prepared else DEFAULT_TOKENIZER
    return Tokenizer.from_pretrained(name)


def _build_model(s: dict, tokenizer) -> GPT:
    overrides = dict(s["model_overrides"] or {})
    # One embedding per token id, counting <|endoftext|>, which prepare adds to the tokenizer if it lacks it.
    need = len(tokenizer) + (0 if EOT_TOKEN in tokenizer.special_tokens else 1)
    if s["preset"] is not None:
        return GPT(GPT1Config.from_preset(s["preset"], **{**overrides, "vocab_size": need}))
    if overrides:
        raise ValueError("model_overrides apply to --preset models only; a --model keeps its saved architecture.")
    model = GPT.from_pretrained(s["model"])
    if model.config.vocab_size < need:
        model.resize_token_embeddings(need)  # new rows for <|endoftext|> (and any special tokens it lacked)
    return model


def _as_list(x) -> list:
    return [x] if isinstance(x, (str, os.PathLike)) else list(x)
