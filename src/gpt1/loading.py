"""The one loader: a model and its tokenizer from a run / HF dir, a hub id, OpenAI's npy release, or `preset:NAME`.

`preset:NAME` means random weights with that preset's config; it has no tokenizer of its own, so it gets the one
asked for or GPT-1's (`DEFAULT_TOKENIZER`). Every other source carries its tokenizer files next to its weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from gpt1.checkpoint import resolve
from gpt1.config import DEFAULT_TOKENIZER, PRESET_PREFIX, GPT1Config, preset_name
from gpt1.model.gpt import GPT
from gpt1.model.quantize import refuse_training
from gpt1.tokenizer.bpe import Tokenizer

__all__ = [
    "DEFAULT_TOKENIZER",
    "convert_original",
    "load",
    "load_model",
    "load_tokenizer",
    "model_source",
    "preset_name",
    "quantize_checkpoint",
    "resolve_dtype",
]

Source = str | os.PathLike  # a model dir, a hub id, an OpenAI release dir, or "preset:NAME"
DType = torch.dtype | str | None  # a torch dtype, "int8" (weight-only quantised, gpt1.model.quantize), or a name
DTYPE_NAMES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "int8": "int8",
}


def resolve_dtype(dtype: DType) -> torch.dtype | str | None:
    """A torch dtype, "int8" or None (the checkpoint's own) for `dtype`: a torch dtype, None, "auto", or a name of
    `DTYPE_NAMES` (what lm-eval and the CLI pass: "float32", "bfloat16", "int8" ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return None
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of auto, {', '.join(DTYPE_NAMES)}.")
    return DTYPE_NAMES[name]


def model_source(model: Source | None, preset: str | None, message: str | None = None) -> Source:
    """The source for a recipe's `model=` / `preset=` pair (exactly one of them given): the path, or `preset:NAME`."""
    if (model is None) == (preset is None):
        raise ValueError(message or "Give exactly one of model (weights to start from) and preset (random weights).")
    return model if model is not None else PRESET_PREFIX + preset


def load_model(
    source: Source,
    *,
    device: str | torch.device | None = None,
    dtype: DType = None,
    vocab_size: int | None = None,
    trainable: bool = False,
    **config_overrides: Any,
) -> GPT:
    """A `GPT` in eval mode from `source`; `config_overrides` (GPT1Config fields) apply to presets only.

    `dtype`: see `resolve_dtype`; "int8" quantises the weights as they load (an int8 checkpoint is int8 already).
    `vocab_size`: a preset's vocabulary; a checkpoint with fewer rows grows to it (`resize_token_embeddings`).
    `trainable`: the model is for a training recipe, so an int8 one is refused with one line naming `source`.
    """
    dtype = resolve_dtype(dtype)
    name = preset_name(source)
    if name is not None:
        overrides = {**config_overrides, **({"vocab_size": vocab_size} if vocab_size is not None else {})}
        model = GPT(GPT1Config.from_preset(name, **overrides))
        if dtype == "int8":
            return model.quantize("int8").to(device=device)
        return model.to(dtype=dtype, device=device).eval()
    if config_overrides:
        raise ValueError("model_overrides apply to --preset models only; a --model keeps its saved architecture.")
    model = GPT.from_pretrained(source, dtype=dtype, device=device)
    if trainable:
        refuse_training(model, source)
    if vocab_size is not None and model.config.vocab_size < vocab_size:
        model.resize_token_embeddings(vocab_size)
    return model


def load_tokenizer(source: Source | Tokenizer | None = None, fallback_model: Source | None = None) -> Tokenizer:
    """`source` itself if it is a `Tokenizer`, else the one at that dir / hub id; None: the tokenizer saved with
    `fallback_model` (a model dir or hub id), or GPT-1's when there is none (or it is a preset)."""
    if isinstance(source, Tokenizer):
        return source
    if source is None:
        source = fallback_model if fallback_model is not None and preset_name(fallback_model) is None else None
    return Tokenizer.from_pretrained(source if source is not None else DEFAULT_TOKENIZER)


def load(
    source: Source,
    tokenizer: Source | Tokenizer | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: DType = None,
    trainable: bool = False,
    **config_overrides: Any,
) -> tuple[GPT, Tokenizer]:
    """(model, tokenizer) from `source`; the tokenizer is `tokenizer` when given, else the one saved with the model
    (GPT-1's for a preset). See `load_model` for the rest."""
    model = load_model(source, device=device, dtype=dtype, trainable=trainable, **config_overrides)
    return model, load_tokenizer(tokenizer, fallback_model=source)


def convert_original(original_dir: Source, out_dir: Source) -> Path:
    """Turn OpenAI's npy release into an HF model dir (tokenizer files too, when the release has them)."""
    model = load_model(original_dir)
    tokenizer = None
    if (Path(original_dir) / "encoder_bpe_40000.json").exists():
        tokenizer = Tokenizer.from_pretrained(original_dir)
    return model.save_pretrained(out_dir, tokenizer=tokenizer)


def quantize_checkpoint(source: Source, out_dir: Source) -> Path:
    """Save an int8 copy of `source` (its tokenizer files too, when it has them) that loads back as int8 without
    quantising again (`gpt1.model.quantize`; config.json marks it, so training refuses it)."""
    model = load_model(source, dtype="int8")
    tokenizer = None
    if preset_name(source) is None:
        local = resolve(source)
        if (local / "vocab.json").exists():
            tokenizer = Tokenizer.from_pretrained(local)
    return model.save_pretrained(out_dir, tokenizer=tokenizer)
